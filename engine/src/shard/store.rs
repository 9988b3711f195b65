//! The shard store: appends records to in-memory write blocks, writes them to the shard's data
//! file with O_DIRECT at aligned offsets, group-commits concurrent writers into one device write
//! plus fdatasync, serves reads from memory or disk, and rebuilds the index at start.
//!
//! Owns the data file of one shard. Invariants: `durable_upto` only grows; a block leaves memory
//! only once every byte of it is durable; after any device error the shard refuses all writes
//! (reads of data already indexed keep working). It must never acknowledge a write whose bytes
//! are not durable when `commit-to-device` is on.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apogee_wire::Digest;
use glommio::io::{DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use crate::block::{BlockHeader, BlockState, WriteBlock, BLOCK_HEADER_BYTES};
use crate::cache::RecordCache;
use crate::clock;
use crate::error::StoreError;
use crate::file_header::{FileHeader, FILE_HEADER_BYTES, FORMAT_VERSION};
use crate::index::{Index, IndexEntry};
use crate::record::Record;
use crate::recovery;
use crate::stats::ShardStats;

/// Blocks allowed in memory that are not yet fully on the device. A writer that finds this many
/// waits for a flush, so a slow device bounds memory instead of growing it.
pub const UNFLUSHED_BLOCKS_MAX: usize = 8;

/// Proof of an append: the file offset the device must reach for that record to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an appended record is not acknowledged until its ticket is committed"]
pub struct CommitTicket(u64);

/// What a shard store needs to know.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The namespace's directory; the shard's file is `shard-<n>.dat` inside it.
    pub dir: PathBuf,
    pub namespace: String,
    pub shard: u32,
    pub shard_count: u32,
    pub block_bytes: usize,
    /// Acknowledge writes only once durable (true) or once in the write buffer (false).
    pub commit_to_device: bool,
    /// Longest a partial block waits in memory before it is written.
    pub flush_max_ms: u64,
    /// Byte budget of this shard's record cache (0 disables it).
    pub cache_bytes: usize,
}

struct State {
    index: Index,
    /// Front: oldest block not yet wholly durable; back: the open block. Never empty.
    blocks: VecDeque<WriteBlock>,
    next_sequence: u64,
    /// Every byte of the file before this offset is durable.
    durable_upto: u64,
    failed: Option<String>,
}

/// The storage of one shard. Single-threaded: lives on its core behind an `Rc`.
pub struct ShardStore {
    cfg: StoreConfig,
    path: String,
    file: DmaFile,
    state: RefCell<State>,
    cache: RefCell<RecordCache>,
    /// One flush at a time; writers queued behind it share the next one (group commit).
    flush_lock: Semaphore,
    flushes: Cell<u64>,
    stats: Arc<ShardStats>,
}

/// Summary of a cold start, for the log and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryReport {
    pub blocks: u64,
    pub records: u64,
    pub bad_records: u64,
    pub corrupt_blocks: u64,
    pub objects: u64,
    pub elapsed_ms: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the data file with its header page, or checks the header of an existing one.
/// Done with std I/O before glommio opens the file: glommio's io-poll probe misjudges empty
/// files, so the file must never be empty when it opens it.
fn prepare_file(cfg: &StoreConfig, path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
    let bad = |reason: String| StoreError::BadDataFile {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        let mut head = vec![0u8; FILE_HEADER_BYTES];
        let mut f = std::fs::File::open(path).map_err(io_err(path))?;
        let n = f.read(&mut head).map_err(io_err(path))?;
        let h = FileHeader::decode(&head[..n]).map_err(bad)?;
        if h.namespace != cfg.namespace {
            return Err(bad(format!(
                "it belongs to namespace '{}', not '{}'",
                h.namespace, cfg.namespace
            )));
        }
        if h.shard != cfg.shard || h.shard_count != cfg.shard_count {
            return Err(bad(format!(
                "it was written by shard {} of {} (--cores {}), but this server runs {} cores; \
                 restart with --cores {} (re-homing records to a new core count is not supported yet)",
                h.shard, h.shard_count, h.shard_count, cfg.shard_count, h.shard_count
            )));
        }
        if h.block_bytes as usize != cfg.block_bytes {
            return Err(bad(format!(
                "it was written with write-block-size {}, configured {}; set write-block-size {}",
                h.block_bytes, cfg.block_bytes, h.block_bytes
            )));
        }
        return Ok(());
    }
    let header = FileHeader {
        format_version: FORMAT_VERSION,
        namespace: cfg.namespace.clone(),
        shard: cfg.shard,
        shard_count: cfg.shard_count,
        block_bytes: cfg.block_bytes as u32,
    };
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(&header.encode()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    std::fs::File::open(&cfg.dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&cfg.dir))?;
    Ok(())
}

impl ShardStore {
    /// Opens (creating if needed) the shard's data file and rebuilds the index from it.
    pub async fn open(
        cfg: StoreConfig,
        stats: Arc<ShardStats>,
    ) -> Result<(Rc<ShardStore>, RecoveryReport), StoreError> {
        assert!(cfg.shard < cfg.shard_count);
        assert!(cfg.block_bytes.is_multiple_of(crate::block::IO_ALIGN_BYTES));
        let path = cfg.dir.join(format!("shard-{}.dat", cfg.shard));
        prepare_file(&cfg, &path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        let path_s = path.display().to_string();
        let (state, report) = Self::recover(&cfg, &file, &path_s).await?;
        stats.add_bad_records(report.bad_records);
        stats.set_objects(report.objects);
        let store = Rc::new(ShardStore {
            path: path_s,
            file,
            state: RefCell::new(state),
            cache: RefCell::new(RecordCache::new(cfg.cache_bytes)),
            cfg,
            flush_lock: Semaphore::new(1),
            flushes: Cell::new(0),
            stats,
        });
        Ok((store, report))
    }

    async fn recover(
        cfg: &StoreConfig,
        file: &DmaFile,
        path: &str,
    ) -> Result<(State, RecoveryReport), StoreError> {
        let started = Instant::now();
        let io = |source: std::io::Error| StoreError::Io {
            path: path.to_string(),
            source,
        };
        let size = file.file_size().await.map_err(|e| io(e.into()))?;
        let bs = cfg.block_bytes as u64;
        let first = FILE_HEADER_BYTES as u64;
        let n_blocks = size.saturating_sub(first).div_ceil(bs);
        let mut index = Index::default();
        let mut report = RecoveryReport::default();
        let mut last_written: Option<u64> = None;
        let mut max_sequence = 0u64;
        let now = clock::now_secs();
        let mut buf = vec![0u8; cfg.block_bytes];
        let mut last_log = Instant::now();
        for k in 0..n_blocks {
            let base = first + k * bs;
            let read = file
                .read_at_aligned(base, cfg.block_bytes)
                .await
                .map_err(|e| io(e.into()))?;
            buf[..read.len()].copy_from_slice(&read);
            buf[read.len()..].fill(0);
            let Some((state, replay)) = recovery::replay_block(&buf, base, &mut index, now) else {
                continue;
            };
            last_written = Some(k);
            report.blocks += 1;
            report.records += replay.records;
            report.bad_records += replay.bad_records;
            match state {
                BlockState::Valid(h) => {
                    if h.shard != cfg.shard {
                        return Err(StoreError::BadDataFile {
                            path: path.to_string(),
                            reason: format!("block {k} belongs to shard {}", h.shard),
                        });
                    }
                    max_sequence = max_sequence.max(h.sequence);
                }
                BlockState::Corrupt => {
                    report.corrupt_blocks += 1;
                    tracing::warn!(path, block = k, "skipping block with a corrupt header");
                }
                BlockState::Empty => unreachable!("replay_block returns None for empty blocks"),
            }
            if replay.bad_records > 0 {
                tracing::warn!(
                    path,
                    block = k,
                    bad_records = replay.bad_records,
                    "skipped records with bad checksums"
                );
            }
            if last_log.elapsed() > Duration::from_secs(2) {
                tracing::info!(path, block = k, of = n_blocks, "recovery in progress");
                last_log = Instant::now();
            }
        }
        // New writes start in a fresh block after the last written one, never after a
        // possibly torn tail.
        let next_base = first + last_written.map_or(0, |k| k + 1) * bs;
        let open = WriteBlock::new(
            next_base,
            BlockHeader {
                sequence: max_sequence + 1,
                shard: cfg.shard,
                block_bytes: cfg.block_bytes as u32,
            },
        );
        report.objects = index.len() as u64;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let state = State {
            index,
            blocks: VecDeque::from([open]),
            next_sequence: max_sequence + 2,
            durable_upto: next_base,
            failed: None,
        };
        Ok((state, report))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// Number of device flushes so far (each is one or more writes and one fdatasync).
    pub fn flush_count(&self) -> u64 {
        self.flushes.get()
    }

    pub fn object_count(&self) -> usize {
        self.state.borrow().index.len()
    }

    /// The identity of the record's current version (its file offset), expired or not;
    /// `None` when it has no live entry. Any write or delete of the record changes it, so a
    /// caller that read a record can tell whether it is still the newest version.
    pub fn version(&self, digest: &Digest) -> Option<u64> {
        self.state.borrow().index.get(digest).map(|e| e.offset)
    }

    /// Metadata of a live record, without I/O. Expired records are absent.
    pub fn meta(&self, digest: &Digest) -> Option<IndexEntry> {
        let st = self.state.borrow();
        let e = *st.index.get(digest)?;
        (!clock::is_expired(e.meta.void_time, clock::now_secs())).then_some(e)
    }

    /// Reads the newest live version of a record: from memory when its block is still there,
    /// otherwise from the device. The bytes are checksummed before they are returned.
    pub async fn get(&self, digest: &Digest) -> Result<Option<Record>, StoreError> {
        let Some(entry) = self.meta(digest) else {
            return Ok(None);
        };
        self.stats.count_read();
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.path.clone(),
            offset: entry.offset,
            reason,
        };
        let cached = self.cache.borrow_mut().get(digest, entry.offset);
        let record = if let Some(bytes) = cached {
            self.stats.count_cache_hit();
            Record::decode(&bytes).map_err(|e| corrupt(e.to_string()))?
        } else {
            let in_memory = {
                let st = self.state.borrow();
                st.blocks
                    .iter()
                    .find_map(|b| b.slice_at(entry.offset, entry.bytes as usize))
                    .map(Record::decode)
            };
            match in_memory {
                Some(r) => r.map_err(|e| corrupt(e.to_string()))?,
                None => {
                    self.stats.count_device_read();
                    let bytes = self
                        .file
                        .read_at(entry.offset, entry.bytes as usize)
                        .await
                        .map_err(|e| StoreError::Io {
                            path: self.path.clone(),
                            source: e.into(),
                        })?;
                    let record = Record::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
                    // Cache it only if it is still the newest version after the await.
                    if self.version(digest) == Some(entry.offset) && record.digest == *digest {
                        self.cache
                            .borrow_mut()
                            .insert(*digest, entry.offset, Rc::from(&bytes[..]));
                    }
                    record
                }
            }
        };
        if record.digest != *digest {
            return Err(corrupt(format!(
                "holds digest {:?}, index expected {:?}",
                record.digest, digest
            )));
        }
        Ok(Some(record))
    }

    /// Stores a record version (or a tombstone) and returns once it is acknowledged under the
    /// configured commit level.
    pub async fn put(&self, record: &Record) -> Result<(), StoreError> {
        let ticket = self.append(record)?;
        self.commit(ticket).await
    }

    /// Waits until an appended record is acknowledged under the configured commit level: on
    /// the device with `commit-to-device`, otherwise at once (unless too many blocks wait for
    /// the device, in which case the writer helps flush them).
    pub async fn commit(&self, ticket: CommitTicket) -> Result<(), StoreError> {
        if self.cfg.commit_to_device || self.state.borrow().blocks.len() > UNFLUSHED_BLOCKS_MAX {
            self.flush_to(ticket.0).await
        } else {
            Ok(())
        }
    }

    /// The largest record this store accepts.
    pub fn record_bytes_max(&self) -> usize {
        WriteBlock::record_bytes_max(self.cfg.block_bytes)
    }

    /// Appends a record version (or a tombstone) to the open write block and updates the index.
    /// Synchronous, so a caller that checked the record's `version` appends before anything else
    /// can change it; the returned ticket is then awaited with `commit`.
    pub fn append(&self, record: &Record) -> Result<CommitTicket, StoreError> {
        let bytes = record.encode();
        if bytes.len() > self.record_bytes_max() {
            return Err(StoreError::RecordTooBig {
                size: bytes.len(),
                max: self.record_bytes_max(),
            });
        }
        let mut st = self.state.borrow_mut();
        if let Some(reason) = &st.failed {
            return Err(StoreError::DeviceFailed {
                shard: self.cfg.shard,
                reason: reason.clone(),
            });
        }
        let needs_new = !st.blocks.back().expect("open block").fits(bytes.len());
        if needs_new {
            let sequence = st.next_sequence;
            st.next_sequence += 1;
            let last = st.blocks.back_mut().expect("open block");
            last.sealed = true;
            let base = last.base + self.cfg.block_bytes as u64;
            st.blocks.push_back(WriteBlock::new(
                base,
                BlockHeader {
                    sequence,
                    shard: self.cfg.shard,
                    block_bytes: self.cfg.block_bytes as u32,
                },
            ));
        }
        let open = st.blocks.back_mut().expect("open block");
        let offset = open.append(&bytes);
        let end = open.end();
        if record.tombstone {
            st.index.remove(&record.digest);
            self.cache.borrow_mut().remove(&record.digest);
        } else {
            self.cache
                .borrow_mut()
                .insert(record.digest, offset, Rc::from(&bytes[..]));
            st.index.insert(
                record.digest,
                IndexEntry {
                    offset,
                    bytes: bytes.len() as u32,
                    meta: record.meta,
                },
            );
        }
        self.stats.set_objects(st.index.len() as u64);
        self.stats.count_write();
        Ok(CommitTicket(end))
    }

    /// Makes every byte before `target` durable. Concurrent callers queue on the flush lock;
    /// whoever gets it writes everything appended so far, so the others usually find their
    /// bytes already durable when their turn comes (group commit).
    pub async fn flush_to(&self, target: u64) -> Result<(), StoreError> {
        if self.state.borrow().durable_upto >= target {
            return Ok(());
        }
        let _permit = self
            .flush_lock
            .acquire_permit(1)
            .await
            .expect("flush lock semaphore is never closed");
        let (segments, upto) = {
            let st = self.state.borrow();
            if st.durable_upto >= target {
                return Ok(());
            }
            if let Some(reason) = &st.failed {
                return Err(StoreError::DeviceFailed {
                    shard: self.cfg.shard,
                    reason: reason.clone(),
                });
            }
            let upto = st.blocks.back().expect("open block").end();
            let segments: Vec<_> = st
                .blocks
                .iter()
                .filter_map(|b| b.dirty_pages(st.durable_upto))
                .map(|(offset, pages)| {
                    let mut buf = self.file.alloc_dma_buffer(pages.len());
                    buf.as_bytes_mut().copy_from_slice(pages);
                    (offset, buf)
                })
                .collect();
            (segments, upto)
        };
        for (offset, buf) in segments {
            let len = buf.len();
            match self.file.write_at(buf, offset).await {
                Ok(n) if n == len => {}
                Ok(n) => {
                    return Err(self.fail(format!("short write: {n} of {len} bytes at {offset}")))
                }
                Err(e) => return Err(self.fail(format!("write at {offset} failed: {e}"))),
            }
        }
        if let Err(e) = self.file.fdatasync().await {
            return Err(self.fail(format!("fdatasync failed: {e}")));
        }
        self.flushes.set(self.flushes.get() + 1);
        let mut st = self.state.borrow_mut();
        assert!(upto >= st.durable_upto, "durable_upto only grows");
        st.durable_upto = upto;
        while st.blocks.len() > 1 {
            let front = st.blocks.front().expect("non-empty");
            if front.sealed && front.end() <= upto {
                st.blocks.pop_front();
            } else {
                break;
            }
        }
        Ok(())
    }

    fn fail(&self, reason: String) -> StoreError {
        tracing::error!(path = %self.path, shard = self.cfg.shard, %reason, "device error: shard stops accepting writes");
        self.state.borrow_mut().failed = Some(reason.clone());
        StoreError::DeviceFailed {
            shard: self.cfg.shard,
            reason,
        }
    }

    /// Writes everything appended so far; used by the background flusher and at shutdown.
    pub async fn flush_all(&self) -> Result<(), StoreError> {
        let end = self.state.borrow().blocks.back().expect("open block").end();
        self.flush_to(end).await
    }

    /// Flushes partial blocks every `flush-max-ms` so that, with `commit-to-device false`,
    /// acknowledged writes reach the device within that bound. Stops when the store is dropped.
    pub fn spawn_background_flusher(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let period = Duration::from_millis(self.cfg.flush_max_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(period).await;
                let Some(store) = weak.upgrade() else { break };
                if let Err(e) = store.flush_all().await {
                    tracing::error!(error = %e, "background flush failed");
                }
            }
        })
        .detach();
    }

    /// Offset just past the last block byte (the file's logical write position), for tests.
    pub fn write_position(&self) -> u64 {
        self.state.borrow().blocks.back().expect("open block").end()
    }

    /// Byte offset where the open block starts.
    pub fn open_block_base(&self) -> u64 {
        self.state.borrow().blocks.back().expect("open block").base
    }

    /// Bytes the header takes inside each block, for tools that locate records.
    pub const fn block_header_bytes() -> usize {
        BLOCK_HEADER_BYTES
    }
}
