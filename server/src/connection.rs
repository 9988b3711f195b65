//! One client connection: reads frames, hands each to the dispatch pipeline, and closes the connection on malformed
//! framing, on a request that stalls mid-frame, on idleness past `proto-fd-idle-ms` and when
//! its core's partial-frame budget is spent (each with a rate-limited log line), while the
//! node keeps serving everyone else.
//!
//! Owns the per-connection read path. A request is read with one receive of up to
//! [`FRAME_FIRST_READ_BYTES`] (header and, usually, the whole body), so a waiting connection
//! holds that much; larger bodies grow against the core's partial-frame budget. It must never
//! trust a size from the wire to allocate memory up front, and never panic on any byte
//! sequence.

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

/// Reads one request: its header (waiting at most `proto-fd-idle-ms` when that is set) and
/// its body (closing the connection if it stalls). The header's read asks for up to
/// [`FRAME_FIRST_READ_BYTES`], so a request that arrived whole costs one receive, not two;
/// bytes past it (a client that sent its next request at once) wait in `pending`, which holds
/// less than [`FRAME_FIRST_READ_BYTES`].
async fn read_request(
    stream: &mut TcpStream,
    core: &Core,
    pending: &mut Vec<u8>,
) -> Result<(ProtoHeader, Vec<u8>), ReadError> {
    let idle_ms = core.node.config.proto_fd_idle_ms;
    let _ = stream.set_read_timeout((idle_ms > 0).then(|| Duration::from_millis(idle_ms)));
    let mut buf = std::mem::take(pending);
    let mut filled = buf.len();
    debug_assert!(filled < FRAME_FIRST_READ_BYTES);
    buf.resize(FRAME_FIRST_READ_BYTES, 0);
    while filled < PROTO_HEADER_BYTES {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => return Err(ReadError::Gone(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if timed_out(&e) => return Err(ReadError::Idle),
            Err(e) => return Err(ReadError::Gone(e)),
        }
    }
    let head: [u8; PROTO_HEADER_BYTES] = buf[..PROTO_HEADER_BYTES].try_into().expect("8 bytes");
    let header = ProtoHeader::decode(&head).map_err(ReadError::BadHeader)?;
    let size = header.body_bytes as usize;
    let end = PROTO_HEADER_BYTES + size;
    if filled >= end {
        // The whole request is here: its body is the buffer, less the header.
        *pending = buf[end..filled].to_vec();
        buf.truncate(end);
        buf.drain(..PROTO_HEADER_BYTES);
        return Ok((header, buf));
    }
    buf.truncate(filled);
    buf.drain(..PROTO_HEADER_BYTES);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(FRAME_STALL_MS)));
    let body = read_body(stream, buf, size, &core.frame_budget).await?;
    Ok((header, body))
}

/// Serves one admitted connection until its client closes it, it breaks the protocol, or a
/// limit closes it.
pub async fn serve(core: Rc<Core>, mut stream: TcpStream, _admitted: OpenConnection) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    let logs = &core.logs;
    let mut pending = Vec::new();
    loop {
        let (header, body) = match read_request(&mut stream, &core, &mut pending).await {
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
        let request = match dispatch::classify(&header, body) {
            Ok(request) => request,
            Err(e) => {
                if let Some(n) = logs.bad_message.allow() {
                    tracing::warn!(%peer, error = %e, connections = n, "closing connection: malformed message");
                }
                return;
            }
        };
        if let Err(e) = dispatch::serve(&core, request, &mut ReplySink::new(&mut stream)).await {
            tracing::debug!(%peer, error = %e, "connection write failed");
            return;
        }
    }
}
