//! The partition table: the one owner of where each of the 4096 partitions lives — which
//! nodes hold it, in which role (master first, then replicas), and which local shard serves
//! it on this node. Routing, the info commands clients tend with (`replicas`,
//! `partition-generation`) and re-homing read it; nothing else computes placement.
//!
//! A node alone masters every partition (`single_node`). In a cluster, every committed view
//! builds a new table from Aerospike's balance (`balanced`), and a node cut off from every
//! cluster holds nothing (`unavailable`: requests get result 11). The cluster task replaces the
//! table whole, with a higher generation, through `Node::partitions` (an `ArcSwap`); readers
//! never see a table half-changed. It must never do I/O or hold a lock.

use apogee_cluster::{BalanceError, NodeId, PartitionMap, Succession};
use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::PartitionId;
use base64::Engine as _;

/// One namespace's placement: for each partition, the nodes that hold it, master first.
struct NamespacePlacement {
    /// `replicas[p]`: at most `replication-factor` nodes, master first.
    replicas: Vec<Vec<NodeId>>,
    /// `bitmaps[r]`: base64 of the bitmap of partitions where this node is replica `r`
    /// (0 = master), as the `replicas*` info values carry it; built with the table, since a
    /// request may ask for `replicas` a thousand times.
    bitmaps: Vec<String>,
}

/// Who holds every partition, at one generation.
pub struct PartitionTable {
    /// `partition-generation`: changes whenever any placement changes; −1 before a clustered
    /// node's first balance (Aerospike's value then: clients ignore the node until it rises).
    generation: i64,
    /// This node.
    node: NodeId,
    /// Local shards (one per core); a local partition lives on its `home_shard`.
    shards: u32,
    /// Indexed like the configured namespaces.
    namespaces: Vec<NamespacePlacement>,
}

impl PartitionTable {
    /// The table of a node alone: it is master of every partition of all `namespaces`.
    pub fn single_node(node: NodeId, shards: u32, namespaces: usize) -> PartitionTable {
        assert!(shards > 0, "a node has at least one shard");
        let placement =
            |_| NamespacePlacement::from_rows(vec![vec![node]; PARTITION_COUNT as usize], node);
        PartitionTable {
            generation: 1,
            node,
            shards,
            namespaces: (0..namespaces).map(placement).collect(),
        }
    }

    /// A table in which this node holds nothing: before a clustered node's first view
    /// (`generation` −1), and after it was orphaned. Keyed requests answer result 11.
    pub fn unavailable(
        node: NodeId,
        shards: u32,
        namespaces: usize,
        generation: i64,
    ) -> PartitionTable {
        assert!(shards > 0, "a node has at least one shard");
        let placement =
            |_| NamespacePlacement::from_rows(vec![Vec::new(); PARTITION_COUNT as usize], node);
        PartitionTable {
            generation,
            node,
            shards,
            namespaces: (0..namespaces).map(placement).collect(),
        }
    }

    /// The table of a committed view: for each namespace, Aerospike's balance over the
    /// succession list with `min(replication_factors[ns], members)` copies.
    pub fn balanced(
        node: NodeId,
        shards: u32,
        succession: &Succession,
        replication_factors: &[u32],
        generation: i64,
    ) -> Result<PartitionTable, BalanceError> {
        assert!(shards > 0, "a node has at least one shard");
        assert!(
            succession.contains(node),
            "a node balances only views it is a member of"
        );
        let namespaces = replication_factors
            .iter()
            .map(|&rf| {
                let map = PartitionMap::balance(succession, rf)?;
                let rows = (0..PARTITION_COUNT)
                    .map(|p| map.holders(PartitionId(p)).to_vec())
                    .collect();
                Ok(NamespacePlacement::from_rows(rows, node))
            })
            .collect::<Result<Vec<_>, BalanceError>>()?;
        Ok(PartitionTable {
            generation,
            node,
            shards,
            namespaces,
        })
    }

    /// `partition-generation`.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The local shard that serves `partition`, which every node holding it has. (Which
    /// node a request belongs on is `is_master`'s business.)
    pub fn shard_of(&self, partition: u16) -> usize {
        apogee_engine::placement::home_shard(partition, self.shards) as usize
    }

    /// Whether this node is the master of `partition` in namespace `ns`.
    pub fn is_master(&self, ns: usize, partition: u16) -> bool {
        self.namespaces[ns].replicas[usize::from(partition)].first() == Some(&self.node)
    }

    /// The master of `partition` in `ns`, if any node holds it.
    pub fn master(&self, ns: usize, partition: u16) -> Option<NodeId> {
        self.namespaces[ns].replicas[usize::from(partition)]
            .first()
            .copied()
    }

    /// The nodes holding `partition` of `ns`, master first (empty when none is known).
    pub fn holders(&self, ns: usize, partition: u16) -> &[NodeId] {
        &self.namespaces[ns].replicas[usize::from(partition)]
    }

    /// How many copies of each partition the table keeps for `ns`: the most nodes any
    /// partition lists.
    pub fn replica_count(&self, ns: usize) -> usize {
        let p = &self.namespaces[ns];
        p.replicas.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The value of `replicas` for `ns` (without the `ns:` prefix): regime, replica count, then
    /// one base64 bitmap per replica index, of the partitions this node holds in that role.
    pub fn replicas_value(&self, ns: usize) -> String {
        let p = &self.namespaces[ns];
        format!("0,{},{}", p.bitmaps.len(), p.bitmaps.join(","))
    }

    /// The value of `replicas-all` for `ns`: like `replicas` without the regime.
    pub fn replicas_all_value(&self, ns: usize) -> String {
        let p = &self.namespaces[ns];
        format!("{},{}", p.bitmaps.len(), p.bitmaps.join(","))
    }

    /// The value of `replicas-master` for `ns`: the bitmap of partitions this node masters.
    pub fn replicas_master_value(&self, ns: usize) -> &str {
        &self.namespaces[ns].bitmaps[0]
    }
}

impl NamespacePlacement {
    fn from_rows(replicas: Vec<Vec<NodeId>>, node: NodeId) -> NamespacePlacement {
        debug_assert_eq!(replicas.len(), PARTITION_COUNT as usize);
        NamespacePlacement {
            bitmaps: bitmaps(&replicas, node),
            replicas,
        }
    }
}

/// One base64 bitmap per replica index, of the partitions `node` holds at that index
/// (bit 7 of byte 0 is partition 0, as the clients read it).
fn bitmaps(replicas: &[Vec<NodeId>], node: NodeId) -> Vec<String> {
    let count = replicas.iter().map(Vec::len).max().unwrap_or(0).max(1);
    (0..count)
        .map(|r| {
            let mut bits = vec![0u8; PARTITION_COUNT as usize / 8];
            for (p, nodes) in replicas.iter().enumerate() {
                if nodes.get(r) == Some(&node) {
                    bits[p / 8] |= 0x80 >> (p % 8);
                }
            }
            base64::engine::general_purpose::STANDARD.encode(bits)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("valid base64")
    }

    #[test]
    fn a_single_node_masters_every_partition_and_spreads_them_over_its_shards() {
        let t = PartitionTable::single_node(NodeId(0xBB9), 3, 2);
        assert_eq!(t.generation(), 1);
        for ns in 0..2 {
            assert_eq!(t.replica_count(ns), 1);
            assert!((0..PARTITION_COUNT).all(|p| t.is_master(ns, p)));
            let bits = decode(t.replicas_master_value(ns));
            assert_eq!(bits.len(), 512);
            assert!(bits.iter().all(|&b| b == 0xFF));
            assert_eq!(
                t.replicas_value(ns),
                format!("0,1,{}", t.replicas_master_value(ns))
            );
            assert_eq!(
                t.replicas_all_value(ns),
                format!("1,{}", t.replicas_master_value(ns))
            );
        }
        assert_eq!((t.shard_of(0), t.shard_of(4), t.shard_of(4095)), (0, 1, 0));
    }

    #[test]
    fn bitmaps_mark_each_partition_in_its_role_only() {
        // Partition 0 mastered here, partition 9 held here as replica, the rest elsewhere.
        let (me, other) = (NodeId(1), NodeId(2));
        let mut replicas = vec![vec![other, NodeId(3)]; PARTITION_COUNT as usize];
        replicas[0] = vec![me, other];
        replicas[9] = vec![other, me];
        let maps: Vec<Vec<u8>> = bitmaps(&replicas, me).iter().map(|b| decode(b)).collect();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0][0], 0x80);
        assert!(maps[0][1..].iter().all(|&b| b == 0));
        assert_eq!(
            maps[1][1], 0x40,
            "partition 9 is bit 1 of byte 1, from the top"
        );
        assert_eq!(maps[1].iter().filter(|&&b| b != 0).count(), 1);
    }

    #[test]
    fn a_balanced_table_is_the_balance_of_the_succession_and_each_node_claims_its_rows() {
        let ids = [NodeId(0xA1), NodeId(0xB2), NodeId(0xC3)];
        let succession = Succession::new(ids).unwrap();
        let map = PartitionMap::balance(&succession, 2).unwrap();
        let tables: Vec<PartitionTable> = ids
            .iter()
            .map(|&n| PartitionTable::balanced(n, 2, &succession, &[2, 5], 7).unwrap())
            .collect();
        let mut masters = [0usize; 3];
        for p in 0..PARTITION_COUNT {
            assert_eq!(tables[0].holders(0, p), map.holders(PartitionId(p)));
            assert_eq!(
                tables[0].holders(1, p).len(),
                3,
                "rf 5 is clamped to 3 members"
            );
            let claimed: Vec<usize> = (0..3).filter(|&i| tables[i].is_master(0, p)).collect();
            assert_eq!(claimed.len(), 1, "partition {p} has exactly one master");
            masters[claimed[0]] += 1;
        }
        // Rendezvous hashing spreads 4096 partitions roughly evenly.
        assert!(
            masters.iter().all(|&m| (1_100..1_650).contains(&m)),
            "{masters:?}"
        );
        for (i, t) in tables.iter().enumerate() {
            assert_eq!(t.generation(), 7);
            assert_eq!((t.replica_count(0), t.replica_count(1)), (2, 3));
            let want = base64::engine::general_purpose::STANDARD.encode(map.bitmap(ids[i], 1));
            assert_eq!(t.replicas_value(0).split(',').nth(3), Some(want.as_str()));
        }
    }

    #[test]
    fn an_unavailable_table_claims_nothing() {
        let t = PartitionTable::unavailable(NodeId(5), 2, 1, -1);
        assert_eq!(t.generation(), -1);
        assert!((0..PARTITION_COUNT).all(|p| !t.is_master(0, p)));
        assert!(decode(t.replicas_master_value(0)).iter().all(|&b| b == 0));
        assert_eq!(t.replica_count(0), 0);
    }
}
