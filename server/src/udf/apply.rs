//! Record UDFs (spec §6.8, fields 30 package, 31 function, 32 arguments): runs the function
//! on the record's owning core as one atomic read-modify-write through the engine's update
//! path, so a UDF sees the newest version and its write is appended only if no other write
//! changed the record meanwhile (the call runs again otherwise). Its return value is the
//! `SUCCESS` bin; a Lua error is result 100 with the message in the `FAILURE` bin, and writes
//! nothing.
//!
//! Must never store half of what a UDF did: the record is written (or removed) only from
//! the UDF's final state, after it returned without an error.

use std::sync::Arc;

use apogee_engine::clock;
use apogee_engine::shard::{Decision, ShardStore};
use apogee_engine::{Bin, Record, RecordMeta, UserKey};
use apogee_ops::Value;
use apogee_wire::msg::{Message, Op, OpType};
use apogee_wire::{Digest, FieldType, ResultCode};

use super::lua::{self, Action, RecordHandle, UdfError};
use super::{field, Call, Registry};
use crate::command::{ttl, update_error_code, write, Image, Reply, WriteLimits};

/// Whether a keyed command is a record UDF.
pub fn is_udf(msg: &Message) -> bool {
    msg.field(field::PACKAGE).is_some() || msg.field(field::FUNCTION).is_some()
}

/// Most bins a UDF may leave on a record (as any write).
const BINS_PER_RECORD_MAX: usize = 32_767;

/// The reply of a UDF that failed: result 100, the message in the `FAILURE` bin.
fn failure(e: &UdfError) -> Reply {
    Reply {
        result: ResultCode::UdfBadResponse as u8,
        ops: vec![Op {
            op_type: OpType::READ,
            particle_type: 3,
            name: b"FAILURE".to_vec(),
            value: e.0.as_bytes().to_vec(),
        }],
        ..Default::default()
    }
}

/// The `SUCCESS` bin holding a UDF's return value.
fn success(v: &Value) -> Op {
    let (particle_type, value) = v.to_particle();
    Op {
        op_type: OpType::READ,
        particle_type,
        name: b"SUCCESS".to_vec(),
        value,
    }
}

/// Validates and runs a record UDF command, as `command::execute` runs the others.
pub async fn execute(
    store: &ShardStore,
    limits: WriteLimits,
    msg: &Message,
    digest: Option<Digest>,
    image: Image<'_>,
    registry: &Arc<Registry>,
) -> Reply {
    if let Err(rc) = crate::command::validate(msg) {
        return Reply::code(rc);
    }
    let digest = match digest.map_or_else(|| crate::command::digest_of(msg), Ok) {
        Ok(d) => d,
        Err(rc) => return Reply::code(rc),
    };
    run(store, limits, msg, digest, image, registry)
        .await
        .unwrap_or_else(Reply::code)
}

/// Runs a record UDF. `Err` only for a malformed request or a store failure; a failing UDF
/// is an `Ok` reply with result 100.
pub async fn run(
    store: &ShardStore,
    limits: WriteLimits,
    msg: &Message,
    digest: Digest,
    mut image: Image<'_>,
    registry: &Arc<Registry>,
) -> Result<Reply, ResultCode> {
    let call = Call::of(msg)?;
    let set = msg.field(FieldType::SET).unwrap_or_default().to_vec();
    let key = match msg.field(FieldType::KEY) {
        Some([t, rest @ ..]) => Some(UserKey {
            particle_type: *t,
            bytes: rest.to_vec(),
        }),
        _ => None,
    };
    let record_ttl = msg.header.record_ttl;
    store
        .update(&digest, |existing| {
            // A filter expression decides on the record as it is, before the UDF runs.
            if let Some(r) = &existing {
                crate::command::filter::check(msg, r)?;
            }
            let called = lua::with_runtime(registry, |rt| {
                let h = RecordHandle::new(rt, digest.0, &set, key.clone(), existing.as_ref())?;
                let out = rt.call_record(&call, &h)?;
                let bins = h.bin_values()?;
                Ok((h, out, bins))
            });
            let (h, out, bins) = match called {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(package = %call.package, function = %call.function,
                        error = %e.0, "UDF failed");
                    return Ok((Decision::Keep, failure(&e)));
                }
            };
            let st = h.0.borrow();
            let stored_generation = existing.as_ref().map_or(0, |r| r.meta.generation);
            let (decision, generation, void_time) = match st.action {
                Action::None => (
                    Decision::Keep,
                    stored_generation,
                    existing.as_ref().map_or(0, |r| r.meta.void_time),
                ),
                Action::Remove => (Decision::Delete, 0, 0),
                Action::Write if bins.is_empty() => {
                    // A record left with no bins is deleted, as any write that removes the
                    // last bin.
                    (Decision::Delete, 0, 0)
                }
                Action::Write => {
                    if bins.len() > BINS_PER_RECORD_MAX {
                        return Err(ResultCode::Parameter);
                    }
                    let now = clock::now_secs();
                    let current = existing.as_ref().map(|r| r.meta.void_time);
                    let void_time = ttl::void_time_for(
                        st.ttl.unwrap_or(record_ttl),
                        current,
                        limits.default_ttl,
                        now,
                    )
                    .ok_or(ResultCode::Parameter)?;
                    let generation = write::next_generation(stored_generation);
                    let record = Record {
                        digest,
                        meta: RecordMeta {
                            generation,
                            void_time,
                            last_update_ms: clock::now_ms(),
                        },
                        set_name: st.set_name.clone(),
                        user_key: if st.drop_key { None } else { st.key.clone() },
                        bins: bins
                            .iter()
                            .map(|(name, v)| {
                                let (particle_type, value) = v.to_particle();
                                Bin {
                                    name: name.clone(),
                                    particle_type,
                                    value,
                                }
                            })
                            .collect(),
                        tombstone: false,
                    };
                    if record.encoded_bytes() > limits.max_record_size {
                        return Err(ResultCode::RecordTooBig);
                    }
                    (Decision::Write(record), generation, void_time)
                }
            };
            if let Some(image) = image.as_deref_mut() {
                let stored = existing.as_ref().map(|r| r.meta.generation);
                *image = write::image_of(&decision, digest, stored);
            }
            let reply = Reply::ok(generation, void_time, vec![success(&out)]);
            Ok((decision, reply))
        })
        .await
        .map_err(update_error_code)
}
