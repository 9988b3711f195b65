//! TTL values in write requests and the void times they give (spec §2.7).

use crate::config::TTL_SECS_MAX;

/// `record_ttl` meaning "never expire".
pub const TTL_NEVER_EXPIRE: u32 = 0xFFFF_FFFF;
/// `record_ttl` meaning "keep the record's current void time".
pub const TTL_DONT_UPDATE: u32 = 0xFFFF_FFFE;

/// The void time a write gives a record, or `None` for a TTL the server rejects (result 4).
pub fn void_time_for(
    ttl: u32,
    current: Option<u32>,
    default_ttl: u32,
    now_secs: u32,
) -> Option<u32> {
    let from_now = |secs: u32| {
        if secs == 0 {
            0
        } else {
            now_secs.saturating_add(secs)
        }
    };
    match ttl {
        0 => Some(from_now(default_ttl)),
        TTL_NEVER_EXPIRE => Some(0),
        TTL_DONT_UPDATE => Some(current.unwrap_or_else(|| from_now(default_ttl))),
        1..=TTL_SECS_MAX => Some(from_now(ttl)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        assert_eq!(void_time_for(0, None, 0, 1000), Some(0));
        assert_eq!(void_time_for(0, None, 50, 1000), Some(1050));
        assert_eq!(void_time_for(100, Some(5), 0, 1000), Some(1100));
        assert_eq!(void_time_for(TTL_NEVER_EXPIRE, Some(5), 50, 1000), Some(0));
        assert_eq!(
            void_time_for(TTL_DONT_UPDATE, Some(5000), 50, 1000),
            Some(5000)
        );
        assert_eq!(void_time_for(TTL_DONT_UPDATE, None, 50, 1000), Some(1050));
        assert_eq!(void_time_for(TTL_SECS_MAX + 1, None, 0, 1000), None);
    }
}
