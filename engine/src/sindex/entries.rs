//! One secondary index's entries on one shard: an ordered set of (key, digest), kept packed
//! in sorted leaves of [`LEAF_ENTRIES_MAX`] entries under an ordered map of each leaf's first
//! entry.
//!
//! Why not a `BTreeSet<(i64, Digest)>`: its element is 32 bytes (the key's alignment pads the
//! 28), its nodes hold 11 elements and are about two-thirds full, and every node split
//! allocates; it cost ~52 bytes of resident memory per entry and a fifth of an index build's
//! time. Here an entry is 28 bytes, encoded as integers whose order is (key, digest)
//! order; a full leaf first hands entries to its right neighbour when that one has room, so
//! leaves stay about 80 % full; and the leaves are few (one per ~100 entries), so the map
//! above them is small and warm.
//!
//! Plain Rust, no I/O. Invariants, checked in debug builds: every leaf is non-empty, sorted,
//! without repeats, at most [`LEAF_ENTRIES_MAX`] long, keyed by its first entry, and every
//! entry of a leaf is below the next leaf's first.

use std::collections::BTreeMap;
use std::ops::Bound;

use apogee_wire::Digest;

use super::IndexKey;

/// Entries one leaf holds at most (3.5 KiB of entries).
pub const LEAF_ENTRIES_MAX: usize = 128;
/// A full leaf hands entries to its right neighbour instead of splitting while the neighbour
/// holds at most this many.
const NEIGHBOUR_ROOM_MAX: usize = LEAF_ENTRIES_MAX - LEAF_ENTRIES_MAX / 8;
/// A leaf this small after a removal is merged with its right neighbour when both fit in
/// three quarters of a leaf.
const LEAF_MERGE_BELOW: usize = LEAF_ENTRIES_MAX / 4;

/// Bytes of one packed entry: the key (8), then the digest (20).
pub const ENTRY_BYTES: usize = 28;

/// One entry as integers whose order is (key, digest) order: the key with its sign bit
/// flipped, then the digest's bytes read big-endian. Packed to 4-byte alignment, so 28 bytes,
/// and compared field by field (a byte array's comparison is a call to `memcmp`: a fifth of a
/// build's time).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
struct Packed {
    key: u64,
    d0: u64,
    d1: u64,
    d2: u32,
}

const _: () = assert!(std::mem::size_of::<Packed>() == ENTRY_BYTES);

impl Packed {
    fn fields(self) -> (u64, u64, u64, u32) {
        (self.key, self.d0, self.d1, self.d2)
    }
}

impl Ord for Packed {
    fn cmp(&self, other: &Packed) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Packed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn pack(key: IndexKey, digest: &Digest) -> Packed {
    let d = &digest.0;
    Packed {
        key: (key as u64) ^ (1 << 63),
        d0: u64::from_be_bytes(d[0..8].try_into().expect("8 bytes")),
        d1: u64::from_be_bytes(d[8..16].try_into().expect("8 bytes")),
        d2: u32::from_be_bytes(d[16..20].try_into().expect("4 bytes")),
    }
}

fn unpack(p: &Packed) -> (IndexKey, Digest) {
    let (key, d0, d1, d2) = p.fields();
    let mut d = [0u8; 20];
    d[0..8].copy_from_slice(&d0.to_be_bytes());
    d[8..16].copy_from_slice(&d1.to_be_bytes());
    d[16..20].copy_from_slice(&d2.to_be_bytes());
    ((key ^ (1 << 63)) as IndexKey, Digest(d))
}

/// Entries a leaf cut from a bulk merge holds at most: seven eighths of a leaf.
const BULK_FILL: usize = LEAF_ENTRIES_MAX - LEAF_ENTRIES_MAX / 8;

/// The union of two sorted runs without repeats, sorted, into `out` (emptied first).
fn merge_sorted(a: &[Packed], b: &[Packed], out: &mut Vec<Packed>) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// The ordered entries of one index on one shard.
#[derive(Default)]
pub struct Entries {
    /// Leaves by their first entry.
    leaves: BTreeMap<Packed, Vec<Packed>>,
    len: usize,
}

fn new_leaf() -> Vec<Packed> {
    Vec::with_capacity(LEAF_ENTRIES_MAX)
}

impl Entries {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first entry of the leaf `p` belongs in: the last leaf starting at or below it, else
    /// the first leaf (`p` is below every entry).
    fn leaf_of(&self, p: &Packed) -> Option<Packed> {
        self.leaves
            .range(..=*p)
            .next_back()
            .or_else(|| self.leaves.iter().next())
            .map(|(first, _)| *first)
    }

    /// Adds an entry; `false` when it was there already.
    pub fn insert(&mut self, key: IndexKey, digest: &Digest) -> bool {
        let p = pack(key, digest);
        let Some(first) = self.leaf_of(&p) else {
            let mut leaf = new_leaf();
            leaf.push(p);
            self.leaves.insert(p, leaf);
            self.len += 1;
            return true;
        };
        let leaf = self
            .leaves
            .get_mut(&first)
            .expect("a leaf by its first entry");
        let at = match leaf.binary_search(&p) {
            Ok(_) => return false,
            Err(at) => at,
        };
        self.len += 1;
        if leaf.len() < LEAF_ENTRIES_MAX {
            leaf.insert(at, p);
            if at == 0 {
                // A new smallest entry: the leaf is keyed by it now.
                let leaf = self.leaves.remove(&first).expect("just found");
                self.leaves.insert(p, leaf);
            }
            self.check();
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
            left.extend(leaf.drain(..give));
            leaf.insert(at - give, p);
            self.leaves.insert(leaf[0], leaf);
            self.check();
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
                let mut upper = new_leaf();
                upper.extend(leaf.drain(leaf.len() - give..));
                upper.append(&mut right);
                upper
            }
            None if at == leaf.len() => new_leaf(),
            None => {
                let mut right = new_leaf();
                right.extend(leaf.drain(LEAF_ENTRIES_MAX / 2..));
                right
            }
        };
        // `at` is where `p` went in the full leaf: it stays in the lower part when that part
        // has room and `p` is not past it.
        if at < leaf.len() || (at == leaf.len() && leaf.len() < LEAF_ENTRIES_MAX) {
            leaf.insert(at, p);
        } else {
            let at = upper.binary_search(&p).expect_err("not in the set");
            upper.insert(at, p);
        }
        self.leaves.insert(leaf[0], leaf);
        self.leaves.insert(upper[0], upper);
        self.check();
        true
    }

    /// Adds many entries at once (a background build's run): sorted first, then merged into
    /// each leaf they fall in with one pass per leaf, so a run of `n` entries costs a sort and
    /// a copy of the leaves it touches instead of `n` shifts of half a leaf. Returns how many
    /// were not there already. Merged leaves are cut into pieces about [`BULK_FILL`] full, so
    /// later single inserts still find room.
    pub fn insert_run(&mut self, run: &[(IndexKey, Digest)]) -> usize {
        let mut run: Vec<Packed> = run.iter().map(|(k, d)| pack(*k, d)).collect();
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
            merge_sorted(&leaf, &run[i..end], &mut merged);
            self.len += merged.len() - leaf.len();
            // About BULK_FILL each, never over a leaf; the first piece reuses the leaf's
            // allocation.
            let pieces = ((merged.len() + BULK_FILL / 2) / BULK_FILL)
                .max(merged.len().div_ceil(LEAF_ENTRIES_MAX));
            let mut rest = &merged[..];
            for k in 0..pieces {
                let take = rest.len() / (pieces - k);
                let mut piece = if k == 0 {
                    leaf.clear();
                    std::mem::take(&mut leaf)
                } else {
                    new_leaf()
                };
                piece.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                self.leaves.insert(piece[0], piece);
            }
            i = end;
        }
        self.check();
        self.len - before
    }

    /// Whether (key, digest) is an entry.
    pub fn contains(&self, key: IndexKey, digest: &Digest) -> bool {
        let p = pack(key, digest);
        self.leaf_of(&p)
            .is_some_and(|first| self.leaves[&first].binary_search(&p).is_ok())
    }

    /// Drops an entry; `false` when it was not there.
    pub fn remove(&mut self, key: IndexKey, digest: &Digest) -> bool {
        let p = pack(key, digest);
        let Some(first) = self.leaf_of(&p) else {
            return false;
        };
        let leaf = self
            .leaves
            .get_mut(&first)
            .expect("a leaf by its first entry");
        let Ok(at) = leaf.binary_search(&p) else {
            return false;
        };
        leaf.remove(at);
        self.len -= 1;
        let small = leaf.len() < LEAF_MERGE_BELOW;
        if at == 0 || small {
            let mut leaf = self.leaves.remove(&first).expect("just found");
            if small {
                let next = self
                    .leaves
                    .range((Bound::Excluded(first), Bound::Unbounded))
                    .next()
                    .filter(|(_, l)| l.len() + leaf.len() <= LEAF_ENTRIES_MAX * 3 / 4)
                    .map(|(k, _)| *k);
                if let Some(next) = next {
                    let mut right = self.leaves.remove(&next).expect("just found");
                    leaf.append(&mut right);
                }
            }
            if let Some(new_first) = leaf.first() {
                self.leaves.insert(*new_first, leaf);
            }
        }
        self.check();
        true
    }

    /// Entries after `start` (exclusive; `None`: from the smallest) up to key `last`
    /// (inclusive), in (key, digest) order.
    pub fn range(
        &self,
        start: Option<(IndexKey, Digest)>,
        last: IndexKey,
    ) -> impl Iterator<Item = (IndexKey, Digest)> + '_ {
        let from = start.map(|(k, d)| pack(k, &d));
        let end = pack(last, &Digest([0xff; 20]));
        let first_leaf = match &from {
            Some(p) => self.leaf_of(p),
            None => self.leaves.keys().next().copied(),
        };
        first_leaf
            .into_iter()
            .flat_map(move |first| self.leaves.range(first..))
            .flat_map(move |(_, leaf)| {
                let skip = from.map_or(0, |p| leaf.partition_point(|e| *e <= p));
                leaf[skip..].iter()
            })
            .take_while(move |e| **e <= end)
            .map(unpack)
    }

    /// Every entry, in order, leaving none.
    pub fn drain(&mut self) -> impl Iterator<Item = (IndexKey, Digest)> {
        self.len = 0;
        std::mem::take(&mut self.leaves)
            .into_values()
            .flatten()
            .map(|p| unpack(&p))
    }

    /// Bytes the leaves' allocations hold (their capacity, not only what they use).
    pub fn memory_bytes(&self) -> usize {
        self.leaves
            .values()
            .map(|l| l.capacity() * ENTRY_BYTES + ENTRY_BYTES + 3 * std::mem::size_of::<usize>())
            .sum()
    }

    /// The invariants of the module header, in debug builds.
    fn check(&self) {
        if cfg!(debug_assertions) && self.leaves.len() < 64 {
            let mut count = 0;
            let mut before: Option<&Packed> = None;
            for (first, leaf) in &self.leaves {
                assert!(!leaf.is_empty() && leaf.len() <= LEAF_ENTRIES_MAX);
                assert!(*first == leaf[0], "a leaf keyed by its first entry");
                assert!(
                    leaf.windows(2).all(|w| w[0] < w[1]),
                    "a leaf sorted, no repeats"
                );
                assert!(before.is_none_or(|b| b < first), "leaves in order");
                before = leaf.last();
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

    fn d(i: u64) -> Digest {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        Digest(b)
    }

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 17
    }

    #[test]
    fn packing_keeps_the_order_of_keys_then_digests() {
        let keys = [IndexKey::MIN, -5, -1, 0, 1, 7, IndexKey::MAX];
        for w in keys.windows(2) {
            assert!(pack(w[0], &d(9)) < pack(w[1], &d(0)));
        }
        assert!(pack(3, &Digest([1; 20])) < pack(3, &Digest([2; 20])));
        assert_eq!(unpack(&pack(-42, &d(3))), (-42, d(3)));
    }

    #[test]
    fn matches_an_ordered_set_through_random_inserts_removes_and_ranges() {
        let mut s = 7u64;
        let mut e = Entries::default();
        let mut model = BTreeSet::new();
        for round in 0..20_000 {
            // Few keys, so that keys repeat with different digests.
            let key = (lcg(&mut s) % 300) as IndexKey - 150;
            let dig = d(lcg(&mut s) % 40);
            if round % 211 == 0 {
                // A build's run: many entries, some repeated, some there already.
                let n = lcg(&mut s) % 400;
                let run: Vec<_> = (0..n)
                    .map(|_| ((lcg(&mut s) % 300) as IndexKey - 150, d(lcg(&mut s) % 40)))
                    .collect();
                let fresh = run.iter().filter(|x| !model.contains(*x)).count();
                let added = run.iter().filter(|x| model.insert(**x)).count();
                assert!(added <= fresh);
                assert_eq!(e.insert_run(&run), added);
            } else if lcg(&mut s).is_multiple_of(3) {
                assert_eq!(e.remove(key, &dig), model.remove(&(key, dig)));
            } else {
                assert_eq!(e.insert(key, &dig), model.insert((key, dig)));
            }
            assert_eq!(e.len(), model.len());
            if round % 97 == 0 {
                let lo = (lcg(&mut s) % 340) as IndexKey - 170;
                let hi = lo + (lcg(&mut s) % 60) as IndexKey;
                let start = lcg(&mut s)
                    .is_multiple_of(2)
                    .then(|| (lo, d(lcg(&mut s) % 40)));
                let got: Vec<_> = e.range(start, hi).collect();
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, dg)| start.is_none_or(|st| (*k, *dg) > st) && *k <= hi)
                    .copied()
                    .collect();
                assert_eq!(got, want, "range after {start:?} to {hi}");
            }
        }
        let all: Vec<_> = e.drain().collect();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        assert!(e.is_empty());
    }

    #[test]
    fn runs_into_an_empty_and_a_full_set_fill_leaves_to_seven_eighths() {
        let mut e = Entries::default();
        let mut s = 11u64;
        let first: Vec<_> = (0..20_000u64)
            .map(|i| ((lcg(&mut s) % 1_000_000) as IndexKey, d(i)))
            .collect();
        assert_eq!(e.insert_run(&first), 20_000);
        let fill = e.len() as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
        assert!(fill > 0.85, "leaves {fill:.2} full after one run");
        let second: Vec<_> = (20_000..40_000u64)
            .map(|i| ((lcg(&mut s) % 1_000_000) as IndexKey, d(i)))
            .collect();
        assert_eq!(e.insert_run(&second), 20_000);
        assert_eq!(e.insert_run(&second[..10]), 0, "entries there already");
        let fill = e.len() as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
        assert!(fill > 0.75, "leaves {fill:.2} full after two runs");
        let all: Vec<_> = e.range(None, IndexKey::MAX).collect();
        assert_eq!(all.len(), 40_000);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ascending_and_random_builds_keep_leaves_well_filled() {
        for ascending in [true, false] {
            let mut e = Entries::default();
            let mut s = 3u64;
            let n = 50_000u64;
            for i in 0..n {
                let key = if ascending { i } else { lcg(&mut s) } as IndexKey;
                assert!(e.insert(key, &d(i)));
            }
            let fill = n as f64 / (e.leaves.len() * LEAF_ENTRIES_MAX) as f64;
            assert!(fill > 0.75, "ascending {ascending}: leaves {fill:.2} full");
            let per_entry = e.memory_bytes() as f64 / n as f64;
            assert!(per_entry < 40.0, "{per_entry:.1} bytes per entry");
        }
    }
}
