//! Growth of the default layout's data file: reserving blocks ahead of use as filesystem
//! space allows. One growth at a time; it must never reserve past the file's capacity.

use std::cell::Cell;

use crate::shard::media::{no_space, Media};
use crate::shard::space::client_room_blocks;

use super::ShardStore;

/// Reserves up to `want` blocks of `block_bytes` in the file from virtual offset `from` on:
/// all at once, or, when that fails, one at a time, so a full filesystem still grants what
/// fits; returns how many were reserved and the error that stopped it (see `no_space`).
pub(super) async fn reserve_blocks(
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
pub(super) struct GrowingGuard<'a>(&'a Cell<bool>);

impl Drop for GrowingGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl ShardStore {
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
    pub(super) async fn grow_file(&self) {
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
}
