//! Truncation: removing every record of a namespace, or of one set, whose last-update time is
//! before a cut-off (Aerospike's `truncate`, `truncate-namespace`).
//!
//! Owns three things: the durable list of cut-offs ([`Truncated`], the file
//! `<data-dir>/truncate-<namespace>`), each shard's copy of them as atomics keyed by the
//! shard's set ids ([`TruncatePoints`], read on every lookup, written by whichever core answers
//! the info command), and the shard's background removal of truncated index entries
//! (`ShardStore::truncate_sweep`).
//!
//! Rule (as Aerospike's): a record is truncated when its last-update time (ms since
//! 2010-01-01) is strictly before the namespace's cut-off or its set's. A write after the
//! truncate was answered gets a last-update time at or after the cut-off, so it survives.
//!
//! It must never do file I/O on the data path, and never bring a record back: removal only
//! drops index entries whose older versions are themselves before the cut-off, so as long as
//! the cut-off is in the file, recovery skips them all.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use apogee_wire::Digest;

use super::store::{Change, ShardStore, State};
use crate::index::IndexEntry;
use crate::sets::SetStats;

use crate::sync::atomic::{AtomicU64, Ordering};

/// Records the background removal handles between two yields to the executor: a pass over
/// millions of records never holds the core for more than a few microseconds at a time.
pub const TRUNCATE_CHUNK_RECORDS: usize = 256;

/// How often each shard looks whether the cut-offs changed.
pub const TRUNCATE_POLL_MS: u64 = 100;

/// Longest set name a cut-off may name (Aerospike's limit, 63 bytes).
pub const SET_NAME_BYTES_MAX: usize = 63;

/// The first line of a truncate file: what it is and its format version.
const FILE_MAGIC: &str = "apogee-truncate 1";

/// Why a truncate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TruncateFileError {
    #[error("truncate file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("truncate file {path} line {line}: {reason}")]
    BadLine {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The cut-offs of one namespace, as kept in its truncate file. Last-update times are ms since
/// 2010-01-01 (the record format's unit); 0 means no cut-off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Truncated {
    pub namespace_ms: u64,
    /// Set name → its cut-off.
    pub sets: BTreeMap<Vec<u8>, u64>,
    /// The version of the last change of each cut-off (`None`: the namespace's), an undo's
    /// included: how the members of a cluster agree which change came last (the server's
    /// `truncate` module decides; this only keeps them). Absent: never changed (0, 0).
    pub versions: BTreeMap<Option<Vec<u8>>, Version>,
}

/// The version of a change of one cut-off: a counter one above the version the changing
/// node knew of that cut-off, then the changing node's id (ties between members that
/// changed it without hearing of each other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub counter: u64,
    pub origin: u64,
}

impl Truncated {
    /// The file of namespace `ns` under the data directory.
    pub fn path(data_dir: &Path, ns: &str) -> PathBuf {
        data_dir.join(format!("truncate-{ns}"))
    }

    /// Reads a truncate file; a missing file is no cut-off. Every line is checked: a bad one
    /// refuses the file, naming the line, rather than silently forgetting a cut-off (which
    /// would bring truncated records back).
    pub fn load(path: &Path) -> Result<Truncated, TruncateFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Truncated::default()),
            Err(source) => {
                return Err(TruncateFileError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|(line, reason)| TruncateFileError::BadLine {
            path: path.display().to_string(),
            line,
            reason,
        })
    }

    /// Parses the file's text; the error is (1-based line, reason).
    fn parse(text: &str) -> Result<Truncated, (usize, String)> {
        let mut t = Truncated::default();
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, FILE_MAGIC)) => {}
            Some((_, other)) => {
                return Err((1, format!("expected `{FILE_MAGIC}`, found `{other}`")))
            }
            None => return Err((1, "empty file".into())),
        }
        let ms = |s: Option<&str>, n: usize| -> Result<u64, (usize, String)> {
            let s = s.ok_or((n, "missing last-update time".to_string()))?;
            match s.parse::<u64>() {
                Ok(v) if v > 0 && v <= crate::index::LAST_UPDATE_MS_MAX => Ok(v),
                _ => Err((n, format!("`{s}` is not a last-update time in ms"))),
            }
        };
        let set_name = |hex: Option<&str>, n: usize| -> Result<Vec<u8>, (usize, String)> {
            let hex = hex.unwrap_or("");
            decode_hex(hex)
                .filter(|b| !b.is_empty() && b.len() <= SET_NAME_BYTES_MAX)
                .ok_or((n, format!("`{hex}` is not a hex-encoded set name")))
        };
        for (i, line) in lines {
            let n = i + 1;
            let mut words = line.split(' ');
            match words.next() {
                Some("namespace") => t.namespace_ms = ms(words.next(), n)?,
                Some("set") => {
                    let name = set_name(words.next(), n)?;
                    t.sets.insert(name, ms(words.next(), n)?);
                }
                Some("version") => {
                    let target = match words.next() {
                        Some("namespace") => None,
                        Some("set") => Some(set_name(words.next(), n)?),
                        _ => return Err((n, format!("unknown version line `{line}`"))),
                    };
                    let mut number = || -> Result<u64, (usize, String)> {
                        let w = words.next().unwrap_or("");
                        w.parse::<u64>()
                            .map_err(|_| (n, format!("`{w}` is not a version number")))
                    };
                    let version = Version {
                        counter: number()?,
                        origin: number()?,
                    };
                    t.versions.insert(target, version);
                }
                _ => return Err((n, format!("unknown line `{line}`"))),
            }
            if words.next().is_some() {
                return Err((n, format!("trailing words in `{line}`")));
            }
        }
        Ok(t)
    }

    fn render(&self) -> String {
        let mut s = format!("{FILE_MAGIC}\n");
        if self.namespace_ms > 0 {
            s.push_str(&format!("namespace {}\n", self.namespace_ms));
        }
        let hex = |name: &[u8]| -> String { name.iter().map(|b| format!("{b:02x}")).collect() };
        for (name, ms) in &self.sets {
            s.push_str(&format!("set {} {ms}\n", hex(name)));
        }
        for (target, v) in &self.versions {
            match target {
                None => s.push_str("version namespace"),
                Some(name) => s.push_str(&format!("version set {}", hex(name))),
            }
            s.push_str(&format!(" {} {}\n", v.counter, v.origin));
        }
        s
    }

    /// Replaces the file atomically: a temporary file, fsync, rename over, fsync of the
    /// directory. Once it returns, a crash keeps this version of the cut-offs.
    pub fn save(&self, path: &Path) -> Result<(), TruncateFileError> {
        let io = |source| TruncateFileError::Io {
            path: path.display().to_string(),
            source,
        };
        // Appended, not `with_extension`: namespaces `a.x` and `a.y` must not share `truncate-a.tmp`.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.render().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One shard's cut-offs, read on every lookup without a lock. Set cut-offs are indexed by the
/// shard's own set ids (`Index::set_id`, the same ids as its `SetStats`), so the answering core
/// resolves a set name through the shard's `SetStats` before it stores a cut-off.
#[derive(Debug)]
pub struct TruncatePoints {
    namespace_ms: AtomicU64,
    /// `sets[id]`; index 0 (records with no set) stays 0.
    sets: Box<[AtomicU64]>,
    /// Grows by one with every change, so the shard's sweeper knows when to look.
    epoch: AtomicU64,
}

impl Default for TruncatePoints {
    fn default() -> TruncatePoints {
        TruncatePoints {
            namespace_ms: AtomicU64::new(0),
            sets: (0..=crate::sets::SETS_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
            epoch: AtomicU64::new(0),
        }
    }
}

impl TruncatePoints {
    /// The cut-off for a record of set `set_id`: the later of the namespace's and the set's.
    pub fn cutoff_ms(&self, set_id: u16) -> u64 {
        let ns = self.namespace_ms.load(Ordering::Acquire);
        let set = self.sets[usize::from(set_id)].load(Ordering::Acquire);
        ns.max(set)
    }

    /// Whether a record last updated at `last_update_ms` in set `set_id` is truncated.
    pub fn is_truncated(&self, last_update_ms: u64, set_id: u16) -> bool {
        last_update_ms < self.cutoff_ms(set_id)
    }

    /// Sets the namespace's cut-off (`None` set id) or a set's; 0 undoes it. A cut-off only
    /// moves forward unless undone, as Aerospike's.
    pub fn set(&self, set_id: Option<u16>, ms: u64) {
        let slot = match set_id {
            None => &self.namespace_ms,
            Some(id) => {
                assert!(id != 0, "set id 0 is no set");
                &self.sets[usize::from(id)]
            }
        };
        if ms == 0 {
            slot.store(0, Ordering::Release);
        } else {
            slot.fetch_max(ms, Ordering::AcqRel);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// Applies a cut-off (0: undoes it) to one shard, from any core: a set name gets the shard's
/// id for it through its `SetStats` (registering the name when the shard has not met it yet,
/// as writes do). `false` when the set limit leaves the name without an id.
pub fn apply(points: &TruncatePoints, sets: &SetStats, set: Option<&[u8]>, ms: u64) -> bool {
    match set {
        None => points.set(None, ms),
        Some(name) => match sets.register(name) {
            Some(id) => points.set(Some(id), ms),
            None => return false,
        },
    }
    true
}

/// At start, once the blocks are replayed: gives `truncated`'s set names this shard's set ids,
/// stores the cut-offs in `points` and drops the index entries they cut off (and their live
/// bytes, so defragmentation frees their blocks). Returns how many records it dropped.
pub(super) fn skip_truncated(
    st: &mut State,
    points: &TruncatePoints,
    truncated: &Truncated,
) -> u64 {
    if truncated.namespace_ms > 0 {
        points.set(None, truncated.namespace_ms);
    }
    for (name, &ms) in &truncated.sets {
        match st.keydir.set_id(name) {
            0 => tracing::warn!(
                set = %String::from_utf8_lossy(name),
                "set limit reached: a truncate of this set is not applied"
            ),
            id => points.set(Some(id), ms),
        }
    }
    if points.epoch() == 0 {
        return 0;
    }
    let cut: Vec<(Digest, IndexEntry)> = st
        .keydir
        .index()
        .iter()
        .filter(|(_, e)| points.is_truncated(e.meta.last_update_ms, e.set_id))
        .collect();
    for (d, _) in &cut {
        st.keydir
            .mutate_indexed(Change::Remove { digest: *d }, &mut st.table, None);
    }
    cut.len() as u64
}

impl ShardStore {
    /// Drops every index entry a cut-off now covers, [`TRUNCATE_CHUNK_RECORDS`] at a time with
    /// a yield between chunks. Reads already treat those records as absent; this reclaims
    /// their index memory and live bytes (defragmentation then frees their blocks). No I/O:
    /// the durable cut-off is what keeps them from coming back at the next start.
    pub async fn truncate_sweep(&self) -> usize {
        let candidates: Vec<Digest> = {
            let st = self.state.borrow();
            st.keydir
                .index()
                .iter()
                .filter(|(_, e)| self.truncate.is_truncated(e.meta.last_update_ms, e.set_id))
                .map(|(d, _)| d)
                .collect()
        };
        let mut removed = 0;
        for chunk in candidates.chunks(TRUNCATE_CHUNK_RECORDS) {
            // Only entries still cut off: a write that gave a record a new version since the
            // candidates were taken keeps it.
            removed += self.remove_entries(chunk, |e| {
                self.truncate.is_truncated(e.meta.last_update_ms, e.set_id)
            });
            glommio::yield_if_needed().await;
        }
        removed
    }

    /// Runs [`ShardStore::truncate_sweep`] whenever the cut-offs change (looked at every
    /// [`TRUNCATE_POLL_MS`]). Stops when the store is dropped.
    pub fn spawn_truncator(self: &Rc<Self>) {
        let weak = Rc::downgrade(self);
        let points = self.truncate.clone();
        glommio::spawn_local(async move {
            let mut seen = points.epoch();
            loop {
                glommio::timer::sleep(Duration::from_millis(TRUNCATE_POLL_MS)).await;
                let Some(store) = weak.upgrade() else { break };
                let epoch = points.epoch();
                if epoch == seen {
                    continue;
                }
                seen = epoch;
                let n = store.truncate_sweep().await;
                tracing::info!(
                    namespace = %store.cfg.namespace,
                    shard = store.cfg.shard,
                    removed = n,
                    "truncate: removed records"
                );
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trips_and_bad_lines_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = Truncated::path(dir.path(), "te.st");
        assert_eq!(Truncated::load(&path).unwrap(), Truncated::default());
        let mut t = Truncated {
            namespace_ms: 5,
            ..Default::default()
        };
        t.sets.insert(b"s 1".to_vec(), 7);
        // An undone set keeps only its version.
        let v = |counter, origin| Version { counter, origin };
        t.versions.insert(Some(b"gone".to_vec()), v(3, 0xB2));
        t.versions.insert(None, v(1, 0xA1));
        t.save(&path).unwrap();
        assert_eq!(Truncated::load(&path).unwrap(), t);
        assert!(
            dir.path().join("truncate-te.st").exists()
                && !dir.path().join("truncate-te.tmp").exists()
        );
        std::fs::write(&path, format!("{FILE_MAGIC}\nset 7331 9\nset zz 3\n")).unwrap();
        let err = Truncated::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("truncate-te.st"),
            "{err}"
        );
        std::fs::write(&path, "something else\n").unwrap();
        assert!(Truncated::load(&path)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        std::fs::write(&path, format!("{FILE_MAGIC}\nnamespace x\n")).unwrap();
        assert!(Truncated::load(&path).is_err());
        for bad in ["version set zz 1 2", "version namespace 1", "version x 1 2"] {
            std::fs::write(&path, format!("{FILE_MAGIC}\n{bad}\n")).unwrap();
            assert!(Truncated::load(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn cutoffs_only_move_forward_until_undone() {
        let p = TruncatePoints::default();
        assert!(!p.is_truncated(1, 3));
        p.set(Some(3), 100);
        assert!(p.is_truncated(99, 3) && !p.is_truncated(100, 3) && !p.is_truncated(99, 4));
        p.set(Some(3), 50);
        assert_eq!(p.cutoff_ms(3), 100);
        p.set(None, 200);
        assert!(p.is_truncated(150, 4) && p.is_truncated(150, 0));
        p.set(None, 0);
        p.set(Some(3), 0);
        assert!(!p.is_truncated(1, 3));
        assert_eq!(p.epoch(), 5);
    }
}
