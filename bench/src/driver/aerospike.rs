//! A lean Aerospike-protocol driver on the shared wire codec: put (all bins or one) and get
//! (all bins) of YCSB records, keyed by the digest the official clients would compute.

use apogee_wire::msg::{info1, info2, particle, Field, FieldType, Message, Op, OpType};
use apogee_wire::proto::{frame, ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::{Digest, MsgType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Keyspace;
use crate::workload::{field_value, key_name};

/// Largest reply this driver accepts; a YCSB record is about 1 KiB.
const REPLY_BYTES_MAX: u64 = 16 << 20;

pub struct AeroConn {
    stream: TcpStream,
    ks: Keyspace,
    reply: Vec<u8>,
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl AeroConn {
    pub async fn connect(addr: &str, ks: Keyspace) -> std::io::Result<AeroConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(AeroConn {
            stream,
            ks,
            reply: Vec::new(),
        })
    }

    fn keyed(&self, i: u64) -> Message {
        let digest = Digest::of_string(&self.ks.set, &key_name(i));
        let mut m = Message::default();
        m.header.transaction_ttl = 1000;
        m.fields = vec![
            Field {
                field_type: FieldType::NAMESPACE,
                data: self.ks.namespace.as_bytes().to_vec(),
            },
            Field {
                field_type: FieldType::SET,
                data: self.ks.set.as_bytes().to_vec(),
            },
            Field {
                field_type: FieldType::DIGEST,
                data: digest.0.to_vec(),
            },
        ];
        m
    }

    /// Sends one request and returns the reply's result code.
    async fn exchange(&mut self, msg: &Message) -> std::io::Result<i32> {
        self.stream
            .write_all(&frame(MsgType::Message, &msg.encode()))
            .await?;
        let mut head = [0u8; PROTO_HEADER_BYTES];
        self.stream.read_exact(&mut head).await?;
        let h = ProtoHeader::decode(&head).map_err(|e| bad(e.to_string()))?;
        if h.body_bytes > REPLY_BYTES_MAX || h.body_bytes < 22 {
            return Err(bad(format!("reply body of {} bytes", h.body_bytes)));
        }
        self.reply.resize(h.body_bytes as usize, 0);
        self.stream.read_exact(&mut self.reply).await?;
        Ok(i32::from(self.reply[5]))
    }

    pub async fn read(&mut self, i: u64) -> std::io::Result<i32> {
        let mut m = self.keyed(i);
        m.header.info1 = info1::READ | info1::GET_ALL;
        self.exchange(&m).await
    }

    /// Writes field `only` of record `i`, or every field when `None`.
    pub async fn write(&mut self, i: u64, only: Option<usize>) -> std::io::Result<i32> {
        let mut m = self.keyed(i);
        m.header.info2 = info2::WRITE;
        let shape = self.ks.shape;
        let fields: Vec<usize> = match only {
            Some(f) => vec![f % shape.bins],
            None => (0..shape.bins).collect(),
        };
        m.ops = fields
            .into_iter()
            .map(|f| Op {
                op_type: OpType::WRITE,
                particle_type: particle::STRING,
                name: format!("field{f}").into_bytes(),
                value: field_value(i, f, shape.bin_bytes),
            })
            .collect();
        self.exchange(&m).await
    }
}
