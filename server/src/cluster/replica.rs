//! Replication of writes: the master of a partition sends the whole new version of each record
//! it writes (a tombstone for a delete) to the partition's replicas, and the write is
//! acknowledged once every replica applied it (`write-commit-level` all) or at once (master);
//! a replica stores an image only if it is newer by the namespace's
//! `conflict-resolution-policy`, so an image sent twice or overtaken by a newer one is harmless.
//!
//! Owns the replica-write message (the body of a fabric `ReplicaWrite` frame, ours,
//! little-endian): `view_key u64 | image`, the key of the view whose table the master sent it
//! by (0: none), and the image `namespace_len u8 (1..=31) | namespace | record_len u32 |
//! record` (also the unit of migration chunks and duplicate-resolution answers), the record
//! in the engine's own encoding with its CRC32 (docs/storage-format.md), and the answer (the
//! body of a `ReplicaAck` frame): one status byte, [`ReplicaStatus`]. A message that does not
//! decode exactly (a bad length, a failed checksum, bytes left over, a record the store could
//! not encode again) is an [`ImageError`]: the fabric closes that connection and the node
//! serves on. It must never panic on a peer's bytes, never apply an image on a core other
//! than the one owning its partition, and never let a master acknowledge a write under
//! commit level all that a replica did not answer for.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use apogee_cluster::view::ClusterKey;
use apogee_cluster::NodeId;
use apogee_engine::file_header::NAMESPACE_BYTES_MAX;
use apogee_engine::record::{Record, SET_NAME_BYTES_MAX};
use apogee_wire::ResultCode;

use crate::core::Core;
use crate::node::{Node, ShardWork};
use crate::partition::PartitionTable;

/// How long a master waits for a replica's answer before the write answers the client
/// result 9 (timeout): shorter than the clients' default total timeout (1 s), so a client is
/// told rather than left to time out itself, as a real cluster does when a replica is gone.
pub const REPLICA_ACK_TIMEOUT_MS: u64 = 1_000;

/// Most images a core sends in the background (commit level master) at once. Past it, an
/// image is dropped and counted (`repl_write_dropped`), as one that times out is: a replica
/// slower than the writes must cost neither unbounded tasks and fabric connections nor the
/// latency the client chose commit level master to avoid.
pub const BACKGROUND_IMAGES_PER_CORE_MAX: usize = 256;

thread_local! {
    /// Background images this core has in flight (one executor per thread: per core).
    static BACKGROUND_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a replica did with an image (the `ReplicaAck` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Stored: it was newer than the replica's version, or the replica had none.
    Stored = 0,
    /// The replica's own version is as new or newer: nothing written (a re-sent image).
    NotNewer = 1,
    /// The record had already expired: nothing written.
    Expired = 2,
    /// The master sent it by a view other than the replica's (an old view the replica has
    /// left, the other side of a split, or a newer one the replica did not reach within
    /// `TABLE_SETTLE_WAIT_MS`): nothing written. A copy takes the writes of one view only, so
    /// the copies the next view counts as of that view's lineage hold exactly its writes.
    OtherView = 3,
    /// The replica has no namespace of that name: nothing written.
    UnknownNamespace = 4,
    /// The replica's store refused or failed the write (full, device error, poisoned shard).
    StoreFailed = 5,
    /// Master and replica are in the same view, and in it the replica is no holder and keeps
    /// no copy: a node that kept its old copy while the partition migrated, dropped it, and
    /// is still a target until the master hears so. Nothing written, and nothing to write:
    /// the holders' copies are the master's business, not this node's.
    Dropped = 6,
}

impl ReplicaStatus {
    /// Whether the replica has a version at least as new as the image afterwards.
    pub fn holds_it(self) -> bool {
        matches!(
            self,
            ReplicaStatus::Stored
                | ReplicaStatus::NotNewer
                | ReplicaStatus::Expired
                | ReplicaStatus::Dropped
        )
    }

    pub fn from_byte(b: u8) -> Option<ReplicaStatus> {
        Some(match b {
            0 => ReplicaStatus::Stored,
            1 => ReplicaStatus::NotNewer,
            2 => ReplicaStatus::Expired,
            3 => ReplicaStatus::OtherView,
            4 => ReplicaStatus::UnknownNamespace,
            5 => ReplicaStatus::StoreFailed,
            6 => ReplicaStatus::Dropped,
            _ => return None,
        })
    }
}

/// Why a replica-write message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("replica write truncated")]
    Truncated,
    #[error("replica write names a namespace of {0} bytes (1..={NAMESPACE_BYTES_MAX} allowed)")]
    Namespace(usize),
    #[error("replica write's record length {declared} differs from the {left} bytes that follow")]
    Length { declared: usize, left: usize },
    #[error("replica write's record does not decode: {0}")]
    Record(String),
    #[error("replica write's record is not one this node can store: {0}")]
    Invalid(&'static str),
}

/// The body of a `ReplicaWrite` frame carrying `record` of namespace `namespace`.
pub fn encode_image(namespace: &str, record: &Record) -> Vec<u8> {
    assert!(
        (1..=NAMESPACE_BYTES_MAX).contains(&namespace.len()),
        "namespace names are validated at start"
    );
    let size = record.encoded_bytes();
    let mut b = Vec::with_capacity(1 + namespace.len() + 4 + size);
    b.push(namespace.len() as u8);
    b.extend_from_slice(namespace.as_bytes());
    b.extend_from_slice(&(size as u32).to_le_bytes());
    record.encode_into(&mut b);
    b
}

/// The body of a `ReplicaWrite` frame: `record` of `namespace`, sent by a master whose table
/// was built in the view `key` (`None`: a table of no view).
pub fn encode_replica_write(key: Option<ClusterKey>, namespace: &str, record: &Record) -> Vec<u8> {
    let mut b = key.map_or(0, ClusterKey::get).to_le_bytes().to_vec();
    b.extend_from_slice(&encode_image(namespace, record));
    b
}

/// Decodes a `ReplicaWrite` body: the sender's view key (0: none), the namespace's name and
/// the record, every byte checked.
pub fn decode_replica_write(body: &[u8]) -> Result<(u64, &[u8], Record), ImageError> {
    if body.len() < 8 {
        return Err(ImageError::Truncated);
    }
    let (key, image) = body.split_at(8);
    let (namespace, record) = decode_image(image)?;
    Ok((
        u64::from_le_bytes(key.try_into().expect("8 bytes")),
        namespace,
        record,
    ))
}

/// Decodes an image: the namespace's name and the record, every byte checked.
pub fn decode_image(body: &[u8]) -> Result<(&[u8], Record), ImageError> {
    let (&ns_len, rest) = body.split_first().ok_or(ImageError::Truncated)?;
    let ns_len = usize::from(ns_len);
    if !(1..=NAMESPACE_BYTES_MAX).contains(&ns_len) {
        return Err(ImageError::Namespace(ns_len));
    }
    if rest.len() < ns_len + 4 {
        return Err(ImageError::Truncated);
    }
    let (namespace, rest) = rest.split_at(ns_len);
    let (len, bytes) = rest.split_at(4);
    let declared = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if declared != bytes.len() {
        return Err(ImageError::Length {
            declared,
            left: bytes.len(),
        });
    }
    let record = Record::decode(bytes).map_err(|e| ImageError::Record(e.to_string()))?;
    // What the store's encoder asserts, checked here so that a peer's bytes cannot reach it
    // (the record decoder refuses the first and last already; kept as the encoder's list).
    if record.set_name.len() > SET_NAME_BYTES_MAX {
        return Err(ImageError::Invalid("set name over 63 bytes"));
    }
    if record
        .user_key
        .as_ref()
        .is_some_and(|k| k.particle_type == 0)
    {
        return Err(ImageError::Invalid("user key without a particle type"));
    }
    if record.tombstone && !record.bins.is_empty() {
        return Err(ImageError::Invalid("tombstone with bins"));
    }
    if record.encoded_bytes() != bytes.len() {
        return Err(ImageError::Invalid(
            "record shorter than its declared length",
        ));
    }
    Ok((namespace, record))
}

/// One namespace's replication counters, for `namespace/<ns>` (Apogee's names: CE 8.1.2.0
/// reports no per-namespace count of replica writes).
#[derive(Default, Debug)]
pub struct ReplicationStats {
    /// Images this node sent as master that the replica holds afterwards.
    pub sent_success: AtomicU64,
    /// Images a replica refused, or that could not be sent (no connection to it).
    pub sent_error: AtomicU64,
    /// Images with no answer within `REPLICA_ACK_TIMEOUT_MS`.
    pub sent_timeout: AtomicU64,
    /// Background images (commit level master) not sent: the core had
    /// `BACKGROUND_IMAGES_PER_CORE_MAX` in flight.
    pub sent_dropped: AtomicU64,
    /// Images this node received as replica and stored.
    pub received_stored: AtomicU64,
    /// Images received that were not newer than this node's version (or had expired).
    pub received_not_newer: AtomicU64,
    /// Images received and refused (not a holder, store failure).
    pub received_refused: AtomicU64,
    /// Writes answered the client with an error because a replica did not apply them.
    pub client_write_repl_failed: AtomicU64,
    /// Versions asked of merge sources by transactions of a partition being merged (CE's
    /// `dup_res_ask`), and asks that got no usable answer (the transaction answered 9).
    pub dup_res_asked: AtomicU64,
    pub dup_res_failed: AtomicU64,
}

impl ReplicationStats {
    pub fn describe(&self) -> String {
        format!(
            "repl_write_success={};repl_write_error={};repl_write_timeout={};\
             repl_write_dropped={};repl_write_received_stored={};repl_write_received_not_newer={};\
             repl_write_received_refused={};client_write_repl_failed={};dup_res_ask={};\
             dup_res_failed={}",
            self.sent_success.load(Relaxed),
            self.sent_error.load(Relaxed),
            self.sent_timeout.load(Relaxed),
            self.sent_dropped.load(Relaxed),
            self.received_stored.load(Relaxed),
            self.received_not_newer.load(Relaxed),
            self.received_refused.load(Relaxed),
            self.client_write_repl_failed.load(Relaxed),
            self.dup_res_asked.load(Relaxed),
            self.dup_res_failed.load(Relaxed),
        )
    }
}

/// Sends the image of a write the master just applied to the partition's replicas (as
/// `table`, the one that let this node serve the write, names them) and returns once the
/// commit level is met: `Err(Timeout)` when a replica did not apply it in time or cannot be
/// reached — the write is then in doubt to the client (stored here, maybe not there), as in
/// Aerospike.
pub async fn replicate(
    node: &Arc<Node>,
    table: &PartitionTable,
    ns: usize,
    record: &Record,
    info3: u8,
) -> Result<(), ResultCode> {
    let partition = record.digest.partition().0;
    let targets: Vec<NodeId> = table.replication_targets(ns, partition).to_vec();
    if targets.is_empty() {
        return Ok(());
    }
    let cfg = &node.config.namespaces[ns];
    let body = Rc::new(super::fabric::frame(
        super::fabric::Kind::ReplicaWrite,
        &encode_replica_write(table.migration_key(), &cfg.name, record),
    ));
    if !cfg.write_commit_level_override.waits_for_replicas(info3) {
        for to in targets {
            if BACKGROUND_IN_FLIGHT.get() >= BACKGROUND_IMAGES_PER_CORE_MAX {
                let stats = &node.namespaces[ns].replication;
                stats.sent_dropped.fetch_add(1, Relaxed);
                if let Some(n) = node.logs.replica_failed.allow() {
                    tracing::warn!(replica = %format!("{:X}", to.0), suppressed = n,
                        in_flight = BACKGROUND_IMAGES_PER_CORE_MAX,
                        "a write's image was dropped (commit level master, the replica is \
                         behind): that replica misses it until migration exists");
                }
                continue;
            }
            let send = send_one(node.clone(), ns, partition, to, body.clone());
            BACKGROUND_IN_FLIGHT.set(BACKGROUND_IN_FLIGHT.get() + 1);
            glommio::spawn_local(async move {
                let _ = send.await;
                BACKGROUND_IN_FLIGHT.set(BACKGROUND_IN_FLIGHT.get() - 1);
            })
            .detach();
        }
        return Ok(());
    }
    let result = if let [to] = targets[..] {
        send_one(node.clone(), ns, partition, to, body).await
    } else {
        // Spawned first so the replicas are written concurrently, then awaited in turn.
        let tasks: Vec<_> = targets
            .into_iter()
            .map(|to| glommio::spawn_local(send_one(node.clone(), ns, partition, to, body.clone())))
            .collect();
        let mut result = Ok(());
        for t in tasks {
            if let Err(rc) = t.await {
                result = Err(rc);
            }
        }
        result
    };
    if result.is_err() {
        node.namespaces[ns]
            .replication
            .client_write_repl_failed
            .fetch_add(1, Relaxed);
    }
    result
}

/// Sends one image to one replica and counts the outcome.
async fn send_one(
    node: Arc<Node>,
    ns: usize,
    partition: u16,
    to: NodeId,
    frame: Rc<Vec<u8>>,
) -> Result<(), ResultCode> {
    let stats = &node.namespaces[ns].replication;
    match super::fabric::replica_write(&node, to, partition, &frame).await {
        Ok(status) if status.holds_it() => {
            stats.sent_success.fetch_add(1, Relaxed);
            Ok(())
        }
        Ok(status) => {
            stats.sent_error.fetch_add(1, Relaxed);
            if let Some(n) = node.logs.replica_failed.allow() {
                tracing::warn!(replica = %format!("{:X}", to.0), ?status, suppressed = n,
                    "a replica refused a write's image; the client was answered 9 (in doubt)");
            }
            Err(ResultCode::Timeout)
        }
        Err(error) => {
            if matches!(error, super::fabric::FabricError::Timeout) {
                stats.sent_timeout.fetch_add(1, Relaxed);
            } else {
                stats.sent_error.fetch_add(1, Relaxed);
            }
            if let Some(n) = node.logs.replica_failed.allow() {
                tracing::warn!(replica = %format!("{:X}", to.0), %error, suppressed = n,
                    "a write's image did not reach its replica; the client was answered 9 \
                     (in doubt)");
            }
            Err(ResultCode::Timeout)
        }
    }
}

/// An image for the core that owns its partition, with where to send what it did.
pub struct ReplicaApply {
    pub namespace: usize,
    pub record: Record,
    pub reply: flume::Sender<ReplicaStatus>,
}

/// Serves one `ReplicaWrite` body that arrived on this core's fabric connection: decoded,
/// checked against this node's map, and applied on the owning core. `Err`: a malformed
/// message (the connection is closed).
pub async fn receive(core: &Core, from: NodeId, body: &[u8]) -> Result<ReplicaStatus, ImageError> {
    let (key, namespace, record) = decode_replica_write(body)?;
    let node = &core.node;
    let Some(ns) = node.config.namespace_index(namespace) else {
        return Ok(ReplicaStatus::UnknownNamespace);
    };
    let stats = &node.namespaces[ns].replication;
    let partition = record.digest.partition().0;
    // Only a master of this node's own view, or of the one before that is a member of this
    // one (`takes_images_of`): a copy that took writes of a view it had left without their
    // master would carry them into the next view as writes of its new lineage, where no
    // merge looks for them — a split lost acknowledged writes that way. (CE refuses on a
    // cluster-key mismatch too.)
    let accepts = |t: &Arc<PartitionTable>| {
        if !t.takes_images_of(key, from) {
            return None;
        }
        let same_view = t.migration_key().map(ClusterKey::get) == Some(key);
        match t.accepts_replica_write(ns, partition) {
            true => Some(true),
            false if same_view => Some(false),
            false => None,
        }
    };
    // A master that began a new view before this node did sends to it first: this node
    // waits for its own table of that view.
    let accepted = node.settled(accepts).await;
    match accepted {
        Some(true) => {}
        Some(false) => return Ok(ReplicaStatus::Dropped),
        None => {
            stats.received_refused.fetch_add(1, Relaxed);
            return Ok(ReplicaStatus::OtherView);
        }
    }
    let owner = node.shard_of(partition);
    if owner == core.shard {
        return Ok(core.apply_replica(ns, &record).await);
    }
    node.proxy_stats.cross_core.fetch_add(1, Relaxed);
    let (tx, rx) = flume::bounded(1);
    let work = ShardWork::Replica(ReplicaApply {
        namespace: ns,
        record,
        reply: tx,
    });
    if node.inboxes[owner].send_async(work).await.is_err() {
        return Ok(ReplicaStatus::StoreFailed);
    }
    Ok(rx.recv_async().await.unwrap_or(ReplicaStatus::StoreFailed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::record::{write_checksum, Bin, RecordMeta, UserKey};
    use apogee_wire::Digest;

    fn record() -> Record {
        Record {
            digest: Digest([7; 20]),
            meta: RecordMeta {
                generation: 3,
                void_time: 0,
                last_update_ms: 123_456,
            },
            set_name: b"s".to_vec(),
            user_key: Some(UserKey {
                particle_type: 1,
                bytes: 5i64.to_be_bytes().to_vec(),
            }),
            bins: vec![Bin {
                name: b"v".to_vec(),
                particle_type: 3,
                value: b"hello".to_vec(),
            }],
            tombstone: false,
        }
    }

    #[test]
    fn an_image_round_trips_and_every_cut_or_extra_byte_is_refused() {
        let r = record();
        let body = encode_image("test", &r);
        let (ns, back) = decode_image(&body).unwrap();
        assert_eq!((ns, &back), (&b"test"[..], &r));
        for cut in 0..body.len() {
            assert!(
                decode_image(&body[..cut]).is_err(),
                "accepted a cut at {cut}"
            );
        }
        let mut long = body.clone();
        long.push(0);
        assert!(matches!(
            decode_image(&long),
            Err(ImageError::Length { .. })
        ));
        let t = Record::tombstone(Digest([9; 20]), 4, 99);
        let (_, back) = decode_image(&encode_image("bar", &t)).unwrap();
        assert!(back.tombstone && back.meta.generation == 4);
    }

    #[test]
    fn malformed_images_are_named_errors_never_panics() {
        let body = encode_image("test", &record());
        let mut b = body.clone();
        b[0] = 0;
        assert_eq!(decode_image(&b), Err(ImageError::Namespace(0)));
        b[0] = 200;
        assert_eq!(decode_image(&b), Err(ImageError::Namespace(200)));
        // A flipped bit in the record fails its checksum.
        let mut b = body.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(decode_image(&b), Err(ImageError::Record(_))));
        // A set name the store could not encode, with a valid checksum: refused, not stored.
        let mut r = record();
        r.set_name = vec![b'x'; SET_NAME_BYTES_MAX];
        let mut bytes = r.encode();
        bytes[13] = (SET_NAME_BYTES_MAX + 1) as u8;
        bytes.insert(48, b'x');
        let total = bytes.len() as u32;
        bytes[4..8].copy_from_slice(&total.to_be_bytes());
        write_checksum(&mut bytes);
        let mut b = vec![4];
        b.extend_from_slice(b"test");
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&bytes);
        // The record decoder refuses it before the image's own checks (it verifies only what
        // the encoder can write).
        assert_eq!(
            decode_image(&b),
            Err(ImageError::Record(
                "malformed record: set name longer than 63 bytes".into()
            ))
        );
        // Arbitrary corruption never panics.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for n in 0..5_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut junk = body.clone();
            let i = (x as usize) % junk.len();
            junk[i] = (x >> 40) as u8;
            junk.truncate(junk.len() - n % 4);
            let _ = decode_image(&junk);
        }
    }

    #[test]
    fn statuses_round_trip_and_only_a_held_version_counts_as_applied() {
        for b in 0..=6u8 {
            let s = ReplicaStatus::from_byte(b).unwrap();
            assert_eq!(s as u8, b);
            assert_eq!(s.holds_it(), b <= 2 || s == ReplicaStatus::Dropped);
        }
        assert_eq!(ReplicaStatus::from_byte(7), None);
    }

    #[test]
    fn a_replica_write_carries_the_senders_view_key_and_a_cut_key_is_refused() {
        let r = record();
        let key = ClusterKey::new(0xABC_DEF0_1234).unwrap();
        let body = encode_replica_write(Some(key), "test", &r);
        let (k, ns, back) = decode_replica_write(&body).unwrap();
        assert_eq!((k, ns, &back), (key.get(), &b"test"[..], &r));
        let none = encode_replica_write(None, "test", &r);
        assert_eq!(decode_replica_write(&none).unwrap().0, 0);
        for cut in 0..8 {
            assert_eq!(
                decode_replica_write(&body[..cut]),
                Err(ImageError::Truncated)
            );
        }
    }
}
