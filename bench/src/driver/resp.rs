//! A lean RESP (Redis) driver: each record is a hash of `bins` fields (HSET / HGETALL), with the
//! same keys and field bytes as the Aerospike driver.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Keyspace;
use crate::workload::{field_value, key_name};

/// Result code reported for a RESP error reply (`-ERR ...`).
pub const RESP_ERROR: i32 = -2;
/// Result code for a read of a missing key (an empty HGETALL), like Aerospike's 2.
pub const NOT_FOUND: i32 = 2;
/// Longest bulk string or array this driver accepts.
const RESP_ITEMS_MAX: i64 = 1 << 24;

pub struct RespConn {
    stream: BufReader<TcpStream>,
    ks: Keyspace,
    out: Vec<u8>,
    line: String,
    /// Reused for the bytes of bulk strings, which the benchmark reads and drops.
    skip: Vec<u8>,
}

fn bad(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// One parsed reply, reduced to what the benchmark needs.
enum Reply {
    Ok { items: i64 },
    Error,
}

impl RespConn {
    pub async fn connect(addr: &str, ks: Keyspace) -> std::io::Result<RespConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream: BufReader::new(stream),
            ks,
            out: Vec::new(),
            line: String::new(),
            skip: Vec::new(),
        })
    }

    fn command(&mut self, args: &[&[u8]]) {
        self.out.clear();
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn read_line(&mut self) -> std::io::Result<(u8, String)> {
        self.line.clear();
        let n = self.stream.read_line(&mut self.line).await?;
        if n < 3 || !self.line.ends_with("\r\n") {
            return Err(bad(format!("bad RESP line {:?}", self.line)));
        }
        let kind = self.line.as_bytes()[0];
        Ok((kind, self.line[1..self.line.len() - 2].to_string()))
    }

    /// Reads one whole reply; nested arrays are consumed, counting top-level items.
    async fn reply(&mut self) -> std::io::Result<Reply> {
        let mut pending: i64 = 1;
        let mut top_items = 0;
        let mut first = true;
        let mut error = false;
        while pending > 0 {
            pending -= 1;
            let (kind, rest) = self.read_line().await?;
            let num = || {
                rest.parse::<i64>()
                    .map_err(|_| bad(format!("bad RESP number {rest:?}")))
            };
            match kind {
                b'+' | b':' => {}
                b'-' => error = true,
                b'$' => {
                    let len = num()?;
                    if len > RESP_ITEMS_MAX {
                        return Err(bad(format!("bulk string of {len} bytes")));
                    }
                    if len >= 0 {
                        self.skip.resize(len as usize + 2, 0);
                        self.stream.read_exact(&mut self.skip).await?;
                    }
                    // A top-level bulk string (GET's reply) is one item; nil ($-1) is none.
                    if first {
                        top_items = i64::from(len >= 0);
                    }
                }
                b'*' | b'%' => {
                    let mut n = num()?;
                    if n > RESP_ITEMS_MAX {
                        return Err(bad(format!("array of {n} items")));
                    }
                    if kind == b'%' {
                        n *= 2;
                    }
                    if first {
                        top_items = n.max(0);
                    }
                    pending += n.max(0);
                }
                other => return Err(bad(format!("unknown RESP type byte {other}"))),
            }
            first = false;
        }
        Ok(if error {
            Reply::Error
        } else {
            Reply::Ok { items: top_items }
        })
    }

    fn key(&self, i: u64) -> Vec<u8> {
        format!("{}:{}", self.ks.set, key_name(i)).into_bytes()
    }

    pub async fn read(&mut self, i: u64) -> std::io::Result<i32> {
        let key = self.key(i);
        self.command(&[b"HGETALL", &key]);
        self.stream.get_mut().write_all(&self.out).await?;
        Ok(match self.reply().await? {
            Reply::Error => RESP_ERROR,
            Reply::Ok { items: 0 } => NOT_FOUND,
            Reply::Ok { .. } => 0,
        })
    }

    /// Pipelines one HGETALL per key and reads every reply.
    pub async fn batch_read(&mut self, keys: &[u64]) -> std::io::Result<i32> {
        let mut all = Vec::new();
        for k in keys {
            let key = self.key(*k);
            self.command(&[b"HGETALL", &key]);
            all.extend_from_slice(&self.out);
        }
        self.stream.get_mut().write_all(&all).await?;
        let mut first_failure = 0;
        for _ in keys {
            let code = match self.reply().await? {
                Reply::Error => RESP_ERROR,
                Reply::Ok { items: 0 } => NOT_FOUND,
                Reply::Ok { .. } => 0,
            };
            if first_failure == 0 {
                first_failure = code;
            }
        }
        Ok(first_failure)
    }

    /// Key of record `i` stored as one string (`SET`/`GET`), apart from the hash of the same
    /// record so both shapes can be loaded side by side.
    fn string_key(&self, i: u64) -> Vec<u8> {
        format!("{}:s:{}", self.ks.set, key_name(i)).into_bytes()
    }

    /// Stores record `i` as one string: every field's bytes concatenated (the same bytes a
    /// hash or an Aerospike record of this shape carries, without the field names).
    pub async fn set_string(&mut self, i: u64) -> std::io::Result<i32> {
        let shape = self.ks.shape;
        let value: Vec<u8> = (0..shape.bins)
            .flat_map(|f| field_value(i, f, shape.bin_bytes))
            .collect();
        let key = self.string_key(i);
        self.command(&[b"SET", &key, &value]);
        self.stream.get_mut().write_all(&self.out).await?;
        Ok(match self.reply().await? {
            Reply::Error => RESP_ERROR,
            Reply::Ok { .. } => 0,
        })
    }

    /// Pipelines one GET per key of the string records `set_string` stored and reads every
    /// reply; 0 when every key was found.
    pub async fn get_pipeline(&mut self, keys: &[u64]) -> std::io::Result<i32> {
        let mut all = Vec::with_capacity(keys.len() * 40);
        for k in keys {
            let key = self.string_key(*k);
            self.command(&[b"GET", &key]);
            all.extend_from_slice(&self.out);
        }
        self.stream.get_mut().write_all(&all).await?;
        let mut first_failure = 0;
        for _ in keys {
            let code = match self.reply().await? {
                Reply::Error => RESP_ERROR,
                Reply::Ok { items: 0 } => NOT_FOUND,
                Reply::Ok { .. } => 0,
            };
            if first_failure == 0 {
                first_failure = code;
            }
        }
        Ok(first_failure)
    }

    pub async fn write(&mut self, i: u64, only: Option<usize>) -> std::io::Result<i32> {
        let shape = self.ks.shape;
        let fields: Vec<usize> = match only {
            Some(f) => vec![f % shape.bins],
            None => (0..shape.bins).collect(),
        };
        let key = self.key(i);
        let names: Vec<Vec<u8>> = fields
            .iter()
            .map(|f| format!("field{f}").into_bytes())
            .collect();
        let values: Vec<Vec<u8>> = fields
            .iter()
            .map(|f| field_value(i, *f, shape.bin_bytes))
            .collect();
        let mut args: Vec<&[u8]> = vec![b"HSET", &key];
        for (n, v) in names.iter().zip(&values) {
            args.push(n);
            args.push(v);
        }
        self.command(&args);
        self.stream.get_mut().write_all(&self.out).await?;
        Ok(match self.reply().await? {
            Reply::Error => RESP_ERROR,
            Reply::Ok { .. } => 0,
        })
    }
}
