//! One core of the node: its shard stores (one per namespace), its listener, its inbox of
//! work forwarded by other cores, and the execution of commands on the records it owns
//! (which core a request goes to is `dispatch`'s business).
//!
//! Everything here lives on one glommio executor. It must never block the executor and never
//! touch another core's store except by sending it a `ShardRequest`.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use apogee_engine::shard::{ShardStore, StoreConfig};
use apogee_engine::stats::ShardStats;
use apogee_wire::msg::{info2, Message};
use apogee_wire::{Digest, ResultCode};
use futures_lite::{future, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use crate::admission::{FrameBudget, OpenConnection, PARTIAL_FRAME_BYTES_MAX_PER_CORE};
use crate::cluster::replica;
use crate::command::{self, Reply};
use crate::config::NamespaceConfig;
use crate::connection;
use crate::latency;
use crate::log_limit::CoreLogLimits;
use crate::node::{Node, ShardWork};

/// How long a core waits before accepting again after `accept` failed (e.g. out of file
/// descriptors), so a persistent failure does not spin the core.
/// How often each core publishes its partitions' record counts (`partition-info`).
const PARTITION_OBJECTS_REFRESH_MS: u64 = 500;
const ACCEPT_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);

/// A keyed command for a partition another node masters now: nothing ran here.
#[derive(Debug, Clone, Copy)]
pub struct Moved {
    pub master: apogee_cluster::NodeId,
    pub partition: u16,
}

/// Why a clustered node does not run a write here.
enum Refused {
    /// Another node masters the partition (its hand-off completed after routing).
    Moved(Moved),
    /// Answered with this code (lease lapsed, no master, duplicate resolution failed...).
    Code(ResultCode),
}

impl From<ResultCode> for Refused {
    fn from(code: ResultCode) -> Refused {
        Refused::Code(code)
    }
}

/// What one partition table says about serving a write here.
enum Serving {
    Here(Arc<crate::partition::PartitionTable>),
    Moved(apogee_cluster::NodeId),
}

/// The store settings of one shard of namespace `ns`.
pub fn store_config(
    config: &crate::config::Config,
    ns: &NamespaceConfig,
    shard: usize,
) -> StoreConfig {
    StoreConfig {
        dir: config.data_dir.join(&ns.name),
        namespace: ns.name.clone(),
        shard: shard as u32,
        shard_count: config.cores as u32,
        block_bytes: ns.write_block_size,
        commit_to_device: ns.commit_to_device,
        flush_max_ms: ns.flush_max_ms,
        // A memory namespace reads its records where they lie in RAM: a cache would only
        // hold second copies.
        cache_bytes: if ns.memory {
            0
        } else {
            ns.read_cache_size / config.cores
        },
        defrag_lwm_pct: ns.defrag_lwm_pct,
        defrag_sleep_us: ns.defrag_sleep_us,
        nsup_period_secs: ns.nsup_period,
        file_bytes_max: if ns.memory { ns.data_size } else { ns.filesize } / config.cores as u64,
        stop_writes_used_pct: ns.stop_writes_used_pct,
        stop_writes_avail_pct: ns.stop_writes_avail_pct,
        evict_used_pct: ns.evict_used_pct,
        extents: ns.extents.get(shard).cloned().unwrap_or_default(),
        memory: ns.memory,
    }
}

pub struct Core {
    pub shard: usize,
    pub node: Arc<Node>,
    /// `stores[namespace]`.
    pub stores: Vec<Rc<ShardStore>>,
    /// `seen_bins[namespace]`: bin names the registry has already admitted for this core.
    seen_bins: std::cell::RefCell<Vec<std::collections::HashSet<Vec<u8>>>>,
    /// Bytes of request bodies this core's connections are still receiving.
    pub frame_budget: FrameBudget,
    /// Rate limits of this core's repeated log lines.
    pub logs: CoreLogLimits,
    /// `poisoned[namespace]`: set, with its cause, once a write panicked on this shard.
    poisoned: Vec<std::cell::OnceCell<String>>,
    /// The fault-injection bin of [`Core::inject_write_panic`] (debug builds).
    /// Debug builds only, from `APOGEE_FAULT_WRITE_DELAY_MS`: how long a client's write
    /// waits on its owning core before it runs, so tests can land a partition hand-off
    /// between a write's routing and its execution.
    fault_write_delay: Option<std::time::Duration>,
    fault_panic_bin: Option<Vec<u8>>,
}

/// Whether a write of `msg`'s record, served by `table`, has replicas to send its image to.
fn has_targets(
    table: &crate::partition::PartitionTable,
    ns: usize,
    msg: &Message,
    digest: Option<Digest>,
) -> bool {
    digest
        .map_or_else(|| command::digest_of(msg), Ok)
        .is_ok_and(|d| !table.replication_targets(ns, d.partition().0).is_empty())
}

impl Core {
    /// Opens this core's shard of every namespace, recovering each from disk.
    pub async fn open(shard: usize, node: Arc<Node>) -> Result<Core, String> {
        let mut stores = Vec::new();
        for (i, ns) in node.config.namespaces.iter().enumerate() {
            let cfg = store_config(&node.config, ns, shard);
            let stats: Arc<ShardStats> = node.namespaces[i].stats[shard].clone();
            let truncated = node.namespaces[i].truncated().clone();
            let tuning = node.namespaces[i].tuning.clone();
            let (store, report) = ShardStore::open_truncated(cfg, stats, &truncated, tuning)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                namespace = %ns.name,
                shard,
                objects = report.objects,
                blocks = report.blocks,
                records = report.records,
                bad_records = report.bad_records,
                corrupt_blocks = report.corrupt_blocks,
                truncated = report.truncated,
                elapsed_ms = report.elapsed_ms,
                "shard recovered"
            );
            if report.bad_records > 0 {
                tracing::warn!(
                    namespace = %ns.name,
                    shard,
                    bad_records = report.bad_records,
                    "skipped records that failed their checksum"
                );
            }
            node.namespaces[i].register_shard(crate::namespace::ShardHandles {
                shard,
                set_stats: store.set_stats(),
                truncate_points: store.truncate_points(),
            });
            store.spawn_truncator();
            store.spawn_background_flusher();
            store.spawn_defragmenter();
            store.spawn_expirer();
            store.spawn_sindex_sweeper();
            stores.push(store);
        }
        if node.config.cluster.heartbeat.is_some() {
            let counts: Vec<Vec<u64>> =
                stores.iter().map(|s| s.partition_object_counts()).collect();
            node.found_at_start.report(&counts);
        }
        Ok(Core {
            shard,
            poisoned: vec![std::cell::OnceCell::new(); stores.len()],
            seen_bins: std::cell::RefCell::new(vec![
                Default::default();
                node.config.namespaces.len()
            ]),
            node,
            stores,
            frame_budget: FrameBudget::new(PARTIAL_FRAME_BYTES_MAX_PER_CORE),
            logs: CoreLogLimits::default(),
            fault_write_delay: cfg!(debug_assertions)
                .then(|| std::env::var("APOGEE_FAULT_WRITE_DELAY_MS").ok())
                .flatten()
                .and_then(|ms| ms.parse().ok())
                .map(std::time::Duration::from_millis),
            fault_panic_bin: cfg!(debug_assertions)
                .then(|| std::env::var_os("APOGEE_FAULT_PANIC_BIN"))
                .flatten()
                .map(|b| b.into_encoded_bytes()),
        })
    }

    /// Runs a command whose record this core owns. A write that panics poisons the shard it
    /// ran on (its index may be half-updated): from then on that shard refuses writes while
    /// reads go on, and the cause is logged once.
    ///
    /// A write for a partition whose mastership moved to another node between routing and
    /// now (a hand-off completed meanwhile) is forwarded to the new master when `may_proxy`
    /// (the request came from a client, not from a peer), as Aerospike proxies: the client
    /// sees its write done instead of a result 11 it must retry.
    pub async fn execute(&self, ns: usize, msg: &Message, may_proxy: bool) -> Vec<u8> {
        if let Some(delay) = self.fault_write_delay {
            if may_proxy && msg.header.info2 & info2::WRITE != 0 {
                glommio::timer::sleep(delay).await;
            }
        }
        match self.run_keyed(ns, msg, None).await {
            Ok(reply) => reply.into_frame(),
            Err(Moved { master, partition }) if may_proxy => {
                (self.node.proxy_stats.after_handoff).fetch_add(1, Ordering::Relaxed);
                crate::cluster::fabric::proxy(self, master, partition, msg).await
            }
            Err(_) => Reply::code(ResultCode::PartitionUnavailable).into_frame(),
        }
    }

    /// [`Core::execute`] before encoding, never proxied: batch rows take this path too, so a
    /// batch write is the single-record write (bin-name admission, poisoning included); a row
    /// whose partition moved answers 11 and the client retries it.
    pub async fn execute_reply(&self, ns: usize, msg: &Message, digest: Option<Digest>) -> Reply {
        self.run_keyed(ns, msg, digest)
            .await
            .unwrap_or_else(|_| Reply::code(ResultCode::PartitionUnavailable))
    }

    /// Runs one keyed command on this core; `Err(Moved)` when, on a clustered node, the
    /// record's partition has another master now (nothing ran).
    async fn run_keyed(
        &self,
        ns: usize,
        msg: &Message,
        digest: Option<Digest>,
    ) -> Result<Reply, Moved> {
        let writes = msg.header.info2 & info2::WRITE != 0;
        if !writes {
            let limits = self.node.namespaces[ns].live.limits();
            // A read that may touch its record (read-touch-ttl-percent) is a write when it
            // does: a clustered master captures the touched version for the replicas.
            let mut image = None;
            let table = match msg.header.record_ttl {
                0 => {
                    if let Err(rc) = self.resolve_for_read(ns, msg, digest).await {
                        return Ok(Reply::code(rc));
                    }
                    None
                }
                _ => match self.serving_table(ns, msg, digest).await {
                    Ok(table) => table.filter(|t| has_targets(t, ns, msg, digest)),
                    Err(Refused::Moved(moved)) => return Err(moved),
                    Err(Refused::Code(rc)) => return Ok(Reply::code(rc)),
                },
            };
            let capture = table.is_some().then_some(&mut image);
            let reply = command::execute(&self.stores[ns], limits, msg, digest, capture).await;
            if let (Some(record), Some(table)) = (image, table) {
                // Best effort: the read has succeeded whatever the replicas answer (counted in
                // `repl_write_*`); a replica that misses it keeps the older TTL.
                let _ = replica::replicate(&self.node, &table, ns, &record, msg.header.info3).await;
            }
            return Ok(reply);
        }
        if self.poisoned[ns].get().is_some() {
            return Ok(Reply::code(ResultCode::ServerError));
        }
        if let Err(rc) = self.admit_bin_names(ns, msg) {
            return Ok(Reply::code(rc));
        }
        // A clustered master captures what the write stores, to send to the replicas; a node
        // alone does not even look up the partition.
        let mut image = None;
        let table = match self.serving_table(ns, msg, digest).await {
            Ok(table) => table.filter(|t| has_targets(t, ns, msg, digest)),
            Err(Refused::Moved(moved)) => return Err(moved),
            Err(Refused::Code(rc)) => return Ok(Reply::code(rc)),
        };
        let capture = table.is_some().then_some(&mut image);
        let run = async {
            self.inject_write_panic(msg);
            if crate::udf::apply::is_udf(msg) {
                return crate::udf::apply::execute(
                    &self.stores[ns],
                    self.node.namespaces[ns].live.limits(),
                    msg,
                    digest,
                    capture,
                    &self.node.udfs,
                )
                .await;
            }
            command::execute(
                &self.stores[ns],
                self.node.namespaces[ns].live.limits(),
                msg,
                digest,
                capture,
            )
            .await
        };
        let reply = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(reply) => reply,
            Err(panic) => {
                let cause = crate::dispatch::panic_message(panic.as_ref());
                tracing::error!(
                    namespace = %self.node.config.namespaces[ns].name,
                    shard = self.shard,
                    panic = %cause,
                    "a write panicked: this shard is poisoned and refuses writes until restart \
                     (reads go on); its index may be inconsistent"
                );
                let _ = self.poisoned[ns].set(cause);
                self.node
                    .poisoned_shards
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(Reply::code(ResultCode::ServerError));
            }
        };
        // Record-level tracing (`RUST_LOG=apogee::records=trace`): what each copy of a record
        // went through, for reading a lost write back out of the nodes' logs.
        tracing::trace!(target: "apogee::records",
            digest = ?digest.map_or_else(|| command::digest_of(msg).ok(), Some), result = reply.result,
            generation = reply.generation, view = ?table.as_ref().and_then(|t| t.migration_key()),
            "client write here");
        // Under commit level all, the client hears of the write only once every replica
        // applied it; a write no replica confirmed answers 9 (stored here, in doubt).
        if let (Some(record), Some(table)) = (
            image.filter(|_| reply.result == ResultCode::Ok as u8),
            table,
        ) {
            if let Err(rc) =
                replica::replicate(&self.node, &table, ns, &record, msg.header.info3).await
            {
                return Ok(Reply::code(rc));
            }
        }
        Ok(reply)
    }

    /// For a write (or a read that touches its record) on a clustered node: the partition
    /// table that lets this node serve it, after resolving the record against any merge
    /// sources that table names (`Ok(None)`: a node alone). One snapshot decides both that
    /// this node serves and where the write's image goes: a table loaded again after the
    /// write could name no targets — this node's emigration to the new master finished
    /// meanwhile — and the write would be acknowledged on this copy alone, then lost when the
    /// new master serves its streamed older version. A partition another node masters since
    /// the request was routed is `Refused::Moved` (the caller proxies it there) instead of a
    /// write no replica would ever see; one with no master, or a lapsed lease, answers 11.
    async fn serving_table(
        &self,
        ns: usize,
        msg: &Message,
        digest: Option<Digest>,
    ) -> Result<Option<Arc<crate::partition::PartitionTable>>, Refused> {
        if self.node.config.cluster.heartbeat.is_none() {
            return Ok(None);
        }
        let digest = digest.map_or_else(|| command::digest_of(msg), Ok)?;
        let partition = digest.partition().0;
        // A node that stalled past its lease takes no write until it knows its view lives on.
        let lease = &self.node.lease;
        let me = self.node.id;
        let serving = (self.node)
            .settled(|t| {
                if t.is_master(ns, partition) {
                    return lease.holds().then(|| Serving::Here(t.clone()));
                }
                match t.master(ns, partition) {
                    Some(master) if master != me => Some(Serving::Moved(master)),
                    _ => None,
                }
            })
            .await;
        let table = match serving {
            Some(Serving::Here(table)) => table,
            Some(Serving::Moved(master)) => {
                return Err(Refused::Moved(Moved { master, partition }))
            }
            None => {
                if let Some(n) = self.node.logs.partition_unavailable.allow() {
                    let master = self.node.partitions.load().is_master(ns, partition);
                    tracing::info!(partition, master_here = master, lease_holds = lease.holds(),
                        suppressed = n, "answered 11: a write reached a node that is not (or no longer) its partition's master, or whose write lease lapsed");
                }
                return Err(Refused::Code(ResultCode::PartitionUnavailable));
            }
        };
        crate::cluster::dup_res::resolve(self, &table, ns, &digest).await?;
        Ok(Some(table))
    }

    /// Before a read on a clustered node that serves a partition it is still merging: the
    /// record resolved against the merge sources (nothing to do anywhere else, at the cost
    /// of one table load).
    async fn resolve_for_read(
        &self,
        ns: usize,
        msg: &Message,
        digest: Option<Digest>,
    ) -> Result<(), ResultCode> {
        if self.node.config.cluster.heartbeat.is_none() {
            return Ok(());
        }
        let Ok(digest) = digest.map_or_else(|| command::digest_of(msg), Ok) else {
            return Ok(()); // the command answers its own error
        };
        let partition = digest.partition().0;
        let merging = {
            let table = self.node.partitions.load();
            table.is_master(ns, partition) && !table.dup_res_sources(ns, partition).is_empty()
        };
        if !merging {
            return Ok(());
        }
        let table = self.node.partitions.load_full();
        crate::cluster::dup_res::resolve(self, &table, ns, &digest).await
    }

    /// This core's version of `digest` in `ns` for a merging master's duplicate resolution
    /// (`Ok(None)`: none, or expired).
    pub async fn dup_res_lookup(
        &self,
        ns: usize,
        digest: &Digest,
    ) -> Result<Option<apogee_engine::Record>, crate::cluster::dup_res::Found> {
        self.stores[ns]
            .get(digest)
            .await
            .map_err(|_| crate::cluster::dup_res::Found::StoreFailed)
    }

    /// Applies a master's image of a record of `ns` whose partition this core owns, if it is
    /// newer by the namespace's conflict-resolution policy.
    pub async fn apply_replica(
        &self,
        ns: usize,
        record: &apogee_engine::Record,
    ) -> replica::ReplicaStatus {
        use apogee_engine::shard::Applied;
        use replica::ReplicaStatus;
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.node.namespaces[ns].replication;
        if self.poisoned[ns].get().is_some() {
            stats.received_refused.fetch_add(1, Relaxed);
            return ReplicaStatus::StoreFailed;
        }
        let policy = self.node.config.namespaces[ns].conflict_resolution_policy;
        let applied = self.stores[ns].apply_if_newer(record, policy).await;
        tracing::trace!(target: "apogee::records", digest = ?record.digest,
            generation = record.meta.generation, applied = ?applied, "image (replica or dup-res)");
        match applied {
            Ok(Applied::Stored) => {
                self.learn_bin_names(ns, record);
                stats.received_stored.fetch_add(1, Relaxed);
                ReplicaStatus::Stored
            }
            Ok(Applied::NotNewer) => {
                stats.received_not_newer.fetch_add(1, Relaxed);
                ReplicaStatus::NotNewer
            }
            Ok(Applied::Expired) => {
                stats.received_not_newer.fetch_add(1, Relaxed);
                ReplicaStatus::Expired
            }
            Err(error) => {
                stats.received_refused.fetch_add(1, Relaxed);
                if let Some(n) = self.node.logs.replica_apply_failed.allow() {
                    tracing::warn!(shard = self.shard, %error, suppressed = n,
                        "cannot store a replica image; the master answers its client 9");
                }
                ReplicaStatus::StoreFailed
            }
        }
    }

    /// Applies one chunk of migrating records, each only if newer than this node's version
    /// by the namespace's conflict-resolution policy.
    pub async fn apply_migrated(
        &self,
        ns: usize,
        records: &[apogee_engine::Record],
    ) -> crate::cluster::migration::stream::ChunkStatus {
        use crate::cluster::migration::stream::ChunkStatus;
        use std::sync::atomic::Ordering::Relaxed;
        if self.poisoned[ns].get().is_some() {
            return ChunkStatus::StoreFailed;
        }
        let policy = self.node.config.namespaces[ns].conflict_resolution_policy;
        for record in records {
            let applied = self.stores[ns].apply_if_newer(record, policy).await;
            tracing::trace!(target: "apogee::records", digest = ?record.digest,
                generation = record.meta.generation, applied = ?applied, "migrated record");
            match applied {
                Ok(apogee_engine::shard::Applied::Stored) => self.learn_bin_names(ns, record),
                Ok(_) => {}
                Err(error) => {
                    if let Some(n) = self.node.logs.replica_apply_failed.allow() {
                        tracing::warn!(shard = self.shard, %error, suppressed = n,
                            "cannot store a migrating record; the partition is sent again");
                    }
                    return ChunkStatus::StoreFailed;
                }
            }
        }
        (self.node.namespaces[ns].migration.record_receives)
            .fetch_add(records.len() as u64, Relaxed);
        ChunkStatus::Applied
    }

    /// Debug builds only: a write to the bin named by `APOGEE_FAULT_PANIC_BIN` panics, so
    /// tests can drive the poisoning path of a real process.
    fn inject_write_panic(&self, msg: &Message) {
        if let Some(bin) = &self.fault_panic_bin {
            if msg.ops.iter().any(|op| op.name == *bin) {
                panic!(
                    "fault injected: a write to bin {}",
                    String::from_utf8_lossy(bin)
                );
            }
        }
    }

    /// Serves requests forwarded by other cores until the executor stops.
    pub fn spawn_inbox(self: &Rc<Self>, inbox: flume::Receiver<ShardWork>) {
        let core = self.clone();
        glommio::spawn_local(async move {
            while let Ok(work) = inbox.recv_async().await {
                let core = core.clone();
                let req = match work {
                    ShardWork::Keyed(req) => req,
                    ShardWork::Batch(batch) => {
                        glommio::spawn_local(crate::batch::run_rows(core, batch)).detach();
                        continue;
                    }
                    ShardWork::SindexSync { ns } => {
                        crate::sindex::sync(&core, ns);
                        continue;
                    }
                    ShardWork::Scan(scan) => {
                        glommio::spawn_local(crate::scan::shard::run(core, scan)).detach();
                        continue;
                    }
                    ShardWork::Emigrate(job) => {
                        glommio::spawn_local(crate::cluster::migration::stream::emigrate(
                            core, job,
                        ))
                        .detach();
                        continue;
                    }
                    ShardWork::Immigrate(work) => {
                        glommio::spawn_local(async move {
                            let status = core.apply_migrated(work.ns, &work.records).await;
                            let _ = work.reply.send(status);
                        })
                        .detach();
                        continue;
                    }
                    ShardWork::DropPartition { ns, partition } => {
                        glommio::spawn_local(async move {
                            // Dropped only while this node still does not hold it: a later
                            // view may have given it back, with records written since.
                            let node = core.node.clone();
                            let wanted = || {
                                !node
                                    .partitions
                                    .load()
                                    .accepts_replica_write(ns, partition.0)
                            };
                            let n = core.stores[ns].drop_partition(partition.0, wanted).await;
                            tracing::debug!(
                                partition = partition.0,
                                records = n,
                                "dropped a partition this node no longer holds"
                            );
                        })
                        .detach();
                        continue;
                    }
                    ShardWork::DupRes(work) => {
                        glommio::spawn_local(async move {
                            let found = core.dup_res_lookup(work.namespace, &work.digest).await;
                            let _ = work.reply.send(found);
                        })
                        .detach();
                        continue;
                    }
                    ShardWork::Replica(work) => {
                        glommio::spawn_local(async move {
                            let status = core.apply_replica(work.namespace, &work.record).await;
                            let _ = work.reply.send(status);
                        })
                        .detach();
                        continue;
                    }
                    ShardWork::FabricPeer { stream, peer } => {
                        crate::cluster::fabric::serve_handed(core, stream, peer);
                        continue;
                    }
                    ShardWork::Client {
                        stream,
                        admitted,
                        serving,
                    } => {
                        let stream = crate::node::take_over(stream);
                        let task = connection::serve(core, stream, admitted, serving);
                        glommio::spawn_local(task).detach();
                        continue;
                    }
                };
                glommio::spawn_local(async move {
                    let reply = crate::dispatch::guarded(core.execute(
                        req.namespace,
                        &req.msg,
                        req.may_proxy,
                    ))
                    .await;
                    let reply = match req.direct {
                        None => reply,
                        Some(direct) => {
                            if direct.write(reply).await.is_err() {
                                // No note: the receiving core ends the connection.
                                return;
                            }
                            let latency = &core.node.namespaces[req.namespace].latency;
                            latency[core.shard][direct.kind as usize]
                                .record(direct.started.elapsed());
                            Vec::new()
                        }
                    };
                    // The requester may have gone (connection closed); nothing to do then.
                    let _ = req.reply.send(reply);
                })
                .detach();
            }
        })
        .detach();
    }

    /// Admits the names of bins a write may create to the node's registry before the write
    /// runs, so every stored name is listed; BIN_NAME (21) when the namespace's quota is full.
    /// Each core asks once per name: `seen_bins` holds at most the quota per namespace.
    fn admit_bin_names(&self, ns: usize, msg: &Message) -> Result<(), ResultCode> {
        let h = &msg.header;
        if h.info2 & info2::WRITE == 0 || h.info2 & info2::DELETE != 0 {
            return Ok(());
        }
        let mut seen = self.seen_bins.borrow_mut();
        let fresh: Vec<&[u8]> = msg
            .ops
            .iter()
            .filter(|op| crate::bin_names::may_create(op) && !seen[ns].contains(&op.name))
            .map(|op| op.name.as_slice())
            .collect();
        // A request the command refuses anyway (a name too long...) must take no place.
        if fresh.is_empty() || command::validate(msg).is_err() {
            return Ok(());
        }
        let namespace = &self.node.config.namespaces[ns].name;
        if let Err(e) = self.node.bin_names.admit(ns, &fresh, namespace) {
            if let Some(n) = self.node.logs.bin_name_quota.allow() {
                tracing::warn!(error = %e, writes = n, "write refused: bin-name quota reached");
            }
            return Err(ResultCode::BinName);
        }
        seen[ns].extend(fresh.into_iter().map(<[u8]>::to_vec));
        Ok(())
    }

    /// Lists the bins of a record stored as a replica in the node's registry (`bins`): the
    /// master admitted them under the same quota, so a replica never refuses; a registry
    /// that is full here (another node's history) only logs.
    fn learn_bin_names(&self, ns: usize, record: &apogee_engine::Record) {
        let mut seen = self.seen_bins.borrow_mut();
        let fresh: Vec<&[u8]> = (record.bins.iter())
            .map(|b| b.name.as_slice())
            .filter(|name| !seen[ns].contains(*name))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let namespace = &self.node.config.namespaces[ns].name;
        match self.node.bin_names.admit(ns, &fresh, namespace) {
            Ok(()) => seen[ns].extend(fresh.into_iter().map(<[u8]>::to_vec)),
            Err(e) => {
                if let Some(n) = self.node.logs.bin_name_quota.allow() {
                    tracing::warn!(error = %e, writes = n, "a replicated record's bin names are not listed: bin-name quota reached");
                }
            }
        }
    }

    /// Closes this core's latency windows every `WINDOW_SECS`, for `latencies:`.
    pub fn spawn_latency_ticker(self: &Rc<Self>) {
        let node = self.node.clone();
        let shard = self.shard;
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(std::time::Duration::from_secs(latency::WINDOW_SECS)).await;
                node.batch_latency[shard].close_window();
                for ns in &node.namespaces {
                    ns.latency[shard]
                        .iter()
                        .for_each(latency::Histogram::close_window);
                }
            }
        })
        .detach();
    }

    /// Publishes the record count of each partition this core owns, for `partition-info`,
    /// every `PARTITION_OBJECTS_REFRESH_MS` (one look per partition: the index keeps counts).
    pub fn spawn_partition_counter(self: &Rc<Self>) {
        let core = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(std::time::Duration::from_millis(
                    PARTITION_OBJECTS_REFRESH_MS,
                ))
                .await;
                let Some(core) = core.upgrade() else { return };
                let table = core.node.partitions.load();
                for p in 0..apogee_wire::digest::PARTITION_COUNT {
                    if table.shard_of(p) != core.shard {
                        continue;
                    }
                    for (ns, store) in core.stores.iter().enumerate() {
                        let n = store.partition_object_count(p);
                        core.node.namespaces[ns].partition_objects[usize::from(p)]
                            .store(n.try_into().unwrap_or(u32::MAX), Ordering::Relaxed);
                    }
                }
            }
        })
        .detach();
    }

    /// Accepts connections until `stop` fires, then flushes every store. A connection over
    /// `proto-fd-max` is accepted and closed at once, so the listen queue never fills with
    /// clients waiting for a slot; a failing accept (out of file descriptors) backs off.
    pub async fn serve(self: Rc<Self>, listener: TcpListener, stop: flume::Receiver<()>) {
        let max = self.node.config.proto_fd_max;
        // Debug builds only: `APOGEE_FAULT_ACCEPT_CORE=k` leaves accepting to core k alone, so
        // tests can see connections handed to the other cores (`steering`).
        let only = cfg!(debug_assertions)
            .then(|| std::env::var("APOGEE_FAULT_ACCEPT_CORE").ok())
            .flatten()
            .and_then(|k| k.parse::<usize>().ok());
        if only.is_some_and(|k| k != self.shard) {
            drop(listener);
            let _ = stop.recv_async().await;
            self.flush_and_stop().await;
            return;
        }
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                let _ = stop.recv_async().await;
                None
            })
            .await;
            match accepted {
                None => break,
                Some(Ok(stream)) => match self.node.connections.admit(max) {
                    Some(admitted) => self.place(stream, admitted),
                    None => {
                        drop(stream);
                        if let Some(n) = self.logs.over_proto_fd_max.allow() {
                            tracing::warn!(
                                proto_fd_max = max,
                                refused = n,
                                "refusing client connections: proto-fd-max connections are open"
                            );
                        }
                    }
                },
                Some(Err(e)) => {
                    if let Some(n) = self.logs.accept_failed.allow() {
                        tracing::warn!(error = %e, failures = n, "accept failed");
                    }
                    glommio::timer::sleep(ACCEPT_RETRY_BACKOFF).await;
                }
            }
        }
        self.flush_and_stop().await;
    }

    /// Serves a client connection this core accepted, or hands it to the core pinned to the
    /// CPU its packets arrive on (`steering`); a hand-off that cannot be queued is served here.
    fn place(self: &Rc<Self>, stream: TcpStream, admitted: OpenConnection) {
        let steering = &self.node.steering;
        let target = steering.choose(
            self.shard,
            crate::steering::incoming_cpu(stream.as_raw_fd()),
        );
        let serve_here = |stream, admitted| {
            let serving = steering.serving(self.shard);
            let task = connection::serve(self.clone(), stream, admitted, serving);
            glommio::spawn_local(task).detach();
        };
        if target == self.shard {
            return serve_here(stream, admitted);
        }
        let Ok(fd) = crate::node::hand_over(&stream) else {
            return serve_here(stream, admitted);
        };
        // Counted on the target from now on, so a burst of connections sees the ones still
        // waiting in its inbox.
        let serving = steering.serving(target);
        match self.node.inboxes[target].try_send(ShardWork::Client {
            stream: fd,
            admitted,
            serving,
        }) {
            Ok(()) => {
                steering.count_handed();
                drop(stream)
            }
            Err(e) => {
                let (flume::TrySendError::Full(work) | flume::TrySendError::Disconnected(work)) = e;
                let ShardWork::Client { admitted, .. } = work else {
                    unreachable!("the work sent is a client connection")
                };
                serve_here(stream, admitted);
            }
        }
    }

    /// Flushes every store's write buffers before the core exits.
    pub async fn flush_and_stop(&self) {
        for store in &self.stores {
            if let Err(e) = store.flush_all().await {
                tracing::error!(shard = self.shard, error = %e, "final flush failed");
            }
        }
        tracing::info!(shard = self.shard, "core stopped");
    }
}
