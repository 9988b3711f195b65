//! The bin names each namespace has seen, for the `bins` info command; kept across restarts
//! in `<data-dir>/bin-names-<ns>` (one hex-encoded name per line).
//!
//! A write's new names are admitted *before* the write runs ([`BinNames::admit`]), under a
//! short lock and with no I/O, so every name a stored record holds is listed, and a write that
//! would take a namespace past [`BIN_NAMES_MAX`] is refused whole instead of a name being
//! dropped. A name admitted for a write that then fails stays listed (Aerospike 6 kept such
//! names too). Saving to the file is the registry's own thread's job: cores never do I/O here.
//!
//! The `bins` text is rendered as names arrive (an append per new name), never rebuilt per
//! request: answering `bins` for 65,535 names is one copy.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use apogee_wire::msg::{particle, Op, OpType};

/// Most bin names one namespace may have: the `bin_names_quota` of Aerospike 5 and 6, whose
/// `bins` command Apogee keeps. Aerospike 7 and later have no such limit (and no `bins`); Apogee
/// keeps one so the registry, the per-core caches and the `bins` reply stay bounded (about
/// 1 MiB of names per namespace). A write that would add a name past it gets BIN_NAME (21),
/// as Aerospike 6 answered.
pub const BIN_NAMES_MAX: usize = 65_535;

/// A write would take a namespace past [`BIN_NAMES_MAX`] names.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{namespace}: bin-name quota of {BIN_NAMES_MAX} full; {new} new names refused")]
pub struct QuotaFull {
    pub namespace: String,
    pub new: usize,
}

/// The `bins` text would not fit in the room left in an info reply.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("bins list of {bytes} bytes over the {room} bytes left")]
pub struct ListTooLong {
    pub bytes: usize,
    pub room: usize,
}

/// True when `op`, in a successful write, may leave a bin named `op.name` in the record.
pub fn may_create(op: &Op) -> bool {
    let creates = match op.op_type {
        OpType::WRITE => op.particle_type != particle::NULL,
        t => matches!(
            t,
            OpType::INCR
                | OpType::APPEND
                | OpType::PREPEND
                | OpType::CDT_MODIFY
                | OpType::BIT_MODIFY
                | OpType::HLL_MODIFY
                | OpType::EXP_MODIFY
        ),
    };
    creates && !op.name.is_empty()
}

/// One namespace's names.
#[derive(Default)]
struct Registry {
    known: HashSet<Vec<u8>>,
    /// `,<name>` for every name, in the order admitted: the tail of the `bins` value.
    listed: String,
}

impl Registry {
    fn insert(&mut self, name: &[u8]) -> bool {
        if !self.known.insert(name.to_vec()) {
            return false;
        }
        self.listed.push(',');
        // A tab or newline in a name would break the reply's `<command>\t<value>\n` framing.
        self.listed
            .extend(String::from_utf8_lossy(name).chars().map(|c| {
                if matches!(c, '\t' | '\n') {
                    ' '
                } else {
                    c
                }
            }));
        true
    }

    /// `bin_names=<n>,bin_names_quota=<max>`: the head of the `bins` value.
    fn head(&self) -> String {
        format!(
            "bin_names={},bin_names_quota={BIN_NAMES_MAX}",
            self.known.len()
        )
    }
}

/// Names admitted but not yet appended to their file, oldest first, each with its namespace.
type Unsaved = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

pub struct BinNames {
    /// `names[namespace]`.
    names: Vec<Mutex<Registry>>,
    /// Shared with the saver; at most [`BIN_NAMES_MAX`] per namespace ever.
    unsaved: Unsaved,
    /// Wakes the saver; a full channel means it is already due to run. `None` once dropping.
    wake: Option<flume::Sender<()>>,
    saver: Option<std::thread::JoinHandle<()>>,
}

fn file_of(data_dir: &Path, ns: &str) -> PathBuf {
    data_dir.join(format!("bin-names-{ns}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * apogee_wire::msg::BIN_NAME_BYTES_MAX {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Appends each unsaved name to its namespace's file; a failure is logged, not retried (the
/// name stays listed until the next restart).
fn save(dir: &Path, namespaces: &[String], batch: Vec<(usize, Vec<u8>)>) {
    if batch.is_empty() {
        return;
    }
    // The data directory holds no shard files when every namespace names its own files or
    // devices: make sure it exists.
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "cannot save bin names");
        return;
    }
    for (i, ns) in namespaces.iter().enumerate() {
        let lines: String = batch
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, name)| format!("{}\n", hex(name)))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let path = file_of(dir, ns);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(lines.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot save bin names");
        }
    }
}

impl BinNames {
    /// Loads each namespace's saved names (unreadable lines are skipped with a warning) and
    /// starts the thread that saves new ones.
    pub fn open(data_dir: &Path, namespaces: &[String]) -> Arc<BinNames> {
        let names: Vec<Mutex<Registry>> = namespaces
            .iter()
            .map(|ns| {
                let path = file_of(data_dir, ns);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut reg = Registry::default();
                for line in text.lines().filter(|l| !l.is_empty()) {
                    match unhex(line) {
                        Some(n) if reg.known.len() < BIN_NAMES_MAX => {
                            reg.insert(&n);
                        }
                        _ => tracing::warn!(path = %path.display(), line, "skipping a bad bin-name line"),
                    }
                }
                Mutex::new(reg)
            })
            .collect();
        let unsaved: Unsaved = Arc::default();
        let (tx, rx) = flume::bounded::<()>(1);
        let dir = data_dir.to_path_buf();
        let ns_names = namespaces.to_vec();
        let pending = unsaved.clone();
        let take = move || std::mem::take(&mut *pending.lock().expect("bin names lock"));
        let saver = std::thread::Builder::new()
            .name("bin-names".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    save(&dir, &ns_names, take());
                }
                // The registry is gone: save what it admitted last.
                save(&dir, &ns_names, take());
            })
            .expect("spawning the bin-names thread");
        Arc::new(BinNames {
            names,
            unsaved,
            wake: Some(tx),
            saver: Some(saver),
        })
    }

    fn registry(&self, ns: usize) -> MutexGuard<'_, Registry> {
        self.names[ns].lock().expect("bin names lock")
    }

    /// Admits every name in `names` to namespace `ns`, or none of them when that would take it
    /// past [`BIN_NAMES_MAX`]. No I/O: the core that calls it holds the lock for a few hash
    /// lookups and appends.
    pub fn admit(&self, ns: usize, names: &[&[u8]], namespace: &str) -> Result<(), QuotaFull> {
        let mut reg = self.registry(ns);
        // In request order, so `bins` lists names in the order they were first written.
        let mut seen = HashSet::new();
        let fresh: Vec<&[u8]> = names
            .iter()
            .copied()
            .filter(|n| !reg.known.contains(*n) && seen.insert(*n))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        if reg.known.len() + fresh.len() > BIN_NAMES_MAX {
            return Err(QuotaFull {
                namespace: namespace.to_string(),
                new: fresh.len(),
            });
        }
        let mut unsaved = self.unsaved.lock().expect("bin names lock");
        for name in fresh {
            let inserted = reg.insert(name);
            debug_assert!(inserted);
            unsaved.push((ns, name.to_vec()));
        }
        debug_assert!(reg.known.len() <= BIN_NAMES_MAX);
        drop(unsaved);
        if let Some(wake) = &self.wake {
            // Full: the saver has a wake-up pending and will take these names with it.
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// How many names namespace `ns` has.
    #[cfg(test)]
    pub fn count(&self, ns: usize) -> usize {
        self.registry(ns).known.len()
    }

    /// The `bins` value: `<ns>:bin_names=<n>,bin_names_quota=65535,<name>,...` for every
    /// namespace, `;`-separated, or, for `only = Some(ns)`, that namespace's part without the
    /// `<ns>:` prefix (`bins/<ns>`). Names are in the order they were first written. Nothing is
    /// copied when the text is longer than `room` bytes.
    pub fn describe(
        &self,
        namespaces: &[String],
        only: Option<usize>,
        room: usize,
    ) -> Result<String, ListTooLong> {
        let wanted: Vec<usize> = match only {
            Some(i) => vec![i],
            None => (0..namespaces.len()).collect(),
        };
        // Every wanted registry locked at once (in index order, like nobody else, who takes
        // one), so the length checked is the length copied.
        let regs: Vec<MutexGuard<'_, Registry>> =
            wanted.iter().map(|&i| self.registry(i)).collect();
        let heads: Vec<String> = regs.iter().map(|r| r.head()).collect();
        let prefix = |i: usize| match only {
            Some(_) => String::new(),
            None => format!("{}:", namespaces[i]),
        };
        let bytes = wanted
            .iter()
            .zip(regs.iter().zip(&heads))
            .map(|(&i, (r, h))| prefix(i).len() + h.len() + r.listed.len())
            .sum::<usize>()
            + wanted.len().saturating_sub(1);
        if bytes > room {
            return Err(ListTooLong { bytes, room });
        }
        let mut s = String::with_capacity(bytes);
        for (k, (&i, (r, h))) in wanted.iter().zip(regs.iter().zip(&heads)).enumerate() {
            if k > 0 {
                s.push(';');
            }
            s.push_str(&prefix(i));
            s.push_str(h);
            s.push_str(&r.listed);
        }
        debug_assert_eq!(s.len(), bytes);
        Ok(s)
    }
}

impl Drop for BinNames {
    /// Closes the wake channel so the saver saves what is left and stops, then waits for it.
    fn drop(&mut self) {
        self.wake = None;
        if let Some(saver) = self.saver.take() {
            let _ = saver.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(b: &BinNames, ns: &[String]) -> String {
        b.describe(ns, None, usize::MAX).unwrap()
    }

    #[test]
    fn names_are_recorded_saved_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let ns = vec!["test".to_string()];
        let b = BinNames::open(dir.path(), &ns);
        b.admit(0, &[b"b", b"a"], "test").unwrap();
        b.admit(0, &[b"b", b"x y", b"x y"], "test").unwrap();
        // Listed at once, in the order first written.
        assert_eq!(
            all(&b, &ns),
            "test:bin_names=3,bin_names_quota=65535,b,a,x y"
        );
        assert_eq!(
            b.describe(&ns, Some(0), usize::MAX).unwrap(),
            "bin_names=3,bin_names_quota=65535,b,a,x y"
        );
        // Dropping the registry waits for its saver.
        drop(b);
        let path = dir.path().join("bin-names-test");
        let saved = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{saved}zz\n")).unwrap();
        let again = BinNames::open(dir.path(), &ns);
        assert_eq!(
            all(&again, &ns),
            "test:bin_names=3,bin_names_quota=65535,b,a,x y",
            "bad line skipped"
        );
    }

    #[test]
    fn a_write_past_the_quota_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ns = vec!["test".to_string(), "bar".to_string()];
        let b = BinNames::open(dir.path(), &ns);
        let names: Vec<Vec<u8>> = (0..BIN_NAMES_MAX - 1)
            .map(|i| format!("n{i}").into_bytes())
            .collect();
        for chunk in names.chunks(1000) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            b.admit(0, &refs, "test").unwrap();
        }
        assert_eq!(b.count(0), BIN_NAMES_MAX - 1);
        // Two new names with one place left: neither is admitted.
        assert_eq!(
            b.admit(0, &[b"new1", b"new2", b"n5"], "test"),
            Err(QuotaFull {
                namespace: "test".into(),
                new: 2
            })
        );
        assert_eq!(b.count(0), BIN_NAMES_MAX - 1);
        // Known names are always admitted; the last place can be taken.
        b.admit(0, &[b"n7", b"new1"], "test").unwrap();
        assert_eq!(b.count(0), BIN_NAMES_MAX);
        assert!(b.admit(0, &[b"n0", b"new1"], "test").is_ok());
        assert!(b.admit(0, &[b"new2"], "test").is_err());
        // The quota is per namespace.
        b.admit(1, &[b"new2"], "bar").unwrap();
        let text = all(&b, &ns);
        assert!(text.starts_with("test:bin_names=65535,bin_names_quota=65535,n0,n1,"));
        assert!(text.ends_with(",new1;bar:bin_names=1,bin_names_quota=65535,new2"));
        drop(b);
        let again = BinNames::open(dir.path(), &ns);
        assert_eq!((again.count(0), again.count(1)), (BIN_NAMES_MAX, 1));
    }

    #[test]
    fn the_list_is_bounded_by_the_room_given_and_framing_safe() {
        let dir = tempfile::tempdir().unwrap();
        let ns = vec!["test".to_string()];
        let b = BinNames::open(dir.path(), &ns);
        b.admit(0, &[b"a\tb", b"c\nd"], "test").unwrap();
        let text = all(&b, &ns);
        assert_eq!(text, "test:bin_names=2,bin_names_quota=65535,a b,c d");
        assert_eq!(
            b.describe(&ns, None, text.len() - 1),
            Err(ListTooLong {
                bytes: text.len(),
                room: text.len() - 1
            })
        );
        assert_eq!(b.describe(&ns, None, text.len()).unwrap(), text);
    }
}
