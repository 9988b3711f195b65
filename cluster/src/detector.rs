//! Failure detection by SWIM, with the `foca` crate: which peers are alive, the adjacency that
//! `view::Node::set_adjacency` takes.
//!
//! Owns one foca instance, its timers (a queue of due instants, so foca runs under the
//! caller's clock, simulated in tests), and the codec of foca's messages (our bytes, checked:
//! foca leaves the wire format to its user). It must never read a clock, do I/O, or panic on
//! bytes from the network: foca's errors and codec errors come back as `DetectorError`.
//!
//! Why foca: it is SWIM with suspicion and infection-style dissemination (the protocol behind
//! memberlist/Consul/Serf), sans-I/O (it only says "send these bytes to X" and "wake me in
//! d"), no_std with no runtime of its own, so it runs under a simulated clock here and inside
//! glommio in the server without threads; maintained, documented, and its identities can be
//! renewed, which lets a restarted node rejoin at once instead of waiting out its old
//! identity's "down" record. What it does not give: Aerospike's adjacency is "whom I hear
//! directly"; SWIM's is "whom the group believes alive", and indirect probes keep a peer alive
//! while some third node still reaches it. So a one-way or non-transitive cut is masked here
//! (good against flapping), and the view's clique rule sees a clique where the fabric between
//! two members may be broken; the fabric's own connection errors must cover that case.

use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use bytes::{Buf, BufMut};
use foca::{Config, Foca, Header, Member, Message, NoCustomBroadcast, Notification, State, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::balance::NodeId;
use crate::view::{Instant, HEARTBEAT_INTERVAL_MS_DEFAULT, HEARTBEAT_TIMEOUT_INTERVALS_DEFAULT};

/// A node as SWIM knows it: its id and which run of the process it is. A restarted node takes
/// a new `generation` (from the caller: persisted and bumped, or random), so its new identity
/// wins over the old one that the others may still hold as down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Peer {
    pub node: NodeId,
    pub generation: u16,
}

impl foca::Identity for Peer {
    type Addr = NodeId;

    /// Declared down while alive (a false suspicion it could not refute in time): come back
    /// at once as the next generation.
    fn renew(&self) -> Option<Peer> {
        Some(Peer {
            node: self.node,
            generation: self.generation.wrapping_add(1),
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    /// The later generation wins, counted with wraparound (so 0 follows 65535).
    fn win_addr_conflict(&self, adversary: &Peer) -> bool {
        (self.generation.wrapping_sub(adversary.generation) as i16) > 0
    }
}

/// Timing of failure detection, in Aerospike's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    /// Heartbeat `interval`: how often each node probes one peer.
    pub interval: Duration,
    /// Heartbeat `timeout` in intervals: about how long a silent node stays alive.
    pub timeout_intervals: u32,
}

impl Default for DetectorConfig {
    fn default() -> DetectorConfig {
        DetectorConfig {
            interval: Duration::from_millis(HEARTBEAT_INTERVAL_MS_DEFAULT),
            timeout_intervals: HEARTBEAT_TIMEOUT_INTERVALS_DEFAULT,
        }
    }
}

/// The most bytes of one SWIM packet: far below a loopback or LAN MTU, and enough for a
/// header and the updates of a full CE cluster (8 members × 13 bytes) many times over.
pub const DETECTOR_PACKET_BYTES_MAX: usize = 1_200;

/// Intervals of a timeout spent before suspicion starts: a probe period, then the indirect
/// probes. The rest of the timeout is the suspicion itself.
const PROBE_INTERVALS: u32 = 2;

impl DetectorConfig {
    /// Foca's settings for this timing. A silent node is first probed within about an interval
    /// (each node probes one peer per interval, and several nodes probe), suspected after the
    /// probe's period, and declared down `timeout − PROBE_INTERVALS` intervals later: about
    /// `timeout × interval` in all (1.5 s with Aerospike's defaults).
    pub fn foca_config(&self) -> Config {
        assert!(
            self.timeout_intervals > PROBE_INTERVALS,
            "a heartbeat timeout of {} intervals leaves no time to suspect",
            self.timeout_intervals
        );
        let mut c = Config::simple();
        c.probe_period = self.interval;
        // Wait a third of the period for a direct ack before asking others to probe.
        c.probe_rtt = self.interval / 3;
        c.num_indirect_probes = NonZeroUsize::MIN.saturating_add(1);
        // Small clusters (CE: at most 8 nodes): a few transmissions reach everyone.
        c.max_transmissions = NonZeroU8::MIN.saturating_add(5);
        c.suspect_to_down_after = self.interval * (self.timeout_intervals - PROBE_INTERVALS);
        c.max_packet_size = NonZeroUsize::MIN.saturating_add(DETECTOR_PACKET_BYTES_MAX - 1);
        c.notify_down_members = true;
        // Gossip every interval so news spread in about one; after a partition heals, the
        // sides learn of each other again by announcing to nodes they hold as down.
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.interval,
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.interval * self.timeout_intervals,
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        c
    }
}

/// Why a packet or a timer could not be handled. The packet is dropped; the detector stays
/// usable.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(
        "SWIM packet of {0} bytes exceeds DETECTOR_PACKET_BYTES_MAX ({DETECTOR_PACKET_BYTES_MAX})"
    )]
    PacketTooLarge(usize),
    #[error("failure detector: {0}")]
    Foca(foca::Error),
}

/// What the detector produced: packets to send, and whether the set of live peers changed.
#[derive(Default, Debug)]
pub struct DetectorOutput {
    pub packets: Vec<(NodeId, Vec<u8>)>,
    pub adjacency_changed: bool,
}

/// One node's failure detector.
pub struct Detector {
    foca: Foca<Peer, PeerCodec, SmallRng, NoCustomBroadcast>,
    /// Timers foca asked for, by due instant (then by order of asking).
    timers: BTreeMap<(Instant, u64), Timer<Peer>>,
    timer_sequence: u64,
    alive: BTreeSet<NodeId>,
}

/// The `foca::Runtime` of one call: collects what foca asks for.
struct Collect<'a> {
    now: Instant,
    timers: &'a mut BTreeMap<(Instant, u64), Timer<Peer>>,
    timer_sequence: &'a mut u64,
    alive: &'a mut BTreeSet<NodeId>,
    out: &'a mut DetectorOutput,
}

impl foca::Runtime<Peer> for Collect<'_> {
    fn notify(&mut self, notification: Notification<'_, Peer>) {
        match notification {
            Notification::MemberUp(p) => {
                self.out.adjacency_changed |= self.alive.insert(p.node);
            }
            Notification::MemberDown(p) => {
                self.out.adjacency_changed |= self.alive.remove(&p.node);
            }
            // A rename keeps the node (same address); its liveness comes with MemberUp/Down.
            _ => {}
        }
    }

    fn send_to(&mut self, to: Peer, data: &[u8]) {
        self.out.packets.push((to.node, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Peer>, after: Duration) {
        *self.timer_sequence += 1;
        self.timers
            .insert((self.now.after(after), *self.timer_sequence), event);
    }
}

impl Detector {
    /// A detector for `node` in its `generation`-th run; `seed` drives foca's random probe
    /// order (from entropy in production, from the test's seed in simulation).
    pub fn new(node: NodeId, generation: u16, config: DetectorConfig, seed: u64) -> Detector {
        Detector {
            foca: Foca::new(
                Peer { node, generation },
                config.foca_config(),
                SmallRng::seed_from_u64(seed),
                PeerCodec,
            ),
            timers: BTreeMap::new(),
            timer_sequence: 0,
            alive: BTreeSet::new(),
        }
    }

    /// The peers SWIM holds alive (or suspect: not yet declared down).
    pub fn alive(&self) -> &BTreeSet<NodeId> {
        &self.alive
    }

    fn runtime<'a>(
        &'a mut self,
        now: Instant,
        out: &'a mut DetectorOutput,
    ) -> (
        &'a mut Foca<Peer, PeerCodec, SmallRng, NoCustomBroadcast>,
        Collect<'a>,
    ) {
        (
            &mut self.foca,
            Collect {
                now,
                timers: &mut self.timers,
                timer_sequence: &mut self.timer_sequence,
                alive: &mut self.alive,
                out,
            },
        )
    }

    /// Asks `seed` (a `mesh-seed-address-port` node) to let this node join its group.
    pub fn announce(
        &mut self,
        now: Instant,
        seed: NodeId,
        out: &mut DetectorOutput,
    ) -> Result<(), DetectorError> {
        let (foca, rt) = self.runtime(now, out);
        // Foca accepts an announce addressed to any generation of the receiver.
        foca.announce(
            Peer {
                node: seed,
                generation: 0,
            },
            rt,
        )
        .map_err(DetectorError::Foca)
    }

    /// Handles one packet received from the network.
    pub fn on_packet(
        &mut self,
        now: Instant,
        bytes: &[u8],
        out: &mut DetectorOutput,
    ) -> Result<(), DetectorError> {
        if bytes.len() > DETECTOR_PACKET_BYTES_MAX {
            return Err(DetectorError::PacketTooLarge(bytes.len()));
        }
        let (foca, rt) = self.runtime(now, out);
        foca.handle_data(bytes, rt).map_err(DetectorError::Foca)
    }

    /// Fires every timer due by `now`, in order.
    pub fn on_tick(&mut self, now: Instant, out: &mut DetectorOutput) -> Result<(), DetectorError> {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            let (foca, rt) = self.runtime(now, out);
            foca.handle_timer(timer, rt).map_err(DetectorError::Foca)?;
        }
        Ok(())
    }
}

/// Foca's messages in our bytes: integers little-endian, a peer as `node u64, generation u16`.
pub struct PeerCodec;

/// Why bytes are not a SWIM message (or a buffer had no room for one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerCodecError {
    #[error("SWIM message truncated")]
    Truncated,
    #[error("no room in the packet for this item")]
    NoRoom,
    #[error("unknown SWIM message tag {0}")]
    Tag(u8),
    #[error("unknown SWIM member state {0}")]
    State(u8),
    #[error("node id 0 in a SWIM message")]
    ZeroNode,
}

const PEER_BYTES: usize = 10;

fn put_peer(buf: &mut impl BufMut, p: &Peer) {
    buf.put_u64_le(p.node.0);
    buf.put_u16_le(p.generation);
}

fn get_peer(buf: &mut impl Buf) -> Result<Peer, PeerCodecError> {
    if buf.remaining() < PEER_BYTES {
        return Err(PeerCodecError::Truncated);
    }
    let node = buf.get_u64_le();
    let generation = buf.get_u16_le();
    if node == 0 {
        return Err(PeerCodecError::ZeroNode);
    }
    Ok(Peer {
        node: NodeId(node),
        generation,
    })
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, PeerCodecError> {
    if buf.remaining() < 1 {
        return Err(PeerCodecError::Truncated);
    }
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut impl Buf) -> Result<u16, PeerCodecError> {
    if buf.remaining() < 2 {
        return Err(PeerCodecError::Truncated);
    }
    Ok(buf.get_u16_le())
}

impl foca::Codec<Peer> for PeerCodec {
    type Error = PeerCodecError;

    fn encode_header(
        &mut self,
        h: &Header<Peer>,
        mut buf: impl BufMut,
    ) -> Result<(), PeerCodecError> {
        let (tag, peer, probe): (u8, Option<&Peer>, Option<u8>) = match &h.message {
            Message::Ping(n) => (1, None, Some(*n)),
            Message::Ack(n) => (2, None, Some(*n)),
            Message::PingReq {
                target,
                probe_number,
            } => (3, Some(target), Some(*probe_number)),
            Message::IndirectPing {
                origin,
                probe_number,
            } => (4, Some(origin), Some(*probe_number)),
            Message::IndirectAck {
                target,
                probe_number,
            } => (5, Some(target), Some(*probe_number)),
            Message::ForwardedAck {
                origin,
                probe_number,
            } => (6, Some(origin), Some(*probe_number)),
            Message::Announce => (7, None, None),
            Message::Feed => (8, None, None),
            Message::Gossip => (9, None, None),
            Message::Broadcast => (10, None, None),
            Message::TurnUndead => (11, None, None),
        };
        let needed =
            2 * PEER_BYTES + 2 + 1 + peer.map_or(0, |_| PEER_BYTES) + probe.map_or(0, |_| 1);
        // Foca requires a failed encode to leave the buffer untouched.
        if buf.remaining_mut() < needed {
            return Err(PeerCodecError::NoRoom);
        }
        put_peer(&mut buf, &h.src);
        buf.put_u16_le(h.src_incarnation);
        put_peer(&mut buf, &h.dst);
        buf.put_u8(tag);
        if let Some(p) = peer {
            put_peer(&mut buf, p);
        }
        if let Some(n) = probe {
            buf.put_u8(n);
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<Peer>, PeerCodecError> {
        let src = get_peer(&mut buf)?;
        let src_incarnation = get_u16(&mut buf)?;
        let dst = get_peer(&mut buf)?;
        let message = match get_u8(&mut buf)? {
            1 => Message::Ping(get_u8(&mut buf)?),
            2 => Message::Ack(get_u8(&mut buf)?),
            3 => Message::PingReq {
                target: get_peer(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            4 => Message::IndirectPing {
                origin: get_peer(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            5 => Message::IndirectAck {
                target: get_peer(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            6 => Message::ForwardedAck {
                origin: get_peer(&mut buf)?,
                probe_number: get_u8(&mut buf)?,
            },
            7 => Message::Announce,
            8 => Message::Feed,
            9 => Message::Gossip,
            10 => Message::Broadcast,
            11 => Message::TurnUndead,
            tag => return Err(PeerCodecError::Tag(tag)),
        };
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        m: &Member<Peer>,
        mut buf: impl BufMut,
    ) -> Result<(), PeerCodecError> {
        // Foca requires a failed encode to leave the buffer untouched.
        if buf.remaining_mut() < PEER_BYTES + 3 {
            return Err(PeerCodecError::NoRoom);
        }
        put_peer(&mut buf, m.id());
        buf.put_u16_le(m.incarnation());
        buf.put_u8(match m.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<Peer>, PeerCodecError> {
        let id = get_peer(&mut buf)?;
        let incarnation = get_u16(&mut buf)?;
        let state = match get_u8(&mut buf)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            s => return Err(PeerCodecError::State(s)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Codec, Identity};

    fn peer(n: u64, g: u16) -> Peer {
        Peer {
            node: NodeId(n),
            generation: g,
        }
    }

    #[test]
    fn every_swim_message_and_member_round_trips_and_truncations_are_errors() {
        let t = peer(0xFFFF_FFFF_FFFF_FFFF, 65_535);
        let messages = [
            Message::Ping(1),
            Message::Ack(255),
            Message::PingReq {
                target: t,
                probe_number: 2,
            },
            Message::IndirectPing {
                origin: t,
                probe_number: 3,
            },
            Message::IndirectAck {
                target: t,
                probe_number: 4,
            },
            Message::ForwardedAck {
                origin: t,
                probe_number: 5,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        for message in messages {
            let h = Header {
                src: peer(1, 2),
                src_incarnation: 7,
                dst: peer(3, 4),
                message,
            };
            let mut bytes = Vec::new();
            PeerCodec.encode_header(&h, &mut bytes).unwrap();
            assert_eq!(PeerCodec.decode_header(&bytes[..]).unwrap(), h);
            for cut in 0..bytes.len() {
                assert!(
                    PeerCodec.decode_header(&bytes[..cut]).is_err(),
                    "{h:?} at {cut}"
                );
            }
            // No room: the buffer is left as it was.
            let mut small = [0u8; 8];
            let mut slice = &mut small[..];
            assert_eq!(
                PeerCodec.encode_header(&h, &mut slice),
                Err(PeerCodecError::NoRoom)
            );
            assert_eq!(small, [0u8; 8]);
        }
        for state in [State::Alive, State::Suspect, State::Down] {
            let m = Member::new(t, 9, state);
            let mut bytes = Vec::new();
            PeerCodec.encode_member(&m, &mut bytes).unwrap();
            assert_eq!(PeerCodec.decode_member(&bytes[..]).unwrap(), m);
            let mut bad = bytes.clone();
            *bad.last_mut().unwrap() = 3;
            assert_eq!(
                PeerCodec.decode_member(&bad[..]),
                Err(PeerCodecError::State(3))
            );
        }
        let mut zero = Vec::new();
        put_peer(&mut zero, &peer(0, 0));
        assert_eq!(get_peer(&mut &zero[..]), Err(PeerCodecError::ZeroNode));
    }

    #[test]
    fn a_later_generation_wins_with_wraparound() {
        assert!(peer(5, 2).win_addr_conflict(&peer(5, 1)));
        assert!(!peer(5, 1).win_addr_conflict(&peer(5, 2)));
        assert!(peer(5, 0).win_addr_conflict(&peer(5, 65_535)));
        assert_eq!(peer(5, 65_535).renew(), Some(peer(5, 0)));
        assert_eq!(peer(5, 1).addr(), NodeId(5));
    }

    #[test]
    fn the_foca_settings_follow_the_heartbeat_settings() {
        let c = DetectorConfig::default().foca_config();
        assert_eq!(c.probe_period, Duration::from_millis(150));
        assert_eq!(c.probe_rtt, Duration::from_millis(50));
        assert_eq!(c.suspect_to_down_after, Duration::from_millis(1_200));
        assert_eq!(c.max_packet_size.get(), DETECTOR_PACKET_BYTES_MAX);
    }
}
