//! The shard store: appends records to in-memory write blocks, writes them to the shard's data
//! file with O_DIRECT at aligned offsets, group-commits concurrent writers into one device write
//! plus fdatasync, serves reads from the cache, memory or disk, defragments sparse blocks so
//! freed blocks are reused, and rebuilds the index at start.
//!
//! Owns the data file of one shard. Invariants: `durable_lsn` only grows; a block leaves memory
//! only once every byte of it is written to the device (and synced, under
//! `commit-to-device`; otherwise the flusher syncs within `flush-max-ms`); a block is released for reuse only after every live
//! record in it has a durable copy elsewhere and its header on disk is zero; after any device
//! error the shard refuses all writes (reads of data already indexed keep working). It must
//! never acknowledge a write whose bytes are not durable when `commit-to-device` is on.
//!
//! A full filesystem is not a device error: the default layout's file reserves (`fallocate`)
//! its blocks ahead of use, so a full filesystem stops growth — client writes get
//! out-of-space while deletes and defragmentation use the headroom the file keeps (see
//! `space`). An ENOSPC that still reaches a write or sync (a block taken on a stale look at
//! the filesystem, a configured file, a filesystem that cannot reserve) leaves the block in
//! memory to be written again, answers out-of-space, and refuses client writes until a flush
//! succeeds; it never fails the shard.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::Digest;
use futures_lite::StreamExt;
use futures_util::future::join_all;
use glommio::io::{MergedBufferLimit, ReadAmplificationLimit};
use glommio::sync::Semaphore;

use crate::block::{
    BlockHeader, BlockState, Page, PendingWrite, WriteBlock, BLOCK_HEADER_BYTES, IO_ALIGN_BYTES,
};
use crate::cache::RecordCache;
use crate::clock;
use crate::error::StoreError;
use crate::file_header::FILE_HEADER_BYTES;
use crate::index::{Index, IndexEntry, Shadow, Shadows};
use crate::record::{
    block_tag, decode_header_tagged, retag, set_name_of, write_checksum, Record, RecordDecodeError,
    RecordHeader, RECORD_FIXED_BYTES,
};
use crate::recovery;
use crate::shard::media::{no_space, ExtentConfig, Media};
use crate::shard::space::{
    client_room_blocks, BlockInfo, BlockTable, BlockUse, Claim, Growth, GrowthWanted,
    HEADROOM_BLOCKS,
};
use crate::shard::truncate::{self, TruncatePoints, Truncated};
use crate::stats::ShardStats;
use crate::tuning::{Setting, Tuning};

/// Blocks allowed in memory that are not yet fully on the device. A writer that finds this many
/// waits for a flush, so a slow device bounds memory instead of growing it.
pub const UNFLUSHED_BLOCKS_MAX: usize = 8;
/// Buffers of retired blocks kept for reuse: as many as may wait for the device, so a steady
/// writer never maps a fresh one (page faults and zeroing: ~0.8 ms per 1 MiB here), within
/// SPARE_BYTES_MAX.
const SPARE_BUFFERS_MAX: usize = UNFLUSHED_BLOCKS_MAX + 2;
const SPARE_BYTES_MAX: usize = 16 << 20;
/// Records up to this size are encoded in the shard's staging buffer and streamed into the
/// block (see `append_bytes`); larger ones, rare, are encoded in the block itself, so the
/// buffer never grows past this.
const STAGING_BYTES_MAX: usize = 64 << 10;
/// A read that finds its record moved by defragmentation mid-read tries again this often.
const READ_ATTEMPTS_MAX: usize = 4;
/// How often the defragmenter looks at the filesystem's free space (one `statvfs`), so
/// stop-writes follows space used or freed by others and a file that could not grow for
/// lack of space grows once there is some again.
const SPACE_CHECK_PERIOD_MS: u64 = 250;

/// Proof of an append: the log position the device must reach for that record to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an appended record is not acknowledged until its ticket is committed"]
pub struct CommitTicket(u64);

/// A fault tests can arm for the next device write, to drive the error paths that real
/// devices reach rarely (FoundationDB's BUGGIFY idea). Production code never arms one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// The write fails with EIO.
    Eio,
    /// The write fails with ENOSPC.
    Enospc,
    /// The write reports fewer bytes than asked.
    ShortWrite,
}

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
    /// Blocks whose live bytes fall below this percentage are defragmented.
    pub defrag_lwm_pct: u64,
    /// Pause between two defragmented blocks, so client writes are never starved.
    pub defrag_sleep_us: u64,
    /// Seconds between expiry sweeps (Aerospike's `nsup-period`); 0 disables them.
    pub nsup_period_secs: u64,
    /// Largest size of the data file in bytes; 0 for no limit.
    pub file_bytes_max: u64,
    /// Client writes fail with out-of-space once live data fills this share of the capacity.
    pub stop_writes_used_pct: u64,
    /// ... or once fewer than this share of the blocks are available.
    pub stop_writes_avail_pct: u64,
    /// Above this share of the capacity in live data, the expiry sweep evicts records with a
    /// TTL, soonest to expire first (Aerospike's `evict-used-pct`); 0 disables eviction.
    pub evict_used_pct: u64,
    /// The regions of configured files or devices this shard owns; empty for the default
    /// layout (`<dir>/shard-<n>.dat`, limited by `file_bytes_max`).
    pub extents: Vec<ExtentConfig>,
    /// `storage-engine memory`: blocks live in RAM; without `extents` only there
    /// (`file_bytes_max` is the data size) and nothing survives a restart, with `extents` also
    /// in those files, read back at start.
    pub memory: bool,
}

pub(super) struct State {
    pub(super) index: Index,
    shadows: Shadows,
    pub(super) table: BlockTable,
    /// Front: oldest block not yet wholly durable; back: the open block. Never empty.
    blocks: VecDeque<WriteBlock>,
    next_sequence: u64,
    /// Bytes appended since start (a log position that only grows, unlike file offsets).
    appended_lsn: u64,
    /// The log position where the open block's first record starts: every append before it
    /// lies in a sealed block.
    open_start_lsn: u64,
    /// Every append up to this position is durable (written and synced).
    durable_lsn: u64,
    /// Every append up to this position is written to the device, maybe not yet synced.
    written_lsn: u64,
    /// Extents written since their last fdatasync (by write-behind without sync).
    unsynced: Vec<bool>,
    /// Why the last write or sync ran out of filesystem space, until a flush succeeds: client
    /// writes are refused meanwhile (deletes and defragmentation go on).
    no_space: Option<String>,
    /// Out-of-space write or sync failures so far, so a flush can tell that one of the
    /// write-behinds it waited for failed.
    no_space_events: u64,
    /// Buffers of retired blocks, for the next blocks to fill (at most SPARE_BUFFERS_MAX).
    spare_buffers: Vec<Box<[Page]>>,
    /// Where a record is encoded before it is streamed into its block (≤ STAGING_BYTES_MAX).
    staging: Vec<u8>,
    failed: Option<String>,
}

/// The storage of one shard. Single-threaded: lives on its core behind an `Rc`.
pub struct ShardStore {
    /// Itself, for the write-behind flushes it starts when a block fills.
    me: std::rc::Weak<ShardStore>,
    pub(super) cfg: StoreConfig,
    path: String,
    media: Media,
    pub(super) state: RefCell<State>,
    pub(super) cache: RefCell<RecordCache>,
    /// One flush at a time; writers queued behind it share the next one (group commit).
    flush_lock: Semaphore,
    /// Permits for the tasks waiting on write-behinds, given as each finishes.
    write_done: Semaphore,
    /// How many tasks wait on `write_done`.
    write_waiters: Cell<u64>,
    /// One defragmentation pass at a time.
    defrag_lock: Semaphore,
    /// A growth of the file (reserving blocks) is under way: one at a time.
    growing: Cell<bool>,
    /// The last growth failed for lack of filesystem space.
    fs_full: Cell<bool>,
    flushes: Cell<u64>,
    blocks_defragged: Cell<u64>,
    fault: Cell<Option<InjectedFault>>,
    pub(super) stats: Arc<ShardStats>,
    /// The namespace's and sets' truncate cut-offs as this shard's set ids see them.
    pub(super) truncate: Arc<TruncatePoints>,
    /// The settings `set-config` may change while the store runs.
    tuning: Arc<Tuning>,
}

/// What an append writes into the block.
#[derive(Clone, Copy)]
enum Incoming<'a> {
    /// A record, encoded into the block (through the staging buffer up to STAGING_BYTES_MAX).
    Record(&'a Record),
    /// Bytes of a record already encoded, with the checksum tag of the block they came from
    /// (defragmentation moving a record).
    Bytes { bytes: &'a [u8], tag: u32 },
}

impl Incoming<'_> {
    fn len(&self) -> usize {
        match self {
            Incoming::Record(r) => r.encoded_bytes(),
            Incoming::Bytes { bytes, .. } => bytes.len(),
        }
    }

    /// Writes the record's bytes into `slot` (exactly [`Incoming::len`] long), tagged for the
    /// block whose tag is `to_tag`; runs `meanwhile` once the bytes are in place, before the
    /// record's checksum is computed.
    fn fill(self, slot: &mut [u8], to_tag: u32, meanwhile: impl FnOnce()) {
        match self {
            Incoming::Record(r) => {
                r.encode_unsummed(slot);
                meanwhile();
                write_checksum(slot);
                retag(slot, 0, to_tag);
            }
            Incoming::Bytes { bytes, tag } => {
                slot.copy_from_slice(bytes);
                meanwhile();
                retag(slot, tag, to_tag);
            }
        }
    }
}

/// Notes the extents a write touched as needing an fdatasync.
fn mark_unsynced(st: &mut State, marks: &[bool]) {
    if st.unsynced.len() < marks.len() {
        st.unsynced.resize(marks.len(), false);
    }
    for (was, &mark) in st.unsynced.iter_mut().zip(marks) {
        *was |= mark;
    }
}

/// Drops the sealed blocks at the front that are wholly on the device: reads find them there.
fn retire_durable(st: &mut State) {
    while st.blocks.len() > 1 {
        let front = st.blocks.front().expect("non-empty");
        if front.sealed && front.is_durable() {
            let retired = st.blocks.pop_front().expect("non-empty");
            let bytes = retired.buffer_bytes();
            if st.spare_buffers.len() < SPARE_BUFFERS_MAX.min(SPARE_BYTES_MAX / bytes).max(1) {
                st.spare_buffers.extend(retired.into_buffer());
            }
        } else {
            break;
        }
    }
}

/// Records the expiry sweep and eviction handle between two yields to the executor.
const SWEEP_CHUNK_RECORDS: usize = 4096;

/// Block-header reads recovery keeps in flight.
const RECOVERY_READS_IN_FLIGHT: usize = 64;
/// Block reads recovery keeps in flight while it replays, and the largest merged read. Reads
/// of 1 MiB (no merging of 1 MiB blocks) with 8 in flight beat 4 MiB merged reads with 4:
/// glommio serves small reads from its pre-registered I/O memory, while each 4 MiB buffer was
/// a fresh mapping the kernel had to fault in and pin (a fifth of recovery's time in a
/// profile); 3 M records, alternated runs: 2.5 s against 3.0 s on average.
const RECOVERY_BLOCKS_IN_FLIGHT: usize = 8;
const RECOVERY_READ_BYTES_MAX: usize = 1 << 20;

/// Summary of a cold start, for the log and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryReport {
    pub blocks: u64,
    pub records: u64,
    pub bad_records: u64,
    pub corrupt_blocks: u64,
    pub objects: u64,
    /// Records skipped because a truncate cut them off.
    pub truncated: u64,
    pub elapsed_ms: u64,
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reserves up to `want` blocks of `block_bytes` in the file from virtual offset `from` on:
/// all at once, or, when that fails, one at a time, so a full filesystem still grants what
/// fits; returns how many were reserved and the error that stopped it (see `no_space`).
async fn reserve_blocks(
    media: &Media,
    from: u64,
    block_bytes: u64,
    want: u64,
) -> (u64, Option<std::io::Error>) {
    if want > 1 && media.reserve(from, want * block_bytes).await.is_ok() {
        return (want, None);
    }
    for n in 0..want {
        if let Err(e) = media.reserve(from + n * block_bytes, block_bytes).await {
            return (n, Some(e));
        }
    }
    (want, None)
}

/// Clears the store's growth flag when the growth ends, however it ends.
struct GrowingGuard<'a>(&'a Cell<bool>);

impl Drop for GrowingGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Why a block write or sync did not land.
enum WriteFault {
    /// The filesystem is full: the bytes stay in memory and are written again later.
    NoSpace(String),
    /// Anything else: the shard stops accepting writes.
    Failed(String),
}

impl WriteFault {
    fn of(e: &std::io::Error, what: String) -> WriteFault {
        if no_space(e) {
            WriteFault::NoSpace(format!("{what}: {e}"))
        } else {
            WriteFault::Failed(format!("{what}: {e}"))
        }
    }
}

impl ShardStore {
    /// The shard's per-set object counts, for the `sets` info command.
    pub fn set_stats(&self) -> Arc<crate::sets::SetStats> {
        self.state.borrow().index.set_stats()
    }

    /// The shard's truncate cut-offs, for the `truncate` info commands.
    pub fn truncate_points(&self) -> Arc<TruncatePoints> {
        self.truncate.clone()
    }

    /// The store's live settings, for `set-config`.
    pub fn tuning(&self) -> Arc<Tuning> {
        self.tuning.clone()
    }

    /// Opens (creating if needed) the shard's media and rebuilds the index from it.
    pub async fn open(
        cfg: StoreConfig,
        stats: Arc<ShardStats>,
    ) -> Result<(Rc<ShardStore>, RecoveryReport), StoreError> {
        Self::open_truncated(cfg, stats, &Truncated::default()).await
    }

    /// [`ShardStore::open`], skipping the records `truncated` cuts off, so that a truncate
    /// survives a restart.
    pub async fn open_truncated(
        cfg: StoreConfig,
        stats: Arc<ShardStats>,
        truncated: &Truncated,
    ) -> Result<(Rc<ShardStore>, RecoveryReport), StoreError> {
        assert!(cfg.shard < cfg.shard_count);
        assert!(cfg.block_bytes.is_multiple_of(IO_ALIGN_BYTES));
        assert!((1..100).contains(&cfg.defrag_lwm_pct));
        let media = Media::open(&cfg).await?;
        let path_s = media.describe();
        let (mut state, mut report) = Self::recover(&cfg, &media, &path_s).await?;
        let truncate = Arc::new(TruncatePoints::default());
        report.truncated = truncate::skip_truncated(&mut state, &truncate, truncated);
        report.objects = state.index.len() as u64;
        if media.grows() && cfg.shard == 0 && cfg.file_bytes_max > 0 {
            Self::warn_if_filesize_does_not_fit(&cfg, &media, state.table.span_bytes()).await;
        }
        stats.add_bad_records(report.bad_records);
        stats.set_objects(report.objects);
        stats.set_shadows(state.shadows.len() as u64);
        stats.set_usage(state.table.live_total(), state.index.memory_bytes());
        stats.set_total_bytes(if cfg.extents.is_empty() {
            cfg.file_bytes_max
        } else {
            media
                .capacity_blocks()
                .map_or(0, |c| u64::from(c) * cfg.block_bytes as u64)
        });
        let store = Rc::new_cyclic(|me| ShardStore {
            me: me.clone(),
            path: path_s,
            media,
            state: RefCell::new(state),
            cache: RefCell::new(RecordCache::new(cfg.cache_bytes)),
            tuning: Arc::new(Tuning::from_config(&cfg)),
            cfg,
            flush_lock: Semaphore::new(1),
            write_done: Semaphore::new(0),
            write_waiters: Cell::new(0),
            defrag_lock: Semaphore::new(1),
            growing: Cell::new(false),
            fs_full: Cell::new(false),
            flushes: Cell::new(0),
            blocks_defragged: Cell::new(0),
            fault: Cell::new(None),
            stats,
            truncate,
        });
        // Recovery's open block came out of the headroom: refill it before serving.
        store.grow_file().await;
        Ok((store, report))
    }

    /// Logs a warning when the filesystem cannot hold the namespace's `filesize`: the files
    /// grow only as data comes, so the server starts, but client writes will stop with
    /// out-of-space once the filesystem fills, well before `filesize`. Shard 0 speaks for the
    /// namespace, assuming the other shards' files are as large as its own.
    async fn warn_if_filesize_does_not_fit(cfg: &StoreConfig, media: &Media, span_bytes: u64) {
        let fs_free = match media.fs_free_bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(dir = %cfg.dir.display(), error = %e, "cannot read the filesystem's free space");
                return;
            }
        };
        let shards = u64::from(cfg.shard_count);
        let growth_bytes = cfg.file_bytes_max.saturating_sub(span_bytes) * shards;
        if growth_bytes > fs_free {
            tracing::warn!(
                namespace = %cfg.namespace,
                dir = %cfg.dir.display(),
                filesize_bytes = cfg.file_bytes_max * shards,
                fs_free_bytes = fs_free,
                "filesize is more than the filesystem has free: writes will stop with out-of-space \
                 (result 8) when it fills, before filesize; lower filesize or free space"
            );
        }
    }

    /// Rebuilds the index: reads every block header, replays the blocks in sequence order
    /// (newest version wins), recomputes each block's live bytes, and zeroes the headers of
    /// blocks that hold nothing live so they can be reused.
    async fn recover(
        cfg: &StoreConfig,
        media: &Media,
        path: &str,
    ) -> Result<(State, RecoveryReport), StoreError> {
        let started = Instant::now();
        let io = |source: std::io::Error| StoreError::Io {
            path: path.to_string(),
            source,
        };
        let bs = cfg.block_bytes as u64;
        let k_ext = media.extent_count();
        // Which blocks lie within their extent's file as it is now (the rest were never
        // written), and for each block the extent whose read stream serves it.
        let present = media.present_blocks()?;
        let n_blocks = u32::try_from(present.len()).map_err(|_| StoreError::BadDataFile {
            path: path.to_string(),
            reason: format!("{} blocks is more than a shard can address", present.len()),
        })?;
        let first = FILE_HEADER_BYTES as u64;
        let extent_of = |k: u32| media.locate(first + u64::from(k) * bs).0;
        let capacity = media.capacity_blocks().or_else(|| {
            (cfg.file_bytes_max > 0).then(|| {
                u32::try_from(cfg.file_bytes_max.saturating_sub(first) / bs).unwrap_or(u32::MAX)
            })
        });
        let growth = if media.grows() {
            Growth::Reserved
        } else {
            Growth::OnDemand
        };
        let mut table = BlockTable::new(first, bs, capacity, growth);
        let mut report = RecoveryReport::default();
        // Pass 1: headers, to learn each block's sequence number. Many reads in flight at
        // once (glommio's ordered bulk I/O), one stream per extent: on an SSD this pass is
        // latency-bound otherwise.
        let mut order = Vec::new();
        let mut to_zero = Vec::new();
        let mut head_reads: Vec<_> = (0..k_ext)
            .map(|e| {
                let heads: Vec<(u64, usize)> = (0..n_blocks)
                    .filter(|&k| present[k as usize] && extent_of(k) == e)
                    .map(|k| (media.locate(table.base_of(k)).1, IO_ALIGN_BYTES))
                    .collect();
                media
                    .file(e)
                    .read_many(
                        futures_lite::stream::iter(heads),
                        MergedBufferLimit::NoMerging,
                        ReadAmplificationLimit::NoAmplification,
                    )
                    .with_concurrency(RECOVERY_READS_IN_FLIGHT)
            })
            .collect();
        for k in 0..n_blocks {
            if !present[k as usize] {
                // Past the end of its extent's file: never written.
                table.set_recovered(
                    k,
                    BlockInfo {
                        sequence: 0,
                        live_bytes: 0,
                        state: BlockUse::Free,
                    },
                );
                continue;
            }
            let (_, head) = head_reads[extent_of(k)]
                .next()
                .await
                .expect("one result per block header")
                .map_err(|e| io(e.into()))?;
            match BlockHeader::decode(&head) {
                BlockState::Valid(h) if h.shard == cfg.shard && h.block_bytes as u64 == bs => {
                    order.push((h.sequence, k))
                }
                BlockState::Valid(h) => {
                    return Err(StoreError::BadDataFile {
                        path: path.to_string(),
                        reason: format!(
                            "block {k} belongs to shard {} with {}-byte blocks",
                            h.shard, h.block_bytes
                        ),
                    })
                }
                BlockState::Corrupt => {
                    report.corrupt_blocks += 1;
                    tracing::warn!(path, block = k, "skipping block with a corrupt header");
                    to_zero.push(k);
                }
                BlockState::Empty => {}
            }
            table.set_recovered(
                k,
                BlockInfo {
                    sequence: 0,
                    live_bytes: 0,
                    state: BlockUse::Free,
                },
            );
        }
        drop(head_reads);
        order.sort_unstable();
        // Pass 2: replay in sequence order.
        let mut index = Index::default();
        let mut shadows = Shadows::default();
        let now = clock::now_secs();
        let mut buf = vec![0u8; cfg.block_bytes];
        let mut last_log = Instant::now();
        let mut max_sequence = 0;
        // Blocks in sequence order, read ahead several at a time, one stream per extent;
        // blocks that sit next to each other on disk (a file written front to back) merge
        // into one large read.
        let mut block_reads: Vec<_> = (0..k_ext)
            .map(|e| {
                let blocks: Vec<(u64, usize)> = order
                    .iter()
                    .filter(|&&(_, k)| extent_of(k) == e)
                    .map(|&(_, k)| (media.locate(table.base_of(k)).1, cfg.block_bytes))
                    .collect();
                media
                    .file(e)
                    .read_many(
                        futures_lite::stream::iter(blocks),
                        MergedBufferLimit::Custom(RECOVERY_READ_BYTES_MAX.max(cfg.block_bytes)),
                        ReadAmplificationLimit::NoAmplification,
                    )
                    .with_concurrency(RECOVERY_BLOCKS_IN_FLIGHT)
            })
            .collect();
        for (n, &(sequence, k)) in order.iter().enumerate() {
            let base = table.base_of(k);
            let (_, read) = block_reads[extent_of(k)]
                .next()
                .await
                .expect("one result per block")
                .map_err(|e| io(e.into()))?;
            // A block at the end of the file may be short: replay it zero-padded.
            let block: &[u8] = if read.len() == cfg.block_bytes {
                &read
            } else {
                buf[..read.len()].copy_from_slice(&read);
                buf[read.len()..].fill(0);
                &buf
            };
            media.recovered_block(base, block);
            let (_, replay) = recovery::replay_block(block, base, &mut index, &mut shadows, now)
                .expect("pass 1 saw a valid header");
            if n == 0 {
                // Size the tables once from the first block (an upper bound: versions later
                // overwritten count too; end_bulk shrinks what was over-reserved).
                let estimate = replay.records as usize * order.len();
                let partitions = PARTITION_COUNT as usize / cfg.shard_count as usize;
                index.expect_records(estimate, partitions.max(1));
            }
            report.blocks += 1;
            report.records += replay.records;
            report.bad_records += replay.bad_records;
            if replay.bad_records > 0 {
                tracing::warn!(
                    path,
                    block = k,
                    bad_records = replay.bad_records,
                    "skipped records with bad checksums"
                );
            }
            table.set_recovered(
                k,
                BlockInfo {
                    sequence,
                    live_bytes: 0,
                    state: BlockUse::Sealed,
                },
            );
            max_sequence = max_sequence.max(sequence);
            if last_log.elapsed() > Duration::from_secs(2) {
                tracing::info!(path, blocks = n, of = order.len(), "recovery in progress");
                last_log = Instant::now();
            }
        }
        index.end_bulk();
        for (_, e) in index.iter() {
            table.add_live(e.offset, e.bytes);
        }
        for s in shadows.values() {
            table.add_live(s.offset, s.bytes);
        }
        // Blocks with nothing live are zeroed on disk before reuse, so their old records can
        // never be replayed again (a dropped tombstone must not let them come back).
        for &(_, k) in &order {
            if table.info(k).live_bytes == 0 {
                to_zero.push(k);
            }
        }
        if !to_zero.is_empty() {
            let mut zeroed = Ok(());
            for &k in &to_zero {
                zeroed = media.zero_header(table.base_of(k)).await;
                if zeroed.is_err() {
                    break;
                }
            }
            if zeroed.is_ok() {
                zeroed = media.sync_all().await.map_err(|(_, e)| e);
            }
            match zeroed {
                Ok(()) => {
                    for &k in &to_zero {
                        if table.info(k).state == BlockUse::Sealed {
                            table.release(k);
                        }
                    }
                }
                // Rewriting a header page needs no new space on a filesystem that updates in
                // place; where it does, the empty blocks stay sealed and defragmentation
                // frees them once there is space: the store must still start and serve.
                Err(e) if no_space(&e) => {
                    tracing::warn!(path, error = %e, "filesystem full: empty blocks are freed later");
                }
                Err(e) => return Err(io(e)),
            }
        }
        if media.grows() {
            // The open block comes out of the free blocks: reserve one beyond the headroom.
            let fs_free = media.fs_free_bytes().await.map_err(io)?;
            table.set_fs_room(client_room_blocks(fs_free, cfg.shard_count, bs));
            let want = table.growth_wanted();
            let want = want.unreserved + want.headroom + u64::from(want.headroom > 0);
            let want = want.min(table.capacity_left_blocks());
            let (n, err) = reserve_blocks(media, table.reserved_end(), bs, want).await;
            table.reserved(n);
            match err {
                Some(e) if no_space(&e) => tracing::warn!(
                    path,
                    free_blocks = table.free_count(),
                    error = %e,
                    "filesystem full: the data file cannot reserve its free blocks; client \
                     writes answer out-of-space until space is freed"
                ),
                Some(e) => return Err(io(e)),
                None => {}
            }
        }
        // A full filesystem and no free block in the file (one written before blocks were
        // reserved) still opens a block, unreserved: its writes answer out-of-space and are
        // retried until there is space again, and reads are served meanwhile.
        let open_idx =
            table
                .allocate(max_sequence + 1, Claim::Open)
                .ok_or(StoreError::OutOfSpace {
                    shard: cfg.shard,
                    reason: format!(
                        "{path} has no free block for new writes within {} bytes; raise filesize",
                        cfg.file_bytes_max
                    ),
                })?;
        let open = WriteBlock::new(
            table.base_of(open_idx),
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
            shadows,
            table,
            blocks: VecDeque::from([open]),
            next_sequence: max_sequence + 2,
            appended_lsn: 0,
            open_start_lsn: 0,
            durable_lsn: 0,
            written_lsn: 0,
            unsynced: Vec::new(),
            no_space: None,
            no_space_events: 0,
            spare_buffers: Vec::new(),
            staging: Vec::new(),
            failed: None,
        };
        Ok((state, report))
    }

    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// Number of device flushes so far (each is one or more writes and one fdatasync).
    pub fn flush_count(&self) -> u64 {
        self.flushes.get()
    }

    /// Blocks emptied by defragmentation and released for reuse so far.
    pub fn blocks_defragged(&self) -> u64 {
        self.blocks_defragged.get()
    }

    /// Bytes of the data file that blocks span (it grows only when no block is free).
    pub fn file_span_bytes(&self) -> u64 {
        self.state.borrow().table.span_bytes()
    }

    pub fn object_count(&self) -> usize {
        self.state.borrow().index.len()
    }

    /// The digests of every live (indexed) record, for re-homing.
    pub fn live_digests(&self) -> Vec<Digest> {
        self.state.borrow().index.iter().map(|(d, _)| d).collect()
    }

    /// Tombstones and expired records still kept on disk to shadow older versions.
    pub fn shadow_count(&self) -> usize {
        self.state.borrow().shadows.len()
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
        let e = st.index.get(digest)?;
        let gone = clock::is_expired(e.meta.void_time, clock::now_secs())
            || self.truncate.is_truncated(e.meta.last_update_ms, e.set_id);
        (!gone).then_some(e)
    }

    /// Reads the newest live version of a record: from the cache, from a write block still in
    /// memory, or from the device. The bytes are checksummed before they are returned. A read
    /// whose record moved (defragmentation) while it waited on the device starts over.
    pub async fn get(&self, digest: &Digest) -> Result<Option<Record>, StoreError> {
        self.stats.count_read();
        for _ in 0..READ_ATTEMPTS_MAX {
            let Some(entry) = self.meta(digest) else {
                return Ok(None);
            };
            match self.read_version(digest, entry).await? {
                Ok(record) => return Ok(Some(record)),
                Err(reason) if self.version(digest) == Some(entry.offset) => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        offset: entry.offset,
                        reason,
                    })
                }
                Err(_) => continue,
            }
        }
        Err(StoreError::Corrupt {
            path: self.path.clone(),
            offset: 0,
            reason: format!("record {digest:?} kept moving while being read"),
        })
    }

    /// The checksum tag of the block holding file offset `offset`.
    fn tag_at(&self, offset: u64) -> u32 {
        let st = self.state.borrow();
        block_tag(st.table.info(st.table.block_of(offset)).sequence)
    }

    /// One attempt at reading the version `entry` names. The inner error says why the bytes
    /// found were not that version.
    async fn read_version(
        &self,
        digest: &Digest,
        entry: IndexEntry,
    ) -> Result<Result<Record, String>, StoreError> {
        let check = |r: Result<Record, RecordDecodeError>| match r {
            Ok(rec) if rec.digest == *digest => Ok(rec),
            Ok(rec) => Err(format!(
                "holds digest {:?}, index expected {digest:?}",
                rec.digest
            )),
            Err(e) => Err(e.to_string()),
        };
        let tag = self.tag_at(entry.offset);
        if let Some(bytes) = self.cache.borrow_mut().get(digest, entry.offset) {
            self.stats.count_cache_hit();
            return Ok(check(Record::decode_tagged(&bytes, tag)));
        }
        let in_memory = {
            let st = self.state.borrow();
            st.blocks
                .iter()
                .find_map(|b| b.slice_at(entry.offset, entry.bytes as usize))
                .map(|bytes| Record::decode_tagged(bytes, tag))
        };
        if let Some(r) = in_memory {
            return Ok(check(r));
        }
        self.stats.count_device_read();
        let bytes = self
            .media
            .read(entry.offset, entry.bytes as usize)
            .await
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        let record = check(Record::decode_tagged(&bytes, tag));
        // Cache it only if it is still the newest version after the await.
        if record.is_ok()
            && self.cache.borrow().enabled()
            && self.version(digest) == Some(entry.offset)
        {
            self.cache
                .borrow_mut()
                .insert(*digest, entry.offset, &bytes[..]);
        }
        Ok(record)
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
        if self.cfg.commit_to_device {
            self.flush_to(ticket.0).await
        } else {
            // Back-pressure only: sealed blocks must leave memory, not yet reach stable media.
            // The writer waits for the oldest block's write, not for every write under way.
            loop {
                let (too_many, front_writing, sealed_end) = {
                    let st = self.state.borrow();
                    let front = st.blocks.front().expect("open block");
                    (
                        st.blocks.len() > UNFLUSHED_BLOCKS_MAX,
                        front.writing,
                        st.open_start_lsn,
                    )
                };
                if !too_many {
                    return Ok(());
                }
                if front_writing {
                    self.wait_for_write_behind().await;
                } else {
                    self.flush(sealed_end, false).await?;
                }
            }
        }
    }

    /// Waits until some write-behind finishes.
    async fn wait_for_write_behind(&self) {
        self.write_waiters.set(self.write_waiters.get() + 1);
        self.write_done
            .acquire(1)
            .await
            .expect("write-done semaphore is never closed");
        self.write_waiters.set(self.write_waiters.get() - 1);
    }

    /// The largest record this store accepts.
    pub fn record_bytes_max(&self) -> usize {
        WriteBlock::record_bytes_max(self.cfg.block_bytes)
    }

    /// Appends a record version (or a tombstone) to the open write block and updates the index.
    /// Synchronous, so a caller that checked the record's `version` appends before anything else
    /// can change it; the returned ticket is then awaited with `commit`.
    pub fn append(&self, record: &Record) -> Result<CommitTicket, StoreError> {
        let size = record.encoded_bytes();
        if size > self.record_bytes_max() {
            return Err(StoreError::RecordTooBig {
                size,
                max: self.record_bytes_max(),
            });
        }
        let claim = if record.tombstone {
            Claim::Delete
        } else {
            self.check_stop_writes()?;
            Claim::Client
        };
        let ticket = self.append_bytes(
            Incoming::Record(record),
            record.digest,
            record.meta,
            record.tombstone,
            claim,
        )?;
        self.stats.count_write();
        Ok(ticket)
    }

    /// Refuses client writes (deletes still pass) while live data fills `stop-writes-used-pct`
    /// of the capacity, fewer than `stop-writes-avail-pct` of the blocks or no more than the
    /// headroom are available, or the last write ran out of filesystem space; the reserve
    /// left is what deletes and defragmentation need to free space again. The capacity of
    /// the default layout's file is what the filesystem can hold now (see `space`).
    fn check_stop_writes(&self) -> Result<(), StoreError> {
        let st = self.state.borrow();
        if let Some(reason) = &st.no_space {
            return Err(StoreError::OutOfSpace {
                shard: self.cfg.shard,
                reason: format!(
                    "the filesystem is full ({reason}); writes resume once a flush succeeds"
                ),
            });
        }
        let Some(capacity) = st.table.capacity_blocks() else {
            return Ok(());
        };
        let available = st.table.available_blocks();
        if available <= HEADROOM_BLOCKS {
            return Err(StoreError::OutOfSpace {
                shard: self.cfg.shard,
                reason: self.full_reason(&st.table),
            });
        }
        let capacity = u64::from(capacity.max(1));
        let used_pct = st.table.live_total() * 100 / (capacity * self.cfg.block_bytes as u64);
        let avail_pct = st.table.available_blocks() * 100 / capacity;
        if used_pct >= self.tuning.get(Setting::StopWritesUsedPct)
            || avail_pct < self.tuning.get(Setting::StopWritesAvailPct)
        {
            return Err(StoreError::OutOfSpace {
                shard: self.cfg.shard,
                reason: format!(
                    "stop-writes: {used_pct}% used (limit {}%), {avail_pct}% of blocks available (minimum {}%)",
                    self.tuning.get(Setting::StopWritesUsedPct), self.tuning.get(Setting::StopWritesAvailPct)
                ),
            });
        }
        Ok(())
    }

    /// Why `table` has no block for a client write (the headroom is all that is left).
    fn full_reason(&self, table: &BlockTable) -> String {
        let left = table.capacity_left_blocks();
        if left == 0 {
            format!(
                "every block of the data file is in use (filesize {} bytes per core reached)",
                self.cfg.file_bytes_max
            )
        } else {
            format!(
                "the filesystem holding {} is nearly full: the last {HEADROOM_BLOCKS} free blocks \
                 are kept for deletes and defragmentation",
                self.path
            )
        }
    }

    /// Appends a record version: the one place that moves index entries, shadows, cache
    /// entries and block live bytes together. `shadow` says the bytes shadow older versions
    /// (a tombstone or an expired record) rather than being the live version. The record is
    /// encoded (or its bytes copied) and tagged for the open block, then appended to it.
    fn append_bytes(
        &self,
        incoming: Incoming<'_>,
        digest: Digest,
        meta: crate::record::RecordMeta,
        shadow: bool,
        claim: Claim,
    ) -> Result<CommitTicket, StoreError> {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        // The partition header is fetched while the record is encoded below, then the slot.
        st.index.prefetch(&digest, false);
        self.check_failed(st)?;
        let mut write_behind = None;
        let mut grow = false;
        let len = incoming.len();
        if !st.blocks.back().expect("open block").fits(len) {
            let sequence = st.next_sequence;
            let Some(idx) = st.table.allocate(sequence, claim) else {
                let reason = match claim {
                    Claim::Client => self.full_reason(&st.table),
                    Claim::Delete => "no free block left for deletes: the headroom is used up \
                                      until defragmentation frees a block"
                        .into(),
                    Claim::Defrag | Claim::Open => "no free block left at all".into(),
                };
                return Err(StoreError::OutOfSpace {
                    shard: self.cfg.shard,
                    reason,
                });
            };
            grow = st.table.growth_wanted() != GrowthWanted::default();
            st.next_sequence += 1;
            let last = st.blocks.back_mut().expect("open block");
            last.seal();
            let sealed_idx = st.table.block_of(last.base);
            st.table.seal(sealed_idx);
            // Write-behind: the full block goes to the device now, while appends go on into
            // the next one (a writer waits only once UNFLUSHED_BLOCKS_MAX blocks are pending).
            write_behind = Some(last.base);
            st.open_start_lsn = st.appended_lsn;
            let spare = st.spare_buffers.pop();
            st.blocks.push_back(WriteBlock::reusing(
                st.table.base_of(idx),
                BlockHeader {
                    sequence,
                    shard: self.cfg.shard,
                    block_bytes: self.cfg.block_bytes as u32,
                },
                spare,
            ));
        }
        let open = st.blocks.back_mut().expect("open block");
        let to_tag = block_tag(open.sequence);
        // A record is encoded (and checksummed) in a staging buffer that stays in this core's
        // cache, then streamed into the block: the block's bytes are for the device, and
        // ordinary stores would first read each line from memory and then evict the index
        // lines the next writes need (a tenth of a write-heavy core's time).
        let staged = len <= STAGING_BYTES_MAX;
        // The header has had the encode's time to arrive; the slot gets the checksum's.
        let index = &st.index;
        let prefetch_slot = || index.prefetch(&digest, true);
        let offset = if staged {
            if st.staging.len() < len {
                st.staging.resize(len, 0);
            }
            incoming.fill(&mut st.staging[..len], to_tag, prefetch_slot);
            open.append_streaming(&st.staging[..len])
        } else {
            open.append_with(len, |slot| incoming.fill(slot, to_tag, prefetch_slot))
        };
        let bytes = if staged {
            &st.staging[..len]
        } else {
            st.blocks
                .back()
                .expect("open block")
                .slice_at(offset, len)
                .expect("just appended")
        };
        let len = len as u32;
        // The version this one replaces: the live entry, or a shadow (at most one exists).
        let replaced = if shadow {
            st.index.remove(&digest)
        } else {
            let set_id = st.index.set_id(set_name_of(bytes));
            st.index.insert(
                digest,
                IndexEntry {
                    offset,
                    bytes: len,
                    meta,
                    set_id,
                },
            )
        };
        if let Some(old) = replaced {
            st.table.remove_live(old.offset, old.bytes);
        }
        if !st.shadows.is_empty() {
            if let Some(old) = st.shadows.remove(&digest) {
                st.table.remove_live(old.offset, old.bytes);
            }
        }
        st.table.add_live(offset, len);
        if shadow {
            st.shadows.insert(digest, Shadow { offset, bytes: len });
            self.cache.borrow_mut().remove(&digest);
        } else {
            self.cache.borrow_mut().insert(digest, offset, bytes);
        }
        st.appended_lsn += u64::from(len);
        self.stats.set_objects(st.index.len() as u64);
        self.stats.set_shadows(st.shadows.len() as u64);
        self.stats
            .set_usage(st.table.live_total(), st.index.memory_bytes());
        let ticket = CommitTicket(st.appended_lsn);
        drop(guard);
        // Started after the state is released: glommio runs a spawned task at once.
        if let (Some(base), Some(me)) = (write_behind, self.me.upgrade()) {
            glommio::spawn_local(async move { me.write_behind(base).await }).detach();
        }
        if grow && !self.growing.get() {
            if let Some(me) = self.me.upgrade() {
                glommio::spawn_local(async move { me.grow_file().await }).detach();
            }
        }
        Ok(ticket)
    }

    /// Makes every append up to log position `target` durable. Concurrent callers queue on the
    /// flush lock; whoever gets it writes everything appended so far, so the others usually
    /// find their bytes already durable when their turn comes (group commit).
    pub async fn flush_to(&self, target: u64) -> Result<(), StoreError> {
        self.flush(target, true).await
    }

    /// Writes a sealed block at once, from its own buffer and outside the flush lock, so the
    /// device works while appends fill the next blocks (a write waiting for the lock would
    /// start only once the executor noticed the previous one finish, which a core busy
    /// appending does late). [`ShardStore::flush`] waits for it instead of writing it again.
    /// Not synced: the flusher, a commit or a later flush syncs the extents it marks.
    async fn write_behind(&self, base: u64) {
        let pending = {
            let mut st = self.state.borrow_mut();
            if st.failed.is_some() {
                return;
            }
            let Some(block) = st.blocks.iter_mut().find(|b| b.base == base) else {
                return;
            };
            let Some(pending) = block.pending_write() else {
                return;
            };
            block.writing = true;
            pending
        };
        let used = pending.used;
        let mut marks = self.media.written_marks();
        let outcome = self.write_pending(pending, &mut marks).await;
        {
            let mut st = self.state.borrow_mut();
            mark_unsynced(&mut st, &marks);
            if let Some(block) = st.blocks.iter_mut().find(|b| b.base == base) {
                block.writing = false;
                if outcome.is_ok() {
                    block.mark_durable(used);
                }
            }
            retire_durable(&mut st);
        }
        if let Err(fault) = outcome {
            // Out of space: the block stays in memory, and the next flush writes it again.
            let _ = self.fault(fault);
        }
        // Every waiter gets a permit and looks again (a spare one is harmless: waiters check
        // their condition before they wait).
        self.write_done.signal(self.write_waiters.get().max(1));
    }

    /// Writes one block's pending pages; the error says what went wrong where. An armed fault
    /// (tests) replaces the device's answer.
    async fn write_pending(&self, w: PendingWrite, marks: &mut [bool]) -> Result<(), WriteFault> {
        let (offset, len) = (w.offset, w.bytes().len());
        let outcome = match self.fault.take() {
            None => self.media.write(w, marks).await,
            Some(InjectedFault::Eio) => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Some(InjectedFault::Enospc) => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
            Some(InjectedFault::ShortWrite) => Ok(len / 2),
        };
        match outcome {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(WriteFault::Failed(format!(
                "short write: {n} of {len} bytes at {offset}"
            ))),
            Err(e) => Err(WriteFault::of(&e, format!("write at {offset} failed"))),
        }
    }

    /// Writes every append up to `target` to the device, and with `sync` makes it durable
    /// (fdatasync of every extent written since the last sync). Without `sync` (back-pressure
    /// under `commit-to-device false`, where the background flusher syncs every
    /// `flush-max-ms`) the bytes are on the device but not yet forced to stable media.
    async fn flush(&self, target: u64, sync: bool) -> Result<(), StoreError> {
        let done = |st: &State| {
            if sync {
                st.durable_lsn >= target
            } else {
                st.written_lsn >= target
            }
        };
        if done(&self.state.borrow()) {
            return Ok(());
        }
        let _permit = self
            .flush_lock
            .acquire_permit(1)
            .await
            .expect("flush lock semaphore is never closed");
        let no_space_before;
        let (segments, upto) = {
            let st = self.state.borrow();
            if done(&st) {
                return Ok(());
            }
            self.check_failed(&st)?;
            no_space_before = st.no_space_events;
            // A target within the sealed blocks (back-pressure) leaves the open block alone:
            // its partial page would only be written again once it fills. Blocks whose
            // write-behind is under way are waited for below, not written twice.
            let sealed_only = target <= st.open_start_lsn;
            let segments: Vec<_> = st
                .blocks
                .iter()
                .filter(|b| (b.sealed || !sealed_only) && !b.writing)
                .filter_map(|b| b.pending_write().map(|w| (b.base, w)))
                .collect();
            let upto = if sealed_only {
                st.open_start_lsn
            } else {
                st.appended_lsn
            };
            (segments, upto)
        };
        // Every segment's write is in flight at once.
        let writes = segments.into_iter().map(|(base, w)| {
            let used = w.used;
            let mut marks = self.media.written_marks();
            async move {
                let outcome = self.write_pending(w, &mut marks).await;
                (base, used, outcome, marks)
            }
        });
        let mut extents_written = self.media.written_marks();
        let mut written = Vec::new();
        let mut first_fault = None;
        for (base, used, outcome, marks) in join_all(writes).await {
            for (all, one) in extents_written.iter_mut().zip(marks) {
                *all |= one;
            }
            match outcome {
                Ok(()) => written.push((base, used)),
                Err(fault) => {
                    first_fault.get_or_insert(fault);
                }
            }
        }
        if let Some(fault) = first_fault {
            // What did land is not marked durable: the next flush writes it again.
            mark_unsynced(&mut self.state.borrow_mut(), &extents_written);
            return Err(self.fault(fault));
        }
        // Every write-behind started before this flush must land too.
        while self.state.borrow().blocks.iter().any(|b| b.writing) {
            self.wait_for_write_behind().await;
        }
        {
            let st = self.state.borrow();
            self.check_failed(&st)?;
            if st.no_space_events != no_space_before {
                // A write-behind this flush waited for ran out of space.
                return Err(StoreError::OutOfSpace {
                    shard: self.cfg.shard,
                    reason: st.no_space.clone().unwrap_or_default(),
                });
            }
        }
        if sync {
            let unsynced = std::mem::take(&mut self.state.borrow_mut().unsynced);
            for (mark, was) in extents_written.iter_mut().zip(unsynced) {
                *mark |= was;
            }
            if let Err((path, e)) = self.media.sync(&extents_written).await {
                mark_unsynced(&mut self.state.borrow_mut(), &extents_written);
                return Err(self.fault(WriteFault::of(&e, format!("fdatasync of {path} failed"))));
            }
        } else {
            mark_unsynced(&mut self.state.borrow_mut(), &extents_written);
        }
        self.flushes.set(self.flushes.get() + 1);
        let mut st = self.state.borrow_mut();
        for (base, used) in written {
            if let Some(b) = st.blocks.iter_mut().find(|b| b.base == base) {
                b.mark_durable(used);
            }
        }
        st.written_lsn = st.written_lsn.max(upto);
        if sync {
            assert!(upto >= st.durable_lsn, "durable_lsn only grows");
            st.durable_lsn = upto;
        }
        if let Some(reason) = st.no_space.take() {
            tracing::info!(path = %self.path, shard = self.cfg.shard, was = %reason, "writes to the device succeed again: client writes resume");
        }
        retire_durable(&mut st);
        Ok(())
    }

    /// A shard that failed a device write refuses every further write and flush.
    fn check_failed(&self, st: &State) -> Result<(), StoreError> {
        match &st.failed {
            Some(reason) => Err(StoreError::DeviceFailed {
                shard: self.cfg.shard,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Arms a fault for the next device write (tests only).
    pub fn inject_fault(&self, fault: InjectedFault) {
        self.fault.set(Some(fault));
    }

    /// Answers a failed write or sync: out of space keeps the shard serving (the bytes stay
    /// in memory and client writes are refused until a flush succeeds); anything else fails
    /// the shard.
    fn fault(&self, fault: WriteFault) -> StoreError {
        match fault {
            WriteFault::Failed(reason) => self.fail(reason),
            WriteFault::NoSpace(reason) => {
                let mut st = self.state.borrow_mut();
                if st.no_space.is_none() {
                    tracing::warn!(path = %self.path, shard = self.cfg.shard, %reason, "filesystem full: client writes answer out-of-space until a flush succeeds");
                }
                st.no_space = Some(reason.clone());
                st.no_space_events += 1;
                StoreError::OutOfSpace {
                    shard: self.cfg.shard,
                    reason,
                }
            }
        }
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
        let end = self.state.borrow().appended_lsn;
        self.flush_to(end).await
    }

    /// Flushes partial blocks every `flush-max-ms` so that, with `commit-to-device false`,
    /// acknowledged writes reach the device within that bound. Stops when the store is dropped.
    pub fn spawn_background_flusher(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let tuning = self.tuning.clone();
        glommio::spawn_local(async move {
            loop {
                // Read each time round: set-config may change it.
                let period = Duration::from_millis(tuning.get(Setting::FlushMaxMs).max(1));
                glommio::timer::sleep(period).await;
                let Some(store) = weak.upgrade() else { break };
                if let Err(e) = store.flush_all().await {
                    tracing::error!(error = %e, "background flush failed");
                }
            }
        })
        .detach();
    }

    /// Moves every expired record out of the index into the shadows: its bytes stay on disk,
    /// still keeping older versions dead, until defragmentation may drop them. No I/O.
    /// Returns how many records expired.
    pub async fn expire_sweep(&self, now_secs: u32) -> usize {
        let candidates: Vec<Digest> = self
            .state
            .borrow()
            .index
            .iter()
            .filter(|(_, e)| clock::is_expired(e.meta.void_time, now_secs))
            .map(|(d, _)| d)
            .collect();
        let mut expired = 0;
        for chunk in candidates.chunks(SWEEP_CHUNK_RECORDS) {
            expired += self.expire_chunk(chunk, now_secs);
            // Let requests run between chunks: a sweep of millions never stalls the core.
            glommio::yield_if_needed().await;
        }
        self.stats.add_expired(expired as u64);
        expired
    }

    /// Expires the records of `digests` that are (still) expired; no await inside, so each
    /// record is checked and moved at one instant.
    fn expire_chunk(&self, digests: &[Digest], now_secs: u32) -> usize {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let mut cache = self.cache.borrow_mut();
        let mut expired = 0;
        for d in digests {
            // A write between chunks may have given the record a new life.
            let Some(e) = st.index.get(d) else {
                continue;
            };
            if !clock::is_expired(e.meta.void_time, now_secs) {
                continue;
            }
            st.index.remove(d);
            cache.remove(d);
            st.shadows.insert(
                *d,
                Shadow {
                    offset: e.offset,
                    bytes: e.bytes,
                },
            );
            expired += 1;
        }
        self.stats.set_objects(st.index.len() as u64);
        self.stats.set_shadows(st.shadows.len() as u64);
        self.stats
            .set_usage(st.table.live_total(), st.index.memory_bytes());
        expired
    }

    /// Share of the capacity in live bytes, in percent; `None` without a `filesize` limit.
    fn used_pct(&self) -> Option<u64> {
        let st = self.state.borrow();
        let capacity = u64::from(st.table.capacity_blocks()?.max(1)) * self.cfg.block_bytes as u64;
        Some(st.table.live_total() * 100 / capacity)
    }

    /// When live data is above `evict-used-pct` of the capacity, deletes records that have a
    /// TTL, soonest to expire first, until it is below. Each eviction appends a tombstone, so an
    /// evicted record does not come back after a restart; records without a TTL are never
    /// evicted. Returns how many records were evicted.
    pub async fn evict(&self) -> Result<usize, StoreError> {
        let limit = self.tuning.get(Setting::EvictUsedPct);
        if limit == 0 || self.used_pct().is_none_or(|u| u < limit) {
            return Ok(0);
        }
        let mut candidates: Vec<(u32, Digest, u16)> = self
            .state
            .borrow()
            .index
            .iter()
            .filter(|(_, e)| e.meta.void_time != 0)
            .map(|(d, e)| (e.meta.void_time, d, e.meta.generation))
            .collect();
        candidates.sort_unstable();
        let mut evicted = 0;
        for (n, (void_time, digest, generation)) in candidates.into_iter().enumerate() {
            if n % SWEEP_CHUNK_RECORDS == SWEEP_CHUNK_RECORDS - 1 {
                glommio::yield_if_needed().await;
            }
            if self.used_pct().is_none_or(|u| u < limit) {
                break;
            }
            // A write while this loop yielded may have renewed the record: evict only the
            // version that was chosen.
            let unchanged =
                self.state.borrow().index.get(&digest).is_some_and(|e| {
                    e.meta.generation == generation && e.meta.void_time == void_time
                });
            if !unchanged {
                continue;
            }
            let tombstone = Record::tombstone(digest, generation, clock::now_ms());
            let _ = self.append_bytes(
                Incoming::Record(&tombstone),
                digest,
                tombstone.meta,
                true,
                Claim::Delete,
            )?;
            evicted += 1;
        }
        self.stats.add_evicted(evicted as u64);
        Ok(evicted)
    }

    /// Sweeps expired records every `nsup-period` seconds (none while it is 0; set-config may
    /// change it at any time). Stops when the store is dropped.
    pub fn spawn_expirer(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let tuning = self.tuning.clone();
        glommio::spawn_local(async move {
            loop {
                let secs = tuning.get(Setting::NsupPeriod);
                // While sweeps are off, look again every second for a new period.
                glommio::timer::sleep(Duration::from_secs(secs.max(1))).await;
                if secs == 0 {
                    if weak.strong_count() == 0 {
                        break;
                    }
                    continue;
                }
                let Some(store) = weak.upgrade() else { break };
                let n = store.expire_sweep(clock::now_secs()).await;
                if n > 0 {
                    tracing::info!(shard = store.cfg.shard, expired = n, "expiry sweep");
                }
                match store.evict().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        shard = store.cfg.shard,
                        evicted = n,
                        "evict-used-pct crossed: evicted records"
                    ),
                    Err(e) => {
                        tracing::error!(shard = store.cfg.shard, error = %e, "eviction failed")
                    }
                }
            }
        })
        .detach();
    }

    /// Defragments blocks below `defrag-lwm-pct` one at a time, `defrag-sleep` apart, and
    /// checks again every 100 ms when there is nothing to do. Stops when the store is dropped.
    pub fn spawn_defragmenter(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let tuning = self.tuning.clone();
        glommio::spawn_local(async move {
            let mut space_checked = Instant::now();
            loop {
                let pause = Duration::from_micros(tuning.get(Setting::DefragSleep));
                let Some(store) = weak.upgrade() else { break };
                if space_checked.elapsed() >= Duration::from_millis(SPACE_CHECK_PERIOD_MS) {
                    store.tend_space().await;
                    space_checked = Instant::now();
                }
                let outcome = store.defrag_once().await;
                drop(store);
                match outcome {
                    Ok(true) => glommio::timer::sleep(pause).await,
                    Ok(false) => glommio::timer::sleep(Duration::from_millis(100)).await,
                    Err(e) => {
                        tracing::error!(error = %e, "defragmentation failed");
                        glommio::timer::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
        .detach();
    }

    /// Looks at the filesystem's free space again and grows the file if it wants to (see
    /// [`ShardStore::grow_file`]); after an out-of-space write, tries the flush again, so
    /// client writes resume as soon as there is space.
    pub async fn tend_space(&self) {
        self.grow_file().await;
        if self.state.borrow().no_space.is_some() {
            if let Err(e) = self.flush_all().await {
                tracing::debug!(shard = self.cfg.shard, error = %e, "flush still fails");
            }
        }
    }

    /// Brings the default layout's file up to the free blocks its table wants: reads the
    /// filesystem's free space (which also sets the room client writes have), then reserves
    /// blocks at the end of the file, the headroom from any space left, blocks ahead of
    /// client writes only within their room. One growth at a time; nothing for other media.
    async fn grow_file(&self) {
        if !self.media.grows() || self.growing.replace(true) {
            return;
        }
        let _growing = GrowingGuard(&self.growing);
        let bs = self.cfg.block_bytes as u64;
        let fs_free = match self.media.fs_free_bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %self.path, error = %e, "cannot read the filesystem's free space");
                return;
            }
        };
        let (want, from) = {
            let mut st = self.state.borrow_mut();
            st.table
                .set_fs_room(client_room_blocks(fs_free, self.cfg.shard_count, bs));
            let w = st.table.growth_wanted();
            (
                w.unreserved + w.headroom + w.ahead.min(st.table.growth_room()),
                st.table.reserved_end(),
            )
        };
        if want == 0 {
            return;
        }
        let (n, err) = reserve_blocks(&self.media, from, bs, want).await;
        {
            let mut st = self.state.borrow_mut();
            assert_eq!(st.table.reserved_end(), from, "only this growth reserves");
            // Blocks appended on demand meanwhile lie after `from`: the first `n` reserved
            // are still the first `n` after it.
            st.table.reserved(n);
            if err.is_some() {
                st.table.set_fs_room(0);
            }
        }
        // Logged when the file stops or starts growing, not at every look.
        let was_full = self.fs_full.replace(err.as_ref().is_some_and(no_space));
        match err {
            None if was_full => {
                tracing::info!(path = %self.path, "the filesystem has space again: the data file grows")
            }
            None => {}
            Some(e) if no_space(&e) && !was_full => tracing::warn!(
                path = %self.path,
                reserved = n,
                wanted = want,
                error = %e,
                "filesystem full: the data file cannot grow; client writes answer \
                 out-of-space while deletes and defragmentation use its free blocks"
            ),
            Some(e) if no_space(&e) => {}
            Some(e) => {
                tracing::warn!(path = %self.path, error = %e, "reserving space in the data file failed")
            }
        }
    }

    /// Defragments the emptiest sealed block below the low-water mark: re-appends its live
    /// records (dropping tombstones no older version needs), makes the copies durable, zeroes
    /// the block's header on disk and releases it for reuse. Returns whether a block was freed.
    pub async fn defrag_once(&self) -> Result<bool, StoreError> {
        let _permit = self
            .defrag_lock
            .acquire_permit(1)
            .await
            .expect("defrag lock semaphore is never closed");
        let candidate = {
            let st = self.state.borrow();
            if st.failed.is_some() {
                return Ok(false);
            }
            let in_memory = |idx: u32| st.blocks.iter().any(|b| st.table.block_of(b.base) == idx);
            st.table
                .defrag_candidate(self.tuning.get(Setting::DefragLwmPct), in_memory)
        };
        let Some(idx) = candidate else {
            return Ok(false);
        };
        let (base, sequence) = {
            let st = self.state.borrow();
            (st.table.base_of(idx), st.table.info(idx).sequence)
        };
        let io = |source: std::io::Error| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let data = self.media.read_block(base).await.map_err(io)?;
        match BlockHeader::decode(&data) {
            BlockState::Valid(h) if h.sequence == sequence => {}
            other => {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    offset: base,
                    reason: format!("block {idx} to defragment reads back as {other:?}"),
                })
            }
        }
        let tag = block_tag(sequence);
        let mut pos = BLOCK_HEADER_BYTES;
        while pos + RECORD_FIXED_BYTES <= data.len() {
            let h = match decode_header_tagged(&data[pos..], tag) {
                Ok(h) => h,
                Err(RecordDecodeError::BadChecksum { .. }) => {
                    let len = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().expect("4"));
                    pos += len as usize;
                    continue;
                }
                Err(_) => break,
            };
            let len = h.total_bytes as usize;
            self.relocate(idx, base + pos as u64, &data[pos..pos + len], tag, &h)?;
            pos += len;
        }
        let live = self.state.borrow().table.info(idx).live_bytes;
        if live != 0 {
            // Something the index points at did not verify on disk: keep the block.
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                offset: base,
                reason: format!("block {idx} still has {live} live bytes after defragmentation"),
            });
        }
        self.flush_all().await?;
        // Out of space here leaves the block sealed and empty: a later pass zeroes it again.
        if let Err(e) = self.media.zero_header(base).await {
            return Err(self.fault(WriteFault::of(&e, format!("zeroing block {idx} failed"))));
        }
        if let Err((_, e)) = self.media.sync_all().await {
            return Err(self.fault(WriteFault::of(
                &e,
                format!("fdatasync after zeroing block {idx} failed"),
            )));
        }
        self.state.borrow_mut().table.release(idx);
        self.blocks_defragged.set(self.blocks_defragged.get() + 1);
        Ok(true)
    }

    /// Moves one record of block `idx` out of it if it is still live there. Synchronous: the
    /// liveness check and the append cannot be separated by another write.
    fn relocate(
        &self,
        idx: u32,
        offset: u64,
        bytes: &[u8],
        tag: u32,
        h: &RecordHeader,
    ) -> Result<(), StoreError> {
        let (live, shadow) = {
            let st = self.state.borrow();
            let live = st.index.get(&h.digest).is_some_and(|e| e.offset == offset);
            let shadow = st
                .shadows
                .get(&h.digest)
                .is_some_and(|s| s.offset == offset);
            (live, shadow)
        };
        if shadow && self.state.borrow().table.is_oldest_in_use(idx) {
            // No older version of this digest can remain anywhere: the shadow is not needed.
            let mut st = self.state.borrow_mut();
            st.shadows.remove(&h.digest);
            st.table.remove_live(offset, h.total_bytes);
            self.stats.set_shadows(st.shadows.len() as u64);
            return Ok(());
        }
        if live || shadow {
            let _ = self.append_bytes(
                Incoming::Bytes { bytes, tag },
                h.digest,
                h.meta,
                shadow,
                Claim::Defrag,
            )?;
        }
        Ok(())
    }
}
