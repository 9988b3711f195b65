//! Regression test for a lost wake-up in glommio's run loop (vendor/glommio/PATCHES.md, 3): a
//! preemption seen before any task queue ran made the executor park with runnable tasks, and
//! nothing woke it. With a short preemption timer the unpatched executor hung within a few
//! hundred to a few thousand runs of an empty future (seen at iteration 654); the patched one
//! finishes them all.

use std::sync::mpsc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs of an empty future on one executor.
const RUNS: u32 = 20_000;
/// How long the runs may take in all before the executor counts as hung (they take well under
/// a second when nothing is lost).
const HANG_AFTER: Duration = Duration::from_secs(60);

#[test]
fn an_executor_with_a_short_preempt_timer_never_parks_with_work_ready() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .preempt_timer(Duration::from_micros(100))
            .make()
            .expect("an executor");
        for i in 0..RUNS {
            ex.run(async {});
            let _ = done.send(i);
        }
    });
    let mut last = None;
    let deadline = std::time::Instant::now() + HANG_AFTER;
    while last != Some(RUNS - 1) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match finished.recv_timeout(left) {
            Ok(i) => last = Some(i),
            Err(_) => panic!(
                "the executor stopped after {} of {RUNS} runs: parked with its work ready",
                last.map_or(0, |i| i + 1)
            ),
        }
    }
}
