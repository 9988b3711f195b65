//! Starting and stopping the node: one pinned glommio executor per core, the cross-core
//! inboxes between them, and the signal handling that turns SIGTERM/SIGINT into a clean,
//! flushed exit.
//!
//! Owns the threads. It must never let a core fail silently: a core that cannot start, or that
//! exits early, stops the whole node with an error.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::core::Core;
use crate::exclusive;
use crate::node::{Node, SHARD_INBOX_CAPACITY};
use crate::preflight::HostReport;

/// glommio's own default; smaller when the memlock limit is tight (it falls back to
/// unregistered buffers when registration fails, so this only saves a warning).
const IO_MEMORY_BYTES_MAX: usize = 10 << 20;
const IO_MEMORY_BYTES_MIN: usize = 256 << 10;
/// While shards recover, a progress line this often.
const RECOVERY_PROGRESS_LOG_SECS: u64 = 5;

/// Sent by a core when it stops, for whatever reason (a drop guard, so panics count too).
struct ExitNotice(flume::Sender<usize>, usize);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Re-homes every namespace whose data was written with another core count (or whose
/// re-homing was interrupted), on one temporary executor, before any core opens its shard.
fn rehome_if_needed(config: &Config) -> Result<(), String> {
    use apogee_engine::rehome;
    /// One namespace to re-home: its data directory, or its configured files and devices
    /// (one configuration per new shard, and the staging directory).
    enum Work {
        Dir(apogee_engine::shard::StoreConfig),
        Extents(Vec<apogee_engine::shard::StoreConfig>, std::path::PathBuf),
    }
    let mut work = Vec::new();
    for ns in &config.namespaces {
        if !ns.extents.is_empty() {
            let new: Vec<_> = (0..config.cores)
                .map(|shard| crate::core::store_config(config, ns, shard))
                .collect();
            let stage = config.data_dir.join(format!("{}.rehome-stage", ns.name));
            if rehome::extents_needed(&new[0], &stage).map_err(|e| e.to_string())? {
                std::fs::create_dir_all(&config.data_dir)
                    .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
                work.push(Work::Extents(new, stage));
            }
            continue;
        }
        if ns.memory {
            continue; // nothing on disk to move
        }
        let template = crate::core::store_config(config, ns, 0);
        if rehome::needed(&template).map_err(|e| e.to_string())? {
            work.push(Work::Dir(template));
        }
    }
    if work.is_empty() {
        return Ok(());
    }
    LocalExecutorBuilder::default()
        .name("apogee-rehome")
        .spawn(move || async move {
            for w in work {
                let started = std::time::Instant::now();
                let (namespace, report) = match w {
                    Work::Dir(template) => {
                        (template.namespace.clone(), rehome::rehome(&template).await)
                    }
                    Work::Extents(new, stage) => (
                        new[0].namespace.clone(),
                        rehome::rehome_extents(&new, &stage).await,
                    ),
                };
                let report =
                    report.map_err(|e| format!("re-homing namespace {namespace} failed: {e}"))?;
                // An interrupted run may already have moved the data away from the old
                // layout: then the old core count is unknown, and said to be.
                let from_cores = report
                    .from_shards
                    .map_or_else(|| "unknown".to_string(), |n| n.to_string());
                tracing::info!(
                    namespace = %namespace,
                    from_cores = %from_cores,
                    to_cores = report.to_shards,
                    records = report.records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "re-homed data to the new core count"
                );
            }
            Ok::<(), String>(())
        })
        .map_err(|e| format!("cannot start the re-homing executor: {e}"))?
        .join()
        .map_err(|e| format!("re-homing stopped: {e}"))?
}

/// Waits for every core to report its shards recovered, logging progress every
/// [`RECOVERY_PROGRESS_LOG_SECS`] seconds meanwhile.
fn wait_until_recovered(
    ready_rx: &flume::Receiver<Result<usize, String>>,
    cores: usize,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut recovered = 0;
    while recovered < cores {
        match ready_rx.recv_timeout(Duration::from_secs(RECOVERY_PROGRESS_LOG_SECS)) {
            Ok(Ok(_)) => recovered += 1,
            Ok(Err(e)) => return Err(e),
            Err(flume::RecvTimeoutError::Timeout) => tracing::info!(
                recovered_cores = recovered,
                cores,
                elapsed_secs = started.elapsed().as_secs(),
                "recovering: the service port opens once every core's shards have recovered"
            ),
            Err(flume::RecvTimeoutError::Disconnected) => {
                return Err("a core exited during start-up".into())
            }
        }
    }
    Ok(())
}

/// Starts listening and hands each core its own descriptor of the one listening socket.
fn open_port(
    port: exclusive::PortReservation,
    listeners: &[flume::Sender<OwnedFd>],
) -> Result<(), String> {
    let listener = port.listen().map_err(|e| e.to_string())?;
    for tx in listeners {
        let fd = listener
            .try_clone()
            .map_err(|e| format!("cannot share the listening socket between cores: {e}"))?;
        tx.send(OwnedFd::from(fd))
            .map_err(|_| "a core exited during start-up".to_string())?;
    }
    Ok(())
}

/// How long a start waits for a busy heartbeat or fabric port before it gives up. A node
/// restarted at once finds its previous process's sockets still bound for a moment after
/// that process exited: the kernel tears a dead process's io_uring down, and the sockets its
/// requests hold, asynchronously. A port another live process holds is still refused, only
/// this much later.
const CLUSTER_PORT_BUSY_WAIT_MS: u64 = 3_000;

/// `bind()`, tried again every 50 ms for `CLUSTER_PORT_BUSY_WAIT_MS` while the address is in
/// use.
fn bind_when_free<T>(bind: impl Fn() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(CLUSTER_PORT_BUSY_WAIT_MS);
    loop {
        match bind() {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Runs the node until SIGTERM or SIGINT; returns an error if any core fails.
pub fn run(mut config: Config, host: &HostReport) -> Result<(), String> {
    // Exclusive first: a second server on the same data or port must change nothing.
    let data_paths: Vec<_> = config
        .namespaces
        .iter()
        .flat_map(|ns| ns.extents.iter().flatten().map(|e| e.path.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let _locks = exclusive::lock_data(&config.data_dir, &data_paths).map_err(|e| e.to_string())?;
    let port = exclusive::reserve_port(config.address, config.port).map_err(|e| e.to_string())?;
    if config.cluster.node_id.is_none() {
        config.cluster.node_id = Some(Node::node_id_file(&config)?);
    }
    // Bound here, before any core starts, so a busy heartbeat or fabric port stops the start
    // with the key to change; without a heartbeat section nothing beyond the service port is
    // bound.
    let mut cluster_sockets = match &config.cluster.heartbeat {
        None => None,
        Some(h) => {
            let heartbeat = bind_when_free(|| std::net::UdpSocket::bind((h.address, h.port)))
                .map_err(|e| {
                    format!(
                    "cannot bind the heartbeat socket {}:{} (network.heartbeat.address/port): {e}",
                    h.address, h.port
                )
                })?;
            let c = &config.cluster;
            let fabric =
                bind_when_free(|| std::net::TcpListener::bind((c.fabric_address, c.fabric_port)))
                    .map_err(|e| {
                    format!(
                        "cannot bind the fabric port {}:{} (network.fabric.address/port): {e}",
                        c.fabric_address, c.fabric_port
                    )
                })?;
            Some((heartbeat, fabric, Node::next_start_count(&config)?))
        }
    };
    rehome_if_needed(&config)?;
    let cores = config.cores;
    let (inbox_txs, inbox_rxs): (Vec<_>, Vec<_>) = (0..cores)
        .map(|_| flume::bounded(SHARD_INBOX_CAPACITY))
        .unzip();
    let mut node = Node::new(config, inbox_txs);
    node.load_truncated()?;
    let node = Arc::new(node);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let io_memory =
        (host.memlock_bytes as usize / cores / 2).clamp(IO_MEMORY_BYTES_MIN, IO_MEMORY_BYTES_MAX);
    let (ready_tx, ready_rx) = flume::bounded::<Result<usize, String>>(cores);
    let (exit_tx, exit_rx) = flume::bounded::<usize>(cores);
    let mut stops = Vec::new();
    let mut listeners = Vec::new();
    let mut handles = Vec::new();
    for (shard, inbox) in inbox_rxs.into_iter().enumerate() {
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        stops.push(stop_tx);
        let (listener_tx, listener_rx) = flume::bounded::<OwnedFd>(1);
        listeners.push(listener_tx);
        let node = node.clone();
        // Core 0 owns the cluster task.
        let cluster = cluster_sockets.take();
        let ready = ready_tx.clone();
        let exit = ExitNotice(exit_tx.clone(), shard);
        // Pin when there is a CPU per core; more cores than CPUs (tests) float.
        let pinned = cores <= cpus;
        let placement = if pinned {
            Placement::Fixed(shard)
        } else {
            Placement::Unbound
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("apogee-core-{shard}"))
            .io_memory(io_memory)
            .detect_stalls(StallReport::from_env())
            .spawn(move || async move {
                let _exit = exit;
                let core = match Core::open(shard, node.clone()).await {
                    Ok(c) => Rc::new(c),
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                if pinned {
                    // SAFETY: sched_getcpu has no preconditions.
                    let cpu = unsafe { libc::sched_getcpu() };
                    if cpu >= 0 {
                        node.steering.pinned(shard, cpu);
                    }
                }
                core.spawn_inbox(inbox);
                // Secondary indexes: rebuilt from the data at every start, in the background.
                for ns in 0..core.stores.len() {
                    crate::sindex::sync(&core, ns);
                }
                crate::sindex::spawn_usage_refresh(&core);
                core.spawn_latency_ticker();
                core.spawn_partition_counter();
                if let (Some((socket, fabric, starts)), Some(h)) =
                    (cluster, &node.config.cluster.heartbeat)
                {
                    if let Err(e) = crate::cluster::task::spawn(node.clone(), h, socket, starts) {
                        let _ = ready.send(Err(format!("cannot start the cluster task: {e}")));
                        return;
                    }
                    let migration_rx = (node.migration_rx.lock())
                        .expect("no panic while holding it")
                        .take()
                        .expect("core 0 takes the migration inbox once");
                    crate::cluster::migration::spawn(node.clone(), migration_rx);
                    crate::cluster::fabric::spawn_listener(core.clone(), fabric);
                    use crate::cluster::metadata::{forward, Metadata};
                    for kind in [
                        Metadata::Truncate,
                        Metadata::SindexCatalog,
                        Metadata::UdfModule,
                    ] {
                        glommio::spawn_local(forward(node.clone(), kind)).detach();
                    }
                }
                let _ = ready.send(Ok(shard));
                // The node listens only once every shard has recovered; until then this core
                // serves forwarded requests (none arrive) and waits for its listener.
                let listener = future::or(async { listener_rx.recv_async().await.ok() }, async {
                    let _ = stop_rx.recv_async().await;
                    None
                })
                .await;
                let Some(fd) = listener else {
                    core.flush_and_stop().await;
                    return;
                };
                // SAFETY: `fd` is a listening socket the runtime duplicated for this core only.
                let listener = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
                core.serve(listener, stop_rx).await;
            })
            .map_err(|e| format!("cannot start core {shard}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let stop_all = |stops: &[flume::Sender<()>]| {
        for s in stops {
            let _ = s.try_send(());
        }
    };
    // Every shard has recovered: only now may clients connect.
    let failure = wait_until_recovered(&ready_rx, cores)
        .and_then(|()| open_port(port, &listeners))
        .err();
    if let Some(e) = failure {
        stop_all(&stops);
        for h in handles {
            let _ = h.join();
        }
        return Err(e);
    }
    tracing::info!(
        address = %node.config.address,
        port = node.config.port,
        cores,
        node = %node.name,
        data_dir = %node.config.data_dir.display(),
        "apogee is serving"
    );
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut early_exit = None;
    'wait: loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!(signal = sig, "shutting down: flushing write buffers");
            break 'wait;
        }
        if let Ok(shard) = exit_rx.recv_timeout(Duration::from_millis(100)) {
            early_exit = Some(shard);
            break 'wait;
        }
    }
    stop_all(&stops);
    let mut panicked = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            panicked.push(i);
        }
    }
    if let Some(shard) = early_exit {
        return Err(format!(
            "core {shard} stopped unexpectedly; the node shut down"
        ));
    }
    if !panicked.is_empty() {
        return Err(format!("cores {panicked:?} panicked during shutdown"));
    }
    tracing::info!("apogee stopped cleanly");
    Ok(())
}

/// A diagnostic: with `APOGEE_STALL_REPORT_MS=<ms>` set, a core whose running task holds it
/// past its task queue's time slice by that many milliseconds logs where it was (its
/// stack, sampled by glommio's stall detector at that moment, logged through `log` as one
/// long line: `grep -o 'apogee[a-z_:]*'` picks out Apogee's frames). Off by default:
/// the sampling signal costs a timer per task-queue run. For stalls of the cluster task
/// (`cluster task stalled`) whose cause is not the machine being starved.
#[derive(Debug)]
struct StallReport {
    after: Duration,
}

impl StallReport {
    fn from_env() -> Option<Box<dyn glommio::StallDetectionHandler>> {
        let ms: u64 = std::env::var("APOGEE_STALL_REPORT_MS").ok()?.parse().ok()?;
        Some(Box::new(StallReport {
            after: Duration::from_millis(ms),
        }))
    }
}

impl glommio::StallDetectionHandler for StallReport {
    fn threshold(&self, _queue: glommio::TaskQueueHandle, _slice: Duration) -> Option<Duration> {
        Some(self.after)
    }
}
