//! Truncation in a real shard store: reads see cut-off records as gone at once, the background
//! sweep reclaims their index entries and live bytes, and a reopen with the durable cut-offs
//! never brings them back while later writes stay.

mod common;

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::truncate::{apply, Truncated};
use apogee_engine::shard::{ShardStore, StoreConfig};
use apogee_engine::tuning::Tuning;
use apogee_wire::Digest;
use common::run;

/// The shared test store with a small read cache: truncation must hide cached records too.
fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        cache_bytes: 1 << 20,
        ..common::cfg(dir, true)
    }
}

/// Record `i` of `set`, last updated at `lut_ms`.
fn record(set: &str, i: u32, lut_ms: u64) -> Record {
    Record {
        digest: Digest::of_integer(set, i64::from(i)),
        meta: RecordMeta {
            generation: 1,
            void_time: 0,
            last_update_ms: lut_ms,
        },
        set_name: set.as_bytes().to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type: 4,
            value: vec![i as u8; 500],
        }],
        tombstone: false,
    }
}

async fn present(store: &Rc<ShardStore>, set: &str, i: u32) -> bool {
    store
        .get(&Digest::of_integer(set, i64::from(i)))
        .await
        .unwrap()
        .is_some()
}

#[test]
fn set_truncate_hides_at_once_sweeps_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = ShardStore::open(cfg(&d), Arc::default()).await.unwrap();
        for i in 0..600 {
            store
                .put(&record("a", i, 1000 + u64::from(i)))
                .await
                .unwrap();
            store.put(&record("b", i, 1000)).await.unwrap();
        }
        let live_before = store.stats().snapshot();
        // Cut set "a" at 1300: records 0..300 of it go, 300.. (updated at 1300 or later) stay.
        let mut durable = Truncated::default();
        durable.sets.insert(b"a".to_vec(), 1300);
        assert!(apply(
            &store.truncate_points(),
            &store.set_stats(),
            Some(b"a"),
            1300
        ));
        assert!(!present(&store, "a", 0).await && !present(&store, "a", 299).await);
        assert!(present(&store, "a", 300).await && present(&store, "b", 0).await);
        assert!(store.meta(&Digest::of_integer("a", 5)).is_none());
        // Not yet swept: the index still holds them.
        assert_eq!(store.object_count(), 1200);
        assert_eq!(store.truncate_sweep().await, 300);
        assert_eq!(store.object_count(), 900);
        assert_eq!(
            store.truncate_sweep().await,
            0,
            "a second sweep finds nothing"
        );
        let after = store.stats().snapshot();
        assert_eq!(after.objects, 900);
        assert!(after.used_bytes < live_before.used_bytes, "{after:?}");
        let counts: std::collections::HashMap<_, _> =
            store.set_stats().snapshot().into_iter().collect();
        assert_eq!((counts[&b"a".to_vec()], counts[&b"b".to_vec()]), (300, 600));
        // A write after the truncate is a new record (generation starts over) and stays.
        store.put(&record("a", 7, 2000)).await.unwrap();
        drop(store);

        let (store, report) = ShardStore::open_truncated(
            cfg(&d),
            Arc::default(),
            &durable,
            Arc::new(Tuning::from_config(&cfg(&d))),
        )
        .await
        .unwrap();
        // The swept records are still on disk (no tombstones): the cut-off skips them, all but
        // a/7, whose newest version came after it.
        assert_eq!(report.truncated, 299);
        assert_eq!(report.objects, 901);
        for i in 0..300 {
            assert_eq!(present(&store, "a", i).await, i == 7, "a/{i}");
        }
        assert!(present(&store, "a", 599).await && present(&store, "b", 599).await);
        drop(store);

        // Without the cut-off the swept records would come back: the durable point is what
        // keeps them away (truncate-undo's documented effect on a cold start).
        let (store, report) = ShardStore::open(cfg(&d), Arc::default()).await.unwrap();
        assert_eq!(report.objects, 1200);
        drop(store);
    });
}

#[test]
fn recovery_skips_records_before_the_namespace_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) = ShardStore::open(cfg(&d), Arc::default()).await.unwrap();
        for i in 0..400 {
            store.put(&record("a", i, 1000)).await.unwrap();
            store
                .put(&record("", i, 1000 + u64::from(i)))
                .await
                .unwrap();
        }
        // A crash before any sweep: only the durable cut-off remains.
        drop(store);
        let durable = Truncated {
            namespace_ms: 1200,
            ..Default::default()
        };
        let stats = Arc::new(apogee_engine::stats::ShardStats::default());
        let (store, report) = ShardStore::open_truncated(
            cfg(&d),
            stats.clone(),
            &durable,
            Arc::new(Tuning::from_config(&cfg(&d))),
        )
        .await
        .unwrap();
        assert_eq!(report.truncated, 600);
        assert_eq!(report.objects, 200);
        assert_eq!(stats.snapshot().objects, 200);
        assert!(!present(&store, "a", 399).await && !present(&store, "", 199).await);
        assert!(present(&store, "", 200).await);
        // Reads and writes still work; the skipped records' bytes are no longer live.
        store.put(&record("a", 1, 5000)).await.unwrap();
        assert!(present(&store, "a", 1).await);
        let counts: std::collections::HashMap<_, _> =
            store.set_stats().snapshot().into_iter().collect();
        assert_eq!(counts[&b"a".to_vec()], 1);
    });
}
