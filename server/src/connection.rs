//! One client connection: reads frames, answers each, and closes the connection on malformed
//! framing (with a log line) while the node keeps serving everyone else.
//!
//! Owns the per-connection read limits. It must never trust a size from the wire to allocate
//! memory up front, and never panic on any byte sequence.

use std::rc::Rc;

use apogee_wire::compression::{deflate_frame, inflate_message, COMPRESS_REPLY_BYTES_MIN};
use apogee_wire::msg::info1;
use apogee_wire::msg::Message;
use apogee_wire::proto::{frame, ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::{MsgType, ResultCode};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::core::Core;
use crate::info;

/// The body buffer grows by at most this much per read, so a header announcing 128 MiB costs
/// nothing until the bytes actually arrive.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

async fn read_body(stream: &mut TcpStream, size: usize) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(size.min(BODY_CHUNK_BYTES));
    while body.len() < size {
        let start = body.len();
        let end = size.min(start + BODY_CHUNK_BYTES);
        body.resize(end, 0);
        stream.read_exact(&mut body[start..end]).await?;
    }
    Ok(body)
}

/// The admin (type 2) reply of a server without security: result 52 "security not enabled",
/// after which the clients carry on without authenticating (spec §10, A.11).
/// Runs a command; a panic inside it becomes a server-error reply (result 1) and a log line
/// instead of taking the core, and with it the node, down. Every decoder is total and fuzzed:
/// this is the last line of defence, not the error path.
pub async fn guarded(command: impl std::future::Future<Output = Vec<u8>>) -> Vec<u8> {
    use futures_lite::FutureExt;
    match std::panic::AssertUnwindSafe(command).catch_unwind().await {
        Ok(reply) => reply,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "a command panicked; answered with a server error");
            crate::command::Reply::code(apogee_wire::ResultCode::ServerError).into_frame()
        }
    }
}

/// A reply frame, compressed (type 4) when the client asked for it and it is worth it.
/// Aerospike CE never compresses replies; both clients accept either (spec §1.5).
fn compress_if(asked: bool, reply: Vec<u8>) -> Vec<u8> {
    if asked && reply.len() > COMPRESS_REPLY_BYTES_MIN {
        deflate_frame(&reply)
    } else {
        reply
    }
}

fn admin_reply() -> Vec<u8> {
    let mut body = [0u8; 16];
    body[1] = ResultCode::SecurityNotEnabled as u8;
    frame(MsgType::Admin, &body)
}

pub async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    let _ = stream.set_nodelay(true);
    loop {
        let mut head = [0u8; PROTO_HEADER_BYTES];
        if let Err(e) = stream.read_exact(&mut head).await {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(%peer, error = %e, "connection read failed");
            }
            return;
        }
        let header = match ProtoHeader::decode(&head) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: malformed frame header");
                return;
            }
        };
        let body = match read_body(&mut stream, header.body_bytes as usize).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%peer, error = %e, size = header.body_bytes, "closing connection: frame body cut short");
                return;
            }
        };
        let reply = match header.msg_type {
            MsgType::Info => frame(MsgType::Info, info::answer(&core.node, &body).as_bytes()),
            MsgType::Admin => admin_reply(),
            MsgType::Message => match Message::decode(&body) {
                Ok(msg) => {
                    let compress = msg.header.info1 & info1::COMPRESS_RESPONSE != 0;
                    compress_if(compress, guarded(core.handle(msg)).await)
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection: malformed message");
                    return;
                }
            },
            MsgType::Compressed => match inflate_message(&body).and_then(|b| Message::decode(&b)) {
                Ok(msg) => {
                    let compress = msg.header.info1 & info1::COMPRESS_RESPONSE != 0;
                    compress_if(compress, guarded(core.handle(msg)).await)
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection: malformed compressed message");
                    return;
                }
            },
        };
        if let Err(e) = stream.write_all(&reply).await {
            tracing::debug!(%peer, error = %e, "connection write failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_command_answers_server_error() {
        let reply = futures_lite::future::block_on(guarded(async { panic!("boom") }));
        let msg = apogee_wire::Message::decode(&reply[8..]).unwrap();
        assert_eq!(msg.header.result_code, 1);
        let fine = futures_lite::future::block_on(guarded(async { vec![7u8] }));
        assert_eq!(fine, [7]);
    }
}
