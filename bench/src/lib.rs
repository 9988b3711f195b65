//! Apogee benchmarks. Today: criterion benches of the hot paths (`benches/hot_paths.rs`).
//! The YCSB-style load generator and the Redis comparison come with issue 6.
//! This crate must never be a dependency of the server.
