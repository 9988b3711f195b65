//! Re-homing a namespace's data to a new core count: when the data directory was written by
//! `old` shards and the server now runs `new`, every live record is copied to the file of the
//! shard that owns its partition under the new count (`p % new`).
//!
//! Crash-safe by renames: the old directory is first renamed to `<ns>.rehome-old`, which from
//! then on is the authoritative copy; the new directory is rebuilt from it (a partial one from
//! an interrupted attempt is wiped first); once every new file is durable the old directory is
//! renamed to `<ns>.rehome-done` and only then deleted. Only live records are copied, so nothing
//! deleted or expired can come back. Runs before the cores start; must never run beside them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;
use crate::file_header::{FileHeader, FILE_HEADER_BYTES};
use crate::shard::store::io_err;
use crate::shard::{ShardStore, StoreConfig};

/// What a re-homing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RehomeReport {
    pub from_shards: u32,
    pub to_shards: u32,
    pub records: u64,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}{suffix}"))
}

/// The shard count that wrote `dir`, from its first data file; `None` for no data.
pub fn written_shard_count(dir: &Path) -> Result<Option<u32>, StoreError> {
    let path = dir.join("shard-0.dat");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let head = &bytes[..bytes.len().min(FILE_HEADER_BYTES)];
    let h = FileHeader::decode(head).map_err(|reason| StoreError::BadDataFile {
        path: path.display().to_string(),
        reason,
    })?;
    Ok(Some(h.shard_count))
}

/// Whether `cfg.dir` needs re-homing before shards open it with `cfg.shard_count` (or an
/// interrupted re-homing must be finished).
pub fn needed(cfg: &StoreConfig) -> Result<bool, StoreError> {
    if sibling(&cfg.dir, ".rehome-old").exists() || sibling(&cfg.dir, ".rehome-done").exists() {
        return Ok(true);
    }
    Ok(written_shard_count(&cfg.dir)?.is_some_and(|n| n != cfg.shard_count))
}

/// Re-homes `template.dir` to `template.shard_count` shards. `template` gives the other store
/// settings; its `shard` is ignored. Must run inside a glommio executor.
pub async fn rehome(template: &StoreConfig) -> Result<RehomeReport, StoreError> {
    let dir = &template.dir;
    let old_dir = sibling(dir, ".rehome-old");
    let done_dir = sibling(dir, ".rehome-done");
    if done_dir.exists() {
        std::fs::remove_dir_all(&done_dir).map_err(io_err(&done_dir))?;
        if !old_dir.exists() {
            return Ok(RehomeReport::default());
        }
    }
    if !old_dir.exists() {
        std::fs::rename(dir, &old_dir).map_err(io_err(dir))?;
        sync_parent(dir)?;
    } else if dir.exists() {
        // An interrupted attempt: the old copy is authoritative, the new one partial.
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    let from = written_shard_count(&old_dir)?.ok_or_else(|| StoreError::BadDataFile {
        path: old_dir.display().to_string(),
        reason: "re-homing found no shard-0.dat to read".into(),
    })?;
    let to = template.shard_count;
    let mut targets = Vec::with_capacity(to as usize);
    for shard in 0..to {
        let cfg = StoreConfig {
            shard,
            // Acknowledge from memory while copying; everything is flushed before the commit
            // point (the rename of the old directory), and `put` bounds the unflushed blocks.
            commit_to_device: false,
            ..template.clone()
        };
        let (store, _) = ShardStore::open(cfg, Arc::default()).await?;
        targets.push(store);
    }
    let mut report = RehomeReport {
        from_shards: from,
        to_shards: to,
        records: 0,
    };
    for shard in 0..from {
        let cfg = StoreConfig {
            dir: old_dir.clone(),
            shard,
            shard_count: from,
            // The old files are only read: no cache, no limits that could refuse to open them.
            cache_bytes: 0,
            file_bytes_max: 0,
            ..template.clone()
        };
        let (source, recovered) = ShardStore::open(cfg, Arc::default()).await?;
        tracing::info!(
            shard,
            of = from,
            records = recovered.objects,
            "re-homing a shard"
        );
        for digest in source.live_digests() {
            let Some(record) = source.get(&digest).await? else {
                continue; // expired since
            };
            let owner = u32::from(digest.partition().0) % to;
            targets[owner as usize].put(&record).await?;
            report.records += 1;
        }
    }
    for t in &targets {
        t.flush_all().await?;
    }
    drop(targets);
    sync_parent(dir)?;
    std::fs::rename(&old_dir, &done_dir).map_err(io_err(&old_dir))?;
    sync_parent(dir)?;
    std::fs::remove_dir_all(&done_dir).map_err(io_err(&done_dir))?;
    Ok(report)
}

fn sync_parent(dir: &Path) -> Result<(), StoreError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(io_err(parent))
}
