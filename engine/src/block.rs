//! Write blocks: the unit in which records reach the device (Aerospike's `write-block-size`).
//!
//! A block is a 64-byte header (magic, checksum, sequence, shard, size) followed by records
//! packed back to back; the unwritten tail is zero. This module owns that layout and the
//! in-memory buffer records are appended to. It must never do I/O.

/// "APBK": marks a written block.
pub const BLOCK_MAGIC: u32 = 0x4150_424B;
/// Bytes reserved at the start of every block for its header.
pub const BLOCK_HEADER_BYTES: usize = 64;
/// Smallest and largest allowed `write-block-size` (Aerospike's range).
pub const BLOCK_SIZE_BYTES_MIN: usize = 128 * 1024;
pub const BLOCK_SIZE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Device writes are aligned to this many bytes (O_DIRECT).
pub const IO_ALIGN_BYTES: usize = 4096;

/// The decoded header of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub sequence: u64,
    pub shard: u32,
    pub block_bytes: u32,
}

/// What the first bytes of a block on disk say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Never written: all-zero header.
    Empty,
    Valid(BlockHeader),
    /// Non-zero but not a valid header: torn or corrupted.
    Corrupt,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_BYTES] {
        let mut b = [0u8; BLOCK_HEADER_BYTES];
        b[0..4].copy_from_slice(&BLOCK_MAGIC.to_be_bytes());
        b[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        b[16..20].copy_from_slice(&self.shard.to_be_bytes());
        b[20..24].copy_from_slice(&self.block_bytes.to_be_bytes());
        let crc = crc32fast::hash(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> BlockState {
        if bytes.len() < BLOCK_HEADER_BYTES {
            return BlockState::Corrupt;
        }
        let b = &bytes[..BLOCK_HEADER_BYTES];
        if b.iter().all(|&x| x == 0) {
            return BlockState::Empty;
        }
        let be32 = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        if be32(0) != BLOCK_MAGIC || be32(4) != crc32fast::hash(&b[8..]) {
            return BlockState::Corrupt;
        }
        BlockState::Valid(BlockHeader {
            sequence: u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
            shard: be32(16),
            block_bytes: be32(20),
        })
    }
}

/// A block being filled in memory, at a fixed offset of the data file.
#[derive(Debug)]
pub struct WriteBlock {
    /// File offset of the block's first byte.
    pub base: u64,
    pub sequence: u64,
    buf: Vec<u8>,
    used: usize,
    /// Bytes from the block's start that are on the device.
    durable: usize,
    /// No more records will be appended (the next record did not fit).
    pub sealed: bool,
}

/// Zero bytes always written after the last record, so a walk of the block stops there even
/// when the block is a reused one whose older bytes lie further on.
pub const TERMINATOR_BYTES: usize = 8;

impl WriteBlock {
    pub fn new(base: u64, header: BlockHeader) -> WriteBlock {
        let size = header.block_bytes as usize;
        assert!(size >= BLOCK_HEADER_BYTES * 2 && size.is_multiple_of(IO_ALIGN_BYTES));
        assert!(
            base.is_multiple_of(IO_ALIGN_BYTES as u64),
            "block base must be aligned"
        );
        let mut buf = vec![0u8; size];
        buf[..BLOCK_HEADER_BYTES].copy_from_slice(&header.encode());
        WriteBlock {
            base,
            sequence: header.sequence,
            buf,
            used: BLOCK_HEADER_BYTES,
            durable: 0,
            sealed: false,
        }
    }

    /// Largest record a block of `block_bytes` can hold.
    pub fn record_bytes_max(block_bytes: usize) -> usize {
        block_bytes - BLOCK_HEADER_BYTES
    }

    pub fn used(&self) -> usize {
        self.used
    }

    /// File offset just past the last appended byte.
    pub fn end(&self) -> u64 {
        self.base + self.used as u64
    }

    pub fn fits(&self, n: usize) -> bool {
        !self.sealed && self.used + n <= self.buf.len()
    }

    /// Appends encoded record bytes; returns their file offset. Caller checks `fits` first.
    pub fn append(&mut self, bytes: &[u8]) -> u64 {
        self.append_with(bytes.len(), |slot| slot.copy_from_slice(bytes))
    }

    /// Appends `n` bytes that `fill` writes in place (a record encoded straight into the
    /// block); returns their file offset. Caller checks `fits` first.
    pub fn append_with(&mut self, n: usize, fill: impl FnOnce(&mut [u8])) -> u64 {
        assert!(self.fits(n), "append past the end of a block");
        let at = self.used;
        fill(&mut self.buf[at..at + n]);
        self.used += n;
        self.base + at as u64
    }

    /// The bytes at file offset `offset`, if they lie in this block's written part.
    pub fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = offset.checked_sub(self.base)? as usize;
        (start + len <= self.used).then(|| &self.buf[start..start + len])
    }

    /// Whether every appended byte is on the device.
    pub fn is_durable(&self) -> bool {
        self.durable >= self.used
    }

    /// The aligned pages holding every byte not yet on the device, plus a zero terminator:
    /// (file offset, bytes, the `used` they cover). Pages past `used` are zero.
    pub fn dirty_pages(&self) -> Option<(u64, &[u8], usize)> {
        if self.is_durable() {
            return None;
        }
        let page_start = self.durable / IO_ALIGN_BYTES * IO_ALIGN_BYTES;
        let end = (self.used + TERMINATOR_BYTES).min(self.buf.len());
        let page_end = end.div_ceil(IO_ALIGN_BYTES) * IO_ALIGN_BYTES;
        Some((
            self.base + page_start as u64,
            &self.buf[page_start..page_end],
            self.used,
        ))
    }

    /// Records that the first `used` bytes reached the device.
    pub fn mark_durable(&mut self, used: usize) {
        assert!(used <= self.used);
        self.durable = self.durable.max(used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BlockHeader {
        BlockHeader {
            sequence: 9,
            shard: 1,
            block_bytes: BLOCK_SIZE_BYTES_MIN as u32,
        }
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let h = header();
        let b = h.encode();
        assert_eq!(BlockHeader::decode(&b), BlockState::Valid(h));
        assert_eq!(BlockHeader::decode(&[0; 64]), BlockState::Empty);
        let mut bad = b;
        bad[10] ^= 1;
        assert_eq!(BlockHeader::decode(&bad), BlockState::Corrupt);
    }

    #[test]
    fn dirty_pages_cover_new_bytes_aligned() {
        let base = 4096 * 10;
        let mut w = WriteBlock::new(base, header());
        let (off, pages, _) = w.dirty_pages().unwrap();
        assert_eq!(
            (off, pages.len()),
            (base, 4096),
            "header page is dirty at first"
        );
        let at = w.append(&[7; 5000]);
        assert_eq!(at, base + 64);
        w.mark_durable(4096 + 100);
        let (off, pages, used) = w.dirty_pages().unwrap();
        assert_eq!(off, base + 4096);
        assert_eq!(pages.len(), 4096);
        assert_eq!(used, 5064);
        w.mark_durable(used);
        assert!(w.dirty_pages().is_none());
        assert_eq!(w.slice_at(at, 5000).unwrap(), &[7; 5000][..]);
        assert!(w.slice_at(at, 5001).is_none());
        assert!(!w.fits(BLOCK_SIZE_BYTES_MIN));
        // A record ending exactly on a page boundary still gets its zero terminator written.
        w.append(&vec![7; 8192 - 5064]);
        let (_, pages, _) = w.dirty_pages().unwrap();
        assert_eq!(
            pages.len(),
            8192,
            "the page after the boundary carries the terminator"
        );
        assert!(pages[4096..].iter().all(|&b| b == 0));
    }
}
