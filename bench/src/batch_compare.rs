//! `apogee-bench batch-compare`: batch reads of N keys as records per second, side by side in
//! one run, against single gets of the same records on the same server, Redis pipelines of N
//! GETs and (when given) another Aerospike-protocol server's batches of N (Aerospike CE).
//!
//! Owns: loading the same records into every target, the alternated phases (the order reverses
//! every round so drift on a shared machine hits every side alike), the per-round and median
//! ratios. Must never start or stop servers (bench/batch_compare.sh does) and never treat a
//! failed or missing read as a success: any non-zero result code aborts the run with its name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::driver::aerospike::{AeroConn, BATCH_KEYS_MAX};
use crate::driver::resp::RespConn;
use crate::driver::Keyspace;

/// Most connections per target.
pub const CONNECTIONS_MAX: usize = 256;
/// Longest phase, in seconds.
pub const PHASE_SECS_MAX: u64 = 600;
/// Most rounds.
pub const ROUNDS_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct Config {
    /// Apogee's address (host:port): batches and single gets.
    pub apogee: String,
    /// Redis's address: pipelines of GETs.
    pub redis: Option<String>,
    /// Another Aerospike-protocol server (Aerospike CE): batches and single gets.
    pub aerospike: Option<String>,
    pub keyspace: Keyspace,
    pub records: u64,
    pub connections: usize,
    pub phase_secs: u64,
    pub rounds: usize,
    pub batch_sizes: Vec<usize>,
    /// Skip loading (the records are already there from an earlier run).
    pub no_load: bool,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.records < 2 {
            return Err("--records must be at least 2".into());
        }
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(format!("--connections must be 1..={CONNECTIONS_MAX}"));
        }
        if self.phase_secs == 0 || self.phase_secs > PHASE_SECS_MAX {
            return Err(format!("--seconds must be 1..={PHASE_SECS_MAX}"));
        }
        if self.rounds == 0 || self.rounds > ROUNDS_MAX {
            return Err(format!("--rounds must be 1..={ROUNDS_MAX}"));
        }
        if self.batch_sizes.is_empty()
            || self
                .batch_sizes
                .iter()
                .any(|n| !(2..=BATCH_KEYS_MAX).contains(n))
        {
            return Err(format!(
                "--batch-sizes must list sizes of 2..={BATCH_KEYS_MAX}"
            ));
        }
        Ok(())
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    ApogeeSingle,
    ApogeeBatch(usize),
    RedisGets(usize),
    AerospikeSingle,
    AerospikeBatch(usize),
}

impl Side {
    pub fn name(self) -> String {
        match self {
            Side::ApogeeSingle => "apogee get".into(),
            Side::ApogeeBatch(n) => format!("apogee batch-{n}"),
            Side::RedisGets(n) => format!("redis pipeline-{n} GET"),
            Side::AerospikeSingle => "aerospike get".into(),
            Side::AerospikeBatch(n) => format!("aerospike batch-{n}"),
        }
    }

    fn keys_per_request(self) -> usize {
        match self {
            Side::ApogeeSingle | Side::AerospikeSingle => 1,
            Side::ApogeeBatch(n) | Side::RedisGets(n) | Side::AerospikeBatch(n) => n,
        }
    }
}

enum Pool {
    Aero(Vec<AeroConn>),
    Resp(Vec<RespConn>),
}

/// Records per second of every side in one round, in the order they ran.
#[derive(Debug, Clone)]
pub struct Round {
    pub rates: Vec<(Side, f64)>,
}

impl Round {
    pub fn rate(&self, side: Side) -> Option<f64> {
        self.rates.iter().find(|(s, _)| *s == side).map(|r| r.1)
    }
}

/// The ratios the issue asks for, for batch size `n`: (name, numerator, denominator).
pub fn ratios(n: usize) -> Vec<(String, Side, Side)> {
    vec![
        (
            format!("apogee batch-{n} / apogee get"),
            Side::ApogeeBatch(n),
            Side::ApogeeSingle,
        ),
        (
            format!("apogee batch-{n} / redis pipeline-{n}"),
            Side::ApogeeBatch(n),
            Side::RedisGets(n),
        ),
        (
            format!("apogee batch-{n} / aerospike batch-{n}"),
            Side::ApogeeBatch(n),
            Side::AerospikeBatch(n),
        ),
    ]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn failed(side: Side, rc: i32) -> String {
    format!(
        "{}: a read failed with result code {rc} (2 = not found: are the records loaded?)",
        side.name()
    )
}

async fn connect_aero(addr: &str, ks: &Keyspace, n: usize) -> Result<Vec<AeroConn>, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(
            AeroConn::connect(addr, ks.clone())
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
        );
    }
    Ok(v)
}

async fn connect_resp(addr: &str, ks: &Keyspace, n: usize) -> Result<Vec<RespConn>, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(
            RespConn::connect(addr, ks.clone())
                .await
                .map_err(|e| format!("cannot connect to Redis at {addr}: {e}"))?,
        );
    }
    Ok(v)
}

/// Writes records `0..records` over the pool's connections.
async fn load(pool: Pool, records: u64, what: &str) -> Result<Pool, String> {
    let n = match &pool {
        Pool::Aero(v) => v.len(),
        Pool::Resp(v) => v.len(),
    } as u64;
    let per = records.div_ceil(n);
    let ranges = (0..n).map(move |c| (c * per)..((c + 1) * per).min(records));
    let what = what.to_string();
    match pool {
        Pool::Aero(conns) => {
            let tasks: Vec<_> = conns
                .into_iter()
                .zip(ranges)
                .map(|(mut c, r)| {
                    tokio::spawn(async move {
                        for i in r {
                            match c.write(i, None).await {
                                Ok(0) => {}
                                Ok(rc) => return Err(format!("load: put failed with {rc}")),
                                Err(e) => return Err(format!("load: {e}")),
                            }
                        }
                        Ok(c)
                    })
                })
                .collect();
            let mut back = Vec::new();
            for t in tasks {
                back.push(
                    t.await
                        .map_err(|e| format!("{what} load task: {e}"))?
                        .map_err(|e| format!("{what} {e}"))?,
                );
            }
            Ok(Pool::Aero(back))
        }
        Pool::Resp(conns) => {
            let tasks: Vec<_> = conns
                .into_iter()
                .zip(ranges)
                .map(|(mut c, r)| {
                    tokio::spawn(async move {
                        for i in r {
                            match c.set_string(i).await {
                                Ok(0) => {}
                                Ok(rc) => return Err(format!("load: SET failed with {rc}")),
                                Err(e) => return Err(format!("load: {e}")),
                            }
                        }
                        Ok(c)
                    })
                })
                .collect();
            let mut back = Vec::new();
            for t in tasks {
                back.push(
                    t.await
                        .map_err(|e| format!("{what} load task: {e}"))?
                        .map_err(|e| format!("{what} {e}"))?,
                );
            }
            Ok(Pool::Resp(back))
        }
    }
}

/// Runs `side` on every connection of `pool` for `secs`, closed loop, uniform random keys;
/// returns the pool and records read per second.
async fn run_phase(pool: Pool, side: Side, records: u64, secs: u64) -> Result<(Pool, f64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let n = side.keys_per_request();
    let start = Instant::now();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut records_read = 0u64;
    let pool = match pool {
        Pool::Aero(conns) => {
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(c, mut conn)| {
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let mut rng =
                            SmallRng::seed_from_u64(c as u64 ^ start.elapsed().as_nanos() as u64);
                        let mut keys = vec![0u64; n];
                        let mut done = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            keys.iter_mut().for_each(|k| *k = rng.gen_range(0..records));
                            let rc = if n == 1 {
                                conn.read(keys[0]).await
                            } else {
                                conn.batch_read(&keys).await
                            };
                            match rc {
                                Ok(0) => done += n as u64,
                                Ok(rc) => return Err(failed(side, rc)),
                                Err(e) => {
                                    return Err(format!("{}: connection broke: {e}", side.name()))
                                }
                            }
                        }
                        Ok((conn, done))
                    })
                })
                .collect();
            let mut back = Vec::new();
            for t in tasks {
                let (c, d) = t.await.map_err(|e| format!("bench task: {e}"))??;
                back.push(c);
                records_read += d;
            }
            Pool::Aero(back)
        }
        Pool::Resp(conns) => {
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(c, mut conn)| {
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let mut rng =
                            SmallRng::seed_from_u64(c as u64 ^ start.elapsed().as_nanos() as u64);
                        let mut keys = vec![0u64; n];
                        let mut done = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            keys.iter_mut().for_each(|k| *k = rng.gen_range(0..records));
                            match conn.get_pipeline(&keys).await {
                                Ok(0) => done += n as u64,
                                Ok(rc) => return Err(failed(side, rc)),
                                Err(e) => {
                                    return Err(format!("{}: connection broke: {e}", side.name()))
                                }
                            }
                        }
                        Ok((conn, done))
                    })
                })
                .collect();
            let mut back = Vec::new();
            for t in tasks {
                let (c, d) = t.await.map_err(|e| format!("bench task: {e}"))??;
                back.push(c);
                records_read += d;
            }
            Pool::Resp(back)
        }
    };
    stopper.abort();
    Ok((pool, records_read as f64 / start.elapsed().as_secs_f64()))
}

/// Loads every target, then runs `rounds` rounds of every side, alternating the order, and
/// prints each round and the median ratios. Returns the rounds.
pub async fn run(cfg: &Config) -> Result<Vec<Round>, String> {
    cfg.validate()?;
    let ks = &cfg.keyspace;
    let mut sides: Vec<(Side, Pool)> = Vec::new();
    // One pool per side keeps every side's connections warm and independent.
    let mut plan: Vec<Side> = vec![Side::ApogeeSingle];
    plan.extend(cfg.batch_sizes.iter().map(|&n| Side::ApogeeBatch(n)));
    if cfg.redis.is_some() {
        plan.extend(cfg.batch_sizes.iter().map(|&n| Side::RedisGets(n)));
    }
    if cfg.aerospike.is_some() {
        plan.push(Side::AerospikeSingle);
        plan.extend(cfg.batch_sizes.iter().map(|&n| Side::AerospikeBatch(n)));
    }
    if !cfg.no_load {
        let started = Instant::now();
        let p = connect_aero(&cfg.apogee, ks, cfg.connections).await?;
        load(Pool::Aero(p), cfg.records, "apogee").await?;
        if let Some(r) = &cfg.redis {
            let p = connect_resp(r, ks, cfg.connections).await?;
            load(Pool::Resp(p), cfg.records, "redis").await?;
        }
        if let Some(a) = &cfg.aerospike {
            let p = connect_aero(a, ks, cfg.connections).await?;
            load(Pool::Aero(p), cfg.records, "aerospike").await?;
        }
        println!(
            "loaded {} records into every target in {:.1} s",
            cfg.records,
            started.elapsed().as_secs_f64()
        );
    }
    for &side in &plan {
        let pool = match side {
            Side::ApogeeSingle | Side::ApogeeBatch(_) => {
                Pool::Aero(connect_aero(&cfg.apogee, ks, cfg.connections).await?)
            }
            Side::AerospikeSingle | Side::AerospikeBatch(_) => Pool::Aero(
                connect_aero(
                    cfg.aerospike.as_deref().expect("planned"),
                    ks,
                    cfg.connections,
                )
                .await?,
            ),
            Side::RedisGets(_) => Pool::Resp(
                connect_resp(cfg.redis.as_deref().expect("planned"), ks, cfg.connections).await?,
            ),
        };
        sides.push((side, pool));
    }
    println!(
        "{} records of {} x {} B, {} connections per side, {} s per phase, {} rounds, order reversed every other round",
        cfg.records, ks.shape.bins, ks.shape.bin_bytes, cfg.connections, cfg.phase_secs, cfg.rounds
    );
    let mut rounds = Vec::new();
    for round in 1..=cfg.rounds {
        let mut rates = Vec::new();
        let order: Vec<usize> = if round % 2 == 1 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for i in order {
            let (side, pool) =
                std::mem::replace(&mut sides[i], (Side::ApogeeSingle, Pool::Aero(vec![])));
            let (pool, rate) = run_phase(pool, side, cfg.records, cfg.phase_secs).await?;
            sides[i] = (side, pool);
            rates.push((side, rate));
        }
        let r = Round { rates };
        let line: Vec<String> = plan
            .iter()
            .map(|s| format!("{} {:.0}", s.name(), r.rate(*s).unwrap_or(0.0)))
            .collect();
        println!("round {round} records/s: {}", line.join(" | "));
        rounds.push(r);
    }
    println!("\nratio (records/s)                          per round                    median");
    for &n in &cfg.batch_sizes {
        for (name, a, b) in ratios(n) {
            let per: Vec<f64> = rounds
                .iter()
                .filter_map(|r| Some(r.rate(a)? / r.rate(b)?))
                .collect();
            if per.is_empty() {
                continue;
            }
            let shown: Vec<String> = per.iter().map(|x| format!("{x:.2}")).collect();
            println!("{name:<42} {:<28} {:.2}", shown.join(" "), median(per));
        }
    }
    println!("\nmedian records/s per side:");
    for s in &plan {
        let v: Vec<f64> = rounds.iter().filter_map(|r| r.rate(*s)).collect();
        println!("  {:<26} {:>10.0}", s.name(), median(v));
    }
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn batch_sizes_are_checked() {
        let ks = Keyspace {
            namespace: "test".into(),
            set: "s".into(),
            shape: crate::workload::RecordShape {
                bins: 10,
                bin_bytes: 100,
            },
        };
        let mut c = Config {
            apogee: "127.0.0.1:1".into(),
            redis: None,
            aerospike: None,
            keyspace: ks,
            records: 100,
            connections: 4,
            phase_secs: 1,
            rounds: 1,
            batch_sizes: vec![10, 100],
            no_load: false,
        };
        assert!(c.validate().is_ok());
        c.batch_sizes = vec![1];
        assert!(c.validate().unwrap_err().contains("--batch-sizes"));
        c.batch_sizes = vec![];
        assert!(c.validate().is_err());
    }
}
