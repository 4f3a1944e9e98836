//! Durable store, recovery: a queen whose data dir holds 100,000 tasks is killed with `kill -9`
//! and started again on it; how long until she serves `/healthz` READY with every task listed.
//! The tasks are created by the bench's client threads on a queen with no drone, so they all stay
//! pending (the queue that task queue scale holds in memory).

use std::time::{Duration, Instant};

use hive_support::larve::Launch;
use hive_support::wait;

use super::{Bench, dir_bytes};
use crate::report::{Report, target};
use crate::tasks::{self, Batch};
use crate::{Result, progress};

pub const LABEL: &str = "durable store: recovery";

/// Threads creating the tasks.
const CLIENTS: usize = 8;

/// Room for every task, so none is refused.
const MAX_PENDING: usize = 10_000_000;

/// The tasks the target is set for, and the target.
const TARGET_TASKS: usize = 100_000;
const RECOVERY_TARGET: Duration = Duration::from_secs(2);

/// How long the restarted queen may take, and how often she is asked meanwhile.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const READY_POLL: Duration = Duration::from_millis(5);

const BATCH: Batch = Batch {
    prefix: "recovery",
    command: &["true"],
    retries: 0,
};

/// Fills a data dir, kills the queen, times her return, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = bench.plan.queue_tasks;
    let dir = bench.dir.join("durable-recovery.data");
    let args = vec![
        "--queen".to_string(),
        "--port".to_string(),
        "0".to_string(),
        "--max-pending".to_string(),
        MAX_PENDING.to_string(),
        "--data-dir".to_string(),
        dir.display().to_string(),
    ];
    let mut queen = bench
        .launcher
        .start("recovery-queen", &args, &Launch::default())?;
    progress(&format!(
        "creating {n} pending tasks in a data dir from {CLIENTS} threads"
    ));
    let submitted = bench.tasks.submit_many(&[&queen], &BATCH, n, CLIENTS)?;
    queen.kill();
    let size_mb = dir_bytes(&dir) as f64 / (1024.0 * 1024.0);

    let started = Instant::now();
    let queen = bench
        .launcher
        .start("recovery-queen-again", &args, &Launch::default())?;
    let listening = started.elapsed();
    wait::until(READY_TIMEOUT, READY_POLL, "the queen READY again", || {
        let health = bench.control.health(&queen).ok()?;
        health.is_ready().then_some(())
    })?;
    let ready = started.elapsed();
    let pending = bench.tasks.metrics(&queen)?.tasks_in(tasks::PENDING);
    progress(&format!(
        "{pending:.0} tasks back in {:.2} s ({:.2} s to listen); {size_mb:.0} MB on disk",
        ready.as_secs_f64(),
        listening.as_secs_f64()
    ));

    report.row(
        LABEL,
        format!(
            "{n} tasks created in a data dir by {CLIENTS} client threads: s / tasks per s / \
             answers \"try again later\" / MB on disk"
        ),
        format!(
            "{:.1} s / {:.0}/s / {} / {size_mb:.0}",
            submitted.elapsed.as_secs_f64(),
            submitted.per_sec(),
            submitted.refusals
        ),
        target("- / - / 0 / -", submitted.refusals == 0),
    );
    let goal = format!(
        "≤ {:.0} s at {TARGET_TASKS} tasks",
        RECOVERY_TARGET.as_secs_f64()
    );
    report.row(
        LABEL,
        format!(
            "after kill -9, queen started again on the dir: s until she listens / until /healthz \
             says READY / tasks she lists then (of {n})"
        ),
        format!(
            "{:.2} / {:.2} s / {pending:.0}",
            listening.as_secs_f64(),
            ready.as_secs_f64()
        ),
        if n >= TARGET_TASKS {
            target(
                &format!("{goal}, all listed"),
                ready <= RECOVERY_TARGET && pending == n as f64,
            )
        } else {
            format!("{goal} (not held: {n} tasks in this run)")
        },
    );
    report.note(format!(
        "{LABEL}: `larve {}` with no drone; {CLIENTS} hive-bench threads create the {n} tasks \
         (POST /tasks {}), then the queen is killed (SIGKILL) and started again with the same \
         command; the time runs from that start until GET /healthz says Status.READY (she has read \
         every key), polled every {} ms; the tasks listed are her tasks_pending gauge then",
        args.join(" "),
        BATCH.example(),
        READY_POLL.as_millis()
    ));
    Ok(())
}
