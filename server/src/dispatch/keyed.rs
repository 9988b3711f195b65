//! Requests for one record: run on this core when it owns the record's partition, else handed
//! to the owning core and its reply awaited. A write runs on the partition's master only; a
//! read also on a replica (the client's replica policy chose it); anything else is proxied to
//! the master.
//!
//! Owns the route of a keyed command, never its execution (that is `Core::execute`, on the
//! owning core). It must never touch another core's store except through its inbox.

use apogee_wire::msg::{info2, Message};
use apogee_wire::{FieldType, ResultCode};

use super::direct::{DirectReply, Target};
use crate::command::{self, Reply};
use crate::core::Core;
use crate::latency;
use crate::node::{ShardRequest, ShardWork};
use crate::partition::PartitionTable;
use apogee_cluster::NodeId;
use std::sync::Arc;

/// How a keyed command was answered.
pub enum Answer {
    /// The reply frame, for the receiving core to write.
    Reply(Vec<u8>),
    /// The owning core writes the reply to the client itself; the note comes once it did.
    Written(flume::Receiver<Vec<u8>>),
}

impl From<Vec<u8>> for Answer {
    fn from(reply: Vec<u8>) -> Answer {
        Answer::Reply(reply)
    }
}

/// Answers one keyed command from a client, recording its latency; a command for another
/// node's partition is proxied to that node. With `direct`, a command another core of this
/// node owns has its reply written to the client by that core.
pub async fn serve(core: &Core, msg: Message, direct: Option<Target>) -> Answer {
    serve_from(core, msg, true, direct).await
}

/// Answers one keyed command a peer proxied here: never proxied again, so two nodes that
/// disagree on the map answer 11 instead of forwarding a request back and forth.
pub async fn serve_proxied(core: &Core, msg: Message) -> Vec<u8> {
    match serve_from(core, msg, false, None).await {
        Answer::Reply(reply) => reply,
        Answer::Written(_) => unreachable!("a proxied request is answered over the fabric"),
    }
}

async fn serve_from(core: &Core, msg: Message, may_proxy: bool, direct: Option<Target>) -> Answer {
    let Some(ns) = msg
        .field(FieldType::NAMESPACE)
        .and_then(|n| core.node.config.namespace_index(n))
    else {
        return Answer::Reply(Reply::code(ResultCode::Namespace).into_frame());
    };
    let kind = if msg.header.info2 & info2::WRITE != 0 {
        latency::Kind::Write
    } else {
        latency::Kind::Read
    };
    let started = std::time::Instant::now();
    let direct = direct.map(|target| DirectReply {
        target,
        started,
        kind,
    });
    let answer = route(core, ns, msg, may_proxy, direct).await;
    if let Answer::Reply(_) = answer {
        core.node.namespaces[ns].latency[core.shard][kind as usize].record(started.elapsed());
    }
    answer
}

/// Where a keyed command goes, by one partition table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Here,
    Proxy(NodeId),
}

/// Runs the command here when this core owns its record, else on the owning core (which
/// writes the reply itself when `direct` says where).
async fn route(
    core: &Core,
    ns: usize,
    msg: Message,
    may_proxy: bool,
    direct: Option<DirectReply>,
) -> Answer {
    let digest = match command::digest_of(&msg) {
        Ok(d) => d,
        Err(rc) => return Answer::Reply(Reply::code(rc).into_frame()),
    };
    let partition = digest.partition().0;
    let write = msg.header.info2 & info2::WRITE != 0;
    // A read of a partition this node holds a full replica copy of is served here, as an AP
    // Aerospike node serves a client whose replica policy sent it there; not one that touches
    // the record (read-touch-ttl), which writes and so belongs to the master, nor one of a
    // copy still migrating in (incomplete).
    let reads_here = !write && msg.header.record_ttl == 0;
    let decide = |table: &Arc<PartitionTable>| {
        if table.is_master(ns, partition) || (reads_here && table.reads_here(ns, partition)) {
            return Some(Route::Here);
        }
        match table.master(ns, partition) {
            Some(m) if may_proxy && m != core.node.id => Some(Route::Proxy(m)),
            _ => None,
        }
    };
    // Refused by this node's table: it waits for the table to catch up with the peers' (a
    // view change or a hand-off in flight) before answering 11.
    match core.node.settled(decide).await {
        Some(Route::Here) => {}
        // Another node's partition: forwarded to its master over the fabric, as Aerospike
        // proxies.
        Some(Route::Proxy(master)) => {
            return Answer::Reply(
                crate::cluster::fabric::proxy(core, master, partition, &msg).await,
            )
        }
        // No master (no cluster yet, or orphaned), or already proxied here: result 11, on
        // which the official clients refresh their partition map and retry.
        None => {
            if let Some(n) = core.node.logs.partition_unavailable.allow() {
                let table = core.node.partitions.load();
                let master = table.master(ns, partition).map(|m| format!("{:X}", m.0));
                tracing::info!(partition, proxied_here = !may_proxy, write, ?master,
                    settle_wait_ms = crate::node::TABLE_SETTLE_WAIT_MS, suppressed = n,
                    "answered 11: this node's table does not route the request (no master, or a proxied request for a partition this node does not master)");
            }
            return Answer::Reply(Reply::code(ResultCode::PartitionUnavailable).into_frame());
        }
    }
    let owner = core.node.shard_of(partition);
    if owner == core.shard {
        return Answer::Reply(core.execute(ns, &msg, may_proxy).await);
    }
    if !may_proxy {
        // A peer's proxied request on a connection this shard does not own.
        (core.node.proxy_stats.cross_core).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let (tx, rx) = flume::bounded(1);
    let written_there = direct.is_some();
    let request = ShardRequest {
        namespace: ns,
        msg,
        reply: tx,
        direct,
        may_proxy,
    };
    if core.node.inboxes[owner]
        .send_async(ShardWork::Keyed(request))
        .await
        .is_err()
    {
        return Answer::Reply(Reply::code(ResultCode::ServerError).into_frame());
    }
    if written_there {
        return Answer::Written(rx);
    }
    Answer::Reply(
        rx.recv_async()
            .await
            .unwrap_or_else(|_| Reply::code(ResultCode::ServerError).into_frame()),
    )
}
