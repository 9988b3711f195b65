//! Expiry and eviction: moving expired records out of the index (no I/O) and, above
//! `evict-used-pct`, deleting records with a TTL soonest-first. It must never evict a record
//! without a TTL nor a version newer than the one it chose.

use std::rc::Rc;
use std::time::Duration;

use apogee_wire::Digest;

use crate::clock;
use crate::error::StoreError;
use crate::record::Record;
use crate::shard::space::Claim;
use crate::tuning::Setting;

use super::write::Incoming;
use super::{Change, ShardStore};

/// Records the expiry sweep and eviction handle between two yields to the executor.
pub(super) const SWEEP_CHUNK_RECORDS: usize = 4096;

impl ShardStore {
    /// Moves every expired record out of the index into the shadows: its bytes stay on disk,
    /// still keeping older versions dead, until defragmentation may drop them. No I/O.
    /// Returns how many records expired.
    pub async fn expire_sweep(&self, now_secs: u32) -> usize {
        let candidates: Vec<Digest> = self
            .state
            .borrow()
            .keydir
            .index()
            .iter()
            .filter(|(_, e)| clock::is_expired(e.meta.void_time, now_secs))
            .map(|(d, _)| d)
            .collect();
        let mut expired = 0;
        for chunk in candidates.chunks(SWEEP_CHUNK_RECORDS) {
            expired += self.expire_chunk(chunk, now_secs);
            // Let requests run between chunks: a sweep of millions never stalls the core.
            glommio::yield_if_needed().await;
        }
        self.stats.add_expired(expired as u64);
        expired
    }

    /// Expires the records of `digests` that are (still) expired; no await inside, so each
    /// record is checked and moved at one instant.
    pub(super) fn expire_chunk(&self, digests: &[Digest], now_secs: u32) -> usize {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let mut cache = self.cache.borrow_mut();
        let mut expired = 0;
        for d in digests {
            // A write between chunks may have given the record a new life.
            let Some(e) = st.keydir.index().get(d) else {
                continue;
            };
            if !clock::is_expired(e.meta.void_time, now_secs) {
                continue;
            }
            st.keydir
                .mutate_indexed(Change::Expire { digest: *d }, &mut st.table, None);
            cache.remove(d);
            expired += 1;
        }
        self.stats.set_objects(st.keydir.index().len() as u64);
        self.stats.set_shadows(st.keydir.shadows().len() as u64);
        self.stats
            .set_usage(st.table.live_total(), st.keydir.index().memory_bytes());
        expired
    }

    /// Share of the capacity in live bytes, in percent; `None` without a `filesize` limit.
    pub(super) fn used_pct(&self) -> Option<u64> {
        let st = self.state.borrow();
        let capacity = u64::from(st.table.capacity_blocks()?.max(1)) * self.cfg.block_bytes as u64;
        Some(st.table.live_total() * 100 / capacity)
    }

    /// When live data is above `evict-used-pct` of the capacity, deletes records that have a
    /// TTL, soonest to expire first, until it is below. Each eviction appends a tombstone, so an
    /// evicted record does not come back after a restart; records without a TTL are never
    /// evicted. Returns how many records were evicted.
    pub async fn evict(&self) -> Result<usize, StoreError> {
        let limit = self.tuning.get(Setting::EvictUsedPct);
        if limit == 0 || self.used_pct().is_none_or(|u| u < limit) {
            return Ok(0);
        }
        let mut candidates: Vec<(u32, Digest, u16)> = self
            .state
            .borrow()
            .keydir
            .index()
            .iter()
            .filter(|(_, e)| e.meta.void_time != 0)
            .map(|(d, e)| (e.meta.void_time, d, e.meta.generation))
            .collect();
        candidates.sort_unstable();
        let mut evicted = 0;
        for (n, (void_time, digest, generation)) in candidates.into_iter().enumerate() {
            if n % SWEEP_CHUNK_RECORDS == SWEEP_CHUNK_RECORDS - 1 {
                glommio::yield_if_needed().await;
            }
            if self.used_pct().is_none_or(|u| u < limit) {
                break;
            }
            // A write while this loop yielded may have renewed the record: evict only the
            // version that was chosen.
            let unchanged = self
                .state
                .borrow()
                .keydir
                .index()
                .get(&digest)
                .is_some_and(|e| e.meta.generation == generation && e.meta.void_time == void_time);
            if !unchanged {
                continue;
            }
            let tombstone = Record::tombstone(digest, generation, clock::now_ms());
            let _ = self.append_bytes(
                Incoming::Record(&tombstone),
                digest,
                tombstone.meta,
                true,
                Claim::Delete,
                None,
            )?;
            evicted += 1;
        }
        self.stats.add_evicted(evicted as u64);
        Ok(evicted)
    }

    /// Sweeps expired records every `nsup-period` seconds (none while it is 0; set-config may
    /// change it at any time). Stops when the store is dropped.
    pub fn spawn_expirer(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let tuning = self.tuning.clone();
        glommio::spawn_local(async move {
            loop {
                let secs = tuning.get(Setting::NsupPeriod);
                // While sweeps are off, look again every second for a new period.
                glommio::timer::sleep(Duration::from_secs(secs.max(1))).await;
                if secs == 0 {
                    if weak.strong_count() == 0 {
                        break;
                    }
                    continue;
                }
                let Some(store) = weak.upgrade() else { break };
                let n = store.expire_sweep(clock::now_secs()).await;
                if n > 0 {
                    tracing::info!(shard = store.cfg.shard, expired = n, "expiry sweep");
                }
                match store.evict().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        shard = store.cfg.shard,
                        evicted = n,
                        "evict-used-pct crossed: evicted records"
                    ),
                    Err(e) => {
                        tracing::error!(shard = store.cfg.shard, error = %e, "eviction failed")
                    }
                }
            }
        })
        .detach();
    }
}
