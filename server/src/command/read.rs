//! Reads: get (all bins), select (named bins), exists and header reads (spec §6.3, §6.7).

use apogee_engine::shard::ShardStore;
use apogee_wire::msg::{info1, info2, Message, Op, OpType};
use apogee_wire::{Digest, ResultCode};

use super::{store_error_code, Reply};

/// A bin as a reply op.
pub fn bin_op(op_type: OpType, bin: &apogee_engine::Bin) -> Op {
    Op {
        op_type,
        particle_type: bin.particle_type,
        name: bin.name.clone(),
        value: bin.value.clone(),
    }
}

pub async fn run(store: &ShardStore, msg: &Message, digest: Digest) -> Result<Reply, ResultCode> {
    let h = &msg.header;
    if let Some(op) = msg.ops.iter().find(|op| op.op_type != OpType::READ) {
        // Only READ ops are possible here after validation, but writes need info2 WRITE.
        tracing::debug!(op = op.op_type.0, "non-read op in a read command");
        return Err(ResultCode::Parameter);
    }
    if h.info1 & info1::GET_NOBINDATA != 0 {
        // Metadata only: no need to touch the record's bytes. Any ops are ignored.
        let meta = store.meta(&digest).ok_or(ResultCode::NotFound)?.meta;
        return Ok(Reply::ok(meta.generation, meta.void_time, vec![]));
    }
    let get_all = h.info1 & info1::GET_ALL != 0;
    if !get_all && msg.ops.is_empty() {
        return Err(ResultCode::Parameter);
    }
    let record = store
        .get(&digest)
        .await
        .map_err(|e| store_error_code(&e))?
        .ok_or(ResultCode::NotFound)?;
    let ops = if get_all {
        record
            .bins
            .iter()
            .map(|b| bin_op(OpType::READ, b))
            .collect()
    } else {
        let respond_all = h.info2 & info2::RESPOND_ALL_OPS != 0;
        msg.ops
            .iter()
            .filter_map(|op| match record.bins.iter().find(|b| b.name == op.name) {
                Some(b) => Some(bin_op(op.op_type, b)),
                None if respond_all => Some(Op {
                    op_type: op.op_type,
                    particle_type: 0,
                    name: op.name.clone(),
                    value: vec![],
                }),
                None => None,
            })
            .collect()
    };
    Ok(Reply::ok(
        record.meta.generation,
        record.meta.void_time,
        ops,
    ))
}
