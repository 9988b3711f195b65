//! Read-modify-write owned by the engine: [`ShardStore::update`] reads a record, lets the
//! caller decide what becomes of it, and appends the decision only if no other write changed
//! the record meanwhile — optimistically, retrying up to [`UPDATE_ATTEMPTS_MAX`] times.
//!
//! Why optimistic: the read may wait on the device, and other requests of the core run during
//! that wait; holding a per-record lock across it would need a lock table. The check of the
//! record's version and the append run with no await between them, so on this single-threaded
//! shard nothing can slip in between. Callers never see what a version is (today a file
//! offset). It must never append a decision taken on a version that is no longer the newest.

use apogee_wire::Digest;

use crate::clock;
use crate::error::StoreError;
use crate::record::Record;

use super::ShardStore;

/// How often an update reads the record again after another write changed it during the read,
/// before it gives up with [`UpdateError::Busy`] (Aerospike answers KEY_BUSY for hot keys).
pub const UPDATE_ATTEMPTS_MAX: usize = 8;

/// What an update does with the record it read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store this record as the digest's new version (its digest must be the updated one).
    Write(Record),
    /// Delete the record: a tombstone with the read version's generation, so the delete
    /// survives restarts. Nothing is written when there was no record.
    Delete,
    /// Leave the record as it is; nothing is appended.
    Keep,
}

/// Why an update did not complete.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The caller's decision refused the update (its own error, passed through unchanged).
    Refused(E),
    /// Reading or writing the record failed.
    Store(StoreError),
    /// Another write changed the record during every one of `attempts` reads.
    Busy { attempts: usize },
}

impl<E: std::fmt::Debug> std::fmt::Display for UpdateError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Refused(e) => write!(f, "the update was refused: {e:?}"),
            UpdateError::Store(e) => write!(f, "{e}"),
            UpdateError::Busy { attempts } => write!(
                f,
                "the record changed during each of {attempts} read-modify-write attempts; \
                 retry later or spread writes over more keys"
            ),
        }
    }
}

impl<E: std::fmt::Debug> std::error::Error for UpdateError<E> {}

impl<E> From<StoreError> for UpdateError<E> {
    fn from(e: StoreError) -> Self {
        UpdateError::Store(e)
    }
}

impl ShardStore {
    /// Reads the newest live version of `digest` (`None`: absent, expired or truncated), calls
    /// `decide` on it and applies the [`Decision`], acknowledged under the configured commit
    /// level; returns what `decide` returned with it. When another write changed the record
    /// while it was being read, reads again and calls `decide` again (so `decide` must have no
    /// effect besides its result), at most [`UPDATE_ATTEMPTS_MAX`] times. An error from
    /// `decide` ends the update at once, with nothing written.
    pub async fn update<T, E>(
        &self,
        digest: &Digest,
        mut decide: impl FnMut(Option<Record>) -> Result<(Decision, T), E>,
    ) -> Result<T, UpdateError<E>> {
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let seen = self.version(digest);
            let current = self.get(digest).await?;
            let generation = current.as_ref().map(|r| r.meta.generation);
            // The read version's index keys: a new version with the same ones keeps its
            // entries (no new handle, no re-insert).
            let old_keys = current.as_ref().and_then(|r| self.sindex_keys(r));
            let (decision, out) = decide(current).map_err(UpdateError::Refused)?;
            // No await from here to the append: the version checked is the version replaced.
            if self.version(digest) != seen {
                continue;
            }
            let record = match (decision, generation) {
                (Decision::Keep, _) | (Decision::Delete, None) => return Ok(out),
                (Decision::Delete, Some(g)) => Record::tombstone(*digest, g, clock::now_ms()),
                (Decision::Write(r), _) => r,
            };
            assert_eq!(
                record.digest, *digest,
                "an update writes the record it read"
            );
            let ticket = self.append_over(&record, old_keys)?;
            self.commit(ticket).await?;
            return Ok(out);
        }
        Err(UpdateError::Busy {
            attempts: UPDATE_ATTEMPTS_MAX,
        })
    }
}
