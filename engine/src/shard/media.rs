//! Where a shard's blocks physically live: one data file of its own (the default layout,
//! `<dir>/shard-<n>.dat`), or one region of each of the namespace's configured files or raw
//! devices (Aerospike's `file` / `device`), each split into one region per core.
//!
//! Owns the mapping from the store's *virtual* offsets (block `i` spans
//! `FILE_HEADER_BYTES + i × block_bytes ..`, as if the shard had one file) to an extent and a
//! physical offset. Blocks are striped over the extents (block `i` lives in extent
//! `i % extents`), so consecutive blocks go to different devices. Every extent starts with a
//! [`FileHeader`] page naming its namespace, shard, core count, block size and region size;
//! a mismatch is refused, never reinterpreted. With `storage-engine memory` there are no
//! extents: the blocks live in RAM here, and every write, read and sync is a copy or nothing.
//! This module never decides what to write.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use std::cell::RefCell;

use glommio::io::{DmaFile, OpenOptions, ReadResult};

use crate::block::{PendingWrite, IO_ALIGN_BYTES};
use crate::error::StoreError;
use crate::file_header::{FileHeader, FILE_HEADER_BYTES, FORMAT_VERSION};
use crate::shard::read_ring::{ReadRing, RingBytes};
use crate::shard::store::{io_err, StoreConfig};

/// The blocks of a memory namespace's shard, by block index (`None`: never written or freed).
type RamBlocks = Vec<Option<Box<[u8]>>>;

/// One configured file or device region a shard owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentConfig {
    /// The file or block device.
    pub path: PathBuf,
    /// Byte offset of the region in it (a multiple of 1 MiB).
    pub start: u64,
    /// Bytes of the region (a multiple of 1 MiB, header page included).
    pub bytes: u64,
}

/// The opened extents of one shard.
pub struct Media {
    /// Record reads (`None` in memory). Declared before `extents`, so dropped first: it waits
    /// for its reads in flight while their files are still open.
    reader: Option<ReadRing>,
    extents: Vec<Extent>,
    /// `storage-engine memory`: block `i`'s bytes, once written (`None` in the device case).
    ram: Option<RefCell<RamBlocks>>,
    block_bytes: u64,
    /// Blocks each extent holds (`None`: the default layout's file, which grows as needed).
    blocks_per_extent: Option<u32>,
    /// The filesystem refused `fallocate` (EOPNOTSUPP): the file grows as blocks are written.
    reserve_unsupported: std::cell::Cell<bool>,
}

struct Extent {
    file: Rc<DmaFile>,
    /// The same file opened again (O_DIRECT) for block writes, which run on the executor's
    /// blocking thread (see [`Media::write`]).
    writer: Arc<std::fs::File>,
    path: String,
    start: u64,
}

const MIB: u64 = 1 << 20;

/// Creates the header page of an extent, or checks the one there. Done with std I/O before
/// glommio opens the file: glommio probes io-poll support by reading the file's first page,
/// and a hole there (an empty file, or shard 0's region not yet written) makes the probe
/// succeed without touching the device and wrongly enables polling for the whole device. So
/// a region other than the first also makes sure the first region's header exists (every
/// shard writes the same bytes there, so racing shards agree), and checks it: a changed core
/// count or file size is caught there even when this region's own page is still blank.
fn prepare(cfg: &StoreConfig, path: &Path, start: u64, region_mib: u32) -> Result<(), StoreError> {
    let exists = path.exists();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(!exists)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    if start > 0 {
        check_or_write(&mut f, cfg, path, 0, 0, region_mib)?;
    }
    check_or_write(&mut f, cfg, path, start, cfg.shard, region_mib)?;
    f.sync_all().map_err(io_err(path))?;
    if !exists {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
    }
    Ok(())
}

/// The header page at `start` of `f`: `None` when blank (or past the end of the file), the
/// header when it decodes, an error naming the file when it does not.
pub(crate) fn header_at(
    f: &mut std::fs::File,
    path: &Path,
    start: u64,
) -> Result<Option<FileHeader>, StoreError> {
    let mut head = vec![0u8; FILE_HEADER_BYTES];
    f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(io_err(path))? {
            0 => break,
            k => n += k,
        }
    }
    if head[..n].iter().all(|&b| b == 0) {
        return Ok(None);
    }
    FileHeader::decode(&head[..n])
        .map(Some)
        .map_err(|reason| StoreError::BadDataFile {
            path: path.display().to_string(),
            reason,
        })
}

/// Checks the header page at `start` against shard `shard` of this configuration, or writes
/// it when the page is blank.
fn check_or_write(
    f: &mut std::fs::File,
    cfg: &StoreConfig,
    path: &Path,
    start: u64,
    shard: u32,
    region_mib: u32,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadDataFile {
        path: path.display().to_string(),
        reason,
    };
    let Some(h) = header_at(f, path, start)? else {
        let header = FileHeader {
            format_version: FORMAT_VERSION,
            namespace: cfg.namespace.clone(),
            shard,
            shard_count: cfg.shard_count,
            block_bytes: cfg.block_bytes as u32,
            region_mib,
        };
        f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        return f.write_all(&header.encode()).map_err(io_err(path));
    };
    let at = if start == 0 {
        String::new()
    } else {
        format!(" (region at byte {start})")
    };
    if h.namespace != cfg.namespace {
        return Err(bad(format!(
            "it belongs to namespace '{}', not '{}'{at}",
            h.namespace, cfg.namespace
        )));
    }
    if h.shard != shard || h.shard_count != cfg.shard_count {
        let hint = if region_mib == 0 {
            "the server re-homes a data directory written with another --cores at start"
        } else {
            "configured files and devices are split into one region per core; the server \
             re-homes them to a new core count at start, through a staging copy"
        };
        return Err(bad(format!(
            "it was written by shard {} of {}, but is opened as shard {} of {}{at} ({hint})",
            h.shard, h.shard_count, shard, cfg.shard_count
        )));
    }
    if h.block_bytes as usize != cfg.block_bytes {
        return Err(bad(format!(
            "it was written with write-block-size {}, configured {}; set write-block-size {}",
            h.block_bytes, cfg.block_bytes, h.block_bytes
        )));
    }
    if h.region_mib != region_mib {
        return Err(bad(format!(
            "its regions are {} MiB, the configuration makes them {region_mib} MiB \
             (filesize or the core count changed: set them back, or start from a fresh file)",
            h.region_mib
        )));
    }
    Ok(())
}

impl Media {
    /// Opens (creating where needed) the extents `cfg` names.
    pub async fn open(cfg: &StoreConfig) -> Result<Media, StoreError> {
        let bs = cfg.block_bytes as u64;
        if cfg.memory && cfg.extents.is_empty() {
            return Ok(Media {
                reader: None,
                extents: Vec::new(),
                ram: Some(RefCell::new(Vec::new())),
                block_bytes: bs,
                blocks_per_extent: None,
                reserve_unsupported: Default::default(),
            });
        }
        let (specs, blocks_per_extent) = if cfg.extents.is_empty() {
            std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
            let path = cfg.dir.join(format!("shard-{}.dat", cfg.shard));
            (vec![(path, 0u64, 0u32)], None)
        } else {
            let region = cfg.extents[0].bytes;
            assert!(cfg.extents.iter().all(|e| e.bytes == region
                && e.start.is_multiple_of(MIB)
                && region.is_multiple_of(MIB)));
            let blocks = (region - FILE_HEADER_BYTES as u64) / bs;
            if blocks == 0 {
                return Err(StoreError::BadDataFile {
                    path: cfg.extents[0].path.display().to_string(),
                    reason: format!(
                        "a region of {region} bytes holds no {bs}-byte block: raise filesize"
                    ),
                });
            }
            let specs: Vec<(PathBuf, u64, u32)> = cfg
                .extents
                .iter()
                .map(|e| (e.path.clone(), e.start, (region / MIB) as u32))
                .collect();
            (specs, Some(u32::try_from(blocks).unwrap_or(u32::MAX)))
        };
        let mut extents = Vec::with_capacity(specs.len());
        for (path, start, region_mib) in specs {
            prepare(cfg, &path, start, region_mib)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .dma_open(&path)
                .await
                .map_err(|e| StoreError::Io {
                    path: path.display().to_string(),
                    source: e.into(),
                })?;
            let writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .map_err(io_err(&path))?;
            extents.push(Extent {
                file: Rc::new(file),
                writer: Arc::new(writer),
                path: path.display().to_string(),
                start,
            });
        }
        Ok(Media {
            reader: Some(ReadRing::new().map_err(|e| StoreError::Io {
                path: "io_uring for record reads".into(),
                source: e,
            })?),
            extents,
            // Memory persisted to files: every block also lives in RAM, reads never go to
            // the files, which are written only to be read back at the next start.
            ram: cfg.memory.then(|| RefCell::new(Vec::new())),
            block_bytes: bs,
            blocks_per_extent,
            reserve_unsupported: Default::default(),
        })
    }

    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Whether the blocks live in the shard's own file, which grows on a filesystem it shares
    /// (the default layout): then the store reserves space before it uses a block.
    pub fn grows(&self) -> bool {
        self.blocks_per_extent.is_none() && self.extents.len() == 1 && self.ram.is_none()
    }

    /// Bytes the filesystem holding the shard's own file has free for unprivileged writers
    /// (`statvfs`'s `f_bavail`), on the blocking thread. Only for a file that [`grows`].
    ///
    /// [`grows`]: Media::grows
    pub async fn fs_free_bytes(&self) -> std::io::Result<u64> {
        assert!(self.grows(), "only a shard's own file reads its filesystem");
        let writer = Arc::clone(&self.extents[0].writer);
        glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: fstatvfs writes into the zeroed struct we own; the descriptor is
                // kept open by `writer`.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                if unsafe { libc::fstatvfs(writer.as_raw_fd(), &mut st) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(st.f_bavail.saturating_mul(st.f_frsize))
            })
            .await
    }

    /// Makes the file hold `bytes` of space from virtual offset `v` on (`fallocate`, which
    /// also extends the file: the range reads as zeros, so recovery sees free blocks), on the
    /// blocking thread. Only for a file that [`grows`]. Fails with ENOSPC (see [`no_space`])
    /// when the filesystem cannot hold it. A filesystem that cannot reserve (EOPNOTSUPP: some
    /// network or FUSE ones) is warned about once and then not asked again: its file grows as
    /// blocks are written, and an ENOSPC comes from a write, which the store retries.
    ///
    /// [`grows`]: Media::grows
    pub async fn reserve(&self, v: u64, bytes: u64) -> std::io::Result<()> {
        assert!(self.grows(), "only a shard's own file is reserved");
        if self.reserve_unsupported.get() {
            return Ok(());
        }
        let (e_idx, at) = self.locate(v);
        let writer = Arc::clone(&self.extents[e_idx].writer);
        let (at, len) = (
            libc::off_t::try_from(at).map_err(std::io::Error::other)?,
            libc::off_t::try_from(bytes).map_err(std::io::Error::other)?,
        );
        let result = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: a plain syscall on a descriptor `writer` keeps open.
                if unsafe { libc::fallocate(writer.as_raw_fd(), 0, at, len) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .await;
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                tracing::warn!(path = %self.extents[e_idx].path, "the filesystem cannot reserve space (fallocate): a full filesystem is noticed only when a write fails");
                self.reserve_unsupported.set(true);
                Ok(())
            }
            other => other,
        }
    }

    /// Blocks the extents can hold at most (`None`: the default layout, limited by filesize).
    pub fn capacity_blocks(&self) -> Option<u32> {
        self.blocks_per_extent
            .map(|b| b.saturating_mul(self.extents.len() as u32))
    }

    /// A human name for errors and logs.
    pub fn describe(&self) -> String {
        if self.ram.is_some() && self.extents.is_empty() {
            return "memory".into();
        }
        let paths: Vec<&str> = self.extents.iter().map(|e| e.path.as_str()).collect();
        paths.join(", ")
    }

    /// The extent and physical offset of virtual offset `v` (block `i` lives in extent
    /// `i % extents` at slot `i / extents`: see [`header_positions`] for a slot's place).
    pub fn locate(&self, v: u64) -> (usize, u64) {
        let first = FILE_HEADER_BYTES as u64;
        assert!(v >= first, "virtual offset {v} is inside the header page");
        let block = (v - first) / self.block_bytes;
        let within = (v - first) % self.block_bytes;
        let k = self.extents.len() as u64;
        let e = (block % k) as usize;
        let local = block / k;
        if let Some(max) = self.blocks_per_extent {
            assert!(local < u64::from(max), "block {block} is past the extents");
        }
        (
            e,
            slot_base(self.extents[e].start, local, self.block_bytes) + within,
        )
    }

    /// The file of extent `e`, for reads and writes at offsets from [`Media::locate`].
    pub fn file(&self, e: usize) -> &Rc<DmaFile> {
        &self.extents[e].file
    }

    /// For every block up to the last that lies within its extent's file or device as it is
    /// now: whether it does (a block past the end of a shorter extent's file was never
    /// written).
    pub fn present_blocks(&self) -> Result<Vec<bool>, StoreError> {
        let k = self.extents.len() as u64;
        let mut existing = Vec::with_capacity(self.extents.len());
        for e in 0..self.extents.len() {
            existing.push(self.existing_blocks(e)?);
        }
        // Block i lives in extent i % k at slot i / k (see `locate`).
        let n = (0..k)
            .map(|e| match existing[e as usize] {
                0 => 0,
                blocks => (blocks - 1) * k + e + 1,
            })
            .max()
            .unwrap_or(0);
        Ok((0..n).map(|i| i / k < existing[(i % k) as usize]).collect())
    }

    /// Blocks of extent `e` that lie within its file or device as it is now (at most its
    /// region).
    fn existing_blocks(&self, e: usize) -> Result<u64, StoreError> {
        let x = &self.extents[e];
        let path = Path::new(&x.path);
        let size = byte_size(path).map_err(io_err(path))?;
        let blocks = size
            .saturating_sub(x.start + FILE_HEADER_BYTES as u64)
            .div_ceil(self.block_bytes);
        Ok(match self.blocks_per_extent {
            Some(max) => blocks.min(u64::from(max)),
            None => blocks,
        })
    }

    /// The RAM block holding virtual offset `v`, and `v`'s position in it.
    fn ram_slot(&self, v: u64) -> (usize, usize) {
        let rel = v - FILE_HEADER_BYTES as u64;
        (
            (rel / self.block_bytes) as usize,
            (rel % self.block_bytes) as usize,
        )
    }

    /// `len` bytes at virtual offset `v` (a record), through the shard's own read ring.
    pub async fn read(&self, v: u64, len: usize) -> std::io::Result<Bytes> {
        if self.ram.is_some() {
            return self
                .with_ram(v, len, |b| Bytes::Ram(b.to_vec()))
                .ok_or_else(|| {
                    let (b, _) = self.ram_slot(v);
                    std::io::Error::other(format!("memory block {b} was never written"))
                });
        }
        let (e, at) = self.locate(v);
        let reader = self
            .reader
            .as_ref()
            .expect("media with extents have a reader");
        let file = self.file(e);
        let align = file.align_up(1);
        Ok(Bytes::Ring(
            reader.read(file.as_raw_fd(), at, len, align).await?,
        ))
    }

    /// `f` over the `len` bytes at virtual offset `v` where they lie, for a memory namespace
    /// (`None` for a device, or when that block was never written): a read from RAM needs
    /// neither a copy nor the record cache.
    pub fn with_ram<R>(&self, v: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let ram = self.ram.as_ref()?;
        let (b, at) = self.ram_slot(v);
        let ram = ram.borrow();
        let block = ram.get(b)?.as_ref()?;
        Some(f(&block[at..(at + len).min(block.len())]))
    }

    /// Starts loading the first cache lines of the `len` bytes at virtual offset `v` of a
    /// memory namespace (a hint; nothing for a device).
    pub fn prefetch_ram(&self, v: u64, len: usize) {
        self.with_ram(v, len, |bytes| {
            // The first lines; the hardware prefetcher follows a sequential read from there.
            for line in bytes.iter().step_by(64).take(4) {
                crate::index::prefetch(line);
            }
        });
    }

    /// Whether records live in RAM (`storage-engine memory`).
    pub fn is_ram(&self) -> bool {
        self.ram.is_some()
    }

    /// A whole block at its (aligned) virtual base `v`.
    pub async fn read_block(&self, v: u64) -> std::io::Result<Bytes> {
        if self.ram.is_some() {
            return self.read(v, self.block_bytes as usize).await;
        }
        let (e, at) = self.locate(v);
        Ok(Bytes::Dma(
            self.file(e)
                .read_at_aligned(at, self.block_bytes as usize)
                .await?,
        ))
    }

    /// Keeps a copy of `bytes` at virtual offset `v` in RAM (memory namespaces only).
    fn to_ram(&self, v: u64, bytes: &[u8]) {
        let Some(ram) = &self.ram else { return };
        let (b, at) = self.ram_slot(v);
        let mut ram = ram.borrow_mut();
        if ram.len() <= b {
            ram.resize_with(b + 1, || None);
        }
        let block = ram[b].get_or_insert_with(|| vec![0u8; self.block_bytes as usize].into());
        block[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Recovery hands over each block it replayed, so a memory namespace persisted to files
    /// serves it from RAM; nothing happens otherwise.
    pub fn recovered_block(&self, v: u64, block: &[u8]) {
        if !self.extents.is_empty() {
            self.to_ram(v, block);
        }
    }

    /// Writes `w`'s pages (aligned pages of one block, at virtual offset `w.offset`); returns
    /// the bytes written. The extent written is marked in `written` for the next
    /// [`Media::sync`].
    ///
    /// The write starts at once, on the executor's blocking thread (a `pwrite` as `fio`'s
    /// psync engine does), not in glommio's ring: a ring request waits in the submission
    /// queue until the executor next polls its reactor, which a core busy appending records
    /// does only every preempt period (100 ms), so the device sat idle while blocks piled up.
    /// Only the completion waits for the poll. The pages are shared, so a cancelled flush
    /// cannot free them under the write, and the file is the extent's own handle, kept alive
    /// by the write.
    pub async fn write(&self, w: PendingWrite, written: &mut [bool]) -> std::io::Result<usize> {
        let len = w.bytes().len();
        self.to_ram(w.offset, w.bytes());
        if self.extents.is_empty() {
            return Ok(len);
        }
        let (e, at) = self.locate(w.offset);
        written[e] = true;
        let writer = Arc::clone(&self.extents[e].writer);
        glommio::executor()
            .spawn_blocking(move || writer.write_all_at(w.bytes(), at).map(|()| len))
            .await
    }

    /// Zeroes the header page of the block at virtual base `v` (in memory: frees the block).
    pub async fn zero_header(&self, v: u64) -> std::io::Result<()> {
        if let Some(ram) = &self.ram {
            let (b, _) = self.ram_slot(v);
            if let Some(slot) = ram.borrow_mut().get_mut(b) {
                *slot = None;
            }
            if self.extents.is_empty() {
                return Ok(());
            }
        }
        let (e, at) = self.locate(v);
        let file = self.file(e);
        let mut page = file.alloc_dma_buffer(IO_ALIGN_BYTES);
        page.as_bytes_mut().fill(0);
        let n = file.write_at(page, at).await?;
        if n != IO_ALIGN_BYTES {
            return Err(std::io::Error::other(format!("short write of {n} bytes")));
        }
        Ok(())
    }

    /// Marks of the extents one flush wrote, for [`Media::sync`].
    pub fn written_marks(&self) -> Vec<bool> {
        vec![false; self.extents.len()]
    }

    /// fdatasync of every extent in `which` (indexes into the extents).
    pub async fn sync(&self, which: &[bool]) -> Result<(), (String, std::io::Error)> {
        for (x, _) in self.extents.iter().zip(which).filter(|(_, &w)| w) {
            x.file
                .fdatasync()
                .await
                .map_err(|e| (x.path.clone(), e.into()))?;
        }
        Ok(())
    }

    /// fdatasync of every extent.
    pub async fn sync_all(&self) -> Result<(), (String, std::io::Error)> {
        self.sync(&vec![true; self.extents.len()]).await
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full: the store then
/// answers out-of-space and keeps the write to retry, instead of failing the shard. Errors
/// that passed through glommio keep only their kind, so the kind counts too.
pub fn no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// Where block slot `local` of the region at `start` begins: after the region's header page.
fn slot_base(start: u64, local: u64, block_bytes: u64) -> u64 {
    start + FILE_HEADER_BYTES as u64 + local * block_bytes
}

/// Every header page of the region `e` describes, in order: the region header, then the
/// header of each block slot.
pub fn header_positions(e: &ExtentConfig, block_bytes: u64) -> impl Iterator<Item = u64> + '_ {
    let slots = e.bytes.saturating_sub(FILE_HEADER_BYTES as u64) / block_bytes;
    std::iter::once(e.start).chain((0..slots).map(move |j| slot_base(e.start, j, block_bytes)))
}

/// The size of a file or block device, by seeking to its end: a block device's stat size
/// is 0.
fn byte_size(path: &Path) -> std::io::Result<u64> {
    std::fs::File::open(path).and_then(|mut f| f.seek(SeekFrom::End(0)))
}

/// Bytes read from the media.
pub enum Bytes {
    Dma(ReadResult),
    Ring(RingBytes),
    Ram(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Dma(r) => r,
            Bytes::Ring(r) => r,
            Bytes::Ram(v) => v,
        }
    }
}

/// The most bytes a region may hold when a shard owns one on each of `paths` paths: a
/// shard's regions together stay within the 1 TiB its index addresses.
pub fn region_bytes_max(paths: usize) -> u64 {
    (crate::index::OFFSET_MAX + 1) / paths.max(1) as u64
}

/// The smallest of `paths`' sizes: a file's configured size, or a device's own (read with
/// std I/O).
fn smallest_size(paths: &[(PathBuf, Option<u64>)]) -> Result<u64, String> {
    let mut smallest = u64::MAX;
    for (path, bytes) in paths {
        let size = match bytes {
            Some(b) => *b,
            None => byte_size(path)
                .map_err(|e| format!("cannot size device {}: {e}", path.display()))?,
        };
        smallest = smallest.min(size);
    }
    Ok(smallest)
}

/// The regions of `paths` (files of `file_bytes` each, or devices of their own size) that
/// shard `shard` of `shards` owns: each is split into `shards` equal regions, rounded down to
/// whole MiB, all as large as the smallest device's, and each at most
/// [`region_bytes_max`] (what [`unaddressed_bytes`] says is left over goes unused).
pub fn regions(
    paths: &[(PathBuf, Option<u64>)],
    shard: u32,
    shards: u32,
) -> Result<Vec<ExtentConfig>, String> {
    let smallest = smallest_size(paths)?;
    let region = (smallest / u64::from(shards)).min(region_bytes_max(paths.len())) / MIB * MIB;
    if region == 0 {
        return Err(format!(
            "{smallest} bytes split over {shards} cores leaves no whole MiB per core"
        ));
    }
    Ok(paths
        .iter()
        .map(|(path, _)| ExtentConfig {
            path: path.clone(),
            start: u64::from(shard) * region,
            bytes: region,
        })
        .collect())
}

/// Bytes of each core's share of the smallest path that [`regions`] leaves unused because a
/// shard's regions together may not pass 1 TiB (0 when the whole share is used).
pub fn unaddressed_bytes(paths: &[(PathBuf, Option<u64>)], shards: u32) -> Result<u64, String> {
    let share = smallest_size(paths)? / u64::from(shards.max(1));
    Ok(share.saturating_sub(region_bytes_max(paths.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_every_path_alike() {
        let paths = vec![
            (PathBuf::from("/a"), Some(100 * MIB + 5)),
            (PathBuf::from("/b"), Some(64 * MIB)),
        ];
        let r = regions(&paths, 1, 3).unwrap();
        // The smallest (64 MiB) over 3 cores: 21 MiB each.
        assert_eq!(
            r,
            vec![
                ExtentConfig {
                    path: "/a".into(),
                    start: 21 * MIB,
                    bytes: 21 * MIB
                },
                ExtentConfig {
                    path: "/b".into(),
                    start: 21 * MIB,
                    bytes: 21 * MIB
                },
            ]
        );
        assert!(regions(&[(PathBuf::from("/c"), Some(MIB))], 0, 2)
            .unwrap_err()
            .contains("no whole MiB"));
        assert_eq!(unaddressed_bytes(&paths, 3).unwrap(), 0);
    }

    #[test]
    fn a_shard_addresses_at_most_one_tib_over_all_its_regions() {
        const TIB: u64 = 1 << 40;
        // Two 3 TiB devices on 2 cores: 1.5 TiB a core on each, but a core's two regions
        // together may hold only 1 TiB, so 512 GiB each and 1 TiB of each share is unused.
        let paths = vec![
            (PathBuf::from("/a"), Some(3 * TIB)),
            (PathBuf::from("/b"), Some(3 * TIB)),
        ];
        let r = regions(&paths, 1, 2).unwrap();
        assert!(r.iter().all(|e| e.bytes == TIB / 2 && e.start == TIB / 2));
        assert_eq!(unaddressed_bytes(&paths, 2).unwrap(), TIB);
        // One path, exactly 1 TiB a core: all of it used.
        let one = vec![(PathBuf::from("/a"), Some(2 * TIB))];
        assert_eq!(regions(&one, 1, 2).unwrap()[0].bytes, TIB);
        assert_eq!(unaddressed_bytes(&one, 2).unwrap(), 0);
    }
}
