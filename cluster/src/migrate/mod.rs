//! Migration of one namespace's partitions after a view change, for one node, as a pure state
//! machine (design.md §5, "During a change" and "Replication and migration").
//!
//! Owns, per partition: which copies the members reported (the version exchange), which node
//! is the **working master** (serves the partition: a node with a complete copy, until the
//! eventual master has received one), which replica columns this node claims, which
//! emigrations this node must run and in what order, the pacing limits
//! (`migrate-max-num-incoming`, `migrate-threads`), retries after a failure or a busy
//! destination, when a node drops a copy it no longer holds, the `migrate_*_remaining`
//! counts and whether this node has nothing left to migrate (`cluster-stable`).
//!
//! It must never move a record, open a socket, touch a disk or read a clock: the server
//! streams the records of each [`Action::Emigrate`], reports how it ended
//! ([`Migrator::emigration_finished`] / [`Migrator::emigration_failed`]), sends the
//! [`Message`]s to the nodes named, and calls [`Migrator::on_tick`] now and then so that
//! deferred emigrations are tried again. A new view ([`Migrator::begin_view`]) aborts
//! everything in flight: nothing received in an aborted view is ever trusted as complete.
//!
//! The rules, per partition, with `row` the new partition map's row and `holders` its first
//! replication-factor nodes (master first):
//! 1. Every member reports, for every partition, whether its copy is [`Copy::Full`] (it had
//!    every acknowledged write: it was a full holder through the last view, or its
//!    immigration finished), [`Copy::Subset`] (some records, maybe not all: an aborted or
//!    unfinished immigration) or [`Copy::Absent`].
//! 2. The working master is the eventual master if its copy is full; else the node with a
//!    full copy that served the partition when the last view ended (so clients keep their
//!    route, as CE's old masters keep column 0 when a node joins), else the first node of
//!    the row with a full copy; else (every full copy lost) the eventual master, which
//!    merges every subset left and meanwhile resolves each transaction's record against the
//!    sources not merged yet ([`Migrator::for_each_dup_res_source`]). A full copy of a member
//!    that missed a view the others went through, or full copies from diverged previous
//!    views (a split), count as subsets. A partition nobody has any record of (a new
//!    cluster) starts settled: every holder is full (and empty).
//! 3. Phase one: when the working master is not the eventual master, it emigrates to it;
//!    when no full copy is left, every subset holder emigrates to the eventual master. When
//!    the eventual master has received all of them it is the working master (it tells every
//!    member, [`Message::MasterReady`]).
//! 4. Phase two: the (now complete) eventual master emigrates to every eventual replica whose
//!    copy is not full. When all have received it, the partition is settled
//!    ([`Message::Settled`]): every node that is not a holder drops its copy.
//! 5. Replication during the change ([`Migrator::replication_targets`]): the working master
//!    sends each write to every eventual holder and to every node that had a full copy when
//!    the view began, until that node says it dropped it ([`Message::Dropped`]). So every
//!    full copy stays full until it is dropped, and fewer than replication-factor deaths
//!    never lose an acknowledged write.
//! 6. Claims ([`Migrator::claims`]): the working master claims column 0; an eventual replica
//!    claims its column once its copy is full; a new master claims nothing until complete.
//!
//! Simplified against Aerospike CE 8.1.2.0 (see docs/migration.md): versions are the three
//! states above, not CE's (cluster key, family, flags) tuples, so copies that diverged on
//! both sides of a network split are not told apart (the eventual master takes one full
//! copy, not one per family); while an eventual replica is still receiving, nobody claims
//! its column (CE keeps an acting replica claiming it); and replication during a change also
//! goes to nodes that still keep a full copy they will drop (CE sends to the new replicas).

mod queue;
#[cfg(test)]
mod tests;
pub mod wire;

use queue::{Class, EmigrationQueue, State as EmigrationState};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

use crate::balance::{NodeId, PartitionMap, Succession, PARTITION_BITMAP_BYTES};
use crate::view::ClusterKey;

/// Aerospike's `migrate-max-num-incoming` default: partitions one node receives at once.
pub const INCOMING_PARTITIONS_MAX_DEFAULT: usize = 4;
/// Aerospike's `migrate-threads` default; each thread streams one partition at a time.
pub const MIGRATE_THREADS_DEFAULT: usize = 1;
/// The most `migrate-threads` Aerospike accepts.
pub const MIGRATE_THREADS_MAX: usize = 100;
/// The most `migrate-max-num-incoming` Aerospike accepts.
pub const INCOMING_PARTITIONS_MAX_LIMIT: usize = 256;

/// Merges whose every transaction costs duplicate-resolution round trips until they end (see
/// `pump`), streamed at once per node beside `migrate-threads`.
pub const URGENT_EMIGRATIONS_MAX: usize = 8;

/// Views each node remembers having begun, for telling a copy that missed views apart.
pub const VIEW_HISTORY_MAX: usize = 32;

/// Messages of the current view that arrive before this node has every member's versions
/// (a peer planned first) are kept and handled after the plan. A view sends at most a few
/// messages per partition and member, so this bound is only reached by a misbehaving peer.
pub const EARLY_MESSAGES_MAX: usize = PARTITION_COUNT as usize * 8;

/// Pacing, as Aerospike's `service` context configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrateConfig {
    /// `migrate-max-num-incoming`: immigrations this node accepts at once (more are told
    /// [`Message::StartReply`] `accepted: false` and retried by their emigrant).
    pub incoming_partitions_max: usize,
    /// `migrate-threads`: emigrations this node runs at once.
    pub outgoing_partitions_max: usize,
}

impl Default for MigrateConfig {
    fn default() -> MigrateConfig {
        MigrateConfig {
            incoming_partitions_max: INCOMING_PARTITIONS_MAX_DEFAULT,
            outgoing_partitions_max: MIGRATE_THREADS_DEFAULT,
        }
    }
}

impl MigrateConfig {
    pub fn validate(self) -> Result<MigrateConfig, MigrateError> {
        if self.outgoing_partitions_max == 0 || self.outgoing_partitions_max > MIGRATE_THREADS_MAX {
            return Err(MigrateError::BadThreads(self.outgoing_partitions_max));
        }
        if self.incoming_partitions_max == 0
            || self.incoming_partitions_max > INCOMING_PARTITIONS_MAX_LIMIT
        {
            return Err(MigrateError::BadIncoming(self.incoming_partitions_max));
        }
        Ok(self)
    }
}

/// What a node holds of one partition, as it reports it in the version exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Copy {
    /// No record of the partition.
    Absent,
    /// Some records, maybe not every acknowledged write: never trusted to serve.
    Subset,
    /// Every acknowledged write of the partition.
    Full,
}

/// What nodes send each other; every message carries the cluster key of the view it belongs
/// to and is ignored in any other view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The version exchange: this node's copy of every partition, partition 0 first, and the
    /// partitions it served (was working master of) when the view ended, one bit each as the
    /// `replicas` bitmaps lay them out.
    Versions {
        copies: Box<[Copy]>,
        serving: Box<[u8; PARTITION_BITMAP_BYTES]>,
        /// The views this node began, this one first (at most `VIEW_HISTORY_MAX`): a member
        /// whose previous view another member went past without it may have missed writes
        /// served meanwhile, so its full copies are planned as subsets.
        history: Vec<ClusterKey>,
    },
    /// An emigrant asks to start sending `partition`; `light`: the emigrant had no record
    /// of it when it asked (see [`Migrator::set_light`]), so it is accepted beyond
    /// `migrate-max-num-incoming`.
    Start { partition: PartitionId, light: bool },
    /// The destination's answer: `false` when it is at `migrate-max-num-incoming` (or does
    /// not expect the partition yet); the emigrant retries on a later tick.
    StartReply {
        partition: PartitionId,
        accepted: bool,
    },
    /// The emigrant sent every record of `partition` and the destination acknowledged them.
    Done { partition: PartitionId },
    /// The eventual master has a full copy and serves `partition` from now on.
    MasterReady { partition: PartitionId },
    /// Every holder of `partition` is full: non-holders drop their copies.
    Settled { partition: PartitionId },
    /// A node that had a full copy and is no longer a holder dropped it: the working master
    /// stops replicating to it (until then the copy must stay complete, since it may be the
    /// one a next view trusts).
    Dropped { partition: PartitionId },
}

/// A message for the caller to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeId,
    pub cluster_key: ClusterKey,
    pub message: Message,
}

/// What the server must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stream every record of `partition` to `to` (the destination has accepted), then call
    /// `emigration_finished` or `emigration_failed` with the same key.
    Emigrate {
        cluster_key: ClusterKey,
        partition: PartitionId,
        to: NodeId,
    },
    /// Drop this node's copy of `partition`: it is not a holder and the partition settled.
    Drop { partition: PartitionId },
    /// This node's claims (the `replicas` bitmaps) changed: bump `partition-generation`.
    ClaimsChanged,
}

/// What one call produced.
#[derive(Default, Debug)]
pub struct Output {
    pub messages: Vec<Outgoing>,
    pub actions: Vec<Action>,
}

/// Why an input was refused. None changes the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    #[error("migrate-threads {0} is outside 1..={MIGRATE_THREADS_MAX}")]
    BadThreads(usize),
    #[error("migrate-max-num-incoming {0} is outside 1..={INCOMING_PARTITIONS_MAX_LIMIT}")]
    BadIncoming(usize),
    #[error("this node is not in the view's succession list; only members migrate")]
    NotMember,
    #[error("the partition map has {map_nodes} nodes per row but the view has {view_nodes} members; balance the map from this view")]
    MapNotOfView { map_nodes: usize, view_nodes: usize },
    #[error("{0} is for another view than the current one (late, or from an aborted migration); ignored")]
    StaleView(ClusterKey),
    #[error("no view has begun yet")]
    NoView,
    #[error("message from {0}, which is not a member of the current view")]
    NotAMember(NodeId),
    #[error("versions from {from} list {count} partitions, not {PARTITION_COUNT}")]
    BadVersions { from: NodeId, count: usize },
    #[error("more than EARLY_MESSAGES_MAX ({EARLY_MESSAGES_MAX}) messages arrived before the versions of every member; dropped one from {0}")]
    TooManyEarly(NodeId),
    #[error(
        "{what} for partition {partition} from {from} does not match any migration in progress"
    )]
    Unexpected {
        what: &'static str,
        partition: u16,
        from: NodeId,
    },
}

/// One partition's bookkeeping in the current view, as this node knows it.
#[derive(Clone, Debug, Default)]
struct PartitionState {
    /// Who this node believes serves the partition (`None`: during the hand-off to the
    /// eventual master, or before the plan).
    working: Option<NodeId>,
    /// Nodes with a full copy when the view began.
    full_at_start: Vec<NodeId>,
    /// Non-holders with a full copy that have not yet said they dropped it: they receive
    /// every write until then, so a full copy is never stale.
    keepers: BTreeSet<NodeId>,
    /// Phase one sources that have not finished sending to the eventual master (known
    /// exactly on the eventual master and on each source for itself).
    sources_pending: BTreeSet<NodeId>,
    /// Eventual replicas still waiting for the eventual master's copy (known on the master).
    replicas_pending: BTreeSet<NodeId>,
    /// This node still expects an immigration (phase one as master, or phase two as a
    /// replica), and from whom.
    expecting_from: BTreeSet<NodeId>,
    /// Every holder is full; non-holders have dropped.
    settled: bool,
    /// No full copy was left: the eventual master serves while it merges the subsets, and
    /// resolves each transaction's record against the sources not merged yet
    /// ([`Migrator::for_each_dup_res_source`]). Their emigrations are urgent.
    merging: bool,
}

/// One member's versions: its copy of each partition and the bitmap of those it served.
type Report = (
    Box<[Copy]>,
    Box<[u8; PARTITION_BITMAP_BYTES]>,
    Vec<ClusterKey>,
);

/// The view being migrated.
struct Current {
    cluster_key: ClusterKey,
    succession: Succession,
    map: PartitionMap,
    /// Reports received, including this node's own.
    reports: BTreeMap<NodeId, Report>,
    /// Set once every member reported.
    planned: bool,
    partitions: Vec<PartitionState>,
    /// Emigrations owed, phase one first then phase two, each in partition order.
    emigrations: EmigrationQueue,
    /// Immigrations accepted and not yet done: counts against `incoming_partitions_max`.
    incoming_active: BTreeSet<(u16, NodeId)>,
    /// Those of `incoming_active` accepted as light: they hold no incoming slot.
    incoming_light: BTreeSet<(u16, NodeId)>,
    /// Messages that came before the plan, handled right after it (at most
    /// `EARLY_MESSAGES_MAX`).
    early: Vec<(NodeId, Message)>,
    /// Destinations that refused a start since the last tick: not asked again before it, so
    /// a full destination costs one refusal per tick, not one per partition owed to it.
    refused_by: BTreeSet<NodeId>,
}

/// How an emigration of partition `p` is paced now: light when it holds no record here
/// (`light`, the server's hint), urgent when it feeds a merge, else paced.
fn class_of(light: &[bool], partitions: &[PartitionState], p: usize) -> Class {
    if light[p] {
        Class::Light
    } else if partitions[p].merging {
        Class::Urgent
    } else {
        Class::Paced
    }
}

impl Current {
    /// Emigrations holding a `migrate-threads` slot: active, neither light nor urgent.
    fn threads_in_use(&self) -> usize {
        self.emigrations.active(Class::Paced)
    }

    /// Immigrations holding an incoming slot (accepted, not light, not done).
    fn slots_in_use(&self) -> usize {
        self.incoming_active.len() - self.incoming_light.len()
    }
}

/// One node's migration state machine for one namespace.
pub struct Migrator {
    id: NodeId,
    config: MigrateConfig,
    /// This node's copy of each partition, kept across views.
    copies: Vec<Copy>,
    /// The views this node began, most recent first (at most `VIEW_HISTORY_MAX`).
    history: VecDeque<ClusterKey>,
    /// Partitions the server says hold no record here now (a hint for pacing only): their
    /// emigrations hold no `migrate-threads` slot and no destination's incoming slot, so a
    /// cluster forming over empty partitions does not migrate them one by one. Whatever the
    /// hint, the stream itself sends every record the partition has when it runs.
    light: Vec<bool>,
    current: Option<Current>,
}

fn pid(index: usize) -> PartitionId {
    debug_assert!(index < PARTITION_COUNT as usize);
    PartitionId(index as u16)
}

impl Migrator {
    /// A node that holds nothing yet (a fresh start of an in-memory namespace).
    pub fn new(id: NodeId, config: MigrateConfig) -> Result<Migrator, MigrateError> {
        Migrator::with_copies(id, config, vec![Copy::Absent; PARTITION_COUNT as usize])
    }

    /// A node restarted with `copies` found on its storage. A cold restart cannot prove its
    /// copies got every write acknowledged while it was down, so full ones count as subsets.
    pub fn with_copies(
        id: NodeId,
        config: MigrateConfig,
        mut copies: Vec<Copy>,
    ) -> Result<Migrator, MigrateError> {
        let config = config.validate()?;
        if copies.len() != PARTITION_COUNT as usize {
            return Err(MigrateError::BadVersions {
                from: id,
                count: copies.len(),
            });
        }
        for c in &mut copies {
            *c = (*c).min(Copy::Subset);
        }
        Ok(Migrator {
            id,
            config,
            copies,
            light: vec![false; PARTITION_COUNT as usize],
            history: VecDeque::new(),
            current: None,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether `partition` has no record on this node now: its emigrations, when asked from
    /// now on, are light (see the field). Pacing only; never changes what is sent.
    pub fn set_light(&mut self, partition: PartitionId, light: bool) {
        let p = usize::from(partition.0);
        if self.light[p] == light {
            return;
        }
        self.light[p] = light;
        if let Some(current) = self.current.as_mut() {
            let class = class_of(&self.light, &current.partitions, p);
            current.emigrations.reclass(partition.0, class);
        }
    }

    /// This node's copy of `partition` (what it would report if a view began now).
    pub fn copy(&self, partition: PartitionId) -> Copy {
        self.copies[usize::from(partition.0)]
    }

    /// A view was committed: abort everything in flight (streams of the old key must be
    /// cancelled by the server; late reports of them are refused as stale), and send this
    /// node's versions to every other member. `map` must be balanced from `succession`.
    pub fn begin_view(
        &mut self,
        cluster_key: ClusterKey,
        succession: Succession,
        map: PartitionMap,
        out: &mut Output,
    ) -> Result<(), MigrateError> {
        if !succession.contains(self.id) {
            return Err(MigrateError::NotMember);
        }
        let map_nodes = map.row(PartitionId(0)).len();
        if map_nodes != succession.len() {
            return Err(MigrateError::MapNotOfView {
                map_nodes,
                view_nodes: succession.len(),
            });
        }
        let had_claims = self.current.as_ref().is_some_and(|c| c.planned);
        // Nothing of an aborted immigration is trusted: the copy stays what it was
        // (`Subset` for a node that started receiving, never `Full` until a `Done`).
        let copies: Box<[Copy]> = self.copies.clone().into_boxed_slice();
        let mut serving = Box::new([0u8; PARTITION_BITMAP_BYTES]);
        for p in 0..PARTITION_COUNT {
            if self.is_working_master(PartitionId(p)) {
                serving[usize::from(p / 8)] |= 0x80 >> (p % 8);
            }
        }
        if self.history.front() != Some(&cluster_key) {
            self.history.push_front(cluster_key);
            self.history.truncate(VIEW_HISTORY_MAX);
        }
        let history: Vec<ClusterKey> = self.history.iter().copied().collect();
        let mut reports = BTreeMap::new();
        reports.insert(self.id, (copies.clone(), serving.clone(), history.clone()));
        // An eventual holder may get replicated writes from now on (even before the plan):
        // whatever it had, it has some records, but not all until an immigration is done.
        for (p, copy) in self.copies.iter_mut().enumerate() {
            if *copy == Copy::Absent && map.role(pid(p), self.id).is_some() {
                *copy = Copy::Subset;
            }
        }
        for &member in succession.nodes() {
            if member != self.id {
                out.messages.push(Outgoing {
                    to: member,
                    cluster_key,
                    message: Message::Versions {
                        copies: copies.clone(),
                        serving: serving.clone(),
                        history: history.clone(),
                    },
                });
            }
        }
        self.current = Some(Current {
            cluster_key,
            succession,
            map,
            reports,
            planned: false,
            partitions: vec![PartitionState::default(); PARTITION_COUNT as usize],
            emigrations: EmigrationQueue::default(),
            incoming_active: BTreeSet::new(),
            incoming_light: BTreeSet::new(),
            early: Vec::new(),
            refused_by: BTreeSet::new(),
        });
        if had_claims {
            out.actions.push(Action::ClaimsChanged);
        }
        self.plan_if_ready(out);
        Ok(())
    }

    /// The view this node was in before the one being migrated (`None` for its first).
    pub fn previous_view(&self) -> Option<ClusterKey> {
        self.history.get(1).copied()
    }

    /// The cluster key of the view being migrated.
    pub fn cluster_key(&self) -> Option<ClusterKey> {
        self.current.as_ref().map(|c| c.cluster_key)
    }

    /// Whether every member's versions have arrived and the plan is made.
    pub fn is_planned(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.planned)
    }

    fn current_for(&mut self, key: ClusterKey) -> Result<&mut Current, MigrateError> {
        let current = self.current.as_mut().ok_or(MigrateError::NoView)?;
        if current.cluster_key != key {
            return Err(MigrateError::StaleView(key));
        }
        Ok(current)
    }

    /// A message from `from`.
    pub fn on_message(
        &mut self,
        from: NodeId,
        cluster_key: ClusterKey,
        message: Message,
        out: &mut Output,
    ) -> Result<(), MigrateError> {
        let id = self.id;
        let incoming_max = self.config.incoming_partitions_max;
        let current = self.current_for(cluster_key)?;
        if !current.succession.contains(from) || from == id {
            return Err(MigrateError::NotAMember(from));
        }
        let before_plan = !matches!(message, Message::Versions { .. } | Message::Start { .. });
        if before_plan && !current.planned {
            if current.early.len() >= EARLY_MESSAGES_MAX {
                return Err(MigrateError::TooManyEarly(from));
            }
            current.early.push((from, message));
            return Ok(());
        }
        match message {
            Message::Versions {
                copies,
                serving,
                history,
            } => {
                if copies.len() != PARTITION_COUNT as usize {
                    return Err(MigrateError::BadVersions {
                        from,
                        count: copies.len(),
                    });
                }
                current.reports.insert(from, (copies, serving, history));
                self.plan_if_ready(out);
                let early = self
                    .current
                    .as_mut()
                    .filter(|c| c.planned)
                    .map(|c| std::mem::take(&mut c.early))
                    .unwrap_or_default();
                for (from, message) in early {
                    // A late one that matches nothing is the sender's problem, not this
                    // plan's: the others still apply.
                    let _ = self.on_message(from, cluster_key, message, out);
                }
            }
            Message::Start { partition, light } => {
                let p = usize::from(partition.0);
                let expected = current.planned
                    && current.partitions[p].expecting_from.contains(&from)
                    && !current.incoming_active.contains(&(partition.0, from));
                let accepted = expected && (light || current.slots_in_use() < incoming_max);
                if accepted {
                    current.incoming_active.insert((partition.0, from));
                    if light {
                        current.incoming_light.insert((partition.0, from));
                    }
                    // Records are about to arrive: until `Done`, the copy is a subset.
                    self.copies[p] = self.copies[p].max(Copy::Subset);
                }
                out.messages.push(Outgoing {
                    to: from,
                    cluster_key,
                    message: Message::StartReply {
                        partition,
                        accepted,
                    },
                });
            }
            Message::StartReply {
                partition,
                accepted,
            } => {
                let key = (partition.0, from);
                if current.emigrations.state(key) != Some(EmigrationState::Asked) {
                    return Err(MigrateError::Unexpected {
                        what: "StartReply",
                        partition: partition.0,
                        from,
                    });
                }
                if accepted {
                    current.emigrations.streaming(key);
                    out.actions.push(Action::Emigrate {
                        cluster_key,
                        partition,
                        to: from,
                    });
                } else {
                    current.emigrations.defer(key);
                    current.refused_by.insert(from);
                    self.pump(out);
                }
            }
            Message::Done { partition } => {
                let p = usize::from(partition.0);
                current.incoming_light.remove(&(partition.0, from));
                if !current.incoming_active.remove(&(partition.0, from)) {
                    return Err(MigrateError::Unexpected {
                        what: "Done",
                        partition: partition.0,
                        from,
                    });
                }
                let state = &mut current.partitions[p];
                state.expecting_from.remove(&from);
                state.sources_pending.remove(&from);
                if state.expecting_from.is_empty() {
                    self.immigrations_complete(partition, out);
                }
                self.pump(out);
            }
            Message::MasterReady { partition } => {
                let p = usize::from(partition.0);
                if current.map.master(partition) != from {
                    return Err(MigrateError::Unexpected {
                        what: "MasterReady",
                        partition: partition.0,
                        from,
                    });
                }
                let state = &mut current.partitions[p];
                let was_mine = state.working == Some(id);
                state.working = Some(from);
                if was_mine {
                    out.actions.push(Action::ClaimsChanged);
                }
            }
            Message::Settled { partition } => {
                if current.map.master(partition) != from {
                    return Err(MigrateError::Unexpected {
                        what: "Settled",
                        partition: partition.0,
                        from,
                    });
                }
                self.settle(partition, out);
            }
            Message::Dropped { partition } => {
                let state = &mut current.partitions[usize::from(partition.0)];
                if current.map.master(partition) != id || !state.keepers.remove(&from) {
                    return Err(MigrateError::Unexpected {
                        what: "Dropped",
                        partition: partition.0,
                        from,
                    });
                }
            }
        }
        Ok(())
    }

    /// Once every member reported: the plan of every partition (the same on every member,
    /// since all have the same reports and map), and this node's share of it.
    fn plan_if_ready(&mut self, out: &mut Output) {
        let id = self.id;
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if current.planned || current.reports.len() < current.succession.len() {
            return;
        }
        current.planned = true;
        // A member whose previous view another member went past without it (began a later
        // view before this one) may have missed writes served there: its full copies are
        // planned as subsets, and it takes them for subsets itself.
        // Unless another member comes from that same view: then that view lived on with
        // them, serving writes the one that went past lacks (it was the one cut off, alone
        // in a view of its own), and the copies are merged as diverged lineages instead.
        let stale: BTreeSet<NodeId> = (current.reports.iter())
            .filter(|(n, r)| {
                r.2.get(1).is_some_and(|prev| {
                    (current.reports.iter()).any(|(m, o)| {
                        m != *n && o.2.iter().position(|k| k == prev).is_some_and(|i| i >= 2)
                    }) && !(current.reports.iter())
                        .any(|(m, o)| m != *n && o.2.get(1) == Some(prev))
                })
            })
            .map(|(&n, _)| n)
            .collect();
        if stale.contains(&id) {
            for c in &mut self.copies {
                *c = (*c).min(Copy::Subset);
            }
        }
        let mut phase_one = Vec::new();
        let mut ready_now = Vec::new();
        let mut settled_now = Vec::new();
        for (p, state) in current.partitions.iter_mut().enumerate() {
            let partition = pid(p);
            let row = current.map.row(partition);
            let holders = current.map.holders(partition);
            let master = holders[0];
            let reported = |n: NodeId| {
                let c = current.reports.get(&n).map_or(Copy::Absent, |r| r.0[p]);
                if stale.contains(&n) {
                    c.min(Copy::Subset)
                } else {
                    c
                }
            };
            // Full copies that come from different previous views (two sides of a split that
            // each went on) may each hold writes the other lacks: none is trusted alone, the
            // eventual master merges them all and nobody serves until it has.
            let lineage = |n: &NodeId| current.reports.get(n).and_then(|r| r.2.get(1).copied());
            let lineages: BTreeSet<Option<ClusterKey>> = (row.iter())
                .filter(|&&n| reported(n) == Copy::Full)
                .map(lineage)
                .collect();
            // So may a subset from a previous view no full copy comes from: an eventual
            // holder still waiting for its copy took that view's acknowledged writes, and its
            // master is not here (the other side of a split); a stale member (rule 10) may
            // hold writes it applied after the others went on without it, in doubt to their
            // clients and never replicated, at generations above versions the others then
            // acknowledged — kept by conflict resolution wherever its copy ends up, unless
            // every write first resolves against it. Not a node with no previous view
            // (restarted cold: see docs/migration.md, rule 15, for what that leaves open).
            let foreign_subset = (row.iter()).any(|n| {
                reported(*n) == Copy::Subset
                    && lineage(n).is_some_and(|l| !lineages.contains(&Some(l)))
            });
            let diverged = lineages.len() > 1 || (!lineages.is_empty() && foreign_subset);
            if diverged {
                self.copies[p] = self.copies[p].min(Copy::Subset);
            }
            let copy_of = |n: NodeId| {
                let c = reported(n);
                if diverged {
                    c.min(Copy::Subset)
                } else {
                    c
                }
            };
            let served = |n: NodeId| {
                current
                    .reports
                    .get(&n)
                    .is_some_and(|r| r.1[p / 8] & (0x80 >> (p % 8)) != 0)
            };
            state.full_at_start = row
                .iter()
                .copied()
                .filter(|&n| copy_of(n) == Copy::Full)
                .collect();
            // The full copy that serves until the eventual master has one: the node that
            // served when the last view ended, so clients keep their route (CE: the old
            // masters keep column 0 when a node joins); else the first full one in row order.
            let acting = state
                .full_at_start
                .iter()
                .copied()
                .find(|&n| served(n))
                .or_else(|| state.full_at_start.first().copied());
            let sources: Vec<NodeId> = if copy_of(master) == Copy::Full {
                Vec::new()
            } else if let Some(acting) = acting {
                vec![acting]
            } else {
                row.iter()
                    .copied()
                    .filter(|&n| n != master && copy_of(n) == Copy::Subset)
                    .collect()
            };
            // With no full copy left, the eventual master serves at once and merges every
            // subset; until a source's stream is in, each transaction first fetches its
            // record's version from that source and keeps the winner (duplicate resolution,
            // as CE does), so it never answers from, or writes on top of, a version older
            // than one a subset holds.
            state.working = match acting {
                Some(acting) if copy_of(master) != Copy::Full => Some(acting),
                _ => Some(master),
            };
            state.merging =
                copy_of(master) != Copy::Full && acting.is_none() && !sources.is_empty();
            state.sources_pending = sources.iter().copied().collect();
            state.keepers = state
                .full_at_start
                .iter()
                .copied()
                .filter(|n| !holders.contains(n))
                .collect();
            state.replicas_pending = holders[1..]
                .iter()
                .copied()
                .filter(|&r| copy_of(r) != Copy::Full)
                .collect();
            if row.iter().all(|&n| copy_of(n) == Copy::Absent) {
                // Nobody ever had a record of it (a new cluster or namespace): every holder
                // starts full and empty, with nothing to move.
                state.working = Some(master);
                state.replicas_pending.clear();
                if holders.contains(&id) {
                    self.copies[p] = Copy::Full;
                }
                settled_now.push(partition);
                continue;
            }
            if sources.is_empty() && state.replicas_pending.is_empty() {
                // Every holder is full already: every member sees it from the reports alone.
                settled_now.push(partition);
                continue;
            }
            if sources.contains(&id) {
                phase_one.push((partition.0, master));
            }
            if master == id {
                state.expecting_from = state.sources_pending.clone();
                if state.sources_pending.is_empty() {
                    ready_now.push(partition);
                }
            } else if state.replicas_pending.contains(&id) {
                state.expecting_from.insert(master);
            }
        }
        for e in phase_one {
            let class = class_of(&self.light, &current.partitions, usize::from(e.0));
            current.emigrations.push(e, class);
        }
        out.actions.push(Action::ClaimsChanged);
        for partition in settled_now {
            self.settle(partition, out);
        }
        for partition in ready_now {
            self.master_ready(partition, false, out);
        }
        self.pump(out);
    }

    /// All immigrations this node expected for `partition` finished: its copy is full.
    fn immigrations_complete(&mut self, partition: PartitionId, out: &mut Output) {
        let p = usize::from(partition.0);
        self.copies[p] = Copy::Full;
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if current.map.master(partition) == self.id {
            self.master_ready(partition, true, out);
        } else {
            out.actions.push(Action::ClaimsChanged);
        }
    }

    /// The eventual master has a full copy: it serves, tells the others if that changed who
    /// serves, and queues phase two (or settles at once when every replica is full).
    fn master_ready(&mut self, partition: PartitionId, announce: bool, out: &mut Output) {
        let id = self.id;
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let p = usize::from(partition.0);
        debug_assert_eq!(current.map.master(partition), id);
        self.copies[p] = Copy::Full;
        let state = &mut current.partitions[p];
        state.working = Some(id);
        state.merging = false;
        let class = class_of(&self.light, &current.partitions, p);
        let state = &mut current.partitions[p];
        current.emigrations.reclass(partition.0, class);
        if announce {
            for &member in current.succession.nodes() {
                if member != id {
                    out.messages.push(Outgoing {
                        to: member,
                        cluster_key: current.cluster_key,
                        message: Message::MasterReady { partition },
                    });
                }
            }
            out.actions.push(Action::ClaimsChanged);
        }
        if state.replicas_pending.is_empty() {
            self.broadcast_settled(partition, out);
        } else {
            for &to in &state.replicas_pending {
                current.emigrations.push((partition.0, to), class);
            }
        }
    }

    fn broadcast_settled(&mut self, partition: PartitionId, out: &mut Output) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        for &member in current.succession.nodes() {
            if member != self.id {
                out.messages.push(Outgoing {
                    to: member,
                    cluster_key: current.cluster_key,
                    message: Message::Settled { partition },
                });
            }
        }
        self.settle(partition, out);
    }

    /// `partition` is settled: a node that is not a holder drops its copy.
    fn settle(&mut self, partition: PartitionId, out: &mut Output) {
        let id = self.id;
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let p = usize::from(partition.0);
        let state = &mut current.partitions[p];
        if state.settled {
            return;
        }
        state.settled = true;
        if current.map.role(partition, id).is_none() {
            if state.full_at_start.contains(&id) {
                out.messages.push(Outgoing {
                    to: current.map.master(partition),
                    cluster_key: current.cluster_key,
                    message: Message::Dropped { partition },
                });
            }
            let was_working = state.working == Some(id);
            state.working = Some(current.map.master(partition));
            if self.copies[p] != Copy::Absent {
                self.copies[p] = Copy::Absent;
                out.actions.push(Action::Drop { partition });
            }
            if was_working {
                out.actions.push(Action::ClaimsChanged);
            }
        }
    }

    /// Starts what the limits allow: asks the destinations of queued emigrations, in queue
    /// order per class, while their class has a slot free (light ones always), skipping
    /// destinations that refused since the last tick.
    fn pump(&mut self, out: &mut Output) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        // Light: nothing to send. Urgent: a merge, whose every transaction costs a round
        // trip to each source until it ends; up to `URGENT_EMIGRATIONS_MAX` of them run
        // beside `migrate-threads` (unpaced, a split's thousands of merges at once stalled a
        // 3-node debug cluster for 12 s).
        for (class, max) in [
            (Class::Light, usize::MAX),
            (Class::Urgent, URGENT_EMIGRATIONS_MAX),
            (Class::Paced, self.config.outgoing_partitions_max),
        ] {
            while current.emigrations.active(class) < max {
                let Some((partition, to)) =
                    current.emigrations.ask_next(class, &current.refused_by)
                else {
                    break;
                };
                out.messages.push(Outgoing {
                    to,
                    cluster_key: current.cluster_key,
                    message: Message::Start {
                        partition: PartitionId(partition),
                        light: class != Class::Paced,
                    },
                });
            }
        }
        debug_assert!(current.threads_in_use() <= self.config.outgoing_partitions_max);
        #[cfg(test)]
        current.emigrations.check();
    }

    /// Deferred emigrations (refused or failed) are asked again; call it every few hundred
    /// milliseconds.
    pub fn on_tick(&mut self, out: &mut Output) {
        if let Some(current) = self.current.as_mut() {
            current.refused_by.clear();
            let (light, partitions) = (&self.light, &current.partitions);
            (current.emigrations).requeue_deferred(|p| class_of(light, partitions, usize::from(p)));
        }
        self.pump(out);
    }

    /// The server streamed every record of `partition` to `to` and `to` acknowledged them.
    pub fn emigration_finished(
        &mut self,
        cluster_key: ClusterKey,
        partition: PartitionId,
        to: NodeId,
        out: &mut Output,
    ) -> Result<(), MigrateError> {
        let id = self.id;
        let current = self.current_for(cluster_key)?;
        let key = (partition.0, to);
        if current.emigrations.state(key) != Some(EmigrationState::Streaming) {
            return Err(MigrateError::Unexpected {
                what: "emigration_finished",
                partition: partition.0,
                from: to,
            });
        }
        current.emigrations.finish(key);
        out.messages.push(Outgoing {
            to,
            cluster_key,
            message: Message::Done { partition },
        });
        let p = usize::from(partition.0);
        let master = current.map.master(partition);
        let state = &mut current.partitions[p];
        if to == master {
            state.sources_pending.remove(&id);
            // The hand-off: this node stops serving; the eventual master serves once the
            // `Done` reaches it.
            if state.working == Some(id) {
                state.working = Some(master);
                out.actions.push(Action::ClaimsChanged);
            }
        } else {
            debug_assert_eq!(master, id);
            state.replicas_pending.remove(&to);
            if state.replicas_pending.is_empty() {
                self.broadcast_settled(partition, out);
            }
        }
        self.pump(out);
        Ok(())
    }

    /// Streaming `partition` to `to` failed (connection lost, destination refused mid-way):
    /// it is asked again on a later tick, from the start.
    pub fn emigration_failed(
        &mut self,
        cluster_key: ClusterKey,
        partition: PartitionId,
        to: NodeId,
        out: &mut Output,
    ) -> Result<(), MigrateError> {
        let current = self.current_for(cluster_key)?;
        let key = (partition.0, to);
        if current.emigrations.state(key) != Some(EmigrationState::Streaming) {
            return Err(MigrateError::Unexpected {
                what: "emigration_failed",
                partition: partition.0,
                from: to,
            });
        }
        current.emigrations.defer(key);
        self.pump(out);
        Ok(())
    }

    /// The destination side of a failed stream: `from` gave up sending `partition`; the slot
    /// is free again and the copy stays a subset until a later attempt finishes.
    pub fn immigration_failed(
        &mut self,
        cluster_key: ClusterKey,
        partition: PartitionId,
        from: NodeId,
    ) -> Result<(), MigrateError> {
        let current = self.current_for(cluster_key)?;
        current.incoming_light.remove(&(partition.0, from));
        if !current.incoming_active.remove(&(partition.0, from)) {
            return Err(MigrateError::Unexpected {
                what: "immigration_failed",
                partition: partition.0,
                from,
            });
        }
        Ok(())
    }

    /// The node that serves `partition` now, as this node knows it (`None` before the plan
    /// and while the eventual master has not yet taken over from the emigrant).
    pub fn working_master(&self, partition: PartitionId) -> Option<NodeId> {
        let current = self.current.as_ref().filter(|c| c.planned)?;
        current.partitions[usize::from(partition.0)].working
    }

    /// Whether this node serves `partition` now.
    pub fn is_working_master(&self, partition: PartitionId) -> bool {
        self.working_master(partition) == Some(self.id)
    }

    /// Where the working master sends each write of `partition`: every eventual holder and
    /// every non-holder that had a full copy when the view began until it said it dropped
    /// it; never itself. Empty unless this node is the working master.
    pub fn replication_targets(&self, partition: PartitionId) -> Vec<NodeId> {
        let mut targets = Vec::new();
        self.for_each_replication_target(partition, |n| targets.push(n));
        targets.sort_unstable();
        targets
    }

    /// [`Migrator::replication_targets`] without allocating (in no particular order; each
    /// node once: keepers are never holders).
    pub fn for_each_replication_target(&self, partition: PartitionId, mut f: impl FnMut(NodeId)) {
        if !self.is_working_master(partition) {
            return;
        }
        let Some(current) = self.current.as_ref() else {
            return;
        };
        let state = &current.partitions[usize::from(partition.0)];
        let holders = current.map.holders(partition);
        debug_assert!(state.keepers.iter().all(|k| !holders.contains(k)));
        for &n in holders.iter().chain(state.keepers.iter()) {
            if n != self.id {
                f(n);
            }
        }
    }

    /// Where the working master of a partition being merged (no full copy was left) must
    /// look up each transaction's record before serving it: the sources whose subsets have
    /// not all arrived yet. Nothing unless this node serves a merge.
    pub fn for_each_dup_res_source(&self, partition: PartitionId, mut f: impl FnMut(NodeId)) {
        if !self.is_working_master(partition) {
            return;
        }
        let Some(current) = self.current.as_ref() else {
            return;
        };
        let state = &current.partitions[usize::from(partition.0)];
        if state.merging {
            state.expecting_from.iter().for_each(|&n| f(n));
        }
    }

    /// [`Migrator::for_each_dup_res_source`], collected in node order.
    pub fn dup_res_sources(&self, partition: PartitionId) -> Vec<NodeId> {
        let mut sources = Vec::new();
        self.for_each_dup_res_source(partition, |n| sources.push(n));
        sources
    }

    /// The replica columns this node claims for `partition` (what `replicas` advertises):
    /// column 0 as working master; column i ≥ 1 as eventual replica i with a full copy.
    pub fn claims(&self, partition: PartitionId) -> Vec<usize> {
        let mask = self.claims_mask(partition);
        (0..8).filter(|c| mask & (1 << c) != 0).collect()
    }

    /// [`Migrator::claims`] as a bit mask (bit i: column i), without allocating.
    pub fn claims_mask(&self, partition: PartitionId) -> u8 {
        let Some(current) = self.current.as_ref().filter(|c| c.planned) else {
            return 0;
        };
        let mut mask = 0;
        if self.is_working_master(partition) {
            mask |= 1;
        }
        if let Some(index) = current.map.role(partition, self.id) {
            if index >= 1 && self.copies[usize::from(partition.0)] == Copy::Full {
                mask |= 1 << index;
            }
        }
        mask
    }

    /// `migrate_tx_partitions_remaining`: emigrations this node still owes.
    pub fn tx_partitions_remaining(&self) -> usize {
        self.current.as_ref().map_or(0, |c| c.emigrations.len())
    }

    /// `migrate_rx_partitions_remaining`: partitions this node still expects to receive.
    pub fn rx_partitions_remaining(&self) -> usize {
        self.current.as_ref().map_or(0, |c| {
            c.partitions
                .iter()
                .filter(|s| !s.expecting_from.is_empty())
                .count()
        })
    }

    /// `migrate_partitions_remaining` for this namespace (CE sums it over namespaces).
    pub fn partitions_remaining(&self) -> usize {
        self.tx_partitions_remaining() + self.rx_partitions_remaining()
    }

    /// Whether `cluster-stable` may answer the key: the plan is made and this node has
    /// nothing left to send or receive. Before the versions are all in, it is not.
    pub fn is_stable(&self) -> bool {
        self.is_planned() && self.partitions_remaining() == 0
    }

    /// Immigrations holding an incoming slot: accepted, not light, not yet done (at most
    /// `incoming_partitions_max`).
    pub fn incoming_active(&self) -> usize {
        self.current.as_ref().map_or(0, Current::slots_in_use)
    }

    /// Emigrations asked or streaming that hold a `migrate-threads` slot (not light; at most
    /// `outgoing_partitions_max`).
    pub fn outgoing_active(&self) -> usize {
        self.current.as_ref().map_or(0, Current::threads_in_use)
    }

    /// Whether this node applies a replicated write of `partition`: it keeps a copy, or it is
    /// an eventual holder. A write for a copy already dropped is acknowledged and ignored.
    pub fn accepts_replica_write(&self, partition: PartitionId) -> bool {
        self.copies[usize::from(partition.0)] != Copy::Absent
            || self
                .current
                .as_ref()
                .is_some_and(|c| c.map.role(partition, self.id).is_some())
    }

    /// Whether this node knows `partition` settled in the current view.
    pub fn is_settled(&self, partition: PartitionId) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.partitions[usize::from(partition.0)].settled)
    }
}
