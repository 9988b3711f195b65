//! Space management of one shard's data file: which blocks are free, open or sealed, their
//! sequence numbers, and how many of their bytes are still live — the facts defragmentation
//! and block reuse decide on. Plain bookkeeping: no I/O.
//!
//! Invariants: a block's live bytes never go negative and never exceed its size; only a block
//! with no live bytes is freed; a free block is reused before the file grows.

use std::collections::BTreeSet;

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
    /// The file never grows past this many blocks (`None`: no limit).
    capacity_blocks: Option<u32>,
    live_total: u64,
}

impl BlockTable {
    pub fn new(first_offset: u64, block_bytes: u64, capacity_blocks: Option<u32>) -> BlockTable {
        BlockTable {
            blocks: Vec::new(),
            free: BTreeSet::new(),
            block_bytes,
            first_offset,
            capacity_blocks,
            live_total: 0,
        }
    }

    /// Live bytes over all blocks.
    pub fn live_total(&self) -> u64 {
        self.live_total
    }

    /// Blocks the file may still use: free ones plus those it may still grow by.
    pub fn available_blocks(&self) -> u64 {
        let growth = self.capacity_blocks.map_or(u64::MAX / 2, |c| {
            u64::from(c).saturating_sub(self.blocks.len() as u64)
        });
        self.free.len() as u64 + growth
    }

    pub fn capacity_blocks(&self) -> Option<u32> {
        self.capacity_blocks
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

    /// Takes the lowest free block (or grows the file by one) and opens it with `sequence`;
    /// `None` when the file is at its capacity and no block is free.
    pub fn allocate(&mut self, sequence: u64) -> Option<u32> {
        let idx = match self.free.pop_first() {
            Some(i) => i,
            None => {
                // The index addresses offsets up to OFFSET_MAX: never grow past it.
                let addressable =
                    (crate::index::OFFSET_MAX + 1 - self.first_offset) / self.block_bytes;
                if self
                    .capacity_blocks
                    .is_some_and(|c| self.blocks.len() as u64 >= u64::from(c))
                    || self.blocks.len() as u64 >= addressable
                {
                    return None;
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
        let mut t = BlockTable::new(4096, 1000, None);
        let a = t.allocate(1).unwrap();
        t.add_live(4096 + 10, 400);
        t.seal(a);
        let b = t.allocate(2).unwrap();
        t.add_live(t.base_of(b), 100);
        t.seal(b);
        let c = t.allocate(3).unwrap();
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
            t.allocate(4),
            Some(b),
            "freed block reused before the file grows"
        );
        assert_eq!(t.span_bytes(), 4096 + 3000);
    }

    #[test]
    #[should_panic(expected = "still holds live bytes")]
    fn a_block_with_live_bytes_is_never_released() {
        let mut t = BlockTable::new(0, 1000, None);
        let a = t.allocate(1).unwrap();
        t.add_live(5, 1);
        t.seal(a);
        t.release(a);
    }

    #[test]
    fn recovered_blocks_fill_gaps_as_free() {
        let mut t = BlockTable::new(0, 1000, None);
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
        assert_eq!(t.allocate(10), Some(0));
    }

    #[test]
    fn capacity_stops_growth_but_not_reuse() {
        let mut t = BlockTable::new(0, 1000, Some(2));
        let a = t.allocate(1).unwrap();
        t.add_live(0, 300);
        t.seal(a);
        let b = t.allocate(2).unwrap();
        assert_eq!(t.available_blocks(), 0);
        assert_eq!(t.allocate(3), None, "the file is at capacity");
        assert_eq!(t.live_total(), 300);
        t.remove_live(0, 300);
        t.release(a);
        assert_eq!(t.available_blocks(), 1);
        assert_eq!(t.allocate(3), Some(a));
        let _ = b;
    }
}
