//! `apogee`: an Aerospike-compatible, thread-per-core key-value server.
//!
//! Parses flags, loads and validates the configuration, checks the host, and hands over to the
//! runtime. With no arguments it serves namespace `test` on 127.0.0.1:3000 with data under
//! `./apogee-data`.

mod admission;
mod batch;
mod bin_names;
mod cluster;
mod command;
mod config;
mod connection;
mod core;
mod dispatch;
mod exclusive;
mod info;
mod latency;
mod log_limit;
mod namespace;
mod node;
mod partition;
mod preflight;
mod runtime;
mod scan;
mod sindex;
mod steering;
mod stream;
mod truncate;
mod udf;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Apogee: an Aerospike-compatible key-value database. Official Aerospike clients connect to it
/// unchanged. With no flags it serves namespace `test` on 127.0.0.1:3000, keeping data in
/// ./apogee-data, on every CPU core.
#[derive(Parser, Debug)]
#[command(name = "apogee", version)]
struct Args {
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    address: Option<IpAddr>,
    /// Service port the clients connect to [default: 3000].
    #[arg(long)]
    port: Option<u16>,
    /// Directory holding the data files, one sub-directory per namespace [default: ./apogee-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of cores (shards) to run; each owns the partitions p with p % cores == shard.
    /// Data written with another count is re-homed at start [default: all CPUs].
    #[arg(long)]
    cores: Option<usize>,
    /// TOML configuration file using Aerospike's key names ([service] address, port, cores,
    /// data-dir; [namespace.<name>] write-block-size, commit-to-device, flush-max-ms,
    /// default-ttl, max-record-size, read-cache-size, defrag-lwm-pct, defrag-sleep, nsup-period, filesize,
    /// stop-writes-used-pct, stop-writes-avail-pct, evict-used-pct).
    /// Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `service.node-id`: this node's 64-bit id in hex [default: derived on first start and
    /// kept in <data-dir>/node-id].
    #[arg(long)]
    node_id: Option<String>,
    /// `service.cluster-name`: peers with another name are refused.
    #[arg(long)]
    cluster_name: Option<String>,
    /// `service.access-address`: the address peers and clients are told [default: --address].
    #[arg(long)]
    access_address: Option<IpAddr>,
    /// `network.heartbeat.address`; any heartbeat flag turns clustering on.
    #[arg(long)]
    heartbeat_address: Option<IpAddr>,
    /// `network.heartbeat.port` [default: 3002 once clustering is on].
    #[arg(long)]
    heartbeat_port: Option<u16>,
    /// `network.heartbeat.mesh-seed-address-port`, as `<ip>:<port>`; repeat for several seeds.
    #[arg(long = "mesh-seed-address-port")]
    mesh_seeds: Vec<String>,
    /// `network.fabric.port` [default: 3001].
    #[arg(long)]
    fabric_port: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let overrides = config::Overrides {
        address: args.address,
        port: args.port,
        cores: args.cores,
        data_dir: args.data_dir,
        node_id: args.node_id,
        cluster_name: args.cluster_name,
        access_address: args.access_address,
        heartbeat_address: args.heartbeat_address,
        heartbeat_port: args.heartbeat_port,
        mesh_seeds: args.mesh_seeds,
        fabric_port: args.fabric_port,
    };
    let mut config = match config::Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apogee: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let host = match preflight::check(config.cores) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("apogee: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    config.proto_fd_max =
        match preflight::fit_file_limit(config.proto_fd_max, config.proto_fd_max_set, config.cores)
        {
            Ok(n) => n,
            Err(e) => {
                eprintln!("apogee: cannot start: {e}");
                return ExitCode::from(1);
            }
        };
    tracing::info!(kernel = %host.kernel, memlock_kib = host.memlock_bytes / 1024, "host checks passed");
    match runtime::run(config, &host) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apogee: {e}");
            ExitCode::from(1)
        }
    }
}
