//! The fabric: TCP between the nodes of a cluster. It carries two exchanges, each a request
//! frame answered by one reply frame on the same connection: a keyed request that reached a
//! node which does not master its partition is forwarded to the master (as Aerospike proxies)
//! and the master's reply frame relayed to the client unchanged; and a write's record image
//! from a partition's master to each replica, answered by what the replica did with it
//! (`replica`). Migration uses the same connections: batches of its messages for core 0's
//! migration task, and chunks of a partition's records for the owning shard
//! (`migration::stream`).
//!
//! Owns the fabric's framing (ours; little-endian): `len u32` (bytes after it, at most
//! `FABRIC_FRAME_BYTES_MAX`) `| magic "APFB" | version u8 | kind u8 | crc32 u32 | body`, the
//! CRC-32 over version, kind and body, so a frame damaged past TCP's weak checksum (or by a
//! bug on either side) is refused rather than applied as a record. The first frame on
//! a connection is a `Hello` (cluster-name length and bytes, sender node id); a peer of
//! another cluster, another fabric version, or that sends anything malformed has its
//! connection closed with a rate-limited log line, and nothing else changes. A proxied
//! request is served by the master's keyed path with proxying off, so two nodes that disagree
//! on the map answer 11 rather than forward a request in a loop. It must never panic on a
//! peer's bytes and never allocate more than has arrived.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use apogee_cluster::NodeId;
use apogee_wire::msg::Message;
use apogee_wire::ResultCode;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::command::Reply;
use crate::core::Core;
use crate::node::Node;

const MAGIC: [u8; 4] = *b"APFB";
/// Bumped on any change of the framing; a peer with another version is refused.
/// (2: frames carry a checksum. 3: a hello names the receiving shard and is answered.)
pub const FABRIC_VERSION: u8 = 3;
/// A hello's shard when the sender does not know the receiver's shards yet: served by the
/// core that accepted the connection.
pub const ANY_SHARD: u16 = u16::MAX;
/// Most shards a peer may say it has (a hello answer above it is malformed).
const PEER_SHARDS_MAX: u16 = 1024;
/// Bytes of a frame after its length and before its body: magic, version, kind, checksum.
const FRAME_HEAD_BYTES: usize = 10;
/// Largest frame: a request or reply of the largest body a client may send, and the head.
pub const FABRIC_FRAME_BYTES_MAX: usize =
    apogee_wire::proto::BODY_SIZE_MAX_BYTES as usize + 64 + FRAME_HEAD_BYTES;
/// A frame's body is read in pieces of at most this, so memory follows the bytes that came.
const READ_PIECE_BYTES: usize = 64 << 10;
/// Aerospike's fabric `connect-timeout-ms`.
const CONNECT_TIMEOUT_MS: u64 = 500;
/// A proxied request with no reply in this long answers the client 11, which retries.
const PROXY_REPLY_TIMEOUT_MS: u64 = 2_000;
/// A new connection that sends no hello in this long is closed.
const HELLO_TIMEOUT_MS: u64 = 2_000;
/// An accepted connection idle this long is closed (its sender reconnects on its next use).
const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Idle connections each core keeps to each peer.
const POOLED_PER_PEER_MAX: usize = 8;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hello = 1,
    ProxyRequest = 2,
    ProxyReply = 3,
    /// A record image for a replica (body: `replica::encode_image`).
    ReplicaWrite = 4,
    /// A replica's answer: one `replica::ReplicaStatus` byte.
    ReplicaAck = 5,
    /// A truncate cut-off another member took (body: `truncate::encode_cut_off`).
    Truncate = 6,
    /// Its answer: one byte, 0 when the cut-off is durable here.
    TruncateAck = 7,
    /// Migration's messages of one view (body: `apogee_cluster::migrate::wire` batch).
    MigrateBatch = 8,
    /// Its answer: empty; the batch was handed to the migration task.
    MigrateAck = 9,
    /// A chunk of one partition's records, migrating (body: `migration::stream`).
    MigrateRecords = 10,
    /// Its answer: one `migration::stream::ChunkStatus` byte.
    MigrateRecordsAck = 11,
    /// A merging master asks a source for one record's version (body: `dup_res` request).
    DupRes = 12,
    /// Its answer (body: `dup_res` answer).
    DupResReply = 13,
    /// The answer to a hello: `shards u16`, how many shards the receiver has, so the sender
    /// can open its next connections to the shard that owns each partition.
    HelloAck = 14,
    /// A namespace's secondary-index catalog (body: `sindex::encode`).
    Sindex = 15,
    /// Its answer: one byte, 0 when the catalog is durable here.
    SindexAck = 16,
    /// A UDF module change (body: `udf::Change::encode`).
    Udf = 17,
    /// Its answer: one byte, 0 when the change is durable here.
    UdfAck = 18,
}

#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    #[error("fabric connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("fabric frame of {0} bytes is outside {FRAME_HEAD_BYTES}..={FABRIC_FRAME_BYTES_MAX}")]
    Size(usize),
    #[error("not an Apogee fabric frame (bad magic)")]
    Magic,
    #[error("fabric version {0}, this node speaks {FABRIC_VERSION}")]
    Version(u8),
    #[error("unknown fabric frame kind {0}")]
    Kind(u8),
    #[error(
        "fabric frame checksum {got:08x} does not match its bytes ({want:08x}): damaged in transit"
    )]
    Checksum { got: u32, want: u32 },
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: Kind, got: Kind },
    #[error("malformed hello")]
    Hello,
    #[error("peer's cluster-name {theirs:?} differs from this node's {ours:?}")]
    OtherCluster { theirs: String, ours: String },
    #[error("proxied request is not one keyed message: {0}")]
    Request(String),
    #[error("no hello or reply in time")]
    Timeout,
    #[error(transparent)]
    Image(#[from] super::replica::ImageError),
    #[error("malformed replica answer ({0} bytes)")]
    Ack(usize),
    #[error("node {0:X} is not a peer in this view")]
    NoPeer(u64),
    #[error("malformed truncate cut-off: {0}")]
    CutOff(&'static str),
    #[error("the member could not make the truncate durable")]
    Truncate,
    #[error("malformed index catalog: {0}")]
    Sindex(String),
    #[error("the member could not make the index catalog durable")]
    SindexNotDurable,
    #[error("malformed UDF module change: {0}")]
    Udf(String),
    #[error("the member could not make the UDF module change durable")]
    UdfNotDurable,
    #[error("malformed migration batch: {0}")]
    Migrate(#[from] apogee_cluster::migrate::wire::WireError),
    #[error("malformed migrating records: {0}")]
    Chunk(#[from] super::migration::stream::ChunkError),
    #[error("malformed duplicate resolution: {0}")]
    DupRes(#[from] super::dup_res::DupResError),
}

/// Proxy counters, node-wide, for `statistics`.
#[derive(Default)]
pub struct ProxyStats {
    /// Requests this node forwarded and relayed a reply for (`client_proxy_complete`).
    pub complete: AtomicU64,
    /// Requests this node could not forward or got no reply for (`client_proxy_error`).
    pub error: AtomicU64,
    /// Requests peers forwarded to this node (`proxy_received`).
    pub received: AtomicU64,
    /// Fabric connections the accepting core handed to the shard they were opened for
    /// (`fabric_connections_handed`).
    pub handed: AtomicU64,
    /// Frames served on a core that does not own their partition, handed on through its
    /// inbox (`fabric_cross_core`): 0 once every peer knows this node's shards.
    pub cross_core: AtomicU64,
    /// Requests routed to this node as master whose partition was handed to another master
    /// before they ran, then proxied there (`client_proxy_after_handoff`).
    pub after_handoff: AtomicU64,
}

impl ProxyStats {
    pub fn describe(&self) -> String {
        format!(
            "client_proxy_complete={};client_proxy_error={};proxy_received={};\
             fabric_connections_handed={};fabric_cross_core={};client_proxy_after_handoff={}",
            self.complete.load(Relaxed),
            self.error.load(Relaxed),
            self.received.load(Relaxed),
            self.handed.load(Relaxed),
            self.cross_core.load(Relaxed),
            self.after_handoff.load(Relaxed)
        )
    }
}

/// One frame's bytes.
pub fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let len = FRAME_HEAD_BYTES + body.len();
    assert!(
        len <= FABRIC_FRAME_BYTES_MAX,
        "a fabric frame over its bound"
    );
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&MAGIC);
    out.push(FABRIC_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&checksum(kind as u8, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The CRC-32 a frame carries: over its version, kind and body.
fn checksum(kind: u8, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[FABRIC_VERSION, kind]);
    h.update(body);
    h.finalize()
}

/// Checks a frame's body against the checksum its head carried.
fn check_body(head: &[u8; FRAME_HEAD_BYTES], body: &[u8]) -> Result<(), FabricError> {
    let got = u32::from_le_bytes(head[6..10].try_into().expect("4 bytes"));
    let want = checksum(head[5], body);
    if got != want {
        return Err(FabricError::Checksum { got, want });
    }
    Ok(())
}

/// Checks a frame's head (the bytes after its length, before its body); the checksum is
/// checked once the body is in (`check_body`).
fn parse_head(head: &[u8; FRAME_HEAD_BYTES]) -> Result<Kind, FabricError> {
    if head[..4] != MAGIC {
        return Err(FabricError::Magic);
    }
    if head[4] != FABRIC_VERSION {
        return Err(FabricError::Version(head[4]));
    }
    match head[5] {
        1 => Ok(Kind::Hello),
        2 => Ok(Kind::ProxyRequest),
        3 => Ok(Kind::ProxyReply),
        4 => Ok(Kind::ReplicaWrite),
        5 => Ok(Kind::ReplicaAck),
        6 => Ok(Kind::Truncate),
        7 => Ok(Kind::TruncateAck),
        8 => Ok(Kind::MigrateBatch),
        9 => Ok(Kind::MigrateAck),
        10 => Ok(Kind::MigrateRecords),
        11 => Ok(Kind::MigrateRecordsAck),
        12 => Ok(Kind::DupRes),
        13 => Ok(Kind::DupResReply),
        14 => Ok(Kind::HelloAck),
        15 => Ok(Kind::Sindex),
        16 => Ok(Kind::SindexAck),
        17 => Ok(Kind::Udf),
        18 => Ok(Kind::UdfAck),
        k => Err(FabricError::Kind(k)),
    }
}

/// Reads one frame; its body grows only as bytes arrive.
async fn read_frame(stream: &mut TcpStream) -> Result<(Kind, Vec<u8>), FabricError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if !(FRAME_HEAD_BYTES..=FABRIC_FRAME_BYTES_MAX).contains(&len) {
        return Err(FabricError::Size(len));
    }
    let mut head = [0u8; FRAME_HEAD_BYTES];
    stream.read_exact(&mut head).await?;
    let kind = parse_head(&head)?;
    let size = len - FRAME_HEAD_BYTES;
    let mut body = Vec::new();
    while body.len() < size {
        let start = body.len();
        body.resize(start + (size - start).min(READ_PIECE_BYTES), 0);
        stream.read_exact(&mut body[start..]).await?;
    }
    check_body(&head, &body)?;
    Ok((kind, body))
}

/// A hello's body: `name_len u8, name, node u64, shard u16` (the receiver's shard the
/// connection is for; `ANY_SHARD`: whichever accepts it).
pub fn hello_body(cluster_name: Option<&str>, node: NodeId, shard: u16) -> Vec<u8> {
    let name = cluster_name.unwrap_or("");
    let mut b = vec![name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&node.0.to_le_bytes());
    b.extend_from_slice(&shard.to_le_bytes());
    b
}

/// Decodes a hello: the peer's cluster name (`None`: null), node id and the shard asked for.
pub fn parse_hello(body: &[u8]) -> Result<(Option<&str>, NodeId, u16), FabricError> {
    let (&len, rest) = body.split_first().ok_or(FabricError::Hello)?;
    let len = usize::from(len);
    if rest.len() != len + 10 || len > crate::config::CLUSTER_NAME_BYTES_MAX {
        return Err(FabricError::Hello);
    }
    let name = std::str::from_utf8(&rest[..len]).map_err(|_| FabricError::Hello)?;
    let id = u64::from_le_bytes(rest[len..len + 8].try_into().expect("8 bytes"));
    let shard = u16::from_le_bytes(rest[len + 8..].try_into().expect("2 bytes"));
    match id {
        0 => Err(FabricError::Hello),
        n => Ok(((!name.is_empty()).then_some(name), NodeId(n), shard)),
    }
}

/// Decodes a hello's answer: the receiver's shard count.
pub fn parse_hello_ack(body: &[u8]) -> Result<u16, FabricError> {
    match body {
        &[a, b] if (1..=PEER_SHARDS_MAX).contains(&u16::from_le_bytes([a, b])) => {
            Ok(u16::from_le_bytes([a, b]))
        }
        _ => Err(FabricError::Hello),
    }
}

/// Accepts fabric connections on this core for the life of the node.
pub fn spawn_listener(core: Rc<Core>, listener: std::net::TcpListener) {
    // SAFETY: the descriptor is a bound, listening socket whose ownership moves here whole.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) };
    glommio::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    glommio::spawn_local(serve_peer(core.clone(), stream)).detach();
                }
                Err(error) => {
                    tracing::warn!(%error, "fabric accept failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .detach();
}

/// Serves one peer's connection: its hello, then proxied requests and replica writes, one at
/// a time.
async fn serve_peer(core: Rc<Core>, mut stream: TcpStream) {
    let from = stream.peer_addr().ok();
    if let Err(error) = serve_peer_frames(&core, &mut stream).await {
        log_closed(&core, from, error);
    }
}

fn log_closed(core: &Core, from: Option<SocketAddr>, error: FabricError) {
    let quiet = matches!(&error, FabricError::Io(e)
        if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::TimedOut));
    let limit = if matches!(error, FabricError::OtherCluster { .. }) {
        &core.node.logs.fabric_other_cluster
    } else {
        &core.node.logs.fabric_refused
    };
    if quiet {
        tracing::debug!(?from, %error, "fabric connection closed");
    } else if let Some(n) = limit.allow() {
        tracing::warn!(?from, %error, suppressed = n, "fabric connection refused or closed");
    }
}

async fn serve_peer_frames(core: &Rc<Core>, stream: &mut TcpStream) -> Result<(), FabricError> {
    let hello = glommio::timer::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), async {
        Ok(read_frame(stream).await)
    })
    .await;
    let (kind, body) = match hello {
        Ok(frame) => frame?,
        Err(_) => return Err(FabricError::Timeout),
    };
    if kind != Kind::Hello {
        return Err(FabricError::Unexpected {
            expected: Kind::Hello,
            got: kind,
        });
    }
    let (name, peer, shard) = parse_hello(&body)?;
    let ours = core.node.config.cluster.cluster_name.as_deref();
    if name != ours {
        return Err(FabricError::OtherCluster {
            theirs: name.unwrap_or("null").into(),
            ours: ours.unwrap_or("null").into(),
        });
    }
    let shards = u16::try_from(core.node.config.cores).expect("core count is bounded at load");
    stream
        .write_all(&frame(Kind::HelloAck, &shards.to_le_bytes()))
        .await?;
    stream
        .set_read_timeout(Some(Duration::from_millis(IDLE_TIMEOUT_MS)))
        .map_err(|e| FabricError::Io(e.into()))?;
    let to = usize::from(shard);
    if shard != ANY_SHARD && to < core.node.config.cores && to != core.shard {
        // The connection belongs to another shard: handed to its core, which serves its
        // frames from now on, so the records they carry never cross cores. Nothing past the
        // hello has been read (the sender waits for the answer before it sends more).
        let fd = crate::node::hand_over(stream).map_err(FabricError::Io)?;
        let work = crate::node::ShardWork::FabricPeer { stream: fd, peer };
        if core.node.inboxes[to].send_async(work).await.is_err() {
            return Err(FabricError::Io(std::io::ErrorKind::BrokenPipe.into()));
        }
        core.node.proxy_stats.handed.fetch_add(1, Relaxed);
        return Ok(());
    }
    serve_frames(core, stream, peer).await
}

/// Serves a handed connection's frames on this core (`ShardWork::FabricPeer`).
pub fn serve_handed(core: Rc<Core>, stream: std::os::fd::OwnedFd, peer: NodeId) {
    let mut stream = crate::node::take_over(stream);
    glommio::spawn_local(async move {
        if let Err(error) = serve_frames(&core, &mut stream, peer).await {
            log_closed(&core, None, error);
        }
    })
    .detach();
}

/// A peer's frames after its hello: proxied requests, replica writes, migration and the
/// rest, one at a time.
async fn serve_frames(
    core: &Rc<Core>,
    stream: &mut TcpStream,
    peer: NodeId,
) -> Result<(), FabricError> {
    loop {
        let (kind, body) = read_frame(stream).await?;
        if kind == Kind::ReplicaWrite {
            // A malformed image closes the connection (`?`); a well-formed one is answered.
            let status = super::replica::receive(core, peer, &body).await?;
            drop(body);
            stream
                .write_all(&frame(Kind::ReplicaAck, &[status as u8]))
                .await?;
            continue;
        }
        if kind == Kind::Truncate {
            // A malformed cut-off closes the connection; a well-formed one is made durable.
            let status = crate::truncate::apply_forwarded(&core.node, &body)?;
            stream
                .write_all(&frame(Kind::TruncateAck, &[status]))
                .await?;
            continue;
        }
        if kind == Kind::Udf {
            // A malformed change closes the connection; a well-formed one is merged.
            let status =
                crate::udf::apply_forwarded(&core.node, &body).map_err(FabricError::Udf)?;
            stream.write_all(&frame(Kind::UdfAck, &[status])).await?;
            continue;
        }
        if kind == Kind::Sindex {
            // A malformed catalog closes the connection; a well-formed one is merged.
            let status =
                crate::sindex::apply_forwarded(&core.node, &body).map_err(FabricError::Sindex)?;
            stream.write_all(&frame(Kind::SindexAck, &[status])).await?;
            continue;
        }
        if kind == Kind::MigrateBatch {
            // A malformed batch closes the connection; a well-formed one goes to core 0's
            // migration task (waiting here while its inbox is full: back-pressure).
            let batch = apogee_cluster::migrate::wire::decode_batch(&body)?;
            drop(body);
            super::migration::deliver(&core.node, peer, batch).await;
            stream.write_all(&frame(Kind::MigrateAck, &[])).await?;
            continue;
        }
        if kind == Kind::DupRes {
            let answer = super::dup_res::serve(core, &body).await?;
            drop(body);
            stream.write_all(&frame(Kind::DupResReply, &answer)).await?;
            continue;
        }
        if kind == Kind::MigrateRecords {
            let status = super::migration::stream::receive(core, peer, &body).await?;
            drop(body);
            stream
                .write_all(&frame(Kind::MigrateRecordsAck, &[status as u8]))
                .await?;
            continue;
        }
        if kind != Kind::ProxyRequest {
            return Err(FabricError::Unexpected {
                expected: Kind::ProxyRequest,
                got: kind,
            });
        }
        let msg = Message::decode(&body).map_err(|e| FabricError::Request(e.to_string()))?;
        if crate::batch::is_batch(&msg) || msg.field(apogee_wire::FieldType::DIGEST).is_none() {
            return Err(FabricError::Request("not a keyed request".into()));
        }
        drop(body);
        core.node.proxy_stats.received.fetch_add(1, Relaxed);
        let reply =
            crate::dispatch::guarded(crate::dispatch::keyed::serve_proxied(core, msg)).await;
        stream.write_all(&frame(Kind::ProxyReply, &reply)).await?;
    }
}

/// Requests one core has in flight to one peer at once, each on its own connection: more wait
/// for one to finish (within their own deadline), so a burst of writes cannot open a
/// connection each.
const REQUESTS_IN_FLIGHT_PER_PEER_MAX: u64 = 64;

thread_local! {
    /// This core's idle connections to each peer's fabric, by the peer's shard they were
    /// opened for (one executor per thread, so this is per core and needs no lock).
    static POOL: RefCell<HashMap<(SocketAddr, u16), Vec<TcpStream>>> =
        RefCell::new(HashMap::new());
    /// Each peer's shard count, as its hello answers said.
    static PEER_SHARDS: RefCell<HashMap<SocketAddr, u16>> = RefCell::new(HashMap::new());
    /// This core's permits for requests in flight to each peer.
    static IN_FLIGHT: RefCell<HashMap<SocketAddr, Rc<Semaphore>>> = RefCell::new(HashMap::new());
}

/// Forwards `msg` (a request for `partition`) to `master` and returns its reply frame; on any
/// failure, a result-11 reply (the client refreshes its map and retries).
pub async fn proxy(core: &Core, master: NodeId, partition: u16, msg: &Message) -> Vec<u8> {
    let stats = &core.node.proxy_stats;
    let Some(addr) = core.node.cluster.load().fabric_of(master) else {
        if let Some(n) = core.node.logs.partition_unavailable.allow() {
            tracing::info!(partition, master = %format!("{:X}", master.0), suppressed = n,
                "answered 11: the partition's master has no known fabric address to proxy to");
        }
        stats.error.fetch_add(1, Relaxed);
        return Reply::code(ResultCode::PartitionUnavailable).into_frame();
    };
    let request = frame(Kind::ProxyRequest, &msg.encode());
    let deadline = Duration::from_millis(PROXY_REPLY_TIMEOUT_MS);
    match request_reply(
        &core.node,
        addr,
        Some(partition),
        &request,
        Kind::ProxyReply,
        deadline,
    )
    .await
    {
        Ok(reply) => {
            stats.complete.fetch_add(1, Relaxed);
            reply
        }
        Err(error) => {
            if let Some(n) = core.node.logs.proxy_failed.allow() {
                tracing::warn!(%addr, master = %format!("{:X}", master.0), %error,
                    suppressed = n, "proxy to the partition's master failed; answered 11");
            }
            stats.error.fetch_add(1, Relaxed);
            Reply::code(ResultCode::PartitionUnavailable).into_frame()
        }
    }
}

/// Sends a replica-write frame (`replica::replicate` builds it) to `to` and returns the
/// replica's answer, within `REPLICA_ACK_TIMEOUT_MS`.
pub async fn replica_write(
    node: &Node,
    to: NodeId,
    partition: u16,
    request: &[u8],
) -> Result<super::replica::ReplicaStatus, FabricError> {
    let addr = node
        .cluster
        .load()
        .fabric_of(to)
        .ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(super::replica::REPLICA_ACK_TIMEOUT_MS);
    let at = Some(partition);
    let body = request_reply(node, addr, at, request, Kind::ReplicaAck, deadline).await?;
    match body[..] {
        [b] => super::replica::ReplicaStatus::from_byte(b).ok_or(FabricError::Ack(1)),
        _ => Err(FabricError::Ack(body.len())),
    }
}

/// Asks merge source `from` for its version of `digest` (`request`: a `DupRes` frame built by
/// `dup_res::resolve`), within `DUP_RES_REPLY_TIMEOUT_MS`.
pub async fn dup_res(
    node: &Node,
    from: NodeId,
    request: &[u8],
    digest: &apogee_wire::Digest,
) -> Result<Result<Option<apogee_engine::Record>, super::dup_res::Found>, FabricError> {
    let addr = (node.cluster.load().fabric_of(from)).ok_or(FabricError::NoPeer(from.0))?;
    let deadline = Duration::from_millis(super::dup_res::DUP_RES_REPLY_TIMEOUT_MS);
    let at = Some(digest.partition().0);
    let body = request_reply(node, addr, at, request, Kind::DupResReply, deadline).await?;
    Ok(super::dup_res::decode_answer(&body, digest)?)
}

/// Sends a truncate cut-off (`truncate::encode_cut_off`) to member `to`; `Ok` once it is
/// durable there.
pub async fn truncate_at(node: &Node, to: NodeId, body: &[u8]) -> Result<(), FabricError> {
    let addr = node
        .cluster
        .load()
        .fabric_of(to)
        .ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(TRUNCATE_ACK_TIMEOUT_MS);
    let request = frame(Kind::Truncate, body);
    match request_reply(node, addr, None, &request, Kind::TruncateAck, deadline).await?[..] {
        [0] => Ok(()),
        [_] => Err(FabricError::Truncate),
        ref other => Err(FabricError::Ack(other.len())),
    }
}

/// Sends a namespace's index catalog (`sindex::encode`) to member `to`; `Ok` once it is
/// durable there.
pub async fn sindex_at(node: &Node, to: NodeId, body: &[u8]) -> Result<(), FabricError> {
    let addr = (node.cluster.load().fabric_of(to)).ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(TRUNCATE_ACK_TIMEOUT_MS);
    let request = frame(Kind::Sindex, body);
    match request_reply(node, addr, None, &request, Kind::SindexAck, deadline).await?[..] {
        [0] => Ok(()),
        [_] => Err(FabricError::SindexNotDurable),
        ref other => Err(FabricError::Ack(other.len())),
    }
}

/// Sends a UDF module change (`udf::Change::encode`) to member `to`; `Ok` once it is durable
/// there.
pub async fn udf_at(node: &Node, to: NodeId, body: &[u8]) -> Result<(), FabricError> {
    let addr = (node.cluster.load().fabric_of(to)).ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(TRUNCATE_ACK_TIMEOUT_MS);
    let request = frame(Kind::Udf, body);
    match request_reply(node, addr, None, &request, Kind::UdfAck, deadline).await?[..] {
        [0] => Ok(()),
        [_] => Err(FabricError::UdfNotDurable),
        ref other => Err(FabricError::Ack(other.len())),
    }
}

/// How long a member may take to make a forwarded cut-off durable (two fsyncs).
const TRUNCATE_ACK_TIMEOUT_MS: u64 = 5_000;

/// How long a peer may take to take a migration batch (its migration task's inbox is full
/// only for a moment).
const MIGRATE_ACK_TIMEOUT_MS: u64 = 5_000;
/// How long a peer may take to store one chunk of migrating records (about 1 MiB, written
/// durably there).
const MIGRATE_RECORDS_ACK_TIMEOUT_MS: u64 = 10_000;

/// Sends a batch of migration messages (`wire::encode_batch`) to member `to`.
pub async fn migrate_batch(node: &Node, to: NodeId, body: &[u8]) -> Result<(), FabricError> {
    let addr = (node.cluster.load().fabric_of(to)).ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(MIGRATE_ACK_TIMEOUT_MS);
    let request = frame(Kind::MigrateBatch, body);
    match request_reply(node, addr, None, &request, Kind::MigrateAck, deadline).await?[..] {
        [] => Ok(()),
        ref other => Err(FabricError::Ack(other.len())),
    }
}

/// Sends one chunk of migrating records (`migration::stream::encode_chunk`) to member `to`
/// and returns its status byte.
pub async fn migrate_records(
    node: &Node,
    to: NodeId,
    partition: u16,
    body: &[u8],
) -> Result<u8, FabricError> {
    let addr = (node.cluster.load().fabric_of(to)).ok_or(FabricError::NoPeer(to.0))?;
    let deadline = Duration::from_millis(MIGRATE_RECORDS_ACK_TIMEOUT_MS);
    let request = frame(Kind::MigrateRecords, body);
    let at = Some(partition);
    match request_reply(node, addr, at, &request, Kind::MigrateRecordsAck, deadline).await?[..] {
        [b] => Ok(b),
        ref other => Err(FabricError::Ack(other.len())),
    }
}

/// One request and its reply on a pooled connection to `addr` (a fresh one when none is
/// idle), the connection pooled again afterwards.
/// The shard of the peer at `addr` that owns `partition` (`ANY_SHARD` for messages of no
/// partition, and before this core has heard the peer's shard count).
fn peer_shard(addr: SocketAddr, partition: Option<u16>) -> u16 {
    let (Some(p), Some(shards)) = (
        partition,
        PEER_SHARDS.with(|m| m.borrow().get(&addr).copied()),
    ) else {
        return ANY_SHARD;
    };
    u16::try_from(apogee_engine::placement::home_shard(p, u32::from(shards)))
        .expect("a shard below the peer's count")
}

async fn request_reply(
    node: &Node,
    addr: SocketAddr,
    partition: Option<u16>,
    request: &[u8],
    reply_kind: Kind,
    deadline: Duration,
) -> Result<Vec<u8>, FabricError> {
    let shard = peer_shard(addr, partition);
    let permits = IN_FLIGHT.with(|m| {
        (m.borrow_mut().entry(addr))
            .or_insert_with(|| Rc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_PEER_MAX)))
            .clone()
    });
    let _permit = glommio::timer::timeout(deadline, permits.acquire_permit(1))
        .await
        .map_err(|_| FabricError::Timeout)?;
    let fresh = || async {
        let stream = connect(node, addr, shard).await?;
        exchange(stream, request, reply_kind, deadline).await
    };
    let pooled = POOL.with(|p| p.borrow_mut().get_mut(&(addr, shard)).and_then(Vec::pop));
    let (stream, reply) = match pooled {
        // A pooled connection may have been closed by the peer while idle: then once more
        // on a fresh one (not after a timeout: the peer is slow, not gone).
        Some(stream) => match exchange(stream, request, reply_kind, deadline).await {
            Err(FabricError::Timeout) => Err(FabricError::Timeout),
            Err(_) => fresh().await,
            ok => ok,
        },
        None => fresh().await,
    }?;
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let idle = p.entry((addr, shard)).or_default();
        if idle.len() < POOLED_PER_PEER_MAX {
            idle.push(stream);
        }
    });
    Ok(reply)
}

/// A new connection to `addr` for its shard `shard`: the hello sent and its answer read
/// (the peer's shard count, remembered for the next connections).
async fn connect(node: &Node, addr: SocketAddr, shard: u16) -> Result<TcpStream, FabricError> {
    let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| FabricError::Io(e.into()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| FabricError::Io(e.into()))?;
    let hello = hello_body(node.config.cluster.cluster_name.as_deref(), node.id, shard);
    let request = frame(Kind::Hello, &hello);
    let (stream, answer) = exchange(stream, &request, Kind::HelloAck, timeout).await?;
    let shards = parse_hello_ack(&answer)?;
    PEER_SHARDS.with(|m| m.borrow_mut().insert(addr, shards));
    Ok(stream)
}

/// Sends one request and reads its reply (of kind `reply_kind`), within `deadline`.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
    reply_kind: Kind,
    deadline: Duration,
) -> Result<(TcpStream, Vec<u8>), FabricError> {
    let outcome = glommio::timer::timeout(deadline, async {
        let r = async {
            stream.write_all(request).await?;
            let (kind, body) = read_frame(&mut stream).await?;
            if kind != reply_kind {
                return Err(FabricError::Unexpected {
                    expected: reply_kind,
                    got: kind,
                });
            }
            Ok(body)
        }
        .await;
        Ok(r)
    })
    .await;
    match outcome {
        Ok(Ok(body)) => Ok((stream, body)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FabricError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_hellos_are_checked() {
        let f = frame(Kind::ProxyRequest, &[1, 2, 3]);
        assert_eq!(
            u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        let head: [u8; FRAME_HEAD_BYTES] = f[4..14].try_into().unwrap();
        assert_eq!(parse_head(&head).unwrap(), Kind::ProxyRequest);
        check_body(&head, &f[14..]).unwrap();
        // Any flipped bit of the kind, the checksum or the body is caught.
        for byte in 5..FRAME_HEAD_BYTES + 3 {
            for bit in 0..8 {
                let mut g = f.clone();
                g[4 + byte] ^= 1 << bit;
                let head: [u8; FRAME_HEAD_BYTES] = g[4..14].try_into().unwrap();
                assert!(
                    matches!(
                        check_body(&head, &g[14..]),
                        Err(FabricError::Checksum { .. })
                    ),
                    "flipped bit {bit} of byte {byte} passed"
                );
            }
        }
        let mut bad = head;
        bad[0] = b'X';
        assert!(matches!(parse_head(&bad), Err(FabricError::Magic)));
        let mut bad = head;
        bad[4] = 1;
        assert!(matches!(parse_head(&bad), Err(FabricError::Version(1))));
        let mut bad = head;
        bad[5] = 19;
        assert!(matches!(parse_head(&bad), Err(FabricError::Kind(19))));

        let h = hello_body(Some("dev"), NodeId(0xA1), 1);
        assert_eq!(parse_hello(&h).unwrap(), (Some("dev"), NodeId(0xA1), 1));
        assert_eq!(
            parse_hello(&hello_body(None, NodeId(7), ANY_SHARD)).unwrap(),
            (None, NodeId(7), ANY_SHARD)
        );
        for cut in 0..h.len() {
            assert!(parse_hello(&h[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = h.clone();
        long.push(0);
        assert!(parse_hello(&long).is_err());
        assert!(parse_hello(&hello_body(Some("dev"), NodeId(0), 0)).is_err());
        assert_eq!(parse_hello_ack(&2u16.to_le_bytes()).unwrap(), 2);
        for bad in [&[][..], &[2], &[0, 0], &[1, 0, 0], &[0xFF, 0xFF]] {
            assert!(parse_hello_ack(bad).is_err(), "{bad:?}");
        }
    }
}
