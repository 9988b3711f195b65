//! `operate` against the plain command it extends, side by side in one run: a read-only operate
//! with four ops on a 10-bin record against a get of that record, and an operate that writes one
//! bin and reads three against a put of that one bin. Phases alternate round by round so drift on
//! a noisy machine hits both sides alike; the ratio per round and the median are printed.
//!
//!     operate-vs-get --address 127.0.0.1:3000 --records 10000 --connections 16 --seconds 3

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apogee_bench::driver::aerospike::AeroConn;
use apogee_bench::driver::Keyspace;
use apogee_bench::workload::RecordShape;
use clap::Parser;
use rand::{rngs::SmallRng, Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3000")]
    address: String,
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "test")]
    namespace: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Get,
    OperateRead4,
    Put1,
    OperateWrite4,
}

async fn one(c: &mut AeroConn, phase: Phase, i: u64) -> std::io::Result<i32> {
    match phase {
        Phase::Get => c.read(i).await,
        Phase::OperateRead4 => c.operate_read4(i).await,
        Phase::Put1 => c.write(i, Some(0)).await,
        Phase::OperateWrite4 => c.operate_write4(i).await,
    }
}

/// Runs `phase` on every connection for `secs`; returns (connections, ops per second).
async fn run_phase(
    conns: Vec<AeroConn>,
    phase: Phase,
    records: u64,
    secs: u64,
) -> (Vec<AeroConn>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, mut c)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(n as u64);
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let rc = one(&mut c, phase, rng.gen_range(0..records))
                        .await
                        .expect("connection to the server broke");
                    assert_eq!(rc, 0, "{phase:?} failed with result code {rc}");
                    ok += 1;
                }
                (c, ok)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut conns = Vec::new();
    let mut total = 0;
    for t in tasks {
        let (c, ok) = t.await.expect("bench task");
        conns.push(c);
        total += ok;
    }
    (conns, total as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    assert!(
        a.records > 0 && a.connections > 0 && a.rounds > 0,
        "counts must be positive"
    );
    let ks = Keyspace {
        namespace: a.namespace.clone(),
        set: "operate".into(),
        shape: RecordShape {
            bins: 10,
            bin_bytes: 100,
        },
    };
    let mut conns = Vec::new();
    for _ in 0..a.connections {
        conns.push(
            AeroConn::connect(&a.address, ks.clone())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", a.address)),
        );
    }
    // Load every record with its 10 bins, spread over the connections.
    let per = a.records.div_ceil(a.connections as u64);
    let loads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, mut c)| {
            let records = a.records;
            tokio::spawn(async move {
                for i in (n as u64 * per)..((n as u64 + 1) * per).min(records) {
                    let rc = c.write(i, None).await.expect("load");
                    assert_eq!(rc, 0, "load failed with result code {rc}");
                }
                c
            })
        })
        .collect();
    let mut conns = Vec::new();
    for l in loads {
        conns.push(l.await.expect("load task"));
    }
    println!(
        "{} records of 10 x 100 B, {} connections, {} s per phase, {} rounds",
        a.records, a.connections, a.seconds, a.rounds
    );
    let (mut read_ratios, mut write_ratios) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let mut rates = Vec::new();
        for phase in [
            Phase::Get,
            Phase::OperateRead4,
            Phase::Put1,
            Phase::OperateWrite4,
        ] {
            let (c, r) = run_phase(conns, phase, a.records, a.seconds).await;
            conns = c;
            rates.push(r);
        }
        let (rr, wr) = (rates[1] / rates[0], rates[3] / rates[2]);
        println!(
            "round {round}: get {:.0}/s  operate(4 reads) {:.0}/s  ratio {rr:.2} | put(1 bin) {:.0}/s  operate(1 write + 3 reads) {:.0}/s  ratio {wr:.2}",
            rates[0], rates[1], rates[2], rates[3]
        );
        read_ratios.push(rr);
        write_ratios.push(wr);
    }
    println!(
        "median ratio: operate(4 reads)/get {:.2}, operate(1 write + 3 reads)/put {:.2}",
        median(read_ratios),
        median(write_ratios)
    );
}
