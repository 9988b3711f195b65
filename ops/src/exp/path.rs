//! Path expressions (Aerospike 8.1): `select_by_path` and `modify_by_path`, as CDT ops (op
//! types 3 and 4, payload `[0xfe, ctx, flags]` or `[0xfe, ctx, flags, mod_exp]`) and as
//! expression calls (`[127, type, 0 | 0x40, [0xfe, ...], bin]`). A path is a CDT context whose
//! steps may select every child of a list or map (`[4, true]`) or the children a filter
//! expression accepts (`[4, exp]`), with loop variables (`[122, type, key|value|index]`) bound
//! to each child in turn.
//!
//! Semantics follow what Aerospike CE 8.1.2 answers (captured case by case): results depth
//! first in document order; a matching tree keeps the parents of what was selected (emptied
//! where nothing was) and leaves scalars it would descend into as they are; a loop variable of
//! the wrong type fails the op (4) unless NO_FAIL, when the element simply does not match; a
//! modify expression that fails on an element fails the op (1) unless NO_FAIL, when the element
//! keeps its value. Owns the parse and evaluation of paths only; must never read a record's
//! bins (Aerospike refuses bin reads inside a path: 4).

use super::{build, eval, parse_at, small_int, Env, Exp, Meta, RecordAccess};
use crate::cdt::{self, Outcome};
use crate::error::{OpError, OpResult};
use crate::value::{ptype, List, Map, Reader, Value};

/// The op code of a path op, where a CDT op code would be.
pub const PATH_CODE: i64 = 0xfe;
/// The context step types of "all children" / "children a filter accepts": 4, and the list and
/// map forms of the expression context (0x14, 0x24), which mean the same.
const STEP_CHILDREN: [i64; 3] = [0x04, 0x14, 0x24];
/// Expression op code of the "remove this element" result of a modify expression.
pub const RESULT_REMOVE: i64 = 100;

/// Select flags (low four bits: matching tree, values, map keys (2), map keys and values) and
/// the modify marker the clients always set.
mod flag {
    pub const MATCHING_TREE: i64 = 0;
    pub const VALUE: i64 = 1;
    pub const MAP_KEY_VALUE: i64 = 3;
    pub const MODIFY: i64 = 4;
    pub const KIND_MASK: i64 = 0x0f;
    pub const NO_FAIL: i64 = 0x10;
}

/// Loop variable ids.
pub mod loop_var {
    pub const KEY: u8 = 0;
    pub const VALUE: u8 = 1;
    pub const INDEX: u8 = 2;
}

/// One step of a path.
#[derive(Debug)]
pub enum Step {
    /// An ordinary context step: its kind (create flags removed) and value.
    Plain(i64, Value),
    /// Every child.
    All,
    /// The children for which the expression is definitely true.
    Filter(Exp),
}

/// What a modify does to each element its path selects.
#[derive(Debug)]
pub enum Change {
    Remove,
    Set(Exp),
}

/// A parsed path op.
#[derive(Debug)]
pub struct PathOp {
    pub steps: Vec<Step>,
    pub flags: i64,
    /// `Some` for `modify_by_path`.
    pub change: Option<Change>,
}

impl PathOp {
    fn no_fail(&self) -> bool {
        self.flags & flag::NO_FAIL != 0
    }

    /// Every expression the path carries (filters, the modify expression).
    pub fn exps(&self) -> impl Iterator<Item = &Exp> {
        let filters = self.steps.iter().filter_map(|s| match s {
            Step::Filter(e) => Some(e),
            _ => None,
        });
        let change = match &self.change {
            Some(Change::Set(e)) => Some(e),
            _ => None,
        };
        filters.chain(change)
    }
}

/// The loop variables of one child.
#[derive(Debug, Clone)]
pub struct Binding {
    key: Option<Value>,
    value: Value,
    index: Option<i64>,
}

impl Binding {
    /// Loop variable `id` if this child has it and it is of type `ty` (an expression value
    /// type); a missing or mistyped one is a parameter error, as on Aerospike CE.
    pub fn get(&self, id: u8, ty: build::Ty) -> OpResult<Value> {
        let v = match id {
            loop_var::KEY => self.key.clone(),
            loop_var::VALUE => Some(self.value.clone()),
            _ => self.index.map(Value::Int),
        }
        .ok_or(OpError::Parameter(
            "a loop variable this element does not have",
        ))?;
        if build::Ty::of_value(&v) != ty {
            return Err(OpError::Parameter(
                "a loop variable's type does not match the element",
            ));
        }
        Ok(v)
    }
}

/// Whether a CDT op payload is a path op (`[0xfe, ...]`).
pub fn is_path(payload: &[u8]) -> bool {
    let mut r = Reader::new(payload);
    matches!(r.array_len(), Ok(Some(3 | 4)))
        && r.read_value(1).ok().and_then(|v| v.as_int()) == Some(PATH_CODE)
}

/// Parses a path op's elements after its code: `n` is the array's length (3 select, 4 modify).
pub(crate) fn parse_rest(r: &mut Reader, n: usize, depth: usize) -> OpResult<PathOp> {
    let Some(pairs) = r.array_len()? else {
        return Err(OpError::Parameter("a path's context is not a list"));
    };
    if pairs == 0 || pairs % 2 != 0 {
        return Err(OpError::Parameter(
            "a path's context needs (type, value) pairs",
        ));
    }
    if pairs / 2 > cdt::CTX_STEPS_MAX {
        return Err(OpError::Parameter("a path's context is too deep"));
    }
    let mut steps = Vec::with_capacity(pairs / 2);
    for _ in 0..pairs / 2 {
        let t = small_int(&r.read_value(depth)?, "context type is not an integer")?;
        let step = if STEP_CHILDREN.contains(&t) {
            if is_array(r)? {
                Step::Filter(parse_exp(r, depth)?)
            } else {
                match r.read_value(depth)? {
                    Value::Bool(true) => Step::All,
                    _ => return Err(OpError::Parameter("an all-children step takes true")),
                }
            }
        } else if cdt::is_plain_step(t) {
            Step::Plain(t & !0xc0, r.read_value(depth)?)
        } else {
            return Err(OpError::Parameter("unknown context type"));
        };
        steps.push(step);
    }
    let flags = small_int(&r.read_value(depth)?, "path flags are not an integer")?;
    if flags < 0 {
        return Err(OpError::Parameter("path flags are negative"));
    }
    let kind = flags & flag::KIND_MASK;
    let change = match n {
        3 if kind <= flag::MAP_KEY_VALUE => None,
        4 if kind == flag::MODIFY => Some(if is_remove(r, depth)? {
            Change::Remove
        } else {
            Change::Set(parse_exp(r, depth)?)
        }),
        _ => return Err(OpError::Parameter("invalid path flags")),
    };
    Ok(PathOp {
        steps,
        flags,
        change,
    })
}

fn is_array(r: &Reader) -> OpResult<bool> {
    Ok(matches!(r.peek()?, 0x90..=0x9f | 0xdc | 0xdd))
}

/// Consumes `[100]` (remove the element) when it is next.
fn is_remove(r: &mut Reader, depth: usize) -> OpResult<bool> {
    let mut look = r.clone();
    if look.array_len()? == Some(1) && look.read_value(depth)?.as_int() == Some(RESULT_REMOVE) {
        *r = look;
        return Ok(true);
    }
    Ok(false)
}

/// A filter or modify expression: built like any expression, and refused when it reads a bin.
fn parse_exp(r: &mut Reader, depth: usize) -> OpResult<Exp> {
    // `[100]` as a filter is accepted and never true (Aerospike CE: an empty selection).
    if is_remove(r, depth)? {
        return Ok(Exp::Op(super::code::UNKNOWN, vec![]));
    }
    let e = parse_at(r, depth + 1)?;
    build::type_of(&e)?;
    if reads_bins(&e) {
        return Err(OpError::Parameter("a path expression cannot read bins"));
    }
    Ok(e)
}

fn reads_bins(e: &Exp) -> bool {
    match e {
        Exp::Bin(..) | Exp::BinType(_) => true,
        Exp::Op(_, args) => args.iter().any(reads_bins),
        Exp::Let(defs, scope) => defs.iter().any(|(_, d)| reads_bins(d)) || reads_bins(scope),
        Exp::Call { op, bin, .. } => op.args.iter().any(reads_bins) || reads_bins(bin),
        Exp::Path { op, bin, .. } => op.exps().any(reads_bins) || reads_bins(bin),
        Exp::Regex(_, e) => reads_bins(e),
        Exp::Lit(_) | Exp::Key(_) | Exp::Var(_) | Exp::LoopVar(..) => false,
    }
}

/// A record with no bins: what a path op's expressions see (they may not read bins).
struct NoRecord(Meta);

impl RecordAccess for NoRecord {
    fn bin(&self, _name: &[u8]) -> Option<(u8, &[u8])> {
        None
    }
    fn meta(&self) -> &Meta {
        &self.0
    }
}

/// Applies a path op (op type 3, or 4 when `modify`) to a bin given as (particle type,
/// bytes), `None` when missing.
pub fn apply_op(bin: Option<(u8, &[u8])>, payload: &[u8], modify: bool) -> OpResult<Outcome> {
    let mut r = Reader::new(payload);
    let n = r.array_len()?.unwrap_or(0);
    r.read_value(1)?;
    let op = parse_rest(&mut r, n, 1)?;
    if !r.at_end() {
        return Err(OpError::Parameter("trailing bytes after a path op"));
    }
    if op.change.is_some() && !modify {
        return Err(OpError::Parameter("a modify path in a CDT read op"));
    }
    let mut root = match bin {
        Some((ptype::LIST | ptype::MAP, bytes)) => crate::value::decode(bytes)?,
        Some(_) => return Err(OpError::IncompatibleType("a path walks a list or a map")),
        // Aerospike CE 8.1.2: a select of a missing bin answers nothing; a modify answers 12.
        None if op.change.is_none() => {
            return Ok(Outcome {
                result: None,
                new_bin: None,
            })
        }
        None => return Err(OpError::IncompatibleType("a path modify of a missing bin")),
    };
    let rec = NoRecord(Meta::default());
    let mut env = Env::new(&rec);
    if op.change.is_none() {
        return Ok(Outcome {
            result: Some(select(&root, &op, &mut env)?),
            new_bin: None,
        });
    }
    modify_in(&mut root, &op, &mut env).map_err(|e| match e {
        Failed::Op(e) => e,
        Failed::Change => OpError::PathChangeFailed,
    })?;
    Ok(Outcome {
        result: None,
        new_bin: Some(root),
    })
}

/// A path expression call's value: the selection, or the whole bin after the modify (nothing
/// changes in the record); `None` (unknown) when the bin is not a collection, a modify
/// expression failed, or the result is not of the declared type.
pub(super) fn eval_call(
    op: &PathOp,
    result_type: build::Ty,
    bin: Option<Value>,
    env: &mut Env,
) -> OpResult<Option<Value>> {
    let Some(mut root @ (Value::List(_) | Value::Map(_))) = bin else {
        return Ok(None);
    };
    let out = match op.change {
        None => select(&root, op, env)?,
        Some(_) => match modify_in(&mut root, op, env) {
            Ok(()) => root,
            Err(Failed::Change) => return Ok(None),
            Err(Failed::Op(e)) => return Err(e),
        },
    };
    Ok((build::Ty::of_value(&out) == result_type).then_some(out))
}

/// The children of a collection, each with its loop variables, in document order.
fn bindings(node: &Value) -> Vec<Binding> {
    match node {
        Value::List(l) => (l.items.iter().enumerate())
            .map(|(i, v)| Binding {
                key: None,
                value: v.clone(),
                index: Some(i as i64),
            })
            .collect(),
        Value::Map(m) => (m.entries.iter())
            .map(|(k, v)| Binding {
                key: Some(k.clone()),
                value: v.clone(),
                index: None,
            })
            .collect(),
        _ => vec![],
    }
}

/// The positions (list items or map entries) of the children of `node` that `step` selects.
fn selected(node: &Value, step: &Step, no_fail: bool, env: &mut Env) -> OpResult<Vec<usize>> {
    let n = match node {
        Value::List(l) => l.items.len(),
        Value::Map(m) => m.entries.len(),
        _ => return Ok(vec![]),
    };
    match step {
        Step::All => Ok((0..n).collect()),
        Step::Plain(kind, v) => match cdt::position(node, *kind, v) {
            Ok(p) => Ok(p.into_iter().collect()),
            // A list step into a map, or the reverse: 4 here, with or without NO_FAIL.
            Err(OpError::NotApplicable(why)) => Err(OpError::Parameter(why)),
            Err(e) => Err(e),
        },
        Step::Filter(e) => {
            let mut out = vec![];
            for (p, b) in bindings(node).into_iter().enumerate() {
                env.loops.push(b);
                let verdict = eval(e, env);
                env.loops.pop();
                match verdict {
                    Ok(Some(Value::Bool(true))) => out.push(p),
                    Ok(_) => {}
                    Err(_) if no_fail => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        }
    }
}

fn child(node: &Value, p: usize) -> &Value {
    match node {
        Value::List(l) => &l.items[p],
        Value::Map(m) => &m.entries[p].1,
        _ => unreachable!("only collections have children"),
    }
}

fn child_mut(node: &mut Value, p: usize) -> &mut Value {
    match node {
        Value::List(l) => &mut l.items[p],
        Value::Map(m) => &mut m.entries[p].1,
        _ => unreachable!("only collections have children"),
    }
}

/// A select's result: a flat list (values, keys, or keys and values) or the matching tree.
fn select(root: &Value, op: &PathOp, env: &mut Env) -> OpResult<Value> {
    let kind = op.flags & flag::KIND_MASK;
    if kind == flag::MATCHING_TREE {
        return prune(root, &op.steps, op.no_fail(), env);
    }
    let mut out = vec![];
    collect(root, &op.steps, kind, op.no_fail(), env, &mut out)?;
    Ok(Value::List(List {
        ordered: false,
        items: out,
    }))
}

fn collect(
    node: &Value,
    steps: &[Step],
    kind: i64,
    no_fail: bool,
    env: &mut Env,
    out: &mut Vec<Value>,
) -> OpResult<()> {
    let Some((step, rest)) = steps.split_first() else {
        out.push(node.clone());
        return Ok(());
    };
    let picked = selected(node, step, no_fail, env)?;
    if rest.is_empty() && kind != flag::VALUE {
        let Value::Map(m) = node else {
            if matches!(node, Value::List(_)) && !no_fail {
                return Err(OpError::IncompatibleType("map keys selected from a list"));
            }
            return Ok(());
        };
        for p in picked {
            out.push(m.entries[p].0.clone());
            if kind == flag::MAP_KEY_VALUE {
                out.push(m.entries[p].1.clone());
            }
        }
        return Ok(());
    }
    for p in picked {
        collect(child(node, p), rest, kind, no_fail, env, out)?;
    }
    Ok(())
}

/// The matching tree: `node` with only the selected children at each level (parents kept, even
/// emptied; scalars the path would descend into kept as they are), without order flags.
fn prune(node: &Value, steps: &[Step], no_fail: bool, env: &mut Env) -> OpResult<Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Ok(node.clone());
    };
    let picked = selected(node, step, no_fail, env)?;
    Ok(match node {
        Value::List(_) => {
            let mut items = Vec::with_capacity(picked.len());
            for p in picked {
                items.push(prune(child(node, p), rest, no_fail, env)?);
            }
            Value::List(List {
                ordered: false,
                items,
            })
        }
        Value::Map(m) => {
            let mut entries = Vec::with_capacity(picked.len());
            for p in picked {
                let v = prune(&m.entries[p].1, rest, no_fail, env)?;
                entries.push((m.entries[p].0.clone(), v));
            }
            Value::Map(Map { order: 0, entries })
        }
        scalar => scalar.clone(),
    })
}

/// Why a modify did not happen.
enum Failed {
    /// The op itself is wrong (a filter of the wrong type...): its error.
    Op(OpError),
    /// The modify expression failed on an element (without NO_FAIL).
    Change,
}

impl From<OpError> for Failed {
    fn from(e: OpError) -> Failed {
        Failed::Op(e)
    }
}

fn modify_in(root: &mut Value, op: &PathOp, env: &mut Env) -> Result<(), Failed> {
    let change = op.change.as_ref().expect("a modify path has a change");
    change_at(root, &op.steps, change, op.no_fail(), env)?;
    // Values changed below ordered lists: put them back in order.
    cdt::resort_ordered(root);
    Ok(())
}

fn change_at(
    node: &mut Value,
    steps: &[Step],
    change: &Change,
    no_fail: bool,
    env: &mut Env,
) -> Result<(), Failed> {
    let Some((step, rest)) = steps.split_first() else {
        return Ok(());
    };
    let picked = selected(node, step, no_fail, env)?;
    if !rest.is_empty() {
        for p in picked {
            change_at(child_mut(node, p), rest, change, no_fail, env)?;
        }
        return Ok(());
    }
    match change {
        Change::Remove => {
            for &p in picked.iter().rev() {
                match node {
                    Value::List(l) => {
                        l.items.remove(p);
                    }
                    Value::Map(m) => {
                        m.entries.remove(p);
                    }
                    _ => unreachable!("only collections have children"),
                }
            }
        }
        Change::Set(e) => {
            let all = bindings(node);
            for p in picked {
                env.loops.push(all[p].clone());
                let new = eval(e, env);
                env.loops.pop();
                match new {
                    Ok(Some(v)) => *child_mut(node, p) = v,
                    _ if no_fail => {}
                    _ => return Err(Failed::Change),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::decode;

    /// {Day1: {book: 14.99, ferry: 5.0}, Day2: {food: 34.0, game: 12.99},
    ///  Day3: {plants: 19.99, stickers: 2.0}}: the suite's map of maps.
    fn mom() -> Value {
        let s = |x: &str| {
            let mut b = vec![ptype::STRING];
            b.extend_from_slice(x.as_bytes());
            Value::Str(b)
        };
        let day = |a: (&str, f64), b: (&str, f64)| {
            Value::Map(Map::from_entries(
                0,
                vec![(s(a.0), Value::Float(a.1)), (s(b.0), Value::Float(b.1))],
            ))
        };
        Value::Map(Map::from_entries(
            0,
            vec![
                (s("Day1"), day(("book", 14.99), ("ferry", 5.0))),
                (s("Day2"), day(("food", 34.0), ("game", 12.99))),
                (s("Day3"), day(("plants", 19.99), ("stickers", 2.0))),
            ],
        ))
    }

    fn nested() -> Value {
        let l = |xs: &[i64]| {
            Value::List(List {
                ordered: false,
                items: xs.iter().map(|x| Value::Int(*x)).collect(),
            })
        };
        Value::List(List {
            ordered: false,
            items: vec![l(&[1, 2, 3]), l(&[4, 5]), l(&[6])],
        })
    }

    fn run(bin: &Value, payload: &[u8], modify: bool) -> OpResult<Outcome> {
        let (t, b) = bin.to_particle();
        apply_op(Some((t, &b)), payload, modify)
    }

    fn floats(v: &Value) -> Vec<f64> {
        let Value::List(l) = v else { panic!("{v:?}") };
        l.items
            .iter()
            .map(|x| match x {
                Value::Float(f) => *f,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn ints(v: &Value) -> Vec<i64> {
        let Value::List(l) = v else { panic!("{v:?}") };
        l.items.iter().map(|x| x.as_int().unwrap()).collect()
    }

    // Payloads below are the bytes the official Python client 19 sent to Aerospike CE 8.1.2,
    // and the results are what CE answered.

    #[test]
    fn select_values_depth_first() {
        // [254, [4, true, 4, true], 1]
        let out = run(
            &mom(),
            &[0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 1],
            false,
        )
        .unwrap();
        assert_eq!(
            floats(&out.result.unwrap()),
            [14.99, 5.0, 34.0, 12.99, 19.99, 2.0]
        );
        let out = run(
            &nested(),
            &[0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 1],
            false,
        )
        .unwrap();
        assert_eq!(ints(&out.result.unwrap()), [1, 2, 3, 4, 5, 6]);
        // all_children at the scalar level adds nothing.
        let three = [0x93, 0xcc, 0xfe, 0x96, 4, 0xc3, 4, 0xc3, 4, 0xc3, 1];
        assert_eq!(
            ints(&run(&nested(), &three, false).unwrap().result.unwrap()),
            [0i64; 0]
        );
        // ... and a matching tree keeps those scalars.
        let three_tree = [0x93, 0xcc, 0xfe, 0x96, 4, 0xc3, 4, 0xc3, 4, 0xc3, 0];
        let tree = run(&nested(), &three_tree, false).unwrap().result.unwrap();
        assert_eq!(tree.encode(), nested().encode());
    }

    #[test]
    fn a_filter_prunes_the_matching_tree_and_keeps_emptied_parents() {
        // [254, [4, true, 4, [4, [122, 7, 1], 20.0]], 0]: floats >= 20 under each day.
        let mut p = vec![
            0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0x93, 4, 0x93, 0x7a, 7, 1, 0xcb,
        ];
        p.extend_from_slice(&20.0f64.to_be_bytes());
        p.push(0);
        let out = run(&mom(), &p, false).unwrap().result.unwrap();
        let Value::Map(m) = out else { panic!() };
        let sizes: Vec<usize> = m
            .entries
            .iter()
            .map(|(_, v)| match v {
                Value::Map(d) => d.entries.len(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(sizes, [0, 1, 0]);
    }

    #[test]
    fn loop_variable_type_mismatch_is_4_unless_no_fail() {
        // [254, [4, [3, [122, 2, 1], 2]], 1 | 16] on [1, "a", 2.5, 3, 4]: ints > 2.
        let mixed = decode(&[
            0x95, 1, 0xa2, 3, b'a', 0xcb, 0x40, 4, 0, 0, 0, 0, 0, 0, 3, 4,
        ])
        .unwrap();
        let p = |flags| {
            [
                0x93, 0xcc, 0xfe, 0x92, 4, 0x93, 3, 0x93, 0x7a, 2, 1, 2, flags,
            ]
        };
        assert_eq!(run(&mixed, &p(1), false).unwrap_err().result_code(), 4);
        let out = run(&mixed, &p(17), false).unwrap().result.unwrap();
        assert_eq!(ints(&out), [3, 4]);
        // KEY on a list element, INDEX on a map child: 4 too.
        let key_on_list = [0x93, 0xcc, 0xfe, 0x92, 4, 0x93, 1, 0x93, 0x7a, 2, 0, 1, 1];
        assert_eq!(
            run(&nested(), &key_on_list, false)
                .unwrap_err()
                .result_code(),
            4
        );
    }

    #[test]
    fn map_keys_and_key_values() {
        let keys = run(
            &mom(),
            &[0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 2],
            false,
        )
        .unwrap()
        .result
        .unwrap();
        let Value::List(l) = &keys else { panic!() };
        assert_eq!(l.items.len(), 6);
        let kv = run(
            &mom(),
            &[0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 3],
            false,
        )
        .unwrap()
        .result
        .unwrap();
        let Value::List(l) = &kv else { panic!() };
        assert_eq!(l.items.len(), 12);
        // Keys asked of a list level: 12, or nothing with NO_FAIL.
        let on_list = |flags| [0x93, 0xcc, 0xfe, 0x92, 4, 0xc3, flags];
        assert_eq!(
            run(&nested(), &on_list(2), false)
                .unwrap_err()
                .result_code(),
            12
        );
        let none = run(&nested(), &on_list(18), false).unwrap().result.unwrap();
        assert_eq!(ints(&none), [0i64; 0]);
    }

    #[test]
    fn modify_sets_removes_and_fails_as_ce_does() {
        // [254, [4, true, 4, true], 4, [20, [122, 2, 1], 1]]: add 1 to each int.
        let add = [
            0x94, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 4, 0x93, 20, 0x93, 0x7a, 2, 1, 1,
        ];
        let out = run(&nested(), &add, true).unwrap();
        assert!(out.result.is_none());
        let Value::List(l) = out.new_bin.unwrap() else {
            panic!()
        };
        assert_eq!(ints(&l.items[0]), [2, 3, 4]);
        // The same modify in a read op: 4.
        assert_eq!(run(&nested(), &add, false).unwrap_err().result_code(), 4);
        // Float arithmetic on ints fails on every element: 1, or nothing changes with NO_FAIL.
        let mut sub = vec![0x94, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 4];
        sub.extend_from_slice(&[0x93, 21, 0x93, 0x7a, 7, 1, 0xcb]);
        sub.extend_from_slice(&5.0f64.to_be_bytes());
        assert_eq!(run(&nested(), &sub, true).unwrap_err().result_code(), 1);
        sub[8] = 0x14;
        let kept = run(&nested(), &sub, true).unwrap().new_bin.unwrap();
        assert_eq!(kept.encode(), nested().encode());
        // [254, [4, true, 4, true], 4, [100]]: remove every leaf, parents stay.
        let remove = [0x94, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 4, 0x91, 0x64];
        let Value::Map(m) = run(&mom(), &remove, true).unwrap().new_bin.unwrap() else {
            panic!()
        };
        assert!(m
            .entries
            .iter()
            .all(|(_, v)| matches!(v, Value::Map(d) if d.entries.is_empty())));
    }

    #[test]
    fn mutated_paths_are_errors_or_answers_never_panics() {
        let mut seeds: Vec<Vec<u8>> = vec![
            vec![0x93, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 1],
            vec![0x93, 0xcc, 0xfe, 0x92, 4, 0x93, 3, 0x93, 0x7a, 2, 1, 2, 17],
            vec![
                0x94, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 4, 0x93, 20, 0x93, 0x7a, 2, 1, 1,
            ],
            vec![0x94, 0xcc, 0xfe, 0x94, 4, 0xc3, 4, 0xc3, 4, 0x91, 0x64],
            vec![0x93, 0xcc, 0xfe, 0x94, 0x22, 0xa2, 3, b'a', 4, 0xc3, 0],
        ];
        let bins = [nested(), mom()];
        for seed in seeds.drain(..) {
            for i in 0..seed.len() {
                for b in [
                    0x00, 0x01, 0x04, 0x10, 0x7a, 0x90, 0x93, 0xc0, 0xc3, 0xcc, 0xdd, 0xff,
                ] {
                    let mut p = seed.clone();
                    p[i] = b;
                    for bin in &bins {
                        for modify in [false, true] {
                            let _ = run(bin, &p, modify);
                            let _ = run(bin, &p[..i], modify);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_paths_are_parameter_errors() {
        for p in [
            &[0x93, 0xcc, 0xfe, 0x90, 1][..],             // empty context
            &[0x93, 0xcc, 0xfe, 0x91, 4, 1][..],          // odd context
            &[0x93, 0xcc, 0xfe, 0x92, 4, 0xc2, 1][..],    // all-children with false
            &[0x93, 0xcc, 0xfe, 0x92, 4, 0xc3, 4][..],    // select with the modify flag
            &[0x93, 0xcc, 0xfe, 0x92, 4, 0xc3, 0xff][..], // negative flags
            &[0x94, 0xcc, 0xfe, 0x92, 4, 0xc3, 0, 1][..], // modify without the modify flag
            &[0x93, 0xcc, 0xfe, 0x92, 0x7f, 0xc3, 1][..], // unknown step type
        ] {
            let err = run(&nested(), p, true).unwrap_err();
            assert_eq!(err.result_code(), 4, "{p:02x?}");
        }
        // A filter that reads a bin: 4.
        let reads_bin = [
            0x93, 0xcc, 0xfe, 0x92, 4, 0x93, 1, 0x93, 0x51, 2, 0xa1, b'x', 1, 1,
        ];
        assert_eq!(
            run(&nested(), &reads_bin, false).unwrap_err().result_code(),
            4
        );
        // Not a collection: 12. A modify of a missing bin: 12; a select of one: nothing.
        let all = [0x93, 0xcc, 0xfe, 0x92, 4, 0xc3, 1];
        assert_eq!(
            run(&Value::Int(1), &all, false).unwrap_err().result_code(),
            12
        );
        assert!(apply_op(None, &all, false).unwrap().result.is_none());
        let add = [
            0x94, 0xcc, 0xfe, 0x92, 4, 0xc3, 4, 0x93, 20, 0x93, 0x7a, 2, 1, 1,
        ];
        assert_eq!(apply_op(None, &add, true).unwrap_err().result_code(), 12);
    }
}
