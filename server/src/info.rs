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

/// A namespace's configuration as `key=value;...`, with Aerospike's key names.
fn namespace_config(ns: &crate::config::NamespaceConfig) -> String {
    format!(
        "replication-factor=1;default-ttl={};nsup-period={};storage-engine=device;write-block-size={};\
         commit-to-device={};flush-max-ms={};max-record-size={};read-cache-size={};defrag-lwm-pct={};defrag-sleep={};\
         filesize={};stop-writes-used-pct={};stop-writes-avail-pct={};evict-used-pct={}",
        ns.default_ttl,
        ns.nsup_period,
        ns.write_block_size,
        ns.commit_to_device,
        ns.flush_max_ms,
        ns.max_record_size,
        ns.read_cache_size,
        ns.defrag_lwm_pct,
        ns.defrag_sleep_us,
        ns.filesize,
        ns.stop_writes_used_pct,
        ns.stop_writes_avail_pct,
        ns.evict_used_pct,
    )
}

fn namespace_stats(node: &Node, name: &str) -> Option<String> {
    let i = node.config.namespace_index(name.as_bytes())?;
    let ns = &node.config.namespaces[i];
    let s = node.namespace_stats(i);
    Some(format!(
        "objects={};tombstones={};bad_records_skipped={};client_write_success={};client_read_success={};\
         expired_objects={};evicted_objects={};{};cache_hits={};device_reads={}",
        s.objects,
        s.shadows,
        s.bad_records,
        s.writes,
        s.reads,
        s.expired,
        s.evicted,
        namespace_config(ns),
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
                Some(i) => namespace_config(&cfg.namespaces[i]),
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
        Node {
            name: "BB9010011AC4202".into(),
            inboxes: vec![],
            stats: vec![vec![Default::default()]],
            config,
        }
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
}
