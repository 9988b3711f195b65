//! Secondary-index entries of one shard and namespace: for each index, an ordered set of
//! (key, digest), and for each record the (index, key) pairs it holds, so that any change of a
//! record — a new version, a delete, an expiry, an eviction, a truncate — replaces or drops its
//! entries without reading its old version.
//!
//! A key is an `i64`: the integer itself for numeric indexes, a 64-bit hash of the value for
//! string and blob indexes (a query re-checks the record, so a collision costs a read, never a
//! wrong answer), S2 cell ids for geo indexes (a region under several). What a record's keys are is decided outside
//! the engine by an [`Indexer`] (the server's index definitions); this module only keeps the
//! entries. It is plain Rust, no I/O, and it must never hold an entry for a digest that is not
//! live in the shard's primary index: the store changes both under one borrow.

pub mod entries;

use std::collections::HashMap;

use apogee_wire::Digest;
use smallvec::SmallVec;

use crate::cache::DigestHashing;
use crate::record::Record;
use entries::Entries;

/// A secondary index's id: unique within a node for the index's lifetime (never reused).
pub type IndexId = u32;

/// One entry's key within its index.
pub type IndexKey = i64;

/// Decides the entries a record version holds. Implemented by the server from its index
/// definitions; `keys` must be deterministic (the same record always gives the same keys).
pub trait Indexer {
    /// Whether any index is defined (no work at all on the write path when none is).
    fn is_empty(&self) -> bool;
    /// Appends `(index, key)` for each entry `record` holds, in any order, repeats allowed.
    fn keys(&self, record: &Record, out: &mut Vec<(IndexId, IndexKey)>);
}

/// Bytes one record with entries costs in the per-record map (digest, one inline entry, the
/// hash table's load factor).
const RECORD_BYTES: usize = 56;
/// Bytes each entry beyond a record's first costs in the per-record map.
const RECORD_ENTRY_BYTES: usize = 16;

/// The entries of every secondary index of one shard and namespace.
pub struct Sindexes {
    trees: HashMap<IndexId, Entries>,
    /// Per record, its entries sorted by (index, key), without repeats; one entry is kept
    /// inline (no allocation).
    by_digest: HashMap<Digest, SmallVec<[(IndexId, IndexKey); 1]>, DigestHashing>,
    entries: usize,
}

impl Default for Sindexes {
    fn default() -> Sindexes {
        Sindexes {
            trees: HashMap::new(),
            by_digest: HashMap::with_hasher(DigestHashing::new()),
            entries: 0,
        }
    }
}

impl Sindexes {
    /// Starts keeping entries for index `id` (empty until records are indexed).
    pub fn add_index(&mut self, id: IndexId) {
        self.trees.entry(id).or_default();
    }

    /// The indexes entries are kept for.
    pub fn ids(&self) -> Vec<IndexId> {
        self.trees.keys().copied().collect()
    }

    /// Whether entries are kept for `id`.
    pub fn has_index(&self, id: IndexId) -> bool {
        self.trees.contains_key(&id)
    }

    /// Drops index `id` and every entry it had.
    pub fn drop_index(&mut self, id: IndexId) {
        let Some(mut tree) = self.trees.remove(&id) else {
            return;
        };
        for (_, digest) in tree.drain() {
            self.entries -= 1;
            if let Some(list) = self.by_digest.get_mut(&digest) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    self.by_digest.remove(&digest);
                }
            }
        }
        self.check();
    }

    /// Makes `keys` (any order, repeats allowed; indexes not kept are ignored) the entries of
    /// `digest` in every index, replacing what it had.
    pub fn replace(&mut self, digest: Digest, keys: &mut Vec<(IndexId, IndexKey)>) {
        keys.retain(|(id, _)| self.trees.contains_key(id));
        keys.sort_unstable();
        keys.dedup();
        let old = self.by_digest.remove(&digest).unwrap_or_default();
        if old.as_slice() == keys.as_slice() {
            if !old.is_empty() {
                self.by_digest.insert(digest, old);
            }
            return;
        }
        for (id, key) in &old {
            self.untree(*id, *key, digest);
        }
        for (id, key) in keys.iter() {
            self.tree(*id, *key, digest);
        }
        if !keys.is_empty() {
            self.by_digest
                .insert(digest, keys.iter().copied().collect());
        }
        self.check();
    }

    /// Makes `keys` the entries of `digest` in index `id` only (the background build, which
    /// indexes one index at a time), leaving its entries in other indexes as they are.
    pub fn replace_in(&mut self, id: IndexId, digest: Digest, keys: &[IndexKey]) {
        if !self.trees.contains_key(&id) {
            return;
        }
        if keys.is_empty() && !self.by_digest.contains_key(&digest) {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(vacant) = self.by_digest.entry(digest) {
            // The build's common case: the record has no entries yet (one hash lookup).
            let mut mine: SmallVec<[(IndexId, IndexKey); 1]> =
                keys.iter().map(|k| (id, *k)).collect();
            if mine.len() > 1 {
                mine.sort_unstable();
                mine.dedup();
            }
            let tree = self.trees.get_mut(&id).expect("checked above");
            for (_, key) in &mine {
                let inserted = tree.insert(*key, &digest);
                debug_assert!(inserted, "an entry held twice");
            }
            self.entries += mine.len();
            vacant.insert(mine);
            self.check();
            return;
        }
        let mut all: Vec<(IndexId, IndexKey)> = self
            .by_digest
            .get(&digest)
            .map(|l| l.iter().copied().filter(|(i, _)| *i != id).collect())
            .unwrap_or_default();
        all.extend(keys.iter().map(|k| (id, *k)));
        self.replace(digest, &mut all);
    }

    /// A background build's entries of index `id` for many records at once, `(digest, keys)`
    /// each: as [`Sindexes::replace_in`] for each, but the entries of records with none yet
    /// (the common case) go into the index as one sorted run.
    pub fn replace_in_run<'a>(
        &mut self,
        id: IndexId,
        records: impl IntoIterator<Item = (Digest, &'a [IndexKey])>,
    ) {
        if !self.trees.contains_key(&id) {
            return;
        }
        let mut run = Vec::new();
        for (digest, keys) in records {
            match self.by_digest.entry(digest) {
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    if keys.is_empty() {
                        continue;
                    }
                    let mut mine: SmallVec<[(IndexId, IndexKey); 1]> =
                        keys.iter().map(|k| (id, *k)).collect();
                    if mine.len() > 1 {
                        mine.sort_unstable();
                        mine.dedup();
                    }
                    run.extend(mine.iter().map(|(_, k)| (*k, digest)));
                    vacant.insert(mine);
                }
                std::collections::hash_map::Entry::Occupied(_) => self.replace_in(id, digest, keys),
            }
        }
        let tree = self.trees.get_mut(&id).expect("checked above");
        let added = tree.insert_run(&run);
        debug_assert_eq!(added, run.len(), "an entry held twice");
        self.entries += added;
        self.check();
    }

    /// Makes room for entries of about `records` more records (a build, which knows how many
    /// records it will walk), so the per-record map does not rehash as it grows.
    pub fn reserve_records(&mut self, records: usize) {
        self.by_digest
            .reserve(records.saturating_sub(self.by_digest.len()));
    }

    /// Drops every entry of `digest` (the record is gone: deleted, expired, evicted, cut).
    pub fn clear(&mut self, digest: &Digest) {
        if self.by_digest.is_empty() {
            return;
        }
        if let Some(old) = self.by_digest.remove(digest) {
            for (id, key) in old {
                self.untree(id, key, *digest);
            }
            self.check();
        }
    }

    /// The entries of `digest`, sorted by (index, key).
    pub fn entries_of(&self, digest: &Digest) -> &[(IndexId, IndexKey)] {
        self.by_digest.get(digest).map_or(&[], |l| l.as_slice())
    }

    /// Entries of index `id` after `after` (exclusive; `None`: from the smallest key) with
    /// keys up to `last` (inclusive), in (key, digest) order.
    pub fn range(
        &self,
        id: IndexId,
        after: Option<(IndexKey, Digest)>,
        last: IndexKey,
    ) -> impl Iterator<Item = (IndexKey, Digest)> + '_ {
        let empty = after.is_some_and(|(k, _)| k > last);
        self.trees
            .get(&id)
            .filter(|_| !empty)
            .into_iter()
            .flat_map(move |t| t.range(after, last))
    }

    /// Entries in index `id`.
    pub fn entry_count(&self, id: IndexId) -> usize {
        self.trees.get(&id).map_or(0, Entries::len)
    }

    /// Records holding at least one entry.
    pub fn record_count(&self) -> usize {
        self.by_digest.len()
    }

    /// Estimated bytes held by index `id`'s entries (its share of the per-record map
    /// included).
    pub fn memory_bytes(&self, id: IndexId) -> usize {
        let n = self.entry_count(id);
        let records = self.by_digest.len();
        let extra = self.entries.saturating_sub(records);
        self.trees.get(&id).map_or(0, Entries::memory_bytes)
            + (RECORD_BYTES * records + RECORD_ENTRY_BYTES * extra) * n / self.entries.max(1)
    }

    fn tree(&mut self, id: IndexId, key: IndexKey, digest: Digest) {
        let inserted = self
            .trees
            .get_mut(&id)
            .expect("entries only for kept indexes")
            .insert(key, &digest);
        debug_assert!(inserted, "an entry held twice");
        self.entries += 1;
    }

    fn untree(&mut self, id: IndexId, key: IndexKey, digest: Digest) {
        if let Some(t) = self.trees.get_mut(&id) {
            let removed = t.remove(key, &digest);
            debug_assert!(removed, "a record's entry missing from its index");
            self.entries -= 1;
        }
    }

    /// Invariant, in debug builds: the trees hold exactly the per-record entries.
    fn check(&self) {
        debug_assert_eq!(
            self.entries,
            self.trees.values().map(Entries::len).sum::<usize>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest([i; 20])
    }

    fn keys(ix: &Sindexes, id: IndexId) -> Vec<(IndexKey, Digest)> {
        ix.range(id, None, IndexKey::MAX).collect()
    }

    #[test]
    fn replacing_a_records_keys_moves_its_entries() {
        let mut ix = Sindexes::default();
        ix.add_index(1);
        ix.add_index(2);
        ix.replace(d(1), &mut vec![(1, 5), (2, 7), (1, 5), (9, 1)]);
        assert_eq!(keys(&ix, 1), vec![(5, d(1))]);
        assert_eq!(
            ix.entries_of(&d(1)),
            &[(1, 5), (2, 7)],
            "index 9 is not kept"
        );
        ix.replace(d(1), &mut vec![(1, 6)]);
        assert_eq!(keys(&ix, 1), vec![(6, d(1))]);
        assert!(keys(&ix, 2).is_empty());
        ix.replace_in(2, d(1), &[3, 4]);
        assert_eq!(ix.entries_of(&d(1)), &[(1, 6), (2, 3), (2, 4)]);
        ix.clear(&d(1));
        assert_eq!(ix.record_count(), 0);
        assert_eq!(ix.entry_count(1) + ix.entry_count(2), 0);
    }

    #[test]
    fn ranges_resume_after_an_entry_and_stop_at_the_last_key() {
        let mut ix = Sindexes::default();
        ix.add_index(1);
        for i in 0..10u8 {
            ix.replace(d(i), &mut vec![(1, i64::from(i % 5))]);
        }
        let all = keys(&ix, 1);
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let from_2: Vec<_> = ix.range(1, Some((2, d(2))), 3).collect();
        assert_eq!(from_2, vec![(2, d(7)), (3, d(3)), (3, d(8))]);
        assert_eq!(ix.range(1, Some((4, d(0))), 3).count(), 0);
        assert_eq!(ix.range(7, None, 3).count(), 0, "unknown index");
    }

    #[test]
    fn dropping_an_index_leaves_the_others() {
        let mut ix = Sindexes::default();
        ix.add_index(1);
        ix.add_index(2);
        ix.replace(d(1), &mut vec![(1, 1), (2, 2)]);
        ix.replace(d(2), &mut vec![(1, 1)]);
        ix.drop_index(1);
        assert!(!ix.has_index(1));
        assert_eq!(ix.entries_of(&d(1)), &[(2, 2)]);
        assert_eq!(ix.record_count(), 1);
        assert!(ix.memory_bytes(2) > 0);
    }
}
