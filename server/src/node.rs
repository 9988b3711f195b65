//! What every core of the node shares, read-only after start: the configuration, the node
//! name, the channels into each shard and each shard's counters.
//!
//! Shared through an `Arc` across cores; nothing in it is mutated on the data path except the
//! per-shard atomic counters. It must never hold a lock.

use std::sync::Arc;

use apogee_engine::stats::{ShardStats, StatsSnapshot};
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

/// The node-wide shared state.
pub struct Node {
    pub config: Config,
    /// Node name reported by `node`: the 64-bit node id in upper-case hex.
    pub name: String,
    /// `inboxes[shard]` delivers to that shard's core.
    pub inboxes: Vec<flume::Sender<ShardRequest>>,
    /// `stats[namespace][shard]`.
    pub stats: Vec<Vec<Arc<ShardStats>>>,
    /// `live[namespace]`: the command-layer settings `set-config` may change.
    pub live: Vec<NamespaceLive>,
    /// `tunings[namespace]`: each shard store's live engine settings, registered as the cores
    /// open them. Locked only by startup and `set-config`, never on the data path.
    pub tunings: std::sync::Mutex<Vec<Vec<Arc<apogee_engine::tuning::Tuning>>>>,
    /// `set_stats[namespace]`: each shard's per-set object counts, registered like `tunings`.
    pub set_stats: std::sync::Mutex<Vec<Vec<Arc<apogee_engine::sets::SetStats>>>>,
    /// The bin names each namespace has seen, for `bins`.
    pub bin_names: Arc<crate::bin_names::BinNames>,
    /// `latency[namespace][shard][kind]`: written by the core that accepted the request.
    pub latency: Vec<Vec<[crate::latency::Histogram; 2]>>,
}

/// Namespace settings read by every write, changeable at run time: atomics, read `Relaxed`.
#[derive(Debug)]
pub struct NamespaceLive {
    pub default_ttl: std::sync::atomic::AtomicU32,
    pub max_record_size: std::sync::atomic::AtomicUsize,
}

impl NamespaceLive {
    pub fn new(ns: &crate::config::NamespaceConfig) -> NamespaceLive {
        NamespaceLive {
            default_ttl: ns.default_ttl.into(),
            max_record_size: ns.max_record_size.into(),
        }
    }

    pub fn limits(&self) -> crate::command::WriteLimits {
        use std::sync::atomic::Ordering::Relaxed;
        crate::command::WriteLimits {
            default_ttl: self.default_ttl.load(Relaxed),
            max_record_size: self.max_record_size.load(Relaxed),
        }
    }
}

impl Node {
    /// A node over `config` with fresh counters and settings, for the runtime and tests.
    pub fn new(config: Config, inboxes: Vec<flume::Sender<ShardRequest>>) -> Node {
        let stats = config
            .namespaces
            .iter()
            .map(|_| (0..config.cores).map(|_| Arc::default()).collect())
            .collect();
        Node {
            name: Node::compute_name(&config),
            inboxes,
            stats,
            live: config.namespaces.iter().map(NamespaceLive::new).collect(),
            tunings: std::sync::Mutex::new(vec![Vec::new(); config.namespaces.len()]),
            set_stats: std::sync::Mutex::new(vec![Vec::new(); config.namespaces.len()]),
            bin_names: crate::bin_names::BinNames::open(
                &config.data_dir,
                &config
                    .namespaces
                    .iter()
                    .map(|n| n.name.clone())
                    .collect::<Vec<_>>(),
            ),
            latency: config
                .namespaces
                .iter()
                .map(|_| (0..config.cores).map(|_| Default::default()).collect())
                .collect(),
            config,
        }
    }

    /// The shard that owns a partition: `p % cores`.
    pub fn shard_of(&self, partition: u16) -> usize {
        partition as usize % self.config.cores
    }

    pub fn namespace_stats(&self, ns: usize) -> StatsSnapshot {
        let snaps: Vec<_> = self.stats[ns].iter().map(|s| s.snapshot()).collect();
        StatsSnapshot::sum(&snaps)
    }

    /// A stable node id: the same address, port and data directory give the same name.
    pub fn compute_name(config: &Config) -> String {
        let dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        let seed = format!("{}|{}|{}", config.address, config.port, dir.display());
        let id = xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) | (1 << 60);
        format!("{id:X}")
    }
}
