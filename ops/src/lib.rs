//! Operations on bin values that the server applies inside `operate`: collection (CDT) list and
//! map ops with nested contexts, and expressions (spec §4.4–§4.8).
//!
//! Pure functions over decoded values: no I/O, no clock, no shared state, so every op can be
//! tested and fuzzed without a server. Every input is untrusted bytes from a client or from a
//! stored bin; malformed input is an [`OpError`], never a panic.

pub mod args;
pub mod bits;
pub mod cdt;
pub mod error;
pub mod exp;
pub mod hll;
pub mod list;
pub mod map;
pub mod select;
pub mod value;

pub use error::OpError;
pub use value::{List, Map, Value};
