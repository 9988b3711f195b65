//! Partition iteration for scans in a real shard store: descending digest order, chunks of
//! bounded size, exact resume strictly below a digest, and expired, truncated and other-set
//! records never handed out.

mod common;

use std::sync::Arc;

use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::iterate::{PartitionCursor, SCAN_CHUNK_ENTRIES_MAX};
use apogee_engine::shard::truncate::apply;
use apogee_engine::shard::ShardStore;
use apogee_wire::Digest;
use common::{run, with_store};

/// A digest in partition `pid` (its first two bytes, little-endian, hold the partition id);
/// the rest derived from `i` so digests are distinct and unordered.
fn digest_in(pid: u16, i: u32) -> Digest {
    let mut d = [0u8; 20];
    d[..2].copy_from_slice(&pid.to_le_bytes());
    let h = xxhash(i);
    d[2..10].copy_from_slice(&h.to_le_bytes());
    d[10..14].copy_from_slice(&i.to_le_bytes());
    let out = Digest(d);
    assert_eq!(out.partition().0, pid);
    out
}

fn xxhash(i: u32) -> u64 {
    // A cheap mix so digest order is unrelated to insertion order.
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn record(digest: Digest, set: &str, void_time: u32, lut_ms: u64, value_bytes: usize) -> Record {
    Record {
        digest,
        meta: RecordMeta {
            generation: 1,
            void_time,
            last_update_ms: lut_ms,
        },
        set_name: set.as_bytes().to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type: 4,
            value: vec![7; value_bytes],
        }],
        tombstone: false,
    }
}

/// Every record of a partition walk, chunk by chunk, checking each chunk's size.
async fn walk(store: &ShardStore, mut cursor: PartitionCursor, set: Option<&[u8]>) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut chunks = 0;
    while !cursor.is_done() {
        let chunk = store.scan_chunk(&mut cursor, set).await.unwrap();
        assert!(chunk.len() <= SCAN_CHUNK_ENTRIES_MAX, "{}", chunk.len());
        out.extend(chunk.iter().map(|r| r.digest));
        chunks += 1;
        assert!(chunks < 10_000, "the walk ends");
    }
    out
}

#[test]
fn a_partition_walks_in_descending_digest_order_in_chunks_and_resumes_below() {
    with_store(|store| async move {
        let mut mine: Vec<Digest> = (0..700).map(|i| digest_in(5, i)).collect();
        for &dg in &mine {
            store.put(&record(dg, "s", 0, 1000, 10)).await.unwrap();
        }
        for i in 0..50 {
            store
                .put(&record(digest_in(6, i), "s", 0, 1000, 10))
                .await
                .unwrap();
        }
        mine.sort_by_key(|d| std::cmp::Reverse(d.0));

        let all = walk(&store, PartitionCursor::new(5, None), None).await;
        assert_eq!(all, mine, "every record once, largest digest first");

        // More than one chunk was needed, and each chunk continued below the previous one.
        let mut cursor = PartitionCursor::new(5, None);
        let first = store.scan_chunk(&mut cursor, None).await.unwrap();
        assert_eq!(first.len(), SCAN_CHUNK_ENTRIES_MAX);
        assert!(!cursor.is_done());
        assert_eq!(cursor.last_digest(), Some(mine[SCAN_CHUNK_ENTRIES_MAX - 1]));

        // Resume strictly below a digest the client received.
        let rest = walk(&store, PartitionCursor::new(5, Some(mine[299])), None).await;
        assert_eq!(rest, mine[300..]);
        // Resume below a digest that is not (or no longer) stored: still exact.
        let mut gone = mine[299];
        gone.0[19] ^= 1;
        let expect: Vec<Digest> = mine.iter().copied().filter(|x| x.0 < gone.0).collect();
        assert_eq!(
            walk(&store, PartitionCursor::new(5, Some(gone)), None).await,
            expect
        );
        // Below the smallest: nothing.
        assert!(walk(&store, PartitionCursor::new(5, Some(mine[699])), None)
            .await
            .is_empty());
        // An empty partition ends at once.
        assert!(walk(&store, PartitionCursor::new(7, None), None)
            .await
            .is_empty());
    });
}

#[test]
fn expired_truncated_and_other_set_records_are_skipped() {
    with_store(|store| async move {
        let mut keep = Vec::new();
        for i in 0..400 {
            let dg = digest_in(9, i);
            match i % 4 {
                // Expired long ago (void time 1 s after the epoch).
                0 => store.put(&record(dg, "a", 1, 1000, 10)).await.unwrap(),
                // Updated before the set's truncate point below.
                1 => store.put(&record(dg, "a", 0, 500, 10)).await.unwrap(),
                // Another set.
                2 => store.put(&record(dg, "b", 0, 1000, 10)).await.unwrap(),
                _ => {
                    store.put(&record(dg, "a", 0, 1000, 10)).await.unwrap();
                    keep.push(dg);
                }
            }
        }
        assert!(apply(
            &store.truncate_points(),
            &store.set_stats(),
            Some(b"a"),
            900
        ));
        keep.sort_by_key(|d| std::cmp::Reverse(d.0));
        let got = walk(&store, PartitionCursor::new(9, None), Some(b"a")).await;
        assert_eq!(got, keep);
        let whole = walk(&store, PartitionCursor::new(9, None), None).await;
        assert_eq!(whole.len(), 200, "set a's live records and all of set b");
        assert!(walk(&store, PartitionCursor::new(9, None), Some(b"none"))
            .await
            .is_empty());
    });
}

#[test]
fn a_chunk_of_large_records_stops_near_its_byte_bound() {
    with_store(|store| async move {
        for i in 0..40 {
            store
                .put(&record(digest_in(3, i), "", 0, 1000, 100_000))
                .await
                .unwrap();
        }
        let mut cursor = PartitionCursor::new(3, None);
        let first = store.scan_chunk(&mut cursor, None).await.unwrap();
        assert!(first.len() < 40 && first.len() >= 10, "{}", first.len());
        assert!(!cursor.is_done());
        let rest = walk(&store, cursor, None).await;
        assert_eq!(first.len() + rest.len(), 40);
    });
}

#[test]
fn scan_reads_come_from_the_device_in_order_and_leave_the_cache_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let cfg = || apogee_engine::shard::StoreConfig {
            cache_bytes: 4 << 20,
            ..common::cfg(&d, true)
        };
        let mut mine: Vec<Digest> = (0..600).map(|i| digest_in(4, i)).collect();
        {
            let (store, _) = ShardStore::open(cfg(), Arc::default()).await.unwrap();
            for &dg in &mine {
                store.put(&record(dg, "s", 0, 1000, 100)).await.unwrap();
            }
            store.flush_all().await.unwrap();
        }
        mine.sort_by_key(|d| std::cmp::Reverse(d.0));
        // Reopened: every record is on the device and the cache is empty.
        let (store, _) = ShardStore::open(cfg(), Arc::default()).await.unwrap();
        let before = store.stats().snapshot();
        let all = walk(&store, PartitionCursor::new(4, None), None).await;
        assert_eq!(
            all, mine,
            "reads in flight together still come back in digest order"
        );
        let after = store.stats().snapshot();
        assert_eq!(after.device_reads - before.device_reads, 600);
        assert_eq!(after.cache_hits, before.cache_hits);
        // The scan cached nothing: a get goes to the device, and only then is cached.
        for dg in &mine[..10] {
            assert!(store.get(dg).await.unwrap().is_some());
        }
        let got = store.stats().snapshot();
        assert_eq!(got.device_reads - after.device_reads, 10);
        assert_eq!(got.cache_hits, after.cache_hits);
        for dg in &mine[..10] {
            assert!(store.get(dg).await.unwrap().is_some());
        }
        assert_eq!(store.stats().snapshot().cache_hits - got.cache_hits, 10);
    });
}

#[test]
fn dropping_a_partition_removes_its_records_and_no_other() {
    with_store(|store| async move {
        for i in 0..1500 {
            for p in [7u16, 8] {
                store
                    .put(&record(digest_in(p, i), "a", 0, 1000, 10))
                    .await
                    .unwrap();
            }
        }
        let counts = store.partition_object_counts();
        assert_eq!((counts[7], counts[8], counts[9]), (1500, 1500, 0));
        assert_eq!(
            store.drop_partition(8, || false).await,
            0,
            "not wanted: kept"
        );
        let calls = std::cell::Cell::new(0);
        let once = || {
            calls.set(calls.get() + 1);
            calls.get() == 1
        };
        assert_eq!(
            store.drop_partition(8, once).await,
            1024,
            "stops at the first chunk no longer wanted"
        );
        assert_eq!(store.drop_partition(8, || true).await, 476);
        for i in 0..1500 {
            store
                .put(&record(digest_in(8, i), "a", 0, 1000, 10))
                .await
                .unwrap();
        }
        assert_eq!(store.drop_partition(7, || true).await, 1500);
        assert!(store.get(&digest_in(7, 0)).await.unwrap().is_none());
        assert!(store.get(&digest_in(8, 0)).await.unwrap().is_some());
        let counts = store.partition_object_counts();
        assert_eq!((counts[7], counts[8]), (0, 1500));
        assert_eq!(store.object_count(), 1500);
        assert!(walk(&store, PartitionCursor::new(7, None), None)
            .await
            .is_empty());
        assert_eq!(store.drop_partition(7, || true).await, 0);
    });
}
