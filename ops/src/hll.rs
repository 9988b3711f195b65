//! HyperLogLog ops on HLL bins (spec §4.6, op types 15 and 16): init, add, union, refresh,
//! fold, and count / union / union count / intersect count / similarity / describe /
//! may-contain reads, with the HLL write flags.
//!
//! Layout of an HLL bin (particle type 18), the same header shape as Aerospike's:
//! `flags u8, index_bits u8, minhash_bits u8, cached_count u64 LE`, then `2^index_bits`
//! registers packed most significant bit first, each 6 bits of HLL rank followed by
//! `minhash_bits` bits of min-hash. Elements are placed and counted as Aerospike does
//! (MurmurHash3 x64-128 over their msgpack bytes, Ertl's estimator; see [`Hll::place`]), so
//! the registers, and the counts, match Aerospike's for the same elements. Estimates of
//! intersections and similarity use inclusion–exclusion over unions, not the min-hash bits.

use crate::args::{int, list_items, opt_int};
use crate::error::{OpError, OpResult};
use crate::value::{ptype, List, Value};

mod code {
    pub const INIT: u8 = 0;
    pub const ADD: u8 = 1;
    pub const UNION: u8 = 2;
    pub const REFRESH_COUNT: u8 = 3;
    pub const FOLD: u8 = 4;
    pub const COUNT: u8 = 50;
    pub const GET_UNION: u8 = 51;
    pub const UNION_COUNT: u8 = 52;
    pub const INTERSECT_COUNT: u8 = 53;
    pub const SIMILARITY: u8 = 54;
    pub const DESCRIBE: u8 = 55;
    pub const MAY_CONTAIN: u8 = 56;
}

mod flag {
    pub const CREATE_ONLY: i64 = 1;
    pub const UPDATE_ONLY: i64 = 2;
    pub const NO_FAIL: i64 = 4;
    pub const ALLOW_FOLD: i64 = 8;
}

const HEADER_BYTES: usize = 11;
const RANK_BITS: usize = 6;
/// Largest rank a 6-bit register holds.
const RANK_MAX: u32 = 63;
pub const INDEX_BITS_MIN: u8 = 4;
pub const INDEX_BITS_MAX: u8 = 16;
pub const MINHASH_BITS_MIN: u8 = 4;
pub const MINHASH_BITS_MAX: u8 = 51;
/// Most HLLs one op may combine.
pub const HLLS_PER_OP_MAX: usize = 12;
/// Most HLLs (the bin's included) an intersect count or similarity may combine: the
/// inclusion–exclusion walks 2^n subsets, each a union of up to 65,536 registers per HLL, so
/// the bound keeps one op to milliseconds. Aerospike CE 8.1.2 estimates HLLs with min-hash
/// bits otherwise and takes up to 13 of them; Apogee stops at this many.
pub const INTERSECT_HLLS_MAX: usize = 5;
/// Most HLLs without min-hash bits an intersect count or similarity combines: Aerospike CE
/// 8.1.2 takes the bin and two others and answers PARAMETER_ERROR beyond.
pub const INTERSECT_PLAIN_HLLS_MAX: usize = 3;

/// A decoded HLL: registers unpacked to (rank, minhash).
#[derive(Debug, Clone, PartialEq)]
pub struct Hll {
    pub index_bits: u8,
    pub minhash_bits: u8,
    pub ranks: Vec<u8>,
    pub minhashes: Vec<u64>,
    /// The header's cached count, 0 for none: as Aerospike, only a refresh sets it and a
    /// changed register clears it.
    pub cached_count: u64,
}

fn check_bits(index_bits: i64, minhash_bits: i64) -> OpResult<(u8, u8)> {
    let ib = u8::try_from(index_bits)
        .ok()
        .filter(|b| (INDEX_BITS_MIN..=INDEX_BITS_MAX).contains(b))
        .ok_or(OpError::Parameter("HLL index bits must be 4 to 16"))?;
    let mb = u8::try_from(minhash_bits)
        .ok()
        .filter(|&b| b == 0 || (MINHASH_BITS_MIN..=MINHASH_BITS_MAX).contains(&b))
        .ok_or(OpError::Parameter("HLL min-hash bits must be 0 or 4 to 51"))?;
    if u32::from(ib) + u32::from(mb) > 64 {
        return Err(OpError::Parameter("HLL index bits + min-hash bits over 64"));
    }
    Ok((ib, mb))
}

impl Hll {
    pub fn new(index_bits: u8, minhash_bits: u8) -> Hll {
        let n = 1usize << index_bits;
        Hll {
            index_bits,
            minhash_bits,
            ranks: vec![0; n],
            minhashes: vec![0; n],
            cached_count: 0,
        }
    }

    pub fn decode(b: &[u8]) -> OpResult<Hll> {
        let bad = OpError::Parameter("malformed HLL value");
        if b.len() < HEADER_BYTES {
            return Err(bad);
        }
        let (ib, mb) = check_bits(i64::from(b[1]), i64::from(b[2])).map_err(|_| bad.clone())?;
        let n = 1usize << ib;
        let width = RANK_BITS + usize::from(mb);
        if b.len() != HEADER_BYTES + (n * width).div_ceil(8) {
            return Err(bad);
        }
        let regs = &b[HEADER_BYTES..];
        let mut h = Hll::new(ib, mb);
        // Aerospike keeps the cached count in host (little-endian) order.
        h.cached_count = u64::from_le_bytes(b[3..11].try_into().expect("header is 11 bytes"));
        for i in 0..n {
            let v = read_bits(regs, i * width, width);
            h.ranks[i] = (v >> mb) as u8;
            h.minhashes[i] = v & ((1u64 << mb) - 1);
        }
        Ok(h)
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.ranks.len();
        let width = RANK_BITS + usize::from(self.minhash_bits);
        let mut out = vec![0u8; HEADER_BYTES + (n * width).div_ceil(8)];
        out[1] = self.index_bits;
        out[2] = self.minhash_bits;
        out[3..11].copy_from_slice(&self.cached_count.to_le_bytes());
        for i in 0..n {
            let v = (u64::from(self.ranks[i]) << self.minhash_bits) | self.minhashes[i];
            write_bits(&mut out[HEADER_BYTES..], i * width, width, v);
        }
        out
    }

    /// Adds one element; true when a register changed. As Aerospike, a register keeps the
    /// larger of its packed `rank << minhash_bits | minhash` values.
    fn add(&mut self, element: &Value) -> bool {
        let (index, rank, minhash) = self.place(element);
        let mb = self.minhash_bits;
        let packed = |r: u8, m: u64| (u64::from(r) << mb) | m;
        let changed = packed(rank, minhash) > packed(self.ranks[index], self.minhashes[index]);
        if changed {
            self.ranks[index] = rank;
            self.minhashes[index] = minhash;
            self.cached_count = 0;
        }
        changed
    }

    /// The register an element lands in, its rank there and its min-hash bits, as Aerospike
    /// places them: MurmurHash3 x64-128 (seed 0) over the element's msgpack bytes; the register
    /// is the low `index_bits` of the first half, the min-hash the next `minhash_bits`, the rank
    /// one more than the trailing zeros of the second half.
    fn place(&self, element: &Value) -> (usize, u8, u64) {
        let (h1, h2) = murmur3_x64_128(&element.encode());
        let p = u32::from(self.index_bits);
        let index = (h1 & ((1u64 << p) - 1)) as usize;
        let mb = u32::from(self.minhash_bits);
        let minhash = if mb == 0 {
            0
        } else {
            (h1 >> p) & ((1u64 << mb) - 1)
        };
        // A rank is 6 bits; an all-zero second half (2^-64) is held at the largest.
        let rank = (h2.trailing_zeros() + 1).min(RANK_MAX) as u8;
        (index, rank, minhash)
    }

    /// Ertl's improved estimator ("New cardinality estimation algorithms for HyperLogLog
    /// sketches", 2017, algorithm 6) over ranks 0..=64, with the classic alpha, as Aerospike
    /// computes it: the same registers give the same count on both servers.
    pub fn count(&self) -> u64 {
        if self.cached_count != 0 {
            return self.cached_count;
        }
        const Q: usize = 64;
        let m = self.ranks.len() as f64;
        let mut c = [0u32; Q + 1];
        for &r in &self.ranks {
            c[usize::from(r).min(Q)] += 1;
        }
        let mut z = m * tau(f64::from(c[Q]) / m);
        for k in (1..=Q).rev() {
            z = 0.5 * (z + f64::from(c[k]));
        }
        z += m * sigma(f64::from(c[0]) / m);
        let alpha = match self.index_bits {
            4 => 0.673,
            5 => 0.697,
            6 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        (alpha * m * m / z).round() as u64
    }

    /// Folds to fewer index bits: register `i` goes to `i` masked to the new index bits, each
    /// keeping the largest value (the index is the hash's low bits, so this is exact).
    fn fold(&self, to: u8) -> OpResult<Hll> {
        if to > self.index_bits {
            return Err(OpError::Parameter("HLL fold to more index bits"));
        }
        if to < self.index_bits && self.minhash_bits != 0 {
            return Err(OpError::NotApplicable(
                "HLL with min-hash bits cannot be folded",
            ));
        }
        if to == self.index_bits {
            return Ok(self.clone());
        }
        let mut out = Hll::new(to, self.minhash_bits);
        let mask = (1usize << to) - 1;
        for i in 0..self.ranks.len() {
            out.take_larger(i & mask, self.ranks[i], self.minhashes[i]);
        }
        Ok(out)
    }

    /// Register-wise union; both must have the same shape.
    fn merge(&mut self, other: &Hll) {
        debug_assert_eq!(self.index_bits, other.index_bits);
        for i in 0..self.ranks.len() {
            self.take_larger(i, other.ranks[i], other.minhashes[i]);
        }
    }

    fn take_larger(&mut self, i: usize, rank: u8, minhash: u64) {
        let mb = self.minhash_bits;
        if (u64::from(rank) << mb) | minhash > (u64::from(self.ranks[i]) << mb) | self.minhashes[i]
        {
            self.ranks[i] = rank;
            self.minhashes[i] = minhash;
        }
    }
}

/// Ertl's tau: the correction for registers at the largest rank.
fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut x, mut y, mut z) = (x, 1.0, 1.0 - x);
    // Converges in well under 64 rounds in f64; the bound keeps a NaN from looping forever.
    for _ in 0..TERMS_MAX {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            break;
        }
    }
    z / 3.0
}

/// Ertl's sigma: the correction for empty registers.
fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut x, mut y, mut z) = (x, 1.0, x);
    for _ in 0..TERMS_MAX {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            break;
        }
    }
    z
}

/// Most rounds tau and sigma take; both converge in f64 long before.
const TERMS_MAX: usize = 1024;

/// MurmurHash3 x64-128 with seed 0 (Austin Appleby's public-domain algorithm), the hash
/// Aerospike places HLL elements with. Returns the two 64-bit halves, h1 first.
fn murmur3_x64_128(data: &[u8]) -> (u64, u64) {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut k: u64) -> u64 {
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
    let mix1 = |k: u64| k.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    let mix2 = |k: u64| k.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    let (mut h1, mut h2) = (0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        let k1 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let k2 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        h1 ^= mix1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    let le = |b: &[u8]| {
        b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    };
    if tail.len() > 8 {
        h2 ^= mix2(le(&tail[8..]));
    }
    if !tail.is_empty() {
        h1 ^= mix1(le(&tail[..tail.len().min(8)]));
    }
    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

fn read_bits(b: &[u8], start: usize, n: usize) -> u64 {
    (start..start + n).fold(0u64, |acc, i| {
        (acc << 1) | u64::from(b[i / 8] >> (7 - i % 8) & 1)
    })
}

fn write_bits(b: &mut [u8], start: usize, n: usize, v: u64) {
    for k in 0..n {
        let i = start + k;
        if (v >> (n - 1 - k)) & 1 != 0 {
            b[i / 8] |= 0x80 >> (i % 8);
        }
    }
}

/// What an HLL op did: its result, and the bin's new bytes when it changed.
#[derive(Debug)]
pub struct Outcome {
    pub result: Option<Value>,
    pub new_hll: Option<Vec<u8>>,
}

fn hll_list(a: &[Value], i: usize) -> OpResult<Vec<Hll>> {
    // A single HLL stands for a list of one (expressions send HLLGetUnion(hll, bin) so, and
    // the Python client sends an HLL value as a plain blob: Aerospike reads the bytes).
    if let Some(Value::Bytes(ptype::HLL | ptype::BLOB, b)) = a.get(i) {
        return Ok(vec![Hll::decode(b)?]);
    }
    let items = list_items(a, i)?;
    if items.is_empty() || items.len() > HLLS_PER_OP_MAX {
        return Err(OpError::Parameter("HLL list must hold 1 to 12 HLLs"));
    }
    items
        .iter()
        .map(|v| match v {
            Value::Bytes(ptype::HLL | ptype::BLOB, b) => Hll::decode(b),
            _ => Err(OpError::Parameter("HLL list holds a non-HLL value")),
        })
        .collect()
}

/// Brings every HLL to the smallest index bits among them (min-hash dropped if they differ).
fn common_shape(hlls: &[Hll]) -> OpResult<Vec<Hll>> {
    let ib = hlls.iter().map(|h| h.index_bits).min().expect("non-empty");
    let same_mb = hlls
        .windows(2)
        .all(|w| w[0].minhash_bits == w[1].minhash_bits);
    hlls.iter()
        .map(|h| {
            let mut h = h.clone();
            if !same_mb || h.index_bits != ib {
                h.minhash_bits = 0;
                h.minhashes.iter_mut().for_each(|m| *m = 0);
            }
            h.fold(ib)
        })
        .collect()
}

fn union_of(hlls: &[Hll]) -> OpResult<Hll> {
    let hlls = common_shape(hlls)?;
    let mut u = hlls[0].clone();
    for h in &hlls[1..] {
        u.merge(h);
    }
    Ok(u)
}

/// |A1 ∩ … ∩ An| by inclusion–exclusion over the union counts of every non-empty subset.
fn intersect_count(hlls: &[Hll]) -> OpResult<f64> {
    if hlls.len() > INTERSECT_HLLS_MAX {
        return Err(OpError::Parameter("intersect count of more than 5 HLLs"));
    }
    let hlls = common_shape(hlls)?;
    if hlls.len() > INTERSECT_PLAIN_HLLS_MAX && hlls.iter().any(|h| h.minhash_bits == 0) {
        return Err(OpError::Parameter(
            "intersect count of more than 3 HLLs without min-hash bits",
        ));
    }
    let n = hlls.len();
    let mut total = 0f64;
    for mask in 1u32..(1 << n) {
        let members: Vec<Hll> = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| hlls[i].clone())
            .collect();
        let c = union_of(&members)?.count() as f64;
        total += if members.len() % 2 == 1 { c } else { -c };
    }
    Ok(total.max(0.0))
}

/// Applies one HLL op (payload `[code, args...]`) to a bin given as (particle type, bytes).
pub fn apply(bin: Option<(u8, &[u8])>, payload: &[u8], modify: bool) -> OpResult<Outcome> {
    let (c, a) = crate::args::op_payload(payload)?;
    let a = a.as_slice();
    let is_read = (code::COUNT..=code::MAY_CONTAIN).contains(&c);
    if !(is_read || c <= code::FOLD) {
        return Err(OpError::Parameter("unknown HLL op code"));
    }
    if is_read == modify {
        return Err(OpError::Parameter("HLL op code does not match the op type"));
    }
    let current = match bin {
        None => None,
        Some((ptype::HLL, b)) => Some(Hll::decode(b)?),
        Some(_) => return Err(OpError::IncompatibleType("HLL op on a non-HLL bin")),
    };
    if is_read {
        let Some(h) = current else {
            return Ok(Outcome {
                result: None,
                new_hll: None,
            });
        };
        return Ok(Outcome {
            result: Some(read(&h, c, a)?),
            new_hll: None,
        });
    }
    let flags = match c {
        code::INIT => opt_int(a, 2)?,
        code::ADD => opt_int(a, 3)?,
        code::UNION => opt_int(a, 1)?,
        _ => None,
    }
    .unwrap_or(0);
    let allowed = match c {
        code::INIT => flag::CREATE_ONLY | flag::UPDATE_ONLY | flag::NO_FAIL,
        code::ADD => flag::CREATE_ONLY | flag::NO_FAIL,
        code::UNION => flag::CREATE_ONLY | flag::UPDATE_ONLY | flag::ALLOW_FOLD | flag::NO_FAIL,
        _ => 0,
    };
    // As Aerospike: a flag the op does not take, or create-only with update-only, is a bad
    // request (4) that NO_FAIL does not hide.
    if flags & !allowed != 0
        || flags & (flag::CREATE_ONLY | flag::UPDATE_ONLY) == flag::CREATE_ONLY | flag::UPDATE_ONLY
    {
        return Err(OpError::Parameter("HLL flags not allowed for this op"));
    }
    match write(current, c, a, flags) {
        Ok((result, h)) => Ok(Outcome {
            result,
            new_hll: h.map(|h| h.encode()),
        }),
        Err(_) if flags & flag::NO_FAIL != 0 => Ok(Outcome {
            result: None,
            new_hll: None,
        }),
        Err(e) => Err(e),
    }
}

type Written = (Option<Value>, Option<Hll>);

fn write(current: Option<Hll>, c: u8, a: &[Value], flags: i64) -> OpResult<Written> {
    if current.is_some() && flags & flag::CREATE_ONLY != 0 {
        return Err(OpError::BinExists);
    }
    if current.is_none() && flags & flag::UPDATE_ONLY != 0 {
        return Err(OpError::BinNotFound);
    }
    match c {
        code::INIT => {
            let ib = opt_int(a, 0)?.filter(|&b| b != -1);
            let mb = opt_int(a, 1)?.filter(|&b| b != -1);
            let ib = ib.or(current.as_ref().map(|h| i64::from(h.index_bits)));
            let ib = ib.ok_or(OpError::NotApplicable("HLL init needs index bits"))?;
            let mb = mb
                .or(current.as_ref().map(|h| i64::from(h.minhash_bits)))
                .unwrap_or(0);
            let (ib, mb) = check_bits(ib, mb)?;
            Ok((None, Some(Hll::new(ib, mb))))
        }
        code::ADD => {
            let elements = list_items(a, 0)?;
            let mut h = match current {
                Some(h) => h,
                None => {
                    let ib = opt_int(a, 1)?.filter(|&b| b != -1);
                    let ib = ib.ok_or(OpError::NotApplicable(
                        "HLL add cannot create a bin without index bits",
                    ))?;
                    let mb = opt_int(a, 2)?.filter(|&b| b != -1).unwrap_or(0);
                    let (ib, mb) = check_bits(ib, mb)?;
                    Hll::new(ib, mb)
                }
            };
            let mut changed = 0i64;
            for e in elements {
                if matches!(e, Value::List(_) | Value::Map(_)) {
                    return Err(OpError::Parameter("HLL elements must be scalars"));
                }
                changed += i64::from(h.add(e));
            }
            Ok((Some(Value::Int(changed)), Some(h)))
        }
        code::UNION => {
            let others = hll_list(a, 0)?;
            let Some(mut h) = current else {
                let u = union_of(&others)?;
                return Ok((None, Some(u)));
            };
            for o in &others {
                let o = if o.index_bits > h.index_bits {
                    o.fold(h.index_bits)?
                } else if o.index_bits < h.index_bits {
                    if flags & flag::ALLOW_FOLD == 0 {
                        return Err(OpError::NotApplicable("HLL union needs ALLOW_FOLD"));
                    }
                    h = h.fold(o.index_bits)?;
                    o.clone()
                } else {
                    o.clone()
                };
                let mut o = o;
                if o.minhash_bits != h.minhash_bits {
                    o.minhash_bits = h.minhash_bits;
                    o.minhashes.iter_mut().for_each(|m| *m = 0);
                }
                h.merge(&o);
            }
            // Aerospike rebuilds the HLL on a union: no cached count survives it.
            h.cached_count = 0;
            Ok((None, Some(h)))
        }
        code::REFRESH_COUNT => {
            let mut h = current.ok_or(OpError::BinNotFound)?;
            h.cached_count = 0;
            h.cached_count = h.count();
            Ok((Some(Value::Int(h.cached_count as i64)), Some(h)))
        }
        code::FOLD => {
            let h = current.ok_or(OpError::BinNotFound)?;
            let (to, _) = check_bits(int(a, 0)?, 0)?;
            Ok((None, Some(h.fold(to)?)))
        }
        _ => Err(OpError::Parameter("unknown HLL modify code")),
    }
}

fn read(h: &Hll, c: u8, a: &[Value]) -> OpResult<Value> {
    let with = |a: &[Value]| -> OpResult<Vec<Hll>> {
        let mut all = vec![h.clone()];
        all.extend(hll_list(a, 0)?);
        Ok(all)
    };
    Ok(match c {
        code::COUNT => Value::Int(h.count() as i64),
        code::GET_UNION => Value::Bytes(ptype::HLL, union_of(&with(a)?)?.encode()),
        code::UNION_COUNT => Value::Int(union_of(&with(a)?)?.count() as i64),
        code::INTERSECT_COUNT => Value::Int(intersect_count(&with(a)?)?.round() as i64),
        code::SIMILARITY => {
            let all = with(a)?;
            let union = union_of(&all)?.count() as f64;
            let inter = intersect_count(&all)?;
            Value::Float(if union == 0.0 { 0.0 } else { inter / union })
        }
        code::DESCRIBE => Value::List(List {
            ordered: false,
            items: vec![
                Value::Int(i64::from(h.index_bits)),
                Value::Int(i64::from(h.minhash_bits)),
            ],
        }),
        code::MAY_CONTAIN => {
            let elements = list_items(a, 0)?;
            let all = elements.iter().all(|e| {
                let (i, rank, _) = h.place(e);
                h.ranks[i] >= rank
            });
            Value::Int(i64::from(all))
        }
        _ => return Err(OpError::Parameter("unknown HLL read code")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.as_bytes().to_vec())
    }

    fn payload(items: Vec<Value>) -> Vec<u8> {
        Value::List(List {
            ordered: false,
            items,
        })
        .encode()
    }

    fn strs(xs: &[&str]) -> Value {
        Value::List(List {
            ordered: false,
            items: xs.iter().map(|x| s(x)).collect(),
        })
    }

    fn add(bin: Option<&[u8]>, xs: &[&str]) -> Vec<u8> {
        let p = payload(vec![
            Value::Int(1),
            strs(xs),
            Value::Int(8),
            Value::Int(-1),
            Value::Int(0),
        ]);
        apply(bin.map(|b| (ptype::HLL, b)), &p, true)
            .unwrap()
            .new_hll
            .unwrap()
    }

    fn read_of(bin: &[u8], items: Vec<Value>) -> Value {
        apply(Some((ptype::HLL, bin)), &payload(items), false)
            .unwrap()
            .result
            .unwrap()
    }

    #[test]
    fn captured_add_counts_and_round_trips() {
        // hll_add('h', ['a','b'], 8) as the Python client sends it (spec §4.6).
        let p = [
            0x95, 0x01, 0x92, 0xa2, 0x03, 0x61, 0xa2, 0x03, 0x62, 0x08, 0xff, 0x00,
        ];
        let out = apply(None, &p, true).unwrap();
        assert_eq!(out.result.unwrap().as_int(), Some(2));
        let b = out.new_hll.unwrap();
        assert_eq!(b.len(), HEADER_BYTES + 256 * 6 / 8);
        assert_eq!(Hll::decode(&b).unwrap().encode(), b);
        assert_eq!(read_of(&b, vec![Value::Int(50)]).as_int(), Some(2));
    }

    #[test]
    fn estimates_are_close() {
        let names: Vec<String> = (0..5000).map(|i| format!("user{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = payload(vec![
            Value::Int(1),
            strs(&refs),
            Value::Int(12),
            Value::Int(-1),
            Value::Int(0),
        ]);
        let b = apply(None, &p, true).unwrap().new_hll.unwrap();
        let n = read_of(&b, vec![Value::Int(50)]).as_int().unwrap();
        assert!((4700..=5300).contains(&n), "estimate {n} for 5000");
    }

    #[test]
    fn unions_intersections_and_membership() {
        let x = add(None, &["a", "b", "c"]);
        let y = add(None, &["c", "d"]);
        let list = Value::List(List {
            ordered: false,
            items: vec![Value::Bytes(ptype::HLL, y.clone())],
        });
        assert_eq!(
            read_of(&x, vec![Value::Int(52), list.clone()]).as_int(),
            Some(4)
        );
        assert_eq!(
            read_of(&x, vec![Value::Int(53), list.clone()]).as_int(),
            Some(1)
        );
        let sim = read_of(&x, vec![Value::Int(54), list.clone()]);
        assert!(
            matches!(sim, Value::Float(f) if (f - 0.25).abs() < 1e-9),
            "{sim:?}"
        );
        assert_eq!(
            read_of(&x, vec![Value::Int(56), strs(&["a", "c"])]).as_int(),
            Some(1)
        );
        assert_eq!(
            read_of(&x, vec![Value::Int(56), strs(&["q"])]).as_int(),
            Some(0)
        );
        let folded = apply(
            Some((ptype::HLL, &x)),
            &payload(vec![Value::Int(4), Value::Int(4)]),
            true,
        )
        .unwrap()
        .new_hll
        .unwrap();
        assert_eq!(Hll::decode(&folded).unwrap().index_bits, 4);
        assert_eq!(read_of(&folded, vec![Value::Int(50)]).as_int(), Some(3));
    }

    #[test]
    fn bad_shapes_and_flags() {
        assert!(Hll::decode(&[0, 8, 0]).is_err());
        assert!(Hll::decode(&[0; 20]).is_err());
        let init = |ib: i64, mb: i64| {
            payload(vec![
                Value::Int(0),
                Value::Int(ib),
                Value::Int(mb),
                Value::Int(0),
            ])
        };
        assert_eq!(apply(None, &init(3, 0), true).unwrap_err().result_code(), 4);
        assert_eq!(
            apply(None, &init(16, 49), true).unwrap_err().result_code(),
            4
        );
        let x = add(None, &["a"]);
        let create_only = payload(vec![
            Value::Int(0),
            Value::Int(8),
            Value::Int(0),
            Value::Int(flag::CREATE_ONLY),
        ]);
        assert_eq!(
            apply(Some((ptype::HLL, &x)), &create_only, true)
                .unwrap_err()
                .result_code(),
            6
        );
        assert_eq!(
            apply(
                Some((ptype::BLOB, &x)),
                &payload(vec![Value::Int(50)]),
                false
            )
            .unwrap_err()
            .result_code(),
            12
        );
    }

    /// Counts Aerospike CE 8.1.2 gives for the suite's HLLs ("key0".. with 8 and 10 index
    /// bits); the register bytes match Aerospike's too.
    #[test]
    fn counts_match_aerospike() {
        let count_of = |n: usize, bits: i64| {
            let names: Vec<String> = (0..n).map(|i| format!("key{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let p = payload(vec![
                Value::Int(1),
                strs(&refs),
                Value::Int(bits),
                Value::Int(-1),
                Value::Int(0),
            ]);
            let b = apply(None, &p, true).unwrap().new_hll.unwrap();
            assert_eq!(&b[3..11], &[0; 8], "an add leaves no cached count");
            read_of(&b, vec![Value::Int(50)]).as_int().unwrap()
        };
        assert_eq!(count_of(100, 8), 97);
        assert_eq!(count_of(1000, 10), 976);
        assert_eq!(count_of(5, 8), 5);
        assert_eq!(murmur3_x64_128(b""), (0, 0));
    }

    /// Aerospike CE 8.1.2: add takes no UPDATE_ONLY (4, even with NO_FAIL); creating a bin
    /// without index bits is not applicable (26), for add and init alike.
    #[test]
    fn flags_and_creation_are_checked_as_aerospike_does() {
        let code_of = |items: Vec<Value>| {
            apply(None, &payload(items), true)
                .unwrap_err()
                .result_code()
        };
        let i = Value::Int;
        let ab = || strs(&["a", "b"]);
        assert_eq!(
            code_of(vec![i(1), ab(), i(8), i(-1), i(flag::UPDATE_ONLY)]),
            4
        );
        let quiet_update = flag::UPDATE_ONLY | flag::NO_FAIL;
        assert_eq!(code_of(vec![i(1), ab(), i(8), i(-1), i(quiet_update)]), 4);
        assert_eq!(
            code_of(vec![i(1), ab(), i(-1), i(-1), i(flag::CREATE_ONLY)]),
            26
        );
        assert_eq!(code_of(vec![i(0), i(-1), i(-1), i(0)]), 26);
        let both = flag::CREATE_ONLY | flag::UPDATE_ONLY;
        assert_eq!(code_of(vec![i(0), i(8), i(-1), i(both)]), 4);
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn intersections_of_many_large_hlls_are_refused_quickly() {
        let big = Value::Bytes(ptype::HLL, Hll::new(16, 0).encode());
        let list = Value::List(List {
            ordered: false,
            items: vec![big.clone(); 11],
        });
        let Value::Bytes(_, bin) = &big else {
            unreachable!()
        };
        let p = Value::List(List {
            ordered: false,
            items: vec![Value::Int(53), list],
        })
        .encode();
        let started = std::time::Instant::now();
        let r = apply(Some((ptype::HLL, bin)), &p, false);
        assert_eq!(r.unwrap_err().result_code(), 4);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    /// Aerospike CE 8.1.2: an intersect count or similarity of HLLs without min-hash bits
    /// takes the bin and at most two others; a union takes a lone HLL where a list is expected.
    #[test]
    fn intersections_take_two_others_and_a_lone_hll_is_a_list_of_one() {
        let h = Value::Bytes(ptype::HLL, Hll::new(8, 0).encode());
        let Value::Bytes(_, bin) = &h else {
            unreachable!()
        };
        let payload = |code: i64, arg: Value| {
            Value::List(List {
                ordered: false,
                items: vec![Value::Int(code), arg],
            })
            .encode()
        };
        let list = |n: usize| {
            Value::List(List {
                ordered: false,
                items: vec![h.clone(); n],
            })
        };
        for code in [
            i64::from(code::INTERSECT_COUNT),
            i64::from(code::SIMILARITY),
        ] {
            assert!(apply(Some((ptype::HLL, bin)), &payload(code, list(2)), false).is_ok());
            let refused = apply(Some((ptype::HLL, bin)), &payload(code, list(3)), false);
            assert_eq!(refused.unwrap_err().result_code(), 4);
        }
        // With min-hash bits, the bin and four others are combined.
        let mh = Value::Bytes(ptype::HLL, Hll::new(6, 12).encode());
        let Value::Bytes(_, mh_bin) = &mh else {
            unreachable!()
        };
        let four = Value::List(List {
            ordered: false,
            items: vec![mh.clone(); 4],
        });
        let code = i64::from(code::INTERSECT_COUNT);
        assert!(apply(Some((ptype::HLL, mh_bin)), &payload(code, four), false).is_ok());
        let union = apply(
            Some((ptype::HLL, bin)),
            &payload(i64::from(code::UNION_COUNT), h.clone()),
            false,
        );
        assert_eq!(union.unwrap().result.unwrap().as_int(), Some(0));
        // The same HLL sent as a plain blob, as the Python client's expressions send it.
        let blob = Value::Bytes(ptype::BLOB, bin.clone());
        let union = apply(
            Some((ptype::HLL, bin)),
            &payload(i64::from(code::UNION_COUNT), blob),
            false,
        );
        assert_eq!(union.unwrap().result.unwrap().as_int(), Some(0));
    }
}
