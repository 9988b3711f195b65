//! AS_MSG messages (spec §2–§4): the 22-byte header, fields and ops.
//!
//! Owns the message layout and its limits. Decoding validates every length against the bytes
//! that remain and never panics; it does not judge whether a field or op type is known — that
//! is the server's call, because the answer (result code 4 versus 16) depends on what it supports.

use crate::DecodeError;

/// Length of the AS_MSG header.
pub const MSG_HEADER_BYTES: usize = 22;
/// A bin name is at most 15 bytes (longer ones get result 21).
pub const BIN_NAME_BYTES_MAX: usize = 15;

/// info1 bits (read attributes).
pub mod info1 {
    pub const READ: u8 = 0x01;
    pub const GET_ALL: u8 = 0x02;
    pub const BATCH: u8 = 0x08;
    pub const GET_NOBINDATA: u8 = 0x20;
    /// The client accepts a compressed (type 4) reply.
    pub const COMPRESS_RESPONSE: u8 = 0x80;
}

/// info2 bits (write attributes).
pub mod info2 {
    pub const WRITE: u8 = 0x01;
    pub const DELETE: u8 = 0x02;
    pub const GENERATION: u8 = 0x04;
    pub const GENERATION_GT: u8 = 0x08;
    pub const DURABLE_DELETE: u8 = 0x10;
    pub const CREATE_ONLY: u8 = 0x20;
    pub const RESPOND_ALL_OPS: u8 = 0x80;
}

/// info3 bits.
pub mod info3 {
    pub const LAST: u8 = 0x01;
    /// The client's commit level is "master": acknowledge once the master applied the write.
    pub const COMMIT_MASTER: u8 = 0x02;
    pub const UPDATE_ONLY: u8 = 0x08;
    pub const CREATE_OR_REPLACE: u8 = 0x10;
    pub const REPLACE_ONLY: u8 = 0x20;
}

/// Particle (value) types (spec §4.3).
pub mod particle {
    pub const NULL: u8 = 0;
    pub const INTEGER: u8 = 1;
    pub const FLOAT: u8 = 2;
    pub const STRING: u8 = 3;
    pub const BLOB: u8 = 4;
}

/// The 22-byte message header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgHeader {
    pub info1: u8,
    pub info2: u8,
    pub info3: u8,
    pub info4: u8,
    pub result_code: u8,
    pub generation: u32,
    pub record_ttl: u32,
    pub transaction_ttl: u32,
    pub n_fields: u16,
    pub n_ops: u16,
}

impl MsgHeader {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode());
    }

    /// The header's wire form, for a caller that writes it into room it kept.
    pub fn encode(&self) -> [u8; MSG_HEADER_BYTES] {
        let mut b = [0u8; MSG_HEADER_BYTES];
        b[0] = MSG_HEADER_BYTES as u8;
        b[1..6].copy_from_slice(&[
            self.info1,
            self.info2,
            self.info3,
            self.info4,
            self.result_code,
        ]);
        b[6..10].copy_from_slice(&self.generation.to_be_bytes());
        b[10..14].copy_from_slice(&self.record_ttl.to_be_bytes());
        b[14..18].copy_from_slice(&self.transaction_ttl.to_be_bytes());
        b[18..20].copy_from_slice(&self.n_fields.to_be_bytes());
        b[20..22].copy_from_slice(&self.n_ops.to_be_bytes());
        b
    }
}

/// Field type ids (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldType(pub u8);

impl FieldType {
    pub const NAMESPACE: FieldType = FieldType(0);
    pub const SET: FieldType = FieldType(1);
    pub const KEY: FieldType = FieldType(2);
    pub const DIGEST: FieldType = FieldType(4);
    pub const BATCH_INDEX: FieldType = FieldType(41);
    pub const BATCH_INDEX_WITH_SET: FieldType = FieldType(42);
    pub const FILTER_EXP: FieldType = FieldType(43);
}

/// Op type ids (spec §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpType(pub u8);

impl OpType {
    pub const READ: OpType = OpType(1);
    pub const WRITE: OpType = OpType(2);
    pub const CDT_READ: OpType = OpType(3);
    pub const CDT_MODIFY: OpType = OpType(4);
    pub const INCR: OpType = OpType(5);
    pub const EXP_READ: OpType = OpType(7);
    pub const EXP_MODIFY: OpType = OpType(8);
    pub const APPEND: OpType = OpType(9);
    pub const PREPEND: OpType = OpType(10);
    pub const TOUCH: OpType = OpType(11);
    pub const BIT_READ: OpType = OpType(12);
    pub const BIT_MODIFY: OpType = OpType(13);
    pub const DELETE: OpType = OpType(14);
    pub const HLL_READ: OpType = OpType(15);
    pub const HLL_MODIFY: OpType = OpType(16);

    /// Read-type ops need info1 READ (spec §4.2).
    pub fn is_read(self) -> bool {
        matches!(self.0, 1 | 3 | 7 | 12 | 15 | 17 | 19)
    }
}

/// One field: a type and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub field_type: FieldType,
    pub data: Vec<u8>,
}

/// One op: type, particle type, bin name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub op_type: OpType,
    pub particle_type: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Op {
    /// Encoded size of this op, including its 4-byte size word.
    pub fn encoded_bytes(&self) -> usize {
        8 + self.name.len() + self.value.len()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_op_into(
            self.op_type,
            self.particle_type,
            &self.name,
            &self.value,
            out,
        );
    }
}

/// Appends one op in wire form from borrowed parts (a reply can encode a stored bin without
/// first copying it into an [`Op`]).
pub fn encode_op_into(
    op_type: OpType,
    particle_type: u8,
    name: &[u8],
    value: &[u8],
    out: &mut Vec<u8>,
) {
    let name_len = u8::try_from(name.len()).expect("bin name length fits a byte");
    let op_sz = u32::try_from(4 + name.len() + value.len()).expect("op size fits u32");
    out.extend_from_slice(&op_sz.to_be_bytes());
    out.extend_from_slice(&[op_type.0, particle_type, 0, name_len]);
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// A whole AS_MSG message, owned so it can cross cores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub header: MsgHeader,
    pub fields: Vec<Field>,
    pub ops: Vec<Op>,
}

pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let have = self.bytes.len() - self.pos;
        if n > have {
            return Err(DecodeError::Truncated {
                what,
                need: n,
                have,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Reads `n_fields` fields then `n_ops` ops (spec §3.1, §4.1) at the cursor.
pub(crate) fn read_fields_and_ops(
    c: &mut Cursor,
    n_fields: u16,
    n_ops: u16,
) -> Result<(Vec<Field>, Vec<Op>), DecodeError> {
    // Counts come from the wire: cap preallocation by what the bytes could possibly hold.
    let remaining = c.remaining();
    let mut fields = Vec::with_capacity((n_fields as usize).min(remaining / 5));
    for _ in 0..n_fields {
        let field_sz = c.u32("field size")?;
        if field_sz == 0 {
            return Err(DecodeError::BadLength {
                what: "field",
                len: field_sz,
            });
        }
        let data = c.take(field_sz as usize, "field data")?;
        fields.push(Field {
            field_type: FieldType(data[0]),
            data: data[1..].to_vec(),
        });
    }
    let mut ops = Vec::with_capacity((n_ops as usize).min(remaining / 8));
    for _ in 0..n_ops {
        let op_sz = c.u32("op size")?;
        if op_sz < 4 {
            return Err(DecodeError::BadLength {
                what: "op",
                len: op_sz,
            });
        }
        let data = c.take(op_sz as usize, "op data")?;
        let name_len = data[3] as usize;
        if 4 + name_len > data.len() {
            return Err(DecodeError::BadLength {
                what: "op bin name",
                len: name_len as u32,
            });
        }
        ops.push(Op {
            op_type: OpType(data[0]),
            particle_type: data[1],
            name: data[4..4 + name_len].to_vec(),
            value: data[4 + name_len..].to_vec(),
        });
    }
    Ok((fields, ops))
}

impl Message {
    /// Decodes exactly one message that fills `body` (a single-record request).
    pub fn decode(body: &[u8]) -> Result<Message, DecodeError> {
        let mut c = Cursor::new(body);
        let h = c.take(MSG_HEADER_BYTES, "message header")?;
        if h[0] as usize != MSG_HEADER_BYTES {
            return Err(DecodeError::BadHeaderSize(h[0]));
        }
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let header = MsgHeader {
            info1: h[1],
            info2: h[2],
            info3: h[3],
            info4: h[4],
            result_code: h[5],
            generation: be32(6),
            record_ttl: be32(10),
            transaction_ttl: be32(14),
            n_fields: u16::from_be_bytes([h[18], h[19]]),
            n_ops: u16::from_be_bytes([h[20], h[21]]),
        };
        let (fields, ops) = read_fields_and_ops(&mut c, header.n_fields, header.n_ops)?;
        if c.pos != body.len() {
            return Err(DecodeError::TrailingBytes(body.len() - c.pos));
        }
        Ok(Message {
            header,
            fields,
            ops,
        })
    }

    /// The first field of the given type.
    pub fn field(&self, t: FieldType) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.field_type == t)
            .map(|f| f.data.as_slice())
    }

    /// Encodes the message body (no proto header), recomputing the field and op counts.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            MSG_HEADER_BYTES
                + self.fields.iter().map(|f| 5 + f.data.len()).sum::<usize>()
                + self.ops.iter().map(Op::encoded_bytes).sum::<usize>(),
        );
        self.encode_into(&mut out);
        out
    }

    /// [`Message::encode`], appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut header = self.header;
        header.n_fields = u16::try_from(self.fields.len()).expect("field count fits u16");
        header.n_ops = u16::try_from(self.ops.len()).expect("op count fits u16");
        header.encode_into(out);
        for f in &self.fields {
            out.extend_from_slice(&((f.data.len() + 1) as u32).to_be_bytes());
            out.push(f.field_type.0);
            out.extend_from_slice(&f.data);
        }
        for op in &self.ops {
            op.encode_into(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The Python put capture of spec A.3.
    #[test]
    fn decodes_captured_put() {
        let body = unhex(
            "16 00 01 00 00 00 00000000 00000000 000003e8 0003 0003
             00000005 00 74657374 00000005 01 64656d6f
             00000015 04 ec91192d4b7f8ce35d5d78d34bca65cbaaaac960
             0000000d 02 01 00 01 61 0000000000000001
             0000000a 02 03 00 01 62 68656c6c6f
             0000000d 02 02 00 01 63 3ff8000000000000",
        );
        let m = Message::decode(&body).unwrap();
        assert_eq!(m.header.info2, info2::WRITE);
        assert_eq!(m.header.transaction_ttl, 1000);
        assert_eq!(m.field(FieldType::NAMESPACE), Some(&b"test"[..]));
        assert_eq!(m.field(FieldType::SET), Some(&b"demo"[..]));
        assert_eq!(m.ops.len(), 3);
        assert_eq!(m.ops[1].name, b"b");
        assert_eq!(m.ops[1].value, b"hello");
        assert_eq!(m.ops[2].particle_type, particle::FLOAT);
        assert_eq!(m.encode(), body, "re-encoding gives the captured bytes");
    }

    #[test]
    fn rejects_lengths_running_past_the_body() {
        let mut good = Message::default();
        good.header.n_fields = 1;
        good.fields.push(Field {
            field_type: FieldType::NAMESPACE,
            data: b"test".to_vec(),
        });
        good.ops.push(Op {
            op_type: OpType::READ,
            particle_type: 0,
            name: b"a".to_vec(),
            value: vec![],
        });
        let body = good.encode();
        assert!(Message::decode(&body).is_ok());
        // Every strict prefix is truncated somewhere.
        for cut in 0..body.len() {
            assert!(Message::decode(&body[..cut]).is_err(), "prefix {cut}");
        }
        // A field size running past the end.
        let mut bad = body.clone();
        bad[MSG_HEADER_BYTES + 3] = 0xff;
        assert!(matches!(
            Message::decode(&bad),
            Err(DecodeError::Truncated { .. })
        ));
        // An op whose name length exceeds its size.
        let mut bad = body.clone();
        let op_at = MSG_HEADER_BYTES + 9;
        bad[op_at + 7] = 9;
        assert!(matches!(
            Message::decode(&bad),
            Err(DecodeError::BadLength { .. })
        ));
        // Trailing garbage.
        let mut bad = body.clone();
        bad.push(0);
        assert_eq!(Message::decode(&bad), Err(DecodeError::TrailingBytes(1)));
        // Wrong header size byte.
        let mut bad = body;
        bad[0] = 21;
        assert_eq!(Message::decode(&bad), Err(DecodeError::BadHeaderSize(21)));
    }

    #[test]
    fn huge_counts_do_not_preallocate() {
        let mut body = vec![0u8; MSG_HEADER_BYTES];
        body[0] = 22;
        body[18] = 0xff;
        body[19] = 0xff;
        body[20] = 0xff;
        body[21] = 0xff;
        assert!(Message::decode(&body).is_err());
    }
}
