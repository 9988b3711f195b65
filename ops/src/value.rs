//! Values inside list and map bins, decoded from and encoded to msgpack under Aerospike's
//! conventions (spec §4.4): strings and blobs carry a leading particle-type byte, ordered
//! lists and maps carry a leading `c7 00 <flags>` ext element, `d4 ff 00` / `d4 ff 01` are the
//! wildcard and infinity bounds.
//!
//! Owns the total order Aerospike sorts collection elements by. Must never trust a length or
//! count it reads: every one is checked against the bytes that remain, and nesting is bounded
//! by [`DEPTH_MAX`] so hostile input cannot overflow the stack.

use std::cmp::Ordering;

use rmp::Marker;

use crate::error::{OpError, OpResult};

/// Most levels of lists and maps nested in one value (a top-level list is one level). The
/// official clients (C, Python) cannot unpack a 65th level, so a write that would store one is
/// refused (Aerospike 8.1.2.0 stores it, and then no client can read the record back).
pub const DEPTH_MAX: usize = 64;

/// Particle types of the scalar values that can sit inside a collection (spec §4.3).
pub mod ptype {
    pub const NULL: u8 = 0;
    pub const INTEGER: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const STRING: u8 = 3;
    pub const BLOB: u8 = 4;
    pub const BOOL: u8 = 17;
    pub const HLL: u8 = 18;
    pub const MAP: u8 = 19;
    pub const LIST: u8 = 20;
    pub const GEOJSON: u8 = 23;
}

/// Map order flags as stored in the leading ext element (spec §4.4).
pub mod map_order {
    pub const UNORDERED: u8 = 0;
    pub const KEY_ORDERED: u8 = 1;
    pub const KEY_VALUE_ORDERED: u8 = 3;
}

/// The ext flag of an ordered list.
pub const LIST_ORDERED_FLAG: u8 = 1;

#[derive(Debug, Clone)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// UTF-8 (not checked: Aerospike stores the bytes it is given).
    Str(Vec<u8>),
    /// A blob with its particle type: 4 (blob), 18 (HLL), 23 (geojson) or a language blob (7–12).
    Bytes(u8, Vec<u8>),
    List(List),
    Map(Map),
    /// Compares equal to anything: a range or match argument only, never stored.
    Wildcard,
    /// Greater than anything: a range bound only, never stored.
    Inf,
}

#[derive(Debug, Clone, Default)]
pub struct List {
    /// An ordered list keeps `items` sorted at all times.
    pub ordered: bool,
    pub items: Vec<Value>,
}

/// A map, its entries always kept sorted by key and unique: index operations address entries in
/// key order whatever the map's declared order, and a sorted vector makes that free.
#[derive(Debug, Clone, Default)]
pub struct Map {
    /// 0 unordered, 1 key-ordered, 3 key-value-ordered: only what is written back to clients.
    pub order: u8,
    pub entries: Vec<(Value, Value)>,
}

impl Map {
    /// Builds a map from entries in any order; a repeated key keeps its last value.
    pub fn from_entries(order: u8, mut entries: Vec<(Value, Value)>) -> Map {
        // Stable sort keeps insertion order among equal keys, so the last one is the one kept.
        entries.sort_by(|a, b| compare(&a.0, &b.0));
        let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        for e in entries {
            match out.last_mut() {
                Some(last) if compare(&last.0, &e.0) == Ordering::Equal => *last = e,
                _ => out.push(e),
            }
        }
        Map {
            order,
            entries: out,
        }
    }

    /// `Ok(position)` of `key`, or `Err(position it would take)`.
    pub fn find(&self, key: &Value) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| compare(&e.0, key))
    }
}

impl Value {
    /// Aerospike's type order: nil < bool < int < string < list < map < blob < float < geojson,
    /// with infinity above everything.
    fn type_rank(&self) -> u8 {
        match self {
            Value::Nil => 1,
            Value::Bool(false) => 2,
            Value::Bool(true) => 3,
            Value::Int(_) => 4,
            Value::Str(_) => 5,
            Value::List(_) => 6,
            Value::Map(_) => 7,
            Value::Bytes(ptype::GEOJSON, _) => 10,
            Value::Bytes(..) => 8,
            Value::Float(_) => 9,
            Value::Wildcard => 11,
            Value::Inf => 12,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The particle type and bytes of this value as a bin or a reply op (spec §4.3).
    pub fn to_particle(&self) -> (u8, Vec<u8>) {
        match self {
            Value::Nil => (ptype::NULL, vec![]),
            Value::Bool(b) => (ptype::BOOL, vec![u8::from(*b)]),
            Value::Int(i) => (ptype::INTEGER, i.to_be_bytes().to_vec()),
            Value::Float(f) => (ptype::FLOAT, f.to_be_bytes().to_vec()),
            Value::Str(s) => (ptype::STRING, s.clone()),
            Value::Bytes(t, b) => (*t, b.clone()),
            Value::List(_) => (ptype::LIST, self.encode()),
            Value::Map(_) => (ptype::MAP, self.encode()),
            // Never results of an op; encode them as msgpack so nothing is lost.
            Value::Wildcard | Value::Inf => (ptype::BLOB, self.encode()),
        }
    }

    /// The value of a bin, for ops that take a bin as a collection element or operand.
    pub fn from_particle(particle_type: u8, bytes: &[u8]) -> OpResult<Value> {
        Ok(match particle_type {
            ptype::NULL => Value::Nil,
            ptype::INTEGER => Value::Int(i64::from_be_bytes(eight(bytes)?)),
            ptype::FLOAT => Value::Float(f64::from_be_bytes(eight(bytes)?)),
            ptype::STRING => Value::Str(bytes.to_vec()),
            ptype::BOOL => Value::Bool(bytes.first().is_some_and(|b| *b != 0)),
            ptype::LIST | ptype::MAP => decode(bytes)?,
            other => Value::Bytes(other, bytes.to_vec()),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        const VEC_WRITE: &str = "writing msgpack to a Vec cannot fail";
        match self {
            Value::Nil => out.push(0xc0),
            Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Value::Int(i) => {
                rmp::encode::write_sint(out, *i).expect(VEC_WRITE);
            }
            Value::Float(f) => rmp::encode::write_f64(out, *f).expect(VEC_WRITE),
            Value::Str(s) => encode_bytes(out, ptype::STRING, s),
            Value::Bytes(t, b) => encode_bytes(out, *t, b),
            Value::List(l) => {
                let n = l.items.len() + usize::from(l.ordered);
                rmp::encode::write_array_len(out, len_u32(n)).expect(VEC_WRITE);
                if l.ordered {
                    out.extend_from_slice(&[0xc7, 0x00, LIST_ORDERED_FLAG]);
                }
                for v in &l.items {
                    v.encode_into(out);
                }
            }
            Value::Map(m) => {
                let n = m.entries.len() + usize::from(m.order != 0);
                rmp::encode::write_map_len(out, len_u32(n)).expect(VEC_WRITE);
                if m.order != 0 {
                    out.extend_from_slice(&[0xc7, 0x00, m.order, 0xc0]);
                }
                for (k, v) in &m.entries {
                    k.encode_into(out);
                    v.encode_into(out);
                }
            }
            Value::Wildcard => out.extend_from_slice(&[0xd4, 0xff, 0x00]),
            Value::Inf => out.extend_from_slice(&[0xd4, 0xff, 0x01]),
        }
    }
}

fn eight(bytes: &[u8]) -> OpResult<[u8; 8]> {
    bytes
        .try_into()
        .map_err(|_| OpError::Parameter("a number bin is not 8 bytes"))
}

fn len_u32(n: usize) -> u32 {
    // Values come from messages bounded far below 4 GiB.
    u32::try_from(n).expect("collection length fits in u32")
}

fn encode_bytes(out: &mut Vec<u8>, particle_type: u8, b: &[u8]) {
    rmp::encode::write_str_len(out, len_u32(b.len() + 1)).expect("writing to a Vec");
    out.push(particle_type);
    out.extend_from_slice(b);
}

/// Aerospike's total order over values (wildcard aside, which equals anything).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    if matches!(a, Value::Wildcard) || matches!(b, Value::Wildcard) {
        return Ordering::Equal;
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bytes(tx, x), Value::Bytes(ty, y)) => x.cmp(y).then(tx.cmp(ty)),
        (Value::List(x), Value::List(y)) => {
            for (p, q) in x.items.iter().zip(&y.items) {
                // As Aerospike: a wildcard element matches the rest of the other list, however
                // long (`[1, *]` matches `[1, "d", "e"]`).
                if matches!(p, Value::Wildcard) || matches!(q, Value::Wildcard) {
                    return Ordering::Equal;
                }
                let o = compare(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.items.len().cmp(&y.items.len())
        }
        (Value::Map(x), Value::Map(y)) => {
            // Size first, then entries in key order (both are kept sorted by key).
            x.entries.len().cmp(&y.entries.len()).then_with(|| {
                for ((kx, vx), (ky, vy)) in x.entries.iter().zip(&y.entries) {
                    let o = compare(kx, ky).then_with(|| compare(vx, vy));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            })
        }
        _ => a.type_rank().cmp(&b.type_rank()),
    }
}

pub fn equal(a: &Value, b: &Value) -> bool {
    compare(a, b) == Ordering::Equal
}

/// Decodes exactly one value that fills `bytes`.
pub fn decode(bytes: &[u8]) -> OpResult<Value> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(OpError::Parameter("trailing bytes after a msgpack value"));
    }
    Ok(v)
}

/// Checks that `bytes` are exactly one msgpack value whose lists and maps nest at most
/// [`DEPTH_MAX`] levels, without decoding it: a write checks every list and map bin it stores.
/// Walks the bytes once with no recursion and no allocation beyond [`DEPTH_MAX`] counters.
pub fn check_nesting(bytes: &[u8]) -> OpResult<()> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let be_len = |b: &[u8]| b.iter().fold(0usize, |n, &x| (n << 8) | usize::from(x));
    // Elements still to read in each enclosing list or map, outermost first.
    let mut open: Vec<usize> = Vec::with_capacity(DEPTH_MAX);
    // Elements still to read at the current level: the one top-level value.
    let mut left = 1usize;
    loop {
        if left == 0 {
            match open.pop() {
                Some(n) => {
                    left = n;
                    continue;
                }
                None => break,
            }
        }
        left -= 1;
        let marker = Marker::from_u8(r.take(1)?[0]);
        let (skip, elements) = match marker {
            Marker::FixArray(n) => (0, Some(usize::from(n))),
            Marker::Array16 => (0, Some(be_len(r.take(2)?))),
            Marker::Array32 => (0, Some(be_len(r.take(4)?))),
            Marker::FixMap(n) => (0, Some(2 * usize::from(n))),
            Marker::Map16 => (0, Some(2 * be_len(r.take(2)?))),
            Marker::Map32 => (0, Some(2 * be_len(r.take(4)?))),
            Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => {
                (0, None)
            }
            Marker::U8 | Marker::I8 => (1, None),
            Marker::U16 | Marker::I16 => (2, None),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, None),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, None),
            Marker::FixStr(n) => (usize::from(n), None),
            Marker::Str8 | Marker::Bin8 => (be_len(r.take(1)?), None),
            Marker::Str16 | Marker::Bin16 => (be_len(r.take(2)?), None),
            Marker::Str32 | Marker::Bin32 => (be_len(r.take(4)?), None),
            // Ext: a type byte, then the data.
            Marker::FixExt1 => (2, None),
            Marker::FixExt2 => (3, None),
            Marker::FixExt4 => (5, None),
            Marker::FixExt8 => (9, None),
            Marker::FixExt16 => (17, None),
            Marker::Ext8 => (be_len(r.take(1)?) + 1, None),
            Marker::Ext16 => (be_len(r.take(2)?) + 1, None),
            Marker::Ext32 => (be_len(r.take(4)?) + 1, None),
            Marker::Reserved => return Err(OpError::Parameter("reserved msgpack byte 0xc1")),
        };
        r.take(skip)?;
        if let Some(n) = elements {
            if open.len() == DEPTH_MAX {
                return Err(OpError::Parameter("msgpack value nested too deeply"));
            }
            // Each element takes at least one byte: a count beyond that is a lie.
            if n > r.remaining() {
                return Err(OpError::Parameter("msgpack array count exceeds its bytes"));
            }
            open.push(left);
            left = n;
        }
    }
    debug_assert!(open.is_empty());
    if !r.at_end() {
        return Err(OpError::Parameter("trailing bytes after a msgpack value"));
    }
    Ok(())
}

/// A cursor over msgpack bytes; also used by the expression parser, which needs to read raw
/// strings (bin and variable names) that carry no particle-type byte.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub(crate) fn peek(&self) -> OpResult<u8> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(OpError::Parameter("truncated msgpack value"))
    }

    /// Reads an array header if one is next; `None` (nothing consumed) otherwise.
    pub(crate) fn array_len(&mut self) -> OpResult<Option<usize>> {
        let n = match Marker::from_u8(self.peek()?) {
            Marker::FixArray(n) => {
                self.pos += 1;
                usize::from(n)
            }
            Marker::Array16 => {
                self.pos += 1;
                usize::from(u16::from_be_bytes(self.be()?))
            }
            Marker::Array32 => {
                self.pos += 1;
                u32::from_be_bytes(self.be()?) as usize
            }
            _ => return Ok(None),
        };
        if n > self.remaining() {
            return Err(OpError::Parameter("msgpack array count exceeds its bytes"));
        }
        Ok(Some(n))
    }

    /// A msgpack string read as raw bytes, with no particle-type byte.
    pub(crate) fn raw_str(&mut self) -> OpResult<&'a [u8]> {
        let n = match Marker::from_u8(self.byte()?) {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 => usize::from(self.byte()?),
            Marker::Str16 | Marker::Bin16 => usize::from(u16::from_be_bytes(self.be()?)),
            Marker::Str32 | Marker::Bin32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Err(OpError::Parameter("expected a name string")),
        };
        self.take(n)
    }

    pub(crate) fn read_value(&mut self, depth: usize) -> OpResult<Value> {
        self.value(depth)
    }

    fn take(&mut self, n: usize) -> OpResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(OpError::Parameter("truncated msgpack value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> OpResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> OpResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when the next bytes are the `c7 00 <flags>` order element of a list or map.
    fn at_order_ext(&self) -> bool {
        self.buf.get(self.pos) == Some(&0xc7) && self.buf.get(self.pos + 1) == Some(&0)
    }

    fn value(&mut self, depth: usize) -> OpResult<Value> {
        if depth > DEPTH_MAX {
            return Err(OpError::Parameter("msgpack value nested too deeply"));
        }
        let m = Marker::from_u8(self.byte()?);
        Ok(match m {
            Marker::Null => Value::Nil,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::FixPos(n) => Value::Int(i64::from(n)),
            Marker::FixNeg(n) => Value::Int(i64::from(n)),
            Marker::U8 => Value::Int(i64::from(self.byte()?)),
            Marker::U16 => Value::Int(i64::from(u16::from_be_bytes(self.be()?))),
            Marker::U32 => Value::Int(i64::from(u32::from_be_bytes(self.be()?))),
            // Aerospike integers are signed 64-bit; larger unsigned values wrap as they do there.
            Marker::U64 => Value::Int(u64::from_be_bytes(self.be()?) as i64),
            Marker::I8 => Value::Int(i64::from(self.byte()? as i8)),
            Marker::I16 => Value::Int(i64::from(i16::from_be_bytes(self.be()?))),
            Marker::I32 => Value::Int(i64::from(i32::from_be_bytes(self.be()?))),
            Marker::I64 => Value::Int(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Value::Float(f64::from(f32::from_be_bytes(self.be()?))),
            Marker::F64 => Value::Float(f64::from_be_bytes(self.be()?)),
            Marker::FixStr(n) => self.bytes(usize::from(n))?,
            Marker::Str8 | Marker::Bin8 => {
                let n = self.byte()?;
                self.bytes(usize::from(n))?
            }
            Marker::Str16 | Marker::Bin16 => {
                let n = u16::from_be_bytes(self.be()?);
                self.bytes(usize::from(n))?
            }
            Marker::Str32 | Marker::Bin32 => {
                let n = u32::from_be_bytes(self.be()?);
                self.bytes(n as usize)?
            }
            Marker::FixArray(n) => self.list(usize::from(n), depth)?,
            Marker::Array16 => {
                let n = u16::from_be_bytes(self.be()?);
                self.list(usize::from(n), depth)?
            }
            Marker::Array32 => {
                let n = u32::from_be_bytes(self.be()?);
                self.list(n as usize, depth)?
            }
            Marker::FixMap(n) => self.map(usize::from(n), depth)?,
            Marker::Map16 => {
                let n = u16::from_be_bytes(self.be()?);
                self.map(usize::from(n), depth)?
            }
            Marker::Map32 => {
                let n = u32::from_be_bytes(self.be()?);
                self.map(n as usize, depth)?
            }
            Marker::FixExt1 => {
                let [t, d] = self.be::<2>()?;
                match (t, d) {
                    (0xff, 0) => Value::Wildcard,
                    (0xff, 1) => Value::Inf,
                    _ => return Err(OpError::Parameter("unknown msgpack ext value")),
                }
            }
            Marker::Reserved => return Err(OpError::Parameter("reserved msgpack byte 0xc1")),
            _ => return Err(OpError::Parameter("msgpack ext value out of place")),
        })
    }

    /// A str/bin payload: the first byte is the Aerospike particle type.
    fn bytes(&mut self, n: usize) -> OpResult<Value> {
        let b = self.take(n)?;
        let (&t, rest) = b.split_first().ok_or(OpError::Parameter(
            "msgpack string without a particle type byte",
        ))?;
        Ok(match t {
            ptype::STRING => Value::Str(rest.to_vec()),
            ptype::BLOB | 7..=12 | ptype::HLL | ptype::GEOJSON => Value::Bytes(t, rest.to_vec()),
            _ => {
                return Err(OpError::Parameter(
                    "unknown particle type in a msgpack string",
                ))
            }
        })
    }

    /// Reads the order ext element when present, returning its flags and whether one was read.
    fn order_ext(&mut self, n: usize) -> OpResult<Option<u8>> {
        if n > 0 && self.at_order_ext() {
            let [_, _, flags] = self.be::<3>()?;
            return Ok(Some(flags));
        }
        Ok(None)
    }

    fn list(&mut self, n: usize, depth: usize) -> OpResult<Value> {
        // `depth` counts from 0: this list is level `depth + 1`.
        if depth >= DEPTH_MAX {
            return Err(OpError::Parameter("msgpack value nested too deeply"));
        }
        let flags = self.order_ext(n)?;
        let n = n - usize::from(flags.is_some());
        // Each element takes at least one byte: a count beyond that is a lie.
        if n > self.remaining() {
            return Err(OpError::Parameter("msgpack array count exceeds its bytes"));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        let ordered = flags.is_some_and(|f| f & LIST_ORDERED_FLAG != 0);
        if ordered {
            items.sort_by(compare);
        }
        Ok(Value::List(List { ordered, items }))
    }

    fn map(&mut self, n: usize, depth: usize) -> OpResult<Value> {
        if depth >= DEPTH_MAX {
            return Err(OpError::Parameter("msgpack value nested too deeply"));
        }
        let flags = self.order_ext(n)?;
        let mut n = n;
        if flags.is_some() {
            // The order element is a key; its value is nil.
            self.value(depth + 1)?;
            n -= 1;
        }
        if n > self.remaining() / 2 {
            return Err(OpError::Parameter("msgpack map count exceeds its bytes"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            if matches!(k, Value::Wildcard | Value::Inf) {
                return Err(OpError::Parameter("wildcard or infinity as a map key"));
            }
            entries.push((k, v));
        }
        let order = flags.map_or(map_order::UNORDERED, |f| f & map_order::KEY_VALUE_ORDERED);
        Ok(Value::Map(Map::from_entries(order, entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.as_bytes().to_vec())
    }

    #[test]
    fn captured_client_encodings_round_trip() {
        // [1, 'x'] and {'k': 1} as the Python client sends them (spec §4.3).
        let l = decode(&[0x92, 0x01, 0xa2, 0x03, 0x78]).unwrap();
        assert!(equal(
            &l,
            &Value::List(List {
                ordered: false,
                items: vec![Value::Int(1), s("x")]
            })
        ));
        assert_eq!(l.encode(), [0x92, 0x01, 0xa2, 0x03, 0x78]);
        let m = decode(&[0x81, 0xa2, 0x03, 0x6b, 0x01]).unwrap();
        assert_eq!(m.encode(), [0x81, 0xa2, 0x03, 0x6b, 0x01]);
        // KeyOrderedDict({'b': 2, 'a': 1}).
        let ko = [
            0x83, 0xc7, 0x00, 0x01, 0xc0, 0xa2, 0x03, 0x61, 0x01, 0xa2, 0x03, 0x62, 0x02,
        ];
        let v = decode(&ko).unwrap();
        match &v {
            Value::Map(m) => assert_eq!(m.order, map_order::KEY_ORDERED),
            other => panic!("not a map: {other:?}"),
        }
        assert_eq!(v.encode(), ko);
    }

    #[test]
    fn integers_use_the_smallest_form() {
        for (i, want) in [
            (5i64, vec![0x05]),
            (-1, vec![0xff]),
            (200, vec![0xcc, 200]),
            (-200, vec![0xd1, 0xff, 0x38]),
            (1 << 40, vec![0xcf, 0, 0, 1, 0, 0, 0, 0, 0]),
        ] {
            assert_eq!(Value::Int(i).encode(), want, "{i}");
            assert!(equal(&decode(&want).unwrap(), &Value::Int(i)));
        }
    }

    #[test]
    fn type_order_is_aerospikes() {
        let ordered = [
            Value::Nil,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-5),
            Value::Int(3),
            s("a"),
            s("ab"),
            s("b"),
            Value::List(List::default()),
            Value::Map(Map::default()),
            Value::Bytes(ptype::BLOB, vec![0]),
            Value::Float(-1.0),
            Value::Float(2.5),
            Value::Bytes(ptype::GEOJSON, b"{}".to_vec()),
            Value::Inf,
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{w:?}");
        }
        assert!(equal(&Value::Wildcard, &s("anything")));
        // Aerospike CE 8.1.2: a wildcard ends a list comparison, whatever follows on either side.
        let list = |items: Vec<Value>| {
            Value::List(List {
                ordered: false,
                items,
            })
        };
        let long = list(vec![Value::Int(1), s("d"), s("e")]);
        assert!(equal(&list(vec![Value::Int(1), Value::Wildcard]), &long));
        assert!(equal(&list(vec![Value::Wildcard, s("b")]), &long));
        let tail = list(vec![Value::Int(1), Value::Wildcard, s("x")]);
        assert!(equal(&tail, &list(vec![Value::Int(1), s("b")])));
        assert!(!equal(
            &list(vec![Value::Int(1), s("d"), Value::Wildcard]),
            &list(vec![Value::Int(1), s("b")])
        ));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for bad in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..], // array claiming 4 billion items
            &[0xdf, 0xff, 0xff, 0xff, 0xff],     // map likewise
            &[0xdb, 0xff, 0xff, 0xff, 0xff, 3],  // string longer than its bytes
            &[0xa0],                             // string without a particle type
            &[0xc1],
            &[0x92, 0x01],
            &[0x01, 0x02],
        ] {
            assert!(decode(bad).is_err(), "{bad:x?}");
        }
        let deep = vec![0x91u8; DEPTH_MAX + 2];
        assert!(decode(&deep).is_err());
        for bad in [
            &[0x92u8, 0x01][..],
            &[0x01, 0x02],
            &[0xc1],
            &[0xa5, 3, 1],
            &[0xdc],
        ] {
            assert!(check_nesting(bad).is_err(), "{bad:x?}");
        }
    }

    /// `levels` lists (or single-entry maps) nested, the innermost holding `inner`.
    fn nested(levels: usize, map: bool, inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..levels {
            v.extend_from_slice(if map {
                &[0x81, 0xa2, 0x03, b'k'][..]
            } else {
                &[0x91]
            });
        }
        v.extend_from_slice(inner);
        v
    }

    #[test]
    fn nesting_is_bounded_the_same_for_decode_and_the_write_check() {
        for map in [false, true] {
            for inner in [&[0x90u8][..], &[0x80], &[0x01], &[0xa2, 0x03, b'x']] {
                // `inner` adds a level when it is a list or map.
                let extra = usize::from(matches!(inner[0], 0x90 | 0x80));
                let ok = nested(DEPTH_MAX - extra, map, inner);
                assert!(decode(&ok).is_ok(), "map {map} inner {inner:x?}");
                assert!(check_nesting(&ok).is_ok(), "map {map} inner {inner:x?}");
                let deep = nested(DEPTH_MAX + 1 - extra, map, inner);
                assert!(decode(&deep).is_err(), "map {map} inner {inner:x?}");
                assert!(check_nesting(&deep).is_err(), "map {map} inner {inner:x?}");
            }
        }
        // Deep but hostile: a million levels are refused at the 65th, without recursion.
        assert!(check_nesting(&vec![0x91; 1 << 20]).is_err());
    }

    #[test]
    fn the_write_check_accepts_every_value_the_codec_writes() {
        let ordered_map = [
            0x83, 0xc7, 0x00, 0x01, 0xc0, 0xa2, 0x03, 0x61, 0x01, 0xa2, 0x03, 0x62, 0x02,
        ];
        let all = Value::List(List {
            ordered: false,
            items: vec![
                Value::Nil,
                Value::Bool(true),
                Value::Int(-200),
                Value::Int(1 << 40),
                Value::Float(2.5),
                s("a string"),
                Value::Bytes(ptype::BLOB, vec![0; 300]),
                Value::Bytes(ptype::GEOJSON, b"{}".to_vec()),
                Value::List(List {
                    ordered: true,
                    items: vec![Value::Int(1), Value::Int(2)],
                }),
                decode(&ordered_map).unwrap(),
                Value::List(List {
                    ordered: false,
                    items: vec![s("x"); 70_000],
                }),
            ],
        });
        let bytes = all.encode();
        check_nesting(&bytes).unwrap();
        // Ext, bin and 32-bit forms the codec does not write but clients may.
        for other in [
            &[0xd5, 0x01, 0xaa, 0xbb][..],
            &[0xc7, 0x02, 0x05, 0xaa, 0xbb],
            &[0xc4, 0x02, 0x04, 0xaa],
            &[0xdd, 0, 0, 0, 1, 0x01],
            &[0xdf, 0, 0, 0, 1, 0x01, 0x02],
            &[0xca, 0, 0, 0, 0],
        ] {
            check_nesting(other).unwrap();
        }
        assert!(check_nesting(&[bytes.as_slice(), &[0x01]].concat()).is_err());
    }
}
