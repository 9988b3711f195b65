//! Delete (spec §6.5): writes a tombstone, so the record stays deleted across restarts.

use apogee_engine::record::Record;
use apogee_engine::{clock, shard::ShardStore};
use apogee_wire::msg::{info2, Message};
use apogee_wire::{Digest, ResultCode};

use super::Reply;

pub async fn run(store: &ShardStore, msg: &Message, digest: Digest) -> Result<Reply, ResultCode> {
    if super::filter::has_filter(msg) {
        // The filter needs the record's bins: read it, then delete only if no other write
        // changed it meanwhile (as writes do).
        for _ in 0..super::write::WRITE_ATTEMPTS_MAX {
            let seen = store.version(&digest);
            let record = store
                .get(&digest)
                .await
                .map_err(|e| super::store_error_code(&e))?
                .ok_or(ResultCode::NotFound)?;
            super::filter::check(msg, &record)?;
            if store.version(&digest) == seen {
                return delete_now(store, msg, digest).await;
            }
        }
        return Err(ResultCode::KeyBusy);
    }
    delete_now(store, msg, digest).await
}

async fn delete_now(
    store: &ShardStore,
    msg: &Message,
    digest: Digest,
) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    // No await between this check and the append: nothing else can change the record.
    let current = store.meta(&digest).ok_or(ResultCode::NotFound)?.meta;
    super::write::check_generation(h.info2, h.generation, current.generation)?;
    let tombstone = Record::tombstone(digest, current.generation, clock::now_ms());
    super::append_and_commit(store, &tombstone).await?;
    debug_assert!(h.info2 & info2::DELETE != 0);
    Ok(Reply::ok(0, 0, vec![]))
}
