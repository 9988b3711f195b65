//! The cluster, wired into the server: membership, the partition map, proxying (`fabric`) and
//! replication of writes (`replica`); no migration yet. `task` runs on core 0: a UDP heartbeat
//! socket carrying the failure detector's SWIM packets and the view change's messages
//! (`envelope`), feeding apogee-cluster's pure state machines exactly as
//! `cluster/tests/membership_sim.rs` wires them, and on every committed view it publishes a
//! new `PartitionTable` and `ClusterState`.
//!
//! This module owns what clients and operators see of the membership: `ClusterState` and its
//! info answers (`statistics` fields, `peers-*`, `services`, `cluster-stable`). It must never
//! be on a request's path beyond one pointer load, and never block a core.

pub mod dup_res;
pub mod envelope;
pub mod fabric;
pub mod lease;
pub mod metadata;
pub mod migration;
pub mod replica;
pub mod task;

use std::net::SocketAddr;

use apogee_cluster::view::ClusterKey;
use apogee_cluster::NodeId;

/// One other member, as clients are told to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerService {
    pub node: NodeId,
    pub service: SocketAddr,
    /// Where its fabric listens: proxied requests go there.
    pub fabric: SocketAddr,
}

/// The membership as published to every core (replaced whole by the cluster task).
#[derive(Clone, Debug)]
pub struct ClusterState {
    /// The key of the view this node serves by; `None`: no cluster (before the first view,
    /// or orphaned past the timeout).
    pub key: Option<ClusterKey>,
    /// The view's members, principal first; empty with no view.
    pub succession: Vec<NodeId>,
    /// Whether this node is a member of a committed view right now (false while it keeps
    /// serving by its last view after losing its principal).
    pub is_member: bool,
    /// Views committed here since start (`cluster_generation`).
    pub generation: u64,
    /// The other members clients can connect to, by id.
    pub peers: Vec<PeerService>,
    /// `peers-generation`: rises whenever `peers` changes.
    pub peers_generation: u64,
}

impl ClusterState {
    /// A node without heartbeat: a cluster of one for good, with a key of its own.
    pub fn alone(node: NodeId) -> ClusterState {
        ClusterState {
            key: ClusterKey::new(random_u64() & ((1 << 48) - 1) | 1),
            succession: vec![node],
            is_member: true,
            generation: 1,
            peers: Vec::new(),
            peers_generation: 1,
        }
    }

    /// A clustered node before its first view.
    pub fn forming() -> ClusterState {
        ClusterState {
            key: None,
            succession: Vec::new(),
            is_member: false,
            generation: 0,
            peers: Vec::new(),
            peers_generation: 1,
        }
    }

    fn key_hex(&self) -> String {
        self.key
            .map_or_else(|| "0".into(), |k| format!("{:X}", k.get()))
    }

    /// The `cluster_*` and `migrate_*` fields of `statistics` (Aerospike's names), with
    /// `migrate_remaining` partitions still to send or receive here over all namespaces.
    pub fn statistics(&self, migrate_remaining: usize) -> String {
        let principal = self
            .succession
            .first()
            .map_or_else(|| "0".into(), |p| format!("{:X}", p.0));
        format!(
            "cluster_size={};cluster_key={};cluster_generation={};cluster_principal={principal};\
             cluster_integrity={};cluster_is_member={};migrate_allowed=true;\
             migrate_partitions_remaining={migrate_remaining}",
            self.succession.len(),
            self.key_hex(),
            self.generation,
            self.key.is_some(),
            self.is_member,
        )
    }

    /// `peers-clear-std` and its kin: `<generation>,<default port>,[[<id>,,[<addr>:<port>]],...]`
    /// (CE 8.1.2.0's form, with the port always written).
    pub fn peers_value(&self, default_port: u16) -> String {
        let peers: Vec<String> = self
            .peers
            .iter()
            .map(|p| format!("[{:X},,[{}]]", p.node.0, p.service))
            .collect();
        format!(
            "{},{default_port},[{}]",
            self.peers_generation,
            peers.join(",")
        )
    }

    /// The fabric address of member `node`, if it is a peer in this view.
    pub fn fabric_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.peers.iter().find(|p| p.node == node).map(|p| p.fabric)
    }

    /// `services`: the other members' `addr:port`, `;`-separated (the old discovery command).
    pub fn services_value(&self) -> String {
        let s: Vec<String> = self.peers.iter().map(|p| p.service.to_string()).collect();
        s.join(";")
    }

    /// `cluster-stable[:size=N;ignore-migrations=..;namespace=..]`: the cluster key when this
    /// node is in a cluster (of `size` nodes, if given) and, unless migrations are ignored,
    /// has nothing left to migrate (`migrating` false), else an error as CE words it.
    pub fn cluster_stable(
        &self,
        args: &str,
        migrating: bool,
        namespace_known: impl Fn(&str) -> bool,
    ) -> String {
        let mut ignore_migrations = false;
        for kv in args.split(';').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "size" => match v.parse::<usize>() {
                    Ok(n) if n == self.succession.len() => {}
                    Ok(_) => return "ERROR:7:cluster not specified size".into(),
                    Err(_) => return "ERROR:4:bad size".into(),
                },
                "namespace" if !namespace_known(v) => {
                    return "ERROR:20:namespace not found on node".into()
                }
                "ignore-migrations" => match v {
                    "true" | "yes" => ignore_migrations = true,
                    "false" | "no" => ignore_migrations = false,
                    _ => return "ERROR:4:bad ignore-migrations".into(),
                },
                "namespace" => {}
                _ => return format!("ERROR:4:unknown parameter {k}"),
            }
        }
        if !self.is_member || self.key.is_none() {
            return "ERROR:7:not a member of a cluster".into();
        }
        if migrating && !ignore_migrations {
            return "ERROR:7:unstable cluster".into();
        }
        self.key_hex()
    }
}

/// Entropy without a dependency: std's hasher keys are random per process.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formed() -> ClusterState {
        ClusterState {
            key: ClusterKey::new(0x6694_4980_584B),
            succession: vec![NodeId(0xC3), NodeId(0xB2), NodeId(0xA1)],
            is_member: true,
            generation: 2,
            peers: vec![
                PeerService {
                    node: NodeId(0xA1),
                    service: "127.0.0.1:5100".parse().unwrap(),
                    fabric: "127.0.0.1:5101".parse().unwrap(),
                },
                PeerService {
                    node: NodeId(0xC3),
                    service: "127.0.0.1:5120".parse().unwrap(),
                    fabric: "127.0.0.1:5121".parse().unwrap(),
                },
            ],
            peers_generation: 4,
        }
    }

    #[test]
    fn answers_take_ce_8_1_2_0_forms() {
        // Taken from a 3-node CE cluster (A1, B2, C3) asked on B2.
        let s = formed();
        assert_eq!(
            s.peers_value(3000),
            "4,3000,[[A1,,[127.0.0.1:5100]],[C3,,[127.0.0.1:5120]]]"
        );
        assert_eq!(s.services_value(), "127.0.0.1:5100;127.0.0.1:5120");
        let known = |n: &str| n == "test";
        assert_eq!(
            s.cluster_stable("size=3;ignore-migrations=true;namespace=test", false, known),
            "66944980584B"
        );
        assert_eq!(s.cluster_stable("", false, known), "66944980584B");
        assert_eq!(
            s.cluster_stable("", true, known),
            "ERROR:7:unstable cluster"
        );
        assert_eq!(
            s.cluster_stable("ignore-migrations=true", true, known),
            "66944980584B"
        );
        assert_eq!(
            s.cluster_stable("size=2", false, known),
            "ERROR:7:cluster not specified size"
        );
        assert_eq!(
            s.cluster_stable("size=abc", false, known),
            "ERROR:4:bad size"
        );
        assert_eq!(
            s.cluster_stable("namespace=nope", false, known),
            "ERROR:20:namespace not found on node"
        );
        let stats = s.statistics(0);
        for want in [
            "cluster_size=3",
            "cluster_key=66944980584B",
            "cluster_principal=C3",
            "cluster_integrity=true",
            "cluster_is_member=true",
        ] {
            assert!(stats.split(';').any(|f| f == want), "{want} in {stats}");
        }
    }

    #[test]
    fn a_forming_node_is_in_no_cluster_and_a_lone_one_in_its_own() {
        let f = ClusterState::forming();
        assert!(f
            .cluster_stable("", false, |_| true)
            .starts_with("ERROR:7:"));
        assert!(f.statistics(0).contains("cluster_size=0;cluster_key=0;"));
        assert_eq!(f.peers_value(3000), "1,3000,[]");
        let a = ClusterState::alone(NodeId(7));
        let key = a.key.unwrap().get();
        assert!(key != 0 && key < 1 << 48);
        assert_eq!(
            a.cluster_stable("size=1", false, |_| true),
            format!("{key:X}")
        );
        assert!(a.statistics(0).contains("cluster_principal=7;"));
    }
}
