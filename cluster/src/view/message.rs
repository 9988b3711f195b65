//! The messages of the view change and their bytes on the wire (our own format: Aerospike's
//! clustering messages are internal to a cluster, so only their effect must match).
//!
//! Owns the encoding and the *structural* validation of every message: a decoded message is
//! well-formed (known type, lengths within their limits, node ids non-zero, a cluster key of
//! 48 bits, a succession list descending). It must never panic on any input bytes, and never
//! judge whether a message is *expected* — that is the state machine's (`view::Node`).
//!
//! Frame: `version u8 = 1`, `kind u8`, then the kind's fields, integers little-endian,
//! lists as `count u8` then that many `u64` node ids; nothing may follow the last field.
//! - 1 Status: view key `u64` and principal `u64` (both 0: an orphan), adjacency list
//!   (strictly ascending, at most `ADJACENCY_NODES_MAX`).
//! - 2 Propose: new key `u64`, the principal's current view key `u64` (0: none), succession
//!   list (strictly descending, at most `CLUSTER_NODES_MAX`).
//! - 3 Accept, 4 Commit: key `u64`.

use crate::balance::{NodeId, Succession, CLUSTER_NODES_MAX};

/// The format version this code writes and the only one it reads.
pub const VIEW_MESSAGE_VERSION: u8 = 1;

/// The most peers one node reports seeing. A mesh larger than a cluster can be seen (nodes
/// of another cluster, orphans), so this is looser than `CLUSTER_NODES_MAX`, but bounded so a
/// message can never make a node allocate much.
pub const ADJACENCY_NODES_MAX: usize = 64;

/// The longest encoded message: a status with a full adjacency list.
pub const VIEW_MESSAGE_BYTES_MAX: usize = 2 + 8 + 8 + 1 + 8 * ADJACENCY_NODES_MAX;

const _: () =
    assert!(ADJACENCY_NODES_MAX <= u8::MAX as usize && CLUSTER_NODES_MAX <= ADJACENCY_NODES_MAX);

/// Cluster keys are 48 bits, as Aerospike prints them (up to 12 hex digits).
pub const CLUSTER_KEY_BITS: u32 = 48;

/// The key of one committed cluster view: random, non-zero, 48 bits. A new one is drawn for
/// every proposal, so a key names exactly one view and a message carrying an old key is stale.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey(u64);

impl ClusterKey {
    /// `raw` as a key, if it is one: non-zero and within 48 bits.
    pub fn new(raw: u64) -> Option<ClusterKey> {
        (raw != 0 && raw >> CLUSTER_KEY_BITS == 0).then_some(ClusterKey(raw))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ClusterKey {
    /// As `cluster_key` in `statistics` and `cluster-stable` print it: upper-case hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}", self.0)
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({:X})", self.0)
    }
}

/// What a node says about itself to every peer it sees, once per quantum (the role of the
/// cluster data Aerospike's heartbeats carry): the principal learns from these who sees whom.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Status {
    /// The view the sender is a member of, or `None` while it is an orphan.
    pub view: Option<ViewSummary>,
    /// The peers the sender currently sees (its failure detector's adjacency), ascending.
    pub adjacency: Vec<NodeId>,
}

/// A view as a status names it: its key and its principal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ViewSummary {
    pub cluster_key: ClusterKey,
    pub principal: NodeId,
}

/// The messages of the view change.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    Status(Status),
    /// Principal → each proposed member: "form this view". The proposer is the succession
    /// list's principal; the key is new. `principal_view` is the key of the view the principal
    /// is in as it proposes (`None` while an orphan): a member accepts only if the principal's
    /// latest status says the same, so a copy of an old proposal delivered late is stale.
    Propose {
        cluster_key: ClusterKey,
        succession: Succession,
        principal_view: Option<ClusterKey>,
    },
    /// Member → principal: "I will commit the view with this key when told".
    Accept {
        cluster_key: ClusterKey,
    },
    /// Principal → each member, once every member accepted: "the view with this key is on".
    Commit {
        cluster_key: ClusterKey,
    },
}

/// Why bytes are not a view message. The connection that carried them is at fault, not the
/// cluster: the caller drops the message (and may drop the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("view message truncated: {needed} more bytes needed after {at}")]
    Truncated { at: usize, needed: usize },
    #[error("view message version {0} is not {VIEW_MESSAGE_VERSION}; is the peer another Apogee release?")]
    Version(u8),
    #[error("view message kind {0} is unknown")]
    Kind(u8),
    #[error("view message has {0} bytes after its last field")]
    Trailing(usize),
    #[error("{count} node ids exceed the limit {limit} for this list")]
    TooManyNodes { count: usize, limit: usize },
    #[error("node id 0 in a view message")]
    ZeroNode,
    #[error("adjacency list not strictly ascending at {0}")]
    AdjacencyOrder(NodeId),
    #[error("succession list invalid: {0}")]
    Succession(crate::balance::BalanceError),
    #[error("succession list not in descending order (as the principal must send it)")]
    SuccessionOrder,
    #[error("cluster key {0:#x} is zero or wider than 48 bits")]
    ClusterKey(u64),
}

const KIND_STATUS: u8 = 1;
const KIND_PROPOSE: u8 = 2;
const KIND_ACCEPT: u8 = 3;
const KIND_COMMIT: u8 = 4;

impl Message {
    /// The message's bytes (at most `VIEW_MESSAGE_BYTES_MAX`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VIEW_MESSAGE_VERSION];
        let nodes = |out: &mut Vec<u8>, list: &[NodeId]| {
            // Both lists are bounded by construction (ADJACENCY_NODES_MAX, CLUSTER_NODES_MAX).
            assert!(list.len() <= ADJACENCY_NODES_MAX);
            out.push(list.len() as u8);
            for n in list {
                out.extend_from_slice(&n.0.to_le_bytes());
            }
        };
        match self {
            Message::Status(s) => {
                out.push(KIND_STATUS);
                let (key, principal) = s
                    .view
                    .map_or((0, 0), |v| (v.cluster_key.get(), v.principal.0));
                out.extend_from_slice(&key.to_le_bytes());
                out.extend_from_slice(&principal.to_le_bytes());
                nodes(&mut out, &s.adjacency);
            }
            Message::Propose {
                cluster_key,
                succession,
                principal_view,
            } => {
                out.push(KIND_PROPOSE);
                out.extend_from_slice(&cluster_key.get().to_le_bytes());
                out.extend_from_slice(&principal_view.map_or(0, ClusterKey::get).to_le_bytes());
                nodes(&mut out, succession.nodes());
            }
            Message::Accept { cluster_key } => {
                out.push(KIND_ACCEPT);
                out.extend_from_slice(&cluster_key.get().to_le_bytes());
            }
            Message::Commit { cluster_key } => {
                out.push(KIND_COMMIT);
                out.extend_from_slice(&cluster_key.get().to_le_bytes());
            }
        }
        debug_assert!(out.len() <= VIEW_MESSAGE_BYTES_MAX);
        out
    }

    /// Parses and structurally validates one message; any byte string gives a message or an
    /// error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VIEW_MESSAGE_VERSION {
            return Err(MessageError::Version(version));
        }
        let message = match r.u8()? {
            KIND_STATUS => {
                let key = r.u64()?;
                let principal = r.u64()?;
                let view = match (key, principal) {
                    (0, 0) => None,
                    (key, principal) => Some(ViewSummary {
                        cluster_key: ClusterKey::new(key).ok_or(MessageError::ClusterKey(key))?,
                        principal: non_zero(principal)?,
                    }),
                };
                let adjacency = r.nodes(ADJACENCY_NODES_MAX)?;
                if let Some(w) = adjacency.windows(2).find(|w| w[0] >= w[1]) {
                    return Err(MessageError::AdjacencyOrder(w[1]));
                }
                Message::Status(Status { view, adjacency })
            }
            KIND_PROPOSE => {
                let cluster_key = r.key()?;
                let principal_view = match r.u64()? {
                    0 => None,
                    raw => Some(ClusterKey::new(raw).ok_or(MessageError::ClusterKey(raw))?),
                };
                let nodes = r.nodes(CLUSTER_NODES_MAX)?;
                let succession =
                    Succession::new(nodes.iter().copied()).map_err(MessageError::Succession)?;
                // Succession::new sorts; a principal always sends it sorted, so anything else
                // is a bug on the sending side worth refusing rather than silently fixing.
                if succession.nodes() != nodes.as_slice() {
                    return Err(MessageError::SuccessionOrder);
                }
                Message::Propose {
                    cluster_key,
                    succession,
                    principal_view,
                }
            }
            KIND_ACCEPT => Message::Accept {
                cluster_key: r.key()?,
            },
            KIND_COMMIT => Message::Commit {
                cluster_key: r.key()?,
            },
            kind => return Err(MessageError::Kind(kind)),
        };
        match bytes.len() - r.at {
            0 => Ok(message),
            n => Err(MessageError::Trailing(n)),
        }
    }
}

fn non_zero(id: u64) -> Result<NodeId, MessageError> {
    if id == 0 {
        return Err(MessageError::ZeroNode);
    }
    Ok(NodeId(id))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MessageError> {
        let rest = &self.bytes[self.at..];
        if rest.len() < n {
            return Err(MessageError::Truncated {
                at: self.at,
                needed: n - rest.len(),
            });
        }
        self.at += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn key(&mut self) -> Result<ClusterKey, MessageError> {
        let raw = self.u64()?;
        ClusterKey::new(raw).ok_or(MessageError::ClusterKey(raw))
    }

    fn nodes(&mut self, limit: usize) -> Result<Vec<NodeId>, MessageError> {
        let count = usize::from(self.u8()?);
        if count > limit {
            return Err(MessageError::TooManyNodes { count, limit });
        }
        (0..count).map(|_| non_zero(self.u64()?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: u64) -> ClusterKey {
        ClusterKey::new(k).unwrap()
    }

    fn samples() -> Vec<Message> {
        let s = Succession::new([NodeId(3), NodeId(0xFFFF_FFFF_FFFF_FFFF), NodeId(1)]).unwrap();
        vec![
            Message::Status(Status {
                view: None,
                adjacency: vec![],
            }),
            Message::Status(Status {
                view: Some(ViewSummary {
                    cluster_key: key(0xFFFF_FFFF_FFFF),
                    principal: NodeId(9),
                }),
                adjacency: (1..=ADJACENCY_NODES_MAX as u64).map(NodeId).collect(),
            }),
            Message::Propose {
                cluster_key: key(1),
                succession: s.clone(),
                principal_view: None,
            },
            Message::Propose {
                cluster_key: key(2),
                succession: s,
                principal_view: Some(key(0xFFFF_FFFF_FFFF)),
            },
            Message::Accept {
                cluster_key: key(0xABC),
            },
            Message::Commit {
                cluster_key: key(0xABC),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_an_error() {
        for m in samples() {
            let bytes = m.encode();
            assert!(bytes.len() <= VIEW_MESSAGE_BYTES_MAX);
            assert_eq!(Message::decode(&bytes), Ok(m.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    matches!(
                        Message::decode(&bytes[..cut]),
                        Err(MessageError::Truncated { .. })
                    ),
                    "{m:?} cut at {cut}"
                );
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Message::decode(&long), Err(MessageError::Trailing(1)));
        }
    }

    #[test]
    fn malformed_fields_are_refused_with_their_cause() {
        let accept = Message::Accept {
            cluster_key: key(5),
        }
        .encode();
        let mut v = accept.clone();
        v[0] = 2;
        assert_eq!(Message::decode(&v), Err(MessageError::Version(2)));
        let mut v = accept.clone();
        v[1] = 99;
        assert_eq!(Message::decode(&v), Err(MessageError::Kind(99)));
        let mut v = accept.clone();
        v[2..10].copy_from_slice(&(1u64 << 48).to_le_bytes());
        assert_eq!(Message::decode(&v), Err(MessageError::ClusterKey(1 << 48)));
        v[2..10].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Message::decode(&v), Err(MessageError::ClusterKey(0)));

        // A proposal: key, then count and ids.
        let propose = |ids: &[u64]| {
            let mut v = vec![VIEW_MESSAGE_VERSION, KIND_PROPOSE];
            v.extend_from_slice(&7u64.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.push(ids.len() as u8);
            for id in ids {
                v.extend_from_slice(&id.to_le_bytes());
            }
            v
        };
        assert!(Message::decode(&propose(&[3, 2, 1])).is_ok());
        assert_eq!(
            Message::decode(&propose(&[1, 2, 3])),
            Err(MessageError::SuccessionOrder)
        );
        assert_eq!(
            Message::decode(&propose(&[2, 2])),
            Err(MessageError::Succession(
                crate::balance::BalanceError::DuplicateNode(NodeId(2))
            ))
        );
        assert_eq!(
            Message::decode(&propose(&[])),
            Err(MessageError::Succession(
                crate::balance::BalanceError::EmptySuccession
            ))
        );
        assert_eq!(
            Message::decode(&propose(&[2, 0])),
            Err(MessageError::ZeroNode)
        );
        assert_eq!(
            Message::decode(&propose(&[9, 8, 7, 6, 5, 4, 3, 2, 1])),
            Err(MessageError::TooManyNodes { count: 9, limit: 8 })
        );

        // A status whose adjacency is not ascending, or whose view is half-empty.
        let status = |key: u64, principal: u64, ids: &[u64]| {
            let mut v = vec![VIEW_MESSAGE_VERSION, KIND_STATUS];
            v.extend_from_slice(&key.to_le_bytes());
            v.extend_from_slice(&principal.to_le_bytes());
            v.push(ids.len() as u8);
            for id in ids {
                v.extend_from_slice(&id.to_le_bytes());
            }
            v
        };
        assert!(Message::decode(&status(0, 0, &[1, 2])).is_ok());
        assert_eq!(
            Message::decode(&status(0, 0, &[2, 1])),
            Err(MessageError::AdjacencyOrder(NodeId(1)))
        );
        assert_eq!(
            Message::decode(&status(0, 0, &[1, 1])),
            Err(MessageError::AdjacencyOrder(NodeId(1)))
        );
        assert_eq!(
            Message::decode(&status(5, 0, &[])),
            Err(MessageError::ZeroNode)
        );
        assert_eq!(
            Message::decode(&status(0, 5, &[])),
            Err(MessageError::ClusterKey(0))
        );
        let too_many: Vec<u64> = (1..=ADJACENCY_NODES_MAX as u64 + 1).collect();
        assert_eq!(
            Message::decode(&status(0, 0, &too_many)),
            Err(MessageError::TooManyNodes {
                count: ADJACENCY_NODES_MAX + 1,
                limit: ADJACENCY_NODES_MAX
            })
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic fuzz: random lengths and bytes, and every sample with one
        // byte flipped; decode must return, whatever it returns.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len > 1 {
                v[0] = VIEW_MESSAGE_VERSION;
                v[1] = (next() % 6) as u8;
            }
            let _ = Message::decode(&v);
        }
        for m in samples() {
            let bytes = m.encode();
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut v = bytes.clone();
                    v[i] ^= 1 << bit;
                    if let Ok(d) = Message::decode(&v) {
                        // Whatever decodes re-encodes to the same bytes: no lossy parse.
                        assert_eq!(d.encode(), v);
                    }
                }
            }
        }
    }
}
