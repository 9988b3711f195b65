//! The engine's read-modify-write (`ShardStore::update`) and version-ordered apply
//! (`ShardStore::apply_if_newer`) on a real file inside a real glommio executor: decisions
//! are applied (and survive a restart), `Keep` writes nothing, a write landing during the read
//! makes the update read again, and one that lands every time ends in `Busy`.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use apogee_engine::clock;
use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::{
    Applied, ConflictPolicy, Decision, ShardStore, StoreConfig, UpdateError, UPDATE_ATTEMPTS_MAX,
};
use apogee_wire::Digest;
use common::{cfg, run};

fn digest() -> Digest {
    Digest::of_string("s", "k")
}

/// Version `generation` of the test record, holding `value` and updated at `last_update_ms`.
fn version(generation: u16, last_update_ms: u64, value: u8) -> Record {
    Record {
        digest: digest(),
        meta: RecordMeta {
            generation,
            void_time: 0,
            last_update_ms,
        },
        set_name: b"s".to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type: 4,
            value: vec![value],
        }],
        tombstone: false,
    }
}

/// The next version of `r` with `value`.
fn next(r: &Record, value: u8) -> Record {
    version(r.meta.generation + 1, r.meta.last_update_ms + 1, value)
}

async fn open(c: StoreConfig) -> Rc<ShardStore> {
    ShardStore::open(c, Arc::default()).await.unwrap().0
}

fn writes(store: &ShardStore) -> u64 {
    store.stats().snapshot().writes
}

#[test]
fn decisions_are_applied_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, true)).await;
        // Absent: decide sees None; a write creates the record and its output comes back.
        let out = store
            .update(&digest(), |r| {
                assert!(r.is_none());
                Ok::<_, ()>((Decision::Write(version(1, 10, 7)), "created"))
            })
            .await
            .unwrap();
        assert_eq!(out, "created");
        let out = store
            .update(&digest(), |r| {
                let r = r.expect("written above");
                Ok::<_, ()>((Decision::Write(next(&r, 8)), r.bins[0].value[0]))
            })
            .await
            .unwrap();
        assert_eq!(out, 7, "decide saw the version written before");
        drop(store);
        let store = open(cfg(&d, true)).await;
        assert_eq!(store.get(&digest()).await.unwrap(), Some(version(2, 11, 8)));
        store
            .update(&digest(), |_| Ok::<_, ()>((Decision::Delete, ())))
            .await
            .unwrap();
        assert_eq!(store.get(&digest()).await.unwrap(), None);
        drop(store);
        let store = open(cfg(&d, true)).await;
        assert_eq!(
            store.get(&digest()).await.unwrap(),
            None,
            "the delete's tombstone is durable"
        );
        assert_eq!(store.object_count(), 0);
    });
}

#[test]
fn keep_and_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, true)).await;
        store.put(&version(1, 10, 7)).await.unwrap();
        let before = writes(&store);
        store
            .update(&digest(), |_| Ok::<_, ()>((Decision::Keep, ())))
            .await
            .unwrap();
        let refused = store
            .update(&digest(), |_| Err::<(Decision, ()), _>("no"))
            .await;
        assert!(matches!(refused, Err(UpdateError::Refused("no"))));
        // Delete of an absent record: nothing to write.
        let other = Digest::of_string("s", "absent");
        store
            .update(&other, |r| {
                assert!(r.is_none());
                Ok::<_, ()>((Decision::Delete, ()))
            })
            .await
            .unwrap();
        assert_eq!(writes(&store), before, "nothing was appended");
        assert_eq!(store.shadow_count(), 0, "no tombstone for an absent record");
        assert_eq!(store.get(&digest()).await.unwrap(), Some(version(1, 10, 7)));
    });
}

#[test]
fn a_write_during_the_read_makes_the_update_read_and_decide_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, true)).await;
        store.put(&version(1, 10, 1)).await.unwrap();
        let calls = Cell::new(0);
        let seen = store
            .update(&digest(), |r| {
                let r = r.expect("present");
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    // Another writer lands between this update's read and its append.
                    let _ticket = store.append(&next(&r, 50)).unwrap();
                }
                Ok::<_, ()>((
                    Decision::Write(next(&r, r.bins[0].value[0] + 1)),
                    r.meta.generation,
                ))
            })
            .await
            .unwrap();
        assert_eq!(calls.get(), 2);
        assert_eq!(
            seen, 2,
            "the second decision saw the other writer's version"
        );
        assert_eq!(
            store.get(&digest()).await.unwrap(),
            Some(version(3, 12, 51)),
            "the update applied on top of the other write, which is not lost"
        );
    });
}

#[test]
fn a_record_that_changes_during_every_read_ends_busy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, false)).await;
        store.put(&version(1, 10, 0)).await.unwrap();
        let calls = Cell::new(0);
        let outcome = store
            .update(&digest(), |r| {
                let r = r.expect("present");
                calls.set(calls.get() + 1);
                let _ticket = store.append(&next(&r, 1)).unwrap();
                Ok::<_, ()>((Decision::Write(next(&r, 99)), ()))
            })
            .await;
        assert!(
            matches!(outcome, Err(UpdateError::Busy { attempts }) if attempts == UPDATE_ATTEMPTS_MAX),
            "{outcome:?}"
        );
        assert_eq!(calls.get(), UPDATE_ATTEMPTS_MAX);
        let r = store.get(&digest()).await.unwrap().unwrap();
        assert_eq!(
            r.meta.generation,
            1 + UPDATE_ATTEMPTS_MAX as u16,
            "only the other writer's versions were stored"
        );
        assert_eq!(r.bins[0].value, vec![1]);
        assert!(outcome
            .unwrap_err()
            .to_string()
            .contains("8 read-modify-write attempts"));
    });
}

const GEN: ConflictPolicy = ConflictPolicy::Generation;

#[test]
fn apply_if_newer_by_last_update_time_lets_a_later_time_win_over_a_higher_generation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, true)).await;
        let lut = ConflictPolicy::LastUpdateTime;
        assert_eq!(
            store
                .apply_if_newer(&version(5, 100, 1), lut)
                .await
                .unwrap(),
            Applied::Stored
        );
        // Generation would keep gen 5; last-update-time takes the later write.
        assert_eq!(
            store
                .apply_if_newer(&version(2, 200, 2), GEN)
                .await
                .unwrap(),
            Applied::NotNewer
        );
        assert_eq!(
            store
                .apply_if_newer(&version(2, 200, 2), lut)
                .await
                .unwrap(),
            Applied::Stored
        );
        assert_eq!(
            store
                .apply_if_newer(&version(9, 150, 3), lut)
                .await
                .unwrap(),
            Applied::NotNewer
        );
        assert_eq!(
            store.get(&digest()).await.unwrap(),
            Some(version(2, 200, 2))
        );
    });
}

#[test]
fn apply_if_newer_orders_by_generation_then_last_update_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let store = open(cfg(&d, true)).await;
        assert_eq!(
            store
                .apply_if_newer(&version(2, 100, 1), GEN)
                .await
                .unwrap(),
            Applied::Stored,
            "nothing local: stored"
        );
        for stale in [version(1, 500, 9), version(2, 100, 9), version(2, 99, 9)] {
            assert_eq!(
                store.apply_if_newer(&stale, GEN).await.unwrap(),
                Applied::NotNewer
            );
        }
        assert_eq!(
            store.get(&digest()).await.unwrap(),
            Some(version(2, 100, 1))
        );
        assert_eq!(
            store
                .apply_if_newer(&version(2, 101, 3), GEN)
                .await
                .unwrap(),
            Applied::Stored
        );
        // Stored as it came: its generation is not bumped.
        assert_eq!(
            store.get(&digest()).await.unwrap(),
            Some(version(2, 101, 3))
        );
        let mut expired = version(9, 200, 4);
        expired.meta.void_time = clock::now_secs() - 10;
        assert_eq!(
            store.apply_if_newer(&expired, GEN).await.unwrap(),
            Applied::Expired
        );
        // A tombstone of the very version stored (same generation and time) deletes it.
        let tie = Record::tombstone(digest(), 2, 101);
        assert_eq!(
            store.apply_if_newer(&tie, GEN).await.unwrap(),
            Applied::Stored
        );
        assert_eq!(store.get(&digest()).await.unwrap(), None);
        assert_eq!(
            store
                .apply_if_newer(&version(2, 101, 3), GEN)
                .await
                .unwrap(),
            Applied::Stored,
            "a shadow keeps no version: a record after it is stored"
        );
        // A newer tombstone deletes, durably.
        let tombstone = Record::tombstone(digest(), 3, 300);
        assert_eq!(
            store.apply_if_newer(&tombstone, GEN).await.unwrap(),
            Applied::Stored
        );
        assert_eq!(store.get(&digest()).await.unwrap(), None);
        drop(store);
        let store = open(cfg(&d, true)).await;
        assert_eq!(store.get(&digest()).await.unwrap(), None);
    });
}
