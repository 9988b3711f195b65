//! Time as Aerospike counts it: void times in seconds since the Citrusleaf epoch
//! (2010-01-01T00:00:00Z), last-update times in milliseconds since the same epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time of 2010-01-01T00:00:00Z.
pub const CITRUSLEAF_EPOCH_UNIX_SECS: u64 = 1_262_304_000;

/// Milliseconds since the Citrusleaf epoch.
pub fn now_ms() -> u64 {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    unix_ms.saturating_sub(CITRUSLEAF_EPOCH_UNIX_SECS * 1000)
}

/// Seconds since the Citrusleaf epoch.
pub fn now_secs() -> u32 {
    u32::try_from(now_ms() / 1000).unwrap_or(u32::MAX)
}

/// A void time of 0 never expires; otherwise the record is gone once `now` reaches it.
pub fn is_expired(void_time: u32, now_secs: u32) -> bool {
    void_time != 0 && void_time <= now_secs
}
