//! The official Rust client (`aerospike` 3.0) against a real three-node Apogee cluster on
//! loopback (replication-factor 2, the default): given one seed it discovers every node
//! through `peers-*`, routes each key to the node that masters its partition (no request needs
//! a proxy), every record is stored on its master and its replica, a batch reads across the
//! nodes, and after the principal is SIGKILLed the client follows the re-formed cluster and
//! reads every record written before the kill (each had a copy on a survivor) and writes anew.

mod common;

use std::time::{Duration, Instant};

use aerospike::{as_bin, as_key, BatchOperation, BatchPolicy, BatchReadPolicy, Bins, Client};
use aerospike::{ClientPolicy, ReadPolicy, ResultCode, Value};
use common::{free_port, info, Server};

/// Node ids as `service.node-id` takes them (hex); the highest is the principal.
const NODE_IDS: [&str; 3] = ["a1", "b2", "c3"];
/// A cluster forms within a few heartbeat timeouts (1.5 s each) and view-change quanta.
const FORM_SECS_MAX: u64 = 60;
/// Records written through the client in each phase.
const KEYS: i64 = 1_000;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `name=value` from a `statistics`-style reply.
fn stat(port: u16, cmd: &str, name: &str) -> Option<String> {
    let reply = info(port, &format!("{cmd}\n")).ok()?;
    let body = reply.split_once('\t')?.1.trim().to_string();
    body.split(';')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn stat_u64(port: u16, cmd: &str, name: &str) -> u64 {
    stat(port, cmd, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{cmd} on port {port} has no number {name}"))
}

/// Waits until every node in `ports` reports a cluster of their number with one cluster key
/// (other than `old_key`) and nothing left to migrate; returns that key.
fn wait_formed(ports: &[u16], old_key: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(FORM_SECS_MAX);
    loop {
        let views: Vec<(Option<String>, Option<String>)> = ports
            .iter()
            .map(|&p| {
                (
                    stat(p, "statistics", "cluster_size"),
                    stat(p, "statistics", "cluster_key"),
                )
            })
            .collect();
        let size = ports.len().to_string();
        let key = views[0].1.clone();
        // Formed, and migrated: every node answers cluster-stable with the key.
        let stable = || {
            ports.iter().all(|&p| {
                info(p, "cluster-stable\n")
                    .ok()
                    .and_then(|r| r.split_once('\t').map(|(_, v)| v.trim().to_string()))
                    == key
            })
        };
        if views
            .iter()
            .all(|(s, k)| s.as_deref() == Some(&size) && *k == key)
            && key.as_deref() != old_key
            && key.as_deref() != Some("0")
            && stable()
        {
            return key.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no cluster of {size} within {FORM_SECS_MAX} s: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn wait_client_nodes(client: &Client, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(FORM_SECS_MAX);
    while client.nodes().len() != count {
        assert!(
            Instant::now() < deadline,
            "the client sees {:?}, not {count} nodes",
            client.node_names()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts keys `keys` of set `c`, each with bins `i` (its number) and `phase`.
async fn put_records(client: &Client, keys: std::ops::Range<i64>, phase: &str) {
    let wp = common::patient_writes();
    for i in keys {
        let bins = [as_bin!("i", i), as_bin!("phase", phase)];
        client
            .put(&wp, &as_key!("test", "c", i), &bins)
            .await
            .unwrap_or_else(|e| panic!("put {i} ({phase}): {e}"));
    }
}

/// Reads keys `keys` back through the client: each found with the bins [`put_records`] wrote.
async fn expect_records(client: &Client, keys: std::ops::Range<i64>, phase: &str) {
    let rp = ReadPolicy::default();
    for i in keys {
        let rec = client
            .get(&rp, &as_key!("test", "c", i), Bins::All)
            .await
            .unwrap_or_else(|e| panic!("get {i} ({phase}): {e}"));
        assert_eq!(rec.bins.get("i"), Some(&Value::from(i)));
        assert_eq!(rec.bins.get("phase"), Some(&Value::from(phase)));
    }
}

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start(dir: &std::path::Path) -> Cluster {
        let heartbeat: Vec<u16> = NODE_IDS.iter().map(|_| free_udp_port()).collect();
        let fabric: Vec<u16> = NODE_IDS.iter().map(|_| free_port()).collect();
        let nodes = (0..NODE_IDS.len())
            .map(|i| {
                let (hb, fab) = (heartbeat[i].to_string(), fabric[i].to_string());
                let mut args: Vec<String> = [
                    "--node-id",
                    NODE_IDS[i],
                    "--heartbeat-port",
                    &hb,
                    "--fabric-port",
                    &fab,
                    "--cluster-name",
                    "rust-client",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                for (j, port) in heartbeat.iter().enumerate() {
                    if j != i {
                        args.push("--mesh-seed-address-port".into());
                        args.push(format!("127.0.0.1:{port}"));
                    }
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::start(&dir.join(NODE_IDS[i]), 2, &args)
            })
            .collect();
        Cluster { nodes }
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_finds_every_node_routes_to_masters_and_follows_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let ports = cluster.ports();
    let key = wait_formed(&ports, None);

    // One seed: the client learns the other two from `peers-clear-std`.
    let policy = ClientPolicy {
        tend_interval: 250,
        ..Default::default()
    };
    let seed = cluster.nodes[0].addr();
    let client = Client::new(&policy, &seed).await.expect("client connects");
    wait_client_nodes(&client, 3).await;

    put_records(&client, 0..KEYS, "formed").await;
    expect_records(&client, 0..KEYS, "formed").await;
    // Every record sits on two nodes (its master and its replica), every node holds some,
    // and the client never needed a node to proxy.
    let objects: Vec<u64> = (ports.iter())
        .map(|&p| stat_u64(p, "namespace/test", "objects"))
        .collect();
    assert_eq!(objects.iter().sum::<u64>(), 2 * KEYS as u64, "{objects:?}");
    assert!(objects.iter().all(|&n| n > KEYS as u64 / 3), "{objects:?}");
    for &p in &ports {
        assert_eq!(stat_u64(p, "statistics", "client_proxy_complete"), 0);
    }

    // A batch across all three nodes finds every record.
    let brp = BatchReadPolicy::default();
    let mut rows: Vec<BatchOperation> = (0..100)
        .map(|i| BatchOperation::read(&brp, as_key!("test", "c", i * 7), Bins::All))
        .collect();
    client
        .batch(&BatchPolicy::default(), &mut rows)
        .await
        .expect("batch across the cluster");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.result_code(), Some(ResultCode::Ok), "row {n}");
        let rec = row.batch_record().record.as_ref().expect("a record");
        assert_eq!(rec.bins.get("i"), Some(&Value::from(n as i64 * 7)));
    }

    // SIGKILL the principal: the other two re-form, the client follows, and new writes land
    // and read back.
    cluster.nodes[2].kill();
    let survivors = &ports[..2];
    let killed_at = Instant::now();
    wait_formed(survivors, Some(&key));
    eprintln!(
        "re-formed without the principal {:.2} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    wait_client_nodes(&client, 2).await;
    // Nothing acknowledged is lost: every record had a copy on a survivor.
    expect_records(&client, 0..KEYS, "formed").await;
    let after = 300;
    put_records(&client, KEYS..KEYS + after, "after").await;
    expect_records(&client, KEYS..KEYS + after, "after").await;
    client.close().await.unwrap();
}
