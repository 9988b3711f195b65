//! Which (index, key) entries each record holds, kept small: per record a 16-byte slot of a
//! hash table keyed by a 32-bit tag of its digest, not by the digest itself.
//!
//! Why a tag: a table slot holding the 20-byte digest and an inline entry was 48 bytes (with
//! alignment), 85–100 bytes of resident memory per record at the table's load factor — more
//! than the index entries themselves. A slot here is the 4-byte tag and one 12-byte entry;
//! records with more entries keep them in a side table.
//!
//! Two digests can share a tag (a seeded 32-bit hash: about n² / 2^33 pairs among n records,
//! ~30 in a shard of 500,000); their entries then share one list (in the side table), and
//! the list is a multiset of both. Which
//! entry belongs to which digest is told by the index entries themselves — (key, digest) is
//! in an index only for the digest that holds it — so callers check an entry against the
//! index before they take it as a digest's (`Sindexes` does; this module never sees digests
//! beyond their tag). Plain Rust, no I/O.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use apogee_wire::Digest;

use super::{IndexId, IndexKey};

/// A tag's entries as handed out and back: inline up to four (a write takes a record's
/// entries out and puts them back; no allocation in the common case).
pub type List = smallvec::SmallVec<[(IndexId, IndexKey); 4]>;

/// An `IndexId` no index has: marks a slot whose entries are in the side table.
pub const SPILLED: IndexId = IndexId::MAX;

/// Bytes of one table slot: tag (4) and one entry (12), 4-byte aligned.
pub const SLOT_BYTES: usize = 16;

/// A digest's tag: 32 bits of a seeded hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(u32);

impl std::hash::Hash for Tag {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.0);
    }
}

/// A tag is a seeded hash already: the table only spreads its bits over a `u64` (the table
/// takes buckets from the low bits and a filter byte from the top ones).
#[derive(Clone, Copy, Default)]
pub struct TagHashing;

/// The identity hasher of [`TagHashing`].
#[derive(Default)]
pub struct TagHasher(u64);

impl Hasher for TagHasher {
    fn write(&mut self, _: &[u8]) {
        unreachable!("a tag hashes as one u32");
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for TagHashing {
    type Hasher = TagHasher;
    fn build_hasher(&self) -> TagHasher {
        TagHasher::default()
    }
}

/// One entry, 12 bytes at 4-byte alignment: the index, then the key as two halves.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot {
    id: IndexId,
    key: [u32; 2],
}

impl Slot {
    fn of(id: IndexId, key: IndexKey) -> Slot {
        let k = key as u64;
        Slot {
            id,
            key: [k as u32, (k >> 32) as u32],
        }
    }

    fn entry(self) -> (IndexId, IndexKey) {
        let k = u64::from(self.key[0]) | u64::from(self.key[1]) << 32;
        (self.id, k as IndexKey)
    }
}

const _: () = assert!(std::mem::size_of::<(Tag, Slot)>() == SLOT_BYTES);

/// Per tag, the entries of the records with that tag.
pub struct Owners {
    seed: u64,
    /// Tests: tags from the digest's first byte only, so digests share tags often.
    #[cfg(test)]
    pub(super) coarse_tags: bool,
    one: HashMap<Tag, Slot, TagHashing>,
    /// Lists of two or more entries, sorted, by tag (their slot in `one` says [`SPILLED`]).
    many: HashMap<Tag, List, TagHashing>,
}

impl Default for Owners {
    fn default() -> Owners {
        use std::collections::hash_map::RandomState;
        Owners {
            seed: RandomState::new().hash_one(0x6f77_6e65_7273_u64),
            #[cfg(test)]
            coarse_tags: false,
            one: HashMap::default(),
            many: HashMap::default(),
        }
    }
}

impl Owners {
    pub fn tag(&self, digest: &Digest) -> Tag {
        #[cfg(test)]
        if self.coarse_tags {
            return Tag(u32::from(digest.0[0]));
        }
        Tag(xxhash_rust::xxh3::xxh3_64_with_seed(&digest.0, self.seed) as u32)
    }

    /// Whether no entry is listed under `tag`.
    pub fn is_vacant(&self, tag: Tag) -> bool {
        !self.one.contains_key(&tag)
    }

    /// The entries under `tag`, sorted (every record with that tag: usually one).
    pub fn get(&self, tag: Tag) -> List {
        match self.one.get(&tag) {
            None => List::new(),
            Some(s) if s.id == SPILLED => self.many[&tag].clone(),
            Some(s) => smallvec::smallvec![s.entry()],
        }
    }

    /// Takes the entries under `tag` out, sorted.
    pub fn take(&mut self, tag: Tag) -> List {
        match self.one.remove(&tag) {
            None => List::new(),
            Some(s) if s.id == SPILLED => self.many.remove(&tag).expect("a spilled list"),
            Some(s) => smallvec::smallvec![s.entry()],
        }
    }

    /// Makes `list` (sorted) the entries under `tag`, replacing what was there.
    pub fn set(&mut self, tag: Tag, list: List) {
        debug_assert!(list.windows(2).all(|w| w[0] <= w[1]), "a sorted list");
        debug_assert!(list.iter().all(|(id, _)| *id != SPILLED));
        match list.len() {
            0 => {
                if let Some(s) = self.one.remove(&tag) {
                    if s.id == SPILLED {
                        self.many.remove(&tag);
                    }
                }
            }
            1 => {
                if self
                    .one
                    .insert(tag, Slot::of(list[0].0, list[0].1))
                    .map(|s| s.id)
                    == Some(SPILLED)
                {
                    self.many.remove(&tag);
                }
            }
            _ => {
                self.one.insert(tag, Slot::of(SPILLED, 0));
                self.many.insert(tag, list);
            }
        }
    }

    /// Tags with entries (records holding entries, but for shared tags).
    pub fn len(&self) -> usize {
        self.one.len()
    }

    pub fn is_empty(&self) -> bool {
        self.one.is_empty()
    }

    /// Makes room for about `more` tags.
    pub fn reserve(&mut self, more: usize) {
        self.one.reserve(more);
    }

    /// Bytes held: the table's slots (its capacity, with a control byte each) and the lists.
    pub fn memory_bytes(&self) -> usize {
        let lists: usize = self
            .many
            .values()
            .map(|l| {
                // The slot with its control byte, and the list's own allocation if any.
                std::mem::size_of::<(Tag, List)>()
                    + 1
                    + if l.spilled() {
                        l.capacity() * std::mem::size_of::<(IndexId, IndexKey)>()
                    } else {
                        0
                    }
            })
            .sum();
        self.one.capacity() * (SLOT_BYTES + 1) + lists
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_none_one_and_many_round_trip() {
        let mut o = Owners::default();
        let t = o.tag(&Digest([1; 20]));
        assert!(o.is_vacant(t) && o.get(t).is_empty());
        o.set(t, List::from_vec(vec![(3, -7)]));
        assert_eq!(o.get(t).to_vec(), vec![(3, -7)]);
        o.set(
            t,
            List::from_vec(vec![(1, IndexKey::MIN), (3, IndexKey::MAX)]),
        );
        assert_eq!(
            o.get(t).to_vec(),
            vec![(1, IndexKey::MIN), (3, IndexKey::MAX)]
        );
        assert_eq!(o.len(), 1);
        o.set(t, List::from_vec(vec![(2, 0)]));
        assert!(
            o.many.is_empty(),
            "the side list goes when one entry is left"
        );
        assert_eq!(o.take(t).to_vec(), vec![(2, 0)]);
        assert!(o.is_vacant(t) && o.is_empty());
        o.set(t, List::from_vec(vec![(1, 1), (1, 2)]));
        o.set(t, List::new());
        assert!(o.is_empty() && o.many.is_empty());
    }
}
