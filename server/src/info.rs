//! Answers to info-protocol requests (spec §9): what the official clients ask to connect,
//! route and tend, plus namespace and node statistics.
//!
//! Owns the text of every info value. Every reply line is `<command>\t<value>\n`, in request
//! order; a value never contains a tab or newline. It must never change data.

use apogee_wire::info::{parse_request, InfoCommand, INFO_REQUEST_BYTES_MAX};
use apogee_wire::PARTITION_COUNT;
use base64::Engine as _;

use crate::node::Node;

/// The Aerospike server version Apogee reports; it selects the clients' modern formats (§9.8).
pub const BUILD: &str = "8.0.0.0";

/// The ownership bitmap of a node that owns every partition, base64 (684 characters).
fn all_partitions_bitmap() -> String {
    let bits = vec![0xFFu8; PARTITION_COUNT as usize / 8];
    base64::engine::general_purpose::STANDARD.encode(bits)
}

/// A namespace's configuration as `key=value;...`, with Aerospike's key names; the dynamic
/// settings as they are now (after any set-config).
fn namespace_config(node: &Node, i: usize) -> String {
    use apogee_engine::tuning::Setting;
    use std::sync::atomic::Ordering::Relaxed;
    let ns = &node.config.namespaces[i];
    let live = &node.live[i];
    let tunings = node
        .tunings
        .lock()
        .expect("set-config never panics holding the lock");
    let get = |s: Setting, configured: u64| tunings[i].first().map_or(configured, |t| t.get(s));
    format!(
        "replication-factor=1;default-ttl={};nsup-period={};storage-engine=device;write-block-size={};\
         commit-to-device={};flush-max-ms={};max-record-size={};read-cache-size={};defrag-lwm-pct={};defrag-sleep={};\
         filesize={};stop-writes-used-pct={};stop-writes-avail-pct={};evict-used-pct={}",
        live.default_ttl.load(Relaxed),
        get(Setting::NsupPeriod, ns.nsup_period),
        ns.write_block_size,
        ns.commit_to_device,
        get(Setting::FlushMaxMs, ns.flush_max_ms),
        live.max_record_size.load(Relaxed),
        ns.read_cache_size,
        get(Setting::DefragLwmPct, ns.defrag_lwm_pct),
        get(Setting::DefragSleep, ns.defrag_sleep_us),
        ns.filesize,
        get(Setting::StopWritesUsedPct, ns.stop_writes_used_pct),
        get(Setting::StopWritesAvailPct, ns.stop_writes_avail_pct),
        get(Setting::EvictUsedPct, ns.evict_used_pct),
    )
}

/// `sets`, `sets/<ns>`, `sets/<ns>/<set>`: one `ns=..:set=..:objects=..` entry per set, the
/// counts summed over every shard.
fn sets(node: &Node, args: &str) -> String {
    let mut want = args.split('/').filter(|a| !a.is_empty());
    let (want_ns, want_set) = (want.next(), want.next());
    let all = node
        .set_stats
        .lock()
        .expect("registration never panics holding the lock");
    let mut out = Vec::new();
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        if want_ns.is_some_and(|w| w != ns.name) {
            continue;
        }
        let mut totals: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for shard in &all[i] {
            for (name, n) in shard.snapshot() {
                *totals.entry(name).or_default() += n;
            }
        }
        for (name, objects) in totals {
            let name = String::from_utf8_lossy(&name);
            if want_set.is_some_and(|w| w != name) {
                continue;
            }
            out.push(format!(
                "ns={}:set={name}:objects={objects}:tombstones=0:truncate_lut=0:sindexes=0:index_populating=false:disable-eviction=false:enable-index=false:stop-writes-count=0",
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

/// `latencies:[hist={ns}-read|{ns}-write]`: per namespace and kind, the last window's ops/sec
/// and the percentages of requests over 1, 8 and 64 ms, summed over every core.
fn latencies(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let wanted = cmd.param("hist");
    let mut parts = Vec::new();
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        for (kind, label) in [(0, "read"), (1, "write")] {
            let name = format!("{{{}}}-{label}", ns.name);
            if wanted.is_some_and(|w| w != name) {
                continue;
            }
            let windows: Vec<_> = node.latency[i]
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
    let tunings = node
        .tunings
        .lock()
        .expect("set-config never panics holding the lock");
    for c in changes {
        match c {
            Change::DefaultTtl(v) => node.live[i].default_ttl.store(v, Relaxed),
            Change::MaxRecordSize(v) => node.live[i].max_record_size.store(v, Relaxed),
            Change::Engine(s, v) => tunings[i].iter().for_each(|t| t.set(s, v)),
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
         index_used_bytes={};{};cache_hits={};device_reads={}",
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
        namespace_config(node, i),
        s.cache_hits,
        s.device_reads
    ))
}

/// `get-config[:context=service|namespace;id=<ns>]`: the configuration, Aerospike-style.
fn get_config(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let cfg = &node.config;
    match cmd.param("context").unwrap_or("service") {
        "service" => format!(
            "cluster-name=null;service-threads={};address={};port={};data-dir={}",
            cfg.cores,
            cfg.address,
            cfg.port,
            cfg.data_dir.display()
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
        other => format!("ERROR:4:unknown get-config context {other}"),
    }
}

fn answer_one(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let cfg = &node.config;
    let ns_names = || cfg.namespaces.iter().map(|n| n.name.as_str());
    let per_ns = |f: &dyn Fn(&str) -> String| ns_names().map(f).collect::<Vec<_>>().join(";");
    let service = format!("{}:{}", cfg.address, cfg.port);
    match cmd.name {
        "node" => node.name.clone(),
        "build" => BUILD.into(),
        "version" => format!("Apogee {} (Aerospike protocol, build {BUILD})", env!("CARGO_PKG_VERSION")),
        "edition" => "Apogee".into(),
        "partition-generation" | "peers-generation" | "rebalance-generation" => "1".into(),
        "cluster-name" => "null".into(),
        "partitions" => PARTITION_COUNT.to_string(),
        "peers-clear-std" | "peers-clear-alt" | "peers-tls-std" | "peers-tls-alt" => {
            format!("1,{},[]", cfg.port)
        }
        "service" | "service-clear-std" | "service-clear-alt" => service,
        "services" | "services-alumni" | "service-tls-std" | "service-tls-alt" => String::new(),
        "replicas" => {
            let bm = all_partitions_bitmap();
            per_ns(&|n| format!("{n}:0,1,{bm}"))
        }
        "replicas-all" => {
            let bm = all_partitions_bitmap();
            per_ns(&|n| format!("{n}:1,{bm}"))
        }
        "replicas-master" => {
            let bm = all_partitions_bitmap();
            per_ns(&|n| format!("{n}:{bm}"))
        }
        "rack-ids" => per_ns(&|n| format!("{n}:0")),
        "namespaces" => ns_names().collect::<Vec<_>>().join(";"),
        "namespace" => {
            let name = cmd.param("id").unwrap_or(cmd.args);
            namespace_stats(node, name).unwrap_or_else(|| "ERROR:20:namespace not found".into())
        }
        "statistics" => {
            let objects: u64 = (0..cfg.namespaces.len())
                .map(|i| node.namespace_stats(i).objects)
                .sum();
            format!("cluster_size=1;objects={objects};cores={}", cfg.cores)
        }
        "features" => "peers;replicas;replicas-all;replicas-master;pipelining;float;geo;batch-any;pscans;query-show".into(),
        "user-agent-set" | "status" => "ok".into(),
        "get-config" => get_config(node, cmd),
        "set-config" => set_config(node, cmd),
        "latencies" => latencies(node, cmd),
        "sets" => sets(node, cmd.args),
        "bins" => {
            let names: Vec<String> = cfg.namespaces.iter().map(|n| n.name.clone()).collect();
            node.bin_names.describe(&names)
        }
        _ => "ERROR:4:unrecognized command".into(),
    }
}

/// Answers a whole info request body.
pub fn answer(node: &Node, body: &[u8]) -> String {
    if body.len() > INFO_REQUEST_BYTES_MAX {
        return format!("ERROR:4:info request over {INFO_REQUEST_BYTES_MAX} bytes\n");
    }
    let Ok(cmds) = parse_request(body) else {
        return "ERROR:4:info request is not valid UTF-8\n".into();
    };
    if cmds.is_empty() {
        return "ERROR:4:empty info request\n".into();
    }
    let mut out = String::new();
    for c in &cmds {
        let value = answer_one(node, c);
        debug_assert!(!value.contains(['\t', '\n']));
        out.push_str(c.raw);
        out.push('\t');
        out.push_str(&value);
        out.push('\n');
    }
    out
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
            "node\tBB9010011AC4202\npartition-generation\t1\nbuild\t8.0.0.0\n"
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
        assert!(a.starts_with("get-config:context=namespace;id=test\treplication-factor=1;"));
        assert!(a.contains(";default-ttl=0;") && a.contains(";write-block-size=1048576;"));
        assert!(answer(&n, b"get-config\n").contains("service-threads="));
        assert!(answer(&n, b"get-config:context=namespace;id=nope\n").contains("ERROR:20"));
        assert!(answer(&n, b"get-config:context=namespace\n").contains("ERROR:4"));
        assert!(answer(&n, b"get-config:context=xdr\n").contains("ERROR:4"));
    }

    #[test]
    fn latencies_report_the_last_window() {
        let n = node();
        assert_eq!(
            answer(&n, b"latencies:\n"),
            "latencies:\t{test}-read:msec,0.0,0.00,0.00,0.00;{test}-write:msec,0.0,0.00,0.00,0.00\n"
        );
        for ms in [0, 3, 20] {
            n.latency[0][0][1].record(std::time::Duration::from_millis(ms));
        }
        n.latency[0][0][1].close_window();
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
        assert_eq!(n.live[0].limits().default_ttl, 60);
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
}
