//! Write blocks: the unit in which records reach the device (Aerospike's `write-block-size`).
//!
//! A block is a 64-byte header (magic, checksum, sequence, shard, size) followed by records
//! packed back to back; the unwritten tail is zero. This module owns that layout and the
//! in-memory buffer records are appended to. It must never do I/O.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

/// "APBK": marks a written block.
pub const BLOCK_MAGIC: u32 = 0x4150_424B;
/// Bytes reserved at the start of every block for its header.
pub const BLOCK_HEADER_BYTES: usize = 64;
/// Smallest and largest allowed `write-block-size` (Aerospike's range).
pub const BLOCK_SIZE_BYTES_MIN: usize = 128 * 1024;
pub const BLOCK_SIZE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Device writes are aligned to this many bytes (O_DIRECT).
pub const IO_ALIGN_BYTES: usize = 4096;

/// One page of a block's buffer, aligned as O_DIRECT needs: a sealed block goes to the device
/// straight from the buffer it was filled in, with no copy.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
pub struct Page(pub [u8; IO_ALIGN_BYTES]);

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // 4 KiB of bytes would drown any log line.
        f.write_str("Page")
    }
}

/// Whole pages handed to the device writer, shared with the block that may still serve reads
/// from them (immutable once shared).
pub type SharedPages = Arc<Box<[Page]>>;

/// The bytes of a run of pages.
pub fn page_bytes(pages: &[Page]) -> &[u8] {
    bytemuck::cast_slice(pages)
}

fn page_bytes_mut(pages: &mut [Page]) -> &mut [u8] {
    bytemuck::cast_slice_mut(pages)
}

/// Bytes of a cache line.
const LINE: usize = 64;

/// `dst.copy_from_slice(src)`, with the cache lines wholly inside `dst` written by streaming
/// (non-temporal) stores: they go to memory without first reading the line or evicting
/// another. Lines `dst` shares with its neighbours get ordinary stores, so no line is ever
/// written both ways. The caller must fence ([`StreamedStores`]) before the bytes are next
/// accessed.
fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let addr = dst.as_ptr() as usize;
        let head = (addr.next_multiple_of(LINE) - addr).min(dst.len());
        let body = (dst.len() - head) / LINE * LINE;
        dst[..head].copy_from_slice(&src[..head]);
        let mut i = head;
        while i < head + body {
            // SAFETY: i + 16 <= head + body <= len for both slices; dst + i is 16-byte aligned
            // (a multiple of LINE past an aligned address); SSE2 is in x86_64's baseline.
            unsafe {
                let v = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                _mm_stream_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), v);
            }
            i += 16;
        }
        dst[head + body..].copy_from_slice(&src[head + body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Whether streaming stores into a block's buffer may still be in flight. They are ordered
/// before any later access (a read of the block, a seal, a device write, the buffer's reuse
/// or release) by one fence, not one per record: a fence per record cost ~5 % of a write.
#[derive(Debug, Default)]
struct StreamedStores(std::cell::Cell<bool>);

impl StreamedStores {
    fn note(&self) {
        self.0.set(true);
    }

    fn fence(&self) {
        if self.0.replace(false) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: sfence has no preconditions (SSE, part of x86_64's baseline).
            unsafe {
                std::arch::x86_64::_mm_sfence()
            };
        }
    }
}

impl Drop for StreamedStores {
    /// Declared before the buffer in [`WriteBlock`], so this runs before the buffer is freed.
    fn drop(&mut self) {
        self.fence();
    }
}

/// Pages of a block a flush must write.
pub struct PendingWrite {
    /// File offset of the first page written.
    pub offset: u64,
    pub pages: SharedPages,
    /// Which of `pages` to write.
    pub range: std::ops::Range<usize>,
    /// The block's `used` these pages cover, for [`WriteBlock::mark_durable`].
    pub used: usize,
}

impl PendingWrite {
    pub fn bytes(&self) -> &[u8] {
        page_bytes(&self.pages[self.range.clone()])
    }
}

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
    /// Streaming stores into `buf` not yet fenced. Before `buf`: fields drop in order.
    streamed: StreamedStores,
    /// Shared with a device write only once sealed; while open, this block is its only owner.
    buf: SharedPages,
    used: usize,
    /// Bytes from the block's start that are on the device.
    durable: usize,
    /// No more records will be appended (the next record did not fit).
    pub sealed: bool,
    /// Its write-behind is under way (the store's bookkeeping: a flush waits for it).
    pub writing: bool,
}

/// Zero bytes always written after the last record, so a walk of the block stops there even
/// when the block is a reused one whose older bytes lie further on.
pub const TERMINATOR_BYTES: usize = 8;

impl WriteBlock {
    pub fn new(base: u64, header: BlockHeader) -> WriteBlock {
        WriteBlock::reusing(base, header, None)
    }

    /// A block filled in `spare`, the buffer of a block already retired (see
    /// [`WriteBlock::into_buffer`]), when it has the right size: a fresh 1 MiB buffer is a new
    /// mapping whose page faults and zeroing cost a fifth of a write-heavy core's time. Its
    /// bytes are left as they are; `seal` and `pending_write` zero what goes to the device
    /// past the last record.
    pub fn reusing(base: u64, header: BlockHeader, spare: Option<Box<[Page]>>) -> WriteBlock {
        let size = header.block_bytes as usize;
        assert!(size >= BLOCK_HEADER_BYTES * 2 && size.is_multiple_of(IO_ALIGN_BYTES));
        assert!(
            base.is_multiple_of(IO_ALIGN_BYTES as u64),
            "block base must be aligned"
        );
        let pages = size / IO_ALIGN_BYTES;
        let mut buf = match spare {
            Some(b) if b.len() == pages => b,
            _ => bytemuck::zeroed_slice_box(pages),
        };
        buf[0].0[..BLOCK_HEADER_BYTES].copy_from_slice(&header.encode());
        WriteBlock {
            base,
            sequence: header.sequence,
            streamed: StreamedStores::default(),
            buf: Arc::new(buf),
            used: BLOCK_HEADER_BYTES,
            durable: 0,
            sealed: false,
            writing: false,
        }
    }

    /// Bytes of the block's buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.buf.len() * IO_ALIGN_BYTES
    }

    /// The block's buffer, for [`WriteBlock::reusing`], unless a write still holds it.
    pub fn into_buffer(self) -> Option<Box<[Page]>> {
        self.streamed.fence();
        Arc::try_unwrap(self.buf).ok()
    }

    /// Ends appends. The bytes after the last record up to the end of its page (the zero
    /// terminator included) are zeroed now: the buffer may be a reused one, and a sealed
    /// block's pages go to the device as they are.
    pub fn seal(&mut self) {
        let (used, end) = (self.used, self.written_end());
        self.bytes_mut()[used..end].fill(0);
        self.sealed = true;
    }

    /// Where the pages a flush writes end: the page holding the zero terminator.
    fn written_end(&self) -> usize {
        let end = (self.used + TERMINATOR_BYTES).min(self.buffer_bytes());
        end.div_ceil(IO_ALIGN_BYTES) * IO_ALIGN_BYTES
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

    fn bytes(&self) -> &[u8] {
        self.streamed.fence();
        page_bytes(&self.buf)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.streamed.fence();
        self.bytes_mut_unfenced()
    }

    /// The buffer for more streamed stores: no fence, since stores need none between them.
    fn bytes_mut_unfenced(&mut self) -> &mut [u8] {
        page_bytes_mut(Arc::get_mut(&mut self.buf).expect("an open block's buffer is never shared"))
    }

    pub fn fits(&self, n: usize) -> bool {
        !self.sealed && self.used + n <= self.buffer_bytes()
    }

    /// Appends bytes as [`WriteBlock::append`] does, but writes the whole cache lines they
    /// cover with streaming stores: for bytes this core will not read again soon.
    pub fn append_streaming(&mut self, bytes: &[u8]) -> u64 {
        assert!(self.fits(bytes.len()), "append past the end of a block");
        let at = self.used;
        copy_streaming(&mut self.bytes_mut_unfenced()[at..at + bytes.len()], bytes);
        self.streamed.note();
        self.used += bytes.len();
        self.base + at as u64
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
        fill(&mut self.bytes_mut()[at..at + n]);
        self.used += n;
        self.base + at as u64
    }

    /// The bytes at file offset `offset`, if they lie in this block's written part.
    pub fn slice_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = offset.checked_sub(self.base)? as usize;
        (start + len <= self.used).then(|| &self.bytes()[start..start + len])
    }

    /// Whether every appended byte is on the device.
    pub fn is_durable(&self) -> bool {
        self.durable >= self.used
    }

    /// What a flush must write for this block, or `None` when every appended byte is on the
    /// device: the pages holding every unwritten byte plus a zero terminator. A sealed block
    /// shares its buffer (no copy); an open one copies those pages, so appends go on while the
    /// copy is written.
    pub fn pending_write(&self) -> Option<PendingWrite> {
        if self.is_durable() {
            return None;
        }
        let first = self.durable / IO_ALIGN_BYTES;
        let last = self.written_end() / IO_ALIGN_BYTES;
        self.streamed.fence();
        let (pages, range) = if self.sealed {
            (Arc::clone(&self.buf), first..last)
        } else {
            let mut copy: Box<[Page]> = self.buf[first..last].into();
            let tail = self.used - first * IO_ALIGN_BYTES;
            page_bytes_mut(&mut copy)[tail..].fill(0);
            (Arc::new(copy), 0..last - first)
        };
        Some(PendingWrite {
            offset: self.base + (first * IO_ALIGN_BYTES) as u64,
            pages,
            range,
            used: self.used,
        })
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
    fn pending_writes_cover_new_bytes_aligned() {
        let base = 4096 * 10;
        let mut w = WriteBlock::new(base, header());
        let p = w.pending_write().unwrap();
        assert_eq!(
            (p.offset, p.bytes().len()),
            (base, 4096),
            "header page is dirty at first"
        );
        let at = w.append(&[7; 5000]);
        assert_eq!(at, base + 64);
        w.mark_durable(4096 + 100);
        let p = w.pending_write().unwrap();
        assert_eq!(p.offset, base + 4096);
        assert_eq!(p.bytes().len(), 4096);
        assert_eq!(p.used, 5064);
        w.mark_durable(p.used);
        assert!(w.pending_write().is_none());
        assert_eq!(w.slice_at(at, 5000).unwrap(), &[7; 5000][..]);
        assert!(w.slice_at(at, 5001).is_none());
        assert!(!w.fits(BLOCK_SIZE_BYTES_MIN));
        // A record ending exactly on a page boundary still gets its zero terminator written.
        w.append(&vec![7; 8192 - 5064]);
        let p = w.pending_write().unwrap();
        assert_eq!(
            p.bytes().len(),
            8192,
            "the page after the boundary carries the terminator"
        );
        assert!(p.bytes()[4096..].iter().all(|&b| b == 0));
        // Appends after an open block handed out its copy do not change what is written; a
        // sealed block shares its own buffer.
        w.append(&[9; 10]);
        assert!(p.bytes().iter().all(|&b| b != 9));
        w.seal();
        let sealed = w.pending_write().unwrap();
        assert_eq!((sealed.offset, sealed.used), (base + 4096, 8202));
        assert_eq!(sealed.range, 1..3);
        assert_eq!(
            sealed.pages.len(),
            BLOCK_SIZE_BYTES_MIN / 4096,
            "the whole buffer, shared"
        );
        assert_eq!(&sealed.bytes()[4096..4106], &[9; 10]);
        assert!(sealed.bytes()[4106..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_reused_buffer_never_leaks_old_bytes_to_the_device() {
        let mut old = WriteBlock::new(0, header());
        old.append(&vec![0xEE; 20_000]);
        old.seal();
        let spare = old.into_buffer().expect("no write holds it");
        let mut w = WriteBlock::reusing(4096, header(), Some(spare));
        assert_eq!(w.slice_at(4096 + 64, 1), None, "nothing appended yet");
        w.append(&[1; 100]);
        // An open block's copy and a sealed block's pages are zero past the last record.
        let p = w.pending_write().unwrap();
        assert_eq!(&p.bytes()[64..164], &[1; 100]);
        assert!(p.bytes()[164..].iter().all(|&b| b == 0));
        w.seal();
        let p = w.pending_write().unwrap();
        assert!(p.bytes()[164..].iter().all(|&b| b == 0));
        assert_eq!(p.bytes().len(), 4096);
        // A buffer of another block size is not reused.
        let small = WriteBlock::new(0, header()).into_buffer().unwrap();
        let big = BlockHeader {
            block_bytes: BLOCK_SIZE_BYTES_MIN as u32 * 2,
            ..header()
        };
        let w = WriteBlock::reusing(0, big, Some(small));
        assert!(w.fits(BLOCK_SIZE_BYTES_MIN));
    }

    /// Streamed appends leave exactly the bytes plain appends do, in a fresh buffer and in a
    /// reused one full of old bytes, whatever each record's alignment and length (lines it
    /// shares with its neighbours, lines wholly inside it, records inside one line).
    #[test]
    fn streamed_appends_match_plain_appends() {
        let dirty = || {
            let mut old = WriteBlock::new(0, header());
            old.append(&vec![0xEE; BLOCK_SIZE_BYTES_MIN - BLOCK_HEADER_BYTES]);
            old.seal();
            old.into_buffer()
        };
        for spare in [None, dirty()] {
            let mut plain = WriteBlock::new(0, header());
            let mut streamed = WriteBlock::reusing(0, header(), spare);
            let mut n = 1;
            for round in 0.. {
                // 1, 2, 4 … 4096 bytes, then lengths that shift every later record's offset.
                n = if n < 4096 {
                    n * 2
                } else {
                    1 + round * 37 % 3000
                };
                let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + round) as u8 | 1).collect();
                if !plain.fits(n) {
                    break;
                }
                let at = plain.append(&bytes);
                assert_eq!(streamed.append_streaming(&bytes), at);
                assert_eq!(
                    streamed.slice_at(at, n),
                    Some(&bytes[..]),
                    "{n} bytes at {at}"
                );
            }
            let open = (
                plain.pending_write().unwrap(),
                streamed.pending_write().unwrap(),
            );
            assert!(open.0.bytes() == open.1.bytes(), "an open block's copy");
            plain.seal();
            streamed.seal();
            let sealed = (
                plain.pending_write().unwrap(),
                streamed.pending_write().unwrap(),
            );
            assert!(
                sealed.0.bytes() == sealed.1.bytes(),
                "a sealed block's pages"
            );
        }
    }
}
