//! The 8-byte proto header that frames every message in both directions (spec §1.2).
//!
//! Owns the framing limits. It must never accept a frame it cannot bound: the size is checked
//! against [`BODY_SIZE_MAX_BYTES`] before any body byte is read.

use crate::DecodeError;

/// Length of the proto header in bytes.
pub const PROTO_HEADER_BYTES: usize = 8;
/// The only protocol version either official client speaks.
pub const PROTO_VERSION: u8 = 2;
/// The real server rejects request bodies above 128 MiB (`PROTO_SIZE_MAX`).
pub const BODY_SIZE_MAX_BYTES: u64 = 128 * 1024 * 1024;

/// The kind of body a frame carries (spec §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Info = 1,
    Admin = 2,
    Message = 3,
    Compressed = 4,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        match v {
            1 => Some(MsgType::Info),
            2 => Some(MsgType::Admin),
            3 => Some(MsgType::Message),
            4 => Some(MsgType::Compressed),
            _ => None,
        }
    }
}

/// A decoded proto header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoHeader {
    pub msg_type: MsgType,
    pub body_bytes: u64,
}

impl ProtoHeader {
    /// Decodes and validates a header: version 2, a known type, a body within the limit.
    pub fn decode(bytes: &[u8; PROTO_HEADER_BYTES]) -> Result<ProtoHeader, DecodeError> {
        let word = u64::from_be_bytes(*bytes);
        let version = (word >> 56) as u8;
        if version != PROTO_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let type_byte = (word >> 48) as u8;
        let msg_type = MsgType::from_u8(type_byte).ok_or(DecodeError::BadType(type_byte))?;
        let body_bytes = word & 0xFFFF_FFFF_FFFF;
        if body_bytes > BODY_SIZE_MAX_BYTES {
            return Err(DecodeError::TooLarge {
                size: body_bytes,
                max: BODY_SIZE_MAX_BYTES,
            });
        }
        Ok(ProtoHeader {
            msg_type,
            body_bytes,
        })
    }

    /// Encodes a header for a body of `body_bytes` bytes.
    pub fn encode(msg_type: MsgType, body_bytes: usize) -> [u8; PROTO_HEADER_BYTES] {
        assert!(
            body_bytes as u64 <= 0xFFFF_FFFF_FFFF,
            "body exceeds 48-bit size"
        );
        let word = (u64::from(PROTO_VERSION) << 56)
            | ((msg_type as u64) << 48)
            | (body_bytes as u64 & 0xFFFF_FFFF_FFFF);
        word.to_be_bytes()
    }
}

/// Builds a whole frame (header and body) in one buffer.
pub fn frame(msg_type: MsgType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROTO_HEADER_BYTES + body.len());
    out.extend_from_slice(&ProtoHeader::encode(msg_type, body.len()));
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = ProtoHeader::encode(MsgType::Message, 0x71);
        assert_eq!(h, [2, 3, 0, 0, 0, 0, 0, 0x71]);
        let d = ProtoHeader::decode(&h).unwrap();
        assert_eq!(d.msg_type, MsgType::Message);
        assert_eq!(d.body_bytes, 0x71);
    }

    #[test]
    fn rejects_bad_version_type_and_size() {
        assert_eq!(
            ProtoHeader::decode(&[3, 3, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::BadVersion(3))
        );
        assert_eq!(
            ProtoHeader::decode(&[2, 9, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::BadType(9))
        );
        assert_eq!(
            ProtoHeader::decode(&[2, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::BadType(0))
        );
        let big = ProtoHeader::encode(MsgType::Message, (BODY_SIZE_MAX_BYTES + 1) as usize);
        assert!(matches!(
            ProtoHeader::decode(&big),
            Err(DecodeError::TooLarge { .. })
        ));
        let max = ProtoHeader::encode(MsgType::Message, BODY_SIZE_MAX_BYTES as usize);
        assert!(ProtoHeader::decode(&max).is_ok());
    }
}
