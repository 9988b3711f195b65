//! Protocol drivers: one connection each, one request in flight at a time, as real clients do.
//! Each operation returns `Ok(0)` on success, `Ok(code)` for a server-reported failure (the
//! Aerospike result code; -2 for a RESP error reply) and `Err` when the connection broke.

pub mod aerospike;
pub mod resp;
pub mod route;

use crate::workload::RecordShape;

/// Which protocol the benchmark speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Aerospike,
    Redis,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aerospike" | "apogee" => Ok(Target::Aerospike),
            "redis" | "resp" => Ok(Target::Redis),
            other => Err(format!("unknown target '{other}': use aerospike or redis")),
        }
    }
}

/// Where the records live, for both protocols.
#[derive(Debug, Clone)]
pub struct Keyspace {
    pub namespace: String,
    pub set: String,
    pub shape: RecordShape,
}

pub enum Conn {
    Aerospike(aerospike::AeroConn),
    Redis(resp::RespConn),
}

impl Conn {
    pub async fn connect(target: Target, addr: &str, ks: &Keyspace) -> std::io::Result<Conn> {
        Ok(match target {
            Target::Aerospike => {
                Conn::Aerospike(aerospike::AeroConn::connect(addr, ks.clone()).await?)
            }
            Target::Redis => Conn::Redis(resp::RespConn::connect(addr, ks.clone()).await?),
        })
    }

    /// An Aerospike connection to every node of `route`, sending each single-record request
    /// to its partition's master.
    pub async fn connect_routed(
        route: std::sync::Arc<route::PartitionMap>,
        ks: &Keyspace,
    ) -> std::io::Result<Conn> {
        Ok(Conn::Aerospike(
            aerospike::AeroConn::connect_routed(route, ks.clone()).await?,
        ))
    }

    pub async fn read(&mut self, i: u64) -> std::io::Result<i32> {
        match self {
            Conn::Aerospike(c) => c.read(i).await,
            Conn::Redis(c) => c.read(i).await,
        }
    }

    /// Reads every key in one request (an Aerospike batch, a RESP pipeline).
    pub async fn batch_read(&mut self, keys: &[u64]) -> std::io::Result<i32> {
        match self {
            Conn::Aerospike(c) => c.batch_read(keys).await,
            Conn::Redis(c) => c.batch_read(keys).await,
        }
    }

    /// A short scan of up to `len` records starting at key `start` (YCSB E). Redis has no
    /// scan over these keys in key order: it answers 16 (unsupported), counted as an error.
    pub async fn short_scan(&mut self, start: u64, len: u64) -> std::io::Result<i32> {
        match self {
            Conn::Aerospike(c) => c.short_scan(start, len).await,
            Conn::Redis(_) => Ok(16),
        }
    }

    /// Writes one field (YCSB's default update).
    pub async fn update(&mut self, i: u64, field: usize) -> std::io::Result<i32> {
        match self {
            Conn::Aerospike(c) => c.write(i, Some(field)).await,
            Conn::Redis(c) => c.write(i, Some(field)).await,
        }
    }

    /// Writes every field.
    pub async fn insert(&mut self, i: u64) -> std::io::Result<i32> {
        match self {
            Conn::Aerospike(c) => c.write(i, None).await,
            Conn::Redis(c) => c.write(i, None).await,
        }
    }
}
