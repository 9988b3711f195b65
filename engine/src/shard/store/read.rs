//! Reads of one record: from the cache, a write block still in memory, or the device, with
//! the checksum verified. It must never return bytes of a version other than the one the
//! index named (a record moved by defragmentation mid-read is read again).

use apogee_wire::Digest;

use crate::clock;
use crate::error::StoreError;
use crate::index::{IndexEntry, PrefetchStage};
use crate::record::{block_tag, Record, RecordDecodeError, RecordView};

use super::ShardStore;

/// Whether a record read from the device enters the record cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheFill {
    Fill,
    Skip,
}

/// A read that finds its record moved by defragmentation mid-read tries again this often.
pub(super) const READ_ATTEMPTS_MAX: usize = 4;

impl ShardStore {
    /// The identity of the record's current version (its file offset), expired or not;
    /// `None` when it has no live entry. Any write or delete of the record changes it, so
    /// `update` can tell whether the record it read is still the newest version. Engine-only:
    /// what a version is stays inside the engine.
    pub(crate) fn version(&self, digest: &Digest) -> Option<u64> {
        self.state
            .borrow()
            .keydir
            .index()
            .get(digest)
            .map(|e| e.offset)
    }

    /// Starts loading, one level per stage, what reading `digest` will touch: its index slot,
    /// its index entry, then (a memory namespace) its bytes. A batch calls the stages rows
    /// ahead so the cache misses of many rows overlap. A hint: it changes nothing.
    pub fn prefetch(&self, digest: &Digest, stage: usize) {
        let st = self.state.borrow();
        let index = st.keydir.index();
        match stage {
            0 => index.prefetch_lookup(digest, PrefetchStage::Slot),
            1 => index.prefetch_lookup(digest, PrefetchStage::Entry),
            _ => {
                if let Some(e) = index.get(digest) {
                    self.media.prefetch_ram(e.offset, e.bytes as usize);
                }
            }
        }
    }

    /// Metadata of a live record, without I/O. Expired records are absent.
    pub fn meta(&self, digest: &Digest) -> Option<IndexEntry> {
        let st = self.state.borrow();
        let e = st.keydir.index().get(digest)?;
        let gone = clock::is_expired(e.meta.void_time, clock::now_secs())
            || self.truncate.is_truncated(e.meta.last_update_ms, e.set_id);
        (!gone).then_some(e)
    }

    /// Reads the newest live version of a record: from the cache, from a write block still in
    /// memory, or from the device. The bytes are checksummed before they are returned. A read
    /// whose record moved (defragmentation) while it waited on the device starts over.
    pub async fn get(&self, digest: &Digest) -> Result<Option<Record>, StoreError> {
        self.get_with(digest, CacheFill::Fill).await
    }

    /// [`get`](Self::get), choosing whether a device read enters the record cache (a scan's
    /// reads do not: one pass over every record would evict the hot ones).
    pub(crate) async fn get_with(
        &self,
        digest: &Digest,
        fill: CacheFill,
    ) -> Result<Option<Record>, StoreError> {
        self.read_with(digest, fill, |v| v.to_record()).await
    }

    /// [`get`](Self::get) handing `f` the verified record where its bytes lie, for a read
    /// that only re-encodes them (no owned copy of the record is made).
    pub async fn view<R>(
        &self,
        digest: &Digest,
        f: impl FnMut(RecordView<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        self.read_with(digest, CacheFill::Fill, f).await
    }

    async fn read_with<R>(
        &self,
        digest: &Digest,
        fill: CacheFill,
        mut f: impl FnMut(RecordView<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        self.stats.count_read();
        for _ in 0..READ_ATTEMPTS_MAX {
            let Some(entry) = self.meta(digest) else {
                return Ok(None);
            };
            match self.read_version(digest, entry, fill, &mut f).await? {
                Ok(r) => return Ok(Some(r)),
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

    /// `f` over the `len` bytes at file offset `offset` if they lie in a write block still in
    /// memory (not yet handed to the media, or kept while it is written).
    fn in_write_block<R>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let st = self.state.borrow();
        st.blocks
            .iter()
            .find_map(|b| b.slice_at(offset, len))
            .map(f)
    }

    /// The checksum tag of the block holding file offset `offset`.
    pub(super) fn tag_at(&self, offset: u64) -> u32 {
        let st = self.state.borrow();
        block_tag(st.table.info(st.table.block_of(offset)).sequence)
    }

    /// One attempt at reading the version `entry` names, handed to `f` once verified. The
    /// inner error says why the bytes found were not that version.
    pub(super) async fn read_version<R>(
        &self,
        digest: &Digest,
        entry: IndexEntry,
        fill: CacheFill,
        f: &mut impl FnMut(RecordView<'_>) -> R,
    ) -> Result<Result<R, String>, StoreError> {
        let mut check = |r: Result<RecordView<'_>, RecordDecodeError>| match r {
            Ok(rec) if rec.digest == *digest => Ok(f(rec)),
            Ok(rec) => Err(format!(
                "holds digest {:?}, index expected {digest:?}",
                rec.digest
            )),
            Err(e) => Err(e.to_string()),
        };
        let tag = self.tag_at(entry.offset);
        let len = entry.bytes as usize;
        fn decode(bytes: &[u8], tag: u32) -> Result<RecordView<'_>, RecordDecodeError> {
            RecordView::decode_tagged(bytes, tag)
        }
        if self.media.is_ram() {
            // A memory namespace decodes where the bytes lie: no cache probe, no copy. A
            // write block not yet handed to the media holds the newest bytes, so it comes
            // first (its RAM copy may be missing or partial).
            if let Some(r) = self.in_write_block(entry.offset, len, |b| check(decode(b, tag))) {
                return Ok(r);
            }
            if let Some(r) = self
                .media
                .with_ram(entry.offset, len, |b| check(decode(b, tag)))
            {
                // The namespace's storage is RAM: counted as the device reads they stand for.
                self.stats.count_device_read();
                return Ok(r);
            }
        }
        if let Some(bytes) = self.cache.borrow_mut().get(digest, entry.offset) {
            self.stats.count_cache_hit();
            // Verified before it was cached (a device read) or encoded here (a write).
            return Ok(check(RecordView::decode_verified(&bytes)));
        }
        if let Some(r) = self.in_write_block(entry.offset, len, |b| check(decode(b, tag))) {
            return Ok(r);
        }
        self.stats.count_device_read();
        let bytes = self
            .media
            .read(entry.offset, len)
            .await
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        let record = check(decode(&bytes, tag));
        // Cache it only if it is still the newest version after the await.
        if record.is_ok()
            && fill == CacheFill::Fill
            && self.cache.borrow().enabled()
            && self.version(digest) == Some(entry.offset)
        {
            self.cache
                .borrow_mut()
                .insert(*digest, entry.offset, &bytes[..]);
        }
        Ok(record)
    }
}
