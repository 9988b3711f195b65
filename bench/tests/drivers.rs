//! The load generator's drivers against real servers on loopback: the real apogee binary,
//! Debian's redis-server, and the null server. Also the CLI's errors.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apogee_bench::driver::aerospike::AeroConn;
use apogee_bench::driver::resp::RespConn;
use apogee_bench::driver::{Conn, Keyspace, Target};
use apogee_bench::runner::{self, RunConfig};
use apogee_bench::workload::{Mix, OpKind, RecordShape};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "server exited during start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {port}");
}

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_apogee-bench"))
}

fn apogee_bin() -> PathBuf {
    let p = bench_bin().with_file_name("apogee");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

fn cfg(target: Target, port: u16, mix: Mix, ops: u64) -> RunConfig {
    RunConfig {
        target,
        addr: format!("127.0.0.1:{port}"),
        keyspace: Keyspace {
            namespace: "test".into(),
            set: "usertable".into(),
            shape: RecordShape {
                bins: 10,
                bin_bytes: 100,
            },
        },
        connections: 4,
        records: 200,
        mix,
        duration: None,
        operations: Some(ops),
        rate: None,
        batch: 1,
        seed: 3,
        progress: false,
        route: false,
    }
}

async fn exercise(target: Target, port: u16) {
    let c = cfg(target, port, Mix::ycsb("A").unwrap(), 400);
    let load = runner::load(&c).await.unwrap();
    assert_eq!(load.recorder.latency[&OpKind::Insert].len(), 200);
    assert_eq!(load.recorder.error_count(), 0, "{:?}", load.recorder.errors);
    for letter in ["A", "B", "C", "D", "F"] {
        let r = runner::run(&cfg(target, port, Mix::ycsb(letter).unwrap(), 400))
            .await
            .unwrap();
        assert_eq!(
            r.recorder.error_count(),
            0,
            "workload {letter}: {:?}",
            r.recorder.errors
        );
        assert_eq!(r.recorder.ops(), 400, "workload {letter}");
    }
    // A read of a key never loaded reports "not found", not success.
    let mut conn = Conn::connect(target, &c.addr, &c.keyspace).await.unwrap();
    assert_eq!(conn.read(10_000_000).await.unwrap(), 2);
    assert_eq!(conn.read(5).await.unwrap(), 0);
    // Batch reads of 20 keys: a RESP pipeline, or an Aerospike batch answered row by row.
    let mut batched = cfg(target, port, Mix::ycsb("C").unwrap(), 50);
    batched.batch = 20;
    let r = runner::run(&batched).await.unwrap();
    assert_eq!(r.recorder.latency[&OpKind::BatchRead].len(), 50);
    assert_eq!(r.recorder.error_count(), 0, "{:?}", r.recorder.errors);
    // Open loop at a fixed rate: about rate × time operations, latency from the intended time.
    let mut open = cfg(target, port, Mix::ycsb("B").unwrap(), 0);
    open.operations = None;
    open.duration = Some(Duration::from_millis(1000));
    open.rate = Some(400.0);
    let r = runner::run(&open).await.unwrap();
    let n = r.recorder.ops();
    assert!(
        (300..=440).contains(&n),
        "open loop at 400/s for 1 s did {n} ops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aerospike_driver_against_apogee() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_apogee(dir.path());
    exercise(Target::Aerospike, port).await;
    // Workload E: short scans (one partition from a key down, up to 100 records) and inserts.
    let r = runner::run(&cfg(Target::Aerospike, port, Mix::ycsb("E").unwrap(), 200))
        .await
        .unwrap();
    assert_eq!(r.recorder.error_count(), 0, "{:?}", r.recorder.errors);
    assert!(r.recorder.latency[&OpKind::Scan].len() > 150);
    // A full scan of a set returns each of its records once.
    let mut ks = cfg(Target::Aerospike, port, Mix::ycsb("A").unwrap(), 0).keyspace;
    ks.set = "scanned".into();
    let addr = format!("127.0.0.1:{port}");
    let mut conn = AeroConn::connect(&addr, ks).await.unwrap();
    for i in 0..300 {
        assert_eq!(conn.write(i, None).await.unwrap(), 0);
    }
    // A single node masters every partition: no unavailable markers.
    let scan = conn.full_scan().await.unwrap();
    assert_eq!(scan.records, 300);
    assert_eq!(
        (scan.partitions_scanned, scan.partitions_unavailable),
        (4096, 0)
    );
}

/// Starts Debian's redis-server on a free port; `None` (the test skips) only when it is missing
/// and APOGEE_SKIP_REDIS is set.
fn start_redis() -> Option<(Proc, u16)> {
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if std::env::var_os("APOGEE_SKIP_REDIS").is_some() => {
            eprintln!("skipping: redis-server unavailable ({e}) and APOGEE_SKIP_REDIS is set");
            return None;
        }
        Err(e) => panic!("redis-server is needed (apt-get install redis-server): {e}"),
    };
    wait_listening(port, &mut child);
    Some((Proc(child), port))
}

fn start_apogee(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let mut child = Command::new(apogee_bin())
        .args(["--port", &port.to_string(), "--cores", "2", "--data-dir"])
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    (Proc(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_driver_against_redis() {
    let Some((_server, port)) = start_redis() else {
        return;
    };
    exercise(Target::Redis, port).await;
    // Records as one string each, read by pipelines of GETs (batch-compare's Redis side).
    let ks = Keyspace {
        namespace: "test".into(),
        set: "strings".into(),
        shape: RecordShape {
            bins: 3,
            bin_bytes: 10,
        },
    };
    let mut c = RespConn::connect(&format!("127.0.0.1:{port}"), ks)
        .await
        .unwrap();
    for i in 0..5 {
        assert_eq!(c.set_string(i).await.unwrap(), 0);
    }
    assert_eq!(c.get_pipeline(&[0, 1, 2, 3, 4]).await.unwrap(), 0);
    assert_eq!(
        c.get_pipeline(&[4, 999, 0]).await.unwrap(),
        2,
        "a missing key"
    );
    // The connection is still in step after a miss: every reply was consumed.
    assert_eq!(c.get_pipeline(&[3]).await.unwrap(), 0);
}

/// batch-compare end to end on tiny settings: loads both targets, runs alternated rounds and
/// prints the ratios the issue asks for.
#[test]
fn batch_compare_prints_ratios_against_apogee_and_redis() {
    let Some((_redis, rport)) = start_redis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_apogee, aport) = start_apogee(dir.path());
    let out = Command::new(bench_bin())
        .args(["batch-compare", "--apogee", &format!("127.0.0.1:{aport}")])
        .args(["--redis", &format!("127.0.0.1:{rport}")])
        .args(["--records", "300", "--connections", "2", "--seconds", "1"])
        .args(["--rounds", "2", "--batch-sizes", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "loaded 300 records",
        "round 2 records/s: apogee get",
        "apogee batch-10 / apogee get",
        "apogee batch-10 / redis pipeline-10",
        "redis pipeline-10 GET",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(
        !stdout.contains("aerospike batch"),
        "no Aerospike side was given:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_server_answers_everything() {
    let port = free_port();
    let mut child = Command::new(bench_bin())
        .args(["null-server", "--port", &port.to_string()])
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    let _server = Proc(child);
    let r = runner::run(&cfg(Target::Aerospike, port, Mix::ycsb("A").unwrap(), 300))
        .await
        .unwrap();
    assert_eq!(r.recorder.ops(), 300);
    assert_eq!(r.recorder.error_count(), 0);
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = runner::run(&cfg(Target::Aerospike, port, Mix::ycsb("C").unwrap(), 10))
        .await
        .unwrap_err();
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn bad_flags_exit_non_zero_with_a_message() {
    for (args, msg) in [
        (vec!["run", "--workload", "Z"], "unknown workload 'Z'"),
        (
            vec!["run", "--workload", "E", "--target", "redis"],
            "workload E needs short scans",
        ),
        (
            vec!["run", "--target", "memcached"],
            "unknown target 'memcached'",
        ),
        (
            vec!["run", "--distribution", "pareto"],
            "unknown distribution 'pareto'",
        ),
        (
            vec!["run", "--port", "1", "--records", "10"],
            "cannot connect to 127.0.0.1:1",
        ),
        (
            vec!["batch-compare", "--batch-sizes", "1"],
            "--batch-sizes must list sizes of 2..=5000",
        ),
        (
            vec!["batch-compare", "--apogee", "127.0.0.1:1", "--rounds", "1"],
            "cannot connect to 127.0.0.1:1",
        ),
    ] {
        let out = Command::new(bench_bin()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(msg), "{args:?}: {stderr}");
    }
}
