//! The partition table: the one owner of where each of the 4096 partitions lives — which
//! nodes hold it, in which role (master first, then replicas), which node serves it right now
//! (the *working* master, which differs from the map's master while a migration hands the
//! partition over), where its writes are replicated, what this node claims in `replicas`, and
//! which local shard serves it on this node. Routing, replication, the info commands clients
//! tend with (`replicas`, `partition-generation`, `cluster-stable`) and re-homing read it;
//! nothing else computes placement.
//!
//! A node alone masters every partition (`single_node`). In a cluster, every committed view
//! and every step of its migrations builds a new table from the migration state machines
//! (`migrating`), and a node cut off from every cluster holds nothing (`unavailable`:
//! requests get result 11). The cluster's tasks replace the table whole, with a higher
//! generation, through `Node::partitions` (an `ArcSwap`); readers never see a table
//! half-changed. It must never do I/O or hold a lock.

use apogee_cluster::view::ClusterKey;
#[cfg(test)]
use apogee_cluster::{BalanceError, Succession};
use std::sync::Arc;

use apogee_cluster::{Migrator, NodeId, PartitionMap, CLUSTER_NODES_MAX};
use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::PartitionId;
use base64::Engine as _;

/// `roles[p]` bit: this node may serve reads of the partition (it serves it, or holds a full
/// replica copy that it claims).
const ROLE_READS: u8 = 1;
/// `roles[p]` bit: this node applies replicated writes of the partition (it is an eventual
/// holder, or keeps a full copy it has not dropped yet).
const ROLE_ACCEPTS: u8 = 2;
/// `roles[p]` bits: this node's copy is complete (every acknowledged write), or some records
/// of an incomplete one (neither: no copy); `partition-info`'s state S, D or A.
const ROLE_FULL: u8 = 4;
const ROLE_SUBSET: u8 = 8;

/// One namespace's placement.
struct NamespacePlacement {
    /// `replicas[p]`: the map's holders, at most `replication-factor` nodes, master first
    /// (shared by every table of one view).
    replicas: Arc<Vec<Vec<NodeId>>>,
    /// `serving[p]`: the node that serves the partition now (`None`: nobody, e.g. during a
    /// hand-off: requests answer 11 and the clients retry).
    serving: Vec<Option<NodeId>>,
    /// `targets[p]`: where this node sends each write of the partition it serves (never
    /// itself; empty where it does not serve).
    targets: Vec<Targets>,
    /// `dup_res[p]`: where this node, serving a partition it is merging, looks up each
    /// transaction's record first (empty almost everywhere).
    dup_res: Vec<Targets>,
    /// `roles[p]`: `ROLE_*` bits of this node.
    roles: Vec<u8>,
    /// `bitmaps[r]`: base64 of the bitmap of partitions where this node claims replica
    /// column `r` (0 = master), as the `replicas*` info values carry it; built with the
    /// table, since a request may ask for `replicas` a thousand times.
    bitmaps: Vec<String>,
    /// `migrate_tx_partitions_remaining`, `migrate_rx_partitions_remaining`,
    /// `migrate_tx_partitions_active`, `migrate_rx_partitions_active`.
    tx_remaining: usize,
    rx_remaining: usize,
    tx_active: usize,
    rx_active: usize,
    /// Planned, and nothing left to send or receive here.
    stable: bool,
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
    /// The view whose migrations built this table: streams of records carry it and are
    /// refused under any other.
    migration_key: Option<ClusterKey>,
    /// The view before `migration_key` and the members of `migration_key`'s view: whose
    /// replica images this node still takes (`takes_images_of`).
    previous_key: Option<ClusterKey>,
    members: Arc<[NodeId]>,
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
            migration_key: None,
            previous_key: None,
            members: Arc::new([node]),
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
            migration_key: None,
            previous_key: None,
            members: Arc::new([]),
            namespaces: (0..namespaces).map(placement).collect(),
        }
    }

    /// The table of a committed view with every partition already where the map puts it
    /// (tests: a running cluster builds its tables by `migrating`):
    /// for each namespace, Aerospike's balance over the succession list with
    /// `min(replication_factors[ns], members)` copies.
    #[cfg(test)]
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
            migration_key: None,
            previous_key: None,
            members: succession.nodes().into(),
            namespaces,
        })
    }

    /// The table of view `key` while (and after) it migrates: for each namespace, its map's
    /// holders and what its migration state machine says now — who serves, where writes go,
    /// what this node claims and accepts.
    pub fn migrating(
        node: NodeId,
        shards: u32,
        key: ClusterKey,
        members: Arc<[NodeId]>,
        namespaces: &[(&Arc<Vec<Vec<NodeId>>>, &Migrator)],
        generation: i64,
    ) -> PartitionTable {
        let previous_key = namespaces.first().and_then(|(_, m)| m.previous_view());
        assert!(shards > 0, "a node has at least one shard");
        let namespaces = namespaces
            .iter()
            .map(|(rows, m)| NamespacePlacement::from_migrator(rows, m))
            .collect();
        PartitionTable {
            generation,
            node,
            shards,
            migration_key: Some(key),
            previous_key,
            members,
            namespaces,
        }
    }

    /// Whether a replica image that `from` sent under view `key` may be applied here: one of
    /// this table's view, or of the view just before it from a member of this one (a master
    /// that has not committed this view yet: its copy comes into it with those writes).
    /// Never one of a view this node went on from without the sender (the other side of a
    /// split, an old master not yet told): those writes would ride into this view's copy,
    /// where no merge looks for them.
    pub fn takes_images_of(&self, key: u64, from: NodeId) -> bool {
        let is = |k: Option<ClusterKey>| key != 0 && k.map(ClusterKey::get) == Some(key);
        is(self.migration_key) || (is(self.previous_key) && self.members.contains(&from))
    }

    /// `partition-generation`.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    /// The view whose migrations this table follows (`None` for a node alone or orphaned).
    pub fn migration_key(&self) -> Option<ClusterKey> {
        self.migration_key
    }

    /// The local shard that serves `partition`, which every node holding it has. (Which
    /// node a request belongs on is `is_master`'s business.)
    pub fn shard_of(&self, partition: u16) -> usize {
        apogee_engine::placement::home_shard(partition, self.shards) as usize
    }

    /// Whether this node serves `partition` in namespace `ns` now (its working master).
    pub fn is_master(&self, ns: usize, partition: u16) -> bool {
        self.namespaces[ns].serving[usize::from(partition)] == Some(self.node)
    }

    /// The node that serves `partition` in `ns` now, if any.
    pub fn master(&self, ns: usize, partition: u16) -> Option<NodeId> {
        self.namespaces[ns].serving[usize::from(partition)]
    }

    /// Whether a read of `partition` may be served here: this node serves it, or claims a
    /// full replica copy of it (a client whose replica policy sends reads to replicas).
    pub fn reads_here(&self, ns: usize, partition: u16) -> bool {
        self.namespaces[ns].roles[usize::from(partition)] & ROLE_READS != 0
    }

    /// Whether this node applies a replicated write of `partition` (or a migrated record).
    pub fn accepts_replica_write(&self, ns: usize, partition: u16) -> bool {
        self.namespaces[ns].roles[usize::from(partition)] & ROLE_ACCEPTS != 0
    }

    /// Where this node sends each write of `partition` it serves (never itself).
    pub fn replication_targets(&self, ns: usize, partition: u16) -> &[NodeId] {
        self.namespaces[ns].targets[usize::from(partition)].as_slice()
    }

    /// The merge sources a transaction of `partition` in `ns` must resolve against first
    /// (`dup_res`): empty unless this node serves a partition it is merging.
    pub fn dup_res_sources(&self, ns: usize, partition: u16) -> &[NodeId] {
        self.namespaces[ns].dup_res[usize::from(partition)].as_slice()
    }

    /// The nodes the map puts `partition` of `ns` on, master first (empty when none is
    /// known). Where it is served from now is `master`'s business.
    #[cfg(test)]
    pub fn holders(&self, ns: usize, partition: u16) -> &[NodeId] {
        &self.namespaces[ns].replicas[usize::from(partition)]
    }

    /// One row of `partition-info` for `partition` of `ns` (CE 8.1.2.0's columns from `state`
    /// to `records`; `objects` is the caller's count): this node's copy (S complete, D some
    /// records of an incomplete one, A none), the holders count, this node's place among
    /// them (the count when it is not one), and who serves it.
    pub fn partition_info_row(&self, ns: usize, partition: u16, objects: u32) -> String {
        let p = &self.namespaces[ns];
        let i = usize::from(partition);
        let state = match p.roles[i] {
            r if r & ROLE_FULL != 0 => 'S',
            r if r & ROLE_SUBSET != 0 => 'D',
            _ => 'A',
        };
        let row = &p.replicas[i];
        let place = row
            .iter()
            .position(|&n| n == self.node)
            .unwrap_or(row.len());
        let working = p.serving[i].map_or_else(|| "0".into(), |n| format!("{:X}", n.0));
        format!(
            "{state}:{n}:{place}:{place}:0:{working}:{working}:0:0:0:{objects}:0:0",
            n = row.len()
        )
    }

    /// How many copies of each partition the table keeps for `ns`: the most nodes any
    /// partition lists.
    pub fn replica_count(&self, ns: usize) -> usize {
        let p = &self.namespaces[ns];
        p.replicas.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The `migrate_*_partitions_*` fields of `namespace/<ns>` (CE 8.1.2.0's names).
    pub fn migrate_describe(&self, ns: usize) -> String {
        let p = &self.namespaces[ns];
        format!(
            "migrate_tx_partitions_active={};migrate_rx_partitions_active={};\
             migrate_tx_partitions_remaining={};migrate_rx_partitions_remaining={}",
            p.tx_active, p.rx_active, p.tx_remaining, p.rx_remaining
        )
    }

    /// `migrate_partitions_remaining`: partitions still to send or receive here, summed
    /// over namespaces as CE sums it.
    pub fn migrate_remaining(&self) -> usize {
        (self.namespaces.iter())
            .map(|p| p.tx_remaining + p.rx_remaining)
            .sum()
    }

    /// Whether no namespace has anything left to migrate here (and every plan is made).
    pub fn is_migration_stable(&self) -> bool {
        self.namespaces.iter().all(|p| p.stable)
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
    /// Every partition where its row puts it: the row's first node serves and replicates to
    /// the others, and every node claims its column.
    fn from_rows(replicas: Vec<Vec<NodeId>>, node: NodeId) -> NamespacePlacement {
        debug_assert_eq!(replicas.len(), PARTITION_COUNT as usize);
        let claims: Vec<u8> = (replicas.iter())
            .map(|row| row.iter().position(|&n| n == node).map_or(0, |c| 1 << c))
            .collect();
        NamespacePlacement {
            bitmaps: bitmaps(replica_columns(&replicas), &claims),
            serving: replicas.iter().map(|row| row.first().copied()).collect(),
            targets: (replicas.iter())
                .map(|row| match row.split_first() {
                    Some((&m, rest)) if m == node => Targets::of(rest.iter().copied()),
                    _ => Targets::default(),
                })
                .collect(),
            dup_res: vec![Targets::default(); replicas.len()],
            roles: (replicas.iter())
                .map(|row| {
                    if row.contains(&node) {
                        ROLE_READS | ROLE_ACCEPTS | ROLE_FULL
                    } else {
                        0
                    }
                })
                .collect(),
            replicas: Arc::new(replicas),
            tx_remaining: 0,
            rx_remaining: 0,
            tx_active: 0,
            rx_active: 0,
            stable: true,
        }
    }

    /// As `m` migrates the partitions whose holders are `replicas` (its view's map, built
    /// once per view): no allocation per partition, since the migration task publishes a
    /// table after every step.
    fn from_migrator(replicas: &Arc<Vec<Vec<NodeId>>>, m: &Migrator) -> NamespacePlacement {
        let pids = (0..PARTITION_COUNT).map(PartitionId);
        let claims: Vec<u8> = pids.clone().map(|p| m.claims_mask(p)).collect();
        let roles = (pids.clone().zip(&claims))
            .map(|(p, &c)| {
                let reads = if c == 0 { 0 } else { ROLE_READS };
                let accepts = if m.accepts_replica_write(p) {
                    ROLE_ACCEPTS
                } else {
                    0
                };
                let copy = match m.copy(p) {
                    apogee_cluster::PartitionCopy::Full => ROLE_FULL,
                    apogee_cluster::PartitionCopy::Subset => ROLE_SUBSET,
                    apogee_cluster::PartitionCopy::Absent => 0,
                };
                reads | accepts | copy
            })
            .collect();
        NamespacePlacement {
            bitmaps: bitmaps(replica_columns(replicas), &claims),
            serving: pids.clone().map(|p| m.working_master(p)).collect(),
            targets: pids
                .map(|p| {
                    let mut t = Targets::default();
                    m.for_each_replication_target(p, |n| t.push(n));
                    t
                })
                .collect(),
            dup_res: (0..PARTITION_COUNT)
                .map(|p| {
                    let mut t = Targets::default();
                    m.for_each_dup_res_source(PartitionId(p), |n| t.push(n));
                    t
                })
                .collect(),
            roles,
            replicas: replicas.clone(),
            tx_remaining: m.tx_partitions_remaining(),
            rx_remaining: m.rx_partitions_remaining(),
            tx_active: m.outgoing_active(),
            rx_active: m.incoming_active(),
            stable: m.is_stable(),
        }
    }
}

/// Where this node sends one partition's writes: at most every other member, inline.
#[derive(Clone, Copy)]
struct Targets {
    nodes: [NodeId; CLUSTER_NODES_MAX],
    len: u8,
}

impl Default for Targets {
    fn default() -> Targets {
        Targets {
            nodes: [NodeId(0); CLUSTER_NODES_MAX],
            len: 0,
        }
    }
}

impl Targets {
    fn of(nodes: impl Iterator<Item = NodeId>) -> Targets {
        let mut t = Targets::default();
        nodes.for_each(|n| t.push(n));
        t
    }

    fn push(&mut self, node: NodeId) {
        let len = usize::from(self.len);
        assert!(len < CLUSTER_NODES_MAX, "more targets than cluster members");
        self.nodes[len] = node;
        self.len += 1;
    }

    fn as_slice(&self) -> &[NodeId] {
        &self.nodes[..usize::from(self.len)]
    }
}

/// The holders of every partition of `map`, master first: built once per view and shared by
/// every table of that view.
pub fn rows_of(map: &PartitionMap) -> Arc<Vec<Vec<NodeId>>> {
    Arc::new(
        (0..PARTITION_COUNT)
            .map(|p| map.holders(PartitionId(p)).to_vec())
            .collect(),
    )
}

/// How many replica columns `replicas` has: its longest row, at least one.
fn replica_columns(replicas: &[Vec<NodeId>]) -> usize {
    replicas.iter().map(Vec::len).max().unwrap_or(0).max(1)
}

/// One base64 bitmap per replica column, of the partitions whose `claims[p]` mask has that
/// column's bit (bit 7 of byte 0 is partition 0, as clients read it).
fn bitmaps(columns: usize, claims: &[u8]) -> Vec<String> {
    (0..columns)
        .map(|r| {
            let mut bits = vec![0u8; PARTITION_COUNT as usize / 8];
            for (p, &mask) in claims.iter().enumerate() {
                if mask & (1 << r) != 0 {
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
        let claims: Vec<u8> = (replicas.iter())
            .map(|row| row.iter().position(|&n| n == me).map_or(0, |c| 1 << c))
            .collect();
        let maps: Vec<Vec<u8>> = (bitmaps(replica_columns(&replicas), &claims).iter())
            .map(|b| decode(b))
            .collect();
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

    #[test]
    fn a_migrating_table_serves_what_its_state_machine_says() {
        use apogee_cluster::migrate::Output;
        use apogee_cluster::{MigrateConfig, Migrator};
        let key = ClusterKey::new(0x77).unwrap();
        let (me, other) = (NodeId(0xA1), NodeId(0xB2));
        // Alone in a view: planned at once, nothing anywhere, so every partition is settled
        // and served here.
        let alone = Succession::new([me]).unwrap();
        let map = PartitionMap::balance(&alone, 2).unwrap();
        let mut m = Migrator::new(me, MigrateConfig::default()).unwrap();
        m.begin_view(key, alone, map.clone(), &mut Output::default())
            .unwrap();
        let rows = rows_of(&map);
        let t = PartitionTable::migrating(me, 2, key, Arc::new([me]), &[(&rows, &m)], 5);
        assert_eq!((t.generation(), t.migration_key()), (5, Some(key)));
        assert!((0..PARTITION_COUNT).all(|p| t.is_master(0, p)
            && t.reads_here(0, p)
            && t.accepts_replica_write(0, p)
            && t.replication_targets(0, p).is_empty()));
        assert!(t.is_migration_stable());
        assert_eq!(t.migrate_remaining(), 0);
        assert!(decode(t.replicas_master_value(0))
            .iter()
            .all(|&b| b == 0xFF));
        // With a second member whose versions have not arrived: nobody serves yet, nothing
        // is claimed, and the node is not migration-stable.
        let two = Succession::new([me, other]).unwrap();
        let map = PartitionMap::balance(&two, 2).unwrap();
        let mut out = Output::default();
        let key2 = ClusterKey::new(0x78).unwrap();
        m.begin_view(key2, two.clone(), map.clone(), &mut out)
            .unwrap();
        let rows = rows_of(&map);
        let t = PartitionTable::migrating(me, 2, key2, two.nodes().into(), &[(&rows, &m)], 6);
        // Replica images: of this view, or of the one before from a member of this one.
        assert!(t.takes_images_of(0x78, other) && t.takes_images_of(0x77, other));
        assert!(!t.takes_images_of(0x77, NodeId(0xC3)), "not a member now");
        assert!(!t.takes_images_of(0x79, other) && !t.takes_images_of(0, other));
        assert!((0..PARTITION_COUNT).all(|p| t.master(0, p).is_none() && !t.reads_here(0, p)));
        assert!(!t.is_migration_stable());
        assert!(decode(t.replicas_master_value(0)).iter().all(|&b| b == 0));
        assert!(t
            .migrate_describe(0)
            .contains("migrate_tx_partitions_remaining=0"));
    }
}
