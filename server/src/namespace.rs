//! One namespace as the server sees it (indexed like `config.namespaces`): the settings
//! `set-config` may change, its durable truncate cut-offs, and what each shard registers
//! when it opens (counters, engine settings, set counts, truncate cut-offs, latencies).
//!
//! Shared read-only through the node's `Arc`; the locks here are taken at start, by info
//! commands and by truncate, never on the data path. It must never hold records.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use apogee_engine::sets::SetStats;
use apogee_engine::shard::truncate::{TruncatePoints, Truncated};
use apogee_engine::stats::{ShardStats, StatsSnapshot};
use apogee_engine::tuning::Tuning;

use crate::config::NamespaceConfig;
use crate::latency;

/// Namespace settings read by every write, changeable at run time: atomics, read `Relaxed`.
#[derive(Debug)]
pub struct NamespaceLive {
    pub default_ttl: AtomicU32,
    pub max_record_size: AtomicUsize,
    /// `geo2dsphere-within`; shared with each shard's indexer.
    pub geo: Arc<crate::sindex::cells::GeoLive>,
}

impl NamespaceLive {
    pub fn new(ns: &NamespaceConfig) -> NamespaceLive {
        NamespaceLive {
            default_ttl: ns.default_ttl.into(),
            max_record_size: ns.max_record_size.into(),
            geo: Arc::new(crate::sindex::cells::GeoLive::new(ns.geo2dsphere_within)),
        }
    }

    pub fn limits(&self) -> crate::command::WriteLimits {
        crate::command::WriteLimits {
            default_ttl: self.default_ttl.load(Relaxed),
            max_record_size: self.max_record_size.load(Relaxed),
        }
    }
}

/// What one shard's store hands the namespace when it opens: handles to state the store
/// keeps updating, read by info commands and changed by truncate.
pub struct ShardHandles {
    pub shard: usize,
    pub set_stats: Arc<SetStats>,
    pub truncate_points: Arc<TruncatePoints>,
}

/// One configured namespace.
pub struct Namespace {
    pub live: NamespaceLive,
    /// The engine's live settings (defragmentation, expiry, stop-writes, flush pacing): one
    /// for the namespace, read by every shard's store, changed by `set-config`.
    pub tuning: Arc<Tuning>,
    /// `stats[shard]`: each shard's counters, created before the shards open.
    pub stats: Vec<Arc<ShardStats>>,
    /// `latency[shard][kind]`: written by the core that accepted the request (for batch
    /// rows, the core that ran the row).
    pub latency: Vec<[latency::Histogram; latency::KINDS]>,
    /// The durable truncate cut-offs, as in the namespace's truncate file; loaded before the
    /// shards open, locked only by the truncate commands and `sets`.
    pub truncated: Mutex<Truncated>,
    /// Each open shard's handles, in the order the shards opened: one entry per shard, so
    /// the handles of one shard always travel together.
    shards: Mutex<Vec<ShardHandles>>,
    /// Replica writes sent and received, for `namespace/<ns>`.
    pub replication: crate::cluster::replica::ReplicationStats,
    /// `partition_objects[p]`: records of partition `p` here, refreshed by the owning core
    /// every `PARTITION_OBJECTS_REFRESH_MS` (for `partition-info`).
    pub partition_objects: Box<[std::sync::atomic::AtomicU32]>,
    /// Records migrated out and in, for `namespace/<ns>`.
    pub migration: crate::cluster::migration::stream::MigrationStats,
    /// Secondary-index definitions, loaded before the shards open.
    pub sindexes: crate::sindex::Catalog,
    /// Secondary-index entries and bytes per shard, for `sindex/<ns>/<name>`.
    pub sindex_usage: crate::sindex::Usage,
}

impl Namespace {
    /// `tuning` starts from the namespace's store settings (those of any shard: the tuned
    /// ones are the same for all).
    pub fn new(config: &NamespaceConfig, cores: usize, tuning: Tuning) -> Namespace {
        Namespace {
            live: NamespaceLive::new(config),
            tuning: Arc::new(tuning),
            stats: (0..cores).map(|_| Arc::default()).collect(),
            latency: (0..cores).map(|_| Default::default()).collect(),
            truncated: Mutex::default(),
            shards: Mutex::default(),
            replication: Default::default(),
            migration: Default::default(),
            sindexes: Default::default(),
            sindex_usage: Default::default(),
            partition_objects: (0..apogee_wire::digest::PARTITION_COUNT)
                .map(|_| Default::default())
                .collect(),
        }
    }

    /// Called once by each shard when its store has opened.
    pub fn register_shard(&self, handles: ShardHandles) {
        let mut shards = self.shards();
        assert!(
            shards.iter().all(|h| h.shard != handles.shard),
            "shard {} registered twice",
            handles.shard
        );
        assert!(handles.shard < self.stats.len(), "shard out of range");
        shards.push(handles);
    }

    /// The open shards' handles.
    pub fn shards(&self) -> MutexGuard<'_, Vec<ShardHandles>> {
        self.shards
            .lock()
            .expect("nothing panics while holding a namespace's shard list")
    }

    /// The durable truncate cut-offs.
    pub fn truncated(&self) -> MutexGuard<'_, Truncated> {
        self.truncated
            .lock()
            .expect("a truncate never panics holding the lock")
    }

    /// The counters of every shard, summed.
    pub fn stats_snapshot(&self) -> StatsSnapshot {
        let snaps: Vec<_> = self.stats.iter().map(|s| s.snapshot()).collect();
        StatsSnapshot::sum(&snaps)
    }
}
