//! Cold start: reading every block header, replaying blocks in sequence order into the index
//! (through `recovery`), recomputing live bytes, zeroing empty blocks and opening the first
//! write block. It must never index a record whose checksum fails.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use apogee_wire::digest::PARTITION_COUNT;
use futures_lite::StreamExt;
use glommio::io::{MergedBufferLimit, ReadAmplificationLimit};

use crate::block::{BlockHeader, BlockState, WriteBlock, IO_ALIGN_BYTES};
use crate::clock;
use crate::error::StoreError;
use crate::file_header::FILE_HEADER_BYTES;
use crate::recovery;
use crate::shard::media::{no_space, Media};
use crate::shard::space::{client_room_blocks, BlockInfo, BlockTable, BlockUse, Claim, Growth};

use super::config::StoreConfig;
use super::growth::reserve_blocks;
use super::{Keydir, ShardStore, State};

/// Block-header reads recovery keeps in flight.
pub(super) const RECOVERY_READS_IN_FLIGHT: usize = 64;
/// Block reads recovery keeps in flight while it replays, and the largest merged read. Reads
/// of 1 MiB (no merging of 1 MiB blocks) with 8 in flight beat 4 MiB merged reads with 4:
/// glommio serves small reads from its pre-registered I/O memory, while each 4 MiB buffer was
/// a fresh mapping the kernel had to fault in and pin (a fifth of recovery's time in a
/// profile); 3 M records, alternated runs: 2.5 s against 3.0 s on average.
pub(super) const RECOVERY_BLOCKS_IN_FLIGHT: usize = 8;
pub(super) const RECOVERY_READ_BYTES_MAX: usize = 1 << 20;

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

impl ShardStore {
    /// Rebuilds the index: reads every block header, replays the blocks in sequence order
    /// (newest version wins), recomputes each block's live bytes, and zeroes the headers of
    /// blocks that hold nothing live so they can be reused.
    pub(super) async fn recover(
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
        let mut keydir = Keydir::default();
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
            let (_, replay) = recovery::replay_block(block, base, &mut keydir, now)
                .expect("pass 1 saw a valid header");
            if n == 0 {
                // Size the tables once from the first block (an upper bound: versions later
                // overwritten count too; end_bulk shrinks what was over-reserved).
                let estimate = replay.records as usize * order.len();
                let partitions = PARTITION_COUNT as usize / cfg.shard_count as usize;
                keydir.expect_records(estimate, partitions.max(1));
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
        keydir.end_bulk();
        for (_, e) in keydir.index().iter() {
            table.add_live(e.offset, e.bytes);
        }
        for s in keydir.shadows().values() {
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
        report.objects = keydir.index().len() as u64;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let state = State {
            keydir,
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
}
