//! Operations on bin values that the server applies inside `operate`: collection (CDT) list and
//! map ops with nested contexts, and expressions (spec §4.4–§4.8).
//!
//! Pure functions over decoded values: no I/O, no clock, no shared state, so every op can be
//! tested and fuzzed without a server. Every input is untrusted bytes from a client or from a
//! stored bin; malformed input is an [`OpError`], never a panic.

pub mod args;
pub mod bits;
pub mod cdt;
pub mod error;
pub mod exp;
pub mod geo;
pub mod hll;
pub mod list;
pub mod map;
pub mod select;
pub mod value;

pub use error::OpError;
pub use value::{List, Map, Value};

/// The op families that compute a bin's new value from its old one, by payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// List and map ops (op types 3, 4).
    Cdt,
    /// Bit ops on blobs (12, 13).
    Bits,
    /// HyperLogLog ops (15, 16).
    Hll,
}

/// What a value op did: its result, and the bin's new (particle type, bytes) when it changed.
#[derive(Debug)]
pub struct BinOutcome {
    pub result: Option<Value>,
    pub new_bin: Option<(u8, Vec<u8>)>,
}

/// Applies one op of `family` to a bin given as (particle type, bytes), `None` when missing.
/// `modify` is false for the family's read op type, which may carry read codes only.
pub fn apply(
    family: Family,
    bin: Option<(u8, &[u8])>,
    payload: &[u8],
    modify: bool,
) -> Result<BinOutcome, OpError> {
    Ok(match family {
        Family::Cdt => {
            let out = cdt::apply(bin, payload, modify)?;
            BinOutcome {
                result: out.result,
                new_bin: out.new_bin.map(|v| v.to_particle()),
            }
        }
        Family::Bits => {
            let out = bits::apply(bin, payload, modify)?;
            BinOutcome {
                result: out.result,
                new_bin: out.new_blob.map(|b| (value::ptype::BLOB, b)),
            }
        }
        Family::Hll => {
            let out = hll::apply(bin, payload, modify)?;
            BinOutcome {
                result: out.result,
                new_bin: out.new_hll.map(|h| (value::ptype::HLL, h)),
            }
        }
    })
}
