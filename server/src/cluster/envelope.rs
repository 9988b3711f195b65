//! The heartbeat datagram: what one UDP packet between two nodes carries around a SWIM packet
//! or a view message — the cluster name (a mismatch refuses the peer), the sender's id, the
//! address clients reach it at and its fabric address, and a directory of the peers it knows,
//! so that a node learns how to reach peers SWIM tells it about but it has never heard from.
//!
//! Owns the byte layout (ours, not Aerospike's; little-endian):
//! `magic u32 "APHB" | version u8 | kind u8 | name_len u8, name | sender u64 | service addr |
//! fabric addr | entries u8, (node u64, heartbeat addr, service addr, fabric addr) × entries |
//! payload_len u16, payload`,
//! an address being `family u8 (4|6), ip (4|16 bytes), port u16`. It must never panic on bytes
//! from the network: anything malformed, truncated or with bytes left over is an
//! `EnvelopeError`, and the packet is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use apogee_cluster::detector::DETECTOR_PACKET_BYTES_MAX;
use apogee_cluster::view::VIEW_MESSAGE_BYTES_MAX;
use apogee_cluster::NodeId;

use crate::config::CLUSTER_NAME_BYTES_MAX;

/// "APHB": Apogee heartbeat.
const MAGIC: u32 = u32::from_le_bytes(*b"APHB");
/// Bumped on any change of the layout; a peer with another version is refused.
pub const ENVELOPE_VERSION: u8 = 1;
/// Most directory entries one packet carries: twice a CE cluster's node limit.
pub const DIRECTORY_ENTRIES_MAX: usize = 2 * apogee_cluster::CLUSTER_NODES_MAX;
/// Most payload bytes: the larger of a SWIM packet and a view message.
pub const PAYLOAD_BYTES_MAX: usize = if DETECTOR_PACKET_BYTES_MAX > VIEW_MESSAGE_BYTES_MAX {
    DETECTOR_PACKET_BYTES_MAX
} else {
    VIEW_MESSAGE_BYTES_MAX
};
const ADDR_BYTES_MAX: usize = 1 + 16 + 2;
/// Most bytes of one datagram: below a loopback MTU, so a packet is never fragmented there.
pub const ENVELOPE_BYTES_MAX: usize = 4
    + 2
    + 1
    + CLUSTER_NAME_BYTES_MAX
    + 8
    + 2 * ADDR_BYTES_MAX
    + 1
    + DIRECTORY_ENTRIES_MAX * (8 + 3 * ADDR_BYTES_MAX)
    + 2
    + PAYLOAD_BYTES_MAX;

/// What a datagram carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A SWIM packet for the failure detector.
    Swim = 1,
    /// A view-change message.
    View = 2,
    /// "Who are you?", sent to a seed whose node id is not known yet; answered by `HelloReply`.
    Hello = 3,
    HelloReply = 4,
}

/// One known peer: its id, where its heartbeat listens, where its clients connect, where its
/// fabric listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub node: NodeId,
    pub heartbeat: SocketAddr,
    pub service: SocketAddr,
    pub fabric: SocketAddr,
}

/// One decoded datagram, borrowing its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub kind: Kind,
    /// `None`: the sender has no cluster name (Aerospike's "null").
    pub cluster_name: Option<&'a str>,
    pub sender: NodeId,
    pub sender_service: SocketAddr,
    pub sender_fabric: SocketAddr,
    pub directory: Vec<DirectoryEntry>,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not an Apogee heartbeat packet (bad magic)")]
    Magic,
    #[error("heartbeat protocol version {0}, this node speaks {ENVELOPE_VERSION}")]
    Version(u8),
    #[error("unknown heartbeat packet kind {0}")]
    Kind(u8),
    #[error("heartbeat packet truncated")]
    Truncated,
    #[error("{0} bytes left over after the heartbeat packet")]
    Trailing(usize),
    #[error("cluster name of {0} bytes is not valid")]
    Name(usize),
    #[error("node id 0 in a heartbeat packet")]
    ZeroNode,
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("{0} directory entries exceed DIRECTORY_ENTRIES_MAX ({DIRECTORY_ENTRIES_MAX})")]
    Directory(usize),
    #[error("payload of {0} bytes exceeds PAYLOAD_BYTES_MAX ({PAYLOAD_BYTES_MAX})")]
    Payload(usize),
}

impl Envelope<'_> {
    /// The datagram's bytes. Callers keep within the limits (asserted: they are our own
    /// values, not a peer's).
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.payload.len() <= PAYLOAD_BYTES_MAX,
            "payload over PAYLOAD_BYTES_MAX"
        );
        assert!(self.directory.len() <= DIRECTORY_ENTRIES_MAX);
        let name = self.cluster_name.unwrap_or("");
        assert!(name.len() <= CLUSTER_NAME_BYTES_MAX);
        let mut b = Vec::with_capacity(ENVELOPE_BYTES_MAX);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.push(ENVELOPE_VERSION);
        b.push(self.kind as u8);
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&self.sender.0.to_le_bytes());
        put_addr(&mut b, self.sender_service);
        put_addr(&mut b, self.sender_fabric);
        b.push(self.directory.len() as u8);
        for e in &self.directory {
            b.extend_from_slice(&e.node.0.to_le_bytes());
            put_addr(&mut b, e.heartbeat);
            put_addr(&mut b, e.service);
            put_addr(&mut b, e.fabric);
        }
        b.extend_from_slice(&(self.payload.len() as u16).to_le_bytes());
        b.extend_from_slice(self.payload);
        debug_assert!(b.len() <= ENVELOPE_BYTES_MAX);
        b
    }
}

fn put_addr(b: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            b.push(4);
            b.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b.push(6);
            b.extend_from_slice(&ip.octets());
        }
    }
    b.extend_from_slice(&a.port().to_le_bytes());
}

/// A cursor over untrusted bytes: every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.0.len() < n {
            return Err(EnvelopeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn node(&mut self) -> Result<NodeId, EnvelopeError> {
        match self.u64()? {
            0 => Err(EnvelopeError::ZeroNode),
            n => Ok(NodeId(n)),
        }
    }

    fn addr(&mut self) -> Result<SocketAddr, EnvelopeError> {
        let ip = match self.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            f => return Err(EnvelopeError::Family(f)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// Decodes one datagram; any defect is an error and nothing of the packet is used.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let mut r = Reader(bytes);
    let magic = r.take(4)?;
    if magic != MAGIC.to_le_bytes() {
        return Err(EnvelopeError::Magic);
    }
    let version = r.u8()?;
    if version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let kind = match r.u8()? {
        1 => Kind::Swim,
        2 => Kind::View,
        3 => Kind::Hello,
        4 => Kind::HelloReply,
        k => return Err(EnvelopeError::Kind(k)),
    };
    let name_len = usize::from(r.u8()?);
    if name_len > CLUSTER_NAME_BYTES_MAX {
        return Err(EnvelopeError::Name(name_len));
    }
    let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| EnvelopeError::Name(name_len))?;
    let sender = r.node()?;
    let sender_service = r.addr()?;
    let sender_fabric = r.addr()?;
    let entries = usize::from(r.u8()?);
    if entries > DIRECTORY_ENTRIES_MAX {
        return Err(EnvelopeError::Directory(entries));
    }
    let mut directory = Vec::with_capacity(entries);
    for _ in 0..entries {
        directory.push(DirectoryEntry {
            node: r.node()?,
            heartbeat: r.addr()?,
            service: r.addr()?,
            fabric: r.addr()?,
        });
    }
    let payload_len = usize::from(r.u16()?);
    if payload_len > PAYLOAD_BYTES_MAX {
        return Err(EnvelopeError::Payload(payload_len));
    }
    let payload = r.take(payload_len)?;
    if !r.0.is_empty() {
        return Err(EnvelopeError::Trailing(r.0.len()));
    }
    Ok(Envelope {
        kind,
        cluster_name: (!name.is_empty()).then_some(name),
        sender,
        sender_service,
        sender_fabric,
        directory,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> Envelope<'_> {
        Envelope {
            kind: Kind::Swim,
            cluster_name: Some("dev"),
            sender: NodeId(0xA1),
            sender_service: "127.0.0.1:3000".parse().unwrap(),
            sender_fabric: "127.0.0.1:3001".parse().unwrap(),
            directory: vec![
                DirectoryEntry {
                    node: NodeId(0xB2),
                    heartbeat: "127.0.0.1:3012".parse().unwrap(),
                    service: "127.0.0.1:3010".parse().unwrap(),
                    fabric: "127.0.0.1:3011".parse().unwrap(),
                },
                DirectoryEntry {
                    node: NodeId(u64::MAX),
                    heartbeat: "[::1]:3022".parse().unwrap(),
                    service: "[fe80::1]:3020".parse().unwrap(),
                    fabric: "[fe80::1]:3021".parse().unwrap(),
                },
            ],
            payload,
        }
    }

    #[test]
    fn a_packet_round_trips_and_every_truncation_or_extra_byte_is_refused() {
        let payload = vec![7u8; 300];
        let e = sample(&payload);
        let bytes = e.encode();
        assert_eq!(decode(&bytes).unwrap(), e);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "accepted a cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(EnvelopeError::Trailing(1)));
        let none = Envelope {
            cluster_name: None,
            directory: vec![],
            kind: Kind::Hello,
            ..sample(&[])
        };
        assert_eq!(decode(&none.encode()).unwrap(), none);
    }

    #[test]
    fn the_largest_packet_fits_the_bound() {
        let payload = vec![1u8; PAYLOAD_BYTES_MAX];
        let name = "n".repeat(CLUSTER_NAME_BYTES_MAX);
        let entry = DirectoryEntry {
            node: NodeId(9),
            heartbeat: "[::1]:1".parse().unwrap(),
            service: "[::1]:2".parse().unwrap(),
            fabric: "[::1]:4".parse().unwrap(),
        };
        let e = Envelope {
            cluster_name: Some(&name),
            sender_service: "[::1]:3".parse().unwrap(),
            sender_fabric: "[::1]:5".parse().unwrap(),
            directory: vec![entry; DIRECTORY_ENTRIES_MAX],
            ..sample(&payload)
        };
        let bytes = e.encode();
        assert_eq!(bytes.len(), ENVELOPE_BYTES_MAX);
        assert_eq!(decode(&bytes).unwrap(), e);
    }

    #[test]
    fn bad_fields_are_named() {
        let bytes = sample(&[1, 2]).encode();
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(EnvelopeError::Magic));
        let mut b = bytes.clone();
        b[4] = 9;
        assert_eq!(decode(&b), Err(EnvelopeError::Version(9)));
        let mut b = bytes.clone();
        b[5] = 0;
        assert_eq!(decode(&b), Err(EnvelopeError::Kind(0)));
        let mut b = bytes.clone();
        b[6] = 200;
        assert_eq!(decode(&b), Err(EnvelopeError::Name(200)));
        // Sender id (after the 3-byte name) zeroed.
        let mut b = bytes.clone();
        b[10..18].fill(0);
        assert_eq!(decode(&b), Err(EnvelopeError::ZeroNode));
        let mut b = bytes.clone();
        b[18] = 5;
        assert_eq!(decode(&b), Err(EnvelopeError::Family(5)));
        // Arbitrary bytes never panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 0..2_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut junk = bytes.clone();
            let i = (x as usize) % junk.len();
            junk[i] = (x >> 32) as u8;
            junk.truncate(junk.len() - n % 3);
            let _ = decode(&junk);
        }
    }
}
