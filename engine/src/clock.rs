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

/// A void time of 0 never expires; otherwise the record stays readable through its void-time
/// second and is gone once `now` passes it, as on Aerospike CE 8.1.2 (measured: a record put
/// with TTL 1 there is read for 1 to 2 s, never less than 1 s).
pub fn is_expired(void_time: u32, now_secs: u32) -> bool {
    void_time != 0 && void_time < now_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_readable_through_its_void_time_second() {
        assert!(!is_expired(0, u32::MAX));
        assert!(!is_expired(100, 99));
        assert!(!is_expired(100, 100));
        assert!(is_expired(100, 101));
    }
}
