//! One core of the node: its shard stores (one per namespace), its listener, its inbox of
//! requests forwarded by other cores, and the routing of each keyed command to the core that
//! owns the record's partition.
//!
//! Everything here lives on one glommio executor. It must never block the executor and never
//! touch another core's store except by sending it a `ShardRequest`.

use std::rc::Rc;
use std::sync::Arc;

use apogee_engine::shard::{ShardStore, StoreConfig};
use apogee_engine::stats::ShardStats;
use apogee_wire::msg::{info1, info2, Message};
use apogee_wire::{FieldType, ResultCode};
use futures_lite::future;
use glommio::net::TcpListener;

use crate::command::{self, reply::stream_error_frame, Reply};
use crate::config::NamespaceConfig;
use crate::connection;
use crate::latency;
use crate::node::{Node, ShardRequest};

/// Field 41 carries a batch.
const FIELD_BATCH_INDEX: FieldType = FieldType(41);

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
        cache_bytes: ns.read_cache_size / config.cores,
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
    /// `seen_bins[namespace]`: bin names this core has already handed to the registry.
    seen_bins: std::cell::RefCell<Vec<std::collections::HashSet<Vec<u8>>>>,
}

impl Core {
    /// Opens this core's shard of every namespace, recovering each from disk.
    pub async fn open(shard: usize, node: Arc<Node>) -> Result<Core, String> {
        let mut stores = Vec::new();
        for (i, ns) in node.config.namespaces.iter().enumerate() {
            let cfg = store_config(&node.config, ns, shard);
            let stats: Arc<ShardStats> = node.stats[i][shard].clone();
            let (store, report) = ShardStore::open(cfg, stats)
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
            node.tunings
                .lock()
                .expect("a core panicked while registering its settings")[i]
                .push(store.tuning());
            node.set_stats
                .lock()
                .expect("a core panicked while registering its set counts")[i]
                .push(store.set_stats());
            store.spawn_background_flusher();
            store.spawn_defragmenter();
            store.spawn_expirer();
            stores.push(store);
        }
        Ok(Core {
            shard,
            seen_bins: std::cell::RefCell::new(vec![
                Default::default();
                node.config.namespaces.len()
            ]),
            node,
            stores,
        })
    }

    /// Handles one AS_MSG request and returns the reply frame.
    pub async fn handle(&self, msg: Message) -> Vec<u8> {
        if msg.header.info1 & info1::BATCH != 0 || msg.field(FIELD_BATCH_INDEX).is_some() {
            return stream_error_frame(ResultCode::UnsupportedFeature);
        }
        if msg.field(FieldType::DIGEST).is_none() {
            // Scan or query: not in this server yet.
            return stream_error_frame(ResultCode::UnsupportedFeature);
        }
        let Some(ns) = msg
            .field(FieldType::NAMESPACE)
            .and_then(|n| self.node.config.namespace_index(n))
        else {
            return Reply::code(ResultCode::Namespace).into_frame();
        };
        let kind = if msg.header.info2 & info2::WRITE != 0 {
            latency::Kind::Write
        } else {
            latency::Kind::Read
        };
        let started = std::time::Instant::now();
        let reply = self.route(ns, msg).await;
        self.node.latency[ns][self.shard][kind as usize].record(started.elapsed());
        reply
    }

    /// Runs the command here when this core owns its record, else on the owning core.
    async fn route(&self, ns: usize, msg: Message) -> Vec<u8> {
        let digest = match command::digest_of(&msg) {
            Ok(d) => d,
            Err(rc) => return Reply::code(rc).into_frame(),
        };
        let owner = self.node.shard_of(digest.partition().0);
        if owner == self.shard {
            return self.execute(ns, &msg).await;
        }
        let (tx, rx) = flume::bounded(1);
        let request = ShardRequest {
            namespace: ns,
            msg,
            reply: tx,
        };
        if self.node.inboxes[owner].send_async(request).await.is_err() {
            return Reply::code(ResultCode::ServerError).into_frame();
        }
        rx.recv_async()
            .await
            .unwrap_or_else(|_| Reply::code(ResultCode::ServerError).into_frame())
    }

    /// Runs a command whose record this core owns.
    pub async fn execute(&self, ns: usize, msg: &Message) -> Vec<u8> {
        let reply = command::execute(&self.stores[ns], self.node.live[ns].limits(), msg).await;
        if reply.result == 0 && msg.header.info2 & info2::WRITE != 0 {
            self.note_bin_names(ns, msg);
        }
        reply.into_frame()
    }

    /// Serves requests forwarded by other cores until the executor stops.
    pub fn spawn_inbox(self: &Rc<Self>, inbox: flume::Receiver<ShardRequest>) {
        let core = self.clone();
        glommio::spawn_local(async move {
            while let Ok(req) = inbox.recv_async().await {
                let core = core.clone();
                glommio::spawn_local(async move {
                    let reply =
                        crate::connection::guarded(core.execute(req.namespace, &req.msg)).await;
                    // The requester may have gone (connection closed); nothing to do then.
                    let _ = req.reply.send(reply);
                })
                .detach();
            }
        })
        .detach();
    }

    /// Hands the names of bins a successful write may have created to the node's registry,
    /// once per name per core.
    fn note_bin_names(&self, ns: usize, msg: &Message) {
        use apogee_wire::msg::{particle, OpType};
        let mut seen = self.seen_bins.borrow_mut();
        for op in &msg.ops {
            let creates = match op.op_type {
                OpType::WRITE => op.particle_type != particle::NULL,
                t => matches!(
                    t,
                    OpType::INCR
                        | OpType::APPEND
                        | OpType::PREPEND
                        | OpType::CDT_MODIFY
                        | OpType::BIT_MODIFY
                        | OpType::HLL_MODIFY
                        | OpType::EXP_MODIFY
                ),
            };
            if creates
                && !op.name.is_empty()
                && !seen[ns].contains(&op.name)
                && self.node.bin_names.offer(ns, &op.name)
            {
                seen[ns].insert(op.name.clone());
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
                for per_ns in &node.latency {
                    per_ns[shard]
                        .iter()
                        .for_each(latency::Histogram::close_window);
                }
            }
        })
        .detach();
    }

    /// Accepts connections until `stop` fires, then flushes every store.
    pub async fn serve(self: Rc<Self>, listener: TcpListener, stop: flume::Receiver<()>) {
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                let _ = stop.recv_async().await;
                None
            })
            .await;
            match accepted {
                None => break,
                Some(Ok(stream)) => {
                    let core = self.clone();
                    glommio::spawn_local(connection::serve(core, stream)).detach();
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        for store in &self.stores {
            if let Err(e) = store.flush_all().await {
                tracing::error!(shard = self.shard, error = %e, "final flush failed");
            }
        }
        tracing::info!(shard = self.shard, "core stopped");
    }
}
