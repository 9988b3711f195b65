//! Reads: get (all bins), select (named bins), exists and header reads, and read-only operate
//! with list/map read ops (spec §6.3, §6.7).

use apogee_engine::shard::ShardStore;
use apogee_wire::msg::{info1, info2, Message, Op, OpType};
use apogee_wire::{Digest, ResultCode};

use super::{filter, op_error_code, store_error_code, Reply};

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

fn nil_op(op: &Op) -> Op {
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
    } else if op.op_type == OpType::BIT_READ {
        let bin = bin.map(|b| (b.particle_type, b.value.as_slice()));
        apogee_ops::bits::apply(bin, &op.value, false)
            .map_err(|e| op_error_code(&e))?
            .result
            .map(|v| value_op(op, &v))
    } else if op.op_type == OpType::HLL_READ {
        let bin = bin.map(|b| (b.particle_type, b.value.as_slice()));
        apogee_ops::hll::apply(bin, &op.value, false)
            .map_err(|e| op_error_code(&e))?
            .result
            .map(|v| value_op(op, &v))
    } else if op.op_type == OpType::CDT_READ {
        let bin = bin.map(|b| (b.particle_type, b.value.as_slice()));
        apogee_ops::cdt::apply(bin, &op.value, false)
            .map_err(|e| op_error_code(&e))?
            .result
            .map(|v| value_op(op, &v))
    } else {
        bin.map(|b| bin_op(op.op_type, b))
    };
    Ok(result.or_else(|| respond_all.then(|| nil_op(op))))
}

pub async fn run(store: &ShardStore, msg: &Message, digest: Digest) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    if let Some(op) = msg.ops.iter().find(|op| {
        !matches!(
            op.op_type,
            OpType::READ
                | OpType::CDT_READ
                | OpType::EXP_READ
                | OpType::BIT_READ
                | OpType::HLL_READ
        )
    }) {
        // Only READ ops are possible here after validation, but writes need info2 WRITE.
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
        record
            .bins
            .iter()
            .map(|b| bin_op(OpType::READ, b))
            .collect()
    } else {
        let respond_all = h.info2 & info2::RESPOND_ALL_OPS != 0;
        let mut ops = Vec::with_capacity(msg.ops.len());
        for op in &msg.ops {
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
