//! What every core of the node shares, read-only after start: the configuration, the node
//! name, the partition table, the channels into each shard and each namespace's shared state.
//!
//! Shared through an `Arc` across cores; nothing in it is mutated on the data path except the
//! per-shard atomic counters. It must never hold a lock.

use std::sync::Arc;

use apogee_engine::stats::StatsSnapshot;
use apogee_engine::tuning::Tuning;
use apogee_wire::msg::Message;

use crate::config::Config;

/// Requests queued for one shard before senders wait: bounds memory when a core falls behind.
pub const SHARD_INBOX_CAPACITY: usize = 1024;

/// A keyed command handed to the core that owns its partition, with where to send the reply.
pub struct ShardRequest {
    pub namespace: usize,
    pub msg: Message,
    /// The encoded reply frame goes back on this one-shot channel.
    pub reply: flume::Sender<Vec<u8>>,
}

/// Work handed to the core that owns it.
pub enum ShardWork {
    /// One keyed command.
    Keyed(ShardRequest),
    /// The rows of one batch that this shard owns.
    Batch(crate::batch::ShardBatch),
    /// The partitions of one scan that this shard owns.
    Scan(crate::scan::ShardScan),
}

/// The node-wide shared state.
pub struct Node {
    pub config: Config,
    /// Node name reported by `node`: the 64-bit node id in upper-case hex.
    pub name: String,
    /// Where every partition lives: which nodes, which local shard.
    pub partitions: crate::partition::PartitionTable,
    /// `inboxes[shard]` delivers to that shard's core.
    pub inboxes: Vec<flume::Sender<ShardWork>>,
    /// `namespaces[i]` is the namespace configured `i`-th.
    pub namespaces: Vec<crate::namespace::Namespace>,
    /// The bin names each namespace has seen, for `bins`.
    pub bin_names: Arc<crate::bin_names::BinNames>,
    /// Shards whose writes panicked and that now refuse writes, for `statistics`.
    pub poisoned_shards: std::sync::atomic::AtomicU64,
    /// Rate limits of repeated node-wide log lines (info and bin-name limits).
    pub logs: crate::log_limit::NodeLogLimits,
    /// Client connection counts, for `proto-fd-max` and `statistics`.
    pub connections: Arc<crate::admission::ConnectionStats>,
    /// `batch_latency[shard]`: whole batches, written by the core that accepted the batch.
    pub batch_latency: Vec<crate::latency::Histogram>,
    /// Running and recently finished scans, for `query-show` and `query-abort`.
    pub jobs: crate::scan::jobs::JobTable,
}

impl Node {
    /// A node over `config` with fresh counters and settings, for the runtime and tests.
    pub fn new(config: Config, inboxes: Vec<flume::Sender<ShardWork>>) -> Node {
        let name = Node::compute_name(&config);
        let id = u64::from_str_radix(&name, 16).expect("compute_name prints hex");
        Node {
            partitions: crate::partition::PartitionTable::single_node(
                id,
                u32::try_from(config.cores).expect("core count fits u32"),
                config.namespaces.len(),
            ),
            name,
            inboxes,
            namespaces: (config.namespaces.iter())
                .map(|ns| {
                    let tuning = Tuning::from_config(&crate::core::store_config(&config, ns, 0));
                    crate::namespace::Namespace::new(ns, config.cores, tuning)
                })
                .collect(),
            bin_names: crate::bin_names::BinNames::open(
                &config.data_dir,
                &config
                    .namespaces
                    .iter()
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>(),
            ),
            connections: Arc::default(),
            logs: Default::default(),
            poisoned_shards: Default::default(),
            batch_latency: (0..config.cores).map(|_| Default::default()).collect(),
            jobs: Default::default(),
            config,
        }
    }

    /// Reads every namespace's truncate file (`<data-dir>/truncate-<namespace>`); an
    /// unreadable or malformed file stops the start, naming the file and line.
    pub fn load_truncated(&mut self) -> Result<(), String> {
        use apogee_engine::shard::truncate::Truncated;
        for (i, ns) in self.config.namespaces.iter().enumerate() {
            let t = Truncated::load(&Truncated::path(&self.config.data_dir, &ns.name))
                .map_err(|e| e.to_string())?;
            *self.namespaces[i].truncated() = t;
        }
        Ok(())
    }

    /// The local shard that serves a partition (the partition table's answer).
    pub fn shard_of(&self, partition: u16) -> usize {
        self.partitions.shard_of(partition)
    }

    pub fn namespace_stats(&self, ns: usize) -> StatsSnapshot {
        self.namespaces[ns].stats_snapshot()
    }

    /// A stable node id: the same address, port and data directory give the same name.
    pub fn compute_name(config: &Config) -> String {
        let dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        let seed = format!("{}|{}|{}", config.address, config.port, dir.display());
        let id = xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) | (1 << 60);
        format!("{id:X}")
    }
}
