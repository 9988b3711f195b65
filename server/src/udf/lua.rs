//! The per-core Lua 5.4 runtime (mlua, with Lua built from source): one Lua state per core,
//! never shared, a sandbox (no `io`, `os`, `load`, `dofile`, `require` of files or debug
//! library), an instruction budget per call and a memory limit per state, compiled modules
//! cached by their source's hash, and Aerospike's Lua API for record UDFs: `rec['bin']`,
//! `record.*`, `aerospike:exists/create/update/remove`, `list`, `map`, `bytes`, and the
//! `info/warn/debug/trace` log functions.
//!
//! Values cross between Lua and bins through `apogee_ops::Value` (integers, floats, strings,
//! blobs, booleans, lists, maps, GeoJSON, nil). Lists, maps and bytes are userdata that
//! share their contents (as Aerospike's do: a list read from a bin, changed, and written back
//! is the same object). A UDF that loops forever, builds a huge value or raises an error ends
//! with an error for that call only; the core keeps serving.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use apogee_ops::Value;
use mlua::{
    AnyUserData, ChunkMode, HookTriggers, Lua, LuaOptions, MetaMethod, MultiValue, StdLib, Table,
    UserData, UserDataMethods, Value as LuaValue, VmState,
};

use super::{Call, Registry};

/// Lua VM instructions one call may run (about a second of pure Lua on this class of
/// machine); a call past it fails with an error and its core goes on.
pub const INSTRUCTIONS_PER_CALL_MAX: u64 = 100_000_000;
/// How often (in instructions) the budget is checked.
const BUDGET_CHECK_INSTRUCTIONS: u32 = 10_000;
/// Bytes one core's Lua state may allocate in all.
pub const LUA_MEMORY_BYTES_MAX: usize = 256 << 20;
/// Nesting of lists and maps a UDF may return or store (as values coming from clients).
const NESTING_MAX: usize = 64;

/// Why a module does not compile: Lua's line and message.
#[derive(Debug)]
pub struct CompileError {
    pub line: u32,
    pub message: String,
}

/// Splits Lua's `name.lua:LINE: message` into line and message.
fn compile_error(text: &str) -> CompileError {
    let text = text.strip_prefix("syntax error: ").unwrap_or(text);
    let after = text.split_once(".lua:").map_or(text, |(_, rest)| rest);
    match after.split_once(':') {
        Some((line, msg)) if line.trim().parse::<u32>().is_ok() => CompileError {
            line: line.trim().parse().expect("checked"),
            message: msg.trim().to_string(),
        },
        _ => CompileError {
            line: 0,
            message: text.trim().to_string(),
        },
    }
}

/// Compiles `source` (text only, never bytecode) without running it.
pub fn compile_check(name: &str, source: &[u8]) -> Result<(), CompileError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).map_err(|e| CompileError {
        line: 0,
        message: e.to_string(),
    })?;
    lua.load(source)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Text)
        .into_function()
        .map(|_| ())
        .map_err(|e| compile_error(&e.to_string()))
}

/// A UDF call's failure, as the client sees it in the FAILURE bin (result 100).
#[derive(Debug, Clone, PartialEq)]
pub struct UdfError(pub String);

/// A Lua error as the client reads it: the innermost cause, without mlua's stack traceback.
/// An error raised with a table (or another object Lua can only print as an address) reads
/// "result value type unexpected", as Aerospike CE 8.1 answers `error({code = 5})`.
pub fn lua_error(e: mlua::Error) -> UdfError {
    let mut text = e.to_string();
    if let Some(i) = text.find("\nstack traceback:") {
        text.truncate(i);
    }
    let text = text.replace("runtime error: ", "").trim().to_string();
    let addressed = ["table: 0x", "userdata: 0x", "function: 0x", "thread: 0x"]
        .iter()
        .any(|p| {
            text.strip_prefix(p)
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    if addressed {
        return UdfError("result value type unexpected".into());
    }
    UdfError(text)
}

/// One core's Lua runtime.
pub struct Runtime {
    lua: Lua,
    registry: Arc<Registry>,
    /// Per module name: the hash it was compiled from and its environment.
    modules: HashMap<String, (String, Table)>,
    steps: Rc<Cell<u64>>,
}

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` with this core's runtime, making it on first use.
pub fn with_runtime<T>(
    registry: &Arc<Registry>,
    f: impl FnOnce(&mut Runtime) -> Result<T, UdfError>,
) -> Result<T, UdfError> {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Runtime::new(registry.clone()).map_err(lua_error)?);
        }
        f(slot.as_mut().expect("made above"))
    })
}

impl Runtime {
    fn new(registry: Arc<Registry>) -> mlua::Result<Runtime> {
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8;
        let lua = Lua::new_with(libs, LuaOptions::default())?;
        lua.set_memory_limit(LUA_MEMORY_BYTES_MAX)?;
        // Generational collection: a stream UDF makes a record handle per record that dies
        // at once, the case generational mode is for. The incremental default spent ~20 %
        // of an aggregation's CPU in the collector; a sum over 100,000 records went from
        // ~200 to ~150 ms (0 keeps Lua's default multipliers).
        lua.gc_gen(0, 0);
        let g = lua.globals();
        for name in [
            "dofile",
            "loadfile",
            "load",
            "require",
            "collectgarbage",
            "print",
        ] {
            g.set(name, LuaValue::Nil)?;
        }
        install_api(&lua)?;
        install_require(&lua, registry.clone())?;
        lua.load(super::stream::PRELUDE)
            .set_name("@apogee_stream.lua")
            .exec()?;
        let steps = Rc::new(Cell::new(0u64));
        let counted = steps.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(BUDGET_CHECK_INSTRUCTIONS),
            move |_, _| {
                let n = counted.get() + u64::from(BUDGET_CHECK_INSTRUCTIONS);
                counted.set(n);
                if n > INSTRUCTIONS_PER_CALL_MAX {
                    return Err(mlua::Error::runtime(format!(
                        "UDF execution stopped: more than {INSTRUCTIONS_PER_CALL_MAX} Lua instructions"
                    )));
                }
                Ok(VmState::Continue)
            },
        );
        Ok(Runtime {
            lua,
            registry,
            modules: HashMap::new(),
            steps,
        })
    }

    /// The function `function` of module `package`, compiling the module (again, when its
    /// source changed) into its own environment.
    fn function(&mut self, package: &str, function: &str) -> Result<mlua::Function, UdfError> {
        let name = if package.ends_with(".lua") {
            package.to_string()
        } else {
            format!("{package}.lua")
        };
        let Some(module) = self.registry.get(&name) else {
            // Aerospike's words for a module that is not registered.
            tracing::debug!(package, "UDF module not registered");
            return Err(UdfError("UDF: Execution Error 1".into()));
        };
        let fresh = self
            .modules
            .get(&name)
            .is_some_and(|(hash, _)| *hash == module.hash);
        if !fresh {
            let env = self.lua.create_table().map_err(lua_error)?;
            let meta = self.lua.create_table().map_err(lua_error)?;
            meta.set("__index", self.lua.globals()).map_err(lua_error)?;
            env.set_metatable(Some(meta));
            self.steps.set(0);
            self.lua
                .load(&module.source[..])
                // `@`: a file name, so messages read `name.lua:LINE: ...` as Aerospike's do.
                .set_name(format!("@{name}"))
                .set_mode(ChunkMode::Text)
                .set_environment(env.clone())
                .exec()
                .map_err(lua_error)?;
            self.modules
                .insert(name.clone(), (module.hash.clone(), env));
        }
        let env = &self.modules[&name].1;
        match env.get::<LuaValue>(function).map_err(lua_error)? {
            LuaValue::Function(f) => Ok(f),
            _ => {
                tracing::debug!(package, function, "UDF function not found");
                Err(UdfError("function not found".into()))
            }
        }
    }

    /// Starts a new call's instruction budget.
    pub fn reset_budget(&self) {
        self.steps.set(0);
    }

    /// Calls `call`'s function with `first` (the record or the stream) and the call's
    /// arguments, with a fresh instruction budget.
    fn call_with(&mut self, call: &Call, first: LuaValue) -> Result<LuaValue, UdfError> {
        let f = self.function(&call.package, &call.function)?;
        let mut call_args = vec![first];
        for a in &call.args {
            call_args.push(to_lua(&self.lua, a).map_err(lua_error)?);
        }
        self.steps.set(0);
        f.call(MultiValue::from_iter(call_args)).map_err(lua_error)
    }

    /// Calls a stream UDF's function on a new stream; returns the Lua state and the
    /// pipeline's stages (`{kind, f[, init]}` tables) the function built.
    pub fn build_stream(&mut self, call: &Call) -> Result<(Lua, Table), UdfError> {
        let new: mlua::Function = self
            .lua
            .globals()
            .get("__apogee_stream_new")
            .map_err(lua_error)?;
        let stream: Table = new.call(()).map_err(lua_error)?;
        let built = match self.call_with(call, LuaValue::Table(stream.clone()))? {
            LuaValue::Table(t) => t,
            _ => stream,
        };
        let ops: Table = built.get("ops").map_err(lua_error)?;
        Ok((self.lua.clone(), ops))
    }

    /// Calls a record UDF on `rec`; returns its result as a value.
    pub fn call_record(&mut self, call: &Call, rec: &RecordHandle) -> Result<Value, UdfError> {
        let ud = self.lua.create_userdata(rec.clone()).map_err(lua_error)?;
        let out = self.call_with(call, LuaValue::UserData(ud))?;
        from_lua(&out, 0).map_err(UdfError)
    }
}

/// What a record UDF does to its record: nothing, write it, or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Write,
    Remove,
}

/// The record a UDF works on: its bins as the UDF changes them, and what it asked for.
pub struct RecordState {
    pub bins: Vec<(Vec<u8>, LuaValue)>,
    pub exists: bool,
    pub meta: apogee_engine::RecordMeta,
    pub set_name: Vec<u8>,
    pub digest: [u8; 20],
    pub key: Option<apogee_engine::UserKey>,
    pub action: Action,
    /// A TTL the UDF set (`record.set_ttl`), in seconds.
    pub ttl: Option<u32>,
    pub drop_key: bool,
}

/// The Lua object of the record (shared with the runtime for the call's duration).
#[derive(Clone)]
pub struct RecordHandle(pub Rc<RefCell<RecordState>>);

/// A stored bin's value as Lua sees it.
fn bin_to_lua(rt: &Runtime, b: &apogee_engine::Bin) -> Result<LuaValue, UdfError> {
    let v = Value::from_particle(b.particle_type, &b.value)
        .map_err(|e| UdfError(format!("bin {}: {e}", String::from_utf8_lossy(&b.name))))?;
    to_lua(&rt.lua, &v).map_err(lua_error)
}

impl RecordHandle {
    /// The handle of `record` (absent: a record to create) for a call in `rt`.
    pub fn new(
        rt: &Runtime,
        digest: [u8; 20],
        set_name: &[u8],
        key: Option<apogee_engine::UserKey>,
        record: Option<&apogee_engine::Record>,
    ) -> Result<RecordHandle, UdfError> {
        let mut bins = Vec::new();
        if let Some(r) = record {
            for b in &r.bins {
                bins.push((b.name.clone(), bin_to_lua(rt, b)?));
            }
        }
        Ok(Self::of(RecordState {
            bins,
            exists: record.is_some(),
            meta: record.map(|r| r.meta).unwrap_or_default(),
            set_name: record.map_or_else(|| set_name.to_vec(), |r| r.set_name.clone()),
            digest,
            key: record.and_then(|r| r.user_key.clone()).or(key),
            action: Action::None,
            ttl: None,
            drop_key: false,
        }))
    }

    /// The handle of a stored record the caller gives up (a stream UDF's record): its names
    /// move into the handle instead of being copied, one record at a time over a whole scan.
    pub fn of_record(
        rt: &Runtime,
        record: apogee_engine::Record,
    ) -> Result<RecordHandle, UdfError> {
        let mut bins = Vec::with_capacity(record.bins.len());
        for b in record.bins {
            let v = bin_to_lua(rt, &b)?;
            bins.push((b.name, v));
        }
        Ok(Self::of(RecordState {
            bins,
            exists: true,
            meta: record.meta,
            set_name: record.set_name,
            digest: record.digest.0,
            key: record.user_key,
            action: Action::None,
            ttl: None,
            drop_key: false,
        }))
    }

    fn of(state: RecordState) -> RecordHandle {
        RecordHandle(Rc::new(RefCell::new(state)))
    }

    /// The bins as values, for the record to store (nil values are removed bins).
    pub fn bin_values(&self) -> Result<Vec<(Vec<u8>, Value)>, UdfError> {
        let st = self.0.borrow();
        let mut out = Vec::new();
        for (name, v) in &st.bins {
            let v = from_lua(v, 0)
                .map_err(|e| UdfError(format!("bin {}: {e}", String::from_utf8_lossy(name))))?;
            if !matches!(v, Value::Nil) {
                out.push((name.clone(), v));
            }
        }
        Ok(out)
    }
}

impl UserData for RecordHandle {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |_, this, name: mlua::String| {
            let st = this.0.borrow();
            let name = name.as_bytes();
            Ok(st
                .bins
                .iter()
                .find(|(n, _)| n.as_slice() == &name[..])
                .map_or(LuaValue::Nil, |(_, v)| v.clone()))
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (name, v): (mlua::String, LuaValue)| {
                let name = name.as_bytes().to_vec();
                if name.is_empty() || name.len() > apogee_wire::msg::BIN_NAME_BYTES_MAX {
                    return Err(mlua::Error::runtime("bin name too long or empty"));
                }
                let mut st = this.0.borrow_mut();
                match st.bins.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = v,
                    None => st.bins.push((name, v)),
                }
                Ok(())
            },
        );
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("Record({} bins)", this.0.borrow().bins.len()))
        });
    }
}

/// A new list userdata holding `items`.
fn new_list(lua: &Lua, items: Vec<LuaValue>) -> mlua::Result<AnyUserData> {
    lua.create_userdata(LuaList {
        items: Rc::new(RefCell::new(items)),
        cursor: Rc::default(),
    })
}

/// A list shared between the Lua values that refer to it.
#[derive(Clone, Default)]
pub struct LuaList {
    items: Rc<RefCell<Vec<LuaValue>>>,
    /// Where `for v in l do` stands.
    cursor: Rc<Cell<usize>>,
}

impl UserData for LuaList {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |_, this, i: i64| {
            Ok(usize::try_from(i - 1)
                .ok()
                .and_then(|i| this.items.borrow().get(i).cloned())
                .unwrap_or(LuaValue::Nil))
        });
        m.add_meta_method(MetaMethod::NewIndex, |_, this, (i, v): (i64, LuaValue)| {
            let mut items = this.items.borrow_mut();
            match usize::try_from(i - 1) {
                Ok(i) if i < items.len() => items[i] = v,
                Ok(i) if i == items.len() => items.push(v),
                _ => return Err(mlua::Error::runtime("list index out of range")),
            }
            Ok(())
        });
        m.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.items.borrow().len()));
        m.add_meta_method(MetaMethod::Call, |_, this, _: MultiValue| {
            let i = this.cursor.get();
            let item = this.items.borrow().get(i).cloned();
            match item {
                Some(v) => {
                    this.cursor.set(i + 1);
                    Ok(v)
                }
                None => {
                    this.cursor.set(0);
                    Ok(LuaValue::Nil)
                }
            }
        });
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            let items: Vec<String> = this.items.borrow().iter().map(show).collect();
            Ok(format!("List({})", items.join(", ")))
        });
    }
}

/// A map shared between the Lua values that refer to it (entries in insertion order).
#[derive(Clone, Default)]
pub struct LuaMap {
    entries: Rc<RefCell<Vec<(LuaValue, LuaValue)>>>,
}

/// Whether two Lua values are the same map key.
fn same_key(a: &LuaValue, b: &LuaValue) -> bool {
    match (a, b) {
        (LuaValue::Integer(x), LuaValue::Integer(y)) => x == y,
        (LuaValue::Number(x), LuaValue::Number(y)) => x == y,
        (LuaValue::Integer(x), LuaValue::Number(y))
        | (LuaValue::Number(y), LuaValue::Integer(x)) => *x as f64 == *y,
        (LuaValue::String(x), LuaValue::String(y)) => x.as_bytes() == y.as_bytes(),
        (LuaValue::Boolean(x), LuaValue::Boolean(y)) => x == y,
        (a, b) => a == b,
    }
}

impl LuaMap {
    fn get(&self, k: &LuaValue) -> LuaValue {
        (self.entries.borrow().iter())
            .find(|(x, _)| same_key(x, k))
            .map_or(LuaValue::Nil, |(_, v)| v.clone())
    }

    fn set(&self, k: LuaValue, v: LuaValue) {
        let mut e = self.entries.borrow_mut();
        let at = e.iter().position(|(x, _)| same_key(x, &k));
        match (at, v) {
            (Some(i), LuaValue::Nil) => {
                e.remove(i);
            }
            (Some(i), v) => e[i].1 = v,
            (None, LuaValue::Nil) => {}
            (None, v) => e.push((k, v)),
        }
    }
}

impl UserData for LuaMap {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |_, this, k: LuaValue| Ok(this.get(&k)));
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (k, v): (LuaValue, LuaValue)| {
                this.set(k, v);
                Ok(())
            },
        );
        m.add_meta_method(MetaMethod::Len, |_, this, ()| {
            Ok(this.entries.borrow().len())
        });
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            let items: Vec<String> = (this.entries.borrow().iter())
                .map(|(k, v)| format!("({}, {})", show(k), show(v)))
                .collect();
            Ok(format!("Map({})", items.join(", ")))
        });
    }
}

/// Bytes shared between the Lua values that refer to them, with their particle type (4 blob,
/// 23 GeoJSON, or another blob type).
#[derive(Clone)]
pub struct LuaBytes {
    particle_type: u8,
    data: Rc<RefCell<Vec<u8>>>,
}

impl UserData for LuaBytes {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |_, this, i: i64| {
            Ok(usize::try_from(i - 1)
                .ok()
                .and_then(|i| this.data.borrow().get(i).copied())
                .map_or(LuaValue::Nil, |b| LuaValue::Integer(i64::from(b))))
        });
        m.add_meta_method(MetaMethod::NewIndex, |_, this, (i, v): (i64, u8)| {
            let mut d = this.data.borrow_mut();
            let i = usize::try_from(i - 1).map_err(|_| mlua::Error::runtime("bytes index < 1"))?;
            if i >= d.len() {
                if i >= LUA_MEMORY_BYTES_MAX {
                    return Err(mlua::Error::runtime("bytes index too large"));
                }
                d.resize(i + 1, 0);
            }
            d[i] = v;
            Ok(())
        });
        m.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.data.borrow().len()));
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("Bytes({} bytes)", this.data.borrow().len()))
        });
    }
}

/// The 0-based range `[pos - 1, pos - 1 + len)` of a 1-based position, when it lies within
/// `n` bytes.
fn byte_range(pos: i64, len: usize, n: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(pos.checked_sub(1)?).ok()?;
    let end = start.checked_add(len)?;
    (end <= n).then_some(start..end)
}

/// Writes `src` at the 1-based `pos` of `b`, growing it (zero-filled) as Aerospike's
/// `as_bytes_set` grows to fit; false past the Lua memory bound.
fn bytes_set(b: &LuaBytes, pos: i64, src: &[u8]) -> bool {
    let Some(start) = pos.checked_sub(1).and_then(|p| usize::try_from(p).ok()) else {
        return false;
    };
    let end = start.saturating_add(src.len());
    if end > LUA_MEMORY_BYTES_MAX {
        return false;
    }
    let mut d = b.data.borrow_mut();
    if d.len() < end {
        d.resize(end, 0);
    }
    d[start..end].copy_from_slice(src);
    true
}

/// Aerospike's `bytes` library beyond the constructor and `size`: typed bytes, single bytes,
/// strings, byte strings, and 16/32/64-bit integers (big-endian by default, `_be` / `_le`),
/// each as get / set (1-based positions) and append.
fn add_bytes_functions(lua: &Lua, bytes: &mlua::Table) -> mlua::Result<()> {
    type B = AnyUserData;
    let f = |name: &str, func: mlua::Function| bytes.set(name, func);
    f(
        "get_type",
        lua.create_function(|_, b: B| Ok(b.borrow::<LuaBytes>()?.particle_type))?,
    )?;
    f(
        "set_type",
        lua.create_function(|_, (b, t): (B, u8)| {
            b.borrow_mut::<LuaBytes>()?.particle_type = t;
            Ok(true)
        })?,
    )?;
    f(
        "set_size",
        lua.create_function(|_, (b, n): (B, usize)| {
            if n > LUA_MEMORY_BYTES_MAX {
                return Ok(false);
            }
            b.borrow::<LuaBytes>()?.data.borrow_mut().resize(n, 0);
            Ok(true)
        })?,
    )?;
    f(
        "get_byte",
        lua.create_function(|_, (b, pos): (B, i64)| {
            let b = b.borrow::<LuaBytes>()?;
            let d = b.data.borrow();
            Ok(byte_range(pos, 1, d.len()).map(|r| d[r.start]))
        })?,
    )?;
    f(
        "set_byte",
        lua.create_function(|_, (b, pos, v): (B, i64, u8)| {
            Ok(bytes_set(&*b.borrow::<LuaBytes>()?, pos, &[v]))
        })?,
    )?;
    f(
        "append_byte",
        lua.create_function(|_, (b, v): (B, u8)| {
            let b = b.borrow::<LuaBytes>()?;
            let n = b.data.borrow().len() as i64;
            Ok(bytes_set(&b, n + 1, &[v]))
        })?,
    )?;
    for (get, set, append) in [
        ("get_string", "set_string", "append_string"),
        ("get_bytes", "set_bytes", "append_bytes"),
    ] {
        let as_string = get == "get_string";
        f(
            get,
            lua.create_function(move |lua, (b, pos, len): (B, i64, usize)| {
                let b = b.borrow::<LuaBytes>()?;
                let d = b.data.borrow();
                let Some(r) = byte_range(pos, len, d.len()) else {
                    return Ok(LuaValue::Nil);
                };
                if as_string {
                    return Ok(LuaValue::String(lua.create_string(&d[r])?));
                }
                let out = LuaBytes {
                    particle_type: 4,
                    data: Rc::new(RefCell::new(d[r].to_vec())),
                };
                Ok(LuaValue::UserData(lua.create_userdata(out)?))
            })?,
        )?;
        let source = |v: LuaValue| -> mlua::Result<Vec<u8>> {
            match v {
                LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
                LuaValue::UserData(u) => Ok(u.borrow::<LuaBytes>()?.data.borrow().clone()),
                _ => Err(mlua::Error::runtime("expected a string or bytes")),
            }
        };
        f(
            set,
            lua.create_function(move |_, (b, pos, v): (B, i64, LuaValue)| {
                Ok(bytes_set(&*b.borrow::<LuaBytes>()?, pos, &source(v)?))
            })?,
        )?;
        f(
            append,
            lua.create_function(move |_, (b, v): (B, LuaValue)| {
                let b = b.borrow::<LuaBytes>()?;
                let n = b.data.borrow().len() as i64;
                Ok(bytes_set(&b, n + 1, &source(v)?))
            })?,
        )?;
    }
    for width in [2usize, 4, 8] {
        let bits = width * 8;
        for (suffix, big) in [("", true), ("_be", true), ("_le", false)] {
            // A value outside the width's signed range is refused (`None`): Aerospike CE 8.1
            // then writes nothing, though an append still grows the bytes by the width.
            let encode = move |v: i64| -> Option<Vec<u8>> {
                if width < 8 {
                    let half = 1i64 << (bits - 1);
                    if !(-half..half).contains(&v) {
                        return None;
                    }
                }
                let all = if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                Some(if big {
                    all[8 - width..].to_vec()
                } else {
                    all[..width].to_vec()
                })
            };
            f(
                &format!("get_int{bits}{suffix}"),
                lua.create_function(move |_, (b, pos): (B, i64)| {
                    let b = b.borrow::<LuaBytes>()?;
                    let d = b.data.borrow();
                    let Some(r) = byte_range(pos, width, d.len()) else {
                        return Ok(None);
                    };
                    let mut buf = [0u8; 8];
                    let v = if big {
                        buf[8 - width..].copy_from_slice(&d[r]);
                        i64::from_be_bytes(buf)
                    } else {
                        buf[..width].copy_from_slice(&d[r]);
                        i64::from_le_bytes(buf)
                    };
                    // Narrow integers read back signed, as Aerospike's as_bytes_get_int16/32.
                    let shift = 64 - bits as u32;
                    Ok(Some(v.wrapping_shl(shift).wrapping_shr(shift)))
                })?,
            )?;
            f(
                &format!("set_int{bits}{suffix}"),
                lua.create_function(move |_, (b, pos, v): (B, i64, i64)| {
                    let b = b.borrow::<LuaBytes>()?;
                    Ok(encode(v).is_some_and(|e| bytes_set(&b, pos, &e)))
                })?,
            )?;
            f(
                &format!("append_int{bits}{suffix}"),
                lua.create_function(move |_, (b, v): (B, i64)| {
                    let b = b.borrow::<LuaBytes>()?;
                    let n = b.data.borrow().len() as i64;
                    Ok(match encode(v) {
                        Some(e) => bytes_set(&b, n + 1, &e),
                        None => {
                            bytes_set(&b, n + 1, &vec![0; width]);
                            false
                        }
                    })
                })?,
            )?;
        }
    }
    Ok(())
}

/// A value as log lines and `tostring` show it.
fn show(v: &LuaValue) -> String {
    match v {
        LuaValue::String(s) => s.to_string_lossy().to_string(),
        LuaValue::Nil => "nil".into(),
        other => other
            .to_string()
            .unwrap_or_else(|_| other.type_name().to_string()),
    }
}

/// A bin or argument value as a Lua value.
pub fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Nil | Value::Wildcard | Value::Inf => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Int(i) => LuaValue::Integer(*i),
        Value::Float(f) => LuaValue::Number(*f),
        Value::Str(s) => LuaValue::String(lua.create_string(s)?),
        Value::Bytes(t, b) => LuaValue::UserData(lua.create_userdata(LuaBytes {
            particle_type: *t,
            data: Rc::new(RefCell::new(b.clone())),
        })?),
        Value::List(l) => {
            let items = l
                .items
                .iter()
                .map(|x| to_lua(lua, x))
                .collect::<mlua::Result<Vec<_>>>()?;
            LuaValue::UserData(new_list(lua, items)?)
        }
        Value::Map(m) => {
            let mut entries = Vec::with_capacity(m.entries.len());
            for (k, x) in &m.entries {
                entries.push((to_lua(lua, k)?, to_lua(lua, x)?));
            }
            LuaValue::UserData(lua.create_userdata(LuaMap {
                entries: Rc::new(RefCell::new(entries)),
            })?)
        }
    })
}

/// A Lua value as a bin value; an unsupported type (a function, a coroutine) is an error.
pub fn from_lua(v: &LuaValue, depth: usize) -> Result<Value, String> {
    if depth > NESTING_MAX {
        return Err("value nested too deep".into());
    }
    Ok(match v {
        LuaValue::Nil => Value::Nil,
        LuaValue::Boolean(b) => Value::Bool(*b),
        LuaValue::Integer(i) => Value::Int(*i),
        LuaValue::Number(f) => Value::Float(*f),
        LuaValue::String(s) => Value::Str(s.as_bytes().to_vec()),
        LuaValue::UserData(ud) => {
            if let Ok(l) = ud.borrow::<LuaList>() {
                let items = (l.items.borrow().iter())
                    .map(|x| from_lua(x, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::List(apogee_ops::List {
                    ordered: false,
                    items,
                })
            } else if let Ok(m) = ud.borrow::<LuaMap>() {
                let mut entries = Vec::new();
                for (k, x) in m.entries.borrow().iter() {
                    entries.push((from_lua(k, depth + 1)?, from_lua(x, depth + 1)?));
                }
                Value::Map(apogee_ops::Map::from_entries(0, entries))
            } else if let Ok(b) = ud.borrow::<LuaBytes>() {
                Value::Bytes(b.particle_type, b.data.borrow().clone())
            } else {
                return Err("unsupported userdata in a UDF value".into());
            }
        }
        LuaValue::Table(t) => {
            // A plain table: a list when its keys are 1..n, else a map.
            let n = t.raw_len();
            let pairs: Vec<(LuaValue, LuaValue)> = t
                .clone()
                .pairs::<LuaValue, LuaValue>()
                .collect::<mlua::Result<_>>()
                .map_err(|e| e.to_string())?;
            if pairs.len() == n {
                let mut items = Vec::with_capacity(n);
                for i in 1..=n {
                    items.push(from_lua(
                        &t.raw_get::<LuaValue>(i).map_err(|e| e.to_string())?,
                        depth + 1,
                    )?);
                }
                Value::List(apogee_ops::List {
                    ordered: false,
                    items,
                })
            } else {
                let mut entries = Vec::new();
                for (k, x) in &pairs {
                    entries.push((from_lua(k, depth + 1)?, from_lua(x, depth + 1)?));
                }
                Value::Map(apogee_ops::Map::from_entries(0, entries))
            }
        }
        other => {
            return Err(format!(
                "a UDF cannot return or store a {}",
                other.type_name()
            ))
        }
    })
}

fn record_arg(v: &LuaValue) -> mlua::Result<RecordHandle> {
    match v {
        LuaValue::UserData(ud) => Ok(ud.borrow::<RecordHandle>()?.clone()),
        _ => Err(mlua::Error::runtime("expected a record")),
    }
}

fn list_arg(ud: &AnyUserData) -> mlua::Result<LuaList> {
    Ok(ud.borrow::<LuaList>()?.clone())
}

fn map_arg(ud: &AnyUserData) -> mlua::Result<LuaMap> {
    Ok(ud.borrow::<LuaMap>()?.clone())
}

/// Items of a constructor argument: a list, a plain table's values at integer keys 1, 2, ...
/// in key order (a nil in the middle is skipped and what follows kept, as Aerospike CE's
/// `list{1, nil, 3}` gives [1, 3]), or nothing.
fn items_of(v: &LuaValue) -> mlua::Result<Vec<LuaValue>> {
    Ok(match v {
        LuaValue::Nil => Vec::new(),
        LuaValue::Table(t) => {
            let mut keyed = Vec::new();
            for pair in t.clone().pairs::<LuaValue, LuaValue>() {
                if let (LuaValue::Integer(i), v) = pair? {
                    if i >= 1 {
                        keyed.push((i, v));
                    }
                }
            }
            keyed.sort_by_key(|(i, _)| *i);
            keyed.into_iter().map(|(_, v)| v).collect()
        }
        LuaValue::UserData(ud) => list_arg(ud)?.items.borrow().clone(),
        _ => return Err(mlua::Error::runtime("list() takes a table or a list")),
    })
}

/// `require(name)`: another registered module, run once per source (cached by its hash) in
/// an environment of its own; the module's return value, or its environment when it returns
/// nothing (Aerospike loads modules from its UDF directory the same way). Never a file.
fn install_require(lua: &Lua, registry: Arc<Registry>) -> mlua::Result<()> {
    let loaded = lua.create_table()?;
    let f = lua.create_function(move |lua, name: String| {
        let file = if name.ends_with(".lua") {
            name.clone()
        } else {
            format!("{name}.lua")
        };
        let Some(module) = registry.get(&file) else {
            return Err(mlua::Error::runtime(format!("module '{name}' not found")));
        };
        if let Some(t) = loaded.get::<Option<Table>>(file.as_str())? {
            if t.get::<String>("hash")? == module.hash {
                return t.get::<LuaValue>("value");
            }
        }
        let env = lua.create_table()?;
        let meta = lua.create_table()?;
        meta.set("__index", lua.globals())?;
        env.set_metatable(Some(meta));
        let out: LuaValue = lua
            .load(&module.source[..])
            .set_name(format!("@{file}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone())
            .call(())?;
        let value = if out.is_nil() {
            LuaValue::Table(env)
        } else {
            out
        };
        let entry = lua.create_table()?;
        entry.set("hash", module.hash.as_str())?;
        entry.set("value", value.clone())?;
        loaded.set(file.as_str(), entry)?;
        Ok(value)
    })?;
    lua.globals().set("require", f)
}

/// Installs Aerospike's Lua API in the globals.
fn install_api(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();

    // Logging, as Aerospike's `info("fmt", ...)`: string.format, into the server log.
    for level in ["info", "warn", "debug", "trace"] {
        let f = lua.create_function(move |lua, args: MultiValue| {
            let format: mlua::Function = lua.globals().get::<Table>("string")?.get("format")?;
            let text: String = format.call(args).unwrap_or_else(|e| e.to_string());
            match level {
                "warn" => tracing::warn!(target: "apogee::udf", "{text}"),
                "info" => tracing::info!(target: "apogee::udf", "{text}"),
                _ => tracing::debug!(target: "apogee::udf", "{text}"),
            }
            Ok(())
        })?;
        g.set(level, f)?;
    }

    // record.*
    let record = lua.create_table()?;
    record.set(
        "ttl",
        lua.create_function(|_, r: LuaValue| {
            let st = record_arg(&r)?;
            let st = st.0.borrow();
            let now = apogee_engine::clock::now_secs();
            Ok(match st.meta.void_time {
                0 => 0i64,
                v => i64::from(v.saturating_sub(now)),
            })
        })?,
    )?;
    record.set(
        "gen",
        lua.create_function(|_, r: LuaValue| {
            Ok(i64::from(record_arg(&r)?.0.borrow().meta.generation))
        })?,
    )?;
    record.set(
        "last_update_time",
        lua.create_function(|_, r: LuaValue| {
            Ok(record_arg(&r)?.0.borrow().meta.last_update_ms as i64)
        })?,
    )?;
    record.set(
        "setname",
        lua.create_function(|lua, r: LuaValue| {
            let h = record_arg(&r)?;
            let st = h.0.borrow();
            if st.set_name.is_empty() {
                return Ok(LuaValue::Nil);
            }
            Ok(LuaValue::String(lua.create_string(&st.set_name)?))
        })?,
    )?;
    record.set(
        "digest",
        lua.create_function(|lua, r: LuaValue| {
            let d = record_arg(&r)?.0.borrow().digest;
            to_lua(lua, &Value::Bytes(4, d.to_vec()))
        })?,
    )?;
    record.set(
        "key",
        lua.create_function(|lua, r: LuaValue| {
            let h = record_arg(&r)?;
            let st = h.0.borrow();
            let Some(k) = &st.key else {
                return Ok(LuaValue::Nil);
            };
            match Value::from_particle(k.particle_type, &k.bytes) {
                Ok(v) => to_lua(lua, &v),
                Err(_) => Ok(LuaValue::Nil),
            }
        })?,
    )?;
    record.set(
        "set_ttl",
        lua.create_function(|_, (r, ttl): (LuaValue, i64)| {
            let h = record_arg(&r)?;
            let ttl = u32::try_from(ttl).unwrap_or(u32::MAX);
            h.0.borrow_mut().ttl = Some(ttl);
            Ok(())
        })?,
    )?;
    record.set(
        "drop_key",
        lua.create_function(|_, r: LuaValue| {
            record_arg(&r)?.0.borrow_mut().drop_key = true;
            Ok(())
        })?,
    )?;
    record.set(
        "bin_names",
        lua.create_function(|lua, r: LuaValue| {
            let h = record_arg(&r)?;
            let st = h.0.borrow();
            let t = lua.create_table()?;
            for (name, v) in &st.bins {
                if !v.is_nil() {
                    t.push(lua.create_string(name)?)?;
                }
            }
            Ok(t)
        })?,
    )?;
    record.set(
        "numbins",
        lua.create_function(|_, r: LuaValue| {
            Ok(record_arg(&r)?
                .0
                .borrow()
                .bins
                .iter()
                .filter(|(_, v)| !v.is_nil())
                .count())
        })?,
    )?;
    g.set("record", record)?;

    // aerospike:exists/create/update/remove
    let aerospike = lua.create_table()?;
    aerospike.set(
        "exists",
        lua.create_function(|_, (_, r): (LuaValue, LuaValue)| {
            // As Aerospike's: whether the record existed when the call began (a remove or
            // a create in the call does not change it).
            Ok(record_arg(&r)?.0.borrow().exists)
        })?,
    )?;
    for (name, action) in [
        ("create", Action::Write),
        ("update", Action::Write),
        ("remove", Action::Remove),
    ] {
        aerospike.set(
            name,
            lua.create_function(move |_, (_, r): (LuaValue, LuaValue)| {
                let h = record_arg(&r)?;
                let mut st = h.0.borrow_mut();
                st.action = action;
                if action == Action::Remove {
                    st.bins.clear();
                }
                Ok(0)
            })?,
        )?;
    }
    g.set("aerospike", aerospike)?;

    // list
    let list = lua.create_table()?;
    list.set(
        "append",
        lua.create_function(|_, (l, v): (AnyUserData, LuaValue)| {
            list_arg(&l)?.items.borrow_mut().push(v);
            Ok(())
        })?,
    )?;
    list.set(
        "prepend",
        lua.create_function(|_, (l, v): (AnyUserData, LuaValue)| {
            list_arg(&l)?.items.borrow_mut().insert(0, v);
            Ok(())
        })?,
    )?;
    list.set(
        "insert",
        lua.create_function(|_, (l, i, v): (AnyUserData, i64, LuaValue)| {
            let l = list_arg(&l)?;
            let mut items = l.items.borrow_mut();
            let i = usize::try_from(i - 1)
                .ok()
                .filter(|i| *i <= items.len())
                .ok_or_else(|| mlua::Error::runtime("list index out of range"))?;
            items.insert(i, v);
            Ok(())
        })?,
    )?;
    list.set(
        "remove",
        lua.create_function(|_, (l, i): (AnyUserData, i64)| {
            let l = list_arg(&l)?;
            let mut items = l.items.borrow_mut();
            match usize::try_from(i - 1) {
                Ok(i) if i < items.len() => Ok(items.remove(i)),
                _ => Ok(LuaValue::Nil),
            }
        })?,
    )?;
    list.set(
        "size",
        lua.create_function(|_, l: AnyUserData| Ok(list_arg(&l)?.items.borrow().len()))?,
    )?;
    list.set(
        "clone",
        lua.create_function(|lua, l: AnyUserData| {
            let items = list_arg(&l)?.items.borrow().clone();
            new_list(lua, items)
        })?,
    )?;
    list.set(
        "take",
        lua.create_function(|lua, (l, n): (AnyUserData, usize)| {
            let items: Vec<_> = list_arg(&l)?
                .items
                .borrow()
                .iter()
                .take(n)
                .cloned()
                .collect();
            new_list(lua, items)
        })?,
    )?;
    list.set(
        "drop",
        lua.create_function(|lua, (l, n): (AnyUserData, usize)| {
            let items: Vec<_> = list_arg(&l)?
                .items
                .borrow()
                .iter()
                .skip(n)
                .cloned()
                .collect();
            new_list(lua, items)
        })?,
    )?;
    list.set(
        "trim",
        lua.create_function(|_, (l, n): (AnyUserData, usize)| {
            list_arg(&l)?
                .items
                .borrow_mut()
                .truncate(n.saturating_sub(1));
            Ok(())
        })?,
    )?;
    list.set(
        "concat",
        lua.create_function(|_, (l, other): (AnyUserData, AnyUserData)| {
            let more = list_arg(&other)?.items.borrow().clone();
            list_arg(&l)?.items.borrow_mut().extend(more);
            Ok(())
        })?,
    )?;
    list.set(
        "merge",
        lua.create_function(|lua, (l, other): (AnyUserData, AnyUserData)| {
            let mut items = list_arg(&l)?.items.borrow().clone();
            items.extend(list_arg(&other)?.items.borrow().iter().cloned());
            new_list(lua, items)
        })?,
    )?;
    list.set(
        "iterator",
        lua.create_function(|lua, l: AnyUserData| {
            let l = list_arg(&l)?;
            let i = Cell::new(0usize);
            lua.create_function(move |_, ()| {
                let at = i.get();
                i.set(at + 1);
                Ok(l.items.borrow().get(at).cloned().unwrap_or(LuaValue::Nil))
            })
        })?,
    )?;
    let list_meta = lua.create_table()?;
    list_meta.set(
        "__call",
        lua.create_function(|lua, (_, init): (LuaValue, LuaValue)| {
            new_list(lua, items_of(&init)?)
        })?,
    )?;
    list.set_metatable(Some(list_meta));
    g.set("list", list)?;

    // map
    let map = lua.create_table()?;
    map.set(
        "size",
        lua.create_function(|_, m: AnyUserData| Ok(map_arg(&m)?.entries.borrow().len()))?,
    )?;
    map.set(
        "remove",
        lua.create_function(|_, (m, k): (AnyUserData, LuaValue)| {
            map_arg(&m)?.set(k, LuaValue::Nil);
            Ok(())
        })?,
    )?;
    map.set(
        "clone",
        lua.create_function(|lua, m: AnyUserData| {
            let entries = map_arg(&m)?.entries.borrow().clone();
            lua.create_userdata(LuaMap {
                entries: Rc::new(RefCell::new(entries)),
            })
        })?,
    )?;
    map.set(
        "merge",
        lua.create_function(
            |lua, (a, b, f): (AnyUserData, AnyUserData, Option<mlua::Function>)| {
                let out = LuaMap {
                    entries: Rc::new(RefCell::new(map_arg(&a)?.entries.borrow().clone())),
                };
                for (k, v) in map_arg(&b)?.entries.borrow().iter() {
                    let merged = match (&f, out.get(k)) {
                        (Some(f), old) if !old.is_nil() => f.call::<LuaValue>((old, v.clone()))?,
                        _ => v.clone(),
                    };
                    out.set(k.clone(), merged);
                }
                lua.create_userdata(out)
            },
        )?,
    )?;
    for (name, part) in [("pairs", 0u8), ("keys", 1), ("values", 2), ("iterator", 0)] {
        map.set(
            name,
            lua.create_function(move |lua, m: AnyUserData| {
                let snapshot = map_arg(&m)?.entries.borrow().clone();
                let i = Cell::new(0usize);
                lua.create_function(move |_, _: MultiValue| {
                    let at = i.get();
                    i.set(at + 1);
                    Ok(match snapshot.get(at) {
                        None => MultiValue::new(),
                        Some((k, v)) => match part {
                            1 => MultiValue::from_iter([k.clone()]),
                            2 => MultiValue::from_iter([v.clone()]),
                            _ => MultiValue::from_iter([k.clone(), v.clone()]),
                        },
                    })
                })
            })?,
        )?;
    }
    let map_meta = lua.create_table()?;
    map_meta.set(
        "__call",
        lua.create_function(|lua, (_, init): (LuaValue, LuaValue)| {
            let out = LuaMap::default();
            match &init {
                LuaValue::Nil => {}
                LuaValue::Table(t) => {
                    for pair in t.clone().pairs::<LuaValue, LuaValue>() {
                        let (k, v) = pair?;
                        out.set(k, v);
                    }
                }
                LuaValue::UserData(ud) => {
                    for (k, v) in map_arg(ud)?.entries.borrow().iter() {
                        out.set(k.clone(), v.clone());
                    }
                }
                _ => return Err(mlua::Error::runtime("map() takes a table or a map")),
            }
            lua.create_userdata(out)
        })?,
    )?;
    map.set_metatable(Some(map_meta));
    g.set("map", map)?;

    // bytes
    let bytes = lua.create_table()?;
    bytes.set(
        "size",
        lua.create_function(|_, b: AnyUserData| Ok(b.borrow::<LuaBytes>()?.data.borrow().len()))?,
    )?;
    add_bytes_functions(lua, &bytes)?;
    let bytes_meta = lua.create_table()?;
    bytes_meta.set(
        "__call",
        lua.create_function(|lua, (_, n): (LuaValue, Option<usize>)| {
            let n = n.unwrap_or(0);
            if n > LUA_MEMORY_BYTES_MAX {
                return Err(mlua::Error::runtime("bytes too large"));
            }
            // As Aerospike's: `n` is a capacity; the length is the highest byte set.
            lua.create_userdata(LuaBytes {
                particle_type: 4,
                data: Rc::new(RefCell::new(Vec::with_capacity(n))),
            })
        })?,
    )?;
    bytes.set_metatable(Some(bytes_meta));
    g.set("bytes", bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compile_error_names_its_line_and_message() {
        let e = compile_check("bad.lua", b"x = 1\nfunction (\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected"), "{}", e.message);
        assert!(compile_check("ok.lua", b"function f(r) return 1 end").is_ok());
        assert!(
            compile_check("bin.lua", b"\x1bLua").is_err(),
            "bytecode is refused"
        );
    }

    fn runtime_with(source: &str) -> Runtime {
        let reg = Arc::new(Registry::default());
        reg.lock().merge(super::super::Change::Put {
            name: "m.lua".into(),
            source: source.as_bytes().to_vec(),
            version: super::super::Version {
                counter: 1,
                origin: 1,
            },
        });
        Runtime::new(reg).unwrap()
    }

    fn call(rt: &mut Runtime, f: &str, args: &[Value]) -> (Result<Value, UdfError>, RecordHandle) {
        let rec = apogee_engine::Record {
            digest: apogee_wire::Digest([1; 20]),
            meta: apogee_engine::RecordMeta {
                generation: 3,
                void_time: 0,
                last_update_ms: 5,
            },
            set_name: b"s".to_vec(),
            user_key: None,
            bins: vec![apogee_engine::Bin {
                name: b"a".to_vec(),
                particle_type: 1,
                value: 7i64.to_be_bytes().to_vec(),
            }],
            tombstone: false,
        };
        let h = RecordHandle::new(rt, [1; 20], b"s", None, Some(&rec)).unwrap();
        let call = Call {
            package: "m".into(),
            function: f.into(),
            args: args.to_vec(),
        };
        (rt.call_record(&call, &h), h)
    }

    #[test]
    fn a_record_udf_reads_changes_and_returns_values() {
        let mut rt = runtime_with(
            "function add(r, b, n) r[b] = r[b] + n; aerospike:update(r); return r[b] end\n\
             function lst(r) local l = list{1, 2}; list.append(l, 'x'); r['l'] = l; return l end\n\
             function mp(r) local m = map(); m['k'] = record.gen(r); return m end\n\
             function boom(r) error('bad thing') end\n\
             function spin(r) while true do end end\n\
             function gone(r) aerospike:remove(r) end",
        );
        let (out, h) = call(&mut rt, "add", &[Value::Str(b"a".to_vec()), Value::Int(5)]);
        assert!(matches!(out, Ok(Value::Int(12))), "{out:?}");
        assert_eq!(h.0.borrow().action, Action::Write);
        let (out, h) = call(&mut rt, "lst", &[]);
        let Ok(Value::List(l)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(l.items.len(), 3);
        assert_eq!(
            h.0.borrow().action,
            Action::None,
            "no update: nothing is stored"
        );
        let (out, _) = call(&mut rt, "mp", &[]);
        let Ok(Value::Map(m)) = out else {
            panic!("{out:?}")
        };
        assert!(matches!(m.entries[0].1, Value::Int(3)));
        let (out, _) = call(&mut rt, "boom", &[]);
        assert!(out.unwrap_err().0.contains("bad thing"));
        let (out, _) = call(&mut rt, "spin", &[]);
        assert!(out.unwrap_err().0.contains("instructions"));
        let (_, h) = call(&mut rt, "gone", &[]);
        assert_eq!(h.0.borrow().action, Action::Remove);
        let (out, _) = call(&mut rt, "nope", &[]);
        assert!(out.unwrap_err().0.contains("function not found"));
        // The runtime still works after the errors.
        let (out, _) = call(&mut rt, "add", &[Value::Str(b"a".to_vec()), Value::Int(1)]);
        assert!(matches!(out, Ok(Value::Int(8))));
    }

    #[test]
    fn a_module_requires_another_registered_module() {
        let mut rt =
            runtime_with("local h = require('helper')\nfunction f(r) return h.twice(21) end");
        rt.registry.lock().merge(super::super::Change::Put {
            name: "helper.lua".into(),
            source: b"local M = {}\nfunction M.twice(x) return 2 * x end\nreturn M".to_vec(),
            version: super::super::Version {
                counter: 2,
                origin: 1,
            },
        });
        let (out, _) = call(&mut rt, "f", &[]);
        assert!(matches!(out, Ok(Value::Int(42))), "{out:?}");
    }

    #[test]
    fn the_sandbox_has_no_files_processes_or_loaders() {
        let mut rt = runtime_with(
            "function f(r) return type(io) .. type(os) .. type(load) .. type(dofile) .. type(collectgarbage) end\n\
             function big(r) local s = 'x'; while true do s = s .. s end end",
        );
        let (out, _) = call(&mut rt, "f", &[]);
        assert!(
            matches!(out, Ok(Value::Str(ref s)) if s == b"nilnilnilnilnil"),
            "{out:?}"
        );
        let (out, _) = call(&mut rt, "big", &[]);
        assert!(
            out.is_err(),
            "a string past the memory limit fails the call"
        );
        let (out, _) = call(&mut rt, "f", &[]);
        assert!(out.is_ok(), "and the state keeps working");
    }
}
