//! What every core of the node shares, read-only after start: the configuration, the node
//! name, the partition table, the channels into each shard and each namespace's shared state.
//!
//! Shared through an `Arc` across cores; nothing in it is mutated on the data path except the
//! per-shard atomic counters. The partition table and the cluster's state are replaced whole
//! by the cluster task (`ArcSwap`: readers load a pointer, never wait). It must never hold a
//! lock.

use std::sync::Arc;
use std::time::Duration;

use apogee_cluster::NodeId;
use arc_swap::ArcSwap;

use apogee_engine::stats::StatsSnapshot;
use apogee_engine::tuning::Tuning;
use apogee_wire::msg::Message;

use crate::config::Config;

/// The file in the data directory that keeps the node id when `node-id` is not set.
pub const NODE_ID_FILE: &str = "node-id";

/// The file in the data directory that counts this node's starts, for the failure detector.
pub const START_COUNT_FILE: &str = "cluster-starts";

/// Requests queued for one shard before senders wait: bounds memory when a core falls behind.
pub const SHARD_INBOX_CAPACITY: usize = 1024;

/// Longest a request waits for this node's partition table to catch up before it is refused
/// as not this node's (11, or a replica's refusal). Each node publishes its table on its own,
/// at most every 50 ms (`cluster::migration`), so around a view change or a hand-off two
/// nodes briefly disagree on who serves a partition; a client that meets that window would
/// get 11 where a real cluster serves. Well under the clients' 1 s default timeout.
pub const TABLE_SETTLE_WAIT_MS: u64 = 200;
/// How often a waiting request looks at the table again.
const TABLE_SETTLE_POLL_MS: u64 = 5;

/// A keyed command handed to the core that owns its partition, with where to send the reply.
pub struct ShardRequest {
    pub namespace: usize,
    pub msg: Message,
    /// The encoded reply frame goes back on this one-shot channel; with `direct`, the owning
    /// core writes the reply to the client itself and sends an empty frame once it did.
    pub reply: flume::Sender<Vec<u8>>,
    pub direct: Option<crate::dispatch::direct::DirectReply>,
    /// Whether the request came from a client (and may be forwarded to another node whose
    /// partition it turns out to be), not from a peer's proxy.
    pub may_proxy: bool,
}

/// A duplicate (close-on-exec) of a connected socket's descriptor, for another core to serve
/// through its inbox ([`ShardWork::Client`], [`ShardWork::FabricPeer`]); the caller then drops
/// its own stream, and the other core takes the socket over with [`take_over`].
pub fn hand_over(stream: &glommio::net::TcpStream) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the stream owns the descriptor and keeps it open while it is borrowed here; the
    // duplicate is owned by the returned value alone.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()
}

/// The stream of a socket another core handed over with [`hand_over`].
pub fn take_over(fd: std::os::fd::OwnedFd) -> glommio::net::TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: a connected TCP socket whose ownership moves here whole.
    unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// Work handed to the core that owns it.
pub enum ShardWork {
    /// One keyed command.
    Keyed(ShardRequest),
    /// The rows of one batch that this shard owns.
    Batch(crate::batch::ShardBatch),
    /// The partitions of one scan that this shard owns.
    Scan(crate::scan::ShardScan),
    /// A record image from a partition's master, for this shard's replica copy.
    Replica(crate::cluster::replica::ReplicaApply),
    /// Stream one partition's records to another node (migration).
    Emigrate(crate::cluster::migration::stream::Emigration),
    /// A chunk of migrating records for a partition this shard owns.
    Immigrate(crate::cluster::migration::stream::Immigration),
    /// A merge source's lookup of one record for the master's duplicate resolution.
    DupRes(crate::cluster::dup_res::DupResLookup),
    /// A fabric connection a peer opened for this shard (accepted on another core).
    FabricPeer {
        stream: std::os::fd::OwnedFd,
        peer: apogee_cluster::NodeId,
    },
    /// A client connection accepted on another core, for this core to serve (`steering`):
    /// nothing has been read from it yet.
    Client {
        stream: std::os::fd::OwnedFd,
        admitted: crate::admission::OpenConnection,
        serving: crate::steering::Serving,
    },
    /// Reconcile this shard's secondary indexes of a namespace with its catalog.
    SindexSync { ns: usize },
    /// Forget every record of a partition this node no longer holds.
    DropPartition {
        ns: usize,
        partition: apogee_wire::PartitionId,
    },
}

/// The node-wide shared state.
pub struct Node {
    pub config: Config,
    /// Node name reported by `node`: the 64-bit node id in upper-case hex.
    pub name: String,
    /// This node's id (`name` as a number).
    pub id: NodeId,
    /// Where every partition lives: which nodes, which local shard. Replaced whole on every
    /// committed view; a request loads it once and routes by that generation.
    pub partitions: ArcSwap<crate::partition::PartitionTable>,
    /// Whether this clustered node may take writes: renewed by the cluster task's ticks, it
    /// lapses when the node stalled long enough to be declared dead (`cluster::lease`).
    pub lease: crate::cluster::lease::Lease,
    /// Membership as `statistics`, `peers-*` and `cluster-stable` report it.
    pub cluster: ArcSwap<crate::cluster::ClusterState>,
    /// Requests forwarded to, and received from, other nodes over the fabric.
    pub proxy_stats: crate::cluster::fabric::ProxyStats,
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
    /// Which core serves a new client connection (`steering`).
    pub steering: crate::steering::Steering,
    /// `batch_latency[shard]`: whole batches, written by the core that accepted the batch.
    pub batch_latency: Vec<crate::latency::Histogram>,
    /// Running and recently finished scans, for `query-show` and `query-abort`.
    pub jobs: crate::scan::jobs::JobTable,
    /// Truncate cut-offs taken here, waiting for core 0 to send them to the other members
    /// (`cluster::metadata::forward`; a node alone sends none).
    pub cut_offs: (flume::Sender<Vec<u8>>, flume::Receiver<Vec<u8>>),
    /// Registered UDF modules.
    pub udfs: Arc<crate::udf::Registry>,
    /// UDF module changes to send to the other members (`cluster::metadata::forward`).
    pub udf_out: (flume::Sender<Vec<u8>>, flume::Receiver<Vec<u8>>),
    /// Secondary-index catalogs to send to the other members (`cluster::metadata::forward`).
    pub sindex_out: (flume::Sender<Vec<u8>>, flume::Receiver<Vec<u8>>),
    /// Core 0's migration task's inbox (`cluster::migration`); its receiver is taken once,
    /// by the task.
    pub migration_tx: flume::Sender<crate::cluster::migration::Event>,
    pub migration_rx: std::sync::Mutex<Option<flume::Receiver<crate::cluster::migration::Event>>>,
    /// Partitions each namespace's shards found records of at start, for migration.
    pub found_at_start: crate::cluster::migration::FoundAtStart,
}

impl Node {
    /// `decide`'s answer from this node's partition table: at once when it has one (or on a
    /// node outside any cluster, whose table never changes), else from the first table
    /// published within `TABLE_SETTLE_WAIT_MS` that gives one; `None` when none did. Only
    /// the paths about to refuse a request as not this node's wait, so steady-state
    /// requests never do, and they look at the table without taking a reference to it.
    pub async fn settled<T>(
        &self,
        decide: impl Fn(&Arc<crate::partition::PartitionTable>) -> Option<T>,
    ) -> Option<T> {
        let first = decide(&self.partitions.load());
        if first.is_some() || self.config.cluster.heartbeat.is_none() {
            return first;
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(TABLE_SETTLE_WAIT_MS);
        while std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(TABLE_SETTLE_POLL_MS)).await;
            if let Some(answer) = decide(&self.partitions.load()) {
                return Some(answer);
            }
        }
        None
    }

    /// A node over `config` with fresh counters and settings, for the runtime and tests.
    pub fn new(config: Config, inboxes: Vec<flume::Sender<ShardWork>>) -> Node {
        let id = NodeId(
            config
                .cluster
                .node_id
                .unwrap_or_else(|| Node::derived_node_id(&config)),
        );
        let shards = u32::try_from(config.cores).expect("core count fits u32");
        let (table, state) = if config.cluster.heartbeat.is_some() {
            // Clustered: nothing is served until the first view commits.
            (
                crate::partition::PartitionTable::unavailable(
                    id,
                    shards,
                    config.namespaces.len(),
                    -1,
                ),
                crate::cluster::ClusterState::forming(),
            )
        } else {
            (
                crate::partition::PartitionTable::single_node(id, shards, config.namespaces.len()),
                crate::cluster::ClusterState::alone(id),
            )
        };
        let (migration_tx, migration_rx) =
            flume::bounded(crate::cluster::migration::MIGRATION_EVENTS_MAX);
        Node {
            partitions: ArcSwap::from_pointee(table),
            lease: Default::default(),
            cluster: ArcSwap::from_pointee(state),
            proxy_stats: Default::default(),
            name: format!("{:X}", id.0),
            id,
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
            steering: crate::steering::Steering::new(config.cores),
            logs: Default::default(),
            poisoned_shards: Default::default(),
            batch_latency: (0..config.cores).map(|_| Default::default()).collect(),
            jobs: Default::default(),
            cut_offs: flume::bounded(crate::truncate::CUT_OFFS_PENDING_MAX),
            sindex_out: flume::bounded(crate::sindex::CATALOGS_PENDING_MAX),
            udfs: Arc::default(),
            udf_out: flume::bounded(crate::udf::CHANGES_PENDING_MAX),
            migration_tx,
            migration_rx: std::sync::Mutex::new(Some(migration_rx)),
            found_at_start: crate::cluster::migration::FoundAtStart::new(config.namespaces.len()),
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
            let path = crate::sindex::Catalog::path(&self.config.data_dir, &ns.name);
            self.namespaces[i].sindexes.load(&path)?;
        }
        self.udfs
            .load(&crate::udf::Registry::dir(&self.config.data_dir))?;
        Ok(())
    }

    /// The local shard that serves a partition (the partition table's answer; the same in
    /// every generation, since it depends only on the core count).
    pub fn shard_of(&self, partition: u16) -> usize {
        self.partitions.load().shard_of(partition)
    }

    pub fn namespace_stats(&self, ns: usize) -> StatsSnapshot {
        self.namespaces[ns].stats_snapshot()
    }

    /// A node id derived from the address, port and data directory (the first start's id,
    /// which `node_id_file` then keeps).
    pub fn derived_node_id(config: &Config) -> u64 {
        let dir = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        let seed = format!("{}|{}|{}", config.address, config.port, dir.display());
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) | (1 << 60)
    }

    /// The node id when `node-id` is not set: the one in `<data-dir>/node-id`, written on the
    /// first start from `derived_node_id`, so a node keeps its id across restarts even when
    /// its port or address change (its partitions, in a cluster, follow its id).
    pub fn node_id_file(config: &Config) -> Result<u64, String> {
        let path = config.data_dir.join(NODE_ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => crate::config::parse_node_id(text.trim()).ok_or_else(|| {
                format!(
                    "{} holds {:?}, not a node id (1 to 16 hex digits, not zero): fix or \
                     remove it, or set service.node-id",
                    path.display(),
                    text.trim()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Node::derived_node_id(config);
                std::fs::create_dir_all(&config.data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, format!("{id:X}\n"))
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(id)
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// This start's number, one more than the last start's (kept in `<data-dir>/cluster-starts`):
    /// the failure detector's identity generation. Peers may still hold this node's previous
    /// run as down; SWIM lets the later generation (compared with wraparound) win, so it must
    /// really be later — a random one would lose half the time and keep the node out.
    pub fn next_start_count(config: &Config) -> Result<u16, String> {
        let path = config.data_dir.join(START_COUNT_FILE);
        let last = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u16>().map_err(|_| {
                format!(
                    "{} holds {:?}, not a start count (0..=65535): fix or remove it",
                    path.display(),
                    text.trim()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let next = last.wrapping_add(1);
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{next}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(next)
    }
}
