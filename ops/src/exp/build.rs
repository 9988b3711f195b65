//! The typed build of an expression: gives every node of a parsed [`Exp`] its static result
//! type and refuses an ill-typed tree before anything is evaluated, as Aerospike does when it
//! compiles an expression (an `Add` of an int and a float, a comparison of a string with an
//! int, `Not` of an int... answer PARAMETER_ERROR (4), not FILTERED_OUT).
//!
//! Owns the typing rules only; it must never evaluate anything or look at a record.

use super::{code, Exp, CALL_MODIFY, CALL_SYSTEM_BITS, CALL_SYSTEM_CDT, CALL_SYSTEM_HLL};
use crate::error::{OpError, OpResult};
use crate::value::{ptype, Value};

/// An expression's static result type (Aerospike's expression value types 0..=9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Nil,
    Bool,
    Int,
    Str,
    List,
    Map,
    Blob,
    Float,
    Geo,
    Hll,
}

impl Ty {
    /// The type an expression value type number names (as sent in BIN, CALL, KEY).
    pub(crate) fn of_exp_type(t: i64) -> OpResult<Ty> {
        Ok(match t {
            0 => Ty::Nil,
            1 => Ty::Bool,
            2 => Ty::Int,
            3 => Ty::Str,
            4 => Ty::List,
            5 => Ty::Map,
            6 => Ty::Blob,
            7 => Ty::Float,
            8 => Ty::Geo,
            9 => Ty::Hll,
            _ => return Err(OpError::Parameter("unknown expression value type")),
        })
    }

    /// The type of a bin read as the particle type the parser chose for it.
    fn of_particle(p: u8) -> Ty {
        match p {
            ptype::NULL => Ty::Nil,
            ptype::BOOL => Ty::Bool,
            ptype::INTEGER => Ty::Int,
            ptype::STRING => Ty::Str,
            ptype::LIST => Ty::List,
            ptype::MAP => Ty::Map,
            ptype::FLOAT => Ty::Float,
            ptype::GEOJSON => Ty::Geo,
            ptype::HLL => Ty::Hll,
            _ => Ty::Blob,
        }
    }

    pub(crate) fn of_value(v: &Value) -> Ty {
        match v {
            Value::Nil | Value::Wildcard | Value::Inf => Ty::Nil,
            Value::Bool(_) => Ty::Bool,
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Str(_) => Ty::Str,
            Value::Bytes(t, _) => Ty::of_particle(*t),
            Value::List(_) => Ty::List,
            Value::Map(_) => Ty::Map,
        }
    }
}

fn refuse<T>(why: &'static str) -> OpResult<T> {
    Err(OpError::Parameter(why))
}

/// Longest bin name, as everywhere in Aerospike.
const BIN_NAME_BYTES_MAX: usize = 15;

/// Most variables in scope at once (nested `let`s); real expressions have a handful.
pub const VARS_IN_SCOPE_MAX: usize = 256;

/// The static type of a whole expression, or PARAMETER_ERROR naming the first mistake.
pub fn type_of(e: &Exp) -> OpResult<Ty> {
    let mut scope = Vec::new();
    ty(e, &mut scope)
}

/// One variable in scope: its name and type, `None` while its own definition is built.
type Scope = Vec<(Vec<u8>, Option<Ty>)>;

fn valid_var_name(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        None => false,
    }
}

fn is_unknown(e: &Exp) -> bool {
    matches!(e, Exp::Op(code::UNKNOWN, _))
}

fn ty(e: &Exp, scope: &mut Scope) -> OpResult<Ty> {
    Ok(match e {
        Exp::Lit(Value::Bytes(ptype::GEOJSON, b)) => {
            // Aerospike compiles a GeoJSON literal when it builds the expression.
            crate::geo::parse(b)?;
            Ty::Geo
        }
        Exp::Lit(v) => Ty::of_value(v),
        Exp::Bin(p, name) => {
            if name.is_empty() || name.len() > BIN_NAME_BYTES_MAX {
                return refuse("invalid bin name in an expression");
            }
            Ty::of_particle(*p)
        }
        Exp::BinType(name) => {
            if name.is_empty() || name.len() > BIN_NAME_BYTES_MAX {
                return refuse("invalid bin name in an expression");
            }
            Ty::Int
        }
        Exp::Key(p) => match Ty::of_particle(*p) {
            t @ (Ty::Int | Ty::Str | Ty::Blob) => t,
            _ => return refuse("a record key is an int, a string or a blob"),
        },
        Exp::Var(name) => match scope.iter().rev().find(|(n, _)| n == name) {
            Some((_, Some(t))) => *t,
            Some((_, None)) => return refuse("a variable is used in its own definition"),
            None => return refuse("expression variable is not defined"),
        },
        Exp::Let(defs, body) => {
            let mark = scope.len();
            for (name, def) in defs {
                if !valid_var_name(name) {
                    return refuse("a variable name starts with a letter or '_' and has only letters, digits and '_'");
                }
                if scope.iter().any(|(n, _)| n == name) {
                    return refuse("a variable name is defined twice");
                }
                if scope.len() >= VARS_IN_SCOPE_MAX {
                    return refuse("too many expression variables in scope");
                }
                scope.push((name.clone(), None));
                let t = ty(def, scope)?;
                scope.last_mut().expect("just pushed").1 = Some(t);
            }
            let out = ty(body, scope);
            scope.truncate(mark);
            out?
        }
        Exp::Call {
            result,
            system,
            bin,
            ..
        } => {
            let result = Ty::of_exp_type(*result)?;
            let arg = ty(bin, scope)?;
            let fits = match system & !CALL_MODIFY {
                CALL_SYSTEM_CDT => matches!(arg, Ty::List | Ty::Map),
                CALL_SYSTEM_BITS => arg == Ty::Blob,
                CALL_SYSTEM_HLL => arg == Ty::Hll,
                _ => return refuse("unknown expression call system"),
            };
            if !fits && arg != Ty::Nil {
                return refuse("an expression call's bin is not of its family's type");
            }
            result
        }
        Exp::LoopVar(t, _) => *t,
        Exp::Path { result, op, bin } => {
            for e in op.exps() {
                ty(e, scope)?;
            }
            if !matches!(ty(bin, scope)?, Ty::List | Ty::Map | Ty::Nil) {
                return refuse("a path expression's bin is not a list or a map");
            }
            *result
        }
        Exp::Regex(_, arg) => {
            if ty(arg, scope)? != Ty::Str {
                return refuse("a regular expression compares a string");
            }
            Ty::Bool
        }
        Exp::Op(op, args) => op_ty(*op, args, scope)?,
    })
}

fn arity(args: &[Exp], n: usize) -> OpResult<()> {
    if args.len() != n {
        return refuse("wrong number of expression arguments");
    }
    Ok(())
}

fn all_of(args: &[Exp], want: Ty, scope: &mut Scope, why: &'static str) -> OpResult<()> {
    for a in args {
        if ty(a, scope)? != want {
            return refuse(why);
        }
    }
    Ok(())
}

fn op_ty(op: u8, args: &[Exp], scope: &mut Scope) -> OpResult<Ty> {
    use code::*;
    Ok(match op {
        UNKNOWN => {
            arity(args, 0)?;
            Ty::Bool
        }
        EQ | NE | GT | GE | LT | LE => {
            arity(args, 2)?;
            let (a, b) = (ty(&args[0], scope)?, ty(&args[1], scope)?);
            if a != b {
                return refuse("a comparison's two sides have different types");
            }
            if matches!(a, Ty::Geo | Ty::Hll) {
                return refuse("geojson and HLL values cannot be compared");
            }
            Ty::Bool
        }
        GEO => {
            arity(args, 2)?;
            all_of(
                args,
                Ty::Geo,
                scope,
                "a geo comparison takes two geojson values",
            )?;
            Ty::Bool
        }
        IN_LIST => {
            arity(args, 2)?;
            ty(&args[0], scope)?;
            if ty(&args[1], scope)? != Ty::List {
                return refuse("in-list needs a list");
            }
            Ty::Bool
        }
        AND | OR | EXCLUSIVE => {
            if args.len() < 2 {
                return refuse("and, or and exclusive take at least two arguments");
            }
            all_of(args, Ty::Bool, scope, "and, or and exclusive take booleans")?;
            Ty::Bool
        }
        NOT => {
            arity(args, 1)?;
            all_of(args, Ty::Bool, scope, "not takes a boolean")?;
            Ty::Bool
        }
        ADD | SUB | MUL | DIV | MIN | MAX => {
            if args.is_empty() {
                return refuse("arithmetic needs at least one argument");
            }
            let first = ty(&args[0], scope)?;
            if !matches!(first, Ty::Int | Ty::Float) {
                return refuse("arithmetic takes ints or floats");
            }
            all_of(
                &args[1..],
                first,
                scope,
                "arithmetic arguments are all ints or all floats",
            )?;
            first
        }
        POW | LOG => {
            arity(args, 2)?;
            all_of(args, Ty::Float, scope, "pow and log take floats")?;
            Ty::Float
        }
        MOD => {
            arity(args, 2)?;
            all_of(args, Ty::Int, scope, "mod takes ints")?;
            Ty::Int
        }
        ABS => {
            arity(args, 1)?;
            match ty(&args[0], scope)? {
                t @ (Ty::Int | Ty::Float) => t,
                _ => return refuse("abs takes an int or a float"),
            }
        }
        FLOOR | CEIL => {
            arity(args, 1)?;
            all_of(args, Ty::Float, scope, "floor and ceil take a float")?;
            Ty::Float
        }
        TO_INT => {
            arity(args, 1)?;
            all_of(args, Ty::Float, scope, "to_int takes a float")?;
            Ty::Int
        }
        TO_FLOAT => {
            arity(args, 1)?;
            all_of(args, Ty::Int, scope, "to_float takes an int")?;
            Ty::Float
        }
        INT_AND | INT_OR | INT_XOR => {
            if args.is_empty() {
                return refuse("integer bit ops need at least one argument");
            }
            all_of(args, Ty::Int, scope, "integer bit ops take ints")?;
            Ty::Int
        }
        INT_NOT | INT_COUNT => {
            arity(args, 1)?;
            all_of(args, Ty::Int, scope, "integer bit ops take ints")?;
            Ty::Int
        }
        INT_LSHIFT | INT_RSHIFT | INT_ARSHIFT => {
            arity(args, 2)?;
            all_of(args, Ty::Int, scope, "shifts take ints")?;
            Ty::Int
        }
        INT_LSCAN | INT_RSCAN => {
            arity(args, 2)?;
            if ty(&args[0], scope)? != Ty::Int || ty(&args[1], scope)? != Ty::Bool {
                return refuse("a bit scan takes an int and a boolean");
            }
            Ty::Int
        }
        DIGEST_MODULO => {
            arity(args, 1)?;
            match &args[0] {
                Exp::Lit(Value::Int(m)) if *m != 0 && i32::try_from(*m).is_ok() => Ty::Int,
                _ => return refuse("digest modulo takes a non-zero integer"),
            }
        }
        DEVICE_SIZE | LAST_UPDATE | SINCE_UPDATE | VOID_TIME | TTL | MEMORY_SIZE | RECORD_SIZE => {
            arity(args, 0)?;
            Ty::Int
        }
        SET_NAME => {
            arity(args, 0)?;
            Ty::Str
        }
        KEY_EXISTS | IS_TOMBSTONE => {
            arity(args, 0)?;
            Ty::Bool
        }
        COND => {
            if args.len() < 3 || args.len().is_multiple_of(2) {
                return refuse("cond needs condition/action pairs and a default");
            }
            let mut out: Option<Ty> = None;
            for pair in args.chunks(2) {
                if pair.len() == 2 && ty(&pair[0], scope)? != Ty::Bool {
                    return refuse("a cond condition is a boolean");
                }
                let action = &pair[pair.len() - 1];
                let t = ty(action, scope)?;
                if is_unknown(action) {
                    continue;
                }
                match out {
                    None => out = Some(t),
                    Some(o) if o != t => {
                        return refuse("a cond's actions have different types");
                    }
                    Some(_) => {}
                }
            }
            out.unwrap_or(Ty::Bool)
        }
        _ => return Err(OpError::Parameter("unknown expression op code")),
    })
}
