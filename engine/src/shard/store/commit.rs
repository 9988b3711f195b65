//! Getting appended bytes onto the device: log positions (appended ≥ written ≥ durable),
//! write-behind of sealed blocks, group-committed flushes with fdatasync, back-pressure, and
//! what a failed write or sync does to the shard. It must never mark bytes durable that a
//! write or sync did not confirm.

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::block::PendingWrite;
use crate::error::StoreError;
use crate::shard::media::no_space;
use crate::tuning::Setting;

use super::{CommitTicket, InjectedFault, ShardStore, State};

/// Blocks allowed in memory that are not yet fully on the device. A writer that finds this many
/// waits for a flush, so a slow device bounds memory instead of growing it.
pub const UNFLUSHED_BLOCKS_MAX: usize = 8;
/// Buffers of retired blocks kept for reuse: as many as may wait for the device, so a steady
/// writer never maps a fresh one (page faults and zeroing: ~0.8 ms per 1 MiB here), within
/// SPARE_BYTES_MAX.
pub(super) const SPARE_BUFFERS_MAX: usize = UNFLUSHED_BLOCKS_MAX + 2;
pub(super) const SPARE_BYTES_MAX: usize = 16 << 20;

/// Notes the extents a write touched as needing an fdatasync.
pub(super) fn mark_unsynced(st: &mut State, marks: &[bool]) {
    if st.unsynced.len() < marks.len() {
        st.unsynced.resize(marks.len(), false);
    }
    for (was, &mark) in st.unsynced.iter_mut().zip(marks) {
        *was |= mark;
    }
}

/// Drops the sealed blocks at the front that are wholly on the device: reads find them there.
pub(super) fn retire_durable(st: &mut State) {
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

/// Why a block write or sync did not land.
pub(super) enum WriteFault {
    /// The filesystem is full: the bytes stay in memory and are written again later.
    NoSpace(String),
    /// Anything else: the shard stops accepting writes.
    Failed(String),
}

impl WriteFault {
    pub(super) fn of(e: &std::io::Error, what: String) -> WriteFault {
        if no_space(e) {
            WriteFault::NoSpace(format!("{what}: {e}"))
        } else {
            WriteFault::Failed(format!("{what}: {e}"))
        }
    }
}

impl ShardStore {
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
    pub(super) async fn wait_for_write_behind(&self) {
        self.write_waiters.set(self.write_waiters.get() + 1);
        self.write_done
            .acquire(1)
            .await
            .expect("write-done semaphore is never closed");
        self.write_waiters.set(self.write_waiters.get() - 1);
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
    pub(super) async fn write_behind(&self, base: u64) {
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
    pub(super) async fn write_pending(
        &self,
        w: PendingWrite,
        marks: &mut [bool],
    ) -> Result<(), WriteFault> {
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
    pub(super) async fn flush(&self, target: u64, sync: bool) -> Result<(), StoreError> {
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
        st.assert_log_positions();
        if let Some(reason) = st.no_space.take() {
            tracing::info!(path = %self.path, shard = self.cfg.shard, was = %reason, "writes to the device succeed again: client writes resume");
        }
        retire_durable(&mut st);
        Ok(())
    }

    /// A shard that failed a device write refuses every further write and flush.
    pub(super) fn check_failed(&self, st: &State) -> Result<(), StoreError> {
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
    pub(super) fn fault(&self, fault: WriteFault) -> StoreError {
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

    pub(super) fn fail(&self, reason: String) -> StoreError {
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
}
