//! Migration driven as whole clusters in one process, from one seed (replay one with
//! `MIGRATE_SIM_SEED=<seed> cargo test -p apogee-cluster --test migrate_sim`; run seeds 1..=N
//! with `MIGRATE_SIM_SEEDS=N`, best with `--release`; `MIGRATE_SIM_TRACE=1` prints each view).
//!
//! Each node runs its own `Migrator`; the simulated network delivers the messages they
//! produce in random order; streams of records (a partition's data is a set of write ids)
//! finish, fail or are cut by a view change part-way; a client writes to the working master,
//! which applies each write and replicates it to `replication_targets` (acknowledged only when
//! every target is alive, as `write-commit-level all`); nodes are killed (their data is lost)
//! and fresh nodes join, each change committing a new view (new cluster key) mid-migration.
//!
//! Checked after every step: at most one node is working master of a partition and it and
//! every node whose copy the machine calls full hold every acknowledged write (for the
//! partition the step touched, and every fourth step one random written partition);
//! no node claims a column another claims; incoming and outgoing limits hold. Checked at every
//! view change: every written partition still has a live node whose copy the machine calls
//! full and which holds every acknowledged write (kills are at most replication-factor − 1
//! between two quiescent points). Checked at quiescence (nothing in flight, every node stable):
//! every partition has exactly one working master, its eventual master, known by all; holders
//! are full and hold every acknowledged write, nobody else keeps a copy; each column is
//! claimed by exactly its holder. Liveness: after the last fault, quiescence comes within
//! `QUIESCE_STEPS_MAX` steps.

use std::collections::{BTreeMap, BTreeSet};

use apogee_cluster::migrate::{
    Action, Copy, Message, MigrateConfig, MigrateError, Migrator, Output,
};
use apogee_cluster::view::ClusterKey;
use apogee_cluster::{NodeId, PartitionMap, Succession};
use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

mod common;
use common::Rng;

/// Steps after the last fault within which every run must be quiescent (the slowest seen is
/// printed; this is a few times it).
const QUIESCE_STEPS_MAX: u64 = 600_000;
/// Partitions that receive writes in a run (the machine's state is checked on all 4096).
const WRITTEN_PARTITIONS: usize = 24;

struct SimNode {
    machine: Migrator,
    data: BTreeMap<u16, BTreeSet<u32>>,
}

struct Stream {
    key: ClusterKey,
    partition: PartitionId,
    from: NodeId,
    to: NodeId,
}

struct Sim {
    rng: Rng,
    rf: u32,
    config: MigrateConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<(NodeId, NodeId, ClusterKey, Message)>,
    streams: Vec<Stream>,
    acked: BTreeMap<u16, BTreeSet<u32>>,
    written: Vec<u16>,
    next_write: u32,
    key: Option<ClusterKey>,
    map: Option<PartitionMap>,
    deaths_since_quiet: u32,
    writes_acked: u64,
    writes_refused: u64,
    stale_refused: u64,
}

impl Sim {
    fn new(seed: u64, rf: u32, config: MigrateConfig) -> Sim {
        let mut rng = Rng(seed);
        let mut written = BTreeSet::new();
        while written.len() < WRITTEN_PARTITIONS {
            written.insert(rng.below(u64::from(PARTITION_COUNT)) as u16);
        }
        Sim {
            rng,
            rf,
            config,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            streams: Vec::new(),
            acked: BTreeMap::new(),
            written: written.into_iter().collect(),
            next_write: 0,
            key: None,
            map: None,
            deaths_since_quiet: 0,
            writes_acked: 0,
            writes_refused: 0,
            stale_refused: 0,
        }
    }

    fn add_node(&mut self, id: NodeId) {
        let machine = Migrator::new(id, self.config).unwrap();
        self.nodes.insert(
            id,
            SimNode {
                machine,
                data: BTreeMap::new(),
            },
        );
    }

    fn apply(&mut self, from: NodeId, out: Output) {
        for m in out.messages {
            self.net.push((from, m.to, m.cluster_key, m.message));
        }
        for action in out.actions {
            match action {
                Action::Emigrate {
                    cluster_key,
                    partition,
                    to,
                } => self.streams.push(Stream {
                    key: cluster_key,
                    partition,
                    from,
                    to,
                }),
                Action::Drop { partition } => {
                    let node = self.nodes.get_mut(&from).unwrap();
                    node.data.remove(&partition.0);
                }
                Action::ClaimsChanged => {}
            }
        }
    }

    /// Commits a view of the live nodes: before it, the no-loss check; then every in-flight
    /// stream is cut part-way (the destination keeps what it got), and every member begins.
    fn commit_view(&mut self) {
        self.check_no_loss();
        let raw = (self.rng.next() & ((1 << 48) - 1)).max(1);
        let key = ClusterKey::new(raw).unwrap();
        let succession = Succession::new(self.nodes.keys().copied()).unwrap();
        let map = PartitionMap::balance(&succession, self.rf).unwrap();
        for s in std::mem::take(&mut self.streams) {
            let Some(source) = self.nodes.get(&s.from) else {
                continue;
            };
            let part: Vec<u32> = source
                .data
                .get(&s.partition.0)
                .map(|d| {
                    d.iter()
                        .copied()
                        .filter(|_| self.rng.per_mille(500))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(dest) = self.nodes.get_mut(&s.to) {
                dest.data.entry(s.partition.0).or_default().extend(part);
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            // Light hints (a partition with no record here) pace emigrations only: given on
            // one partition in 16 (thousands of concurrent streams would slow the simulator
            // tenfold), one in ten of them deliberately wrong, and nothing may be lost for it.
            let hints: Vec<bool> = (0..PARTITION_COUNT)
                .map(|p| {
                    let empty = self.nodes[&id].data.get(&p).is_none_or(|d| d.is_empty());
                    p % 16 == 0 && empty != self.rng.per_mille(100)
                })
                .collect();
            let mut out = Output::default();
            let node = self.nodes.get_mut(&id).unwrap();
            for (p, light) in hints.into_iter().enumerate() {
                node.machine.set_light(PartitionId(p as u16), light);
            }
            node.machine
                .begin_view(key, succession.clone(), map.clone(), &mut out)
                .unwrap();
            self.apply(id, out);
        }
        self.key = Some(key);
        self.map = Some(map);
        if std::env::var("MIGRATE_SIM_TRACE").is_ok() {
            eprintln!(
                "view {key}: {:?}, acked {}",
                succession.nodes(),
                self.writes_acked
            );
        }
    }

    fn check_no_loss(&self) {
        for (&p, acked) in &self.acked {
            let any_full = self
                .nodes
                .values()
                .any(|n| n.machine.copy(PartitionId(p)) == Copy::Full);
            // With no full copy left (a view cut before anyone's plan), the next master
            // merges every subset: then their union must hold every acknowledged write.
            let safe = if any_full {
                self.nodes.values().any(|n| {
                    n.machine.copy(PartitionId(p)) == Copy::Full
                        && n.data.get(&p).is_some_and(|d| d.is_superset(acked))
                })
            } else {
                let union: BTreeSet<u32> = self
                    .nodes
                    .values()
                    .filter_map(|n| n.data.get(&p))
                    .flatten()
                    .copied()
                    .collect();
                union.is_superset(acked)
            };
            if !safe {
                for (id, n) in &self.nodes {
                    let d = n.data.get(&p);
                    eprintln!(
                        "{id}: {:?} working {:?} has {} of {} acked, missing {:?}",
                        n.machine.copy(PartitionId(p)),
                        n.machine.working_master(PartitionId(p)),
                        d.map_or(0, |d| d.intersection(acked).count()),
                        acked.len(),
                        acked
                            .iter()
                            .filter(|w| !d.is_some_and(|d| d.contains(w)))
                            .take(5)
                            .collect::<Vec<_>>()
                    );
                }
            }
            assert!(
                safe,
                "partition {p}: no live full copy holds every acknowledged write"
            );
        }
    }

    fn deliver(&mut self) {
        let i = self.rng.below(self.net.len() as u64) as usize;
        let (from, to, key, message) = self.net.swap_remove(i);
        let touched = partition_of(&message);
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let mut out = Output::default();
        match node.machine.on_message(from, key, message, &mut out) {
            Ok(()) => {}
            Err(MigrateError::StaleView(_)) => self.stale_refused += 1,
            Err(MigrateError::NotAMember(_)) if Some(key) != self.key => self.stale_refused += 1,
            Err(e) => panic!("{to} refused a message from {from}: {e}"),
        }
        self.apply(to, out);
        if let Some(p) = touched {
            self.check_partition(p);
        }
    }

    fn finish_stream(&mut self, fail: bool) {
        let i = self.rng.below(self.streams.len() as u64) as usize;
        let s = self.streams.swap_remove(i);
        let alive = self.nodes.contains_key(&s.from) && self.nodes.contains_key(&s.to);
        if !alive {
            // The other end died: the source's server sees the connection fail.
            if let Some(src) = self.nodes.get_mut(&s.from) {
                let mut out = Output::default();
                let _ = src
                    .machine
                    .emigration_failed(s.key, s.partition, s.to, &mut out);
                self.apply(s.from, out);
            }
            if let Some(dst) = self.nodes.get_mut(&s.to) {
                let _ = dst.machine.immigration_failed(s.key, s.partition, s.from);
            }
            return;
        }
        let records: Vec<u32> = self.nodes[&s.from]
            .data
            .get(&s.partition.0)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Output::default();
        if fail {
            let part: Vec<u32> = records
                .into_iter()
                .filter(|_| self.rng.per_mille(500))
                .collect();
            let dst = self.nodes.get_mut(&s.to).unwrap();
            dst.data.entry(s.partition.0).or_default().extend(part);
            dst.machine
                .immigration_failed(s.key, s.partition, s.from)
                .unwrap();
            let src = self.nodes.get_mut(&s.from).unwrap();
            src.machine
                .emigration_failed(s.key, s.partition, s.to, &mut out)
                .unwrap();
        } else {
            let dst = self.nodes.get_mut(&s.to).unwrap();
            dst.data.entry(s.partition.0).or_default().extend(records);
            let src = self.nodes.get_mut(&s.from).unwrap();
            src.machine
                .emigration_finished(s.key, s.partition, s.to, &mut out)
                .unwrap();
        }
        self.apply(s.from, out);
        self.check_partition(s.partition);
    }

    fn write(&mut self) {
        let p = self.written[self.rng.below(self.written.len() as u64) as usize];
        let partition = PartitionId(p);
        let masters: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.machine.is_working_master(partition))
            .map(|(&id, _)| id)
            .collect();
        assert!(
            masters.len() <= 1,
            "partition {p}: working masters {masters:?}"
        );
        let Some(&master) = masters.first() else {
            self.writes_refused += 1;
            return;
        };
        let w = self.next_write;
        self.next_write += 1;
        let targets = self.nodes[&master].machine.replication_targets(partition);
        let mut all_applied = true;
        self.nodes
            .get_mut(&master)
            .unwrap()
            .data
            .entry(p)
            .or_default()
            .insert(w);
        for t in targets {
            match self.nodes.get_mut(&t) {
                Some(n) => {
                    if n.machine.accepts_replica_write(partition) {
                        n.data.entry(p).or_default().insert(w);
                    }
                }
                None => all_applied = false,
            }
        }
        if all_applied {
            self.acked.entry(p).or_default().insert(w);
            self.writes_acked += 1;
        } else {
            self.writes_refused += 1;
        }
    }

    /// Per-step checks on one partition's data.
    fn check_partition(&self, partition: PartitionId) {
        let Some(acked) = self.acked.get(&partition.0) else {
            return;
        };
        let mut masters = 0;
        for (id, n) in &self.nodes {
            let full = n.machine.copy(partition) == Copy::Full;
            let serves = n.machine.is_working_master(partition);
            masters += usize::from(serves);
            // A master merging subsets (no full copy was left) serves before it has them all.
            if full {
                let has = n
                    .data
                    .get(&partition.0)
                    .is_some_and(|d| d.is_superset(acked));
                assert!(
                    has,
                    "partition {}: {id} (working master {serves}) has a full copy without every acknowledged write",
                    partition.0
                );
            }
        }
        assert!(
            masters <= 1,
            "partition {}: {masters} working masters",
            partition.0
        );
        let serving_not_full = self.nodes.values().any(|n| {
            n.machine.is_working_master(partition) && n.machine.copy(partition) != Copy::Full
        });
        let any_full = self
            .nodes
            .values()
            .any(|n| n.machine.copy(partition) == Copy::Full);
        assert!(
            !(serving_not_full && any_full),
            "partition {}: a node without a full copy serves while another has one",
            partition.0
        );
        // A node serving a subset while another node holds records it has not merged must
        // resolve each transaction against that node (else a write acknowledged here could
        // lose to an older version at the merge).
        let p = partition.0;
        for (&id, n) in &self.nodes {
            if !n.machine.is_working_master(partition) || n.machine.copy(partition) == Copy::Full {
                continue;
            }
            let sources = n.machine.dup_res_sources(partition);
            let mine = n.data.get(&p);
            for (&o, m) in &self.nodes {
                let unmerged = m
                    .data
                    .get(&p)
                    .is_some_and(|d| !d.is_empty() && !mine.is_some_and(|mine| d.is_subset(mine)));
                assert!(
                    o == id || !unmerged || sources.contains(&o),
                    "partition {p}: {id} serves a subset without resolving against {o}, \
                     which holds records it lacks"
                );
            }
        }
    }

    /// Cheap checks on every node, every step.
    fn check_step(&mut self) {
        for n in self.nodes.values() {
            assert!(n.machine.incoming_active() <= self.config.incoming_partitions_max);
            assert!(n.machine.outgoing_active() <= self.config.outgoing_partitions_max);
        }
        // One random written partition every fourth step (the touched one is checked always).
        if self.rng.below(4) == 0 {
            let p = self.written[self.rng.below(self.written.len() as u64) as usize];
            self.check_partition(PartitionId(p));
            let mut columns = BTreeSet::new();
            for (id, n) in &self.nodes {
                for c in n.machine.claims(PartitionId(p)) {
                    assert!(
                        columns.insert(c),
                        "partition {p}: column {c} claimed twice ({id})"
                    );
                }
            }
        }
    }

    fn is_quiet(&self) -> bool {
        self.net.is_empty()
            && self.streams.is_empty()
            && self.nodes.values().all(|n| n.machine.is_stable())
    }

    /// The end state every migration must reach.
    fn check_quiet(&self) {
        let map = self.map.as_ref().unwrap();
        for p in 0..PARTITION_COUNT {
            let partition = PartitionId(p);
            let holders = map.holders(partition);
            for (id, n) in &self.nodes {
                let m = &n.machine;
                assert_eq!(
                    m.working_master(partition),
                    Some(holders[0]),
                    "p {p} on {id}"
                );
                assert!(m.is_settled(partition), "p {p} not settled on {id}");
                let want = if holders.contains(id) {
                    Copy::Full
                } else {
                    Copy::Absent
                };
                assert_eq!(m.copy(partition), want, "p {p} copy on {id}");
                let mut want_claims: Vec<usize> =
                    holders.iter().position(|h| h == id).into_iter().collect();
                want_claims.sort_unstable();
                assert_eq!(m.claims(partition), want_claims, "p {p} claims on {id}");
                assert_eq!(m.partitions_remaining(), 0);
                if *id == holders[0] {
                    let mut want: Vec<NodeId> = holders[1..].to_vec();
                    want.sort_unstable();
                    assert_eq!(m.replication_targets(partition), want, "p {p} targets");
                }
            }
        }
        for (&p, acked) in &self.acked {
            let holders = map.holders(PartitionId(p));
            for (id, n) in &self.nodes {
                let data = n.data.get(&p);
                if holders.contains(id) {
                    assert!(
                        data.is_some_and(|d| d.is_superset(acked)),
                        "p {p}: holder {id} lacks acknowledged writes"
                    );
                } else {
                    assert!(data.is_none_or(|d| d.is_empty()), "p {p}: {id} kept a copy");
                }
            }
        }
    }

    /// One random event; returns false when nothing can happen (quiet).
    fn step(&mut self) {
        let roll = self.rng.below(100);
        if roll < 50 && !self.net.is_empty() {
            self.deliver();
        } else if roll < 70 && !self.streams.is_empty() {
            let fail = self.rng.per_mille(30);
            self.finish_stream(fail);
        } else if roll < 76 {
            self.write();
        } else {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let id = ids[self.rng.below(ids.len() as u64) as usize];
            let mut out = Output::default();
            self.nodes.get_mut(&id).unwrap().machine.on_tick(&mut out);
            self.apply(id, out);
        }
        self.check_step();
    }
}

fn partition_of(m: &Message) -> Option<PartitionId> {
    match m {
        Message::Versions { .. } => None,
        Message::Start { partition, .. }
        | Message::StartReply { partition, .. }
        | Message::Done { partition }
        | Message::MasterReady { partition }
        | Message::Settled { partition }
        | Message::Dropped { partition } => Some(*partition),
    }
}

struct RunReport {
    faults: u32,
    max_quiesce_steps: u64,
    writes_acked: u64,
    stale_refused: u64,
}

/// One run: `start` nodes form a cluster and take writes, then `faults` kills and joins, each
/// a new view after a random stretch of steps (mid-migration or not), then quiescence.
fn run(seed: u64, rf: u32, start: usize, faults: u32, config: MigrateConfig) -> RunReport {
    let mut sim = Sim::new(seed, rf, config);
    for i in 0..start {
        sim.add_node(NodeId(0xA0 + i as u64));
    }
    sim.commit_view();
    let mut next_id = 0xB0;
    let mut max_quiesce = 0;
    let mut pending_view: Option<u64> = None;
    let mut done_faults = 0;
    let mut steps_since_change = 0u64;
    loop {
        sim.step();
        steps_since_change += 1;
        if pending_view.is_none() && sim.is_quiet() {
            sim.check_quiet();
            sim.deaths_since_quiet = 0;
            max_quiesce = max_quiesce.max(steps_since_change);
            if done_faults >= faults && pending_view.is_none() {
                break;
            }
        }
        assert!(
            steps_since_change <= QUIESCE_STEPS_MAX,
            "seed {seed}: not quiet {steps_since_change} steps after the last change"
        );
        if let Some(left) = pending_view.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                pending_view = None;
                sim.commit_view();
                steps_since_change = 0;
            }
            continue;
        }
        if done_faults < faults && sim.rng.per_mille(if sim.is_quiet() { 500 } else { 2 }) {
            done_faults += 1;
            let n = sim.nodes.len();
            let may_kill = n > 2 && sim.deaths_since_quiet + 1 < rf;
            let may_join = n < 8;
            if may_kill && (!may_join || sim.rng.per_mille(500)) {
                let ids: Vec<NodeId> = sim.nodes.keys().copied().collect();
                let victim = ids[sim.rng.below(n as u64) as usize];
                sim.nodes.remove(&victim);
                sim.deaths_since_quiet += 1;
                // The survivors notice after a while (heartbeat timeout).
                pending_view = Some(1 + sim.rng.below(400));
            } else if may_join {
                sim.add_node(NodeId(next_id));
                next_id += 1;
                sim.commit_view();
                steps_since_change = 0;
            }
        }
    }
    RunReport {
        faults: done_faults,
        max_quiesce_steps: max_quiesce,
        writes_acked: sim.writes_acked,
        stale_refused: sim.stale_refused,
    }
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("MIGRATE_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MIGRATE_SIM_SEED is a number")],
        Err(_) => match std::env::var("MIGRATE_SIM_SEEDS") {
            Ok(n) => (1..=n.parse::<u64>().expect("MIGRATE_SIM_SEEDS is a count")).collect(),
            Err(_) => default.collect(),
        },
    }
}

#[test]
fn kills_and_joins_mid_migration_lose_no_acknowledged_write() {
    let mut worst = 0;
    let mut acked = 0;
    let mut stale = 0;
    for seed in seeds(1..9) {
        let rf = 2 + (seed % 2) as u32;
        let config = MigrateConfig {
            incoming_partitions_max: 1 + (seed % 4) as usize,
            outgoing_partitions_max: 1 + (seed % 3) as usize,
        };
        eprintln!("seed {seed}: rf {rf}, {config:?}");
        let started = std::time::Instant::now();
        let r = run(seed, rf, 3, 4, config);
        eprintln!(
            "seed {seed}: {} faults, slowest quiescence {} steps, {:?}",
            r.faults,
            r.max_quiesce_steps,
            started.elapsed()
        );
        assert!(r.faults > 0);
        worst = worst.max(r.max_quiesce_steps);
        acked += r.writes_acked;
        stale += r.stale_refused;
    }
    assert!(acked > 0 && stale > 0, "the runs wrote and cut migrations");
    eprintln!("slowest quiescence: {worst} steps; {acked} writes acknowledged; {stale} stale messages refused");
}
