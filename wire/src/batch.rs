//! Batch-index requests (field 41, spec §7.2): the row list a batch carries, each row expanded
//! into the single-record [`Message`] it stands for (spec §7.3), so the server runs a row
//! exactly as it runs a keyed command.
//!
//! Owns the row layout and its checks: a row count that does not match the rows, a REPEAT
//! flag on the first row, a truncated row or bytes after the last row are decode errors (the
//! server answers 4). It must never judge what a row asks for (that is the server's call).

use std::sync::Arc;

use crate::digest::DIGEST_BYTES;
use crate::msg::{read_fields_and_ops, Cursor, Field, FieldType, Message, MsgHeader};
use crate::{DecodeError, Digest};

/// Bytes of the smallest row: index, digest and row flags (a REPEAT row).
pub const ROW_BYTES_MIN: usize = 4 + DIGEST_BYTES + 1;

/// Most fields a row may carry: room is left for the batch's filter and the row's digest.
pub const ROW_FIELDS_MAX: u16 = u16::MAX - 2;

/// Row flags (spec §7.2).
pub mod row_flag {
    /// The row reuses everything but the digest from the previous full row.
    pub const REPEAT: u8 = 0x01;
    /// info2 and info3 follow info1.
    pub const INFO: u8 = 0x02;
    /// A `u16` generation follows.
    pub const GEN: u8 = 0x04;
    /// A `u32` record TTL follows.
    pub const TTL: u8 = 0x08;
    /// info4 follows.
    pub const INFO4: u8 = 0x10;
}

/// Parent (whole-batch) flags (spec §7.2).
pub mod parent_flag {
    /// Answer every row, not only up to the first error.
    pub const RESPOND_ALL_KEYS: u8 = 0x04;
}

/// The SC read-mode bits of info3 a row without INFO takes from the outer header.
const INFO3_SC_READ_BITS: u8 = 0xc0;

/// Most rows one batch may carry. Each row holds ~40 bytes once decoded (REPEAT rows share
/// their command), so this bounds a batch's decoded rows to about 40 MiB.
pub const BATCH_ROWS_MAX: u32 = 1_000_000;

/// One row: where the client placed it, its digest and the command it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    /// The row's position in the caller's list; its reply carries it back.
    pub index: u32,
    pub digest: Digest,
    /// The row's command without its digest: header (timeout from the outer header),
    /// fields and ops. REPEAT rows share their template's.
    pub command: Arc<Message>,
}

impl BatchRow {
    /// The row as the keyed command it stands for: its command with a DIGEST field added.
    pub fn message(&self) -> Message {
        let mut msg = Message::clone(&self.command);
        msg.fields.push(Field {
            field_type: FieldType::DIGEST,
            data: self.digest.0.to_vec(),
        });
        msg.header.n_fields = msg.fields.len() as u16;
        msg
    }
}

/// A decoded batch-index request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    pub parent_flags: u8,
    pub rows: Vec<BatchRow>,
}

/// Decodes field 41's data. `outer` is the batch message's header (timeout, SC read bits);
/// `parent_filter` is the batch's own filter expression (field 43), given to every row that
/// has none of its own (spec §7.3).
pub fn decode(
    data: &[u8],
    outer: &MsgHeader,
    parent_filter: Option<&[u8]>,
) -> Result<BatchRequest, DecodeError> {
    let mut c = Cursor::new(data);
    let count = c.u32("batch row count")?;
    let parent_flags = c.u8("batch parent flags")?;
    if count > BATCH_ROWS_MAX {
        return Err(DecodeError::BadLength {
            what: "batch row count",
            len: count,
        });
    }
    // The count comes from the wire: preallocate no more rows than the bytes can hold.
    let mut rows: Vec<BatchRow> =
        Vec::with_capacity((count as usize).min(c.remaining() / ROW_BYTES_MIN));
    // The previous full (non-REPEAT) row's command, without its digest field.
    let mut template: Option<Arc<Message>> = None;
    for _ in 0..count {
        let index = c.u32("batch row index")?;
        let digest_bytes = c.take(DIGEST_BYTES, "batch row digest")?;
        let digest = Digest::from_slice(digest_bytes).ok_or(DecodeError::BadLength {
            what: "batch row digest",
            len: digest_bytes.len() as u32,
        })?;
        let flags = c.u8("batch row flags")?;
        if flags & row_flag::REPEAT == 0 {
            template = Some(Arc::new(read_row(&mut c, flags, outer, parent_filter)?));
        }
        let Some(command) = &template else {
            return Err(DecodeError::BatchRepeatFirst(index));
        };
        rows.push(BatchRow {
            index,
            digest,
            command: command.clone(),
        });
    }
    if c.remaining() != 0 {
        return Err(DecodeError::TrailingBytes(c.remaining()));
    }
    debug_assert_eq!(rows.len(), count as usize);
    Ok(BatchRequest { parent_flags, rows })
}

/// Reads a full row's attributes, fields and ops (everything after its flags).
fn read_row(
    c: &mut Cursor,
    flags: u8,
    outer: &MsgHeader,
    parent_filter: Option<&[u8]>,
) -> Result<Message, DecodeError> {
    let mut header = MsgHeader {
        info1: c.u8("batch row info1")?,
        info3: outer.info3 & INFO3_SC_READ_BITS,
        transaction_ttl: outer.transaction_ttl,
        ..MsgHeader::default()
    };
    if flags & row_flag::INFO != 0 {
        header.info2 = c.u8("batch row info2")?;
        header.info3 = c.u8("batch row info3")?;
    }
    if flags & row_flag::INFO4 != 0 {
        header.info4 = c.u8("batch row info4")?;
    }
    if flags & row_flag::GEN != 0 {
        header.generation = u32::from(c.u16("batch row generation")?);
    }
    if flags & row_flag::TTL != 0 {
        header.record_ttl = c.u32("batch row ttl")?;
    }
    let n_fields = c.u16("batch row field count")?;
    // A row's command gains a filter and a digest field and must still count them in a u16.
    if n_fields > ROW_FIELDS_MAX {
        return Err(DecodeError::BadLength {
            what: "batch row field count",
            len: u32::from(n_fields),
        });
    }
    let n_ops = c.u16("batch row op count")?;
    let (mut fields, ops) = read_fields_and_ops(c, n_fields, n_ops)?;
    if let Some(filter) = parent_filter {
        if !fields.iter().any(|f| f.field_type == FieldType::FILTER_EXP) {
            fields.push(Field {
                field_type: FieldType::FILTER_EXP,
                data: filter.to_vec(),
            });
        }
    }
    header.n_fields = fields.len() as u16;
    header.n_ops = ops.len() as u16;
    Ok(Message {
        header,
        fields,
        ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::info1;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The Python `batch_read([key1, key2, nosuch])` capture of spec §7.2.
    const CAPTURED: &str = "00000003 0d
        00000000 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960 0a 03 00 00 00000000 0002 0000
                 00000005 00 74657374  00000005 01 64656d6f
        00000001 266fc5c994ab9d0aa1c367d99abce6d89e977083 01
        00000002 0151391a97c5fe9c0e2f832e39b806bce7ce3488 01";

    fn outer() -> MsgHeader {
        MsgHeader {
            info1: info1::BATCH,
            transaction_ttl: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_the_captured_batch_read() {
        let b = decode(&unhex(CAPTURED), &outer(), None).unwrap();
        assert_eq!(b.parent_flags, 0x0d);
        assert_eq!(b.rows.len(), 3);
        assert!(Arc::ptr_eq(&b.rows[0].command, &b.rows[2].command));
        for (i, row) in b.rows.iter().enumerate() {
            assert_eq!(row.index, i as u32);
            let msg = row.message();
            assert_eq!(msg.header.info1, info1::READ | info1::GET_ALL);
            assert_eq!(msg.header.transaction_ttl, 1000);
            assert_eq!(msg.field(FieldType::NAMESPACE), Some(&b"test"[..]));
            assert_eq!(msg.field(FieldType::SET), Some(&b"demo"[..]));
            assert_eq!(
                msg.field(FieldType::DIGEST),
                Some(&row.digest.0[..]),
                "each row carries its own digest"
            );
            assert!(msg.ops.is_empty());
        }
        assert_ne!(b.rows[0].digest, b.rows[1].digest);
        // The row decodes back as the keyed command it stands for.
        let again = Message::decode(&b.rows[2].message().encode()).unwrap();
        assert_eq!(again, b.rows[2].message());
    }

    #[test]
    fn reads_optional_row_attributes_and_ops() {
        // One row with INFO, INFO4, GEN and TTL, a READ op on bin "a".
        let data = unhex(
            "00000001 0d
             00000007 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960 1e 01 81 08 02 0009 00000064 0001 0001
             00000005 00 74657374
             00000005 01 00 00 01 61",
        );
        let b = decode(&data, &outer(), Some(b"\x93")).unwrap();
        let h = b.rows[0].command.header;
        assert_eq!(b.rows[0].index, 7);
        assert_eq!((h.info1, h.info2, h.info3, h.info4), (1, 0x81, 0x08, 0x02));
        assert_eq!((h.generation, h.record_ttl), (9, 100));
        assert_eq!(b.rows[0].command.ops[0].name, b"a");
        assert_eq!(
            b.rows[0].command.field(FieldType::FILTER_EXP),
            Some(&b"\x93"[..]),
            "the parent filter goes to a row without its own"
        );
    }

    #[test]
    fn a_row_without_info_takes_the_outer_sc_read_bits() {
        let mut o = outer();
        o.info3 = 0xc0 | 0x08;
        let data = unhex(
            "00000001 0d
             00000000 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960 08 03 00000000 0001 0000
             00000005 00 74657374",
        );
        let b = decode(&data, &o, None).unwrap();
        assert_eq!(b.rows[0].command.header.info3, 0xc0);
        assert_eq!(b.rows[0].command.header.info2, 0);
    }

    #[test]
    fn rejects_malformed_batches() {
        let good = unhex(CAPTURED);
        // Every strict prefix is truncated somewhere (including a count with no rows).
        for cut in 0..good.len() {
            assert!(
                decode(&good[..cut], &outer(), None).is_err(),
                "prefix {cut}"
            );
        }
        // A count larger than the rows sent.
        let mut more = good.clone();
        more[3] = 4;
        assert!(matches!(
            decode(&more, &outer(), None),
            Err(DecodeError::Truncated { .. })
        ));
        // A count smaller than the rows sent.
        let mut fewer = good.clone();
        fewer[3] = 2;
        assert!(matches!(
            decode(&fewer, &outer(), None),
            Err(DecodeError::TrailingBytes(_))
        ));
        // A huge count does not preallocate and fails.
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&huge, &outer(), None).is_err());
        // REPEAT on the first row.
        let repeat_first =
            unhex("00000001 0d 00000005 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960 01");
        assert_eq!(
            decode(&repeat_first, &outer(), None),
            Err(DecodeError::BatchRepeatFirst(5))
        );
        // More fields than a row's command can count once its digest is added.
        let mut many = unhex(
            "00000001 0d 00000000 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960 08 03 00000000 ffff 0000",
        );
        many.extend(std::iter::repeat_n([0, 0, 0, 1, 0], 0xffff).flatten());
        assert!(matches!(
            decode(&many, &outer(), None),
            Err(DecodeError::BadLength { .. })
        ));
        // A field size running past the row.
        let mut bad_field = good;
        bad_field[5 + 4 + 20 + 1 + 4 + 4 + 3] = 0xff;
        assert!(decode(&bad_field, &outer(), None).is_err());
    }

    #[test]
    fn an_empty_batch_is_valid() {
        let b = decode(&unhex("00000000 0d"), &outer(), None).unwrap();
        assert!(b.rows.is_empty());
    }
}
