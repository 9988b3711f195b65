//! Rate limits for log lines that a client or a failing host can repeat without end (accept
//! failures, refused connections, malformed frames): at most one line per
//! [`LOG_INTERVAL_SECS`] per kind and core, with the count of lines it stood for.
//!
//! Lock-free (two atomics per kind), so a limiter may be per core or node-wide. It must never
//! drop the first occurrence of an event: an operator always sees that it happened, only the
//! repeats are folded.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Shortest time between two lines of one kind on one core.
pub const LOG_INTERVAL_SECS: u64 = 10;

/// Milliseconds since the first limiter was asked, plus one (0 means "never logged").
fn now_ms(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    now.saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// One kind of repeated log line.
#[derive(Debug, Default)]
pub struct RateLimited {
    /// When a line was last logged ([`now_ms`]), 0 before the first.
    last_ms: AtomicU64,
    /// Events since the last line that was logged.
    suppressed: AtomicU64,
}

impl RateLimited {
    /// Counts an event; `Some(n)` when a line may be logged now, `n` being the events it
    /// stands for (this one and those suppressed since the last line).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let now = now_ms(now);
        let last = self.last_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_INTERVAL_SECS * 1000;
        // Of two threads that find a line due, one logs: the other counts as suppressed.
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed) + 1);
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// Node-wide limiters of lines that do not belong to one core.
#[derive(Debug, Default)]
pub struct NodeLogLimits {
    pub info_refused: RateLimited,
    pub info_reply_full: RateLimited,
    pub bin_name_quota: RateLimited,
    /// A fabric connection closed for bad bytes.
    pub fabric_refused: RateLimited,
    /// A fabric connection refused: the peer is of another cluster (a configuration error,
    /// so not folded into the bad-bytes line).
    pub fabric_other_cluster: RateLimited,
    /// A proxied request that could not reach the partition's master.
    pub proxy_failed: RateLimited,
    /// A keyed request answered 11 (partition unavailable) by this node's own table: which
    /// check refused it, so a client's 11 can be traced to its cause.
    pub partition_unavailable: RateLimited,
    /// A write's image that a replica did not apply (refused, unreachable, no answer).
    pub replica_failed: RateLimited,
    /// An image this node could not apply as a replica (its store failed).
    pub replica_apply_failed: RateLimited,
    /// A migration batch or stream that failed (retried while its view lasts).
    pub migrate_failed: RateLimited,
    /// A migration message for a namespace this node does not have.
    pub migrate_refused: RateLimited,
}

/// The per-core limiters of every repeated line.
#[derive(Debug, Default)]
pub struct CoreLogLimits {
    pub accept_failed: RateLimited,
    pub over_proto_fd_max: RateLimited,
    pub bad_header: RateLimited,
    pub bad_message: RateLimited,
    pub frame_cut_short: RateLimited,
    pub frame_budget: RateLimited,
    pub frame_stalled: RateLimited,
    pub idle_reaped: RateLimited,
    pub bad_batch: RateLimited,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_event_logs_and_repeats_fold_into_the_next_line() {
        let r = RateLimited::default();
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!(r.allow_at(t0), Some(1));
        for i in 1..=5 {
            assert_eq!(r.allow_at(t0 + Duration::from_millis(i)), None);
        }
        let later = t0 + Duration::from_secs(LOG_INTERVAL_SECS);
        assert_eq!(r.allow_at(later), Some(6), "five suppressed and this one");
        assert_eq!(r.allow_at(later), None);
    }
}
