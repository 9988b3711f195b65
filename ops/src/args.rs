//! Reading an op's positional arguments (`[code, arg1, arg2, ...]`) with the type each one must
//! have; a missing or mistyped argument is result 4, never a panic.

use crate::error::{OpError, OpResult};
use crate::value::Value;

/// Decodes an op payload `[code, args...]` into its code (a small integer) and arguments.
pub fn op_payload(payload: &[u8]) -> OpResult<(u8, Vec<Value>)> {
    let Value::List(top) = crate::value::decode(payload)? else {
        return Err(OpError::Parameter("op payload is not a msgpack array"));
    };
    code_and_args(top.items)
}

/// Splits `[code, args...]` into the code (a small integer) and the arguments.
pub fn code_and_args(mut items: Vec<Value>) -> OpResult<(u8, Vec<Value>)> {
    if items.is_empty() {
        return Err(OpError::Parameter("empty op"));
    }
    let code = items.remove(0).as_int().and_then(|c| u8::try_from(c).ok());
    let code = code.ok_or(OpError::Parameter("op code is not a small integer"))?;
    Ok((code, items))
}

pub fn arg(args: &[Value], i: usize) -> OpResult<&Value> {
    args.get(i).ok_or(OpError::Parameter("missing op argument"))
}

pub fn int(args: &[Value], i: usize) -> OpResult<i64> {
    arg(args, i)?
        .as_int()
        .ok_or(OpError::Parameter("op argument is not an integer"))
}

/// An optional integer: absent or nil reads as `None`.
pub fn opt_int(args: &[Value], i: usize) -> OpResult<Option<i64>> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Int(v)) => Ok(Some(*v)),
        Some(_) => Err(OpError::Parameter("op argument is not an integer")),
    }
}

/// Optional flags: absent reads as 0.
pub fn flags(args: &[Value], i: usize) -> OpResult<i64> {
    Ok(opt_int(args, i)?.unwrap_or(0))
}

/// A range end: absent means "no end" (infinity); an explicit nil is the value nil.
pub fn end_bound(args: &[Value], i: usize) -> Value {
    args.get(i).cloned().unwrap_or(Value::Inf)
}

/// An argument that must be a list (items to add, values or keys to match).
pub fn list_items(args: &[Value], i: usize) -> OpResult<&[Value]> {
    match arg(args, i)? {
        Value::List(l) => Ok(&l.items),
        _ => Err(OpError::Parameter("op argument is not a list")),
    }
}

pub fn expect_max(args: &[Value], max: usize) -> OpResult<()> {
    if args.len() > max {
        return Err(OpError::Parameter("too many op arguments"));
    }
    Ok(())
}
