//! Building AS_MSG reply frames for single-record commands (spec §6).

use apogee_wire::msg::{info3, Message, MsgHeader, Op};
use apogee_wire::proto::frame;
use apogee_wire::{MsgType, ResultCode};

/// The outcome of a keyed command, before encoding.
#[derive(Debug, Default)]
pub struct Reply {
    pub result: u8,
    pub generation: u32,
    pub void_time: u32,
    pub ops: Vec<Op>,
}

impl Reply {
    pub fn code(rc: ResultCode) -> Reply {
        Reply {
            result: rc as u8,
            ..Default::default()
        }
    }

    pub fn ok(generation: u16, void_time: u32, ops: Vec<Op>) -> Reply {
        Reply {
            result: ResultCode::Ok as u8,
            generation: u32::from(generation),
            void_time,
            ops,
        }
    }

    /// Appends the reply as one row message of a batch reply (spec §7.4): the row's index
    /// goes in `transaction_ttl`, where the client looks for it.
    pub fn encode_row_into(self, index: u32, out: &mut Vec<u8>) {
        let msg = Message {
            header: MsgHeader {
                result_code: self.result,
                generation: self.generation,
                record_ttl: self.void_time,
                transaction_ttl: index,
                ..Default::default()
            },
            fields: vec![],
            ops: self.ops,
        };
        out.extend_from_slice(&msg.encode());
    }

    /// Encodes the reply as a whole type-3 frame.
    pub fn into_frame(self) -> Vec<u8> {
        let msg = Message {
            header: MsgHeader {
                result_code: self.result,
                generation: self.generation,
                record_ttl: self.void_time,
                ..Default::default()
            },
            fields: vec![],
            ops: self.ops,
        };
        frame(MsgType::Message, &msg.encode())
    }
}

/// A one-message stream reply (batch, scan) that carries only an error and the LAST flag, for
/// commands this server does not support yet: the client sees the code instead of hanging.
pub fn stream_error_frame(rc: ResultCode) -> Vec<u8> {
    let msg = Message {
        header: MsgHeader {
            result_code: rc as u8,
            info3: info3::LAST,
            ..Default::default()
        },
        ..Default::default()
    };
    frame(MsgType::Message, &msg.encode())
}
