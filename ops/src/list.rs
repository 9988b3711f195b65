//! List ops (codes 0–40, spec §4.5): append, insert, set, increment, pop, remove, trim, sort,
//! and every get/remove by index, rank, value, value list, value interval and relative rank,
//! on unordered and ordered lists, with list write flags and return types.
//!
//! Works on a decoded [`List`] that the caller owns; on error the caller discards it, so an op
//! that fails half-way changes nothing. An ordered list must be sorted after every op.

use std::cmp::Ordering;

use crate::args::{self, arg, int, list_items, opt_int};
use crate::error::{OpError, OpResult};
use crate::select::{self, ReturnType, Selection};
use crate::value::{compare, equal, List, Value};

pub mod code {
    pub const SET_TYPE: u8 = 0;
    pub const APPEND: u8 = 1;
    pub const APPEND_ITEMS: u8 = 2;
    pub const INSERT: u8 = 3;
    pub const INSERT_ITEMS: u8 = 4;
    pub const POP: u8 = 5;
    pub const POP_RANGE: u8 = 6;
    pub const REMOVE: u8 = 7;
    pub const REMOVE_RANGE: u8 = 8;
    pub const SET: u8 = 9;
    pub const TRIM: u8 = 10;
    pub const CLEAR: u8 = 11;
    pub const INCREMENT: u8 = 12;
    pub const SORT: u8 = 13;
    pub const SIZE: u8 = 16;
    pub const GET: u8 = 17;
    pub const GET_RANGE: u8 = 18;
    pub const GET_BY_INDEX: u8 = 19;
    pub const GET_BY_VALUE: u8 = 20;
    pub const GET_BY_RANK: u8 = 21;
    pub const GET_ALL_BY_VALUE: u8 = 22;
    pub const GET_ALL_BY_VALUE_LIST: u8 = 23;
    pub const GET_BY_INDEX_RANGE: u8 = 24;
    pub const GET_BY_VALUE_INTERVAL: u8 = 25;
    pub const GET_BY_RANK_RANGE: u8 = 26;
    pub const GET_BY_VALUE_REL_RANK_RANGE: u8 = 27;
    pub const REMOVE_BY_INDEX: u8 = 32;
    pub const REMOVE_BY_VALUE_REL_RANK_RANGE: u8 = 40;
    /// Remove-by codes are their get-by code plus this.
    pub const REMOVE_BY_OFFSET: u8 = 13;
}

/// List write flags (spec §4.5).
pub mod flag {
    pub const ADD_UNIQUE: i64 = 1;
    pub const INSERT_BOUNDED: i64 = 2;
    pub const NO_FAIL: i64 = 4;
    pub const DO_PARTIAL: i64 = 8;
}

/// Sort flags.
const SORT_DESCENDING: i64 = 1;
const SORT_DROP_DUPLICATES: i64 = 2;

/// True for codes that only read.
pub fn is_read(c: u8) -> bool {
    (code::SIZE..=code::GET_BY_VALUE_REL_RANK_RANGE).contains(&c)
}

/// True for codes this module knows.
pub fn is_known(c: u8) -> bool {
    c <= code::SORT
        || is_read(c)
        || (code::REMOVE_BY_INDEX..=code::REMOVE_BY_VALUE_REL_RANK_RANGE).contains(&c)
}

/// True for codes that create the bin (or context element) when it does not exist.
pub fn creates(c: u8) -> bool {
    matches!(
        c,
        code::SET_TYPE
            | code::APPEND
            | code::APPEND_ITEMS
            | code::INSERT
            | code::INSERT_ITEMS
            | code::SET
            | code::INCREMENT
    )
}

/// The list a creating op makes when the bin does not exist yet: its order argument decides.
pub fn new_for(c: u8, a: &[Value]) -> OpResult<List> {
    let order = match c {
        code::SET_TYPE => opt_int(a, 0)?,
        code::APPEND | code::APPEND_ITEMS => opt_int(a, 1)?,
        code::INCREMENT => opt_int(a, 2)?,
        _ => None,
    };
    Ok(List {
        ordered: order.unwrap_or(0) & 1 != 0,
        items: vec![],
    })
}

fn size(l: &List) -> Value {
    Value::Int(l.items.len() as i64)
}

fn contains(l: &List, v: &Value) -> bool {
    l.items.iter().any(|x| equal(x, v))
}

/// Inserts into a sorted list after any equal elements.
fn insert_sorted(l: &mut List, v: Value) {
    let at = l
        .items
        .partition_point(|x| compare(x, &v) != Ordering::Greater);
    l.items.insert(at, v);
}

/// Adds `v` at the end (unordered) or in order, honouring ADD_UNIQUE. Returns false when the
/// element was skipped under NO_FAIL.
fn add(l: &mut List, v: Value, flags: i64) -> OpResult<bool> {
    if flags & flag::ADD_UNIQUE != 0 && contains(l, &v) {
        return if flags & flag::NO_FAIL != 0 {
            Ok(false)
        } else {
            Err(OpError::ElementExists)
        };
    }
    if l.ordered {
        insert_sorted(l, v);
    } else {
        l.items.push(v);
    }
    Ok(true)
}

/// Several items under one set of flags: with ADD_UNIQUE a repeated item fails the whole op,
/// unless DO_PARTIAL (skip it) or NO_FAIL (skip the whole op).
fn add_items(l: &mut List, items: &[Value], flags: i64, at: Option<usize>) -> OpResult<()> {
    if items
        .iter()
        .any(|v| matches!(v, Value::Wildcard | Value::Inf))
    {
        return Err(OpError::Parameter("wildcard or infinity as a list element"));
    }
    let unique = flags & flag::ADD_UNIQUE != 0;
    // Membership in sorted views, so many items against a long list stay O(n log n).
    let mut existing: Vec<&Value> = if unique {
        l.items.iter().collect()
    } else {
        vec![]
    };
    existing.sort_by(|a, b| compare(a, b));
    let mut seen: std::collections::BTreeSet<Ordered> = Default::default();
    let mut accepted: Vec<Value> = Vec::with_capacity(items.len());
    for v in items {
        let dup = unique
            && (existing.binary_search_by(|x| compare(x, v)).is_ok()
                || !seen.insert(Ordered(v.clone())));
        if dup {
            if flags & flag::DO_PARTIAL != 0 {
                continue;
            }
            if flags & flag::NO_FAIL != 0 {
                return Ok(());
            }
            return Err(OpError::ElementExists);
        }
        accepted.push(v.clone());
    }
    match at {
        Some(i) => {
            l.items.splice(i..i, accepted);
        }
        None if l.ordered => {
            // A stable sort keeps equal elements in arrival order, as one-by-one inserts would.
            l.items.extend(accepted);
            l.items.sort_by(compare);
        }
        None => l.items.extend(accepted),
    }
    Ok(())
}

/// A value ordered by Aerospike's comparison, for sets of values (no wildcards inside).
#[derive(Debug, Clone)]
struct Ordered(Value);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        compare(&self.0, &other.0) == Ordering::Equal
    }
}

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

/// The position an insert or set at `index` addresses, padding with nils past the end unless
/// INSERT_BOUNDED. `None`: skipped under NO_FAIL.
fn position_for_write(
    l: &mut List,
    index: i64,
    flags: i64,
    inserting: bool,
) -> OpResult<Option<usize>> {
    let n = l.items.len() as i64;
    let i = if index < 0 { index + n } else { index };
    let limit = if inserting { n } else { n - 1 };
    let out_of_bounds = i < 0 || (i > limit && flags & flag::INSERT_BOUNDED != 0);
    if out_of_bounds {
        return if flags & flag::NO_FAIL != 0 {
            Ok(None)
        } else {
            Err(OpError::NotApplicable("list index out of bounds"))
        };
    }
    let i = usize::try_from(i).map_err(|_| OpError::Parameter("list index"))?;
    // Padding is bounded by the caller's record-size limit only after the op; refuse absurd
    // indexes here so a client cannot make the server allocate gigabytes of nils.
    if i > PAD_INDEX_MAX {
        return Err(OpError::Parameter("list index too large"));
    }
    let pad_to = if inserting { i } else { i + 1 };
    while l.items.len() < pad_to {
        l.items.push(Value::Nil);
    }
    Ok(Some(i))
}

/// Largest index a write may pad a list up to (a record is at most 8 MiB, one byte per nil).
pub const PAD_INDEX_MAX: usize = 8 << 20;

fn not_for_ordered(l: &List) -> OpResult<()> {
    if l.ordered {
        return Err(OpError::NotApplicable("op needs an unordered list"));
    }
    Ok(())
}

/// Adds `delta` to a number (absent or nil counts as 0): the stored type decides the result.
pub fn add_number(current: Option<&Value>, delta: &Value) -> OpResult<Value> {
    Ok(match (current, delta) {
        (None | Some(Value::Nil), Value::Int(_) | Value::Float(_)) => delta.clone(),
        (Some(Value::Int(c)), Value::Int(d)) => Value::Int(c.wrapping_add(*d)),
        (Some(Value::Int(c)), Value::Float(d)) => Value::Int(c.wrapping_add(*d as i64)),
        (Some(Value::Float(c)), Value::Float(d)) => Value::Float(c + d),
        (Some(Value::Float(c)), Value::Int(d)) => Value::Float(c + *d as f64),
        // Aerospike CE 8.1 answers 4, not 12, for a list or map element that is not a number.
        (Some(_), Value::Int(_) | Value::Float(_)) => {
            return Err(OpError::Parameter("increment of a non-numeric element"))
        }
        _ => return Err(OpError::Parameter("increment by a non-number")),
    })
}

/// Applies list op `c` with arguments `a` (after the code) to `l`; returns the op's result.
pub fn apply(l: &mut List, c: u8, a: &[Value]) -> OpResult<Option<Value>> {
    match c {
        code::SET_TYPE => {
            args::expect_max(a, 2)?;
            l.ordered = int(a, 0)? & 1 != 0;
            if l.ordered {
                l.items.sort_by(compare);
            }
            Ok(None)
        }
        code::APPEND => {
            args::expect_max(a, 3)?;
            add(l, arg(a, 0)?.clone(), args::flags(a, 2)?)?;
            Ok(Some(size(l)))
        }
        code::APPEND_ITEMS => {
            args::expect_max(a, 3)?;
            add_items(l, list_items(a, 0)?, args::flags(a, 2)?, None)?;
            Ok(Some(size(l)))
        }
        code::INSERT | code::INSERT_ITEMS => {
            args::expect_max(a, 3)?;
            not_for_ordered(l)?;
            let flags = args::flags(a, 2)?;
            let Some(at) = position_for_write(l, int(a, 0)?, flags, true)? else {
                return Ok(Some(size(l)));
            };
            if c == code::INSERT {
                add_items(l, std::slice::from_ref(arg(a, 1)?), flags, Some(at))?;
            } else {
                add_items(l, list_items(a, 1)?, flags, Some(at))?;
            }
            Ok(Some(size(l)))
        }
        code::SET => {
            args::expect_max(a, 3)?;
            not_for_ordered(l)?;
            let flags = args::flags(a, 2)?;
            let v = arg(a, 1)?.clone();
            if flags & flag::ADD_UNIQUE != 0 && contains(l, &v) {
                return if flags & flag::NO_FAIL != 0 {
                    Ok(None)
                } else {
                    Err(OpError::ElementExists)
                };
            }
            if let Some(i) = position_for_write(l, int(a, 0)?, flags, false)? {
                l.items[i] = v;
            }
            Ok(None)
        }
        code::INCREMENT => {
            args::expect_max(a, 4)?;
            let delta = a.get(1).cloned().unwrap_or(Value::Int(1));
            let flags = args::flags(a, 3)?;
            let Some(i) = position_for_write(l, int(a, 0)?, flags, false)? else {
                return Ok(None);
            };
            let new = add_number(Some(&l.items[i]), &delta)?;
            if l.ordered {
                l.items.remove(i);
                insert_sorted(l, new.clone());
            } else {
                l.items[i] = new.clone();
            }
            Ok(Some(new))
        }
        code::POP | code::REMOVE => {
            args::expect_max(a, 1)?;
            let i = select::single(l.items.len(), int(a, 0)?)?;
            let v = l.items.remove(i);
            Ok(Some(if c == code::POP { v } else { Value::Int(1) }))
        }
        code::POP_RANGE | code::REMOVE_RANGE => {
            args::expect_max(a, 2)?;
            let (s, e) = select::range(l.items.len(), int(a, 0)?, opt_int(a, 1)?)?;
            let removed: Vec<Value> = l.items.drain(s..e).collect();
            Ok(Some(if c == code::POP_RANGE {
                Value::List(List {
                    ordered: false,
                    items: removed,
                })
            } else {
                Value::Int(removed.len() as i64)
            }))
        }
        code::TRIM => {
            args::expect_max(a, 2)?;
            let n = l.items.len();
            // Aerospike CE 8.1 trims to the index range as any range op clips it: a range
            // outside the list keeps nothing (`trim(4, 1)` of 4 elements empties the list).
            let (s, e) = select::range(n, int(a, 0)?, Some(int(a, 1)?))?;
            l.items.truncate(e);
            l.items.drain(..s);
            Ok(Some(Value::Int((n - (e - s)) as i64)))
        }
        code::CLEAR => {
            args::expect_max(a, 0)?;
            l.items.clear();
            Ok(None)
        }
        code::SORT => {
            args::expect_max(a, 1)?;
            let f = args::flags(a, 0)?;
            l.items.sort_by(compare);
            if f & SORT_DROP_DUPLICATES != 0 {
                l.items.dedup_by(|x, y| equal(x, y));
            }
            if f & SORT_DESCENDING != 0 && !l.ordered {
                l.items.reverse();
            }
            Ok(None)
        }
        code::SIZE => {
            args::expect_max(a, 0)?;
            Ok(Some(size(l)))
        }
        code::GET => {
            args::expect_max(a, 1)?;
            let i = select::single(l.items.len(), int(a, 0)?)?;
            Ok(Some(l.items[i].clone()))
        }
        code::GET_RANGE => {
            args::expect_max(a, 2)?;
            let (s, e) = select::range(l.items.len(), int(a, 0)?, opt_int(a, 1)?)?;
            Ok(Some(Value::List(List {
                ordered: false,
                items: l.items[s..e].to_vec(),
            })))
        }
        c if (code::GET_BY_INDEX..=code::GET_BY_VALUE_REL_RANK_RANGE).contains(&c) => {
            by(l, c, a, false)
        }
        c if (code::REMOVE_BY_INDEX..=code::REMOVE_BY_VALUE_REL_RANK_RANGE).contains(&c) => {
            by(l, c - code::REMOVE_BY_OFFSET, a, true)
        }
        _ => Err(OpError::Parameter("unknown list op code")),
    }
}

/// The get-by / remove-by family: `[return type, selector args...]`.
fn by(l: &mut List, get_code: u8, a: &[Value], remove: bool) -> OpResult<Option<Value>> {
    use select::By;
    let rt = ReturnType::parse(arg(a, 0)?)?;
    let (sel, out) = {
        let values: Vec<&Value> = l.items.iter().collect();
        let sel = match get_code {
            code::GET_BY_VALUE_INTERVAL => {
                args::expect_max(a, 3)?;
                // A list's value range comes in list order.
                let begin = arg(a, 1)?;
                Selection::many(select::value_interval(
                    &values,
                    begin,
                    &args::end_bound(a, 2),
                ))
                .ranks_ascending()
            }
            c => {
                let shared = match c {
                    code::GET_BY_INDEX => By::Index,
                    code::GET_BY_RANK => By::Rank,
                    code::GET_BY_VALUE | code::GET_ALL_BY_VALUE => By::Value,
                    code::GET_ALL_BY_VALUE_LIST => By::ValueList,
                    code::GET_BY_INDEX_RANGE => By::IndexRange,
                    code::GET_BY_RANK_RANGE => By::RankRange,
                    code::GET_BY_VALUE_REL_RANK_RANGE => By::ValueRelRank,
                    _ => return Err(OpError::Parameter("unknown list op code")),
                };
                let sel = select::by(shared, &values, a)?;
                if l.ordered {
                    sel
                } else {
                    sel.list_rank_range_order(values.len())
                }
            }
        };
        let sel = sel.apply_inversion(values.len(), rt);
        // No keys on a list: key return types are result 4 there.
        let out = select::result(rt, &sel, None, &values)?;
        (sel, out)
    };
    if remove {
        select::remove_positions(&mut l.items, &sel.positions);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::rt;

    fn ints(v: &[i64]) -> List {
        List {
            ordered: false,
            items: v.iter().map(|&i| Value::Int(i)).collect(),
        }
    }

    fn as_ints(v: &Value) -> Vec<i64> {
        match v {
            Value::List(l) => l.items.iter().map(|x| x.as_int().unwrap()).collect(),
            other => panic!("not a list: {other:?}"),
        }
    }

    fn i(v: i64) -> Value {
        Value::Int(v)
    }

    /// Result orders of Aerospike CE 8.1.2 on the unordered list [7, 6, 5, 8, 9, 10] (and on
    /// [3, 1, 4, 11, 5, 9, 2, 6, 15, 0] for the rank-range direction).
    #[test]
    fn result_orders_match_aerospike() {
        let inv = rt::INVERTED;
        let get =
            |v: &[i64], c: u8, a: &[Value]| as_ints(&apply(&mut ints(v), c, a).unwrap().unwrap());
        let l = [7, 6, 5, 8, 9, 10];
        let rr = code::GET_BY_RANK_RANGE;
        assert_eq!(get(&l, rr, &[i(rt::VALUE), i(0), i(3)]), [7, 6, 5]);
        assert_eq!(get(&l, rr, &[i(rt::VALUE), i(2), i(2)]), [8, 7]);
        assert_eq!(get(&l, rr, &[i(rt::INDEX), i(0), i(3)]), [0, 1, 2]);
        assert_eq!(get(&l, rr, &[i(rt::RANK), i(2), i(2)]), [2, 3]);
        assert_eq!(get(&l, rr, &[i(rt::RANK | inv), i(2), i(2)]), [0, 1, 4, 5]);
        assert_eq!(
            get(&l, rr, &[i(rt::VALUE | inv), i(2), i(2)]),
            [6, 5, 9, 10]
        );
        let rel = code::GET_BY_VALUE_REL_RANK_RANGE;
        assert_eq!(get(&l, rel, &[i(rt::VALUE), i(6), i(0), i(3)]), [8, 7, 6]);
        assert_eq!(get(&l, rel, &[i(rt::INDEX), i(6), i(0), i(3)]), [0, 1, 3]);
        let wanted = Value::List(ints(&[10, 5, 7]));
        let vl = code::GET_ALL_BY_VALUE_LIST;
        assert_eq!(get(&l, vl, &[i(rt::RANK), wanted.clone()]), [5, 0, 2]);
        assert_eq!(get(&l, vl, &[i(rt::VALUE), wanted.clone()]), [7, 5, 10]);
        assert_eq!(get(&l, vl, &[i(rt::RANK | inv), wanted]), [1, 3, 4]);
        let vr = code::GET_BY_VALUE_INTERVAL;
        assert_eq!(get(&l, vr, &[i(rt::RANK), i(5), i(9)]), [0, 1, 2, 3]);
        assert_eq!(
            get(&l, vr, &[i(rt::REVERSE_RANK), i(5), i(9)]),
            [2, 3, 4, 5]
        );
        let big = [3, 1, 4, 11, 5, 9, 2, 6, 15, 0];
        assert_eq!(get(&big, rr, &[i(rt::VALUE), i(-3), i(3)]), [9, 11, 15]);
        assert_eq!(get(&big, rr, &[i(rt::VALUE), i(4), i(3)]), [4, 5, 6]);
        assert_eq!(get(&big, rr, &[i(rt::VALUE), i(4), i(2)]), [5, 4]);
        assert_eq!(get(&big, rr, &[i(rt::VALUE), i(3), i(3)]), [5, 4, 3]);
        let mut sorted = ints(&big);
        sorted.items.sort_by(compare);
        sorted.ordered = true;
        let r = apply(&mut sorted, rr, &[i(rt::VALUE), i(2), i(3)])
            .unwrap()
            .unwrap();
        assert_eq!(as_ints(&r), [2, 3, 4]);
    }

    #[test]
    fn append_insert_set_and_pad() {
        let mut l = ints(&[1, 2]);
        assert_eq!(
            apply(&mut l, code::APPEND, &[i(3)])
                .unwrap()
                .unwrap()
                .as_int(),
            Some(3)
        );
        apply(&mut l, code::INSERT, &[i(0), i(0)]).unwrap();
        apply(&mut l, code::INSERT, &[i(6), i(9)]).unwrap();
        assert_eq!(
            as_ints(&Value::List(List {
                ordered: false,
                items: l.items[..4].to_vec()
            })),
            [0, 1, 2, 3]
        );
        assert!(matches!(l.items[4], Value::Nil));
        assert_eq!(l.items.len(), 7);
        let bounded = apply(
            &mut l,
            code::INSERT,
            &[i(20), i(1), i(flag::INSERT_BOUNDED)],
        );
        assert_eq!(bounded.unwrap_err().result_code(), 26);
        let dup = apply(&mut l, code::APPEND, &[i(1), i(0), i(flag::ADD_UNIQUE)]);
        assert_eq!(dup.unwrap_err(), OpError::ElementExists);
        let skipped = apply(
            &mut l,
            code::APPEND,
            &[i(1), i(0), i(flag::ADD_UNIQUE | flag::NO_FAIL)],
        );
        assert_eq!(skipped.unwrap().unwrap().as_int(), Some(7));
    }

    /// Aerospike CE 8.1 answers for `trim(index, count)` of `[1, 2, 3, 4]`: the number removed
    /// and what is kept.
    #[test]
    fn increment_of_a_non_number_is_4() {
        for v in [Value::Str(b"hey".to_vec()), Value::List(ints(&[1]))] {
            let mut l = List {
                ordered: false,
                items: vec![v],
            };
            let e = apply(&mut l, code::INCREMENT, &[i(0), i(1)]).unwrap_err();
            assert_eq!(e.result_code(), 4);
        }
    }

    #[test]
    fn trim_clips_like_a_range() {
        let cases: [(i64, i64, i64, &[i64]); 6] = [
            (1, -9, 1, &[2, 3, 4]),
            (-2, -1, 2, &[3, 4]),
            (5, 2, 4, &[]),
            (-9, 2, 4, &[]),
            (-6, 3, 3, &[1]),
            (1, 0, 4, &[]),
        ];
        for (index, count, removed, kept) in cases {
            let mut l = ints(&[1, 2, 3, 4]);
            let r = apply(&mut l, code::TRIM, &[i(index), i(count)]).unwrap();
            assert_eq!(r.unwrap().as_int(), Some(removed), "trim({index}, {count})");
            assert_eq!(as_ints(&Value::List(l)), kept, "trim({index}, {count})");
        }
        let mut empty = ints(&[]);
        let r = apply(&mut empty, code::TRIM, &[i(0), i(1)]).unwrap();
        assert_eq!(r.unwrap().as_int(), Some(0));
    }

    #[test]
    fn ordered_lists_stay_sorted() {
        let mut l = List::default();
        apply(&mut l, code::SET_TYPE, &[i(1)]).unwrap();
        for v in [5, 1, 3] {
            apply(&mut l, code::APPEND, &[i(v)]).unwrap();
        }
        assert_eq!(as_ints(&Value::List(l.clone())), [1, 3, 5]);
        assert!(apply(&mut l, code::INSERT, &[i(0), i(9)]).is_err());
        apply(&mut l, code::INCREMENT, &[i(0), i(10)]).unwrap();
        assert_eq!(as_ints(&Value::List(l)), [3, 5, 11]);
    }

    #[test]
    fn get_and_remove_by_selectors() {
        let mut l = ints(&[7, 3, 9, 3, 1]);
        let r = |l: &mut List, c, a: &[Value]| apply(l, c, a).unwrap().unwrap();
        assert_eq!(
            as_ints(&r(&mut l, code::GET_ALL_BY_VALUE, &[i(rt::INDEX), i(3)])),
            [1, 3]
        );
        assert_eq!(
            as_ints(&r(
                &mut l,
                code::GET_BY_RANK_RANGE,
                &[i(rt::VALUE), i(0), i(3)]
            )),
            // Aerospike CE 8.1.2: a low rank range of an unordered list comes high to low.
            [3, 3, 1]
        );
        assert_eq!(
            r(&mut l, code::GET_BY_RANK, &[i(rt::VALUE), i(-1)]).as_int(),
            Some(9)
        );
        assert_eq!(
            as_ints(&r(
                &mut l,
                code::GET_BY_VALUE_INTERVAL,
                &[i(rt::VALUE), i(3), i(8)]
            )),
            [7, 3, 3]
        );
        assert_eq!(
            as_ints(&r(
                &mut l,
                code::GET_BY_INDEX_RANGE,
                &[i(rt::VALUE | rt::INVERTED), i(1), i(2)]
            )),
            [7, 3, 1]
        );
        assert_eq!(
            r(&mut l, code::GET_BY_INDEX, &[i(rt::RANK), i(0)]).as_int(),
            Some(3)
        );
    }

    #[test]
    fn remove_by_value_removes_every_match() {
        let mut l = ints(&[7, 3, 9, 3, 1]);
        let out = apply(
            &mut l,
            code::GET_ALL_BY_VALUE + code::REMOVE_BY_OFFSET,
            &[i(rt::COUNT), i(3)],
        );
        assert_eq!(out.unwrap().unwrap().as_int(), Some(2));
        assert_eq!(as_ints(&Value::List(l)), [7, 9, 1]);
    }
}
