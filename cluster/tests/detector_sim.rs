//! SWIM failure detection (`detector`, over the `foca` crate) under a simulated clock and
//! network: nodes find each other from one seed, a silent node is declared down by every
//! other in about heartbeat `timeout × interval` (1.5 s with Aerospike's defaults), and a
//! restarted node is seen again. Seeded; `DETECTOR_SIM_SEED` replays a run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use apogee_cluster::detector::{Detector, DetectorConfig, DetectorOutput};
use apogee_cluster::view::Instant;
use apogee_cluster::NodeId;

const STEP_MS: u64 = 5;

/// A packet in flight, ordered by delivery time, then by sending order (replayable ties).
type Packet = (u64, u64, usize, Vec<u8>);

struct Sim {
    now_ms: u64,
    rng: u64,
    ids: Vec<NodeId>,
    nodes: Vec<Option<Detector>>,
    generation: Vec<u16>,
    queue: BinaryHeap<Reverse<Packet>>,
    sequence: u64,
    errors: usize,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut sim = Sim {
            now_ms: 0,
            rng: seed | 1,
            ids: (1..=n as u64).map(|i| NodeId(0x100 * i)).collect(),
            nodes: (0..n).map(|_| None).collect(),
            generation: vec![0; n],
            queue: BinaryHeap::new(),
            sequence: 0,
            errors: 0,
        };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms)
    }

    /// Starts node `i` (a new generation) and has it announce itself to node 0 (or 1).
    fn start(&mut self, i: usize) {
        self.generation[i] = self.generation[i].wrapping_add(1);
        let seed = self.random();
        let mut d = Detector::new(
            self.ids[i],
            self.generation[i],
            DetectorConfig::default(),
            seed,
        );
        let mut out = DetectorOutput::default();
        let to = if i == 0 { 1 } else { 0 };
        d.announce(self.now(), self.ids[to], &mut out).unwrap();
        self.nodes[i] = Some(d);
        self.send(out);
    }

    fn send(&mut self, out: DetectorOutput) {
        for (to, bytes) in out.packets {
            let to = self.ids.iter().position(|&id| id == to).unwrap();
            let at = self.now_ms + 1 + self.random() % 3;
            self.sequence += 1;
            self.queue.push(Reverse((at, self.sequence, to, bytes)));
        }
    }

    fn step(&mut self) {
        self.now_ms += STEP_MS;
        let now = self.now();
        while let Some(Reverse((at, ..))) = self.queue.peek() {
            if *at > self.now_ms {
                break;
            }
            let Reverse((_, _, to, bytes)) = self.queue.pop().unwrap();
            let mut out = DetectorOutput::default();
            if let Some(d) = self.nodes[to].as_mut() {
                if d.on_packet(now, &bytes, &mut out).is_err() {
                    self.errors += 1;
                }
            }
            self.send(out);
        }
        for i in 0..self.ids.len() {
            let mut out = DetectorOutput::default();
            if let Some(d) = self.nodes[i].as_mut() {
                d.on_tick(now, &mut out).unwrap();
            }
            self.send(out);
        }
    }

    /// Whether every live node sees exactly the other live nodes.
    fn all_see_all(&self) -> bool {
        let live: Vec<NodeId> = (0..self.ids.len())
            .filter(|&i| self.nodes[i].is_some())
            .map(|i| self.ids[i])
            .collect();
        (0..self.ids.len()).all(|i| match &self.nodes[i] {
            None => true,
            Some(d) => {
                let mut want: Vec<NodeId> =
                    live.iter().copied().filter(|&n| n != self.ids[i]).collect();
                want.sort();
                d.alive().iter().copied().collect::<Vec<_>>() == want
            }
        })
    }

    fn until(&mut self, bound_ms: u64, what: &str, done: impl Fn(&Sim) -> bool) -> u64 {
        let start = self.now_ms;
        while !done(self) {
            assert!(
                self.now_ms - start <= bound_ms,
                "{what}: not within {bound_ms} ms"
            );
            self.step();
        }
        self.now_ms - start
    }
}

fn seed() -> u64 {
    std::env::var("DETECTOR_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
}

#[test]
fn a_silent_node_is_declared_down_in_about_the_heartbeat_timeout() {
    let config = DetectorConfig::default();
    let timeout_ms = config.interval.as_millis() as u64 * u64::from(config.timeout_intervals);
    let mut took_all = Vec::new();
    for run in 0..20 {
        let mut sim = Sim::new(seed().wrapping_add(run * 7919), 4);
        sim.until(3_000, "joining", Sim::all_see_all);
        // Let the probe cycles settle into their rhythm before the fault.
        for _ in 0..(2_000 / STEP_MS) {
            sim.step();
        }
        let victim = (run % 4) as usize;
        sim.nodes[victim] = None;
        let dead = sim.ids[victim];
        let took = sim.until(3 * timeout_ms, "declaring the silent node down", |s| {
            s.nodes.iter().flatten().all(|d| !d.alive().contains(&dead))
        });
        took_all.push(took);
        // The rest still see each other: no false positive on the way.
        assert!(sim.all_see_all(), "run {run}");
        assert_eq!(sim.errors, 0);
    }
    took_all.sort();
    let (min, median, max) = (
        took_all[0],
        took_all[took_all.len() / 2],
        took_all[took_all.len() - 1],
    );
    eprintln!(
        "down after: min {min} ms, median {median} ms, max {max} ms (timeout {timeout_ms} ms)"
    );
    // "About timeout × interval": never before ~2/3 of it (no hair trigger), and every node
    // agrees within 1.5× of it.
    assert!(min >= timeout_ms * 2 / 3, "{took_all:?}");
    assert!(max <= timeout_ms * 3 / 2, "{took_all:?}");
}

#[test]
fn a_restarted_node_is_seen_again_at_once() {
    let mut sim = Sim::new(seed(), 3);
    sim.until(3_000, "joining", Sim::all_see_all);
    sim.nodes[2] = None;
    sim.until(5_000, "down", |s| {
        s.nodes
            .iter()
            .flatten()
            .all(|d| !d.alive().contains(&NodeId(0x300)))
    });
    sim.start(2);
    // A new generation wins over the old identity held as down: no wait for it to expire.
    let took = sim.until(3_000, "rejoin", Sim::all_see_all);
    assert!(took < 1_000, "{took} ms");
}

#[test]
fn garbage_packets_are_errors_not_panics() {
    let mut d = Detector::new(NodeId(1), 1, DetectorConfig::default(), 3);
    let mut out = DetectorOutput::default();
    let mut x: u64 = 0x1234_5678;
    let mut refused = 0;
    for len in 0..600usize {
        let bytes: Vec<u8> = (0..len % 90)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        refused += usize::from(
            d.on_packet(Instant::from_millis(len as u64), &bytes, &mut out)
                .is_err(),
        );
    }
    assert!(refused > 500, "{refused}");
    assert!(d
        .on_packet(Instant::from_millis(1), &[0; 5_000], &mut out)
        .is_err());
    assert!(d.alive().is_empty());
}
