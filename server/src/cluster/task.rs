//! The cluster task on core 0: the heartbeat socket, the failure detector and the view change,
//! driven by a glommio timer, and the publication of each committed view's partition table.
//!
//! Owns the membership's I/O: what `apogee_cluster` decides, this sends and receives (one UDP
//! socket: SWIM packets and view messages alike, each in an `envelope`). Peers are found by
//! their heartbeat address: a seed's node id is learned by a `Hello`, other peers' addresses
//! from the directories peers send. It must never panic on a peer's bytes (they are decoded
//! with checks and dropped with a rate-limited log line), never hold the state's `RefCell`
//! across an `.await`, and never touch the data path except by swapping in a new table.
//!
//! The fabric (TCP, `network.fabric`) is where replication, migration and proxying will go;
//! phase 1 sends the view change over the heartbeat socket, which loopback and LANs deliver
//! in order and whole (the view change tolerates a lost message: a round not finished by the
//! next quantum is decided afresh).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use apogee_cluster::detector::{Detector, DetectorConfig, DetectorOutput};
use apogee_cluster::view::{self, Event, Instant, ViewConfig};
use apogee_cluster::NodeId;

use super::envelope::{
    self, DirectoryEntry, Envelope, Kind, DIRECTORY_ENTRIES_MAX, ENVELOPE_BYTES_MAX,
};
use super::{ClusterState, PeerService};
use crate::config::HeartbeatConfig;
use crate::node::Node;

/// How often the task fires the detector's and the view's due timers: well under the
/// detector's shortest timer (a third of an interval, 50 ms by default).
const TICK_MS: u64 = 10;
/// Most log lines per kind of refused packet per `LOG_WINDOW`: a misbehaving or misconfigured
/// peer must not flood the log.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 3;
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// A rate limit of one kind of log line.
#[derive(Default)]
struct Limit {
    window_start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl Limit {
    /// `Some(suppressed since the last line)` when this line may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= LOG_WINDOW)
        {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < REFUSALS_LOGGED_PER_WINDOW {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[derive(Default)]
struct Logs {
    malformed: Limit,
    other_cluster: Limit,
    duplicate_id: Limit,
    no_address: Limit,
    send_failed: Limit,
}

/// The membership of this node: the state machines and the address book around them.
struct Membership {
    node: Arc<Node>,
    id: NodeId,
    cluster_name: Option<String>,
    /// Where clients reach this node (told to peers).
    service: SocketAddr,
    /// Where peers reach this node's fabric (told to peers).
    fabric: SocketAddr,
    heartbeat: SocketAddr,
    detector: Detector,
    view: view::Node,
    /// How to reach each peer heard from or of.
    book: BTreeMap<NodeId, DirectoryEntry>,
    /// Seed addresses (this node's own excluded) and, once learned, their ids.
    seeds: Vec<(SocketAddr, Option<NodeId>)>,
    seed_round: Duration,
    next_seed_round: Instant,
    origin: std::time::Instant,
    /// Renews this node's write lease every tick (`lease`).
    lease: super::lease::LeaseKeeper,
    /// Datagrams to send once the state is released.
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    logs: Logs,
}

impl Membership {
    fn now(&self) -> Instant {
        Instant::from_millis(0).after(self.origin.elapsed())
    }

    /// This node's entries for the directory: the peers SWIM holds alive, so a receiver
    /// learns how to reach every node it will hear of.
    fn directory(&self) -> Vec<DirectoryEntry> {
        self.detector
            .alive()
            .iter()
            .filter_map(|n| self.book.get(n).copied())
            .take(DIRECTORY_ENTRIES_MAX)
            .collect()
    }

    fn send(&mut self, to: SocketAddr, kind: Kind, payload: &[u8]) {
        let bytes = Envelope {
            kind,
            cluster_name: self.cluster_name.as_deref(),
            sender: self.id,
            sender_service: self.service,
            sender_fabric: self.fabric,
            directory: self.directory(),
            payload,
        }
        .encode();
        self.outbox.push((to, bytes));
    }

    fn send_to_node(&mut self, to: NodeId, kind: Kind, payload: &[u8]) {
        match self.book.get(&to) {
            Some(e) => {
                let addr = e.heartbeat;
                self.send(addr, kind, payload);
            }
            None => {
                if let Some(n) = self.logs.no_address.allow() {
                    tracing::debug!(peer = %format!("{:X}", to.0), suppressed = n,
                        "no heartbeat address known for a peer yet; packet dropped");
                }
            }
        }
    }

    fn after_detector(&mut self, out: DetectorOutput) {
        for (to, bytes) in out.packets {
            self.send_to_node(to, Kind::Swim, &bytes);
        }
        if out.adjacency_changed {
            let now = self.now();
            let alive: Vec<NodeId> = self.detector.alive().iter().copied().collect();
            tracing::info!(peers = %hex_list(&alive), "heartbeat: live peers changed");
            let mut vout = view::Output::default();
            if let Err(e) = self.view.set_adjacency(now, alive, &mut vout) {
                tracing::warn!(error = %e, "view change refused the live peers");
            }
            self.after_view(vout);
        }
    }

    fn after_view(&mut self, out: view::Output) {
        for m in out.messages {
            let bytes = m.message.encode();
            self.send_to_node(m.to, Kind::View, &bytes);
        }
        for e in out.events {
            self.apply(e);
        }
        self.publish_membership();
    }

    /// A committed view: rebalance and publish. Orphaned: serve nothing (result 11).
    fn apply(&mut self, event: Event) {
        match event {
            Event::Committed(v) => {
                // The migration task builds and publishes the table of the view.
                let event = super::migration::Event::View {
                    key: v.cluster_key,
                    succession: v.succession.clone(),
                };
                if self.node.migration_tx.try_send(event).is_err() {
                    tracing::error!("the migration task's inbox is full; the view is not applied");
                }
                // Cluster metadata: a member back from an absence learns the truncates it
                // missed.
                crate::truncate::share_on_view(&self.node);
                crate::sindex::share_on_view(&self.node);
                crate::udf::share_on_view(&self.node);
                let members = v.succession.nodes().to_vec();
                tracing::info!(
                    cluster_key = %format!("{:X}", v.cluster_key.get()),
                    principal = %format!("{:X}", v.principal().0),
                    members = %hex_list(&members),
                    "cluster view committed; migrating to its partition map"
                );
                let mut s = ClusterState::clone(&self.node.cluster.load());
                s.key = Some(v.cluster_key);
                s.generation += 1;
                s.succession = members;
                s.is_member = self.view.is_member();
                self.set_peers(&mut s);
                self.node.cluster.store(Arc::new(s));
            }
            Event::Superseded => {
                tracing::warn!(
                    "this node's principal went on in a view without it (it was paused or cut \
                     off): partitions unavailable (result 11) until it joins a view again"
                );
                let _ = self
                    .node
                    .migration_tx
                    .try_send(super::migration::Event::Orphaned);
            }
            Event::Orphaned => {
                tracing::warn!(
                    "out of every cluster for the orphan timeout: partitions unavailable \
                     (result 11) until a view commits"
                );
                let _ = self
                    .node
                    .migration_tx
                    .try_send(super::migration::Event::Orphaned);
                let mut s = ClusterState::clone(&self.node.cluster.load());
                s.key = None;
                s.succession.clear();
                s.is_member = false;
                self.set_peers(&mut s);
                self.node.cluster.store(Arc::new(s));
            }
        }
    }

    /// The members other than this node, as clients reach them.
    fn set_peers(&mut self, s: &mut ClusterState) {
        let mut peers = Vec::new();
        for &n in s.succession.iter().filter(|&&n| n != self.id) {
            match self.book.get(&n) {
                Some(e) => peers.push(PeerService {
                    node: n,
                    service: e.service,
                    fabric: e.fabric,
                }),
                None => tracing::warn!(peer = %format!("{:X}", n.0),
                    "a member's service address is not known; clients are not told of it"),
            }
        }
        peers.sort_by_key(|p| p.node);
        if peers != s.peers {
            s.peers = peers;
            s.peers_generation += 1;
        }
    }

    /// Publishes `cluster_is_member` when it changed without an event (a member that lost
    /// its principal keeps its last view, not its membership).
    fn publish_membership(&self) {
        let is_member = self.view.is_member();
        let current = self.node.cluster.load();
        if current.is_member != is_member {
            let mut s = ClusterState::clone(&current);
            s.is_member = is_member;
            self.node.cluster.store(Arc::new(s));
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let e = match envelope::decode(bytes) {
            Ok(e) => e,
            Err(error) => {
                if let Some(n) = self.logs.malformed.allow() {
                    tracing::warn!(%from, %error, suppressed = n, "heartbeat packet dropped");
                }
                return;
            }
        };
        if e.cluster_name != self.cluster_name.as_deref() {
            if let Some(n) = self.logs.other_cluster.allow() {
                tracing::warn!(%from, node = %format!("{:X}", e.sender.0),
                    theirs = e.cluster_name.unwrap_or("null"),
                    ours = self.cluster_name.as_deref().unwrap_or("null"), suppressed = n,
                    "peer refused: its cluster-name differs from this node's");
            }
            return;
        }
        if e.sender == self.id {
            if from != self.heartbeat {
                if let Some(n) = self.logs.duplicate_id.allow() {
                    tracing::warn!(%from, node = %format!("{:X}", self.id.0), suppressed = n,
                        "peer refused: it has this node's node-id; give each node its own");
                }
            }
            return;
        }
        self.book.insert(
            e.sender,
            DirectoryEntry {
                node: e.sender,
                heartbeat: from,
                service: e.sender_service,
                fabric: e.sender_fabric,
            },
        );
        for d in &e.directory {
            if d.node != self.id {
                self.book.entry(d.node).or_insert(*d);
            }
        }
        let now = self.now();
        let mut newly_known_seed = false;
        for (addr, id) in &mut self.seeds {
            if *addr == from && *id != Some(e.sender) {
                *id = Some(e.sender);
                newly_known_seed = true;
            }
        }
        if newly_known_seed {
            self.announce(now, e.sender);
        }
        match e.kind {
            Kind::Swim => {
                let mut out = DetectorOutput::default();
                if let Err(error) = self.detector.on_packet(now, e.payload, &mut out) {
                    if let Some(n) = self.logs.malformed.allow() {
                        tracing::warn!(%from, %error, suppressed = n, "SWIM packet dropped");
                    }
                }
                self.after_detector(out);
            }
            Kind::View => {
                let mut out = view::Output::default();
                // Refusals (a peer SWIM does not vouch for yet, a stale proposal) are the
                // protocol working: they change nothing.
                if let Err(error) = self.view.on_bytes(now, e.sender, e.payload, &mut out) {
                    tracing::debug!(%from, %error, "view message ignored");
                }
                self.after_view(out);
            }
            Kind::Hello => self.send(from, Kind::HelloReply, &[]),
            Kind::HelloReply => {}
        }
    }

    fn announce(&mut self, now: Instant, seed: NodeId) {
        let mut out = DetectorOutput::default();
        if let Err(error) = self.detector.announce(now, seed, &mut out) {
            tracing::warn!(%error, "announce to a seed failed");
        }
        self.after_detector(out);
    }

    fn tick(&mut self) {
        if let Some(stall) = self
            .lease
            .on_tick(std::time::Instant::now(), &self.node.lease)
        {
            tracing::warn!(
                stall_ms = stall.as_millis() as u64,
                "this node stalled long enough for its peers to declare it dead (paused?): it \
                 takes no writes (result 11) for one view-change quantum, until it hears \
                 whether its view lives on"
            );
        }
        let now = self.now();
        let mut out = DetectorOutput::default();
        if let Err(error) = self.detector.on_tick(now, &mut out) {
            tracing::warn!(%error, "failure detector timer");
        }
        self.after_detector(out);
        let mut vout = view::Output::default();
        self.view.on_tick(now, &mut vout);
        self.after_view(vout);
        if now >= self.next_seed_round {
            self.next_seed_round = now.after(self.seed_round);
            // Seeds not heard from get a Hello; known seeds SWIM does not hold alive (not
            // joined yet, or restarted) get an announce.
            for i in 0..self.seeds.len() {
                match self.seeds[i] {
                    (addr, None) => self.send(addr, Kind::Hello, &[]),
                    (_, Some(id)) if !self.detector.alive().contains(&id) => self.announce(now, id),
                    _ => {}
                }
            }
        }
    }
}

impl Membership {
    /// The membership of `node`, whose heartbeat socket is bound at `local`.
    fn new(
        node: Arc<Node>,
        heartbeat: &HeartbeatConfig,
        local: SocketAddr,
        start_count: u16,
    ) -> Result<Membership, String> {
        let id = node.id;
        let interval = Duration::from_millis(heartbeat.interval_ms);
        let detector_config = DetectorConfig {
            interval,
            timeout_intervals: heartbeat.timeout_intervals,
        };
        let now = Instant::from_millis(0);
        // A restarted node takes the next SWIM generation so its new identity wins at once
        // over the old one peers may still hold as down.
        let detector = Detector::new(id, start_count, detector_config, super::random_u64());
        let view_config = ViewConfig::from_heartbeat(interval, heartbeat.timeout_intervals);
        let lease = super::lease::LeaseKeeper::new(
            interval,
            heartbeat.timeout_intervals,
            view_config.quantum,
        );
        let view = view::Node::new(id, view_config, super::random_u64(), now)
            .map_err(|e| e.to_string())?;
        let config = &node.config;
        Ok(Membership {
            id,
            cluster_name: config.cluster.cluster_name.clone(),
            service: SocketAddr::new(config.cluster.access_address, config.port),
            fabric: config.cluster.fabric_advertised(),
            heartbeat: local,
            detector,
            view,
            book: BTreeMap::new(),
            seeds: heartbeat
                .seeds
                .iter()
                .filter(|&&s| s != local)
                .map(|&s| (s, None))
                .collect(),
            seed_round: interval * heartbeat.timeout_intervals,
            next_seed_round: now,
            origin: std::time::Instant::now(),
            lease,
            outbox: Vec::new(),
            logs: Logs::default(),
            node: node.clone(),
        })
    }
}

fn hex_list(nodes: &[NodeId]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| format!("{:X}", n.0)).collect();
    v.join(",")
}

/// Starts the cluster task on this (core 0's) executor over the bound heartbeat `socket`.
/// `start_count` numbers this run of the node (see `Node::next_start_count`).
pub fn spawn(
    node: Arc<Node>,
    heartbeat: &HeartbeatConfig,
    socket: std::net::UdpSocket,
    start_count: u16,
) -> Result<(), String> {
    let local = socket
        .local_addr()
        .map_err(|e| format!("heartbeat socket: {e}"))?;
    let membership = Membership::new(node.clone(), heartbeat, local, start_count)?;
    tracing::info!(
        node = %node.name,
        heartbeat = %local,
        seeds = heartbeat.seeds.len(),
        cluster_name = node.config.cluster.cluster_name.as_deref().unwrap_or("null"),
        "heartbeat listening; joining the cluster"
    );
    let state = Rc::new(RefCell::new(membership));
    // SAFETY: the descriptor is a bound UDP socket whose ownership moves here whole.
    let socket = Rc::new(unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) });
    glommio::spawn_local(receive(state.clone(), socket.clone())).detach();
    glommio::spawn_local(ticker(state, socket)).detach();
    Ok(())
}

async fn flush(state: &RefCell<Membership>, socket: &glommio::net::UdpSocket) {
    let outbox = std::mem::take(&mut state.borrow_mut().outbox);
    for (to, bytes) in outbox {
        if let Err(error) = socket.send_to(&bytes, to).await {
            if let Some(n) = state.borrow_mut().logs.send_failed.allow() {
                tracing::warn!(%to, %error, suppressed = n, "heartbeat send failed");
            }
        }
    }
}

async fn receive(state: Rc<RefCell<Membership>>, socket: Rc<glommio::net::UdpSocket>) {
    // One byte over the largest packet, so an oversized datagram shows as one.
    let mut buf = vec![0u8; ENVELOPE_BYTES_MAX + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                state.borrow_mut().on_datagram(from, &buf[..n]);
                flush(&state, &socket).await;
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat receive failed");
                glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
            }
        }
    }
}

async fn ticker(state: Rc<RefCell<Membership>>, socket: Rc<glommio::net::UdpSocket>) {
    let mut last = std::time::Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
        let gap = last.elapsed();
        last = std::time::Instant::now();
        if gap > Duration::from_millis(300) {
            tracing::warn!(gap_ms = gap.as_millis() as u64, "cluster task stalled");
        }
        state.borrow_mut().tick();
        flush(&state, &socket).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use apogee_cluster::view::{ClusterKey, View};
    use apogee_cluster::Succession;

    fn membership(id: u64, name: Option<&str>, dir: &std::path::Path) -> Membership {
        let o = Overrides {
            node_id: Some(format!("{id:x}")),
            heartbeat_port: Some(4002),
            cluster_name: name.map(Into::into),
            cores: Some(2),
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        };
        let config = Config::load(None, &o).unwrap();
        let hb = config.cluster.heartbeat.clone().unwrap();
        let node = Arc::new(Node::new(config, vec![]));
        Membership::new(node, &hb, "127.0.0.1:4002".parse().unwrap(), 1).unwrap()
    }

    fn packet(kind: Kind, name: Option<&str>, sender: u64) -> Vec<u8> {
        Envelope {
            kind,
            cluster_name: name,
            sender: NodeId(sender),
            sender_service: "127.0.0.1:5010".parse().unwrap(),
            sender_fabric: "127.0.0.1:5011".parse().unwrap(),
            directory: vec![],
            payload: &[],
        }
        .encode()
    }

    #[test]
    fn a_committed_view_goes_to_migration_and_an_orphan_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = membership(0xB2, Some("dev"), dir.path());
        let node = m.node.clone();
        let rx = node.migration_rx.lock().unwrap().take().unwrap();
        assert_eq!(
            node.partitions.load().generation(),
            -1,
            "nothing before a view"
        );
        assert!(!node.partitions.load().is_master(0, 0));
        let succession = Succession::new([NodeId(0xA1), NodeId(0xB2), NodeId(0xC3)]).unwrap();
        m.apply(Event::Committed(View {
            cluster_key: ClusterKey::new(0xABC).unwrap(),
            succession: succession.clone(),
        }));
        match rx.try_recv() {
            Ok(super::super::migration::Event::View { key, succession: s }) => {
                assert_eq!(key, ClusterKey::new(0xABC).unwrap());
                assert_eq!(s.nodes(), succession.nodes());
            }
            _ => panic!("the view is handed to the migration task"),
        }
        let s = node.cluster.load_full();
        assert_eq!(s.key, ClusterKey::new(0xABC));
        assert_eq!(s.succession, succession.nodes());
        assert_eq!(s.generation, 1);
        // The peers' addresses were not heard yet: clients are told of none.
        assert!(s.peers.is_empty());

        m.apply(Event::Orphaned);
        assert!(matches!(
            rx.try_recv(),
            Ok(super::super::migration::Event::Orphaned)
        ));
        let s = node.cluster.load_full();
        assert!(s.key.is_none() && s.succession.is_empty() && !s.is_member);
    }

    #[test]
    fn packets_of_another_cluster_with_this_nodes_id_or_malformed_teach_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = membership(0xB2, Some("dev"), dir.path());
        let from: SocketAddr = "127.0.0.1:5012".parse().unwrap();
        for bytes in [
            packet(Kind::Hello, Some("other"), 0xA1),
            packet(Kind::Hello, None, 0xA1),
            packet(Kind::Hello, Some("dev"), 0xB2),
            b"junk".to_vec(),
            packet(Kind::Hello, Some("dev"), 0xA1)[..20].to_vec(),
        ] {
            m.on_datagram(from, &bytes);
            assert!(m.book.is_empty() && m.outbox.is_empty());
        }
        // A peer of this cluster is learned and answered.
        m.on_datagram(from, &packet(Kind::Hello, Some("dev"), 0xA1));
        let e = m.book[&NodeId(0xA1)];
        assert_eq!((e.heartbeat, e.fabric.port()), (from, 5011));
        assert_eq!(m.outbox.len(), 1);
        let (to, reply) = &m.outbox[0];
        assert_eq!(*to, from);
        let reply = envelope::decode(reply).unwrap();
        assert_eq!((reply.kind, reply.sender), (Kind::HelloReply, NodeId(0xB2)));
        assert_eq!(reply.cluster_name, Some("dev"));
    }
}
