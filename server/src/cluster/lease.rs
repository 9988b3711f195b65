//! The write lease: a clustered node takes writes only while it knows it has not stalled for
//! longer than its peers need to declare it dead.
//!
//! A node stopped (SIGSTOP, a frozen VM, a core starved for seconds) sends no heartbeats; its
//! peers declare it dead after `timeout` intervals and re-form without it, and a new master
//! takes its partitions' writes. When the node runs again, the requests queued in its sockets
//! meanwhile are read before its cluster task hears that it was left out, and its table still
//! names it master: it would apply them on top of versions the new master has already gone
//! past, giving two different records one generation, and the merge would then keep the
//! stale node's (the nemesis `pause` fault lost an acknowledged write so). The lease closes
//! that window: the cluster task renews it every tick, for two thirds of the failure-detection
//! time, so a node stalled long enough to be declared dead has let it lapse when it wakes. A
//! tick that finds the task stalled past the lease does not renew it until one view-change
//! quantum has passed, time enough for the peers' statuses to tell it whether its view lives
//! on (then it serves again) or was superseded (then its table stops it anyway).
//!
//! Owns the lease's clock and the renewal rule. It must never make a request wait: a request
//! reads one atomic and the clock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The lease a request checks.
pub struct Lease {
    origin: Instant,
    /// Milliseconds after `origin` until which writes are taken (0: none yet).
    until_ms: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }
}

impl Lease {
    /// Whether the lease holds now.
    pub fn holds(&self) -> bool {
        self.ms_at(Instant::now()) < self.until_ms.load(Relaxed)
    }

    fn ms_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn renew_until(&self, t: Instant) {
        self.until_ms.store(self.ms_at(t), Relaxed);
    }
}

/// The cluster task's side: renews the lease on each tick unless the task stalled.
pub struct LeaseKeeper {
    /// How long one renewal lasts: two thirds of the failure-detection time.
    term: Duration,
    /// How long renewals stop after a stall: one view-change quantum.
    quarantine: Duration,
    last_tick: Option<Instant>,
    /// Renewals resume at this instant (after a stall).
    quarantined_until: Option<Instant>,
}

impl LeaseKeeper {
    /// The keeper for a heartbeat of `interval`, declared dead after `timeout_intervals`,
    /// whose view changes are decided every `quantum`.
    pub fn new(interval: Duration, timeout_intervals: u32, quantum: Duration) -> LeaseKeeper {
        let detection = interval * timeout_intervals;
        let term = detection * 2 / 3;
        assert!(
            term > Duration::ZERO,
            "the heartbeat config is validated at load"
        );
        LeaseKeeper {
            term,
            quarantine: quantum,
            last_tick: None,
            quarantined_until: None,
        }
    }

    /// One tick of the cluster task at `now`: renews `lease`, or starts a quarantine when the
    /// task stalled past the lease's term. Returns the stall, when there was one, for the log.
    pub fn on_tick(&mut self, now: Instant, lease: &Lease) -> Option<Duration> {
        let gap = self.last_tick.map(|t| now.saturating_duration_since(t));
        self.last_tick = Some(now);
        let stalled = gap.filter(|&g| g >= self.term);
        if stalled.is_some() {
            self.quarantined_until = Some(now + self.quarantine);
        }
        match self.quarantined_until {
            Some(until) if now < until => {}
            _ => {
                self.quarantined_until = None;
                lease.renew_until(now + self.term);
            }
        }
        stalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper() -> LeaseKeeper {
        // The defaults: 150 ms × 10, a quantum of 12 intervals.
        LeaseKeeper::new(Duration::from_millis(150), 10, Duration::from_millis(1_800))
    }

    fn at(lease: &Lease, ms: u64) -> Instant {
        lease.origin + Duration::from_millis(ms)
    }

    fn holds_at(lease: &Lease, ms: u64) -> bool {
        ms < lease.until_ms.load(Relaxed)
    }

    #[test]
    fn regular_ticks_keep_the_lease_for_two_thirds_of_the_detection_time() {
        let lease = Lease::default();
        let mut k = keeper();
        assert!(!holds_at(&lease, 0), "no lease before the first tick");
        for ms in (0..5_000).step_by(10) {
            assert_eq!(k.on_tick(at(&lease, ms), &lease), None);
            assert!(holds_at(&lease, ms + 999) && !holds_at(&lease, ms + 1_000));
        }
    }

    #[test]
    fn a_stall_past_the_term_lapses_the_lease_until_a_quantum_has_passed() {
        let lease = Lease::default();
        let mut k = keeper();
        k.on_tick(at(&lease, 0), &lease);
        // Paused for 5.8 s: the lease lapsed at 1 s; requests read at wake are refused.
        assert!(!holds_at(&lease, 5_800));
        assert_eq!(
            k.on_tick(at(&lease, 5_800), &lease),
            Some(Duration::from_millis(5_800))
        );
        for ms in (5_810..7_600).step_by(10) {
            assert_eq!(k.on_tick(at(&lease, ms), &lease), None);
            assert!(
                !holds_at(&lease, ms),
                "renewed at {ms} during the quarantine"
            );
        }
        k.on_tick(at(&lease, 7_600), &lease);
        assert!(holds_at(&lease, 7_600));
    }

    #[test]
    fn a_shorter_hiccup_neither_lapses_the_lease_nor_quarantines() {
        let lease = Lease::default();
        let mut k = keeper();
        k.on_tick(at(&lease, 0), &lease);
        assert_eq!(k.on_tick(at(&lease, 900), &lease), None);
        assert!(holds_at(&lease, 900) && holds_at(&lease, 1_899));
    }
}
