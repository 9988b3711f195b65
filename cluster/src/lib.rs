//! Apogee's cluster logic as pure state machines, in Aerospike's terms (design.md §5).
//!
//! Owns the decisions a cluster makes: where each partition lives (`balance`), who the
//! members are (`view`) and how partitions move after a change (`migrate`). It must never open a socket, touch a disk or read a clock: its inputs
//! are messages and instants passed in, its outputs are messages to send and events, so tests
//! drive whole clusters in one process, deterministically, and the server does the I/O at
//! the edges.

#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod balance;
pub mod detector;
pub mod migrate;
pub mod view;

pub use balance::{BalanceError, NodeId, PartitionMap, Succession, CLUSTER_NODES_MAX};
pub use migrate::{
    Action as MigrateAction, Copy as PartitionCopy, MigrateConfig, MigrateError, Migrator,
};
