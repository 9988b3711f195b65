//! The header page at offset 0 of every data file: what wrote the file and how to read it.
//!
//! Owns the check that a file belongs to this namespace, shard layout and format version. It
//! must never let a file written under other settings be reinterpreted silently.

use crate::block::IO_ALIGN_BYTES;

/// "APOGEEDB".
pub const FILE_MAGIC: [u8; 8] = *b"APOGEEDB";
/// Bumped on any incompatible change to `docs/storage-format.md`.
pub const FORMAT_VERSION: u32 = 2;
/// The header occupies one aligned page; blocks start right after it.
pub const FILE_HEADER_BYTES: usize = IO_ALIGN_BYTES;
/// Namespace names are at most 31 bytes.
pub const NAMESPACE_BYTES_MAX: usize = 31;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub format_version: u32,
    pub namespace: String,
    pub shard: u32,
    pub shard_count: u32,
    pub block_bytes: u32,
    /// Size of the region this header starts, in MiB, when the file or device is shared by
    /// several shards (one region each); 0 for a shard's own file (the whole file).
    pub region_mib: u32,
}

impl FileHeader {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.namespace.len() <= NAMESPACE_BYTES_MAX);
        let mut b = vec![0u8; FILE_HEADER_BYTES];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..12].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..20].copy_from_slice(&self.shard.to_be_bytes());
        b[20..24].copy_from_slice(&self.shard_count.to_be_bytes());
        b[24..28].copy_from_slice(&self.block_bytes.to_be_bytes());
        b[28] = self.namespace.len() as u8;
        b[29..29 + self.namespace.len()].copy_from_slice(self.namespace.as_bytes());
        b[60..64].copy_from_slice(&self.region_mib.to_be_bytes());
        let crc = crc32fast::hash(&b[16..64]);
        b[12..16].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes a header page; the error says what is wrong in words.
    pub fn decode(b: &[u8]) -> Result<FileHeader, String> {
        if b.len() < 64 {
            return Err(format!(
                "file is {} bytes, shorter than its header",
                b.len()
            ));
        }
        if b[0..8] != FILE_MAGIC {
            return Err("not an Apogee data file (bad magic)".into());
        }
        let be32 = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let format_version = be32(8);
        if format_version != FORMAT_VERSION {
            return Err(format!(
                "written in format version {format_version}, this build reads version {FORMAT_VERSION}"
            ));
        }
        if be32(12) != crc32fast::hash(&b[16..64]) {
            return Err("file header checksum mismatch".into());
        }
        let ns_len = b[28] as usize;
        if ns_len > NAMESPACE_BYTES_MAX {
            return Err(format!("namespace length {ns_len} in header is invalid"));
        }
        let namespace = std::str::from_utf8(&b[29..29 + ns_len])
            .map_err(|_| "namespace in header is not UTF-8".to_string())?
            .to_string();
        Ok(FileHeader {
            format_version,
            namespace,
            shard: be32(16),
            shard_count: be32(20),
            block_bytes: be32(24),
            region_mib: be32(60),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let h = FileHeader {
            format_version: FORMAT_VERSION,
            namespace: "test".into(),
            shard: 1,
            shard_count: 2,
            block_bytes: 1 << 20,
            region_mib: 7,
        };
        let b = h.encode();
        assert_eq!(FileHeader::decode(&b).unwrap(), h);
        let mut v2 = b.clone();
        v2[11] = 3;
        assert!(FileHeader::decode(&v2)
            .unwrap_err()
            .contains("format version 3"));
        let mut bad = b;
        bad[20] ^= 1;
        assert!(FileHeader::decode(&bad).unwrap_err().contains("checksum"));
    }
}
