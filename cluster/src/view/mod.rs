//! The view change: which nodes form this node's cluster, agreed in Aerospike's way
//! (design.md §5) — a principal-led agreement, not a majority protocol, so each side of a
//! network split forms its own cluster and keeps serving (AP).
//!
//! Owns one node's membership state machine. Inputs: the peers this node currently sees (its
//! adjacency, from a failure detector that is not this module's), view messages from peers, and
//! clock ticks (`Instant`s the caller passes). Outputs: messages to send and events (a view
//! committed, the node orphaned). It must never do I/O, read a clock, or panic on what a peer
//! sends: every unexpected or malformed message is a `ViewError` value and changes nothing.
//!
//! The rules. Decisions are taken once per quantum (changes are batched into quanta, as
//! Aerospike does, so a burst of heartbeat changes makes one view change rather than many);
//! losing sight of one's principal makes a node an orphan at once, and losing any peer brings
//! the next decision to within a quarter quantum (a death is acted on in ~2 s, as in CE).
//! - Every node tells every peer it sees its view (key and principal) and its adjacency, in a
//!   `Status`, each quantum and whenever it sees a new peer or changes view. This is what
//!   Aerospike's heartbeats carry; a principal learns from them who sees whom.
//! - The principal of a view is the highest node id of its members, and the members see each
//!   other (a clique). A principal computes the clique greedily: itself, then each candidate
//!   peer in descending id order that is seen by, and sees, every node already chosen (from
//!   their latest `Status`), up to `CLUSTER_NODES_MAX`. Candidates are lower ids that see it
//!   and are orphans, its own members, or members of a lower principal's cluster (a merge).
//!   When the clique differs from its view, or a member's status shows it fell out of the
//!   view, it proposes a new random 48-bit key and the clique as the succession list; when
//!   every proposed member has accepted, it commits and tells them to commit. A round not
//!   finished by the next quantum is dropped and decided afresh.
//! - A member accepts a proposal from its own principal, from a higher one (clusters merge
//!   into the higher principal's), or from any principal once its own is out of sight; only if
//!   it sees every proposed member, and only if the proposal was made from the view the
//!   principal's latest status names (so a late copy of an old proposal is stale).
//! - A member whose principal it no longer sees, or whose principal has moved to another
//!   view, becomes an orphan; it keeps its last view for `orphan_quanta` quanta (so clients
//!   keep being served while the cluster re-forms) and then reports that it has no cluster.
//! - An orphan leads (forms a cluster with itself as principal and every candidate above)
//!   unless a higher node it sees, and that sees it, is a principal or an orphan: that node
//!   will take it in. For its first `ORPHAN_DEFER_QUANTA` quanta it also holds back while a
//!   peer still follows a higher principal this orphan no longer sees (that peer is about to
//!   be an orphan too). The highest node of any group never waits, so some node always leads;
//!   a node that sees no one forms a cluster of one, as a lone Aerospike node does (CE 8.1.2.0
//!   observed: the survivor of a 2-node cluster whose principal was killed showed
//!   `cluster_is_member=false` at 1.5 s and was principal of a cluster of one at 2.4 s).
//! - When adjacency is not a clique, the greedy rule keeps the higher ids and leaves the rest
//!   out: the simplest deterministic reading of the design's "highest id among nodes that all
//!   see each other" (we are not sure what CE does here). A node left out that still sees a
//!   principal which sees it waits for it, and so stays an orphan and reports no cluster after
//!   the timeout (result 11 to clients) rather than serving alone beside that cluster; a node
//!   left out that sees no such principal forms its own cluster and serves (AP).

pub mod message;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::balance::{NodeId, Succession, CLUSTER_NODES_MAX};
pub use message::{
    ClusterKey, Message, MessageError, Status, ViewSummary, ADJACENCY_NODES_MAX,
    VIEW_MESSAGE_BYTES_MAX,
};

/// A point in time on the caller's monotonic clock (any origin). This module never reads a
/// clock: tests pass simulated instants, the server passes real ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
pub struct Instant(Duration);

impl Instant {
    pub fn from_millis(ms: u64) -> Instant {
        Instant(Duration::from_millis(ms))
    }

    pub fn since_origin(self) -> Duration {
        self.0
    }

    /// `self + d`.
    pub fn after(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

/// Heartbeat `interval` default, as Aerospike's.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 150;
/// Heartbeat `timeout` default, in intervals, as Aerospike's.
pub const HEARTBEAT_TIMEOUT_INTERVALS_DEFAULT: u32 = 10;
/// Quanta an orphan keeps its last view before it reports no cluster (Aerospike: ~5).
pub const ORPHAN_QUANTA_DEFAULT: u32 = 5;

/// The view change's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewConfig {
    /// How often a node decides on changes. Changes that happen within one quantum make one
    /// view change.
    pub quantum: Duration,
    /// Quanta an orphan keeps its last view before it reports no cluster.
    pub orphan_quanta: u32,
}

impl ViewConfig {
    /// The quantum for a heartbeat `interval` and `timeout` (in intervals): one failure-
    /// detection timeout plus two intervals, so the adjacency change a failure causes has
    /// reached every node before the next decision. 150 ms × (10 + 2) = 1.8 s, Aerospike's
    /// quantum with the defaults.
    pub fn from_heartbeat(interval: Duration, timeout_intervals: u32) -> ViewConfig {
        ViewConfig {
            quantum: interval * (timeout_intervals + 2),
            orphan_quanta: ORPHAN_QUANTA_DEFAULT,
        }
    }
}

impl Default for ViewConfig {
    fn default() -> ViewConfig {
        ViewConfig::from_heartbeat(
            Duration::from_millis(HEARTBEAT_INTERVAL_MS_DEFAULT),
            HEARTBEAT_TIMEOUT_INTERVALS_DEFAULT,
        )
    }
}

/// A committed cluster view: its key and its members, principal first.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct View {
    pub cluster_key: ClusterKey,
    pub succession: Succession,
}

impl View {
    pub fn principal(&self) -> NodeId {
        self.succession.principal()
    }
}

/// What happened to this node's membership; the server rebalances on `Committed` and stops
/// serving (result 11, partition unavailable) on `Orphaned`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// This node is a member of a new view.
    Committed(View),
    /// This node has been out of every cluster for `orphan_quanta` quanta; its last view no
    /// longer holds.
    Orphaned,
    /// The principal of this node's view (or last view) names another view without this
    /// node: that view went on without it (it was paused, or cut off) and may serve its
    /// partitions already; or this node is alone in its view and sees a peer in another one
    /// (a side of a split about to merge). Stop serving by the old view now, not at the next
    /// quantum.
    Superseded,
}

/// One message for the caller to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Outgoing {
    pub to: NodeId,
    pub message: Message,
}

/// What one call produced; the caller sends the messages (in any order: the protocol
/// tolerates reordering) and acts on the events in order.
#[derive(Default, Debug)]
pub struct Output {
    pub messages: Vec<Outgoing>,
    pub events: Vec<Event>,
}

/// Why a message was ignored. None of these changes the node's state; they are for logs and
/// tests (a peer sending many of them is misbehaving or out of date).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("malformed view message from {from}: {error}")]
    Malformed { from: NodeId, error: MessageError },
    #[error("a view message claims to come from this node itself")]
    FromSelf,
    #[error("node id 0 cannot take part in a cluster; set a non-zero `node-id`")]
    ZeroNode,
    #[error("{count} peers exceed ADJACENCY_NODES_MAX ({ADJACENCY_NODES_MAX})")]
    TooManyPeers { count: usize },
    #[error("message from {0}, which this node does not see (yet); ignored")]
    SenderNotAdjacent(NodeId),
    #[error("proposal from {sender}, but its succession list's principal is {principal}")]
    ProposerNotPrincipal { sender: NodeId, principal: NodeId },
    #[error("proposal from {0} does not include this node")]
    NotProposed(NodeId),
    #[error("proposal from {proposer} includes {unseen}, which this node does not see")]
    ProposalNotClique { proposer: NodeId, unseen: NodeId },
    #[error("proposal from {proposer} while this node follows the higher principal {current}")]
    FollowsHigherPrincipal { proposer: NodeId, current: NodeId },
    #[error("proposal {0} is for the view this node already has, or was seen before")]
    StaleProposal(ClusterKey),
    #[error("proposal from {proposer} made in view {principal_view:?}, which its latest status does not name")]
    ProposalFromOtherView {
        proposer: NodeId,
        principal_view: Option<ClusterKey>,
    },
    #[error("{0} names no proposal in progress here (late, duplicated or from an old round)")]
    UnknownProposal(ClusterKey),
    #[error("commit of {0}, which this node already committed")]
    AlreadyCommitted(ClusterKey),
    #[error("accept from {0}, which the proposal in progress does not include")]
    AcceptFromNonMember(NodeId),
}

/// Where this node stands.
#[derive(Clone, Debug)]
enum Membership {
    Member {
        view: View,
        committed_at: Instant,
    },
    /// Out of every view since `since`; `last` is kept for `orphan_quanta` quanta.
    Orphan {
        since: Instant,
        last: Option<View>,
    },
}

/// A proposal this node (as principal) has in flight.
#[derive(Debug)]
struct Proposal {
    view: View,
    accepted: BTreeSet<NodeId>,
}

/// A proposal this node accepted and waits to be told to commit.
#[derive(Debug)]
struct Accepted {
    view: View,
    at: Instant,
}

/// A principal waits this long after committing before it takes a member's differing status
/// as that member being out of sync: statuses sent before the member committed may still be
/// in flight (a quarter quantum is far above any loopback or LAN latency).
const STATUS_SETTLE_QUANTUM_FRACTION: u32 = 4;

/// After a peer is lost, the next decision comes within this fraction of a quantum (450 ms
/// with the defaults: several heartbeat intervals, so the other survivors have declared the
/// same node dead and will accept the new view).
const LOSS_SETTLE_QUANTUM_FRACTION: u32 = 4;

/// Quanta a new orphan holds back from leading while peers it sees still follow a principal
/// it no longer sees: one quantum lets their own decision run and their status arrive.
const ORPHAN_DEFER_QUANTA: u32 = 2;

/// Keys of proposals this node has seen, remembered so that a proposal delivered again
/// later (a duplicate or a long-delayed copy) cannot be accepted twice and revive an old view.
/// A view change sees at most a few proposals, so 32 covers many quanta of churn.
const RETIRED_KEYS_MAX: usize = 32;

/// One node's view-change state machine.
pub struct Node {
    id: NodeId,
    config: ViewConfig,
    /// Cluster keys come from here (xorshift64*; seeded by the caller from entropy in
    /// production and from the test's seed in simulation, so runs replay exactly).
    rng: u64,
    adjacency: BTreeSet<NodeId>,
    /// The latest status of each adjacent peer, and when it arrived.
    reports: BTreeMap<NodeId, (Status, Instant)>,
    membership: Membership,
    proposal: Option<Proposal>,
    accepted: Option<Accepted>,
    /// The last `RETIRED_KEYS_MAX` proposal keys seen here, oldest first.
    retired_keys: std::collections::VecDeque<ClusterKey>,
    next_quantum: Instant,
    /// Since when this principal has held back a change that drops a member it still sees.
    dropping_since: Option<Instant>,
    /// The view this node was told it is superseded in (one `Event::Superseded` per view).
    superseded: Option<ClusterKey>,
}

impl Node {
    /// A node that has just started: an orphan with no view, which decides at its first
    /// quantum. `seed` only feeds cluster keys; any value works, distinct nodes should differ.
    pub fn new(id: NodeId, config: ViewConfig, seed: u64, now: Instant) -> Result<Node, ViewError> {
        if id.0 == 0 {
            return Err(ViewError::ZeroNode);
        }
        assert!(config.quantum > Duration::ZERO, "a quantum must last");
        Ok(Node {
            id,
            config,
            // xorshift needs a non-zero state; mixing in the id keeps equal seeds apart.
            rng: (seed ^ id.0.rotate_left(17)) | 1,
            adjacency: BTreeSet::new(),
            reports: BTreeMap::new(),
            membership: Membership::Orphan {
                since: now,
                last: None,
            },
            proposal: None,
            accepted: None,
            retired_keys: std::collections::VecDeque::with_capacity(RETIRED_KEYS_MAX),
            next_quantum: now.after(config.quantum),
            dropping_since: None,
            superseded: None,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The view this node serves by: its committed view, or while an orphan, its last one
    /// until the orphan timeout. `None`: no cluster (clients get "partition unavailable").
    pub fn view(&self) -> Option<&View> {
        match &self.membership {
            Membership::Member { view, .. } => Some(view),
            Membership::Orphan { last, .. } => last.as_ref(),
        }
    }

    /// Whether this node is a member of a committed view right now (`cluster_is_member`).
    pub fn is_member(&self) -> bool {
        matches!(self.membership, Membership::Member { .. })
    }

    /// The peers this node sees.
    pub fn adjacency(&self) -> &BTreeSet<NodeId> {
        &self.adjacency
    }

    /// The failure detector's current verdict: exactly these peers are alive and reachable.
    /// Newly seen peers are told this node's status at once, so a forming cluster needs no
    /// extra quantum; forgotten peers' statuses are dropped. A member that stops seeing its
    /// principal is an orphan from this moment (CE 8.1.2.0 shows `cluster_is_member=false`
    /// as soon as its principal is declared dead, and a new view about a second later).
    pub fn set_adjacency(
        &mut self,
        now: Instant,
        peers: impl IntoIterator<Item = NodeId>,
        out: &mut Output,
    ) -> Result<(), ViewError> {
        let peers: BTreeSet<NodeId> = peers.into_iter().filter(|&p| p != self.id).collect();
        if peers.contains(&NodeId(0)) {
            return Err(ViewError::ZeroNode);
        }
        if peers.len() > ADJACENCY_NODES_MAX {
            return Err(ViewError::TooManyPeers { count: peers.len() });
        }
        let new: Vec<NodeId> = peers.difference(&self.adjacency).copied().collect();
        if self.adjacency.iter().any(|p| !peers.contains(p)) {
            // A peer is gone: decide soon rather than at the next boundary, which may be
            // a whole quantum away, once the news has had time to reach every survivor (CE
            // 8.1.2.0 commits its new view about half a second after declaring a node dead).
            let soon = now.after(self.config.quantum / LOSS_SETTLE_QUANTUM_FRACTION);
            self.next_quantum = self.next_quantum.min(soon);
        }
        self.reports.retain(|p, _| peers.contains(p));
        self.adjacency = peers;
        if let Membership::Member { view, .. } = &self.membership {
            let principal = view.principal();
            if principal != self.id && !self.adjacency.contains(&principal) {
                self.become_orphan(now);
                // Tell every peer at once: a new leader waits for peers that still seem to
                // follow the lost principal, and this spares it a quantum.
                self.broadcast_status(out);
                return Ok(());
            }
        }
        let status = self.status();
        for to in new {
            out.messages.push(Outgoing {
                to,
                message: status.clone(),
            });
        }
        Ok(())
    }

    /// Decodes and handles one message's bytes.
    pub fn on_bytes(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
        out: &mut Output,
    ) -> Result<(), ViewError> {
        let message =
            Message::decode(bytes).map_err(|error| ViewError::Malformed { from, error })?;
        self.on_message(now, from, message, out)
    }

    /// Handles one message from `from` (already structurally valid).
    pub fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: Message,
        out: &mut Output,
    ) -> Result<(), ViewError> {
        if from == self.id {
            return Err(ViewError::FromSelf);
        }
        // Messages from peers the failure detector does not vouch for are ignored: acting on
        // them could put a dead node into a view.
        if !self.adjacency.contains(&from) {
            return Err(ViewError::SenderNotAdjacent(from));
        }
        match message {
            Message::Status(status) => {
                self.on_status(now, from, status, out);
                Ok(())
            }
            Message::Propose {
                cluster_key,
                succession,
                principal_view,
            } => self.on_propose(now, from, cluster_key, succession, principal_view, out),
            Message::Accept { cluster_key } => self.on_accept(now, from, cluster_key, out),
            Message::Commit { cluster_key } => self.on_commit(now, from, cluster_key, out),
        }
    }

    /// Advances the clock; at each quantum boundary, decides on changes.
    pub fn on_tick(&mut self, now: Instant, out: &mut Output) {
        if now < self.next_quantum {
            return;
        }
        // A node that was not ticked for a while (paused process) takes one decision, not
        // one per missed quantum.
        while self.next_quantum <= now {
            self.next_quantum = self.next_quantum.after(self.config.quantum);
        }
        self.quantum(now, out);
    }

    fn status(&self) -> Message {
        Message::Status(Status {
            view: self.view_summary(),
            adjacency: self.adjacency.iter().copied().collect(),
        })
    }

    fn view_summary(&self) -> Option<ViewSummary> {
        match &self.membership {
            Membership::Member { view, .. } => Some(ViewSummary {
                cluster_key: view.cluster_key,
                principal: view.principal(),
            }),
            Membership::Orphan { .. } => None,
        }
    }

    fn broadcast_status(&self, out: &mut Output) {
        let status = self.status();
        for &to in &self.adjacency {
            out.messages.push(Outgoing {
                to,
                message: status.clone(),
            });
        }
    }

    fn on_status(&mut self, now: Instant, from: NodeId, status: Status, out: &mut Output) {
        // A principal's status naming the view this node accepted means it committed it:
        // this recovers a lost `Commit`.
        let committed_by_principal = match (&self.accepted, status.view) {
            (Some(a), Some(v)) => a.view.principal() == from && a.view.cluster_key == v.cluster_key,
            _ => false,
        };
        let their_view = status.view;
        self.reports.insert(from, (status, now));
        if committed_by_principal {
            if let Some(a) = self.accepted.take() {
                self.commit(now, a.view, out);
            }
            return;
        }
        let settle = self.config.quantum / STATUS_SETTLE_QUANTUM_FRACTION;
        let last = match &self.membership {
            // Statuses sent before the principal committed this view may still arrive.
            Membership::Member { view, committed_at } if now >= committed_at.after(settle) => {
                Some(view)
            }
            Membership::Member { .. } => None,
            Membership::Orphan { last, .. } => last.as_ref(),
        };
        let Some((key, principal, alone)) =
            last.map(|v| (v.cluster_key, v.principal(), v.succession.len() == 1))
        else {
            return;
        };
        let moved_on = their_view.is_some_and(|v| v.cluster_key != key);
        // A node alone in its view that sees a peer in another view is about to merge (it was
        // cut off, or it formed alone before meeting the others): its copies lag that side's,
        // so it stops serving rather than take writes the merge would overrule.
        let superseded = (from == principal && principal != self.id) || alone;
        // Unless this node accepted the proposal of the view the peer moved to: it is a
        // member of that view and its commit is on the way (a joining node with a higher id
        // took over as principal, and the old principal's status overtook the commit).
        let awaiting_commit = their_view.is_some_and(|v| {
            (self.accepted.as_ref()).is_some_and(|a| a.view.cluster_key == v.cluster_key)
        });
        if superseded && moved_on && !awaiting_commit && self.superseded != Some(key) {
            self.superseded = Some(key);
            out.events.push(Event::Superseded);
        }
    }

    fn on_propose(
        &mut self,
        now: Instant,
        from: NodeId,
        cluster_key: ClusterKey,
        succession: Succession,
        principal_view: Option<ClusterKey>,
        out: &mut Output,
    ) -> Result<(), ViewError> {
        let principal = succession.principal();
        if from != principal {
            return Err(ViewError::ProposerNotPrincipal {
                sender: from,
                principal,
            });
        }
        if !succession.contains(self.id) {
            return Err(ViewError::NotProposed(from));
        }
        if let Some(&unseen) = succession
            .nodes()
            .iter()
            .find(|&&n| n != self.id && !self.adjacency.contains(&n))
        {
            return Err(ViewError::ProposalNotClique {
                proposer: from,
                unseen,
            });
        }
        if let Membership::Member { view, .. } = &self.membership {
            if view.cluster_key == cluster_key {
                return Err(ViewError::StaleProposal(cluster_key));
            }
            // Loyalty: a member follows its principal, or a higher one (a merge). A lower
            // principal may only take it once its own principal is gone from sight. Since
            // `from` is the proposal's highest id and this node is in it, a principal never
            // refuses here: it merges into the higher cluster.
            let current = view.principal();
            if current > from && self.adjacency.contains(&current) {
                return Err(ViewError::FollowsHigherPrincipal {
                    proposer: from,
                    current,
                });
            }
        }
        if let Some(a) = &self.accepted {
            if a.view.cluster_key == cluster_key {
                // A duplicated proposal: answer again (the first answer may be lost).
                out.messages.push(Outgoing {
                    to: from,
                    message: Message::Accept { cluster_key },
                });
                return Ok(());
            }
            if a.view.principal() > from {
                return Err(ViewError::FollowsHigherPrincipal {
                    proposer: from,
                    current: a.view.principal(),
                });
            }
        }
        if self.retired_keys.contains(&cluster_key) {
            return Err(ViewError::StaleProposal(cluster_key));
        }
        // The principal proposes from the view its latest status names; a proposal made from
        // another view is an old one delivered late (or the status is lost: the principal
        // sends both again next quantum).
        let said = self
            .reports
            .get(&from)
            .map(|(s, _)| s.view.map(|v| v.cluster_key));
        if said != Some(principal_view) {
            return Err(ViewError::ProposalFromOtherView {
                proposer: from,
                principal_view,
            });
        }
        // A higher principal's proposal supersedes this node's own, if any.
        self.retire(cluster_key);
        self.proposal = None;
        self.accepted = Some(Accepted {
            view: View {
                cluster_key,
                succession,
            },
            at: now,
        });
        out.messages.push(Outgoing {
            to: from,
            message: Message::Accept { cluster_key },
        });
        Ok(())
    }

    fn on_accept(
        &mut self,
        now: Instant,
        from: NodeId,
        cluster_key: ClusterKey,
        out: &mut Output,
    ) -> Result<(), ViewError> {
        let Some(p) = &mut self.proposal else {
            return Err(ViewError::UnknownProposal(cluster_key));
        };
        if p.view.cluster_key != cluster_key {
            return Err(ViewError::UnknownProposal(cluster_key));
        }
        if !p.view.succession.contains(from) {
            return Err(ViewError::AcceptFromNonMember(from));
        }
        p.accepted.insert(from);
        if p.accepted.len() + 1 < p.view.succession.len() {
            return Ok(());
        }
        // Present: borrowed just above. Taken now to end the round.
        let Some(p) = self.proposal.take() else {
            return Ok(());
        };
        debug_assert!(p.accepted.iter().all(|n| p.view.succession.contains(*n)));
        for &to in p.view.succession.nodes().iter().filter(|&&n| n != self.id) {
            out.messages.push(Outgoing {
                to,
                message: Message::Commit { cluster_key },
            });
        }
        self.commit(now, p.view, out);
        Ok(())
    }

    fn on_commit(
        &mut self,
        now: Instant,
        from: NodeId,
        cluster_key: ClusterKey,
        out: &mut Output,
    ) -> Result<(), ViewError> {
        match &self.accepted {
            Some(a) if a.view.cluster_key == cluster_key && a.view.principal() == from => {
                if let Some(a) = self.accepted.take() {
                    self.commit(now, a.view, out);
                }
                Ok(())
            }
            _ => match &self.membership {
                Membership::Member { view, .. } if view.cluster_key == cluster_key => {
                    Err(ViewError::AlreadyCommitted(cluster_key))
                }
                _ => Err(ViewError::UnknownProposal(cluster_key)),
            },
        }
    }

    fn commit(&mut self, now: Instant, view: View, out: &mut Output) {
        debug_assert!(view.succession.contains(self.id));
        self.membership = Membership::Member {
            view: view.clone(),
            committed_at: now,
        };
        out.events.push(Event::Committed(view));
        self.broadcast_status(out);
    }

    fn become_orphan(&mut self, now: Instant) {
        if let Membership::Member { view, .. } = &self.membership {
            self.membership = Membership::Orphan {
                since: now,
                last: Some(view.clone()),
            };
        }
    }

    /// One decision: drop what a quantum outlived, leave a view that is gone, orphan out,
    /// or (as principal or a free orphan) propose the clique.
    fn quantum(&mut self, now: Instant, out: &mut Output) {
        // An unfinished round is abandoned: a member that never answered is gone or follows
        // someone else, and the new decision below accounts for it.
        self.proposal = None;
        if let Some(a) = &self.accepted {
            if now >= a.at.after(self.config.quantum) {
                self.accepted = None;
            }
        }

        if let Membership::Member { view, committed_at } = &self.membership {
            let principal = view.principal();
            // The principal's status is only taken as "moved on" once statuses sent before it
            // committed this view can no longer be in flight.
            let settle = self.config.quantum / STATUS_SETTLE_QUANTUM_FRACTION;
            let moved_on = self.reports.get(&principal).is_some_and(|(s, at)| {
                *at >= committed_at.after(settle)
                    && s.view.map(|v| v.cluster_key) != Some(view.cluster_key)
            });
            let left = principal != self.id && (!self.adjacency.contains(&principal) || moved_on);
            if left {
                self.become_orphan(now);
            }
        }

        if let Membership::Orphan { since, last } = &mut self.membership {
            let orphaned_at = since.after(self.config.quantum * self.config.orphan_quanta);
            if last.is_some() && now >= orphaned_at {
                *last = None;
                out.events.push(Event::Orphaned);
            }
        }

        let leads = match &self.membership {
            Membership::Member { view, .. } => view.principal() == self.id,
            Membership::Orphan { .. } => !self.waits_to_be_absorbed(now),
        };
        if leads {
            self.lead(now, out);
        }
        self.broadcast_status(out);
    }

    /// Whether this orphan should let another node lead: a higher node it sees, and that sees
    /// it, is a principal or an orphan (that node will take it in); or, for its first
    /// `ORPHAN_DEFER_QUANTA` quanta, a peer that sees it still follows a higher principal this
    /// node no longer sees (that peer is about to become an orphan too, and leading now would
    /// form a cluster without it). The highest node of any group never waits for ever, so some
    /// node always leads.
    fn waits_to_be_absorbed(&self, now: Instant) -> bool {
        let deferring = match &self.membership {
            Membership::Orphan { since, .. } => {
                now < since.after(self.config.quantum * ORPHAN_DEFER_QUANTA)
            }
            Membership::Member { .. } => false,
        };
        self.reports.iter().any(|(&peer, (status, _))| {
            status.adjacency.contains(&self.id)
                && match status.view {
                    None => peer > self.id,
                    Some(v) if v.principal == peer => peer > self.id,
                    Some(v) => {
                        deferring && v.principal > self.id && !self.adjacency.contains(&v.principal)
                    }
                }
        })
    }

    /// Whether `peer`'s status makes it one this principal may take: it is lower, sees this
    /// node, and is free (an orphan), already ours, or in a lower principal's cluster (a
    /// merge). A peer following a higher principal is left to it, even one this node does not
    /// see: it would refuse the proposal and stall every round.
    fn is_candidate(&self, peer: NodeId, status: &Status) -> bool {
        peer < self.id
            && status.adjacency.contains(&self.id)
            && status.view.is_none_or(|v| v.principal <= self.id)
    }

    /// The greedy clique from this node down, and a proposal when it differs from the view.
    fn lead(&mut self, now: Instant, out: &mut Output) {
        let mut chosen: Vec<NodeId> = vec![self.id];
        for (&peer, (status, _)) in self.reports.iter().rev() {
            if chosen.len() == CLUSTER_NODES_MAX {
                break;
            }
            if !self.is_candidate(peer, status) {
                continue;
            }
            let mutual = chosen[1..].iter().all(|c| {
                status.adjacency.contains(c)
                    && self
                        .reports
                        .get(c)
                        .is_some_and(|(s, _)| s.adjacency.contains(&peer))
            });
            if mutual {
                chosen.push(peer);
            }
        }
        // Distinct (map keys), non-zero (refused by `set_adjacency`), at most
        // CLUSTER_NODES_MAX (capped above): always a succession list. Were it not, leading
        // nobody this quantum is the safe way out.
        let Ok(succession) = Succession::new(chosen) else {
            debug_assert!(false, "a clique of distinct non-zero ids is a succession");
            return;
        };
        debug_assert_eq!(succession.principal(), self.id);

        let changed = match &self.membership {
            Membership::Member { view, committed_at } => {
                let settled =
                    now >= committed_at.after(self.config.quantum / STATUS_SETTLE_QUANTUM_FRACTION);
                let out_of_sync = |n: &NodeId| {
                    self.reports.get(n).is_some_and(|(s, at)| {
                        *at > *committed_at
                            && settled
                            && s.view.map(|v| v.cluster_key) != Some(view.cluster_key)
                    })
                };
                view.succession != succession || succession.nodes()[1..].iter().any(out_of_sync)
            }
            Membership::Orphan { .. } => true,
        };
        if !changed {
            self.dropping_since = None;
            return;
        }
        // A member of this view that this principal still sees, left out only because the
        // statuses saying who sees it are not all in yet (a node just joined, its status and
        // the member's crossing), would be dropped while it keeps serving by this view: two
        // sides serving for a quantum. Hold such a change back one quantum; one that still
        // leaves it out then is a real partition of the adjacency and goes ahead.
        let drops_a_visible_member = match &self.membership {
            Membership::Member { view, .. } => view.succession.nodes()[1..]
                .iter()
                .any(|m| self.adjacency.contains(m) && !succession.contains(*m)),
            Membership::Orphan { .. } => false,
        };
        if drops_a_visible_member {
            match self.dropping_since {
                Some(since) if now >= since.after(self.config.quantum) => {}
                Some(_) => return,
                None => {
                    self.dropping_since = Some(now);
                    return;
                }
            }
        }
        self.dropping_since = None;
        let principal_view = self.view_summary().map(|v| v.cluster_key);
        let view = View {
            cluster_key: self.new_cluster_key(),
            succession,
        };
        self.retire(view.cluster_key);
        if view.succession.len() == 1 {
            // Alone: nobody to ask.
            self.commit(now, view, out);
            return;
        }
        for &to in &view.succession.nodes()[1..] {
            out.messages.push(Outgoing {
                to,
                message: Message::Propose {
                    cluster_key: view.cluster_key,
                    succession: view.succession.clone(),
                    principal_view,
                },
            });
        }
        self.accepted = None;
        self.proposal = Some(Proposal {
            view,
            accepted: BTreeSet::new(),
        });
    }

    fn retire(&mut self, key: ClusterKey) {
        if self.retired_keys.len() == RETIRED_KEYS_MAX {
            self.retired_keys.pop_front();
        }
        self.retired_keys.push_back(key);
        debug_assert!(self.retired_keys.len() <= RETIRED_KEYS_MAX);
    }

    /// A random non-zero 48-bit key, different from the current view's.
    fn new_cluster_key(&mut self) -> ClusterKey {
        let current = self.view().map(|v| v.cluster_key);
        loop {
            // xorshift64*: enough for keys that only need to differ between views.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let raw = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 16;
            if let Some(key) = ClusterKey::new(raw) {
                if Some(key) != current && !self.retired_keys.contains(&key) {
                    return key;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
