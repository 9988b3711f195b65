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

use futures_util::stream::{self, StreamExt};

use super::store::CacheFill;
use super::ShardStore;
use crate::clock;
use crate::record::Record;
use crate::StoreError;

/// Most index entries one chunk takes (and so most records it reads).
pub const SCAN_CHUNK_ENTRIES_MAX: usize = 256;
/// A chunk holds records of at most this many stored bytes (1 MiB; at least one record), so a
/// partition of large records does not fill memory before its caller streams them out.
pub const SCAN_CHUNK_BYTES_MAX: usize = 1 << 20;
/// Device reads one chunk keeps in flight at most: fio's queue depth for the random-read
/// comparison, and well under the shard's read ring (128).
pub const SCAN_READS_IN_FLIGHT_MAX: usize = 32;

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
    ///
    /// The chunk's records are read from the device [`SCAN_READS_IN_FLIGHT_MAX`] at a time
    /// (one after another, a scan ran at a quarter of the device's random-read rate) and come
    /// back in digest order. Scan reads do not enter the record cache.
    pub async fn scan_chunk(
        &self,
        cursor: &mut PartitionCursor,
        set: Option<&[u8]>,
    ) -> Result<Vec<Record>, StoreError> {
        if cursor.done {
            return Ok(Vec::new());
        }
        let (candidates, exhausted) = self.chunk_candidates(cursor, set);
        let mut reads = stream::iter(&candidates)
            .map(|digest| self.get_with(digest, CacheFill::Skip))
            .buffered(SCAN_READS_IN_FLIGHT_MAX);
        let mut records = Vec::with_capacity(candidates.len());
        // `get` checks liveness again: a record may have changed since the index look.
        while let Some(read) = reads.next().await {
            if let Some(record) = read? {
                if set.is_none_or(|s| record.set_name == s) {
                    records.push(record);
                }
            }
        }
        if let Some(last) = candidates.last() {
            cursor.below = Some(*last);
        }
        cursor.done = exhausted;
        Ok(records)
    }

    /// The digests of the chunk's candidates, descending, and whether they are the last of
    /// the partition. The chunk is cut where its records' stored sizes (known from the index)
    /// pass [`SCAN_CHUNK_BYTES_MAX`], so all of it can be read at once. Synchronous: the state
    /// is borrowed only here.
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
        let mut entries: Vec<(Digest, u32)> = st
            .keydir
            .index()
            .partition_entries(cursor.partition)
            .filter(|(d, e)| {
                cursor.below.is_none_or(|b| d.0 < b.0)
                    && set_id.is_none_or(|id| e.set_id == id)
                    && !clock::is_expired(e.meta.void_time, now)
                    && !self.truncate.is_truncated(e.meta.last_update_ms, e.set_id)
            })
            .map(|(d, e)| (d, e.bytes))
            .collect();
        let mut exhausted = entries.len() <= SCAN_CHUNK_ENTRIES_MAX;
        if !exhausted {
            entries.select_nth_unstable_by(SCAN_CHUNK_ENTRIES_MAX - 1, |a, b| b.0 .0.cmp(&a.0 .0));
            entries.truncate(SCAN_CHUNK_ENTRIES_MAX);
        }
        entries.sort_unstable_by_key(|(d, _)| std::cmp::Reverse(d.0));
        let mut bytes = 0usize;
        let mut take = 0;
        for (_, len) in &entries {
            // At least one record, however large, so the walk always moves on.
            if take > 0 && bytes + *len as usize > SCAN_CHUNK_BYTES_MAX {
                exhausted = false;
                break;
            }
            bytes += *len as usize;
            take += 1;
        }
        entries.truncate(take);
        debug_assert!(take > 0 || exhausted);
        (entries.into_iter().map(|(d, _)| d).collect(), exhausted)
    }
}
