//! Dropping a partition this node no longer holds (after a cluster's migration hands it to
//! others), and finding which partitions hold records at all (what a restarted node reports
//! in the migration's version exchange).
//!
//! Owns only the removal of a partition's index entries, in bounded chunks with a yield
//! between them, like a truncate sweep: reads see the records gone at once, defragmentation
//! then frees their blocks. It writes nothing durable: after a restart the records found on
//! the device come back as a copy the cluster treats as incomplete (never trusted to serve,
//! dropped again when the partition settles). It must never remove a record of another
//! partition, nor hold the store's state across an await.

use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::Digest;

use super::ShardStore;

/// Index entries removed between two yields to the executor.
pub const DROP_CHUNK_RECORDS: usize = 1024;

impl ShardStore {
    /// Removes every record of `partition` from this shard while `wanted()` stays true
    /// (asked before each chunk: the caller's word that the node still does not hold the
    /// partition — a new view may give it back, and then records written since must stay);
    /// returns how many.
    pub async fn drop_partition(&self, partition: u16, wanted: impl Fn() -> bool) -> usize {
        assert!(
            partition < PARTITION_COUNT,
            "partition {partition} out of range"
        );
        let digests: Vec<Digest> = self
            .state
            .borrow()
            .keydir
            .index()
            .partition_entries(partition)
            .map(|(d, _)| d)
            .collect();
        let mut removed = 0;
        for chunk in digests.chunks(DROP_CHUNK_RECORDS) {
            if !wanted() {
                break;
            }
            removed += self.remove_entries(chunk, |_| true);
            glommio::yield_if_needed().await;
        }
        removed
    }

    /// Records of `partition` on this shard.
    pub fn partition_object_count(&self, partition: u16) -> usize {
        self.state.borrow().keydir.index().partition_len(partition)
    }

    /// Records per partition on this shard (`PARTITION_COUNT` entries).
    pub fn partition_object_counts(&self) -> Vec<u64> {
        let st = self.state.borrow();
        (0..PARTITION_COUNT)
            .map(|p| st.keydir.index().partition_len(p) as u64)
            .collect()
    }
}
