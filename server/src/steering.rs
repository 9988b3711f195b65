//! Which core serves a new client connection: the core pinned to the CPU its packets arrive on
//! (`SO_INCOMING_CPU`: on a NIC, the CPU of its receive queue; on loopback, the CPU the client
//! ran on when it connected), unless that core already serves clearly more connections than the
//! least busy one.
//!
//! Why: a core's executor is pinned. A client (or a NIC queue) on another CPU wakes it, and is
//! woken by its reply, across CPUs — an inter-processor interrupt each way, a VM exit on a
//! virtual machine. A sequential client on the executor's own CPU was served 2.2× as fast as one
//! on the other CPU (`docs/benchmarks.md`, 2026-12-07, evening). The balance bound keeps a
//! client that opens its whole pool from one thread from piling every connection onto one core.
//!
//! Owns the per-core count of client connections and the CPU each core is pinned to. It must
//! never move a connection once its first request was read, and never leave one unserved: a
//! hand-off that cannot be queued is served where it was accepted.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// How many more client connections than the least busy core a core may serve and still be
/// handed the connections that arrive on its CPU.
pub const STEER_SLACK_CONNECTIONS: usize = 2;

/// A CPU no core is pinned to.
const NOT_PINNED: i32 = -1;

/// The node's view of its cores for connection placement.
#[derive(Debug)]
pub struct Steering {
    /// `cpus[shard]`: the CPU the core is pinned to, or [`NOT_PINNED`].
    cpus: Vec<AtomicI32>,
    /// `open[shard]`: client connections the core serves now.
    open: Arc<Vec<AtomicUsize>>,
    /// Connections handed to another core than the one that accepted them.
    handed: AtomicU64,
}

/// Counts one client connection on a core while it lives.
#[derive(Debug)]
pub struct Serving {
    open: Arc<Vec<AtomicUsize>>,
    shard: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.open[self.shard].fetch_sub(1, Relaxed);
    }
}

impl Steering {
    pub fn new(cores: usize) -> Steering {
        assert!(cores > 0, "a node has at least one core");
        Steering {
            cpus: (0..cores).map(|_| AtomicI32::new(NOT_PINNED)).collect(),
            open: Arc::new((0..cores).map(|_| AtomicUsize::new(0)).collect()),
            handed: AtomicU64::new(0),
        }
    }

    /// Counts a connection handed to another core.
    pub fn count_handed(&self) {
        self.handed.fetch_add(1, Relaxed);
    }

    /// Apogee's own `statistics` fields: `client_connections_handed` and
    /// `client_connections_by_core` (open connections per core, comma-separated).
    pub fn describe(&self) -> String {
        let by_core: Vec<String> = (self.open.iter())
            .map(|n| n.load(Relaxed).to_string())
            .collect();
        format!(
            "client_connections_handed={};client_connections_by_core={}",
            self.handed.load(Relaxed),
            by_core.join(",")
        )
    }

    /// Records that `shard`'s executor runs pinned on `cpu` (cores that float never call it).
    pub fn pinned(&self, shard: usize, cpu: i32) {
        self.cpus[shard].store(cpu, Relaxed);
    }

    /// Counts a connection served by `shard` until the guard drops.
    pub fn serving(&self, shard: usize) -> Serving {
        self.open[shard].fetch_add(1, Relaxed);
        Serving {
            open: self.open.clone(),
            shard,
        }
    }

    /// The core that should serve a connection accepted by `here` whose packets arrive on
    /// `incoming_cpu`.
    pub fn choose(&self, here: usize, incoming_cpu: Option<i32>) -> usize {
        let Some(cpu) = incoming_cpu.filter(|&c| c != NOT_PINNED) else {
            return here;
        };
        let Some(target) = self.cpus.iter().position(|c| c.load(Relaxed) == cpu) else {
            return here;
        };
        if target == here {
            return here;
        }
        let least = self.open.iter().map(|n| n.load(Relaxed)).min().unwrap_or(0);
        if self.open[target].load(Relaxed) <= least + STEER_SLACK_CONNECTIONS {
            target
        } else {
            here
        }
    }
}

/// The CPU a connected socket's packets were last processed on, when the kernel knows it.
pub fn incoming_cpu(fd: RawFd) -> Option<i32> {
    let mut cpu: libc::c_int = NOT_PINNED;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `cpu` and `len` are valid for writes of the sizes given; `fd` is a socket.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut cpu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0 && cpu >= 0).then_some(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_pinned() -> Steering {
        let s = Steering::new(2);
        s.pinned(0, 4);
        s.pinned(1, 7);
        s
    }

    #[test]
    fn a_connection_goes_to_the_core_on_its_cpu() {
        let s = two_pinned();
        assert_eq!(s.choose(0, Some(7)), 1);
        assert_eq!(s.choose(1, Some(4)), 0);
        assert_eq!(s.choose(1, Some(7)), 1);
    }

    #[test]
    fn unknown_cpus_and_floating_cores_stay_where_accepted() {
        let s = two_pinned();
        assert_eq!(s.choose(0, None), 0);
        assert_eq!(s.choose(0, Some(5)), 0);
        let floating = Steering::new(2);
        assert_eq!(floating.choose(1, Some(0)), 1);
    }

    #[test]
    fn a_core_far_ahead_of_the_least_busy_one_is_not_handed_more() {
        let s = two_pinned();
        let mut held = Vec::new();
        // Every connection arrives on core 1's CPU: it takes them until it is the slack ahead.
        for _ in 0..STEER_SLACK_CONNECTIONS + 1 {
            assert_eq!(s.choose(0, Some(7)), 1);
            held.push(s.serving(1));
        }
        assert_eq!(s.choose(0, Some(7)), 0);
        held.push(s.serving(0));
        assert_eq!(s.choose(0, Some(7)), 1);
        // Connections that close are no longer counted.
        held.clear();
        assert_eq!(s.open.iter().map(|n| n.load(Relaxed)).sum::<usize>(), 0);
    }
}
