//! The Aerospike wire protocol as Apogee speaks it: framing (proto header), AS_MSG messages
//! (header, fields, ops), result codes, key digests and partition ids, and info-request parsing.
//!
//! This crate owns byte layouts only. It must never do I/O, hold state between messages or know
//! what a command means: the server decides semantics, this crate only decodes and encodes.
//! Every decoder is total: malformed input returns a [`DecodeError`], never a panic.

pub mod batch;
pub mod compression;
pub mod digest;
pub mod error;
pub mod info;
pub mod msg;
pub mod proto;
pub mod result_code;

pub use digest::{Digest, PartitionId, PARTITION_COUNT};
pub use error::DecodeError;
pub use msg::{Field, FieldType, Message, MsgHeader, Op, OpType};
pub use proto::{MsgType, ProtoHeader};
pub use result_code::ResultCode;
