//! Helpers shared by the engine's integration tests (each test file is its own crate and
//! includes this module).

use std::path::Path;

use apogee_engine::shard::StoreConfig;
use glommio::LocalExecutorBuilder;

/// Runs `f` to completion on a fresh glommio executor (a store lives on one executor).
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// One shard of namespace `test` in `dir`: 128 KiB blocks, no read cache (reads go to the
/// device), no background timers.
pub fn cfg(dir: &Path, commit_to_device: bool) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        namespace: "test".into(),
        shard: 0,
        shard_count: 1,
        block_bytes: 128 * 1024,
        commit_to_device,
        flush_max_ms: 60_000,
        // Off, so these tests exercise the device read path.
        cache_bytes: 0,
        defrag_lwm_pct: 50,
        defrag_sleep_us: 0,
        nsup_period_secs: 0,
        file_bytes_max: 0,
        stop_writes_used_pct: 70,
        stop_writes_avail_pct: 5,
        evict_used_pct: 0,
        extents: Vec::new(),
        memory: false,
    }
}

/// Runs `f` on a fresh executor with a store opened by [`cfg`] (`commit_to_device` off) in a
/// temporary directory removed afterwards: the setup of tests that never reopen their store.
#[allow(dead_code)] // each test file includes this module; not all of them open stores so
pub fn with_store<F, Fut>(f: F)
where
    F: FnOnce(std::rc::Rc<apogee_engine::shard::ShardStore>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let (store, _) =
            apogee_engine::shard::ShardStore::open(cfg(&d, false), std::sync::Arc::default())
                .await
                .unwrap();
        f(store).await;
    });
}
