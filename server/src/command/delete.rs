//! Delete (spec §6.5): writes a tombstone, so the record stays deleted across restarts.

use apogee_engine::record::{Record, RecordMeta};
use apogee_engine::{clock, shard::ShardStore};
use apogee_wire::msg::{info2, Message};
use apogee_wire::{Digest, ResultCode};

use super::{store_error_code, Reply};

pub async fn run(store: &ShardStore, msg: &Message, digest: Digest) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    let guard = store.lock_writes().await;
    let current = store.meta(&digest).ok_or(ResultCode::NotFound)?.meta;
    super::write::check_generation(h.info2, h.generation, current.generation)?;
    let tombstone = Record {
        digest,
        meta: RecordMeta {
            generation: current.generation,
            void_time: 0,
            last_update_ms: clock::now_ms(),
        },
        set_name: vec![],
        user_key: None,
        bins: vec![],
        tombstone: true,
    };
    let ticket = store.append(&tombstone).map_err(|e| store_error_code(&e))?;
    drop(guard);
    store
        .commit(ticket)
        .await
        .map_err(|e| store_error_code(&e))?;
    debug_assert!(h.info2 & info2::DELETE != 0);
    Ok(Reply::ok(0, 0, vec![]))
}
