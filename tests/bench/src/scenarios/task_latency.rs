//! Task latency: how long a task waits from its creation until the leader has placed
//! it, while drones have free slots. Tasks arrive at 100 a second, open loop: each is sent at its
//! own time, whatever the answers to the earlier ones took (a sender thread that waits for an
//! answer leaves the next tasks to the others). Each runs `true`, which gives its slot back within
//! milliseconds, on drones with far more slots than that keeps busy. How late the latest task was
//! sent is shown with the results.
//!
//! A task's wait is `attempts[0].started_at − created_at`, both written by queens (the one that
//! took the task, the leader that placed it) with millisecond precision. The leader's
//! `hive_task_scheduling_seconds` histogram observes the same wait, and the share of tasks it has
//! within the target cross-checks the per-task figures. The memory store goes first, then three
//! queens sharing one etcd with the arrivals spread over them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;

use super::Bench;
use super::group::{AGREE_TIMEOUT, Queens};
use crate::report::{Report, ms, percentile, target};
use crate::tasks::{Batch, Created, Tally, TaskView};
use crate::{Result, progress};

pub const LABEL: &str = "task latency";

/// Tasks arriving per second, and the threads that send them: each takes the next task, waits
/// for its time and sends it, so a task is late only when every sender is still waiting for an
/// answer (16 answers that each take over 160 ms).
const RATE_PER_SEC: f64 = 100.0;
const SENDERS: usize = 16;

/// How far ahead of the first arrival the senders start, so every one of them is ready for it.
const LEAD_IN: Duration = Duration::from_millis(100);

/// Drones and their slots: 32 slots for tasks that each hold one for milliseconds.
const DRONES: usize = 2;
const SLOTS: u32 = 16;

/// What every task runs.
const COMMAND: [&str; 1] = ["true"];

/// The targets, in milliseconds; each is a bucket bound of the queen's histogram.
const P99_MS_TARGET: f64 = 20.0;
const ETCD_P99_MS_TARGET: f64 = 50.0;

/// How long the tasks may take to end after the last arrival before the part fails.
const END_TIMEOUT: Duration = Duration::from_secs(60);

/// Unit conversions.
const MS_PER_SEC: f64 = 1000.0;
const PERCENT: f64 = 100.0;

/// What one store's part measured.
struct Side {
    tasks: Vec<TaskView>,
    expected: usize,
    /// The latest any task was sent after its time, in milliseconds.
    late_ms: f64,
    /// Submits answered "try again later" and sent again.
    refusals: usize,
    /// The leader's histogram: the share of placements within the target, and its count.
    histogram: (f64, f64),
}

impl Side {
    /// Each task's wait from creation to its first placement, in milliseconds.
    fn waits_ms(&self) -> Vec<f64> {
        self.tasks
            .iter()
            .filter_map(|task| {
                let first = task.attempts.first()?;
                Some((first.started_at - task.created_at) * MS_PER_SEC)
            })
            .collect()
    }

    /// Arrivals per second, from the first task's creation to the last's.
    fn arrivals_per_sec(&self) -> f64 {
        let created = self.tasks.iter().map(|task| task.created_at);
        let first = created.clone().fold(f64::INFINITY, f64::min);
        let last = created.fold(f64::NEG_INFINITY, f64::max);
        (self.tasks.len().saturating_sub(1)) as f64 / (last - first)
    }
}

/// Measures the memory store, then etcd, and adds the rows of each as it is measured.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = (bench.plan.latency_length.as_secs_f64() * RATE_PER_SEC) as usize;
    {
        let queen = bench.queen("latency-memory-queen", &[])?;
        let _drones = bench.exec_drones_of(&[&queen], "latency-memory-drone", DRONES, SLOTS)?;
        let side = measure(
            bench,
            &[&queen],
            &queen,
            &batch("latency-memory"),
            n,
            P99_MS_TARGET,
        )?;
        add_rows(report, "memory store", &side, P99_MS_TARGET);
    }
    let etcd = bench.etcd("latency-etcd")?;
    let queens = Queens::start(bench, &etcd, "latency-etcd")?;
    let _drones = bench.exec_drones_of(&queens.refs(), "latency-etcd-drone", DRONES, SLOTS)?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    let side = measure(
        bench,
        &queens.refs(),
        &queens.live()[leader],
        &batch("latency-etcd"),
        n,
        ETCD_P99_MS_TARGET,
    )?;
    add_rows(
        report,
        "etcd, 3 queens, arrivals spread over them",
        &side,
        ETCD_P99_MS_TARGET,
    );
    report.note(format!(
        "{LABEL}: {n} tasks POST /tasks {} per store, task i sent at {:.0} ms × i through queen i \
         mod the number of queens by the first free of {SENDERS} hive-bench threads (open loop, \
         unless all {SENDERS} wait for answers; a late task is sent at once). {DRONES} drones \
         `larve --queen-host Q[,Q2,Q3] --port 0 --allow-exec --slots {SLOTS}`; the etcd queens \
         `{}`. The wait of a task is \
         attempts[0].started_at − created_at from GET /tasks (read back after every task ended); \
         percentiles are by nearest rank. The histogram is the leader's \
         hive_task_scheduling_seconds (creation to first placement, as she observed it), read \
         after the last task ended",
        batch("latency-memory").example(),
        MS_PER_SEC / RATE_PER_SEC,
        queens.command()
    ));
    Ok(())
}

/// The tasks of one store's part, with ids starting `prefix`.
fn batch(prefix: &str) -> Batch<'_> {
    Batch {
        prefix,
        command: &COMMAND,
        retries: 0,
    }
}

/// Sends `n` tasks of `batch` through `queens` at [`RATE_PER_SEC`], waits until `leader` sees them
/// all ended, and reads them and her histogram back.
fn measure(
    bench: &Bench,
    queens: &[&Larve],
    leader: &Larve,
    batch: &Batch,
    n: usize,
    goal_ms: f64,
) -> Result<Side> {
    progress(&format!(
        "{n} tasks at {RATE_PER_SEC:.0}/s through {} queen(s)",
        queens.len()
    ));
    let (ids, late_ms, refusals) = arrive(bench, queens, batch, n)?;
    bench.tasks.wait_all_ended(leader, n, END_TIMEOUT)?;
    let tasks = bench.tasks.read_back(leader, &ids)?;
    let histogram = bench
        .tasks
        .metrics(leader)?
        .scheduled_within(goal_ms / MS_PER_SEC);
    Ok(Side {
        tasks,
        expected: n,
        late_ms,
        refusals,
        histogram,
    })
}

/// Sends task i of `batch` at `LEAD_IN + i / RATE_PER_SEC` from now through queen i mod the
/// number of queens; the ids, the latest a task was sent after its time (ms), and the answers
/// that said to try again later.
fn arrive(
    bench: &Bench,
    queens: &[&Larve],
    batch: &Batch,
    n: usize,
) -> Result<(Vec<String>, f64, usize)> {
    let addresses: Vec<String> = queens.iter().map(|queen| queen.address()).collect();
    let gap = Duration::from_secs_f64(1.0 / RATE_PER_SEC);
    let start = Instant::now() + LEAD_IN;
    let created: Mutex<Vec<(usize, Created)>> = Mutex::new(Vec::with_capacity(n));
    let late: Mutex<Duration> = Mutex::new(Duration::ZERO);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..SENDERS {
            scope.spawn(|| {
                let mut mine = Vec::new();
                let mut latest = Duration::ZERO;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let due = start + gap.mul_f64(i as f64);
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                    latest = latest.max(Instant::now().saturating_duration_since(due));
                    match bench
                        .tasks
                        .create(&addresses[i % addresses.len()], &batch.body(i))
                    {
                        Ok(task) => mine.push((i, task)),
                        Err(why) => {
                            next.store(n, Ordering::Relaxed);
                            failure.lock().expect("not poisoned").get_or_insert(why);
                            break;
                        }
                    }
                }
                created.lock().expect("not poisoned").extend(mine);
                let mut late = late.lock().expect("not poisoned");
                *late = (*late).max(latest);
            });
        }
    });
    if let Some(why) = failure.into_inner().expect("not poisoned") {
        return Err(why);
    }
    let mut created = created.into_inner().expect("not poisoned");
    created.sort_unstable_by_key(|(i, _)| *i);
    let late = late.into_inner().expect("not poisoned");
    let refusals = created.iter().map(|(_, task)| task.refusals).sum();
    Ok((
        created.into_iter().map(|(_, task)| task.id).collect(),
        late.as_secs_f64() * MS_PER_SEC,
        refusals,
    ))
}

/// The rows of one store's part.
fn add_rows(report: &mut Report, what: &str, side: &Side, goal_ms: f64) {
    let waits = side.waits_ms();
    let p99 = percentile(waits.iter().copied(), 99.0);
    report.row(
        LABEL,
        format!(
            "{what}: created → placed ms, to the millisecond (attempts[0].started_at − \
             created_at): p50 / p99 / max of {} tasks",
            waits.len()
        ),
        format!(
            "{:.0} / {p99:.0} / {:.0}",
            percentile(waits.iter().copied(), 50.0),
            percentile(waits.iter().copied(), 100.0)
        ),
        target(&format!("p99 ≤ {goal_ms:.0}"), p99 <= goal_ms),
    );
    let within = waits.iter().filter(|&&wait| wait <= goal_ms).count() as f64 / waits.len() as f64;
    let (histogram_share, histogram_count) = side.histogram;
    report.row(
        LABEL,
        format!(
            "{what}: placed within {goal_ms:.0} ms: per task / by the leader's \
             hive_task_scheduling_seconds (of {histogram_count:.0} placements)"
        ),
        format!(
            "{:.1}% / {:.1}%",
            within * PERCENT,
            histogram_share * PERCENT
        ),
        "-",
    );
    report.row(
        LABEL,
        format!(
            "{what}: arrivals per s (first to last created_at) / latest send after its time, ms / \
             submits answered \"try again later\" and sent again"
        ),
        format!(
            "{:.1} / {} / {}",
            side.arrivals_per_sec(),
            ms(side.late_ms),
            side.refusals
        ),
        target(&format!("{RATE_PER_SEC:.0} / - / 0"), side.refusals == 0),
    );
    let tally = Tally::of(&side.tasks);
    report.row(
        LABEL,
        format!(
            "{what}: tasks succeeded / with more than one attempt / in another state (of {})",
            side.expected
        ),
        tally.summary(side.expected),
        target(
            &format!("{} / 0 / 0", side.expected),
            tally.all_succeeded_once(side.expected),
        ),
    );
}
