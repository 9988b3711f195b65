//! A secondary index's background build in a real shard store, with writes and deletes
//! running between its chunks: when it ends, the index holds exactly the entries of the
//! records' newest versions — none the build read before a write replaced it, none of a
//! deleted record — and each partition is reported only once its entries are in.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::ShardStore;
use apogee_engine::sindex::{IndexId, IndexKey, Indexer};
use apogee_wire::Digest;
use common::with_store;

const INDEX: IndexId = 7;

/// Indexes bin `v` when it holds an integer (particle 1, 8 bytes big-endian).
struct BinV;

impl Indexer for BinV {
    fn is_empty(&self) -> bool {
        false
    }
    fn keys(&self, record: &Record, out: &mut Vec<(IndexId, IndexKey)>) {
        for b in &record.bins {
            if b.name == b"v" && b.particle_type == 1 {
                let v = i64::from_be_bytes(b.value[..8].try_into().unwrap());
                out.push((INDEX, v));
            }
        }
    }
}

fn digest(i: u32) -> Digest {
    let mut d = [0u8; 20];
    let h = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    d[..8].copy_from_slice(&h.to_le_bytes());
    d[8..12].copy_from_slice(&i.to_le_bytes());
    Digest(d)
}

/// Record `i` at `generation`, written at `lut_ms`, holding `v` (or a string under `v`, which
/// the index skips).
fn record(i: u32, generation: u16, lut_ms: u64, v: Option<i64>) -> Record {
    let (particle_type, value) = match v {
        Some(v) => (1, v.to_be_bytes().to_vec()),
        None => (3, b"not a number".to_vec()),
    };
    Record {
        digest: digest(i),
        meta: RecordMeta {
            generation,
            void_time: 0,
            last_update_ms: lut_ms,
        },
        set_name: b"s".to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type,
            value,
        }],
        tombstone: false,
    }
}

/// Per record number: its generation and its value under `v` (`None`: a string).
type Model = HashMap<u32, (u16, Option<i64>)>;

/// Writes record `i`'s next version (generation one past the model's, 1 for a new record)
/// holding `v`, and notes it in the model.
async fn write_next(store: &ShardStore, model: &mut Model, i: u32, lut_ms: u64, v: Option<i64>) {
    let gen = model.get(&i).map_or(1, |(g, _)| g.wrapping_add(1).max(1));
    store.put(&record(i, gen, lut_ms, v)).await.unwrap();
    model.insert(i, (gen, v));
}

/// Every entry of the index, walked in bounded steps.
fn entries(store: &ShardStore) -> Vec<(IndexKey, Digest)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let walk = store.walk_sindex(INDEX, after, IndexKey::MAX, usize::MAX, |_, _| true);
        out.extend(walk.found);
        match walk.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[test]
fn a_build_among_writes_and_deletes_ends_with_exactly_the_newest_versions_entries() {
    with_store(|store| async move {
        const RECORDS: u32 = 3_000;
        let model: Rc<RefCell<Model>> = Rc::default();
        for i in 0..RECORDS {
            let v = (i % 10 != 0).then_some(i64::from(i % 500) - 250);
            store.put(&record(i, 1, 1_000, v)).await.unwrap();
            model.borrow_mut().insert(i, (1, v));
        }
        store.set_indexer(Some(Rc::new(BinV)));
        store.add_sindex(INDEX);

        // Writes, deletes and new records between the build's chunks.
        let writer = {
            let (store, model) = (store.clone(), model.clone());
            glommio::spawn_local(async move {
                let mut s = 17u64;
                for n in 0..2_000u32 {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let i = ((s >> 33) % u64::from(RECORDS + 500)) as u32;
                    let gen = model.borrow().get(&i).map_or(1, |(g, _)| g + 1);
                    if n % 7 == 0 {
                        if model.borrow_mut().remove(&i).is_some() {
                            store
                                .put(&Record::tombstone(digest(i), gen, 10_000 + u64::from(n)))
                                .await
                                .unwrap();
                        }
                    } else {
                        let v = (n % 11 != 0).then_some(((s >> 20) % 1_000) as i64);
                        // A record written again after a delete comes back as generation 1;
                        // some in the same millisecond as its first version, so with the
                        // metadata the build may have read (only the build's own note of
                        // changed records tells them apart).
                        let lut = if gen == 1 && n % 2 == 0 {
                            1_000
                        } else {
                            10_000 + u64::from(n)
                        };
                        store.put(&record(i, gen, lut, v)).await.unwrap();
                        model.borrow_mut().insert(i, (gen, v));
                    }
                    futures_lite::future::yield_now().await;
                }
            })
        };
        let mut reported = Vec::new();
        let indexed = store
            .build_sindex_in_runs(INDEX, 250, |pid| reported.push(pid))
            .await
            .unwrap();
        writer.await;
        assert!(indexed > 0);
        assert_eq!(
            reported,
            (0..4096).collect::<Vec<u16>>(),
            "every partition reported once, in order"
        );

        let want: BTreeSet<(IndexKey, Digest)> = model
            .borrow()
            .iter()
            .filter_map(|(i, (_, v))| v.map(|v| (v, digest(*i))))
            .collect();
        let got = entries(&store);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "entries in order");
        assert_eq!(got.len(), want.len());
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    });
}

#[test]
fn a_partition_is_reported_only_once_its_entries_are_in() {
    with_store(|store| async move {
        for i in 0..1_000u32 {
            store
                .put(&record(i, 1, 1_000, Some(i64::from(i))))
                .await
                .unwrap();
        }
        store.set_indexer(Some(Rc::new(BinV)));
        store.add_sindex(INDEX);
        let by_partition: HashMap<u16, usize> = (0..1_000u32).fold(HashMap::new(), |mut m, i| {
            *m.entry(digest(i).partition().0).or_default() += 1;
            m
        });
        let seen = RefCell::new(0usize);
        let probe = store.clone();
        store
            .build_sindex_in_runs(INDEX, 100, |pid| {
                *seen.borrow_mut() += by_partition.get(&pid).copied().unwrap_or(0);
                // Every record of the partitions reported so far is in the index.
                let have = entries(&probe).len();
                assert!(
                    have >= *seen.borrow(),
                    "partition {pid} reported with {have} entries in, {} due",
                    seen.borrow()
                );
            })
            .await
            .unwrap();
        assert_eq!(entries(&store).len(), 1_000);
    });
}

/// After the build: values changed, kept, removed and written again, with the index checked
/// against the model all along. A record's entries are never looked up by record — a new
/// version moves it to a new handle, a delete leaves its handle dead — so this checks that
/// walks skip the entries of dead handles, that a sweep drops exactly those, that the count
/// the statistics read is exact after it, and that churn never lets dead handles pile up.
#[test]
fn entries_follow_changes_and_sweeps_drop_exactly_the_dead_ones() {
    with_store(|store| async move {
        const RECORDS: u32 = 400;
        let mut model: Model = HashMap::new();
        store.set_indexer(Some(Rc::new(BinV)));
        store.add_sindex(INDEX);
        let want = |model: &Model| -> BTreeSet<(IndexKey, Digest)> {
            model
                .iter()
                .filter_map(|(i, (_, v))| v.map(|v| (v, digest(*i))))
                .collect()
        };
        let mut s = 99u64;
        for n in 0..3_000u32 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = ((s >> 33) % u64::from(RECORDS)) as u32;
            let gen = model.get(&i).map_or(1, |(g, _)| g + 1);
            if n % 5 == 0 {
                if model.remove(&i).is_some() {
                    let tomb = Record::tombstone(digest(i), gen, 10_000 + u64::from(n));
                    store.put(&tomb).await.unwrap();
                }
            } else {
                // Half the writes keep the value the record has.
                let v = match model.get(&i) {
                    Some((_, v)) if n % 2 == 0 => *v,
                    _ => (n % 9 != 0).then_some(((s >> 20) % 50) as i64),
                };
                write_next(&store, &mut model, i, 10_000 + u64::from(n), v).await;
            }
            if n % 300 == 0 {
                let got = entries(&store);
                assert!(got.windows(2).all(|w| w[0] < w[1]), "step {n}: in order");
                assert_eq!(
                    got.into_iter().collect::<BTreeSet<_>>(),
                    want(&model),
                    "step {n}"
                );
                if let Some((_, Some(v))) = model.get(&i) {
                    assert!(store.sindex_holds(INDEX, *v, &digest(i)));
                    assert!(!store.sindex_holds(INDEX, *v + 1_000, &digest(i)));
                }
                assert!(
                    n == 0 || store.sindex_dead_handles() > 0,
                    "step {n}: changes leave dead handles"
                );
                // Every other check, the sweep goes in steps with writes between them.
                if n % 600 == 0 {
                    store.sweep_sindexes_now();
                } else {
                    let mut k = 0u32;
                    while store.sweep_sindexes_step() {
                        let i = RECORDS + (k % 50);
                        k += 1;
                        let v = Some(i64::from(k % 13));
                        write_next(&store, &mut model, i, 20_000 + u64::from(k), v).await;
                    }
                    // What died during the steps is the next sweep's.
                    assert_eq!(
                        entries(&store).into_iter().collect::<BTreeSet<_>>(),
                        want(&model),
                        "step {n}: after a sweep in steps"
                    );
                    store.sweep_sindexes_now();
                }
                let (count, bytes) = store.sindex_usage(INDEX);
                assert_eq!(store.sindex_dead_handles(), 0, "step {n}: swept");
                assert_eq!(
                    count,
                    want(&model).len(),
                    "step {n}: the count after a sweep"
                );
                assert!(bytes > 0 || count == 0);
            }
        }
        // Churn on a few records: sweeps run as dead handles pile up, bounding them.
        for n in 0..20_000u32 {
            let v = Some(i64::from(n % 7));
            write_next(&store, &mut model, n % 50, 50_000 + u64::from(n), v).await;
            assert!(store.sindex_dead_handles() <= apogee_engine::shard::SWEEP_DEAD_MIN);
        }
        assert_eq!(
            entries(&store).into_iter().collect::<BTreeSet<_>>(),
            want(&model)
        );
        store.sweep_sindexes_now();
        assert_eq!(store.sindex_usage(INDEX).0, want(&model).len());
    });
}

/// A read-modify-write that leaves the indexed value as it is keeps the record's handle and
/// entries (no dead handle to sweep); one that changes it moves them. And a record written
/// before its index was added holds no entries there yet: rewriting it with the same value
/// must index it, not keep the nothing it had.
#[test]
fn rewrites_with_the_same_keys_keep_their_entries_and_unindexed_ones_get_them() {
    use apogee_engine::shard::Decision;
    with_store(|store| async move {
        for i in 0..200u32 {
            store
                .put(&record(i, 1, 1_000, Some(i64::from(i % 20))))
                .await
                .unwrap();
        }
        store.set_indexer(Some(Rc::new(BinV)));
        store.add_sindex(INDEX); // no build: nothing is indexed
        let rewrite = |i: u32, v: i64| {
            let store = store.clone();
            async move {
                store
                    .update::<(), ()>(&digest(i), |r| {
                        let r = r.expect("stored");
                        Ok((
                            Decision::Write(record(i, r.meta.generation + 1, 2_000, Some(v))),
                            (),
                        ))
                    })
                    .await
                    .unwrap();
            }
        };
        for i in 0..200u32 {
            rewrite(i, i64::from(i % 20)).await;
        }
        let want: BTreeSet<(IndexKey, Digest)> = (0..200u32)
            .map(|i| (i64::from(i % 20), digest(i)))
            .collect();
        assert_eq!(entries(&store).into_iter().collect::<BTreeSet<_>>(), want);
        store.sweep_sindexes_now();
        assert_eq!(store.sindex_dead_handles(), 0);
        // Indexed now: the same value again leaves no dead handle behind.
        for i in 0..200u32 {
            rewrite(i, i64::from(i % 20)).await;
        }
        assert_eq!(store.sindex_dead_handles(), 0, "same keys, same handles");
        assert_eq!(entries(&store).into_iter().collect::<BTreeSet<_>>(), want);
        // A new value moves the record.
        rewrite(7, 99).await;
        assert_eq!(store.sindex_dead_handles(), 1);
        let mut want = want;
        want.remove(&(7, digest(7)));
        want.insert((99, digest(7)));
        assert_eq!(entries(&store).into_iter().collect::<BTreeSet<_>>(), want);
        store.sweep_sindexes_now();
        assert_eq!(store.sindex_usage(INDEX).0, 200);
    });
}
