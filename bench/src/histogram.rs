//! Latency recording: one HDR histogram per op kind (microseconds), merged across connections,
//! plus error counts by result code.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::workload::OpKind;

/// Highest latency recorded: one minute, in microseconds.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// What one connection (or the whole run, after merging) measured.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub latency: BTreeMap<OpKind, Histogram<u64>>,
    /// (op kind, result code) → count; code -1 means a connection-level failure.
    pub errors: BTreeMap<(OpKind, i32), u64>,
}

impl Recorder {
    pub fn record(&mut self, kind: OpKind, micros: u64) {
        let h = self.latency.entry(kind).or_insert_with(|| {
            Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
        });
        h.saturating_record(micros.clamp(1, LATENCY_US_MAX));
    }

    pub fn error(&mut self, kind: OpKind, code: i32) {
        *self.errors.entry((kind, code)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (k, h) in &other.latency {
            match self.latency.get_mut(k) {
                Some(mine) => mine.add(h).expect("histograms share bounds"),
                None => {
                    self.latency.insert(*k, h.clone());
                }
            }
        }
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
    }

    pub fn ops(&self) -> u64 {
        self.latency.values().map(|h| h.len()).sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_sample() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for us in 1..=100 {
            a.record(OpKind::Read, us);
        }
        for us in 1000..=1099 {
            b.record(OpKind::Read, us);
        }
        b.record(OpKind::Update, 5);
        b.error(OpKind::Update, 2);
        a.merge(&b);
        let r = &a.latency[&OpKind::Read];
        assert_eq!(r.len(), 200);
        assert!(r.value_at_quantile(0.25) <= 100);
        assert!(r.value_at_quantile(0.75) >= 1000);
        assert_eq!(a.ops(), 201);
        assert_eq!(a.errors[&(OpKind::Update, 2)], 1);
    }
}
