//! Reads: get (all bins), select (named bins), exists and header reads, and read-only operate
//! with list/map read ops (spec §6.3, §6.7).

use apogee_engine::shard::ShardStore;
use apogee_wire::msg::{info1, info2, Message, Op, OpType};
use apogee_wire::{Digest, ResultCode};

use super::{
    filter, op_error_code, store_error_code, value_op_family, Reply, WorkBudget, WriteLimits,
};
use apogee_engine::{clock, RecordMeta};

/// A bin as a reply op.
pub fn bin_op(op_type: OpType, bin: &apogee_engine::Bin) -> Op {
    Op {
        op_type,
        particle_type: bin.particle_type,
        name: bin.name.clone(),
        value: bin.value.clone(),
    }
}

/// An op's result value as a reply op named like the op.
pub fn value_op(op: &Op, v: &apogee_ops::Value) -> Op {
    let (particle_type, value) = v.to_particle();
    Op {
        op_type: op.op_type,
        particle_type,
        name: op.name.clone(),
        value,
    }
}

/// A reply op with no value, for an op that produced none under RESPOND_ALL_OPS.
pub fn nil_op(op: &Op) -> Op {
    Op {
        op_type: op.op_type,
        particle_type: 0,
        name: op.name.clone(),
        value: vec![],
    }
}

/// The reply op (if any) of one read or CDT read op against a stored record.
fn read_op(
    record: &apogee_engine::Record,
    op: &Op,
    respond_all: bool,
) -> Result<Option<Op>, ResultCode> {
    let bin = record.bins.iter().find(|b| b.name == op.name);
    let result = if op.op_type == OpType::EXP_READ {
        let meta = filter::meta_of(record);
        let view = filter::View {
            bins: &record.bins,
            meta: &meta,
        };
        filter::evaluate_op(&op.value, &view)?
            .0
            .map(|v| value_op(op, &v))
    } else if let Some((family, _)) = value_op_family(op.op_type) {
        let bin = bin.map(|b| (b.particle_type, b.value.as_slice()));
        apogee_ops::apply(family, bin, &op.value, false)
            .map_err(|e| op_error_code(&e))?
            .result
            .map(|v| value_op(op, &v))
    } else {
        bin.map(|b| bin_op(op.op_type, b))
    };
    Ok(result.or_else(|| respond_all.then(|| nil_op(op))))
}

/// Whether a read with `read-touch-ttl-percent` = `pct` (the header's TTL field on reads;
/// 0 and negative values mean "no touch") must touch a record: when no more than `pct` percent
/// of the TTL it was last written with remains.
pub fn read_touch_due(pct: u32, meta: &RecordMeta, now_secs: u32) -> Option<u32> {
    let pct = i64::from(pct as i32);
    if !(1..=100).contains(&pct) || meta.void_time == 0 {
        return None;
    }
    let written = (meta.last_update_ms / 1000) as i64;
    let ttl = i64::from(meta.void_time) - written;
    let remaining = i64::from(meta.void_time) - i64::from(now_secs);
    (ttl > 0 && remaining * 100 <= ttl * pct).then_some(ttl as u32)
}

/// Touches the record (a new version with its TTL restarted) after a read that asked for it.
/// Best effort: the read has succeeded whatever happens here.
async fn read_touch(
    store: &ShardStore,
    limits: WriteLimits,
    msg: &Message,
    digest: Digest,
    meta: &RecordMeta,
    image: super::Image<'_>,
) {
    let Some(ttl) = read_touch_due(msg.header.record_ttl, meta, clock::now_secs()) else {
        return;
    };
    let mut touch = Message::default();
    touch.header.info2 = info2::WRITE;
    touch.header.record_ttl = ttl;
    touch.ops = vec![Op {
        op_type: OpType::TOUCH,
        particle_type: 0,
        name: vec![],
        value: vec![],
    }];
    // The touched version goes to the replicas when the caller captures it (`image`).
    if let Err(rc) = super::write::run(store, limits, &touch, digest, image).await {
        tracing::debug!(code = rc as u8, "read-touch skipped");
    }
}

pub async fn run(
    store: &ShardStore,
    limits: WriteLimits,
    msg: &Message,
    digest: Digest,
    image: super::Image<'_>,
) -> Result<Reply, ResultCode> {
    let reply = read(store, msg, digest).await?;
    if msg.header.record_ttl != 0 {
        if let Some(meta) = store.meta(&digest).map(|e| e.meta) {
            read_touch(store, limits, msg, digest, &meta, image).await;
        }
    }
    Ok(reply)
}

async fn read(store: &ShardStore, msg: &Message, digest: Digest) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    if let Some(op) = msg.ops.iter().find(|op| !op.op_type.is_read()) {
        // Write-type ops need info2 WRITE (the string ops 17 and 19 were refused by validate).
        tracing::debug!(op = op.op_type.0, "non-read op in a read command");
        return Err(ResultCode::Parameter);
    }
    if h.info1 & info1::GET_NOBINDATA != 0 && !filter::has_filter(msg) {
        // Metadata only: no need to touch the record's bytes. Any ops are ignored.
        let meta = store.meta(&digest).ok_or(ResultCode::NotFound)?.meta;
        return Ok(Reply::ok(meta.generation, meta.void_time, vec![]));
    }
    let get_all = h.info1 & info1::GET_ALL != 0;
    let header_only = h.info1 & info1::GET_NOBINDATA != 0;
    if !get_all && !header_only && msg.ops.is_empty() {
        return Err(ResultCode::Parameter);
    }
    if get_all && !header_only && !filter::has_filter(msg) {
        // Every bin, no filter: encoded straight from the stored bytes.
        return store
            .view(&digest, |record| Reply::all_bins(&record))
            .await
            .map_err(|e| store_error_code(&e))?
            .ok_or(ResultCode::NotFound);
    }
    let record = store
        .get(&digest)
        .await
        .map_err(|e| store_error_code(&e))?
        .ok_or(ResultCode::NotFound)?;
    filter::check(msg, &record)?;
    if header_only {
        return Ok(Reply::ok(
            record.meta.generation,
            record.meta.void_time,
            vec![],
        ));
    }
    let ops = if get_all {
        // The record is this read's own copy: its bins move into the reply, not copied again.
        let (generation, void_time) = (record.meta.generation, record.meta.void_time);
        let ops = (record.bins.into_iter())
            .map(|b| Op {
                op_type: OpType::READ,
                particle_type: b.particle_type,
                name: b.name,
                value: b.value,
            })
            .collect();
        return Ok(Reply::ok(generation, void_time, ops));
    } else {
        let respond_all = h.info2 & info2::RESPOND_ALL_OPS != 0;
        let mut ops = Vec::with_capacity(msg.ops.len());
        let mut budget = WorkBudget::default();
        let record_bytes: usize = record.bins.iter().map(|b| b.value.len()).sum();
        for op in &msg.ops {
            if op.op_type != OpType::READ {
                budget.charge(op.value.len() + record_bytes)?;
            }
            ops.extend(read_op(&record, op, respond_all)?);
        }
        ops
    };
    Ok(Reply::ok(
        record.meta.generation,
        record.meta.void_time,
        ops,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_touch_follows_the_documented_example() {
        // Written with a 10-hour TTL at t=0 (seconds); read-touch-ttl-percent 80 touches once
        // no more than 8 hours remain, i.e. from 2 hours after the write.
        let meta = RecordMeta {
            generation: 1,
            void_time: 1000 + 36_000,
            last_update_ms: 1000 * 1000,
        };
        assert_eq!(read_touch_due(80, &meta, 1000 + 7_199), None);
        assert_eq!(read_touch_due(80, &meta, 1000 + 7_200), Some(36_000));
        assert_eq!(read_touch_due(0, &meta, 1000 + 30_000), None);
        assert_eq!(
            read_touch_due(u32::MAX, &meta, 1000 + 30_000),
            None,
            "-1: never"
        );
        assert_eq!(read_touch_due(101, &meta, 1000 + 30_000), None);
        let forever = RecordMeta {
            void_time: 0,
            ..meta
        };
        assert_eq!(read_touch_due(100, &forever, 5000), None);
    }
}
