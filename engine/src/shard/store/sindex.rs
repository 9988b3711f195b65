//! The store's side of secondary indexes: which indexer decides a new version's entries,
//! adding and dropping an index, the background build that indexes the records already
//! stored, and the bounded walks queries take over an index's entries.
//!
//! Entries change only under the state borrow, through `Keydir::mutate_indexed` (writes,
//! deletes, expiry, truncation) or `Keydir::build_sindex_entries` (the build, which yields to
//! its executor between chunks and never overwrites what a newer write has set). Nothing here
//! holds the state borrowed across an await.

use std::rc::Rc;

use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::Digest;

use super::{CacheFill, ShardStore};
use crate::record::Record;
use crate::shard::iterate::PartitionCursor;
use crate::sindex::{IndexId, IndexKey, Indexer};
use crate::StoreError;

/// Most entries one walk of a query looks at before it hands back what it found (the state
/// is borrowed for the walk, so other requests wait at most this long).
pub const SINDEX_WALK_ENTRIES_MAX: usize = 4096;

/// Leaves one step of the background sweep walks (~7,000 entries, some tens of µs) before it
/// yields to the core's other work.
pub const SWEEP_STEP_LEAVES: usize = 64;

/// How often the background sweep looks for dead handles (records removed or rewritten while
/// indexes exist).
pub const SWEEP_PERIOD_MS: u64 = 200;

/// A sweep walks every entry, so it starts only once a 64th of the records are dead, or
/// [`SWEEP_WAIT_MAX_MS`] after the last one ended: at most one walk of the entries per two
/// seconds unless records churn faster (then a walk per 64th of them), and the statistics'
/// entry counts settle within about two seconds.
pub const SWEEP_DEAD_FRACTION: usize = 64;
/// See [`SWEEP_DEAD_FRACTION`].
pub const SWEEP_WAIT_MAX_MS: u64 = 2_000;

/// Records a background build gathers before it puts their entries into the index at once
/// (about 60 bytes each while gathered: 3.75 MiB).
pub const BUILD_RUN_RECORDS_MAX: usize = 65_536;

/// A build's gathered records: digest, the version read, and their keys' range in `keys`.
#[derive(Default)]
struct BuildRun {
    records: Vec<(Digest, crate::record::RecordMeta, u32, u32)>,
    keys: Vec<IndexKey>,
}

impl BuildRun {
    fn push(&mut self, record: &Record, keys: impl Iterator<Item = IndexKey>) {
        let from = self.keys.len();
        self.keys.extend(keys);
        let to = self.keys.len();
        let span = |n: usize| u32::try_from(n).expect("a run's keys fit in u32");
        self.records
            .push((record.digest, record.meta, span(from), span(to)));
    }
}

/// What one walk over an index found.
pub struct SindexWalk {
    /// Entries that passed the caller's test, in (key, digest) order.
    pub found: Vec<(IndexKey, Digest)>,
    /// Where the next walk starts (exclusive); `None` when the range is exhausted.
    pub next: Option<(IndexKey, Digest)>,
}

impl ShardStore {
    /// Installs what decides each new version's entries (`None`: no index is defined).
    pub fn set_indexer(&self, indexer: Option<Rc<dyn Indexer>>) {
        *self.indexer.borrow_mut() = indexer;
    }

    /// `record`'s entries in every defined index; `None` when no index is defined.
    pub(super) fn sindex_keys(&self, record: &Record) -> Option<Vec<(IndexId, IndexKey)>> {
        let indexer = self.indexer.borrow();
        let indexer = indexer.as_ref().filter(|i| !i.is_empty())?;
        let mut keys = Vec::new();
        indexer.keys(record, &mut keys);
        Some(keys)
    }

    /// Starts keeping entries for index `id`: every write from now on indexes it (the
    /// indexer must already know it); [`ShardStore::build_sindex`] indexes what is stored.
    pub fn add_sindex(&self, id: IndexId) {
        self.state.borrow_mut().keydir.add_sindex(id);
    }

    /// Drops index `id` and its entries.
    pub fn drop_sindex(&self, id: IndexId) {
        self.state.borrow_mut().keydir.drop_sindex(id);
    }

    /// The indexes this store keeps entries for.
    pub fn sindex_ids(&self) -> Vec<IndexId> {
        self.state.borrow().keydir.sindexes().ids()
    }

    /// Whether entries are kept for `id` (false once dropped: a build stops).
    pub fn has_sindex(&self, id: IndexId) -> bool {
        self.state.borrow().keydir.sindexes().has_index(id)
    }

    /// Indexes every record stored now in index `id`, partition by partition, a chunk at a
    /// time, yielding between chunks; `progress` is told each partition walked (of
    /// [`PARTITION_COUNT`]) once its records' entries are in the index. Returns the records
    /// indexed, or stops early (Ok) if the index is dropped meanwhile.
    ///
    /// Entries are gathered over up to [`BUILD_RUN_RECORDS_MAX`] records and put into the
    /// index as one sorted run (a random insert into a leaf shifts half of it: a third of a
    /// build's time went there). A record taken is checked at that moment to still be the
    /// version read: a write or delete since then has set its entries already.
    pub async fn build_sindex(
        &self,
        id: IndexId,
        progress: impl FnMut(u16),
    ) -> Result<u64, StoreError> {
        self.build_sindex_in_runs(id, BUILD_RUN_RECORDS_MAX, progress)
            .await
    }

    /// [`ShardStore::build_sindex`] with runs of at most `run_records_max` records (tests
    /// use small runs to take many).
    pub async fn build_sindex_in_runs(
        &self,
        id: IndexId,
        run_records_max: usize,
        mut progress: impl FnMut(u16),
    ) -> Result<u64, StoreError> {
        assert!(run_records_max > 0, "a build run holds at least one record");
        // Changes are noted for this build until it ends, however it ends.
        struct Building<'a>(&'a ShardStore, IndexId);
        impl Drop for Building<'_> {
            fn drop(&mut self) {
                self.0.state.borrow_mut().keydir.end_build(self.1);
            }
        }
        self.state.borrow_mut().keydir.start_build(id);
        let _building = Building(self, id);
        let mut indexed = 0;
        let mut keys = Vec::new();
        let mut run = BuildRun::default();
        let mut walked = Vec::new();
        for pid in 0..PARTITION_COUNT {
            if self.partition_object_count(pid) > 0 {
                let mut cursor = PartitionCursor::new(pid, None);
                while !cursor.is_done() {
                    if !self.has_sindex(id) {
                        return Ok(indexed);
                    }
                    let chunk = self.scan_chunk(&mut cursor, None).await?;
                    let indexer = self.indexer.borrow().clone();
                    let Some(indexer) = indexer else {
                        return Ok(indexed);
                    };
                    for record in &chunk {
                        keys.clear();
                        indexer.keys(record, &mut keys);
                        run.push(
                            record,
                            keys.iter().filter(|(i, _)| *i == id).map(|(_, k)| *k),
                        );
                    }
                    if run.records.len() >= run_records_max {
                        indexed += self.take_build_run(id, &mut run);
                        walked.drain(..).for_each(&mut progress);
                    }
                    futures_lite::future::yield_now().await;
                }
            }
            walked.push(pid);
        }
        indexed += self.take_build_run(id, &mut run);
        walked.drain(..).for_each(&mut progress);
        drop(run);
        // The run's buffers were the build's only large allocations: hand their pages back
        // (glibc keeps freed heap memory otherwise; ~15 bytes per entry at 1 M records).
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory; it touches no live allocation.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(indexed)
    }

    /// Puts a build's gathered entries into index `id` and empties `run`; returns the records
    /// taken.
    fn take_build_run(&self, id: IndexId, run: &mut BuildRun) -> u64 {
        let mut st = self.state.borrow_mut();
        let records = run
            .records
            .iter()
            .map(|&(digest, meta, from, to)| (digest, meta, &run.keys[from as usize..to as usize]));
        let taken = st.keydir.build_sindex_entries(id, records);
        run.records.clear();
        run.keys.clear();
        taken as u64
    }

    /// Walks index `id` after `after` (exclusive) up to key `last` (inclusive), keeping the
    /// entries of live records that `wanted` accepts: at most `found_max` of them, looking at
    /// no more than [`SINDEX_WALK_ENTRIES_MAX`] entries in all (those of records removed or
    /// rewritten since, not swept yet, included).
    pub fn walk_sindex(
        &self,
        id: IndexId,
        after: Option<(IndexKey, Digest)>,
        last: IndexKey,
        found_max: usize,
        mut wanted: impl FnMut(IndexKey, &Digest) -> bool,
    ) -> SindexWalk {
        let st = self.state.borrow();
        let index = st.keydir.index();
        let mut found = Vec::new();
        let mut next = None;
        for (looked, e) in st
            .keydir
            .sindexes()
            .range(id, after, last, index)
            .enumerate()
        {
            if looked == SINDEX_WALK_ENTRIES_MAX || found.len() == found_max {
                return SindexWalk { found, next };
            }
            let (key, digest) = (e.key(), e.digest());
            next = Some((key, digest));
            if index.entry_at(e.handle()).is_some() && wanted(key, &digest) {
                found.push((key, digest));
            }
        }
        SindexWalk { found, next: None }
    }

    /// Whether index `id` holds an entry of key `key` for `digest`'s live version (a query
    /// sends a record at the first of its entries it walks, so each record once).
    pub fn sindex_holds(&self, id: IndexId, key: IndexKey, digest: &Digest) -> bool {
        let st = self.state.borrow();
        let index = st.keydir.index();
        index
            .handle(digest)
            .is_some_and(|h| st.keydir.sindexes().holds(id, key, digest, h, index))
    }

    /// (entries, estimated bytes) of index `id` on this shard; the entries of records
    /// removed or rewritten count until the sweep drops them (the background sweeper does
    /// within about [`SWEEP_PERIOD_MS`]).
    pub fn sindex_usage(&self, id: IndexId) -> (usize, usize) {
        let st = self.state.borrow();
        let s = st.keydir.sindexes();
        (s.entry_count(id), s.memory_bytes(id))
    }

    /// Sweeps every index at once: drops the entries of dead handles and releases them;
    /// returns the entries dropped. Synchronous (~5 ms per million entries): for tests and
    /// shutdown-like moments; the server sweeps in the background.
    pub fn sweep_sindexes_now(&self) -> usize {
        self.state.borrow_mut().keydir.sweep_sindexes()
    }

    /// One step of the incremental sweep ([`SWEEP_STEP_LEAVES`] leaves); whether it goes on.
    pub fn sweep_sindexes_step(&self) -> bool {
        self.state
            .borrow_mut()
            .keydir
            .sweep_sindexes_step(SWEEP_STEP_LEAVES)
    }

    /// Sweeps the entries of dead handles in the background: looks every
    /// [`SWEEP_PERIOD_MS`] and, when a sweep is due ([`SWEEP_DEAD_FRACTION`]), sweeps in steps
    /// with a yield between them. Stops when the store is dropped.
    pub fn spawn_sindex_sweeper(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        glommio::spawn_local(async move {
            let mut last = std::time::Instant::now();
            let wait_max = std::time::Duration::from_millis(SWEEP_WAIT_MAX_MS);
            loop {
                glommio::timer::sleep(std::time::Duration::from_millis(SWEEP_PERIOD_MS)).await;
                let Some(store) = weak.upgrade() else { break };
                let dead = store.sindex_dead_handles();
                let many = dead.saturating_mul(SWEEP_DEAD_FRACTION) >= store.object_count();
                if dead == 0 || !(many || last.elapsed() >= wait_max) {
                    continue;
                }
                while store.sweep_sindexes_step() {
                    futures_lite::future::yield_now().await;
                }
                last = std::time::Instant::now();
            }
        })
        .detach();
    }

    /// Dead primary-index handles whose secondary-index entries await a sweep.
    pub fn sindex_dead_handles(&self) -> usize {
        self.state.borrow().keydir.dead_count()
    }

    /// Reads a record for a query, without filling the record cache (as scans read).
    pub async fn get_uncached(&self, digest: &Digest) -> Result<Option<Record>, StoreError> {
        self.get_with(digest, CacheFill::Skip).await
    }
}
