//! Why an op on a bin value failed, each variant tied to the Aerospike result code the client
//! sees (spec §4.5 "CDT error codes").

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// Malformed msgpack or a malformed argument: result 4 (PARAMETER).
    #[error("bad parameter: {0}")]
    Parameter(&'static str),
    /// The bin (or the element a context selects) is not of the kind the op works on: 12.
    #[error("incompatible type: {0}")]
    IncompatibleType(&'static str),
    /// A CREATE_ONLY bit or expression write to a bin that exists: 6.
    #[error("bin exists")]
    BinExists,
    /// An op that needs its bin (a bit modify, an UPDATE_ONLY write) on a missing one: 17.
    #[error("bin not found")]
    BinNotFound,
    /// A map UPDATE_ONLY write of a missing key: 23.
    #[error("element not found")]
    ElementNotFound,
    /// A unique/CREATE_ONLY write of an element that exists: 24.
    #[error("element exists")]
    ElementExists,
    /// An index or rank outside the collection, or an op the collection's order forbids: 26.
    #[error("op not applicable: {0}")]
    NotApplicable(&'static str),
    /// A path modify's expression failed on an element it selected (without NO_FAIL): 1, as
    /// Aerospike CE 8.1 answers; nothing is changed.
    #[error("a path modify expression failed on an element")]
    PathChangeFailed,
    /// A well-formed op this server does not implement: 16.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

impl OpError {
    /// The one-byte Aerospike result code for this failure.
    pub fn result_code(&self) -> u8 {
        match self {
            OpError::PathChangeFailed => 1,
            OpError::Parameter(_) => 4,
            OpError::BinExists => 6,
            OpError::IncompatibleType(_) => 12,
            OpError::BinNotFound => 17,
            OpError::ElementNotFound => 23,
            OpError::ElementExists => 24,
            OpError::NotApplicable(_) => 26,
            OpError::Unsupported(_) => 16,
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;
