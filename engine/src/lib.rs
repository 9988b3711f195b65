//! Apogee's storage engine: the on-disk record and block formats, the per-shard index, recovery,
//! and the per-shard store that appends records to direct-I/O write blocks.
//!
//! Owns everything about where a record's bytes live. It must never touch the network, and its
//! logic (formats, index, recovery decisions) stays plain Rust: only `shard::store` does I/O,
//! through glommio, so the rest is testable without a disk or an executor.
//! `docs/storage-format.md` draws every byte written here.

pub mod block;
pub mod cache;
pub mod clock;
pub mod error;
pub mod file_header;
pub mod index;
pub mod placement;
pub mod record;
pub mod recovery;
pub mod rehome;
pub mod sets;
pub mod shard;
pub mod sindex;
pub mod stats;
mod sync;
pub mod tuning;

pub use error::StoreError;
pub use record::{Bin, Record, RecordMeta, UserKey};
