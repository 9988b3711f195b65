//! Request latency histograms for the `latencies:` info command: per namespace, per kind of
//! command (read, write, batch rows) and for whole batches (`batch-index`), per core, in power-of-two millisecond buckets, as Aerospike reports
//! them (`{ns}-read:msec,<ops/sec>,<% over 1 ms>,<% over 8 ms>,<% over 64 ms>`).
//!
//! The core that accepted a request records it (no core writes another's histogram); a
//! ticker on each core closes a window every [`WINDOW_SECS`] so `latencies:` reports the last
//! full window, not the whole run. Counters only: nothing here may slow or block a request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets: 0 is under 1 ms, k ≥ 1 is [2^(k-1), 2^k) ms; the last takes everything longer.
pub const BUCKETS: usize = 18;
/// Seconds per reporting window (Aerospike's ticker interval).
pub const WINDOW_SECS: u64 = 10;

#[derive(Debug, Default)]
pub struct Histogram {
    total: [AtomicU64; BUCKETS],
    /// `total` when the last window closed, and when the one before closed.
    closed: [AtomicU64; BUCKETS],
    closed_before: [AtomicU64; BUCKETS],
}

/// Which kind of command a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read = 0,
    Write = 1,
    /// A batch row that reads (Aerospike's `batch-sub-read`), recorded by the owning core.
    BatchSubRead = 2,
    /// A batch row that writes or deletes (`batch-sub-write`).
    BatchSubWrite = 3,
}

/// Kinds per namespace, and their names in `latencies:`, in Aerospike's order.
pub const KINDS: usize = 4;
pub const KIND_LABELS: [&str; KINDS] = ["read", "write", "batch-sub-read", "batch-sub-write"];

pub fn bucket_of(elapsed: Duration) -> usize {
    let ms = elapsed.as_millis() as u64;
    if ms == 0 {
        0
    } else {
        ((64 - ms.leading_zeros()) as usize).min(BUCKETS - 1)
    }
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        // One writer (the accepting core): a load and a store, not a locked add, which on
        // x86 would fence every request's stores (see `apogee_engine::stats::add_owned`).
        apogee_engine::stats::add_owned(&self.total[bucket_of(elapsed)], 1);
    }

    /// Closes the current window (the owning core's ticker calls this).
    pub fn close_window(&self) {
        for b in 0..BUCKETS {
            self.closed_before[b].store(self.closed[b].load(Relaxed), Relaxed);
            self.closed[b].store(self.total[b].load(Relaxed), Relaxed);
        }
    }

    /// Counts per bucket in the last closed window.
    pub fn last_window(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|b| {
            self.closed[b]
                .load(Relaxed)
                .saturating_sub(self.closed_before[b].load(Relaxed))
        })
    }
}

/// One `latencies:` entry from the windows of every core: ops/sec and the percentages of
/// requests over 1, 8 and 64 ms.
pub fn summary(windows: &[[u64; BUCKETS]]) -> String {
    let mut sum = [0u64; BUCKETS];
    for w in windows {
        for b in 0..BUCKETS {
            sum[b] += w[b];
        }
    }
    let n: u64 = sum.iter().sum();
    // Over 2^t ms: buckets t+1 and up ([2^t, 2^(t+1)) starts at bucket t+1).
    let over = |t: usize| -> f64 {
        if n == 0 {
            0.0
        } else {
            100.0 * sum[t + 1..].iter().sum::<u64>() as f64 / n as f64
        }
    };
    format!(
        "msec,{:.1},{:.2},{:.2},{:.2}",
        n as f64 / WINDOW_SECS as f64,
        over(0),
        over(3),
        over(6)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_summary() {
        assert_eq!(bucket_of(Duration::from_micros(300)), 0);
        assert_eq!(bucket_of(Duration::from_millis(1)), 1);
        assert_eq!(bucket_of(Duration::from_millis(7)), 3);
        assert_eq!(bucket_of(Duration::from_millis(8)), 4);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        let h = Histogram::default();
        for ms in [0, 0, 2, 9, 100] {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(
            h.last_window().iter().sum::<u64>(),
            0,
            "nothing before a window closes"
        );
        h.close_window();
        let w = h.last_window();
        assert_eq!(w.iter().sum::<u64>(), 5);
        assert_eq!(summary(&[w]), "msec,0.5,60.00,40.00,20.00");
        h.close_window();
        assert_eq!(summary(&[h.last_window()]), "msec,0.0,0.00,0.00,0.00");
    }
}
