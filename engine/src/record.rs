//! The record as stored: metadata, set name, optional user key and bins, and its on-disk
//! encoding with a CRC32 over every byte (layout in `docs/storage-format.md`).
//!
//! Owns the record byte layout. Decoding checks the checksum before trusting any length, and
//! must never return a record whose bytes did not verify.

use apogee_wire::digest::DIGEST_BYTES;
use apogee_wire::Digest;

/// "APR1": marks the start of a record in a write block.
pub const RECORD_MAGIC: u32 = 0x4150_5231;
/// Fixed part of a record: magic, length, crc, flags, set length, generation, void time,
/// last-update time, digest.
pub const RECORD_FIXED_BYTES: usize = 48;
/// Set names are at most 63 bytes (Aerospike's limit).
pub const SET_NAME_BYTES_MAX: usize = 63;

const FLAG_TOMBSTONE: u8 = 0x01;

/// Metadata kept for every record, also mirrored in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordMeta {
    /// 1 after creation, +1 per write, wrapping 0xFFFF → 1.
    pub generation: u16,
    /// Seconds since the Citrusleaf epoch; 0 = never expires.
    pub void_time: u32,
    /// Milliseconds since the Citrusleaf epoch.
    pub last_update_ms: u64,
}

/// The user key as the client sent it (field 2): particle type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    pub particle_type: u8,
    pub bytes: Vec<u8>,
}

/// One bin: a name of at most 15 bytes and a typed value, stored as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    pub name: Vec<u8>,
    pub particle_type: u8,
    pub value: Vec<u8>,
}

/// A whole record version. A tombstone has no bins and marks a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub digest: Digest,
    pub meta: RecordMeta,
    pub set_name: Vec<u8>,
    pub user_key: Option<UserKey>,
    pub bins: Vec<Bin>,
    pub tombstone: bool,
}

/// What recovery needs from a record without decoding its bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub digest: Digest,
    pub meta: RecordMeta,
    pub tombstone: bool,
    pub total_bytes: u32,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordDecodeError {
    /// Zero magic: the unwritten tail of a block.
    End,
    BadMagic(u32),
    BadLength(u32),
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    Malformed(&'static str),
}

impl std::fmt::Display for RecordDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordDecodeError::End => write!(f, "no record (zero magic)"),
            RecordDecodeError::BadMagic(m) => write!(f, "bad record magic {m:#010x}"),
            RecordDecodeError::BadLength(l) => write!(f, "bad record length {l}"),
            RecordDecodeError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            RecordDecodeError::Malformed(what) => write!(f, "malformed record: {what}"),
        }
    }
}

/// The tag that binds a record's checksum to the block it was written in: the stored CRC is
/// `crc32(record) XOR tag(block sequence)`. Bytes left over from an earlier use of a reused
/// block carry another sequence's tag, so they fail the checksum instead of being replayed.
pub fn block_tag(sequence: u64) -> u32 {
    (sequence ^ (sequence >> 32)) as u32
}

/// Moves encoded record bytes from the block tagged `from` to the block tagged `to`.
pub fn retag(bytes: &mut [u8], from: u32, to: u32) {
    let stored = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    bytes[8..12].copy_from_slice(&(stored ^ from ^ to).to_be_bytes());
}

/// Stores the checksum (tag 0) of an encoded record in its header.
pub fn write_checksum(encoded: &mut [u8]) {
    let crc = checksum(encoded);
    encoded[8..12].copy_from_slice(&crc.to_be_bytes());
}

fn checksum(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[0..8]);
    h.update(&bytes[12..]);
    h.finalize()
}

impl Record {
    /// The version that marks `digest` deleted: no set, no key, no bins. It keeps the last
    /// generation so a later re-creation is ordered after it.
    pub fn tombstone(digest: Digest, generation: u16, last_update_ms: u64) -> Record {
        Record {
            digest,
            meta: RecordMeta {
                generation,
                void_time: 0,
                last_update_ms,
            },
            set_name: vec![],
            user_key: None,
            bins: vec![],
            tombstone: true,
        }
    }

    /// The exact size `encode_into` will write.
    pub fn encoded_bytes(&self) -> usize {
        RECORD_FIXED_BYTES
            + self.set_name.len()
            + 1
            + self.user_key.as_ref().map_or(0, |k| 4 + k.bytes.len())
            + 2
            + self
                .bins
                .iter()
                .map(|b| 1 + b.name.len() + 1 + 4 + b.value.len())
                .sum::<usize>()
    }

    /// Appends the encoded record (with its checksum) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.encoded_bytes(), 0);
        self.encode_to(&mut out[start..]);
    }

    /// Encodes the record (with its checksum, tag 0) into `out`, which must be exactly
    /// [`Record::encoded_bytes`] long.
    pub fn encode_to(&self, out: &mut [u8]) {
        self.encode_unsummed(out);
        write_checksum(out);
    }

    /// [`Record::encode_to`] without the checksum, left zero: [`write_checksum`] completes it
    /// (the store does other work between the two while the bytes are still in cache).
    pub fn encode_unsummed(&self, out: &mut [u8]) {
        assert!(
            self.set_name.len() <= SET_NAME_BYTES_MAX,
            "set name too long"
        );
        assert!(
            !self.tombstone || self.bins.is_empty(),
            "tombstone with bins"
        );
        let total = self.encoded_bytes();
        assert_eq!(out.len(), total, "encode_to needs exactly encoded_bytes");
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&RECORD_MAGIC.to_be_bytes());
        put(&(total as u32).to_be_bytes());
        put(&[0; 4]); // checksum, filled below
        put(&[if self.tombstone { FLAG_TOMBSTONE } else { 0 }]);
        put(&[self.set_name.len() as u8]);
        put(&self.meta.generation.to_be_bytes());
        put(&self.meta.void_time.to_be_bytes());
        put(&self.meta.last_update_ms.to_be_bytes());
        put(&self.digest.0);
        put(&self.set_name);
        match &self.user_key {
            None => put(&[0]),
            Some(k) => {
                assert!(k.particle_type != 0, "user key needs a particle type");
                put(&[k.particle_type]);
                put(&(k.bytes.len() as u32).to_be_bytes());
                put(&k.bytes);
            }
        }
        put(&(self.bins.len() as u16).to_be_bytes());
        for b in &self.bins {
            put(&[b.name.len() as u8]);
            put(&b.name);
            put(&[b.particle_type]);
            put(&(b.value.len() as u32).to_be_bytes());
            put(&b.value);
        }
        assert_eq!(at, total, "encoded size matches encoded_bytes");
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_bytes());
        self.encode_into(&mut v);
        v
    }

    /// Decodes an untagged record (tag 0), checksum first.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordDecodeError> {
        Record::decode_tagged(bytes, 0)
    }

    /// Decodes a whole record from `bytes` (which may run past its end), checksum first, as
    /// stored in a block with checksum tag `tag`.
    pub fn decode_tagged(bytes: &[u8], tag: u32) -> Result<Record, RecordDecodeError> {
        Ok(RecordView::decode_tagged(bytes, tag)?.to_record())
    }
}

/// A verified record read where its bytes lie: the header decoded, the set name, key and bins
/// borrowed. A read that only re-encodes bins (a get of every bin) needs no owned copy.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub digest: Digest,
    pub meta: RecordMeta,
    pub tombstone: bool,
    pub set_name: &'a [u8],
    /// (particle type, bytes) of the stored user key.
    pub user_key: Option<(u8, &'a [u8])>,
    bin_count: u16,
    /// The bins' bytes, every length in them checked by [`RecordView::decode_tagged`].
    bins: &'a [u8],
}

/// One bin of a [`RecordView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinView<'a> {
    pub name: &'a [u8],
    pub particle_type: u8,
    pub value: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Verifies the record `bytes` start with (checksum first, as stored in a block with
    /// checksum tag `tag`) and checks every length in it, so iterating its bins cannot fail.
    pub fn decode_tagged(bytes: &'a [u8], tag: u32) -> Result<RecordView<'a>, RecordDecodeError> {
        Self::decode_checked(bytes, Some(tag))
    }

    /// [`RecordView::decode_tagged`] without the checksum, for bytes that were verified (or
    /// encoded here) before they were kept in memory, such as the record cache's: the checksum
    /// guards against the media, and these bytes no longer come from it. Every length is still
    /// checked, so iterating the bins cannot fail.
    pub fn decode_verified(bytes: &'a [u8]) -> Result<RecordView<'a>, RecordDecodeError> {
        Self::decode_checked(bytes, None)
    }

    /// Decodes, verifying the checksum with `tag` when there is one.
    fn decode_checked(
        bytes: &'a [u8],
        tag: Option<u32>,
    ) -> Result<RecordView<'a>, RecordDecodeError> {
        let h = decode_header_checked(bytes, tag)?;
        let body = &bytes[RECORD_FIXED_BYTES..h.total_bytes as usize];
        let mut r = Reader { bytes: body };
        let set_len = bytes[13] as usize;
        // What the encoder can never write is refused, so a verified record always
        // re-encodes (found by fuzzing: these used to decode and then fail an assertion).
        if set_len > SET_NAME_BYTES_MAX {
            return Err(RecordDecodeError::Malformed(
                "set name longer than 63 bytes",
            ));
        }
        let set_name = r.take(set_len)?;
        let key_type = r.take(1)?[0];
        let user_key = if key_type == 0 {
            None
        } else {
            let n = r.u32()? as usize;
            Some((key_type, r.take(n)?))
        };
        let bin_count = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes"));
        if h.tombstone && bin_count > 0 {
            return Err(RecordDecodeError::Malformed("a tombstone with bins"));
        }
        let bins = r.bytes;
        for _ in 0..bin_count {
            next_bin(&mut r)?;
        }
        if !r.bytes.is_empty() {
            return Err(RecordDecodeError::Malformed("bytes after the last bin"));
        }
        Ok(RecordView {
            digest: h.digest,
            meta: h.meta,
            tombstone: h.tombstone,
            set_name,
            user_key,
            bin_count,
            bins,
        })
    }

    pub fn bin_count(&self) -> usize {
        usize::from(self.bin_count)
    }

    /// The bytes the bins take as stored: per bin, 6 bytes of lengths and type besides its
    /// name and value.
    pub fn stored_bin_bytes(&self) -> usize {
        self.bins.len()
    }

    /// The bins in stored order.
    pub fn bins(&self) -> impl Iterator<Item = BinView<'a>> + 'a {
        let mut r = Reader { bytes: self.bins };
        (0..self.bin_count).map(move |_| next_bin(&mut r).expect("lengths checked at decode"))
    }

    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            digest: self.digest,
            meta: self.meta,
            set_name: self.set_name.to_vec(),
            user_key: self.user_key.map(|(particle_type, bytes)| UserKey {
                particle_type,
                bytes: bytes.to_vec(),
            }),
            bins: (self.bins())
                .map(|b| Bin {
                    name: b.name.to_vec(),
                    particle_type: b.particle_type,
                    value: b.value.to_vec(),
                })
                .collect(),
            tombstone: self.tombstone,
        }
    }
}

/// The next bin of a record body: name length, name, particle type, value length, value.
fn next_bin<'a>(r: &mut Reader<'a>) -> Result<BinView<'a>, RecordDecodeError> {
    let name_len = r.take(1)?[0] as usize;
    let name = r.take(name_len)?;
    let particle_type = r.take(1)?[0];
    let n = r.u32()? as usize;
    Ok(BinView {
        name,
        particle_type,
        value: r.take(n)?,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordDecodeError> {
        if n > self.bytes.len() {
            return Err(RecordDecodeError::Malformed("length runs past the record"));
        }
        let (a, b) = self.bytes.split_at(n);
        self.bytes = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, RecordDecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// `decode_header_tagged` for untagged bytes (tag 0).
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, RecordDecodeError> {
    decode_header_tagged(bytes, 0)
}

/// Validates the magic, length and checksum (with the block's tag) of the record at the start
/// of `bytes` and returns its fixed header. Nothing is trusted before the checksum verifies.
/// The set name of an encoded record whose header has been verified (bytes 48.. after the
/// one-byte length at 13).
pub fn set_name_of(encoded: &[u8]) -> &[u8] {
    let n = usize::from(encoded[13]);
    &encoded[RECORD_FIXED_BYTES..RECORD_FIXED_BYTES + n]
}

/// The digests of the records of `block` from `pos` on, read from their fixed headers without
/// checking anything but magic and length: hints for prefetching only, never trusted.
pub fn digests_ahead(block: &[u8], mut pos: usize) -> Vec<Digest> {
    let mut out = Vec::new();
    while let Ok(total) = record_len(&block[pos..]) {
        out.push(Digest::from_slice(&block[pos + 28..pos + 28 + DIGEST_BYTES]).expect("20 bytes"));
        pos += total;
    }
    out
}

/// The length of the record `bytes` start with, from its magic and length fields alone (no
/// checksum): `End` at the zero terminator.
fn record_len(bytes: &[u8]) -> Result<usize, RecordDecodeError> {
    if bytes.len() < 8 {
        return Err(RecordDecodeError::End);
    }
    let magic = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if magic == 0 {
        return Err(RecordDecodeError::End);
    }
    if magic != RECORD_MAGIC {
        return Err(RecordDecodeError::BadMagic(magic));
    }
    let total = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if (total as usize) < RECORD_FIXED_BYTES + 3 || total as usize > bytes.len() {
        return Err(RecordDecodeError::BadLength(total));
    }
    Ok(total as usize)
}

pub fn decode_header_tagged(bytes: &[u8], tag: u32) -> Result<RecordHeader, RecordDecodeError> {
    decode_header_checked(bytes, Some(tag))
}

/// The header, its checksum verified with `tag` when there is one.
fn decode_header_checked(
    bytes: &[u8],
    tag: Option<u32>,
) -> Result<RecordHeader, RecordDecodeError> {
    let total = record_len(bytes)? as u32;
    let rec = &bytes[..total as usize];
    if let Some(tag) = tag {
        let stored = u32::from_be_bytes(rec[8..12].try_into().expect("4 bytes")) ^ tag;
        let computed = checksum(rec);
        if stored != computed {
            return Err(RecordDecodeError::BadChecksum { stored, computed });
        }
    }
    let flags = rec[12];
    let digest = Digest::from_slice(&rec[28..28 + DIGEST_BYTES]).expect("20 bytes");
    Ok(RecordHeader {
        digest,
        meta: RecordMeta {
            generation: u16::from_be_bytes([rec[14], rec[15]]),
            void_time: u32::from_be_bytes(rec[16..20].try_into().expect("4 bytes")),
            last_update_ms: u64::from_be_bytes(rec[20..28].try_into().expect("8 bytes")),
        },
        tombstone: flags & FLAG_TOMBSTONE != 0,
        total_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(gen: u16) -> Record {
        Record {
            digest: Digest::of_string("demo", "key1"),
            meta: RecordMeta {
                generation: gen,
                void_time: 12345,
                last_update_ms: 999,
            },
            set_name: b"demo".to_vec(),
            user_key: Some(UserKey {
                particle_type: 3,
                bytes: b"key1".to_vec(),
            }),
            bins: vec![
                Bin {
                    name: b"a".to_vec(),
                    particle_type: 1,
                    value: 7i64.to_be_bytes().to_vec(),
                },
                Bin {
                    name: b"longest_bin_nam".to_vec(),
                    particle_type: 3,
                    value: b"hello".to_vec(),
                },
            ],
            tombstone: false,
        }
    }

    #[test]
    fn round_trips() {
        let r = sample(3);
        let bytes = r.encode();
        assert_eq!(bytes.len(), r.encoded_bytes());
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(Record::decode(&padded).unwrap(), r);
        let h = decode_header(&padded).unwrap();
        assert_eq!(h.total_bytes as usize, bytes.len());
        assert_eq!(h.meta.generation, 3);
    }

    #[test]
    fn a_view_borrows_what_decode_copies() {
        let r = sample(3);
        let bytes = r.encode();
        let v = RecordView::decode_tagged(&bytes, 0).unwrap();
        assert_eq!((v.digest, v.meta, v.tombstone), (r.digest, r.meta, false));
        assert_eq!(v.set_name, b"demo");
        assert_eq!(v.user_key, Some((3, &b"key1"[..])));
        let bins: Vec<BinView<'_>> = v.bins().collect();
        assert_eq!(bins.len(), v.bin_count());
        assert_eq!(
            bins[1],
            BinView {
                name: b"longest_bin_nam",
                particle_type: 3,
                value: b"hello",
            }
        );
        // Per bin 6 bytes besides name and value: (1 + 6 + 8) + (15 + 6 + 5).
        assert_eq!(v.stored_bin_bytes(), 41);
        assert_eq!(v.to_record(), r);
    }

    #[test]
    fn a_bin_count_past_the_bytes_is_refused() {
        // Claim a third bin; the checksum is rewritten so only the lengths are wrong.
        let r = sample(1);
        let mut bytes = r.encode();
        let at = RECORD_FIXED_BYTES + r.set_name.len() + 1 + 4 + 4;
        assert_eq!(&bytes[at..at + 2], &[0, 2]);
        bytes[at + 1] = 3;
        write_checksum(&mut bytes);
        assert!(matches!(
            RecordView::decode_tagged(&bytes, 0),
            Err(RecordDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn what_the_encoder_cannot_write_does_not_verify() {
        // A tombstone flag on a record with bins, checksum rewritten.
        let mut bytes = sample(1).encode();
        bytes[12] |= FLAG_TOMBSTONE;
        write_checksum(&mut bytes);
        assert_eq!(
            RecordView::decode_tagged(&bytes, 0).unwrap_err(),
            RecordDecodeError::Malformed("a tombstone with bins")
        );
        // A 64-byte set name (the encoder stops at 63).
        let mut r = sample(1);
        r.set_name = vec![b's'; SET_NAME_BYTES_MAX];
        let mut bytes = r.encode();
        bytes[13] = 64;
        bytes.insert(RECORD_FIXED_BYTES, b's');
        let total = bytes.len() as u32;
        bytes[4..8].copy_from_slice(&total.to_be_bytes());
        write_checksum(&mut bytes);
        assert_eq!(
            RecordView::decode_tagged(&bytes, 0).unwrap_err(),
            RecordDecodeError::Malformed("set name longer than 63 bytes")
        );
    }

    #[test]
    fn tombstone_round_trips() {
        let mut r = sample(4);
        r.bins.clear();
        r.user_key = None;
        r.tombstone = true;
        let back = Record::decode(&r.encode()).unwrap();
        assert!(back.tombstone);
        assert_eq!(back, r);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample(1).encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            assert!(
                Record::decode(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_verifies_only_under_its_block_tag() {
        let mut bytes = sample(1).encode();
        retag(&mut bytes, 0, block_tag(7));
        assert!(Record::decode_tagged(&bytes, block_tag(7)).is_ok());
        assert!(matches!(
            decode_header_tagged(&bytes, block_tag(8)),
            Err(RecordDecodeError::BadChecksum { .. })
        ));
        assert!(Record::decode(&bytes).is_err());
        retag(&mut bytes, block_tag(7), block_tag(9));
        assert_eq!(
            Record::decode_tagged(&bytes, block_tag(9)).unwrap(),
            sample(1)
        );
    }

    #[test]
    fn zero_bytes_mean_end() {
        assert_eq!(decode_header(&[0; 64]), Err(RecordDecodeError::End));
    }
}
