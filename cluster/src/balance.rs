//! Aerospike's partition balance: from a succession list (the cluster's member node ids,
//! descending) to the row of nodes of each of the 4096 partitions, master first, then
//! replicas, then the rest of the nodes in the order they would take over.
//!
//! Owns the hash functions (`fnv64`, `jen64`), the validation of a succession list and the
//! rows (rendezvous hashing, design.md §5). It is bit-exact with Aerospike CE 8.1.2.0 for the
//! same node ids: `tests/balance_vectors.rs` checks it against partition maps taken from real
//! CE clusters. It must never depend on which node computes it, on a clock, or on any state
//! besides its inputs: every member computes the same map from the same succession list, and
//! that agreement is what lets clients route without asking.
//!
//! What it does not own: which node is the *working* master during a migration (the node that
//! has the data claims the partition until the eventual master has it) — that is the
//! migration layer's, built on these rows.

use std::fmt;

use apogee_wire::digest::{PartitionId, PARTITION_COUNT};

/// The most nodes in one cluster: Aerospike CE's limit. It is also the width of the node
/// index packed into the low bits of each rendezvous hash (`NODE_INDEX_MASK`), which is why it
/// must stay a power of two. (EE uses 256; for clusters this small both give the same rows,
/// since only the bits below the mask differ and ties in the upper bits are vanishingly rare.)
pub const CLUSTER_NODES_MAX: usize = 8;

/// Low bits of a rendezvous hash that are replaced by the node's index in the succession list:
/// this makes every hash of one partition distinct, so sorting them is a total order that
/// every node reproduces, and recovers which node each sorted hash belongs to.
const NODE_INDEX_MASK: u64 = CLUSTER_NODES_MAX as u64 - 1;

const _: () = assert!(CLUSTER_NODES_MAX.is_power_of_two());

/// Bytes of one partition's bitmap in the `replicas*` info answers: one bit per partition.
pub const PARTITION_BITMAP_BYTES: usize = PARTITION_COUNT as usize / 8;

/// A node's 64-bit id. Displayed as Aerospike's `node` info command prints it: upper-case hex
/// without leading zeros (`A1`, `BB9E3A1C4F0E6`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:X})", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = BalanceError;

    /// Parses hex as `node-id` in Aerospike's configuration and `node` print it (1 to 16
    /// digits, either case).
    fn from_str(s: &str) -> Result<NodeId, BalanceError> {
        let bad = || BalanceError::BadNodeIdText(s.to_owned());
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let id = u64::from_str_radix(s, 16).map_err(|_| bad())?;
        if id == 0 {
            return Err(BalanceError::ZeroNode);
        }
        Ok(NodeId(id))
    }
}

/// Why a balance could not be computed. Each is a caller's mistake (a view that should never
/// have been committed, a bad configuration), never a property of the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("a succession list needs at least one node")]
    EmptySuccession,
    #[error("{count} nodes exceed CLUSTER_NODES_MAX ({CLUSTER_NODES_MAX}), Aerospike CE's cluster size limit; remove nodes")]
    TooManyNodes { count: usize },
    #[error("node id {0} is listed twice; every node of a cluster needs its own `node-id`")]
    DuplicateNode(NodeId),
    #[error("node id 0 is reserved (Aerospike uses it for 'no node'); set a non-zero `node-id`")]
    ZeroNode,
    #[error("`{0}` is not a node id: expected 1 to 16 hex digits")]
    BadNodeIdText(String),
    #[error("replication-factor 0 keeps no copy; configure at least 1")]
    ZeroReplicationFactor,
    #[error("the namespace is on no node of the succession list, so it has no partition map")]
    NamespaceOnNoNode,
    #[error("node {0} is said to hold the namespace but is not in the succession list")]
    NamespaceNodeNotMember(NodeId),
}

/// FNV-1a, 64-bit, as Aerospike's `cf_hash_fnv64`.
pub fn fnv64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Jenkins' one-at-a-time hash widened to 64 bits, as Aerospike's `cf_hash_jen64`.
pub fn jen64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0;
    for &b in bytes {
        h = h.wrapping_add(u64::from(b));
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

/// The members of a cluster view in Aerospike's order: node ids descending, so the principal
/// (the highest id) is first. The order matters: a node's index here is packed into its
/// rendezvous hashes, so two nodes that disagree on the order disagree on the map.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Succession(Vec<NodeId>);

impl Succession {
    /// The succession list of `members` (any order); refuses what no real cluster can be:
    /// no node, more than `CLUSTER_NODES_MAX`, a duplicate id or the id 0.
    pub fn new(members: impl IntoIterator<Item = NodeId>) -> Result<Succession, BalanceError> {
        let mut nodes: Vec<NodeId> = members.into_iter().collect();
        if nodes.is_empty() {
            return Err(BalanceError::EmptySuccession);
        }
        if nodes.len() > CLUSTER_NODES_MAX {
            return Err(BalanceError::TooManyNodes { count: nodes.len() });
        }
        nodes.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(w) = nodes.windows(2).find(|w| w[0] == w[1]) {
            return Err(BalanceError::DuplicateNode(w[0]));
        }
        if nodes.last() == Some(&NodeId(0)) {
            return Err(BalanceError::ZeroNode);
        }
        debug_assert!(nodes.windows(2).all(|w| w[0] > w[1]));
        Ok(Succession(nodes))
    }

    /// The members, highest id first.
    pub fn nodes(&self) -> &[NodeId] {
        &self.0
    }

    /// The highest node id: the principal of the view this succession list describes.
    pub fn principal(&self) -> NodeId {
        self.0[0]
    }

    /// How many members (1..=CLUSTER_NODES_MAX).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a succession list has at least one member. (For clippy's `len` rule.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.0.contains(&node)
    }
}

/// One namespace's partition map: for each partition, the row of the nodes holding the
/// namespace in rendezvous order. `row[0]` is the eventual master, `row[1..replication_factor]`
/// the replicas, and the rest the order in which the others would take over.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartitionMap {
    /// Nodes per row: the members that hold the namespace.
    row_nodes: usize,
    /// `min(configured replication-factor, row_nodes)`.
    replication_factor: usize,
    /// `PARTITION_COUNT` rows of `row_nodes` each, partition 0 first.
    rows: Vec<NodeId>,
}

impl PartitionMap {
    /// The map of a namespace every member holds, with `replication-factor` as configured
    /// (clamped to the number of members, as Aerospike does).
    pub fn balance(
        succession: &Succession,
        replication_factor_configured: u32,
    ) -> Result<PartitionMap, BalanceError> {
        PartitionMap::balance_namespace(
            succession,
            replication_factor_configured,
            succession.nodes(),
        )
    }

    /// The map of a namespace held only by the members `holding` (any order): rows are
    /// computed over the whole succession list — so a node's index, and thus every hash, is
    /// the same as for a namespace on every node — and then the nodes without the namespace
    /// are removed, order kept. The replication factor is clamped to the nodes that hold it.
    pub fn balance_namespace(
        succession: &Succession,
        replication_factor_configured: u32,
        holding: &[NodeId],
    ) -> Result<PartitionMap, BalanceError> {
        if replication_factor_configured == 0 {
            return Err(BalanceError::ZeroReplicationFactor);
        }
        if let Some(&stranger) = holding.iter().find(|n| !succession.contains(**n)) {
            return Err(BalanceError::NamespaceNodeNotMember(stranger));
        }
        let holds: Vec<bool> = succession
            .nodes()
            .iter()
            .map(|n| holding.contains(n))
            .collect();
        let row_nodes = holds.iter().filter(|&&h| h).count();
        if row_nodes == 0 {
            return Err(BalanceError::NamespaceOnNoNode);
        }
        let replication_factor = (replication_factor_configured as usize).min(row_nodes);

        let nodes = succession.nodes();
        let hashed_nodes: Vec<[u8; 8]> = nodes
            .iter()
            .map(|n| fnv64(&n.0.to_le_bytes()).to_le_bytes())
            .collect();
        let mut rows = Vec::with_capacity(PARTITION_COUNT as usize * row_nodes);
        let mut ranked = [0u64; CLUSTER_NODES_MAX];
        for partition in 0..u32::from(PARTITION_COUNT) {
            let hashed_partition = fnv64(&partition.to_le_bytes()).to_le_bytes();
            // Aerospike hashes the pair { fnv64(node id), fnv64(partition id) } as one
            // 16-byte little-endian struct, node first.
            let mut pair = [0u8; 16];
            pair[8..].copy_from_slice(&hashed_partition);
            for (index, hashed_node) in hashed_nodes.iter().enumerate() {
                pair[..8].copy_from_slice(hashed_node);
                ranked[index] = (jen64(&pair) & !NODE_INDEX_MASK) + index as u64;
            }
            let ranked = &mut ranked[..nodes.len()];
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let row_start = rows.len();
            rows.extend(
                ranked
                    .iter()
                    .map(|&v| (v & NODE_INDEX_MASK) as usize)
                    .filter(|&index| holds[index])
                    .map(|index| nodes[index]),
            );
            debug_assert_eq!(rows.len() - row_start, row_nodes);
        }
        debug_assert_eq!(rows.len(), PARTITION_COUNT as usize * row_nodes);
        Ok(PartitionMap {
            row_nodes,
            replication_factor,
            rows,
        })
    }

    /// The effective replication factor: `min(configured, nodes holding the namespace)`.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Every node holding the namespace, in the order they would serve `partition`.
    pub fn row(&self, partition: PartitionId) -> &[NodeId] {
        let start = usize::from(partition.0) * self.row_nodes;
        &self.rows[start..start + self.row_nodes]
    }

    /// The nodes that eventually hold `partition`: master first, then the replicas.
    pub fn holders(&self, partition: PartitionId) -> &[NodeId] {
        &self.row(partition)[..self.replication_factor]
    }

    /// The eventual master of `partition`.
    pub fn master(&self, partition: PartitionId) -> NodeId {
        self.row(partition)[0]
    }

    /// The eventual replicas of `partition` (not the master), in replica-index order.
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        &self.holders(partition)[1..]
    }

    /// `node`'s replica index for `partition` (0 = master), or `None` when it holds no copy.
    pub fn role(&self, partition: PartitionId, node: NodeId) -> Option<usize> {
        self.holders(partition).iter().position(|&n| n == node)
    }

    /// The bitmap of the partitions where `node` is at `replica_index` (0 = master), laid out
    /// as the `replicas*` info answers carry it: partition p is bit `0x80 >> (p % 8)` of byte
    /// `p / 8`.
    pub fn bitmap(&self, node: NodeId, replica_index: usize) -> [u8; PARTITION_BITMAP_BYTES] {
        let mut bits = [0u8; PARTITION_BITMAP_BYTES];
        if replica_index >= self.replication_factor {
            return bits;
        }
        for p in 0..PARTITION_COUNT {
            if self.holders(PartitionId(p))[replica_index] == node {
                bits[usize::from(p / 8)] |= 0x80 >> (p % 8);
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn fnv64_matches_the_published_fnv1a_values() {
        // From the FNV reference test suite (FNV-1a 64).
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jen64_mixes_every_byte_and_is_not_fnv() {
        assert_eq!(jen64(b""), 0);
        // One byte 1: h = 1 + (1 << 10) = 1025; h ^= h >> 6 (16) = 1041; then the finish.
        let mut h: u64 = 1041;
        h = h.wrapping_add(h << 3);
        h ^= h >> 11;
        h = h.wrapping_add(h << 15);
        assert_eq!(jen64(&[1]), h);
        assert_ne!(jen64(&[1, 0]), jen64(&[0, 1]));
    }

    #[test]
    fn a_succession_list_is_descending_and_refuses_impossible_clusters() {
        let s = Succession::new(ids(&[0xB2, 0xC3, 0xA1])).unwrap();
        assert_eq!(s.nodes(), &ids(&[0xC3, 0xB2, 0xA1])[..]);
        assert_eq!(s.principal(), NodeId(0xC3));
        assert_eq!(Succession::new([]), Err(BalanceError::EmptySuccession));
        assert_eq!(
            Succession::new(ids(&[1, 2, 1])),
            Err(BalanceError::DuplicateNode(NodeId(1)))
        );
        assert_eq!(Succession::new(ids(&[0, 2])), Err(BalanceError::ZeroNode));
        assert_eq!(
            Succession::new(ids(&[1, 2, 3, 4, 5, 6, 7, 8, 9])),
            Err(BalanceError::TooManyNodes { count: 9 })
        );
        assert!(Succession::new(ids(&[1, 2, 3, 4, 5, 6, 7, 8])).is_ok());
    }

    #[test]
    fn node_ids_parse_and_print_as_aerospike_does() {
        assert_eq!("a1".parse::<NodeId>(), Ok(NodeId(0xA1)));
        assert_eq!(NodeId(0xA1).to_string(), "A1");
        assert_eq!("FFFFFFFFFFFFFFFF".parse::<NodeId>(), Ok(NodeId(u64::MAX)));
        assert!("".parse::<NodeId>().is_err());
        assert!("12345678901234567".parse::<NodeId>().is_err());
        assert!("-1".parse::<NodeId>().is_err());
        assert!("0x1".parse::<NodeId>().is_err());
        assert_eq!("000".parse::<NodeId>(), Err(BalanceError::ZeroNode));
    }

    #[test]
    fn every_row_is_a_permutation_and_masters_are_spread_evenly() {
        let s = Succession::new(ids(&[1, 0x2A, 0xFFFF, 0x1000_0000])).unwrap();
        let m = PartitionMap::balance(&s, 2).unwrap();
        assert_eq!(m.replication_factor(), 2);
        let mut mastered = [0usize; 4];
        for p in 0..PARTITION_COUNT {
            let mut row = m.row(PartitionId(p)).to_vec();
            row.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(row, s.nodes());
            let i = s
                .nodes()
                .iter()
                .position(|&n| n == m.master(PartitionId(p)));
            mastered[i.unwrap()] += 1;
        }
        // 1024 each on average; a hash this good stays well within ±15%.
        assert!(
            mastered.iter().all(|&c| (870..1180).contains(&c)),
            "{mastered:?}"
        );
    }

    #[test]
    fn replication_factor_is_clamped_to_the_nodes_and_zero_is_refused() {
        let s = Succession::new(ids(&[5, 9])).unwrap();
        assert_eq!(
            PartitionMap::balance(&s, 3).unwrap().replication_factor(),
            2
        );
        assert_eq!(
            PartitionMap::balance(&s, 1).unwrap().replication_factor(),
            1
        );
        assert_eq!(
            PartitionMap::balance(&s, 0),
            Err(BalanceError::ZeroReplicationFactor)
        );
        let one = PartitionMap::balance(&Succession::new(ids(&[5])).unwrap(), 2).unwrap();
        assert!((0..PARTITION_COUNT).all(|p| one.holders(PartitionId(p)) == [NodeId(5)]));
    }

    #[test]
    fn a_leaving_node_moves_only_the_partitions_it_held() {
        // Rendezvous hashing: removing a node removes it from each row and leaves the other
        // nodes' relative order untouched, so only ~1/n of the masters change.
        let all = Succession::new(ids(&[0xA1, 0xB2, 0xC3, 0xD4])).unwrap();
        let less = Succession::new(ids(&[0xA1, 0xB2, 0xC3])).unwrap();
        let (a, b) = (
            PartitionMap::balance(&all, 2).unwrap(),
            PartitionMap::balance(&less, 2).unwrap(),
        );
        let mut moved = 0;
        for p in (0..PARTITION_COUNT).map(PartitionId) {
            let kept: Vec<NodeId> = a
                .row(p)
                .iter()
                .copied()
                .filter(|&n| n != NodeId(0xD4))
                .collect();
            assert_eq!(kept, b.row(p));
            moved += usize::from(a.master(p) != b.master(p));
        }
        assert!((800..1250).contains(&moved), "{moved} masters moved");
    }

    #[test]
    fn a_namespace_missing_on_a_node_filters_it_out_of_the_rows() {
        let s = Succession::new(ids(&[1, 2, 3])).unwrap();
        let full = PartitionMap::balance(&s, 2).unwrap();
        let part = PartitionMap::balance_namespace(&s, 2, &ids(&[3, 1])).unwrap();
        for p in (0..PARTITION_COUNT).map(PartitionId) {
            let kept: Vec<NodeId> = full
                .row(p)
                .iter()
                .copied()
                .filter(|&n| n != NodeId(2))
                .collect();
            assert_eq!(part.row(p), kept);
            assert_eq!(part.holders(p).len(), 2);
        }
        let alone = PartitionMap::balance_namespace(&s, 2, &ids(&[2])).unwrap();
        assert_eq!(alone.replication_factor(), 1);
        assert_eq!(
            PartitionMap::balance_namespace(&s, 2, &[]),
            Err(BalanceError::NamespaceOnNoNode)
        );
        assert_eq!(
            PartitionMap::balance_namespace(&s, 2, &ids(&[1, 4])),
            Err(BalanceError::NamespaceNodeNotMember(NodeId(4)))
        );
    }

    #[test]
    fn bitmaps_mark_exactly_the_partitions_of_each_role() {
        let s = Succession::new(ids(&[0xA1, 0xB2, 0xC3])).unwrap();
        let m = PartitionMap::balance(&s, 2).unwrap();
        for replica_index in 0..2 {
            let mut seen = [0u8; PARTITION_BITMAP_BYTES];
            for &n in s.nodes() {
                let bits = m.bitmap(n, replica_index);
                for (s, b) in seen.iter_mut().zip(bits) {
                    assert_eq!(*s & b, 0, "two nodes claim one role of a partition");
                    *s |= b;
                }
            }
            assert!(seen.iter().all(|&b| b == 0xFF));
        }
        let p0 = m.master(PartitionId(0));
        assert_eq!(m.bitmap(p0, 0)[0] & 0x80, 0x80);
        assert_eq!(m.bitmap(p0, 2), [0u8; PARTITION_BITMAP_BYTES]);
        assert_eq!(m.role(PartitionId(0), p0), Some(0));
    }
}
