//! Unit tests of one node's migration machine, rule by rule, with a tiny in-order driver for
//! the few nodes each test needs (the seeded, faulty whole-cluster runs are
//! `tests/migrate_sim.rs`).

use super::*;

fn key(k: u64) -> ClusterKey {
    ClusterKey::new(k).unwrap()
}

const A: NodeId = NodeId(0xA1);
const B: NodeId = NodeId(0xB2);
const C: NodeId = NodeId(0xC3);

struct Cluster {
    nodes: BTreeMap<NodeId, Migrator>,
    net: VecDeque<(NodeId, Outgoing)>,
    streams: Vec<(NodeId, ClusterKey, PartitionId, NodeId)>,
    map: Option<PartitionMap>,
    key: ClusterKey,
}

impl Cluster {
    fn new(ids: &[NodeId], config: MigrateConfig) -> Cluster {
        Cluster {
            nodes: ids
                .iter()
                .map(|&id| (id, Migrator::new(id, config).unwrap()))
                .collect(),
            net: VecDeque::new(),
            streams: Vec::new(),
            map: None,
            key: key(1),
        }
    }

    fn apply(&mut self, from: NodeId, out: Output) {
        for m in out.messages {
            self.net.push_back((from, m));
        }
        for a in out.actions {
            if let Action::Emigrate {
                cluster_key,
                partition,
                to,
            } = a
            {
                self.streams.push((from, cluster_key, partition, to));
            }
        }
    }

    fn view(&mut self, k: u64) {
        self.key = key(k);
        let succession = Succession::new(self.nodes.keys().copied()).unwrap();
        let map = PartitionMap::balance(&succession, 2).unwrap();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let mut out = Output::default();
            self.nodes
                .get_mut(&id)
                .unwrap()
                .begin_view(self.key, succession.clone(), map.clone(), &mut out)
                .unwrap();
            self.apply(id, out);
        }
        self.map = Some(map);
    }

    /// Delivers every message (in order) without finishing any stream.
    fn deliver_all(&mut self) {
        while let Some((from, m)) = self.net.pop_front() {
            let mut out = Output::default();
            if let Some(node) = self.nodes.get_mut(&m.to) {
                node.on_message(from, m.cluster_key, m.message, &mut out)
                    .unwrap();
            }
            self.apply(m.to, out);
        }
    }

    /// Finishes every stream and delivers, until nothing moves; ticks so deferred ones retry.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            self.deliver_all();
            if let Some((from, k, p, to)) = self.streams.pop() {
                let mut out = Output::default();
                self.nodes
                    .get_mut(&from)
                    .unwrap()
                    .emigration_finished(k, p, to, &mut out)
                    .unwrap();
                self.apply(from, out);
                continue;
            }
            if self.nodes.values().all(|n| n.is_stable()) && self.net.is_empty() {
                return;
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let mut out = Output::default();
                self.nodes.get_mut(&id).unwrap().on_tick(&mut out);
                self.apply(id, out);
            }
        }
        panic!("did not settle");
    }

    /// Takes `id` out into a cluster of its own (a node cut off, or stalled, that goes on
    /// alone).
    fn split_off(&mut self, id: NodeId) -> Cluster {
        Cluster {
            nodes: [(id, self.nodes.remove(&id).unwrap())]
                .into_iter()
                .collect(),
            net: VecDeque::new(),
            streams: Vec::new(),
            map: None,
            key: self.key,
        }
    }

    fn map(&self) -> &PartitionMap {
        self.map.as_ref().unwrap()
    }
}

/// A partition whose new row (in `map`) satisfies `pred`.
fn find(map: &PartitionMap, pred: impl Fn(&[NodeId]) -> bool) -> PartitionId {
    (0..PARTITION_COUNT)
        .map(PartitionId)
        .find(|&p| pred(map.holders(p)))
        .unwrap()
}

#[test]
fn limits_out_of_aerospikes_ranges_are_refused() {
    let bad = MigrateConfig {
        outgoing_partitions_max: 0,
        ..MigrateConfig::default()
    };
    assert_eq!(
        Migrator::new(A, bad).err(),
        Some(MigrateError::BadThreads(0))
    );
    let bad = MigrateConfig {
        incoming_partitions_max: INCOMING_PARTITIONS_MAX_LIMIT + 1,
        ..MigrateConfig::default()
    };
    assert!(matches!(
        Migrator::new(A, bad),
        Err(MigrateError::BadIncoming(_))
    ));
    assert_eq!(
        MigrateConfig::default(),
        MigrateConfig {
            incoming_partitions_max: 4,
            outgoing_partitions_max: 1
        }
    );
}

#[test]
fn a_new_cluster_moves_nothing_and_is_stable_once_every_version_is_in() {
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(7);
    assert!(
        c.nodes.values().all(|n| !n.is_stable() && !n.is_planned()),
        "not stable before the versions are exchanged"
    );
    c.deliver_all();
    assert!(c.streams.is_empty(), "nothing to move in a new cluster");
    for (id, n) in &c.nodes {
        assert!(n.is_stable());
        for p in (0..PARTITION_COUNT).map(PartitionId) {
            let holders = c.map().holders(p);
            assert_eq!(n.working_master(p), Some(holders[0]));
            let want = holders
                .iter()
                .position(|h| h == id)
                .into_iter()
                .collect::<Vec<_>>();
            assert_eq!(n.claims(p), want);
        }
    }
}

#[test]
fn a_joining_node_claims_nothing_until_its_copy_is_complete_and_the_old_master_serves_meanwhile() {
    let mut c = Cluster::new(&[A, B], MigrateConfig::default());
    c.view(1);
    c.settle();
    c.nodes
        .insert(C, Migrator::new(C, MigrateConfig::default()).unwrap());
    let old = PartitionMap::balance(&Succession::new([A, B]).unwrap(), 2).unwrap();
    c.view(2);
    c.deliver_all();
    // A partition the joiner will master.
    let p = find(c.map(), |h| h[0] == C);
    let old_master = old.master(p);
    for n in c.nodes.values() {
        assert_eq!(n.working_master(p), Some(old_master), "on {}", n.id());
    }
    assert!(c.nodes[&C].claims(p).is_empty());
    assert_eq!(c.nodes[&old_master].claims(p)[0], 0);
    assert_eq!(
        c.nodes[&C].copy(p),
        Copy::Subset,
        "it receives writes already"
    );
    // Every emigration in flight goes to C, from the old master of its partition.
    assert!(!c.streams.is_empty());
    for &(from, _, q, to) in &c.streams {
        assert_eq!(to, C);
        assert_eq!(from, old.master(q));
    }
    let tx: usize = c.nodes.values().map(|n| n.tx_partitions_remaining()).sum();
    let rx: usize = c.nodes.values().map(|n| n.rx_partitions_remaining()).sum();
    assert_eq!(tx, rx, "each owed emigration is an expected immigration");
    assert!(c.nodes.values().all(|n| !n.is_stable() || n.id() != C));
    c.settle();
    for n in c.nodes.values() {
        assert_eq!(n.working_master(p), Some(C));
        assert!(n.is_settled(p) && n.is_stable());
    }
    assert_eq!(c.nodes[&C].claims(p), vec![0]);
    assert_eq!(c.nodes[&C].copy(p), Copy::Full);
}

/// A 2-node cluster with every partition settled, then C joins (view 2), versions exchanged.
fn joined() -> (Cluster, PartitionMap) {
    let mut c = Cluster::new(&[A, B], MigrateConfig::default());
    c.view(1);
    c.settle();
    c.nodes
        .insert(C, Migrator::new(C, MigrateConfig::default()).unwrap());
    let old = PartitionMap::balance(&Succession::new([A, B]).unwrap(), 2).unwrap();
    c.view(2);
    c.deliver_all();
    (c, old)
}

#[test]
fn the_old_master_hands_off_and_a_non_holder_drops_only_when_settled() {
    let (mut c, old) = joined();
    // C masters it; rendezvous rows keep the old master as the replica and push the old
    // replica out of the holders.
    let p = find(c.map(), |h| h[0] == C);
    let m = old.master(p);
    let dropped = old.replicas(p)[0];
    assert_eq!(c.map().holders(p), &[C, m][..]);
    for n in c.nodes.values() {
        assert_eq!(n.working_master(p), Some(m), "the old master keeps serving");
    }
    // It writes to the eventual holder still receiving and to the old replica, which keeps
    // a full copy until it drops it.
    let mut targets = c.nodes[&m].replication_targets(p);
    targets.sort_unstable();
    let mut want = vec![C, dropped];
    want.sort_unstable();
    assert_eq!(targets, want);
    // Finish streams until p's is the one in flight (one thread per node).
    while !c.streams.iter().any(|s| s.2 == p) {
        let (from, k, q, to) = c.streams.pop().unwrap();
        let mut out = Output::default();
        c.nodes
            .get_mut(&from)
            .unwrap()
            .emigration_finished(k, q, to, &mut out)
            .unwrap();
        c.apply(from, out);
        c.deliver_all();
    }
    let i = c.streams.iter().position(|s| s.2 == p).unwrap();
    let (from, k, _, to) = c.streams.remove(i);
    assert_eq!((from, to), (m, C));
    assert_eq!(c.nodes[&dropped].copy(p), Copy::Full, "kept until settled");
    let mut out = Output::default();
    c.nodes
        .get_mut(&m)
        .unwrap()
        .emigration_finished(k, p, C, &mut out)
        .unwrap();
    // The hand-off: m stops serving at once, C once the Done reaches it.
    assert!(!c.nodes[&m].is_working_master(p));
    assert_eq!(
        c.nodes[&m].claims(p),
        vec![1],
        "m is the replica now, and full"
    );
    assert!(!c.nodes[&C].is_working_master(p));
    assert!(out.actions.contains(&Action::ClaimsChanged));
    c.apply(m, out);
    c.deliver_all();
    assert!(c.nodes[&C].is_working_master(p));
    assert_eq!(c.nodes[&C].claims(p), vec![0]);
    // Both holders are full: settled, the old replica dropped and said so.
    assert!(c.nodes[&dropped].is_settled(p));
    assert_eq!(c.nodes[&dropped].copy(p), Copy::Absent);
    assert!(c.nodes[&dropped].claims(p).is_empty());
    assert_eq!(c.nodes[&C].replication_targets(p), vec![m]);
}

#[test]
fn a_replica_that_lacks_data_receives_from_the_master_after_the_master_is_complete() {
    // 3 nodes settled; B leaves: partitions where B was a holder need a new replica.
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(1);
    c.settle();
    let old = c.map().clone();
    c.nodes.remove(&B);
    c.view(2);
    c.deliver_all();
    let p = (0..PARTITION_COUNT)
        .map(PartitionId)
        .find(|&p| old.master(p) == B)
        .unwrap();
    // The old replica (full) serves; the other node lacks data.
    let survivor = old.replicas(p)[0];
    let other = if survivor == A { C } else { A };
    for n in c.nodes.values() {
        assert_eq!(n.working_master(p), Some(survivor));
    }
    if c.map().master(p) == survivor {
        // Phase two only: survivor -> other, and other claims column 1 once done.
        assert!(c.nodes[&other].rx_partitions_remaining() > 0);
        assert!(c.nodes[&other].claims(p).is_empty());
    } else {
        // The new master lacks data: phase one (survivor -> master); the survivor is the
        // replica and already full, so no phase two.
        assert!(c.nodes[&other].claims(p).is_empty());
    }
    c.settle();
    assert_eq!(c.nodes[&c.map().master(p)].claims(p), vec![0]);
    assert_eq!(c.nodes[&c.map().replicas(p)[0]].claims(p), vec![1]);
}

#[test]
fn incoming_is_capped_and_a_refused_start_is_retried_on_a_tick() {
    let config = MigrateConfig {
        incoming_partitions_max: 1,
        outgoing_partitions_max: 4,
    };
    let mut c = Cluster::new(&[A, B], config);
    c.view(1);
    c.settle();
    c.nodes.insert(C, Migrator::new(C, config).unwrap());
    c.view(2);
    c.deliver_all();
    // A and B each asked up to 4; C took only one.
    assert_eq!(c.nodes[&C].incoming_active(), 1);
    assert_eq!(c.streams.len(), 1);
    assert!(c.nodes[&A].outgoing_active() <= 4 && c.nodes[&B].outgoing_active() <= 4);
    // The refused ones wait for a tick; finishing the one stream frees C's slot.
    let (from, k, p, to) = c.streams.pop().unwrap();
    let mut out = Output::default();
    c.nodes
        .get_mut(&from)
        .unwrap()
        .emigration_finished(k, p, to, &mut out)
        .unwrap();
    c.apply(from, out);
    c.deliver_all();
    assert_eq!(c.nodes[&C].incoming_active(), 0);
    let mut out = Output::default();
    c.nodes.get_mut(&A).unwrap().on_tick(&mut out);
    assert!(out
        .messages
        .iter()
        .any(|m| matches!(m.message, Message::Start { .. })));
    c.apply(A, out);
    c.settle();
    assert!(c.nodes.values().all(|n| n.is_stable()));
}

#[test]
fn a_failed_emigration_is_retried_and_its_partial_copy_never_counts() {
    let (mut c, _) = joined();
    let (from, k, p, to) = c.streams.pop().unwrap();
    let mut out = Output::default();
    c.nodes
        .get_mut(&from)
        .unwrap()
        .emigration_failed(k, p, to, &mut out)
        .unwrap();
    c.nodes
        .get_mut(&to)
        .unwrap()
        .immigration_failed(k, p, from)
        .unwrap();
    c.apply(from, out);
    assert_eq!(c.nodes[&to].copy(p), Copy::Subset);
    assert!(c.nodes[&to].claims(p).is_empty());
    assert!(c.nodes[&from].tx_partitions_remaining() > 0, "still owed");
    // Finishing a failed stream again is refused: the server must wait for the retry.
    assert!(matches!(
        c.nodes
            .get_mut(&from)
            .unwrap()
            .emigration_finished(k, p, to, &mut Output::default()),
        Err(MigrateError::Unexpected { .. })
    ));
    c.settle();
    assert_eq!(c.nodes[&to].copy(p), Copy::Full);
}

#[test]
fn a_new_view_aborts_everything_and_trusts_nothing_half_received() {
    let (mut c, _) = joined();
    let (from, k, p, to) = c.streams[0];
    assert_eq!(c.nodes[&to].copy(p), Copy::Subset);
    c.view(3);
    // The stream of view 2 can no longer finish, and its destination is still a subset.
    assert_eq!(
        c.nodes
            .get_mut(&from)
            .unwrap()
            .emigration_finished(k, p, to, &mut Output::default()),
        Err(MigrateError::StaleView(k))
    );
    assert_eq!(c.nodes[&to].copy(p), Copy::Subset);
    // A message of view 2 arriving now is refused.
    let mut out = Output::default();
    assert_eq!(
        c.nodes
            .get_mut(&to)
            .unwrap()
            .on_message(from, k, Message::Done { partition: p }, &mut out),
        Err(MigrateError::StaleView(k))
    );
    c.streams.clear();
    c.deliver_all();
    c.settle();
    assert!(c.nodes.values().all(|n| n.is_stable() && n.is_settled(p)));
}

#[test]
fn a_cold_restart_reports_its_full_copies_as_subsets() {
    let copies = vec![Copy::Full; PARTITION_COUNT as usize];
    let m = Migrator::with_copies(A, MigrateConfig::default(), copies).unwrap();
    assert_eq!(m.copy(PartitionId(9)), Copy::Subset);
    assert!(matches!(
        Migrator::with_copies(A, MigrateConfig::default(), vec![Copy::Absent; 3]),
        Err(MigrateError::BadVersions { count: 3, .. })
    ));
}

#[test]
fn when_every_full_copy_is_lost_the_master_serves_resolving_against_each_unmerged_subset() {
    // A and B settled, then both restart cold (subsets) beside a fresh C.
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    let subsets = vec![Copy::Subset; PARTITION_COUNT as usize];
    for id in [A, B] {
        c.nodes.insert(
            id,
            Migrator::with_copies(id, MigrateConfig::default(), subsets.clone()).unwrap(),
        );
    }
    c.view(4);
    c.deliver_all();
    let p = find(c.map(), |h| h[0] == C);
    // No full copy anywhere: C serves at once, and every transaction first looks its record
    // up on both subsets (a write on C's copy alone could lose to an older version at the
    // merge); nobody else resolves anything.
    assert!(c.nodes.values().all(|n| n.working_master(p) == Some(C)));
    assert!(c.nodes[&C].copy(p) != Copy::Full);
    assert_eq!(c.nodes[&C].dup_res_sources(p), vec![A, B]);
    for id in [A, B] {
        assert!(c.nodes[&id].dup_res_sources(p).is_empty());
    }
    // A source whose stream is in is no longer asked; once both are, none is.
    let i = (c.streams.iter())
        .position(|&(from, _, q, _)| q == p && from == A)
        .expect("A's merge of p is streaming (merges are urgent, lowest partitions first)");
    let (from, k, q, to) = c.streams.remove(i);
    let mut out = Output::default();
    (c.nodes.get_mut(&from).unwrap())
        .emigration_finished(k, q, to, &mut out)
        .unwrap();
    c.apply(from, out);
    c.deliver_all();
    assert_eq!(c.nodes[&C].dup_res_sources(p), vec![B]);
    assert!(c.nodes[&C].copy(p) != Copy::Full);
    c.settle();
    assert_eq!(c.nodes[&C].copy(p), Copy::Full);
    assert!(c.nodes[&C].dup_res_sources(p).is_empty());
    assert!(c.nodes.values().all(|n| n.working_master(p) == Some(C)));
    let holders = c.map().holders(p).to_vec();
    for (id, n) in &c.nodes {
        let want = if holders.contains(id) {
            Copy::Full
        } else {
            Copy::Absent
        };
        assert_eq!(n.copy(p), want);
    }
}

#[test]
fn messages_from_strangers_and_before_any_view_are_refused() {
    let mut m = Migrator::new(A, MigrateConfig::default()).unwrap();
    let msg = Message::Done {
        partition: PartitionId(1),
    };
    assert_eq!(
        m.on_message(B, key(1), msg.clone(), &mut Output::default()),
        Err(MigrateError::NoView)
    );
    let succession = Succession::new([A, B]).unwrap();
    let map = PartitionMap::balance(&succession, 2).unwrap();
    m.begin_view(key(1), succession, map.clone(), &mut Output::default())
        .unwrap();
    assert_eq!(
        m.on_message(C, key(1), msg, &mut Output::default()),
        Err(MigrateError::NotAMember(C))
    );
    let other = Succession::new([B, C]).unwrap();
    assert_eq!(
        m.begin_view(key(2), other, map, &mut Output::default()),
        Err(MigrateError::NotMember)
    );
}

#[test]
fn a_new_replica_receives_from_the_new_master_only_after_the_master_is_complete() {
    // A and B settled; C and D join at once: partitions whose holders are C and D (both
    // empty) need phase one (old master -> new master) and then phase two (-> replica).
    const D: NodeId = NodeId(0xD4);
    let mut c = Cluster::new(&[A, B], MigrateConfig::default());
    c.view(1);
    c.settle();
    let old = c.map().clone();
    for id in [C, D] {
        c.nodes
            .insert(id, Migrator::new(id, MigrateConfig::default()).unwrap());
    }
    c.view(2);
    c.deliver_all();
    let p = (0..PARTITION_COUNT)
        .map(PartitionId)
        .find(|&p| {
            let h = c.map().holders(p);
            !old.holders(p).contains(&h[0]) && !old.holders(p).contains(&h[1])
        })
        .unwrap();
    let (master, replica) = (c.map().master(p), c.map().replicas(p)[0]);
    assert!(
        c.nodes[&master].tx_partitions_remaining() == 0,
        "it has nothing to send yet"
    );
    assert!(c.nodes[&replica].rx_partitions_remaining() > 0);
    // Finish streams one by one; p's phase two must never start before its phase one ended.
    let mut master_done = false;
    for _ in 0..100_000 {
        c.deliver_all();
        if c.nodes[&master].copy(p) == Copy::Full {
            master_done = true;
        }
        let Some((from, k, q, to)) = c.streams.pop() else {
            if c.nodes.values().all(|n| n.is_stable()) && c.net.is_empty() {
                break;
            }
            let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
            for id in ids {
                let mut out = Output::default();
                c.nodes.get_mut(&id).unwrap().on_tick(&mut out);
                c.apply(id, out);
            }
            continue;
        };
        if q == p && to == replica {
            assert!(
                master_done,
                "phase two began before the master was complete"
            );
            assert_eq!(from, master);
        }
        let mut out = Output::default();
        c.nodes
            .get_mut(&from)
            .unwrap()
            .emigration_finished(k, q, to, &mut out)
            .unwrap();
        c.apply(from, out);
    }
    assert!(master_done);
    assert_eq!(c.nodes[&replica].copy(p), Copy::Full);
    assert_eq!(c.nodes[&replica].claims(p), vec![1]);
    for old_holder in old.holders(p) {
        assert_eq!(c.nodes[old_holder].copy(p), Copy::Absent, "dropped");
    }
}

#[test]
fn light_emigrations_hold_no_thread_and_no_incoming_slot() {
    let config = MigrateConfig {
        incoming_partitions_max: 1,
        outgoing_partitions_max: 1,
    };
    let mut c = Cluster::new(&[A, B], config);
    c.view(1);
    c.settle();
    c.nodes.insert(C, Migrator::new(C, config).unwrap());
    for n in [A, B] {
        let m = c.nodes.get_mut(&n).unwrap();
        for p in 0..PARTITION_COUNT {
            m.set_light(PartitionId(p), true);
        }
    }
    c.view(2);
    c.deliver_all();
    // Every partition C takes was asked at once and accepted, beyond both limits.
    assert!(c.streams.len() > 1000, "{} streams", c.streams.len());
    assert_eq!(c.nodes[&C].incoming_active(), 0, "light ones hold no slot");
    assert!(c.nodes[&A].outgoing_active() == 0 && c.nodes[&B].outgoing_active() == 0);
    c.settle();
    assert!(c.nodes.values().all(|n| n.is_stable()));
}

#[test]
fn a_node_back_from_a_view_it_missed_is_planned_as_a_subset() {
    // C is paused (or cut off) while A and B go on in view 2 without it; when it comes back
    // its copies still say full, but it may have missed every write of view 2, and may hold
    // writes it applied after they left (in doubt, never replicated) at higher generations:
    // its copy is never served alone, and every transaction resolves against all copies
    // until they are merged.
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(1);
    c.settle();
    let paused = c.nodes.remove(&C).unwrap();
    c.view(2);
    c.settle();
    c.nodes.insert(C, paused);
    c.view(3);
    c.deliver_all();
    let p = find(c.map(), |h| h[0] == C);
    assert_ne!(c.nodes[&C].copy(p), Copy::Full);
    assert!(c.nodes.values().all(|n| n.working_master(p) == Some(C)));
    assert_eq!(
        c.nodes[&C].dup_res_sources(p),
        vec![A, B],
        "C serves only what it resolved against the others' copies"
    );
    c.settle();
    assert_eq!(c.nodes[&C].copy(p), Copy::Full);
    assert!(c.nodes.values().all(|n| n.working_master(p) == Some(C)));

    // A node that missed nothing (its previous view is everyone's) keeps its full copies.
    c.view(4);
    c.deliver_all();
    assert!(c.nodes[&C].is_working_master(p));
}

#[test]
fn full_copies_of_two_sides_of_a_split_are_merged_with_duplicate_resolution() {
    // A and B went on in view 2, C alone in view 3 (each side served): at the merge no
    // side's copy is trusted alone; the eventual master serves at once, resolving each
    // transaction against every other side until it has merged them.
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(1);
    c.settle();
    let mut lone = c.split_off(C);
    lone.view(3);
    lone.settle();
    c.view(2);
    c.settle();
    c.nodes.insert(C, lone.nodes.remove(&C).unwrap());
    c.view(4);
    c.deliver_all();
    let p = find(c.map(), |h| h.contains(&C));
    let master = c.map().master(p);
    assert!(c
        .nodes
        .values()
        .all(|n| n.working_master(p) == Some(master)));
    let others: Vec<NodeId> = [A, B, C].into_iter().filter(|&n| n != master).collect();
    assert_eq!(c.nodes[&master].dup_res_sources(p), others);
    c.settle();
    assert!(c.nodes[&master].dup_res_sources(p).is_empty());
    let master = c.map().master(p);
    assert!(c
        .nodes
        .values()
        .all(|n| n.working_master(p) == Some(master)));
    assert!(c.nodes.values().all(|n| n.is_stable()));
}

#[test]
fn members_that_stayed_together_in_a_view_are_not_stale_to_one_that_left_it_alone() {
    // A, B, C in view 1. C stalls and forms view 2 alone while A and B stay in view 1 (they
    // never saw it leave, and kept serving), then all meet in view 3. C went past view 1, but
    // A and B continued it together: they are not stale (rule 10 is for a node that missed
    // views alone, paused). C's copies from view 2 — of partitions it had no record of, made
    // from nothing — and theirs diverged: merged, never C's alone trusted (that served
    // writes at generation 1 over records at generation 6, lost at the merge).
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(1);
    c.settle();
    let mut lone = c.split_off(C);
    lone.view(2);
    lone.settle();
    let p = find(c.map(), |h| !h.contains(&C));
    assert!(
        lone.nodes[&C].is_working_master(p),
        "alone, it serves everything"
    );
    c.nodes.insert(C, lone.nodes.remove(&C).unwrap());
    c.view(3);
    c.deliver_all();
    let master = c.map().master(p);
    assert_ne!(master, C);
    assert!(c
        .nodes
        .values()
        .all(|n| n.working_master(p) == Some(master)));
    assert!(
        c.nodes[&master].dup_res_sources(p).contains(&C),
        "C's view-2 writes are merged in: {:?}",
        c.nodes[&master].dup_res_sources(p)
    );
    c.settle();
    assert!(c.nodes.values().all(|n| n.is_stable()));
}

#[test]
fn every_member_in_its_first_view_is_a_new_cluster_whose_empty_copies_are_full() {
    let mut c = Cluster::new(&[A, B], MigrateConfig::default());
    c.view(1);
    c.settle();
    let p = find(c.map(), |_| true);
    let master = c.map().master(p);
    assert_eq!(c.nodes[&master].copy(p), Copy::Full);
    assert!(c.nodes.values().all(|n| n.is_stable()));
}

#[test]
fn a_subset_that_took_writes_on_the_other_side_of_a_split_is_merged_into_a_full_copy() {
    // A, B, C in view 1. B is cut off and goes on alone (view 2); A and C go on in view 3,
    // where A, an eventual holder of a partition B and C held, takes that view's replicated
    // writes before its copy is complete. A then meets B first (view 4, C still apart): B's
    // copy is full, A's a subset — but a subset with view 3's acknowledged writes, which no
    // full copy here holds. It is merged (a nemesis split lost them: B served its own copy,
    // and A dropped its subset once C came back).
    let ab = Succession::new([A, B]).unwrap();
    let ab_map = PartitionMap::balance(&ab, 2).unwrap();
    let mut c = Cluster::new(&[A, B, C], MigrateConfig::default());
    c.view(1);
    c.settle();
    let p = (0..PARTITION_COUNT)
        .map(PartitionId)
        .find(|&p| {
            let h = c.map().holders(p);
            h.contains(&B) && h.contains(&C) && ab_map.master(p) == B
        })
        .unwrap();
    let mut lone = c.split_off(B);
    lone.view(2);
    lone.settle();
    c.view(3);
    c.deliver_all(); // no stream finishes: A's copy stays a subset
    assert_eq!(c.nodes[&A].copy(p), Copy::Subset);
    let a = c.nodes.remove(&A).unwrap();
    lone.nodes.insert(A, a);
    lone.view(4);
    lone.deliver_all();
    assert_eq!(lone.map().master(p), B);
    assert!(lone.nodes.values().all(|n| n.working_master(p) == Some(B)));
    assert_eq!(
        lone.nodes[&B].dup_res_sources(p),
        vec![A],
        "A's view-3 writes are resolved against, then merged"
    );
    lone.settle();
    assert!(lone.nodes[&B].dup_res_sources(p).is_empty());
    assert!(lone.nodes.values().all(|n| n.is_stable()));
}
