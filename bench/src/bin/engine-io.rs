//! `engine-io`: the storage engine's I/O against the device, without the network, so it can
//! be compared with `fio` on the same file system in one run (`bench/engine_vs_fio.sh`).
//!
//!   engine-io write <dir> <records>   append 1 KiB records (commit-to-device off, one final
//!                                     flush); prints MB/s of record bytes
//!   engine-io read <dir> <records> <seconds>
//!                                     random reads of those records with the cache off, 32 in
//!                                     flight (queue depth 32); prints reads/s
//!   engine-io write-shards <dir> <records> <shards>
//!                                     the same spread over <shards> stores, one per core,
//!                                     writing at once
//!   engine-io read-shards <dir> <records> <shards> <seconds>
//!                                     random reads of what write-shards wrote, one store per
//!                                     core, the queue depth split between them
//!   engine-io recover <dir>           cold start: rebuild the index; prints seconds and MB/s
//!
//! One shard, 1 MiB write blocks. Run `write` first; `read` and `recover` reuse its files.

use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apogee_engine::record::{Bin, Record, RecordMeta};
use apogee_engine::shard::{ShardStore, StoreConfig};
use apogee_wire::Digest;

/// Concurrent reads in flight for the random-read test (fio's iodepth).
const QUEUE_DEPTH: usize = 32;
fn queue_depth() -> usize {
    std::env::var("QD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(QUEUE_DEPTH)
}

fn config(dir: PathBuf) -> StoreConfig {
    StoreConfig {
        dir,
        namespace: "bench".into(),
        shard: 0,
        shard_count: 1,
        block_bytes: 1 << 20,
        commit_to_device: false,
        flush_max_ms: 100_000,
        cache_bytes: 0,
        defrag_lwm_pct: 50,
        defrag_sleep_us: 1000,
        nsup_period_secs: 0,
        file_bytes_max: 0,
        stop_writes_used_pct: 100,
        stop_writes_avail_pct: 0,
        evict_used_pct: 0,
        extents: Vec::new(),
        // MEMORY=1: storage-engine memory, to see the engine's CPU cost without the device.
        memory: std::env::var("MEMORY").is_ok_and(|v| v == "1"),
    }
}

/// Encoded size of every record: 1 KiB, or RECORD_BYTES (128 B – 1 MiB) to see how the
/// per-record cost weighs at other sizes.
fn record_bytes() -> usize {
    std::env::var("RECORD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (128..=1 << 20).contains(n))
        .unwrap_or(1024)
}

/// Record `i`: one blob bin sized so the whole encoded record is `record_bytes()`.
fn record(i: u64) -> Record {
    let mut r = Record {
        digest: Digest::of_integer("s", i as i64),
        meta: RecordMeta {
            generation: 1,
            void_time: 0,
            last_update_ms: 0,
        },
        set_name: b"s".to_vec(),
        user_key: None,
        bins: vec![Bin {
            name: b"v".to_vec(),
            particle_type: 4,
            value: Vec::new(),
        }],
        tombstone: false,
    };
    let pad = record_bytes() - r.encoded_bytes();
    r.bins[0].value = vec![(i % 251) as u8; pad];
    r
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or(format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("{what} must be a number, got {:?}", args[i]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let run = || -> Result<(), String> {
        let mode = args
            .get(1)
            .ok_or("usage: engine-io write|read|recover <dir> ...")?
            .clone();
        let dir = PathBuf::from(args.get(2).ok_or("missing <dir>")?);
        let records: u64 = if mode == "recover" {
            0
        } else {
            arg(&args, 3, "<records>")?
        };
        let seconds: u64 = if mode == "read" {
            arg(&args, 4, "<seconds>")?
        } else {
            0
        };
        if mode == "write-shards" {
            let shards: u32 = arg(&args, 4, "<shards>")?;
            return write_shards(dir, records, shards);
        }
        if mode == "read-shards" {
            let shards: u32 = arg(&args, 4, "<shards>")?;
            let seconds: u64 = arg(&args, 5, "<seconds>")?;
            return read_shards(dir, records, shards, seconds);
        }
        let mut builder = glommio::LocalExecutorBuilder::default();
        if let Some(us) = std::env::var("SPIN_US").ok().and_then(|v| v.parse().ok()) {
            builder = builder.spin_before_park(Duration::from_micros(us));
        }
        builder
            .spawn(move || async move {
                match mode.as_str() {
                    "write" => write(dir, records).await,
                    "read" => read(dir, records, seconds).await,
                    "recover" => recover(dir).await,
                    other => Err(format!(
                        "unknown mode {other:?}: use write, read or recover"
                    )),
                }
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|e| e.to_string())?
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-io: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `job` on `shards` stores, one per core (pinned) as the server runs them, each given
/// the digests of its records (record `i` belongs to shard `i % shards`) and how many records
/// it recovered; all start together. Returns each shard's result.
fn on_each_shard<T, J, F>(dir: PathBuf, records: u64, shards: u32, job: J) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    J: Fn(Rc<ShardStore>, Vec<Digest>, u64) -> F + Send + Clone + 'static,
    F: std::future::Future<Output = Result<T, String>>,
{
    if shards == 0 {
        return Err("<shards> must be at least 1".into());
    }
    let start = Arc::new(std::sync::Barrier::new(shards as usize));
    let handles: Vec<_> = (0..shards)
        .map(|shard| {
            let (dir, start, job) = (dir.clone(), start.clone(), job.clone());
            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(shard as usize))
                .spawn(move || async move {
                    let cfg = StoreConfig {
                        shard,
                        shard_count: shards,
                        ..config(dir)
                    };
                    let mine = (0..records).filter(|i| i % u64::from(shards) == u64::from(shard));
                    let digests: Vec<Digest> =
                        mine.map(|i| Digest::of_integer("s", i as i64)).collect();
                    let (store, report) = ShardStore::open(cfg, Arc::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    start.wait();
                    job(store, digests, report.objects).await
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    handles
        .into_iter()
        .map(|h| h.join().map_err(|e| e.to_string())?)
        .collect()
}

/// `records` records spread over `shards` stores, one per core as the server runs them, all
/// writing at once; prints MB/s of record bytes over the slowest shard's time.
fn write_shards(dir: PathBuf, records: u64, shards: u32) -> Result<(), String> {
    let done = on_each_shard(dir, records, shards, |store, digests, _| async move {
        let took = write_digests(&store, &digests).await?;
        Ok((digests.len(), took))
    })?;
    let written: usize = done.iter().map(|d| d.0).sum();
    let slowest = done
        .into_iter()
        .map(|d| d.1)
        .max_by(|a, b| a.secs.total_cmp(&b.secs))
        .expect("at least one shard");
    println!(
        "engine write, {shards} shards: {}",
        slowest.summary(written as u64)
    );
    Ok(())
}

/// Seconds this thread has run on a CPU (Linux's schedstat), to tell a writer that waits on
/// the device from one that is short of CPU; `None` where the kernel does not say.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// What one shard's writes took: wall seconds, and the share of them its core was busy
/// (`None` when unknown).
struct WriteTime {
    secs: f64,
    busy: Option<f64>,
}

impl WriteTime {
    /// `"N records of B bytes in T s (core busy P %): X MB/s"` (the busy share only when
    /// known); `bench/engine_vs_fio.sh` takes the MB/s from the end.
    fn summary(&self, records: u64) -> String {
        let busy = self
            .busy
            .map(|b| format!(" (core busy {:.0} %)", b * 100.0))
            .unwrap_or_default();
        format!(
            "{records} records of {} bytes in {:.2} s{busy}: {:.1} MB/s",
            record_bytes(),
            self.secs,
            records as f64 * record_bytes() as f64 / self.secs / 1e6
        )
    }
}

/// Writes one record per digest and flushes; returns the time it took.
async fn write_digests(store: &ShardStore, digests: &[Digest]) -> Result<WriteTime, String> {
    let mut r = record(0);
    let cpu_before = thread_cpu_secs();
    let started = Instant::now();
    for (i, d) in digests.iter().enumerate() {
        r.digest = *d;
        r.bins[0].value[0] = (i % 251) as u8;
        store.put(&r).await.map_err(|e| e.to_string())?;
        // A server's writers are many tasks that yield between requests; one loop that never
        // yields would keep the executor from reaping the write-behind's completions.
        if i % 64 == 63 {
            futures_lite::future::yield_now().await;
        }
    }
    store.flush_all().await.map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let busy = cpu_before
        .zip(thread_cpu_secs())
        .map(|(before, after)| (after - before) / secs);
    Ok(WriteTime { secs, busy })
}

async fn write(dir: PathBuf, records: u64) -> Result<(), String> {
    let (store, _) = ShardStore::open(config(dir), Arc::default())
        .await
        .map_err(|e| e.to_string())?;
    // Digests come from the client in Apogee (the wire carries them), so they are computed
    // before the clock starts; one record is reused with its digest and a value byte changed.
    let digests: Vec<Digest> = (0..records)
        .map(|i| Digest::of_integer("s", i as i64))
        .collect();
    let took = write_digests(&store, &digests).await?;
    println!("engine write: {}", took.summary(records));
    Ok(())
}

async fn read(dir: PathBuf, records: u64, seconds: u64) -> Result<(), String> {
    let (store, report) = ShardStore::open(config(dir), Arc::default())
        .await
        .map_err(|e| e.to_string())?;
    if report.objects < records {
        return Err(format!(
            "only {} records on disk; run write first",
            report.objects
        ));
    }
    // Digests computed before the clock starts, as for writes: clients send them.
    let digests = (0..records)
        .map(|i| Digest::of_integer("s", i as i64))
        .collect();
    let (total, secs) = read_randomly(&store, digests, queue_depth(), seconds).await;
    println!(
        "engine random read: {total} reads of 1 KiB at queue depth {} in {secs:.1} s: {:.0} reads/s",
        queue_depth(),
        total as f64 / secs,
    );
    Ok(())
}

/// `in_flight` tasks each reading random records of `digests` until `seconds` pass; returns
/// the reads done and the seconds taken.
async fn read_randomly(
    store: &Rc<ShardStore>,
    digests: Vec<Digest>,
    in_flight: usize,
    seconds: u64,
) -> (u64, f64) {
    let digests = Rc::new(digests);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight as u64)
        .map(|w| {
            let store = store.clone();
            let digests = digests.clone();
            glommio::spawn_local(async move {
                let mut x = w.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = (x % digests.len() as u64) as usize;
                    let r = store.get(&digests[i]).await;
                    assert!(matches!(r, Ok(Some(_))), "record {i} unreadable: {r:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await;
    }
    assert_eq!(
        store.stats().snapshot().device_reads,
        total,
        "every read went to the device (cache off)"
    );
    (total, started.elapsed().as_secs_f64())
}

/// Random reads of the records `write-shards` wrote, one store per core as the server runs
/// them, the queue depth split evenly between them; prints reads/s of all together.
fn read_shards(dir: PathBuf, records: u64, shards: u32, seconds: u64) -> Result<(), String> {
    if shards == 0 || !queue_depth().is_multiple_of(shards as usize) {
        return Err("<shards> must divide the queue depth".into());
    }
    let per_shard = queue_depth() / shards as usize;
    let done = on_each_shard(
        dir,
        records,
        shards,
        move |store, digests, objects| async move {
            if objects < digests.len() as u64 {
                return Err("run write-shards first".to_string());
            }
            Ok(read_randomly(&store, digests, per_shard, seconds).await)
        },
    )?;
    let total: u64 = done.iter().map(|d| d.0).sum();
    let slowest = done.iter().map(|d| d.1).fold(0f64, f64::max);
    println!(
        "engine random read, {shards} shards: {total} reads of 1 KiB at queue depth {} in {slowest:.1} s: {:.0} reads/s",
        queue_depth(),
        total as f64 / slowest
    );
    Ok(())
}

async fn recover(dir: PathBuf) -> Result<(), String> {
    let started = Instant::now();
    let (store, report) = ShardStore::open(config(dir), Arc::default())
        .await
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let bytes = store.file_span_bytes();
    println!(
        "engine cold start: {} records, {} blocks in {secs:.2} s: {:.1} MB/s",
        report.objects,
        report.blocks,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
