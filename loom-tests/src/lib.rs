//! loom models of the structures Apogee shares between threads. Each model compiles the
//! production source file against loom's atomics (through a `sync` shim named like the
//! engine's), so the code checked is the code shipped.
//!
//! Today that is `engine/src/stats.rs`: per-shard counters written by their owning core and
//! summed by any core answering an info request. The cross-core request channels are flume's
//! and are not written by hand here.

/// The engine's `crate::sync`, pointing at loom.
pub mod sync {
    pub use loom::sync::atomic;
}

#[path = "../../engine/src/stats.rs"]
pub mod stats;

#[cfg(test)]
mod tests {
    use super::stats::{ShardStats, StatsSnapshot};
    use loom::sync::Arc;
    use loom::thread;

    /// Two shards count a write each while a reader on another core sums snapshots: the reader never
    /// sees a count go down or exceed what was written, and after the writers finish it sees
    /// every write.
    #[test]
    fn readers_see_monotonic_bounded_counts() {
        let mut builder = loom::model::Builder::new();
        // Bounded so the model finishes in seconds; 3 preemptions cover every interleaving
        // of one write per shard against two reads.
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let shards: Arc<Vec<ShardStats>> =
                Arc::new(vec![ShardStats::default(), ShardStats::default()]);
            let writers: Vec<_> = (0..2)
                .map(|i| {
                    let s = shards.clone();
                    thread::spawn(move || {
                        s[i].count_write();
                        s[i].set_objects(1);
                    })
                })
                .collect();
            let first = StatsSnapshot::sum(&[shards[0].snapshot(), shards[1].snapshot()]);
            let second = StatsSnapshot::sum(&[shards[0].snapshot(), shards[1].snapshot()]);
            assert!(second.writes >= first.writes, "writes went backwards");
            assert!(first.writes <= 2 && second.objects <= 2);
            for w in writers {
                w.join().unwrap();
            }
            let end = StatsSnapshot::sum(&[shards[0].snapshot(), shards[1].snapshot()]);
            assert_eq!(end.writes, 2);
            assert_eq!(end.objects, 2);
        });
    }
}
