//! User-defined functions in Lua 5.4: the node's registry of modules (durable under
//! `<data-dir>/udf/`, changed by `udf-put` and `udf-remove`, read by `udf-get` and
//! `udf-list`, with Aerospike's answers), the per-core Lua runtime (`lua`) and record UDFs
//! (`apply`: the keyed command with fields 30–32).
//!
//! The registry is locked only by the info commands and by a core loading a module it has not
//! compiled yet (its content is shared, never copied per call). A module is compiled before
//! it is accepted: one that does not compile is refused with Lua's message and nothing
//! changes. A name is a plain file name: no path separator, no leading dot.

pub mod apply;
pub mod lua;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use apogee_wire::info::InfoCommand;
use base64::Engine as _;

use crate::cluster::metadata::Metadata;
use crate::node::Node;

/// UDF fields (spec §3.2).
pub mod field {
    use apogee_wire::FieldType;
    pub const PACKAGE: FieldType = FieldType(30);
    pub const FUNCTION: FieldType = FieldType(31);
    pub const ARGLIST: FieldType = FieldType(32);
    /// Scans and queries: 1 aggregate (stream UDF), 2 background.
    pub const UDF_OP: FieldType = FieldType(33);
}

/// A UDF call as fields 30–32 name it: the module, the function and its arguments.
#[derive(Debug, Clone)]
pub struct Call {
    pub package: String,
    pub function: String,
    pub args: Vec<apogee_ops::Value>,
}

impl Call {
    /// Reads the call of a record UDF or a scan's stream UDF. An empty or absent name is a
    /// module or function that is not there (a UDF error when called, as Aerospike's); an
    /// empty or absent argument field is no arguments (the C client sends an empty one); a
    /// name that is not UTF-8 or arguments that are not a msgpack list are result 4.
    pub fn of(msg: &apogee_wire::msg::Message) -> Result<Call, apogee_wire::ResultCode> {
        use apogee_wire::ResultCode;
        let text = |f| {
            String::from_utf8(msg.field(f).unwrap_or_default().to_vec())
                .map_err(|_| ResultCode::Parameter)
        };
        let args = match msg.field(field::ARGLIST) {
            None | Some([]) => Vec::new(),
            Some(b) => match apogee_ops::value::decode(b) {
                Ok(apogee_ops::Value::List(l)) => l.items,
                _ => return Err(ResultCode::Parameter),
            },
        };
        Ok(Call {
            package: text(field::PACKAGE)?,
            function: text(field::FUNCTION)?,
            args,
        })
    }
}

/// Longest module name (Aerospike's `UDF_MAX_STRING_SZ` less its terminator).
pub const MODULE_NAME_BYTES_MAX: usize = 127;
/// Largest module source accepted (1 MiB; Aerospike's own limit is in the same range).
pub const MODULE_BYTES_MAX: usize = 1 << 20;
/// Most modules registered at once.
pub const MODULES_MAX: usize = 1024;

/// One registered module.
#[derive(Debug)]
pub struct Module {
    pub name: String,
    pub source: Vec<u8>,
    /// Hex RIPEMD-160 of the source (40 digits, as Aerospike's), as `udf-list` shows it (and what cores key compiled modules by).
    pub hash: String,
}

/// The node's modules, with each name's newest change (cluster metadata: a change carries a
/// version, a counter above the highest known then the node id; members keep the newest per
/// name, deletions included, as the secondary-index catalog does).
#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
}

#[derive(Default)]
pub struct State {
    modules: BTreeMap<String, (Arc<Module>, Version)>,
    deleted: BTreeMap<String, Version>,
    counter_max: u64,
}

pub use crate::sindex::meta::Version;

/// One name's newest change, as members send it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        name: String,
        source: Vec<u8>,
        version: Version,
    },
    Deleted {
        name: String,
        version: Version,
    },
}

impl Change {
    fn name(&self) -> &str {
        match self {
            Change::Put { name, .. } | Change::Deleted { name, .. } => name,
        }
    }

    fn version(&self) -> Version {
        match self {
            Change::Put { version, .. } | Change::Deleted { version, .. } => *version,
        }
    }

    /// A fabric body: kind (1 put, 2 deleted), name (u16 LE length), counter and origin
    /// (u64 LE), then for a put the source (u32 LE length).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(match self {
            Change::Put { .. } => 1,
            Change::Deleted { .. } => 2,
        });
        out.extend((self.name().len() as u16).to_le_bytes());
        out.extend(self.name().as_bytes());
        out.extend(self.version().counter.to_le_bytes());
        out.extend(self.version().origin.to_le_bytes());
        if let Change::Put { source, .. } = self {
            out.extend((source.len() as u32).to_le_bytes());
            out.extend(source);
        }
        out
    }

    /// Reads a body written by [`Change::encode`]; every length is checked.
    pub fn decode(b: &[u8]) -> Result<Change, &'static str> {
        let (&kind, rest) = b.split_first().ok_or("empty")?;
        let take = |rest: &[u8], n: usize| -> Result<(Vec<u8>, usize), &'static str> {
            Ok((rest.get(..n).ok_or("cut short")?.to_vec(), n))
        };
        let (len, _) = take(rest, 2)?;
        let name_len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let rest = &rest[2..];
        let (name, _) = take(rest, name_len)?;
        let name = String::from_utf8(name).map_err(|_| "name not UTF-8")?;
        check_name(&name).map_err(|_| "bad module name")?;
        let rest = &rest[name_len..];
        let (nums, _) = take(rest, 16)?;
        let version = Version {
            counter: u64::from_le_bytes(nums[..8].try_into().expect("8")),
            origin: u64::from_le_bytes(nums[8..].try_into().expect("8")),
        };
        let rest = &rest[16..];
        match kind {
            1 => {
                let (len, _) = take(rest, 4)?;
                let n = u32::from_le_bytes(len.try_into().expect("4")) as usize;
                if n > MODULE_BYTES_MAX || rest.len() != 4 + n {
                    return Err("bad source length");
                }
                Ok(Change::Put {
                    name,
                    source: rest[4..].to_vec(),
                    version,
                })
            }
            2 if rest.is_empty() => Ok(Change::Deleted { name, version }),
            _ => Err("unknown change kind or trailing bytes"),
        }
    }
}

impl State {
    fn version_of(&self, name: &str) -> Option<Version> {
        (self.modules.get(name).map(|(_, v)| *v)).max(self.deleted.get(name).copied())
    }

    /// The version a change made here now gets.
    pub fn next_version(&self, node_id: u64) -> Version {
        Version {
            counter: self.counter_max + 1,
            origin: node_id,
        }
    }

    /// Applies `change` when it is newer than what its name has; whether anything changed.
    pub fn merge(&mut self, change: Change) -> bool {
        self.counter_max = self.counter_max.max(change.version().counter);
        if self
            .version_of(change.name())
            .is_some_and(|v| v >= change.version())
        {
            return false;
        }
        match change {
            Change::Put {
                name,
                source,
                version,
            } => {
                self.deleted.remove(&name);
                let m = Arc::new(module(name.clone(), source));
                self.modules.insert(name, (m, version));
            }
            Change::Deleted { name, version } => {
                self.modules.remove(&name);
                self.deleted.insert(name, version);
            }
        }
        true
    }

    /// Every name's newest change.
    pub fn changes(&self) -> Vec<Change> {
        let mut out: Vec<Change> = (self.modules.iter())
            .map(|(name, (m, version))| Change::Put {
                name: name.clone(),
                source: m.source.clone(),
                version: *version,
            })
            .collect();
        out.extend(self.deleted.iter().map(|(name, version)| Change::Deleted {
            name: name.clone(),
            version: *version,
        }));
        out
    }

    /// The versions file: one line per name, `module|deleted <TAB> name <TAB> counter <TAB>
    /// origin` (sources live in their own files).
    fn versions_text(&self) -> String {
        let mut text = String::new();
        for (name, (_, v)) in &self.modules {
            text.push_str(&format!("module\t{name}\t{}\t{}\n", v.counter, v.origin));
        }
        for (name, v) in &self.deleted {
            text.push_str(&format!("deleted\t{name}\t{}\t{}\n", v.counter, v.origin));
        }
        text
    }
}

/// The file keeping each module's version and the deletions, beside the modules.
const VERSIONS_FILE: &str = ".versions";

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no panic while holding the UDF registry")
    }

    /// The module named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Module>> {
        self.lock().modules.get(name).map(|(m, _)| m.clone())
    }

    /// The directory holding the modules.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("udf")
    }

    /// Reads every module under `dir` and the versions file (none: no modules). A module that
    /// does not compile any more is skipped with an error in the log; an unreadable directory
    /// or a malformed versions file stops the start.
    pub fn load(&self, dir: &Path) -> Result<(), String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        let mut versions = BTreeMap::new();
        let mut deleted = BTreeMap::new();
        match std::fs::read_to_string(dir.join(VERSIONS_FILE)) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                    let bad = || {
                        format!(
                            "{} line {}: malformed",
                            dir.join(VERSIONS_FILE).display(),
                            i + 1
                        )
                    };
                    let f: Vec<&str> = line.split('\t').collect();
                    let [kind, name, counter, origin] = f[..] else {
                        return Err(bad());
                    };
                    let v = Version {
                        counter: counter.parse().map_err(|_| bad())?,
                        origin: origin.parse().map_err(|_| bad())?,
                    };
                    match kind {
                        "module" => versions.insert(name.to_string(), v),
                        "deleted" => deleted.insert(name.to_string(), v),
                        _ => return Err(bad()),
                    };
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot read {}: {e}",
                    dir.join(VERSIONS_FILE).display()
                ))
            }
        }
        let mut st = self.lock();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || check_name(&name).is_err() {
                continue;
            }
            let source = std::fs::read(entry.path())
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            if let Err(e) = lua::compile_check(&name, &source) {
                tracing::error!(module = %name, error = %e.message, "a stored UDF module does not compile; skipped");
                continue;
            }
            let version = versions.get(&name).copied().unwrap_or_default();
            st.counter_max = st.counter_max.max(version.counter);
            st.modules
                .insert(name.clone(), (Arc::new(module(name, source)), version));
        }
        for (name, v) in deleted {
            st.counter_max = st.counter_max.max(v.counter);
            if !st.modules.contains_key(&name) {
                st.deleted.insert(name, v);
            }
        }
        Ok(())
    }
}

/// Applies changes to the registry and makes them durable (module files, then the versions
/// file); returns whether anything changed. A change whose module does not compile is an
/// error and nothing is applied.
fn change(node: &Node, changes: Vec<Change>) -> Result<bool, String> {
    for c in &changes {
        if let Change::Put { name, source, .. } = c {
            lua::compile_check(name, source).map_err(|e| {
                format!(
                    "module {name} does not compile: line {}: {}",
                    e.line, e.message
                )
            })?;
        }
    }
    let dir = Registry::dir(&node.config.data_dir);
    let mut st = node.udfs.lock();
    let mut changed = false;
    for c in changes {
        let name = c.name().to_string();
        let write = match &c {
            Change::Put { source, .. } => Some(source.clone()),
            Change::Deleted { .. } => None,
        };
        if !st.merge(c) {
            continue;
        }
        changed = true;
        match write {
            Some(source) => write_durably(&dir, &name, &source)
                .map_err(|e| format!("cannot save module {name}: {e}"))?,
            None => {
                if let Err(e) = std::fs::remove_file(dir.join(&name)) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::error!(module = %name, error = %e, "a removed UDF module's file stays");
                    }
                }
            }
        }
    }
    if changed {
        write_durably(&dir, VERSIONS_FILE, st.versions_text().as_bytes())
            .map_err(|e| format!("cannot save the UDF versions: {e}"))?;
    }
    Ok(changed)
}

/// Sends changes made here to the other members (a clustered node only).
fn share(node: &Node, changes: &[Change]) {
    for c in changes {
        crate::cluster::metadata::send_now(node, Metadata::UdfModule, c.encode());
    }
}

/// Applies a change another member sent: 0 when it is durable here (or older than what this
/// node has), 1 when it could not be applied.
pub fn apply_forwarded(node: &Node, body: &[u8]) -> Result<u8, String> {
    let c = Change::decode(body).map_err(|e| format!("UDF module change: {e}"))?;
    Ok(match change(node, vec![c]) {
        Ok(_) => 0,
        Err(e) => {
            tracing::error!(error = %e, "a UDF module change from a member was not applied");
            1
        }
    })
}

/// Changes queued for the other members at most.
pub const CHANGES_PENDING_MAX: usize = 256;

/// On a committed view: queues every module and deletion for the members.
pub fn share_on_view(node: &Node) {
    let bodies = node
        .udfs
        .lock()
        .changes()
        .iter()
        .map(Change::encode)
        .collect();
    crate::cluster::metadata::send_on_view(node, Metadata::UdfModule, bodies);
}

fn module(name: String, source: Vec<u8>) -> Module {
    use ripemd::Digest as _;
    let hash = ripemd::Ripemd160::digest(&source)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Module { name, source, hash }
}

/// Whether `name` may name a module file.
fn check_name(name: &str) -> Result<(), ()> {
    if name.is_empty()
        || name.len() > MODULE_NAME_BYTES_MAX
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
    {
        return Err(());
    }
    Ok(())
}

/// Answers the UDF info commands; `None` for any other command.
pub fn answer(node: &Node, cmd: &InfoCommand<'_>) -> Option<String> {
    Some(match cmd.name {
        "udf-put" => put(node, cmd),
        "udf-get" => get(node, cmd),
        "udf-list" => list(node),
        "udf-remove" => remove(node, cmd),
        _ => return None,
    })
}

/// `udf-put:filename=<name>;content=<base64>;content-len=<n>;udf-type=LUA;`
fn put(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let Some(name) = cmd.param("filename").filter(|n| check_name(n).is_ok()) else {
        return "error=invalid_filename".into();
    };
    let Some(content) = cmd.param("content") else {
        return "error=invalid_content".into();
    };
    match cmd.param("content-len").map(str::parse::<usize>) {
        Some(Ok(n)) if n == content.len() => {}
        _ => return "error=invalid_content_len".into(),
    }
    if !matches!(cmd.param("udf-type"), Some(t) if t.eq_ignore_ascii_case("lua")) {
        return "error=invalid_udf_type".into();
    }
    let Ok(source) = base64::engine::general_purpose::STANDARD.decode(content) else {
        return "error=invalid_content".into();
    };
    if source.len() > MODULE_BYTES_MAX {
        return "error=invalid_content_len".into();
    }
    if let Err(e) = lua::compile_check(name, &source) {
        let msg = base64::engine::general_purpose::STANDARD.encode(e.message.as_bytes());
        return format!(
            "error=compile_error;file={name};line={};message={msg}",
            e.line
        );
    }
    let version = {
        let st = node.udfs.lock();
        if !st.modules.contains_key(name) && st.modules.len() >= MODULES_MAX {
            return "error=too_many_modules".into();
        }
        st.next_version(node.id.0)
    };
    let c = Change::Put {
        name: name.to_string(),
        source,
        version,
    };
    if let Err(e) = change(node, vec![c.clone()]) {
        tracing::error!(module = name, error = %e, "a UDF module was not saved");
        return format!("error=cannot_save;message={e}");
    }
    tracing::info!(module = name, "UDF module registered");
    share(node, &[c]);
    "ok".into()
}

fn get(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let Some(m) = cmd.param("filename").and_then(|n| node.udfs.get(n)) else {
        return "error=not_found".into();
    };
    let content = base64::engine::general_purpose::STANDARD.encode(&m.source);
    format!("type=LUA;content={content};")
}

fn list(node: &Node) -> String {
    node.udfs
        .lock()
        .modules
        .values()
        .map(|(m, _)| format!("filename={},hash={},type=LUA;", m.name, m.hash))
        .collect()
}

fn remove(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let Some(name) = cmd.param("filename").filter(|n| check_name(n).is_ok()) else {
        return "error=invalid_filename".into();
    };
    let version = {
        let st = node.udfs.lock();
        if !st.modules.contains_key(name) {
            // As Aerospike: removing a module that is not there is ok.
            return "ok".into();
        }
        st.next_version(node.id.0)
    };
    let c = Change::Deleted {
        name: name.to_string(),
        version,
    };
    if let Err(e) = change(node, vec![c.clone()]) {
        tracing::error!(module = name, error = %e, "a UDF module removal was not saved");
        return format!("error=cannot_save;message={e}");
    }
    tracing::info!(module = name, "UDF module removed");
    share(node, &[c]);
    "ok".into()
}

/// Writes `bytes` to `dir/name`: a temporary file, synced, renamed, the directory synced.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_plain_file_names() {
        assert!(check_name("m.lua").is_ok());
        for bad in ["", "a/b.lua", "../x", ".hidden", "a\\b", &"n".repeat(128)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn changes_round_trip_merge_by_version_and_refuse_bad_bodies() {
        let put = Change::Put {
            name: "m.lua".into(),
            source: b"x=1".to_vec(),
            version: Version {
                counter: 2,
                origin: 7,
            },
        };
        assert_eq!(Change::decode(&put.encode()).unwrap(), put);
        let del = Change::Deleted {
            name: "m.lua".into(),
            version: Version {
                counter: 3,
                origin: 1,
            },
        };
        assert_eq!(Change::decode(&del.encode()).unwrap(), del);
        let body = put.encode();
        for cut in 0..body.len() {
            assert!(Change::decode(&body[..cut]).is_err(), "{cut}");
        }
        assert!(Change::decode(&[body.clone(), vec![0]].concat()).is_err());
        let mut a = State::default();
        let mut b = State::default();
        assert!(a.merge(put.clone()) && a.merge(del.clone()));
        assert!(
            b.merge(del.clone()) && !b.merge(put.clone()),
            "the older put loses"
        );
        assert!(a.modules.is_empty() && b.modules.is_empty());
        assert_eq!(a.versions_text(), b.versions_text());
        assert_eq!(
            a.next_version(9),
            Version {
                counter: 4,
                origin: 9
            }
        );
    }

    #[test]
    fn a_module_is_hashed_by_its_source() {
        let m = module("m.lua".into(), b"x=1\n".to_vec());
        assert_eq!(m.hash.len(), 40);
        assert_ne!(m.hash, module("m.lua".into(), b"x=2\n".to_vec()).hash);
    }
}
