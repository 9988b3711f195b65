//! `apogee-bench`: YCSB-style load generator for Aerospike-protocol servers (Apogee, Aerospike,
//! the null server) and Redis, and the null server itself.

use std::process::ExitCode;
use std::time::Duration;

use apogee_bench::driver::{Keyspace, Target};
use apogee_bench::report;
use apogee_bench::runner::{self, RunConfig};
use apogee_bench::workload::{Distribution, Mix, RecordShape};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "apogee-bench",
    version,
    about = "YCSB-style benchmarks for Apogee, Aerospike and Redis"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Phase {
    Load,
    Run,
    Both,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Protocol: aerospike (Apogee, Aerospike, the null server) or redis.
    #[arg(long, default_value = "aerospike")]
    target: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// YCSB workload letter A-F (E: short scans, each up to 100 records of one partition from a key down, the nearest Aerospike has to a key-range scan).
    #[arg(long, default_value = "A", conflicts_with = "read_pct")]
    workload: String,
    /// A custom read/update mix instead of a YCSB letter: percent of reads.
    #[arg(long)]
    read_pct: Option<u8>,
    /// Key distribution; default: the workload's own (zipfian, latest for D).
    #[arg(long)]
    distribution: Option<String>,
    /// Records in the key space (loaded in the load phase).
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    #[arg(long, default_value = "both")]
    phase: Phase,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Run phase length in seconds (ignored when --operations is given).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Run phase operation count instead of a duration.
    #[arg(long)]
    operations: Option<u64>,
    /// Open-loop total rate in requests per second; default closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Keys per read: above 1 every read is a batch read of this many keys (an Aerospike
    /// batch request, a RESP pipeline of HGETALLs).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Fields (bins) per record.
    #[arg(long, default_value_t = 10)]
    bins: usize,
    /// Bytes per field.
    #[arg(long, default_value_t = 100)]
    bin_bytes: usize,
    #[arg(long, default_value = "test")]
    namespace: String,
    #[arg(long, default_value = "usertable")]
    set: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Print a progress line every second.
    #[arg(long)]
    progress: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Aerospike target: read the cluster's partition map from this seed (`peers-clear-std`,
    /// each node's `replicas`) once at start and send each get and put to its partition's
    /// master, as the official clients do; without it every request goes to the seed (a
    /// cluster node proxies what it does not master). Batches and scans still go to the seed.
    #[arg(long)]
    route: bool,
}

#[derive(clap::Args)]
struct BatchCompareArgs {
    /// Apogee's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    apogee: String,
    /// Redis's address (pipelines of GETs); left out: no Redis side.
    #[arg(long)]
    redis: Option<String>,
    /// Aerospike CE's address (batches and gets); left out: no Aerospike side.
    #[arg(long)]
    aerospike: Option<String>,
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Connections per side, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Keys per batch, comma-separated.
    #[arg(long, default_value = "10,100", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    bins: usize,
    #[arg(long, default_value_t = 100)]
    bin_bytes: usize,
    #[arg(long, default_value = "test")]
    namespace: String,
    #[arg(long, default_value = "batchcmp")]
    set: String,
    /// The records are already loaded (same --records, --set and shape).
    #[arg(long)]
    no_load: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load records and/or run a workload against a server.
    Run(Box<RunArgs>),
    /// Batch reads of N keys as records/s against single gets on the same server, Redis
    /// pipelines of N GETs and another Aerospike server's batches (CE), phases alternated.
    BatchCompare(Box<BatchCompareArgs>),
    /// Scan a whole set on one node once and print records/s (one connection; the request
    /// lists all 4096 partitions, and those the node does not master, answered 11, are
    /// counted, not retried elsewhere).
    FullScan {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 3000)]
        port: u16,
        #[arg(long, default_value = "test")]
        namespace: String,
        #[arg(long, default_value = "usertable")]
        set: String,
    },
    /// Serve canned replies to every Aerospike-protocol request (the machine's ceiling).
    NullServer {
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        #[arg(long, default_value_t = 3300)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        cores: usize,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("apogee-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().cmd {
        Cmd::NullServer {
            address,
            port,
            cores,
        } => {
            if cores == 0 || cores > 256 {
                return Err("--cores must be 1..=256".into());
            }
            apogee_bench::null_server::run(&address, port, cores)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::FullScan {
            host,
            port,
            namespace,
            set,
        } => {
            let ks = Keyspace {
                namespace,
                set,
                shape: RecordShape {
                    bins: 1,
                    bin_bytes: 0,
                },
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let addr = format!("{host}:{port}");
            let (scan, secs) = rt.block_on(async {
                let mut c = apogee_bench::driver::aerospike::AeroConn::connect(&addr, ks)
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                let started = std::time::Instant::now();
                let n = c
                    .full_scan()
                    .await
                    .map_err(|e| format!("scan failed: {e}"))?;
                Ok::<_, String>((n, started.elapsed().as_secs_f64()))
            })?;
            println!(
                "full-scan: {} records in {secs:.2} s: {:.0} records/s; partitions scanned {}, unavailable {}",
                scan.records,
                scan.records as f64 / secs,
                scan.partitions_scanned,
                scan.partitions_unavailable
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BatchCompare(a) => {
            if a.bins == 0 || a.bins > 1000 || a.bin_bytes > 1 << 20 {
                return Err("--bins must be 1..=1000 and --bin-bytes at most 1 MiB".into());
            }
            let cfg = apogee_bench::batch_compare::Config {
                apogee: a.apogee,
                redis: a.redis,
                aerospike: a.aerospike,
                keyspace: Keyspace {
                    namespace: a.namespace,
                    set: a.set,
                    shape: RecordShape {
                        bins: a.bins,
                        bin_bytes: a.bin_bytes,
                    },
                },
                records: a.records,
                connections: a.connections,
                phase_secs: a.seconds,
                rounds: a.rounds,
                batch_sizes: a.batch_sizes,
                no_load: a.no_load,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            rt.block_on(apogee_bench::batch_compare::run(&cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(args) => {
            let RunArgs {
                target,
                host,
                port,
                workload,
                read_pct,
                distribution,
                records,
                phase,
                connections,
                duration_secs,
                operations,
                rate,
                batch,
                bins,
                bin_bytes,
                namespace,
                set,
                json,
                progress,
                seed,
                route,
            } = *args;
            let target: Target = target.parse()?;
            let mut mix = match read_pct {
                Some(p) if p <= 100 => Mix::read_update(p, Distribution::Zipfian),
                Some(p) => return Err(format!("--read-pct {p} is over 100")),
                None => Mix::ycsb(&workload)?,
            };
            if let Some(d) = distribution {
                mix.distribution = d.parse()?;
            }
            if mix.name == "E" && matches!(target, Target::Redis) {
                return Err(
                    "workload E needs short scans, which Redis has not over these keys (use --target aerospike)"
                        .into(),
                );
            }
            if records < 2 {
                return Err("--records must be at least 2".into());
            }
            if bins == 0 || bins > 1000 || bin_bytes > 1 << 20 {
                return Err("--bins must be 1..=1000 and --bin-bytes at most 1 MiB".into());
            }
            if batch == 0 || batch > apogee_bench::driver::aerospike::BATCH_KEYS_MAX {
                return Err(format!(
                    "--batch must be 1..={}",
                    apogee_bench::driver::aerospike::BATCH_KEYS_MAX
                ));
            }
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                return Err("--rate must be a positive number".into());
            }
            let cfg = RunConfig {
                target,
                addr: format!("{host}:{port}"),
                keyspace: Keyspace {
                    namespace,
                    set,
                    shape: RecordShape { bins, bin_bytes },
                },
                connections,
                records,
                mix,
                duration: operations
                    .is_none()
                    .then(|| Duration::from_secs(duration_secs)),
                operations,
                rate,
                batch,
                seed,
                progress,
                route,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let mut reports = Vec::new();
            let mut errors = 0;
            if phase != Phase::Run {
                let r = rt.block_on(runner::load(&cfg))?;
                print!("{}", report::table("load", &r));
                errors += r.recorder.error_count();
                reports.push(report::to_json("load", &r));
            }
            if phase != Phase::Load {
                let title = format!("workload {}", cfg.mix.name);
                let r = rt.block_on(runner::run(&cfg))?;
                print!("{}", report::table(&title, &r));
                errors += r.recorder.error_count();
                reports.push(report::to_json(&title, &r));
            }
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&reports).expect("JSON of plain values");
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            Ok(if errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
