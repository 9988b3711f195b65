//! Writes and operate with the basic ops (spec §6.4, §6.6): put, touch, write / increment /
//! append / prepend / delete-bin / delete-record / read ops, under the exists and generation
//! policies.
//!
//! Every check happens before anything is appended, so a failed command changes nothing.

use std::collections::HashMap;

use apogee_engine::clock;
use apogee_engine::record::{Bin, Record, RecordMeta, UserKey};
use apogee_engine::shard::{Decision, ShardStore};
use apogee_wire::msg::{info1, info2, info3, particle, Message, Op, OpType};
use apogee_wire::{Digest, FieldType, ResultCode};

use super::read::{bin_op, nil_op, value_op};
use super::ttl::void_time_for;
use super::{
    filter, op_error_code, update_error_code, value_op_family, Reply, WorkBudget, WriteLimits,
};
use apogee_ops::exp::Meta;

use crate::sindex::cells::GeoCover;

/// Applies the GENERATION / GENERATION_GT policy against the stored generation (0 = missing).
pub fn check_generation(info2_bits: u8, wanted: u32, stored: u16) -> Result<(), ResultCode> {
    let stored = u32::from(stored);
    if info2_bits & info2::GENERATION != 0 && wanted != stored {
        return Err(ResultCode::Generation);
    }
    if info2_bits & info2::GENERATION_GT != 0 && wanted <= stored {
        return Err(ResultCode::Generation);
    }
    Ok(())
}

fn is_read_all(op: &Op, info1_bits: u8) -> bool {
    op.op_type == OpType::READ && op.name.is_empty() && info1_bits & info1::GET_ALL != 0
}

/// Refuses a list or map bin nested deeper than [`DEPTH_MAX`](apogee_ops::value::DEPTH_MAX)
/// (result 4): the official clients cannot read one back, and the server's own list and map
/// ops refuse it. Every list and map a write stores passes here: put values, list/map op
/// results, expression results.
fn check_collection(particle_type: u8, bytes: &[u8]) -> Result<(), ResultCode> {
    use apogee_ops::value::{check_nesting, ptype};
    if matches!(particle_type, ptype::LIST | ptype::MAP) {
        check_nesting(bytes).map_err(|e| op_error_code(&e))?;
    }
    Ok(())
}

/// Request-shape checks of the real server (spec §6.4 step 1).
fn check_request(msg: &Message, geo: &GeoCover) -> Result<(), ResultCode> {
    let h = &msg.header;
    if msg.ops.is_empty() {
        return Err(ResultCode::Parameter);
    }
    if msg.ops.iter().any(|op| op.op_type.is_read()) && h.info1 & info1::READ == 0 {
        return Err(ResultCode::Parameter);
    }
    let read_alls = msg.ops.iter().filter(|op| is_read_all(op, h.info1)).count();
    if h.info1 & info1::GET_ALL != 0 {
        let other_results = msg
            .ops
            .iter()
            .any(|op| op.op_type == OpType::READ && !is_read_all(op, h.info1));
        if read_alls != 1 || h.info2 & info2::RESPOND_ALL_OPS != 0 || other_results {
            return Err(ResultCode::Parameter);
        }
    }
    let replace = h.info3 & (info3::CREATE_OR_REPLACE | info3::REPLACE_ONLY) != 0;
    if replace {
        let forbidden = msg.ops.iter().any(|op| {
            matches!(
                op.op_type,
                OpType::TOUCH | OpType::INCR | OpType::APPEND | OpType::PREPEND | OpType::DELETE
            ) || (op.op_type == OpType::WRITE && op.particle_type == particle::NULL)
        });
        if forbidden {
            return Err(ResultCode::Parameter);
        }
    }
    for op in &msg.ops {
        let needs_name = value_op_family(op.op_type).is_some()
            || matches!(
                op.op_type,
                OpType::WRITE
                    | OpType::INCR
                    | OpType::APPEND
                    | OpType::PREPEND
                    | OpType::EXP_READ
                    | OpType::EXP_MODIFY
            );
        if needs_name && op.name.is_empty() {
            return Err(ResultCode::Parameter);
        }
        if op.op_type == OpType::WRITE {
            check_collection(op.particle_type, &op.value)?;
            check_geojson(op.particle_type, &op.value, geo)?;
        }
    }
    Ok(())
}

/// Refuses a GeoJSON bin value Aerospike would not store (result 160): one that does not
/// parse as a shape it knows, a polygon ring that crosses itself, or a region too large for
/// [`GeoCover::WRITE_CHECK`] ([`GeoCover::fits`]).
fn check_geojson(particle_type: u8, bytes: &[u8], geo: &GeoCover) -> Result<(), ResultCode> {
    if particle_type != apogee_ops::value::ptype::GEOJSON {
        return Ok(());
    }
    match apogee_ops::geo::validate(bytes) {
        Ok(None) => Ok(()),
        Ok(Some(shape)) if geo.fits(&shape) => Ok(()),
        _ => Err(ResultCode::GeoInvalidGeojson),
    }
}

/// The bins of a record being written, indexed by name so every op finds its bin at once: a
/// request may carry 65,535 ops, and a linear search per op would stall the core.
struct BinSet {
    bins: Vec<Bin>,
    pos: HashMap<Vec<u8>, usize>,
}

impl BinSet {
    fn new(bins: Vec<Bin>) -> BinSet {
        let pos = bins
            .iter()
            .enumerate()
            .map(|(i, b)| (b.name.clone(), i))
            .collect();
        BinSet { bins, pos }
    }

    fn get(&self, name: &[u8]) -> Option<&Bin> {
        self.pos.get(name).map(|&i| &self.bins[i])
    }

    fn set(&mut self, name: &[u8], particle_type: u8, value: Vec<u8>) {
        match self.pos.get(name) {
            Some(&i) => {
                self.bins[i].particle_type = particle_type;
                self.bins[i].value = value;
            }
            None => {
                self.pos.insert(name.to_vec(), self.bins.len());
                self.bins.push(Bin {
                    name: name.to_vec(),
                    particle_type,
                    value,
                });
            }
        }
    }

    /// Removes a bin; the last bin takes its place (clients do not depend on bin order).
    fn remove(&mut self, name: &[u8]) {
        if let Some(i) = self.pos.remove(name) {
            self.bins.swap_remove(i);
            if let Some(moved) = self.bins.get(i) {
                self.pos.insert(moved.name.clone(), i);
            }
        }
    }

    fn clear(&mut self) {
        self.bins.clear();
        self.pos.clear();
    }

    fn len(&self) -> usize {
        self.bins.len()
    }

    fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }
}

/// The 8-byte value of a stored integer or float bin.
fn eight_bytes(b: &Bin) -> Result<[u8; 8], ResultCode> {
    b.value
        .as_slice()
        .try_into()
        .map_err(|_| ResultCode::IncompatibleType)
}

/// The bin an INCR, APPEND or PREPEND op combines with, or `None` once the op has been done:
/// a missing bin simply takes the op's value, whatever its particle type (Aerospike checks no
/// type there: an INCR by a string, an APPEND of a map). A NULL value is refused (4) before the
/// bin is looked at; an existing bin must have the op's particle type, one of `kinds` (12).
fn combine_target<'a>(
    bins: &'a mut BinSet,
    op: &Op,
    kinds: [u8; 2],
) -> Result<Option<&'a Bin>, ResultCode> {
    if op.particle_type == particle::NULL {
        return Err(ResultCode::Parameter);
    }
    if bins.get(&op.name).is_none() {
        check_collection(op.particle_type, &op.value)?;
        bins.set(&op.name, op.particle_type, op.value.clone());
        return Ok(None);
    }
    let current = bins.get(&op.name).ok_or(ResultCode::ServerError)?;
    // A GeoJSON particle has no modify method in Aerospike: it answers a server error.
    if current.particle_type == apogee_ops::value::ptype::GEOJSON {
        return Err(ResultCode::ServerError);
    }
    if current.particle_type != op.particle_type || !kinds.contains(&op.particle_type) {
        return Err(ResultCode::IncompatibleType);
    }
    Ok(Some(current))
}

fn increment(bins: &mut BinSet, op: &Op) -> Result<(), ResultCode> {
    let Some(current) = combine_target(bins, op, [particle::INTEGER, particle::FLOAT])? else {
        return Ok(());
    };
    let arg: [u8; 8] = op
        .value
        .as_slice()
        .try_into()
        .map_err(|_| ResultCode::Parameter)?;
    let cur = eight_bytes(current)?;
    let value = if op.particle_type == particle::INTEGER {
        // Aerospike wraps on overflow.
        i64::from_be_bytes(cur)
            .wrapping_add(i64::from_be_bytes(arg))
            .to_be_bytes()
    } else {
        (f64::from_be_bytes(cur) + f64::from_be_bytes(arg)).to_be_bytes()
    };
    bins.set(&op.name, op.particle_type, value.to_vec());
    Ok(())
}

fn concat(bins: &mut BinSet, op: &Op, append: bool) -> Result<(), ResultCode> {
    let Some(current) = combine_target(bins, op, [particle::STRING, particle::BLOB])? else {
        return Ok(());
    };
    let value = if append {
        [current.value.as_slice(), op.value.as_slice()].concat()
    } else {
        [op.value.as_slice(), current.value.as_slice()].concat()
    };
    bins.set(&op.name, op.particle_type, value);
    Ok(())
}

/// An expression write op (spec §4.7): the value goes to the bin the op names, under the op's
/// create/update/delete flags.
fn expression_write(bins: &mut BinSet, op: &Op, meta: &Meta) -> Result<(), ResultCode> {
    use apogee_ops::exp::op_flag;
    // As Aerospike: CREATE_ONLY / UPDATE_ONLY are judged on the bin before the expression is
    // evaluated, so a refused op answers BIN_EXISTS / BIN_NOT_FOUND even when its expression
    // would have been unknown.
    let (e, flags) = filter::parse_op(&op.value)?;
    let exists = bins.get(&op.name).is_some();
    let refusal = if flags & op_flag::CREATE_ONLY != 0 && exists {
        Some(ResultCode::BinExists)
    } else if flags & op_flag::UPDATE_ONLY != 0 && !exists {
        Some(ResultCode::BinNotFound)
    } else {
        None
    };
    if let Some(rc) = refusal {
        return if flags & op_flag::POLICY_NO_FAIL != 0 {
            Ok(())
        } else {
            Err(rc)
        };
    }
    let view = filter::View {
        bins: &bins.bins,
        meta,
    };
    match filter::evaluate_parsed_op(&e, flags, &view)? {
        // Unknown under EVAL_NO_FAIL: nothing to write.
        None => {}
        Some(apogee_ops::Value::Nil) if flags & op_flag::ALLOW_DELETE != 0 => bins.remove(&op.name),
        Some(apogee_ops::Value::Nil) => return Err(ResultCode::OpNotApplicable),
        Some(v) => {
            let (particle_type, bytes) = v.to_particle();
            check_collection(particle_type, &bytes)?;
            bins.set(&op.name, particle_type, bytes);
        }
    }
    Ok(())
}

/// Applies the ops in request order to `bins`, returning the reply ops. `meta` is what
/// expressions see of the record.
fn apply_ops(msg: &Message, bins: &mut BinSet, meta: &Meta) -> Result<Vec<Op>, ResultCode> {
    let h = &msg.header;
    let respond_all = h.info2 & info2::RESPOND_ALL_OPS != 0;
    let mut out = Vec::new();
    let mut budget = WorkBudget::default();
    for op in &msg.ops {
        match op.op_type {
            OpType::CDT_READ
            | OpType::CDT_MODIFY
            | OpType::BIT_READ
            | OpType::BIT_MODIFY
            | OpType::HLL_READ
            | OpType::HLL_MODIFY => {
                budget.charge(op.value.len() + bins.get(&op.name).map_or(0, |b| b.value.len()))?
            }
            OpType::EXP_READ | OpType::EXP_MODIFY => budget
                .charge(op.value.len() + bins.bins.iter().map(|b| b.value.len()).sum::<usize>())?,
            _ => {}
        }
        match op.op_type {
            OpType::WRITE if op.particle_type == particle::NULL => bins.remove(&op.name),
            OpType::WRITE => bins.set(&op.name, op.particle_type, op.value.clone()),
            OpType::INCR => increment(bins, op)?,
            OpType::APPEND => concat(bins, op, true)?,
            OpType::PREPEND => concat(bins, op, false)?,
            OpType::DELETE => bins.clear(),
            // The real server gives TOUCH no reply op even with RESPOND_ALL_OPS.
            OpType::TOUCH => continue,
            OpType::READ if is_read_all(op, h.info1) => {
                out.extend(bins.bins.iter().map(|b| bin_op(OpType::READ, b)));
                continue;
            }
            OpType::READ => {
                match bins.get(&op.name) {
                    Some(b) => out.push(bin_op(op.op_type, b)),
                    None if respond_all => out.push(nil_op(op)),
                    None => {}
                }
                continue;
            }
            OpType::EXP_MODIFY => expression_write(bins, op, meta)?,
            OpType::EXP_READ => {
                let view = filter::View {
                    bins: &bins.bins,
                    meta,
                };
                match filter::evaluate_op(&op.value, &view)?.0 {
                    Some(v) => out.push(value_op(op, &v)),
                    None if respond_all => out.push(nil_op(op)),
                    None => {}
                }
                continue;
            }
            t => {
                let Some((family, modify)) = value_op_family(t) else {
                    unreachable!("op {} passed validation", t.0)
                };
                let bin = bins
                    .get(&op.name)
                    .map(|b| (b.particle_type, b.value.as_slice()));
                let outcome = apogee_ops::apply(family, bin, &op.value, modify)
                    .map_err(|e| op_error_code(&e))?;
                if let Some((particle_type, bytes)) = outcome.new_bin {
                    check_collection(particle_type, &bytes)?;
                    bins.set(&op.name, particle_type, bytes);
                }
                match outcome.result {
                    Some(v) => out.push(value_op(op, &v)),
                    None if respond_all => out.push(nil_op(op)),
                    None => {}
                }
                continue;
            }
        }
        if respond_all {
            out.push(nil_op(op));
        }
    }
    Ok(out)
}

/// Most bins one record may hold (Aerospike's limit). Also keeps every reply's op count, which
/// is a u16 on the wire, in range.
pub const BINS_PER_RECORD_MAX: usize = 32_767;

/// Decides what a write does to the record as it was read (`existing`): the new version to
/// append, a delete (the last bin removed) or nothing, and the reply. Pure: no I/O, no await.
fn plan(
    ns: WriteLimits,
    msg: &Message,
    digest: Digest,
    existing: Option<Record>,
    now: u32,
) -> Result<(Decision, Reply), ResultCode> {
    let h = &msg.header;
    let has_touch = msg.ops.iter().any(|op| op.op_type == OpType::TOUCH);
    let must_exist = h.info3 & (info3::UPDATE_ONLY | info3::REPLACE_ONLY) != 0 || has_touch;
    if existing.is_none() && must_exist {
        return Err(ResultCode::NotFound);
    }
    if existing.is_some() && h.info2 & info2::CREATE_ONLY != 0 {
        return Err(ResultCode::RecordExists);
    }
    if let Some(r) = &existing {
        filter::check(msg, r)?;
    }
    let stored_generation = existing.as_ref().map_or(0, |r| r.meta.generation);
    check_generation(h.info2, h.generation, stored_generation)?;
    let void_time = void_time_for(
        h.record_ttl,
        existing.as_ref().map(|r| r.meta.void_time),
        ns.default_ttl,
        now,
    )
    .ok_or(ResultCode::Parameter)?;
    let replace = h.info3 & (info3::CREATE_OR_REPLACE | info3::REPLACE_ONLY) != 0;
    let mut bins = BinSet::new(match (&existing, replace) {
        (Some(r), false) => r.bins.clone(),
        _ => Vec::new(),
    });
    let meta = match &existing {
        Some(r) => filter::meta_of(r),
        None => Meta {
            digest: digest.0,
            set_name: msg.field(FieldType::SET).unwrap_or_default().to_vec(),
            now_ms: clock::now_ms(),
            ..Default::default()
        },
    };
    let reply_ops = apply_ops(msg, &mut bins, &meta)?;
    if bins.len() > BINS_PER_RECORD_MAX {
        return Err(ResultCode::Parameter);
    }

    if bins.is_empty() && existing.is_none() {
        // Aerospike refuses to create a record with no bins: NOT_FOUND, as for a touch.
        return Err(ResultCode::NotFound);
    }
    if bins.is_empty() {
        // No bins left: the record is deleted (a tombstone; `existing` is there, see above).
        return Ok((Decision::Delete, Reply::ok(0, 0, reply_ops)));
    }

    let generation = next_generation(stored_generation);
    let set_name = msg
        .field(FieldType::SET)
        .map(<[u8]>::to_vec)
        .or_else(|| existing.as_ref().map(|r| r.set_name.clone()))
        .unwrap_or_default();
    let user_key = msg
        .field(FieldType::KEY)
        .map(|k| UserKey {
            particle_type: k[0],
            bytes: k[1..].to_vec(),
        })
        .or_else(|| existing.as_ref().and_then(|r| r.user_key.clone()));
    let record = Record {
        digest,
        meta: RecordMeta {
            generation,
            void_time,
            last_update_ms: clock::now_ms(),
        },
        set_name,
        user_key,
        bins: bins.bins,
        tombstone: false,
    };
    if record.encoded_bytes() > ns.max_record_size {
        return Err(ResultCode::RecordTooBig);
    }
    Ok((
        Decision::Write(record),
        Reply::ok(generation, void_time, reply_ops),
    ))
}

/// The generation a write gives a record stored at `stored` (0: none): one more, wrapping
/// past 65,535 to 1.
pub fn next_generation(stored: u16) -> u16 {
    match stored {
        0 | u16::MAX => 1,
        g => g + 1,
    }
}

/// What an update's decision stores, for the replicas: the new record, a tombstone as
/// `update` writes it (the read version's generation, a time of now) for a delete of a record
/// that was there (`generation`), or nothing.
pub fn image_of(decision: &Decision, digest: Digest, generation: Option<u16>) -> Option<Record> {
    match (decision, generation) {
        (Decision::Write(r), _) => Some(r.clone()),
        (Decision::Delete, Some(g)) => Some(Record::tombstone(digest, g, clock::now_ms())),
        (Decision::Delete, None) | (Decision::Keep, _) => None,
    }
}

/// Read, decide, append: the engine's read-modify-write (`ShardStore::update`) re-reads and
/// decides again when another write changed the record meanwhile, and answers KEY_BUSY (14)
/// when that keeps happening, as Aerospike does for hot keys.
pub async fn run(
    store: &ShardStore,
    ns: WriteLimits,
    msg: &Message,
    digest: Digest,
    image: super::Image<'_>,
) -> Result<Reply, ResultCode> {
    check_request(msg, &GeoCover::WRITE_CHECK)?;
    let Some(image) = image else {
        return store
            .update(&digest, |existing| {
                plan(ns, msg, digest, existing, clock::now_secs())
            })
            .await
            .map_err(update_error_code);
    };
    // The last decision taken is the one appended (an earlier one was dropped for a retry),
    // so each decision overwrites the image.
    let reply = store
        .update(&digest, |existing| {
            let generation = existing.as_ref().map(|r| r.meta.generation);
            let (decision, reply) = plan(ns, msg, digest, existing, clock::now_secs())?;
            *image = image_of(&decision, digest, generation);
            Ok((decision, reply))
        })
        .await
        .map_err(update_error_code);
    if reply.is_err() {
        *image = None;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_policies() {
        assert!(check_generation(0, 0, 5).is_ok());
        assert!(check_generation(info2::GENERATION, 5, 5).is_ok());
        assert_eq!(
            check_generation(info2::GENERATION, 4, 5),
            Err(ResultCode::Generation)
        );
        assert!(check_generation(info2::GENERATION_GT, 6, 5).is_ok());
        assert_eq!(
            check_generation(info2::GENERATION_GT, 5, 5),
            Err(ResultCode::Generation)
        );
        assert_eq!(
            check_generation(info2::GENERATION, 1, 0),
            Err(ResultCode::Generation)
        );
    }

    fn op(t: OpType, p: u8, name: &str, v: Vec<u8>) -> Op {
        Op {
            op_type: t,
            particle_type: p,
            name: name.as_bytes().to_vec(),
            value: v,
        }
    }

    #[test]
    fn ops_apply_in_order() {
        let mut m = Message::default();
        m.header.info1 = info1::READ;
        m.header.info2 = info2::WRITE;
        m.ops = vec![
            op(
                OpType::INCR,
                particle::INTEGER,
                "a",
                5i64.to_be_bytes().to_vec(),
            ),
            op(OpType::APPEND, particle::STRING, "s", b"x".to_vec()),
            op(OpType::PREPEND, particle::STRING, "s", b"p".to_vec()),
            op(OpType::READ, 0, "a", vec![]),
            op(OpType::READ, 0, "s", vec![]),
            op(OpType::TOUCH, 0, "", vec![]),
        ];
        let mut bins = BinSet::new(vec![Bin {
            name: b"a".to_vec(),
            particle_type: particle::INTEGER,
            value: 6i64.to_be_bytes().to_vec(),
        }]);
        let meta = Meta::default();
        let out = apply_ops(&m, &mut bins, &meta).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, 11i64.to_be_bytes());
        assert_eq!(out[1].value, b"px");
        // Incompatible types.
        m.ops = vec![op(
            OpType::INCR,
            particle::INTEGER,
            "s",
            1i64.to_be_bytes().to_vec(),
        )];
        assert_eq!(
            apply_ops(&m, &mut bins, &meta),
            Err(ResultCode::IncompatibleType)
        );
        m.ops = vec![op(OpType::APPEND, particle::STRING, "a", b"x".to_vec())];
        assert_eq!(
            apply_ops(&m, &mut bins, &meta),
            Err(ResultCode::IncompatibleType)
        );
    }

    /// Aerospike CE 8.1: INCR / APPEND / PREPEND on a missing bin store the op's value whatever
    /// its type; on an existing bin of another type, or a non-numeric INCR, 12; a NULL value, 4;
    /// an existing GeoJSON bin, 1.
    #[test]
    fn scalar_modify_of_missing_and_mismatched_bins() {
        let mut m = Message::default();
        m.header.info2 = info2::WRITE;
        let meta = Meta::default();
        let mut bins = BinSet::new(Vec::new());
        m.ops = vec![
            op(
                OpType::PREPEND,
                particle::INTEGER,
                "i",
                4i64.to_be_bytes().to_vec(),
            ),
            op(OpType::INCR, particle::STRING, "s", b"aerospike".to_vec()),
            op(OpType::APPEND, 19, "m", vec![0x81, 0xa2, 0x03, b'a', 0x01]),
            op(OpType::INCR, 23, "g", b"{}".to_vec()),
        ];
        apply_ops(&m, &mut bins, &meta).unwrap();
        assert_eq!(bins.get(b"i").unwrap().particle_type, particle::INTEGER);
        assert_eq!(bins.get(b"i").unwrap().value, 4i64.to_be_bytes());
        assert_eq!(bins.get(b"s").unwrap().value, b"aerospike");
        assert_eq!(bins.get(b"m").unwrap().particle_type, 19);
        assert_eq!(bins.get(b"g").unwrap().particle_type, 23);
        let refused = [
            (
                OpType::INCR,
                particle::STRING,
                "s",
                ResultCode::IncompatibleType,
            ),
            (
                OpType::PREPEND,
                particle::INTEGER,
                "i",
                ResultCode::IncompatibleType,
            ),
            (OpType::APPEND, particle::NULL, "i", ResultCode::Parameter),
            (
                OpType::PREPEND,
                particle::NULL,
                "new",
                ResultCode::Parameter,
            ),
            (
                OpType::APPEND,
                particle::STRING,
                "g",
                ResultCode::ServerError,
            ),
        ];
        for (t, p, name, rc) in refused {
            m.ops = vec![op(t, p, name, b"12345678".to_vec())];
            assert_eq!(apply_ops(&m, &mut bins, &meta), Err(rc), "{name}");
        }
    }

    /// Aerospike CE 8.1: ops that leave a record that did not exist without bins (a delete, a
    /// bin delete, a list clear) answer NOT_FOUND; on an existing record they delete it.
    #[test]
    fn binless_result_of_a_missing_record_is_not_found() {
        let limits = WriteLimits {
            default_ttl: 0,
            max_record_size: 1 << 20,
        };
        let mut m = Message::default();
        m.header.info2 = info2::WRITE;
        m.ops = vec![op(OpType::DELETE, 0, "", vec![])];
        let digest = Digest([7; 20]);
        assert_eq!(
            plan(limits, &m, digest, None, 1000).err(),
            Some(ResultCode::NotFound)
        );
        let existing = Record {
            digest,
            meta: RecordMeta {
                generation: 3,
                ..Default::default()
            },
            set_name: Vec::new(),
            user_key: None,
            bins: vec![Bin {
                name: b"a".to_vec(),
                particle_type: particle::INTEGER,
                value: 1i64.to_be_bytes().to_vec(),
            }],
            tombstone: false,
        };
        let (decision, _) = plan(limits, &m, digest, Some(existing), 1000).unwrap();
        assert_eq!(decision, Decision::Delete);
    }

    /// `levels` lists nested, the innermost empty.
    fn nested(levels: usize) -> Vec<u8> {
        let mut v = vec![0x91; levels - 1];
        v.push(0x90);
        v
    }

    #[test]
    fn lists_and_maps_nested_too_deep_are_refused() {
        use apogee_ops::value::{ptype, DEPTH_MAX};
        let mut m = Message::default();
        m.header.info2 = info2::WRITE;
        m.ops = vec![op(OpType::WRITE, ptype::LIST, "l", nested(DEPTH_MAX))];
        assert_eq!(check_request(&m, &GeoCover::default()), Ok(()));
        m.ops[0].value = nested(DEPTH_MAX + 1);
        assert_eq!(
            check_request(&m, &GeoCover::default()),
            Err(ResultCode::Parameter)
        );
        // A map holding the list is one level more.
        m.ops[0] = op(
            OpType::WRITE,
            ptype::MAP,
            "m",
            [&[0x81, 0xa2, 0x03, b'k'][..], &nested(DEPTH_MAX - 1)].concat(),
        );
        assert_eq!(check_request(&m, &GeoCover::default()), Ok(()));
        m.ops[0].value = [&[0x81, 0xa2, 0x03, b'k'][..], &nested(DEPTH_MAX)].concat();
        assert_eq!(
            check_request(&m, &GeoCover::default()),
            Err(ResultCode::Parameter)
        );
        // Malformed msgpack in a list bin is refused too.
        m.ops[0] = op(OpType::WRITE, ptype::LIST, "l", vec![0x92, 0x01]);
        assert_eq!(
            check_request(&m, &GeoCover::default()),
            Err(ResultCode::Parameter)
        );

        // A list op that builds past the limit: 32 context steps down a 64-level bin reach
        // level 33, where appending a list of `n` levels makes the bin 32 + n deep.
        let append_deep = |n: usize| {
            let mut p = vec![0x93, 0xcc, 0xff, 0xdc, 0x00, 0x40];
            p.extend([0x10, 0x00].repeat(32));
            p.extend([0x92, 0x01]);
            p.extend(nested(n));
            op(OpType::CDT_MODIFY, 0, "l", p)
        };
        let meta = Meta::default();
        let mut bins = BinSet::new(vec![Bin {
            name: b"l".to_vec(),
            particle_type: ptype::LIST,
            value: nested(DEPTH_MAX),
        }]);
        m.ops = vec![append_deep(DEPTH_MAX - 33)];
        assert!(apply_ops(&m, &mut bins, &meta).is_ok());
        let before = bins.get(b"l").unwrap().value.clone();
        m.ops = vec![append_deep(DEPTH_MAX - 32)];
        assert_eq!(apply_ops(&m, &mut bins, &meta), Err(ResultCode::Parameter));
        assert_eq!(bins.get(b"l").unwrap().value, before);
    }

    /// Ten increments of one on-disk record start together, so all ten are reading it when the
    /// first one appends: each must notice the newer version and re-read, losing nothing.
    #[test]
    fn concurrent_increments_of_an_on_disk_record_lose_nothing() {
        use apogee_engine::shard::{ShardStore, StoreConfig};
        use apogee_wire::Field;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let cfg = StoreConfig {
                    dir: d,
                    namespace: "test".into(),
                    shard: 0,
                    shard_count: 1,
                    block_bytes: 128 * 1024,
                    commit_to_device: true,
                    flush_max_ms: 60_000,
                    // Off: the test needs the record's reads to go to the device and overlap.
                    cache_bytes: 0,
                    defrag_lwm_pct: 50,
                    defrag_sleep_us: 1000,
                    nsup_period_secs: 0,
                    file_bytes_max: 0,
                    stop_writes_used_pct: 70,
                    stop_writes_avail_pct: 5,
                    evict_used_pct: 0,
                    extents: Vec::new(),
                    memory: false,
                };
                let (store, _) = ShardStore::open(cfg, Default::default()).await.unwrap();
                let ns = WriteLimits {
                    default_ttl: 0,
                    max_record_size: 1 << 20,
                };
                let digest = Digest::of_string("s", "hot");
                let incr = |by: i64| {
                    let mut m = Message::default();
                    m.header.info2 = info2::WRITE;
                    m.fields.push(Field {
                        field_type: FieldType::SET,
                        data: b"s".to_vec(),
                    });
                    m.ops = vec![op(
                        OpType::INCR,
                        particle::INTEGER,
                        "n",
                        by.to_be_bytes().to_vec(),
                    )];
                    m
                };
                run(&store, ns, &incr(100), digest, None).await.unwrap();
                // Fill two more blocks so the hot record's block is flushed and leaves memory.
                for i in 0..300 {
                    let mut m = incr(1);
                    m.ops[0].name = b"pad".to_vec();
                    m.ops
                        .push(op(OpType::WRITE, particle::BLOB, "b", vec![0; 1000]));
                    run(&store, ns, &m, Digest::of_integer("s", i), None)
                        .await
                        .unwrap();
                }
                let writers: Vec<_> = (0..10)
                    .map(|_| {
                        let store = store.clone();
                        let m = incr(1);
                        // Each captures the image of what it stored, for replication.
                        glommio::spawn_local(async move {
                            let mut image = None;
                            run(&store, ns, &m, digest, Some(&mut image)).await?;
                            Ok::<_, ResultCode>(image)
                        })
                    })
                    .collect();
                let mut images = Vec::new();
                for w in writers {
                    images.push(w.await.unwrap().expect("a write stores an image"));
                }
                let r = store.get(&digest).await.unwrap().unwrap();
                assert_eq!(r.bins[0].value, 110i64.to_be_bytes());
                assert_eq!(r.meta.generation, 11);
                // Retried writes leave the image of the version they appended, not of an
                // attempt dropped: one image per generation, the last one the stored record.
                images.sort_by_key(|i| i.meta.generation);
                let generations: Vec<u16> = images.iter().map(|i| i.meta.generation).collect();
                assert_eq!(generations, (2..=11).collect::<Vec<u16>>());
                assert_eq!(images.last(), Some(&r));
                // A refused write leaves none; a delete leaves its tombstone.
                let mut stale = incr(1);
                stale.header.info2 |= info2::GENERATION;
                stale.header.generation = 3;
                let mut image = None;
                assert_eq!(
                    run(&store, ns, &stale, digest, Some(&mut image))
                        .await
                        .err(),
                    Some(ResultCode::Generation)
                );
                assert_eq!(image, None);
                let mut del = Message::default();
                del.header.info2 = info2::WRITE | info2::DELETE;
                super::super::delete::run(&store, &del, digest, Some(&mut image))
                    .await
                    .unwrap();
                let t = image.expect("a delete's tombstone");
                assert!(t.tombstone && t.meta.generation == 11 && t.digest == digest);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
