//! Map ops (codes 64–110, spec §4.5): put / put items / add / replace with map write flags,
//! increment and decrement, clear, set order, and every get/remove by key, key list, key
//! interval, key-relative index, index, rank, value, value list, value interval and relative
//! rank, with return types.
//!
//! Works on a decoded [`Map`] the caller owns and discards on error, so a failed op changes
//! nothing. Entries stay sorted by key and unique after every op.

use crate::args::{self, arg, int, list_items, opt_int};
use crate::error::{OpError, OpResult};
use crate::list::add_number;
use crate::select::{self, ReturnType, Selection};
use crate::value::{map_order, Map, Value};

pub mod code {
    pub const SET_TYPE: u8 = 64;
    pub const ADD: u8 = 65;
    pub const ADD_ITEMS: u8 = 66;
    pub const PUT: u8 = 67;
    pub const PUT_ITEMS: u8 = 68;
    pub const REPLACE: u8 = 69;
    pub const REPLACE_ITEMS: u8 = 70;
    pub const INCREMENT: u8 = 73;
    pub const DECREMENT: u8 = 74;
    pub const CLEAR: u8 = 75;
    pub const REMOVE_BY_KEY: u8 = 76;
    pub const REMOVE_BY_VALUE_REL_RANK_RANGE: u8 = 89;
    pub const SIZE: u8 = 96;
    pub const GET_BY_KEY: u8 = 97;
    pub const GET_BY_INDEX: u8 = 98;
    pub const GET_BY_VALUE: u8 = 99;
    pub const GET_BY_RANK: u8 = 100;
    pub const GET_ALL_BY_VALUE: u8 = 102;
    pub const GET_BY_KEY_INTERVAL: u8 = 103;
    pub const GET_BY_INDEX_RANGE: u8 = 104;
    pub const GET_BY_VALUE_INTERVAL: u8 = 105;
    pub const GET_BY_RANK_RANGE: u8 = 106;
    pub const GET_BY_KEY_LIST: u8 = 107;
    pub const GET_BY_VALUE_LIST: u8 = 108;
    pub const GET_BY_KEY_REL_INDEX_RANGE: u8 = 109;
    pub const GET_BY_VALUE_REL_RANK_RANGE: u8 = 110;
}

/// Map write flags (spec §4.5).
pub mod flag {
    pub const CREATE_ONLY: i64 = 1;
    pub const UPDATE_ONLY: i64 = 2;
    pub const NO_FAIL: i64 = 4;
    pub const DO_PARTIAL: i64 = 8;
}

/// The get-by code a remove-by code selects like (the numbering is not a fixed offset).
fn get_code_of_remove(c: u8) -> Option<u8> {
    Some(match c {
        76 => code::GET_BY_KEY,
        77 => code::GET_BY_INDEX,
        78 | 82 => code::GET_ALL_BY_VALUE,
        79 => code::GET_BY_RANK,
        81 => code::GET_BY_KEY_LIST,
        83 => code::GET_BY_VALUE_LIST,
        84 => code::GET_BY_KEY_INTERVAL,
        85 => code::GET_BY_INDEX_RANGE,
        86 => code::GET_BY_VALUE_INTERVAL,
        87 => code::GET_BY_RANK_RANGE,
        88 => code::GET_BY_KEY_REL_INDEX_RANGE,
        89 => code::GET_BY_VALUE_REL_RANK_RANGE,
        _ => return None,
    })
}

pub fn is_read(c: u8) -> bool {
    matches!(c, code::SIZE..=code::GET_BY_RANK | code::GET_ALL_BY_VALUE..=code::GET_BY_VALUE_REL_RANK_RANGE)
}

pub fn is_known(c: u8) -> bool {
    is_read(c)
        || get_code_of_remove(c).is_some()
        || matches!(c, code::SET_TYPE..=code::REPLACE_ITEMS | code::INCREMENT..=code::CLEAR)
}

/// True for codes that create the bin (or context element) when it does not exist.
pub fn creates(c: u8) -> bool {
    matches!(
        c,
        code::SET_TYPE..=code::REPLACE_ITEMS | code::INCREMENT | code::DECREMENT
    )
}

/// Map order from a map-policy attributes argument (0, 1 or 3; other bits are index hints).
fn order_of(attr: Option<i64>) -> u8 {
    (attr.unwrap_or(0) & i64::from(map_order::KEY_VALUE_ORDERED)) as u8
}

/// The map a creating op makes when the bin does not exist yet: its attributes decide.
pub fn new_for(c: u8, a: &[Value]) -> OpResult<Map> {
    let attr = match c {
        code::SET_TYPE => opt_int(a, 0)?,
        code::PUT | code::ADD | code::REPLACE | code::INCREMENT | code::DECREMENT => opt_int(a, 2)?,
        code::PUT_ITEMS | code::ADD_ITEMS | code::REPLACE_ITEMS => opt_int(a, 1)?,
        _ => None,
    };
    Ok(Map {
        order: order_of(attr),
        entries: vec![],
    })
}

fn size(m: &Map) -> Value {
    Value::Int(m.entries.len() as i64)
}

fn check_key(k: &Value) -> OpResult<()> {
    match k {
        Value::Int(_) | Value::Str(_) | Value::Bytes(..) | Value::Float(_) | Value::Bool(_) => {
            Ok(())
        }
        Value::List(_) | Value::Map(_) | Value::Nil | Value::Wildcard | Value::Inf => {
            Err(OpError::Parameter("map key must be a scalar"))
        }
    }
}

/// Writes one entry under the write flags. `Ok(false)`: refused, under NO_FAIL or DO_PARTIAL.
fn put_one(m: &mut Map, k: Value, v: Value, flags: i64) -> OpResult<bool> {
    check_key(&k)?;
    let found = m.find(&k);
    let refusal = match found {
        Ok(_) if flags & flag::CREATE_ONLY != 0 => Some(OpError::ElementExists),
        Err(_) if flags & flag::UPDATE_ONLY != 0 => Some(OpError::ElementNotFound),
        _ => None,
    };
    if let Some(e) = refusal {
        return if flags & (flag::NO_FAIL | flag::DO_PARTIAL) != 0 {
            Ok(false)
        } else {
            Err(e)
        };
    }
    match found {
        Ok(i) => m.entries[i].1 = v,
        Err(i) => m.entries.insert(i, (k, v)),
    }
    Ok(true)
}

/// Puts every item under the write flags: a refused item fails the op, or with DO_PARTIAL is
/// skipped, or with NO_FAIL alone makes the whole op a silent no-op. Each item is checked
/// against the map as it was (an items map has unique keys), then all are merged in one sort,
/// so many items into a large map stay O((n + m) log), not O(n m).
fn put_items(m: &mut Map, items: &Map, flags: i64) -> OpResult<()> {
    let mut accepted = Vec::with_capacity(items.entries.len());
    for (k, v) in &items.entries {
        check_key(k)?;
        let exists = m.find(k).is_ok();
        let refusal = if exists && flags & flag::CREATE_ONLY != 0 {
            Some(OpError::ElementExists)
        } else if !exists && flags & flag::UPDATE_ONLY != 0 {
            Some(OpError::ElementNotFound)
        } else {
            None
        };
        match refusal {
            Some(_) if flags & flag::DO_PARTIAL != 0 => {}
            Some(_) if flags & flag::NO_FAIL != 0 => return Ok(()),
            Some(e) => return Err(e),
            None => accepted.push((k.clone(), v.clone())),
        }
    }
    let mut entries = std::mem::take(&mut m.entries);
    entries.extend(accepted);
    *m = Map::from_entries(m.order, entries);
    Ok(())
}

/// Applies map op `c` with arguments `a` (after the code) to `m`; returns the op's result.
pub fn apply(m: &mut Map, c: u8, a: &[Value]) -> OpResult<Option<Value>> {
    match c {
        code::SET_TYPE => {
            args::expect_max(a, 1)?;
            m.order = order_of(Some(int(a, 0)?));
            Ok(None)
        }
        code::PUT | code::ADD | code::REPLACE => {
            args::expect_max(a, 4)?;
            let mut flags = args::flags(a, 3)?;
            if c == code::ADD {
                flags |= flag::CREATE_ONLY;
            } else if c == code::REPLACE {
                flags |= flag::UPDATE_ONLY;
            }
            put_one(m, arg(a, 0)?.clone(), arg(a, 1)?.clone(), flags)?;
            Ok(Some(size(m)))
        }
        code::PUT_ITEMS | code::ADD_ITEMS | code::REPLACE_ITEMS => {
            args::expect_max(a, 3)?;
            let Value::Map(items) = arg(a, 0)? else {
                return Err(OpError::Parameter("put items needs a map"));
            };
            let mut flags = args::flags(a, 2)?;
            if c == code::ADD_ITEMS {
                flags |= flag::CREATE_ONLY;
            } else if c == code::REPLACE_ITEMS {
                flags |= flag::UPDATE_ONLY;
            }
            put_items(m, items, flags)?;
            Ok(Some(size(m)))
        }
        code::INCREMENT | code::DECREMENT => {
            args::expect_max(a, 4)?;
            let k = arg(a, 0)?.clone();
            check_key(&k)?;
            let mut delta = a.get(1).cloned().unwrap_or(Value::Int(1));
            if c == code::DECREMENT {
                delta = match delta {
                    Value::Int(d) => Value::Int(d.wrapping_neg()),
                    Value::Float(d) => Value::Float(-d),
                    _ => return Err(OpError::Parameter("decrement by a non-number")),
                };
            }
            let found = m.find(&k);
            let current = found.ok().map(|i| &m.entries[i].1);
            let new = add_number(current, &delta)?;
            match found {
                Ok(i) => m.entries[i].1 = new.clone(),
                Err(i) => m.entries.insert(i, (k, new.clone())),
            }
            Ok(Some(new))
        }
        code::CLEAR => {
            args::expect_max(a, 0)?;
            m.entries.clear();
            Ok(None)
        }
        code::SIZE => {
            args::expect_max(a, 0)?;
            Ok(Some(size(m)))
        }
        c if is_read(c) => by(m, c, a, false),
        c => match get_code_of_remove(c) {
            Some(g) => by(m, g, a, true),
            None => Err(OpError::Parameter("unknown map op code")),
        },
    }
}

/// The get-by / remove-by family: `[return type, selector args...]`.
fn by(m: &mut Map, get_code: u8, a: &[Value], remove: bool) -> OpResult<Option<Value>> {
    use select::By;
    let rt = ReturnType::parse(arg(a, 0)?)?;
    let keys: Vec<&Value> = m.entries.iter().map(|e| &e.0).collect();
    let values: Vec<&Value> = m.entries.iter().map(|e| &e.1).collect();
    let n = keys.len();
    let sel = match get_code {
        code::GET_BY_KEY => {
            args::expect_max(a, 2)?;
            Selection::one(m.find(arg(a, 1)?).ok())
        }
        code::GET_BY_KEY_LIST => {
            args::expect_max(a, 2)?;
            let mut found: Vec<usize> = list_items(a, 1)?
                .iter()
                .filter_map(|k| m.find(k).ok())
                .collect();
            found.sort_unstable();
            found.dedup();
            Selection::many(found)
        }
        code::GET_BY_KEY_INTERVAL => {
            args::expect_max(a, 3)?;
            Selection::many(select::value_interval(
                &keys,
                arg(a, 1)?,
                &args::end_bound(a, 2),
            ))
        }
        code::GET_BY_VALUE_INTERVAL => {
            args::expect_max(a, 3)?;
            // Results of a value range come in key order, ranks ascending (Aerospike CE 8.1.2,
            // any map order).
            let picked = select::value_interval(&values, arg(a, 1)?, &args::end_bound(a, 2));
            Selection::many(picked).ranks_ascending()
        }
        code::GET_BY_KEY_REL_INDEX_RANGE => {
            args::expect_max(a, 4)?;
            let anchor = match m.find(arg(a, 1)?) {
                Ok(i) | Err(i) => i,
            };
            let (s, e) = select::relative(n, anchor, int(a, 2)?, opt_int(a, 3)?)?;
            Selection::many((s..e).collect())
        }
        c => {
            let shared = match c {
                code::GET_BY_INDEX => By::Index,
                code::GET_BY_RANK => By::Rank,
                code::GET_BY_VALUE | code::GET_ALL_BY_VALUE => By::Value,
                code::GET_BY_VALUE_LIST => By::ValueList,
                code::GET_BY_INDEX_RANGE => By::IndexRange,
                code::GET_BY_RANK_RANGE => By::RankRange,
                code::GET_BY_VALUE_REL_RANK_RANGE => By::ValueRelRank,
                _ => return Err(OpError::Parameter("unknown map op code")),
            };
            select::by(shared, &values, a)?
        }
    };
    let sel = sel.apply_map_inversion(&values, rt);
    let out = select::result(rt, &sel, Some(&keys), &values)?;
    if remove {
        select::remove_positions(&mut m.entries, &sel.positions);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::rt;

    fn s(x: &str) -> Value {
        Value::Str(x.as_bytes().to_vec())
    }

    fn i(v: i64) -> Value {
        Value::Int(v)
    }

    /// {a:1, b:2, c:30, y:30, z:26}, the map of Aerospike's map documentation.
    fn doc_map() -> Map {
        Map::from_entries(
            0,
            vec![
                (s("z"), i(26)),
                (s("a"), i(1)),
                (s("c"), i(30)),
                (s("b"), i(2)),
                (s("y"), i(30)),
            ],
        )
    }

    fn strs(v: &Value) -> Vec<String> {
        match v {
            Value::List(l) => l
                .items
                .iter()
                .map(|x| match x {
                    Value::Str(b) => String::from_utf8(b.clone()).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("not a list: {other:?}"),
        }
    }

    #[test]
    fn put_flags() {
        let mut m = doc_map();
        assert_eq!(
            apply(
                &mut m,
                code::PUT,
                &[s("a"), i(5), i(0), i(flag::CREATE_ONLY)]
            )
            .unwrap_err(),
            OpError::ElementExists
        );
        assert_eq!(
            apply(
                &mut m,
                code::PUT,
                &[s("q"), i(5), i(0), i(flag::UPDATE_ONLY)]
            )
            .unwrap_err(),
            OpError::ElementNotFound
        );
        let r = apply(
            &mut m,
            code::PUT,
            &[s("q"), i(5), i(0), i(flag::UPDATE_ONLY | flag::NO_FAIL)],
        );
        assert_eq!(r.unwrap().unwrap().as_int(), Some(5));
        apply(&mut m, code::PUT, &[s("b"), i(7)]).unwrap();
        assert_eq!(
            apply(&mut m, code::GET_BY_KEY, &[i(rt::VALUE), s("b")])
                .unwrap()
                .unwrap()
                .as_int(),
            Some(7)
        );
    }

    #[test]
    fn selectors_match_the_documented_examples() {
        let mut m = doc_map();
        let mut g = |c, a: &[Value]| apply(&mut m, c, a).unwrap().unwrap();
        assert_eq!(
            strs(&g(code::GET_BY_RANK_RANGE, &[i(rt::KEY), i(-2), i(2)])),
            ["c", "y"]
        );
        assert_eq!(
            strs(&g(code::GET_BY_KEY_INTERVAL, &[i(rt::KEY), s("b"), s("y")])),
            ["b", "c"]
        );
        assert_eq!(
            strs(&g(code::GET_BY_VALUE_INTERVAL, &[i(rt::KEY), i(2), i(30)])),
            ["b", "z"]
        );
        assert_eq!(
            g(code::GET_ALL_BY_VALUE, &[i(rt::COUNT), i(30)]).as_int(),
            Some(2)
        );
        assert_eq!(
            g(code::GET_BY_KEY, &[i(rt::INDEX), s("c")]).as_int(),
            Some(2)
        );
        assert_eq!(
            g(code::GET_BY_KEY, &[i(rt::RANK), s("z")]).as_int(),
            Some(2)
        );
        assert_eq!(
            strs(&g(
                code::GET_BY_KEY_REL_INDEX_RANGE,
                &[i(rt::KEY), s("c"), i(-1), i(2)]
            )),
            ["b", "c"]
        );
    }

    /// Aerospike CE 8.1.2: key-value results are a flat list in selection order, a value range
    /// comes in key order, ranks of a value list in the order of the asked-for values.
    #[test]
    fn result_shapes_and_orders_match_aerospike() {
        let mut m = doc_map();
        let mut g = |c, a: &[Value]| apply(&mut m, c, a).unwrap().unwrap().encode();
        let list = |items: Vec<Value>| {
            Value::List(crate::List {
                ordered: false,
                items,
            })
        };
        assert_eq!(
            g(code::GET_BY_KEY, &[i(rt::KEY_VALUE), s("c")]),
            list(vec![s("c"), i(30)]).encode()
        );
        assert_eq!(
            g(code::GET_BY_RANK_RANGE, &[i(rt::KEY_VALUE), i(1), i(2)]),
            list(vec![s("b"), i(2), s("z"), i(26)]).encode()
        );
        assert_eq!(
            g(code::GET_BY_VALUE_INTERVAL, &[i(rt::KEY), i(1), i(27)]),
            list(vec![s("a"), s("b"), s("z")]).encode()
        );
        let wanted = list(vec![i(26), i(1)]);
        assert_eq!(
            g(code::GET_BY_VALUE_LIST, &[i(rt::RANK), wanted]),
            list(vec![i(2), i(0)]).encode()
        );
    }

    #[test]
    fn remove_by_key_list_and_increment() {
        let mut m = doc_map();
        let r = apply(
            &mut m,
            81,
            &[
                i(rt::COUNT),
                Value::List(crate::List {
                    ordered: false,
                    items: vec![s("a"), s("nope"), s("z")],
                }),
            ],
        );
        assert_eq!(r.unwrap().unwrap().as_int(), Some(2));
        assert_eq!(m.entries.len(), 3);
        assert_eq!(
            apply(&mut m, code::INCREMENT, &[s("b"), i(5)])
                .unwrap()
                .unwrap()
                .as_int(),
            Some(7)
        );
        assert_eq!(
            apply(&mut m, code::DECREMENT, &[s("new"), i(5)])
                .unwrap()
                .unwrap()
                .as_int(),
            Some(-5)
        );
        assert_eq!(
            apply(&mut m, code::INCREMENT, &[s("b"), s("x")]).unwrap_err(),
            OpError::Parameter("increment by a non-number")
        );
    }
}
