//! What a node takes on from its clients before it answers anything: how many connections
//! it keeps open (`proto-fd-max`), and how many bytes of partly received requests each core
//! holds.
//!
//! Owns the connection counters reported in `statistics` and the per-core budget of partial
//! frames. It must never let a size announced on the wire reserve memory: bytes are counted
//! against the budget as room for them is made, and room is made only as they arrive.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use apogee_wire::proto::BODY_SIZE_MAX_BYTES;

/// Bytes of one core's partly received request bodies, over all its connections. One frame
/// of the largest size the protocol allows fits, so any valid request can complete; beyond
/// it the connection that asks for more is closed.
pub const PARTIAL_FRAME_BYTES_MAX_PER_CORE: usize = BODY_SIZE_MAX_BYTES as usize;
/// A body's first read gets up to this much room without touching the budget, so ordinary
/// requests never wait on it and a flood of stalled connections costs at most this each.
pub const FRAME_FIRST_READ_BYTES: usize = 4096;
/// A connection whose request body makes no progress for this long is closed.
pub const FRAME_STALL_MS: u64 = 5_000;

/// Client connection counters, node-wide, with Aerospike's statistic names where it has one.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// `client_connections`: open now.
    open: AtomicU64,
    /// `client_connections_opened`.
    opened: AtomicU64,
    /// `client_connections_closed`.
    closed: AtomicU64,
    /// `client_connections_refused`: accepted and closed at once, over `proto-fd-max`.
    refused: AtomicU64,
    /// `reaped_fds`: closed after `proto-fd-idle-ms` without a request.
    reaped: AtomicU64,
    /// `client_frames_stalled`: closed after [`FRAME_STALL_MS`] without progress mid-request.
    stalled: AtomicU64,
    /// `client_frames_over_budget`: closed because the core's partial frames were over
    /// [`PARTIAL_FRAME_BYTES_MAX_PER_CORE`].
    over_budget: AtomicU64,
}

/// An admitted connection; dropping it counts the connection closed.
#[derive(Debug)]
pub struct OpenConnection(Arc<ConnectionStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
        self.0.closed.fetch_add(1, Relaxed);
    }
}

/// Why a connection was closed by a limit rather than by its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    IdleReaped,
    Stalled,
    OverBudget,
}

impl ConnectionStats {
    /// Admits a new connection unless `proto_fd_max` are open already; `None` means close it
    /// now (counted as refused).
    pub fn admit(self: &Arc<Self>, proto_fd_max: usize) -> Option<OpenConnection> {
        let before = self.open.fetch_add(1, Relaxed);
        if before >= proto_fd_max as u64 {
            self.open.fetch_sub(1, Relaxed);
            self.refused.fetch_add(1, Relaxed);
            return None;
        }
        self.opened.fetch_add(1, Relaxed);
        Some(OpenConnection(self.clone()))
    }

    pub fn count_closed_by(&self, why: Closed) {
        match why {
            Closed::IdleReaped => &self.reaped,
            Closed::Stalled => &self.stalled,
            Closed::OverBudget => &self.over_budget,
        }
        .fetch_add(1, Relaxed);
    }

    /// `key=value;...` for `statistics`.
    pub fn describe(&self) -> String {
        format!(
            "client_connections={};client_connections_opened={};client_connections_closed={};\
             client_connections_refused={};reaped_fds={};client_frames_stalled={};\
             client_frames_over_budget={}",
            self.open.load(Relaxed),
            self.opened.load(Relaxed),
            self.closed.load(Relaxed),
            self.refused.load(Relaxed),
            self.reaped.load(Relaxed),
            self.stalled.load(Relaxed),
            self.over_budget.load(Relaxed),
        )
    }
}

/// One core's budget of partly received request bytes.
#[derive(Debug)]
pub struct FrameBudget {
    held_bytes: Cell<usize>,
    max_bytes: usize,
}

/// Bytes one partial frame holds of its core's budget; released on drop.
#[derive(Debug)]
pub struct FrameBytes<'a> {
    budget: &'a FrameBudget,
    bytes: usize,
}

/// The core's budget could not give a frame the room it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub held_bytes: usize,
    pub wanted_bytes: usize,
}

impl FrameBudget {
    pub fn new(max_bytes: usize) -> FrameBudget {
        FrameBudget {
            held_bytes: Cell::new(0),
            max_bytes,
        }
    }

    /// A claim on the budget holding nothing yet.
    pub fn claim(&self) -> FrameBytes<'_> {
        FrameBytes {
            budget: self,
            bytes: 0,
        }
    }

    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.get()
    }
}

impl FrameBytes<'_> {
    /// Takes `more` bytes of the budget, or fails leaving the claim as it was.
    pub fn grow(&mut self, more: usize) -> Result<(), OverBudget> {
        let held = self.budget.held_bytes.get();
        if held + more > self.budget.max_bytes {
            return Err(OverBudget {
                held_bytes: held,
                wanted_bytes: more,
            });
        }
        self.budget.held_bytes.set(held + more);
        self.bytes += more;
        Ok(())
    }
}

impl Drop for FrameBytes<'_> {
    fn drop(&mut self) {
        let held = self.budget.held_bytes.get();
        debug_assert!(held >= self.bytes, "a claim releases only what it took");
        self.budget.held_bytes.set(held - self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_limit_are_refused_and_counted() {
        let stats = Arc::new(ConnectionStats::default());
        let a = stats.admit(2).unwrap();
        let _b = stats.admit(2).unwrap();
        assert!(stats.admit(2).is_none());
        drop(a);
        let _c = stats.admit(2).expect("room again after a close");
        let d = stats.describe();
        assert!(d.starts_with("client_connections=2;client_connections_opened=3;client_connections_closed=1;client_connections_refused=1;"), "{d}");
    }

    #[test]
    fn frame_claims_share_the_budget_and_release_on_drop() {
        let budget = FrameBudget::new(100);
        let mut a = budget.claim();
        a.grow(60).unwrap();
        let mut b = budget.claim();
        assert_eq!(
            b.grow(41),
            Err(OverBudget {
                held_bytes: 60,
                wanted_bytes: 41
            })
        );
        b.grow(40).unwrap();
        assert_eq!(budget.held_bytes(), 100);
        drop(a);
        assert_eq!(budget.held_bytes(), 40);
        drop(b);
        assert_eq!(budget.held_bytes(), 0);
    }
}
