//! A lean Aerospike-protocol driver on the shared wire codec: put (all bins or one) and get
//! (all bins) of YCSB records, keyed by the digest the official clients would compute.

use apogee_wire::msg::{info1, info2, particle, Field, FieldType, Message, Op, OpType};
use apogee_wire::proto::{frame, ProtoHeader, PROTO_HEADER_BYTES};
use apogee_wire::{Digest, MsgType, PARTITION_COUNT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use std::sync::Arc;

use super::route::PartitionMap;
use super::Keyspace;
use crate::workload::{field_value, key_name};

/// Largest reply this driver accepts; a YCSB record is about 1 KiB.
const REPLY_BYTES_MAX: u64 = 16 << 20;
/// Most keys one batch request carries.
pub const BATCH_KEYS_MAX: usize = 5000;
/// Most records one short scan asks for (YCSB's `maxscanlength` default is 100).
pub const SCAN_RECORDS_MAX: u64 = 1000;

pub struct AeroConn {
    /// The connection multi-record requests (batch, scans) use: the seed's.
    stream: TcpStream,
    /// With routing: one connection per node of `route.nodes` after the seed (index `n - 1`
    /// for node `n`); single-record requests go to their partition's master.
    others: Vec<TcpStream>,
    route: Option<Arc<PartitionMap>>,
    /// Node (index into the route's nodes) the next single-record request goes to.
    next_node: usize,
    ks: Keyspace,
    reply: Vec<u8>,
}

/// info3 bit of a scan request (the client takes per-partition markers) and of a marker.
const INFO3_PARTITION_DONE: u8 = 0x04;
/// Result code of a partition-done marker for a partition the node does not serve.
const RESULT_PARTITION_UNAVAILABLE: i32 = 11;
/// Most frames a full scan's reply may take: one record per frame at worst, 4 G records.
const FULL_SCAN_FRAMES_MAX: usize = 1 << 32;

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// What one full scan of a node returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullScan {
    /// Records streamed back.
    pub records: u64,
    /// Partitions the node scanned: those it gave no failure marker for.
    pub partitions_scanned: u16,
    /// Partitions the node answered with a failure marker (11: not its to serve).
    pub partitions_unavailable: u16,
}

/// The messages of a full scan's reply, counted as they stream.
pub struct FullScanTally {
    records: u64,
    /// Per partition: a failure marker came (it was unavailable here).
    unavailable: Vec<bool>,
    /// Per partition: a success marker came (CE sends them; Apogee only failure ones).
    done: Vec<bool>,
}

impl Default for FullScanTally {
    fn default() -> FullScanTally {
        FullScanTally {
            records: 0,
            unavailable: vec![false; usize::from(PARTITION_COUNT)],
            done: vec![false; usize::from(PARTITION_COUNT)],
        }
    }
}

impl FullScanTally {
    /// One message before LAST: a record, or a partition-done marker (partition id in the
    /// generation field) that ends its partition, with 0 or a failure code. A failure code
    /// other than 11 (partition unavailable), or a second marker for one partition, is an
    /// error.
    pub fn take(&mut self, info3: u8, rc: i32, generation: u32) -> std::io::Result<()> {
        if info3 & INFO3_PARTITION_DONE == 0 {
            if rc != 0 {
                return Err(bad(format!("scan answered result code {rc}")));
            }
            self.records += 1;
            return Ok(());
        }
        let pid = usize::try_from(generation)
            .ok()
            .filter(|&p| p < usize::from(PARTITION_COUNT))
            .ok_or_else(|| bad(format!("partition-done marker for partition {generation}")))?;
        let seen = match rc {
            0 => std::mem::replace(&mut self.done[pid], true),
            RESULT_PARTITION_UNAVAILABLE => std::mem::replace(&mut self.unavailable[pid], true),
            rc => {
                return Err(bad(format!(
                    "scan of partition {pid} answered result code {rc}"
                )))
            }
        };
        if seen || (self.done[pid] && self.unavailable[pid]) {
            return Err(bad(format!("partition {pid} ended twice")));
        }
        Ok(())
    }

    /// The tally once LAST came with `last_rc`.
    pub fn finish(self, last_rc: i32) -> std::io::Result<FullScan> {
        if last_rc != 0 {
            return Err(bad(format!("scan answered result code {last_rc}")));
        }
        let unavailable = self.unavailable.iter().filter(|&&u| u).count() as u16;
        Ok(FullScan {
            records: self.records,
            partitions_scanned: PARTITION_COUNT - unavailable,
            partitions_unavailable: unavailable,
        })
    }
}

/// A scan's task id (field 7): the clients send a random one; any nonzero value serves.
fn scan_task_id() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) | 1
}

fn read_op(name: &str) -> Op {
    Op {
        op_type: OpType::READ,
        particle_type: particle::NULL,
        name: name.as_bytes().to_vec(),
        value: vec![],
    }
}

impl AeroConn {
    pub async fn connect(addr: &str, ks: Keyspace) -> std::io::Result<AeroConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(AeroConn {
            stream,
            others: Vec::new(),
            route: None,
            next_node: 0,
            ks,
            reply: Vec::new(),
        })
    }

    /// One connection to every node of `route`; single-record requests then go to their
    /// partition's master (the seed where the map names none).
    pub async fn connect_routed(
        route: Arc<PartitionMap>,
        ks: Keyspace,
    ) -> std::io::Result<AeroConn> {
        let mut c = AeroConn::connect(&route.nodes[0], ks).await?;
        for addr in &route.nodes[1..] {
            let s = TcpStream::connect(addr.as_str()).await?;
            s.set_nodelay(true)?;
            c.others.push(s);
        }
        c.route = Some(route);
        Ok(c)
    }

    /// A request for record `i`, and its master chosen as the node of the next exchange.
    fn keyed(&mut self, i: u64) -> Message {
        let digest = Digest::of_string(&self.ks.set, &key_name(i));
        self.next_node = self
            .route
            .as_ref()
            .map_or(0, |r| r.master[usize::from(digest.partition().0)]);
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
        let stream = match self.next_node {
            0 => &mut self.stream,
            n => &mut self.others[n - 1],
        };
        stream
            .write_all(&frame(MsgType::Message, &msg.encode()))
            .await?;
        let mut head = [0u8; PROTO_HEADER_BYTES];
        stream.read_exact(&mut head).await?;
        let h = ProtoHeader::decode(&head).map_err(|e| bad(e.to_string()))?;
        if h.body_bytes > REPLY_BYTES_MAX || h.body_bytes < 22 {
            return Err(bad(format!("reply body of {} bytes", h.body_bytes)));
        }
        self.reply.resize(h.body_bytes as usize, 0);
        stream.read_exact(&mut self.reply).await?;
        Ok(i32::from(self.reply[5]))
    }

    /// A batch-index read of every bin of `keys` (spec §7): one row per key, rows after the
    /// first marked REPEAT. Returns 0 when every row was found, else the first row's failure
    /// code (or the LAST message's code).
    pub async fn batch_read(&mut self, keys: &[u64]) -> std::io::Result<i32> {
        assert!(!keys.is_empty() && keys.len() <= BATCH_KEYS_MAX);
        let mut rows = Vec::with_capacity(5 + keys.len() * 25 + 64);
        rows.extend_from_slice(&(keys.len() as u32).to_be_bytes());
        rows.push(0x0d); // parent flags as both official clients send them
        for (n, k) in keys.iter().enumerate() {
            rows.extend_from_slice(&(n as u32).to_be_bytes());
            rows.extend_from_slice(&Digest::of_string(&self.ks.set, &key_name(*k)).0);
            if n > 0 {
                rows.push(0x01); // REPEAT
                continue;
            }
            rows.extend_from_slice(&[0x0a, info1::READ | info1::GET_ALL, 0, 0]);
            rows.extend_from_slice(&0u32.to_be_bytes()); // ttl
            rows.extend_from_slice(&2u16.to_be_bytes()); // n_fields
            rows.extend_from_slice(&0u16.to_be_bytes()); // n_ops
            for (t, v) in [(0u8, &self.ks.namespace), (1u8, &self.ks.set)] {
                rows.extend_from_slice(&(v.len() as u32 + 1).to_be_bytes());
                rows.push(t);
                rows.extend_from_slice(v.as_bytes());
            }
        }
        let mut m = Message::default();
        m.header.info1 = info1::BATCH;
        m.header.transaction_ttl = 1000;
        m.fields = vec![Field {
            field_type: FieldType(41),
            data: rows,
        }];
        self.stream
            .write_all(&frame(MsgType::Message, &m.encode()))
            .await?;
        // A reply holds at most one message per row plus LAST, in at most as many frames.
        self.read_stream(keys.len() + 2).await
    }

    /// A YCSB E short scan: up to `len` records of the partition of key `start`, from that
    /// key's digest downwards (Aerospike walks a partition in descending digest order and
    /// resumes strictly below a digest, spec §8): the closest thing Aerospike's protocol
    /// has to YCSB's "scan from a key" (it has no key-ordered range scan).
    pub async fn short_scan(&mut self, start: u64, len: u64) -> std::io::Result<i32> {
        assert!(len > 0 && len <= SCAN_RECORDS_MAX);
        let digest = Digest::of_string(&self.ks.set, &key_name(start));
        let mut m = Message::default();
        m.header.info1 = info1::READ | info1::GET_ALL;
        // PARTITION_DONE: this client takes per-partition markers, as every 4.9+ client does.
        m.header.info3 = INFO3_PARTITION_DONE;
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
                field_type: FieldType(12), // digest array: resume below this digest
                data: digest.0.to_vec(),
            },
            Field {
                field_type: FieldType(13), // max records
                data: len.to_be_bytes().to_vec(),
            },
        ];
        self.stream
            .write_all(&frame(MsgType::Message, &m.encode()))
            .await?;
        // Records, a partition-done marker at most, and LAST: each frame holds one at least.
        self.read_stream(len as usize + 3).await
    }

    /// Scans every record of the keyspace's set on this connection's node: the request lists
    /// all 4096 partitions (field 11, as every 4.9+ client sends it; CE 8 answers no scan
    /// without a partition list) and takes partition-done markers. A marker with a failure
    /// code (11: the node does not master that partition, as in a cluster) counts that
    /// partition as unavailable here, not the scan as failed; any other failure is an error.
    pub async fn full_scan(&mut self) -> std::io::Result<FullScan> {
        let pids: Vec<u8> = (0..PARTITION_COUNT).flat_map(u16::to_le_bytes).collect();
        let mut m = Message::default();
        m.header.info1 = info1::READ | info1::GET_ALL;
        m.header.info3 = INFO3_PARTITION_DONE;
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
                field_type: FieldType(7), // task id
                data: scan_task_id().to_be_bytes().to_vec(),
            },
            Field {
                field_type: FieldType(11), // partition ids, u16 little-endian each
                data: pids,
            },
        ];
        self.stream
            .write_all(&frame(MsgType::Message, &m.encode()))
            .await?;
        let mut scan = FullScanTally::default();
        let last = self
            .read_stream_with(FULL_SCAN_FRAMES_MAX, |info3, rc, generation| {
                scan.take(info3, rc, generation)
            })
            .await?;
        scan.finish(last)
    }

    /// Reads a multi-message reply (batch, scan) up to its LAST message, in at most
    /// `frames_max` frames. Returns 0 when every message answered 0, else the first failure
    /// code.
    async fn read_stream(&mut self, frames_max: usize) -> std::io::Result<i32> {
        let mut first_failure = 0;
        let last = self
            .read_stream_with(frames_max, |_, rc, _| {
                if first_failure == 0 {
                    first_failure = rc;
                }
                Ok(())
            })
            .await?;
        Ok(if first_failure == 0 {
            last
        } else {
            first_failure
        })
    }

    /// Reads a multi-message reply up to its LAST message, in at most `frames_max` frames,
    /// handing `each` the info3, result code and generation (a partition-done marker's
    /// partition id) of every message before LAST; returns LAST's result code.
    async fn read_stream_with(
        &mut self,
        frames_max: usize,
        mut each: impl FnMut(u8, i32, u32) -> std::io::Result<()>,
    ) -> std::io::Result<i32> {
        for _ in 0..frames_max {
            let mut head = [0u8; PROTO_HEADER_BYTES];
            self.stream.read_exact(&mut head).await?;
            let h = ProtoHeader::decode(&head).map_err(|e| bad(e.to_string()))?;
            if h.body_bytes > REPLY_BYTES_MAX {
                return Err(bad(format!("reply body of {} bytes", h.body_bytes)));
            }
            self.reply.resize(h.body_bytes as usize, 0);
            self.stream.read_exact(&mut self.reply).await?;
            let mut pos = 0;
            while pos < self.reply.len() {
                let b = &self.reply;
                if pos + 22 > b.len() {
                    return Err(bad("truncated reply message".into()));
                }
                let (info3, rc) = (b[pos + 3], i32::from(b[pos + 5]));
                let generation = u32::from_be_bytes(b[pos + 6..pos + 10].try_into().expect("4"));
                let n_fields = u16::from_be_bytes([b[pos + 18], b[pos + 19]]);
                let n_ops = u16::from_be_bytes([b[pos + 20], b[pos + 21]]);
                pos += 22;
                for _ in 0..u32::from(n_fields) + u32::from(n_ops) {
                    let sz = b
                        .get(pos..pos + 4)
                        .ok_or_else(|| bad("truncated reply item".into()))?;
                    pos += 4 + u32::from_be_bytes(sz.try_into().expect("4 bytes")) as usize;
                }
                if info3 & apogee_wire::msg::info3::LAST != 0 {
                    return Ok(rc);
                }
                each(info3, rc, generation)?;
            }
        }
        Err(bad("reply did not end with a LAST message".into()))
    }

    pub async fn read(&mut self, i: u64) -> std::io::Result<i32> {
        let mut m = self.keyed(i);
        m.header.info1 = info1::READ | info1::GET_ALL;
        self.exchange(&m).await
    }

    /// A read-only operate with four ops on record `i`, shaped as the Python client sends it
    /// (RESPOND_ALL_OPS): read field0, read field1, an expression read of field2's type, read
    /// field3. Compared with `read` (a get of every bin) by `operate-vs-get`.
    pub async fn operate_read4(&mut self, i: u64) -> std::io::Result<i32> {
        let mut m = self.keyed(i);
        m.header.info1 = info1::READ;
        m.header.info2 = info2::RESPOND_ALL_OPS;
        m.ops = vec![
            read_op("field0"),
            read_op("field1"),
            // Expression read: BinType('field2') = [82, "field2"].
            Op {
                op_type: OpType::EXP_READ,
                particle_type: particle::BLOB,
                name: b"t".to_vec(),
                value: [&[0x92, 0x92, 0x52, 0xa6][..], b"field2", &[0x00]].concat(),
            },
            read_op("field3"),
        ];
        self.exchange(&m).await
    }

    /// An operate with four ops that writes: overwrite field0, then read three bins.
    pub async fn operate_write4(&mut self, i: u64) -> std::io::Result<i32> {
        let mut m = self.keyed(i);
        m.header.info1 = info1::READ;
        m.header.info2 = info2::WRITE | info2::RESPOND_ALL_OPS;
        m.ops = vec![
            Op {
                op_type: OpType::WRITE,
                particle_type: particle::STRING,
                name: b"field0".to_vec(),
                value: field_value(i, 0, self.ks.shape.bin_bytes),
            },
            read_op("field1"),
            read_op("field2"),
            read_op("field3"),
        ];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_scan_counts_records_and_unavailable_partitions() {
        let mut t = FullScanTally::default();
        for _ in 0..5 {
            t.take(0, 0, 1).unwrap();
        }
        // Markers: partition 7 done, 9 and 4095 not served here (11).
        t.take(INFO3_PARTITION_DONE, 0, 7).unwrap();
        t.take(INFO3_PARTITION_DONE, 11, 9).unwrap();
        t.take(INFO3_PARTITION_DONE, 11, 4095).unwrap();
        assert_eq!(
            t.finish(0).unwrap(),
            FullScan {
                records: 5,
                partitions_scanned: 4094,
                partitions_unavailable: 2,
            }
        );
    }

    #[test]
    fn a_full_scan_refuses_odd_markers_and_failures() {
        let mut t = FullScanTally::default();
        t.take(INFO3_PARTITION_DONE, 11, 9).unwrap();
        assert!(t.take(INFO3_PARTITION_DONE, 11, 9).is_err(), "twice");
        assert!(t.take(INFO3_PARTITION_DONE, 0, 9).is_err(), "done after 11");
        assert!(
            t.take(INFO3_PARTITION_DONE, 11, 4096).is_err(),
            "no such pid"
        );
        assert!(t.take(INFO3_PARTITION_DONE, 1, 3).is_err(), "server error");
        assert!(t.take(0, 2, 0).is_err(), "a record's failure");
        assert!(
            FullScanTally::default().finish(4).is_err(),
            "LAST's failure"
        );
    }
}
