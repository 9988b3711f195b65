//! The per-shard record cache: recently written and recently read records, bounded by a byte
//! budget, evicted by CLOCK (second chance), so a read that hits it does no I/O.
//!
//! Owns only copies: every entry is keyed by digest *and* the file offset of the version it
//! holds, so an entry for an older version can never be served — the store looks it up with the
//! offset its index holds now. It must never exceed its budget, and never be the only copy of
//! anything.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use apogee_wire::Digest;

struct Slot {
    digest: Digest,
    offset: u64,
    bytes: Rc<[u8]>,
    referenced: bool,
}

/// Hashes a digest with seeded xxh3 instead of std's SipHash: a lookup on every read
/// hashed 20 bytes with SipHash (the largest single item of a batch read's profile). Seeded
/// per cache, so a client cannot pick keys whose digests pile into one bucket.
/// Hashing of digests for maps keyed by them: xxh3 with a per-map random seed.
#[derive(Clone)]
pub(crate) struct DigestHashing {
    seed: u64,
}

impl DigestHashing {
    pub(crate) fn new() -> DigestHashing {
        DigestHashing {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x0063_6163_6865_u64),
        }
    }
}

impl BuildHasher for DigestHashing {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

/// One digest's hash: `Digest`'s derived `Hash` writes a length (constant, ignored) and then
/// its 20 bytes.
pub(crate) struct DigestHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.hash ^= xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.seed);
    }
    fn write_usize(&mut self, _length: usize) {}
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A CLOCK cache of encoded records.
pub struct RecordCache {
    budget_bytes: usize,
    used_bytes: usize,
    map: HashMap<Digest, usize, DigestHashing>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    hits: u64,
    misses: u64,
}

impl RecordCache {
    /// Whether it keeps anything (a budget of 0 disables it).
    pub fn enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    /// A cache holding at most `budget_bytes` of record bytes; 0 disables it.
    pub fn new(budget_bytes: usize) -> RecordCache {
        RecordCache {
            budget_bytes,
            used_bytes: 0,
            map: HashMap::with_hasher(DigestHashing::new()),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The bytes of `digest`'s version at `offset`, if cached.
    pub fn get(&mut self, digest: &Digest, offset: u64) -> Option<Rc<[u8]>> {
        let found = self.map.get(digest).and_then(|&i| {
            let slot = self.slots[i].as_mut().expect("mapped slot is occupied");
            (slot.offset == offset).then(|| {
                slot.referenced = true;
                slot.bytes.clone()
            })
        });
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Caches `digest`'s version at `offset`, replacing any older one. A record larger than
    /// an eighth of the budget is not cached, so one record cannot flush the whole cache.
    /// The bytes become shared bytes only when they are kept: a disabled cache costs a write
    /// no copy.
    pub fn insert<B: AsRef<[u8]> + Into<Rc<[u8]>>>(
        &mut self,
        digest: Digest,
        offset: u64,
        bytes: B,
    ) {
        if self.budget_bytes == 0 {
            return;
        }
        self.remove(&digest);
        let len = bytes.as_ref().len();
        if len == 0 || len > self.budget_bytes / 8 {
            return;
        }
        let bytes: Rc<[u8]> = bytes.into();
        while self.used_bytes + len > self.budget_bytes {
            self.evict_one();
        }
        let slot = Slot {
            digest,
            offset,
            bytes,
            referenced: false,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.map.insert(digest, i);
        self.used_bytes += len;
        debug_assert!(self.used_bytes <= self.budget_bytes);
    }

    pub fn remove(&mut self, digest: &Digest) {
        if let Some(i) = self.map.remove(digest) {
            let slot = self.slots[i].take().expect("mapped slot is occupied");
            self.used_bytes -= slot.bytes.len();
            self.free.push(i);
        }
    }

    /// Advances the clock hand to the first unreferenced entry, clearing reference bits on the
    /// way, and evicts it. Two sweeps always find one, so the loop is bounded.
    fn evict_one(&mut self) {
        assert!(!self.map.is_empty(), "eviction from an empty cache");
        let n = self.slots.len();
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            if let Some(slot) = self.slots[i].as_mut() {
                if slot.referenced {
                    slot.referenced = false;
                } else {
                    let d = slot.digest;
                    self.remove(&d);
                    return;
                }
            }
        }
        unreachable!("two clock sweeps always find an unreferenced entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: i64) -> Digest {
        Digest::of_integer("s", i)
    }

    fn bytes(n: usize) -> Rc<[u8]> {
        Rc::from(vec![1u8; n])
    }

    #[test]
    fn stays_within_budget_and_serves_only_the_current_version() {
        let mut c = RecordCache::new(10_000);
        for i in 0..100 {
            c.insert(d(i), i as u64, bytes(1000));
            assert!(c.used_bytes() <= 10_000);
        }
        assert_eq!(c.len(), 10);
        assert!(c.get(&d(99), 99).is_some());
        assert!(c.get(&d(99), 98).is_none(), "an older offset is a miss");
        c.insert(d(99), 200, bytes(500));
        assert!(c.get(&d(99), 99).is_none());
        assert_eq!(c.get(&d(99), 200).unwrap().len(), 500);
        c.remove(&d(99));
        assert!(c.get(&d(99), 200).is_none());
        assert_eq!(c.used_bytes(), 9 * 1000);
    }

    #[test]
    fn referenced_entries_survive_a_scan() {
        let mut c = RecordCache::new(10_000);
        for i in 0..10 {
            c.insert(d(i), 0, bytes(1000));
        }
        // Record 3 is hot: read between every insert of a one-pass scan.
        for i in 100..130 {
            assert!(c.get(&d(3), 0).is_some(), "hot entry evicted before {i}");
            c.insert(d(i), 0, bytes(1000));
        }
    }

    #[test]
    fn oversized_and_disabled() {
        let mut c = RecordCache::new(8000);
        c.insert(d(1), 0, bytes(1001));
        assert!(c.is_empty(), "over budget/8 is not cached");
        let mut off = RecordCache::new(0);
        off.insert(d(1), 0, bytes(1));
        assert!(off.is_empty());
    }
}
