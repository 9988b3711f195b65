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
//!
//! One file per concern: `config` (what the store is told), `write` (the append path and
//! stop-writes), `commit` (log positions, write-behind, flushes, device faults), `read`,
//! `recover` (cold start), `expiry` (expiry and eviction), `defrag`, and `growth` (reserving
//! file space), `keydir` (the index and shadows, with the one mutation point every record
//! change goes through), `update` (read-modify-write with its optimistic retries) and
//! `apply` (storing a version decided elsewhere if it is newer). This file holds the store's state and `open`.

mod apply;
mod commit;
mod config;
mod defrag;
mod drop;
mod expiry;
mod growth;
mod keydir;
mod read;
mod recover;
mod sindex;
mod update;
mod write;

pub use apply::{is_newer, is_newer_by, supersedes, Applied, ConflictPolicy};
pub use commit::UNFLUSHED_BLOCKS_MAX;
pub use config::StoreConfig;
pub use keydir::SWEEP_DEAD_MIN;
pub(crate) use keydir::{Change, Keydir, Uncounted};
pub(crate) use read::CacheFill;
pub use recover::RecoveryReport;
pub use update::{Decision, UpdateError, UPDATE_ATTEMPTS_MAX};

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use apogee_wire::Digest;
use glommio::sync::Semaphore;

use crate::block::{Page, WriteBlock, IO_ALIGN_BYTES};
use crate::cache::RecordCache;
use crate::error::StoreError;
use crate::shard::media::Media;
use crate::shard::space::BlockTable;
use crate::shard::truncate::{self, TruncatePoints, Truncated};
use crate::sindex::Indexer;
use crate::stats::ShardStats;
use crate::tuning::Tuning;

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

pub(super) struct State {
    /// The index and shadows; every change to them goes through `Keydir::mutate`.
    pub(super) keydir: Keydir,
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

impl State {
    /// The order of the log positions, checked after every change to them: every durable byte
    /// is written, every written byte appended, and the open block starts within the log.
    pub(super) fn assert_log_positions(&self) {
        assert!(
            self.durable_lsn <= self.written_lsn,
            "durable {} past written {}",
            self.durable_lsn,
            self.written_lsn
        );
        assert!(
            self.written_lsn <= self.appended_lsn,
            "written {} past appended {}",
            self.written_lsn,
            self.appended_lsn
        );
        assert!(
            self.open_start_lsn <= self.appended_lsn,
            "open block starts at {} past appended {}",
            self.open_start_lsn,
            self.appended_lsn
        );
    }
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
    /// Decides each new version's secondary-index entries (`None`: no index is defined).
    indexer: RefCell<Option<Rc<dyn Indexer>>>,
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ShardStore {
    /// The shard's per-set object counts, for the `sets` info command.
    pub fn set_stats(&self) -> Arc<crate::sets::SetStats> {
        self.state.borrow().keydir.index().set_stats()
    }

    /// The shard's truncate cut-offs, for the `truncate` info commands.
    pub fn truncate_points(&self) -> Arc<TruncatePoints> {
        self.truncate.clone()
    }

    /// Opens (creating if needed) the shard's media and rebuilds the index from it.
    pub async fn open(
        cfg: StoreConfig,
        stats: Arc<ShardStats>,
    ) -> Result<(Rc<ShardStore>, RecoveryReport), StoreError> {
        let tuning = Arc::new(Tuning::from_config(&cfg));
        Self::open_truncated(cfg, stats, &Truncated::default(), tuning).await
    }

    /// [`ShardStore::open`], skipping the records `truncated` cuts off, so that a truncate
    /// survives a restart, and reading its live settings from `tuning`: one per namespace,
    /// shared by all its shards, so `set-config` changes them in one place.
    pub async fn open_truncated(
        cfg: StoreConfig,
        stats: Arc<ShardStats>,
        truncated: &Truncated,
        tuning: Arc<Tuning>,
    ) -> Result<(Rc<ShardStore>, RecoveryReport), StoreError> {
        assert!(cfg.shard < cfg.shard_count);
        assert!(cfg.block_bytes.is_multiple_of(IO_ALIGN_BYTES));
        assert!((1..100).contains(&cfg.defrag_lwm_pct));
        let media = Media::open(&cfg).await?;
        let path_s = media.describe();
        let (mut state, mut report) = Self::recover(&cfg, &media, &path_s).await?;
        let truncate = Arc::new(TruncatePoints::default());
        report.truncated = truncate::skip_truncated(&mut state, &truncate, truncated);
        report.objects = state.keydir.index().len() as u64;
        if media.grows() && cfg.shard == 0 && cfg.file_bytes_max > 0 {
            Self::warn_if_filesize_does_not_fit(&cfg, &media, state.table.span_bytes()).await;
        }
        stats.add_bad_records(report.bad_records);
        stats.set_objects(report.objects);
        stats.set_shadows(state.keydir.shadows().len() as u64);
        stats.set_usage(
            state.table.live_total(),
            state.keydir.index().memory_bytes(),
        );
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
            tuning,
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
            indexer: RefCell::new(None),
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
        self.state.borrow().keydir.index().len()
    }

    /// Removes the index entries of `digests` that `remove` picks (absent ones are skipped),
    /// with their cached copies, and refreshes the shard's object and usage counts; returns
    /// how many. No await inside, so the pick sees each entry as it is now. Truncate sweeps
    /// and partition drops take their chunks through here.
    pub(crate) fn remove_entries(
        &self,
        digests: &[Digest],
        remove: impl Fn(&crate::index::IndexEntry) -> bool,
    ) -> usize {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let mut cache = self.cache.borrow_mut();
        let mut removed = 0;
        for d in digests {
            if !st.keydir.index().get(d).is_some_and(|e| remove(&e)) {
                continue;
            }
            st.keydir
                .mutate_indexed(Change::Remove { digest: *d }, &mut st.table, None);
            cache.remove(d);
            removed += 1;
        }
        self.stats.set_objects(st.keydir.index().len() as u64);
        self.stats
            .set_usage(st.table.live_total(), st.keydir.index().memory_bytes());
        removed
    }

    /// The digests of every live (indexed) record, for re-homing.
    pub fn live_digests(&self) -> Vec<Digest> {
        self.state
            .borrow()
            .keydir
            .index()
            .iter()
            .map(|(d, _)| d)
            .collect()
    }

    /// Tombstones and expired records still kept on disk to shadow older versions.
    pub fn shadow_count(&self) -> usize {
        self.state.borrow().keydir.shadows().len()
    }
}
