//! Selecting elements of a list or map by index, rank or value, and shaping what an op returns
//! about them (spec §4.5 "Return types"). Shared by the list and map ops.
//!
//! A selection is a set of positions in the collection's stored order (list order, or key order
//! for maps) plus the order the client wants results in. Must never index out of bounds: every
//! index and rank from a client goes through [`range`] or [`single`].

use std::cmp::Ordering;

use crate::error::{OpError, OpResult};
use crate::value::{compare, equal, List, Map, Value};

/// Return types (the low 16 bits of a return-type argument).
pub mod rt {
    pub const NONE: i64 = 0;
    pub const INDEX: i64 = 1;
    pub const REVERSE_INDEX: i64 = 2;
    pub const RANK: i64 = 3;
    pub const REVERSE_RANK: i64 = 4;
    pub const COUNT: i64 = 5;
    pub const KEY: i64 = 6;
    pub const VALUE: i64 = 7;
    pub const KEY_VALUE: i64 = 8;
    pub const EXISTS: i64 = 13;
    pub const UNORDERED_MAP: i64 = 16;
    pub const ORDERED_MAP: i64 = 17;
    /// OR-ed in: select everything the rest of the arguments do not.
    pub const INVERTED: i64 = 0x10000;
}

#[derive(Debug, Clone, Copy)]
pub struct ReturnType {
    pub kind: i64,
    pub inverted: bool,
}

impl ReturnType {
    pub fn parse(v: &Value) -> OpResult<ReturnType> {
        let raw = v
            .as_int()
            .ok_or(OpError::Parameter("return type is not an integer"))?;
        let kind = raw & !rt::INVERTED;
        // Aerospike CE 8.1 answers 26 for a return type it does not know (42), not 4.
        if !matches!(kind, 0..=8 | 13 | 16 | 17) {
            return Err(OpError::NotApplicable("unknown return type"));
        }
        Ok(ReturnType {
            kind,
            inverted: raw & rt::INVERTED != 0,
        })
    }
}

/// The order rank results (return types 3 and 4) come in. Aerospike CE 8.1.2 lists them by
/// position for index selections, ascending for value and rank selections (inverted or not),
/// and in the order of the asked-for values for an uninverted value list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RankResults {
    ByPosition,
    Ascending,
    /// Positions in the order their ranks are listed.
    InOrder(Vec<usize>),
}

/// Positions chosen by an op, and whether the client asked for a single element.
#[derive(Debug)]
pub struct Selection {
    /// Positions in result order (index order, or rank order for rank selections).
    pub positions: Vec<usize>,
    /// A by-index / by-rank / by-key op: scalar results instead of lists.
    pub single: bool,
    /// Index results (return types 1 and 2) ascending rather than in `positions` order.
    pub indexes_sorted: bool,
    pub ranks: RankResults,
    /// `[first, end)` ranks of an uninverted rank selection, its positions in rank order.
    pub rank_span: Option<(usize, usize)>,
}

impl Selection {
    pub fn many(positions: Vec<usize>) -> Selection {
        Selection {
            positions,
            single: false,
            indexes_sorted: false,
            ranks: RankResults::ByPosition,
            rank_span: None,
        }
    }

    pub fn one(position: Option<usize>) -> Selection {
        Selection {
            positions: position.into_iter().collect(),
            single: true,
            indexes_sorted: false,
            ranks: RankResults::ByPosition,
            rank_span: None,
        }
    }

    /// The same positions, their ranks listed ascending.
    pub fn ranks_ascending(self) -> Selection {
        Selection {
            ranks: RankResults::Ascending,
            ..self
        }
    }

    /// The complement, in index order, when the return type is inverted.
    pub fn apply_inversion(self, n: usize, rt: ReturnType) -> Selection {
        if !rt.inverted {
            return self;
        }
        let mut chosen = vec![false; n];
        for &p in &self.positions {
            chosen[p] = true;
        }
        let ranks = if self.ranks == RankResults::ByPosition {
            RankResults::ByPosition
        } else {
            RankResults::Ascending
        };
        Selection {
            ranks,
            ..Selection::many((0..n).filter(|&p| !chosen[p]).collect())
        }
    }

    /// A map's inversion: as [`Selection::apply_inversion`], except that the complement of a
    /// rank range touching either end is itself one rank range and comes in rank order
    /// (Aerospike CE 8.1.2: ranks 0..2 of five inverted answer ranks 2..5 ascending, while
    /// ranks 1..3 inverted answer ranks 0, 3 and 4 in key order). Lists keep index order.
    pub fn apply_map_inversion(self, values: &[&Value], rt: ReturnType) -> Selection {
        let n = values.len();
        match self.rank_span {
            Some((first, end)) if rt.inverted && (first == 0 || end == n) => {
                let order = rank_order(values);
                let rest = if first == 0 {
                    order[end..].to_vec()
                } else {
                    order[..first].to_vec()
                };
                Selection::many(rest).ranks_ascending()
            }
            _ => self.apply_inversion(n, rt),
        }
    }

    /// An unordered list's uninverted rank range as Aerospike CE 8.1.2 answers it: values in descending
    /// rank when the range lies no further from the low end than from the high end (`[7, 6, 5]`
    /// for ranks 0..3 of `[7, 6, 5, 8, 9, 10]`), ascending otherwise; indexes ascending.
    pub fn list_rank_range_order(mut self, n: usize) -> Selection {
        let Some((first, end)) = self.rank_span else {
            return self;
        };
        debug_assert!(first <= end && end <= n);
        debug_assert_eq!(self.positions.len(), end - first);
        if first <= n - end {
            self.positions.reverse();
        }
        self.indexes_sorted = true;
        self
    }
}

/// Aerospike reads a range's count as an unsigned 64-bit number, so a negative count (as the
/// clients send it) is a count past any collection's end: absent and negative both mean "to
/// the end". Aerospike CE 8.1: `list_get_range(1, -9)` of `[1, 2, 3, 4]` is `[2, 3, 4]`.
fn count_or_rest(count: Option<i64>) -> i64 {
    match count {
        Some(c) if c >= 0 => c,
        _ => i64::MAX,
    }
}

/// Aerospike's range rule: a negative index counts from the end; a range that starts before the
/// first element is clipped (and its count shortened); one that starts past the end is empty.
/// `count` absent (or negative, see [`count_or_rest`]) means "to the end". Returns
/// `[start, end)`.
pub fn range(n: usize, index: i64, count: Option<i64>) -> OpResult<(usize, usize)> {
    let n_i = i64::try_from(n).expect("collection length fits in i64");
    let mut count = count_or_rest(count);
    let mut start = if index < 0 { index + n_i } else { index };
    if start < 0 {
        count = count.saturating_add(start);
        start = 0;
    }
    if start >= n_i || count <= 0 {
        return Ok((n, n));
    }
    let end = start.saturating_add(count).min(n_i);
    Ok((start as usize, end as usize))
}

/// A single index or rank: negative counts from the end; outside the collection is result 26.
pub fn single(n: usize, index: i64) -> OpResult<usize> {
    let n_i = i64::try_from(n).expect("collection length fits in i64");
    let i = if index < 0 { index + n_i } else { index };
    if (0..n_i).contains(&i) {
        Ok(i as usize)
    } else {
        Err(OpError::NotApplicable("index or rank out of bounds"))
    }
}

/// Positions sorted by value (ties in position order): `rank_order[r]` is the element of rank r.
pub fn rank_order(values: &[&Value]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| compare(values[a], values[b]));
    order
}

/// The rank of each position: the inverse of [`rank_order`].
pub fn ranks(order: &[usize]) -> Vec<usize> {
    let mut r = vec![0; order.len()];
    for (rank, &p) in order.iter().enumerate() {
        r[p] = rank;
    }
    r
}

/// Positions whose value lies in `[begin, end)`, in position order. `end` infinite (absent
/// on the wire, or the clients' CDTInfinite) means no end; an explicit nil end is the value
/// nil, the lowest of all, so `[x, nil)` is empty (Aerospike CE 8.1.2).
pub fn value_interval(values: &[&Value], begin: &Value, end: &Value) -> Vec<usize> {
    let unbounded = matches!(end, Value::Inf);
    (0..values.len())
        .filter(|&p| {
            compare(values[p], begin) != Ordering::Less
                && (unbounded || compare(values[p], end) == Ordering::Less)
        })
        .collect()
}

/// Rank-ordered positions starting `rank` places from where `value` would rank, and their
/// `[first, end)` ranks.
pub fn value_rel_rank(
    values: &[&Value],
    value: &Value,
    rank: i64,
    count: Option<i64>,
) -> OpResult<(Vec<usize>, (usize, usize))> {
    let order = rank_order(values);
    let below = values
        .iter()
        .filter(|v| compare(v, value) == Ordering::Less)
        .count();
    let (s, e) = relative(order.len(), below, rank, count)?;
    Ok((order[s..e].to_vec(), (s, e)))
}

/// `[start, end)` of a range `offset` places from `anchor`, clipped like [`range`] but with no
/// counting from the end: a negative start shortens the count.
pub fn relative(
    n: usize,
    anchor: usize,
    offset: i64,
    count: Option<i64>,
) -> OpResult<(usize, usize)> {
    let n_i = i64::try_from(n).expect("collection length fits in i64");
    let mut start = i64::try_from(anchor)
        .expect("anchor fits in i64")
        .saturating_add(offset);
    let mut count = count_or_rest(count);
    if start < 0 {
        count = count.saturating_add(start);
        start = 0;
    }
    if start >= n_i || count <= 0 {
        return Ok((n, n));
    }
    Ok((
        start as usize,
        start.saturating_add(count).min(n_i) as usize,
    ))
}

/// Removes the elements at `positions` (any order, no repeats) in one pass.
pub fn remove_positions<T>(v: &mut Vec<T>, positions: &[usize]) {
    let mut doomed = vec![false; v.len()];
    for &p in positions {
        doomed[p] = true;
    }
    let mut i = 0;
    v.retain(|_| {
        let keep = !doomed[i];
        i += 1;
        keep
    });
}

/// True when a wildcard sits anywhere inside `v` (it makes `compare` a non-order).
pub fn has_wildcard(v: &Value) -> bool {
    match v {
        Value::Wildcard => true,
        Value::List(l) => l.items.iter().any(has_wildcard),
        Value::Map(m) => m
            .entries
            .iter()
            .any(|(k, x)| has_wildcard(k) || has_wildcard(x)),
        _ => false,
    }
}

/// Most element × argument comparisons a linear match may make (wildcard arguments cannot be
/// sorted, so they are matched one by one): keeps one op to well under a second.
pub const LINEAR_MATCH_COMPARES_MAX: usize = 20_000_000;

/// Positions whose value equals one of `wanted`, in position order. Sorts `wanted` and
/// binary-searches it, so a long list against a long argument stays O((n + m) log m).
pub fn matching_any(values: &[&Value], wanted: &[Value]) -> OpResult<Vec<usize>> {
    if wanted.iter().any(has_wildcard) {
        if values.len().saturating_mul(wanted.len()) > LINEAR_MATCH_COMPARES_MAX {
            return Err(OpError::Parameter("wildcard value list too large to match"));
        }
        return Ok((0..values.len())
            .filter(|&p| {
                wanted
                    .iter()
                    .any(|w| compare(values[p], w) == Ordering::Equal)
            })
            .collect());
    }
    let mut sorted: Vec<&Value> = wanted.iter().collect();
    sorted.sort_by(|a, b| compare(a, b));
    Ok((0..values.len())
        .filter(|&p| sorted.binary_search_by(|w| compare(w, values[p])).is_ok())
        .collect())
}

/// The selectors lists and maps share; each maps its own op codes onto these.
#[derive(Debug, Clone, Copy)]
pub enum By {
    Index,
    Rank,
    Value,
    ValueList,
    IndexRange,
    RankRange,
    ValueRelRank,
}

/// Selects among `values` (in stored order) by one of the shared selectors; `a` is the op's
/// arguments, return type first.
pub fn by(by: By, values: &[&Value], a: &[Value]) -> OpResult<Selection> {
    use crate::args::{arg, expect_max, int, list_items, opt_int};
    let n = values.len();
    Ok(match by {
        By::Index => {
            expect_max(a, 2)?;
            Selection::one(Some(single(n, int(a, 1)?)?))
        }
        By::Rank => {
            expect_max(a, 2)?;
            let r = single(n, int(a, 1)?)?;
            Selection::one(Some(rank_order(values)[r]))
        }
        By::Value => {
            expect_max(a, 2)?;
            let v = arg(a, 1)?;
            Selection::many((0..n).filter(|&p| equal(values[p], v)).collect()).ranks_ascending()
        }
        By::ValueList => {
            expect_max(a, 2)?;
            let wanted = list_items(a, 1)?;
            let positions = matching_any(values, wanted)?;
            // Ranks come in the order of the asked-for values.
            let mut by_wanted = positions.clone();
            if !wanted.iter().any(has_wildcard) {
                let mut sorted: Vec<(usize, &Value)> = wanted.iter().enumerate().collect();
                sorted.sort_by(|a, b| compare(a.1, b.1).then(a.0.cmp(&b.0)));
                let first_wanted = |p: usize| {
                    let i = sorted.partition_point(|w| compare(w.1, values[p]) == Ordering::Less);
                    sorted.get(i).map_or(usize::MAX, |w| w.0)
                };
                by_wanted.sort_by_key(|&p| first_wanted(p));
            }
            Selection {
                ranks: RankResults::InOrder(by_wanted),
                ..Selection::many(positions)
            }
        }
        By::IndexRange => {
            expect_max(a, 3)?;
            let (s, e) = range(n, int(a, 1)?, opt_int(a, 2)?)?;
            Selection::many((s..e).collect())
        }
        By::RankRange => {
            expect_max(a, 3)?;
            let order = rank_order(values);
            let (s, e) = range(n, int(a, 1)?, opt_int(a, 2)?)?;
            Selection {
                rank_span: Some((s, e)),
                ..Selection::many(order[s..e].to_vec()).ranks_ascending()
            }
        }
        By::ValueRelRank => {
            expect_max(a, 4)?;
            let (positions, span) = value_rel_rank(values, arg(a, 1)?, int(a, 2)?, opt_int(a, 3)?)?;
            Selection {
                rank_span: Some(span),
                ..Selection::many(positions).ranks_ascending()
            }
        }
    })
}

fn int(i: usize) -> Value {
    Value::Int(i64::try_from(i).expect("position fits in i64"))
}

fn list_of(items: Vec<Value>) -> Value {
    Value::List(List {
        ordered: false,
        items,
    })
}

/// What an op returns about the elements it selected. `keys` is `None` for lists.
pub fn result(
    rt: ReturnType,
    sel: &Selection,
    keys: Option<&[&Value]>,
    values: &[&Value],
) -> OpResult<Option<Value>> {
    let n = values.len();
    let single = sel.single && !rt.inverted;
    let need_ranks = matches!(rt.kind, rt::RANK | rt::REVERSE_RANK);
    let rank_of = if need_ranks {
        ranks(&rank_order(values))
    } else {
        vec![]
    };
    let in_order = |order: &[usize], f: &dyn Fn(usize) -> Value| -> Value {
        if single {
            order.first().map_or(Value::Nil, |&p| f(p))
        } else {
            list_of(order.iter().map(|&p| f(p)).collect())
        }
    };
    let each = |f: &dyn Fn(usize) -> Value| in_order(&sel.positions, f);
    let index_order = || {
        if sel.indexes_sorted {
            let mut sorted = sel.positions.clone();
            sorted.sort_unstable();
            sorted
        } else {
            sel.positions.clone()
        }
    };
    // Ascending means ascending in what is returned: reverse ranks ascend too.
    let rank_order_of_results = |reverse: bool| match &sel.ranks {
        RankResults::ByPosition => sel.positions.clone(),
        RankResults::Ascending => {
            let mut sorted = sel.positions.clone();
            sorted.sort_by_key(|&p| {
                if reverse {
                    n - 1 - rank_of[p]
                } else {
                    rank_of[p]
                }
            });
            sorted
        }
        RankResults::InOrder(order) => order.clone(),
    };
    Ok(Some(match rt.kind {
        rt::NONE => return Ok(None),
        rt::INDEX => in_order(&index_order(), &int),
        rt::REVERSE_INDEX => in_order(&index_order(), &|p| int(n - 1 - p)),
        rt::RANK => in_order(&rank_order_of_results(false), &|p| int(rank_of[p])),
        rt::REVERSE_RANK => in_order(&rank_order_of_results(true), &|p| int(n - 1 - rank_of[p])),
        rt::COUNT => int(sel.positions.len()),
        rt::EXISTS => Value::Bool(!sel.positions.is_empty()),
        rt::VALUE => each(&|p| values[p].clone()),
        rt::KEY => {
            let keys = keys.ok_or(OpError::Parameter("key return type on a list"))?;
            each(&|p| keys[p].clone())
        }
        rt::KEY_VALUE | rt::UNORDERED_MAP | rt::ORDERED_MAP => {
            let keys = keys.ok_or(OpError::Parameter("key-value return type on a list"))?;
            if rt.kind == rt::KEY_VALUE {
                // Aerospike CE 8.1.2 answers key-value as a flat list `[k1, v1, k2, v2, ...]` in
                // selection order (a rank range keeps its rank order), a single key included.
                let flat = sel
                    .positions
                    .iter()
                    .flat_map(|&p| [keys[p].clone(), values[p].clone()])
                    .collect();
                return Ok(Some(list_of(flat)));
            }
            let entries = sel
                .positions
                .iter()
                .map(|&p| (keys[p].clone(), values[p].clone()))
                .collect();
            {
                let order = if rt.kind == rt::ORDERED_MAP { 1 } else { 0 };
                Value::Map(Map::from_entries(order, entries))
            }
        }
        _ => return Err(OpError::Parameter("return type does not apply here")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_return_type_is_26() {
        let e = ReturnType::parse(&Value::Int(42)).unwrap_err();
        assert_eq!(e.result_code(), 26);
    }

    #[test]
    fn ranges_follow_aerospike_rules() {
        assert_eq!(range(5, 1, Some(2)).unwrap(), (1, 3));
        assert_eq!(range(5, -2, None).unwrap(), (3, 5));
        assert_eq!(range(5, -7, Some(3)).unwrap(), (0, 1));
        assert_eq!(range(5, 9, Some(3)).unwrap(), (5, 5));
        assert_eq!(range(5, 3, Some(100)).unwrap(), (3, 5));
        // Aerospike CE 8.1: a negative count runs to the end.
        assert_eq!(range(5, 1, Some(-1)).unwrap(), (1, 5));
        assert_eq!(range(5, -7, Some(-9)).unwrap(), (0, 5));
        assert_eq!(relative(5, 2, -1, Some(-1)).unwrap(), (1, 5));
        assert_eq!(single(3, -1).unwrap(), 2);
        assert!(single(3, 3).is_err());
        assert!(single(3, -4).is_err());
    }

    #[test]
    fn relative_rank_matches_the_documented_examples() {
        // Aerospike's list docs: [0,4,5,9,11,15] by value-relative rank.
        let items: Vec<Value> = [0, 4, 5, 9, 11, 15].map(Value::Int).to_vec();
        let refs: Vec<&Value> = items.iter().collect();
        let pick = |v: i64, r: i64, c: Option<i64>| -> Vec<i64> {
            value_rel_rank(&refs, &Value::Int(v), r, c)
                .map(|(p, _)| p)
                .unwrap()
                .iter()
                .map(|&p| items[p].as_int().unwrap())
                .collect()
        };
        assert_eq!(pick(5, 0, None), [5, 9, 11, 15]);
        assert_eq!(pick(5, 1, None), [9, 11, 15]);
        assert_eq!(pick(5, -1, None), [4, 5, 9, 11, 15]);
        assert_eq!(pick(3, 0, None), [4, 5, 9, 11, 15]);
        assert_eq!(pick(3, 3, None), [11, 15]);
        assert_eq!(pick(3, -3, None), [0, 4, 5, 9, 11, 15]);
        assert_eq!(pick(5, 0, Some(2)), [5, 9]);
        assert_eq!(pick(3, -3, Some(2)), [] as [i64; 0]);
        assert_eq!(pick(3, -3, Some(3)), [0]);
    }

    /// Aerospike CE 8.1.2: `[b, nil)` is empty (nil is the lowest value); only an absent end
    /// (or CDTInfinite) reaches the end.
    #[test]
    fn a_nil_range_end_is_the_value_nil() {
        let items: Vec<Value> = ["b", "d", "f"]
            .iter()
            .map(|s| Value::Str(s.as_bytes().to_vec()))
            .collect();
        let values: Vec<&Value> = items.iter().collect();
        assert!(value_interval(&values, &items[0], &Value::Nil).is_empty());
        assert_eq!(value_interval(&values, &items[0], &Value::Inf), [0, 1, 2]);
        assert_eq!(value_interval(&values, &Value::Nil, &items[1]), [0]);
    }

    /// Aerospike CE 8.1.2 on a map whose values rank 5 < 'ant' < 'dog' < ['bird'] < {x}: an
    /// inverted rank range touching an end answers the rest in rank order, otherwise in key
    /// (position) order.
    #[test]
    fn a_map_inversion_of_an_end_rank_range_keeps_rank_order() {
        // Positions in key order a..e hold ['bird'], {x}, 'dog', 5, 'ant'.
        let items = [
            Value::List(List::default()),
            Value::Map(crate::value::Map::default()),
            Value::Str(b"dog".to_vec()),
            Value::Int(5),
            Value::Str(b"ant".to_vec()),
        ];
        let values: Vec<&Value> = items.iter().collect();
        let inverted = ReturnType {
            kind: rt::VALUE,
            inverted: true,
        };
        let order = rank_order(&values);
        let span = |first: usize, end: usize| Selection {
            rank_span: Some((first, end)),
            ..Selection::many(order[first..end].to_vec()).ranks_ascending()
        };
        // Ranks 4..5 inverted: ranks 0..4 ascending (5, 'ant', 'dog', ['bird']).
        assert_eq!(
            span(4, 5).apply_map_inversion(&values, inverted).positions,
            [3, 4, 2, 0]
        );
        // Ranks 0..2 inverted: ranks 2..5 ascending ('dog', ['bird'], {x}).
        assert_eq!(
            span(0, 2).apply_map_inversion(&values, inverted).positions,
            [2, 0, 1]
        );
        // Ranks 1..3 inverted: ranks 0, 3, 4 in key order (['bird'], {x}, 5).
        assert_eq!(
            span(1, 3).apply_map_inversion(&values, inverted).positions,
            [0, 1, 3]
        );
    }
}
