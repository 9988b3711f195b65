//! Iteration over one partition of a shard, for scans: records in **descending** digest order
//! (Aerospike's order: its index trees keep larger digests first), in bounded chunks, resuming
//! strictly below the last digest handed out.
//!
//! Owns the walk only: which records a chunk holds and where the next chunk starts. Each chunk
//! looks at the index afresh, so a record written, deleted, expired or truncated between
//! chunks is seen as it is then. It must never hand out an expired or truncated record, never
//! hold more than one chunk of records, and never borrow the store's state across an await
//! (the caller yields to its executor between chunks).

use apogee_wire::Digest;

use super::ShardStore;
use crate::clock;
use crate::record::Record;
use crate::StoreError;

/// Most index entries one chunk takes (and so most records it reads).
pub const SCAN_CHUNK_ENTRIES_MAX: usize = 256;
/// A chunk stops reading once its records hold this many encoded bytes (1 MiB), so a
/// partition of large records does not fill memory before its caller streams them out.
pub const SCAN_CHUNK_BYTES_MAX: usize = 1 << 20;

/// Where the walk of one partition stands.
#[derive(Debug, Clone)]
pub struct PartitionCursor {
    partition: u16,
    /// Only digests strictly below this one remain (`None`: the whole partition remains).
    below: Option<Digest>,
    done: bool,
}

impl PartitionCursor {
    /// A walk of `partition` from its largest digest, or strictly below `resume_below` (the
    /// last digest a client received from it).
    pub fn new(partition: u16, resume_below: Option<Digest>) -> PartitionCursor {
        PartitionCursor {
            partition,
            below: resume_below,
            done: false,
        }
    }

    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// True once every record of the partition has been handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The last digest handed out (or the resume digest), if any.
    pub fn last_digest(&self) -> Option<Digest> {
        self.below
    }
}

impl ShardStore {
    /// The next chunk of the walk `cursor` describes: at most [`SCAN_CHUNK_ENTRIES_MAX`] live
    /// records (and about [`SCAN_CHUNK_BYTES_MAX`] bytes) of `set` (`None`: every set), largest
    /// digest first, each below the previous chunk's. An empty chunk with `cursor.is_done()`
    /// ends the partition.
    pub async fn scan_chunk(
        &self,
        cursor: &mut PartitionCursor,
        set: Option<&[u8]>,
    ) -> Result<Vec<Record>, StoreError> {
        if cursor.done {
            return Ok(Vec::new());
        }
        let (candidates, exhausted) = self.chunk_candidates(cursor, set);
        let mut records = Vec::with_capacity(candidates.len());
        let mut bytes = 0usize;
        let mut consumed = 0;
        for digest in &candidates {
            consumed += 1;
            cursor.below = Some(*digest);
            // `get` checks liveness again: the record may have changed since the index look.
            if let Some(record) = self.get(digest).await? {
                if set.is_none_or(|s| record.set_name == s) {
                    bytes += record.encoded_bytes();
                    records.push(record);
                }
            }
            if bytes >= SCAN_CHUNK_BYTES_MAX {
                break;
            }
        }
        cursor.done = exhausted && consumed == candidates.len();
        Ok(records)
    }

    /// The digests of the chunk's candidates, descending, and whether they are the last of
    /// the partition. Synchronous: the state is borrowed only here.
    fn chunk_candidates(
        &self,
        cursor: &PartitionCursor,
        set: Option<&[u8]>,
    ) -> (Vec<Digest>, bool) {
        let st = self.state.borrow();
        // A set beyond the set limit is indexed as set 0; its records are told apart by name
        // once read.
        let set_id = set.map(|name| st.keydir.index().known_set_id(name).unwrap_or(0));
        let now = clock::now_secs();
        let mut digests: Vec<Digest> = st
            .keydir
            .index()
            .partition_entries(cursor.partition)
            .filter(|(d, e)| {
                cursor.below.is_none_or(|b| d.0 < b.0)
                    && set_id.is_none_or(|id| e.set_id == id)
                    && !clock::is_expired(e.meta.void_time, now)
                    && !self.truncate.is_truncated(e.meta.last_update_ms, e.set_id)
            })
            .map(|(d, _)| d)
            .collect();
        let exhausted = digests.len() <= SCAN_CHUNK_ENTRIES_MAX;
        if !exhausted {
            digests.select_nth_unstable_by(SCAN_CHUNK_ENTRIES_MAX - 1, |a, b| b.0.cmp(&a.0));
            digests.truncate(SCAN_CHUNK_ENTRIES_MAX);
        }
        digests.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        (digests, exhausted)
    }
}
