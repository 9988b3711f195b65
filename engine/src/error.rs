//! Storage errors, each with a message a user can act on. The server maps them to result codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("record of {size} bytes exceeds the largest storable record of {max} bytes (write-block-size minus block header)")]
    RecordTooBig { size: usize, max: usize },
    #[error("shard {shard} refuses writes after a device error: {reason}")]
    DeviceFailed { shard: u32, reason: String },
    #[error("shard {shard} is out of space: {reason}")]
    OutOfSpace { shard: u32, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("record at offset {offset} of {path} is corrupt: {reason}")]
    Corrupt {
        path: String,
        offset: u64,
        reason: String,
    },
    #[error("data file {path} cannot be used: {reason}")]
    BadDataFile { path: String, reason: String },
}
