//! Regression test for a lost wake-up in glommio's run loop (vendor/glommio/PATCHES.md, 3): a
//! preemption seen before any task queue ran made the executor park with runnable tasks, and
//! nothing woke it. With a short preemption timer the unpatched executor hung within a few
//! hundred to a few thousand runs of an empty future (seen at iteration 654); the patched one
//! finishes them all.
//!
//! Also the executor's sleep (PATCHES.md, 4): the poll that links the latency ring to the main
//! ring is kept armed across sleeps and re-armed once it fired; timers are kept while pending.
//! An executor that sleeps and is woken over and over — by another thread, and by its own
//! timers — must wake every time (a link that is never re-armed sleeps through the second
//! wake-up).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

/// Runs of an empty future on one executor.
const RUNS: u32 = 20_000;
/// How long the runs may take in all before the executor counts as hung (they take well under
/// a second when nothing is lost).
const HANG_AFTER: Duration = Duration::from_secs(30);

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

/// Wake-ups of a sleeping executor, each way.
const WAKES: u32 = 5_000;

/// Runs `body` on an executor of its own and fails when its progress (the counts it sends)
/// stops for `HANG_AFTER` before reaching `total`.
fn progress_never_stops(total: u32, body: impl FnOnce(mpsc::Sender<u32>) + Send + 'static) {
    let (done, progress) = mpsc::channel();
    std::thread::spawn(move || body(done));
    let mut last = 0;
    while last != total {
        match progress.recv_timeout(HANG_AFTER) {
            Ok(i) => last = i,
            Err(_) => {
                panic!("the executor stopped after {last} of {total}: asleep with work ready")
            }
        }
    }
}

#[test]
fn a_sleeping_executor_wakes_for_every_message_from_another_thread() {
    progress_never_stops(WAKES, |done| {
        let (to_ex, from_thread) = flume::bounded::<u32>(1);
        let (to_thread, from_ex) = flume::bounded::<u32>(1);
        std::thread::spawn(move || {
            for i in 1..=WAKES {
                // Gives the executor time to park before the message arrives.
                if i % 16 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                if to_ex.send(i).is_err() || from_ex.recv() != Ok(i) {
                    return;
                }
            }
        });
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .make()
            .expect("an executor");
        ex.run(async move {
            while let Ok(i) = from_thread.recv_async().await {
                let _ = to_thread.send_async(i).await;
                let _ = done.send(i);
            }
        });
    });
}

/// `count` timer sleeps of `sleep` in a row on an executor of its own (with `preempt_timer`
/// when given), each one checked to last at least `sleep`, nothing else running.
fn timers_all_fire(count: u32, sleep: Duration, preempt_timer: Option<Duration>) {
    progress_never_stops(count, move |done| {
        let mut builder = LocalExecutorBuilder::new(Placement::Unbound);
        if let Some(preempt) = preempt_timer {
            builder = builder.preempt_timer(preempt);
        }
        let ex = builder.make().expect("an executor");
        ex.run(async move {
            for i in 1..=count {
                let asked = Instant::now();
                glommio::timer::sleep(sleep).await;
                assert!(asked.elapsed() >= sleep);
                let _ = done.send(i);
            }
        });
    });
}

#[test]
fn a_sleeping_executor_wakes_for_each_of_its_timers() {
    timers_all_fire(2_000, Duration::from_micros(50), None);
}

#[test]
fn user_timers_fire_under_a_short_preempt_timer() {
    // A 20 µs preemption timer races each sleep's user timer; a version of PATCHES.md 4 that
    // kept a fired preemption timer's deadline skipped arming the user timer and slept on.
    timers_all_fire(
        3_000,
        Duration::from_micros(300),
        Some(Duration::from_micros(20)),
    );
}
