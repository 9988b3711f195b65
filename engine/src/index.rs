//! The per-shard primary index: digest → where the newest version lives and its metadata.
//!
//! Owns the mapping only. Entries always point at a record that verified when written or
//! recovered; deleted and expired records have no entry. It must never hold record data.

use std::collections::HashMap;
use std::sync::Arc;

use apogee_wire::Digest;

use crate::record::RecordMeta;
use crate::sets::SetStats;

/// Where a record version lives, and the metadata needed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// File offset of the record's first byte.
    pub offset: u64,
    pub bytes: u32,
    pub meta: RecordMeta,
    /// The record's set, from [`Index::set_id`] (0: no set). Fits in the entry's padding.
    pub set_id: u16,
}

/// The index of one shard, and its per-set object counts.
#[derive(Debug, Default)]
pub struct Index {
    map: HashMap<Digest, IndexEntry>,
    set_ids: HashMap<Vec<u8>, u16>,
    sets: Arc<SetStats>,
}

impl Index {
    /// The id of a set name, registering it on first use; 0 for no set, and for names past
    /// the set limit (their records are then counted as set-less, with a warning).
    pub fn set_id(&mut self, name: &[u8]) -> u16 {
        if name.is_empty() {
            return 0;
        }
        if let Some(&id) = self.set_ids.get(name) {
            return id;
        }
        match self.sets.register(name) {
            Some(id) => {
                self.set_ids.insert(name.to_vec(), id);
                id
            }
            None => {
                tracing::warn!(set = %String::from_utf8_lossy(name), "set limit reached: records of this set are not counted by set");
                0
            }
        }
    }

    /// The shared per-set counts, for info.
    pub fn set_stats(&self) -> Arc<SetStats> {
        self.sets.clone()
    }

    pub fn get(&self, d: &Digest) -> Option<&IndexEntry> {
        self.map.get(d)
    }

    pub fn insert(&mut self, d: Digest, e: IndexEntry) {
        assert!(
            e.bytes > 0 && e.meta.generation != 0,
            "index entry for a real record"
        );
        if let Some(old) = self.map.insert(d, e) {
            self.sets.add(old.set_id, -1);
        }
        self.sets.add(e.set_id, 1);
    }

    pub fn remove(&mut self, d: &Digest) -> Option<IndexEntry> {
        let old = self.map.remove(d)?;
        self.sets.add(old.set_id, -1);
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Approximate RAM of the map: its slots (a digest and an entry each) and control bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.map.capacity() * (std::mem::size_of::<(Digest, IndexEntry)>() + 1)) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A tombstone, or a record that expired, still on disk: it keeps older versions of its digest
/// dead across restarts until no older version can remain, so its space stays accounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shadow {
    pub offset: u64,
    pub bytes: u32,
}

/// Digest → its shadow, for digests that have no live version.
pub type Shadows = HashMap<Digest, Shadow>;

impl Index {
    /// Every entry, for space accounting at start.
    pub fn iter(&self) -> impl Iterator<Item = (&Digest, &IndexEntry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod set_tests {
    use super::*;

    fn entry(set_id: u16) -> IndexEntry {
        IndexEntry {
            offset: 0,
            bytes: 100,
            meta: RecordMeta {
                generation: 1,
                void_time: 0,
                last_update_ms: 0,
            },
            set_id,
        }
    }

    #[test]
    fn set_counts_follow_inserts_overwrites_and_removes() {
        // The set id lives in the entry's padding: the index costs no more per record.
        assert!(std::mem::size_of::<IndexEntry>() <= 32);
        let mut idx = Index::default();
        let (a, b) = (idx.set_id(b"a"), idx.set_id(b"b"));
        assert_eq!((a, b, idx.set_id(b"a"), idx.set_id(b"")), (1, 2, 1, 0));
        for i in 0..3 {
            idx.insert(Digest::of_integer("a", i), entry(a));
        }
        idx.insert(Digest::of_integer("b", 0), entry(b));
        idx.insert(Digest::of_integer("a", 0), entry(a)); // an overwrite: still 3
        idx.insert(Digest::of_integer("", 0), entry(0));
        idx.remove(&Digest::of_integer("a", 1));
        idx.remove(&Digest::of_integer("a", 99)); // absent: no change
        assert_eq!(
            idx.set_stats().snapshot(),
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 1)]
        );
    }
}
