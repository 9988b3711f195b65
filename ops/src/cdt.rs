//! One CDT op (op types 3 and 4) against one bin: decodes the payload `[code, args...]` or
//! `[0xff, ctx, [code, args...]]`, walks the context to the nested list or map it names
//! (creating it when a context step asks to), and hands the op to the list or map module
//! (spec §4.5).
//!
//! Never changes the caller's bin: it returns the new bin value, which the caller stores only
//! when every op of the command succeeded.

use crate::error::{OpError, OpResult};
use crate::select;
use crate::value::{self, map_order, ptype, List, Map, Value};
use crate::{list, map};

/// The code that marks a payload with a context.
const CTX_MARKER: i64 = 0xff;

/// Context step kinds (spec §4.5): list or map, then what the step's value selects by.
mod ctx {
    pub const LIST_INDEX: i64 = 0x10;
    pub const LIST_RANK: i64 = 0x11;
    pub const LIST_VALUE: i64 = 0x13;
    pub const MAP_INDEX: i64 = 0x20;
    pub const MAP_RANK: i64 = 0x21;
    pub const MAP_KEY: i64 = 0x22;
    pub const MAP_VALUE: i64 = 0x23;
    /// Create flags OR-ed into a step; which bits mean what depends on list or map.
    pub const CREATE_MASK: i64 = 0xc0;
    pub const LIST_CREATE_PAD: i64 = 0x80;
    pub const LIST_CREATE_ORDERED: i64 = 0xc0;
    pub const MAP_CREATE_KEY_ORDERED: i64 = 0x80;
    pub const MAP_CREATE_KEY_VALUE_ORDERED: i64 = 0xc0;
}

/// Most context steps one op may carry.
pub const CTX_STEPS_MAX: usize = 32;

/// What a CDT op did: its result for the reply, and the bin's new value when it changed.
#[derive(Debug)]
pub struct Outcome {
    pub result: Option<Value>,
    pub new_bin: Option<Value>,
}

enum Kind {
    List,
    Map,
}

struct Parsed {
    code: u8,
    args: Vec<Value>,
    ctx: Vec<Value>,
}

fn parse(payload: &[u8]) -> OpResult<Parsed> {
    let Value::List(top) = value::decode(payload)? else {
        return Err(OpError::Parameter("CDT op payload is not a msgpack array"));
    };
    let mut items = top.items;
    if items.is_empty() {
        return Err(OpError::Parameter("empty CDT op payload"));
    }
    if items[0].as_int() == Some(CTX_MARKER) {
        if items.len() != 3 {
            return Err(OpError::Parameter(
                "CDT context payload needs [0xff, ctx, op]",
            ));
        }
        let op = items.pop().expect("three items");
        let ctx = items.pop().expect("three items");
        let (Value::List(ctx), Value::List(op)) = (ctx, op) else {
            return Err(OpError::Parameter("CDT context or op is not an array"));
        };
        if ctx.items.is_empty() || ctx.items.len() % 2 != 0 {
            return Err(OpError::Parameter("CDT context needs (type, value) pairs"));
        }
        if ctx.items.len() / 2 > CTX_STEPS_MAX {
            return Err(OpError::Parameter("CDT context too deep"));
        }
        let mut p = parse_op(op.items)?;
        p.ctx = ctx.items;
        return Ok(p);
    }
    parse_op(items)
}

fn parse_op(items: Vec<Value>) -> OpResult<Parsed> {
    let (code, items) = crate::args::code_and_args(items)?;
    Ok(Parsed {
        code,
        args: items,
        ctx: vec![],
    })
}

fn kind_of(code: u8) -> OpResult<(Kind, bool, bool)> {
    if list::is_known(code) {
        Ok((Kind::List, list::is_read(code), list::creates(code)))
    } else if map::is_known(code) {
        Ok((Kind::Map, map::is_read(code), map::creates(code)))
    } else {
        Err(OpError::Parameter("unknown CDT op code"))
    }
}

/// Applies one CDT op to a bin given as (particle type, bytes), or `None` when the record has no
/// such bin. `modify` is false for op type 3 (CDT_READ), which may only carry read codes.
pub fn apply(bin: Option<(u8, &[u8])>, payload: &[u8], modify: bool) -> OpResult<Outcome> {
    if crate::exp::path::is_path(payload) {
        return crate::exp::path::apply_op(bin, payload, modify);
    }
    let p = parse(payload)?;
    let (kind, is_read, creates) = kind_of(p.code)?;
    if !modify && !is_read {
        return Err(OpError::Parameter("a modify code in a CDT read op"));
    }
    let existing = match bin {
        None => None,
        Some((ptype::LIST | ptype::MAP, bytes)) => Some(value::decode(bytes)?),
        Some(_) => return Err(OpError::IncompatibleType("bin is not a list or map")),
    };
    let bin_existed = existing.is_some();
    let mut root = match existing {
        Some(v) => v,
        None if is_read => {
            return Ok(Outcome {
                result: None,
                new_bin: None,
            })
        }
        // Aerospike CE 8.1.2: a list op that does not create (pop, remove, trim...) on a missing
        // bin answers nothing and stores nothing (so on a missing record, 2); a sort answers 12.
        None if p.ctx.is_empty() && matches!(kind, Kind::List) && !creates => {
            if p.code == list::code::SORT {
                return Err(OpError::IncompatibleType("sort of a missing list bin"));
            }
            return Ok(Outcome {
                result: None,
                new_bin: None,
            });
        }
        None => match p.ctx.first().and_then(Value::as_int) {
            Some(t) if t & 0x30 == 0x20 => Value::Map(Map::default()),
            Some(_) => Value::List(List::default()),
            None => match kind {
                Kind::List => Value::List(list::new_for(p.code, &p.args)?),
                Kind::Map => Value::Map(map::new_for(p.code, &p.args)?),
            },
        },
    };
    let writes = modify && !is_read;
    let target = navigate(&mut root, &p.ctx, writes, &kind)?;
    let result = match (kind, target) {
        (Kind::List, Value::List(l)) => list::apply(l, p.code, &p.args)?,
        (Kind::Map, Value::Map(m)) => map::apply(m, p.code, &p.args)?,
        (Kind::List, _) => return Err(OpError::IncompatibleType("list op on a non-list")),
        (Kind::Map, _) => return Err(OpError::IncompatibleType("map op on a non-map")),
    };
    if writes && !p.ctx.is_empty() {
        // The change happened below some ordered lists: put them back in order.
        resort_ordered(&mut root);
    }
    let store = writes && (bin_existed || creates || !p.ctx.is_empty());
    Ok(Outcome {
        result,
        new_bin: store.then_some(root),
    })
}

/// The element a CDT context (its (type, value) steps, as a `[0xff, ctx, op]` payload carries
/// them) selects in `root`, read-only: `None` when a step selects nothing (no create flags
/// apply). Secondary indexes on a nested element read it through here.
pub fn resolve_ctx(root: &mut Value, steps: &[Value]) -> Option<Value> {
    if steps.is_empty() || !steps.len().is_multiple_of(2) || steps.len() / 2 > CTX_STEPS_MAX {
        return None;
    }
    navigate(root, steps, false, &Kind::List).ok().cloned()
}

/// Re-sorts every ordered list in `v`, innermost first (a map's entries are keyed, and a
/// context only ever changes values, so maps stay sorted by key).
pub(crate) fn resort_ordered(v: &mut Value) {
    match v {
        Value::List(l) => {
            l.items.iter_mut().for_each(resort_ordered);
            if l.ordered {
                l.items.sort_by(value::compare);
            }
        }
        Value::Map(m) => m.entries.iter_mut().for_each(|(_, x)| resort_ordered(x)),
        _ => {}
    }
}

/// Follows the context steps from the bin's value to the element the op works on.
/// A step with create flags makes the element it selects when missing; the element is a list
/// or a map as what comes next needs (the next step, or the op itself), as the clients expect:
/// `list_create` with a context ORs list flags into the last step.
fn navigate<'a>(
    root: &'a mut Value,
    steps: &[Value],
    may_create: bool,
    op_kind: &Kind,
) -> OpResult<&'a mut Value> {
    let mut cur = root;
    let types: Vec<i64> = steps
        .chunks_exact(2)
        .map(|pair| pair[0].as_int())
        .collect::<Option<_>>()
        .ok_or(OpError::Parameter("context type is not an integer"))?;
    for (i, pair) in steps.chunks_exact(2).enumerate() {
        let creates_map = match types.get(i + 1) {
            Some(next) => next & 0x30 == 0x20,
            None => matches!(op_kind, Kind::Map),
        };
        cur = step(cur, types[i], &pair[1], may_create, creates_map)?;
    }
    Ok(cur)
}

/// The empty list or map a context step with create flags `create` makes.
fn created(create: i64, map: bool) -> Value {
    if map {
        let order = match create {
            ctx::MAP_CREATE_KEY_ORDERED => map_order::KEY_ORDERED,
            ctx::MAP_CREATE_KEY_VALUE_ORDERED => map_order::KEY_VALUE_ORDERED,
            _ => map_order::UNORDERED,
        };
        Value::Map(Map {
            order,
            entries: vec![],
        })
    } else {
        Value::List(List {
            ordered: create == ctx::LIST_CREATE_ORDERED,
            items: vec![],
        })
    }
}

/// The position (in a list's items or a map's entries) of the one element a plain context step
/// of kind `base` (create flags removed) and value `v` selects in `cur`: `Ok(None)` when it
/// selects nothing; result 26 when `cur` is not the kind of collection the step walks (a list
/// step into a map or a scalar). Path expressions select through here too.
pub(crate) fn position(cur: &Value, base: i64, v: &Value) -> OpResult<Option<usize>> {
    let int = |what| v.as_int().ok_or(OpError::Parameter(what));
    Ok(match (base, cur) {
        (ctx::LIST_INDEX, Value::List(l)) => {
            select::single(l.items.len(), int("context index")?).ok()
        }
        (ctx::LIST_RANK, Value::List(l)) => select::single(l.items.len(), int("context rank")?)
            .ok()
            .map(|r| select::rank_order(&l.items.iter().collect::<Vec<_>>())[r]),
        (ctx::LIST_VALUE, Value::List(l)) => l.items.iter().position(|x| value::equal(x, v)),
        (ctx::MAP_INDEX, Value::Map(m)) => {
            select::single(m.entries.len(), int("context index")?).ok()
        }
        (ctx::MAP_RANK, Value::Map(m)) => select::single(m.entries.len(), int("context rank")?)
            .ok()
            .map(|r| select::rank_order(&m.entries.iter().map(|e| &e.1).collect::<Vec<_>>())[r]),
        (ctx::MAP_KEY, Value::Map(m)) => m.find(v).ok(),
        (ctx::MAP_VALUE, Value::Map(m)) => m.entries.iter().position(|e| value::equal(&e.1, v)),
        // Aerospike CE 8.1 answers 26, not 12, when a context step meets an element of the
        // wrong kind (a list step into a map or a scalar), for reads and modifies alike, with
        // or without create flags. Only the element the op itself works on answers 12.
        (ctx::LIST_INDEX | ctx::LIST_RANK | ctx::LIST_VALUE, _) => {
            return Err(OpError::NotApplicable("list context on a non-list"))
        }
        (ctx::MAP_INDEX | ctx::MAP_RANK | ctx::MAP_KEY | ctx::MAP_VALUE, _) => {
            return Err(OpError::NotApplicable("map context on a non-map"))
        }
        _ => return Err(OpError::Parameter("unknown context type")),
    })
}

/// Whether a context step of type `t` is a plain one ([`position`] knows its kind).
pub(crate) fn is_plain_step(t: i64) -> bool {
    matches!(
        t & !ctx::CREATE_MASK,
        ctx::LIST_INDEX
            | ctx::LIST_RANK
            | ctx::LIST_VALUE
            | ctx::MAP_INDEX
            | ctx::MAP_RANK
            | ctx::MAP_KEY
            | ctx::MAP_VALUE
    )
}

fn step<'a>(
    cur: &'a mut Value,
    t: i64,
    v: &Value,
    may_create: bool,
    creates_map: bool,
) -> OpResult<&'a mut Value> {
    let create = if may_create { t & ctx::CREATE_MASK } else { 0 };
    let base = t & !ctx::CREATE_MASK;
    let not_found = || OpError::NotApplicable("context element not found");
    if matches!(base, 0x14 | 0x24) {
        return Err(OpError::Unsupported("expression context"));
    }
    let found = position(cur, base, v)?;
    match (found, cur) {
        (Some(p), Value::List(l)) => Ok(&mut l.items[p]),
        (Some(p), Value::Map(m)) => Ok(&mut m.entries[p].1),
        (Some(_), _) => unreachable!("a position is only found in a list or a map"),
        (None, Value::List(l)) if base == ctx::LIST_INDEX && create != 0 => {
            let index = v.as_int().ok_or(OpError::Parameter("context index"))?;
            let i = usize::try_from(index).map_err(|_| not_found())?;
            let n = l.items.len();
            if i > n && create != ctx::LIST_CREATE_PAD {
                return Err(not_found());
            }
            if i > list::PAD_INDEX_MAX {
                return Err(OpError::Parameter("list index too large"));
            }
            l.items.resize(i, Value::Nil);
            l.items.push(created(create, creates_map));
            Ok(&mut l.items[i])
        }
        (None, Value::Map(m)) if base == ctx::MAP_KEY && create != 0 => {
            if matches!(
                v,
                Value::List(_) | Value::Map(_) | Value::Nil | Value::Wildcard | Value::Inf
            ) {
                return Err(OpError::Parameter("map key must be a scalar"));
            }
            let p = m.find(v).expect_err("not found above");
            m.entries
                .insert(p, (v.clone(), created(create, creates_map)));
            Ok(&mut m.entries[p].1)
        }
        (None, _) => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_list_append_with_context() {
        // list_append('l', 9, ctx=[list_index(0)]) on [[1], 2] (spec §4.5).
        let bin = Value::List(List {
            ordered: false,
            items: vec![
                Value::List(List {
                    ordered: false,
                    items: vec![Value::Int(1)],
                }),
                Value::Int(2),
            ],
        })
        .encode();
        let payload = [0x93, 0xcc, 0xff, 0x92, 0x10, 0x00, 0x92, 0x01, 0x09];
        let out = apply(Some((ptype::LIST, &bin)), &payload, true).unwrap();
        assert_eq!(out.result.unwrap().as_int(), Some(2));
        assert_eq!(
            out.new_bin.unwrap().encode(),
            [0x92, 0x92, 0x01, 0x09, 0x02]
        );
    }

    /// Aerospike CE 8.1.2: pop, remove-by-index, trim on a missing list bin answer nothing and
    /// store nothing; a sort answers 12; an append creates the bin.
    #[test]
    fn non_creating_list_ops_on_a_missing_bin() {
        let payload = |items: Vec<i64>| {
            Value::List(List {
                ordered: false,
                items: items.into_iter().map(Value::Int).collect(),
            })
            .encode()
        };
        let rt_value = 7;
        for p in [
            payload(vec![i64::from(list::code::POP), 0]),
            payload(vec![i64::from(list::code::REMOVE_BY_INDEX), rt_value, 0]),
            payload(vec![i64::from(list::code::TRIM), 0, 2]),
        ] {
            let out = apply(None, &p, true).unwrap();
            assert!(out.result.is_none() && out.new_bin.is_none());
        }
        let sort = payload(vec![i64::from(list::code::SORT), 0]);
        assert_eq!(apply(None, &sort, true).unwrap_err().result_code(), 12);
        let append = payload(vec![i64::from(list::code::APPEND), 1]);
        assert!(apply(None, &append, true).unwrap().new_bin.is_some());
    }

    #[test]
    fn captured_payloads_apply() {
        // map_put('m','k2',22) then map_get_by_key('m','k',VALUE) and map_size.
        let put = [0x94, 0x43, 0xa3, 0x03, 0x6b, 0x32, 0x16, 0x00];
        let out = apply(None, &put, true).unwrap();
        assert_eq!(out.result.unwrap().as_int(), Some(1));
        let bin = out.new_bin.unwrap().encode();
        let get = [0x93, 0x61, 0x07, 0xa3, 0x03, 0x6b, 0x32];
        let out = apply(Some((ptype::MAP, &bin)), &get, false).unwrap();
        assert_eq!(out.result.unwrap().as_int(), Some(22));
        assert!(out.new_bin.is_none());
        let out = apply(Some((ptype::MAP, &bin)), &[0x91, 0x60], false).unwrap();
        assert_eq!(out.result.unwrap().as_int(), Some(1));
    }

    #[test]
    fn a_context_step_into_the_wrong_kind_is_26() {
        // {"b": 5, "c": [1]}
        let m = [0x82, 0xa2, 0x03, b'b', 0x05, 0xa2, 0x03, b'c', 0x91, 0x01];
        // map_size through [map_key "b", map_index 0]: a map step into the scalar 5.
        let through_scalar = [
            0x93, 0xcc, 0xff, 0x94, 0x22, 0xa2, 0x03, b'b', 0x20, 0x00, 0x91, 0x60,
        ];
        // map_size through [list_index 0]: a list step into the map.
        let list_step_on_map = [0x93, 0xcc, 0xff, 0x92, 0x10, 0x00, 0x91, 0x60];
        for p in [&through_scalar[..], &list_step_on_map[..]] {
            for modify in [false, true] {
                let code = apply(Some((ptype::MAP, &m)), p, modify)
                    .unwrap_err()
                    .result_code();
                assert_eq!(code, 26, "{p:02x?}");
            }
        }
        // The op's own element of the wrong kind stays 12: map_size at [map_key "c"].
        let op_on_list = [0x93, 0xcc, 0xff, 0x92, 0x22, 0xa2, 0x03, b'c', 0x91, 0x60];
        let code = apply(Some((ptype::MAP, &m)), &op_on_list, false)
            .unwrap_err()
            .result_code();
        assert_eq!(code, 12);
    }

    #[test]
    fn errors_have_their_codes() {
        let int_bin = 5i64.to_be_bytes();
        let size = [0x91, 0x10];
        assert_eq!(
            apply(Some((ptype::INTEGER, &int_bin)), &size, false)
                .unwrap_err()
                .result_code(),
            12
        );
        // A modify code sent as a read op.
        assert_eq!(
            apply(None, &[0x92, 0x01, 0x05], false)
                .unwrap_err()
                .result_code(),
            4
        );
        assert_eq!(
            apply(None, &[0x91, 0x3f], true).unwrap_err().result_code(),
            4
        );
        // Context into a missing map key without create.
        let m = Value::Map(Map::default()).encode();
        let p = [0x93, 0xcc, 0xff, 0x92, 0x22, 0xa2, 0x03, 0x61, 0x91, 0x60];
        assert_eq!(
            apply(Some((ptype::MAP, &m)), &p, false)
                .unwrap_err()
                .result_code(),
            26
        );
    }

    #[test]
    fn a_change_through_a_context_keeps_an_ordered_list_in_order() {
        // Ordered [[1], [5]]; set the first inner list's element to 7: [7] now sorts after [5].
        let bin = Value::List(List {
            ordered: true,
            items: vec![
                Value::List(List {
                    ordered: false,
                    items: vec![Value::Int(1)],
                }),
                Value::List(List {
                    ordered: false,
                    items: vec![Value::Int(5)],
                }),
            ],
        })
        .encode();
        let payload = [0x93, 0xcc, 0xff, 0x92, 0x10, 0x00, 0x93, 0x09, 0x00, 0x07];
        let out = apply(Some((ptype::LIST, &bin)), &payload, true).unwrap();
        let Some(Value::List(l)) = out.new_bin else {
            panic!("no list")
        };
        let firsts: Vec<i64> = l
            .items
            .iter()
            .map(|x| match x {
                Value::List(i) => i.items[0].as_int().unwrap(),
                other => panic!("not a list: {other:?}"),
            })
            .collect();
        assert_eq!(firsts, [5, 7]);
    }

    #[test]
    fn map_key_create_context_builds_the_path() {
        // map_put('m', 'x', 1, ctx=[map_key_create('a', KEY_ORDERED)]) on a missing bin.
        let p = [
            0x93, 0xcc, 0xff, 0x92, 0xcc, 0xa2, 0xa2, 0x03, 0x61, 0x93, 0x43, 0xa2, 0x03, 0x78,
            0x01,
        ];
        let out = apply(None, &p, true).unwrap();
        let Some(Value::Map(m)) = out.new_bin else {
            panic!("no map")
        };
        let Value::Map(inner) = &m.entries[0].1 else {
            panic!("no inner map")
        };
        assert_eq!(inner.order, map_order::KEY_ORDERED);
        assert_eq!(inner.entries.len(), 1);
    }
}
