//! Task throughput: the same number of `true` commands run three ways, side by side
//! in one run. The baseline is this machine spawning them itself, 32 at a time from one process
//! (as many as the hive has slots), measured before and after the hives. The hive is one queen
//! (memory store) with 4 drones of 8 slots, the tasks submitted by 8 client threads; then three
//! queens sharing one etcd, the drones registered with all of them and the submits spread over
//! them. A hive's time runs from just before the first submit until the last end the queen
//! recorded; every task must succeed at its first attempt.
//!
//! The client is not what limits a hive: the same threads submit the same number of tasks to a
//! queen with no drones first, and that rate is shown beside the hive's.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;

use super::Bench;
use super::group::{AGREE_TIMEOUT, LEADER_TTL, Queens};
use crate::report::{Report, percentile, target};
use crate::tasks::{Batch, Submitted, Tally};
use crate::{Result, control, progress};

pub const LABEL: &str = "task throughput";

/// Threads submitting tasks.
pub(super) const CLIENTS: usize = 8;

/// Drones of each hive, and the slots of each.
pub(super) const DRONES: usize = 4;
pub(super) const SLOTS: u32 = 8;

/// Commands the baseline runs at once: the hive's slots.
const BASELINE_PARALLEL: usize = DRONES * SLOTS as usize;

/// What every task runs, and what the baseline spawns.
const COMMAND: [&str; 1] = ["true"];

/// The targets: baseline time ÷ the memory store's time, and the etcd rate ÷ the memory
/// store's rate.
const RATIO_TARGET: f64 = 0.6;
const ETCD_SHARE_TARGET: f64 = 0.5;

/// Milliseconds per second.
const MS_PER_SEC: f64 = 1000.0;

/// How long the tasks may take to end after the last submit before the run fails.
const END_TIMEOUT: Duration = Duration::from_secs(300);

/// What one hive did with the tasks.
pub(super) struct HiveRun {
    pub(super) submitted: Submitted,
    pub(super) tally: Tally,
    /// Per task, in milliseconds: from creation to placement, and from placement until the queen
    /// recorded the end (the drone started the command, it ended, the drone reported).
    queued_ms: Vec<f64>,
    ran_ms: Vec<f64>,
    /// Seconds from just before the first submit to the last end the queen recorded.
    pub(super) secs: f64,
    /// Seconds from just before the first submit until the bench saw every task ended.
    seen_secs: f64,
}

impl HiveRun {
    /// Tasks per second, end to end.
    pub(super) fn rate(&self) -> f64 {
        self.submitted.ids.len() as f64 / self.secs
    }
}

/// Runs the baseline, the client alone, both hives and the baseline again, and adds the rows.
/// The etcd hive's failure is the scenario's, after the other rows are in.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = bench.plan.throughput_tasks;
    let before = baseline(n)?;
    progress(&format!(
        "baseline: {n} × {COMMAND:?} in {:.2} s",
        before.as_secs_f64()
    ));
    let alone = client_alone(bench, n)?;
    progress(&format!(
        "the client alone: {n} submits in {:.2} s ({:.0}/s)",
        alone.elapsed.as_secs_f64(),
        alone.per_sec()
    ));
    let memory = memory_hive(bench, n)?;
    progress(&format!(
        "memory store: {n} tasks in {:.2} s ({:.0}/s)",
        memory.secs,
        memory.rate()
    ));
    let etcd = etcd_hive(bench, n);
    if let Ok(etcd) = &etcd {
        progress(&format!(
            "etcd: {n} tasks in {:.2} s ({:.0}/s)",
            etcd.secs,
            etcd.rate()
        ));
    }
    let after = baseline(n)?;
    progress(&format!(
        "baseline again: {n} × {COMMAND:?} in {:.2} s",
        after.as_secs_f64()
    ));

    let baseline_secs = (before + after).as_secs_f64() / 2.0;
    report.row(
        LABEL,
        format!(
            "baseline: {n} × `{}` spawned and waited by one process, {BASELINE_PARALLEL} at a time: \
             s before / after the hives",
            COMMAND.join(" ")
        ),
        format!("{:.2} / {:.2} s", before.as_secs_f64(), after.as_secs_f64()),
        "-",
    );
    add_hive_rows(
        report,
        LABEL,
        &format!("memory store (1 queen, {DRONES} drones × {SLOTS} slots, {CLIENTS} clients)"),
        &memory,
        n,
    );
    let ratio = baseline_secs / memory.secs;
    report.row(
        LABEL,
        "baseline time (mean of before and after) ÷ memory store time",
        format!("{ratio:.2}"),
        target(&format!("≥ {RATIO_TARGET}"), ratio >= RATIO_TARGET),
    );
    report.row(
        LABEL,
        format!(
            "the client alone: {n} submits by {CLIENTS} threads to a queen without drones: \
             submits/s, and ÷ the memory store's tasks/s end to end"
        ),
        format!(
            "{:.0}/s, {:.1}×",
            alone.per_sec(),
            alone.per_sec() / memory.rate()
        ),
        "-",
    );
    let etcd = etcd?;
    add_hive_rows(
        report,
        LABEL,
        &format!(
            "etcd (3 queens, submits spread over them, {DRONES} drones × {SLOTS} slots, \
             {CLIENTS} clients)"
        ),
        &etcd,
        n,
    );
    let share = etcd.rate() / memory.rate();
    report.row(
        LABEL,
        "etcd tasks/s ÷ memory store tasks/s",
        format!("{share:.2}"),
        target(
            &format!("≥ {ETCD_SHARE_TARGET}"),
            share >= ETCD_SHARE_TARGET,
        ),
    );
    report.note(format!(
        "{LABEL}: every task is POST /tasks {} (slots 1, no retries), submitted by {CLIENTS} \
         threads of hive-bench (one kept-alive connection each; task i through queen i mod the \
         number of queens), each sending its next as soon as its last was answered. A hive's time \
         runs from just before the first submit to the latest attempt ended_at (when the queen \
         recorded the drone's report), read back with GET /tasks; the bench waits for the end with \
         GET /tasks/ID?wait= on the newest task not yet ended. Queens run with --keep-finished \
         {n}, so every task can be read back. Drones: `larve --queen-host Q[,Q2,Q3] --port 0 \
         --allow-exec --slots {SLOTS} --work-dir DIR`. The baseline is {BASELINE_PARALLEL} threads \
         of hive-bench each spawning the next `{}` (std::process::Command, stdio to /dev/null) and \
         waiting for it. The bench saw every task ended after {:.2} s (memory) and {:.2} s (etcd). \
         The client alone ran against a fresh queen with the memory store's flags and no drone, \
         so its tasks stayed pending; submitting took the hives {:.2} s (memory) and {:.2} s \
         (etcd)",
        batch("throughput-memory").example(),
        COMMAND.join(" "),
        memory.seen_secs,
        etcd.seen_secs,
        memory.submitted.elapsed.as_secs_f64(),
        etcd.submitted.elapsed.as_secs_f64()
    ));
    Ok(())
}

/// The rows of one hive under `scenario`: its time and rate, and what became of the tasks.
pub(super) fn add_hive_rows(
    report: &mut Report,
    scenario: &'static str,
    what: &str,
    hive: &HiveRun,
    n: usize,
) {
    report.row(
        scenario,
        format!("{what}: s from the first submit to the last end / tasks per s"),
        format!("{:.2} s / {:.0}/s", hive.secs, hive.rate()),
        "-",
    );
    report.row(
        scenario,
        format!("{what}: tasks succeeded / with more than one attempt / in another state (of {n})"),
        hive.tally.summary(n),
        target(&format!("{n} / 0 / 0"), hive.tally.all_succeeded_once(n)),
    );
    let spread = |values: &[f64]| {
        format!(
            "{:.0} / {:.0}",
            percentile(values.iter().copied(), 50.0),
            percentile(values.iter().copied(), 99.0)
        )
    };
    report.row(
        scenario,
        format!(
            "{what}: per task, p50 / p99 ms: created → placed; placed → end recorded (the drone \
             ran the command and reported)"
        ),
        format!("{}; {}", spread(&hive.queued_ms), spread(&hive.ran_ms)),
        "-",
    );
    report.row(
        scenario,
        format!("{what}: submits answered \"try again later\" (503, 429) and sent again"),
        hive.submitted.refusals.to_string(),
        target("0", hive.submitted.refusals == 0),
    );
}

/// The queen flags of every queen of this scenario: finished tasks are kept until read back.
pub(super) fn queen_args(n: usize) -> Vec<String> {
    vec!["--keep-finished".into(), n.to_string()]
}

/// `n` tasks submitted to a fresh queen with no drones, where they stay pending.
fn client_alone(bench: &Bench, n: usize) -> Result<Submitted> {
    let queen = bench.queen("throughput-alone-queen", &queen_args(n))?;
    bench
        .tasks
        .submit_many(&[&queen], &batch("throughput-alone"), n, CLIENTS)
}

/// The scenario's tasks, with ids starting `prefix`.
pub(super) fn batch(prefix: &str) -> Batch<'_> {
    Batch {
        prefix,
        command: &COMMAND,
        retries: 0,
    }
}

/// `n` tasks through one queen with the memory store.
fn memory_hive(bench: &Bench, n: usize) -> Result<HiveRun> {
    one_queen_hive(bench, "throughput-memory", &[], n)
}

/// `n` tasks through one queen started with `extra` flags and [`DRONES`] drones of [`SLOTS`]
/// slots; `label` names them and their tasks.
pub(super) fn one_queen_hive(
    bench: &Bench,
    label: &str,
    extra: &[String],
    n: usize,
) -> Result<HiveRun> {
    let mut args = queen_args(n);
    args.extend_from_slice(extra);
    let queen = bench.queen(&format!("{label}-queen"), &args)?;
    let _drones = bench.exec_drones_of(&[&queen], &format!("{label}-drone"), DRONES, SLOTS)?;
    through(bench, &[&queen], &queen, &batch(label), n)
}

/// `n` tasks through three queens on one etcd, submitted to all of them.
fn etcd_hive(bench: &Bench, n: usize) -> Result<HiveRun> {
    let etcd = bench.etcd("throughput-etcd")?;
    let queens = Queens::start_with(bench, &etcd, "throughput-etcd", LEADER_TTL, &queen_args(n))?;
    let _drones = bench.exec_drones_of(&queens.refs(), "throughput-etcd-drone", DRONES, SLOTS)?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    through(
        bench,
        &queens.refs(),
        &queens.live()[leader],
        &batch("throughput-etcd"),
        n,
    )
}

/// Submits `n` tasks of `batch` through `queens`, waits until `reader` sees every one ended, and
/// reads them back from her.
pub(super) fn through(
    bench: &Bench,
    queens: &[&Larve],
    reader: &Larve,
    batch: &Batch,
    n: usize,
) -> Result<HiveRun> {
    let submitted = bench.tasks.submit_many(queens, batch, n, CLIENTS)?;
    bench.tasks.wait_all_ended(reader, n, END_TIMEOUT)?;
    let seen_secs = control::unix_now() - submitted.first_unix;
    let views = bench.tasks.read_back(reader, &submitted.ids)?;
    let tally = Tally::of(&views);
    let secs = tally.last_end - submitted.first_unix;
    let first_attempts = || {
        views
            .iter()
            .filter_map(|task| Some((task, task.attempts.first()?)))
    };
    let queued_ms = first_attempts()
        .map(|(task, first)| (first.started_at - task.created_at) * MS_PER_SEC)
        .collect();
    let ran_ms = first_attempts()
        .filter_map(|(_, first)| Some((first.ended_at? - first.started_at) * MS_PER_SEC))
        .collect();
    Ok(HiveRun {
        submitted,
        tally,
        queued_ms,
        ran_ms,
        secs,
        seen_secs,
    })
}

/// Spawns `n` of [`COMMAND`] from [`BASELINE_PARALLEL`] threads, each waiting for its command
/// before it spawns the next; how long that took.
fn baseline(n: usize) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..BASELINE_PARALLEL {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let status = Command::new(COMMAND[0])
                        .args(&COMMAND[1..])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let why = match status {
                        Ok(status) if status.success() => continue,
                        Ok(status) => format!("{COMMAND:?} ended with {status}"),
                        Err(e) => format!("cannot spawn {COMMAND:?}: {e}"),
                    };
                    next.store(n, Ordering::Relaxed);
                    failure.lock().expect("not poisoned").get_or_insert(why);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    match failure.into_inner().expect("not poisoned") {
        Some(why) => Err(why),
        None => Ok(elapsed),
    }
}
