//! Aerospike expressions (spec §4.7–§4.8): filter expressions (field 43) and the values of
//! expression read/write ops. Parses the msgpack prefix tree into [`Exp`], builds it once
//! into a typed tree (`build.rs`: an ill-typed expression is refused with PARAMETER_ERROR
//! before any record is read, as Aerospike does) and evaluates it against one record:
//! comparison, regex, geo (through [`crate::geo`]), logic, arithmetic, integer bit ops,
//! min/max, record metadata, keys and bins of every type, `let`/`var`, `cond`, and list, map,
//! bit and HLL read and modify calls whose arguments are expressions themselves.
//!
//! Evaluation is three-valued as on the real server: a missing bin or a bin of another type
//! makes the expression *unknown* (`None`), and a filter passes only on a definite `true`.
//! Must never panic or recurse without bound on hostile input: depth is capped by
//! [`DEPTH_MAX`] and every count is checked against the bytes.

use std::cmp::Ordering;

use crate::error::{OpError, OpResult};
use crate::value::{compare, equal, ptype, Reader, Value, DEPTH_MAX};

mod build;
pub mod path;

/// Expression op codes (spec §4.8).
mod code {
    pub const UNKNOWN: u8 = 0;
    pub const EQ: u8 = 1;
    pub const NE: u8 = 2;
    pub const GT: u8 = 3;
    pub const GE: u8 = 4;
    pub const LT: u8 = 5;
    pub const LE: u8 = 6;
    pub const REGEX: u8 = 7;
    pub const GEO: u8 = 8;
    pub const IN_LIST: u8 = 9;
    pub const AND: u8 = 16;
    pub const OR: u8 = 17;
    pub const NOT: u8 = 18;
    pub const EXCLUSIVE: u8 = 19;
    pub const ADD: u8 = 20;
    pub const SUB: u8 = 21;
    pub const MUL: u8 = 22;
    pub const DIV: u8 = 23;
    pub const POW: u8 = 24;
    pub const LOG: u8 = 25;
    pub const MOD: u8 = 26;
    pub const ABS: u8 = 27;
    pub const FLOOR: u8 = 28;
    pub const CEIL: u8 = 29;
    pub const TO_INT: u8 = 30;
    pub const TO_FLOAT: u8 = 31;
    pub const INT_AND: u8 = 32;
    pub const INT_OR: u8 = 33;
    pub const INT_XOR: u8 = 34;
    pub const INT_NOT: u8 = 35;
    pub const INT_LSHIFT: u8 = 36;
    pub const INT_RSHIFT: u8 = 37;
    pub const INT_ARSHIFT: u8 = 38;
    pub const INT_COUNT: u8 = 39;
    pub const INT_LSCAN: u8 = 40;
    pub const INT_RSCAN: u8 = 41;
    pub const MIN: u8 = 50;
    pub const MAX: u8 = 51;
    pub const DIGEST_MODULO: u8 = 64;
    pub const DEVICE_SIZE: u8 = 65;
    pub const LAST_UPDATE: u8 = 66;
    pub const SINCE_UPDATE: u8 = 67;
    pub const VOID_TIME: u8 = 68;
    pub const TTL: u8 = 69;
    pub const SET_NAME: u8 = 70;
    pub const KEY_EXISTS: u8 = 71;
    pub const IS_TOMBSTONE: u8 = 72;
    pub const MEMORY_SIZE: u8 = 73;
    pub const RECORD_SIZE: u8 = 74;
    pub const KEY: u8 = 80;
    pub const BIN: u8 = 81;
    pub const BIN_TYPE: u8 = 82;
    pub const LOOP_VAR: u8 = 122;
    pub const COND: u8 = 123;
    pub const VAR: u8 = 124;
    pub const LET: u8 = 125;
    pub const QUOTE: u8 = 126;
    pub const CALL: u8 = 127;
}

/// Expression value types (the `type` of KEY and BIN, and of CALL results).
fn particle_of_exp_type(t: i64) -> OpResult<u8> {
    Ok(match t {
        0 => ptype::NULL,
        1 => ptype::BOOL,
        2 => ptype::INTEGER,
        3 => ptype::STRING,
        4 => ptype::LIST,
        5 => ptype::MAP,
        6 => ptype::BLOB,
        7 => ptype::FLOAT,
        8 => ptype::GEOJSON,
        9 => 18,
        _ => return Err(OpError::Parameter("unknown expression value type")),
    })
}

/// CALL system types (low bits) and the "modify locally" flag.
const CALL_SYSTEM_CDT: i64 = 0;
const CALL_SYSTEM_BITS: i64 = 1;
const CALL_SYSTEM_HLL: i64 = 2;
const CALL_MODIFY: i64 = 0x40;

/// Nanoseconds between the Unix epoch and Aerospike's (2010-01-01).
const CITRUSLEAF_EPOCH_UNIX_NS: i64 = 1_262_304_000 * 1_000_000_000;

#[derive(Debug)]
pub enum Exp {
    Lit(Value),
    /// Every op whose arguments are themselves expressions.
    Op(u8, Vec<Exp>),
    Bin(u8, Vec<u8>),
    BinType(Vec<u8>),
    Key(u8),
    Var(Vec<u8>),
    Let(Vec<(Vec<u8>, Exp)>, Box<Exp>),
    Call {
        /// The declared result type (an expression value type, 0..=9).
        result: i64,
        system: i64,
        op: CallOp,
        bin: Box<Exp>,
    },
    /// A compiled regular expression matched against a string expression.
    Regex(regex::Regex, Box<Exp>),
    /// A path expression's loop variable (`[122, type, id]`): its declared type and which
    /// variable (key, value or index of the element the path is at).
    LoopVar(build::Ty, u8),
    /// `select_by_path` / `modify_by_path` as an expression (a CALL whose op is a path).
    Path {
        result: build::Ty,
        op: Box<path::PathOp>,
        bin: Box<Exp>,
    },
}

/// The op a CALL applies: `[code, args...]` or, inside a CDT context,
/// `[0xff, ctx, [code, args...]]`. Its arguments are expressions themselves (a literal list
/// arrives quoted), evaluated before the op runs.
#[derive(Debug)]
pub struct CallOp {
    pub code: i64,
    pub ctx: Option<Value>,
    pub args: Vec<Exp>,
}

/// The op code that wraps a CDT op in a context.
const CDT_CONTEXT_EVAL: i64 = 0xff;

/// What a CALL applies: an op on the bin, or a path.
enum Called {
    Op(CallOp),
    Path(path::PathOp),
}

fn parse_call_op(r: &mut Reader, depth: usize) -> OpResult<Called> {
    let Some(n) = r.array_len()? else {
        return Err(OpError::Parameter("an expression call's op is not a list"));
    };
    if n == 0 {
        return Err(OpError::Parameter("an expression call's op is empty"));
    }
    let code = small_int(&r.read_value(depth)?, "call op code")?;
    if code == path::PATH_CODE {
        return Ok(Called::Path(path::parse_rest(r, n, depth + 1)?));
    }
    if code == CDT_CONTEXT_EVAL {
        if n != 3 {
            return Err(OpError::Parameter(
                "a CDT context call needs [0xff, ctx, op]",
            ));
        }
        let ctx = r.read_value(depth)?;
        let Called::Op(inner) = parse_call_op(r, depth + 1)? else {
            return Err(OpError::Parameter("a CDT context call wraps a path"));
        };
        if inner.ctx.is_some() {
            return Err(OpError::Parameter("a CDT context call nests another"));
        }
        return Ok(Called::Op(CallOp {
            ctx: Some(ctx),
            ..inner
        }));
    }
    let mut args = Vec::with_capacity(n - 1);
    for _ in 1..n {
        args.push(parse_at(r, depth + 1)?);
    }
    Ok(Called::Op(CallOp {
        code,
        ctx: None,
        args,
    }))
}

/// POSIX `regcomp` flags as Aerospike reads them: glibc's values, handed to `regcomp` as sent.
/// The clients' constants differ (their REGEX_NEWLINE is 8, glibc's REG_NOSUB): Aerospike CE
/// 8.1.2 gives newline semantics to the clients' REGEX_NOSUB (4), and none to their 8.
mod regex_flag {
    pub const ICASE: i64 = 2;
    pub const NEWLINE: i64 = 4;
}

/// Largest compiled regular expression (bytes of program), so a pattern cannot eat memory.
pub const REGEX_SIZE_BYTES_MAX: usize = 1 << 20;

/// The record an expression reads: its bins and metadata.
pub trait RecordAccess {
    /// A bin's particle type and bytes.
    fn bin(&self, name: &[u8]) -> Option<(u8, &[u8])>;
    fn meta(&self) -> &Meta;
}

#[derive(Debug, Default, Clone)]
pub struct Meta {
    pub digest: [u8; 20],
    pub set_name: Vec<u8>,
    /// The stored user key as a value, when the record has one.
    pub key: Option<Value>,
    /// Seconds since 2010-01-01; 0 never expires.
    pub void_time: u32,
    /// Milliseconds since 2010-01-01.
    pub last_update_ms: u64,
    pub record_bytes: u64,
    /// Now, in milliseconds since 2010-01-01.
    pub now_ms: u64,
}

/// Parses one whole expression.
pub fn parse(bytes: &[u8]) -> OpResult<Exp> {
    let mut r = Reader::new(bytes);
    let e = parse_at(&mut r, 0)?;
    if !r.at_end() {
        return Err(OpError::Parameter("trailing bytes after an expression"));
    }
    within_limits(&e)?;
    build::type_of(&e)?;
    Ok(e)
}

/// Parses and builds a filter expression: one whose result is a boolean.
pub fn parse_filter(bytes: &[u8]) -> OpResult<Exp> {
    let e = parse(bytes)?;
    if build::type_of(&e)? != build::Ty::Bool {
        return Err(OpError::Parameter("a filter expression must be boolean"));
    }
    Ok(e)
}

/// Most nodes one expression may have; real filters have tens.
pub const EXP_NODES_MAX: usize = 4096;
/// Most list/map calls one expression may make: each works on a whole bin (up to the record
/// size), so this bounds one evaluation's work.
pub const EXP_CALLS_MAX: usize = 64;

fn within_limits(e: &Exp) -> OpResult<()> {
    fn walk(e: &Exp, nodes: &mut usize, calls: &mut usize) {
        *nodes += 1;
        match e {
            Exp::Op(_, args) => args.iter().for_each(|a| walk(a, nodes, calls)),
            Exp::Let(defs, scope) => {
                defs.iter().for_each(|(_, d)| walk(d, nodes, calls));
                walk(scope, nodes, calls);
            }
            Exp::Call { bin, op, .. } => {
                *calls += 1;
                op.args.iter().for_each(|a| walk(a, nodes, calls));
                walk(bin, nodes, calls);
            }
            Exp::Path { op, bin, .. } => {
                *calls += 1;
                op.exps().for_each(|a| walk(a, nodes, calls));
                walk(bin, nodes, calls);
            }
            Exp::Regex(_, e) => walk(e, nodes, calls),
            Exp::Lit(_)
            | Exp::Bin(..)
            | Exp::BinType(_)
            | Exp::Key(_)
            | Exp::Var(_)
            | Exp::LoopVar(..) => {}
        }
    }
    let (mut nodes, mut calls) = (0, 0);
    walk(e, &mut nodes, &mut calls);
    if nodes > EXP_NODES_MAX {
        return Err(OpError::Parameter("expression has more than 4096 nodes"));
    }
    if calls > EXP_CALLS_MAX {
        return Err(OpError::Parameter(
            "expression makes more than 64 list/map calls",
        ));
    }
    Ok(())
}

fn small_int(v: &Value, what: &'static str) -> OpResult<i64> {
    v.as_int().ok_or(OpError::Parameter(what))
}

fn parse_at(r: &mut Reader, depth: usize) -> OpResult<Exp> {
    if depth > DEPTH_MAX {
        return Err(OpError::Parameter("expression nested too deeply"));
    }
    let Some(n) = r.array_len()? else {
        return Ok(Exp::Lit(r.read_value(depth)?));
    };
    if n == 0 {
        return Err(OpError::Parameter("empty expression array"));
    }
    let op = small_int(
        &r.read_value(depth)?,
        "expression op code is not an integer",
    )?;
    let op = u8::try_from(op).map_err(|_| OpError::Parameter("unknown expression op code"))?;
    let arity = |want: usize| {
        if n == want {
            Ok(())
        } else {
            Err(OpError::Parameter("wrong number of expression arguments"))
        }
    };
    Ok(match op {
        code::QUOTE => {
            arity(2)?;
            Exp::Lit(r.read_value(depth)?)
        }
        code::BIN => {
            arity(3)?;
            let t = small_int(&r.read_value(depth)?, "bin type")?;
            let p = particle_of_exp_type(t)?;
            Exp::Bin(p, r.raw_str()?.to_vec())
        }
        code::BIN_TYPE => {
            arity(2)?;
            Exp::BinType(r.raw_str()?.to_vec())
        }
        code::VAR => {
            arity(2)?;
            Exp::Var(r.raw_str()?.to_vec())
        }
        code::KEY => {
            arity(2)?;
            let t = small_int(&r.read_value(depth)?, "key type")?;
            Exp::Key(particle_of_exp_type(t)?)
        }
        code::LET => {
            if n < 2 || (n - 2) % 2 != 0 {
                return Err(OpError::Parameter("let needs name/value pairs and a scope"));
            }
            let mut defs = Vec::with_capacity((n - 2) / 2);
            for _ in 0..(n - 2) / 2 {
                let name = r.raw_str()?.to_vec();
                defs.push((name, parse_at(r, depth + 1)?));
            }
            Exp::Let(defs, Box::new(parse_at(r, depth + 1)?))
        }
        code::LOOP_VAR => {
            arity(3)?;
            let t =
                build::Ty::of_exp_type(small_int(&r.read_value(depth)?, "loop variable type")?)?;
            let id = small_int(&r.read_value(depth)?, "loop variable id")?;
            if !(0..=2).contains(&id) {
                return Err(OpError::Parameter("unknown loop variable"));
            }
            Exp::LoopVar(t, id as u8)
        }
        code::CALL => {
            arity(5)?;
            let result = small_int(&r.read_value(depth)?, "call result type")?;
            let system = small_int(&r.read_value(depth)?, "call system type")?;
            let called = parse_call_op(r, depth + 1)?;
            let bin = Box::new(parse_at(r, depth + 1)?);
            match called {
                Called::Op(op) => Exp::Call {
                    result,
                    system,
                    op,
                    bin,
                },
                Called::Path(op) => {
                    if system & !CALL_MODIFY != CALL_SYSTEM_CDT {
                        return Err(OpError::Parameter("a path expression is a CDT call"));
                    }
                    Exp::Path {
                        result: build::Ty::of_exp_type(result)?,
                        op: Box::new(op),
                        bin,
                    }
                }
            }
        }
        code::REGEX => {
            arity(4)?;
            let flags = small_int(&r.read_value(depth)?, "regex flags")?;
            let pattern = std::str::from_utf8(r.raw_str()?)
                .map_err(|_| OpError::Parameter("regex is not UTF-8"))?;
            let re = regex::RegexBuilder::new(pattern)
                .case_insensitive(flags & regex_flag::ICASE != 0)
                // POSIX: without REG_NEWLINE '.' matches a newline and ^ $ match only at the
                // ends; with it, the reverse.
                .multi_line(flags & regex_flag::NEWLINE != 0)
                .dot_matches_new_line(flags & regex_flag::NEWLINE == 0)
                .size_limit(REGEX_SIZE_BYTES_MAX)
                .build()
                .map_err(|_| OpError::Parameter("invalid regular expression"))?;
            Exp::Regex(re, Box::new(parse_at(r, depth + 1)?))
        }
        code::GEO => {
            arity(3)?;
            Exp::Op(op, vec![parse_at(r, depth + 1)?, parse_at(r, depth + 1)?])
        }
        code::DIGEST_MODULO => {
            arity(2)?;
            Exp::Op(op, vec![parse_at(r, depth + 1)?])
        }
        _ if is_known(op) => {
            let mut args = Vec::with_capacity(n - 1);
            for _ in 1..n {
                args.push(parse_at(r, depth + 1)?);
            }
            Exp::Op(op, args)
        }
        // Aerospike CE refuses an op code it has no entry for while building: 4, not 16.
        _ => return Err(OpError::Parameter("unknown expression op code")),
    })
}

fn is_known(op: u8) -> bool {
    matches!(op, 0..=6 | 8 | 9 | 16..=41 | 50 | 51 | 64..=74 | code::COND)
}

/// Evaluates a filter expression: true only when it is definitely true.
pub fn filter(bytes: &[u8], rec: &dyn RecordAccess) -> OpResult<bool> {
    let e = parse_filter(bytes)?;
    Ok(matches!(
        eval(&e, &mut Env::new(rec))?,
        Some(Value::Bool(true))
    ))
}

/// Evaluates a parsed expression; `None` is "unknown".
pub fn evaluate(e: &Exp, rec: &dyn RecordAccess) -> OpResult<Option<Value>> {
    eval(e, &mut Env::new(rec))
}

struct Env<'a> {
    rec: &'a dyn RecordAccess,
    vars: Vec<(Vec<u8>, Option<Value>)>,
    /// The elements paths are at, innermost last: what loop variables read.
    loops: Vec<path::Binding>,
}

impl<'a> Env<'a> {
    fn new(rec: &'a dyn RecordAccess) -> Env<'a> {
        Env {
            rec,
            vars: vec![],
            loops: vec![],
        }
    }
}

fn args_n(args: &[Exp], n: usize) -> OpResult<()> {
    if args.len() != n {
        return Err(OpError::Parameter("wrong number of expression arguments"));
    }
    Ok(())
}

fn int_arg(v: Option<Value>) -> Option<i64> {
    v.and_then(|v| v.as_int())
}

fn eval(e: &Exp, env: &mut Env) -> OpResult<Option<Value>> {
    Ok(match e {
        Exp::Lit(v) => Some(v.clone()),
        Exp::Bin(p, name) => match env.rec.bin(name) {
            Some((t, bytes)) if t == *p || (*p == ptype::BLOB && (7..=12).contains(&t)) => {
                Some(Value::from_particle(t, bytes)?)
            }
            _ => None,
        },
        Exp::BinType(name) => Some(Value::Int(i64::from(
            env.rec.bin(name).map_or(ptype::NULL, |(t, _)| t),
        ))),
        Exp::Key(p) => env
            .rec
            .meta()
            .key
            .clone()
            .filter(|k| k.to_particle().0 == *p),
        Exp::Var(name) => match env.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v.clone(),
            None => return Err(OpError::Parameter("expression variable is not defined")),
        },
        Exp::Let(defs, scope) => {
            let mark = env.vars.len();
            for (name, def) in defs {
                let v = eval(def, env)?;
                env.vars.push((name.clone(), v));
            }
            let out = eval(scope, env);
            env.vars.truncate(mark);
            out?
        }
        Exp::Call {
            system, op, bin, ..
        } => {
            let mut items = vec![Value::Int(op.code)];
            for a in &op.args {
                match eval(a, env)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            let mut payload = Value::List(crate::value::List {
                ordered: false,
                items,
            });
            if let Some(ctx) = &op.ctx {
                payload = Value::List(crate::value::List {
                    ordered: false,
                    items: vec![Value::Int(CDT_CONTEXT_EVAL), ctx.clone(), payload],
                });
            }
            call(*system, &payload, eval(bin, env)?)?
        }
        Exp::LoopVar(t, id) => match env.loops.last() {
            Some(b) => Some(b.get(*id, *t)?),
            None => return Err(OpError::Parameter("a loop variable outside a path")),
        },
        Exp::Path { result, op, bin } => {
            let bin = eval(bin, env)?;
            path::eval_call(op, *result, bin, env)?
        }
        Exp::Regex(re, e) => match eval(e, env)? {
            Some(Value::Str(s)) => Some(Value::Bool(
                std::str::from_utf8(&s).is_ok_and(|s| re.is_match(s)),
            )),
            _ => None,
        },
        Exp::Op(op, args) => eval_op(*op, args, env)?,
    })
}

fn call(system: i64, op: &Value, bin: Option<Value>) -> OpResult<Option<Value>> {
    let family = match system & !CALL_MODIFY {
        CALL_SYSTEM_CDT => crate::Family::Cdt,
        CALL_SYSTEM_BITS => crate::Family::Bits,
        CALL_SYSTEM_HLL => crate::Family::Hll,
        _ => return Err(OpError::Parameter("unknown expression call system")),
    };
    let Some(v) = bin else { return Ok(None) };
    let (t, bytes) = v.to_particle();
    let fits = match family {
        crate::Family::Cdt => matches!(t, ptype::LIST | ptype::MAP),
        crate::Family::Bits => t == ptype::BLOB,
        crate::Family::Hll => t == ptype::HLL,
    };
    if !fits {
        return Ok(None);
    }
    let modify = system & CALL_MODIFY != 0;
    // A call that fails on this record (a create-only init of an existing HLL, an index out of
    // range...) makes the expression unknown, as on Aerospike CE, rather than failing the
    // command: the caller decides what unknown means (filtered out, OP_NOT_APPLICABLE, or
    // nothing under EVAL_NO_FAIL).
    let Ok(out) = crate::apply(family, Some((t, &bytes)), &op.encode(), modify) else {
        return Ok(None);
    };
    Ok(if modify {
        match out.new_bin {
            Some((t, b)) => Some(Value::from_particle(t, &b)?),
            None => Some(v),
        }
    } else {
        out.result
    })
}

fn eval_op(op: u8, args: &[Exp], env: &mut Env) -> OpResult<Option<Value>> {
    use code::*;
    let meta = env.rec.meta();
    Ok(match op {
        UNKNOWN => None,
        EQ | NE | GT | GE | LT | LE => {
            args_n(args, 2)?;
            let (Some(a), Some(b)) = (eval(&args[0], env)?, eval(&args[1], env)?) else {
                return Ok(None);
            };
            let o = compare(&a, &b);
            Some(Value::Bool(match op {
                EQ => o == Ordering::Equal,
                NE => o != Ordering::Equal,
                GT => o == Ordering::Greater,
                GE => o != Ordering::Less,
                LT => o == Ordering::Less,
                _ => o != Ordering::Greater,
            }))
        }
        GEO => {
            args_n(args, 2)?;
            let (Some(Value::Bytes(ptype::GEOJSON, a)), Some(Value::Bytes(ptype::GEOJSON, b))) =
                (eval(&args[0], env)?, eval(&args[1], env)?)
            else {
                return Ok(None);
            };
            match (crate::geo::parse(&a), crate::geo::parse(&b)) {
                (Ok(a), Ok(b)) => Some(Value::Bool(crate::geo::matches(&a, &b))),
                _ => None,
            }
        }
        IN_LIST => {
            args_n(args, 2)?;
            let (Some(v), Some(Value::List(l))) = (eval(&args[0], env)?, eval(&args[1], env)?)
            else {
                return Ok(None);
            };
            Some(Value::Bool(l.items.iter().any(|x| equal(x, &v))))
        }
        AND | OR => {
            let decisive = op == OR;
            let mut unknown = false;
            for a in args {
                match eval(a, env)? {
                    Some(Value::Bool(b)) if b == decisive => return Ok(Some(Value::Bool(b))),
                    Some(Value::Bool(_)) => {}
                    _ => unknown = true,
                }
            }
            (!unknown).then_some(Value::Bool(!decisive))
        }
        NOT => {
            args_n(args, 1)?;
            match eval(&args[0], env)? {
                Some(Value::Bool(b)) => Some(Value::Bool(!b)),
                _ => None,
            }
        }
        EXCLUSIVE => {
            let mut trues = 0;
            for a in args {
                match eval(a, env)? {
                    Some(Value::Bool(true)) => trues += 1,
                    Some(Value::Bool(false)) => {}
                    _ => return Ok(None),
                }
            }
            Some(Value::Bool(trues == 1))
        }
        ADD | SUB | MUL | DIV | MIN | MAX => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                match eval(a, env)? {
                    Some(v @ (Value::Int(_) | Value::Float(_))) => vals.push(v),
                    _ => return Ok(None),
                }
            }
            arith(op, vals)
        }
        POW | LOG => {
            args_n(args, 2)?;
            let (Some(Value::Float(a)), Some(Value::Float(b))) =
                (eval(&args[0], env)?, eval(&args[1], env)?)
            else {
                return Ok(None);
            };
            Some(Value::Float(if op == POW {
                a.powf(b)
            } else {
                a.ln() / b.ln()
            }))
        }
        MOD => {
            args_n(args, 2)?;
            let (Some(a), Some(b)) = (int_arg(eval(&args[0], env)?), int_arg(eval(&args[1], env)?))
            else {
                return Ok(None);
            };
            a.checked_rem(b).map(Value::Int)
        }
        ABS | FLOOR | CEIL | TO_INT | TO_FLOAT => {
            args_n(args, 1)?;
            match (op, eval(&args[0], env)?) {
                (ABS, Some(Value::Int(i))) => Some(Value::Int(i.wrapping_abs())),
                (ABS, Some(Value::Float(f))) => Some(Value::Float(f.abs())),
                (FLOOR, Some(Value::Float(f))) => Some(Value::Float(f.floor())),
                (CEIL, Some(Value::Float(f))) => Some(Value::Float(f.ceil())),
                (TO_INT, Some(Value::Float(f))) => Some(Value::Int(f as i64)),
                (TO_FLOAT, Some(Value::Int(i))) => Some(Value::Float(i as f64)),
                _ => None,
            }
        }
        INT_AND | INT_OR | INT_XOR => {
            let mut acc: Option<i64> = None;
            for a in args {
                let Some(v) = int_arg(eval(a, env)?) else {
                    return Ok(None);
                };
                acc = Some(match (acc, op) {
                    (None, _) => v,
                    (Some(x), INT_AND) => x & v,
                    (Some(x), INT_OR) => x | v,
                    (Some(x), _) => x ^ v,
                });
            }
            acc.map(Value::Int)
        }
        INT_NOT | INT_COUNT => {
            args_n(args, 1)?;
            int_arg(eval(&args[0], env)?).map(|v| {
                Value::Int(if op == INT_NOT {
                    !v
                } else {
                    i64::from(v.count_ones())
                })
            })
        }
        INT_LSHIFT | INT_RSHIFT | INT_ARSHIFT => {
            args_n(args, 2)?;
            let (Some(v), Some(s)) = (int_arg(eval(&args[0], env)?), int_arg(eval(&args[1], env)?))
            else {
                return Ok(None);
            };
            let s = (s & 63) as u32;
            Some(Value::Int(match op {
                INT_LSHIFT => v.wrapping_shl(s),
                INT_RSHIFT => ((v as u64) >> s) as i64,
                _ => v >> s,
            }))
        }
        INT_LSCAN | INT_RSCAN => {
            args_n(args, 2)?;
            let (Some(v), Some(Value::Bool(search))) =
                (int_arg(eval(&args[0], env)?), eval(&args[1], env)?)
            else {
                return Ok(None);
            };
            let bits = if search { v as u64 } else { !(v as u64) };
            Some(Value::Int(if bits == 0 {
                -1
            } else if op == INT_LSCAN {
                i64::from(bits.leading_zeros())
            } else {
                63 - i64::from(bits.trailing_zeros())
            }))
        }
        COND => {
            if args.len() % 2 != 1 {
                return Err(OpError::Parameter(
                    "cond needs condition/action pairs and a default",
                ));
            }
            for pair in args.chunks_exact(2) {
                match eval(&pair[0], env)? {
                    Some(Value::Bool(true)) => return eval(&pair[1], env),
                    Some(Value::Bool(false)) => {}
                    _ => return Ok(None),
                }
            }
            eval(&args[args.len() - 1], env)?
        }
        DIGEST_MODULO => {
            args_n(args, 1)?;
            let Some(m) = int_arg(eval(&args[0], env)?).filter(|m| *m > 0) else {
                return Err(OpError::Parameter("digest modulo needs a positive integer"));
            };
            let d = &meta.digest;
            let v = u32::from_le_bytes([d[16], d[17], d[18], d[19]]);
            Some(Value::Int(i64::from(v) % m))
        }
        LAST_UPDATE => Some(Value::Int(
            CITRUSLEAF_EPOCH_UNIX_NS + meta.last_update_ms as i64 * 1_000_000,
        )),
        SINCE_UPDATE => Some(Value::Int(
            meta.now_ms.saturating_sub(meta.last_update_ms) as i64
        )),
        VOID_TIME => Some(Value::Int(if meta.void_time == 0 {
            -1
        } else {
            CITRUSLEAF_EPOCH_UNIX_NS + i64::from(meta.void_time) * 1_000_000_000
        })),
        TTL => Some(Value::Int(if meta.void_time == 0 {
            -1
        } else {
            (i64::from(meta.void_time) - (meta.now_ms / 1000) as i64).max(0)
        })),
        SET_NAME => Some(Value::Str(meta.set_name.clone())),
        KEY_EXISTS => Some(Value::Bool(meta.key.is_some())),
        IS_TOMBSTONE => Some(Value::Bool(false)),
        DEVICE_SIZE | MEMORY_SIZE | RECORD_SIZE => Some(Value::Int(meta.record_bytes as i64)),
        _ => return Err(OpError::Unsupported("expression op")),
    })
}

/// ADD, SUB, MUL, DIV, MIN, MAX over numbers that must all be ints or all floats.
fn arith(op: u8, vals: Vec<Value>) -> Option<Value> {
    use code::*;
    let all_int = vals.iter().all(|v| matches!(v, Value::Int(_)));
    let all_float = vals.iter().all(|v| matches!(v, Value::Float(_)));
    if vals.is_empty() || !(all_int || all_float) {
        return None;
    }
    if all_int {
        let ints: Vec<i64> = vals.iter().filter_map(Value::as_int).collect();
        if op == SUB && ints.len() == 1 {
            return Some(Value::Int(ints[0].wrapping_neg()));
        }
        let mut acc = ints[0];
        for &x in &ints[1..] {
            acc = match op {
                ADD => acc.wrapping_add(x),
                SUB => acc.wrapping_sub(x),
                MUL => acc.wrapping_mul(x),
                DIV => acc.checked_div(x)?,
                MIN => acc.min(x),
                _ => acc.max(x),
            };
        }
        return Some(Value::Int(acc));
    }
    let floats: Vec<f64> = vals
        .iter()
        .map(|v| match v {
            Value::Float(f) => *f,
            _ => unreachable!("checked all floats"),
        })
        .collect();
    if op == SUB && floats.len() == 1 {
        return Some(Value::Float(-floats[0]));
    }
    let mut acc = floats[0];
    for &x in &floats[1..] {
        acc = match op {
            ADD => acc + x,
            SUB => acc - x,
            MUL => acc * x,
            DIV => acc / x,
            MIN => acc.min(x),
            _ => acc.max(x),
        };
    }
    Some(Value::Float(acc))
}

/// Expression op flags (spec §4.7).
pub mod op_flag {
    pub const CREATE_ONLY: i64 = 1;
    pub const UPDATE_ONLY: i64 = 2;
    pub const ALLOW_DELETE: i64 = 4;
    pub const POLICY_NO_FAIL: i64 = 8;
    pub const EVAL_NO_FAIL: i64 = 16;
}

/// An expression op's payload `[expression, flags]`.
pub fn parse_op(payload: &[u8]) -> OpResult<(Exp, i64)> {
    let mut r = Reader::new(payload);
    if r.array_len()? != Some(2) {
        return Err(OpError::Parameter(
            "expression op needs [expression, flags]",
        ));
    }
    let e = parse_at(&mut r, 1)?;
    within_limits(&e)?;
    build::type_of(&e)?;
    let flags = small_int(&r.read_value(1)?, "expression op flags")?;
    if !r.at_end() {
        return Err(OpError::Parameter("trailing bytes after an expression op"));
    }
    Ok((e, flags))
}

#[cfg(test)]
mod tests;
