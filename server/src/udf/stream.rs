//! Stream UDFs (aggregations over a scan or query, UDF_OP 1): the module's function builds a
//! pipeline on the stream it is given (`s : map(f) : filter(g) : aggregate(init, h) :
//! reduce(r)`); the server runs the pipeline's stages up to and including its first
//! `reduce` over the records of the query, and streams what comes out as `SUCCESS` values
//! for the client, which runs that `reduce` again over every partial result and the stages
//! after it — Aerospike's split of the pipeline between servers and client.
//!
//! Each shard runs its own part with its core's Lua state (values never cross cores), so a
//! node sends one partial result per shard that holds records; the client's reduce combines
//! them as it combines nodes'. A stage that fails ends the query with a `FAILURE` value.

use std::sync::Arc;

use apogee_engine::Record;
use apogee_ops::Value;
use mlua::{Lua, Table, Value as LuaValue};

use super::lua::{from_lua, lua_error, RecordHandle, Runtime, UdfError};
use super::{Call, Registry};

/// The Lua side of pipelines: the stream object the module's function receives, and the
/// driver that runs the server's stages.
pub const PRELUDE: &str = r#"
local Stream = {}
Stream.__index = Stream
local function stage(kind)
    return function(self, a, b)
        if kind == 'aggregate' then
            table.insert(self.ops, {kind, b, a})
        else
            table.insert(self.ops, {kind, a})
        end
        return self
    end
end
Stream.map = stage('map')
Stream.filter = stage('filter')
Stream.aggregate = stage('aggregate')
Stream.reduce = stage('reduce')
Stream.groupby = stage('groupby')
Stream.__tostring = function() return 'Stream' end

function __apogee_stream_new()
    return setmetatable({ops = {}}, Stream)
end

-- Runs value `v` through ops[from..upto]; an accumulating stage folds it into accs[i].
-- Returns the value when it passed every stage without being folded (nil otherwise).
local function run(ops, accs, from, upto, v)
    for i = from, upto do
        local op = ops[i]
        local kind, f = op[1], op[2]
        if kind == 'map' then
            v = f(v)
        elseif kind == 'filter' then
            if not f(v) then return nil end
        elseif kind == 'aggregate' then
            local acc = accs[i]
            if acc == nil then acc = op[3] end
            accs[i] = f(acc, v)
            accs.fed[i] = true
            return nil
        elseif kind == 'reduce' then
            if accs.fed[i] then accs[i] = f(accs[i], v) else accs[i] = v end
            accs.fed[i] = true
            return nil
        else
            error('stream stage ' .. tostring(kind) .. ' is not supported')
        end
    end
    return v
end

function __apogee_stream_feed(ops, upto, accs, v)
    return run(ops, accs, 1, upto, v)
end

-- At the end: each accumulator that was fed flows through the stages after it.
function __apogee_stream_finish(ops, upto, accs)
    for i = 1, upto do
        local kind = ops[i][1]
        if (kind == 'aggregate' or kind == 'reduce') and accs.fed[i] then
            accs.fed[i] = nil
            local out = run(ops, accs, i + 1, upto, accs[i])
            if out ~= nil then return out end
        end
    end
    return nil
end
"#;

/// One shard's running aggregation.
pub struct Aggregation {
    lua: Lua,
    ops: Table,
    /// The last stage this server runs (1-based): the first `reduce`, or the last stage.
    upto: usize,
    accs: Table,
    /// The prelude's driver functions, looked up once per aggregation, not per record.
    feed: mlua::Function,
    finish: mlua::Function,
}

impl Aggregation {
    /// Calls the module's function on a new stream and keeps the pipeline it built.
    pub fn start(registry: &Arc<Registry>, call: &Call) -> Result<Aggregation, UdfError> {
        super::lua::with_runtime(registry, |rt: &mut Runtime| {
            let (lua, ops) = rt.build_stream(call)?;
            let n = ops.raw_len();
            let mut upto = n;
            for i in 1..=n {
                let op: Table = ops.raw_get(i).map_err(lua_error)?;
                let kind: String = op.raw_get(1).map_err(lua_error)?;
                if kind == "reduce" {
                    upto = i;
                    break;
                }
            }
            let accs = lua.create_table().map_err(lua_error)?;
            accs.raw_set("fed", lua.create_table().map_err(lua_error)?)
                .map_err(lua_error)?;
            let globals = lua.globals();
            let feed = globals.get("__apogee_stream_feed").map_err(lua_error)?;
            let finish = globals.get("__apogee_stream_finish").map_err(lua_error)?;
            Ok(Aggregation {
                lua,
                ops,
                upto,
                accs,
                feed,
                finish,
            })
        })
    }

    /// Feeds one record; returns a value to send now (a pipeline without an accumulating
    /// stage sends each record's result).
    pub fn feed(
        &mut self,
        registry: &Arc<Registry>,
        record: Record,
    ) -> Result<Option<Value>, UdfError> {
        let (lua, ops, upto, accs, feed) =
            (&self.lua, &self.ops, self.upto, &self.accs, &self.feed);
        super::lua::with_runtime(registry, |rt| {
            let h = RecordHandle::of_record(rt, record)?;
            let rec = lua.create_userdata(h).map_err(lua_error)?;
            rt.reset_budget();
            let out: LuaValue = feed
                .call((ops.clone(), upto, accs.clone(), rec))
                .map_err(lua_error)?;
            value_of(&out)
        })
    }

    /// Ends the stream: the accumulated value to send, if any record was folded.
    pub fn finish(&mut self, registry: &Arc<Registry>) -> Result<Option<Value>, UdfError> {
        let (ops, upto, accs, finish) = (&self.ops, self.upto, &self.accs, &self.finish);
        super::lua::with_runtime(registry, |rt| {
            rt.reset_budget();
            let out: LuaValue = finish
                .call((ops.clone(), upto, accs.clone()))
                .map_err(lua_error)?;
            value_of(&out)
        })
    }
}

/// A value a stage produced, as sent (a record passed through unchanged is sent as its bins,
/// a map, as Aerospike sends it).
fn value_of(v: &LuaValue) -> Result<Option<Value>, UdfError> {
    if v.is_nil() {
        return Ok(None);
    }
    if let LuaValue::UserData(ud) = v {
        if let Ok(h) = ud.borrow::<RecordHandle>() {
            let bins = h.bin_values()?;
            let entries = bins
                .into_iter()
                .map(|(name, v)| (Value::Str(name), v))
                .collect();
            return Ok(Some(Value::Map(apogee_ops::Map::from_entries(0, entries))));
        }
    }
    from_lua(v, 0).map(Some).map_err(UdfError)
}

/// The message carrying one value of an aggregation: a `SUCCESS` bin, no fields.
pub fn value_message(v: &Value) -> apogee_wire::msg::Message {
    let (particle_type, value) = v.to_particle();
    apogee_wire::msg::Message {
        ops: vec![apogee_wire::msg::Op {
            op_type: apogee_wire::msg::OpType::READ,
            particle_type,
            name: b"SUCCESS".to_vec(),
            value,
        }],
        ..Default::default()
    }
}

/// The message ending a failed aggregation: result 100, the message in a `FAILURE` bin.
pub fn failure_message(e: &UdfError) -> apogee_wire::msg::Message {
    let mut m = apogee_wire::msg::Message {
        ops: vec![apogee_wire::msg::Op {
            op_type: apogee_wire::msg::OpType::READ,
            particle_type: 3,
            name: b"FAILURE".to_vec(),
            value: e.0.as_bytes().to_vec(),
        }],
        ..Default::default()
    };
    m.header.result_code = apogee_wire::ResultCode::UdfBadResponse as u8;
    m
}

/// A shard's aggregation as its scan or query loop drives it: `Ok(Some(msg))` a value to
/// send, `Err(msg)` the failure to send before the shard stops.
pub struct ShardAggregation {
    agg: Option<Aggregation>,
    registry: Arc<Registry>,
}

impl ShardAggregation {
    pub fn start(
        registry: &Arc<Registry>,
        call: &Call,
    ) -> Result<ShardAggregation, apogee_wire::msg::Message> {
        match Aggregation::start(registry, call) {
            Ok(a) => Ok(ShardAggregation {
                agg: Some(a),
                registry: registry.clone(),
            }),
            Err(e) => Err(failure_message(&e)),
        }
    }

    pub fn feed(
        &mut self,
        record: Record,
    ) -> Result<Option<apogee_wire::msg::Message>, apogee_wire::msg::Message> {
        let agg = self.agg.as_mut().expect("fed after finish");
        match agg.feed(&self.registry, record) {
            Ok(v) => Ok(v.as_ref().map(value_message)),
            Err(e) => Err(failure_message(&e)),
        }
    }

    pub fn finish(
        mut self,
    ) -> Result<Option<apogee_wire::msg::Message>, apogee_wire::msg::Message> {
        let mut agg = self.agg.take().expect("finished once");
        match agg.finish(&self.registry) {
            Ok(v) => Ok(v.as_ref().map(value_message)),
            Err(e) => Err(failure_message(&e)),
        }
    }
}

/// Starts a shard's part of the aggregation `call` (if any) for a scan or query loop. A
/// start that fails pushes its FAILURE message into `frame` and fails the job: `Err`, and
/// the shard sends the frame and stops.
pub fn start_in(
    call: Option<&Call>,
    registry: &Arc<Registry>,
    frame: &mut crate::stream::FrameBuilder,
    job: &crate::scan::jobs::Job,
) -> Result<Option<ShardAggregation>, ()> {
    let Some(call) = call else {
        return Ok(None);
    };
    match ShardAggregation::start(registry, call) {
        Ok(a) => Ok(Some(a)),
        Err(failure) => {
            frame.push(&failure);
            job.fail();
            Err(())
        }
    }
}

/// Ends a shard's aggregation: its last value, or its failure (failing the job), into
/// `frame`.
pub fn finish_into(
    agg: Option<ShardAggregation>,
    frame: &mut crate::stream::FrameBuilder,
    job: &crate::scan::jobs::Job,
) {
    let Some(a) = agg else { return };
    match a.finish() {
        Ok(Some(m)) => frame.push(&m),
        Ok(None) => {}
        Err(failure) => {
            frame.push(&failure);
            job.fail();
        }
    }
}
