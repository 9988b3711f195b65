//! Scans (spec §8): parses a partition scan request once on the connection's core, fans its
//! partitions out to the shards that own them (`shard`), and streams their record frames to
//! the client, then the LAST frame. Background scans (write ops applied to every matching
//! record) answer at once and run as a job (`jobs`), polled with `query-show`.
//!
//! Memory is bounded per scan: each shard fills one frame at a time and the channel back to
//! the connection holds at most [`FRAMES_IN_FLIGHT_MAX`] frames, so a slow reader slows the
//! shards instead of growing a buffer; a client that goes away drops the channel and every
//! shard stops at its next frame. This module must never walk a partition on a core that does
//! not own it, and never send a record twice in one request.

pub mod jobs;
pub mod shard;

use std::rc::Rc;
use std::sync::Arc;

use apogee_wire::digest::PARTITION_COUNT;
use apogee_wire::msg::{info1, info2, Message, OpType};
use apogee_wire::{Digest, FieldType, ResultCode};

use crate::command::reply::stream_error_frame;
use crate::core::Core;
use crate::dispatch::ReplySink;
use crate::node::ShardWork;
use crate::stream::last_frame;
use jobs::Job;

/// Frames one scan may have queued towards its connection before its shards wait.
pub const FRAMES_IN_FLIGHT_MAX: usize = 4;

/// Scan and query fields this module reads (spec §3.2).
mod field {
    use apogee_wire::FieldType;
    pub const TASK_ID: FieldType = FieldType(7);
    pub const SCAN_OPTIONS: FieldType = FieldType(8);
    pub const RECORDS_PER_SECOND: FieldType = FieldType(10);
    pub const PID_ARRAY: FieldType = FieldType(11);
    pub const DIGEST_ARRAY: FieldType = FieldType(12);
    pub const MAX_RECORDS: FieldType = FieldType(13);
}

/// What a scan returns or does for each record, shared by every shard it runs on.
pub struct ScanSpec {
    pub namespace: usize,
    /// Only records of this set (`None`: the whole namespace).
    pub set: Option<Vec<u8>>,
    /// Bins to return (`None`: all bins).
    pub bins: Option<Vec<Vec<u8>>>,
    /// Metadata only (info1 GET_NOBINDATA).
    pub no_bins: bool,
    /// The filter expression, parsed once for every record.
    pub filter: Option<apogee_ops::exp::Exp>,
    /// Records sampled, in percent of those matching (legacy field 8; 100: all).
    pub sample_pct: u8,
    /// Most records per second over the whole node (0: no limit).
    pub records_per_second: u32,
    /// Background scans: the write command applied to each record (`None`: foreground).
    pub write: Option<Message>,
    /// A query's secondary-index filter (`None`: a scan of every record).
    pub index: Option<Arc<crate::sindex::query::IndexQuery>>,
    /// A stream UDF the records go through instead of being sent (UDF_OP 1).
    pub aggregate: Option<crate::udf::Call>,
}

/// A parsed scan request.
pub struct ScanRequest {
    pub spec: ScanSpec,
    pub task_id: u64,
    /// `(partition, resume strictly below this digest)`, in the order the client listed them.
    pub partitions: Vec<(u16, Option<Digest>)>,
    /// Most records to return in all (`None`: no limit).
    pub max_records: Option<u64>,
}

/// The partitions of one scan that one shard owns, with where their frames go.
pub struct ShardScan {
    pub spec: Arc<ScanSpec>,
    pub partitions: Vec<(u16, Option<Digest>)>,
    pub job: Arc<Job>,
    /// How many shards run this scan: each keeps to its share of `records_per_second`.
    pub shards: u32,
    /// Encoded frames towards the connection (foreground); `None` for background scans. A
    /// shard also holds `done` while it runs: when every sender is gone, the scan is over.
    pub frames: Option<flume::Sender<Vec<u8>>>,
    pub done: flume::Sender<()>,
}

/// Why a scan request is refused: its result code, in the LAST frame.
fn parse(core: &Core, msg: &Message) -> Result<ScanRequest, ResultCode> {
    let h = &msg.header;
    let namespace = msg
        .field(FieldType::NAMESPACE)
        .and_then(|n| core.node.config.namespace_index(n))
        .ok_or(ResultCode::Namespace)?;
    for f in &msg.fields {
        match f.field_type.0 {
            // ns, set, task id, scan options, socket timeout, rps, pids, digests, max, bvals,
            // bval array, filter.
            0 | 1 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 43 => {}
            // A secondary-index filter: index name, range, context, expression, type.
            21..=24 | 26 => {}
            // A UDF: applied to each record (background) or to the stream of records
            // (aggregation).
            30..=33 => {}
            _ => return Err(ResultCode::Parameter),
        }
    }
    let set = msg
        .field(FieldType::SET)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec);
    if set
        .as_ref()
        .is_some_and(|s| s.len() > apogee_engine::record::SET_NAME_BYTES_MAX)
    {
        return Err(ResultCode::Parameter);
    }
    let be_u64 = |data: &[u8]| -> Result<u64, ResultCode> {
        Ok(u64::from_be_bytes(
            data.try_into().map_err(|_| ResultCode::Parameter)?,
        ))
    };
    let task_id = match msg.field(field::TASK_ID) {
        Some(d) => be_u64(d)?,
        None => rand_task_id(),
    };
    let max_records = match msg.field(field::MAX_RECORDS) {
        Some(d) => Some(be_u64(d)?).filter(|&n| n > 0),
        None => None,
    };
    let records_per_second = match msg.field(field::RECORDS_PER_SECOND) {
        Some(d) => u32::from_be_bytes(d.try_into().map_err(|_| ResultCode::Parameter)?),
        None => 0,
    };
    let sample_pct = match msg.field(field::SCAN_OPTIONS) {
        Some([_, pct, ..]) if (1..=100).contains(pct) => *pct,
        Some([_, _, ..]) => return Err(ResultCode::Parameter),
        Some(_) => return Err(ResultCode::Parameter),
        None => 100,
    };
    let partitions = partitions(msg)?;

    let udf_op = match msg.field(crate::udf::field::UDF_OP) {
        None => None,
        Some([op]) => Some(*op),
        Some(_) => return Err(ResultCode::Parameter),
    };
    let background = h.info2 & info2::WRITE != 0;
    // UDF_OP 1: a stream UDF (aggregation) over the records.
    let aggregate = if udf_op == Some(1) {
        Some(crate::udf::Call::of(msg)?)
    } else {
        None
    };
    let write = if aggregate.is_some() {
        None
    } else if let Some(op) = udf_op {
        // UDF_OP 2: a background UDF, run on every record as a record UDF.
        if op != 2 {
            return Err(ResultCode::Parameter);
        }
        let mut w = Message {
            header: msg.header,
            ..Default::default()
        };
        w.header.info1 = 0;
        w.header.info2 = info2::WRITE;
        w.header.info3 &= !shard::INFO3_PARTITION_DONE;
        use crate::udf::field as udf;
        for t in [
            FieldType::NAMESPACE,
            udf::PACKAGE,
            udf::FUNCTION,
            udf::ARGLIST,
        ] {
            if let Some(data) = msg.field(t) {
                w.fields.push(apogee_wire::msg::Field {
                    field_type: t,
                    data: data.to_vec(),
                });
            }
        }
        crate::command::validate(&w)?;
        Some(w)
    } else if background {
        if msg.ops.is_empty() || msg.ops.iter().any(|op| op.op_type.is_read()) {
            return Err(ResultCode::Parameter);
        }
        let mut w = Message {
            header: msg.header,
            ops: msg.ops.clone(),
            ..Default::default()
        };
        w.header.info1 = 0;
        w.header.info3 &= !shard::INFO3_PARTITION_DONE;
        w.fields.push(apogee_wire::msg::Field {
            field_type: FieldType::NAMESPACE,
            data: msg.field(FieldType::NAMESPACE).unwrap_or_default().to_vec(),
        });
        crate::command::validate(&w)?;
        Some(w)
    } else {
        None
    };
    let bins = if background || aggregate.is_some() || msg.ops.is_empty() {
        None
    } else {
        if msg.ops.iter().any(|op| op.op_type != OpType::READ) {
            // Read projections other than plain bin reads (server 8.1.2+).
            return Err(ResultCode::UnsupportedFeature);
        }
        Some(msg.ops.iter().map(|op| op.name.clone()).collect())
    };
    // A malformed filter fails the request up front, as Aerospike's does, instead of
    // filtering every record out.
    let filter = match msg.field(FieldType::FILTER_EXP) {
        Some(f) => Some(apogee_ops::exp::parse(f).map_err(|e| crate::command::op_error_code(&e))?),
        None => None,
    };
    let index =
        crate::sindex::query::parse_if_any(core, namespace, set.as_deref(), msg)?.map(Arc::new);
    Ok(ScanRequest {
        spec: ScanSpec {
            namespace,
            set,
            bins,
            no_bins: h.info1 & info1::GET_NOBINDATA != 0,
            filter,
            sample_pct,
            records_per_second,
            write,
            index,
            aggregate,
        },
        task_id,
        partitions,
        max_records,
    })
}

/// The partitions a request lists: field 11 (whole partitions, u16 LE each) then field 12
/// (20-byte digests: resume strictly below each, in its partition). Neither: every partition.
fn partitions(msg: &Message) -> Result<Vec<(u16, Option<Digest>)>, ResultCode> {
    let pids = msg.field(field::PID_ARRAY);
    let digests = msg.field(field::DIGEST_ARRAY);
    if pids.is_none() && digests.is_none() {
        return Ok((0..PARTITION_COUNT).map(|p| (p, None)).collect());
    }
    let mut out = Vec::new();
    let mut seen = vec![false; usize::from(PARTITION_COUNT)];
    let mut add = |pid: u16, digest: Option<Digest>| -> Result<(), ResultCode> {
        let i = usize::from(pid);
        if i >= usize::from(PARTITION_COUNT) || std::mem::replace(&mut seen[i], true) {
            return Err(ResultCode::Parameter);
        }
        out.push((pid, digest));
        Ok(())
    };
    if let Some(p) = pids {
        if p.len() % 2 != 0 {
            return Err(ResultCode::Parameter);
        }
        for pid in p.chunks_exact(2) {
            add(u16::from_le_bytes([pid[0], pid[1]]), None)?;
        }
    }
    if let Some(d) = digests {
        if d.len() % 20 != 0 {
            return Err(ResultCode::Parameter);
        }
        for digest in d.chunks_exact(20) {
            let digest = Digest::from_slice(digest).ok_or(ResultCode::Parameter)?;
            add(digest.partition().0, Some(digest))?;
        }
    }
    if out.is_empty() {
        return Err(ResultCode::Parameter);
    }
    Ok(out)
}

/// A task id for a request that names none.
fn rand_task_id() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) | 1
}

/// Sends each shard its partitions; partitions this node does not master get an UNAVAILABLE
/// marker from the returned list, so the client retries them elsewhere.
async fn fan_out(
    core: &Rc<Core>,
    req: ScanRequest,
    job: &Arc<Job>,
    frames: Option<flume::Sender<Vec<u8>>>,
) -> (flume::Receiver<()>, Vec<u16>) {
    let (done, finished) = flume::bounded(1);
    let spec = Arc::new(req.spec);
    let mut groups: Vec<Vec<(u16, Option<Digest>)>> =
        (0..core.node.config.cores).map(|_| Vec::new()).collect();
    let mut unavailable = Vec::new();
    let table = core.node.partitions.load_full();
    for (pid, digest) in req.partitions {
        if table.is_master(spec.namespace, pid) {
            groups[core.node.shard_of(pid)].push((pid, digest));
        } else {
            unavailable.push(pid);
        }
    }
    let shards = groups.iter().filter(|g| !g.is_empty()).count() as u32;
    for (shard, partitions) in groups.into_iter().enumerate() {
        if partitions.is_empty() {
            continue;
        }
        let work = ShardScan {
            spec: spec.clone(),
            partitions,
            job: job.clone(),
            shards,
            frames: frames.clone(),
            done: done.clone(),
        };
        if shard == core.shard {
            glommio::spawn_local(shard::run(core.clone(), work)).detach();
        } else if core.node.inboxes[shard]
            .send_async(ShardWork::Scan(work))
            .await
            .is_err()
        {
            tracing::error!(
                shard,
                "a shard's inbox is closed; its scan partitions are skipped"
            );
            job.fail();
        }
    }
    (finished, unavailable)
}

/// Answers one scan request: record frames as the shards fill them, then LAST. `Err` only
/// when writing to the client failed (the connection is then closed, which stops the shards).
pub async fn serve(core: &Rc<Core>, msg: Message, out: &mut ReplySink<'_>) -> std::io::Result<()> {
    if msg.header.info3 & shard::INFO3_PARTITION_DONE == 0
        && msg.header.info2 & info2::WRITE == 0
        && msg.field(crate::udf::field::UDF_OP).is_none()
    {
        // A client that does not understand partition-done markers (pre-4.9 scans).
        return out
            .send(&stream_error_frame(ResultCode::UnsupportedFeature))
            .await;
    }
    let req = match parse(core, &msg) {
        Ok(r) => r,
        Err(rc) => {
            let fields: Vec<u8> = msg.fields.iter().map(|f| f.field_type.0).collect();
            tracing::debug!(
                code = rc as u8,
                ?fields,
                info1 = msg.header.info1,
                info2 = msg.header.info2,
                info3 = msg.header.info3,
                ops = msg.ops.len(),
                "scan refused"
            );
            return out.send(&stream_error_frame(rc)).await;
        }
    };
    let peer = out.peer();
    drop(msg);
    let job = Job::new(
        &core.node,
        req.task_id,
        &req.spec,
        req.partitions.len(),
        req.max_records,
        peer,
    );
    let job = match core.node.jobs.register(job) {
        Ok(job) => job,
        Err(rc) => return out.send(&stream_error_frame(rc)).await,
    };
    if req.spec.write.is_some() {
        let (finished, _unavailable) = fan_out(core, req, &job, None).await;
        glommio::spawn_local(async move {
            let _ = finished.recv_async().await;
            job.finish();
        })
        .detach();
        return out.send(&last_frame(ResultCode::Ok)).await;
    }
    let _end = jobs::EndOnDrop(job.clone());
    let (frames, incoming) = flume::bounded(FRAMES_IN_FLIGHT_MAX);
    let (finished, unavailable) = fan_out(core, req, &job, Some(frames)).await;
    drop(finished);
    if !unavailable.is_empty() {
        let mut b = crate::stream::FrameBuilder::new();
        for pid in unavailable {
            b.push(&shard::partition_done(
                pid,
                ResultCode::PartitionUnavailable,
            ));
        }
        if let Some((frame, _)) = b.into_frame() {
            out.send(&frame).await?;
        }
    }
    // Every shard's sender dropped (partitions done or shard gone) ends the stream.
    while let Ok(frame) = incoming.recv_async().await {
        if let Err(e) = out.send(&frame).await {
            job.abort("client-disconnected");
            return Err(e);
        }
    }
    let result = job.finish();
    out.send(&last_frame(result)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_wire::msg::Field;

    fn msg_with(fields: Vec<(u8, Vec<u8>)>) -> Message {
        Message {
            fields: fields
                .into_iter()
                .map(|(t, data)| Field {
                    field_type: FieldType(t),
                    data,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn partition_lists_are_read_and_checked() {
        let all = partitions(&msg_with(vec![])).unwrap();
        assert_eq!(all.len(), usize::from(PARTITION_COUNT));
        let two = partitions(&msg_with(vec![(11, vec![100, 0, 101, 0])])).unwrap();
        assert_eq!(two, vec![(100, None), (101, None)]);
        let d = Digest::of_integer("demo", 7);
        let resumed = partitions(&msg_with(vec![(12, d.0.to_vec())])).unwrap();
        assert_eq!(resumed, vec![(d.partition().0, Some(d))]);
        let bad = |fields| partitions(&msg_with(fields)).unwrap_err();
        assert_eq!(bad(vec![(11, vec![1, 0, 2])]), ResultCode::Parameter);
        assert_eq!(
            bad(vec![(11, vec![0, 0x10])]),
            ResultCode::Parameter,
            "4096"
        );
        assert_eq!(
            bad(vec![(11, vec![5, 0, 5, 0])]),
            ResultCode::Parameter,
            "twice"
        );
        assert_eq!(bad(vec![(12, vec![0; 19])]), ResultCode::Parameter);
        assert_eq!(bad(vec![(11, vec![])]), ResultCode::Parameter, "empty");
    }
}
