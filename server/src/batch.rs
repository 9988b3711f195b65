//! Batch reads (spec §7): classifies each row of a batch once, fans the rows out to the cores
//! that own them (one message per shard, carrying all of that shard's rows), and streams the
//! row replies back to the client in blocks of at most [`crate::stream::FRAME_BYTES_MAX`] as they arrive.
//!
//! Memory is bounded per batch: each shard fills one block at a time and the channel back to
//! the connection holds at most [`BLOCKS_IN_FLIGHT_MAX`] blocks, so a slow client slows the
//! shards instead of growing a buffer. A client that goes away drops the channel; every shard
//! then stops at its next block. Every row runs as the keyed command it stands for, through
//! the single-record path ([`Core::execute_reply`]): writes and deletes included; UDF rows are
//! answered 16 (not yet) by that path. In a cluster a row of a partition another node
//! masters is proxied to that node over the fabric, as a keyed request is (its reply put in
//! the batch's as the row's), up to [`PROXIED_ROWS_IN_FLIGHT_MAX`] at a time. This module
//! must never run a row on a core that does not own it.

use std::rc::Rc;
use std::sync::Arc;

use crate::dispatch::ReplySink;
use apogee_wire::batch::{self as wire_batch, BatchRow};
use apogee_wire::msg::{info1, info2, Message};
use apogee_wire::{FieldType, ResultCode};
use futures_lite::future::poll_once;
use futures_lite::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::command::{reply::stream_error_frame, Reply};
use crate::core::Core;
use crate::latency;
use crate::node::ShardWork;
use crate::partition::PartitionTable;
use crate::stream::{last_frame, FrameBuilder};

/// Blocks one batch may have queued towards its connection before its shards wait.
pub const BLOCKS_IN_FLIGHT_MAX: usize = 4;

/// Rows of one batch proxied to other nodes at once (rows a client sends to a node that does
/// not master them: rare, around a change of the partition map).
pub const PROXIED_ROWS_IN_FLIGHT_MAX: usize = 16;

/// A frame of row replies being filled (frame building is `crate::stream`'s).
#[derive(Default)]
pub struct RowBlock {
    frame: FrameBuilder,
}

impl RowBlock {
    fn new() -> RowBlock {
        RowBlock::default()
    }

    fn push(&mut self, index: u32, reply: Reply) {
        self.frame
            .push_with(|out| reply.encode_row_into(index, out));
    }

    fn is_full(&self) -> bool {
        self.frame.is_full()
    }

    /// Adds a row's reply answered on the connection's core, sending the block to the client
    /// once it is full; returns how many rows that sent (0 while it fills).
    async fn push_or_send(
        &mut self,
        index: u32,
        reply: Reply,
        out: &mut ReplySink<'_>,
    ) -> std::io::Result<u64> {
        self.push(index, reply);
        if !self.is_full() {
            return Ok(0);
        }
        let full = std::mem::replace(self, RowBlock::new());
        match full.into_frame() {
            Some((frame, rows)) => {
                out.send(&frame).await?;
                Ok(u64::from(rows))
            }
            None => Ok(0),
        }
    }

    /// Adds a row's reply, sending the block on `sink` once it is full; false when the
    /// connection has gone.
    async fn add(
        &mut self,
        index: u32,
        reply: Reply,
        sink: &flume::Sender<(Vec<u8>, u32)>,
    ) -> bool {
        self.push(index, reply);
        if !self.is_full() {
            return true;
        }
        let full = std::mem::replace(self, RowBlock::new());
        match full.into_frame() {
            Some(frame) => sink.send_async(frame).await.is_ok(),
            None => true,
        }
    }

    /// The block as a type-3 frame; `None` when it holds no row (no empty frames, spec §1.4).
    fn into_frame(self) -> Option<(Vec<u8>, u32)> {
        self.frame.into_frame()
    }
}

/// The rows of one batch that one shard owns, with the channel their replies go back on.
pub struct ShardBatch {
    /// `(namespace, row)`, in the order the client sent them.
    pub rows: Vec<(usize, BatchRow)>,
    /// Encoded frames and the number of rows each holds.
    pub sink: flume::Sender<(Vec<u8>, u32)>,
}

/// True when a message is a batch request (the connection streams its reply).
pub fn is_batch(msg: &Message) -> bool {
    msg.header.info1 & info1::BATCH != 0
        || msg.field(FieldType::BATCH_INDEX).is_some()
        || msg.field(FieldType::BATCH_INDEX_WITH_SET).is_some()
}

/// Rows one shard runs at once for one batch. One after another, every read that missed the
/// cache waited alone on the device and every durable write waited for its own block flush
/// (a 2,000-row batch write cost 150 µs of server CPU a row); together, reads overlap and
/// writes share flushes.
pub const ROWS_IN_FLIGHT_MAX: usize = 32;

/// Runs a shard's rows of a batch on the core that owns them, up to [`ROWS_IN_FLIGHT_MAX`] at a
/// time, sending a frame each time a block fills (replies keep the rows' order). A batch
/// naming one record twice runs its rows one at a time, so the later row sees the earlier one
/// as the client wrote them. Stops early when the connection has gone.
pub async fn run_rows(core: Rc<Core>, batch: ShardBatch) {
    let in_flight = if repeats_a_record(&batch.rows) {
        1
    } else {
        ROWS_IN_FLIGHT_MAX
    };
    let core = &core;
    let rows = batch.rows;
    // Rows that had to wait (device reads, durable writes), oldest first.
    let mut waiting: FuturesOrdered<RowRun<'_>> = FuturesOrdered::new();
    let mut block = RowBlock::new();
    for i in 0..rows.len() {
        // Rows ahead: start the loads their index lookups and reads will wait on.
        for (stage, ahead) in PREFETCH_ROWS_AHEAD.iter().enumerate() {
            if let Some((ns, row)) = rows.get(i + ahead) {
                core.stores[*ns].prefetch(&row.digest, stage);
            }
        }
        let (ns, row) = &rows[i];
        let ns = *ns;
        while waiting.len() >= in_flight {
            let Some((index, reply)) = waiting.next().await else {
                break;
            };
            if !block.add(index, reply, &batch.sink).await {
                return;
            }
        }
        let mut run: RowRun<'_> =
            Box::pin(async move { (row.index, run_row(core, ns, row).await) });
        // Most rows (memory, cache, write-behind) finish on their first poll: answered at
        // once, without the in-flight set's bookkeeping, when no earlier row still waits.
        if waiting.is_empty() {
            if let Some((index, reply)) = poll_once(&mut run).await {
                if !block.add(index, reply, &batch.sink).await {
                    return;
                }
                continue;
            }
        }
        waiting.push_back(run);
    }
    while let Some((index, reply)) = waiting.next().await {
        if !block.add(index, reply, &batch.sink).await {
            return;
        }
    }
    if let Some(frame) = block.into_frame() {
        let _ = batch.sink.send_async(frame).await;
    }
}

/// How many rows ahead of the one running a shard starts loading, per prefetch stage: the
/// index slot, the index entry (the slot is in cache by then), the record's bytes.
const PREFETCH_ROWS_AHEAD: [usize; 3] = [6, 4, 2];

/// One row being run: its index and, once done, its reply.
type RowRun<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (u32, Reply)> + 'a>>;

/// Whether two rows name the same record.
fn repeats_a_record(rows: &[(usize, BatchRow)]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    !rows
        .iter()
        .all(|(ns, row)| seen.insert((*ns, row.digest.0)))
}

/// One row, as the keyed command it stands for; a panic in it answers that row 1.
async fn run_row(core: &Rc<Core>, ns: usize, row: &BatchRow) -> Reply {
    debug_assert_eq!(core.node.shard_of(row.digest.partition().0), core.shard);
    // The row's command is shared by every row that repeats it; its digest goes beside it
    // rather than into a copy of the message.
    let msg = &*row.command;
    let kind = if msg.header.info2 & info2::WRITE != 0 {
        latency::Kind::BatchSubWrite
    } else {
        latency::Kind::BatchSubRead
    };
    let started = std::time::Instant::now();
    let run = core.execute_reply(ns, msg, Some(row.digest));
    let reply = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(reply) => reply,
        Err(panic) => {
            let cause = crate::dispatch::panic_message(panic.as_ref());
            tracing::error!(panic = %cause, "a batch row panicked; answered with a server error");
            Reply::code(ResultCode::ServerError)
        }
    };
    core.node.namespaces[ns].latency[core.shard][kind as usize].record(started.elapsed());
    reply
}

/// Where one row runs, as the connection's core decides it without touching a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// On this node, in namespace `0`.
    Here(usize),
    /// On the partition's master, another node: proxied.
    Proxy(apogee_cluster::NodeId),
}

fn classify(
    core: &Core,
    table: &crate::partition::PartitionTable,
    row: &BatchRow,
) -> Result<Place, ResultCode> {
    let ns = row
        .command
        .field(FieldType::NAMESPACE)
        .and_then(|n| core.node.config.namespace_index(n))
        .ok_or(ResultCode::Namespace)?;
    let partition = row.digest.partition().0;
    if table.is_master(ns, partition) {
        return Ok(Place::Here(ns));
    }
    // Another node's partition is proxied to its master, as a keyed request is; with no
    // master (no view yet, orphaned, a hand-off in flight) the row is answered 11.
    match table.master(ns, partition) {
        Some(m) if m != core.node.id => Ok(Place::Proxy(m)),
        _ => Err(ResultCode::PartitionUnavailable),
    }
}

/// A proxied row's reply frame (a keyed reply from its master) as the row's reply; a frame
/// that does not decode answers the row 1.
fn row_reply_of(frame: &[u8]) -> Reply {
    let Some(body) = frame.get(apogee_wire::proto::PROTO_HEADER_BYTES..) else {
        return Reply::code(ResultCode::ServerError);
    };
    match Message::decode(body) {
        Ok(m) => Reply {
            result: m.header.result_code,
            generation: m.header.generation,
            void_time: m.header.record_ttl,
            ops: m.ops,
            encoded: Default::default(),
        },
        Err(_) => Reply::code(ResultCode::ServerError),
    }
}

/// Answers one batch request on `stream`: row frames as they are ready, then a LAST
/// message. `Err` only when writing to the client failed (the connection is then closed).
pub async fn serve(core: &Rc<Core>, msg: Message, out: &mut ReplySink<'_>) -> std::io::Result<()> {
    let parsed = if msg.field(FieldType::BATCH_INDEX_WITH_SET).is_some() {
        // The pre-6.0 batch format; clients send field 41 to a server of build ≥ 6.0.
        Err(ResultCode::UnsupportedFeature)
    } else if !msg.ops.is_empty() {
        Err(ResultCode::Parameter)
    } else if let Some(Err(rc)) = msg
        .field(FieldType::FILTER_EXP)
        .map(crate::command::filter::build)
    {
        Err(rc)
    } else {
        match msg.field(FieldType::BATCH_INDEX) {
            None => Err(ResultCode::Parameter),
            Some(data) => wire_batch::decode(data, &msg.header, msg.field(FieldType::FILTER_EXP))
                .map_err(|e| {
                    if let Some(n) = core.logs.bad_batch.allow() {
                        tracing::warn!(error = %e, batches = n, "batch refused: malformed rows");
                    }
                    ResultCode::Parameter
                }),
        }
    };
    let batch = match parsed {
        Ok(b) => b,
        Err(rc) => return out.send(&stream_error_frame(rc)).await,
    };
    drop(msg);
    let started = std::time::Instant::now();
    let expected = batch.rows.len() as u64;
    let mut answered: u64 = 0;

    // Classify every row: answered here, or grouped by the shard that owns it.
    let mut groups: Vec<Vec<(usize, BatchRow)>> =
        (0..core.node.config.cores).map(|_| Vec::new()).collect();
    let mut local = RowBlock::new();
    // In a cluster, a row this node's table refuses waits for the table to catch up with the
    // peers' (a view change or a hand-off in flight) before it is answered 11, as a keyed
    // request does: one more pass over the rows. A node alone has one table for ever.
    let all_here = |t: &Arc<PartitionTable>| {
        (batch.rows.iter())
            .all(|row| classify(core, t, row) != Err(ResultCode::PartitionUnavailable))
            .then(|| t.clone())
    };
    let table = if core.node.config.cluster.heartbeat.is_none() {
        core.node.partitions.load_full()
    } else {
        (core.node.settled(all_here).await).unwrap_or_else(|| core.node.partitions.load_full())
    };
    let mut proxied: Vec<(apogee_cluster::NodeId, BatchRow)> = Vec::new();
    for row in batch.rows {
        let reply = match classify(core, &table, &row) {
            Ok(Place::Here(ns)) => {
                let owner = core.node.shard_of(row.digest.partition().0);
                groups[owner].push((ns, row));
                continue;
            }
            Ok(Place::Proxy(master)) => {
                proxied.push((master, row));
                continue;
            }
            Err(rc) => Reply::code(rc),
        };
        answered += local.push_or_send(row.index, reply, out).await?;
    }

    // Fan out: one message per shard, carrying all its rows.
    let (sink, blocks) = flume::bounded(BLOCKS_IN_FLIGHT_MAX);
    for (shard, rows) in groups.into_iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        let work = ShardBatch {
            rows,
            sink: sink.clone(),
        };
        if shard == core.shard {
            glommio::spawn_local(run_rows(core.clone(), work)).detach();
        } else if core.node.inboxes[shard]
            .send_async(ShardWork::Batch(work))
            .await
            .is_err()
        {
            tracing::error!(
                shard,
                "a shard's inbox is closed; its batch rows go unanswered"
            );
        }
    }
    // Rows of other nodes' partitions, while the shards run theirs: proxied, a few at a time,
    // their replies in the batch's (the shards wait on their bounded channel meanwhile).
    let mut in_flight = FuturesOrdered::new();
    let mut rows = proxied.into_iter();
    loop {
        while in_flight.len() < PROXIED_ROWS_IN_FLIGHT_MAX {
            let Some((master, row)) = rows.next() else {
                break;
            };
            let partition = row.digest.partition().0;
            in_flight.push_back(async move {
                let msg = row.message();
                let frame = crate::cluster::fabric::proxy(core, master, partition, &msg).await;
                (row.index, row_reply_of(&frame))
            });
        }
        let Some((index, reply)) = in_flight.next().await else {
            break;
        };
        answered += local.push_or_send(index, reply, out).await?;
    }
    if let Some((frame, rows)) = local.into_frame() {
        out.send(&frame).await?;
        answered += u64::from(rows);
    }
    drop(sink);
    // Every shard's sender dropped (rows done or shard gone) ends the stream.
    while let Ok((frame, rows)) = blocks.recv_async().await {
        out.send(&frame).await?;
        answered += u64::from(rows);
    }
    debug_assert!(answered <= expected);
    let result = if answered == expected {
        ResultCode::Ok
    } else {
        tracing::error!(
            expected,
            answered,
            "batch rows went unanswered; the batch ends with a server error"
        );
        ResultCode::ServerError
    };
    core.node.batch_latency[core.shard].record(started.elapsed());
    out.send(&last_frame(result)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::FRAME_BYTES_MAX as BLOCK_BYTES_MAX;
    use apogee_wire::msg::info3;
    use apogee_wire::proto::{ProtoHeader, PROTO_HEADER_BYTES};

    #[test]
    fn rows_of_one_record_in_one_namespace_are_repeats() {
        let row = |index: u32, key: i64| BatchRow {
            index,
            digest: apogee_wire::Digest::of_integer("s", key),
            command: std::sync::Arc::new(Message::default()),
        };
        assert!(!repeats_a_record(&[(0, row(0, 1)), (0, row(1, 2))]));
        assert!(repeats_a_record(&[
            (0, row(0, 1)),
            (0, row(1, 2)),
            (0, row(2, 1))
        ]));
        // The same digest in two namespaces names two records.
        assert!(!repeats_a_record(&[(0, row(0, 1)), (1, row(1, 1))]));
    }

    #[test]
    fn an_empty_block_sends_no_frame() {
        assert!(RowBlock::new().into_frame().is_none());
    }

    #[test]
    fn a_block_frames_its_rows_with_their_indexes() {
        let mut block = RowBlock::new();
        block.push(7, Reply::code(ResultCode::NotFound));
        block.push(3, Reply::ok(2, 0, vec![]));
        assert!(!block.is_full());
        let (frame, rows) = block.into_frame().expect("two rows");
        assert_eq!(rows, 2);
        let head: [u8; PROTO_HEADER_BYTES] = frame[..PROTO_HEADER_BYTES].try_into().unwrap();
        let header = ProtoHeader::decode(&head).expect("a valid header");
        assert_eq!(header.body_bytes as usize, frame.len() - PROTO_HEADER_BYTES);
        let body = &frame[PROTO_HEADER_BYTES..];
        let first = Message::decode(&body[..22]).expect("row 7");
        assert_eq!(
            (first.header.result_code, first.header.transaction_ttl),
            (2, 7)
        );
        let second = Message::decode(&body[22..]).expect("row 3");
        assert_eq!(second.header.transaction_ttl, 3);
        assert_eq!(second.header.generation, 2);
        assert_eq!(second.header.info3 & info3::LAST, 0, "rows are not LAST");
    }

    #[test]
    fn a_block_is_full_at_its_byte_limit() {
        let mut block = RowBlock::new();
        let rows = BLOCK_BYTES_MAX / 22 + 1;
        for i in 0..rows {
            assert!(!block.is_full());
            block.push(i as u32, Reply::code(ResultCode::NotFound));
        }
        assert!(block.is_full());
    }
}
