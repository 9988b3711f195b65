//! Decoding errors. Each names what was wrong with the bytes so the server can log it.

use thiserror::Error;

/// Why a frame or message could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("proto version {0} is not 2")]
    BadVersion(u8),
    #[error(
        "proto message type {0} is not one of 1 (info), 2 (admin), 3 (message), 4 (compressed)"
    )]
    BadType(u8),
    #[error("frame body of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("{what} needs {need} bytes but only {have} remain")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("message header size byte is {0}, expected 22")]
    BadHeaderSize(u8),
    #[error("{what} length {len} is invalid")]
    BadLength { what: &'static str, len: u32 },
    #[error("compressed frame does not inflate to the type-3 frame its header declares")]
    BadCompression,
    #[error("{0} trailing bytes after the last op or batch row")]
    TrailingBytes(usize),
    #[error("batch row {0} repeats a previous row but is the first")]
    BatchRepeatFirst(u32),
}
