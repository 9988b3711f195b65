//! Answers to info-protocol requests (spec §9): what the official clients ask to connect,
//! route and tend, plus namespace and node statistics.
//!
//! Owns the text of every info value. Every reply line is `<command>\t<value>\n`, in request
//! order; neither the echoed command nor the value contains a tab or newline. A reply is never
//! longer than [`INFO_REPLY_BYTES_MAX`]. It must never change data.

use std::borrow::Cow;

use apogee_wire::info::{parse_request, InfoCommand, INFO_COMMANDS_MAX, INFO_REQUEST_BYTES_MAX};
use apogee_wire::PARTITION_COUNT;

use crate::node::Node;

/// The Aerospike server version Apogee reports; it selects the clients' modern formats (§9.8).
pub const BUILD: &str = "8.1.2.0";

/// Most bytes of one info reply. Fits a full `bins` of several namespaces (65,535 names are
/// about 1 MiB) with room to spare; without it one 50 KB request of `bins\n` over 70,000 names
/// built a 1.83 GB reply. Aerospike (8.1.2.0) has no bound: 100,000 `replicas` there give a
/// 140 MB reply.
pub const INFO_REPLY_BYTES_MAX: usize = 16 << 20;

/// The value of a command whose answer does not fit in what is left of the reply.
const REPLY_FULL: &str = "ERROR:4:info reply over 16777216 bytes";

/// The value of a command that contains a tab. Aerospike echoes such a command as received,
/// which breaks the reply's framing (`node\tx` gets `node\tx\tERROR:4:unrecognized command`).
const TAB_IN_COMMAND: &str = "ERROR:4:tab in info command";

// Room is kept for a `REPLY_FULL` line for every command, so the whole request's worth must
// fit in a reply.
const _: () = assert!(
    INFO_REQUEST_BYTES_MAX + INFO_COMMANDS_MAX * (REPLY_FULL.len() + 2) < INFO_REPLY_BYTES_MAX
);

/// A namespace's configuration as `key=value;...`, with Aerospike's key names; the dynamic
/// settings as they are now (after any set-config).
fn namespace_config(node: &Node, i: usize) -> String {
    use apogee_engine::tuning::Setting;
    use std::sync::atomic::Ordering::Relaxed;
    let ns = &node.config.namespaces[i];
    let live = &node.namespaces[i].live;
    let tuning = &node.namespaces[i].tuning;
    let get = |s: Setting| tuning.get(s);
    let geo = live.geo.load();
    format!(
        "replication-factor={};default-ttl={};nsup-period={};storage-engine=device;write-block-size={};\
         commit-to-device={};flush-max-ms={};max-record-size={};read-cache-size={};defrag-lwm-pct={};defrag-sleep={};\
         filesize={};stop-writes-used-pct={};stop-writes-avail-pct={};evict-used-pct={};\
         write-commit-level-override={};conflict-resolution-policy={};\
         geo2dsphere-within.strict=true;geo2dsphere-within.min-level={};geo2dsphere-within.max-level={};\
         geo2dsphere-within.max-cells={};geo2dsphere-within.level-mod={};geo2dsphere-within.earth-radius-meters={}",
        ns.replication_factor,
        live.default_ttl.load(Relaxed),
        get(Setting::NsupPeriod),
        ns.write_block_size,
        ns.commit_to_device,
        get(Setting::FlushMaxMs),
        live.max_record_size.load(Relaxed),
        ns.read_cache_size,
        get(Setting::DefragLwmPct),
        get(Setting::DefragSleep),
        ns.filesize,
        get(Setting::StopWritesUsedPct),
        get(Setting::StopWritesAvailPct),
        get(Setting::EvictUsedPct),
        ns.write_commit_level_override.name(),
        ns.conflict_resolution_policy.name(),
        geo.min_level,
        geo.max_level,
        geo.max_cells,
        geo.level_mod,
        apogee_ops::geo::EARTH_RADIUS_METERS,
    )
}

/// `sets`, `sets/<ns>`, `sets/<ns>/<set>`: one `ns=..:set=..:objects=..` entry per set, the
/// counts summed over every shard.
fn sets(node: &Node, args: &str) -> String {
    let mut want = args.split('/').filter(|a| !a.is_empty());
    let (want_ns, want_set) = (want.next(), want.next());
    let mut out = Vec::new();
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        if want_ns.is_some_and(|w| w != ns.name) {
            continue;
        }
        let mut totals: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for shard in node.namespaces[i].shards().iter() {
            for (name, n) in shard.set_stats.snapshot() {
                *totals.entry(name).or_default() += n;
            }
        }
        let truncated = node.namespaces[i].truncated().clone();
        for (name, objects) in totals {
            let truncate_lut = truncated.sets.get(&name).copied().unwrap_or(0);
            let name = String::from_utf8_lossy(&name);
            if want_set.is_some_and(|w| w != name) {
                continue;
            }
            out.push(format!(
                "ns={}:set={name}:objects={objects}:tombstones=0:truncate_lut={truncate_lut}:sindexes=0:index_populating=false:disable-eviction=false:enable-index=false:stop-writes-count=0",
                ns.name
            ));
        }
    }
    if want_ns.is_some_and(|w| node.config.namespace_index(w.as_bytes()).is_none()) {
        return "ERROR:20:namespace not found".into();
    }
    let mut s = out.join(";");
    if !s.is_empty() {
        s.push(';');
    }
    s
}

/// `latencies:[hist=batch-index|{ns}-read|{ns}-write|{ns}-batch-sub-read|{ns}-batch-sub-write]`:
/// per namespace and kind (and for whole batches), the last window's ops/sec and the
/// percentages of requests over 1, 8 and 64 ms, summed over every core.
fn latencies(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let wanted = cmd.param("hist");
    let mut parts = Vec::new();
    if wanted.is_none_or(|w| w == "batch-index") {
        let windows: Vec<_> = node
            .batch_latency
            .iter()
            .map(crate::latency::Histogram::last_window)
            .collect();
        parts.push(format!("batch-index:{}", crate::latency::summary(&windows)));
    }
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        for (kind, label) in crate::latency::KIND_LABELS.iter().enumerate() {
            let name = format!("{{{}}}-{label}", ns.name);
            if wanted.is_some_and(|w| w != name) {
                continue;
            }
            let windows: Vec<_> = node.namespaces[i]
                .latency
                .iter()
                .map(|h| h[kind].last_window())
                .collect();
            parts.push(format!("{name}:{}", crate::latency::summary(&windows)));
        }
    }
    if parts.is_empty() {
        return "ERROR:4:no such histogram".into();
    }
    parts.join(";")
}

/// `set-config:context=namespace;id=<ns>;<key>=<value>[;...]`: changes dynamic settings on
/// every shard. Every value is checked before any is applied; a bad one changes nothing.
fn set_config(node: &Node, cmd: &InfoCommand<'_>) -> String {
    use apogee_engine::tuning::Setting;
    use std::sync::atomic::Ordering::Relaxed;
    if cmd.param("context") != Some("namespace") {
        return "ERROR:4:set-config supports context=namespace".into();
    }
    let Some(id) = cmd.param("id") else {
        return "ERROR:4:set-config needs id=<namespace>".into();
    };
    let Some(i) = node.config.namespace_index(id.as_bytes()) else {
        return "ERROR:20:namespace not found".into();
    };
    enum Change {
        DefaultTtl(u32),
        MaxRecordSize(usize),
        Engine(Setting, u64),
        /// `geo2dsphere-within-*`, as Aerospike names them in set-config (min-level above
        /// max-level is accepted, as Aerospike accepts it).
        GeoMinLevel(u8),
        GeoMaxLevel(u8),
        GeoMaxCells(u16),
    }
    let mut changes = Vec::new();
    for (k, v) in cmd
        .args
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !matches!(*k, "context" | "id"))
    {
        let Ok(n) = v.parse::<u64>() else {
            return format!("ERROR:4:{k} must be a non-negative integer, not {v}");
        };
        let record_max =
            node.config.namespaces[i].write_block_size - apogee_engine::block::BLOCK_HEADER_BYTES;
        let (lo, hi, change) = match k {
            "default-ttl" => (
                0,
                u64::from(crate::config::TTL_SECS_MAX),
                Change::DefaultTtl(n as u32),
            ),
            "max-record-size" => (
                crate::config::MAX_RECORD_SIZE_MIN as u64,
                record_max as u64,
                Change::MaxRecordSize(n as usize),
            ),
            "geo2dsphere-within-min-level" => (0, 30, Change::GeoMinLevel(n as u8)),
            "geo2dsphere-within-max-level" => (0, 30, Change::GeoMaxLevel(n as u8)),
            "geo2dsphere-within-max-cells" => (
                1,
                crate::sindex::cells::MAX_CELLS_MAX,
                Change::GeoMaxCells(n as u16),
            ),
            _ => match Setting::from_name(k) {
                Some(s) => {
                    let (lo, hi) = s.range();
                    (lo, hi, Change::Engine(s, n))
                }
                None => return format!("ERROR:4:{k} is not a dynamic namespace parameter"),
            },
        };
        if !(lo..=hi).contains(&n) {
            return format!("ERROR:4:{k} = {n} is out of range: {lo}..={hi}");
        }
        changes.push(change);
    }
    if changes.is_empty() {
        return "ERROR:4:set-config needs a <parameter>=<value>".into();
    }
    let namespace = &node.namespaces[i];
    for c in changes {
        match c {
            Change::DefaultTtl(v) => namespace.live.default_ttl.store(v, Relaxed),
            Change::MaxRecordSize(v) => namespace.live.max_record_size.store(v, Relaxed),
            Change::Engine(s, v) => namespace.tuning.set(s, v),
            Change::GeoMinLevel(v) => namespace.live.geo.update(|g| g.min_level = v),
            Change::GeoMaxLevel(v) => namespace.live.geo.update(|g| g.max_level = v),
            Change::GeoMaxCells(v) => namespace.live.geo.update(|g| g.max_cells = v),
        }
    }
    tracing::info!(command = cmd.raw, "set-config applied");
    "ok".into()
}

fn namespace_stats(node: &Node, name: &str) -> Option<String> {
    let i = node.config.namespace_index(name.as_bytes())?;
    let s = node.namespace_stats(i);
    Some(format!(
        "objects={};tombstones={};bad_records_skipped={};client_write_success={};client_read_success={};\
         expired_objects={};evicted_objects={};data_used_bytes={};data_total_bytes={};data_used_pct={};\
         index_used_bytes={};effective_replication_factor={};{};cache_hits={};device_reads={};{};{};{}",
        s.objects,
        s.shadows,
        s.bad_records,
        s.writes,
        s.reads,
        s.expired,
        s.evicted,
        s.used_bytes,
        s.total_bytes,
        (s.used_bytes * 100).checked_div(s.total_bytes).unwrap_or(0),
        s.index_bytes,
        node.partitions.load().replica_count(i),
        namespace_config(node, i),
        s.cache_hits,
        s.device_reads,
        node.namespaces[i].replication.describe(),
        node.partitions.load().migrate_describe(i),
        node.namespaces[i].migration.describe(),
    ))
}

/// `get-config[:context=service|namespace;id=<ns>]`: the configuration, Aerospike-style.
fn get_config(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let cfg = &node.config;
    match cmd.param("context").unwrap_or("service") {
        "service" => format!(
            "cluster-name={};node-id={};service-threads={};address={};port={};data-dir={};\
             proto-fd-max={};proto-fd-idle-ms={}",
            cfg.cluster.cluster_name.as_deref().unwrap_or("null"),
            node.name,
            cfg.cores,
            cfg.address,
            cfg.port,
            cfg.data_dir.display(),
            cfg.proto_fd_max,
            cfg.proto_fd_idle_ms
        ),
        "namespace" => {
            let Some(id) = cmd.param("id") else {
                return "ERROR:4:get-config context=namespace needs id=<namespace>".into();
            };
            match cfg.namespace_index(id.as_bytes()) {
                Some(i) => namespace_config(node, i),
                None => "ERROR:20:namespace not found".into(),
            }
        }
        "network" => network_config(cfg),
        other => format!("ERROR:4:unknown get-config context {other}"),
    }
}

/// `get-config:context=network` with CE 8.1.2.0's key names (`service.port`,
/// `heartbeat.mesh-seed-address-port=127.0.0.1:3002`, ...). A node without heartbeat reports
/// `heartbeat.mode=none` (CE always has one).
fn network_config(cfg: &crate::config::Config) -> String {
    let c = &cfg.cluster;
    let mut out = format!(
        "service.port={};service.address={};service.access-address={};",
        cfg.port, cfg.address, c.access_address
    );
    match &c.heartbeat {
        None => out.push_str("heartbeat.mode=none;"),
        Some(h) => {
            let seeds: Vec<String> = h.seeds.iter().map(|s| s.to_string()).collect();
            out.push_str(&format!(
                "heartbeat.mode=mesh;heartbeat.address={};heartbeat.port={};\
                 heartbeat.mesh-seed-address-port={};heartbeat.interval={};heartbeat.timeout={};",
                h.address,
                h.port,
                seeds.join(","),
                h.interval_ms,
                h.timeout_intervals
            ));
        }
    }
    out.push_str(&format!(
        "fabric.address={};fabric.port={}",
        c.fabric_address, c.fabric_port
    ));
    out
}

/// `bins` and `bins/<ns>`: the names each namespace has seen; `REPLY_FULL` when longer than
/// `room` bytes.
fn bins(node: &Node, cmd: &InfoCommand<'_>, room: usize) -> String {
    let names: Vec<String> = node
        .config
        .namespaces
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let only = match cmd.args {
        "" => None,
        ns => match node.config.namespace_index(ns.as_bytes()) {
            Some(i) => Some(i),
            None => return "ERROR:20:namespace not found".into(),
        },
    };
    node.bin_names
        .describe(&names, only, room)
        .unwrap_or_else(|_| REPLY_FULL.into())
}

/// `partition-info[:namespace=<ns>]`: one row per namespace and partition, with CE 8.1.2.0's
/// header and columns up to `regime` (Apogee keeps no per-partition migration counts or
/// versions: those columns are 0, `tree_id` 0 and the versions `-`).
fn partition_info(node: &Node, cmd: &InfoCommand<'_>, room: usize) -> String {
    const HEADER: &str = "namespace:partition:state:n_replicas:replica:succession:n_dupl:\
                          working_master:proxy_dst:emigrates:lead_emigrates:immigrates:records:\
                          tombstones:regime:tree_id:version:final_version";
    let only = match cmd.param("namespace") {
        None => None,
        Some(ns) => match node.config.namespace_index(ns.as_bytes()) {
            Some(i) => Some(i),
            None => return "ERROR:20:namespace not found".into(),
        },
    };
    let table = node.partitions.load();
    let mut out = String::from(HEADER);
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        for p in 0..PARTITION_COUNT {
            let objects = node.namespaces[i].partition_objects[usize::from(p)]
                .load(std::sync::atomic::Ordering::Relaxed);
            let row = table.partition_info_row(i, p, objects);
            out.push_str(&format!(";{}:{p}:{row}:0:-:-", ns.name));
            if out.len() > room {
                return REPLY_FULL.into();
            }
        }
    }
    out
}

/// The answer to one command; `room` is how many bytes its value may take, which only the
/// commands whose values can be long look at (the caller checks every value).
fn answer_one(node: &Node, cmd: &InfoCommand<'_>, room: usize) -> String {
    let cfg = &node.config;
    let ns_names = || cfg.namespaces.iter().map(|n| n.name.as_str());
    let per_ns = |f: &dyn Fn(&str) -> String| ns_names().map(f).collect::<Vec<_>>().join(";");
    let per_ns_index = |f: &dyn Fn(usize) -> String| {
        let each = ns_names().enumerate().map(|(i, n)| format!("{n}:{}", f(i)));
        each.collect::<Vec<_>>().join(";")
    };
    let service = format!("{}:{}", cfg.address, cfg.port);
    match cmd.name {
        "node" => node.name.clone(),
        "build" => BUILD.into(),
        "version" => format!("Apogee {} (Aerospike protocol, build {BUILD})", env!("CARGO_PKG_VERSION")),
        "edition" => "Apogee".into(),
        // Aerospike lists its log sinks as `id:path`; Apogee has one, its standard error.
        "logs" => "0:stderr".into(),
        "partition-generation" | "rebalance-generation" => {
            node.partitions.load().generation().to_string()
        }
        "peers-generation" => node.cluster.load().peers_generation.to_string(),
        "cluster-name" => cfg.cluster.cluster_name.as_deref().unwrap_or("null").into(),
        "cluster-stable" => {
            let migrating = !node.partitions.load().is_migration_stable();
            node.cluster.load().cluster_stable(cmd.args, migrating, |ns| {
                cfg.namespace_index(ns.as_bytes()).is_some()
            })
        }
        "partitions" => PARTITION_COUNT.to_string(),
        "peers-clear-std" | "peers-clear-alt" => node.cluster.load().peers_value(cfg.port),
        // No TLS: no peer has a TLS address.
        "peers-tls-std" | "peers-tls-alt" => {
            format!("{},,[]", node.cluster.load().peers_generation)
        }
        "service" | "service-clear-std" | "service-clear-alt" => service,
        "services" => node.cluster.load().services_value(),
        "services-alumni" | "service-tls-std" | "service-tls-alt" => String::new(),
        "replicas" => {
            let t = node.partitions.load();
            per_ns_index(&|i| t.replicas_value(i))
        }
        "replicas-all" => {
            let t = node.partitions.load();
            per_ns_index(&|i| t.replicas_all_value(i))
        }
        "replicas-master" => {
            let t = node.partitions.load();
            per_ns_index(&|i| t.replicas_master_value(i).into())
        }
        "rack-ids" => per_ns(&|n| format!("{n}:0")),
        "partition-info" => partition_info(node, cmd, room),
        "namespaces" => ns_names().collect::<Vec<_>>().join(";"),
        "namespace" => {
            let name = cmd.param("id").unwrap_or(cmd.args);
            namespace_stats(node, name).unwrap_or_else(|| "ERROR:20:namespace not found".into())
        }
        "statistics" => {
            let objects: u64 = (0..cfg.namespaces.len())
                .map(|i| node.namespace_stats(i).objects)
                .sum();
            format!(
                "{};{};objects={objects};cores={};shards_poisoned={};{};{}",
                node.cluster
                    .load()
                    .statistics(node.partitions.load().migrate_remaining()),
                node.proxy_stats.describe(),
                cfg.cores,
                node.poisoned_shards.load(std::sync::atomic::Ordering::Relaxed),
                node.connections.describe(),
                node.steering.describe()
            )
        }
        "features" => "peers;replicas;replicas-all;replicas-master;pipelining;float;geo;batch-any;pscans;query-show".into(),
        "user-agent-set" | "status" => "ok".into(),
        "get-config" => get_config(node, cmd),
        "set-config" => set_config(node, cmd),
        "latencies" => latencies(node, cmd),
        "sets" => sets(node, cmd.args),
        "bins" => bins(node, cmd, room),
        _ => crate::truncate::answer(node, cmd)
            .or_else(|| crate::sindex::answer(node, cmd))
            .or_else(|| crate::udf::answer(node, cmd))
            .or_else(|| node.jobs.answer(cmd))
            .unwrap_or_else(|| "ERROR:4:unrecognized command".into()),
    }
}

/// Answers a whole info request body: a line per command, or one `ERROR:4:...` line when the
/// request is refused whole (too long, too many commands, not UTF-8, empty).
pub fn answer(node: &Node, body: &[u8]) -> String {
    let cmds = match parse_request(body) {
        Ok(cmds) if cmds.is_empty() => return "ERROR:4:empty info request\n".into(),
        Ok(cmds) => cmds,
        Err(e) => {
            if let Some(n) = node.logs.info_refused.allow() {
                tracing::warn!(error = %e, requests = n, "info request refused");
            }
            return format!("ERROR:4:{e}\n");
        }
    };
    let full_line = |c: &InfoCommand<'_>| c.raw.len() + 2 + REPLY_FULL.len();
    // Bytes kept for the `REPLY_FULL` lines of the commands not yet answered, so every command
    // gets a line and the reply still ends within the bound.
    let mut kept: usize = cmds.iter().map(full_line).sum();
    let mut out = String::new();
    for c in &cmds {
        kept -= full_line(c);
        let echo = echo(c.raw);
        let room = INFO_REPLY_BYTES_MAX - out.len() - kept - echo.len() - 2;
        let value = if c.raw.contains('\t') {
            TAB_IN_COMMAND.into()
        } else {
            answer_one(node, c, room)
        };
        let value = if value.len() > room {
            if let Some(n) = node.logs.info_reply_full.allow() {
                tracing::warn!(command = %echo, bytes = value.len(), room,
                    info_reply_bytes_max = INFO_REPLY_BYTES_MAX, commands = n,
                    "info value over the reply's bound: answered with an error");
            }
            REPLY_FULL.into()
        } else {
            value
        };
        // Byte searches: std's memchr keeps this cheap in debug builds over a 16 MiB reply.
        debug_assert!(
            !value.as_bytes().contains(&b'\t') && !value.as_bytes().contains(&b'\n'),
            "{}: {value}",
            c.raw
        );
        out.push_str(&echo);
        out.push('\t');
        out.push_str(&value);
        out.push('\n');
    }
    debug_assert_eq!(kept, 0);
    debug_assert!(out.len() <= INFO_REPLY_BYTES_MAX);
    out
}

/// A command as echoed before its value: a tab would end the echo early, so it becomes a space.
fn echo(raw: &str) -> Cow<'_, str> {
    if raw.contains('\t') {
        Cow::Owned(raw.replace('\t', " "))
    } else {
        Cow::Borrowed(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn node() -> Node {
        let config = Config::load(None, &Overrides::default()).unwrap();
        let mut n = Node::new(config, vec![]);
        n.name = "BB9010011AC4202".into();
        n
    }

    #[test]
    fn seed_check_and_replicas() {
        let n = node();
        let a = answer(&n, b"node\npartition-generation\nbuild\n");
        assert_eq!(
            a,
            "node\tBB9010011AC4202\npartition-generation\t1\nbuild\t8.1.2.0\n"
        );
        let r = answer(&n, b"replicas\n");
        let v = r.strip_prefix("replicas\ttest:0,1,").unwrap().trim_end();
        assert_eq!(v.len(), 684);
        assert!(v.ends_with("//8="));
        assert!(!r.trim_end().ends_with(';'));
        assert_eq!(
            answer(&n, b"peers-clear-std\n"),
            "peers-clear-std\t1,3000,[]\n"
        );
        assert_eq!(
            answer(&n, b"bogus\n"),
            "bogus\tERROR:4:unrecognized command\n"
        );
        assert!(answer(&n, b"namespace/test\n").contains("objects=0"));
        assert!(answer(&n, b"namespace/nope\n").contains("ERROR:20"));
    }

    #[test]
    fn get_config_contexts() {
        let n = node();
        let a = answer(&n, b"get-config:context=namespace;id=test\n");
        assert!(a.starts_with("get-config:context=namespace;id=test\treplication-factor=2;"));
        assert!(a.contains(";default-ttl=0;") && a.contains(";write-block-size=1048576;"));
        assert!(answer(&n, b"get-config\n").contains("service-threads="));
        assert!(answer(&n, b"get-config:context=service\n")
            .ends_with(";proto-fd-max=15000;proto-fd-idle-ms=0\n"));
        assert!(answer(&n, b"get-config:context=namespace;id=nope\n").contains("ERROR:20"));
        assert!(answer(&n, b"get-config:context=namespace\n").contains("ERROR:4"));
        assert!(answer(&n, b"get-config:context=xdr\n").contains("ERROR:4"));
        assert_eq!(
            answer(&n, b"get-config:context=network\n"),
            "get-config:context=network\tservice.port=3000;service.address=127.0.0.1;\
             service.access-address=127.0.0.1;heartbeat.mode=none;fabric.address=127.0.0.1;\
             fabric.port=3001\n"
        );
        let o = Overrides {
            mesh_seeds: vec!["127.0.0.1:4002".into(), "127.0.0.2:4012".into()],
            cluster_name: Some("dev".into()),
            ..Default::default()
        };
        let clustered = Node::new(Config::load(None, &o).unwrap(), vec![]);
        let net = answer(&clustered, b"get-config:context=network\n");
        assert!(
            net.contains(
                ";heartbeat.mode=mesh;heartbeat.address=127.0.0.1;heartbeat.port=3002;\
                 heartbeat.mesh-seed-address-port=127.0.0.1:4002,127.0.0.2:4012;\
                 heartbeat.interval=150;heartbeat.timeout=10;"
            ),
            "{net}"
        );
        assert!(answer(&clustered, b"get-config\n").starts_with("get-config\tcluster-name=dev;"));
        // Clustered, before its first view: no partition claimed, generation -1, no cluster.
        assert_eq!(
            answer(&clustered, b"partition-generation\ncluster-stable\n"),
            "partition-generation\t-1\ncluster-stable\tERROR:7:not a member of a cluster\n"
        );
    }

    #[test]
    fn latencies_report_the_last_window() {
        let n = node();
        assert_eq!(
            answer(&n, b"latencies:\n"),
            "latencies:\tbatch-index:msec,0.0,0.00,0.00,0.00;\
             {test}-read:msec,0.0,0.00,0.00,0.00;{test}-write:msec,0.0,0.00,0.00,0.00;\
             {test}-batch-sub-read:msec,0.0,0.00,0.00,0.00;\
             {test}-batch-sub-write:msec,0.0,0.00,0.00,0.00\n"
        );
        for ms in [0, 3, 20] {
            n.namespaces[0].latency[0][1].record(std::time::Duration::from_millis(ms));
        }
        n.namespaces[0].latency[0][1].close_window();
        assert_eq!(
            answer(&n, b"latencies:hist={test}-write\n"),
            "latencies:hist={test}-write\t{test}-write:msec,0.3,66.67,33.33,0.00\n"
        );
        assert!(answer(&n, b"latencies:hist={nope}-read\n").contains("ERROR:4"));
    }

    #[test]
    fn set_config_checks_then_applies() {
        let n = node();
        let get = |n: &Node| answer(n, b"get-config:context=namespace;id=test\n");
        assert_eq!(
            answer(&n, b"set-config:context=namespace;id=test;default-ttl=60\n"),
            "set-config:context=namespace;id=test;default-ttl=60\tok\n"
        );
        assert!(get(&n).contains(";default-ttl=60;"));
        assert_eq!(n.namespaces[0].live.limits().default_ttl, 60);
        // One bad value in a request changes nothing.
        let bad = answer(
            &n,
            b"set-config:context=namespace;id=test;default-ttl=5;max-record-size=12\n",
        );
        assert!(
            bad.contains("ERROR:4:max-record-size = 12 is out of range"),
            "{bad}"
        );
        assert!(get(&n).contains(";default-ttl=60;"));
        for (req, want) in [
            (
                "set-config:context=namespace;id=test;write-block-size=4096",
                "ERROR:4:write-block-size is not a dynamic",
            ),
            (
                "set-config:context=namespace;id=test;defrag-lwm-pct=100",
                "ERROR:4:defrag-lwm-pct = 100 is out of range",
            ),
            (
                "set-config:context=namespace;id=test;nsup-period=x",
                "ERROR:4:nsup-period must be",
            ),
            (
                "set-config:context=namespace;id=nope;nsup-period=1",
                "ERROR:20",
            ),
            ("set-config:context=service;nsup-period=1", "ERROR:4"),
            ("set-config:context=namespace;id=test", "ERROR:4"),
        ] {
            let a = answer(&n, format!("{req}\n").as_bytes());
            assert!(a.contains(want), "{req}: {a}");
        }
    }

    #[test]
    fn reply_full_names_the_bound() {
        assert!(REPLY_FULL.ends_with(&format!(" {INFO_REPLY_BYTES_MAX} bytes")));
    }

    #[test]
    fn requests_refused_whole_get_one_error_line() {
        let n = node();
        let many = "replicas\n".repeat(INFO_COMMANDS_MAX + 1);
        assert_eq!(
            answer(&n, many.as_bytes()),
            format!("ERROR:4:info request over {INFO_COMMANDS_MAX} commands\n")
        );
        let huge = "replicas\n".repeat(INFO_REQUEST_BYTES_MAX / 9 + 1);
        assert_eq!(
            answer(&n, huge.as_bytes()),
            format!("ERROR:4:info request over {INFO_REQUEST_BYTES_MAX} bytes\n")
        );
        assert_eq!(answer(&n, b"\n\n"), "ERROR:4:empty info request\n");
        // The most commands allowed are all answered.
        let most = "replicas\n".repeat(INFO_COMMANDS_MAX);
        let a = answer(&n, most.as_bytes());
        assert_eq!(a.lines().count(), INFO_COMMANDS_MAX);
        assert!(a.lines().all(|l| l.starts_with("replicas\ttest:0,1,")));
    }

    #[test]
    fn a_tab_in_a_command_keeps_the_framing() {
        let n = node();
        assert_eq!(
            answer(&n, b"node\tx\nbuild\n\tnode\n"),
            "node x\tERROR:4:tab in info command\nbuild\t8.1.2.0\n node\tERROR:4:tab in info command\n"
        );
    }

    #[test]
    fn long_values_are_cut_off_at_the_reply_bound() {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let n = Node::new(Config::load(None, &overrides).unwrap(), vec![]);
        let names: Vec<Vec<u8>> = (0..crate::bin_names::BIN_NAMES_MAX)
            .map(|i| format!("bin-{i:010}").into_bytes())
            .collect();
        for chunk in names.chunks(4096) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            n.bin_names.admit(0, &refs, "test").unwrap();
        }
        let one = answer(&n, b"bins\n");
        assert!(one.starts_with("bins\ttest:bin_names=65535,bin_names_quota=65535,bin-0000000000,"));
        assert_eq!(one.matches(',').count(), 65_536);
        let per_ns = answer(&n, b"bins/test\n");
        assert_eq!(
            per_ns.strip_prefix("bins/test\t"),
            one.strip_prefix("bins\ttest:")
        );
        assert_eq!(
            answer(&n, b"bins/nope\n"),
            "bins/nope\tERROR:20:namespace not found\n"
        );
        // Nearly 1 MiB each: the first 16 or so fit, the rest are refused, each on its own
        // line, and the commands after them are still answered.
        let req = format!("{}build\n", "bins\n".repeat(INFO_COMMANDS_MAX - 1));
        let started = std::time::Instant::now();
        let a = answer(&n, req.as_bytes());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(a.len() <= INFO_REPLY_BYTES_MAX, "{}", a.len());
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines.len(), INFO_COMMANDS_MAX);
        let whole = lines.iter().filter(|l| **l == one.trim_end()).count();
        let refused = lines
            .iter()
            .filter(|l| **l == format!("bins\t{REPLY_FULL}"))
            .count();
        let fit = INFO_REPLY_BYTES_MAX / one.len();
        assert!((fit - 1..=fit).contains(&whole), "{whole} of {fit}");
        assert_eq!(whole + refused, INFO_COMMANDS_MAX - 1);
        assert_eq!(lines.last(), Some(&"build\t8.1.2.0"));
    }
}
