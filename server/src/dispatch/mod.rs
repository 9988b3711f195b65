//! The dispatch pipeline: every request a connection reads is classified once (info, admin,
//! one record, a batch, a scan or query), routed (this core, the core owning its record, a
//! fan-out over every core; later another node), and answered through a [`ReplySink`] that
//! streams frames with back-pressure.
//!
//! Owns the decision of which path serves a request; each path lives in its own module
//! (`keyed`, `crate::batch`, `crate::info`). It must never run a command itself, and never
//! let a panic inside a command take the core down.

pub mod direct;
pub mod keyed;
pub mod sink;

use std::rc::Rc;

use apogee_wire::compression::inflate_message;
use apogee_wire::msg::{info1, Message};
use apogee_wire::proto::{frame, ProtoHeader};
use apogee_wire::{FieldType, MsgType, ResultCode};

use crate::batch;
use crate::core::Core;
use crate::info;
pub use sink::ReplySink;

/// One request, classified.
pub enum Request {
    /// Info commands (type 1): the body's text.
    Info(Vec<u8>),
    /// Admin (type 2): security commands, of a server without security.
    Admin,
    /// One record, named by its digest.
    Keyed(Message),
    /// Many records named by their keys (field 41).
    Batch(Message),
    /// A whole namespace or set, or an index: a message that names no record.
    Scan(Message),
}

/// Why a request could not be classified; the connection is closed after it.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("malformed message: {0}")]
    Message(apogee_wire::DecodeError),
    #[error("malformed compressed message: {0}")]
    Compressed(apogee_wire::DecodeError),
}

/// Classifies a request from its frame: decoding (and inflating) a message once. The request
/// owns what it needs, so the body's buffer is free again afterwards.
pub fn classify(header: &ProtoHeader, body: &[u8]) -> Result<Request, ClassifyError> {
    let msg = match header.msg_type {
        MsgType::Info => return Ok(Request::Info(body.to_vec())),
        MsgType::Admin => return Ok(Request::Admin),
        MsgType::Message => Message::decode(body).map_err(ClassifyError::Message)?,
        MsgType::Compressed => inflate_message(body)
            .and_then(|b| Message::decode(&b))
            .map_err(ClassifyError::Compressed)?,
    };
    Ok(if batch::is_batch(&msg) {
        Request::Batch(msg)
    } else if msg.field(FieldType::DIGEST).is_none() {
        Request::Scan(msg)
    } else {
        Request::Keyed(msg)
    })
}

/// Answers one request through `sink`. `Err` only when writing to the client failed: the
/// connection is then closed.
pub async fn serve(
    core: &Rc<Core>,
    request: Request,
    sink: &mut ReplySink<'_>,
) -> std::io::Result<()> {
    // A reply another core is writing goes first: replies keep the requests' order.
    sink.settle().await?;
    match request {
        Request::Info(body) => {
            sink.begin(false);
            let answer = info::answer(&core.node, &body);
            drop(body);
            sink.reply(frame(MsgType::Info, answer.as_bytes())).await
        }
        Request::Admin => {
            sink.begin(false);
            sink.reply(admin_reply()).await
        }
        Request::Keyed(msg) => {
            sink.begin(msg.header.info1 & info1::COMPRESS_RESPONSE != 0);
            let answer = guarded(keyed::serve(core, msg, sink.direct())).await;
            match answer {
                keyed::Answer::Reply(reply) => sink.reply(reply).await,
                keyed::Answer::Written(note) => {
                    sink.written_elsewhere(note);
                    Ok(())
                }
            }
        }
        Request::Batch(msg) => {
            sink.begin(false);
            batch::serve(core, msg, sink).await
        }
        Request::Scan(msg) => {
            sink.begin(false);
            crate::scan::serve(core, msg, sink).await
        }
    }
}

/// The admin (type 2) reply of a server without security: result 52 "security not enabled",
/// after which the clients carry on without authenticating (spec §10, A.11).
fn admin_reply() -> Vec<u8> {
    let mut body = [0u8; 16];
    body[1] = ResultCode::SecurityNotEnabled as u8;
    frame(MsgType::Admin, &body)
}

/// Runs a command; a panic inside it becomes a server-error reply (result 1) and a log line
/// instead of taking the core, and with it the node, down. Every decoder is total and fuzzed:
/// this is the last line of defence, not the error path. `T` is a reply frame, or anything a
/// reply frame can stand for (a keyed command's [`keyed::Answer`]).
pub async fn guarded<T: From<Vec<u8>>>(command: impl std::future::Future<Output = T>) -> T {
    use futures_lite::FutureExt;
    match std::panic::AssertUnwindSafe(command).catch_unwind().await {
        Ok(reply) => reply,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(panic = %what, "a command panicked; answered with a server error");
            crate::command::Reply::code(ResultCode::ServerError)
                .into_frame()
                .into()
        }
    }
}

/// The message a panic carried, for the log.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_command_answers_server_error() {
        let reply: Vec<u8> = futures_lite::future::block_on(guarded(async { panic!("boom") }));
        let msg = apogee_wire::Message::decode(&reply[8..]).unwrap();
        assert_eq!(msg.header.result_code, 1);
        let fine = futures_lite::future::block_on(guarded(async { vec![7u8] }));
        assert_eq!(fine, [7]);
    }

    fn header(msg_type: MsgType, body: &[u8]) -> ProtoHeader {
        ProtoHeader {
            msg_type,
            body_bytes: body.len() as u64,
        }
    }

    #[test]
    fn requests_are_classified_by_type_and_fields() {
        use apogee_wire::msg::{Field, MsgHeader};
        let field = |field_type, data: &[u8]| Field {
            field_type,
            data: data.to_vec(),
        };
        let msg = |fields: Vec<Field>, info1: u8| {
            Message {
                header: MsgHeader {
                    info1,
                    ..Default::default()
                },
                fields,
                ..Default::default()
            }
            .encode()
        };
        let ns = field(FieldType::NAMESPACE, b"test");
        let digest = field(FieldType::DIGEST, &[0; 20]);
        let keyed = msg(vec![ns.clone(), digest], 0);
        let scan = msg(vec![ns.clone()], 0);
        let batch = msg(vec![ns], info1::BATCH);
        let kind = |t, body: Vec<u8>| match classify(&header(t, &body), &body) {
            Ok(Request::Info(_)) => "info",
            Ok(Request::Admin) => "admin",
            Ok(Request::Keyed(_)) => "keyed",
            Ok(Request::Batch(_)) => "batch",
            Ok(Request::Scan(_)) => "scan",
            Err(_) => "error",
        };
        assert_eq!(kind(MsgType::Info, b"node\n".to_vec()), "info");
        assert_eq!(kind(MsgType::Admin, vec![0; 16]), "admin");
        assert_eq!(kind(MsgType::Message, keyed), "keyed");
        assert_eq!(kind(MsgType::Message, scan), "scan");
        assert_eq!(kind(MsgType::Message, batch), "batch");
        assert_eq!(kind(MsgType::Message, vec![1, 2, 3]), "error");
        assert_eq!(kind(MsgType::Compressed, vec![0; 12]), "error");
    }
}
