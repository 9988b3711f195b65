//! The partition balance against partition maps taken from real Aerospike CE clusters.
//!
//! Each `tests/vectors/*.txt` holds, per node of one real cluster, its raw `replicas` answer
//! (how it was made is in the file's header; `collect.sh` made it). This test needs only those
//! files: it decodes every bitmap and checks that `PartitionMap::balance` over the same node
//! ids gives the same node at every replica index of every partition of every namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use apogee_cluster::balance::PARTITION_BITMAP_BYTES;
use apogee_cluster::{NodeId, PartitionMap, Succession};
use apogee_wire::digest::{PartitionId, PARTITION_COUNT};
use base64::Engine as _;

/// One node's answer for one namespace: its replica count and its bitmap per replica index.
type NodeAnswer = (usize, Vec<[u8; PARTITION_BITMAP_BYTES]>);

/// One vector file: the configured replication factor and, per namespace, per node, the
/// replica count it answered and its bitmap per replica index.
struct Vector {
    name: String,
    replication_factor_configured: u32,
    /// Every node of the cluster, whatever namespaces it holds.
    nodes: Vec<NodeId>,
    namespaces: BTreeMap<String, BTreeMap<NodeId, NodeAnswer>>,
}

fn parse(name: &str, text: &str) -> Vector {
    let mut rf = None;
    let mut nodes = Vec::new();
    let mut namespaces: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("# configured replication-factor: ") {
            rf = Some(v.trim().parse().expect("replication factor"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (node, answer) = line.split_once(' ').expect("node id, a space, the answer");
        let node: NodeId = node.parse().expect("node id in hex");
        nodes.push(node);
        for ns in answer.trim().split(';').filter(|s| !s.is_empty()) {
            let (ns_name, value) = ns.split_once(':').expect("ns:value");
            let fields: Vec<&str> = value.split(',').collect();
            assert_eq!(fields[0], "0", "{name}: regime 0 (AP) expected");
            let count: usize = fields[1].parse().expect("replica count");
            assert_eq!(
                fields.len(),
                2 + count,
                "{name}: one bitmap per replica index"
            );
            let bitmaps = fields[2..]
                .iter()
                .map(|b| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .expect("base64 bitmap");
                    <[u8; PARTITION_BITMAP_BYTES]>::try_from(bytes).expect("512-byte bitmap")
                })
                .collect();
            let old = namespaces
                .entry(ns_name.to_owned())
                .or_default()
                .insert(node, (count, bitmaps));
            assert!(old.is_none(), "{name}: node {node} listed twice");
        }
    }
    Vector {
        name: name.to_owned(),
        replication_factor_configured: rf.expect("a `# configured replication-factor:` line"),
        nodes,
        namespaces,
    }
}

fn vectors() -> Vec<Vector> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/vectors")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            parse(&name, &std::fs::read_to_string(p).expect("vector file"))
        })
        .collect()
}

fn bit(bits: &[u8; PARTITION_BITMAP_BYTES], p: u16) -> bool {
    bits[usize::from(p / 8)] & (0x80 >> (p % 8)) != 0
}

#[test]
fn the_balance_reproduces_every_partition_map_taken_from_aerospike_ce() {
    let vectors = vectors();
    // Guards against a test that passes by reading nothing: the committed vectors.
    assert!(vectors.len() >= 7, "only {} vector files", vectors.len());
    let mut checked_roles = 0usize;
    for v in &vectors {
        for (ns, nodes) in &v.namespaces {
            // A namespace on only some nodes: its rows are the cluster's rows with the other
            // nodes filtered out (the vector taken with `bar` missing on one node shows it).
            let succession = Succession::new(v.nodes.iter().copied()).expect("a valid cluster");
            let holding: Vec<NodeId> = nodes.keys().copied().collect();
            let map = PartitionMap::balance_namespace(
                &succession,
                v.replication_factor_configured,
                &holding,
            )
            .expect("balance");
            let rf = map.replication_factor();
            for (&node, (count, bitmaps)) in nodes {
                assert_eq!(*count, rf, "{}: {ns} on {node}: replica count", v.name);
                for (replica_index, bits) in bitmaps.iter().enumerate() {
                    for p in 0..PARTITION_COUNT {
                        let ours = map.holders(PartitionId(p))[replica_index] == node;
                        assert_eq!(
                            bit(bits, p),
                            ours,
                            "{}: {ns} partition {p} replica index {replica_index}: CE says node \
                             {node} {}, the balance's row is {:?}",
                            v.name,
                            if bit(bits, p) { "holds it" } else { "does not" },
                            map.row(PartitionId(p)),
                        );
                    }
                }
            }
            // The vector itself is complete: every role of every partition is claimed by
            // exactly one node, so the comparison above covered the whole map.
            for replica_index in 0..rf {
                for p in 0..PARTITION_COUNT {
                    let claims = nodes
                        .values()
                        .filter(|(_, b)| bit(&b[replica_index], p))
                        .count();
                    assert_eq!(
                        claims, 1,
                        "{}: {ns} partition {p} index {replica_index}",
                        v.name
                    );
                    checked_roles += 1;
                }
            }
        }
    }
    eprintln!(
        "{} vectors, {checked_roles} (partition, replica index) pairs matched",
        vectors.len()
    );
}

#[test]
fn another_clusters_map_does_not_match_the_vectors() {
    // The comparison above discriminates: the map of other node ids (each shifted by one)
    // disagrees with the first vector somewhere.
    let v = &vectors()[0];
    let (ns, nodes) = v.namespaces.iter().next().expect("a namespace");
    let shifted = Succession::new(nodes.keys().map(|n| NodeId(n.0 + 1))).expect("valid");
    let map = PartitionMap::balance(&shifted, v.replication_factor_configured).expect("balance");
    let (&node, (_, bitmaps)) = nodes.iter().next().expect("a node");
    let shifted_node = NodeId(node.0 + 1);
    let agree = (0..PARTITION_COUNT)
        .filter(|&p| bit(&bitmaps[0], p) == (map.master(PartitionId(p)) == shifted_node))
        .count();
    assert!(
        agree < usize::from(PARTITION_COUNT),
        "{}: {ns}: another cluster's map matched too",
        v.name
    );
}
