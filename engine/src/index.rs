//! The per-shard primary index: digest → where the newest version lives and its metadata.
//!
//! Owns the mapping only. Entries always point at a record that verified when written or
//! recovered; deleted and expired records have no entry. It must never hold record data.

use std::collections::HashMap;

use apogee_wire::Digest;

use crate::record::RecordMeta;

/// Where a record version lives, and the metadata needed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// File offset of the record's first byte.
    pub offset: u64,
    pub bytes: u32,
    pub meta: RecordMeta,
}

/// The index of one shard.
#[derive(Debug, Default)]
pub struct Index {
    map: HashMap<Digest, IndexEntry>,
}

impl Index {
    pub fn get(&self, d: &Digest) -> Option<&IndexEntry> {
        self.map.get(d)
    }

    pub fn insert(&mut self, d: Digest, e: IndexEntry) {
        assert!(
            e.bytes > 0 && e.meta.generation != 0,
            "index entry for a real record"
        );
        self.map.insert(d, e);
    }

    pub fn remove(&mut self, d: &Digest) -> Option<IndexEntry> {
        self.map.remove(d)
    }

    pub fn len(&self) -> usize {
        self.map.len()
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
