//! One secondary index's entries on one shard: an ordered set of (key, digest, handle), kept
//! packed in sorted leaves of [`LEAF_ENTRIES_MAX`] entries under an ordered map of each
//! leaf's first entry.
//!
//! An entry is 13 bytes: the key (8), the digest's first byte (1) and the record's primary-
//! index [`Handle`] (4); the other 19 digest bytes are read through the handle when two
//! entries tie on key and first byte (a [`Resolve`]r: the shard's primary index). That is
//! Aerospike's layout (its entries hold a 1-byte digest stub and a 40-bit index handle), and
//! the point is memory: a (key, digest) entry was 28 bytes. Entries of removed records stay
//! until [`Entries::sweep`] drops them (the index keeps their digests readable until then);
//! readers skip them by asking the index whether the handle is live.
//!
//! Order: (key, digest, handle) — a digest may hold two handles for a moment (a record moved
//! to a new handle, the old one dead and not swept yet), and queries resume after a (key,
//! digest) whatever its handle.
//!
//! Why leaves and not a `BTreeSet`: its nodes hold 11 elements about two-thirds full and every
//! split allocates (~52 bytes per 28-byte entry). A full leaf first hands entries to a
//! neighbour with room, so leaves stay about 80 % full; runs of a build fill them to 7/8.
//!
//! Plain Rust, no I/O. Invariants, checked in debug builds: every leaf is non-empty, sorted,
//! without repeats, at most [`LEAF_ENTRIES_MAX`] long, keyed by its first entry, and every
//! entry of a leaf is below the next leaf's first.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use apogee_wire::Digest;

pub use crate::index::Handle;

use super::IndexKey;

/// Entries one leaf holds at most (1.6 KiB of entries).
pub const LEAF_ENTRIES_MAX: usize = 128;
/// A full leaf hands entries to its right neighbour instead of splitting while the neighbour
/// holds at most this many.
const NEIGHBOUR_ROOM_MAX: usize = LEAF_ENTRIES_MAX - LEAF_ENTRIES_MAX / 8;
/// Entries a leaf cut from a bulk merge or a sweep holds at most: seven eighths of a leaf.
const BULK_FILL: usize = LEAF_ENTRIES_MAX - LEAF_ENTRIES_MAX / 8;

/// Bytes of one packed entry: the key (8), the digest's first byte (1), the handle (4).
pub const ENTRY_BYTES: usize = 13;

/// Reads the digest behind a handle: the shard's primary index.
pub trait Resolve {
    /// Bytes 1..20 of the digest at `h` (live, or dead and not yet swept).
    fn digest_tail(&self, h: Handle) -> [u8; 19];
}

impl Resolve for crate::index::Index {
    fn digest_tail(&self, h: Handle) -> [u8; 19] {
        crate::index::Index::digest_tail(self, h)
    }
}

/// An entry with its whole digest: its place in the order (the key with its sign bit flipped,
/// so unsigned order is key order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Full {
    key: u64,
    digest: [u8; 20],
    handle: Handle,
}

impl Full {
    pub fn new(key: IndexKey, digest: &Digest, handle: Handle) -> Full {
        Full {
            key: flip(key),
            digest: digest.0,
            handle,
        }
    }

    /// The place just after every entry of (`key`, `digest`), whatever its handle.
    fn after(key: IndexKey, digest: &Digest) -> Full {
        Full::new(key, digest, Handle::MAX)
    }

    pub fn key(&self) -> IndexKey {
        flip(self.key) as IndexKey
    }

    pub fn digest(&self) -> Digest {
        Digest(self.digest)
    }

    pub fn handle(&self) -> Handle {
        self.handle
    }
}

fn flip(key: impl Into<KeyBits>) -> u64 {
    key.into().0 ^ (1 << 63)
}

/// A key's bits, either way round (flipping is its own inverse).
struct KeyBits(u64);

impl From<IndexKey> for KeyBits {
    fn from(k: IndexKey) -> KeyBits {
        KeyBits(k as u64)
    }
}

impl From<u64> for KeyBits {
    fn from(k: u64) -> KeyBits {
        KeyBits(k)
    }
}

/// One stored entry. Packed to byte alignment: 13 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed)]
struct Packed {
    key: u64,
    d0: u8,
    handle: Handle,
}

const _: () = assert!(std::mem::size_of::<Packed>() == ENTRY_BYTES);

impl Packed {
    fn of(f: &Full) -> Packed {
        Packed {
            key: f.key,
            d0: f.digest[0],
            handle: f.handle,
        }
    }

    fn full(self, r: &impl Resolve) -> Full {
        let mut digest = [0u8; 20];
        digest[0] = self.d0;
        digest[1..].copy_from_slice(&r.digest_tail(self.handle));
        Full {
            key: self.key,
            digest,
            handle: self.handle,
        }
    }

    /// This entry's place against `f`, reading its digest only on a tie of key and first byte.
    fn cmp_full(self, f: &Full, r: &impl Resolve) -> Ordering {
        let (key, d0, handle) = (self.key, self.d0, self.handle);
        (key, d0).cmp(&(f.key, f.digest[0])).then_with(|| {
            if handle == f.handle {
                return Ordering::Equal; // one handle, one digest
            }
            (r.digest_tail(handle), handle).cmp(&(f.digest[1..].try_into().expect("19"), f.handle))
        })
    }
}

/// The union of a sorted leaf and a sorted run without repeats, sorted, into `out`.
fn merge_sorted(a: &[Packed], b: &[Full], out: &mut Vec<Packed>, r: &impl Resolve) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp_full(&b[j], r) {
            Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            Ordering::Greater => {
                out.push(Packed::of(&b[j]));
                j += 1;
            }
            Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend(b[j..].iter().map(Packed::of));
}

/// The ordered entries of one index on one shard.
#[derive(Default)]
pub struct Entries {
    /// Leaves by their first entry.
    leaves: BTreeMap<Full, Vec<Packed>>,
    len: usize,
}

fn new_leaf() -> Vec<Packed> {
    Vec::new()
}

/// Makes room in `leaf` for `extra` more entries. A leaf's allocation follows what it holds:
/// it grows by an eighth at a time (at least 4 entries, never past a full leaf) rather than
/// being a full leaf from the start or doubling, so leaves cost ~13.8 bytes an entry however
/// full they are (a leaf's fill swings between a half and all of it as runs merge into it).
fn room(leaf: &mut Vec<Packed>, extra: usize) {
    let want = leaf.len() + extra;
    debug_assert!(want <= LEAF_ENTRIES_MAX);
    if want > leaf.capacity() {
        let grown = (leaf.len() + (leaf.len() / 8).max(4)).min(LEAF_ENTRIES_MAX);
        leaf.reserve_exact(want.max(grown) - leaf.len());
    }
}

/// A leaf holding exactly `entries`.
fn leaf_of_slice(entries: &[Packed]) -> Vec<Packed> {
    let mut leaf = Vec::with_capacity(entries.len());
    leaf.extend_from_slice(entries);
    leaf
}

impl Entries {
    /// Entries held, those of removed records not swept yet included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first entry of the leaf `f` belongs in: the last leaf starting at or below it, else
    /// the first leaf (`f` is below every entry).
    fn leaf_of(&self, f: &Full) -> Option<Full> {
        self.leaves
            .range(..=*f)
            .next_back()
            .or_else(|| self.leaves.iter().next())
            .map(|(first, _)| *first)
    }

    /// Adds an entry; `false` when it was there already.
    pub fn insert(&mut self, f: Full, r: &impl Resolve) -> bool {
        let p = Packed::of(&f);
        let Some(first) = self.leaf_of(&f) else {
            self.leaves.insert(f, leaf_of_slice(&[p]));
            self.len += 1;
            return true;
        };
        let leaf = self
            .leaves
            .get_mut(&first)
            .expect("a leaf by its first entry");
        let at = match leaf.binary_search_by(|e| e.cmp_full(&f, r)) {
            Ok(_) => return false,
            Err(at) => at,
        };
        self.len += 1;
        if leaf.len() < LEAF_ENTRIES_MAX {
            room(leaf, 1);
            leaf.insert(at, p);
            if at == 0 {
                // A new smallest entry: the leaf is keyed by it now.
                let leaf = self.leaves.remove(&first).expect("just found");
                self.leaves.insert(f, leaf);
            }
            self.check(r);
            return true;
        }
        // Full: make room by handing the bottom entries to the left neighbour, the top ones to
        // the right neighbour, or by a split.
        let prev = self
            .leaves
            .range(..first)
            .next_back()
            .filter(|(_, l)| l.len() <= NEIGHBOUR_ROOM_MAX)
            .map(|(k, _)| *k);
        if let Some(prev) = prev.filter(|_| at > 0) {
            let mut leaf = self.leaves.remove(&first).expect("just found");
            let left = self.leaves.get_mut(&prev).expect("just found");
            let give = (LEAF_ENTRIES_MAX - left.len()).div_ceil(2).min(at);
            room(left, give);
            left.extend(leaf.drain(..give));
            leaf.insert(at - give, p);
            self.leaves.insert(leaf[0].full(r), leaf);
            self.check(r);
            return true;
        }
        let next = self
            .leaves
            .range((Bound::Excluded(first), Bound::Unbounded))
            .next()
            .filter(|(_, l)| l.len() <= NEIGHBOUR_ROOM_MAX)
            .map(|(k, _)| *k);
        let mut leaf = self.leaves.remove(&first).expect("just found");
        let mut upper = match next {
            Some(next) => {
                let mut right = self.leaves.remove(&next).expect("just found");
                let give = (LEAF_ENTRIES_MAX - right.len()).div_ceil(2);
                let mut upper = Vec::with_capacity(give + right.len() + 1);
                upper.extend(leaf.drain(leaf.len() - give..));
                upper.append(&mut right);
                upper
            }
            None if at == leaf.len() => new_leaf(),
            None => {
                let right = leaf_of_slice(&leaf[LEAF_ENTRIES_MAX / 2..]);
                leaf.truncate(LEAF_ENTRIES_MAX / 2);
                right
            }
        };
        // `at` is where `p` went in the full leaf: it stays in the lower part when that part
        // has room and `p` is not past it.
        if at < leaf.len() || (at == leaf.len() && leaf.len() < LEAF_ENTRIES_MAX) {
            leaf.insert(at, p);
        } else {
            let at = upper
                .binary_search_by(|e| e.cmp_full(&f, r))
                .expect_err("not in the set");
            room(&mut upper, 1);
            upper.insert(at, p);
        }
        self.leaves.insert(leaf[0].full(r), leaf);
        self.leaves.insert(upper[0].full(r), upper);
        self.check(r);
        true
    }

    /// Adds many entries at once (a background build's run): sorted first, then merged into
    /// each leaf they fall in with one pass per leaf, so a run of `n` entries costs a sort and
    /// a copy of the leaves it touches instead of `n` shifts of half a leaf. Returns how many
    /// were not there already. Merged leaves are cut into pieces about [`BULK_FILL`] full, so
    /// later single inserts still find room.
    pub fn insert_run(&mut self, run: &mut Vec<Full>, r: &impl Resolve) -> usize {
        run.sort_unstable();
        run.dedup();
        let before = self.len;
        let mut merged = Vec::with_capacity(2 * LEAF_ENTRIES_MAX);
        let mut i = 0;
        while i < run.len() {
            let (mut leaf, end) = match self.leaf_of(&run[i]) {
                None => (new_leaf(), run.len()),
                Some(first) => {
                    // Everything below the next leaf's first entry belongs in this leaf.
                    let next = self
                        .leaves
                        .range((Bound::Excluded(first), Bound::Unbounded))
                        .next()
                        .map(|(k, _)| *k);
                    let end = next.map_or(run.len(), |n| i + run[i..].partition_point(|e| *e < n));
                    (self.leaves.remove(&first).expect("just found"), end)
                }
            };
            merge_sorted(&leaf, &run[i..end], &mut merged, r);
            self.len += merged.len() - leaf.len();
            // About BULK_FILL each, never over a leaf; the first piece reuses the leaf's
            // allocation.
            let pieces = ((merged.len() + BULK_FILL / 2) / BULK_FILL)
                .max(merged.len().div_ceil(LEAF_ENTRIES_MAX));
            let mut rest = &merged[..];
            leaf.clear();
            for k in 0..pieces {
                let take = rest.len() / (pieces - k);
                let fits = (take..=take + take / 8 + 4).contains(&leaf.capacity());
                let mut piece = if k == 0 && fits {
                    std::mem::take(&mut leaf)
                } else {
                    Vec::with_capacity(take)
                };
                piece.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                self.leaves.insert(piece[0].full(r), piece);
            }
            i = end;
        }
        self.check(r);
        self.len - before
    }

    /// Whether `f` is an entry.
    pub fn contains(&self, f: &Full, r: &impl Resolve) -> bool {
        self.leaf_of(f).is_some_and(|first| {
            self.leaves[&first]
                .binary_search_by(|e| e.cmp_full(f, r))
                .is_ok()
        })
    }

    /// Drops every entry whose handle `dead` names, and packs the leaves left to about
    /// [`BULK_FILL`] each; returns how many were dropped. One [`Entries::sweep_step`] over
    /// every leaf.
    pub fn sweep(&mut self, dead: impl Fn(Handle) -> bool, r: &impl Resolve) -> usize {
        let leaves = self.leaves.len().max(1);
        let (dropped, rest) = self.sweep_step(None, leaves, dead, r);
        debug_assert!(rest.is_none(), "one step over every leaf");
        dropped
    }

    /// One step of an incremental [`Entries::sweep`]: drops the entries `dead` names in up to
    /// `leaves_max` leaves from the one `from` falls in (`None`: the first), packing them as a
    /// sweep does, and returns where the next step starts (`None`: the end was reached). The
    /// steps of one sweep may have any changes between them: every entry above the returned
    /// place is in the leaf it falls in or a later one, whatever leaves split, merge or hand
    /// entries to a neighbour meanwhile (so a step starts from an entry, not from a leaf).
    pub fn sweep_step(
        &mut self,
        from: Option<Full>,
        leaves_max: usize,
        dead: impl Fn(Handle) -> bool,
        r: &impl Resolve,
    ) -> (usize, Option<Full>) {
        assert!(leaves_max > 0, "a sweep step takes at least one leaf");
        let start = match &from {
            Some(f) => self.leaf_of(f),
            None => self.leaves.keys().next().copied(),
        };
        let Some(start) = start else {
            return (0, None);
        };
        let firsts: Vec<Full> = self
            .leaves
            .range(start..)
            .take(leaves_max + 1)
            .map(|(k, _)| *k)
            .collect();
        let more = firsts.len() > leaves_max;
        let taken = &firsts[..firsts.len().min(leaves_max)];
        let mut dropped = 0;
        let mut last = None;
        // The step's entries left, cut into leaves of BULK_FILL (the last one shorter: the
        // next step starts in it and packs on).
        let mut open: Vec<Packed> = Vec::new();
        for first in taken {
            let mut leaf = self.leaves.remove(first).expect("listed just now");
            last = leaf.last().map(|e| e.full(r));
            let before = leaf.len();
            leaf.retain(|e| !dead(e.handle));
            dropped += before - leaf.len();
            if open.is_empty() && leaf.len() <= BULK_FILL {
                open = leaf; // keeps its allocation
                continue;
            }
            let mut rest = &leaf[..];
            while !rest.is_empty() {
                if open.len() == BULK_FILL {
                    let full = std::mem::take(&mut open);
                    self.leaves.insert(full[0].full(r), full);
                }
                let take = (BULK_FILL - open.len()).min(rest.len());
                room(&mut open, take);
                open.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        if !open.is_empty() {
            self.leaves.insert(open[0].full(r), open);
        }
        self.len -= dropped;
        self.check(r);
        (dropped, if more { last } else { None })
    }

    /// Entries after `start` (exclusive: past every handle of that (key, digest); `None`: from
    /// the smallest) up to key `last` (inclusive), in (key, digest, handle) order.
    pub fn range<'a, R: Resolve>(
        &'a self,
        start: Option<(IndexKey, Digest)>,
        last: IndexKey,
        r: &'a R,
    ) -> impl Iterator<Item = Full> + 'a {
        let from = start.map(|(k, d)| Full::after(k, &d));
        let end = flip(last);
        let first_leaf = match &from {
            Some(f) => self.leaf_of(f),
            None => self.leaves.keys().next().copied(),
        };
        first_leaf
            .into_iter()
            .flat_map(move |first| self.leaves.range(first..))
            .flat_map(move |(_, leaf)| {
                let skip = from.map_or(0, |f| {
                    leaf.partition_point(|e| e.cmp_full(&f, r) != Ordering::Greater)
                });
                leaf[skip..].iter()
            })
            .take_while(move |e| {
                let key = e.key;
                key <= end
            })
            .map(move |e| e.full(r))
    }

    /// Bytes the leaves' allocations hold (their capacity, not only what they use), with the
    /// map's share per leaf.
    pub fn memory_bytes(&self) -> usize {
        self.leaves
            .values()
            .map(|l| {
                l.capacity() * ENTRY_BYTES
                    + std::mem::size_of::<Full>()
                    + 3 * std::mem::size_of::<usize>()
            })
            .sum()
    }

    /// The invariants of the module header, in debug builds.
    fn check(&self, r: &impl Resolve) {
        if cfg!(debug_assertions) && self.leaves.len() < 64 {
            let mut count = 0;
            let mut before: Option<Full> = None;
            for (first, leaf) in &self.leaves {
                assert!(!leaf.is_empty() && leaf.len() <= LEAF_ENTRIES_MAX);
                assert!(*first == leaf[0].full(r), "a leaf keyed by its first entry");
                let fulls: Vec<Full> = leaf.iter().map(|e| e.full(r)).collect();
                assert!(
                    fulls.windows(2).all(|w| w[0] < w[1]),
                    "a leaf sorted, no repeats"
                );
                assert!(before.is_none_or(|b| b < *first), "leaves in order");
                before = fulls.last().copied();
                count += leaf.len();
            }
            assert_eq!(count, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Handles `2k` and `2k + 1` name digest `k` (a record moved to a new handle keeps its
    /// digest); a third of the digests share each first byte, so ties on (key, first byte)
    /// are common and the comparison reads digests through the resolver.
    fn d(h: Handle) -> Digest {
        let k = u64::from(h / 2);
        let mut b = [0u8; 20];
        b[0] = (k % 3) as u8;
        b[1..9].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        Digest(b)
    }

    struct ByHandle;

    impl Resolve for ByHandle {
        fn digest_tail(&self, h: Handle) -> [u8; 19] {
            d(h).0[1..].try_into().unwrap()
        }
    }

    fn full(key: IndexKey, h: Handle) -> Full {
        Full::new(key, &d(h), h)
    }

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 17
    }

    #[test]
    fn entries_order_by_key_then_digest_then_handle() {
        let keys = [IndexKey::MIN, -5, -1, 0, 1, 7, IndexKey::MAX];
        for w in keys.windows(2) {
            assert!(full(w[0], 9) < full(w[1], 0));
        }
        let (a, b) = (
            Full::new(3, &Digest([1; 20]), 9),
            Full::new(3, &Digest([2; 20]), 1),
        );
        assert!(a < b);
        assert!(full(3, 4) < full(3, 5), "one digest, two handles");
        let f = full(-42, 3);
        assert_eq!((f.key(), f.digest(), f.handle()), (-42, d(3), 3));
        assert_eq!(Packed::of(&f).full(&ByHandle), f);
        for (x, y) in [
            (full(1, 4), full(1, 5)),
            (full(1, 4), full(1, 7)),
            (full(2, 1), full(1, 9)),
        ] {
            assert_eq!(Packed::of(&x).cmp_full(&y, &ByHandle), x.cmp(&y));
        }
    }

    #[test]
    fn matches_an_ordered_set_through_random_inserts_sweeps_and_ranges() {
        let r = ByHandle;
        let mut s = 7u64;
        let mut e = Entries::default();
        let mut model = BTreeSet::new();
        for round in 0..20_000 {
            // Few keys, so that keys repeat with different digests.
            let f = full(
                (lcg(&mut s) % 300) as IndexKey - 150,
                (lcg(&mut s) % 80) as Handle,
            );
            if round % 211 == 0 {
                // A build's run: many entries, some repeated, some there already.
                let n = lcg(&mut s) % 400;
                let mut run: Vec<_> = (0..n)
                    .map(|_| {
                        full(
                            (lcg(&mut s) % 300) as IndexKey - 150,
                            (lcg(&mut s) % 80) as Handle,
                        )
                    })
                    .collect();
                let added = run.iter().filter(|x| model.insert(**x)).count();
                assert_eq!(e.insert_run(&mut run, &r), added);
            } else if round % 503 == 0 {
                let gone = lcg(&mut s) % 5;
                let dead = |h: Handle| u64::from(h) % 5 == gone;
                let want = model.iter().filter(|f| dead(f.handle)).count();
                model.retain(|f| !dead(f.handle));
                assert_eq!(e.sweep(dead, &r), want);
            } else {
                assert_eq!(e.insert(f, &r), model.insert(f));
                assert!(e.contains(&f, &r));
            }
            assert_eq!(e.len(), model.len());
            if round % 97 == 0 {
                let lo = (lcg(&mut s) % 340) as IndexKey - 170;
                let hi = lo + (lcg(&mut s) % 60) as IndexKey;
                let start = lcg(&mut s)
                    .is_multiple_of(2)
                    .then(|| (lo, d(lcg(&mut s) as Handle % 80)));
                let got: Vec<_> = e.range(start, hi, &r).collect();
                let want: Vec<_> = model
                    .iter()
                    .filter(|f| start.is_none_or(|(k, dg)| (f.key(), f.digest()) > (k, dg)))
                    .filter(|f| f.key() <= hi)
                    .copied()
                    .collect();
                assert_eq!(got, want, "range after {start:?} to {hi}");
            }
        }
        let all: Vec<_> = e.range(None, IndexKey::MAX, &r).collect();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        assert_eq!(e.sweep(|_| true, &r), all.len());
        assert!(e.is_empty());
    }

    /// A sweep in small steps with inserts between them (which split leaves and hand
    /// entries to neighbours across the step's place) drops every entry of the handles dead
    /// when it began, and nothing else.
    #[test]
    fn a_sweep_in_steps_among_inserts_drops_exactly_the_dead_entries() {
        let r = ByHandle;
        let mut s = 5u64;
        for round in 0..10 {
            let mut e = Entries::default();
            let mut model = BTreeSet::new();
            for _ in 0..2_000 {
                let f = full(
                    (lcg(&mut s) % 500) as IndexKey,
                    (lcg(&mut s) % 4_000) as Handle,
                );
                e.insert(f, &r);
                model.insert(f);
            }
            // Handles below 4,000 that are multiples of 3 (or of 7) die; inserts meanwhile
            // use handles from 4,000 up, as new places do.
            let gone = if round % 2 == 0 { 3 } else { 7 };
            let dead = |h: Handle| h < 4_000 && h.is_multiple_of(gone);
            let mut at = None;
            let mut next_handle = 4_000;
            loop {
                let (_, next) = e.sweep_step(at, 1 + (lcg(&mut s) % 4) as usize, dead, &r);
                for _ in 0..lcg(&mut s) % 40 {
                    let f = full((lcg(&mut s) % 500) as IndexKey, next_handle);
                    next_handle += 1;
                    e.insert(f, &r);
                    model.insert(f);
                }
                match next {
                    Some(n) => at = Some(n),
                    None => break,
                }
            }
            model.retain(|f| !dead(f.handle));
            let all: Vec<_> = e.range(None, IndexKey::MAX, &r).collect();
            assert_eq!(
                all,
                model.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
            assert_eq!(e.len(), model.len());
        }
    }

    #[test]
    fn runs_into_an_empty_and_a_full_set_fill_leaves_to_seven_eighths() {
        let r = ByHandle;
        let mut e = Entries::default();
        let mut s = 11u64;
        let mut first: Vec<_> = (0..20_000)
            .map(|h| full((lcg(&mut s) % 1_000_000) as IndexKey, h))
            .collect();
        assert_eq!(e.insert_run(&mut first, &r), 20_000);
        let fill = e.len() as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
        assert!(fill > 0.85, "leaves {fill:.2} full after one run");
        let mut second: Vec<_> = (20_000..40_000)
            .map(|h| full((lcg(&mut s) % 1_000_000) as IndexKey, h))
            .collect();
        assert_eq!(e.insert_run(&mut second.clone(), &r), 20_000);
        assert_eq!(
            e.insert_run(&mut second[..10].to_vec(), &r),
            0,
            "entries there already"
        );
        second.clear();
        let fill = e.len() as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
        assert!(fill > 0.75, "leaves {fill:.2} full after two runs");
        let all: Vec<_> = e.range(None, IndexKey::MAX, &r).collect();
        assert_eq!(all.len(), 40_000);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        // A sweep of every other record packs what is left.
        assert_eq!(e.sweep(|h| h % 4 < 2, &r), 20_000);
        let fill = e.len() as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
        assert!(fill > 0.8, "leaves {fill:.2} full after a sweep");
    }

    #[test]
    fn ascending_and_random_builds_keep_leaves_well_filled() {
        for ascending in [true, false] {
            let mut e = Entries::default();
            let mut s = 3u64;
            let n = 50_000;
            for h in 0..n {
                let key = if ascending {
                    IndexKey::from(h)
                } else {
                    lcg(&mut s) as IndexKey
                };
                assert!(e.insert(full(key, h), &ByHandle));
            }
            let fill = f64::from(n) / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
            assert!(fill > 0.75, "ascending {ascending}: leaves {fill:.2} full");
            let per_entry = e.memory_bytes() as f64 / f64::from(n);
            assert!(per_entry < 18.0, "{per_entry:.1} bytes per entry");
        }
    }
}
