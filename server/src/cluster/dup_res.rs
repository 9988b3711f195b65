//! Duplicate resolution: while the master of a partition merges the subsets other nodes hold
//! (no full copy was left: a split healed, or every full holder died mid-migration), each
//! transaction on one of its records first asks every source whose subset has not arrived
//! for that record, and keeps the winner by the namespace's `conflict-resolution-policy`
//! before reading or writing it — as Aerospike CE does during migrations — so the master
//! serves at once and never answers from, or writes on top of, a version older than one a
//! subset holds. The sources come from the partition table (`Migrator::dup_res_sources`).
//!
//! Owns the request (the body of a fabric `DupRes` frame, ours, little-endian):
//! `namespace_len u8 (1..=31) | namespace | digest [20]`, and its answer (a `DupResReply`
//! body): one status byte, [`Found`], followed for `Found::Record` by the record in the
//! replica image's encoding (`replica::encode_image`). A malformed request closes that fabric
//! connection; the node serves on. It must never panic on a peer's bytes, never read a store on
//! a core other than the one owning the partition, and never let a transaction go on when a
//! source did not answer (the client is told 9, in doubt, and retries).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use apogee_engine::file_header::NAMESPACE_BYTES_MAX;
use apogee_engine::record::Record;
use apogee_wire::{Digest, ResultCode};

use crate::core::Core;
use crate::node::{Node, ShardWork};
use crate::partition::PartitionTable;

/// How long a master waits for a source's version before the transaction answers 9.
pub const DUP_RES_REPLY_TIMEOUT_MS: u64 = 1_000;

/// What a source has of the asked record (the answer's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// No version here (never written, deleted, or expired).
    Nothing = 0,
    /// A version follows.
    Record = 1,
    /// This node has no namespace of that name.
    UnknownNamespace = 2,
    /// The store failed to read it.
    StoreFailed = 3,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DupResError {
    #[error(
        "duplicate-resolution request of {0} bytes is not namespace_len, 1..=31 bytes, digest"
    )]
    Request(usize),
    #[error("duplicate-resolution answer is empty or has an unknown status {0:?}")]
    Status(Option<u8>),
    #[error("duplicate-resolution answer with status {0} carries {1} bytes after it")]
    Trailing(u8, usize),
    #[error("duplicate-resolution answer's record: {0}")]
    Record(#[from] super::replica::ImageError),
    #[error("duplicate-resolution answer is for digest {got:?}, not the one asked")]
    OtherDigest { got: Digest },
}

pub fn encode_request(namespace: &str, digest: &Digest) -> Vec<u8> {
    assert!((1..=NAMESPACE_BYTES_MAX).contains(&namespace.len()));
    let mut b = Vec::with_capacity(1 + namespace.len() + 20);
    b.push(namespace.len() as u8);
    b.extend_from_slice(namespace.as_bytes());
    b.extend_from_slice(&digest.0);
    b
}

pub fn decode_request(body: &[u8]) -> Result<(&[u8], Digest), DupResError> {
    let bad = DupResError::Request(body.len());
    let (&len, rest) = body.split_first().ok_or(DupResError::Request(0))?;
    let len = usize::from(len);
    if !(1..=NAMESPACE_BYTES_MAX).contains(&len) || rest.len() != len + 20 {
        return Err(bad);
    }
    let digest = Digest(rest[len..].try_into().expect("20 bytes"));
    Ok((&rest[..len], digest))
}

pub fn encode_answer(namespace: &str, found: Result<Option<&Record>, Found>) -> Vec<u8> {
    match found {
        Ok(Some(record)) => {
            let mut b = vec![Found::Record as u8];
            b.extend_from_slice(&super::replica::encode_image(namespace, record));
            b
        }
        Ok(None) => vec![Found::Nothing as u8],
        Err(status) => vec![status as u8],
    }
}

/// The source's version of `digest` (`Ok(None)`: it has none), or the status that says why
/// it cannot tell.
pub fn decode_answer(
    body: &[u8],
    digest: &Digest,
) -> Result<Result<Option<Record>, Found>, DupResError> {
    let (&status, rest) = body.split_first().ok_or(DupResError::Status(None))?;
    let status = match status {
        0 => Found::Nothing,
        1 => Found::Record,
        2 => Found::UnknownNamespace,
        3 => Found::StoreFailed,
        s => return Err(DupResError::Status(Some(s))),
    };
    if status != Found::Record {
        if !rest.is_empty() {
            return Err(DupResError::Trailing(status as u8, rest.len()));
        }
        return Ok(if status == Found::Nothing {
            Ok(None)
        } else {
            Err(status)
        });
    }
    let (_, record) = super::replica::decode_image(rest)?;
    if record.digest != *digest {
        return Err(DupResError::OtherDigest { got: record.digest });
    }
    Ok(Ok(Some(record)))
}

/// A lookup for the core that owns the record's partition, with where to send its version.
pub struct DupResLookup {
    pub namespace: usize,
    pub digest: Digest,
    pub reply: flume::Sender<Result<Option<Record>, Found>>,
}

/// Serves one `DupRes` body that arrived on this core's fabric connection: the answer's body.
/// `Err`: a malformed request (the connection is closed).
pub async fn serve(core: &Core, body: &[u8]) -> Result<Vec<u8>, DupResError> {
    let (namespace, digest) = decode_request(body)?;
    let node = &core.node;
    let Some(ns) = node.config.namespace_index(namespace) else {
        return Ok(vec![Found::UnknownNamespace as u8]);
    };
    let name = &node.config.namespaces[ns].name;
    let owner = node.shard_of(digest.partition().0);
    let found = if owner == core.shard {
        core.dup_res_lookup(ns, &digest).await
    } else {
        node.proxy_stats.cross_core.fetch_add(1, Relaxed);
        let (tx, rx) = flume::bounded(1);
        let work = ShardWork::DupRes(DupResLookup {
            namespace: ns,
            digest,
            reply: tx,
        });
        if node.inboxes[owner].send_async(work).await.is_err() {
            Err(Found::StoreFailed)
        } else {
            rx.recv_async().await.unwrap_or(Err(Found::StoreFailed))
        }
    };
    Ok(encode_answer(
        name,
        found.as_ref().map(Option::as_ref).map_err(|&s| s),
    ))
}

/// On the owning core of `digest`, before a transaction of a partition `table` says is being
/// merged: fetches the record's version from every source not merged yet (concurrently) and
/// stores any that is newer than this node's. `Err(Timeout)` when a source did not answer:
/// the transaction must not go on.
pub async fn resolve(
    core: &Core,
    table: &Arc<PartitionTable>,
    ns: usize,
    digest: &Digest,
) -> Result<(), ResultCode> {
    let sources = table.dup_res_sources(ns, digest.partition().0);
    if sources.is_empty() {
        return Ok(());
    }
    let node: &Arc<Node> = &core.node;
    let request = Arc::new(super::fabric::frame(
        super::fabric::Kind::DupRes,
        &encode_request(&node.config.namespaces[ns].name, digest),
    ));
    let stats = &node.namespaces[ns].replication;
    let tasks: Vec<_> = sources
        .iter()
        .map(|&from| {
            let (node, request, digest) = (node.clone(), request.clone(), *digest);
            glommio::spawn_local(async move {
                super::fabric::dup_res(&node, from, &request, &digest).await
            })
        })
        .collect();
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(Some(record))) => {
                if !matches!(
                    core.apply_replica(ns, &record).await,
                    super::replica::ReplicaStatus::Stored
                        | super::replica::ReplicaStatus::NotNewer
                        | super::replica::ReplicaStatus::Expired
                ) {
                    result = Err(ResultCode::Timeout);
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(_)) | Err(_) => {
                stats
                    .dup_res_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                result = Err(ResultCode::Timeout);
            }
        }
    }
    stats
        .dup_res_asked
        .fetch_add(sources.len() as u64, std::sync::atomic::Ordering::Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::record::{Bin, RecordMeta};

    fn record(digest: Digest) -> Record {
        Record {
            digest,
            meta: RecordMeta {
                generation: 4,
                void_time: 0,
                last_update_ms: 99,
            },
            set_name: b"s".to_vec(),
            user_key: None,
            bins: vec![Bin {
                name: b"v".to_vec(),
                particle_type: 1,
                value: 7i64.to_be_bytes().to_vec(),
            }],
            tombstone: false,
        }
    }

    #[test]
    fn requests_round_trip_and_every_cut_or_extra_byte_is_refused() {
        let d = Digest([3; 20]);
        let body = encode_request("test", &d);
        assert_eq!(decode_request(&body).unwrap(), (&b"test"[..], d));
        for cut in 0..body.len() {
            assert!(decode_request(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = body.clone();
        long.push(0);
        assert_eq!(decode_request(&long), Err(DupResError::Request(long.len())));
        let mut zero = body.clone();
        zero[0] = 0;
        assert!(decode_request(&zero).is_err());
    }

    #[test]
    fn answers_round_trip_and_malformed_ones_are_named_errors() {
        let d = Digest([5; 20]);
        let r = record(d);
        let found = encode_answer("test", Ok(Some(&r)));
        assert_eq!(decode_answer(&found, &d).unwrap(), Ok(Some(r.clone())));
        assert_eq!(
            decode_answer(&encode_answer("test", Ok(None)), &d).unwrap(),
            Ok(None)
        );
        assert_eq!(
            decode_answer(&encode_answer("test", Err(Found::StoreFailed)), &d).unwrap(),
            Err(Found::StoreFailed)
        );
        assert_eq!(decode_answer(&[], &d), Err(DupResError::Status(None)));
        assert_eq!(decode_answer(&[9], &d), Err(DupResError::Status(Some(9))));
        assert_eq!(decode_answer(&[0, 1], &d), Err(DupResError::Trailing(0, 1)));
        // A version of another record than the one asked is refused, not stored.
        assert!(matches!(
            decode_answer(&found, &Digest([6; 20])),
            Err(DupResError::OtherDigest { .. })
        ));
        for cut in 1..found.len() {
            assert!(decode_answer(&found[..cut], &d).is_err(), "cut at {cut}");
        }
    }
}
