//! Which local shard holds a partition: the one rule every part of the node (routing,
//! re-homing, recovery) must agree on, kept in one place so it cannot drift.
//!
//! Owns only the arithmetic. It must never look at records or configuration.

use apogee_wire::digest::PARTITION_COUNT;

/// The shard, out of `shards`, that holds `partition` on this node: `partition % shards`.
/// Consecutive partitions go to consecutive shards, so every shard holds an equal share
/// (±1) of the 4096 partitions whatever the core count.
pub fn home_shard(partition: u16, shards: u32) -> u32 {
    assert!(shards > 0, "a node has at least one shard");
    assert!(
        u32::from(partition) < u32::from(PARTITION_COUNT),
        "partition {partition} out of range"
    );
    u32::from(partition) % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_over_shards() {
        for shards in [1u32, 2, 3, 7, 16] {
            let mut held = vec![0u32; shards as usize];
            for p in 0..PARTITION_COUNT {
                held[home_shard(p, shards) as usize] += 1;
            }
            let (min, max) = (held.iter().min().unwrap(), held.iter().max().unwrap());
            assert!(max - min <= 1, "{shards} shards hold {held:?}");
        }
    }
}
