//! Secondary-index entries of one shard and namespace: for each index, an ordered set of
//! (key, digest, handle) entries ([`entries`]), the handle naming the record's place in the
//! shard's primary index.
//!
//! There is no table of which entries each record holds (it cost more memory than the entries
//! themselves): a record's entries are never looked up by record. Instead a record's place
//! changes whenever its entries would: a new version that brings keys moves the record to a
//! new handle (the keydir does, and leaves the old one dead), a removed record's handle dies,
//! and [`Sindexes::sweep`] drops the entries of dead handles before the primary index reuses
//! them. So an entry is current exactly when its handle is live — readers check that — and
//! the entries of a removed record cost memory only until the next sweep. This is Aerospike's
//! design (its entries name index elements, and a garbage collector drops the entries of
//! deleted records).
//!
//! A key is an `i64`: the integer itself for numeric indexes, a 64-bit hash of the value for
//! string and blob indexes (a query re-checks the record, so a collision costs a read, never a
//! wrong answer), S2 cell ids for geo indexes (a region under several). What a record's keys
//! are is decided outside the engine by an [`Indexer`] (the server's index definitions); this
//! module only keeps the entries. Plain Rust, no I/O; digests are read through a
//! [`Resolve`]r (the primary index) and never stored beyond their first byte.

pub mod entries;

use std::collections::HashMap;

use apogee_wire::Digest;

use crate::record::Record;
use entries::{Entries, Full, Handle, Resolve};

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

/// The entries of every secondary index of one shard and namespace.
#[derive(Default)]
pub struct Sindexes {
    trees: HashMap<IndexId, Entries>,
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

    /// Whether no index is kept.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    /// Drops index `id` and every entry it had.
    pub fn drop_index(&mut self, id: IndexId) {
        self.trees.remove(&id);
    }

    /// Adds the entries `keys` (any order, repeats allowed; indexes not kept are ignored) of
    /// the record `digest` at `handle`, a handle that had no entries (the keydir moves a
    /// record to a new handle before it gets new entries).
    pub fn insert(
        &mut self,
        handle: Handle,
        digest: &Digest,
        keys: &[(IndexId, IndexKey)],
        r: &impl Resolve,
    ) {
        for (id, key) in keys {
            if let Some(tree) = self.trees.get_mut(id) {
                // Repeats of a key are the same entry: `insert` keeps one.
                tree.insert(Full::new(*key, digest, handle), r);
            }
        }
    }

    /// A background build's entries of index `id` for many records at once, `(digest,
    /// handle, keys)` each, put into the index as one sorted run. Entries there already (a
    /// write indexed the same version) stay as they are.
    pub fn insert_run<'a>(
        &mut self,
        id: IndexId,
        records: impl IntoIterator<Item = (Digest, Handle, &'a [IndexKey])>,
        r: &impl Resolve,
    ) -> usize {
        let Some(tree) = self.trees.get_mut(&id) else {
            return 0;
        };
        let mut run: Vec<Full> = records
            .into_iter()
            .flat_map(|(digest, handle, keys)| {
                keys.iter().map(move |k| Full::new(*k, &digest, handle))
            })
            .collect();
        tree.insert_run(&mut run, r)
    }

    /// Drops every entry whose handle `dead` names (records removed or moved); returns how
    /// many were dropped.
    pub fn sweep(&mut self, dead: impl Fn(Handle) -> bool, r: &impl Resolve) -> usize {
        self.trees.values_mut().map(|t| t.sweep(&dead, r)).sum()
    }

    /// One step of an incremental sweep of index `id` (see [`Entries::sweep_step`]); `None`
    /// when the index is gone.
    pub fn sweep_step(
        &mut self,
        id: IndexId,
        from: Option<Full>,
        leaves_max: usize,
        dead: impl Fn(Handle) -> bool,
        r: &impl Resolve,
    ) -> Option<(usize, Option<Full>)> {
        let tree = self.trees.get_mut(&id)?;
        Some(tree.sweep_step(from, leaves_max, dead, r))
    }

    /// Whether index `id` holds (`key`, `digest`) at `handle`.
    pub fn holds(
        &self,
        id: IndexId,
        key: IndexKey,
        digest: &Digest,
        handle: Handle,
        r: &impl Resolve,
    ) -> bool {
        self.trees
            .get(&id)
            .is_some_and(|t| t.contains(&Full::new(key, digest, handle), r))
    }

    /// Entries of index `id` after `after` (exclusive; `None`: from the smallest key) with
    /// keys up to `last` (inclusive), in (key, digest, handle) order — dead handles' too.
    pub fn range<'a, R: Resolve>(
        &'a self,
        id: IndexId,
        after: Option<(IndexKey, Digest)>,
        last: IndexKey,
        r: &'a R,
    ) -> impl Iterator<Item = Full> + 'a {
        let empty = after.is_some_and(|(k, _)| k > last);
        self.trees
            .get(&id)
            .filter(|_| !empty)
            .into_iter()
            .flat_map(move |t| t.range(after, last, r))
    }

    /// Entries in index `id` (a removed record's count until the next sweep).
    pub fn entry_count(&self, id: IndexId) -> usize {
        self.trees.get(&id).map_or(0, Entries::len)
    }

    /// Entries in every index.
    pub fn total_entries(&self) -> usize {
        self.trees.values().map(Entries::len).sum()
    }

    /// Estimated bytes held by index `id`'s entries.
    pub fn memory_bytes(&self, id: IndexId) -> usize {
        self.trees.get(&id).map_or(0, Entries::memory_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest([i; 20])
    }

    /// Handle `h` names digest `d(h / 10)`.
    struct Tens;

    impl Resolve for Tens {
        fn digest_tail(&self, h: Handle) -> [u8; 19] {
            [(h / 10) as u8; 19]
        }
    }

    fn all(ix: &Sindexes, id: IndexId) -> Vec<(IndexKey, Digest, Handle)> {
        ix.range(id, None, IndexKey::MAX, &Tens)
            .map(|f| (f.key(), f.digest(), f.handle()))
            .collect()
    }

    #[test]
    fn entries_go_to_their_indexes_and_sweeps_drop_dead_handles() {
        let mut ix = Sindexes::default();
        ix.add_index(1);
        ix.add_index(2);
        ix.insert(10, &d(1), &[(1, 5), (2, 7), (1, 5), (9, 1)], &Tens);
        assert_eq!(all(&ix, 1), vec![(5, d(1), 10)]);
        assert_eq!(all(&ix, 2), vec![(7, d(1), 10)]);
        assert!(ix.holds(2, 7, &d(1), 10, &Tens) && !ix.holds(2, 7, &d(1), 11, &Tens));
        // The record moves to handle 11 with new keys; the old handle dies.
        ix.insert(11, &d(1), &[(1, 6)], &Tens);
        assert_eq!(ix.total_entries(), 3);
        assert_eq!(ix.sweep(|h| h == 10, &Tens), 2);
        assert_eq!(all(&ix, 1), vec![(6, d(1), 11)]);
        assert!(all(&ix, 2).is_empty());
        let n = ix.insert_run(2, [(d(2), 20, &[3, 4, 3][..]), (d(1), 11, &[3][..])], &Tens);
        assert_eq!(n, 3);
        assert_eq!(
            all(&ix, 2),
            vec![(3, d(1), 11), (3, d(2), 20), (4, d(2), 20)]
        );
        ix.drop_index(1);
        assert!(!ix.has_index(1) && ix.entry_count(1) == 0);
        assert!(ix.memory_bytes(2) > 0);
    }

    #[test]
    fn ranges_resume_after_an_entry_and_stop_at_the_last_key() {
        let mut ix = Sindexes::default();
        ix.add_index(1);
        for i in 0..10u8 {
            ix.insert(Handle::from(i) * 10, &d(i), &[(1, i64::from(i % 5))], &Tens);
        }
        let keys: Vec<_> = all(&ix, 1).into_iter().map(|(k, d, _)| (k, d)).collect();
        assert_eq!(keys.len(), 10);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let from_2: Vec<_> = ix
            .range(1, Some((2, d(2))), 3, &Tens)
            .map(|f| (f.key(), f.digest()))
            .collect();
        assert_eq!(from_2, vec![(2, d(7)), (3, d(3)), (3, d(8))]);
        assert_eq!(ix.range(1, Some((4, d(0))), 3, &Tens).count(), 0);
        assert_eq!(ix.range(7, None, 3, &Tens).count(), 0, "unknown index");
    }
}
