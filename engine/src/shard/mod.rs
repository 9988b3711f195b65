//! One shard's storage: its data file, write blocks and index, driven on the shard's own core.
//!
//! Everything here is owned by exactly one glommio executor and is `!Send`; other cores reach
//! it only through the server's cross-core channels.

pub mod iterate;
pub mod media;
mod read_ring;
pub mod space;
pub mod store;
pub mod truncate;

pub use media::ExtentConfig;
pub use store::{
    Applied, CommitTicket, ConflictPolicy, Decision, InjectedFault, ShardStore, StoreConfig,
    UpdateError, SWEEP_DEAD_MIN, UPDATE_ATTEMPTS_MAX,
};
