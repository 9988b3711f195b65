//! Applying a record version that was decided elsewhere (replication, migration, re-homing):
//! [`ShardStore::apply_if_newer`] stores it only when it is newer than the shard's own, by the
//! order design.md §3 gives versions — generation first, then last-update time.
//!
//! Limits, stated so callers do not rely on more: generations wrap at 65,535 and the order does
//! not see the wrap; a local tombstone (a shadow) keeps no metadata, so an incoming record
//! always wins over a deleted one. It must never replace a local version that is at least as
//! new as the incoming one.

use crate::clock;
use crate::error::StoreError;
use crate::record::{Record, RecordMeta};

use super::ShardStore;

/// What [`ShardStore::apply_if_newer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The incoming version is now the shard's.
    Stored,
    /// The shard's own version is as new or newer: nothing was written.
    NotNewer,
    /// The incoming record has already expired: nothing was written.
    Expired,
}

/// Whether version `a` is newer than version `b`: by generation, then by last-update time.
pub fn is_newer(a: &RecordMeta, b: &RecordMeta) -> bool {
    (a.generation, a.last_update_ms) > (b.generation, b.last_update_ms)
}

impl ShardStore {
    /// Stores `record` (a record or a tombstone, with its own generation and last-update time
    /// kept as they are) if it is newer than the shard's live version of its digest, or if
    /// the shard has none; acknowledged under the configured commit level.
    pub async fn apply_if_newer(&self, record: &Record) -> Result<Applied, StoreError> {
        if !record.tombstone && clock::is_expired(record.meta.void_time, clock::now_secs()) {
            return Ok(Applied::Expired);
        }
        // No await from the look at the local version to the append.
        if let Some(local) = self.meta(&record.digest) {
            if !is_newer(&record.meta, &local.meta) {
                return Ok(Applied::NotNewer);
            }
        }
        let ticket = self.append(record)?;
        self.commit(ticket).await?;
        Ok(Applied::Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(generation: u16, last_update_ms: u64) -> RecordMeta {
        RecordMeta {
            generation,
            void_time: 0,
            last_update_ms,
        }
    }

    #[test]
    fn generation_orders_first_then_last_update_time() {
        assert!(is_newer(&meta(3, 1), &meta(2, 100)));
        assert!(is_newer(&meta(2, 101), &meta(2, 100)));
        assert!(!is_newer(&meta(2, 100), &meta(2, 100)));
        assert!(!is_newer(&meta(1, 500), &meta(2, 100)));
    }
}
