//! The end-of-run report: a table (throughput, p50/p90/p99/p99.9/max per op kind, errors by
//! result code) and the same data as JSON.

use serde_json::{json, Value};

use crate::runner::RunResult;
use crate::workload::OpKind;

/// Latency summary of one op kind, microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpSummary {
    pub kind: OpKind,
    pub count: u64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

pub fn summarize(r: &RunResult) -> Vec<OpSummary> {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    r.recorder
        .latency
        .iter()
        .map(|(k, h)| OpSummary {
            kind: *k,
            count: h.len(),
            ops_per_sec: h.len() as f64 / secs,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
        .collect()
}

pub fn total_ops_per_sec(r: &RunResult) -> f64 {
    r.recorder.ops() as f64 / r.elapsed.as_secs_f64().max(1e-9)
}

pub fn table(title: &str, r: &RunResult) -> String {
    let mut out = format!(
        "{title}: {:.0} ops/s over {:.1} s, {} ok, {} errors\n",
        total_ops_per_sec(r),
        r.elapsed.as_secs_f64(),
        r.recorder.ops(),
        r.recorder.error_count()
    );
    out.push_str(&format!(
        "{:<8} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "op", "count", "ops/s", "p50 µs", "p90 µs", "p99 µs", "p99.9", "max µs"
    ));
    for s in summarize(r) {
        out.push_str(&format!(
            "{:<8} {:>10} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
            s.kind.name(),
            s.count,
            s.ops_per_sec,
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.p999_us,
            s.max_us
        ));
    }
    for ((kind, code), n) in &r.recorder.errors {
        let what = match code {
            -1 => "connection failed".to_string(),
            -2 => "RESP error reply".to_string(),
            c => format!("result code {c}"),
        };
        out.push_str(&format!("errors: {} {what}: {n}\n", kind.name()));
    }
    out
}

pub fn to_json(title: &str, r: &RunResult) -> Value {
    let ops: Vec<Value> = summarize(r)
        .iter()
        .map(|s| {
            json!({
                "op": s.kind.name(), "count": s.count, "ops_per_sec": s.ops_per_sec,
                "p50_us": s.p50_us, "p90_us": s.p90_us, "p99_us": s.p99_us,
                "p999_us": s.p999_us, "max_us": s.max_us,
            })
        })
        .collect();
    let errors: Vec<Value> = r
        .recorder
        .errors
        .iter()
        .map(|((k, code), n)| json!({"op": k.name(), "code": code, "count": n}))
        .collect();
    json!({
        "title": title,
        "elapsed_secs": r.elapsed.as_secs_f64(),
        "ops_per_sec": total_ops_per_sec(r),
        "ops": ops,
        "errors": errors,
    })
}
