//! Compressed frames (type 4, spec §1.5): an 8-byte size of the inner frame, then a zlib stream
//! holding a whole type-3 frame.
//!
//! Owns the inflation limits: the declared size is checked against the frame limit before any
//! byte is inflated, and inflation stops at the declared size, so a small "zip bomb" body can
//! never expand past what the header admitted.

use std::io::Read;

use crate::proto::{ProtoHeader, BODY_SIZE_MAX_BYTES, PROTO_HEADER_BYTES};
use crate::{DecodeError, MsgType};

/// Inflates a type-4 body and returns the AS_MSG body of the inner type-3 frame.
pub fn inflate_message(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if body.len() < 8 {
        return Err(DecodeError::Truncated {
            what: "compressed frame size",
            need: 8,
            have: body.len(),
        });
    }
    let declared = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    let max = BODY_SIZE_MAX_BYTES + PROTO_HEADER_BYTES as u64;
    if declared > max {
        return Err(DecodeError::TooLarge {
            size: declared,
            max,
        });
    }
    if declared < PROTO_HEADER_BYTES as u64 {
        return Err(DecodeError::BadLength {
            what: "compressed inner frame",
            len: declared as u32,
        });
    }
    let mut inner = Vec::with_capacity((declared as usize).min(1 << 20));
    flate2::read::ZlibDecoder::new(&body[8..])
        .take(declared + 1)
        .read_to_end(&mut inner)
        .map_err(|_| DecodeError::BadCompression)?;
    if inner.len() as u64 != declared {
        return Err(DecodeError::BadCompression);
    }
    let header: [u8; PROTO_HEADER_BYTES] = inner[..PROTO_HEADER_BYTES].try_into().expect("8");
    let h = ProtoHeader::decode(&header)?;
    if h.msg_type != MsgType::Message || h.body_bytes != declared - PROTO_HEADER_BYTES as u64 {
        return Err(DecodeError::BadCompression);
    }
    inner.drain(..PROTO_HEADER_BYTES);
    Ok(inner)
}

/// Replies at most this long are sent uncompressed even when the client asked: the clients use
/// the same threshold for requests, and zlib would only grow them.
pub const COMPRESS_REPLY_BYTES_MIN: usize = 128;

/// Wraps a whole type-3 frame (header included) in a type-4 frame (spec §1.5), at zlib level 1
/// as the clients compress.
pub fn deflate_frame(frame: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(frame.len() / 2 + 16),
        flate2::Compression::fast(),
    );
    e.write_all(frame).expect("writing to a Vec cannot fail");
    let zipped = e.finish().expect("finishing into a Vec cannot fail");
    let body = [&(frame.len() as u64).to_be_bytes()[..], &zipped].concat();
    crate::proto::frame(MsgType::Compressed, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame;
    use std::io::Write;

    fn compress(inner: &[u8], declared: u64) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(inner).unwrap();
        [&declared.to_be_bytes()[..], &e.finish().unwrap()].concat()
    }

    #[test]
    fn deflated_frames_inflate_to_the_same_message() {
        let inner = frame(MsgType::Message, &[9u8; 1000]);
        let out = deflate_frame(&inner);
        let h = ProtoHeader::decode(&out[..8].try_into().unwrap()).unwrap();
        assert_eq!(h.msg_type, MsgType::Compressed);
        assert!(out.len() < inner.len());
        assert_eq!(inflate_message(&out[8..]).unwrap(), vec![9u8; 1000]);
    }

    #[test]
    fn round_trip_and_rejections() {
        let inner = frame(MsgType::Message, &[7u8; 300]);
        let body = compress(&inner, inner.len() as u64);
        assert_eq!(inflate_message(&body).unwrap(), vec![7u8; 300]);
        // Declared size lies (smaller and larger than the real content).
        assert_eq!(
            inflate_message(&compress(&inner, 100)),
            Err(DecodeError::BadCompression)
        );
        assert_eq!(
            inflate_message(&compress(&inner, 400)),
            Err(DecodeError::BadCompression)
        );
        // Garbage instead of zlib, an inner info frame, an absurd declared size.
        assert!(inflate_message(&[0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3]).is_err());
        let info = frame(MsgType::Info, b"node\n");
        assert!(inflate_message(&compress(&info, info.len() as u64)).is_err());
        assert!(matches!(
            inflate_message(&compress(&inner, u64::MAX)),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
