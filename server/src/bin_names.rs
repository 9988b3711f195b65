//! The bin names each namespace has seen, for the `bins` info command; kept across restarts
//! in `<data-dir>/bin-names-<ns>` (one hex-encoded name per line).
//!
//! Cores never block on it: a core that sees a name for the first time hands it to the
//! registry's own thread over a bounded channel with `try_send` (a full channel just means the
//! name is offered again on a later write), and that thread records and appends it. At most
//! [`BIN_NAMES_MAX`] names per namespace, Aerospike's quota.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most bin names one namespace may have (Aerospike's `bin_names_quota`).
pub const BIN_NAMES_MAX: usize = 65_535;
/// New names waiting for the registry thread.
const PENDING_NAMES_MAX: usize = 4096;

pub struct BinNames {
    /// `names[namespace]`.
    names: Vec<Mutex<BTreeSet<Vec<u8>>>>,
    tx: flume::Sender<(usize, Vec<u8>)>,
}

fn file_of(data_dir: &Path, ns: &str) -> PathBuf {
    data_dir.join(format!("bin-names-{ns}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 30 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl BinNames {
    /// Loads each namespace's saved names (unreadable lines are skipped with a warning) and
    /// starts the thread that records new ones.
    pub fn open(data_dir: &Path, namespaces: &[String]) -> Arc<BinNames> {
        let names: Vec<Mutex<BTreeSet<Vec<u8>>>> = namespaces
            .iter()
            .map(|ns| {
                let path = file_of(data_dir, ns);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut set = BTreeSet::new();
                for line in text.lines().filter(|l| !l.is_empty()) {
                    match unhex(line) {
                        Some(n) if set.len() < BIN_NAMES_MAX => {
                            set.insert(n);
                        }
                        _ => tracing::warn!(path = %path.display(), line, "skipping a bad bin-name line"),
                    }
                }
                Mutex::new(set)
            })
            .collect();
        let (tx, rx) = flume::bounded::<(usize, Vec<u8>)>(PENDING_NAMES_MAX);
        let me = Arc::new(BinNames { names, tx });
        let weak = Arc::downgrade(&me);
        let dir = data_dir.to_path_buf();
        let ns_names = namespaces.to_vec();
        std::thread::Builder::new()
            .name("bin-names".into())
            .spawn(move || {
                while let Ok((ns, name)) = rx.recv() {
                    let Some(me) = weak.upgrade() else { break };
                    let fresh = {
                        let mut set = me.names[ns].lock().expect("bin names lock");
                        set.len() < BIN_NAMES_MAX && set.insert(name.clone())
                    };
                    if fresh {
                        let path = file_of(&dir, &ns_names[ns]);
                        // The data directory holds no shard files when every namespace
                        // names its own files or devices: make sure it exists.
                        let written = std::fs::create_dir_all(&dir)
                            .and_then(|()| std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path))
                            .and_then(|mut f| writeln!(f, "{}", hex(&name)));
                        if let Err(e) = written {
                            tracing::warn!(path = %path.display(), error = %e, "cannot save a bin name");
                        }
                    }
                }
            })
            .expect("spawning the bin-names thread");
        me
    }

    /// Offers a name a core has not offered before; false when the registry was busy.
    pub fn offer(&self, ns: usize, name: &[u8]) -> bool {
        self.tx.try_send((ns, name.to_vec())).is_ok()
    }

    /// `<ns>:bin_names=<n>,bin_names_quota=65535,<name>,...` for every namespace.
    pub fn describe(&self, namespaces: &[String]) -> String {
        namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let set = self.names[i].lock().expect("bin names lock");
                let mut s = format!(
                    "{ns}:bin_names={},bin_names_quota={BIN_NAMES_MAX}",
                    set.len()
                );
                for n in set.iter() {
                    s.push(',');
                    s.push_str(&String::from_utf8_lossy(n));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_recorded_saved_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let ns = vec!["test".to_string()];
        let b = BinNames::open(dir.path(), &ns);
        for n in [&b"b"[..], b"a", b"b", b"x y"] {
            assert!(b.offer(0, n));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !b.describe(&ns).contains("bin_names=3") {
            assert!(std::time::Instant::now() < deadline, "{}", b.describe(&ns));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            b.describe(&ns),
            "test:bin_names=3,bin_names_quota=65535,a,b,x y"
        );
        drop(b);
        std::fs::write(
            dir.path().join("bin-names-test").as_path(),
            [
                std::fs::read_to_string(dir.path().join("bin-names-test")).unwrap(),
                "zz\n".into(),
            ]
            .concat(),
        )
        .unwrap();
        let again = BinNames::open(dir.path(), &ns);
        assert!(
            again.describe(&ns).starts_with("test:bin_names=3,"),
            "bad line skipped"
        );
    }
}
