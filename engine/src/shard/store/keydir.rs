//! The keydir: what one shard knows per key — the index of live versions and the shadows
//! (tombstones and expired records still on disk) — with **one** mutation point,
//! [`Keydir::mutate`].
//!
//! Every insert, replace or removal of an index entry or a shadow goes through `mutate`:
//! client writes and deletes, evictions, expiry, defragmentation moving a record, truncation
//! and recovery's replay. It is the hook where secondary indexes, replication and migration
//! will observe record changes later: one `match` on [`Change`] sees them all. Reading is
//! through [`Keydir::index`] and [`Keydir::shadows`] (read-only; scans and iteration use
//! these).
//!
//! Owns the index and the shadows; block live bytes belong to the block table, which
//! `mutate` keeps in step through [`LiveBytes`]. Invariant, checked in debug builds after
//! every change: a digest is never both live in the index and a shadow. It must never do I/O
//! or touch the record cache (the store does, around it).

use apogee_wire::Digest;

use crate::index::{DeadSet, Index, IndexEntry, Shadow, Shadows};
use crate::shard::space::BlockTable;
use crate::sindex::entries::Full;
use crate::sindex::{IndexId, IndexKey, Sindexes};

/// Dead primary-index positions (records removed, or moved by a new version with keys) that
/// trigger a sweep of the secondary-index entries naming them, at the least: a sweep walks
/// every entry, so it waits for this many or an eighth of the records, whichever is more.
pub const SWEEP_DEAD_MIN: usize = 16_384;

/// One change to what the shard knows about a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new live version at `entry` (just appended, or replayed) replaces whatever the digest
    /// had: its live entry or its shadow.
    Live { digest: Digest, entry: IndexEntry },
    /// A new version that shadows older ones (a tombstone, or an expired record appended or
    /// replayed) replaces the live entry or shadow the digest had.
    Shadow { digest: Digest, shadow: Shadow },
    /// The live entry expired: its bytes stay where they are, now as the digest's shadow.
    Expire { digest: Digest },
    /// The live entry is dropped with no shadow (truncation: the durable cut-off is what keeps
    /// older versions dead).
    Remove { digest: Digest },
    /// The shadow is dropped: no older version of the digest remains anywhere (defragmentation
    /// of the oldest block in use).
    DropShadow { digest: Digest },
}

impl Change {
    pub(crate) fn digest(&self) -> &Digest {
        match self {
            Change::Live { digest, .. }
            | Change::Shadow { digest, .. }
            | Change::Expire { digest }
            | Change::Remove { digest }
            | Change::DropShadow { digest } => digest,
        }
    }
}

/// What a change replaced: the digest's live entry and shadow before it (at most one of the
/// two exists).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Replaced {
    pub(crate) live: Option<IndexEntry>,
    pub(crate) shadow: Option<Shadow>,
}

/// Where block live bytes are accounted: the block table while the store runs; nothing during
/// recovery's replay, which counts live bytes once at its end.
pub(crate) trait LiveBytes {
    fn add_live(&mut self, offset: u64, bytes: u32);
    fn remove_live(&mut self, offset: u64, bytes: u32);
}

impl LiveBytes for BlockTable {
    fn add_live(&mut self, offset: u64, bytes: u32) {
        BlockTable::add_live(self, offset, bytes);
    }
    fn remove_live(&mut self, offset: u64, bytes: u32) {
        BlockTable::remove_live(self, offset, bytes);
    }
}

/// Live bytes not accounted yet (recovery's replay).
pub(crate) struct Uncounted;

impl LiveBytes for Uncounted {
    fn add_live(&mut self, _: u64, _: u32) {}
    fn remove_live(&mut self, _: u64, _: u32) {}
}

/// The index, the shadows and the secondary-index entries of one shard.
#[derive(Default)]
pub(crate) struct Keydir {
    index: Index,
    shadows: Shadows,
    sindexes: Sindexes,
    /// Per running background build (by index): the digests changed since its last run of
    /// entries went in. The build skips them — a write or delete has set their entries —
    /// whatever their metadata says (a record deleted and written again in the same
    /// millisecond can come back with the metadata the build read).
    building: std::collections::HashMap<IndexId, std::collections::HashSet<Digest>>,
    /// The incremental sweep in progress, if any.
    sweep: Option<SweepRun>,
}

/// An incremental sweep: the handles dead when it began (released when it ends, never
/// before: entries naming them may remain until then), the indexes to walk, and where it is.
struct SweepRun {
    dead: DeadSet,
    /// How many of the oldest dead handles are this sweep's.
    count: usize,
    ids: Vec<IndexId>,
    at: usize,
    from: Option<Full>,
}

impl Keydir {
    /// The index of live versions, read-only (lookups, iteration per partition, stats).
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Tombstones and expired records kept on disk to shadow older versions, read-only.
    pub(crate) fn shadows(&self) -> &Shadows {
        &self.shadows
    }

    /// The secondary-index entries, read-only (queries).
    pub(crate) fn sindexes(&self) -> &Sindexes {
        &self.sindexes
    }

    /// Starts keeping entries for a secondary index (its build fills them). From now on a
    /// removed record's handle stays dead until a sweep.
    pub(crate) fn add_sindex(&mut self, id: IndexId) {
        self.sindexes.add_index(id);
        self.index.keep_dead(true);
    }

    /// Drops a secondary index and its entries (the last one: dead handles are released).
    pub(crate) fn drop_sindex(&mut self, id: IndexId) {
        self.sindexes.drop_index(id);
        if self.sindexes.is_empty() {
            // Every dead handle is released: no sweep has anything left to do.
            self.sweep = None;
            self.index.keep_dead(false);
        }
    }

    /// Whether a new version of `digest` with keys `new` leaves its entries as they are: the
    /// replaced version's keys `old` are the same (indexes not kept aside), and the index
    /// holds each at the record's handle. Sorts and dedups `new` (callers insert it as is
    /// otherwise, which allows any order).
    fn keeps_entries(
        &self,
        digest: &Digest,
        new: &mut Vec<(IndexId, IndexKey)>,
        old: &[(IndexId, IndexKey)],
    ) -> bool {
        let kept = |v: &mut Vec<(IndexId, IndexKey)>| {
            v.retain(|(id, _)| self.sindexes.has_index(*id));
            v.sort_unstable();
            v.dedup();
        };
        kept(new);
        let mut old = old.to_vec();
        kept(&mut old);
        if old != *new {
            return false;
        }
        let Some(handle) = self.index.handle(digest) else {
            return new.is_empty();
        };
        new.iter()
            .all(|(id, key)| self.sindexes.holds(*id, *key, digest, handle, &self.index))
    }

    /// Drops the secondary-index entries of dead handles and releases the handles for reuse;
    /// returns the entries dropped.
    pub(crate) fn sweep_sindexes(&mut self) -> usize {
        let n = self.index.dead_count();
        if n == 0 {
            return 0;
        }
        // This sweep covers every dead handle, an incremental one's included.
        self.sweep = None;
        let dead = self.index.dead_handles();
        let dropped = self.sindexes.sweep(|h| dead.contains(h), &self.index);
        self.index.release_dead(n);
        dropped
    }

    /// One step of an incremental sweep (starting one when handles are dead and none runs):
    /// at most `leaves_max` leaves of one index. Returns whether the sweep goes on; at its end
    /// the handles dead when it began are released. Changes may come between steps: entries
    /// are only ever added for live handles, so none for the sweep's dead ones.
    pub(crate) fn sweep_sindexes_step(&mut self, leaves_max: usize) -> bool {
        if self.sweep.is_none() {
            let count = self.index.dead_count();
            if count == 0 {
                return false;
            }
            self.sweep = Some(SweepRun {
                dead: self.index.dead_handles(),
                count,
                ids: self.sindexes.ids(),
                at: 0,
                from: None,
            });
        }
        let run = self.sweep.as_mut().expect("started above");
        while let Some(&id) = run.ids.get(run.at) {
            let dead = &run.dead;
            match self.sindexes.sweep_step(
                id,
                run.from,
                leaves_max,
                |h| dead.contains(h),
                &self.index,
            ) {
                Some((_, Some(next))) => {
                    run.from = Some(next);
                    return true;
                }
                Some((_, None)) => {
                    run.at += 1;
                    run.from = None;
                    return true;
                }
                // Dropped since the sweep began.
                None => {
                    run.at += 1;
                    run.from = None;
                }
            }
        }
        let run = self.sweep.take().expect("running");
        self.index.release_dead(run.count);
        false
    }

    /// Dead handles awaiting a sweep.
    pub(crate) fn dead_count(&self) -> usize {
        self.index.dead_count()
    }

    /// A background build of index `id` starts: changes from now on are noted for it.
    pub(crate) fn start_build(&mut self, id: IndexId) {
        self.building.entry(id).or_default();
    }

    /// The build of index `id` ended (done, stopped or dropped).
    pub(crate) fn end_build(&mut self, id: IndexId) {
        self.building.remove(&id);
    }

    /// A background build's entries of index `id` for many records, `(digest, meta, keys)`
    /// each: a record's are taken only when it did not change since the previous run went in
    /// and `meta` is still its live version (a write or delete since the build read it has
    /// set its entries already). Returns how many were taken.
    pub(crate) fn build_sindex_entries<'a>(
        &mut self,
        id: IndexId,
        records: impl IntoIterator<Item = (Digest, crate::record::RecordMeta, &'a [IndexKey])>,
    ) -> usize {
        let index = &self.index;
        let changed = self
            .building
            .get_mut(&id)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut taken = 0;
        let current = records
            .into_iter()
            .filter(|(digest, ..)| !changed.contains(digest))
            .filter(|(digest, meta, _)| index.get(digest).map(|e| e.meta) == Some(*meta))
            .map(|(digest, _, keys)| {
                taken += 1;
                let handle = index.handle(&digest).expect("a live version");
                (digest, handle, keys)
            });
        self.sindexes.insert_run(id, current, index);
        taken
    }

    /// The shard's id for a set name, registering it on first sight (0: no set, or the set
    /// limit is reached). Not a record change: ids only name sets.
    pub(crate) fn set_id(&mut self, name: &[u8]) -> u16 {
        self.index.set_id(name)
    }

    /// Sizes the index for a bulk load (recovery) of about `records` over `partitions`.
    pub(crate) fn expect_records(&mut self, records: usize, partitions: usize) {
        self.index.expect_records(records, partitions);
    }

    /// Ends a bulk load: gives back what `expect_records` over-reserved.
    pub(crate) fn end_bulk(&mut self) {
        self.index.end_bulk();
    }

    /// [`Keydir::mutate`], then the secondary-index entries: a new live version with `keys`
    /// gets exactly those (`None`: its entries stay, as when defragmentation moves the same
    /// bytes or recovery replays before any index is built); a change that leaves the digest
    /// with no live version drops its entries.
    ///
    /// How, without knowing a record's old entries: while any index exists, a new version
    /// with keys moves the record to a new handle, and a removal leaves its handle dead; the
    /// entries of dead handles are current no more (readers skip them) and a sweep drops
    /// them, run here once [`SWEEP_DEAD_MIN`] or an eighth of the records are dead.
    pub(crate) fn mutate_indexed(
        &mut self,
        change: Change,
        live: &mut impl LiveBytes,
        keys: Option<&mut Vec<(IndexId, IndexKey)>>,
    ) -> Replaced {
        self.mutate_indexed_over(change, live, keys, None)
    }

    /// [`Keydir::mutate_indexed`] of a new version whose replaced version held `old_keys`
    /// (when known): if the new version's keys are the same and the index holds them all at
    /// the record's handle, the record keeps its handle and its entries. The check against
    /// the index matters: a version written before an index was added holds no entries in
    /// it yet, whatever its keys.
    pub(crate) fn mutate_indexed_over(
        &mut self,
        change: Change,
        live: &mut impl LiveBytes,
        mut keys: Option<&mut Vec<(IndexId, IndexKey)>>,
        old_keys: Option<&[(IndexId, IndexKey)]>,
    ) -> Replaced {
        let indexed = !self.sindexes.is_empty();
        let mut moves = indexed && matches!((change, &keys), (Change::Live { .. }, Some(_)));
        if let (true, Change::Live { digest, .. }, Some(new), Some(old)) =
            (moves, change, keys.as_deref_mut(), old_keys)
        {
            if self.keeps_entries(&digest, new, old) {
                moves = false;
                keys = None; // nothing to insert either
            }
        }
        let replaced = self.mutate_moving(change, live, moves);
        let rewritten = !matches!(
            (change, &keys),
            (Change::Live { .. }, None) | (Change::DropShadow { .. }, _)
        );
        if rewritten && !self.building.is_empty() {
            for changed in self.building.values_mut() {
                changed.insert(*change.digest());
            }
        }
        match (change, keys) {
            (Change::Live { digest, .. }, Some(keys)) if indexed => {
                let handle = self.index.handle(&digest).expect("just made live");
                self.sindexes.insert(handle, &digest, keys, &self.index);
            }
            (Change::DropShadow { .. }, Some(_)) => unreachable!("keys for a dropped shadow"),
            // A removal's handle is dead now: its entries go at the next sweep.
            _ => {}
        }
        if indexed && self.index.dead_count() >= SWEEP_DEAD_MIN.max(self.index.len() / 8) {
            self.sweep_sindexes();
        }
        replaced
    }

    /// [`Keydir::mutate_moving`] without moving (the tests of the bookkeeping).
    #[cfg(test)]
    fn mutate(&mut self, change: Change, live: &mut impl LiveBytes) -> Replaced {
        self.mutate_moving(change, live, false)
    }

    /// Applies one change: the single place where index entries and shadows are inserted,
    /// replaced or removed, and where the block live bytes they hold move with them. Callers
    /// outside this file go through [`Keydir::mutate_indexed`], which keeps the secondary
    /// indexes in step. With `moves`, a live record that gets a new version takes a new place
    /// in the index (its old handle dead) instead of its old one.
    fn mutate_moving(
        &mut self,
        change: Change,
        live: &mut impl LiveBytes,
        moves: bool,
    ) -> Replaced {
        let mut replaced = Replaced::default();
        let mut added = None;
        match change {
            Change::Live { digest, entry } => {
                replaced.live = if moves {
                    let old = self.index.remove(&digest);
                    let same = self.index.insert(digest, entry);
                    debug_assert!(same.is_none());
                    old
                } else {
                    self.index.insert(digest, entry)
                };
                // The common case has no shadows at all: skip the hash of the lookup.
                if !self.shadows.is_empty() {
                    replaced.shadow = self.shadows.remove(&digest);
                }
                added = Some((entry.offset, entry.bytes));
            }
            Change::Shadow { digest, shadow } => {
                replaced.live = self.index.remove(&digest);
                replaced.shadow = self.shadows.insert(digest, shadow);
                added = Some((shadow.offset, shadow.bytes));
            }
            Change::Expire { digest } => {
                // The bytes stay live where they are: only their role changes.
                if let Some(e) = self.index.remove(&digest) {
                    let shadow = Shadow {
                        offset: e.offset,
                        bytes: e.bytes,
                    };
                    let before = self.shadows.insert(digest, shadow);
                    debug_assert!(before.is_none(), "a digest was live and a shadow");
                    replaced.live = Some(e);
                }
                debug_assert!(replaced.live.is_some(), "expired a digest with no entry");
                return replaced;
            }
            Change::Remove { digest } => {
                replaced.live = self.index.remove(&digest);
                debug_assert!(replaced.live.is_some(), "removed a digest with no entry");
            }
            Change::DropShadow { digest } => {
                replaced.shadow = self.shadows.remove(&digest);
                debug_assert!(
                    replaced.shadow.is_some(),
                    "dropped a shadow that is not there"
                );
            }
        }
        if let Some(old) = replaced.live {
            live.remove_live(old.offset, old.bytes);
        }
        if let Some(old) = replaced.shadow {
            live.remove_live(old.offset, old.bytes);
        }
        // After the removals: the old version's bytes leave before the new one's arrive.
        if let Some((offset, bytes)) = added {
            live.add_live(offset, bytes);
        }
        debug_assert!(
            !(replaced.live.is_some() && replaced.shadow.is_some()),
            "a digest was live and a shadow"
        );
        debug_assert!(
            !(self.index.get(change.digest()).is_some()
                && self.shadows.contains_key(change.digest())),
            "a digest is live and a shadow after {change:?}"
        );
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordMeta;

    /// Live bytes per offset, to check what `mutate` accounts.
    #[derive(Default)]
    struct Ledger(std::collections::BTreeMap<u64, u32>);

    impl LiveBytes for Ledger {
        fn add_live(&mut self, offset: u64, bytes: u32) {
            assert!(self.0.insert(offset, bytes).is_none(), "added twice");
        }
        fn remove_live(&mut self, offset: u64, bytes: u32) {
            assert_eq!(
                self.0.remove(&offset),
                Some(bytes),
                "removed what was not live"
            );
        }
    }

    fn entry(offset: u64) -> IndexEntry {
        IndexEntry {
            offset,
            bytes: 100,
            meta: RecordMeta {
                generation: 1,
                void_time: 0,
                last_update_ms: 5,
            },
            set_id: 0,
        }
    }

    #[test]
    fn every_change_moves_entries_shadows_and_live_bytes_together() {
        let d = Digest([7; 20]);
        let mut k = Keydir::default();
        let mut live = Ledger::default();
        let r = k.mutate(
            Change::Live {
                digest: d,
                entry: entry(4096),
            },
            &mut live,
        );
        assert_eq!(r, Replaced::default());
        // A newer version replaces the old: only the new one's bytes are live.
        let r = k.mutate(
            Change::Live {
                digest: d,
                entry: entry(8192),
            },
            &mut live,
        );
        assert_eq!(r.live.map(|e| e.offset), Some(4096));
        assert_eq!(live.0.keys().copied().collect::<Vec<_>>(), vec![8192]);
        // A tombstone: no live entry, a shadow holding its bytes.
        let shadow = Shadow {
            offset: 12288,
            bytes: 40,
        };
        k.mutate(Change::Shadow { digest: d, shadow }, &mut live);
        assert!(k.index().get(&d).is_none());
        assert_eq!(k.shadows().get(&d), Some(&shadow));
        assert_eq!(live.0.keys().copied().collect::<Vec<_>>(), vec![12288]);
        // Written again: the shadow goes.
        k.mutate(
            Change::Live {
                digest: d,
                entry: entry(16384),
            },
            &mut live,
        );
        assert!(k.shadows().is_empty());
        // Expiry keeps the bytes live, as a shadow.
        k.mutate(Change::Expire { digest: d }, &mut live);
        assert_eq!(k.shadows().get(&d).map(|s| s.offset), Some(16384));
        assert_eq!(live.0.keys().copied().collect::<Vec<_>>(), vec![16384]);
        k.mutate(Change::DropShadow { digest: d }, &mut live);
        assert!(k.shadows().is_empty() && live.0.is_empty());
        // Truncation drops a live entry without a shadow.
        k.mutate(
            Change::Live {
                digest: d,
                entry: entry(20480),
            },
            &mut live,
        );
        k.mutate(Change::Remove { digest: d }, &mut live);
        assert!(k.index().is_empty() && k.shadows().is_empty() && live.0.is_empty());
    }
}
