//! Building the frames of a multi-frame streaming reply (batch, scan): messages appended into
//! one type-3 frame until it reaches [`FRAME_BYTES_MAX`], then the next; and the final
//! header-only message with the LAST flag.
//!
//! Owns the frame layout only. It must never hold more than the one frame being filled: the
//! caller hands each full frame on (through a bounded channel) before starting the next.

use apogee_wire::msg::{info3, Message, MsgHeader};
use apogee_wire::proto::{ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::{MsgType, ResultCode};

/// A frame is sent once it holds this many bytes of messages (the real server's 128 KiB
/// batch block; its scans flush near 1 MiB, which clients do not depend on).
pub const FRAME_BYTES_MAX: usize = 128 * 1024;

/// A frame being filled: proto header space, then messages.
pub struct FrameBuilder {
    frame: Vec<u8>,
    /// Messages in the frame.
    pub messages: u32,
}

impl Default for FrameBuilder {
    fn default() -> FrameBuilder {
        FrameBuilder::new()
    }
}

impl FrameBuilder {
    pub fn new() -> FrameBuilder {
        let mut frame = Vec::with_capacity(FRAME_BYTES_MAX + PROTO_HEADER_BYTES);
        frame.resize(PROTO_HEADER_BYTES, 0);
        FrameBuilder { frame, messages: 0 }
    }

    /// Appends one message, encoded by `encode` onto the frame's end.
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.frame);
        self.messages += 1;
    }

    /// Appends one encoded message.
    pub fn push(&mut self, msg: &Message) {
        self.push_with(|out| out.extend_from_slice(&msg.encode()));
    }

    pub fn is_full(&self) -> bool {
        self.frame.len() - PROTO_HEADER_BYTES >= FRAME_BYTES_MAX
    }

    /// If full, the frame so far (and a fresh one takes its place).
    pub fn take_if_full(&mut self) -> Option<(Vec<u8>, u32)> {
        if !self.is_full() {
            return None;
        }
        std::mem::take(self).into_frame()
    }

    /// The messages as one type-3 frame; `None` when there are none (no empty frames, spec
    /// §1.4).
    pub fn into_frame(mut self) -> Option<(Vec<u8>, u32)> {
        if self.messages == 0 {
            return None;
        }
        let body = self.frame.len() - PROTO_HEADER_BYTES;
        self.frame[..PROTO_HEADER_BYTES]
            .copy_from_slice(&ProtoHeader::encode(MsgType::Message, body));
        Some((self.frame, self.messages))
    }
}

/// The frame that ends a stream: a header-only message with LAST and the stream's result.
pub fn last_frame(result: ResultCode) -> Vec<u8> {
    let last = Message {
        header: MsgHeader {
            info3: info3::LAST,
            result_code: result as u8,
            ..Default::default()
        },
        ..Default::default()
    };
    apogee_wire::proto::frame(MsgType::Message, &last.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_builder_gives_no_frame() {
        assert!(FrameBuilder::new().into_frame().is_none());
    }

    #[test]
    fn a_frame_carries_its_body_length_and_messages() {
        let mut b = FrameBuilder::new();
        b.push(&Message::default());
        b.push(&Message::default());
        let (frame, n) = b.into_frame().unwrap();
        assert_eq!(n, 2);
        let head: [u8; PROTO_HEADER_BYTES] = frame[..PROTO_HEADER_BYTES].try_into().unwrap();
        let header = ProtoHeader::decode(&head).unwrap();
        assert_eq!(header.body_bytes as usize, frame.len() - PROTO_HEADER_BYTES);
        assert_eq!(frame.len() - PROTO_HEADER_BYTES, 44);
    }

    #[test]
    fn last_frame_has_the_last_flag() {
        let f = last_frame(ResultCode::Parameter);
        let m = Message::decode(&f[PROTO_HEADER_BYTES..]).unwrap();
        assert_eq!((m.header.info3, m.header.result_code), (info3::LAST, 4));
    }
}
