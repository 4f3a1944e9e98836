//! A drone's attempts: which run, how many slots they take, and how those that ended wait to be
//! reported. Each is known by its id alone (unique for all time), so no start, stop or report can
//! be taken for another run's.
//!
//! A start is idempotent: an attempt this drone runs, or ran since it started, is never started
//! again (a new leader asks again for every attempt it has not seen confirmed, see
//! `queen/scheduler.rs`). Slots (and the memory and cpus attempts ask for) are taken when an
//! attempt starts and given back when it has ended and nothing of it runs any more, so this drone
//! never runs more than it offers, whatever queens ask. An attempt for which no thread can be made
//! ends at once, `failed`, reported like any other: nothing here waits on the executor while
//! holding the lock its end takes.
//! An attempt that ended waits in the outbox until a queen has recorded it; a probe lists it with
//! the running ones, so the leader does not mistake it for lost meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::logs::Logs;
use crate::error::{Error, Result};
use crate::exec::{self, Executor, Limits, Outcome};
use crate::tasks::placement::{Capacity, Want};
use crate::tasks::wire::{Ended, Ending, Listed, Report, Start, StartAnswer, StartResult, Started};
use crate::tasks::{
    MAX_CPUS, MAX_KILL_TIMEOUT_SECS, MAX_MEMORY_MB, MAX_PIDS, MAX_SLOTS, MAX_TIMEOUT_SECS,
    MIN_CPUS, MIN_MEMORY_MB, millicpus, valid_attempt_id, valid_id,
};

/// Attempts remembered as run since the drone started, so a start sent again is not run twice.
/// Beyond this, the oldest are forgotten (a start would have to come that late to matter).
const REMEMBERED_ATTEMPTS: usize = 100_000;

/// How long ended attempts wait for others to end before they are reported together, while
/// others run, and how many are enough to go at once.
const REPORT_LINGER: Duration = Duration::from_millis(2);
const REPORTS_PER_CALL: usize = 64;

/// An attempt's id.
type Key = String;

/// What the drone keeps of an attempt it runs.
struct Run {
    running: exec::Running,
    /// What it takes of the drone.
    want: Want,
    /// The attempt's task and number, for its report.
    task: String,
    n: u32,
}

/// An attempt that ended, waiting for a queen to record its report.
struct Unreported {
    task: String,
    n: u32,
    ended: Ended,
}

/// What this drone runs, and what waits to be reported.
pub struct Attempts {
    executor: Executor,
    /// Where what the attempts print is kept.
    logs: Arc<Logs>,
    /// Slots this drone runs at most.
    slots: u32,
    /// The memory (MiB) and cpus (thousandths) its attempts may ask for together.
    memory_mb: u64,
    millicpus: u32,
    /// The drone's address, given to each attempt as `HIVE_DRONE_ADDRESS`.
    address: String,
    inner: Mutex<Inner>,
    /// Woken when an attempt ends: the reporter sends it.
    ended: Condvar,
}

#[derive(Default)]
struct Inner {
    /// What the running attempts take.
    used: Want,
    running: HashMap<Key, Run>,
    /// Ended, and not yet recorded by a queen.
    outbox: BTreeMap<Key, Unreported>,
    /// Every attempt run since this drone started (bounded), oldest first.
    ran: HashSet<Key>,
    ran_order: VecDeque<Key>,
}

impl Attempts {
    /// The attempts of a drone at `address` with `slots`, `memory_mb` and `cpus`, run by
    /// `executor`, their output kept in `logs`.
    pub fn new(
        executor: Executor,
        logs: Arc<Logs>,
        slots: u32,
        (memory_mb, cpus): (u64, f64),
        address: String,
    ) -> Arc<Attempts> {
        Arc::new(Attempts {
            executor,
            logs,
            slots,
            memory_mb,
            millicpus: millicpus(cpus),
            address,
            inner: Mutex::new(Inner::default()),
            ended: Condvar::new(),
        })
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The memory (MiB) and cpus this drone offers.
    pub fn offer(&self) -> (u64, f64) {
        (self.memory_mb, f64::from(self.millicpus) / 1000.0)
    }

    /// How this drone contains its attempts.
    pub fn level(&self) -> exec::Level {
        self.executor.level()
    }

    /// What the attempts print, kept.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// Whether `want` fits beside what `used` takes.
    fn fits(&self, used: &Want, want: &Want) -> bool {
        Capacity {
            slots: self.slots,
            used: used.slots,
            memory_mb: self.memory_mb,
            used_memory_mb: used.memory_mb,
            millicpus: self.millicpus,
            used_millicpus: used.millicpus,
        }
        .fits(want)
    }

    /// Starts each attempt of `starts` that fits and that this drone has not run, and says what
    /// became of each.
    pub fn start(self: &Arc<Self>, starts: Vec<Start>) -> Result<StartAnswer> {
        for start in &starts {
            check(start).map_err(Error::BadRequest)?;
        }
        let mut results = Vec::with_capacity(starts.len());
        let mut inner = self.inner.lock();
        for start in starts {
            let key: Key = start.id.clone();
            let want = Want {
                slots: start.slots,
                memory_mb: start.resources.memory_mb.unwrap_or(0),
                millicpus: start.resources.millicpus(),
            };
            let result = if inner.running.contains_key(&key) {
                Started::Running
            } else if inner.ran.contains(&key) {
                Started::Ended
            } else if !self.fits(&inner.used, &want) {
                Started::Full
            } else {
                inner.ran.insert(key.clone());
                inner.ran_order.push_back(key.clone());
                if inner.ran_order.len() > REMEMBERED_ATTEMPTS
                    && let Some(oldest) = inner.ran_order.pop_front()
                {
                    inner.ran.remove(&oldest);
                }
                let spec = exec::Spec {
                    id: start.id.clone(),
                    task: start.task.clone(),
                    attempt: start.attempt,
                    command: start.command,
                    env: start.env,
                    timeout: Duration::from_secs_f64(start.timeout_s),
                    kill_grace: Duration::from_secs_f64(start.kill_timeout_s),
                    limits: Limits {
                        memory_bytes: start.resources.memory_mb.map(|mb| mb << 20),
                        millicpus: start.resources.cpus.map(millicpus),
                        pids: start.resources.pids,
                    },
                    drone_address: self.address.clone(),
                };
                let me: Weak<Attempts> = Arc::downgrade(self);
                let ended_key = key.clone();
                let sink = self.logs.sink(&start.id);
                let started = self.executor.start(spec, Some(sink), move |outcome| {
                    if let Some(attempts) = me.upgrade() {
                        attempts.finish(ended_key, outcome);
                    }
                });
                match started {
                    Ok(running) => {
                        inner.used.slots += want.slots;
                        inner.used.memory_mb += want.memory_mb;
                        inner.used.millicpus += want.millicpus;
                        let run = Run {
                            running,
                            want,
                            task: start.task,
                            n: start.attempt,
                        };
                        inner.running.insert(key, run);
                    }
                    Err(e) => {
                        warn!(
                            "task {} attempt {} could not start: no thread to run it on: {e}",
                            start.task, start.attempt
                        );
                        let why = format!("could not start: no thread to run it on: {e}");
                        let unreported = Unreported {
                            task: start.task,
                            n: start.attempt,
                            ended: failed(why),
                        };
                        inner.outbox.insert(key, unreported);
                        self.ended.notify_all();
                    }
                }
                Started::Started
            };
            results.push(StartResult {
                id: start.id,
                result,
            });
        }
        Ok(StartAnswer { results })
    }

    /// An attempt has ended and nothing of it runs: give back what it took, and queue its
    /// report.
    fn finish(&self, key: Key, outcome: Outcome) {
        let ended = Ended {
            state: match outcome.ending {
                exec::Ending::Succeeded => Ending::Succeeded,
                exec::Ending::Failed => Ending::Failed,
                exec::Ending::TimedOut => Ending::TimedOut,
                exec::Ending::Cancelled => Ending::Cancelled,
                exec::Ending::OomKilled => Ending::OomKilled,
            },
            exit_code: outcome.exit_code,
            exit_signal: outcome.exit_signal,
            peak_memory_bytes: outcome.peak_memory_bytes,
            reason: outcome.reason,
            stdout: outcome.stdout.text,
            stdout_truncated: outcome.stdout.truncated,
            stderr: outcome.stderr.text,
            stderr_truncated: outcome.stderr.truncated,
        };
        let mut inner = self.inner.lock();
        let Some(run) = inner.running.remove(&key) else {
            return;
        };
        inner.used.slots -= run.want.slots;
        inner.used.memory_mb -= run.want.memory_mb;
        inner.used.millicpus -= run.want.millicpus;
        // The queen logs the end once it is recorded: here it is a detail.
        debug!(
            "task {} attempt {} ({key}) ended: {}",
            run.task, run.n, ended.reason
        );
        let unreported = Unreported {
            task: run.task,
            n: run.n,
            ended,
        };
        inner.outbox.insert(key, unreported);
        self.ended.notify_all();
    }

    /// Stops attempt `id` (every process of it). An attempt that has ended already is fine; one
    /// this drone never ran is not found.
    pub fn stop(&self, id: &str) -> Result<()> {
        let inner = self.inner.lock();
        if let Some(run) = inner.running.get(id) {
            info!(
                "stopping task {} attempt {} ({id}), as a queen asked",
                run.task, run.n
            );
            run.running.stop();
            return Ok(());
        }
        if inner.ran.contains(id) {
            return Ok(());
        }
        Err(Error::NotFound(format!("attempt {id:?} on this drone")))
    }

    /// Slots in use now, the attempts running, and those ended and not yet reported.
    pub fn status(&self) -> (u32, Vec<Listed>, Vec<Listed>) {
        let inner = self.inner.lock();
        let running = inner
            .running
            .iter()
            .map(|(id, run)| Listed {
                id: id.clone(),
                task: run.task.clone(),
            })
            .collect();
        let ended = inner
            .outbox
            .iter()
            .map(|(id, unreported)| Listed {
                id: id.clone(),
                task: unreported.task.clone(),
            })
            .collect();
        (inner.used.slots, running, ended)
    }

    /// Waits up to `wait` for ended attempts to report, and gives up to about `max_bytes` of
    /// their reports as JSON (they stay in the outbox until [`Attempts::recorded`]).
    pub fn reports(&self, wait: Duration, max_bytes: usize) -> Vec<Report> {
        let mut inner = self.inner.lock();
        if inner.outbox.is_empty() {
            self.ended.wait_for(&mut inner, wait);
        }
        // While other attempts run, more ends are coming: waiting a moment for them sends one
        // call for many, where a call per end would cost more than the attempts themselves.
        let until = Instant::now() + REPORT_LINGER;
        while !inner.outbox.is_empty()
            && inner.outbox.len() < REPORTS_PER_CALL
            && !inner.running.is_empty()
        {
            if self.ended.wait_until(&mut inner, until).timed_out() {
                break;
            }
        }
        let mut bytes = 0;
        let mut reports = Vec::new();
        for (id, unreported) in &inner.outbox {
            let report = Report {
                id: id.clone(),
                task: unreported.task.clone(),
                attempt: unreported.n,
                ended: unreported.ended.clone(),
            };
            // As sent: JSON escapes can make output several times its size.
            let size = serde_json::to_vec(&report).map_or(0, |json| json.len());
            if !reports.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            reports.push(report);
        }
        reports
    }

    /// A queen recorded these attempts (by id): they leave the outbox.
    pub fn recorded(&self, ids: &[String]) {
        let mut inner = self.inner.lock();
        for id in ids {
            inner.outbox.remove(id);
        }
    }

    /// Ends what a drone on the same work directory left running before this one started.
    pub fn reap_leftovers(&self) {
        for leftover in self.executor.reap_leftovers() {
            warn!("{leftover}");
        }
    }
}

/// Why a start cannot be run as it is, if it cannot.
fn check(start: &Start) -> std::result::Result<(), String> {
    if !valid_attempt_id(&start.id) || !valid_id(&start.task) || start.attempt == 0 {
        return Err(format!(
            "{:?} attempt {} ({:?}) is not an attempt",
            start.task, start.attempt, start.id
        ));
    }
    if start.command.is_empty() || start.command[0].is_empty() {
        return Err(format!("task {}: an empty command", start.task));
    }
    if start.command.iter().any(|arg| arg.contains('\0'))
        || start
            .env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(format!("task {}: a NUL or a bad variable name", start.task));
    }
    if !(1..=MAX_SLOTS).contains(&start.slots) {
        return Err(format!("task {}: slots out of range", start.task));
    }
    if !(start.timeout_s.is_finite() && (1.0..=MAX_TIMEOUT_SECS).contains(&start.timeout_s)) {
        return Err(format!("task {}: timeout out of range", start.task));
    }
    let kill = start.kill_timeout_s;
    if !(kill.is_finite() && (0.0..=MAX_KILL_TIMEOUT_SECS).contains(&kill)) {
        return Err(format!("task {}: kill_timeout_s out of range", start.task));
    }
    let resources = &start.resources;
    let in_range = resources
        .memory_mb
        .is_none_or(|mb| (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb))
        && resources
            .cpus
            .is_none_or(|cpus| cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus))
        && (1..=MAX_PIDS).contains(&resources.pids);
    if !in_range {
        return Err(format!("task {}: resources out of range", start.task));
    }
    Ok(())
}

/// The report of an attempt that failed before its command could run.
fn failed(reason: String) -> Ended {
    Ended {
        state: Ending::Failed,
        exit_code: None,
        exit_signal: None,
        peak_memory_bytes: None,
        reason,
        stdout: String::new(),
        stdout_truncated: false,
        stderr: String::new(),
        stderr_truncated: false,
    }
}
