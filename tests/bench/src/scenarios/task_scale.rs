//! Task queue scale: one queen holding 100,000 pending tasks (no drone runs commands,
//! so none leaves the queue). The tasks are created by the bench's client threads; then the
//! queen's memory is read from `/proc`, wrk reads the first page of pending tasks, and a short wrk
//! `POST /tasks` shows whether creating tasks slowed down with the queue that long.

use std::time::Duration;

use hive_support::procfs::sample_for;

use super::Bench;
use crate::report::{self, Report, mb, target};
use crate::tasks::{self, Batch};
use crate::wrk::{Call, Load};
use crate::{Result, progress};

pub const LABEL: &str = "task queue scale";

/// Threads creating the queue.
const CLIENTS: usize = 8;

/// The pending tasks the targets are set for.
const TARGET_TASKS: usize = 100_000;

/// Room for the queue and everything the `POST /tasks` load adds, so none is refused.
const MAX_PENDING: usize = 10_000_000;

/// wrk's connections: the listing load's (a few readers), and the create load's (task submission's).
const LIST_CONNECTIONS: usize = 8;
const CREATE_CONNECTIONS: usize = 32;

/// The window over which the queen's memory is sampled, at rest, once the queue is full.
const SAMPLE_WINDOW: Duration = Duration::from_millis(500);

/// The targets.
const RSS_MB_TARGET: f64 = 200.0;
const LIST_P99_MS_TARGET: f64 = 20.0;
const CREATE_P99_MS_TARGET: f64 = 10.0;

/// The queue's tasks (which never run: no drone runs commands).
const BATCH: Batch = Batch {
    prefix: "queue",
    command: &["true"],
    retries: 0,
};

/// Fills the queue, measures, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = bench.plan.queue_tasks;
    let queen = bench.queen(
        "queue-queen",
        &["--max-pending".to_string(), MAX_PENDING.to_string()],
    )?;
    progress(&format!(
        "creating {n} pending tasks from {CLIENTS} threads"
    ));
    let submitted = bench.tasks.submit_many(&[&queen], &BATCH, n, CLIENTS)?;
    let pending = bench.tasks.metrics(&queen)?.tasks_in(tasks::PENDING);
    let held = sample_for(queen.pid(), SAMPLE_WINDOW);
    progress(&format!(
        "{pending:.0} pending after {:.1} s; RSS {} MB",
        submitted.elapsed.as_secs_f64(),
        mb(held.rss_kb)
    ));
    let length = bench.plan.queue_load;
    let list = Load::new(Call::PendingTasks, LIST_CONNECTIONS, length);
    let create = Load::new(Call::CreateTask, CREATE_CONNECTIONS, length);
    let listing = bench.wrk.run("queue-list", list, &queen)?;
    let creating = bench.wrk.run("queue-create", create, &queen)?;
    let after = sample_for(queen.pid(), SAMPLE_WINDOW);

    report.row(
        LABEL,
        format!(
            "{n} tasks created by {CLIENTS} client threads: s / tasks per s / answers \"try again \
             later\" / pending after"
        ),
        format!(
            "{:.1} s / {:.0}/s / {} / {pending:.0}",
            submitted.elapsed.as_secs_f64(),
            submitted.per_sec(),
            submitted.refusals
        ),
        target(
            &format!("- / - / 0 / {n}"),
            submitted.refusals == 0 && pending == n as f64,
        ),
    );
    let rss_mb = report::mb_of(held.hwm_kb);
    let held_goal = format!("≤ {RSS_MB_TARGET:.0} at {TARGET_TASKS} tasks");
    report.row(
        LABEL,
        format!("queen holding {n} pending tasks: RSS (VmRSS) / peak RSS so far (VmHWM) MB"),
        format!("{} / {}", mb(held.rss_kb), mb(held.hwm_kb)),
        if n >= TARGET_TASKS {
            target(&held_goal, rss_mb <= RSS_MB_TARGET)
        } else {
            format!("{held_goal} (not held: {n} tasks in this run)")
        },
    );
    report.load_rows(
        LABEL,
        &format!("GET /tasks?state=pending (first page, 100 tasks) c{LIST_CONNECTIONS}"),
        &[&listing],
        Some(LIST_P99_MS_TARGET),
    );
    report.load_rows(
        LABEL,
        &format!("POST /tasks c{CREATE_CONNECTIONS} on top of the queue"),
        &[&creating],
        Some(CREATE_P99_MS_TARGET),
    );
    report.row(
        LABEL,
        "queen after the loads: RSS (VmRSS) / peak RSS (VmHWM) MB / pending tasks",
        format!(
            "{} / {} / {:.0}",
            mb(after.rss_kb),
            mb(after.hwm_kb),
            bench.tasks.metrics(&queen)?.tasks_in(tasks::PENDING)
        ),
        "-",
    );
    report.note(format!(
        "{LABEL}: one queen `larve --queen --port 0 --max-pending {MAX_PENDING}` and no drone; \
         {CLIENTS} hive-bench threads create the {n} tasks (POST /tasks {}, each thread sending \
         its next as soon as its last was answered). Memory is sampled from /proc/PID/status for \
         {} ms once they are all pending (VmHWM: the kernel's peak over the queen's life, creation \
         included). Then `{}` and `{}` (PORT: her port); rates and latencies are wrk's (see \
         queen under load's note){}",
        BATCH.example(),
        SAMPLE_WINDOW.as_millis(),
        list.command(),
        create.command(),
        if n < TARGET_TASKS {
            format!(
                "; the issue's targets are for {TARGET_TASKS} pending tasks, and the memory \
                 target is not held in a run with fewer"
            )
        } else {
            String::new()
        }
    ));
    Ok(())
}
