//! Per-shard counters that other cores read for info and statistics.
//!
//! The owning shard is the only writer of each counter; any core may read. Readers see
//! eventually-consistent values, never torn ones. This module must never be used to make a
//! decision on the data path: it is for reporting only.

use crate::sync::atomic::{AtomicU64, Ordering};

/// Counters of one shard, shared (behind an `Arc`) between its owner and readers on other cores.
#[derive(Debug, Default)]
pub struct ShardStats {
    objects: AtomicU64,
    bad_records: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    cache_hits: AtomicU64,
    device_reads: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    shadows: AtomicU64,
    used_bytes: AtomicU64,
    total_bytes: AtomicU64,
    index_bytes: AtomicU64,
}

/// A point-in-time copy of the counters of one or more shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub objects: u64,
    pub bad_records: u64,
    pub writes: u64,
    pub reads: u64,
    pub cache_hits: u64,
    pub device_reads: u64,
    pub expired: u64,
    pub evicted: u64,
    /// Tombstones and expired records kept on disk to keep older versions dead.
    pub shadows: u64,
    /// Bytes of live records (and shadows) on the device.
    pub used_bytes: u64,
    /// Bytes the data files may grow to (`filesize`); 0 when unbounded.
    pub total_bytes: u64,
    /// Approximate bytes of RAM the primary index holds.
    pub index_bytes: u64,
}

/// Adds `n` to a counter that only its owning shard writes: a load and a store rather than
/// a locked add. On x86 a locked instruction is a full fence, so a counted write would wait
/// for every store still in flight (a record's block bytes and index lines) on each request.
pub fn add_owned(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl ShardStats {
    /// Sets the live object count (the owner knows it exactly from its index).
    pub fn set_objects(&self, n: u64) {
        self.objects.store(n, Ordering::Relaxed);
    }

    pub fn add_bad_records(&self, n: u64) {
        add_owned(&self.bad_records, n);
    }

    pub fn count_write(&self) {
        add_owned(&self.writes, 1);
    }

    pub fn count_read(&self) {
        add_owned(&self.reads, 1);
    }

    pub fn count_cache_hit(&self) {
        add_owned(&self.cache_hits, 1);
    }

    pub fn count_device_read(&self) {
        add_owned(&self.device_reads, 1);
    }

    pub fn set_shadows(&self, n: u64) {
        self.shadows.store(n, Ordering::Relaxed);
    }

    pub fn add_evicted(&self, n: u64) {
        add_owned(&self.evicted, n);
    }

    /// Sets the device and index usage the owner knows exactly.
    pub fn set_usage(&self, used_bytes: u64, index_bytes: u64) {
        self.used_bytes.store(used_bytes, Ordering::Relaxed);
        self.index_bytes.store(index_bytes, Ordering::Relaxed);
    }

    pub fn set_total_bytes(&self, n: u64) {
        self.total_bytes.store(n, Ordering::Relaxed);
    }

    pub fn add_expired(&self, n: u64) {
        add_owned(&self.expired, n);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            objects: self.objects.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            device_reads: self.device_reads.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            shadows: self.shadows.load(Ordering::Relaxed),
            used_bytes: self.used_bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            index_bytes: self.index_bytes.load(Ordering::Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Sums the snapshots of several shards into a node-wide view.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a StatsSnapshot>) -> StatsSnapshot {
        parts
            .into_iter()
            .fold(StatsSnapshot::default(), |acc, s| StatsSnapshot {
                objects: acc.objects + s.objects,
                bad_records: acc.bad_records + s.bad_records,
                writes: acc.writes + s.writes,
                reads: acc.reads + s.reads,
                cache_hits: acc.cache_hits + s.cache_hits,
                device_reads: acc.device_reads + s.device_reads,
                expired: acc.expired + s.expired,
                evicted: acc.evicted + s.evicted,
                shadows: acc.shadows + s.shadows,
                used_bytes: acc.used_bytes + s.used_bytes,
                total_bytes: acc.total_bytes + s.total_bytes,
                index_bytes: acc.index_bytes + s.index_bytes,
            })
    }
}
