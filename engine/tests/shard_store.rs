//! The shard store on a real file with O_DIRECT, inside a real glommio executor: round trips,
//! recovery across blocks, group commit, the commit-to-device modes and refusal of foreign files.

mod common;

use std::rc::Rc;
use std::sync::Arc;

use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::{InjectedFault, ShardStore, StoreConfig};
use apogee_engine::StoreError;
use apogee_wire::Digest;
use common::{cfg, run};

fn record(i: u32, value_bytes: usize) -> Record {
    Record {
        digest: Digest::of_integer("s", i64::from(i)),
        meta: RecordMeta {
            generation: 1,
            void_time: 0,
            last_update_ms: 1,
        },
        set_name: b"s".to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type: 4,
            value: vec![(i % 251) as u8; value_bytes],
        }],
        tombstone: false,
    }
}

/// Opens (or reopens) a store, which must succeed.
async fn open(c: StoreConfig) -> (Rc<ShardStore>, apogee_engine::shard::store::RecoveryReport) {
    ShardStore::open(c, Arc::default()).await.unwrap()
}

/// The tombstone that deletes record `i`.
fn tombstone(i: u32) -> Record {
    Record::tombstone(Digest::of_integer("s", i64::from(i)), 1, 1)
}

#[test]
fn records_span_blocks_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        // ~1 MiB of records in 128 KiB blocks: at least 8 blocks.
        for i in 0..1000 {
            store.put(&record(i, 1000)).await.unwrap();
        }
        let gone = tombstone(5);
        store.put(&gone).await.unwrap();
        // Read back now: most records are on disk only.
        for i in [0u32, 1, 499, 999] {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000))
            );
        }
        drop(store);
        let (store, report) = open(cfg(&d, true)).await;
        assert!(report.blocks >= 8, "{report:?}");
        assert_eq!(report.objects, 999);
        assert_eq!(report.bad_records, 0);
        for i in 0..1000 {
            let got = store.get(&record(i, 1000).digest).await.unwrap();
            assert_eq!(got, (i != 5).then(|| record(i, 1000)), "record {i}");
        }
    });
}

#[test]
fn concurrent_writers_share_device_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        let writers: Vec<_> = (0..200u32)
            .map(|i| {
                let s: Rc<ShardStore> = store.clone();
                glommio::spawn_local(async move { s.put(&record(i, 100)).await.unwrap() })
            })
            .collect();
        for w in writers {
            w.await;
        }
        let flushes = store.flush_count();
        assert!(flushes >= 1);
        assert!(
            flushes <= 20,
            "200 concurrent writers needed {flushes} flushes"
        );
        assert_eq!(store.object_count(), 200);
    });
}

#[test]
fn commit_to_device_off_acknowledges_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, false)).await;
        for i in 0..10 {
            store.put(&record(i, 100)).await.unwrap();
        }
        assert_eq!(store.flush_count(), 0, "nothing written before the flush");
        assert!(store.get(&record(3, 100).digest).await.unwrap().is_some());
        store.flush_all().await.unwrap();
        assert_eq!(store.flush_count(), 1);
        drop(store);
        let (_, report) = open(cfg(&d, false)).await;
        assert_eq!(report.objects, 10);
    });
}

#[test]
fn oversized_records_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        let err = store.put(&record(1, 200 * 1024)).await.unwrap_err();
        assert!(matches!(err, StoreError::RecordTooBig { .. }), "{err}");
        assert_eq!(store.object_count(), 0);
        drop(store);
        let mut other = cfg(&d, true);
        other.shard_count = 2;
        let err = ShardStore::open(other, Arc::default()).await.err().unwrap();
        assert!(err.to_string().contains("written by shard 0 of 1"), "{err}");
        let mut other = cfg(&d, true);
        other.block_bytes = 256 * 1024;
        let err = ShardStore::open(other, Arc::default()).await.err().unwrap();
        assert!(err.to_string().contains("write-block-size 131072"), "{err}");
        let mut other = cfg(&d, true);
        other.namespace = "bar".into();
        let err = ShardStore::open(other, Arc::default()).await.err().unwrap();
        assert!(err.to_string().contains("namespace 'test'"), "{err}");
    });
}

#[test]
fn cached_reads_do_no_io_and_never_serve_stale_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(&d, true);
        c.cache_bytes = 4 << 20;
        let stats: Arc<apogee_engine::stats::ShardStats> = Arc::default();
        let (store, _) = ShardStore::open(c.clone(), stats.clone()).await.unwrap();
        // 1 MiB of records: most blocks leave memory, but every record stays cached.
        for i in 0..1000 {
            store.put(&record(i, 1000)).await.unwrap();
        }
        for i in 0..1000 {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000))
            );
        }
        let s = stats.snapshot();
        assert_eq!(s.device_reads, 0, "every read was served from memory");
        assert_eq!(s.cache_hits, 1000);
        // A newer version replaces the cached one; a delete removes it.
        let mut newer = record(7, 10);
        newer.meta.generation = 2;
        store.put(&newer).await.unwrap();
        assert_eq!(store.get(&newer.digest).await.unwrap(), Some(newer.clone()));
        let gone = tombstone(8);
        store.put(&gone).await.unwrap();
        assert_eq!(store.get(&gone.digest).await.unwrap(), None);
        drop(store);
        // After a restart the cache is cold: the first read goes to the device, the second not.
        let stats: Arc<apogee_engine::stats::ShardStats> = Arc::default();
        let (store, _) = ShardStore::open(c, stats.clone()).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                store.get(&record(1, 1000).digest).await.unwrap(),
                Some(record(1, 1000))
            );
        }
        assert_eq!(stats.snapshot().device_reads, 1);
        assert_eq!(stats.snapshot().cache_hits, 1);
        assert_eq!(store.get(&newer.digest).await.unwrap(), Some(newer));
    });
}

/// Runs every pending defragmentation to completion.
/// Writes `make(i)` for `i = first, first + 1, ...` until a write is refused; returns that `i`
/// and the error. Fails the test if `limit` writes all pass.
async fn write_until_refused(
    store: &ShardStore,
    first: u32,
    limit: u32,
    make: impl Fn(u32) -> Record,
) -> (u32, StoreError) {
    for i in first..first + limit {
        if let Err(e) = store.put(&make(i)).await {
            return (i, e);
        }
    }
    panic!("{limit} writes from {first} were never refused");
}

async fn defrag_all(store: &ShardStore) -> u64 {
    let mut n = 0;
    while store.defrag_once().await.unwrap() {
        n += 1;
    }
    n
}

/// `rounds` rounds of overwriting records 0..200 (and, with `delete_every`, deleting every
/// such record after each round), each round defragmented to completion; returns the largest
/// span of the data seen.
async fn churn(store: &ShardStore, rounds: u32, delete_every: Option<usize>) -> u64 {
    let mut max_span = 0;
    for round in 0..rounds {
        for i in 0..200 {
            store.put(&versioned(i, round)).await.unwrap();
        }
        if let Some(step) = delete_every {
            for i in (0..200).step_by(step) {
                store.put(&tombstone(i)).await.unwrap();
            }
        }
        defrag_all(store).await;
        max_span = max_span.max(store.file_span_bytes());
    }
    max_span
}

fn versioned(i: u32, round: u32) -> Record {
    let mut r = record(i, 1000);
    r.meta.generation = (round % 60_000 + 1) as u16;
    r.bins[0].value = vec![(round % 251) as u8; 1000];
    r
}

#[test]
fn overwriting_the_same_keys_runs_at_constant_disk_usage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        let block = 128 * 1024u64;
        // 200 records of ~1.1 KiB (about 2 blocks live), overwritten 60 times (about 100
        // blocks written, 13 MiB, 100x the live data).
        let max_span = churn(&store, 60, None).await;
        assert!(
            store.blocks_defragged() > 50,
            "{}",
            store.blocks_defragged()
        );
        assert!(
            max_span <= 4096 + 12 * block,
            "file grew to {max_span} bytes"
        );
        for i in 0..200 {
            assert_eq!(
                store.get(&versioned(i, 0).digest).await.unwrap(),
                Some(versioned(i, 59))
            );
        }
        drop(store);
        let (store, report) = open(cfg(&d, true)).await;
        assert_eq!(report.objects, 200);
        assert_eq!(report.bad_records, 0);
        for i in 0..200 {
            assert_eq!(
                store.get(&versioned(i, 0).digest).await.unwrap(),
                Some(versioned(i, 59))
            );
        }
    });
}

#[test]
fn deleted_records_stay_deleted_through_defrag_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        for i in 0..300 {
            store.put(&versioned(i, 0)).await.unwrap();
        }
        for i in (0..300).step_by(2) {
            let t = tombstone(i);
            store.put(&t).await.unwrap();
        }
        // Churn other keys so the blocks holding the old versions and the tombstones are
        // defragmented, reopening the store in between.
        let mut store = store;
        let mut defragged = 0;
        for cycle in 0..4 {
            for round in 0..15 {
                for i in 1000..1100 {
                    store.put(&versioned(i, cycle * 100 + round)).await.unwrap();
                }
                defragged += defrag_all(&store).await;
            }
            drop(store);
            let (s, report) = open(cfg(&d, true)).await;
            assert_eq!(report.objects, 150 + 100, "cycle {cycle}");
            store = s;
            for i in 0..300 {
                let got = store.get(&versioned(i, 0).digest).await.unwrap();
                let want = (i % 2 == 1).then(|| versioned(i, 0));
                assert_eq!(got, want, "record {i} after cycle {cycle}");
            }
        }
        assert!(defragged > 20, "{defragged} blocks defragmented");
    });
}

/// Random puts, overwrites, deletes and defragmentation, with restarts, against a BTreeMap:
/// after every restart the store holds exactly what the model says.
#[test]
fn matches_a_model_through_random_ops_defrag_and_restarts() {
    use rand_model::Lcg;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut rng = Lcg(0x5eed);
        let mut model = std::collections::BTreeMap::new();
        let (mut store, _) = open(cfg(&d, true)).await;
        let mut defragged = 0;
        for step in 0..6000u32 {
            let key = rng.next() % 400;
            match rng.next() % 10 {
                0..=1 => {
                    let t = tombstone(key);
                    store.put(&t).await.unwrap();
                    model.remove(&key);
                }
                _ => {
                    let size = 100 + (rng.next() % 3000) as usize;
                    let mut r = record(key, size);
                    r.meta.generation = (step % 60_000 + 1) as u16;
                    store.put(&r).await.unwrap();
                    model.insert(key, r);
                }
            }
            if step % 100 == 99 {
                defragged += defrag_all(&store).await;
            }
            if step % 1500 == 1499 {
                drop(store);
                let (s, report) = open(cfg(&d, true)).await;
                assert_eq!(report.objects as usize, model.len(), "after step {step}");
                store = s;
                for key in 0..400 {
                    let got = store.get(&record(key, 0).digest).await.unwrap();
                    assert_eq!(got.as_ref(), model.get(&key), "key {key} after step {step}");
                }
            }
        }
        assert!(defragged > 10, "{defragged} blocks defragmented");
    });
}

mod rand_model {
    /// A tiny deterministic generator, so a failing sequence replays exactly.
    pub struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }
}

#[test]
fn expired_records_are_swept_and_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let stats: Arc<apogee_engine::stats::ShardStats> = Arc::default();
        let (store, _) = ShardStore::open(cfg(&d, true), stats.clone())
            .await
            .unwrap();
        let now = apogee_engine::clock::now_secs();
        // Version 1 never expires; version 2 expired ten seconds ago.
        store.put(&record(1, 100)).await.unwrap();
        let mut v2 = record(1, 200);
        v2.meta.generation = 2;
        v2.meta.void_time = now - 10;
        store.put(&v2).await.unwrap();
        let mut fresh = record(2, 100);
        fresh.meta.void_time = now + 1000;
        store.put(&fresh).await.unwrap();
        assert_eq!(
            store.get(&v2.digest).await.unwrap(),
            None,
            "expired before any sweep"
        );
        assert_eq!(store.object_count(), 2);
        assert_eq!(store.expire_sweep(now).await, 1);
        assert_eq!(store.object_count(), 1);
        assert_eq!(store.shadow_count(), 1);
        assert_eq!(stats.snapshot().expired, 1);
        assert_eq!(store.get(&v2.digest).await.unwrap(), None);
        drop(store);
        let (store, report) = open(cfg(&d, true)).await;
        assert_eq!(report.objects, 1);
        assert_eq!(
            store.get(&v2.digest).await.unwrap(),
            None,
            "version 1 must not come back"
        );
        assert_eq!(store.get(&fresh.digest).await.unwrap(), Some(fresh));
    });
}

#[test]
fn stop_writes_refuses_writes_keeps_reads_and_resumes_after_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(&d, true);
        // 20 blocks of 128 KiB: writes stop once live data reaches 70 % (about 1.8 MiB).
        c.file_bytes_max = 4096 + 20 * 128 * 1024;
        let (store, _) = open(c.clone()).await;
        let (written, err) = write_until_refused(&store, 0, 10_000, |i| record(i, 1000)).await;
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err}");
        assert!(err.to_string().contains("stop-writes"), "{err}");
        assert!(written > 1000, "stopped too early: {written}");
        assert!(store.file_span_bytes() <= c.file_bytes_max);
        // Reads keep working.
        assert_eq!(
            store.get(&record(0, 1000).digest).await.unwrap(),
            Some(record(0, 1000))
        );
        // Deletes still pass; once defragmentation frees space, writes resume.
        for i in 0..written / 2 {
            let t = tombstone(i);
            store.put(&t).await.unwrap();
        }
        defrag_all(&store).await;
        store.put(&record(written, 1000)).await.unwrap();
        assert!(store.file_span_bytes() <= c.file_bytes_max);
        drop(store);
        let (store, report) = open(c).await;
        assert_eq!(report.objects as u32, written - written / 2 + 1);
        assert_eq!(
            store.get(&record(written, 1000).digest).await.unwrap(),
            Some(record(written, 1000))
        );
    });
}

/// EIO and a short write on the device: the write in flight is not acknowledged, the shard
/// refuses writes from then on, reads of what is on disk keep working, and after a restart
/// every acknowledged record is there and writes work again.
#[test]
fn device_faults_are_never_acknowledged_and_stop_the_shard() {
    for (fault, message) in [
        (InjectedFault::Eio, "Input/output error"),
        (InjectedFault::ShortWrite, "short write"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        run(move || async move {
            let (store, _) = open(cfg(&d, true)).await;
            for i in 0..50 {
                store.put(&record(i, 1000)).await.unwrap();
            }
            store.inject_fault(fault);
            let err = store.put(&record(50, 1000)).await.unwrap_err();
            assert!(
                matches!(err, StoreError::DeviceFailed { .. }),
                "{fault:?}: {err}"
            );
            assert!(err.to_string().contains(message), "{fault:?}: {err}");
            let again = store.put(&record(51, 1000)).await.unwrap_err();
            assert!(
                matches!(again, StoreError::DeviceFailed { .. }),
                "{fault:?}: {again}"
            );
            for i in 0..50 {
                assert_eq!(
                    store.get(&record(i, 1000).digest).await.unwrap(),
                    Some(record(i, 1000))
                );
            }
            drop(store);
            let (store, report) = open(cfg(&d, true)).await;
            assert!(report.objects >= 50, "{fault:?}: acknowledged records lost");
            for i in 0..50 {
                assert_eq!(
                    store.get(&record(i, 1000).digest).await.unwrap(),
                    Some(record(i, 1000))
                );
            }
            store.put(&record(52, 1000)).await.unwrap();
        });
    }
}

/// ENOSPC from a block write is a full filesystem, not a broken device: the write in flight
/// is answered out-of-space (not acknowledged), client writes are refused until a flush
/// succeeds, reads and deletes go on, the block stays in memory and is written again, and
/// writes resume without a restart. The refused write is in doubt: it is in memory and
/// lands with the next successful flush, like a write whose answer was lost.
#[test]
fn enospc_answers_out_of_space_and_the_shard_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        for i in 0..50 {
            store.put(&record(i, 1000)).await.unwrap();
        }
        store.inject_fault(InjectedFault::Enospc);
        let err = store.put(&record(50, 1000)).await.unwrap_err();
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        let again = store.put(&record(51, 1000)).await.unwrap_err();
        assert!(matches!(again, StoreError::OutOfSpace { .. }), "{again}");
        assert!(again.to_string().contains("filesystem is full"), "{again}");
        for i in 0..50 {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000))
            );
        }
        // A delete is not refused; its flush writes the kept block again, which succeeds now.
        store.put(&tombstone(0)).await.unwrap();
        store.put(&record(52, 1000)).await.unwrap();
        drop(store);
        let (store, _) = open(cfg(&d, true)).await;
        assert_eq!(store.get(&record(0, 1000).digest).await.unwrap(), None);
        for i in (1..51).chain([52]) {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000)),
                "{i}"
            );
        }
    });
}

#[test]
fn eviction_removes_soonest_to_expire_records_first_and_durably() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(&d, true);
        c.file_bytes_max = 4096 + 20 * 128 * 1024;
        c.evict_used_pct = 40;
        let stats: Arc<apogee_engine::stats::ShardStats> = Arc::default();
        let (store, _) = ShardStore::open(c.clone(), stats.clone()).await.unwrap();
        let now = apogee_engine::clock::now_secs();
        // 300 records without a TTL, then 1,000 with TTLs growing with i: about 54 % used.
        for i in 0..300 {
            store.put(&record(10_000 + i, 1000)).await.unwrap();
        }
        for i in 0..1000 {
            let mut r = record(i, 1000);
            r.meta.void_time = now + 1000 + i;
            store.put(&r).await.unwrap();
        }
        let evicted = store.evict().await.unwrap() as u32;
        assert!(evicted > 100 && evicted < 1000, "evicted {evicted}");
        assert_eq!(stats.snapshot().evicted, u64::from(evicted));
        assert_eq!(store.evict().await.unwrap(), 0, "below the limit now");
        // The soonest to expire went first; records without a TTL stayed.
        for i in 0..1000 {
            let present = store.get(&record(i, 0).digest).await.unwrap().is_some();
            assert_eq!(present, i >= evicted, "record {i}");
        }
        for i in 0..300 {
            assert!(store
                .get(&record(10_000 + i, 0).digest)
                .await
                .unwrap()
                .is_some());
        }
        store.flush_all().await.unwrap();
        drop(store);
        let (store, report) = open(c).await;
        assert_eq!(
            report.objects as u32,
            300 + 1000 - evicted,
            "evictions are durable"
        );
        assert!(store.get(&record(0, 0).digest).await.unwrap().is_none());
    });
}

/// A sweep over more records than one chunk yields between chunks and still expires exactly
/// the expired ones; a record rewritten with a new life while the sweep runs is kept.
#[test]
fn sweeps_in_chunks_expire_exactly_the_expired() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let stats: Arc<apogee_engine::stats::ShardStats> = Arc::default();
        let (store, _) = ShardStore::open(cfg(&d, false), stats.clone())
            .await
            .unwrap();
        let now = apogee_engine::clock::now_secs();
        for i in 0..10_000u32 {
            let mut r = record(i, 10);
            r.meta.void_time = if i % 3 == 0 { now + 1000 } else { now - 5 };
            store.put(&r).await.unwrap();
        }
        // Keeps writing renewed versions of expired records while the sweep runs.
        let writer = {
            let store = store.clone();
            glommio::spawn_local(async move {
                for i in (1..10_000u32).step_by(300) {
                    let mut r = record(i, 10);
                    r.meta.generation = 2;
                    r.meta.void_time = now + 1000;
                    store.put(&r).await.unwrap();
                    glommio::yield_if_needed().await;
                }
            })
        };
        let expired = store.expire_sweep(now).await;
        writer.await;
        // 3,334 records never expire; the writer renews 34 of the 6,666 expired ones (i = 1,
        // 301, ..., 9901), before or after the sweep reaches them: either way they live.
        assert!((6666 - 34..=6666).contains(&expired), "expired {expired}");
        assert_eq!(store.object_count(), 3334 + 34);
        assert_eq!(stats.snapshot().expired, expired as u64);
        for i in 0..10_000u32 {
            let alive = store.get(&record(i, 10).digest).await.unwrap().is_some();
            let renewed = i % 300 == 1 && i % 3 != 0;
            if i % 3 == 0 || renewed {
                assert!(alive, "record {i} must live");
            }
        }
    });
}

/// Shard 1 of 2 over three configured files: its blocks stripe over its region of each file
/// (nothing written into shard 0's regions), records survive overwrites, deletes, defrag and a
/// restart, the files fill to capacity and no further, and a changed layout is refused.
#[test]
fn configured_files_are_split_into_regions_and_striped() {
    use apogee_engine::shard::media::regions;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mib = 1u64 << 20;
        let paths: Vec<_> = ["a.dat", "b.dat", "c.dat"]
            .iter()
            .map(|n| (d.join(n), Some(8 * mib)))
            .collect();
        let layout = |shards: u32, size: u64| {
            let p: Vec<_> = paths.iter().map(|(p, _)| (p.clone(), Some(size))).collect();
            StoreConfig {
                shard: 1,
                shard_count: shards,
                extents: regions(&p, 1, shards).unwrap(),
                ..cfg(&d, true)
            }
        };
        let (store, _) = open(layout(2, 8 * mib)).await;
        // 4 MiB regions of 128 KiB blocks: 31 blocks each after the header page, 93 in all.
        for round in 0..6 {
            for i in 0..600 {
                store.put(&versioned(i, round)).await.unwrap();
            }
            defrag_all(&store).await;
        }
        for i in (0..600).step_by(3) {
            store.put(&tombstone(i)).await.unwrap();
        }
        store.flush_all().await.unwrap();
        let want = |i: u32| (!i.is_multiple_of(3)).then(|| versioned(i, 5));
        for i in 0..600 {
            assert_eq!(store.get(&versioned(i, 0).digest).await.unwrap(), want(i));
        }
        drop(store);
        // Every file got blocks, all past shard 0's region: of the first 4 MiB only shard 0's
        // header page is written (by shard 1, so that page 0 is never a hole; see media.rs).
        for (p, _) in &paths {
            let bytes = std::fs::read(p).unwrap();
            assert!(
                bytes.len() as u64 > 4 * mib + 4096 + 128 * 1024,
                "{p:?} got no block"
            );
            assert!(bytes.len() as u64 <= 8 * mib);
            assert_eq!(&bytes[..8], b"APOGEEDB");
            assert!(bytes[4096..(4 * mib) as usize].iter().all(|&b| b == 0));
        }
        let (store, report) = open(layout(2, 8 * mib)).await;
        assert_eq!(report.objects, 400);
        assert_eq!(report.bad_records, 0);
        for i in 0..600 {
            assert_eq!(store.get(&versioned(i, 0).digest).await.unwrap(), want(i));
        }
        // Fill it: writes end in out-of-space, never past the regions.
        // 93 blocks of 128 KiB hold far fewer than 9,000 1 KiB records.
        let (_, err) = write_until_refused(&store, 1000, 9_000, |i| versioned(i, 0)).await;
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err}");
        drop(store);
        for (p, _) in &paths {
            assert!(std::fs::metadata(p).unwrap().len() <= 8 * mib);
        }
        // Another core count or file size moves the regions: refused, naming the cause.
        for (shards, size, says) in [
            (3, 12 * mib, "shard 0 of 2, but is opened as shard 0 of 3"),
            (2, 16 * mib, "regions are 4 MiB"),
        ] {
            let Err(e) = ShardStore::open(layout(shards, size), Arc::default()).await else {
                panic!("a changed layout opened");
            };
            assert!(e.to_string().contains(says), "{e}");
        }
    });
}

/// `storage-engine memory`: blocks live in RAM; overwrites run at constant memory through
/// defragmentation (freed blocks are dropped), reads after the write blocks have been flushed
/// come from RAM, nothing is written to the directory, and a reopened store is empty.
#[test]
fn memory_stores_keep_blocks_in_ram_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ns");
    run(move || async move {
        let mem = || StoreConfig {
            memory: true,
            file_bytes_max: 4096 + 40 * 128 * 1024,
            ..cfg(&d, true)
        };
        let (store, report) = open(mem()).await;
        assert_eq!(report.objects, 0);
        let max_span = churn(&store, 30, Some(7)).await;
        assert!(
            store.blocks_defragged() > 20,
            "{}",
            store.blocks_defragged()
        );
        assert!(
            max_span <= 4096 + 12 * 128 * 1024,
            "grew to {max_span} bytes"
        );
        store.flush_all().await.unwrap();
        for i in 0..200u32 {
            let want = (!i.is_multiple_of(7)).then(|| versioned(i, 29));
            assert_eq!(
                store.get(&versioned(i, 0).digest).await.unwrap(),
                want,
                "{i}"
            );
        }
        assert!(
            store.stats().snapshot().device_reads > 0,
            "reads came from the RAM blocks"
        );
        // Fills to its data size, then refuses writes with out-of-space.
        let (_, err) = write_until_refused(&store, 1000, 19_000, |i| versioned(i, 0)).await;
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err}");
        drop(store);
        assert!(!d.exists(), "a memory store writes no file");
        let (store, report) = open(mem()).await;
        assert_eq!((report.objects, store.object_count()), (0, 0));
    });
}

/// `storage-engine memory` persisted to files: everything is written to the files and read
/// back at start, but reads come from RAM — after the files are zeroed under a running store
/// (recovered from them first), every record still reads back.
#[test]
fn memory_persisted_to_files_recovers_and_reads_from_ram() {
    use apogee_engine::shard::media::regions;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let paths = vec![
            (d.join("m0.dat"), Some(8u64 << 20)),
            (d.join("m1.dat"), Some(8 << 20)),
        ];
        let mem = || StoreConfig {
            memory: true,
            extents: regions(&paths, 0, 1).unwrap(),
            ..cfg(&d, true)
        };
        let (store, _) = open(mem()).await;
        for round in 0..4 {
            for i in 0..300 {
                store.put(&versioned(i, round)).await.unwrap();
            }
            defrag_all(&store).await;
        }
        for i in (0..300).step_by(5) {
            store.put(&tombstone(i)).await.unwrap();
        }
        drop(store);
        let (store, report) = open(mem()).await;
        assert_eq!(report.objects, 240);
        for (p, _) in &paths {
            let len = std::fs::metadata(p).unwrap().len();
            std::fs::write(p, vec![0u8; len as usize]).unwrap();
        }
        for i in 0..300u32 {
            let want = (!i.is_multiple_of(5)).then(|| versioned(i, 3));
            assert_eq!(
                store.get(&versioned(i, 0).digest).await.unwrap(),
                want,
                "{i}"
            );
        }
    });
}

/// The shard of `shards` that owns record `i` of [`versioned`] (its partition modulo the
/// core count, as re-homing places it).
fn owner(i: u32, shards: u32) -> u32 {
    u32::from(versioned(i, 0).digest.partition().0) % shards
}

/// Writes records `0..n` (round 1) into the shards of `layout` that own them, durably.
async fn write_owned(layout: Vec<StoreConfig>, n: u32) {
    for c in layout {
        let (store, _) = open(c.clone()).await;
        for i in (0..n).filter(|&i| owner(i, c.shard_count) == c.shard) {
            store.put(&versioned(i, 1)).await.unwrap();
        }
        store.flush_all().await.unwrap();
    }
}

/// Every record `0..n` reads back (round 1) from the shard of `layout` that owns it, and no
/// shard holds a record it does not own.
async fn check_owned(layout: Vec<StoreConfig>, n: u32) {
    let mut found = 0;
    for c in layout {
        let (store, _) = open(c.clone()).await;
        let mut owned = 0;
        for i in (0..n).filter(|&i| owner(i, c.shard_count) == c.shard) {
            assert_eq!(
                store.get(&versioned(i, 0).digest).await.unwrap(),
                Some(versioned(i, 1))
            );
            owned += 1;
        }
        assert_eq!(store.object_count(), owned);
        found += owned;
    }
    assert_eq!(found, n as usize);
}

/// Re-homing the default layout: a full run reports where the data came from; a run that
/// only finds the committed copy's leftover (`<dir>.rehome-done`, as a crash just before its
/// removal leaves it) removes it and says the old core count is unknown, not zero.
#[test]
fn default_layout_rehome_reports_what_it_did() {
    use apogee_engine::rehome::{needed, rehome};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ns");
    run(move || async move {
        let layout = |shards: u32| -> Vec<StoreConfig> {
            (0..shards)
                .map(|shard| StoreConfig {
                    shard,
                    shard_count: shards,
                    ..cfg(&d, true)
                })
                .collect()
        };
        write_owned(layout(2), 300).await;
        let template = layout(3).remove(0);
        assert!(needed(&template).unwrap());
        let report = rehome(&template).await.unwrap();
        assert_eq!(
            (report.from_shards, report.to_shards, report.records),
            (Some(2), 3, 300)
        );
        assert!(!needed(&template).unwrap());
        // A crash between the commit (the rename to .rehome-done) and its removal.
        let done = d.with_file_name("ns.rehome-done");
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("shard-0.dat"), b"the old copy").unwrap();
        assert!(needed(&template).unwrap());
        let report = rehome(&template).await.unwrap();
        assert_eq!(
            (report.from_shards, report.to_shards, report.records),
            (None, 3, 0)
        );
        assert!(!done.exists());
        check_owned(layout(3), 300).await;
    });
}

/// Re-homing configured files to another core count, including its two resume paths: a
/// staging directory without `COMPLETE` (staging starts over from the old layout), and one
/// with it over files left half-wiped (the staging copy is loaded again).
#[test]
fn configured_files_rehome_and_resume_after_interruption() {
    use apogee_engine::rehome::{extents_needed, rehome_extents};
    use apogee_engine::shard::media::regions;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mib = 1u64 << 20;
        let paths: Vec<_> = ["r0.dat", "r1.dat"]
            .iter()
            .map(|n| (d.join(n), Some(16 * mib)))
            .collect();
        let layout = |shards: u32| -> Vec<StoreConfig> {
            (0..shards)
                .map(|shard| StoreConfig {
                    shard,
                    shard_count: shards,
                    extents: regions(&paths, shard, shards).unwrap(),
                    ..cfg(&d, true)
                })
                .collect()
        };
        // Written by 2 shards.
        write_owned(layout(2), 900).await;
        let stage = d.join("ns.rehome-stage");
        let check = |n: u32| check_owned(layout(n), 900);
        // Interrupted while staging: junk in the staging directory, no COMPLETE.
        std::fs::create_dir_all(&stage).unwrap();
        std::fs::write(stage.join("shard-0.dat"), b"half a copy").unwrap();
        assert!(extents_needed(&layout(3)[0], &stage).unwrap());
        let report = rehome_extents(&layout(3), &stage).await.unwrap();
        assert_eq!(
            (report.from_shards, report.to_shards, report.records),
            (Some(2), 3, 900)
        );
        assert!(!stage.exists());
        assert!(!extents_needed(&layout(3)[0], &stage).unwrap());
        check(3).await;
        // Interrupted after staging: a complete staging copy (made by a first run that is
        // then "undone" by half-wiping the files) must be loaded again.
        let report = rehome_extents(&layout(2), &stage).await.unwrap();
        assert_eq!(
            (report.from_shards, report.to_shards, report.records),
            (Some(3), 2, 900)
        );
        {
            // Rebuild the staging copy by hand, as a crash after COMPLETE would leave it.
            let mut staged = Vec::new();
            for shard in 0..2 {
                let c = StoreConfig {
                    dir: stage.clone(),
                    shard,
                    shard_count: 2,
                    ..cfg(&d, false)
                };
                staged.push(open(c).await.0);
            }
            for i in 0..900 {
                staged[owner(i, 2) as usize]
                    .put(&versioned(i, 1))
                    .await
                    .unwrap();
            }
            for s in &staged {
                s.flush_all().await.unwrap();
            }
            // As a first run from 3 cores writes it (the old layout is wiped after this).
            std::fs::write(stage.join("COMPLETE"), b"staged from 3 shards\n").unwrap();
        }
        for (p, _) in &paths {
            let mut bytes = std::fs::read(p).unwrap();
            let half = bytes.len() / 2;
            bytes[..half].fill(0);
            std::fs::write(p, bytes).unwrap();
        }
        assert!(extents_needed(&layout(2)[0], &stage).unwrap());
        let report = rehome_extents(&layout(2), &stage).await.unwrap();
        // The resumed run reads the old core count from the marker, not the wiped files.
        assert_eq!(
            (report.from_shards, report.to_shards, report.records),
            (Some(3), 2, 900)
        );
        check(2).await;
    });
}

/// A real full filesystem (a 16 MiB tmpfs, so only as root): a block taken while the store's
/// last look at the filesystem still showed room, then filled by another file, meets a real
/// ENOSPC when written. The write is answered out-of-space, client writes are refused, reads
/// go on; once the other file is gone the next space check reserves the block, the kept
/// block is written, and writes resume without a restart; nothing acknowledged is lost.
#[test]
fn a_real_enospc_is_out_of_space_and_passes_once_space_is_back() {
    if effective_uid() != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let d = mnt.join("ns");
    let filler = mnt.join("filler");
    run(move || async move {
        let (store, _) = open(cfg(&d, true)).await;
        // The store's open block and headroom are reserved; now another file takes the rest.
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let page = [0u8; 4096];
            loop {
                if let Err(e) = f.write_all(&page) {
                    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                    break;
                }
            }
        }
        // Fills the open block (reserved), then takes a new one on the stale room.
        let (written, err) = write_until_refused(&store, 0, 1000, |i| record(i, 1000)).await;
        assert!(matches!(err, StoreError::OutOfSpace { .. }), "{err}");
        assert!(err.to_string().contains("No space left on device"), "{err}");
        let again = store.put(&record(written + 1, 1000)).await.unwrap_err();
        assert!(matches!(again, StoreError::OutOfSpace { .. }), "{again}");
        for i in 0..written {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000))
            );
        }
        std::fs::remove_file(&filler).unwrap();
        // What the defragmenter does every 250 ms: a growth started before may still run.
        let mut checks = 0;
        while store.put(&record(written + 2, 1000)).await.is_err() {
            checks += 1;
            assert!(checks < 50, "writes did not resume");
            store.tend_space().await;
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(store);
        let (store, _) = open(cfg(&d, true)).await;
        for i in (0..=written).chain([written + 2]) {
            assert_eq!(
                store.get(&record(i, 1000).digest).await.unwrap(),
                Some(record(i, 1000)),
                "{i}"
            );
        }
    });
}

fn effective_uid() -> u32 {
    // The owner of /proc/self is the process's effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}
