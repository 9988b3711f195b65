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
}

impl Node {
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
