//! Moving one partition's records from the node that emigrates it to the node that receives
//! it: chunks of records over the fabric, each answered once the destination's owning shard
//! applied every record of it by the namespace's conflict-resolution policy (an older
//! version never overwrites a newer one, so a record written while it migrates is safe).
//!
//! Owns the chunk message (the body of a fabric `MigrateRecords` frame, ours, little-endian):
//! `cluster_key u64 | partition u16 | count u32 (1..=CHUNK_RECORDS_MAX) | count × (image_len
//! u32 | image)`, each image a replica write's body (`replica::encode_image`: namespace and
//! checksummed record), every record of the chunk's partition and of one namespace; and its
//! answer, one [`ChunkStatus`] byte. The emigrant walks the partition with the scan's cursor
//! (bounded chunks, no record held beyond one), checks before every chunk that the view it
//! migrates for is still this node's, and reports the end to core 0's migration task. It must
//! never apply a record on a core other than the one owning its partition, never accept a
//! chunk of another view, and never panic on a peer's bytes.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use apogee_cluster::view::ClusterKey;
use apogee_cluster::NodeId;
use apogee_engine::record::Record;
use apogee_engine::shard::iterate::{PartitionCursor, SCAN_CHUNK_ENTRIES_MAX};
use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

use super::Event;
use crate::cluster::replica::{decode_image, encode_image, ImageError};
use crate::core::Core;
use crate::node::ShardWork;

/// Most records in one chunk: the scan cursor's chunk (which also bounds its bytes).
pub const CHUNK_RECORDS_MAX: usize = SCAN_CHUNK_ENTRIES_MAX;

/// What the destination did with a chunk (the `MigrateRecordsAck` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkStatus {
    /// Every record applied (stored, or the destination's own version was as new).
    Applied = 0,
    /// The destination migrates for another view (or none): nothing applied.
    OtherView = 1,
    /// The destination neither holds nor receives the partition: nothing applied.
    NotHolder = 2,
    /// No namespace of that name there.
    UnknownNamespace = 3,
    /// Its store refused or failed a record; the emigrant retries the partition later.
    StoreFailed = 4,
}

impl ChunkStatus {
    fn from_byte(b: u8) -> Option<ChunkStatus> {
        Some(match b {
            0 => ChunkStatus::Applied,
            1 => ChunkStatus::OtherView,
            2 => ChunkStatus::NotHolder,
            3 => ChunkStatus::UnknownNamespace,
            4 => ChunkStatus::StoreFailed,
            _ => return None,
        })
    }
}

/// Why a chunk's bytes were refused (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk cut short")]
    Short,
    #[error("chunk's cluster key {0:#x} is zero or wider than 48 bits")]
    Key(u64),
    #[error("chunk's partition {0} is not below {PARTITION_COUNT}")]
    Partition(u16),
    #[error("chunk of {0} records is outside 1..={CHUNK_RECORDS_MAX}")]
    Count(usize),
    #[error("chunk's image {index}: {error}")]
    Image { index: usize, error: ImageError },
    #[error("chunk's record {0} is of another partition or namespace than the chunk's")]
    Mixed(usize),
    #[error("chunk has {0} bytes left over after its records")]
    Trailing(usize),
}

/// Records migrated, for `namespace/<ns>` (CE 8.1.2.0's names).
#[derive(Default, Debug)]
pub struct MigrationStats {
    /// `migrate_records_transmitted`: records this node sent while emigrating.
    pub records_transmitted: std::sync::atomic::AtomicU64,
    /// `migrate_record_receives`: records this node received while immigrating.
    pub record_receives: std::sync::atomic::AtomicU64,
}

impl MigrationStats {
    pub fn describe(&self) -> String {
        format!(
            "migrate_records_transmitted={};migrate_record_receives={}",
            self.records_transmitted.load(Relaxed),
            self.record_receives.load(Relaxed)
        )
    }
}

/// One partition to send: what core 0's migration task asks the owning shard to do.
#[derive(Clone, Copy, Debug)]
pub struct Emigration {
    pub ns: usize,
    pub key: ClusterKey,
    pub partition: PartitionId,
    pub to: NodeId,
}

/// Records of one chunk, for the core that owns their partition.
pub struct Immigration {
    pub ns: usize,
    pub records: Vec<Record>,
    pub reply: flume::Sender<ChunkStatus>,
}

/// The body of a `MigrateRecords` frame.
pub fn encode_chunk(
    key: ClusterKey,
    namespace: &str,
    partition: u16,
    records: &[Record],
) -> Vec<u8> {
    assert!(
        (1..=CHUNK_RECORDS_MAX).contains(&records.len()),
        "a chunk holds 1..=CHUNK_RECORDS_MAX records"
    );
    let mut b = Vec::with_capacity(
        14 + records
            .iter()
            .map(|r| r.encoded_bytes() + 40)
            .sum::<usize>(),
    );
    b.extend_from_slice(&key.get().to_le_bytes());
    b.extend_from_slice(&partition.to_le_bytes());
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        debug_assert_eq!(r.digest.partition().0, partition);
        let image = encode_image(namespace, r);
        b.extend_from_slice(&(image.len() as u32).to_le_bytes());
        b.extend_from_slice(&image);
    }
    b
}

/// A decoded chunk.
#[derive(Debug)]
pub struct Chunk<'a> {
    pub key: ClusterKey,
    pub namespace: &'a [u8],
    pub partition: u16,
    pub records: Vec<Record>,
}

/// A chunk, every byte checked: its view, namespace name, partition and records.
pub fn decode_chunk(body: &[u8]) -> Result<Chunk<'_>, ChunkError> {
    let take = |at: usize, n: usize| body.get(at..at + n).ok_or(ChunkError::Short);
    let raw = u64::from_le_bytes(take(0, 8)?.try_into().expect("8 bytes"));
    let key = ClusterKey::new(raw).ok_or(ChunkError::Key(raw))?;
    let partition = u16::from_le_bytes(take(8, 2)?.try_into().expect("2 bytes"));
    if partition >= PARTITION_COUNT {
        return Err(ChunkError::Partition(partition));
    }
    let count = u32::from_le_bytes(take(10, 4)?.try_into().expect("4 bytes")) as usize;
    if !(1..=CHUNK_RECORDS_MAX).contains(&count) {
        return Err(ChunkError::Count(count));
    }
    let mut at = 14;
    let mut namespace: &[u8] = &[];
    let mut records = Vec::with_capacity(count);
    for index in 0..count {
        let len = u32::from_le_bytes(take(at, 4)?.try_into().expect("4 bytes")) as usize;
        let image = body
            .get(at + 4..)
            .and_then(|r| r.get(..len))
            .ok_or(ChunkError::Short)?;
        at += 4 + len;
        let (ns, record) =
            decode_image(image).map_err(|error| ChunkError::Image { index, error })?;
        if index == 0 {
            namespace = ns;
        }
        if ns != namespace || record.digest.partition().0 != partition {
            return Err(ChunkError::Mixed(index));
        }
        records.push(record);
    }
    if at != body.len() {
        return Err(ChunkError::Trailing(body.len() - at));
    }
    Ok(Chunk {
        key,
        namespace,
        partition,
        records,
    })
}

/// Serves one `MigrateRecords` body from `from`: checked against this node's migration view
/// and table, applied on the owning core. `Err`: malformed (the connection is closed).
pub async fn receive(core: &Core, from: NodeId, body: &[u8]) -> Result<ChunkStatus, ChunkError> {
    let Chunk {
        key,
        namespace,
        partition,
        records,
    } = decode_chunk(body)?;
    let node = &core.node;
    let Some(ns) = node.config.namespace_index(namespace) else {
        return Ok(ChunkStatus::UnknownNamespace);
    };
    {
        let table = node.partitions.load();
        if table.migration_key() != Some(key) {
            tracing::debug!(from = %format!("{:X}", from.0), partition,
                "migrating records of another view refused");
            return Ok(ChunkStatus::OtherView);
        }
        if !table.accepts_replica_write(ns, partition) {
            return Ok(ChunkStatus::NotHolder);
        }
    }
    let owner = node.shard_of(partition);
    if owner == core.shard {
        return Ok(core.apply_migrated(ns, &records).await);
    }
    node.proxy_stats.cross_core.fetch_add(1, Relaxed);
    let (tx, rx) = flume::bounded(1);
    let work = ShardWork::Immigrate(Immigration {
        ns,
        records,
        reply: tx,
    });
    if node.inboxes[owner].send_async(work).await.is_err() {
        return Ok(ChunkStatus::StoreFailed);
    }
    Ok(rx.recv_async().await.unwrap_or(ChunkStatus::StoreFailed))
}

/// Why an emigration stopped before its end.
#[derive(Debug, thiserror::Error)]
enum EmigrateError {
    #[error("the view changed")]
    ViewChanged,
    #[error("reading the partition: {0}")]
    Store(#[from] apogee_engine::StoreError),
    #[error("{0}")]
    Fabric(#[from] crate::cluster::fabric::FabricError),
    #[error("the destination answered {0:?}")]
    Refused(Option<ChunkStatus>),
}

/// Runs on the core owning the partition: streams every record of it to the destination,
/// then tells core 0's migration task how it ended.
pub async fn emigrate(core: Rc<Core>, job: Emigration) {
    let outcome = stream_partition(&core, &job).await;
    if let Err(error) = &outcome {
        if let Some(n) = core.node.logs.migrate_failed.allow() {
            tracing::warn!(partition = job.partition.0, to = %format!("{:X}", job.to.0),
                %error, suppressed = n, "emigration stopped; it is retried while the view lasts");
        }
    }
    let event = Event::EmigrationEnded {
        ns: job.ns,
        key: job.key,
        partition: job.partition,
        to: job.to,
        ok: outcome.is_ok(),
    };
    let _ = core.node.migration_tx.send_async(event).await;
}

async fn stream_partition(core: &Core, job: &Emigration) -> Result<(), EmigrateError> {
    let node = &core.node;
    let namespace = &node.config.namespaces[job.ns].name;
    let stats = &node.namespaces[job.ns].migration;
    let mut cursor = PartitionCursor::new(job.partition.0, None);
    while !cursor.is_done() {
        if node.partitions.load().migration_key() != Some(job.key) {
            return Err(EmigrateError::ViewChanged);
        }
        let records = core.stores[job.ns].scan_chunk(&mut cursor, None).await?;
        if records.is_empty() {
            continue;
        }
        let body = encode_chunk(job.key, namespace, job.partition.0, &records);
        drop(records);
        let status =
            crate::cluster::fabric::migrate_records(node, job.to, job.partition.0, &body).await?;
        match ChunkStatus::from_byte(status) {
            Some(ChunkStatus::Applied) => {}
            other => return Err(EmigrateError::Refused(other)),
        }
        let sent = u32::from_le_bytes(body[10..14].try_into().expect("4 bytes"));
        stats
            .records_transmitted
            .fetch_add(u64::from(sent), Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::record::{Bin, RecordMeta};
    use apogee_wire::Digest;

    fn record(partition: u16, n: u8) -> Record {
        let mut d = [n; 20];
        d[..2].copy_from_slice(&partition.to_le_bytes());
        Record {
            digest: Digest(d),
            meta: RecordMeta {
                generation: 3,
                void_time: 0,
                last_update_ms: 1_000 + u64::from(n),
            },
            set_name: b"s".to_vec(),
            user_key: None,
            bins: vec![Bin {
                name: b"b".to_vec(),
                particle_type: 3,
                value: vec![n; 5],
            }],
            tombstone: false,
        }
    }

    #[test]
    fn a_chunk_round_trips_and_every_cut_or_extra_byte_is_refused() {
        let key = ClusterKey::new(0x1234).unwrap();
        let records: Vec<Record> = (0..3).map(|n| record(77, n)).collect();
        let body = encode_chunk(key, "test", 77, &records);
        let c = decode_chunk(&body).unwrap();
        assert_eq!((c.key, c.namespace, c.partition), (key, &b"test"[..], 77));
        assert_eq!(c.records, records);
        for cut in 0..body.len() {
            assert!(decode_chunk(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = body.clone();
        extra.push(1);
        assert_eq!(decode_chunk(&extra).unwrap_err(), ChunkError::Trailing(1));
    }

    #[test]
    fn malformed_chunks_are_named_errors() {
        let key = ClusterKey::new(9).unwrap();
        let body = encode_chunk(key, "test", 5, &[record(5, 1)]);
        let mut bad = body.clone();
        bad[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode_chunk(&bad).unwrap_err(), ChunkError::Key(0));
        let mut bad = body.clone();
        bad[8..10].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(decode_chunk(&bad).unwrap_err(), ChunkError::Partition(5000));
        let mut bad = body.clone();
        bad[10..14].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_chunk(&bad).unwrap_err(), ChunkError::Count(0));
        let mut bad = body.clone();
        bad[8..10].copy_from_slice(&6u16.to_le_bytes());
        assert_eq!(decode_chunk(&bad).unwrap_err(), ChunkError::Mixed(0));
        let mut bad = body.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        assert!(matches!(
            decode_chunk(&bad).unwrap_err(),
            ChunkError::Image { index: 0, .. }
        ));
        // Two namespaces in one chunk.
        let mut two = encode_chunk(key, "test", 5, &[record(5, 1), record(5, 2)]);
        let other = encode_image("bar", &record(5, 2));
        let first_len = u32::from_le_bytes(two[14..18].try_into().unwrap()) as usize;
        two.truncate(14 + 4 + first_len);
        two.extend_from_slice(&(other.len() as u32).to_le_bytes());
        two.extend_from_slice(&other);
        assert_eq!(decode_chunk(&two).unwrap_err(), ChunkError::Mixed(1));
        assert!(ChunkStatus::from_byte(5).is_none());
        assert_eq!(ChunkStatus::from_byte(4), Some(ChunkStatus::StoreFailed));
    }
}
