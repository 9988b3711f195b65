//! Secondary indexes: the namespace's catalog of definitions (durable in
//! `<data-dir>/sindex-<namespace>`), the info commands that change and report it
//! (`sindex-create`, `sindex-delete`, `sindex-list`, `sindex/<ns>[/<name>]`, `sindex-stat`,
//! `sindex-exists`), and the per-shard work that keeps entries: each shard reconciles its
//! indexes with the catalog (`sync`), builds new ones in the background and drops removed
//! ones. Entries themselves live in the engine (`apogee_engine::sindex`), changed only through
//! the shard's one mutation point; queries are in `query`.
//!
//! The catalog is locked only by info commands and by a shard's reconcile, never on the
//! data path. A definition change is made durable before it is answered `ok`.

pub mod cells;
pub mod def;
pub mod keys;
pub mod meta;
pub mod query;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};

use apogee_engine::sindex::IndexId;
use apogee_wire::info::InfoCommand;

use crate::cluster::metadata::Metadata;
use crate::core::Core;
use crate::node::{Node, ShardWork};
use def::DefRef;

/// The definitions of one namespace, with each name's newest change (`meta`).
#[derive(Default)]
pub struct Catalog {
    state: Mutex<meta::State>,
}

/// Catalogs queued for the other members at most (each namespace's whole catalog; a change
/// made while the queue is full reaches them on the next view).
pub const CATALOGS_PENDING_MAX: usize = 64;

/// The ids of every definition ever made on this node (ids are never reused, so a shard can
/// tell a re-created index from the one it replaced).
static NEXT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

fn next_id() -> IndexId {
    NEXT_ID.fetch_add(1, Relaxed)
}

impl Catalog {
    fn lock(&self) -> MutexGuard<'_, meta::State> {
        self.state
            .lock()
            .expect("no panic while holding the catalog")
    }

    /// The definitions now.
    pub fn defs(&self) -> Vec<DefRef> {
        self.lock().defs.clone()
    }

    /// The definition named `name`.
    pub fn by_name(&self, name: &str) -> Option<DefRef> {
        self.lock().defs.iter().find(|d| d.name == name).cloned()
    }

    /// The index file of namespace `ns` under `data_dir`.
    pub fn path(data_dir: &Path, ns: &str) -> PathBuf {
        data_dir.join(format!("sindex-{ns}"))
    }

    /// Reads the index file (none: no indexes); a malformed line stops the start, naming it.
    pub fn load(&self, path: &Path) -> Result<(), String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut state = self.lock();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let bad = |e: String| format!("{} line {}: {e}", path.display(), i + 1);
            let entry = meta::Entry::parse(line).map_err(bad)?;
            state.merge(entry, next_id).map_err(bad)?;
        }
        Ok(())
    }

    /// Writes `state` to the index file: a temporary file, synced, renamed over the old one.
    fn save(path: &Path, state: &meta::State) -> Result<(), String> {
        let mut text = String::new();
        for line in state.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Applies `entries` to namespace `ns`'s catalog, makes the result durable when it changed,
/// and tells the shards; returns whether it changed. `Err` (nothing changed) when an entry
/// is malformed or the file cannot be written.
fn change(node: &Node, ns: usize, entries: Vec<meta::Entry>) -> Result<bool, String> {
    let catalog = &node.namespaces[ns].sindexes;
    let mut state = catalog.lock();
    let mut next = (*state).clone();
    let mut changed = false;
    for e in entries {
        changed |= next.merge(e, next_id)?;
    }
    if !changed {
        return Ok(false);
    }
    let path = Catalog::path(&node.config.data_dir, &node.config.namespaces[ns].name);
    Catalog::save(&path, &next).map_err(|e| {
        tracing::error!(error = %e, "secondary index definitions not saved");
        e
    })?;
    *state = next;
    drop(state);
    notify_shards(node, ns);
    Ok(true)
}

/// Sends namespace `ns`'s whole catalog to the other members (a clustered node only).
fn share(node: &Node, ns: usize) {
    crate::cluster::metadata::send_now(node, Metadata::SindexCatalog, encode(node, ns));
}

/// A fabric body: the namespace's name, then one line per entry.
fn encode(node: &Node, ns: usize) -> Vec<u8> {
    let mut body = node.config.namespaces[ns].name.clone();
    for line in node.namespaces[ns].sindexes.lock().lines() {
        body.push('\n');
        body.push_str(&line);
    }
    body.into_bytes()
}

/// Applies a catalog another member sent: the answer byte (0 durable here, 1 not), or a
/// malformed body (the connection is closed). A namespace this node does not have is ignored.
pub fn apply_forwarded(node: &Node, body: &[u8]) -> Result<u8, String> {
    let text = std::str::from_utf8(body).map_err(|_| "index catalog is not UTF-8".to_string())?;
    let mut lines = text.split('\n');
    let ns_name = lines.next().unwrap_or("");
    let entries = lines
        .map(meta::Entry::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("index catalog: {e}"))?;
    let Some(ns) = node.config.namespace_index(ns_name.as_bytes()) else {
        return Ok(0);
    };
    Ok(match change(node, ns, entries) {
        Ok(_) => 0,
        Err(e) => {
            tracing::error!(error = %e, "an index catalog from a member was not applied");
            1
        }
    })
}

/// On a committed view: queues every namespace's catalog for the members, so a member that
/// was away learns what changed meanwhile.
pub fn share_on_view(node: &Node) {
    let bodies = (0..node.config.namespaces.len())
        .filter(|&ns| !node.namespaces[ns].sindexes.lock().lines().is_empty())
        .map(|ns| encode(node, ns))
        .collect();
    crate::cluster::metadata::send_on_view(node, Metadata::SindexCatalog, bodies);
}

/// Answers the secondary-index info commands; `None` for any other command.
pub fn answer(node: &Node, cmd: &InfoCommand<'_>) -> Option<String> {
    let out = match cmd.name {
        "sindex-create" => create(node, cmd),
        "sindex-delete" => delete(node, cmd),
        "sindex-list" => list(node, cmd),
        "sindex-exists" => exists(node, cmd),
        "sindex-stat" => stat(node, cmd),
        "sindex" => path_command(node, cmd),
        _ => return None,
    };
    Some(out.unwrap_or_else(|e| e))
}

fn namespace(node: &Node, cmd: &InfoCommand<'_>) -> Result<usize, String> {
    let ns = def::namespace_param(cmd)?;
    node.config
        .namespace_index(ns.as_bytes())
        .ok_or_else(|| "ERROR:20:namespace not found on node".into())
}

fn create(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    let c = def::parse_create(cmd)?;
    // Aerospike 8 answers `ok` here and the client's wait for the build then fails with
    // namespace-not-found; answering it at once ends the same way, sooner.
    let Some(ns) = node.config.namespace_index(c.namespace.as_bytes()) else {
        return Err("ERROR:20:namespace not found on node".into());
    };
    let catalog = &node.namespaces[ns].sindexes;
    let version = {
        let state = catalog.lock();
        if let Some(d) = state.defs.iter().find(|d| d.name == c.name) {
            return if d.shape == c.shape {
                Ok("ok".into())
            } else {
                Err("ERROR:200:'indexname' already exists with different definition".into())
            };
        }
        let renames = state.defs.iter().any(|d| d.shape == c.shape);
        if !renames && state.defs.len() >= def::INDEXES_PER_NAMESPACE_MAX {
            return Err(format!(
                "ERROR:206:at most {} indexes per namespace",
                def::INDEXES_PER_NAMESPACE_MAX
            ));
        }
        state.next_version(node.id.0)
    };
    let entry = meta::Entry::Index {
        name: c.name.clone(),
        shape: c.shape,
        version,
    };
    change(node, ns, vec![entry]).map_err(|e| format!("ERROR:1:{e}"))?;
    tracing::info!(namespace = %node.config.namespaces[ns].name, index = %c.name,
        "secondary index created (or renamed); building");
    share(node, ns);
    Ok("ok".into())
}

fn delete(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    let name = def::name_param(cmd)?;
    // As Aerospike: deleting in an unknown namespace, or an index that is not there, is ok.
    let Ok(ns) = namespace(node, cmd) else {
        return Ok("ok".into());
    };
    let catalog = &node.namespaces[ns].sindexes;
    let version = {
        let state = catalog.lock();
        if !state.defs.iter().any(|d| d.name == name) {
            return Ok("ok".into());
        }
        state.next_version(node.id.0)
    };
    let entry = meta::Entry::Deleted {
        name: name.to_string(),
        version,
    };
    change(node, ns, vec![entry]).map_err(|e| format!("ERROR:1:{e}"))?;
    share(node, ns);
    Ok("ok".into())
}

fn list(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    let only = match cmd.param("namespace").or_else(|| cmd.param("ns")) {
        None | Some("") => None,
        Some(_) => Some(namespace(node, cmd)?),
    };
    Ok(list_of(node, only))
}

fn list_of(node: &Node, only: Option<usize>) -> String {
    let mut entries = Vec::new();
    for (i, ns) in node.config.namespaces.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        for d in node.namespaces[i].sindexes.defs() {
            entries.push(d.list_entry(&ns.name));
        }
    }
    entries.join(";")
}

fn exists(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    let ns = namespace(node, cmd)?;
    let name = def::name_param(cmd)?;
    Ok(node.namespaces[ns]
        .sindexes
        .by_name(name)
        .is_some()
        .to_string())
}

fn stat(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    let ns = namespace(node, cmd)?;
    let name = def::name_param(cmd)?;
    stats_of(node, ns, name)
}

/// `sindex/<ns>` (its indexes, as `sindex-list`) and `sindex/<ns>/<name>` (one's statistics).
fn path_command(node: &Node, cmd: &InfoCommand<'_>) -> Result<String, String> {
    if cmd.args.is_empty() {
        return Ok(list_of(node, None));
    }
    let mut parts = cmd.args.splitn(2, '/');
    let ns_name = parts.next().unwrap_or("");
    let Some(ns) = node.config.namespace_index(ns_name.as_bytes()) else {
        return Err("ERROR:20:namespace not found on node".into());
    };
    match parts.next() {
        None | Some("") => Ok(list_of(node, Some(ns))),
        Some(name) => stats_of(node, ns, name),
    }
}

/// One index's statistics, with Aerospike's names.
fn stats_of(node: &Node, ns: usize, name: &str) -> Result<String, String> {
    let d = node.namespaces[ns]
        .sindexes
        .by_name(name)
        .ok_or("ERROR:201:no index")?;
    let usage = &node.namespaces[ns].sindex_usage;
    let (entries, bytes) = usage.of(d.id);
    let records = d.build.records.load(Relaxed);
    Ok(format!(
        "entries={entries};used_bytes={bytes};entries_per_bval=0;entries_per_rec={};load_pct={};load_time=0;stat_gc_recs=0",
        (entries as u64).checked_div(records).unwrap_or(0),
        d.load_pct(node.config.cores),
    ))
}

/// Tells every shard to reconcile namespace `ns`'s indexes with the catalog. The messages are
/// sent from a thread of their own: the info command answers now, and a shard's full inbox
/// delays only that thread.
fn notify_shards(node: &Node, ns: usize) {
    let inboxes = node.inboxes.clone();
    let sent = std::thread::Builder::new()
        .name("sindex-notify".into())
        .spawn(move || {
            for (shard, inbox) in inboxes.iter().enumerate() {
                if inbox.send(ShardWork::SindexSync { ns }).is_err() {
                    tracing::error!(
                        shard,
                        "a shard's inbox is closed; its indexes are not updated"
                    );
                }
            }
        });
    if let Err(e) = sent {
        tracing::error!(error = %e, "cannot start a thread to tell the shards of an index change");
    }
}

/// Entries and bytes of each index per shard, summed on demand for `sindex/<ns>/<name>`.
#[derive(Default)]
pub struct Usage {
    /// `(index, shard) -> (entries, bytes)`, refreshed by each shard after its build and
    /// periodically.
    by_shard: Mutex<std::collections::HashMap<(IndexId, usize), (usize, usize)>>,
}

impl Usage {
    fn lock(&self) -> MutexGuard<'_, std::collections::HashMap<(IndexId, usize), (usize, usize)>> {
        self.by_shard
            .lock()
            .expect("no panic while holding index usage")
    }

    pub fn report(&self, id: IndexId, shard: usize, entries: usize, bytes: usize) {
        self.lock().insert((id, shard), (entries, bytes));
    }

    pub fn forget(&self, id: IndexId) {
        self.lock().retain(|(i, _), _| *i != id);
    }

    pub fn of(&self, id: IndexId) -> (usize, usize) {
        self.lock()
            .iter()
            .filter(|((i, _), _)| *i == id)
            .fold((0, 0), |(e, b), (_, (e2, b2))| (e + e2, b + b2))
    }
}

/// How often a shard refreshes its indexes' entry counts for the statistics.
pub const USAGE_REFRESH_MS: u64 = 1000;

/// Reconciles this shard's indexes of namespace `ns` with the catalog: installs an indexer
/// for the current definitions, starts keeping (and builds) new ones, drops removed ones.
pub fn sync(core: &Rc<Core>, ns: usize) {
    let defs = core.node.namespaces[ns].sindexes.defs();
    let store = core.stores[ns].clone();
    // What the store keeps entries for is what this shard had reconciled to.
    let before = store.sindex_ids();
    let now: Vec<IndexId> = defs.iter().map(|d| d.id).collect();
    for id in before.iter().filter(|id| !now.contains(id)) {
        store.drop_sindex(*id);
        core.node.namespaces[ns].sindex_usage.forget(*id);
    }
    let indexer = (!defs.is_empty()).then(|| {
        Rc::new(keys::NsIndexer {
            defs: defs.clone(),
            cover: core.node.namespaces[ns].live.geo.clone(),
        }) as Rc<dyn apogee_engine::sindex::Indexer>
    });
    // The indexer first: from the moment an index is kept, every write indexes it.
    store.set_indexer(indexer);
    for d in defs.iter().filter(|d| !before.contains(&d.id)) {
        store.add_sindex(d.id);
        let (core, d, store) = (core.clone(), d.clone(), store.clone());
        glommio::spawn_local(async move {
            let walked = &d.build.partitions_walked;
            match store
                .build_sindex(d.id, |_| {
                    walked.fetch_add(1, Relaxed);
                })
                .await
            {
                Ok(n) if store.has_sindex(d.id) => {
                    d.build.records.fetch_add(n, Relaxed);
                    d.build.shards_built.fetch_add(1, Relaxed);
                    report_usage(&core, ns, d.id);
                    tracing::info!(index = %d.name, shard = core.shard, records = n, "secondary index built");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(index = %d.name, shard = core.shard, error = %e,
                        "secondary index build failed; the index stays unreadable")
                }
            }
        })
        .detach();
    }
}

/// Publishes this shard's entries and bytes of index `id` for the statistics.
fn report_usage(core: &Core, ns: usize, id: IndexId) {
    let (entries, bytes) = core.stores[ns].sindex_usage(id);
    (core.node.namespaces[ns].sindex_usage).report(id, core.shard, entries, bytes);
}

/// Refreshes this shard's entry counts of every index now and then, for the statistics.
pub fn spawn_usage_refresh(core: &Rc<Core>) {
    let core = core.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(std::time::Duration::from_millis(USAGE_REFRESH_MS)).await;
            for ns in 0..core.stores.len() {
                for id in core.stores[ns].sindex_ids() {
                    report_usage(&core, ns, id);
                }
            }
        }
    })
    .detach();
}
