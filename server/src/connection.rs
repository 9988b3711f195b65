//! One client connection: reads frames, hands each to the dispatch pipeline, and closes the connection on malformed
//! framing, on a request that stalls mid-frame, on idleness past `proto-fd-idle-ms` and when
//! its core's partial-frame budget is spent (each with a rate-limited log line), while the
//! node keeps serving everyone else.
//!
//! Owns the per-connection read path. A request is read with one receive of up to
//! [`FRAME_FIRST_READ_BYTES`] (header and, usually, the whole body) into the connection's own
//! buffer, of that size, and decoded where it lies (no allocation per request); larger bodies
//! grow against the core's partial-frame budget. It must never
//! trust a size from the wire to allocate memory up front, and never panic on any byte
//! sequence.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use apogee_wire::proto::{ProtoHeader, PROTO_HEADER_BYTES};
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::admission::{
    Closed, FrameBudget, OpenConnection, OverBudget, FRAME_FIRST_READ_BYTES, FRAME_STALL_MS,
    PARTIAL_FRAME_BYTES_MAX_PER_CORE,
};
use crate::core::Core;
use crate::dispatch::sink::Elsewhere;
use crate::dispatch::{self, ReplySink};

/// Why reading a request stopped.
enum ReadError {
    /// The client closed or the socket failed: nothing to log above debug.
    Gone(std::io::Error),
    /// No request within `proto-fd-idle-ms`.
    Idle,
    /// A proto header that is not version 2, of an unknown type or over the size limit.
    BadHeader(apogee_wire::DecodeError),
    /// The client closed mid-body.
    CutShort { received: usize, size: usize },
    /// A body made no progress for [`FRAME_STALL_MS`].
    Stalled { received: usize, size: usize },
    /// The core's partial-frame budget could not hold more of this body.
    OverBudget(OverBudget, usize),
}

fn timed_out(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
}

/// Reads the rest of a body of `size` bytes after the `body` bytes that came with its header,
/// making room only as bytes arrive: the first read gets up to [`FRAME_FIRST_READ_BYTES`], and
/// every later growth, at most doubling what has arrived, is taken from the core's
/// partial-frame budget until the body is complete.
async fn read_body(
    stream: &mut TcpStream,
    mut body: Vec<u8>,
    size: usize,
    budget: &FrameBudget,
) -> Result<Vec<u8>, ReadError> {
    let mut claim = budget.claim();
    let mut filled = body.len();
    debug_assert!(filled < size && filled <= FRAME_FIRST_READ_BYTES);
    body.resize(size.min(FRAME_FIRST_READ_BYTES), 0);
    while filled < size {
        if filled == body.len() {
            let more = filled.min(size - filled);
            claim
                .grow(more)
                .map_err(|e| ReadError::OverBudget(e, size))?;
            body.resize(filled + more, 0);
        }
        match stream.read(&mut body[filled..]).await {
            Ok(0) => {
                return Err(ReadError::CutShort {
                    received: filled,
                    size,
                })
            }
            Ok(n) => filled += n,
            Err(e) if timed_out(&e) => {
                return Err(ReadError::Stalled {
                    received: filled,
                    size,
                })
            }
            Err(e) => return Err(ReadError::Gone(e)),
        }
    }
    debug_assert_eq!(body.len(), size);
    Ok(body)
}

/// A connection's receive buffer, [`FRAME_FIRST_READ_BYTES`] long for the connection's life:
/// `bytes[start..filled]` were received and not yet taken as a request (a client that sent its
/// next request at once).
struct RecvBuf {
    bytes: Vec<u8>,
    start: usize,
    filled: usize,
}

impl RecvBuf {
    fn new() -> RecvBuf {
        RecvBuf {
            bytes: vec![0; FRAME_FIRST_READ_BYTES],
            start: 0,
            filled: 0,
        }
    }

    /// Moves what is left of the last receive to the front, making room for the next.
    fn compact(&mut self) {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        debug_assert!(self.filled < FRAME_FIRST_READ_BYTES);
    }
}

/// Where a request's body is.
enum Body {
    /// `bytes[from..to]` of the connection's buffer: the request arrived whole.
    InBuffer { from: usize, to: usize },
    /// Read into its own buffer: it did not arrive with its header's receive.
    Owned(Vec<u8>),
}

/// Reads one request: its header (waiting at most `proto-fd-idle-ms` when that is set) and
/// its body (closing the connection if it stalls). The header's read asks for up to
/// [`FRAME_FIRST_READ_BYTES`], so a request that arrived whole costs one receive, not two, and
/// stays in `buf`; bytes past it wait there for the next request.
async fn read_request(
    stream: &mut TcpStream,
    core: &Core,
    buf: &mut RecvBuf,
) -> Result<(ProtoHeader, Body), ReadError> {
    let idle_ms = core.node.config.proto_fd_idle_ms;
    let _ = stream.set_read_timeout((idle_ms > 0).then(|| Duration::from_millis(idle_ms)));
    buf.compact();
    while buf.filled < PROTO_HEADER_BYTES {
        match stream.read(&mut buf.bytes[buf.filled..]).await {
            Ok(0) => return Err(ReadError::Gone(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => buf.filled += n,
            Err(e) if timed_out(&e) => return Err(ReadError::Idle),
            Err(e) => return Err(ReadError::Gone(e)),
        }
    }
    let head: [u8; PROTO_HEADER_BYTES] =
        buf.bytes[..PROTO_HEADER_BYTES].try_into().expect("8 bytes");
    let header = ProtoHeader::decode(&head).map_err(ReadError::BadHeader)?;
    let size = header.body_bytes as usize;
    let end = PROTO_HEADER_BYTES + size;
    if buf.filled >= end {
        // The whole request is here: decoded where it lies.
        buf.start = end;
        let body = Body::InBuffer {
            from: PROTO_HEADER_BYTES,
            to: end,
        };
        return Ok((header, body));
    }
    let body = buf.bytes[PROTO_HEADER_BYTES..buf.filled].to_vec();
    buf.start = buf.filled;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(FRAME_STALL_MS)));
    let body = read_body(stream, body, size, &core.frame_budget).await?;
    Ok((header, Body::Owned(body)))
}

/// Serves one admitted connection until its client closes it, it breaks the protocol, or a
/// limit closes it.
/// `_serving` counts it on its core (`steering`) for as long as it lives.
pub async fn serve(
    core: Rc<Core>,
    mut stream: TcpStream,
    _admitted: OpenConnection,
    _serving: crate::steering::Serving,
) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    // With several cores, the core that owns a request's record writes its reply itself.
    let mut elsewhere = Elsewhere {
        socket: (core.node.config.cores > 1).then(|| stream.as_raw_fd()),
        pending: None,
    };
    serve_requests(&core, &mut stream, &peer, &mut elsewhere).await;
    // Another core may still be writing a reply to this socket: it stays open (its number
    // not reused) until that write is done.
    let _ = elsewhere.settle().await;
}

/// The request loop of [`serve`]: returns when the connection is to close.
async fn serve_requests(
    core: &Rc<Core>,
    stream: &mut TcpStream,
    peer: &str,
    elsewhere: &mut Elsewhere,
) {
    let logs = &core.logs;
    let mut buf = RecvBuf::new();
    loop {
        let (header, body) = match read_request(stream, core, &mut buf).await {
            Ok(request) => request,
            Err(ReadError::BadHeader(e)) => {
                if let Some(n) = logs.bad_header.allow() {
                    tracing::warn!(%peer, error = %e, connections = n, "closing connection: malformed frame header");
                }
                return;
            }
            Err(ReadError::Gone(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "connection read failed");
                }
                return;
            }
            Err(ReadError::CutShort { received, size }) => {
                if let Some(n) = logs.frame_cut_short.allow() {
                    tracing::warn!(%peer, received, size, connections = n, "closing connection: frame body cut short");
                }
                return;
            }
            // A reply another core is still writing: the connection is not idle. Once it is
            // written, the idle wait starts again (bytes already read stay in `buf`).
            Err(ReadError::Idle) if elsewhere.pending.is_some() => {
                if elsewhere.settle().await.is_err() {
                    return;
                }
                continue;
            }
            Err(ReadError::Idle) => {
                core.node.connections.count_closed_by(Closed::IdleReaped);
                if let Some(n) = logs.idle_reaped.allow() {
                    tracing::info!(%peer, proto_fd_idle_ms = core.node.config.proto_fd_idle_ms, connections = n, "closing idle connection (proto-fd-idle-ms)");
                }
                return;
            }
            Err(ReadError::Stalled { received, size }) => {
                core.node.connections.count_closed_by(Closed::Stalled);
                if let Some(n) = logs.frame_stalled.allow() {
                    tracing::warn!(%peer, received, size, stall_ms = FRAME_STALL_MS, connections = n, "closing connection: its request stopped arriving mid-frame");
                }
                return;
            }
            Err(ReadError::OverBudget(e, size)) => {
                core.node.connections.count_closed_by(Closed::OverBudget);
                if let Some(n) = logs.frame_budget.allow() {
                    tracing::warn!(%peer, size, held_bytes = e.held_bytes, wanted_bytes = e.wanted_bytes,
                        limit_bytes = PARTIAL_FRAME_BYTES_MAX_PER_CORE, connections = n,
                        "closing connection: this core's partly received requests would exceed the partial-frame limit");
                }
                return;
            }
        };
        let body = match &body {
            Body::InBuffer { from, to } => &buf.bytes[*from..*to],
            Body::Owned(body) => body.as_slice(),
        };
        let request = match dispatch::classify(&header, body) {
            Ok(request) => request,
            Err(e) => {
                if let Some(n) = logs.bad_message.allow() {
                    tracing::warn!(%peer, error = %e, connections = n, "closing connection: malformed message");
                }
                return;
            }
        };
        let mut sink = ReplySink::new(stream, elsewhere);
        if let Err(e) = dispatch::serve(core, request, &mut sink).await {
            tracing::debug!(%peer, error = %e, "connection write failed");
            return;
        }
    }
}
