//! Server configuration: the embedded default, an optional TOML file with Aerospike's key
//! names, and command-line overrides, validated into one `Config`.
//!
//! Owns every limit a user can set. A value out of range or an unknown key is rejected at
//! start with the key's name and the allowed range; this module must never let a bad value
//! reach the running server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use apogee_engine::block::{
    BLOCK_HEADER_BYTES, BLOCK_SIZE_BYTES_MAX, BLOCK_SIZE_BYTES_MIN, IO_ALIGN_BYTES,
};
use apogee_engine::file_header::FILE_HEADER_BYTES;
use apogee_engine::file_header::NAMESPACE_BYTES_MAX;
use apogee_engine::shard::media::{region_bytes_max, regions, unaddressed_bytes};
use apogee_engine::shard::ExtentConfig;
use apogee_engine::tuning::Setting;
use serde::Deserialize;
use thiserror::Error;

/// Longest TTL a client may set, in seconds (10 years, as Aerospike).
pub const TTL_SECS_MAX: u32 = 315_360_000;

/// Smallest `max-record-size`, in the config file and through set-config.
pub const MAX_RECORD_SIZE_MIN: usize = 1024;
/// Most cores (shards) one node runs.
pub const CORES_MAX: usize = 256;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key} = {value} is out of range: {allowed}")]
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
    },
}

/// One namespace's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceConfig {
    pub name: String,
    pub write_block_size: usize,
    pub commit_to_device: bool,
    pub flush_max_ms: u64,
    pub default_ttl: u32,
    pub max_record_size: usize,
    /// Bytes of records kept in memory for reads, split evenly over the cores.
    pub read_cache_size: usize,
    /// Blocks whose live bytes fall below this percentage are defragmented.
    pub defrag_lwm_pct: u64,
    /// Microseconds between two defragmented blocks (Aerospike's `defrag-sleep`).
    pub defrag_sleep_us: u64,
    /// Seconds between expiry sweeps; 0 disables them (reads still never see expired records).
    pub nsup_period: u64,
    /// Largest total size of the namespace's data files, split evenly over the cores.
    pub filesize: u64,
    /// Writes stop once live data fills this percentage of `filesize`.
    pub stop_writes_used_pct: u64,
    /// Writes stop once fewer than this percentage of blocks are free.
    pub stop_writes_avail_pct: u64,
    /// Above this percentage of `filesize` in live data, records with a TTL are evicted,
    /// soonest to expire first; 0 disables eviction.
    pub evict_used_pct: u64,
    /// `extents[shard]`: the regions of the configured `file`s or `device`s each core owns;
    /// empty for the default layout (`<data-dir>/<namespace>/shard-<n>.dat`).
    pub extents: Vec<Vec<ExtentConfig>>,
    /// `storage-engine memory`: records live in RAM only, up to `data_size` bytes (split over
    /// the cores); nothing survives a restart.
    pub memory: bool,
    pub data_size: u64,
    /// Copies of each record the namespace asks for; the cluster uses
    /// `min(replication-factor, members)` (Aerospike's effective replication factor).
    pub replication_factor: u32,
    /// When the master acknowledges a write in a cluster (`write-commit-level-override`).
    pub write_commit_level_override: CommitLevelOverride,
    /// Which of two versions of a record wins when a replica or migration compares them.
    pub conflict_resolution_policy: apogee_engine::shard::ConflictPolicy,
    /// `geo2dsphere-within`: the S2 cells geo indexes and geo queries use.
    pub geo2dsphere_within: crate::sindex::cells::GeoCover,
}

/// Aerospike's `write-commit-level-override`: `off` follows each client's commit level
/// (its default: all), `all` and `master` override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitLevelOverride {
    #[default]
    Off,
    /// Acknowledge once every replica applied the write.
    All,
    /// Acknowledge once the master applied it; replicas are written in the background.
    Master,
}

impl CommitLevelOverride {
    pub fn name(self) -> &'static str {
        match self {
            CommitLevelOverride::Off => "off",
            CommitLevelOverride::All => "all",
            CommitLevelOverride::Master => "master",
        }
    }

    /// Whether a write with the client's info3 bits waits for every replica.
    pub fn waits_for_replicas(self, info3_bits: u8) -> bool {
        match self {
            CommitLevelOverride::Off => info3_bits & apogee_wire::msg::info3::COMMIT_MASTER == 0,
            CommitLevelOverride::All => true,
            CommitLevelOverride::Master => false,
        }
    }
}

/// Aerospike's default `replication-factor`.
pub const REPLICATION_FACTOR_DEFAULT: u32 = 2;

/// Most files or devices one namespace may name (Aerospike's limit).
pub const STORAGE_PATHS_MAX: usize = 128;

/// Largest `read-cache-size`: 1 TiB.
pub const READ_CACHE_BYTES_MAX: usize = 1 << 40;

impl NamespaceConfig {
    fn default_named(name: &str) -> NamespaceConfig {
        NamespaceConfig {
            name: name.to_string(),
            write_block_size: 1024 * 1024,
            commit_to_device: true,
            flush_max_ms: 1000,
            default_ttl: 0,
            max_record_size: 1024 * 1024 - BLOCK_HEADER_BYTES,
            read_cache_size: 256 * 1024 * 1024,
            defrag_lwm_pct: 50,
            defrag_sleep_us: 1000,
            nsup_period: 120,
            filesize: 16 << 30,
            stop_writes_used_pct: 70,
            stop_writes_avail_pct: 5,
            evict_used_pct: 0,
            extents: Vec::new(),
            memory: false,
            data_size: 4 << 30,
            replication_factor: REPLICATION_FACTOR_DEFAULT,
            write_commit_level_override: CommitLevelOverride::Off,
            conflict_resolution_policy: apogee_engine::shard::ConflictPolicy::Generation,
            geo2dsphere_within: crate::sindex::cells::GeoCover::default(),
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub address: IpAddr,
    pub port: u16,
    pub cores: usize,
    pub data_dir: PathBuf,
    pub namespaces: Vec<NamespaceConfig>,
    /// Most client connections open at once (Aerospike's `proto-fd-max`); a connection over
    /// it is accepted and closed at once.
    pub proto_fd_max: usize,
    /// Whether `proto-fd-max` was set by the user: the default may be lowered to fit the
    /// process's file limit, a chosen value may not.
    pub proto_fd_max_set: bool,
    /// A client connection with no request for this long is closed; 0 keeps idle connections
    /// open (Aerospike's `proto-fd-idle-ms`, 0 by default in 8.x).
    pub proto_fd_idle_ms: u64,
    /// Node id, cluster name, heartbeat and fabric: who this node is and whom it joins.
    pub cluster: ClusterConfig,
}

/// `service.node-id`, `service.cluster-name`, `service.access-address`, `network.heartbeat`
/// and `network.fabric`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `node-id` as set; `None`: the id kept in the data directory (derived on first start).
    pub node_id: Option<u64>,
    /// `cluster-name`; `None` is Aerospike's "null" (no name: peers must have none either).
    pub cluster_name: Option<String>,
    /// What clients are told this node's address is (in peers); defaults to `address`.
    pub access_address: IpAddr,
    /// `None`: no heartbeat section and no heartbeat flag, so the node runs alone, as a single
    /// node always did, and binds nothing beyond its service port.
    pub heartbeat: Option<HeartbeatConfig>,
    /// `network.fabric`: bound with the heartbeat; carries proxied requests (view messages
    /// travel on the heartbeat socket).
    pub fabric_address: IpAddr,
    pub fabric_port: u16,
    /// `service.migrate-threads` and `service.migrate-max-num-incoming`: partitions this node
    /// sends, and receives, at once while migrating.
    pub migrate: apogee_cluster::MigrateConfig,
}

impl ClusterConfig {
    /// The fabric address told to peers: `network.fabric.address`, or the access address when
    /// the fabric listens on every interface.
    pub fn fabric_advertised(&self) -> SocketAddr {
        let ip = if self.fabric_address.is_unspecified() {
            self.access_address
        } else {
            self.fabric_address
        };
        SocketAddr::new(ip, self.fabric_port)
    }
}

/// `network.heartbeat` (mode mesh only).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    pub address: IpAddr,
    pub port: u16,
    /// `mesh-seed-address-port`: nodes to announce to at start (resolved at load).
    pub seeds: Vec<SocketAddr>,
    pub interval_ms: u64,
    /// `timeout`, in intervals.
    pub timeout_intervals: u32,
}

/// Aerospike's default heartbeat port.
pub const HEARTBEAT_PORT_DEFAULT: u16 = 3002;
/// Aerospike's default fabric port.
pub const FABRIC_PORT_DEFAULT: u16 = 3001;
/// Aerospike's bounds on heartbeat `interval`, in ms.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 50;
pub const HEARTBEAT_INTERVAL_MS_MAX: u64 = 600_000;
/// Bounds on heartbeat `timeout`, in intervals: SWIM needs two intervals to probe before it
/// can suspect (Aerospike's minimum is 3 too).
pub const HEARTBEAT_TIMEOUT_INTERVALS_MIN: u32 = 3;
pub const HEARTBEAT_TIMEOUT_INTERVALS_MAX: u32 = 1_000;
/// Most `mesh-seed-address-port` entries.
pub const MESH_SEEDS_MAX: usize = 64;
/// Longest `cluster-name`, in bytes (Aerospike's).
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;

/// Aerospike's default `proto-fd-max`.
pub const PROTO_FD_MAX_DEFAULT: usize = 15_000;
/// Largest `proto-fd-max` (Aerospike's bound).
pub const PROTO_FD_MAX_MAX: usize = 2_000_000;
/// Largest `proto-fd-idle-ms`: one day.
pub const PROTO_FD_IDLE_MS_MAX: u64 = 86_400_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    service: Option<ServiceSection>,
    network: Option<NetworkSection>,
    namespace: Option<BTreeMap<String, NamespaceSection>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NetworkSection {
    heartbeat: Option<HeartbeatSection>,
    fabric: Option<FabricSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HeartbeatSection {
    mode: Option<String>,
    address: Option<IpAddr>,
    port: Option<u16>,
    mesh_seed_address_port: Option<Vec<String>>,
    interval: Option<u64>,
    timeout: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FabricSection {
    address: Option<IpAddr>,
    port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServiceSection {
    address: Option<IpAddr>,
    port: Option<u16>,
    cores: Option<usize>,
    data_dir: Option<PathBuf>,
    proto_fd_max: Option<usize>,
    proto_fd_idle_ms: Option<u64>,
    node_id: Option<String>,
    cluster_name: Option<String>,
    access_address: Option<IpAddr>,
    migrate_threads: Option<usize>,
    migrate_max_num_incoming: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct NamespaceSection {
    write_block_size: Option<usize>,
    commit_to_device: Option<bool>,
    flush_max_ms: Option<u64>,
    default_ttl: Option<u32>,
    max_record_size: Option<usize>,
    read_cache_size: Option<usize>,
    defrag_lwm_pct: Option<u64>,
    defrag_sleep: Option<u64>,
    nsup_period: Option<u64>,
    filesize: Option<u64>,
    stop_writes_used_pct: Option<u64>,
    stop_writes_avail_pct: Option<u64>,
    evict_used_pct: Option<u64>,
    replication_factor: Option<u32>,
    write_commit_level_override: Option<String>,
    conflict_resolution_policy: Option<String>,
    storage_engine: Option<String>,
    data_size: Option<u64>,
    file: Option<OneOrMany>,
    device: Option<OneOrMany>,
    geo2dsphere_within: Option<GeoSection>,
}

/// `[namespace.<name>.geo2dsphere-within]` (Aerospike's `geo2dsphere-within { ... }`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GeoSection {
    min_level: Option<u8>,
    max_level: Option<u8>,
    max_cells: Option<u16>,
    level_mod: Option<u8>,
    /// Only `true`: every candidate is re-checked against the exact shape.
    strict: Option<bool>,
}

/// `file = "a.dat"` or `file = ["a.dat", "b.dat"]` (Aerospike repeats the key instead).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![p.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub cores: Option<usize>,
    pub data_dir: Option<PathBuf>,
    /// `service.node-id`, hex.
    pub node_id: Option<String>,
    pub cluster_name: Option<String>,
    pub access_address: Option<IpAddr>,
    /// Any heartbeat flag turns the heartbeat on, as a `[network.heartbeat]` section does.
    pub heartbeat_address: Option<IpAddr>,
    pub heartbeat_port: Option<u16>,
    /// Replaces the file's `mesh-seed-address-port` list when not empty.
    pub mesh_seeds: Vec<String>,
    pub fabric_port: Option<u16>,
}

fn range<T: std::fmt::Display + PartialOrd>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::OutOfRange {
            key: key.to_string(),
            value: v.to_string(),
            allowed: format!("{lo}..={hi}{unit}"),
        });
    }
    Ok(v)
}

/// A setting `set-config` may also change: the bounds are the engine's, so the config file
/// and set-config accept the same values.
fn dynamic(key: &str, v: u64, setting: Setting, unit: &str) -> Result<u64, ConfigError> {
    let (lo, hi) = setting.range();
    range(key, v, lo, hi, unit)
}

impl Config {
    /// Builds the configuration: defaults, then the file (if any), then the flags.
    pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
        let parsed = match file {
            None => FileConfig::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
        };
        Self::from_parsed(parsed, o)
    }

    /// Parses TOML text (for tests of validation).
    #[cfg(test)]
    pub fn from_toml(text: &str, o: &Overrides) -> Result<Config, ConfigError> {
        let parsed = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        Self::from_parsed(parsed, o)
    }

    fn from_parsed(f: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let svc = f.service.unwrap_or_default();
        let default_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = o.cores.or(svc.cores).unwrap_or(default_cores);
        let cores = range("cores", cores, 1, CORES_MAX, "")?;
        let port = o.port.or(svc.port).unwrap_or(3000);
        // Port 0 would give every core a different ephemeral port.
        let port = range("port", port, 1, u16::MAX, "")?;
        let mut namespaces = Vec::new();
        let sections = f
            .namespace
            .unwrap_or_else(|| BTreeMap::from([("test".to_string(), NamespaceSection::default())]));
        for (name, s) in sections {
            namespaces.push(Self::namespace(&name, s, cores)?);
        }
        let cluster = Self::cluster(&svc, f.network.unwrap_or_default(), o, port)?;
        if namespaces.is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "namespace".into(),
                value: "none".into(),
                allowed: "at least one [namespace.<name>] section".into(),
            });
        }
        Ok(Config {
            address: o
                .address
                .or(svc.address)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            port,
            cores,
            data_dir: o
                .data_dir
                .clone()
                .or(svc.data_dir)
                .unwrap_or_else(|| PathBuf::from("./apogee-data")),
            namespaces,
            proto_fd_max: range(
                "proto-fd-max",
                svc.proto_fd_max.unwrap_or(PROTO_FD_MAX_DEFAULT),
                1,
                PROTO_FD_MAX_MAX,
                " connections",
            )?,
            proto_fd_max_set: svc.proto_fd_max.is_some(),
            proto_fd_idle_ms: range(
                "proto-fd-idle-ms",
                svc.proto_fd_idle_ms.unwrap_or(0),
                0,
                PROTO_FD_IDLE_MS_MAX,
                " ms",
            )?,
            cluster,
        })
    }

    /// `service.node-id`, `cluster-name`, `access-address` and the `network` section.
    fn cluster(
        svc: &ServiceSection,
        net: NetworkSection,
        o: &Overrides,
        service_port: u16,
    ) -> Result<ClusterConfig, ConfigError> {
        let bad = |key: &str, value: &str, allowed: &str| ConfigError::OutOfRange {
            key: key.into(),
            value: value.into(),
            allowed: allowed.into(),
        };
        let node_id = match o.node_id.as_ref().or(svc.node_id.as_ref()) {
            None => None,
            Some(text) => Some(parse_node_id(text).ok_or_else(|| {
                bad(
                    "service.node-id",
                    text,
                    "1 to 16 hex digits, not zero (e.g. a1 or BB9040011AC4202)",
                )
            })?),
        };
        let cluster_name = match o.cluster_name.as_ref().or(svc.cluster_name.as_ref()) {
            None => None,
            // Aerospike's spelling of "no name".
            Some(n) if n == "null" => None,
            Some(n) => {
                let ok = !n.is_empty()
                    && n.len() <= CLUSTER_NAME_BYTES_MAX
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && !b";:,=".contains(&b));
                if !ok {
                    return Err(bad(
                        "service.cluster-name",
                        n,
                        "1..=64 printable ASCII characters without spaces or ; : , =",
                    ));
                }
                Some(n.clone())
            }
        };
        let address = o
            .address
            .or(svc.address)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let access_address = o.access_address.or(svc.access_address).unwrap_or(address);
        let hb_flags =
            o.heartbeat_address.is_some() || o.heartbeat_port.is_some() || !o.mesh_seeds.is_empty();
        let heartbeat = match (net.heartbeat, hb_flags) {
            (None, false) => None,
            (section, _) => {
                let h = section.unwrap_or_default();
                if let Some(mode) = h.mode.as_deref().filter(|m| *m != "mesh") {
                    return Err(bad(
                        "network.heartbeat.mode",
                        mode,
                        "mesh (multicast is not supported)",
                    ));
                }
                let port = o
                    .heartbeat_port
                    .or(h.port)
                    .unwrap_or(HEARTBEAT_PORT_DEFAULT);
                let port = range("network.heartbeat.port", port, 1, u16::MAX, "")?;
                if port == service_port {
                    return Err(bad(
                        "network.heartbeat.port",
                        &port.to_string(),
                        "a port other than the service port",
                    ));
                }
                let texts = if o.mesh_seeds.is_empty() {
                    h.mesh_seed_address_port.unwrap_or_default()
                } else {
                    o.mesh_seeds.clone()
                };
                let key = "network.heartbeat.mesh-seed-address-port";
                range(key, texts.len(), 0, MESH_SEEDS_MAX, " seeds")?;
                let seeds = texts
                    .iter()
                    .map(|t| {
                        parse_seed(t).ok_or_else(|| {
                            bad(
                                key,
                                t,
                                "\"<ip address> <port>\" (or <ip>:<port>), port 1..=65535",
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let address = o.heartbeat_address.or(h.address).unwrap_or(address);
                if address.is_unspecified() && access_address.is_unspecified() {
                    return Err(bad(
                        "service.access-address",
                        &access_address.to_string(),
                        "an address peers and clients can reach (set it when listening \
                         on all interfaces)",
                    ));
                }
                Some(HeartbeatConfig {
                    address,
                    port,
                    seeds,
                    interval_ms: range(
                        "network.heartbeat.interval",
                        h.interval
                            .unwrap_or(apogee_cluster::view::HEARTBEAT_INTERVAL_MS_DEFAULT),
                        HEARTBEAT_INTERVAL_MS_MIN,
                        HEARTBEAT_INTERVAL_MS_MAX,
                        " ms",
                    )?,
                    timeout_intervals: range(
                        "network.heartbeat.timeout",
                        h.timeout
                            .unwrap_or(apogee_cluster::view::HEARTBEAT_TIMEOUT_INTERVALS_DEFAULT),
                        HEARTBEAT_TIMEOUT_INTERVALS_MIN,
                        HEARTBEAT_TIMEOUT_INTERVALS_MAX,
                        " intervals",
                    )?,
                })
            }
        };
        let fabric = net.fabric.unwrap_or_default();
        let fabric_port = o.fabric_port.or(fabric.port).unwrap_or(FABRIC_PORT_DEFAULT);
        let fabric_port = range("network.fabric.port", fabric_port, 1, u16::MAX, "")?;
        if heartbeat.as_ref().is_some_and(|h| h.port == fabric_port) || fabric_port == service_port
        {
            return Err(bad(
                "network.fabric.port",
                &fabric_port.to_string(),
                "a port other than the service and heartbeat ports",
            ));
        }
        let defaults = apogee_cluster::MigrateConfig::default();
        let migrate = apogee_cluster::MigrateConfig {
            outgoing_partitions_max: svc
                .migrate_threads
                .unwrap_or(defaults.outgoing_partitions_max),
            incoming_partitions_max: svc
                .migrate_max_num_incoming
                .unwrap_or(defaults.incoming_partitions_max),
        };
        let migrate = migrate.validate().map_err(|e| {
            let (key, value, allowed) = match e {
                apogee_cluster::MigrateError::BadThreads(n) => {
                    ("service.migrate-threads", n, "1..=100")
                }
                apogee_cluster::MigrateError::BadIncoming(n) => {
                    ("service.migrate-max-num-incoming", n, "1..=256")
                }
                other => unreachable!("validate returns only pacing errors, not {other}"),
            };
            bad(key, &value.to_string(), allowed)
        })?;
        Ok(ClusterConfig {
            node_id,
            cluster_name,
            access_address,
            heartbeat,
            fabric_address: fabric.address.unwrap_or(address),
            fabric_port,
            migrate,
        })
    }

    /// The `storage-engine`, `file` and `device` keys: which regions each core owns.
    fn storage(
        key: &dyn Fn(&str) -> String,
        s: &NamespaceSection,
        wbs: usize,
        cores: usize,
        default_filesize: u64,
    ) -> Result<Vec<Vec<ExtentConfig>>, ConfigError> {
        match s.storage_engine.as_deref() {
            None | Some("device") => {
                if s.data_size.is_some() {
                    return Err(ConfigError::OutOfRange {
                        key: key("data-size"),
                        value: "set".into(),
                        allowed: "only with storage-engine = \"memory\" (devices use filesize)"
                            .into(),
                    });
                }
            }
            Some("memory") => {
                let persisted = s.file.is_some() || s.device.is_some();
                if persisted && s.data_size.is_some() {
                    return Err(ConfigError::OutOfRange {
                        key: key("data-size"),
                        value: "set".into(),
                        allowed: "only for memory without file or device (persisted, the data \
                                  size is what the files hold: set filesize)"
                            .into(),
                    });
                }
                if !persisted {
                    return Ok(Vec::new());
                }
            }
            Some(other) => {
                return Err(ConfigError::OutOfRange {
                    key: key("storage-engine"),
                    value: other.into(),
                    allowed: "device or memory".into(),
                })
            }
        }
        let files = s.file.as_ref().map(OneOrMany::paths).unwrap_or_default();
        let devices = s.device.as_ref().map(OneOrMany::paths).unwrap_or_default();
        let (k, paths): (&str, Vec<(PathBuf, Option<u64>)>) = match (files.len(), devices.len()) {
            (0, 0) => return Ok(Vec::new()),
            (_, 0) => {
                let size = s.filesize.unwrap_or(default_filesize);
                ("file", files.into_iter().map(|p| (p, Some(size))).collect())
            }
            (0, _) => ("device", devices.into_iter().map(|p| (p, None)).collect()),
            (f, d) => {
                return Err(ConfigError::OutOfRange {
                    key: key("device"),
                    value: format!("{d} devices and {f} files"),
                    allowed: "either file or device in one namespace, not both".into(),
                })
            }
        };
        range(&key(k), paths.len(), 1, STORAGE_PATHS_MAX, " paths")?;
        let mut seen = std::collections::BTreeSet::new();
        for (p, _) in &paths {
            if !seen.insert(p) {
                return Err(ConfigError::OutOfRange {
                    key: key(k),
                    value: p.display().to_string(),
                    allowed: "each path once".into(),
                });
            }
        }
        // A path that cannot be sized or split, named under the key that lists it.
        let unusable = |e: String| ConfigError::OutOfRange {
            key: key(k),
            value: paths[0].0.display().to_string(),
            allowed: e,
        };
        let per_core = (0..cores as u32)
            .map(|shard| regions(&paths, shard, cores as u32))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unusable)?;
        let unused = unaddressed_bytes(&paths, cores as u32).map_err(unusable)?;
        if unused > 0 {
            // A core's regions over all the paths together stay within the 1 TiB its index
            // addresses: a larger filesize would be space the node can never use.
            let cap = region_bytes_max(paths.len());
            if k == "file" {
                return Err(ConfigError::OutOfRange {
                    key: key("filesize"),
                    value: format!("{} bytes", paths[0].1.unwrap_or_default()),
                    allowed: format!(
                        "at most {} bytes with {} files on {cores} cores (a core's regions of \
                         all the files together are at most 1 TiB, what its index addresses)",
                        cap * cores as u64,
                        paths.len()
                    ),
                });
            }
            // A device is as large as it is: use what can be addressed, and say so.
            tracing::warn!(
                key = %key(k),
                devices = paths.len(),
                cores,
                used_per_core_per_device = cap,
                unused_per_core_per_device = unused,
                "part of each device is left unused: a core addresses at most 1 TiB over all \
                 its regions; run more cores to use it all"
            );
        }
        let region = per_core[0][0].bytes;
        let least = (FILE_HEADER_BYTES + 8 * wbs) as u64;
        if region < least {
            return Err(ConfigError::OutOfRange {
                key: key(if k == "file" { "filesize" } else { "device" }),
                value: format!("{region} bytes per core"),
                allowed: format!(
                    "at least {least} bytes per core (a header page and 8 write blocks); \
                     each {k} is split into one region per core"
                ),
            });
        }
        Ok(per_core)
    }

    fn namespace(
        name: &str,
        s: NamespaceSection,
        cores: usize,
    ) -> Result<NamespaceConfig, ConfigError> {
        let valid_name = !name.is_empty()
            && name.len() <= NAMESPACE_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(ConfigError::OutOfRange {
                key: "namespace".into(),
                value: name.into(),
                allowed: format!("1..={NAMESPACE_BYTES_MAX} characters of A-Z a-z 0-9 - _"),
            });
        }
        let d = NamespaceConfig::default_named(name);
        let key = |k: &str| format!("namespace.{name}.{k}");
        let wbs = s.write_block_size.unwrap_or(d.write_block_size);
        let wbs = range(
            &key("write-block-size"),
            wbs,
            BLOCK_SIZE_BYTES_MIN,
            BLOCK_SIZE_BYTES_MAX,
            " bytes",
        )?;
        if !wbs.is_power_of_two() || !wbs.is_multiple_of(IO_ALIGN_BYTES) {
            return Err(ConfigError::OutOfRange {
                key: key("write-block-size"),
                value: wbs.to_string(),
                allowed: "a power of two from 131072 to 8388608".into(),
            });
        }
        let record_max = wbs - BLOCK_HEADER_BYTES;
        let max_record_size = s.max_record_size.unwrap_or(record_max);
        let max_record_size = range(
            &key("max-record-size"),
            max_record_size,
            MAX_RECORD_SIZE_MIN,
            record_max,
            " bytes (at most write-block-size minus 64)",
        )?;
        let extents = Self::storage(&key, &s, wbs, cores, d.filesize)?;
        let memory = s.storage_engine.as_deref() == Some("memory");
        let data_size = range(
            &key("data-size"),
            s.data_size.unwrap_or(d.data_size),
            cores as u64 * (4096 + 8 * wbs as u64),
            cores as u64 * (apogee_engine::index::OFFSET_MAX + 1),
            " bytes (at least cores x (4096 + 8 x write-block-size); at most 1 TiB per core)",
        )?;
        let write_commit_level_override = match s.write_commit_level_override.as_deref() {
            None | Some("off") => CommitLevelOverride::Off,
            Some("all") => CommitLevelOverride::All,
            Some("master") => CommitLevelOverride::Master,
            Some(other) => {
                return Err(ConfigError::OutOfRange {
                    key: key("write-commit-level-override"),
                    value: other.into(),
                    allowed: "off, all or master".into(),
                })
            }
        };
        let conflict_resolution_policy = match s.conflict_resolution_policy.as_deref() {
            None | Some("generation") => apogee_engine::shard::ConflictPolicy::Generation,
            Some("last-update-time") => apogee_engine::shard::ConflictPolicy::LastUpdateTime,
            Some(other) => {
                return Err(ConfigError::OutOfRange {
                    key: key("conflict-resolution-policy"),
                    value: other.into(),
                    allowed: "generation or last-update-time".into(),
                })
            }
        };
        let geo2dsphere_within = Self::geo(&key, s.geo2dsphere_within.as_ref())?;
        Ok(NamespaceConfig {
            geo2dsphere_within,
            write_commit_level_override,
            conflict_resolution_policy,
            replication_factor: range(
                &key("replication-factor"),
                s.replication_factor.unwrap_or(d.replication_factor),
                1,
                apogee_cluster::CLUSTER_NODES_MAX as u32,
                " copies (a CE cluster has at most 8 nodes)",
            )?,
            extents,
            memory,
            data_size,
            name: name.to_string(),
            write_block_size: wbs,
            commit_to_device: s.commit_to_device.unwrap_or(d.commit_to_device),
            flush_max_ms: dynamic(
                &key("flush-max-ms"),
                s.flush_max_ms.unwrap_or(d.flush_max_ms),
                Setting::FlushMaxMs,
                " ms",
            )?,
            default_ttl: range(
                &key("default-ttl"),
                s.default_ttl.unwrap_or(d.default_ttl),
                0,
                TTL_SECS_MAX,
                " seconds",
            )?,
            max_record_size,
            read_cache_size: range(
                &key("read-cache-size"),
                s.read_cache_size.unwrap_or(d.read_cache_size),
                0,
                READ_CACHE_BYTES_MAX,
                " bytes",
            )?,
            defrag_lwm_pct: dynamic(
                &key("defrag-lwm-pct"),
                s.defrag_lwm_pct.unwrap_or(d.defrag_lwm_pct),
                Setting::DefragLwmPct,
                " percent",
            )?,
            defrag_sleep_us: dynamic(
                &key("defrag-sleep"),
                s.defrag_sleep.unwrap_or(d.defrag_sleep_us),
                Setting::DefragSleep,
                " microseconds",
            )?,
            nsup_period: dynamic(
                &key("nsup-period"),
                s.nsup_period.unwrap_or(d.nsup_period),
                Setting::NsupPeriod,
                " seconds",
            )?,
            // Each core's file needs its header page and at least 8 blocks.
            filesize: range(
                &key("filesize"),
                s.filesize.unwrap_or(d.filesize),
                cores as u64 * (4096 + 8 * wbs as u64),
                cores as u64 * (apogee_engine::index::OFFSET_MAX + 1),
                " bytes (at least cores x (4096 + 8 x write-block-size); \
                 at most 1 TiB per core, what a shard's index addresses)",
            )?,
            stop_writes_used_pct: dynamic(
                &key("stop-writes-used-pct"),
                s.stop_writes_used_pct.unwrap_or(d.stop_writes_used_pct),
                Setting::StopWritesUsedPct,
                " percent",
            )?,
            stop_writes_avail_pct: dynamic(
                &key("stop-writes-avail-pct"),
                s.stop_writes_avail_pct.unwrap_or(d.stop_writes_avail_pct),
                Setting::StopWritesAvailPct,
                " percent",
            )?,
            evict_used_pct: dynamic(
                &key("evict-used-pct"),
                s.evict_used_pct.unwrap_or(d.evict_used_pct),
                Setting::EvictUsedPct,
                " percent (0 disables eviction)",
            )?,
        })
    }

    /// A namespace's `geo2dsphere-within` section, checked as Aerospike checks it (levels
    /// 0..=30 with min-level at most max-level, max-cells 1..=256, level-mod 1..=3, strict
    /// only true).
    fn geo(
        key: &dyn Fn(&str) -> String,
        s: Option<&GeoSection>,
    ) -> Result<crate::sindex::cells::GeoCover, ConfigError> {
        use crate::sindex::cells::{GeoCover, MAX_CELLS_MAX};
        let d = GeoCover::default();
        let Some(s) = s else { return Ok(d) };
        let k = |name: &str| key(&format!("geo2dsphere-within.{name}"));
        let max_level = range(
            &k("max-level"),
            s.max_level.unwrap_or(d.max_level),
            0,
            30,
            "",
        )?;
        let min_level = range(
            &k("min-level"),
            s.min_level.unwrap_or(d.min_level),
            0,
            max_level,
            " (at most max-level)",
        )?;
        let max_cells = range(
            &k("max-cells"),
            u64::from(s.max_cells.unwrap_or(d.max_cells)),
            1,
            MAX_CELLS_MAX,
            " cells",
        )? as u16;
        let level_mod = range(
            &k("level-mod"),
            s.level_mod.unwrap_or(d.level_mod),
            1,
            3,
            "",
        )?;
        if s.strict == Some(false) {
            return Err(ConfigError::OutOfRange {
                key: k("strict"),
                value: "false".into(),
                allowed: "true (Apogee always re-checks geo candidates)".into(),
            });
        }
        Ok(GeoCover {
            min_level,
            max_level,
            max_cells,
            level_mod,
        })
    }

    /// The namespaces' configured replication factors, in configuration order.
    pub fn replication_factors(&self) -> Vec<u32> {
        self.namespaces
            .iter()
            .map(|n| n.replication_factor)
            .collect()
    }

    pub fn namespace_index(&self, name: &[u8]) -> Option<usize> {
        self.namespaces
            .iter()
            .position(|n| n.name.as_bytes() == name)
    }
}

/// A node id as `node-id` takes it: 1 to 16 hex digits, not zero.
pub fn parse_node_id(text: &str) -> Option<u64> {
    let ok = (1..=16).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    u64::from_str_radix(text, 16).ok().filter(|&v| ok && v != 0)
}

/// A `mesh-seed-address-port` entry: Aerospike's `"<address> <port>"`, or `<address>:<port>`
/// (`[v6]:port` for IPv6). Names are not resolved: a seed is an address.
fn parse_seed(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some((host, port)) = text.split_once(char::is_whitespace) {
        let ip: IpAddr = host.trim().parse().ok()?;
        let port: u16 = port.trim().parse().ok()?;
        return (port != 0).then_some(SocketAddr::new(ip, port));
    }
    text.parse::<SocketAddr>().ok().filter(|a| a.port() != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geo2dsphere_within_is_read_and_checked() {
        let o = Overrides::default();
        let c = Config::from_toml(
            "[namespace.test.geo2dsphere-within]\nmin-level = 4\nmax-level = 16\nmax-cells = 30\nlevel-mod = 2\nstrict = true\n",
            &o,
        )
        .unwrap();
        let g = c.namespaces[0].geo2dsphere_within;
        assert_eq!(
            (g.min_level, g.max_level, g.max_cells, g.level_mod),
            (4, 16, 30, 2)
        );
        let d = Config::load(None, &o).unwrap().namespaces[0].geo2dsphere_within;
        assert_eq!(
            (d.min_level, d.max_level, d.max_cells, d.level_mod),
            (1, 20, 12, 1)
        );
        for (bad, key) in [
            ("max-level = 31", "max-level"),
            ("min-level = 21", "min-level"),
            ("max-cells = 0", "max-cells"),
            ("max-cells = 257", "max-cells"),
            ("level-mod = 4", "level-mod"),
            ("strict = false", "strict"),
        ] {
            let text = format!("[namespace.test.geo2dsphere-within]\n{bad}\n");
            let e = Config::from_toml(&text, &o).unwrap_err().to_string();
            assert!(
                e.contains(&format!("geo2dsphere-within.{key}")),
                "{bad}: {e}"
            );
        }
        assert!(Config::from_toml("[namespace.test.geo2dsphere-within]\nfoo = 1\n", &o).is_err());
    }

    #[test]
    fn embedded_default() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.namespaces.len(), 1);
        assert_eq!(c.namespaces[0].name, "test");
        assert!(c.namespaces[0].commit_to_device);
        assert_eq!(c.data_dir, PathBuf::from("./apogee-data"));
        assert_eq!((c.proto_fd_max, c.proto_fd_max_set), (15_000, false));
        assert_eq!(c.proto_fd_idle_ms, 0);
    }

    #[test]
    fn connection_limits() {
        let o = Overrides::default();
        let c = Config::from_toml(
            "[service]\nproto-fd-max = 100\nproto-fd-idle-ms = 2500\n",
            &o,
        )
        .unwrap();
        assert_eq!((c.proto_fd_max, c.proto_fd_max_set), (100, true));
        assert_eq!(c.proto_fd_idle_ms, 2500);
        let e = Config::from_toml("[service]\nproto-fd-max = 0\n", &o).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("proto-fd-max = 0 is out of range"),
            "{e}"
        );
        let e = Config::from_toml("[service]\nproto-fd-idle-ms = 86400001\n", &o).unwrap_err();
        assert!(e.to_string().contains("proto-fd-idle-ms"), "{e}");
    }

    #[test]
    fn file_and_overrides() {
        let text = r#"
            [service]
            port = 4000
            cores = 3
            [namespace.bar]
            write-block-size = 131072
            commit-to-device = false
            default-ttl = 60
        "#;
        let o = Overrides {
            port: Some(5000),
            ..Default::default()
        };
        let c = Config::from_toml(text, &o).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.cores, 3);
        let ns = &c.namespaces[0];
        assert_eq!(ns.name, "bar");
        assert_eq!(ns.write_block_size, 131072);
        assert!(!ns.commit_to_device);
        assert_eq!(ns.max_record_size, 131072 - 64);
    }

    #[test]
    fn files_and_devices_become_one_region_per_core() {
        let o = Overrides::default();
        let text = r#"
            [service]
            cores = 2
            [namespace.bar]
            storage-engine = "device"
            file = ["/d/a.dat", "/d/b.dat"]
            filesize = 67108864
        "#;
        let c = Config::from_toml(text, &o).unwrap();
        let ext = &c.namespaces[0].extents;
        assert_eq!(ext.len(), 2, "one list per core");
        assert_eq!(ext[1].len(), 2, "a region of each file");
        assert_eq!(
            (ext[1][1].path.clone(), ext[1][1].start, ext[1][1].bytes),
            (PathBuf::from("/d/b.dat"), 32 << 20, 32 << 20)
        );
        let one = "[namespace.bar]\nfile = \"/d/a.dat\"\nfilesize = 67108864";
        assert_eq!(
            Config::from_toml(one, &o).unwrap().namespaces[0]
                .extents
                .len(),
            c_cores()
        );
        let err = |text: &str| Config::from_toml(text, &o).unwrap_err().to_string();
        let mem = "[namespace.bar]\nstorage-engine = \"memory\"\ndata-size = 1073741824";
        let m = &Config::from_toml(mem, &o).unwrap().namespaces[0];
        assert!(m.memory && m.extents.is_empty() && m.data_size == 1 << 30);
        let persisted = "[namespace.bar]\nstorage-engine = \"memory\"\nfile = \"/a\"";
        let p = &Config::from_toml(persisted, &o).unwrap().namespaces[0];
        assert!(p.memory && !p.extents.is_empty());
        assert!(err(&format!("{persisted}\ndata-size = 1073741824"))
            .contains("namespace.bar.data-size = set"));
        assert!(err("[namespace.bar]\ndata-size = 1073741824").contains("namespace.bar.data-size"));
        assert!(err("[namespace.bar]\nstorage-engine = \"disk\"")
            .contains("namespace.bar.storage-engine = disk is out of range: device or memory"));
        assert!(
            err("[namespace.bar]\nfile = [\"/a\"]\ndevice = [\"/dev/x\"]")
                .contains("either file or device")
        );
        assert!(err("[namespace.bar]\nfile = [\"/a\", \"/a\"]").contains("each path once"));
        assert!(
            err("[service]\ncores = 2\n[namespace.bar]\nfile = [\"/a\"]\nfilesize = 4194304")
                .contains("namespace.bar.filesize")
        );
        assert!(
            err("[namespace.bar]\ndevice = [\"/nonexistent/dev\"]").contains("cannot size device")
        );
        // Two files of 1.5 TiB on 2 cores: 768 GiB a core on each, 1.5 TiB a core in all,
        // more than a core's index addresses. One file of that size is fine.
        let big = "[service]\ncores = 2\n[namespace.bar]\nfilesize = 1649267441664\nfile = ";
        let e = err(&format!("{big}[\"/a\", \"/b\"]"));
        assert!(
            e.contains("namespace.bar.filesize = 1649267441664 bytes")
                && e.contains("at most 1099511627776 bytes with 2 files on 2 cores"),
            "{e}"
        );
        assert!(Config::from_toml(&format!("{big}\"/a\""), &o).is_ok());
    }

    fn c_cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let o = Overrides::default();
        let e = Config::from_toml("[namespace.test]\nwrite-block-size = 1000\n", &o).unwrap_err();
        assert!(
            e.to_string().contains("namespace.test.write-block-size"),
            "{e}"
        );
        assert!(e.to_string().contains("131072..=8388608"), "{e}");
        let e = Config::from_toml("[namespace.test]\nwrite-blok-size = 131072\n", &o).unwrap_err();
        assert!(e.to_string().contains("write-blok-size"), "{e}");
        let e = Config::from_toml("[service]\ncores = 0\n", &o).unwrap_err();
        assert!(e.to_string().contains("cores"), "{e}");
        let e = Config::from_toml("[namespace.\"a;b\"]\n", &o).unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
        let e = Config::from_toml("[namespace.test]\nwrite-block-size = 196608\n", &o).unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
    }

    #[test]
    fn commit_level_and_conflict_policy_take_aerospikes_names() {
        use apogee_engine::shard::ConflictPolicy;
        use apogee_wire::msg::info3;
        let o = Overrides::default();
        let d = &Config::from_toml("[namespace.test]\n", &o)
            .unwrap()
            .namespaces[0];
        assert_eq!(d.write_commit_level_override, CommitLevelOverride::Off);
        assert_eq!(d.conflict_resolution_policy, ConflictPolicy::Generation);
        assert!(d.write_commit_level_override.waits_for_replicas(0));
        assert!(!d
            .write_commit_level_override
            .waits_for_replicas(info3::COMMIT_MASTER));
        let text = "[namespace.test]\nwrite-commit-level-override = \"master\"\n\
                    conflict-resolution-policy = \"last-update-time\"\n";
        let n = &Config::from_toml(text, &o).unwrap().namespaces[0];
        assert_eq!(n.write_commit_level_override, CommitLevelOverride::Master);
        assert!(!n.write_commit_level_override.waits_for_replicas(0));
        assert_eq!(n.conflict_resolution_policy, ConflictPolicy::LastUpdateTime);
        assert!(CommitLevelOverride::All.waits_for_replicas(info3::COMMIT_MASTER));
        let e = Config::from_toml(
            "[namespace.test]\nwrite-commit-level-override = \"one\"",
            &o,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("namespace.test.write-commit-level-override = one"),
            "{e}"
        );
        let e = Config::from_toml("[namespace.test]\nconflict-resolution-policy = \"x\"", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("generation or last-update-time"), "{e}");
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, &Overrides::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn without_a_heartbeat_section_or_flag_the_node_runs_alone() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.cluster.heartbeat, None);
        assert_eq!(c.cluster.node_id, None);
        assert_eq!(c.cluster.cluster_name, None);
        assert_eq!(c.cluster.fabric_port, 3001);
        assert_eq!(c.namespaces[0].replication_factor, 2);
    }

    #[test]
    fn the_cluster_keys_take_aerospikes_names_and_defaults() {
        let text = r#"
            [service]
            node-id = "a1"
            cluster-name = "dev"
            access-address = "10.0.0.7"
            [network.heartbeat]
            mode = "mesh"
            mesh-seed-address-port = ["127.0.0.1 3002", "127.0.0.2:3012"]
            [network.fabric]
            port = 4001
            [namespace.test]
            replication-factor = 3
        "#;
        let c = Config::from_toml(text, &Overrides::default()).unwrap();
        assert_eq!(c.cluster.node_id, Some(0xA1));
        assert_eq!(c.cluster.cluster_name.as_deref(), Some("dev"));
        assert_eq!(c.cluster.access_address, IpAddr::from([10, 0, 0, 7]));
        let h = c.cluster.heartbeat.unwrap();
        assert_eq!(
            (h.port, h.interval_ms, h.timeout_intervals),
            (3002, 150, 10)
        );
        assert_eq!(
            h.seeds,
            vec![
                "127.0.0.1:3002".parse().unwrap(),
                "127.0.0.2:3012".parse().unwrap()
            ]
        );
        assert_eq!(h.address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.cluster.fabric_port, 4001);
        assert_eq!(c.namespaces[0].replication_factor, 3);
    }

    #[test]
    fn flags_turn_the_heartbeat_on_and_override_the_file() {
        let o = Overrides {
            node_id: Some("B2".into()),
            heartbeat_port: Some(5012),
            mesh_seeds: vec!["127.0.0.1:5002".into()],
            cluster_name: Some("x".into()),
            ..Default::default()
        };
        let c = Config::from_toml("[network.heartbeat]\nport = 9\n", &o).unwrap();
        assert_eq!(c.cluster.node_id, Some(0xB2));
        let h = c.cluster.heartbeat.unwrap();
        assert_eq!(h.port, 5012);
        assert_eq!(h.seeds, vec!["127.0.0.1:5002".parse().unwrap()]);
    }

    #[test]
    fn every_bad_cluster_value_names_its_key() {
        let cases = [
            ("[service]\nnode-id = \"0\"", "service.node-id = 0"),
            ("[service]\nnode-id = \"xyz\"", "service.node-id = xyz"),
            (
                "[service]\nnode-id = \"11112222333344445\"",
                "service.node-id",
            ),
            ("[service]\ncluster-name = \"a b\"", "service.cluster-name"),
            ("[service]\ncluster-name = \"\"", "service.cluster-name"),
            (
                "[network.heartbeat]\nmode = \"multicast\"",
                "network.heartbeat.mode = multicast",
            ),
            (
                "[network.heartbeat]\nport = 0",
                "network.heartbeat.port = 0",
            ),
            (
                "[network.heartbeat]\nport = 3000",
                "network.heartbeat.port = 3000",
            ),
            (
                "[network.heartbeat]\ninterval = 10",
                "network.heartbeat.interval = 10",
            ),
            (
                "[network.heartbeat]\ntimeout = 2",
                "network.heartbeat.timeout = 2",
            ),
            (
                "[network.heartbeat]\nmesh-seed-address-port = [\"host 3002\"]",
                "network.heartbeat.mesh-seed-address-port = host 3002",
            ),
            (
                "[network.heartbeat]\nmesh-seed-address-port = [\"127.0.0.1 0\"]",
                "mesh-seed-address-port = 127.0.0.1 0",
            ),
            (
                "[network.fabric]\nport = 3002\n[network.heartbeat]",
                "network.fabric.port = 3002",
            ),
            ("[network.heartbeat]\nbogus = 1", "bogus"),
            (
                "[namespace.test]\nreplication-factor = 0",
                "namespace.test.replication-factor = 0",
            ),
            (
                "[namespace.test]\nreplication-factor = 9",
                "namespace.test.replication-factor = 9",
            ),
            (
                "[service]\naddress = \"0.0.0.0\"\n[network.heartbeat]",
                "service.access-address = 0.0.0.0",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
