//! Applying a record version that was decided elsewhere (replication, migration, re-homing):
//! [`ShardStore::apply_if_newer`] stores it only when it is newer than the shard's own, by the
//! namespace's `conflict-resolution-policy` ([`ConflictPolicy`], Aerospike's names):
//! `generation` orders versions by generation, then last-update time (design.md §3);
//! `last-update-time` by last-update time, then generation. A tombstone also wins a tie (it
//! carries the generation of the version it deleted: see [`supersedes`]).
//!
//! Generations wrap at 65,535. As in Aerospike, `generation` compares them directly (after a
//! split brain the version with more history wins, even across a wrap), and
//! `last-update-time` breaks a tie by generation with the wrap seen (`b` is ahead of `a` when
//! `b - a` mod 2^16 is below 32,768). Limits, stated so callers do not rely on more: a local
//! tombstone (a shadow) keeps no metadata, so an incoming record
//! always wins over a deleted one (as a record created again after a delete must: it starts
//! at generation 1). It must never replace a local version newer than the incoming one.

use crate::clock;
use crate::error::StoreError;
use crate::record::{Record, RecordMeta};

use super::ShardStore;

/// What [`ShardStore::apply_if_newer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The incoming version is now the shard's.
    Stored,
    /// The shard's own version is as new or newer: nothing was written.
    NotNewer,
    /// The incoming record has already expired: nothing was written.
    Expired,
}

/// How two versions of one record are ordered (Aerospike's `conflict-resolution-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// The higher generation wins; equal generations: the later last-update time.
    #[default]
    Generation,
    /// The later last-update time wins; equal times: the higher generation.
    LastUpdateTime,
}

impl ConflictPolicy {
    /// Aerospike's name of the policy, as `get-config` writes it.
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Generation => "generation",
            ConflictPolicy::LastUpdateTime => "last-update-time",
        }
    }
}

/// Whether version `a` is newer than version `b`: by generation, then by last-update time.
pub fn is_newer(a: &RecordMeta, b: &RecordMeta) -> bool {
    is_newer_by(ConflictPolicy::Generation, a, b)
}

/// Whether version `a` is newer than version `b` under `policy`. Equal versions are not
/// newer, so an image received twice is stored once.
pub fn is_newer_by(policy: ConflictPolicy, a: &RecordMeta, b: &RecordMeta) -> bool {
    match policy {
        ConflictPolicy::Generation => {
            (a.generation, a.last_update_ms) > (b.generation, b.last_update_ms)
        }
        ConflictPolicy::LastUpdateTime => {
            a.last_update_ms > b.last_update_ms
                || (a.last_update_ms == b.last_update_ms
                    && generation_ahead(a.generation, b.generation))
        }
    }
}

/// Whether generation `a` is ahead of `b` with the wrap at 65,535 seen: `a` is ahead when it
/// is less than half the generation space past `b` (Aerospike's comparison).
fn generation_ahead(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) >= 32_768
}

/// Whether an incoming version replaces the local live version `local` under `policy`: when
/// it is newer, or when it is a tombstone no older than `local` — a master's delete carries
/// the generation of the version it deleted and may fall in the same millisecond as its
/// write, and the delete must still win over that version.
pub fn supersedes(
    policy: ConflictPolicy,
    incoming: &RecordMeta,
    incoming_is_tombstone: bool,
    local: &RecordMeta,
) -> bool {
    if incoming_is_tombstone {
        !is_newer_by(policy, local, incoming)
    } else {
        is_newer_by(policy, incoming, local)
    }
}

impl ShardStore {
    /// Stores `record` (a record or a tombstone, with its own generation and last-update time
    /// kept as they are) if it [`supersedes`] the shard's live version of its digest by
    /// `policy`, or if the shard has none; acknowledged under the configured commit level.
    pub async fn apply_if_newer(
        &self,
        record: &Record,
        policy: ConflictPolicy,
    ) -> Result<Applied, StoreError> {
        if !record.tombstone && clock::is_expired(record.meta.void_time, clock::now_secs()) {
            return Ok(Applied::Expired);
        }
        // No await from the look at the local version to the append.
        if let Some(local) = self.meta(&record.digest) {
            if !supersedes(policy, &record.meta, record.tombstone, &local.meta) {
                return Ok(Applied::NotNewer);
            }
        }
        let ticket = self.append_uncounted(record)?;
        self.commit(ticket).await?;
        Ok(Applied::Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(generation: u16, last_update_ms: u64) -> RecordMeta {
        RecordMeta {
            generation,
            void_time: 0,
            last_update_ms,
        }
    }

    #[test]
    fn generation_orders_first_then_last_update_time() {
        assert!(is_newer(&meta(3, 1), &meta(2, 100)));
        assert!(is_newer(&meta(2, 101), &meta(2, 100)));
        assert!(!is_newer(&meta(2, 100), &meta(2, 100)));
        assert!(!is_newer(&meta(1, 500), &meta(2, 100)));
    }

    #[test]
    fn last_update_time_orders_first_then_generation() {
        let lut = ConflictPolicy::LastUpdateTime;
        assert!(is_newer_by(lut, &meta(1, 500), &meta(2, 100)));
        assert!(!is_newer_by(lut, &meta(9, 99), &meta(2, 100)));
        assert!(is_newer_by(lut, &meta(3, 100), &meta(2, 100)));
        assert!(!is_newer_by(lut, &meta(2, 100), &meta(2, 100)));
        // The two policies disagree exactly when generation and time disagree.
        let gen = ConflictPolicy::Generation;
        assert!(is_newer_by(gen, &meta(2, 100), &meta(1, 500)));
        assert!(!is_newer_by(lut, &meta(2, 100), &meta(1, 500)));
    }

    #[test]
    fn generations_wrap_only_where_aerospike_sees_the_wrap() {
        let (gen, lut) = (ConflictPolicy::Generation, ConflictPolicy::LastUpdateTime);
        // Same millisecond: last-update-time breaks the tie with the wrap seen, so 1 (just
        // wrapped) is ahead of 65,535, and 40,000 is behind 5 (more than half the space back).
        assert!(is_newer_by(lut, &meta(1, 100), &meta(65_535, 100)));
        assert!(!is_newer_by(lut, &meta(65_535, 100), &meta(1, 100)));
        assert!(is_newer_by(lut, &meta(5, 100), &meta(40_000, 100)));
        assert!(is_newer_by(lut, &meta(40_000, 100), &meta(7_233, 100)));
        // Generation compares directly: the version with more history wins.
        assert!(is_newer_by(gen, &meta(65_535, 100), &meta(1, 100)));
        assert!(!is_newer_by(gen, &meta(1, 100), &meta(65_535, 100)));
        assert!(generation_ahead(0, 65_535) && !generation_ahead(7, 7));
    }

    #[test]
    fn a_tombstone_wins_ties_a_record_does_not() {
        for policy in [ConflictPolicy::Generation, ConflictPolicy::LastUpdateTime] {
            let local = meta(4, 100);
            assert!(supersedes(policy, &meta(4, 100), true, &local));
            assert!(!supersedes(policy, &meta(4, 100), false, &local));
            assert!(supersedes(policy, &meta(5, 100), false, &local));
            assert!(!supersedes(policy, &meta(3, 99), true, &local));
        }
        // Only the policy's order says which older-looking tombstone loses.
        let local = meta(4, 100);
        assert!(!supersedes(
            ConflictPolicy::Generation,
            &meta(3, 500),
            true,
            &local
        ));
        assert!(supersedes(
            ConflictPolicy::LastUpdateTime,
            &meta(3, 500),
            true,
            &local
        ));
    }

    #[test]
    fn each_policy_is_a_strict_order_on_distinct_versions() {
        // Over a small grid: exactly one of a>b, b>a, a==b holds, for both policies.
        let grid: Vec<RecordMeta> = (0..4u16)
            .flat_map(|g| (0..4u64).map(move |t| meta(g, t * 10)))
            .collect();
        for policy in [ConflictPolicy::Generation, ConflictPolicy::LastUpdateTime] {
            for a in &grid {
                for b in &grid {
                    let n = [is_newer_by(policy, a, b), is_newer_by(policy, b, a), a == b]
                        .iter()
                        .filter(|&&x| x)
                        .count();
                    assert_eq!(n, 1, "{policy:?} {a:?} {b:?}");
                }
            }
        }
    }
}
