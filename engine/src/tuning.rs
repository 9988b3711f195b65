//! The namespace settings `set-config` may change while the node runs: defragmentation,
//! expiry, eviction, stop-writes and flush pacing. One `Tuning` per namespace, shared
//! (behind an `Arc`) between the shard stores that read it and the info handler that writes it.
//!
//! Plain atomics read with `Relaxed` loads: a new value takes effect at the store's next
//! decision, and a reader never sees a torn value. Validation of new values (ranges) happens
//! in the server before they are stored here; this module must never hold anything that
//! cannot change safely at any moment.

use crate::shard::StoreConfig;
use crate::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Tuning {
    defrag_lwm_pct: AtomicU64,
    defrag_sleep_us: AtomicU64,
    nsup_period_secs: AtomicU64,
    evict_used_pct: AtomicU64,
    stop_writes_used_pct: AtomicU64,
    stop_writes_avail_pct: AtomicU64,
    flush_max_ms: AtomicU64,
}

/// A dynamic setting, by its Aerospike name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    DefragLwmPct,
    DefragSleep,
    NsupPeriod,
    EvictUsedPct,
    StopWritesUsedPct,
    StopWritesAvailPct,
    FlushMaxMs,
}

impl Setting {
    pub fn from_name(name: &str) -> Option<Setting> {
        Some(match name {
            "defrag-lwm-pct" => Setting::DefragLwmPct,
            "defrag-sleep" => Setting::DefragSleep,
            "nsup-period" => Setting::NsupPeriod,
            "evict-used-pct" => Setting::EvictUsedPct,
            "stop-writes-used-pct" => Setting::StopWritesUsedPct,
            "stop-writes-avail-pct" => Setting::StopWritesAvailPct,
            "flush-max-ms" => Setting::FlushMaxMs,
            _ => return None,
        })
    }

    /// The values accepted for the setting, inclusive: the same as in the config file.
    pub fn range(self) -> (u64, u64) {
        match self {
            Setting::DefragLwmPct => (1, 99),
            Setting::DefragSleep => (0, 1_000_000),
            Setting::NsupPeriod => (0, 86_400),
            Setting::EvictUsedPct => (0, 100),
            Setting::StopWritesUsedPct => (1, 100),
            Setting::StopWritesAvailPct => (0, 50),
            Setting::FlushMaxMs => (1, 100_000),
        }
    }
}

impl Tuning {
    pub fn from_config(cfg: &StoreConfig) -> Tuning {
        Tuning {
            defrag_lwm_pct: AtomicU64::new(cfg.defrag_lwm_pct),
            defrag_sleep_us: AtomicU64::new(cfg.defrag_sleep_us),
            nsup_period_secs: AtomicU64::new(cfg.nsup_period_secs),
            evict_used_pct: AtomicU64::new(cfg.evict_used_pct),
            stop_writes_used_pct: AtomicU64::new(cfg.stop_writes_used_pct),
            stop_writes_avail_pct: AtomicU64::new(cfg.stop_writes_avail_pct),
            flush_max_ms: AtomicU64::new(cfg.flush_max_ms),
        }
    }

    fn cell(&self, s: Setting) -> &AtomicU64 {
        match s {
            Setting::DefragLwmPct => &self.defrag_lwm_pct,
            Setting::DefragSleep => &self.defrag_sleep_us,
            Setting::NsupPeriod => &self.nsup_period_secs,
            Setting::EvictUsedPct => &self.evict_used_pct,
            Setting::StopWritesUsedPct => &self.stop_writes_used_pct,
            Setting::StopWritesAvailPct => &self.stop_writes_avail_pct,
            Setting::FlushMaxMs => &self.flush_max_ms,
        }
    }

    pub fn get(&self, s: Setting) -> u64 {
        self.cell(s).load(Ordering::Relaxed)
    }

    /// Stores a value the caller has checked against [`Setting::range`].
    pub fn set(&self, s: Setting, v: u64) {
        let (lo, hi) = s.range();
        assert!((lo..=hi).contains(&v), "{s:?} = {v} outside {lo}..={hi}");
        self.cell(s).store(v, Ordering::Relaxed);
    }
}
