//! What a shard store is told at open: its paths, sizes, commit level and the namespace's
//! storage settings. Plain data; it must never be read for settings `set-config` may change
//! (those live in `Tuning`).

use std::path::PathBuf;

use crate::shard::media::ExtentConfig;

/// What a shard store needs to know.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The namespace's directory; the shard's file is `shard-<n>.dat` inside it.
    pub dir: PathBuf,
    pub namespace: String,
    pub shard: u32,
    pub shard_count: u32,
    pub block_bytes: usize,
    /// Acknowledge writes only once durable (true) or once in the write buffer (false).
    pub commit_to_device: bool,
    /// Longest a partial block waits in memory before it is written.
    pub flush_max_ms: u64,
    /// Byte budget of this shard's record cache (0 disables it).
    pub cache_bytes: usize,
    /// Blocks whose live bytes fall below this percentage are defragmented.
    pub defrag_lwm_pct: u64,
    /// Pause between two defragmented blocks, so client writes are never starved.
    pub defrag_sleep_us: u64,
    /// Seconds between expiry sweeps (Aerospike's `nsup-period`); 0 disables them.
    pub nsup_period_secs: u64,
    /// Largest size of the data file in bytes; 0 for no limit.
    pub file_bytes_max: u64,
    /// Client writes fail with out-of-space once live data fills this share of the capacity.
    pub stop_writes_used_pct: u64,
    /// ... or once fewer than this share of the blocks are available.
    pub stop_writes_avail_pct: u64,
    /// Above this share of the capacity in live data, the expiry sweep evicts records with a
    /// TTL, soonest to expire first (Aerospike's `evict-used-pct`); 0 disables eviction.
    pub evict_used_pct: u64,
    /// The regions of configured files or devices this shard owns; empty for the default
    /// layout (`<dir>/shard-<n>.dat`, limited by `file_bytes_max`).
    pub extents: Vec<ExtentConfig>,
    /// `storage-engine memory`: blocks live in RAM; without `extents` only there
    /// (`file_bytes_max` is the data size) and nothing survives a restart, with `extents` also
    /// in those files, read back at start.
    pub memory: bool,
}
