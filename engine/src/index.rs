//! The per-shard primary index: digest → where the newest version lives and its metadata.
//!
//! Owns the mapping only. Entries always point at a record that verified when written or
//! recovered; deleted and expired records have no entry. It must never hold record data.
//!
//! Memory is the point of this module (issue 4: at most 48 bytes of RAM per record). Each
//! partition has its own small table, so growth happens in many small steps instead of one
//! rehash of the whole shard (which would stall the core and, with doubling, leave up to half
//! the table empty):
//! - entries are packed to [`ENTRY_BYTES`] (40) bytes, stored in 64-entry pages. Without
//!   secondary indexes they are dense (a removal moves the partition's last entry into the
//!   hole), so no slack beyond one partial page. While secondary indexes exist
//!   ([`Index::keep_dead`]) an entry never moves while its record is live, so its place is a
//!   stable [`Handle`] the indexes name records by: a removal leaves a dead entry that keeps
//!   its digest until [`Index::release_dead`] (the indexes' entries for it are swept first),
//!   then a hole the partition's next insert fills;
//! - the digest's first byte is implied by the partition (it is the partition id's low byte),
//!   so an entry stores only the other 19;
//! - a linear-probing table of 4-byte slots maps a digest to its entry's position; a slot also
//!   keeps 8 bits of the hash, so a probe rarely touches an entry that does not match (an
//!   insert probes ~3–6 occupied slots, and each entry read is a cache miss). Tables
//!   grow by a quarter when over 80 % full, so they are 64–80 % full: 5–6.25 bytes a record;
//! - both kinds of page come from per-index slabs with free lists, so resizes never fragment
//!   the heap (with a `Vec` per table, freed arrays cost ~2.5 bytes a record of RSS).
//!
//! The hash is XXH3 of the digest with a per-index random seed: clients choose digests (the
//! wire carries them), so an unseeded hash of digest bits would let one client build long
//! probe chains.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::Digest;
use thin_vec::ThinVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::record::RecordMeta;
use crate::sets::SetStats;

/// Bytes of one packed entry.
pub const ENTRY_BYTES: usize = 40;
/// Largest file offset an entry holds: a shard's data file is at most 1 TiB.
pub const OFFSET_MAX: u64 = (1 << 40) - 1;
/// Largest record an entry describes (records are at most the 8 MiB write block).
pub const RECORD_BYTES_MAX: u32 = (1 << 24) - 1;
/// Largest last-update time an entry holds, in ms since the Citrusleaf epoch (2044-11, where
/// Aerospike's 40-bit field also ends); later times are stored as this.
pub const LAST_UPDATE_MS_MAX: u64 = (1 << 40) - 1;

/// A slot is 0 (empty) or `(position + 1) | tag << POS_BITS`. 24 position bits leave 8 tag
/// bits: with 5, one insert in ~6 read an entry that did not match, a cache miss each.
const POS_BITS: u32 = 24;
const POS_MASK: u32 = (1 << POS_BITS) - 1;
const TAG_MASK: u64 = (1 << (32 - POS_BITS)) - 1;
/// Most records one partition of one shard holds (2^24 - 1: 68 billion a node, 3 TB of index).
pub const PARTITION_RECORDS_MAX: usize = POS_MASK as usize;

type Packed = [u8; ENTRY_BYTES];

/// Where a record version lives, and the metadata needed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// File offset of the record's first byte (at most [`OFFSET_MAX`]).
    pub offset: u64,
    /// Record length (1 ..= [`RECORD_BYTES_MAX`]).
    pub bytes: u32,
    pub meta: RecordMeta,
    /// The record's set, from [`Index::set_id`] (0: no set; at most `sets::SETS_MAX`).
    pub set_id: u16,
}

impl IndexEntry {
    /// Packed layout: digest bytes 1..20 (19), offset (5, LE), bytes (3), generation (2),
    /// void time (4), last-update ms (5), set id (2).
    fn pack(&self, digest: &Digest) -> Packed {
        let mut p = [0u8; ENTRY_BYTES];
        p[0..19].copy_from_slice(&digest.0[1..]);
        p[19..24].copy_from_slice(&self.offset.to_le_bytes()[..5]);
        p[24..27].copy_from_slice(&self.bytes.to_le_bytes()[..3]);
        p[27..29].copy_from_slice(&self.meta.generation.to_le_bytes());
        p[29..33].copy_from_slice(&self.meta.void_time.to_le_bytes());
        let lut = self.meta.last_update_ms.min(LAST_UPDATE_MS_MAX);
        p[33..38].copy_from_slice(&lut.to_le_bytes()[..5]);
        p[38..40].copy_from_slice(&self.set_id.to_le_bytes());
        p
    }

    fn unpack(p: &Packed) -> IndexEntry {
        let le = |b: &[u8]| {
            let mut v = [0u8; 8];
            v[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(v)
        };
        IndexEntry {
            offset: le(&p[19..24]),
            bytes: le(&p[24..27]) as u32,
            meta: RecordMeta {
                generation: le(&p[27..29]) as u16,
                void_time: le(&p[29..33]) as u32,
                last_update_ms: le(&p[33..38]),
            },
            set_id: le(&p[38..40]) as u16,
        }
    }
}

fn digest_of(partition: usize, p: &Packed) -> Digest {
    let mut d = [0u8; 20];
    d[0] = partition as u8; // the partition id's low byte is the digest's first byte
    d[1..].copy_from_slice(&p[0..19]);
    Digest(d)
}

/// Fixed-size pages handed out by id from large blocks, and taken back into a free list.
/// Partitions grow and shrink in pages, so their churn never fragments the heap: a page one
/// partition gives back is the next page another takes. Blocks are never returned to the
/// system (as Aerospike's index arenas are not).
#[derive(Debug)]
struct Slab<P: Copy> {
    blocks: Vec<Box<[P]>>,
    free: Vec<u32>,
    /// Pages ever handed out (page ids below this exist).
    made: u32,
    zero: P,
}

/// Pages a slab block holds: 1 MiB blocks for slot pages, 1.25 MiB for entry pages.
const PAGES_PER_BLOCK: usize = 512;

impl<P: Copy> Slab<P> {
    fn new(zero: P) -> Slab<P> {
        Slab {
            blocks: Vec::new(),
            free: Vec::new(),
            made: 0,
            zero,
        }
    }

    /// A zeroed page.
    fn take(&mut self) -> u32 {
        if let Some(id) = self.free.pop() {
            *self.get_mut(id) = self.zero;
            return id;
        }
        let id = self.made;
        if id as usize == self.blocks.len() * PAGES_PER_BLOCK {
            self.blocks
                .push(vec![self.zero; PAGES_PER_BLOCK].into_boxed_slice());
        }
        self.made = id.checked_add(1).expect("fewer than 2^32 index pages");
        id
    }

    fn give(&mut self, id: u32) {
        debug_assert!(id < self.made);
        self.free.push(id);
    }

    fn get(&self, id: u32) -> &P {
        &self.blocks[id as usize / PAGES_PER_BLOCK][id as usize % PAGES_PER_BLOCK]
    }

    fn get_mut(&mut self, id: u32) -> &mut P {
        &mut self.blocks[id as usize / PAGES_PER_BLOCK][id as usize % PAGES_PER_BLOCK]
    }

    fn in_use(&self) -> usize {
        self.made as usize - self.free.len()
    }

    fn memory_bytes(&self) -> usize {
        self.blocks.len() * PAGES_PER_BLOCK * std::mem::size_of::<P>() + self.free.capacity() * 4
    }
}

/// How many entries ahead a resize prefetches (5 cache lines).
const RESIZE_PREFETCH: usize = 8;

/// Entries per entry page (2,560 bytes).
const PAGE_ENTRIES: usize = 64;
/// Slots per slot page (2 KiB): the [`INLINE_IDS`] a partition header holds cover the slot
/// pages of a partition of up to ~3,700 records (15 million a shard).
const PAGE_SLOTS: usize = 512;

type EntryPage = [Packed; PAGE_ENTRIES];
type SlotPage = [u32; PAGE_SLOTS];

/// The pages of every partition of one index.
#[derive(Debug)]
struct Pages {
    entries: Slab<EntryPage>,
    slots: Slab<SlotPage>,
}

/// Page ids a partition header holds itself; more spill to the heap.
const INLINE_IDS: usize = 9;

/// A partition's page ids: its slot pages, then its entry pages. The first [`INLINE_IDS`] live
/// inside the partition header, so the cache miss that loads the header brings them too: a
/// partition of up to ~200 records has all its ids there, and one of up to ~3,700 records
/// (15 million a shard) all its slot pages' ids, so a lookup costs the header, a slot page and
/// an entry page (and an insert finds where its entry goes through [`PageIds::last_entry`]).
#[derive(Debug, Default)]
struct PageIds {
    slots: u32,
    entries: u32,
    inline: [u32; INLINE_IDS],
    /// The ids after the first [`INLINE_IDS`]. A `ThinVec` keeps its length in the array it
    /// points to: a thin pointer keeps the header to one cache line, and, unlike a boxed
    /// `Vec`, reaching the ids takes one load that may miss, not two.
    spill: ThinVec<u32>,
    /// The last entry page's id (if there is one): where an insert's entry goes, found
    /// without the spilled ids (see [`Index::prefetch`]).
    last_entry: u32,
}

impl PageIds {
    fn count(&self) -> usize {
        (self.slots + self.entries) as usize
    }

    /// Id number `k` of the list (slot pages, then entry pages).
    fn id(&self, k: usize) -> u32 {
        debug_assert!(k < self.count());
        match self.inline.get(k) {
            Some(&id) => id,
            None => self.spill[k - INLINE_IDS],
        }
    }

    fn to_vec(&self) -> Vec<u32> {
        (0..self.count()).map(|k| self.id(k)).collect()
    }

    fn slot_page(&self, i: usize) -> u32 {
        debug_assert!(i < self.slots as usize);
        self.id(i)
    }

    fn entry_page(&self, j: usize) -> u32 {
        if j + 1 == self.entries as usize {
            return self.last_entry;
        }
        self.id(self.slots as usize + j)
    }

    fn slot_pages(&self) -> usize {
        self.slots as usize
    }

    fn entry_pages(&self) -> usize {
        self.entries as usize
    }

    fn store(&mut self, ids: Vec<u32>, slots: usize) {
        self.slots = slots as u32;
        self.entries = (ids.len() - slots) as u32;
        let here = ids.len().min(INLINE_IDS);
        self.inline[..here].copy_from_slice(&ids[..here]);
        self.spill = ids[here..].iter().copied().collect();
        self.last_entry = if self.entries > 0 {
            ids[ids.len() - 1]
        } else {
            0
        };
    }

    fn push_entry(&mut self, id: u32) {
        let k = self.count();
        match self.inline.get_mut(k) {
            Some(slot) => *slot = id,
            None => self.spill.push(id),
        }
        self.entries += 1;
        self.last_entry = id;
    }

    fn pop_entry(&mut self) -> Option<u32> {
        if self.entries == 0 {
            return None;
        }
        let last = self.count() - 1;
        let id = match self.inline.get(last) {
            Some(&id) => id,
            None => self
                .spill
                .pop()
                .expect("ids past the inline ones are spilled"),
        };
        self.entries -= 1;
        self.last_entry = if self.entries > 0 {
            self.id(self.count() - 1)
        } else {
            0
        };
        Some(id)
    }

    /// Replaces the slot pages, returning the old ones.
    fn replace_slots(&mut self, new: Vec<u32>) -> Vec<u32> {
        let mut all = self.to_vec();
        let entries = all.split_off(self.slots as usize);
        let n = new.len();
        let mut ids = new;
        ids.extend_from_slice(&entries);
        self.store(ids, n);
        all
    }

    /// Every id, leaving none.
    fn take_all(&mut self) -> (Vec<u32>, Vec<u32>) {
        let mut slots = self.to_vec();
        let entries = slots.split_off(self.slots as usize);
        *self = PageIds::default();
        (slots, entries)
    }
}

/// The records of one partition: the pages of its packed entries (positions `0..used`, live
/// ones, holes and dead ones) and of the slots that find the live ones. One cache line
/// (asserted in the tests).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Partition {
    ids: PageIds,
    /// Positions in use: live entries, holes (in the index's free list) and dead entries.
    used: u32,
    /// Live entries (each has a slot).
    live: u32,
}

/// One partition with the pages it lives in, for the table operations.
struct Table<'a> {
    part: &'a mut Partition,
    /// The partition's holes: positions below `used` free for the next insert.
    free: &'a mut Vec<u32>,
    pages: &'a mut Pages,
    pid: usize,
    seed: u64,
    /// Records a partition is expected to reach (a bulk load's hint; 0: none).
    hint: usize,
}

impl Partition {
    fn slot_count(&self) -> usize {
        self.ids.slot_pages() * PAGE_SLOTS
    }

    /// Live entries.
    fn len(&self) -> usize {
        self.live as usize
    }

    /// Positions in use (live, holes and dead).
    fn used(&self) -> usize {
        self.used as usize
    }

    fn entry<'p>(&self, pages: &'p Pages, pos: usize) -> &'p Packed {
        &pages.entries.get(self.ids.entry_page(pos / PAGE_ENTRIES))[pos % PAGE_ENTRIES]
    }

    fn slot(&self, pages: &Pages, i: usize) -> u32 {
        pages.slots.get(self.ids.slot_page(i / PAGE_SLOTS))[i % PAGE_SLOTS]
    }

    fn home(&self, hash: u64) -> usize {
        home_in(hash, self.slot_count())
    }

    fn next(&self, i: usize) -> usize {
        next_in(i, self.slot_count())
    }

    /// `Ok(slot)` holding `digest`, or `Err(empty slot)` where it would go.
    fn find(&self, pages: &Pages, digest: &Digest, hash: u64) -> Result<usize, usize> {
        if self.live == 0 {
            return Err(0);
        }
        let tag = (hash & TAG_MASK) as u32;
        let mut i = self.home(hash);
        loop {
            let s = self.slot(pages, i);
            if s == 0 {
                return Err(i);
            }
            if s >> POS_BITS == tag && self.entry(pages, pos_of(s))[0..19] == digest.0[1..] {
                return Ok(i);
            }
            i = self.next(i);
        }
    }
}

impl Table<'_> {
    fn set_slot(&mut self, i: usize, v: u32) {
        self.pages
            .slots
            .get_mut(self.part.ids.slot_page(i / PAGE_SLOTS))[i % PAGE_SLOTS] = v;
    }

    fn slot(&self, i: usize) -> u32 {
        self.part.slot(self.pages, i)
    }

    fn entry(&self, pos: usize) -> Packed {
        *self.part.entry(self.pages, pos)
    }

    fn set_entry(&mut self, pos: usize, e: Packed) {
        self.pages
            .entries
            .get_mut(self.part.ids.entry_page(pos / PAGE_ENTRIES))[pos % PAGE_ENTRIES] = e;
    }

    fn hash_at(&self, pos: usize) -> u64 {
        hash_of_packed(self.part.entry(self.pages, pos), self.seed)
    }

    /// The first empty slot of the probe run from `hash`.
    fn empty_slot(&self, hash: u64) -> usize {
        let mut i = self.part.home(hash);
        while self.slot(i) != 0 {
            i = self.part.next(i);
        }
        i
    }

    /// The slot that points at `pos` (which must be indexed), probing from `hash`.
    fn slot_of_pos(&self, pos: usize, hash: u64) -> usize {
        let mut i = self.part.home(hash);
        loop {
            let s = self.slot(i);
            assert!(s != 0, "an indexed position has a slot");
            if pos_of(s) == pos {
                return i;
            }
            i = self.part.next(i);
        }
    }

    /// Rebuilds the slots in `n_pages` fresh pages (entries do not move). A bulk load runs
    /// this for every record about five times over (a table grows by a quarter at a time), so
    /// it walks the entry pages in order and fills the new slot pages through a local list of
    /// their ids, instead of a lookup of both through the partition's page list per record.
    fn resize(&mut self, n_pages: usize) {
        let len = self.part.used();
        let slot_count = n_pages * PAGE_SLOTS;
        assert!(
            slot_count > self.part.len(),
            "a table keeps at least one empty slot"
        );
        // Old pages back first, so a shrinking table reuses them instead of growing the slab.
        for id in self.part.ids.replace_slots(Vec::new()) {
            self.pages.slots.give(id);
        }
        let fresh: Vec<u32> = (0..n_pages).map(|_| self.pages.slots.take()).collect();
        let Pages { entries, slots } = &mut *self.pages;
        let entry_ids: Vec<u32> = (0..self.part.ids.entry_pages())
            .map(|j| self.part.ids.entry_page(j))
            .collect();
        for (first, (k, &id)) in (0..len)
            .step_by(PAGE_ENTRIES)
            .zip(entry_ids.iter().enumerate())
        {
            let page = entries.get(id);
            let next = entry_ids.get(k + 1).map(|&n| entries.get(n));
            for (pos, packed) in (first..len).zip(page.iter()) {
                // Entry pages lie apart in the slab, so the hardware's streaming prefetch
                // stops at each one's end: fetch a few entries ahead, across into the next.
                let ahead = pos % PAGE_ENTRIES + RESIZE_PREFETCH;
                match (page.get(ahead), next) {
                    (Some(e), _) => prefetch(e),
                    (None, Some(n)) => prefetch(&n[ahead - PAGE_ENTRIES]),
                    (None, None) => {}
                }
                if !is_live(packed) {
                    continue;
                }
                let hash = hash_of_packed(packed, self.seed);
                let mut i = home_in(hash, slot_count);
                loop {
                    let slot = &mut slots.get_mut(fresh[i / PAGE_SLOTS])[i % PAGE_SLOTS];
                    if *slot == 0 {
                        *slot = slot_value(pos, hash);
                        break;
                    }
                    i = next_in(i, slot_count);
                }
            }
        }
        self.part.ids.replace_slots(fresh);
    }

    /// Adds a digest known to be absent, in a hole if the partition has one; returns its
    /// position.
    fn push(&mut self, packed: Packed, hash: u64) -> usize {
        let len = self.part.len();
        // Over 80 % full after this insert: grow by a quarter, or at once to the bulk hint.
        if (len + 1) * 5 > self.part.slot_count() * 4 {
            let want = ((len + 1) * 5 / 4 * 5 / 4).max(self.hint * 4 / 3);
            self.resize(want.div_ceil(PAGE_SLOTS));
        }
        let pos = match self.free.pop() {
            Some(pos) => pos as usize,
            None => {
                let pos = self.part.used();
                assert!(
                    pos < PARTITION_RECORDS_MAX,
                    "partition {} holds {PARTITION_RECORDS_MAX} records",
                    self.pid
                );
                if pos == self.part.ids.entry_pages() * PAGE_ENTRIES {
                    let id = self.pages.entries.take();
                    self.part.ids.push_entry(id);
                }
                self.part.used = pos as u32 + 1;
                pos
            }
        };
        self.set_entry(pos, packed);
        self.part.live += 1;
        let i = self.empty_slot(hash);
        self.set_slot(i, slot_value(pos, hash));
        pos
    }

    /// Removes the entry slot `slot` points at, leaving its position dead (`keep`: its digest
    /// stays readable until released); returns the position. Without `keep` (no handle is
    /// held anywhere, and the partition has no holes) the partition's last entry moves into
    /// the hole, so entries stay dense and pages go back as a partition shrinks.
    fn remove_at(&mut self, slot: usize, keep: bool) -> usize {
        let pos = pos_of(self.slot(slot));
        if !keep && self.free.is_empty() {
            self.remove_dense(slot, pos);
            return pos;
        }
        self.clear_slot(slot);
        let mut dead = self.entry(pos);
        dead[24..27].fill(0); // no live entry has 0 bytes
        self.set_entry(pos, dead);
        self.part.live -= 1;
        if keep {
            self.shrink_slots();
        } else {
            self.free_pos(pos);
        }
        pos
    }

    /// [`Table::remove_at`] of a dense partition: the last entry moves into the hole.
    fn remove_dense(&mut self, slot: usize, pos: usize) {
        debug_assert_eq!(self.part.used(), self.part.len(), "a dense partition");
        self.clear_slot(slot);
        let last = self.part.used() - 1;
        if pos != last {
            let moved = self.entry(last);
            let moved_hash = self.hash_at(last);
            let s = self.slot_of_pos(last, moved_hash);
            self.set_slot(s, slot_value(pos, moved_hash));
            self.set_entry(pos, moved);
        }
        self.part.used = last as u32;
        self.part.live -= 1;
        // Give pages back, with slack so that a partition hovering at a boundary does not
        // take and give a page on every write.
        if self.part.ids.entry_pages() * PAGE_ENTRIES >= last + 2 * PAGE_ENTRIES {
            let id = self.part.ids.pop_entry().expect("more pages than entries");
            self.pages.entries.give(id);
        }
        if last == 0 {
            self.release_pages();
        } else {
            self.shrink_slots();
        }
    }

    /// Gives every page of an empty partition back (no position is in use: no live entry, no
    /// dead one a handle may name) and forgets its holes.
    fn release_pages(&mut self) {
        let (slots, entries) = self.part.ids.take_all();
        for id in entries {
            self.pages.entries.give(id);
        }
        for id in slots {
            self.pages.slots.give(id);
        }
        *self.part = Partition::default();
        *self.free = Vec::new();
    }

    /// Shrinks the slot table to ~67 % full once it is under 20 % full (it keeps at least one
    /// page).
    fn shrink_slots(&mut self) {
        let live = self.part.len();
        if self.part.ids.slot_pages() > 1 && live * 5 < self.part.slot_count() {
            self.resize((live * 3 / 2).div_ceil(PAGE_SLOTS));
        }
    }

    /// Moves the live entries down over the holes (positions change: no handle may be held),
    /// gives back the entry pages left over and rebuilds the slots.
    fn compact(&mut self) {
        if self.free.is_empty() {
            return;
        }
        let mut to = 0;
        for from in 0..self.part.used() {
            let e = self.entry(from);
            if is_live(&e) {
                self.set_entry(to, e);
                to += 1;
            }
        }
        debug_assert_eq!(to, self.part.len());
        self.part.used = to as u32;
        self.free.clear();
        self.free.shrink_to_fit();
        while self.part.ids.entry_pages() * PAGE_ENTRIES >= to + PAGE_ENTRIES {
            let id = self.part.ids.pop_entry().expect("more pages than entries");
            self.pages.entries.give(id);
        }
        if to == 0 {
            self.release_pages();
        } else {
            let pages = self.part.ids.slot_pages();
            self.resize(pages);
        }
    }

    /// Makes a dead position a hole; an empty partition gives every page back.
    fn free_pos(&mut self, pos: usize) {
        debug_assert!(!is_live(&self.entry(pos)));
        self.free.push(pos as u32);
        if self.part.len() == 0 && self.free.len() == self.part.used() {
            self.release_pages();
        } else {
            self.shrink_slots();
        }
    }

    /// Empties slot `i` and shifts later members of its probe run back, so every entry stays
    /// reachable from its home slot (deletion without tombstones).
    fn clear_slot(&mut self, mut i: usize) {
        self.set_slot(i, 0);
        let mut j = i;
        loop {
            j = self.part.next(j);
            let s = self.slot(j);
            if s == 0 {
                return;
            }
            let home = self.part.home(self.hash_at(pos_of(s)));
            // The entry at j may move to i unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.set_slot(i, s);
                self.set_slot(j, 0);
                i = j;
            }
        }
    }
}

/// A prefetch hint for the cache line holding `r`.
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint to the CPU: it never faults and changes no state a
    // program can observe, and `r` is a valid reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// The two levels of an index lookup, for [`Index::prefetch_lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchStage {
    Slot,
    Entry,
}

/// The hash of a digest. Its first byte is left out: that is the partition's (see
/// [`digest_of`]), the same for every digest of a table, and leaving it out lets a resize hash
/// a packed entry where it lies, without rebuilding the digest first.
fn hash_of(digest: &Digest, seed: u64) -> u64 {
    xxh3_64_with_seed(&digest.0[1..], seed)
}

/// [`hash_of`] the digest a packed entry holds.
fn hash_of_packed(p: &Packed, seed: u64) -> u64 {
    xxh3_64_with_seed(&p[..19], seed)
}

/// The slot a hash starts probing at in a table of `slot_count` slots (multiply-shift: any
/// table size works).
fn home_in(hash: u64, slot_count: usize) -> usize {
    ((u128::from(hash) * slot_count as u128) >> 64) as usize
}

/// The slot probed after `i` in a table of `slot_count` slots (the probe wraps around).
fn next_in(i: usize, slot_count: usize) -> usize {
    if i + 1 == slot_count {
        0
    } else {
        i + 1
    }
}

fn slot_value(pos: usize, hash: u64) -> u32 {
    debug_assert!(pos < PARTITION_RECORDS_MAX);
    (pos as u32 + 1) | ((hash & TAG_MASK) as u32) << POS_BITS
}

fn pos_of(slot: u32) -> usize {
    (slot & POS_MASK) as usize - 1
}

/// Whether a packed entry is a live record's (holes and dead entries have 0 bytes).
fn is_live(p: &Packed) -> bool {
    p[24..27] != [0, 0, 0]
}

/// A record's place in the index, stable while it is live and, once it is removed while
/// secondary indexes exist, until [`Index::release_dead`]: its entry page's id and the
/// position in that page. Secondary-index entries hold it instead of the 20-byte digest.
pub type Handle = u32;

fn handle_of(page: u32, pos: usize) -> Handle {
    let h = u64::from(page) * PAGE_ENTRIES as u64 + (pos % PAGE_ENTRIES) as u64;
    Handle::try_from(h).expect("fewer than 2^32 index entries a shard")
}

/// The index of one shard, and its per-set object counts.
#[derive(Debug)]
pub struct Index {
    partitions: Box<[Partition]>,
    pages: Pages,
    len: usize,
    seed: u64,
    /// See [`Index::expect_records`].
    hint: usize,
    /// Per partition, its holes (positions free for its next insert).
    free: Box<[Vec<u32>]>,
    /// Whether a removed record's position stays dead (its digest readable, the position not
    /// reused) until released: while secondary-index entries may name it.
    keep_dead: bool,
    /// Dead positions awaiting release, oldest first: (partition, position).
    dead: Vec<(u16, u32)>,
    set_ids: HashMap<Vec<u8>, u16>,
    /// The set named last: writes mostly repeat it, and this spares them the hash lookup.
    last_set: Option<(Vec<u8>, u16)>,
    sets: Arc<SetStats>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            partitions: (0..PARTITION_COUNT).map(|_| Partition::default()).collect(),
            pages: Pages {
                entries: Slab::new([[0; ENTRY_BYTES]; PAGE_ENTRIES]),
                slots: Slab::new([0; PAGE_SLOTS]),
            },
            len: 0,
            free: (0..PARTITION_COUNT).map(|_| Vec::new()).collect(),
            keep_dead: false,
            dead: Vec::new(),
            hint: 0,
            seed: std::collections::hash_map::RandomState::new().hash_one(0x6170_6f67_6565u64),
            set_ids: HashMap::new(),
            last_set: None,
            sets: Arc::default(),
        }
    }
}

impl Index {
    /// The id of a set name, registering it on first use; 0 for no set, and for names past
    /// the set limit (their records are then counted as set-less, with a warning).
    pub fn set_id(&mut self, name: &[u8]) -> u16 {
        if name.is_empty() {
            return 0;
        }
        if let Some((last, id)) = &self.last_set {
            if last == name {
                return *id;
            }
        }
        if let Some(&id) = self.set_ids.get(name) {
            self.last_set = Some((name.to_vec(), id));
            return id;
        }
        match self.sets.register(name) {
            Some(id) => {
                self.set_ids.insert(name.to_vec(), id);
                self.last_set = Some((name.to_vec(), id));
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

    fn table(&mut self, pid: usize) -> Table<'_> {
        Table {
            part: &mut self.partitions[pid],
            free: &mut self.free[pid],
            pages: &mut self.pages,
            pid,
            seed: self.seed,
            hint: self.hint,
        }
    }

    pub fn get(&self, d: &Digest) -> Option<IndexEntry> {
        let p = &self.partitions[usize::from(d.partition().0)];
        let slot = p.find(&self.pages, d, hash_of(d, self.seed)).ok()?;
        Some(IndexEntry::unpack(
            p.entry(&self.pages, pos_of(p.slot(&self.pages, slot))),
        ))
    }

    /// Asks the CPU to start loading what a lookup of `d` will touch, one level per call:
    /// stage 0 its home slot, stage 1 (once that slot is in cache) the entry it names. A
    /// batch issues them rows ahead, so the misses of many lookups overlap instead of each
    /// lookup waiting out its own. A hint only: it reads nothing it returns.
    pub fn prefetch_lookup(&self, d: &Digest, stage: PrefetchStage) {
        let p = &self.partitions[usize::from(d.partition().0)];
        if p.live == 0 {
            return;
        }
        let home = p.home(hash_of(d, self.seed));
        match stage {
            PrefetchStage::Slot => {
                let page = self.pages.slots.get(p.ids.slot_page(home / PAGE_SLOTS));
                prefetch(&page[home % PAGE_SLOTS]);
            }
            PrefetchStage::Entry => {
                let s = p.slot(&self.pages, home);
                if s != 0 {
                    prefetch(p.entry(&self.pages, pos_of(s)));
                }
            }
        }
    }

    /// Indexes `d`, returning the entry it replaces (one lookup for both).
    pub fn insert(&mut self, d: Digest, e: IndexEntry) -> Option<IndexEntry> {
        assert!(
            e.bytes > 0 && e.meta.generation != 0,
            "index entry for a real record"
        );
        assert!(e.offset <= OFFSET_MAX, "offset {} past 1 TiB", e.offset);
        assert!(e.bytes <= RECORD_BYTES_MAX, "record of {} bytes", e.bytes);
        assert!(usize::from(e.set_id) <= crate::sets::SETS_MAX);
        let pid = usize::from(d.partition().0);
        let hash = hash_of(&d, self.seed);
        let packed = e.pack(&d);
        let found = self.partitions[pid].find(&self.pages, &d, hash);
        let mut t = self.table(pid);
        let old = match found {
            Ok(slot) => {
                let pos = pos_of(t.slot(slot));
                let old = IndexEntry::unpack(&t.entry(pos));
                t.set_entry(pos, packed);
                self.sets.add(old.set_id, -1);
                Some(old)
            }
            Err(_) => {
                t.push(packed, hash);
                self.len += 1;
                None
            }
        };
        self.sets.add(e.set_id, 1);
        old
    }

    pub fn remove(&mut self, d: &Digest) -> Option<IndexEntry> {
        let pid = usize::from(d.partition().0);
        let p = &self.partitions[pid];
        let slot = p.find(&self.pages, d, hash_of(d, self.seed)).ok()?;
        let old = IndexEntry::unpack(p.entry(&self.pages, pos_of(p.slot(&self.pages, slot))));
        let keep = self.keep_dead;
        let pos = self.table(pid).remove_at(slot, keep);
        if keep {
            self.dead.push((pid as u16, pos as u32));
        }
        self.len -= 1;
        self.sets.add(old.set_id, -1);
        Some(old)
    }

    /// The handle of `d`'s live entry.
    pub fn handle(&self, d: &Digest) -> Option<Handle> {
        let p = &self.partitions[usize::from(d.partition().0)];
        let slot = p.find(&self.pages, d, hash_of(d, self.seed)).ok()?;
        let pos = pos_of(p.slot(&self.pages, slot));
        Some(handle_of(p.ids.entry_page(pos / PAGE_ENTRIES), pos))
    }

    fn packed_at(&self, h: Handle) -> &Packed {
        let h = h as usize;
        &self.pages.entries.get((h / PAGE_ENTRIES) as u32)[h % PAGE_ENTRIES]
    }

    /// Bytes 1..20 of the digest at `h` (live, or dead and not yet released: the caller holds
    /// it from an entry made while it was live).
    pub fn digest_tail(&self, h: Handle) -> [u8; 19] {
        self.packed_at(h)[0..19].try_into().expect("19 bytes")
    }

    /// The live entry at `h`, `None` once its record was removed.
    pub fn entry_at(&self, h: Handle) -> Option<IndexEntry> {
        let p = self.packed_at(h);
        is_live(p).then(|| IndexEntry::unpack(p))
    }

    /// From now on (`true`), a removed record's position stays dead until released, so
    /// handles held elsewhere keep naming its digest; `false` releases every dead position.
    pub fn keep_dead(&mut self, keep: bool) {
        self.keep_dead = keep;
        if !keep {
            self.release_dead(self.dead.len());
            // No handle is held any more: entries may move again, so partitions go back to
            // dense (a removal then moves the last entry in and pages go back as they shrink).
            for pid in 0..self.partitions.len() {
                self.table(pid).compact();
            }
        }
    }

    /// Dead positions awaiting release.
    pub fn dead_count(&self) -> usize {
        self.dead.len()
    }

    /// Whether each handle below the returned set's length is dead and awaiting release, as
    /// a bit set (one bit per handle the entry pages can hold).
    pub fn dead_handles(&self) -> DeadSet {
        let mut bits = vec![0u64; (self.pages.entries.made as usize * PAGE_ENTRIES).div_ceil(64)];
        for &(pid, pos) in &self.dead {
            let p = &self.partitions[usize::from(pid)];
            let h = handle_of(p.ids.entry_page(pos as usize / PAGE_ENTRIES), pos as usize);
            bits[h as usize / 64] |= 1 << (h % 64);
        }
        DeadSet(bits)
    }

    /// Makes the oldest `n` dead positions holes for new inserts. Nothing may name them any
    /// more (the secondary indexes swept their entries).
    pub fn release_dead(&mut self, n: usize) {
        let released: Vec<(u16, u32)> = self.dead.drain(..n).collect();
        for (pid, pos) in released {
            self.table(usize::from(pid)).free_pos(pos as usize);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Asks the CPU to start fetching what a lookup of `d` touches: the partition header, and
    /// with `deep` (once the header is likely cached) the digest's home slot. Only a hint: a
    /// bulk load issues it a record or two ahead, so the cache misses of one record's insert
    /// overlap the work on the records before it.
    pub fn prefetch(&self, d: &Digest, deep: bool) {
        let p = &self.partitions[usize::from(d.partition().0)];
        prefetch(p);
        if deep && p.live > 0 {
            let i = p.home(hash_of(d, self.seed));
            prefetch(&self.pages.slots.get(p.ids.slot_page(i / PAGE_SLOTS))[i % PAGE_SLOTS]);
            // Where an insert puts a new entry (an overwrite finds its entry through the slot).
            let end = self.free[usize::from(d.partition().0)]
                .last()
                .map_or(p.used(), |&pos| pos as usize);
            if end < p.ids.entry_pages() * PAGE_ENTRIES {
                prefetch(
                    &self.pages.entries.get(p.ids.entry_page(end / PAGE_ENTRIES))
                        [end % PAGE_ENTRIES],
                );
            }
        }
    }

    /// A bulk load (recovery) expects about `records` records in `partitions` partitions:
    /// a table that must grow grows straight to its share, instead of by a quarter at a
    /// time (each step rehashes the partition). [`Index::end_bulk`] ends it.
    pub fn expect_records(&mut self, records: usize, partitions: usize) {
        self.hint = records / partitions.max(1);
    }

    /// Ends a bulk load: tables left under half full (the hint counted versions that were
    /// later overwritten or deleted) shrink back to 64–80 % full.
    pub fn end_bulk(&mut self) {
        self.hint = 0;
        for pid in 0..self.partitions.len() {
            let p = &self.partitions[pid];
            let (len, slots) = (p.len(), p.slot_count());
            if len > 0 && len * 2 < slots {
                let pages = (len * 5 / 4 * 5 / 4).max(len + 1).div_ceil(PAGE_SLOTS);
                if pages < p.ids.slot_pages() {
                    self.table(pid).resize(pages);
                }
            }
        }
    }

    /// RAM of the index: its pages (free ones included), page lists (counted as the pages in
    /// use, without their `Vec`s' spare capacity) and partition headers. O(1): stats read it
    /// after every write.
    pub fn memory_bytes(&self) -> u64 {
        // Page-id lists beyond what a header holds inline (an approximation: all in use).
        let lists = (self.pages.entries.in_use() + self.pages.slots.in_use()) * 4;
        (self.pages.entries.memory_bytes()
            + self.pages.slots.memory_bytes()
            + lists
            + self.partitions.len() * std::mem::size_of::<Partition>()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many entries partition `pid` has.
    pub fn partition_len(&self, pid: u16) -> usize {
        self.partitions[usize::from(pid)].len()
    }

    /// The entries of one partition, in no particular order (scans sort what they take).
    pub fn partition_entries(&self, pid: u16) -> impl Iterator<Item = (Digest, IndexEntry)> + '_ {
        let pid = usize::from(pid);
        let p = &self.partitions[pid];
        let pages = &self.pages;
        (0..p.used()).filter_map(move |pos| {
            let packed = p.entry(pages, pos);
            is_live(packed).then(|| (digest_of(pid, packed), IndexEntry::unpack(packed)))
        })
    }

    /// The id a set name already has, without registering it (scans filter by it).
    pub fn known_set_id(&self, name: &[u8]) -> Option<u16> {
        self.set_ids.get(name).copied()
    }

    /// Every entry, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = (Digest, IndexEntry)> + '_ {
        let pages = &self.pages;
        self.partitions
            .iter()
            .enumerate()
            .flat_map(move |(pid, p)| {
                (0..p.used()).filter_map(move |pos| {
                    let packed = p.entry(pages, pos);
                    is_live(packed).then(|| (digest_of(pid, packed), IndexEntry::unpack(packed)))
                })
            })
    }
}

/// Handles that are dead (see [`Index::dead_handles`]).
pub struct DeadSet(Vec<u64>);

impl DeadSet {
    pub fn contains(&self, h: Handle) -> bool {
        self.0
            .get(h as usize / 64)
            .is_some_and(|w| w & (1 << (h % 64)) != 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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

    /// Lookup prefetches are hints for any digest: present, absent, in a partition never
    /// used or emptied again; they change nothing a lookup sees.
    #[test]
    fn lookup_prefetches_take_any_digest_and_change_nothing() {
        let mut idx = Index::default();
        let stages = [PrefetchStage::Slot, PrefetchStage::Entry];
        for stage in stages {
            idx.prefetch_lookup(&Digest::of_integer("p", 0), stage);
        }
        for i in 0..500 {
            idx.insert(Digest::of_integer("p", i), entry(0));
        }
        idx.remove(&Digest::of_integer("p", 7));
        for i in 0..1000 {
            for stage in stages {
                idx.prefetch_lookup(&Digest::of_integer("p", i), stage);
            }
            let want = (i < 500 && i != 7).then(|| entry(0));
            assert_eq!(idx.get(&Digest::of_integer("p", i)), want, "{i}");
        }
        assert_eq!(idx.len(), 499);
    }

    /// A bulk hint far above what arrives: tables jump to their share while loading, and
    /// end_bulk gives the spare slots back; every entry stays found throughout.
    #[test]
    fn bulk_hints_grow_at_once_and_end_bulk_shrinks_back() {
        let mut idx = Index::default();
        idx.expect_records(4096 * 2000, 4096);
        let n = 20_000;
        for i in 0..n {
            idx.insert(Digest::of_integer("b", i), entry(0));
        }
        let loaded = idx.pages.slots.in_use();
        idx.end_bulk();
        let after = idx.pages.slots.in_use();
        assert!(
            after * 4 < loaded,
            "slot pages in use: {loaded} while loading, {after} after"
        );
        for p in idx.partitions.iter().filter(|p| p.len() > 0) {
            assert!(p.len() * 2 >= p.slot_count() || p.ids.slot_pages() == 1);
        }
        for i in 0..n {
            assert_eq!(idx.get(&Digest::of_integer("b", i)), Some(entry(0)), "{i}");
        }
        assert_eq!(idx.len(), n as usize);
    }

    #[test]
    fn a_partition_header_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Partition>(), 64);
    }

    #[test]
    fn packing_keeps_every_field_at_its_limits() {
        let d = Digest([0xAB; 20]);
        for e in [
            IndexEntry {
                offset: OFFSET_MAX,
                bytes: RECORD_BYTES_MAX,
                meta: RecordMeta {
                    generation: u16::MAX,
                    void_time: u32::MAX,
                    last_update_ms: LAST_UPDATE_MS_MAX,
                },
                set_id: crate::sets::SETS_MAX as u16,
            },
            IndexEntry {
                offset: 4096,
                bytes: 1,
                meta: RecordMeta {
                    generation: 1,
                    void_time: 0,
                    last_update_ms: 0,
                },
                set_id: 0,
            },
        ] {
            let p = e.pack(&d);
            assert_eq!(IndexEntry::unpack(&p), e);
            assert_eq!(digest_of(usize::from(d.partition().0), &p), d);
        }
        // A resize hashes packed entries, a lookup digests: both must agree, bit for bit.
        for n in 0..1000 {
            let d = Digest::of_integer("s", n);
            assert_eq!(hash_of_packed(&entry(0).pack(&d), 7), hash_of(&d, 7));
        }
        let mut late = entry(0);
        late.meta.last_update_ms = u64::MAX;
        assert_eq!(
            IndexEntry::unpack(&late.pack(&d)).meta.last_update_ms,
            LAST_UPDATE_MS_MAX
        );
    }

    /// A digest in partition `pid` (all in one partition stress one table).
    fn digest_in(pid: u16, n: u32) -> Digest {
        let mut d = Digest::of_integer("x", i64::from(n)).0;
        d[0] = pid as u8;
        d[1] = (d[1] & 0xF0) | (pid >> 8) as u8;
        Digest(d)
    }

    /// Random inserts, overwrites and removes, many in one partition so tables grow, shrink
    /// and probe runs wrap; after every step the index answers as a map does. Run with
    /// removed positions freed at once, and kept dead and released now and then.
    #[test]
    fn matches_a_map_through_growth_shrinking_and_removal() {
        matches_a_map(false, 0);
        matches_a_map(true, usize::MAX);
        // Kept, then dense again (the last secondary index dropped) with holes to compact.
        matches_a_map(true, 40_000);
    }

    fn matches_a_map(mut keep_dead: bool, keep_until_step: usize) {
        let mut idx = Index::default();
        idx.keep_dead(keep_dead);
        // Every live digest's handle, which must not change while it stays live.
        let mut handles: BTreeMap<Digest, Handle> = BTreeMap::new();
        let mut model: BTreeMap<Digest, IndexEntry> = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..60_000u64 {
            if keep_dead && step as usize == keep_until_step {
                idx.keep_dead(false);
                keep_dead = false;
                handles.clear();
                assert!(idx.free.iter().all(Vec::is_empty), "compacted");
            }
            let r = rnd();
            let pid = if r % 4 == 0 {
                (r >> 8) as u16 % 4096
            } else {
                7
            };
            // Grow for the first half, then mostly shrink.
            let keyspace = if step < 30_000 { 4000 } else { 200 };
            let d = digest_in(pid, (r >> 20) as u32 % keyspace);
            if r % 3 == 0 || (step >= 30_000 && r % 5 != 0) {
                assert_eq!(idx.remove(&d), model.remove(&d), "step {step}");
                if let Some(h) = handles.remove(&d) {
                    assert_eq!(idx.entry_at(h), None, "step {step}");
                    if keep_dead {
                        assert_eq!(
                            idx.digest_tail(h),
                            d.0[1..],
                            "a dead handle keeps its digest"
                        );
                    }
                }
                if keep_dead && step % 700 == 0 {
                    let dead = idx.dead_handles();
                    assert!(handles.values().all(|h| !dead.contains(*h)), "step {step}");
                    idx.release_dead(idx.dead_count() / 2);
                }
            } else {
                let e = IndexEntry {
                    offset: r >> 30,
                    bytes: (r % 5000) as u32 + 1,
                    meta: RecordMeta {
                        generation: (r % 60_000) as u16 + 1,
                        void_time: (r >> 3) as u32,
                        last_update_ms: r >> 25,
                    },
                    set_id: 0,
                };
                idx.insert(d, e);
                model.insert(d, e);
                // Handles stay put only while dead positions are kept (secondary indexes).
                let h = idx.handle(&d).expect("just inserted");
                assert_eq!(idx.entry_at(h), Some(e));
                if keep_dead {
                    let held = *handles.entry(d).or_insert(h);
                    assert_eq!(held, h, "step {step}: a live entry moved");
                }
            }
            assert_eq!(idx.len(), model.len());
            if step % 5000 == 0 {
                let mut all: Vec<_> = idx.iter().collect();
                all.sort_by_key(|(d, _)| *d);
                let want: Vec<_> = model.iter().map(|(d, e)| (*d, *e)).collect();
                assert_eq!(all, want, "step {step}");
                for p in idx.partitions.iter().filter(|p| p.ids.entry_pages() > 0) {
                    assert_eq!(p.ids.last_entry, p.ids.id(p.ids.count() - 1), "step {step}");
                }
            }
        }
        for (d, e) in &model {
            assert_eq!(idx.get(d), Some(*e));
        }
        for (d, _) in std::mem::take(&mut model) {
            assert!(idx.remove(&d).is_some());
        }
        idx.keep_dead(false);
        assert_eq!(idx.dead_count(), 0);
        assert!(idx.is_empty());
        // Every page is back in the free lists, to be reused.
        assert!(idx
            .partitions
            .iter()
            .all(|p| p.ids.count() == 0 && p.ids.spill.is_empty()));
        assert_eq!(idx.pages.entries.free.len() as u32, idx.pages.entries.made);
        assert_eq!(idx.pages.slots.free.len() as u32, idx.pages.slots.made);
    }
}
