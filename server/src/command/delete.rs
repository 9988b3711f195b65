//! Delete (spec §6.5): writes a tombstone, so the record stays deleted across restarts.

use apogee_engine::clock;
use apogee_engine::record::Record;
use apogee_engine::shard::{Decision, ShardStore};
use apogee_wire::msg::{info2, Message};
use apogee_wire::{Digest, ResultCode};

use super::Reply;

/// Deletes the record; with `image`, leaves there the tombstone written (see
/// [`super::Image`]).
pub async fn run(
    store: &ShardStore,
    msg: &Message,
    digest: Digest,
    image: super::Image<'_>,
) -> Result<Reply, ResultCode> {
    if super::filter::has_filter(msg) {
        // The filter needs the record's bins: the engine's read-modify-write reads it and
        // deletes only if no other write changed it meanwhile (as writes do). The tombstone
        // is decided here, the way `update` would write it, so a replica gets the same one.
        let h = &msg.header;
        let mut written = None;
        let reply = store
            .update(&digest, |record| {
                let record = record.ok_or(ResultCode::NotFound)?;
                super::filter::check(msg, &record)?;
                super::write::check_generation(h.info2, h.generation, record.meta.generation)?;
                let tombstone = Record::tombstone(digest, record.meta.generation, clock::now_ms());
                written = Some(tombstone.clone());
                Ok((Decision::Write(tombstone), Reply::ok(0, 0, vec![])))
            })
            .await
            .map_err(super::update_error_code)?;
        if let Some(image) = image {
            *image = written;
        }
        return Ok(reply);
    }
    delete_now(store, msg, digest, image).await
}

/// Deletes without reading the record: the generation check needs only its metadata, and
/// there is no await between that check and the append, so no retry is needed.
async fn delete_now(
    store: &ShardStore,
    msg: &Message,
    digest: Digest,
    image: super::Image<'_>,
) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    // No await between this check and the append: nothing else can change the record.
    let current = store.meta(&digest).ok_or(ResultCode::NotFound)?.meta;
    super::write::check_generation(h.info2, h.generation, current.generation)?;
    let tombstone = Record::tombstone(digest, current.generation, clock::now_ms());
    super::append_and_commit(store, &tombstone).await?;
    debug_assert!(h.info2 & info2::DELETE != 0);
    if let Some(image) = image {
        *image = Some(tombstone);
    }
    Ok(Reply::ok(0, 0, vec![]))
}
