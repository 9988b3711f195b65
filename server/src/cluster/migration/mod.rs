//! Migration, wired: core 0's task that runs one `apogee_cluster::Migrator` per namespace
//! (the pure state machine of docs/migration.md) and does what it decides — carries its
//! messages to peers over the fabric, asks the shard owning a partition to stream it
//! (`stream`) or drop it, and publishes a new `PartitionTable` whenever who serves, who gets
//! each write or what this node claims has changed.
//!
//! Owns the order of effects: a table that stops this node serving a partition is published
//! before any message that lets another node start serving it leaves (so two nodes never
//! serve one partition at once: messages are held until the table they go with is out, and
//! the table is rebuilt at most every `PUBLISH_INTERVAL_MS`); each peer's messages leave in the order the state machine
//! made them (one sender task per peer, retrying a failed batch while its view lasts). Its
//! inputs arrive on one bounded channel (`Node::migration_tx`): committed views and orphaning
//! from the membership task, peers' batches from any core's fabric connections, and the end
//! of each emigration from the shard that ran it. It must never block a core, never apply a
//! peer's message of another view, and never be on a request's path.

pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apogee_cluster::migrate::wire::{self, Batch, BATCH_MESSAGES_MAX};
use apogee_cluster::migrate::{Action, Copy, Message, Output};
use apogee_cluster::view::ClusterKey;
use apogee_cluster::{Migrator, NodeId, PartitionMap, Succession};
use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

use crate::node::{Node, ShardWork};
use crate::partition::PartitionTable;

/// Events the migration task's channel holds at most; a fabric connection delivering a
/// batch waits while it is full.
pub const MIGRATION_EVENTS_MAX: usize = 4096;
/// Least time between two publications of the table. A rebuild allocates nothing per
/// partition (about 2 ms in a debug build for two namespaces of a 3-node map, far less in a
/// release build), so a step's messages wait at most this long for the table they go with
/// and the heartbeat on this core keeps most of it.
const PUBLISH_INTERVAL_MS: u64 = 5;
/// Events handled between two yields to the other tasks of core 0.
const EVENTS_PER_YIELD: usize = 16;
/// How often deferred emigrations are asked again.
const TICK_MS: u64 = 250;
/// Most peers' batches kept for a view this node has not begun yet: a member that committed
/// the view first sends its versions at once, and a node that dropped them would wait for
/// them for as long as the view lasts (a split's heal left a master not serving for 45 s).
/// Replayed when that view begins here; dropped when another does.
const EARLY_BATCHES_MAX: usize = 64;
/// A batch a peer did not take is sent again after this, doubling up to
/// `RETRY_BACKOFF_MS_MAX`, for as long as its view is this node's.
const RETRY_BACKOFF_MS_MIN: u64 = 50;
const RETRY_BACKOFF_MS_MAX: u64 = 1_000;

/// What the migration task is told.
pub enum Event {
    /// A view committed with this node in it.
    View {
        key: ClusterKey,
        succession: Succession,
    },
    /// This node is in no cluster (past the orphan timeout): it serves nothing.
    Orphaned,
    /// A peer's batch of migration messages.
    Peer { from: NodeId, batch: Batch },
    /// An emigration ended (`ok`: every record reached the destination and was applied).
    EmigrationEnded {
        ns: usize,
        key: ClusterKey,
        partition: PartitionId,
        to: NodeId,
        ok: bool,
    },
}

/// Hands a peer's batch to the migration task (waits while its channel is full).
pub async fn deliver(node: &Node, from: NodeId, batch: Batch) {
    let _ = node
        .migration_tx
        .send_async(Event::Peer { from, batch })
        .await;
}

/// Which partitions each namespace's shards found records of at start, filled in by every
/// core as its stores open; the migration task reads it once, at the first view.
pub struct FoundAtStart {
    /// `found[ns][p]`: some shard found a record of partition `p`.
    found: std::sync::Mutex<Vec<Vec<bool>>>,
    shards_reported: std::sync::atomic::AtomicUsize,
}

impl FoundAtStart {
    pub fn new(namespaces: usize) -> FoundAtStart {
        FoundAtStart {
            found: std::sync::Mutex::new(vec![vec![false; PARTITION_COUNT as usize]; namespaces]),
            shards_reported: Default::default(),
        }
    }

    /// One shard's per-namespace record counts per partition.
    pub fn report(&self, counts: &[Vec<u64>]) {
        let mut found = self.found.lock().expect("no panic while holding it");
        for (ns, c) in counts.iter().enumerate() {
            for (p, &n) in c.iter().enumerate() {
                found[ns][p] |= n > 0;
            }
        }
        self.shards_reported
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn complete(&self, shards: usize) -> bool {
        self.shards_reported
            .load(std::sync::atomic::Ordering::Acquire)
            >= shards
    }

    /// What a restarted node has: a subset wherever it found a record (a copy that may have
    /// missed writes while it was down is never trusted as full).
    fn copies(&self, ns: usize) -> Vec<Copy> {
        let found = self.found.lock().expect("no panic while holding it");
        (found[ns].iter())
            .map(|&f| if f { Copy::Subset } else { Copy::Absent })
            .collect()
    }
}

/// Core 0's migration state.
struct Migrations {
    node: Arc<Node>,
    shards: u32,
    /// One per namespace, created at the first view.
    migrators: Vec<Migrator>,
    /// Each namespace's holders in the current view's map, as its tables share them.
    rows: Vec<Arc<Vec<Vec<NodeId>>>>,
    key: Option<ClusterKey>,
    /// The members of view `key`.
    members: Arc<[NodeId]>,
    /// Peers' batches of a view other than `key` (at most `EARLY_BATCHES_MAX`).
    early: Vec<(NodeId, Batch)>,
    /// A view's table is out of date.
    dirty: bool,
    /// Each peer's ordered queue of messages (its sender task drains it).
    senders: HashMap<NodeId, flume::Sender<(ClusterKey, usize, Message)>>,
    /// Messages made since the last publication, held until the table that goes with them
    /// is published (a message may let a peer serve what this node must stop serving).
    held: Vec<(NodeId, ClusterKey, usize, Message)>,
    /// Drops decided since the last publication: a shard drops only what the published
    /// table says this node no longer accepts, so they wait for it too.
    held_drops: Vec<(usize, PartitionId)>,
    /// When the table was last published: rebuilding it costs milliseconds (4096 partitions
    /// per namespace), so it is published at most every `PUBLISH_INTERVAL_MS`.
    published_at: std::time::Instant,
}

impl Migrations {
    fn handle(&mut self, event: Event) {
        match event {
            Event::View { key, succession } => self.begin_view(key, succession),
            Event::Orphaned => {
                self.key = None;
                self.dirty = false;
                let generation = self.node.partitions.load().generation().max(0) + 1;
                self.node
                    .partitions
                    .store(Arc::new(PartitionTable::unavailable(
                        self.node.id,
                        self.shards,
                        self.node.config.namespaces.len(),
                        generation,
                    )));
            }
            Event::Peer { from, batch } => {
                if self.key != Some(batch.cluster_key) {
                    // Of a view this node may be about to begin (or of one it left).
                    if self.early.len() < EARLY_BATCHES_MAX {
                        self.early.push((from, batch));
                    } else if let Some(n) = self.node.logs.migrate_refused.allow() {
                        tracing::warn!(from = %format!("{:X}", from.0), suppressed = n,
                            "too many migration batches of views this node is not in; dropped");
                    }
                    return;
                }
                for (name, message) in batch.messages {
                    let Some(ns) = self.node.config.namespace_index(name.as_bytes()) else {
                        if let Some(n) = self.node.logs.migrate_refused.allow() {
                            tracing::warn!(from = %format!("{:X}", from.0), namespace = %name,
                                suppressed = n, "migration message for a namespace this node \
                                does not have; configure the same namespaces on every node");
                        }
                        continue;
                    };
                    let Some(m) = self.migrators.get_mut(ns) else {
                        continue;
                    };
                    let changes_table =
                        !matches!(message, Message::Start { .. } | Message::StartReply { .. });
                    if !matches!(message, Message::Versions { .. }) {
                        tracing::trace!(from = %format!("{:X}", from.0), ?message,
                            key = %batch.cluster_key, "migration message");
                    } else {
                        tracing::trace!(from = %format!("{:X}", from.0),
                            key = %batch.cluster_key, "migration versions");
                    }
                    let mut out = Output::default();
                    match m.on_message(from, batch.cluster_key, message, &mut out) {
                        Ok(()) => self.dirty |= changes_table,
                        // Stale views and late messages are the protocol working.
                        Err(error) => tracing::debug!(from = %format!("{:X}", from.0), %error,
                            "migration message ignored"),
                    }
                    self.act(ns, out);
                }
            }
            Event::EmigrationEnded {
                ns,
                key,
                partition,
                to,
                ok,
            } => {
                tracing::trace!(partition = partition.0, to = %format!("{:X}", to.0), ok,
                    "emigration ended");
                let mut out = Output::default();
                let m = &mut self.migrators[ns];
                let result = if ok {
                    m.emigration_finished(key, partition, to, &mut out)
                } else {
                    m.emigration_failed(key, partition, to, &mut out)
                };
                match result {
                    Ok(()) => self.dirty = true,
                    Err(error) => tracing::debug!(%error, "emigration report ignored"),
                }
                self.act(ns, out);
            }
        }
    }

    fn begin_view(&mut self, key: ClusterKey, succession: Succession) {
        if self.migrators.is_empty() {
            let config = self.node.config.cluster.migrate;
            for ns in 0..self.node.config.namespaces.len() {
                let copies = self.node.found_at_start.copies(ns);
                let m = Migrator::with_copies(self.node.id, config, copies)
                    .expect("the pacing was validated at config load");
                self.migrators.push(m);
            }
        }
        self.rows.clear();
        for (ns, rf) in self
            .node
            .config
            .replication_factors()
            .into_iter()
            .enumerate()
        {
            let map = match PartitionMap::balance(&succession, rf) {
                Ok(map) => map,
                Err(error) => {
                    // The view module commits only valid successions; a failure is a bug, and
                    // serving nothing is the safe side.
                    tracing::error!(%error, "cannot balance the committed view");
                    self.key = None;
                    return;
                }
            };
            self.hint_light(ns);
            let mut out = Output::default();
            if let Err(error) =
                self.migrators[ns].begin_view(key, succession.clone(), map.clone(), &mut out)
            {
                tracing::error!(%error, "migration refused the committed view");
            }
            self.rows.push(crate::partition::rows_of(&map));
            self.act(ns, out);
        }
        self.key = Some(key);
        self.members = succession.nodes().into();
        self.dirty = true;
        for (from, batch) in std::mem::take(&mut self.early) {
            if batch.cluster_key == key {
                self.handle(Event::Peer { from, batch });
            }
        }
        self.senders.retain(|peer, _| succession.contains(*peer));
    }

    /// Tells `ns`'s migrator which partitions have no record here now (as the cores last
    /// published their counts): their emigrations are light, so a cluster forming over empty
    /// partitions hands them over at once instead of one by one. Pacing only: a stream
    /// sends whatever its partition holds when it runs.
    fn hint_light(&mut self, ns: usize) {
        let counts = &self.node.namespaces[ns].partition_objects;
        let m = &mut self.migrators[ns];
        for (p, n) in counts.iter().enumerate() {
            let empty = n.load(std::sync::atomic::Ordering::Relaxed) == 0;
            m.set_light(PartitionId(p as u16), empty);
        }
    }

    fn tick(&mut self) {
        if self.key.is_none() {
            return;
        }
        for ns in 0..self.migrators.len() {
            self.hint_light(ns);
            let mut out = Output::default();
            self.migrators[ns].on_tick(&mut out);
            self.act(ns, out);
        }
    }

    /// Holds `out`'s messages until the next publication and starts its actions.
    fn act(&mut self, ns: usize, out: Output) {
        for a in &out.actions {
            tracing::trace!(action = ?a, "migration action");
        }
        for m in &out.messages {
            if !matches!(m.message, Message::Versions { .. }) {
                tracing::trace!(to = %format!("{:X}", m.to.0), message = ?m.message,
                    "migration message out");
            }
        }
        for m in out.messages {
            self.held.push((m.to, m.cluster_key, ns, m.message));
        }
        for action in out.actions {
            match action {
                Action::Emigrate {
                    cluster_key,
                    partition,
                    to,
                } => {
                    let job = stream::Emigration {
                        ns,
                        key: cluster_key,
                        partition,
                        to,
                    };
                    self.to_shard(partition, ShardWork::Emigrate(job));
                }
                Action::Drop { partition } => {
                    self.held_drops.push((ns, partition));
                    self.dirty = true;
                }
                Action::ClaimsChanged => self.dirty = true,
            }
        }
    }

    fn to_shard(&self, partition: PartitionId, work: ShardWork) {
        let shard = apogee_engine::placement::home_shard(partition.0, self.shards) as usize;
        let inbox = self.node.inboxes[shard].clone();
        glommio::spawn_local(async move {
            let _ = inbox.send_async(work).await;
        })
        .detach();
    }

    /// Publishes the table of the current view's migrations if it changed and
    /// `PUBLISH_INTERVAL_MS` has passed since the last one, then hands the held messages to
    /// their peers' senders; returns how long to wait before trying again when it could not.
    fn publish_and_release(&mut self) -> Option<Duration> {
        if self.dirty && self.key.is_some() {
            let since = self.published_at.elapsed();
            let interval = Duration::from_millis(PUBLISH_INTERVAL_MS);
            if since < interval {
                return Some(interval - since);
            }
            self.publish();
        }
        for (ns, partition) in std::mem::take(&mut self.held_drops) {
            self.to_shard(partition, ShardWork::DropPartition { ns, partition });
        }
        for (to, key, ns, message) in std::mem::take(&mut self.held) {
            let sender = self.senders.entry(to).or_insert_with(|| {
                let (tx, rx) = flume::unbounded();
                glommio::spawn_local(send_to_peer(self.node.clone(), to, rx)).detach();
                tx
            });
            let _ = sender.send((key, ns, message));
        }
        None
    }

    /// Publishes the table of the current view's migrations.
    fn publish(&mut self) {
        let Some(key) = self.key.filter(|_| self.dirty) else {
            return;
        };
        self.dirty = false;
        self.published_at = std::time::Instant::now();
        let generation = self.node.partitions.load().generation().max(0) + 1;
        let namespaces: Vec<(&Arc<Vec<Vec<NodeId>>>, &Migrator)> =
            self.rows.iter().zip(&self.migrators).collect();
        let table = PartitionTable::migrating(
            self.node.id,
            self.shards,
            key,
            self.members.clone(),
            &namespaces,
            generation,
        );
        self.node.partitions.store(Arc::new(table));
    }
}

/// Drains one peer's queue in order: consecutive messages of one view go in one batch, sent
/// until the peer takes it or the view is no longer this node's.
async fn send_to_peer(
    node: Arc<Node>,
    peer: NodeId,
    rx: flume::Receiver<(ClusterKey, usize, Message)>,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv_async().await {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let key = first.0;
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES_MAX {
            match rx.try_recv() {
                Ok(m) if m.0 == key => batch.push(m),
                Ok(m) => {
                    next = Some(m);
                    break;
                }
                Err(_) => break,
            }
        }
        let pairs: Vec<(&str, &Message)> = (batch.iter())
            .map(|(_, ns, m)| (node.config.namespaces[*ns].name.as_str(), m))
            .collect();
        let body = wire::encode_batch(key, &pairs);
        let mut backoff = RETRY_BACKOFF_MS_MIN;
        loop {
            if node.partitions.load().migration_key() != Some(key) {
                break;
            }
            match crate::cluster::fabric::migrate_batch(&node, peer, &body).await {
                Ok(()) => break,
                Err(error) => {
                    if let Some(n) = node.logs.migrate_failed.allow() {
                        tracing::warn!(peer = %format!("{:X}", peer.0), %error, suppressed = n,
                            "migration messages not delivered; retrying while the view lasts");
                    }
                    glommio::timer::sleep(Duration::from_millis(backoff)).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MS_MAX);
                }
            }
        }
    }
}

/// Starts the migration task on core 0. Views wait until every shard reported what it found
/// at start.
pub fn spawn(node: Arc<Node>, rx: flume::Receiver<Event>) {
    let shards = u32::try_from(node.config.cores).expect("core count fits u32");
    let mut state = Migrations {
        node: node.clone(),
        shards,
        migrators: Vec::new(),
        rows: Vec::new(),
        key: None,
        members: Arc::new([]),
        early: Vec::new(),
        dirty: false,
        senders: HashMap::new(),
        held: Vec::new(),
        held_drops: Vec::new(),
        published_at: std::time::Instant::now(),
    };
    glommio::spawn_local(async move {
        while !node.found_at_start.complete(node.config.cores) {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let tick = Duration::from_millis(TICK_MS);
        let mut last_tick = std::time::Instant::now();
        let mut wait = tick;
        loop {
            let first = glommio::timer::timeout(wait, async { Ok(rx.recv_async().await) }).await;
            match first {
                Ok(Ok(event)) => state.handle(event),
                Ok(Err(_)) => return,
                Err(_) => {}
            }
            // What is already queued is handled, yielding between groups: the heartbeat
            // shares this core, and a migration's bursts of messages must not starve it (a
            // late heartbeat makes peers suspect this node). Their messages wait for the
            // next publication.
            for handled in 1..=MIGRATION_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(event) => state.handle(event),
                    Err(_) => break,
                }
                if handled % EVENTS_PER_YIELD == 0 {
                    futures_lite::future::yield_now().await;
                }
            }
            if last_tick.elapsed() >= tick {
                last_tick = std::time::Instant::now();
                state.tick();
            }
            wait = state.publish_and_release().unwrap_or(tick).min(tick);
        }
    })
    .detach();
}
