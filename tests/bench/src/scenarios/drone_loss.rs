//! Drone loss: a drone running 8 tasks is killed with SIGKILL, and each of its tasks
//! (allowed one retry) must get exactly one `lost` attempt and one more attempt on the other
//! drone, within the heartbeat's detection bound + 1 s of the kill. The queen runs the fast
//! heartbeat of the detection scenario, whose bound is the longest a dead drone stays registered.
//!
//! Each repetition starts a fresh queen and the victim alone, so all 8 tasks land on it; once the
//! victim itself says it runs them, a second drone joins, and the victim is killed at a random
//! point of the heartbeat's cycle. A task's times are read from its attempts: the lost one's
//! `ended_at` (when the queen declared it lost) and the next one's `started_at` (when the queen
//! placed it on the other drone).

use std::thread;
use std::time::Duration;

use hive::config::HeartbeatConfig;
use hive_support::larve::Larve;
use hive_support::wait;

use super::Bench;
use crate::report::{Report, median, target};
use crate::tasks::{Batch, LOST, RUNNING, TaskView};
use crate::{Result, control, heartbeat, progress};

pub const LABEL: &str = "drone loss";

/// Slots of each drone, and tasks the victim runs: one per slot.
const SLOTS: u32 = 8;
const TASKS: usize = SLOTS as usize;

/// Each task may run once more after a lost attempt.
const RETRIES: u32 = 1;

/// What every task runs: 30 s of work. The killed drone's reaper ends its attempts once the drone
/// is gone, so they do not run on after the scenario.
const COMMAND: [&str; 2] = ["sleep", "30"];

/// How long the tasks may take to run on the victim, and how often that is looked at.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// How long past the detection bound the tasks may take to be placed again before the
/// repetition fails.
const GIVE_UP: Duration = Duration::from_secs(10);

/// The slack on top of the detection bound.
const SLACK_SECS: f64 = 1.0;

/// What became of one of the victim's tasks.
struct Replaced {
    /// Exactly two attempts: the first lost on the victim, the second on the other drone.
    as_expected: bool,
    /// Seconds from the kill until the first attempt was declared lost.
    lost_secs: f64,
    /// Seconds from the kill until the second attempt was placed.
    placed_secs: f64,
}

/// Kills a drone per repetition, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let heartbeat = heartbeat::fast();
    let bound = heartbeat.detection_bound().as_secs_f64();
    let repeats = bench.plan.drone_loss_repeats;
    let mut replaced = Vec::new();
    for repeat in 1..=repeats {
        replaced.extend(kill_one(bench, &heartbeat, repeat)?);
    }
    let n = replaced.len();
    let expected = replaced.iter().filter(|r| r.as_expected).count();
    let lost: Vec<f64> = replaced.iter().map(|r| r.lost_secs).collect();
    let placed: Vec<f64> = replaced.iter().map(|r| r.placed_secs).collect();
    let max = |values: &[f64]| values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let goal = bound + SLACK_SECS;
    report.row(
        LABEL,
        format!("detection bound: {}", heartbeat::bound_formula(&heartbeat)),
        format!("{bound:.1} s"),
        "-",
    );
    report.row(
        LABEL,
        format!(
            "tasks of the killed drones with exactly one lost attempt and one more on the other \
             drone ({repeats} × {TASKS} tasks)"
        ),
        format!("{expected} / {n}"),
        target(&format!("{n} / {n}"), expected == n),
    );
    report.row(
        LABEL,
        format!("s from kill -9 until an attempt was declared lost: median / max of {n}"),
        format!("{:.2} / {:.2} s", median(lost.iter().copied()), max(&lost)),
        "-",
    );
    report.row(
        LABEL,
        format!("s from kill -9 until the next attempt was placed: median / max of {n}"),
        format!(
            "{:.2} / {:.2} s",
            median(placed.iter().copied()),
            max(&placed)
        ),
        target(
            &format!("≤ {goal:.1} s (bound + {SLACK_SECS:.0} s)"),
            max(&placed) <= goal,
        ),
    );
    report.note(format!(
        "{LABEL}: per repetition a fresh queen `larve --queen --port 0 {}` and one drone `larve \
         --queen-host Q --port 0 --allow-exec --slots {SLOTS} --work-dir DIR` take {TASKS} tasks \
         POST /tasks {}; once that drone's /healthz?verbose shows all {SLOTS} slots used, a second \
         such drone registers, the bench waits a random part of the heartbeat interval and kills \
         the first (SIGKILL, then reaped; the clock starts once it is gone; its reaper ends the \
         tasks it ran), then reads the tasks every {} ms until each has a second attempt. Times \
         are from the attempts' ended_at (lost) and started_at (placed), written by the queen",
        heartbeat::args(&heartbeat).join(" "),
        batch("loss-rR").example(),
        POLL.as_millis()
    ));
    Ok(())
}

/// One repetition: a victim running [`TASKS`] tasks is killed; what became of each.
fn kill_one(bench: &Bench, heartbeat: &HeartbeatConfig, repeat: usize) -> Result<Vec<Replaced>> {
    let label = format!("loss-r{repeat}");
    let queen = bench.queen(&format!("{label}-queen"), &heartbeat::args(heartbeat))?;
    let mut victim = bench
        .exec_drones_of(&[&queen], &format!("{label}-victim"), 1, SLOTS)?
        .remove(0);
    let batch = batch(&label);
    let ids = (0..TASKS)
        .map(|i| Ok(bench.tasks.create(&queen.address(), &batch.body(i))?.id))
        .collect::<Result<Vec<String>>>()?;
    wait::poll(
        RUNNING_TIMEOUT,
        POLL,
        &format!("{} to run all {TASKS} tasks", victim.label),
        || {
            let on_victim = bench
                .tasks
                .read_back(&queen, &ids)?
                .iter()
                .filter(|task| task.state == RUNNING && runs_on(task, 0, &victim))
                .count();
            let used = bench.control.drone_health(&victim)?.used;
            Ok((on_victim == TASKS && used == SLOTS).then_some(()))
        },
    )?;
    let survivor = bench
        .exec_drones_of(&[&queen], &format!("{label}-survivor"), 1, SLOTS)?
        .remove(0);
    // Anywhere in the heartbeat's cycle, as a crash would fall.
    thread::sleep(heartbeat.interval.mul_f64(fastrand::f64()));
    victim.kill();
    let killed_unix = control::unix_now();
    progress(&format!("{} killed running {TASKS} tasks", victim.label));
    let views = wait::poll(
        heartbeat.detection_bound() + GIVE_UP,
        POLL,
        &format!("the {TASKS} tasks to be placed again"),
        || {
            let views = bench.tasks.read_back(&queen, &ids)?;
            let again = views.iter().filter(|task| task.attempts.len() > 1).count();
            Ok((again == TASKS).then_some(views))
        },
    )?;
    Ok(views
        .iter()
        .map(|task| {
            let (first, second) = (&task.attempts[0], &task.attempts[1]);
            Replaced {
                as_expected: task.attempts.len() == 2
                    && first.state == LOST
                    && runs_on(task, 0, &victim)
                    && runs_on(task, 1, &survivor),
                lost_secs: first.ended_at.unwrap_or(f64::INFINITY) - killed_unix,
                placed_secs: second.started_at - killed_unix,
            }
        })
        .collect())
}

/// The tasks of a repetition, with ids starting `prefix`.
fn batch(prefix: &str) -> Batch<'_> {
    Batch {
        prefix,
        command: &COMMAND,
        retries: RETRIES,
    }
}

/// Whether attempt `i` of `task` was placed on `drone`.
fn runs_on(task: &TaskView, i: usize, drone: &Larve) -> bool {
    task.attempts
        .get(i)
        .is_some_and(|attempt| attempt.address == drone.address())
}
