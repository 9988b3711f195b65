//! Apogee benchmarks: a YCSB-style load generator that speaks Aerospike's protocol (on the
//! shared wire codec) and Redis's RESP, a null server that measures the machine's and the
//! client's ceiling, and criterion benches of the hot paths (`benches/hot_paths.rs`).
//!
//! This crate must never be a dependency of the server; it measures, it does not serve data.

pub mod batch_compare;
pub mod distribution;
pub mod driver;
pub mod histogram;
pub mod null_server;
pub mod report;
pub mod runner;
pub mod workload;
