//! The append path: encoding a record into the open write block, sealing full blocks and
//! starting their write-behind, and stop-writes. Synchronous from the check to the append, so
//! a caller's read-then-decide cannot be overtaken; it must never await while the state is
//! borrowed.

use apogee_wire::Digest;

use crate::block::{BlockHeader, WriteBlock};
use crate::error::StoreError;
use crate::index::{IndexEntry, Shadow};
use crate::record::{block_tag, retag, set_name_of, write_checksum, Record};
use crate::shard::space::{BlockTable, Claim, GrowthWanted, HEADROOM_BLOCKS};
use crate::sindex::{IndexId, IndexKey};
use crate::tuning::Setting;

use super::{Change, CommitTicket, ShardStore};

/// Records up to this size are encoded in the shard's staging buffer and streamed into the
/// block (see `append_bytes`); larger ones, rare, are encoded in the block itself, so the
/// buffer never grows past this.
pub(super) const STAGING_BYTES_MAX: usize = 64 << 10;

/// What an append writes into the block.
#[derive(Clone, Copy)]
pub(super) enum Incoming<'a> {
    /// A record, encoded into the block (through the staging buffer up to STAGING_BYTES_MAX).
    Record(&'a Record),
    /// Bytes of a record already encoded, with the checksum tag of the block they came from
    /// (defragmentation moving a record).
    Bytes { bytes: &'a [u8], tag: u32 },
}

impl Incoming<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Incoming::Record(r) => r.encoded_bytes(),
            Incoming::Bytes { bytes, .. } => bytes.len(),
        }
    }

    /// Writes the record's bytes into `slot` (exactly [`Incoming::len`] long), tagged for the
    /// block whose tag is `to_tag`; runs `meanwhile` once the bytes are in place, before the
    /// record's checksum is computed.
    pub(super) fn fill(self, slot: &mut [u8], to_tag: u32, meanwhile: impl FnOnce()) {
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

impl ShardStore {
    /// Stores a record version (or a tombstone) and returns once it is acknowledged under the
    /// configured commit level.
    pub async fn put(&self, record: &Record) -> Result<(), StoreError> {
        let ticket = self.append(record)?;
        self.commit(ticket).await
    }

    /// The largest record this store accepts.
    pub fn record_bytes_max(&self) -> usize {
        WriteBlock::record_bytes_max(self.cfg.block_bytes)
    }

    /// Appends a record version (or a tombstone) to the open write block and updates the index.
    /// Synchronous, so a caller that checked the record's `version` appends before anything else
    /// can change it; the returned ticket is then awaited with `commit`.
    pub fn append(&self, record: &Record) -> Result<CommitTicket, StoreError> {
        self.append_over(record, None)
    }

    /// [`ShardStore::append`] of a new version of a record whose replaced version held the
    /// secondary-index keys `old_keys` (a read-modify-write knows them): when the new
    /// version's keys are the same, its entries stay as they are.
    pub(super) fn append_over(
        &self,
        record: &Record,
        old_keys: Option<Vec<(IndexId, IndexKey)>>,
    ) -> Result<CommitTicket, StoreError> {
        let ticket = self.append_record(record, old_keys)?;
        self.stats.count_write();
        Ok(ticket)
    }

    /// [`ShardStore::append`] without counting a client write: a version decided elsewhere
    /// (a replica's image) is not one of this node's `client_write_success`.
    pub(super) fn append_uncounted(&self, record: &Record) -> Result<CommitTicket, StoreError> {
        self.append_record(record, None)
    }

    fn append_record(
        &self,
        record: &Record,
        old_keys: Option<Vec<(IndexId, IndexKey)>>,
    ) -> Result<CommitTicket, StoreError> {
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
        self.append_bytes(
            Incoming::Record(record),
            record.digest,
            record.meta,
            record.tombstone,
            claim,
            old_keys,
        )
    }

    /// Refuses client writes (deletes still pass) while live data fills `stop-writes-used-pct`
    /// of the capacity, fewer than `stop-writes-avail-pct` of the blocks or no more than the
    /// headroom are available, or the last write ran out of filesystem space; the reserve
    /// left is what deletes and defragmentation need to free space again. The capacity of
    /// the default layout's file is what the filesystem can hold now (see `space`).
    pub(super) fn check_stop_writes(&self) -> Result<(), StoreError> {
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
    pub(super) fn full_reason(&self, table: &BlockTable) -> String {
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

    /// Appends a record version and applies it to the keydir (`Keydir::mutate`, which moves
    /// index entries, shadows and block live bytes together) and to the cache. `shadow` says the bytes shadow older versions
    /// (a tombstone or an expired record) rather than being the live version. The record is
    /// encoded (or its bytes copied) and tagged for the open block, then appended to it.
    pub(super) fn append_bytes(
        &self,
        incoming: Incoming<'_>,
        digest: Digest,
        meta: crate::record::RecordMeta,
        shadow: bool,
        claim: Claim,
        old_keys: Option<Vec<(IndexId, IndexKey)>>,
    ) -> Result<CommitTicket, StoreError> {
        // A new version's secondary-index entries (defragmentation's moved bytes keep theirs).
        let mut sindex_keys = match incoming {
            Incoming::Record(r) if !shadow => self.sindex_keys(r),
            _ => None,
        };
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        // The partition header is fetched while the record is encoded below, then the slot.
        st.keydir.index().prefetch(&digest, false);
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
        let keydir = &st.keydir;
        let prefetch_slot = || keydir.index().prefetch(&digest, true);
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
        let change = if shadow {
            Change::Shadow {
                digest,
                shadow: Shadow { offset, bytes: len },
            }
        } else {
            Change::Live {
                digest,
                entry: IndexEntry {
                    offset,
                    bytes: len,
                    meta,
                    set_id: st.keydir.set_id(set_name_of(bytes)),
                },
            }
        };
        st.keydir.mutate_indexed_over(
            change,
            &mut st.table,
            sindex_keys.as_mut(),
            old_keys.as_deref(),
        );
        if shadow {
            self.cache.borrow_mut().remove(&digest);
        } else {
            self.cache.borrow_mut().insert(digest, offset, bytes);
        }
        st.appended_lsn += u64::from(len);
        st.assert_log_positions();
        self.stats.set_objects(st.keydir.index().len() as u64);
        self.stats.set_shadows(st.keydir.shadows().len() as u64);
        self.stats
            .set_usage(st.table.live_total(), st.keydir.index().memory_bytes());
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
}
