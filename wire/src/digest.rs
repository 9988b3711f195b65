//! Record digests and partition ids, computed exactly as the official clients do (spec §5).
//!
//! Owns the hashing rule. The server never needs to hash on the normal path (clients send the
//! digest), but tests and tools must agree with the clients bit for bit.

use ripemd::{Digest as _, Ripemd160};

/// Number of partitions per namespace; fixed by the protocol.
pub const PARTITION_COUNT: u16 = 4096;
/// Length of a record digest in bytes.
pub const DIGEST_BYTES: usize = 20;

/// The 20-byte RIPEMD-160 digest that identifies a record within a namespace.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

/// A partition id, 0..4096.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u16);

/// The particle type byte of a user key, as hashed.
pub mod key_type {
    pub const INTEGER: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const STRING: u8 = 3;
    pub const BLOB: u8 = 4;
}

impl Digest {
    /// `RIPEMD-160(set ‖ key type ‖ key bytes)`; the namespace is not hashed.
    pub fn compute(set: &[u8], key_type: u8, key: &[u8]) -> Digest {
        let mut h = Ripemd160::new();
        h.update(set);
        h.update([key_type]);
        h.update(key);
        Digest(h.finalize().into())
    }

    pub fn of_string(set: &str, key: &str) -> Digest {
        Digest::compute(set.as_bytes(), key_type::STRING, key.as_bytes())
    }

    pub fn of_integer(set: &str, key: i64) -> Digest {
        Digest::compute(set.as_bytes(), key_type::INTEGER, &key.to_be_bytes())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; DIGEST_BYTES]>::try_from(bytes).ok().map(Digest)
    }

    /// The low 12 bits of the first two digest bytes read little-endian.
    pub fn partition(&self) -> PartitionId {
        let v = u16::from_le_bytes([self.0[0], self.0[1]]);
        PartitionId(v & (PARTITION_COUNT - 1))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Digest) -> String {
        format!("{d:?}")
    }

    /// Vectors from spec §5.3, checked there against the Python client's `calc_digest`.
    #[test]
    fn matches_client_test_vectors() {
        let cases: &[(Digest, &str, u16)] = &[
            (
                Digest::of_string("demo", "key1"),
                "ec91192d4b7f8ce35d5d78d34bca65cbaaaac960",
                492,
            ),
            (
                Digest::of_integer("demo", 42),
                "cf5a1365effa4dc53333f2166d103358f8711096",
                2767,
            ),
            (
                Digest::of_integer("demo", -5),
                "0ee7f6935bf149a69f3bafad97ed118bdaefdf21",
                1806,
            ),
            (
                Digest::of_integer("demo", 0),
                "ceded27492b392e0232514bb54a8ec2076acef37",
                3790,
            ),
            (
                Digest::of_integer("demo", i64::MAX),
                "6964c1df0d52acf332aef2bfdd54ba366285d051",
                1129,
            ),
            (
                Digest::of_string("", "key1"),
                "579f05ecf9e6a9e796f4da2ab0b1323364df5c10",
                3927,
            ),
            (
                Digest::of_integer("", 42),
                "7a7e97c9928be59ec21e441643031a7d48f2ccc6",
                3706,
            ),
            (
                Digest::compute(b"demo", key_type::BLOB, &[1, 2, 3]),
                "ff31c926fbef445648ce63ca72a698a5473425c1",
                511,
            ),
            (
                Digest::of_string("demo", ""),
                "6253653507ba82c3f57c87af2f86d39033149e0c",
                866,
            ),
            (
                Digest::of_string("users", "user:1000"),
                "c81427c6c84c2902eb133e8e1967d61650da76fd",
                1224,
            ),
            (
                Digest::of_string("demo", "key2"),
                "266fc5c994ab9d0aa1c367d99abce6d89e977083",
                3878,
            ),
            (
                Digest::of_string("demo", "nosuch"),
                "0151391a97c5fe9c0e2f832e39b806bce7ce3488",
                257,
            ),
        ];
        for (digest, want_hex, want_pid) in cases {
            assert_eq!(hex(digest), *want_hex);
            assert_eq!(digest.partition(), PartitionId(*want_pid), "{want_hex}");
        }
    }
}
