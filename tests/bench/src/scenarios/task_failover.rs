//! Task failover: three queens sharing one etcd with a short leader lease, four
//! drones of 8 slots that run commands (registered through all three queens), and 2,000 tasks of
//! `sleep 0.5` submitted through the two followers. Once a tenth of them have ended (the fleet is
//! busy and most tasks still wait), the leader is killed with SIGKILL at a random point of her
//! lease's renewal cycle.
//!
//! Scheduling has resumed when the new leader has written her first placement. Two readings of
//! that moment: the earliest attempt `started_at` after the kill (the leader stamps it as she
//! writes the placement; the old one is dead by then, so any later stamp is the new leader's),
//! and, seen from outside, the first move of a survivor's
//! `hive_task_transitions_total{from="pending",to="running"}` (a queen counts only placements
//! she wrote, and followers write none). Then every task must end `succeeded`, none with more than
//! one attempt: no drone dies here, so no attempt may be lost or started twice.

use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;
use hive_support::wait;

use super::Bench;
use super::group::{AGREE_TIMEOUT, Queens};
use crate::report::{Report, target};
use crate::tasks::{self, Batch, Tally, TaskView};
use crate::{Result, control, progress};

pub const LABEL: &str = "task failover";

/// The leader's lease: short, so the scenario is short, and the larve's own bound is TTL + 1 s.
const LEADER_TTL: Duration = Duration::from_secs(2);

/// The target's slack on top of the lease.
const SLACK: Duration = Duration::from_secs(1);

/// Drones and their slots, and the threads that submit.
const DRONES: usize = 4;
const SLOTS: u32 = 8;
const CLIENTS: usize = 8;

/// The tasks: each runs long enough that the fleet stays busy for the whole scenario.
const BATCH: Batch = Batch {
    prefix: "failover",
    command: &["sleep", "0.5"],
    retries: 0,
};

/// The share of tasks that have ended when the leader is killed.
const KILL_AFTER_ENDED: f64 = 0.1;

/// How long the first tasks may take to end, and how often a follower's counts are read meanwhile.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
const PROGRESS_POLL: Duration = Duration::from_millis(50);

/// How often the survivors' counters are read after the kill (the resolution of the outside
/// reading), and how long past the lease they may take to move before the scenario fails.
const RESUME_POLL: Duration = Duration::from_millis(10);
const RESUME_GIVE_UP: Duration = Duration::from_secs(15);

/// Placements are stamped to the millisecond: a stamp counts as after the kill only when it is
/// later than the kill by more than that, so an old leader's last stamp, rounded up, never does.
const STAMP_RESOLUTION_SECS: f64 = 0.001;

/// How long the tasks may take to end after the new leader took over.
const END_TIMEOUT: Duration = Duration::from_secs(300);

/// Kills the leader with the tasks in flight, measures, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = bench.plan.failover_tasks;
    let etcd = bench.etcd("failover-etcd")?;
    let keep = vec!["--keep-finished".to_string(), n.to_string()];
    let mut queens = Queens::start_with(bench, &etcd, "failover", LEADER_TTL, &keep)?;
    let _drones = bench.exec_drones_of(&queens.refs(), "failover-drone", DRONES, SLOTS)?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    let followers: Vec<&Larve> = queens
        .live()
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != leader)
        .map(|(_, queen)| queen)
        .collect();
    progress(&format!(
        "{n} tasks through the followers; {} leads",
        queens.live()[leader].label
    ));
    let submitted = bench.tasks.submit_many(&followers, &BATCH, n, CLIENTS)?;
    let watcher = followers[0];
    let (pending, running) = wait::poll(
        PROGRESS_TIMEOUT,
        PROGRESS_POLL,
        &format!("a tenth of the {n} tasks to end"),
        || {
            let samples = bench.tasks.metrics(watcher)?;
            let ended = samples.tasks_in(tasks::SUCCEEDED);
            Ok((ended >= n as f64 * KILL_AFTER_ENDED).then(|| {
                (
                    samples.tasks_in(tasks::PENDING),
                    samples.tasks_in(tasks::RUNNING),
                )
            }))
        },
    )?;
    // Anywhere in the leader's renewal cycle, as a crash would fall.
    thread::sleep((LEADER_TTL / 3).mul_f64(fastrand::f64()));
    let mut old = queens.take(leader);
    old.kill();
    let killed = Instant::now();
    let killed_unix = control::unix_now();
    progress(&format!(
        "{} killed with {pending:.0} tasks pending and {running:.0} running",
        old.label
    ));
    let seen_secs = wait::poll(
        LEADER_TTL + RESUME_GIVE_UP,
        RESUME_POLL,
        "a survivor to place a task",
        || {
            for queen in queens.live() {
                if bench
                    .tasks
                    .metrics(queen)
                    .is_ok_and(|m| m.placements() > 0.0)
                {
                    return Ok(Some(killed.elapsed().as_secs_f64()));
                }
            }
            Ok(None)
        },
    )?;
    let new = queens.agreed_leader(AGREE_TIMEOUT)?;
    let new_leader = &queens.live()[new];
    progress(&format!(
        "{} places tasks {seen_secs:.2} s after the kill",
        new_leader.label
    ));
    bench.tasks.wait_all_ended(new_leader, n, END_TIMEOUT)?;
    let views = bench.tasks.read_back(new_leader, &submitted.ids)?;
    let tally = Tally::of(&views);
    let (placed_after, first_after) = placed_after(&views, killed_unix + STAMP_RESOLUTION_SECS);
    let stamped_secs = first_after.map(|at| at - killed_unix);

    let goal = (LEADER_TTL + SLACK).as_secs_f64();
    let goal_text = format!(
        "≤ {goal:.0} s (TTL {} s + {} s)",
        LEADER_TTL.as_secs(),
        SLACK.as_secs()
    );
    let stamped_text = stamped_secs.map_or("none".to_string(), |s| format!("{s:.2}"));
    report.row(
        LABEL,
        format!(
            "kill -9 of the leader, {pending:.0} tasks pending and {running:.0} running: s until \
             the new leader's first placement, by its started_at / by a survivor's pending→running \
             counter"
        ),
        format!("{stamped_text} / {seen_secs:.2} s"),
        target(
            &goal_text,
            stamped_secs.is_some_and(|s| s <= goal) && seen_secs <= goal,
        ),
    );
    report.row(
        LABEL,
        format!("tasks succeeded / with more than one attempt / in another state (of {n})"),
        tally.summary(n),
        target(&format!("{n} / 0 / 0"), tally.all_succeeded_once(n)),
    );
    report.row(
        LABEL,
        "attempts lost / tasks first placed after the kill / submits answered \"try again later\" \
         (all before the kill)",
        format!(
            "{} / {placed_after} / {}",
            tally.lost_attempts, submitted.refusals
        ),
        target(
            "0 / - / 0",
            tally.lost_attempts == 0 && submitted.refusals == 0,
        ),
    );
    report.note(format!(
        "{LABEL}: three queens `{}`, {DRONES} drones `larve --queen-host Q1,Q2,Q3 --port 0 \
         --allow-exec --slots {SLOTS}`, {n} tasks POST /tasks {} from {CLIENTS} hive-bench threads \
         through the two followers in turn. When a follower counts a tenth of them succeeded, the \
         bench waits a random part of the {:.2} s renewal period and kills the leader (SIGKILL, \
         then reaped); the clock starts once she is gone. The survivors' /metrics are read every \
         {} ms until one's placements counter moves. Then every task is waited for and read back \
         from the new leader",
        queens.command(),
        BATCH.example(),
        (LEADER_TTL / 3).as_secs_f64(),
        RESUME_POLL.as_millis()
    ));
    Ok(())
}

/// How many tasks were first placed after `since` (Unix seconds), and the earliest placement
/// stamped after it, if any.
fn placed_after(views: &[TaskView], since: f64) -> (usize, Option<f64>) {
    let first_placed_after = views
        .iter()
        .filter(|task| {
            task.attempts
                .first()
                .is_some_and(|first| first.started_at > since)
        })
        .count();
    let earliest = views
        .iter()
        .flat_map(|task| &task.attempts)
        .map(|attempt| attempt.started_at)
        .filter(|&at| at > since)
        .min_by(f64::total_cmp);
    (first_placed_after, earliest)
}
