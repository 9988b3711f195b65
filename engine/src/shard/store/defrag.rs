//! Defragmentation: re-appending the live records of sparse sealed blocks so the blocks can
//! be zeroed and reused. It must never release a block while the index or a shadow still
//! points into it.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::block::{BlockHeader, BlockState, BLOCK_HEADER_BYTES};
use crate::error::StoreError;
use crate::record::{
    block_tag, decode_header_tagged, RecordDecodeError, RecordHeader, RECORD_FIXED_BYTES,
};
use crate::shard::space::Claim;
use crate::tuning::Setting;

use super::commit::WriteFault;
use super::write::Incoming;
use super::{Change, ShardStore};

/// How often the defragmenter looks at the filesystem's free space (one `statvfs`), so
/// stop-writes follows space used or freed by others and a file that could not grow for
/// lack of space grows once there is some again.
pub(super) const SPACE_CHECK_PERIOD_MS: u64 = 250;

impl ShardStore {
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
    pub(super) fn relocate(
        &self,
        idx: u32,
        offset: u64,
        bytes: &[u8],
        tag: u32,
        h: &RecordHeader,
    ) -> Result<(), StoreError> {
        let (live, shadow) = {
            let st = self.state.borrow();
            let live = st
                .keydir
                .index()
                .get(&h.digest)
                .is_some_and(|e| e.offset == offset);
            let shadow = st
                .keydir
                .shadows()
                .get(&h.digest)
                .is_some_and(|s| s.offset == offset);
            (live, shadow)
        };
        if shadow && self.state.borrow().table.is_oldest_in_use(idx) {
            // No older version of this digest can remain anywhere: the shadow is not needed.
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            st.keydir
                .mutate_indexed(Change::DropShadow { digest: h.digest }, &mut st.table, None);
            self.stats.set_shadows(st.keydir.shadows().len() as u64);
            return Ok(());
        }
        if live || shadow {
            let _ = self.append_bytes(
                Incoming::Bytes { bytes, tag },
                h.digest,
                h.meta,
                shadow,
                Claim::Defrag,
                None,
            )?;
        }
        Ok(())
    }
}
