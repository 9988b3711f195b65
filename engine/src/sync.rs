//! The atomics that cross-thread structures use, so the same source can be model-checked under
//! loom (the `loom-tests` crate compiles those modules against loom's atomics instead).

pub use std::sync::atomic;
