//! Runs a load or run phase: `connections` tasks, each with one request in flight, in closed
//! loop (send the next request when the reply arrives) or open loop at a fixed total rate with
//! latency measured from each request's intended send time (no coordinated omission).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::driver::route::discover;
use crate::driver::{Conn, Keyspace, Target};
use crate::histogram::Recorder;
use crate::workload::{Mix, OpKind};

/// Code recorded when the connection itself failed (the task then stops).
pub const CONNECTION_FAILED: i32 = -1;
/// Most connections one run opens.
pub const CONNECTIONS_MAX: usize = 4096;
/// Longest YCSB E short scan, in records (YCSB's `maxscanlength` default).
pub const SCAN_LENGTH_MAX: u64 = 100;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub addr: String,
    pub keyspace: Keyspace,
    pub connections: usize,
    pub records: u64,
    pub mix: Mix,
    pub duration: Option<Duration>,
    pub operations: Option<u64>,
    /// Total requests per second across all connections (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Keys per read: above 1, reads become batch reads of this many keys.
    pub batch: usize,
    pub seed: u64,
    pub progress: bool,
    /// Aerospike only: learn the cluster's partition map from `addr` (the seed) and send each
    /// single-record request to its partition's master, as the official clients do.
    pub route: bool,
}

#[derive(Debug)]
pub struct RunResult {
    pub recorder: Recorder,
    pub elapsed: Duration,
}

struct Shared {
    claimed: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    next_insert: AtomicU64,
    acked: AckedInserts,
    stop: AtomicBool,
}

/// The highest key index below which every insert has been acknowledged (YCSB's acknowledged
/// counter), so the "latest" distribution never reads a key whose insert is still in flight.
#[derive(Debug)]
pub struct AckedInserts {
    limit: AtomicU64,
    /// Acknowledged ids above the contiguous limit; bounded by the inserts in flight.
    pending: Mutex<BTreeSet<u64>>,
}

impl AckedInserts {
    pub fn new(first: u64) -> AckedInserts {
        AckedInserts {
            limit: AtomicU64::new(first),
            pending: Mutex::new(BTreeSet::new()),
        }
    }

    /// Every key index below this is acknowledged.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }

    pub fn acknowledge(&self, id: u64) {
        let mut pending = self.pending.lock().expect("ack lock poisoned");
        pending.insert(id);
        let mut limit = self.limit.load(Ordering::Acquire);
        while pending.remove(&limit) {
            limit += 1;
        }
        self.limit.store(limit, Ordering::Release);
    }
}

/// Loads records `0..records`, every field, split over the connections.
pub async fn load(cfg: &RunConfig) -> Result<RunResult, String> {
    let mut mix = cfg.mix.clone();
    mix.parts = vec![(OpKind::Insert, 1.0)];
    let load_cfg = RunConfig {
        mix,
        operations: Some(cfg.records),
        duration: None,
        rate: None,
        ..cfg.clone()
    };
    execute(&load_cfg, true).await
}

/// Runs the configured mix.
pub async fn run(cfg: &RunConfig) -> Result<RunResult, String> {
    execute(cfg, false).await
}

async fn execute(cfg: &RunConfig, loading: bool) -> Result<RunResult, String> {
    if cfg.connections == 0 || cfg.connections > CONNECTIONS_MAX {
        return Err(format!("connections must be 1..={CONNECTIONS_MAX}"));
    }
    if cfg.duration.is_none() && cfg.operations.is_none() {
        return Err("give a duration or an operation count".into());
    }
    let route = match (cfg.route, cfg.target) {
        (false, _) => None,
        (true, Target::Aerospike) => {
            let (addr, ns) = (cfg.addr.clone(), cfg.keyspace.namespace.clone());
            let map = tokio::task::spawn_blocking(move || discover(&addr, &ns))
                .await
                .map_err(|e| format!("partition map discovery failed: {e}"))?
                .map_err(|e| e.to_string())?;
            eprintln!(
                "routing: {} nodes {:?}, masters per node {:?}, unclaimed {} (sent to the seed), claimed twice {}",
                map.nodes.len(),
                map.nodes,
                map.masters_per_node(),
                map.unclaimed,
                map.claimed_twice
            );
            Some(Arc::new(map))
        }
        (true, Target::Redis) => return Err("routing is for the aerospike target only".into()),
    };
    // Connect everything first so an unreachable server is one clear error.
    let mut conns = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        let c = match &route {
            Some(map) => Conn::connect_routed(Arc::clone(map), &cfg.keyspace).await,
            None => Conn::connect(cfg.target, &cfg.addr, &cfg.keyspace).await,
        }
        .map_err(|e| format!("cannot connect to {} ({:?}): {e}", cfg.addr, cfg.target))?;
        conns.push(c);
    }
    let shared = Arc::new(Shared {
        claimed: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        next_insert: AtomicU64::new(cfg.records),
        acked: AckedInserts::new(cfg.records),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let progress = cfg.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = shared.completed.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>4}s] {:>9} ops/s  total {:>10}  errors {}",
                    started.elapsed().as_secs(),
                    done - last,
                    done,
                    shared.errors.load(Ordering::Relaxed)
                );
                last = done;
            }
        })
    });
    // Open loop: one pacer thread issues every request's intended send time; whichever
    // connection is free takes the next one, so a slow reply delays later requests only in the
    // latency it is charged, never in the schedule.
    let schedule = cfg.rate.map(|rate| {
        let (tx, rx) = flume::unbounded::<Instant>();
        let shared = shared.clone();
        let interval = Duration::from_secs_f64(1.0 / rate);
        std::thread::Builder::new()
            .name("apogee-bench-pacer".into())
            .spawn(move || pace(tx, &shared, started, interval))
            .expect("spawn the pacer thread");
        rx
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (n, conn) in conns.into_iter().enumerate() {
        let cfg = cfg.clone();
        let shared = shared.clone();
        let schedule = schedule.clone();
        tasks.spawn(async move { connection_loop(cfg, shared, conn, n, loading, schedule).await });
    }
    let deadline = cfg.duration.map(|d| started + d);
    if let Some(d) = deadline {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(d.into()).await;
            shared.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut recorder = Recorder::default();
    while let Some(r) = tasks.join_next().await {
        recorder.merge(&r.map_err(|e| format!("a connection task failed: {e}"))?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    Ok(RunResult {
        recorder,
        elapsed: started.elapsed(),
    })
}

/// Sends intended send times every `interval` from `started` until the run stops. Sleeps with
/// the OS timer (tens of microseconds of precision); when it wakes late it sends every time
/// that came due, so the schedule never slips.
fn pace(tx: flume::Sender<Instant>, shared: &Shared, started: Instant, interval: Duration) {
    let mut k: u32 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = started + interval * k;
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        if tx.send(due).is_err() {
            return;
        }
        k += 1;
    }
}

async fn connection_loop(
    cfg: RunConfig,
    shared: Arc<Shared>,
    mut conn: Conn,
    n: usize,
    loading: bool,
    schedule: Option<flume::Receiver<Instant>>,
) -> Recorder {
    let mut rec = Recorder::default();
    let mut rng =
        SmallRng::seed_from_u64(cfg.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let chooser = (!loading).then(|| cfg.mix.chooser(cfg.records.max(2)));
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let claimed = shared.claimed.fetch_add(1, Ordering::Relaxed);
        if cfg.operations.is_some_and(|max| claimed >= max) {
            break;
        }
        // Open loop: the request is due at its scheduled time, late or not; latency counts
        // from then.
        let intended = match &schedule {
            // The pacer drops its sender when the run stops, which ends this wait.
            Some(rx) => match rx.recv_async().await {
                Ok(t) if !shared.stop.load(Ordering::Relaxed) => t,
                _ => break,
            },
            None => Instant::now(),
        };
        let kind = match (loading, cfg.mix.pick(rng.gen())) {
            (true, _) => OpKind::Insert,
            (false, OpKind::Read) if cfg.batch > 1 => OpKind::BatchRead,
            (false, k) => k,
        };
        let latest = shared.acked.limit().saturating_sub(1);
        let result = match kind {
            OpKind::Insert => {
                if loading {
                    conn.insert(claimed).await
                } else {
                    let i = shared.next_insert.fetch_add(1, Ordering::Relaxed);
                    let r = conn.insert(i).await;
                    // Failed inserts count as done too, or the limit would stall behind them.
                    shared.acked.acknowledge(i);
                    r
                }
            }
            OpKind::Read => {
                let k = chooser.as_ref().map_or(0, |c| c.next(&mut rng, latest));
                conn.read(k).await
            }
            OpKind::BatchRead => {
                let keys: Vec<u64> = (0..cfg.batch)
                    .map(|_| chooser.as_ref().map_or(0, |c| c.next(&mut rng, latest)))
                    .collect();
                conn.batch_read(&keys).await
            }
            OpKind::Update => {
                let k = chooser.as_ref().map_or(0, |c| c.next(&mut rng, latest));
                let f = rng.gen_range(0..cfg.keyspace.shape.bins);
                conn.update(k, f).await
            }
            OpKind::ReadModifyWrite => {
                let k = chooser.as_ref().map_or(0, |c| c.next(&mut rng, latest));
                let f = rng.gen_range(0..cfg.keyspace.shape.bins);
                match conn.read(k).await {
                    Ok(0) => conn.update(k, f).await,
                    other => other,
                }
            }
            OpKind::Scan => {
                let k = chooser.as_ref().map_or(0, |c| c.next(&mut rng, latest));
                // YCSB E: scan lengths uniform in 1..=maxscanlength (default 100).
                conn.short_scan(k, rng.gen_range(1..=SCAN_LENGTH_MAX)).await
            }
        };
        match result {
            Ok(0) => rec.record(kind, intended.elapsed().as_micros() as u64),
            Ok(code) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                rec.error(kind, code);
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                rec.error(kind, CONNECTION_FAILED);
                break;
            }
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::AckedInserts;

    #[test]
    fn acked_limit_advances_only_over_contiguous_acks() {
        let a = AckedInserts::new(100);
        a.acknowledge(101);
        assert_eq!(a.limit(), 100, "100 still in flight");
        a.acknowledge(100);
        assert_eq!(a.limit(), 102);
        a.acknowledge(103);
        a.acknowledge(102);
        assert_eq!(a.limit(), 104);
    }
}
