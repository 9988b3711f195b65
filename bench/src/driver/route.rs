//! Partition routing for the Aerospike driver: from one seed node, learns every node of the
//! cluster (`peers-clear-std`) and the partitions each one masters (column 0 of its own
//! `replicas`), so a single-record request can go straight to its master, as the official
//! clients send it. The map is read once, before a run; it must never be taken as current
//! after a cluster change: a request for a partition whose master moved, or that no node
//! claimed when the map was read, goes to the seed, which proxies it (a stale client map).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

/// Partitions per namespace (Aerospike's fixed count).
pub const PARTITION_COUNT: usize = 4096;
/// How long one info exchange may take before discovery gives up on that node.
const INFO_TIMEOUT_MS: u64 = 2000;
/// Largest info reply accepted (a `replicas` reply of a few namespaces is a few KiB).
const INFO_REPLY_BYTES_MAX: u64 = 1 << 20;
/// Most nodes a map holds (CE clusters have at most 8; Enterprise 256).
const NODES_MAX: usize = 256;

/// Why discovery failed; every variant names the node and what to check.
#[derive(Debug)]
pub enum RouteError {
    Io { addr: String, err: std::io::Error },
    Reply { addr: String, what: String },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Io { addr, err } => write!(
                f,
                "cannot ask {addr} for the partition map ({err}): is the node up and its service port right?"
            ),
            RouteError::Reply { addr, what } => write!(
                f,
                "{addr} answered a partition map this client cannot read: {what}"
            ),
        }
    }
}

/// Which node masters each partition, as the nodes claimed it when asked.
#[derive(Debug, Clone)]
pub struct PartitionMap {
    /// `host:port` of each node; index 0 is the seed.
    pub nodes: Vec<String>,
    /// `master[p]`: index into `nodes` of the node that claimed partition `p` as master;
    /// the seed (0) where no node claimed it.
    pub master: Vec<usize>,
    /// Partitions no node claimed as master (routed to the seed).
    pub unclaimed: usize,
    /// Partitions more than one node claimed (the last one asked wins).
    pub claimed_twice: usize,
}

impl PartitionMap {
    /// Partitions each node masters, in `nodes` order.
    pub fn masters_per_node(&self) -> Vec<usize> {
        let mut n = vec![0; self.nodes.len()];
        for &m in &self.master {
            n[m] += 1;
        }
        n
    }
}

/// One info command to `addr`; returns the value after the tab of the first line.
pub fn info(addr: &str, cmd: &str) -> Result<String, RouteError> {
    let io = |err| RouteError::Io {
        addr: addr.to_string(),
        err,
    };
    let timeout = Duration::from_millis(INFO_TIMEOUT_MS);
    let sock: std::net::SocketAddr = addr.parse().map_err(|_| RouteError::Reply {
        addr: addr.to_string(),
        what: "not an ip:port address".into(),
    })?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let body = format!("{cmd}\n");
    let head: u64 = (2 << 56) | (1 << 48) | body.len() as u64;
    s.write_all(&head.to_be_bytes()).map_err(io)?;
    s.write_all(body.as_bytes()).map_err(io)?;
    let mut h = [0u8; 8];
    s.read_exact(&mut h).map_err(io)?;
    let size = u64::from_be_bytes(h) & 0xFFFF_FFFF_FFFF;
    if size > INFO_REPLY_BYTES_MAX {
        return Err(RouteError::Reply {
            addr: addr.to_string(),
            what: format!("an info reply of {size} bytes"),
        });
    }
    let mut reply = vec![0u8; size as usize];
    s.read_exact(&mut reply).map_err(io)?;
    let text = String::from_utf8_lossy(&reply);
    let line = text.lines().next().unwrap_or("");
    Ok(line.split_once('\t').map_or(line, |(_, v)| v).to_string())
}

/// The service addresses in a `peers-clear-std` value (`gen,port,[[id,tls,[addr...]],...]`):
/// the first address of each peer, with the default port where it gives none.
pub fn parse_peers(value: &str) -> Result<Vec<String>, String> {
    let mut parts = value.splitn(3, ',');
    let (_gen, port, rest) = match (parts.next(), parts.next(), parts.next()) {
        (Some(g), Some(p), Some(r)) => (g, p, r),
        _ => {
            return Err(format!(
                "peers value '{value}' has no generation, port and list"
            ))
        }
    };
    let default_port: u16 = port
        .parse()
        .map_err(|_| format!("peers default port '{port}' is not a port"))?;
    // Address lists are the innermost brackets: `[addr,...]` with no bracket inside.
    let mut out = Vec::new();
    let mut open = None;
    for (i, c) in rest.char_indices() {
        match c {
            '[' => open = Some(i + 1),
            ']' => {
                if let Some(start) = open.take() {
                    let list = &rest[start..i];
                    if let Some(first) = list.split(',').next().filter(|a| !a.is_empty()) {
                        out.push(if first.contains(':') {
                            first.to_string()
                        } else {
                            format!("{first}:{default_port}")
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The partitions `replicas` claims in column 0 (master) for `namespace`, from a value like
/// `ns:regime,count,b64,b64;ns2:...` (bit 7 of byte 0 is partition 0). Empty when the
/// namespace is not listed.
pub fn parse_masters(value: &str, namespace: &str) -> Result<Vec<usize>, String> {
    for entry in value.split(';') {
        let Some((ns, rest)) = entry.split_once(':') else {
            continue;
        };
        if ns != namespace {
            continue;
        }
        let cols: Vec<&str> = rest.split(',').collect();
        if cols.len() < 3 {
            return Err(format!("replicas entry '{entry}' has no bitmap"));
        }
        let bits = base64::engine::general_purpose::STANDARD
            .decode(cols[2])
            .map_err(|e| format!("replicas bitmap of {ns} is not base64: {e}"))?;
        if bits.len() != PARTITION_COUNT / 8 {
            return Err(format!("replicas bitmap of {} bytes, not 512", bits.len()));
        }
        return Ok((0..PARTITION_COUNT)
            .filter(|p| bits[p / 8] & (0x80 >> (p % 8)) != 0)
            .collect());
    }
    Ok(Vec::new())
}

/// Asks `seed` for its peers, then every node for the partitions it masters in `namespace`.
pub fn discover(seed: &str, namespace: &str) -> Result<PartitionMap, RouteError> {
    let reply = |addr: &str| {
        let addr = addr.to_string();
        move |what: String| RouteError::Reply { addr, what }
    };
    let mut nodes = vec![seed.to_string()];
    for peer in parse_peers(&info(seed, "peers-clear-std")?).map_err(reply(seed))? {
        if !nodes.contains(&peer) && nodes.len() < NODES_MAX {
            nodes.push(peer);
        }
    }
    let mut master = vec![usize::MAX; PARTITION_COUNT];
    let mut claimed_twice = 0;
    for (n, addr) in nodes.iter().enumerate() {
        for p in parse_masters(&info(addr, "replicas")?, namespace).map_err(reply(addr))? {
            if master[p] != usize::MAX {
                claimed_twice += 1;
            }
            master[p] = n;
        }
    }
    let unclaimed = master.iter().filter(|&&m| m == usize::MAX).count();
    for m in &mut master {
        if *m == usize::MAX {
            *m = 0;
        }
    }
    Ok(PartitionMap {
        nodes,
        master,
        unclaimed,
        claimed_twice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_take_each_first_address_and_the_default_port() {
        let v = "5,3000,[[BB9,,[127.0.0.1:7110]],[BB8,,[127.0.0.2,10.0.0.1]]]";
        assert_eq!(
            parse_peers(v).unwrap(),
            vec!["127.0.0.1:7110", "127.0.0.2:3000"]
        );
        assert!(parse_peers("0,3000,[]").unwrap().is_empty());
        assert!(parse_peers("garbage").is_err());
    }

    #[test]
    fn masters_read_column_zero_of_the_named_namespace() {
        let mut bits = vec![0u8; 512];
        bits[0] = 0x80; // partition 0
        bits[511] = 0x01; // partition 4095
        let b = base64::engine::general_purpose::STANDARD.encode(&bits);
        let zero = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 512]);
        let v = format!("bar:0,2,{zero},{zero};test:0,2,{b},{zero}");
        assert_eq!(parse_masters(&v, "test").unwrap(), vec![0, 4095]);
        assert!(parse_masters(&v, "bar").unwrap().is_empty());
        assert!(parse_masters(&v, "other").unwrap().is_empty());
        assert!(parse_masters("test:0,2,AAAA", "test").is_err());
    }
}
