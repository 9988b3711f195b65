//! The node's scan jobs: every scan (foreground and background) while it runs and the last
//! [`DONE_JOBS_KEPT_MAX`] finished ones, for info `query-show`, `query-show:trid=`,
//! `query-abort:trid=` and `query-abort-all` (answered as Aerospike CE 8.1.2 does, which is
//! what the clients' job-status polling parses).
//!
//! A job's progress lives in atomics the shards update as they go; the table's lock is taken
//! only when a job starts or ends and by info, never per record. It must never be held across
//! an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use apogee_wire::info::InfoCommand;
use apogee_wire::ResultCode;

use super::ScanSpec;
use crate::node::Node;

/// Finished jobs kept for `query-show` (Aerospike's `query-max-done` default is 100).
pub const DONE_JOBS_KEPT_MAX: usize = 100;
/// Jobs running at once on the node; a scan beyond it is refused with result 22 (FORBIDDEN).
/// Bounds the table, whose entries are one per scanning connection or background scan.
pub const ACTIVE_JOBS_MAX: usize = 4096;

/// One scan's identity and progress.
pub struct Job {
    pub trid: u64,
    namespace: String,
    set: String,
    background: bool,
    records_per_second: u32,
    from: String,
    partitions: u32,
    started: Instant,
    partitions_done: AtomicU32,
    /// Records still allowed to be returned (`u64::MAX`: no limit).
    budget: AtomicU64,
    succeeded: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicBool,
    abort_reason: Mutex<Option<&'static str>>,
    error: AtomicBool,
    /// Milliseconds after `started` when the job ended (0: running).
    done_after_ms: AtomicU64,
    done_at: Mutex<Option<Instant>>,
}

impl Job {
    pub fn new(
        node: &Node,
        trid: u64,
        spec: &ScanSpec,
        partitions: usize,
        max_records: Option<u64>,
        from: String,
    ) -> Job {
        Job {
            trid,
            namespace: node.config.namespaces[spec.namespace].name.clone(),
            set: String::from_utf8_lossy(spec.set.as_deref().unwrap_or_default()).into_owned(),
            background: spec.write.is_some(),
            records_per_second: spec.records_per_second,
            from,
            partitions: partitions as u32,
            started: Instant::now(),
            partitions_done: AtomicU32::new(0),
            budget: AtomicU64::new(max_records.unwrap_or(u64::MAX)),
            succeeded: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            aborted: AtomicBool::new(false),
            abort_reason: Mutex::new(None),
            error: AtomicBool::new(false),
            done_after_ms: AtomicU64::new(0),
            done_at: Mutex::new(None),
        }
    }

    /// Takes one record from the budget: false once `max_records` have been returned.
    pub fn take_record(&self) -> bool {
        let took = self
            .budget
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(1))
            .is_ok();
        if took {
            self.succeeded.fetch_add(1, Relaxed);
        }
        took
    }

    pub fn count_succeeded(&self) {
        self.succeeded.fetch_add(1, Relaxed);
    }

    pub fn count_filtered(&self) {
        self.filtered.fetch_add(1, Relaxed);
    }

    pub fn count_failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    pub fn partition_done(&self) {
        self.partitions_done.fetch_add(1, Relaxed);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Relaxed)
    }

    /// Stops the job: every shard stops at its next chunk.
    pub fn abort(&self, reason: &'static str) {
        if !self.aborted.swap(true, Relaxed) {
            *self.abort_reason.lock().expect("abort reason lock") = Some(reason);
        }
    }

    /// A shard could not finish its part: the scan ends with a server error.
    pub fn fail(&self) {
        self.error.store(true, Relaxed);
    }

    /// Marks the job finished; the result its LAST frame carries.
    pub fn finish(&self) -> ResultCode {
        let mut at = self.done_at.lock().expect("done lock");
        if at.is_none() {
            *at = Some(Instant::now());
            self.done_after_ms
                .store(self.started.elapsed().as_millis() as u64 + 1, Relaxed);
        }
        if self.error.load(Relaxed) {
            ResultCode::ServerError
        } else {
            ResultCode::Ok
        }
    }

    pub fn is_done(&self) -> bool {
        self.done_after_ms.load(Relaxed) != 0
    }

    /// The job as `query-show` lists it (Aerospike CE 8.1.2's keys).
    fn describe(&self) -> String {
        let done = self.is_done();
        let status = if !done && !self.is_aborted() {
            "active(ok)".to_string()
        } else if self.is_aborted() {
            let why = self.abort_reason.lock().expect("abort reason lock");
            format!("done(abandoned-{})", why.unwrap_or("user-aborted"))
        } else if self.error.load(Relaxed) {
            "done(error)".to_string()
        } else {
            "done(ok)".to_string()
        };
        let progress = if done {
            100.0
        } else {
            f64::from(self.partitions_done.load(Relaxed)) * 100.0
                / f64::from(self.partitions.max(1))
        };
        let run_ms = match self.done_after_ms.load(Relaxed) {
            0 => self.started.elapsed().as_millis() as u64,
            ms => ms - 1,
        };
        let since_done = (*self.done_at.lock().expect("done lock"))
            .map_or(0, |at| at.elapsed().as_millis() as u64);
        let succeeded = self.succeeded.load(Relaxed);
        format!(
            "trid={}:ns={}:set={}:rps={}:active-threads={}:status={status}:job-progress={progress:.2}:\
             run-time={run_ms}:time-since-done={since_done}:recs-throttled={succeeded}:\
             recs-filtered-meta=0:recs-filtered-bins={}:recs-succeeded={succeeded}:recs-failed={}:\
             from={}:job-type={}",
            self.trid,
            self.namespace,
            self.set,
            self.records_per_second,
            u8::from(!done),
            self.filtered.load(Relaxed),
            self.failed.load(Relaxed),
            self.from,
            if self.background { "background-ops" } else { "basic" },
        )
    }
}

/// Ends a foreground job however its request ends: a connection dropped while it waited on
/// its shards leaves the job "abandoned" instead of "active" forever, and stops the shards.
pub struct EndOnDrop(pub Arc<Job>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if !self.0.is_done() {
            self.0.abort("client-disconnected");
            self.0.finish();
        }
    }
}

/// Running and recently finished jobs.
#[derive(Default)]
pub struct JobTable {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl JobTable {
    /// Adds a starting job; finished jobs beyond [`DONE_JOBS_KEPT_MAX`] are forgotten, oldest
    /// first. A task id that is already running is refused with result 4 (the clients pick
    /// random 64-bit ids, so a clash is a client bug).
    pub fn register(&self, job: Job) -> Result<Arc<Job>, ResultCode> {
        let mut jobs = self.jobs.lock().expect("job table lock");
        if jobs.iter().any(|j| j.trid == job.trid && !j.is_done()) {
            return Err(ResultCode::Parameter);
        }
        jobs.retain(|j| j.trid != job.trid);
        if jobs.iter().filter(|j| !j.is_done()).count() >= ACTIVE_JOBS_MAX {
            return Err(ResultCode::Forbidden);
        }
        while jobs.iter().filter(|j| j.is_done()).count() >= DONE_JOBS_KEPT_MAX {
            let oldest = jobs.iter().position(|j| j.is_done()).expect("a done job");
            jobs.remove(oldest);
        }
        let job = Arc::new(job);
        jobs.push_back(job.clone());
        Ok(job)
    }

    fn find(&self, trid: u64) -> Option<Arc<Job>> {
        let jobs = self.jobs.lock().expect("job table lock");
        jobs.iter().find(|j| j.trid == trid).cloned()
    }

    /// Answers the job info commands; `None` for any other command.
    pub fn answer(&self, cmd: &InfoCommand<'_>) -> Option<String> {
        let trid = || -> Result<u64, String> {
            match cmd.param("trid").or_else(|| cmd.param("id")) {
                None | Some("") => Err("ERROR:4:missing 'id'".into()),
                Some(v) => v.parse().map_err(|_| "ERROR:4:bad id".into()),
            }
        };
        Some(match cmd.name {
            "query-show" | "scan-show" if cmd.args.is_empty() => {
                let jobs = self.jobs.lock().expect("job table lock");
                jobs.iter()
                    .map(|j| j.describe())
                    .collect::<Vec<_>>()
                    .join(";")
            }
            "query-show" | "scan-show" => match trid() {
                Err(e) => e,
                Ok(id) => self
                    .find(id)
                    .map_or_else(|| "ERROR:2:job not found".into(), |j| j.describe()),
            },
            "query-abort" | "scan-abort" => match trid() {
                Err(e) => e,
                Ok(id) => match self.find(id) {
                    Some(j) if !j.is_done() && !j.is_aborted() => {
                        j.abort("user-aborted");
                        "OK".into()
                    }
                    _ => "ERROR:2:id not active".into(),
                },
            },
            "query-abort-all" | "scan-abort-all" => {
                let jobs = self.jobs.lock().expect("job table lock");
                let mut killed = 0;
                for j in jobs.iter().filter(|j| !j.is_done() && !j.is_aborted()) {
                    j.abort("user-aborted");
                    killed += 1;
                }
                format!("number-of-queries-killed:{killed}")
            }
            _ => return None,
        })
    }
}
