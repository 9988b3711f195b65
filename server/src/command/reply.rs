//! Building AS_MSG reply frames for single-record commands (spec §6).

use apogee_engine::record::RecordView;
use apogee_wire::msg::{encode_op_into, info3, Message, MsgHeader, Op, OpType, MSG_HEADER_BYTES};
use apogee_wire::proto::{frame, ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::{MsgType, ResultCode};

/// Room kept before an all-bins reply's ops for the proto and message headers, so the reply
/// becomes its frame in place: one allocation per get, no copy of the record's bins.
const HEADROOM_BYTES: usize = PROTO_HEADER_BYTES + MSG_HEADER_BYTES;

/// The outcome of a keyed command, before encoding.
#[derive(Debug, Default)]
pub struct Reply {
    pub result: u8,
    pub generation: u32,
    pub void_time: u32,
    pub ops: Vec<Op>,
    /// Ops already in wire form, after `ops`: a get of every bin encodes the stored bins
    /// straight from the record's bytes instead of copying each into an [`Op`] first.
    pub encoded: EncodedOps,
}

/// Reply ops in wire form, and how many.
#[derive(Debug, Default)]
pub struct EncodedOps {
    count: u16,
    /// `headroom` unused bytes, then the ops.
    bytes: Vec<u8>,
    headroom: usize,
}

impl EncodedOps {
    fn ops(&self) -> &[u8] {
        &self.bytes[self.headroom..]
    }
}

impl Reply {
    pub fn code(rc: ResultCode) -> Reply {
        Reply {
            result: rc as u8,
            ..Default::default()
        }
    }

    pub fn ok(generation: u16, void_time: u32, ops: Vec<Op>) -> Reply {
        Reply {
            result: ResultCode::Ok as u8,
            generation: u32::from(generation),
            void_time,
            ops,
            encoded: EncodedOps::default(),
        }
    }

    /// Every bin of a stored record as READ ops, encoded where the record lies.
    pub fn all_bins(record: &RecordView<'_>) -> Reply {
        // A stored bin takes 6 bytes besides its name and value, a READ op 8.
        let mut encoded = EncodedOps {
            count: 0,
            bytes: Vec::with_capacity(
                HEADROOM_BYTES + record.stored_bin_bytes() + 2 * record.bin_count(),
            ),
            headroom: HEADROOM_BYTES,
        };
        encoded.bytes.resize(HEADROOM_BYTES, 0);
        for bin in record.bins() {
            encode_op_into(
                OpType::READ,
                bin.particle_type,
                bin.name,
                bin.value,
                &mut encoded.bytes,
            );
            encoded.count += 1;
        }
        Reply {
            encoded,
            ..Reply::ok(record.meta.generation, record.meta.void_time, vec![])
        }
    }

    /// Appends the reply as an AS_MSG body (no fields) with `transaction_ttl` set as given.
    fn encode_into(self, transaction_ttl: u32, out: &mut Vec<u8>) {
        let header = self.header(transaction_ttl);
        out.reserve(self.body_bytes());
        header.encode_into(out);
        for op in &self.ops {
            op.encode_into(out);
        }
        out.extend_from_slice(self.encoded.ops());
    }

    /// The encoded message's size: its header and every op.
    fn body_bytes(&self) -> usize {
        MSG_HEADER_BYTES
            + self.ops.iter().map(Op::encoded_bytes).sum::<usize>()
            + self.encoded.ops().len()
    }

    fn header(&self, transaction_ttl: u32) -> MsgHeader {
        let n_ops = self.ops.len() + usize::from(self.encoded.count);
        MsgHeader {
            result_code: self.result,
            generation: self.generation,
            record_ttl: self.void_time,
            transaction_ttl,
            n_fields: 0,
            n_ops: u16::try_from(n_ops).expect("op count fits u16"),
            ..Default::default()
        }
    }

    /// Appends the reply as one row message of a batch reply (spec §7.4): the row's index
    /// goes in `transaction_ttl`, where the client looks for it.
    pub fn encode_row_into(self, index: u32, out: &mut Vec<u8>) {
        self.encode_into(index, out);
    }

    /// Encodes the reply as a whole type-3 frame.
    pub fn into_frame(mut self) -> Vec<u8> {
        let mut out = if self.ops.is_empty() && self.encoded.headroom == HEADROOM_BYTES {
            // An all-bins reply: its headers go in the room kept before its ops.
            let header = self.header(0).encode();
            let mut out = std::mem::take(&mut self.encoded.bytes);
            out[PROTO_HEADER_BYTES..HEADROOM_BYTES].copy_from_slice(&header);
            out
        } else {
            let mut out = Vec::with_capacity(PROTO_HEADER_BYTES + self.body_bytes());
            out.resize(PROTO_HEADER_BYTES, 0);
            self.encode_into(0, &mut out);
            out
        };
        let body_bytes = out.len() - PROTO_HEADER_BYTES;
        out[..PROTO_HEADER_BYTES]
            .copy_from_slice(&ProtoHeader::encode(MsgType::Message, body_bytes));
        out
    }
}

/// A one-message stream reply (batch, scan) that carries only an error and the LAST flag, for
/// commands this server does not support yet: the client sees the code instead of hanging.
pub fn stream_error_frame(rc: ResultCode) -> Vec<u8> {
    let msg = Message {
        header: MsgHeader {
            result_code: rc as u8,
            info3: info3::LAST,
            ..Default::default()
        },
        ..Default::default()
    };
    frame(MsgType::Message, &msg.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apogee_engine::record::{Bin, Record, RecordMeta};

    #[test]
    fn every_bin_encoded_from_the_record_matches_the_same_ops_built_one_by_one() {
        let record = Record {
            digest: apogee_wire::Digest::of_integer("s", 1),
            meta: RecordMeta {
                generation: 7,
                void_time: 99,
                last_update_ms: 5,
            },
            set_name: b"s".to_vec(),
            user_key: None,
            bins: (0..3u8)
                .map(|i| Bin {
                    name: vec![b'a' + i],
                    particle_type: 3,
                    value: vec![i; usize::from(i) * 10],
                })
                .collect(),
            tombstone: false,
        };
        let bytes = record.encode();
        let view = RecordView::decode_tagged(&bytes, 0).unwrap();
        let ops = (record.bins.iter())
            .map(|b| Op {
                op_type: OpType::READ,
                particle_type: b.particle_type,
                name: b.name.clone(),
                value: b.value.clone(),
            })
            .collect();
        let direct = Reply::all_bins(&view);
        assert_eq!(direct.encoded.count, 3);
        assert_eq!(direct.encoded.bytes.capacity(), direct.encoded.bytes.len());
        assert_eq!(direct.into_frame(), Reply::ok(7, 99, ops).into_frame());
        let mut row = Vec::new();
        Reply::all_bins(&view).encode_row_into(4, &mut row);
        let msg = Message::decode(&row).unwrap();
        assert_eq!((msg.header.transaction_ttl, msg.ops.len()), (4, 3));
        assert_eq!(msg.ops[2].value, vec![2; 20]);
    }
}
