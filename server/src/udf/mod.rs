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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use apogee_wire::info::InfoCommand;
use base64::Engine as _;

use crate::node::Node;

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

/// The node's modules.
#[derive(Default)]
pub struct Registry {
    modules: Mutex<BTreeMap<String, Arc<Module>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Module>>> {
        self.modules
            .lock()
            .expect("no panic while holding the UDF registry")
    }

    /// The module named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Module>> {
        self.lock().get(name).cloned()
    }

    /// The directory holding the modules.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("udf")
    }

    /// Reads every module under `dir` (none: no modules). A module that does not compile
    /// any more is skipped with an error in the log; an unreadable directory stops the start.
    pub fn load(&self, dir: &Path) -> Result<(), String> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        let mut modules = self.lock();
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
            modules.insert(name.clone(), Arc::new(module(name, source)));
        }
        Ok(())
    }
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
    let mut modules = node.udfs.lock();
    if !modules.contains_key(name) && modules.len() >= MODULES_MAX {
        return "error=too_many_modules".into();
    }
    let dir = Registry::dir(&node.config.data_dir);
    if let Err(e) = write_durably(&dir, name, &source) {
        tracing::error!(module = name, error = %e, "a UDF module was not saved");
        return format!("error=cannot_save;message={e}");
    }
    modules.insert(name.to_string(), Arc::new(module(name.to_string(), source)));
    tracing::info!(module = name, "UDF module registered");
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
        .values()
        .map(|m| format!("filename={},hash={},type=LUA;", m.name, m.hash))
        .collect()
}

fn remove(node: &Node, cmd: &InfoCommand<'_>) -> String {
    let Some(name) = cmd.param("filename").filter(|n| check_name(n).is_ok()) else {
        return "error=invalid_filename".into();
    };
    let mut modules = node.udfs.lock();
    if modules.remove(name).is_some() {
        let path = Registry::dir(&node.config.data_dir).join(name);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!(module = name, error = %e, "a removed UDF module's file stays");
        }
        tracing::info!(module = name, "UDF module removed");
    }
    // As Aerospike: removing a module that is not there is ok.
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
    fn a_module_is_hashed_by_its_source() {
        let m = module("m.lua".into(), b"x=1\n".to_vec());
        assert_eq!(m.hash.len(), 40);
        assert_ne!(m.hash, module("m.lua".into(), b"x=2\n".to_vec()).hash);
    }
}
