//! Secondary-index entries of one shard and namespace: for each index, an ordered set of
//! (key, digest), and for each record the (index, key) pairs it holds ([`owners`]: listed by a
//! tag of the digest, checked against the index), so that any change of a record — a new
//! version, a delete, an expiry, an eviction, a truncate — replaces or drops its entries
//! without reading its old version.
//!
//! A key is an `i64`: the integer itself for numeric indexes, a 64-bit hash of the value for
//! string and blob indexes (a query re-checks the record, so a collision costs a read, never a
//! wrong answer), S2 cell ids for geo indexes (a region under several). What a record's keys are is decided outside
//! the engine by an [`Indexer`] (the server's index definitions); this module only keeps the
//! entries. It is plain Rust, no I/O, and it must never hold an entry for a digest that is not
//! live in the shard's primary index: the store changes both under one borrow.

pub mod entries;
pub mod owners;

use std::collections::HashMap;

use apogee_wire::Digest;

use crate::record::Record;
use entries::Entries;
use owners::{List, Owners, Tag};

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
    /// Per record (by its digest's tag), its entries sorted by (index, key), without
    /// repeats; a tag two digests share lists both's (see `owners`).
    owners: Owners,
    entries: usize,
}

impl Sindexes {
    /// Starts keeping entries for index `id` (empty until records are indexed).
    pub fn add_index(&mut self, id: IndexId) {
        assert_ne!(id, owners::SPILLED, "index ids stop short of u32::MAX");
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
        for (key, digest) in tree.drain() {
            self.entries -= 1;
            let tag = self.owners.tag(&digest);
            let mut list = self.owners.take(tag);
            if let Some(at) = list.iter().position(|e| *e == (id, key)) {
                list.remove(at);
            }
            self.owners.set(tag, list);
        }
        self.check();
    }

    /// Whether (index `id`, `key`) is `digest`'s entry.
    fn holds(&self, id: IndexId, key: IndexKey, digest: &Digest) -> bool {
        self.trees.get(&id).is_some_and(|t| t.contains(key, digest))
    }

    /// Makes `keys` (any order, repeats allowed; indexes not kept are ignored) the entries of
    /// `digest` in every index, replacing what it had.
    pub fn replace(&mut self, digest: Digest, keys: &mut Vec<(IndexId, IndexKey)>) {
        keys.retain(|(id, _)| self.trees.contains_key(id));
        keys.sort_unstable();
        keys.dedup();
        let tag = self.owners.tag(&digest);
        if self.owners.is_vacant(tag) && keys.is_empty() {
            return;
        }
        let listed = self.owners.take(tag);
        if listed.as_slice() == keys.as_slice()
            && listed.iter().all(|(id, k)| self.holds(*id, *k, &digest))
        {
            // Unchanged (a new version with the same values).
            self.owners.set(tag, listed);
            return;
        }
        // The listed entries the index holds for this digest are its own; the rest belong
        // to another digest with the same tag.
        let mut list: List = listed
            .into_iter()
            .filter(|(id, k)| !self.untree(*id, *k, &digest))
            .collect();
        for (id, key) in keys.iter() {
            self.tree(*id, *key, &digest);
        }
        list.extend_from_slice(keys);
        list.sort_unstable();
        self.owners.set(tag, list);
        self.check();
    }

    /// Makes `keys` the entries of `digest` in index `id` only (the background build, which
    /// indexes one index at a time), leaving its entries in other indexes as they are.
    pub fn replace_in(&mut self, id: IndexId, digest: Digest, keys: &[IndexKey]) {
        if !self.trees.contains_key(&id) {
            return;
        }
        let mut all: Vec<(IndexId, IndexKey)> = self
            .entries_of(&digest)
            .into_iter()
            .filter(|(i, _)| *i != id)
            .collect();
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
            let tag = self.owners.tag(&digest);
            if !self.owners.is_vacant(tag) {
                self.replace_in(id, digest, keys);
                continue;
            }
            if keys.is_empty() {
                continue;
            }
            let mut mine: List = keys.iter().map(|k| (id, *k)).collect();
            if mine.len() > 1 {
                mine.sort_unstable();
                mine.dedup();
            }
            run.extend(mine.iter().map(|(_, k)| (*k, digest)));
            self.owners.set(tag, mine);
        }
        let tree = self.trees.get_mut(&id).expect("checked above");
        let added = tree.insert_run(&run);
        debug_assert_eq!(added, run.len(), "an entry held twice");
        self.entries += added;
        self.check();
    }

    /// Makes room for entries of about `records` more records (a build, which knows how many
    /// records it will walk), so the per-record table does not rehash as it grows.
    pub fn reserve_records(&mut self, records: usize) {
        self.owners
            .reserve(records.saturating_sub(self.owners.len()));
    }

    /// Drops every entry of `digest` (the record is gone: deleted, expired, evicted, cut).
    pub fn clear(&mut self, digest: &Digest) {
        if self.owners.is_empty() {
            return;
        }
        let tag = self.owners.tag(digest);
        if self.owners.is_vacant(tag) {
            return;
        }
        let listed = self.owners.take(tag);
        let others: List = listed
            .into_iter()
            .filter(|(id, k)| !self.untree(*id, *k, digest))
            .collect();
        self.owners.set(tag, others);
        self.check();
    }

    /// The entries of `digest`, sorted by (index, key).
    pub fn entries_of(&self, digest: &Digest) -> Vec<(IndexId, IndexKey)> {
        let tag: Tag = self.owners.tag(digest);
        let mut list = self.owners.get(tag);
        list.retain(|(id, k)| self.holds(*id, *k, digest));
        // Another digest with this tag may list the same entry.
        list.dedup();
        list.into_vec()
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

    /// Records holding at least one entry (two records whose digests share a tag count once).
    pub fn record_count(&self) -> usize {
        self.owners.len()
    }

    /// Estimated bytes held by index `id`'s entries (its share of the per-record table
    /// included).
    pub fn memory_bytes(&self, id: IndexId) -> usize {
        let n = self.entry_count(id);
        self.trees.get(&id).map_or(0, Entries::memory_bytes)
            + self.owners.memory_bytes() * n / self.entries.max(1)
    }

    fn tree(&mut self, id: IndexId, key: IndexKey, digest: &Digest) {
        let inserted = self
            .trees
            .get_mut(&id)
            .expect("entries only for kept indexes")
            .insert(key, digest);
        debug_assert!(inserted, "an entry held twice");
        self.entries += 1;
    }

    /// Removes (key, digest) from index `id`; whether it was there (it is `digest`'s own).
    fn untree(&mut self, id: IndexId, key: IndexKey, digest: &Digest) -> bool {
        let removed = self
            .trees
            .get_mut(&id)
            .is_some_and(|t| t.remove(key, digest));
        if removed {
            self.entries -= 1;
        }
        removed
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
            vec![(1, 5), (2, 7)],
            "index 9 is not kept"
        );
        ix.replace(d(1), &mut vec![(1, 6)]);
        assert_eq!(keys(&ix, 1), vec![(6, d(1))]);
        assert!(keys(&ix, 2).is_empty());
        ix.replace_in(2, d(1), &[3, 4]);
        assert_eq!(ix.entries_of(&d(1)), vec![(1, 6), (2, 3), (2, 4)]);
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

    /// Drives a `Sindexes` whose digests share tags (a few tags for many digests) through
    /// random replaces, builds, clears and index drops, against a plain map of each digest's
    /// entries: every digest's entries and every index's (key, digest) set stay exact.
    #[test]
    fn digests_sharing_a_tag_keep_their_own_entries() {
        let mut ix = Sindexes::default();
        ix.owners.coarse_tags = true;
        let mut model: HashMap<Digest, Vec<(IndexId, IndexKey)>> = HashMap::new();
        let mut kept = vec![1, 2, 3];
        let mut next_id: IndexId = 4;
        for &id in &kept {
            ix.add_index(id);
        }
        // Digests whose first byte is one of 3 values: 3 tags for 24 digests.
        let dg = |i: u64| {
            let mut b = [0u8; 20];
            b[0] = (i % 3) as u8;
            b[1..9].copy_from_slice(&i.to_le_bytes());
            Digest(b)
        };
        let mut s = 5u64;
        let mut rnd = |n: u64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) % n
        };
        for step in 0..6_000 {
            let d = dg(rnd(24));
            match rnd(20) {
                0..=11 => {
                    let mut keys: Vec<(IndexId, IndexKey)> = (0..rnd(4))
                        .map(|_| {
                            (
                                1 + rnd(u64::from(next_id)) as IndexId,
                                rnd(6) as IndexKey - 3,
                            )
                        })
                        .collect();
                    ix.replace(d, &mut keys.clone());
                    keys.retain(|(id, _)| kept.contains(id));
                    keys.sort_unstable();
                    keys.dedup();
                    model.insert(d, keys);
                }
                12..=14 => {
                    let id = kept[rnd(kept.len() as u64) as usize];
                    let mut mine: Vec<IndexKey> = (0..rnd(3)).map(|_| rnd(6) as IndexKey).collect();
                    if rnd(2) == 0 {
                        ix.replace_in(id, d, &mine);
                    } else {
                        ix.replace_in_run(id, [(d, &mine[..])]);
                    }
                    let e = model.entry(d).or_default();
                    e.retain(|(i, _)| *i != id);
                    mine.sort_unstable();
                    mine.dedup();
                    e.extend(mine.iter().map(|k| (id, *k)));
                    e.sort_unstable();
                }
                15..=17 => {
                    ix.clear(&d);
                    model.remove(&d);
                }
                18 => {
                    let id = kept.remove(rnd(kept.len() as u64) as usize);
                    ix.drop_index(id);
                    for e in model.values_mut() {
                        e.retain(|(i, _)| *i != id);
                    }
                    kept.push(next_id);
                    ix.add_index(next_id);
                    next_id += 1;
                }
                _ => {}
            }
            model.retain(|_, e| !e.is_empty());
            if step % 50 == 0 || step > 5_990 {
                for i in 0..24 {
                    let d = dg(i);
                    assert_eq!(
                        ix.entries_of(&d),
                        model.get(&d).cloned().unwrap_or_default(),
                        "step {step}, digest {i}"
                    );
                }
                for &id in &kept {
                    let mut want: Vec<(IndexKey, Digest)> = model
                        .iter()
                        .flat_map(|(d, e)| {
                            e.iter()
                                .filter(|(i, _)| *i == id)
                                .map(move |(_, k)| (*k, *d))
                        })
                        .collect();
                    want.sort_unstable();
                    assert_eq!(keys(&ix, id), want, "step {step}, index {id}");
                }
                assert!(ix.record_count() <= 3, "3 tags at most");
            }
        }
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
        assert_eq!(ix.entries_of(&d(1)), vec![(2, 2)]);
        assert_eq!(ix.record_count(), 1);
        assert!(ix.memory_bytes(2) > 0);
    }
}
