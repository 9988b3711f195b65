//! Space management of one shard's data file: which blocks are free, open or sealed, their
//! sequence numbers, and how many of their bytes are still live — the facts defragmentation
//! and block reuse decide on — and who may take the last free blocks. Plain bookkeeping: no
//! I/O; the store reads the filesystem's free space and reserves file space at the edges.
//!
//! Invariants: a block's live bytes never go negative and never exceed its size; only a block
//! with no live bytes is freed; a free block is reused before the file grows. In a
//! [`Growth::Reserved`] table every free block is backed by space the file already holds
//! (the store reserved it before calling [`BlockTable::reserved`]), and client writes never
//! take the last [`HEADROOM_BLOCKS`] of them, so deletes and defragmentation can always free
//! space on a full filesystem. A block added on demand (the filesystem had room at the last
//! look, but the reservation lags a writer that does not yield) is reserved by the next
//! growth; until then its write may meet ENOSPC, which the store retries.

use std::collections::BTreeSet;

/// Free blocks a client write never takes while the file cannot grow: what tombstones and
/// defragmentation need to free space on a full filesystem. Each costs one block of disk per
/// shard even on an empty store (a `Growth::Reserved` file keeps them reserved).
pub const HEADROOM_BLOCKS: u64 = 2;
/// Of the headroom, the free blocks a delete never takes: defragmentation needs one block to
/// move a sparse block's live records into before it can free that block.
pub const DEFRAG_RESERVE_BLOCKS: u64 = 1;
/// Free blocks a `Growth::Reserved` file reserves beyond the headroom once clients write, so
/// most blocks a writer takes are reserved before it fills them; the file grows again once
/// half of them are used, so a write stream costs one `fallocate` per half of them.
pub const GROW_AHEAD_BLOCKS: u64 = 4;

/// Who asks for a block: decides how much of the headroom it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A client's write: leaves the headroom alone unless the file can still grow.
    Client,
    /// A tombstone (a client's delete, an eviction): leaves defragmentation's block alone.
    Delete,
    /// Defragmentation moving records: may take the last.
    Defrag,
    /// Recovery opening the first block: takes the last, or adds one even on a full
    /// filesystem (the store must start and serve reads; its writes retry until space is back).
    Open,
}

/// How the table gains blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// Blocks are added as they are allocated, up to the capacity: memory, and configured
    /// files or devices, whose size is fixed.
    OnDemand,
    /// Free blocks are added by [`BlockTable::reserved`], once the store has reserved their
    /// space in the file (the default layout's own file, which grows on a filesystem it
    /// shares); an allocation adds a block only while the filesystem has room.
    Reserved,
}

/// Blocks a `Growth::Reserved` file wants reserved, by purpose (see
/// [`BlockTable::growth_wanted`]), in the order they are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrowthWanted {
    /// Blocks in use that were added on demand, not yet reserved.
    pub unreserved: u64,
    /// To bring the free blocks back up to the headroom: taken from any free space left.
    pub headroom: u64,
    /// To keep [`GROW_AHEAD_BLOCKS`] ahead of client writes: only within the room
    /// [`client_room_blocks`] grants clients.
    pub ahead: u64,
}

/// Blocks one of `shards` shards sharing a filesystem with `fs_free_bytes` free may still add
/// for client writes: its share of the free space, less the headroom every shard must still
/// be able to reserve. So client writes stop while the filesystem keeps about
/// `shards × HEADROOM_BLOCKS` blocks free, before it is full.
pub fn client_room_blocks(fs_free_bytes: u64, shards: u32, block_bytes: u64) -> u64 {
    assert!(block_bytes > 0);
    (fs_free_bytes / u64::from(shards.max(1)) / block_bytes).saturating_sub(HEADROOM_BLOCKS)
}

/// What a block is used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockUse {
    /// Holds nothing of value; its header on disk is zero (or it was never written).
    Free,
    /// The block records are being appended to.
    Open,
    /// Full (or recovered): read-only until defragmentation empties it.
    Sealed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    pub sequence: u64,
    pub live_bytes: u64,
    pub state: BlockUse,
}

/// Every block of one data file, by index (block `i` starts at `first_offset + i × block_bytes`).
#[derive(Debug)]
pub struct BlockTable {
    blocks: Vec<BlockInfo>,
    free: BTreeSet<u32>,
    block_bytes: u64,
    first_offset: u64,
    /// The file never grows past this many blocks (`None`: no limit but the index's).
    capacity_blocks: Option<u32>,
    growth: Growth,
    /// `Growth::Reserved`: blocks the filesystem still has room for client writes, at the
    /// last look ([`client_room_blocks`]).
    fs_room_blocks: u64,
    /// `Growth::Reserved`: blocks `0..reserved_blocks` are backed by reserved space; those
    /// after were added on demand.
    reserved_blocks: u64,
    /// `Growth::Reserved`: a client write took a block, so the file grows ahead of them.
    clients_writing: bool,
    live_total: u64,
}

impl BlockTable {
    pub fn new(
        first_offset: u64,
        block_bytes: u64,
        capacity_blocks: Option<u32>,
        growth: Growth,
    ) -> BlockTable {
        BlockTable {
            blocks: Vec::new(),
            free: BTreeSet::new(),
            block_bytes,
            first_offset,
            capacity_blocks,
            growth,
            fs_room_blocks: 0,
            reserved_blocks: 0,
            clients_writing: false,
            live_total: 0,
        }
    }

    /// Live bytes over all blocks.
    pub fn live_total(&self) -> u64 {
        self.live_total
    }

    /// Blocks the table may still add, by the capacity and what the index addresses.
    pub fn capacity_left_blocks(&self) -> u64 {
        // The index addresses offsets up to OFFSET_MAX: never grow past it.
        let addressable = (crate::index::OFFSET_MAX + 1 - self.first_offset) / self.block_bytes;
        let cap = self
            .capacity_blocks
            .map_or(addressable, |c| u64::from(c).min(addressable));
        cap.saturating_sub(self.blocks.len() as u64)
    }

    /// Blocks the file may still grow by for client writes: up to the capacity, and in a
    /// `Growth::Reserved` file also within the filesystem's room.
    pub fn growth_room(&self) -> u64 {
        match self.growth {
            Growth::OnDemand => self.capacity_left_blocks(),
            Growth::Reserved => self.capacity_left_blocks().min(self.fs_room_blocks),
        }
    }

    /// Blocks the file may still use for client writes: free ones plus those it may still
    /// grow by.
    pub fn available_blocks(&self) -> u64 {
        self.free.len() as u64 + self.growth_room()
    }

    /// The blocks the file can hold now, for stop-writes and eviction (`None`: no limit): the
    /// configured capacity, or for a `Growth::Reserved` file what it holds plus what the
    /// filesystem still has room for, if that is less.
    pub fn capacity_blocks(&self) -> Option<u32> {
        match self.growth {
            Growth::OnDemand => self.capacity_blocks,
            Growth::Reserved => {
                let now = self.blocks.len() as u64 + self.growth_room();
                Some(u32::try_from(now).unwrap_or(u32::MAX))
            }
        }
    }

    /// Records a new reading of the room the filesystem has for client writes.
    pub fn set_fs_room(&mut self, blocks: u64) {
        self.fs_room_blocks = blocks;
    }

    /// What a `Growth::Reserved` file should reserve now (nothing for `Growth::OnDemand`): the
    /// blocks added on demand, free blocks up to the headroom, and once clients write, up to
    /// [`GROW_AHEAD_BLOCKS`] more once half of those are used; within the
    /// capacity. The `ahead` part is granted only within [`BlockTable::growth_room`] by the
    /// caller, which reads the filesystem's free space first.
    pub fn growth_wanted(&self) -> GrowthWanted {
        if self.growth == Growth::OnDemand {
            return GrowthWanted::default();
        }
        let free = self.free.len() as u64;
        let left = self.capacity_left_blocks();
        let unreserved = self.blocks.len() as u64 - self.reserved_blocks;
        let headroom = HEADROOM_BLOCKS.saturating_sub(free).min(left);
        let ahead = if self.clients_writing && free <= HEADROOM_BLOCKS + GROW_AHEAD_BLOCKS / 2 {
            (HEADROOM_BLOCKS + GROW_AHEAD_BLOCKS).saturating_sub(free + headroom)
        } else {
            0
        };
        GrowthWanted {
            unreserved,
            headroom,
            ahead: ahead.min(left - headroom),
        }
    }

    /// Records that the store reserved the space of `n` more blocks of a `Growth::Reserved`
    /// file, in file order: first the blocks added on demand, then new free blocks at the end.
    pub fn reserved(&mut self, n: u64) {
        assert_eq!(
            self.growth,
            Growth::Reserved,
            "only a reserved file is reserved"
        );
        let existing = n.min(self.blocks.len() as u64 - self.reserved_blocks);
        let added = n - existing;
        assert!(
            added <= self.capacity_left_blocks(),
            "growth past the capacity"
        );
        for _ in 0..added {
            self.free.insert(self.blocks.len() as u32);
            self.blocks.push(BlockInfo {
                sequence: 0,
                live_bytes: 0,
                state: BlockUse::Free,
            });
        }
        self.reserved_blocks += n;
        self.fs_room_blocks = self.fs_room_blocks.saturating_sub(added);
    }

    /// Bytes of the file up to the end of its reserved blocks: where the next reservation
    /// starts.
    pub fn reserved_end(&self) -> u64 {
        self.first_offset + self.reserved_blocks * self.block_bytes
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn info(&self, idx: u32) -> BlockInfo {
        self.blocks[idx as usize]
    }

    pub fn base_of(&self, idx: u32) -> u64 {
        self.first_offset + u64::from(idx) * self.block_bytes
    }

    pub fn block_of(&self, offset: u64) -> u32 {
        assert!(
            offset >= self.first_offset,
            "offset {offset} is inside the file header"
        );
        u32::try_from((offset - self.first_offset) / self.block_bytes)
            .expect("block index fits u32")
    }

    /// Records what recovery found in block `idx` (growing the table as needed).
    pub fn set_recovered(&mut self, idx: u32, info: BlockInfo) {
        let i = idx as usize;
        while self.blocks.len() <= i {
            self.free.insert(self.blocks.len() as u32);
            self.blocks.push(BlockInfo {
                sequence: 0,
                live_bytes: 0,
                state: BlockUse::Free,
            });
        }
        self.blocks[i] = info;
        // What recovery found lies within the file: its space is held.
        self.reserved_blocks = self.reserved_blocks.max(self.blocks.len() as u64);
        if info.state == BlockUse::Free {
            self.free.insert(idx);
        } else {
            self.free.remove(&idx);
        }
    }

    pub fn add_live(&mut self, offset: u64, bytes: u32) {
        let idx = self.block_of(offset);
        let b = &mut self.blocks[idx as usize];
        assert!(
            b.state != BlockUse::Free,
            "live bytes added to free block {idx}"
        );
        b.live_bytes += u64::from(bytes);
        assert!(b.live_bytes <= self.block_bytes, "block {idx} over-full");
        self.live_total += u64::from(bytes);
    }

    pub fn remove_live(&mut self, offset: u64, bytes: u32) {
        let idx = self.block_of(offset);
        let b = &mut self.blocks[idx as usize];
        b.live_bytes = b
            .live_bytes
            .checked_sub(u64::from(bytes))
            .unwrap_or_else(|| panic!("block {idx} live bytes would go negative"));
        self.live_total -= u64::from(bytes);
    }

    /// Whether `claim` may take a free block now: a client leaves [`HEADROOM_BLOCKS`] free, a
    /// delete [`DEFRAG_RESERVE_BLOCKS`], defragmentation and recovery may take the last. In a
    /// `Growth::OnDemand` table the blocks it may still add count as free.
    fn may_take_free(&self, claim: Claim) -> bool {
        let on_demand = match self.growth {
            Growth::OnDemand => self.capacity_left_blocks(),
            Growth::Reserved => 0,
        };
        self.free.len() as u64 + on_demand > self.free_floor(claim)
    }

    /// The free blocks `claim` must leave.
    fn free_floor(&self, claim: Claim) -> u64 {
        match claim {
            Claim::Client => HEADROOM_BLOCKS,
            Claim::Delete => DEFRAG_RESERVE_BLOCKS,
            Claim::Defrag | Claim::Open => 0,
        }
    }

    /// Whether `claim` may take a block now: a free one (see `may_take_free`), or in a
    /// `Growth::Reserved` file a new one while the filesystem has room (recovery even without).
    pub fn may_allocate(&self, claim: Claim) -> bool {
        self.may_take_free(claim)
            || (self.growth == Growth::Reserved
                && self.capacity_left_blocks() > 0
                && (self.fs_room_blocks > 0 || claim == Claim::Open))
    }

    /// Takes the lowest free block, or adds one at the end (see [`BlockTable::may_allocate`]),
    /// and opens it with `sequence`; `None` when `claim` may not.
    pub fn allocate(&mut self, sequence: u64, claim: Claim) -> Option<u32> {
        if !self.may_allocate(claim) {
            return None;
        }
        if claim == Claim::Client {
            self.clients_writing = true;
        }
        let idx = match self.free.pop_first() {
            Some(i)
                if self.growth == Growth::OnDemand
                    || self.free.len() as u64 >= self.free_floor(claim) =>
            {
                i
            }
            taken => {
                // No free block this claim may take: a new one at the end, which a reserved
                // file's next growth reserves (an on-demand table has none free here).
                if let Some(i) = taken {
                    self.free.insert(i);
                }
                if self.growth == Growth::Reserved {
                    self.fs_room_blocks = self.fs_room_blocks.saturating_sub(1);
                }
                self.blocks.push(BlockInfo {
                    sequence: 0,
                    live_bytes: 0,
                    state: BlockUse::Free,
                });
                (self.blocks.len() - 1) as u32
            }
        };
        let b = &mut self.blocks[idx as usize];
        assert!(b.state == BlockUse::Free && b.live_bytes == 0);
        *b = BlockInfo {
            sequence,
            live_bytes: 0,
            state: BlockUse::Open,
        };
        Some(idx)
    }

    pub fn seal(&mut self, idx: u32) {
        let b = &mut self.blocks[idx as usize];
        assert_eq!(b.state, BlockUse::Open, "only the open block is sealed");
        b.state = BlockUse::Sealed;
    }

    /// Marks an emptied block free (its header on disk must already be zero).
    pub fn release(&mut self, idx: u32) {
        let b = &mut self.blocks[idx as usize];
        assert_eq!(b.live_bytes, 0, "block {idx} still holds live bytes");
        assert_eq!(b.state, BlockUse::Sealed, "only sealed blocks are released");
        b.state = BlockUse::Free;
        self.free.insert(idx);
    }

    /// The sealed block with the smallest share of live bytes below `lwm_pct`, skipping the
    /// blocks `skip` says are still in memory.
    pub fn defrag_candidate(&self, lwm_pct: u64, skip: impl Fn(u32) -> bool) -> Option<u32> {
        let limit = self.block_bytes * lwm_pct / 100;
        self.blocks
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                b.state == BlockUse::Sealed && b.live_bytes < limit && !skip(*i as u32)
            })
            .min_by_key(|(_, b)| b.live_bytes)
            .map(|(i, _)| i as u32)
    }

    /// Whether every block other than `idx` that holds data was written after `idx` — then no
    /// older version of any record in `idx` survives elsewhere, and its tombstones may go.
    pub fn is_oldest_in_use(&self, idx: u32) -> bool {
        let seq = self.blocks[idx as usize].sequence;
        self.blocks
            .iter()
            .enumerate()
            .filter(|(i, b)| *i as u32 != idx && b.state != BlockUse::Free)
            .all(|(_, b)| b.sequence > seq)
    }

    /// Bytes of the file the blocks span (the file never shrinks; free blocks are reused).
    pub fn span_bytes(&self) -> u64 {
        self.first_offset + self.blocks.len() as u64 * self.block_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_reuses_freed_blocks_and_defrag_picks_the_emptiest() {
        let mut t = BlockTable::new(4096, 1000, None, Growth::OnDemand);
        let a = t.allocate(1, Claim::Defrag).unwrap();
        t.add_live(4096 + 10, 400);
        t.seal(a);
        let b = t.allocate(2, Claim::Defrag).unwrap();
        t.add_live(t.base_of(b), 100);
        t.seal(b);
        let c = t.allocate(3, Claim::Defrag).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(t.defrag_candidate(50, |_| false), Some(b));
        assert_eq!(t.defrag_candidate(50, |i| i == b), Some(a));
        assert_eq!(t.defrag_candidate(10, |_| false), None);
        assert!(t.is_oldest_in_use(a));
        assert!(!t.is_oldest_in_use(b));
        t.remove_live(t.base_of(b), 100);
        t.release(b);
        assert!(t.is_oldest_in_use(a));
        assert_eq!(
            t.allocate(4, Claim::Defrag),
            Some(b),
            "freed block reused before the file grows"
        );
        assert_eq!(t.span_bytes(), 4096 + 3000);
    }

    #[test]
    #[should_panic(expected = "still holds live bytes")]
    fn a_block_with_live_bytes_is_never_released() {
        let mut t = BlockTable::new(0, 1000, None, Growth::OnDemand);
        let a = t.allocate(1, Claim::Defrag).unwrap();
        t.add_live(5, 1);
        t.seal(a);
        t.release(a);
    }

    #[test]
    fn recovered_blocks_fill_gaps_as_free() {
        let mut t = BlockTable::new(0, 1000, None, Growth::OnDemand);
        t.set_recovered(
            3,
            BlockInfo {
                sequence: 9,
                live_bytes: 10,
                state: BlockUse::Sealed,
            },
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.free_count(), 3);
        assert_eq!(t.allocate(10, Claim::Defrag), Some(0));
    }

    #[test]
    fn capacity_stops_growth_but_not_reuse() {
        let mut t = BlockTable::new(0, 1000, Some(2), Growth::OnDemand);
        let a = t.allocate(1, Claim::Defrag).unwrap();
        t.add_live(0, 300);
        t.seal(a);
        let b = t.allocate(2, Claim::Defrag).unwrap();
        assert_eq!(t.available_blocks(), 0);
        assert_eq!(
            t.allocate(3, Claim::Defrag),
            None,
            "the file is at capacity"
        );
        assert_eq!(t.live_total(), 300);
        t.remove_live(0, 300);
        t.release(a);
        assert_eq!(t.available_blocks(), 1);
        assert_eq!(t.allocate(3, Claim::Defrag), Some(a));
        let _ = b;
    }

    #[test]
    fn clients_leave_the_headroom_to_deletes_and_defrag() {
        // Six blocks and nothing to grow into: clients stop with HEADROOM_BLOCKS free, deletes
        // with DEFRAG_RESERVE_BLOCKS, defragmentation takes the last.
        let mut t = BlockTable::new(0, 1000, Some(6), Growth::OnDemand);
        let mut seq = 0;
        let mut take = |t: &mut BlockTable, claim| {
            seq += 1;
            t.allocate(seq, claim)
        };
        while take(&mut t, Claim::Client).is_some() {}
        assert_eq!(t.available_blocks(), HEADROOM_BLOCKS);
        while take(&mut t, Claim::Delete).is_some() {}
        assert_eq!(t.available_blocks(), DEFRAG_RESERVE_BLOCKS);
        assert!(take(&mut t, Claim::Defrag).is_some());
        assert_eq!(t.available_blocks(), 0);
        assert!(!t.may_allocate(Claim::Defrag), "nothing left at all");
    }

    #[test]
    fn a_reserved_file_keeps_its_headroom_reserved_and_grows_ahead_of_clients() {
        let mut t = BlockTable::new(0, 1000, Some(100), Growth::Reserved);
        let want = |headroom, unreserved, ahead| GrowthWanted {
            unreserved,
            headroom,
            ahead,
        };
        // Empty: only the headroom is wanted, whatever room the filesystem has.
        assert_eq!(t.growth_wanted(), want(HEADROOM_BLOCKS, 0, 0));
        assert!(!t.may_allocate(Claim::Defrag), "nothing reserved, no room");
        t.reserved(HEADROOM_BLOCKS);
        assert_eq!(t.len() as u64, HEADROOM_BLOCKS);
        assert_eq!(t.reserved_end(), HEADROOM_BLOCKS * 1000);
        // No room on the filesystem: a client may not take the headroom, a delete may.
        assert_eq!(t.allocate(1, Claim::Client), None);
        assert_eq!(t.capacity_blocks(), Some(HEADROOM_BLOCKS as u32));
        assert_eq!(t.allocate(2, Claim::Delete), Some(0));
        assert_eq!(t.growth_wanted(), want(1, 0, 0));
        t.reserved(1);
        // With room, a client takes a new block at the end instead of the headroom; the next
        // growth reserves it, and from then on also reserves blocks ahead of client writes.
        t.set_fs_room(10);
        assert_eq!(t.allocate(3, Claim::Client), Some(3));
        assert_eq!(t.free_count() as u64, HEADROOM_BLOCKS);
        assert_eq!(t.growth_room(), 9, "the new block used up room");
        assert_eq!(t.growth_wanted(), want(0, 1, GROW_AHEAD_BLOCKS));
        assert_eq!(t.capacity_blocks(), Some(4 + 9));
        t.reserved(1 + GROW_AHEAD_BLOCKS);
        assert_eq!(t.free_count() as u64, HEADROOM_BLOCKS + GROW_AHEAD_BLOCKS);
        assert_eq!(t.growth_wanted(), GrowthWanted::default());
        // Clients now take reserved blocks; the file grows again once half of those ahead
        // are used.
        for seq in 4..4 + GROW_AHEAD_BLOCKS / 2 {
            assert!(t.allocate(seq, Claim::Client).is_some());
            assert_eq!(t.len() as u64, 4 + GROW_AHEAD_BLOCKS, "no block added");
        }
        assert_eq!(t.growth_wanted(), want(0, 0, GROW_AHEAD_BLOCKS / 2));
        // The capacity bounds what is wanted, and recovery opens a block even without room.
        let mut small = BlockTable::new(0, 1000, Some(1), Growth::Reserved);
        assert_eq!(small.growth_wanted(), want(1, 0, 0));
        assert_eq!(small.allocate(1, Claim::Open), Some(0));
        assert_eq!(small.growth_wanted(), want(0, 1, 0));
        assert!(!small.may_allocate(Claim::Open), "at capacity");
    }

    #[test]
    fn client_room_keeps_every_shards_headroom_free_on_the_filesystem() {
        // 64 blocks free over 2 shards: 32 each, less the headroom.
        assert_eq!(client_room_blocks(64_000, 2, 1000), 32 - HEADROOM_BLOCKS);
        assert_eq!(client_room_blocks(3_999, 2, 1000), 0);
        assert_eq!(client_room_blocks(0, 0, 1000), 0);
    }
}
