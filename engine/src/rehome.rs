//! Re-homing a namespace's data to a new core count: when the data directory was written by
//! `old` shards and the server now runs `new`, every live record is copied to the file of the
//! shard that owns its partition under the new count (`p % new`).
//!
//! Crash-safe by renames: the old directory is first renamed to `<ns>.rehome-old`, which from
//! then on is the authoritative copy; the new directory is rebuilt from it (a partial one from
//! an interrupted attempt is wiped first); once every new file is durable the old directory is
//! renamed to `<ns>.rehome-done` and only then deleted. Only live records are copied, so nothing
//! deleted or expired can come back. Runs before the cores start; must never run beside them.
//!
//! Namespaces on configured files or devices cannot be renamed aside: `rehome_extents` copies
//! them into a staging copy in the default layout, wipes the new layout's header positions and
//! loads the records back (crash-safe by a `COMPLETE` marker and a final rename).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;
use crate::file_header::{FileHeader, FILE_HEADER_BYTES};
use crate::shard::media::header_positions;
use crate::shard::store::io_err;
use crate::shard::{ShardStore, StoreConfig};

/// What a re-homing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RehomeReport {
    /// The core count the data was written with; `None` when an interrupted run had already
    /// moved the data on and its old layout is gone, so this run only finished the job.
    pub from_shards: Option<u32>,
    pub to_shards: u32,
    /// Records this run copied into the new layout.
    pub records: u64,
}

/// The staging copy's `COMPLETE` marker: written once staging is durable, it names the core
/// count the data came from, which a resumed run can no longer read from the wiped layout.
fn complete_marker(from_shards: u32) -> String {
    format!("staged from {from_shards} shards\n")
}

/// The core count a `COMPLETE` marker names; `None` for a marker without one (as written
/// before markers named it) or an unreadable one.
fn marker_from_shards(marker: &str) -> Option<u32> {
    marker
        .strip_prefix("staged from ")?
        .strip_suffix(" shards\n")?
        .parse()
        .ok()
}

impl RehomeReport {
    /// What a run reports when an earlier one committed the new layout and was interrupted
    /// only while removing the old copy: nothing copied, the old core count gone with it.
    fn committed_earlier(to_shards: u32) -> RehomeReport {
        RehomeReport {
            from_shards: None,
            to_shards,
            records: 0,
        }
    }
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
            return Ok(RehomeReport::committed_earlier(template.shard_count));
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
    let sources = (0..from)
        .map(|shard| StoreConfig {
            dir: old_dir.clone(),
            shard,
            shard_count: from,
            // The old files are only read: no cache, no limits that could refuse to open them.
            cache_bytes: 0,
            file_bytes_max: 0,
            ..template.clone()
        })
        .collect();
    let report = RehomeReport {
        from_shards: Some(from),
        to_shards: to,
        records: copy_all(sources, &targets).await?,
    };
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

/// The header at byte 0 of a configured file or device (region 0's), or `None` when blank or
/// missing.
fn first_region_header(path: &Path) -> Result<Option<FileHeader>, StoreError> {
    match std::fs::File::open(path) {
        Ok(mut f) => crate::shard::media::header_at(&mut f, path, 0),
        Err(_) => Ok(None),
    }
}

/// Whether a namespace on configured files or devices must be re-homed before its shards
/// open: an interrupted re-homing left `stage`, or region 0's header was written with another
/// core count or region size than `new` (shard 0's configuration) gives.
pub fn extents_needed(new: &StoreConfig, stage: &Path) -> Result<bool, StoreError> {
    if stage.exists() || sibling(stage, ".done").exists() {
        return Ok(true);
    }
    let first = new
        .extents
        .first()
        .expect("a configured layout has extents");
    Ok(first_region_header(&first.path)?.is_some_and(|h| {
        h.shard_count != new.shard_count || u64::from(h.region_mib) << 20 != first.bytes
    }))
}

/// Copies every live record of `sources` (opened one after the other) to the store of its
/// partition's owner among `targets`, and flushes the targets; returns the records copied.
async fn copy_all(
    sources: Vec<StoreConfig>,
    targets: &[std::rc::Rc<ShardStore>],
) -> Result<u64, StoreError> {
    let to = targets.len() as u32;
    let mut records = 0;
    for cfg in sources {
        let (shard, of) = (cfg.shard, cfg.shard_count);
        let (source, recovered) = ShardStore::open(cfg, Arc::default()).await?;
        tracing::info!(shard, of, records = recovered.objects, "re-homing a shard");
        for digest in source.live_digests() {
            let Some(record) = source.get(&digest).await? else {
                continue; // expired since
            };
            let owner = crate::placement::home_shard(digest.partition().0, to);
            targets[owner as usize].put(&record).await?;
            records += 1;
        }
    }
    for t in targets {
        t.flush_all().await?;
    }
    Ok(records)
}

/// Re-homes a namespace on configured files or devices to the layout `new` describes (one
/// configuration per new shard), through a staging copy in the default layout at `stage`
/// (room for the live data is needed there). Crash-safe: until `stage/COMPLETE` exists the
/// old layout is authoritative and staging starts over; from then on the staging copy is,
/// and the wipe and load are redone from it; the staging directory is renamed away (the
/// commit point) only after the new layout is durable. Must run inside a glommio executor,
/// before the cores start.
pub async fn rehome_extents(new: &[StoreConfig], stage: &Path) -> Result<RehomeReport, StoreError> {
    use std::io::{Seek, SeekFrom, Write};
    let template = new.first().expect("at least one shard");
    let to = template.shard_count;
    let done = sibling(stage, ".done");
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io_err(&done))?;
        if !stage.exists() {
            return Ok(RehomeReport::committed_earlier(to));
        }
    }
    let marker = stage.join("COMPLETE");
    let staged = |shard: u32| StoreConfig {
        dir: stage.to_path_buf(),
        shard,
        shard_count: to,
        commit_to_device: false,
        cache_bytes: 0,
        file_bytes_max: 0,
        extents: Vec::new(),
        memory: false,
        ..template.clone()
    };
    let mut report = RehomeReport {
        from_shards: None,
        to_shards: to,
        records: 0,
    };
    if marker.exists() {
        let text = std::fs::read_to_string(&marker).map_err(io_err(&marker))?;
        report.from_shards = marker_from_shards(&text);
    } else {
        if stage.exists() {
            std::fs::remove_dir_all(stage).map_err(io_err(stage))?;
        }
        let first = &template.extents[0].path;
        let old = first_region_header(first)?.ok_or_else(|| StoreError::BadDataFile {
            path: first.display().to_string(),
            reason: "re-homing found no region header to read".into(),
        })?;
        let region = u64::from(old.region_mib) << 20;
        let sources = (0..old.shard_count)
            .map(|shard| StoreConfig {
                shard,
                shard_count: old.shard_count,
                cache_bytes: 0,
                extents: template
                    .extents
                    .iter()
                    .map(|e| crate::shard::ExtentConfig {
                        path: e.path.clone(),
                        start: u64::from(shard) * region,
                        bytes: region,
                    })
                    .collect(),
                ..template.clone()
            })
            .collect();
        let mut targets = Vec::new();
        for shard in 0..to {
            targets.push(ShardStore::open(staged(shard), Arc::default()).await?.0);
        }
        report.from_shards = Some(old.shard_count);
        copy_all(sources, &targets).await?;
        drop(targets);
        std::fs::write(&marker, complete_marker(old.shard_count)).map_err(io_err(&marker))?;
        std::fs::File::open(stage)
            .and_then(|d| d.sync_all())
            .map_err(io_err(stage))?;
    }
    // Wipe: every header position of the new layout (region headers and block headers) is
    // zeroed, so no block of the old layout can be read as one of the new.
    let zero = vec![0u8; FILE_HEADER_BYTES];
    for e in new.iter().flat_map(|c| &c.extents) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&e.path)
            .map_err(io_err(&e.path))?;
        let size = f.seek(SeekFrom::End(0)).map_err(io_err(&e.path))?;
        for at in header_positions(e, template.block_bytes as u64).take_while(|&at| at < size) {
            f.seek(SeekFrom::Start(at)).map_err(io_err(&e.path))?;
            f.write_all(&zero).map_err(io_err(&e.path))?;
        }
        f.sync_all().map_err(io_err(&e.path))?;
    }
    // Load the new layout from the staging copy.
    let mut targets = Vec::new();
    for cfg in new {
        let cfg = StoreConfig {
            commit_to_device: false,
            ..cfg.clone()
        };
        targets.push(ShardStore::open(cfg, Arc::default()).await?.0);
    }
    report.records = copy_all((0..to).map(staged).collect(), &targets).await?;
    drop(targets);
    std::fs::rename(stage, &done).map_err(io_err(stage))?;
    sync_parent(stage)?;
    std::fs::remove_dir_all(&done).map_err(io_err(&done))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complete_marker_names_the_old_core_count() {
        assert_eq!(marker_from_shards(&complete_marker(2)), Some(2));
        assert_eq!(marker_from_shards(&complete_marker(256)), Some(256));
        // A marker from before it named the count, or a damaged one: unknown, not zero.
        assert_eq!(marker_from_shards("staged\n"), None);
        assert_eq!(marker_from_shards("staged from x shards\n"), None);
        assert_eq!(marker_from_shards(""), None);
    }
}
