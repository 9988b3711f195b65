//! Bitwise ops on blob bins (spec §4.6, op types 12 and 13): resize, insert, remove, set, or,
//! xor, and, not, shifts, add/subtract/set of big-endian integers inside the blob, and the
//! get / count / scan / get-integer reads, with the bit policy flags.
//!
//! Bits are numbered from the most significant bit of the first byte. A negative offset
//! counts back from the end. Works on a copy of the blob; the caller stores it only when the
//! whole command succeeds.

use crate::args::{arg, flags, int, opt_int};
use crate::error::{OpError, OpResult};
use crate::value::{ptype, Value};

mod code {
    pub const RESIZE: u8 = 0;
    pub const INSERT: u8 = 1;
    pub const REMOVE: u8 = 2;
    pub const SET: u8 = 3;
    pub const OR: u8 = 4;
    pub const XOR: u8 = 5;
    pub const AND: u8 = 6;
    pub const NOT: u8 = 7;
    pub const LSHIFT: u8 = 8;
    pub const RSHIFT: u8 = 9;
    pub const ADD: u8 = 10;
    pub const SUBTRACT: u8 = 11;
    pub const SET_INT: u8 = 12;
    pub const GET: u8 = 50;
    pub const COUNT: u8 = 51;
    pub const LSCAN: u8 = 52;
    pub const RSCAN: u8 = 53;
    pub const GET_INT: u8 = 54;
}

/// Bit policy flags.
mod policy {
    pub const CREATE_ONLY: i64 = 1;
    pub const UPDATE_ONLY: i64 = 2;
    pub const NO_FAIL: i64 = 4;
    pub const PARTIAL: i64 = 8;
}

mod resize_flag {
    pub const FROM_FRONT: i64 = 1;
    pub const GROW_ONLY: i64 = 2;
    pub const SHRINK_ONLY: i64 = 4;
}

/// Integer op flags: signed, and what to do on overflow.
mod int_flag {
    pub const SIGNED: i64 = 1;
    pub const SATURATE: i64 = 2;
    pub const WRAP: i64 = 4;
}

/// Largest blob a bit op may produce (a record is at most 8 MiB).
pub const BLOB_BYTES_MAX: usize = 8 << 20;

/// What a bit op did: its result, and the blob's new bytes when it changed.
#[derive(Debug)]
pub struct Outcome {
    pub result: Option<Value>,
    pub new_blob: Option<Vec<u8>>,
}

fn is_read(c: u8) -> bool {
    (code::GET..=code::GET_INT).contains(&c)
}

/// Where the policy flags sit among a modify op's arguments.
fn policy_index(c: u8) -> usize {
    match c {
        code::RESIZE => 1,
        code::INSERT | code::REMOVE | code::NOT => 2,
        _ => 3,
    }
}

/// The write flags an op may carry, as Aerospike CE 8.1.2 checks them before anything else
/// (PARAMETER_ERROR whatever the bin holds, even under NO_FAIL): CREATE_ONLY and UPDATE_ONLY
/// exclude each other, only the ops that can create a bin (resize, insert) take CREATE_ONLY,
/// and PARTIAL only fits the ops that write a range in place (remove, set, the logical ops,
/// the shifts), not resize, insert or the integer ops.
fn check_policy(c: u8, f: i64) -> OpResult<()> {
    if f & policy::CREATE_ONLY != 0 && f & policy::UPDATE_ONLY != 0 {
        return Err(OpError::Parameter(
            "bit write flags CREATE_ONLY and UPDATE_ONLY together",
        ));
    }
    let creates = matches!(c, code::RESIZE | code::INSERT);
    if f & policy::CREATE_ONLY != 0 && !creates {
        return Err(OpError::Parameter(
            "CREATE_ONLY on a bit op that cannot create the bin",
        ));
    }
    if f & policy::PARTIAL != 0
        && (creates || matches!(c, code::ADD | code::SUBTRACT | code::SET_INT))
    {
        return Err(OpError::Parameter(
            "PARTIAL on a bit op that cannot apply partly",
        ));
    }
    Ok(())
}

/// Applies one bit op (payload `[code, args...]`) to a bin given as (particle type, bytes).
pub fn apply(bin: Option<(u8, &[u8])>, payload: &[u8], modify: bool) -> OpResult<Outcome> {
    let (c, a) = crate::args::op_payload(payload)?;
    let a = a.as_slice();
    if !(c <= code::SET_INT || is_read(c)) {
        return Err(OpError::Parameter("unknown bit op code"));
    }
    if is_read(c) == modify {
        return Err(OpError::Parameter("bit op code does not match the op type"));
    }
    let blob = match bin {
        None => None,
        Some((ptype::BLOB, b)) => Some(b),
        Some(_) => return Err(OpError::IncompatibleType("bit op on a non-blob bin")),
    };
    if !modify {
        let Some(b) = blob else {
            return Ok(Outcome {
                result: None,
                new_blob: None,
            });
        };
        return Ok(Outcome {
            result: Some(read(b, c, a)?),
            new_blob: None,
        });
    }
    let f = flags(a, policy_index(c))?;
    check_policy(c, f)?;
    let refused = match blob {
        Some(_) if f & policy::CREATE_ONLY != 0 => Some(OpError::BinExists),
        None if f & policy::UPDATE_ONLY != 0 || !matches!(c, code::RESIZE | code::INSERT) => {
            Some(OpError::BinNotFound)
        }
        _ => None,
    };
    let outcome = match refused {
        Some(e) => Err(e),
        None => {
            let mut b = blob.map(<[u8]>::to_vec).unwrap_or_default();
            write(&mut b, c, a, f).map(|()| b)
        }
    };
    match outcome {
        Ok(b) => {
            if b.len() > BLOB_BYTES_MAX {
                return Err(OpError::Parameter(
                    "blob would exceed the record size limit",
                ));
            }
            Ok(Outcome {
                result: None,
                new_blob: Some(b),
            })
        }
        Err(_) if f & policy::NO_FAIL != 0 => Ok(Outcome {
            result: None,
            new_blob: None,
        }),
        Err(e) => Err(e),
    }
}

fn get_bit(b: &[u8], i: usize) -> bool {
    b[i / 8] & (0x80 >> (i % 8)) != 0
}

fn set_bit(b: &mut [u8], i: usize, on: bool) {
    if on {
        b[i / 8] |= 0x80 >> (i % 8);
    } else {
        b[i / 8] &= !(0x80 >> (i % 8));
    }
}

/// `[start, end)` in bits of `(offset, size)` within a blob of `len` bytes. With `partial`, a
/// range running past the end is cut at the end instead of refused.
fn bit_range(len: usize, offset: i64, size: i64, partial: bool) -> OpResult<(usize, usize)> {
    let total = (len * 8) as i64;
    let start = if offset < 0 { offset + total } else { offset };
    if size < 0 || start < 0 || start > total {
        return Err(OpError::NotApplicable("bit offset out of range"));
    }
    let mut end = start.saturating_add(size);
    if end > total {
        if !partial {
            return Err(OpError::NotApplicable(
                "bit range runs past the end of the blob",
            ));
        }
        end = total;
    }
    Ok((start as usize, end as usize))
}

fn bytes_arg(a: &[Value], i: usize) -> OpResult<&[u8]> {
    match arg(a, i)? {
        Value::Bytes(_, b) => Ok(b),
        _ => Err(OpError::Parameter("bit op value is not a blob")),
    }
}

/// Reads `n` ≤ 64 bits starting at `start` as an unsigned big-endian integer.
fn read_uint(b: &[u8], start: usize, n: usize) -> u64 {
    (start..start + n).fold(0u64, |acc, i| (acc << 1) | u64::from(get_bit(b, i)))
}

fn write_uint(b: &mut [u8], start: usize, n: usize, v: u64) {
    for k in 0..n {
        set_bit(b, start + k, (v >> (n - 1 - k)) & 1 != 0);
    }
}

fn int_size(a: &[Value]) -> OpResult<usize> {
    let size = int(a, 1)?;
    if !(1..=64).contains(&size) {
        return Err(OpError::Parameter("integer bit size must be 1 to 64"));
    }
    Ok(size as usize)
}

fn write(b: &mut Vec<u8>, c: u8, a: &[Value], f: i64) -> OpResult<()> {
    let partial = f & policy::PARTIAL != 0;
    match c {
        code::RESIZE => {
            let size = usize::try_from(int(a, 0)?)
                .ok()
                .filter(|&s| s <= BLOB_BYTES_MAX)
                .ok_or(OpError::Parameter("resize byte size out of range"))?;
            let rf = opt_int(a, 2)?.unwrap_or(0);
            if (rf & resize_flag::GROW_ONLY != 0 && size < b.len())
                || (rf & resize_flag::SHRINK_ONLY != 0 && size > b.len())
            {
                return Err(OpError::Parameter("resize against its grow/shrink flag"));
            }
            if rf & resize_flag::FROM_FRONT != 0 {
                if size < b.len() {
                    b.drain(..b.len() - size);
                } else {
                    let grow = size - b.len();
                    b.splice(0..0, vec![0; grow]);
                }
            } else {
                b.resize(size, 0);
            }
        }
        code::INSERT => {
            let off = usize::try_from(int(a, 0)?)
                .ok()
                .filter(|&o| o <= BLOB_BYTES_MAX)
                .ok_or(OpError::Parameter("insert byte offset out of range"))?;
            let v = bytes_arg(a, 1)?;
            if off > b.len() {
                b.resize(off, 0);
            }
            b.splice(off..off, v.iter().copied());
        }
        code::REMOVE => {
            // Aerospike answers 4 (not 26) for any remove outside the blob, an empty one included;
            // a negative offset counts from the end.
            let len = b.len() as i64;
            let off = int(a, 0)?;
            let off = if off < 0 { off + len } else { off };
            let size = int(a, 1)?;
            if off < 0 || off >= len || size <= 0 {
                return Err(OpError::Parameter("remove offset or size out of range"));
            }
            let end = off.saturating_add(size);
            if end > len && !partial {
                return Err(OpError::Parameter("remove range past the end of the blob"));
            }
            b.drain(off as usize..end.min(len) as usize);
        }
        code::SET | code::OR | code::XOR | code::AND => {
            let (s, e) = bit_range(b.len(), int(a, 0)?, int(a, 1)?, partial)?;
            let v = bytes_arg(a, 2)?;
            if v.len() * 8 < e - s {
                return Err(OpError::Parameter("bit op value shorter than its bit size"));
            }
            for i in s..e {
                let x = get_bit(v, i - s);
                let cur = get_bit(b, i);
                let new = match c {
                    code::SET => x,
                    code::OR => cur | x,
                    code::XOR => cur ^ x,
                    _ => cur & x,
                };
                set_bit(b, i, new);
            }
        }
        code::NOT => {
            let (s, e) = bit_range(b.len(), int(a, 0)?, int(a, 1)?, partial)?;
            for i in s..e {
                let cur = get_bit(b, i);
                set_bit(b, i, !cur);
            }
        }
        code::LSHIFT | code::RSHIFT => {
            let (s, e) = bit_range(b.len(), int(a, 0)?, int(a, 1)?, partial)?;
            let shift = usize::try_from(int(a, 2)?).map_err(|_| OpError::Parameter("shift"))?;
            let bits: Vec<bool> = (s..e).map(|i| get_bit(b, i)).collect();
            let n = bits.len();
            for k in 0..n {
                let from = if c == code::LSHIFT {
                    k.checked_add(shift).filter(|&f| f < n)
                } else {
                    k.checked_sub(shift)
                };
                set_bit(b, s + k, from.is_some_and(|f| bits[f]));
            }
        }
        code::ADD | code::SUBTRACT | code::SET_INT => {
            let n = int_size(a)?;
            let (s, e) = bit_range(b.len(), int(a, 0)?, n as i64, false)?;
            debug_assert_eq!(e - s, n);
            let v = int(a, 2)?;
            let new = if c == code::SET_INT {
                v as u64
            } else {
                let flags = opt_int(a, 4)?.unwrap_or(0);
                add_in_bits(read_uint(b, s, n), n, operand(v, n, c, flags), flags)?
            };
            write_uint(b, s, n, new);
        }
        _ => return Err(OpError::Parameter("unknown bit modify code")),
    }
    Ok(())
}

/// The delta an add or subtract applies, as Aerospike reads its operand: cut to the field's `n`
/// bits first. Unsigned, the cut operand is added or subtracted; signed, a subtract adds the
/// negated operand, cut and sign-extended (so subtracting 156 from an 8-bit -1 gives 99, and
/// subtracting 128 overflows).
fn operand(v: i64, n: usize, c: u8, flags: i64) -> i64 {
    debug_assert!((1..=64).contains(&n));
    let mask: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    if flags & int_flag::SIGNED != 0 {
        let v = if c == code::SUBTRACT {
            v.wrapping_neg()
        } else {
            v
        };
        let cut = (v as u64) & mask;
        if n < 64 && cut >> (n - 1) & 1 == 1 {
            (cut | !mask) as i64
        } else {
            cut as i64
        }
    } else {
        let cut = ((v as u64) & mask) as i64;
        if c == code::SUBTRACT {
            cut.wrapping_neg()
        } else {
            cut
        }
    }
}

/// Adds `delta` to an `n`-bit field under the overflow action: fail (26), saturate or wrap.
fn add_in_bits(cur: u64, n: usize, delta: i64, flags: i64) -> OpResult<u64> {
    let mask: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let signed = flags & int_flag::SIGNED != 0;
    let (min, max): (i128, i128) = if signed {
        (-(1i128 << (n - 1)), (1i128 << (n - 1)) - 1)
    } else {
        (0, i128::from(mask))
    };
    let cur = if signed && n < 64 && cur >> (n - 1) & 1 == 1 {
        i128::from(cur) - (1i128 << n)
    } else if signed {
        i128::from(cur as i64)
    } else {
        i128::from(cur)
    };
    let sum = cur + i128::from(delta);
    let out = if sum < min || sum > max {
        if flags & int_flag::SATURATE != 0 {
            sum.clamp(min, max)
        } else if flags & int_flag::WRAP != 0 {
            sum
        } else {
            return Err(OpError::NotApplicable("bit integer overflow"));
        }
    } else {
        sum
    };
    Ok((out as u64) & mask)
}

fn read(b: &[u8], c: u8, a: &[Value]) -> OpResult<Value> {
    let (s, e) = bit_range(b.len(), int(a, 0)?, int(a, 1)?, false)?;
    Ok(match c {
        code::GET => {
            let mut out = vec![0u8; (e - s).div_ceil(8)];
            for i in s..e {
                set_bit(&mut out, i - s, get_bit(b, i));
            }
            Value::Bytes(ptype::BLOB, out)
        }
        code::COUNT => Value::Int((s..e).filter(|&i| get_bit(b, i)).count() as i64),
        code::LSCAN | code::RSCAN => {
            let want = matches!(arg(a, 2)?, Value::Bool(true));
            let found = if c == code::LSCAN {
                (s..e).position(|i| get_bit(b, i) == want)
            } else {
                (s..e).rposition(|i| get_bit(b, i) == want)
            };
            Value::Int(found.map_or(-1, |p| p as i64))
        }
        code::GET_INT => {
            let n = int_size(a)?;
            let v = read_uint(b, s, n);
            let signed = opt_int(a, 2)?.unwrap_or(0) & int_flag::SIGNED != 0;
            Value::Int(if signed && n < 64 && v >> (n - 1) & 1 == 1 {
                (v as i64) - (1i64 << n)
            } else {
                v as i64
            })
        }
        _ => return Err(OpError::Parameter("unknown bit read code")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(items: Vec<Value>) -> Vec<u8> {
        Value::List(crate::List {
            ordered: false,
            items,
        })
        .encode()
    }

    fn i(v: i64) -> Value {
        Value::Int(v)
    }

    fn blob(b: &[u8]) -> Value {
        Value::Bytes(ptype::BLOB, b.to_vec())
    }

    fn modify(b: &[u8], items: Vec<Value>) -> OpResult<Vec<u8>> {
        Ok(apply(Some((ptype::BLOB, b)), &op(items), true)?
            .new_blob
            .unwrap())
    }

    fn read_of(b: &[u8], items: Vec<Value>) -> Value {
        apply(Some((ptype::BLOB, b)), &op(items), false)
            .unwrap()
            .result
            .unwrap()
    }

    /// The examples of the Aerospike bitwise documentation, on [0x01, 0x42, 0x03, 0x04, 0x05].
    const DOC: [u8; 5] = [
        0b0000_0001,
        0b0100_0010,
        0b0000_0011,
        0b0000_0100,
        0b0000_0101,
    ];

    #[test]
    fn documented_modify_examples() {
        assert_eq!(
            modify(&DOC, vec![i(0), i(2), i(0), i(0)]).unwrap(),
            [1, 0x42]
        );
        assert_eq!(
            modify(&DOC, vec![i(1), i(1), blob(&[0xff]), i(0)]).unwrap(),
            [1, 0xff, 0x42, 3, 4, 5]
        );
        assert_eq!(
            modify(&DOC, vec![i(2), i(2), i(2), i(0)]).unwrap(),
            [1, 0x42, 5]
        );
        assert_eq!(
            modify(&DOC, vec![i(3), i(13), i(3), blob(&[0xe0]), i(0)]).unwrap(),
            [1, 0x47, 3, 4, 5]
        );
        assert_eq!(
            modify(&DOC, vec![i(4), i(17), i(6), blob(&[0xa8]), i(0)]).unwrap(),
            [1, 0x42, 0x57, 4, 5]
        );
        assert_eq!(
            modify(&DOC, vec![i(7), i(25), i(6), i(0)]).unwrap(),
            [1, 0x42, 3, 0x7a, 5]
        );
        assert_eq!(
            modify(&DOC, vec![i(8), i(32), i(8), i(3), i(0)]).unwrap(),
            [1, 0x42, 3, 4, 0x28]
        );
        assert_eq!(
            modify(&DOC, vec![i(10), i(24), i(16), i(128), i(0), i(0)]).unwrap(),
            [1, 0x42, 3, 4, 0x85]
        );
        assert_eq!(
            modify(&DOC, vec![i(12), i(1), i(8), i(127), i(0)]).unwrap(),
            [0x3f, 0xc2, 3, 4, 5]
        );
        // Overflow fails unless it saturates or wraps.
        let max = vec![i(10), i(0), i(8), i(255), i(0), i(0)];
        assert_eq!(modify(&DOC, max).unwrap_err().result_code(), 26);
        let sat = vec![i(10), i(0), i(8), i(255), i(0), i(int_flag::SATURATE)];
        assert_eq!(modify(&DOC, sat).unwrap()[0], 0xff);
        let wrap = vec![i(10), i(0), i(8), i(255), i(0), i(int_flag::WRAP)];
        assert_eq!(modify(&DOC, wrap).unwrap()[0], 0);
    }

    #[test]
    fn documented_read_examples() {
        assert!(crate::value::equal(
            &read_of(&DOC, vec![i(50), i(9), i(5)]),
            &blob(&[0x80])
        ));
        assert_eq!(read_of(&DOC, vec![i(51), i(20), i(4)]).as_int(), Some(2));
        assert_eq!(
            read_of(&DOC, vec![i(52), i(24), i(8), Value::Bool(true)]).as_int(),
            Some(5)
        );
        assert_eq!(
            read_of(&DOC, vec![i(53), i(32), i(8), Value::Bool(true)]).as_int(),
            Some(7)
        );
        assert_eq!(
            read_of(&DOC, vec![i(54), i(8), i(16)]).as_int(),
            Some(16899)
        );
        assert_eq!(
            read_of(&[0xff], vec![i(54), i(0), i(8), i(1)]).as_int(),
            Some(-1)
        );
    }

    #[test]
    fn ranges_and_flags_are_checked() {
        assert_eq!(
            modify(&DOC, vec![i(7), i(38), i(8), i(0)])
                .unwrap_err()
                .result_code(),
            26
        );
        let partial = modify(&DOC, vec![i(7), i(36), i(8), i(policy::PARTIAL)]).unwrap();
        assert_eq!(partial[4], 0x0a);
        let none = apply(None, &op(vec![i(7), i(0), i(8), i(0)]), true);
        assert_eq!(none.unwrap_err().result_code(), 17);
        let created = apply(None, &op(vec![i(0), i(2), i(0), i(0)]), true).unwrap();
        assert_eq!(created.new_blob.unwrap(), [0, 0]);
        let exists = apply(
            Some((ptype::BLOB, &DOC)),
            &op(vec![i(0), i(2), i(policy::CREATE_ONLY), i(0)]),
            true,
        );
        assert_eq!(exists.unwrap_err().result_code(), 6);
        let quiet = apply(
            Some((ptype::BLOB, &DOC)),
            &op(vec![
                i(0),
                i(2),
                i(policy::CREATE_ONLY | policy::NO_FAIL),
                i(0),
            ]),
            true,
        );
        assert!(quiet.unwrap().new_blob.is_none());
        let wrong = apply(
            Some((ptype::INTEGER, &[0; 8])),
            &op(vec![i(51), i(0), i(8)]),
            false,
        );
        assert_eq!(wrong.unwrap_err().result_code(), 12);
    }

    /// Aerospike CE 8.1.2 checks the write flags first, with PARAMETER_ERROR even under
    /// NO_FAIL: PARTIAL on resize / insert / add, CREATE_ONLY on set / or, both CREATE_ONLY and
    /// UPDATE_ONLY; PARTIAL on set is fine.
    #[test]
    fn write_flags_that_do_not_fit_the_op_are_parameter_errors() {
        let on_doc = |items| apply(Some((ptype::BLOB, &DOC)), &op(items), true);
        let (c, u, n, p) = (
            policy::CREATE_ONLY,
            policy::UPDATE_ONLY,
            policy::NO_FAIL,
            policy::PARTIAL,
        );
        for items in [
            vec![i(0), i(15), i(c | n | p), i(0)],
            vec![i(1), i(0), blob(&[1]), i(p)],
            vec![i(10), i(0), i(8), i(1), i(p), i(0)],
            vec![i(3), i(0), i(8), blob(&[0xff]), i(c | n)],
            vec![i(4), i(0), i(8), blob(&[1]), i(c)],
            vec![i(0), i(15), i(c | u), i(0)],
        ] {
            let code = items[0].as_int();
            assert_eq!(on_doc(items).unwrap_err().result_code(), 4, "op {code:?}");
        }
        assert!(on_doc(vec![i(3), i(0), i(8), blob(&[0xff]), i(p)]).is_ok());
    }

    /// Answers of Aerospike CE 8.1.2 on the five bytes 0xff or 0x01.
    #[test]
    fn integer_operands_are_cut_to_the_field_as_aerospike_does() {
        let ff = [0xff; 5];
        let ones = [0x01; 5];
        let sub = |b: &[u8], v: i64, flags: i64| {
            modify(b, vec![i(11), i(0), i(8), i(v), i(0), i(flags)]).map(|x| x[0])
        };
        let add = |b: &[u8], v: i64, flags: i64| {
            modify(b, vec![i(10), i(0), i(8), i(v), i(0), i(flags)]).map(|x| x[0])
        };
        let signed = int_flag::SIGNED;
        assert_eq!(sub(&ff, 156, signed).unwrap(), 99);
        assert_eq!(sub(&ff, 200, signed).unwrap(), 0x37);
        assert_eq!(sub(&ff, 128, signed).unwrap_err().result_code(), 26);
        assert_eq!(sub(&ones, 129, signed).unwrap_err().result_code(), 26);
        assert_eq!(sub(&ones, 300, signed).unwrap(), 0xd5);
        assert_eq!(sub(&ones, 130, signed | int_flag::SATURATE).unwrap(), 0x7f);
        assert_eq!(add(&ff, 156, signed).unwrap(), 0x9b);
        assert_eq!(add(&ff, 128, signed).unwrap_err().result_code(), 26);
        assert_eq!(add(&ones, 129, signed).unwrap(), 0x82);
        assert_eq!(add(&ones, 300, 0).unwrap(), 0x2d);
        assert_eq!(add(&ones, 255, 0).unwrap_err().result_code(), 26);
        assert_eq!(sub(&ff, 300, 0).unwrap(), 0xd3);
    }

    /// Aerospike CE 8.1.2 answers 4 for a remove or resize it refuses, on five zero bytes.
    #[test]
    fn remove_and_resize_refusals_answer_parameter() {
        let z = [0u8; 5];
        let remove = |off: i64, size: i64, flags: i64| {
            modify(&z, vec![i(2), i(off), i(size), i(flags)]).map(|b| b.len())
        };
        for (off, size, flags) in [(6, 1, 0), (0, 6, 0), (3, 3, 0), (5, 0, 0), (0, 0, 0)] {
            assert_eq!(remove(off, size, flags).unwrap_err().result_code(), 4);
        }
        assert_eq!(remove(5, 1, policy::PARTIAL).unwrap_err().result_code(), 4);
        assert_eq!(remove(4, 2, policy::PARTIAL).unwrap(), 4);
        assert_eq!(remove(-1, 1, 0).unwrap(), 4);
        assert_eq!(remove(0, 5, 0).unwrap(), 0);
        let resize = |size: i64, rf: i64| modify(&z, vec![i(0), i(size), i(0), i(rf)]);
        assert_eq!(
            resize(1, resize_flag::GROW_ONLY).unwrap_err().result_code(),
            4
        );
        assert_eq!(
            resize(10, resize_flag::SHRINK_ONLY)
                .unwrap_err()
                .result_code(),
            4
        );
        assert_eq!(resize(5, resize_flag::GROW_ONLY).unwrap().len(), 5);
    }
}
