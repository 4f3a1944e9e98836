//! Containment: what holding every attempt in a cgroup of its own costs, and how fast a cancel
//! ends a task that handles SIGTERM.
//!
//! - **Throughput.** The same number of `true` tasks through two hives alike but for their
//!   drones' containment: cgroups (the drone's default where it may make them) and process
//!   groups (`--containment process-group`). Each is one queen (memory store) with 4 drones of 8
//!   slots and 8 submitting threads, as in task throughput; the hives take turns,
//!   each round on fresh larves, the first one swapped each round. A hive's time runs from just
//!   before the first submit to the last end its queen recorded.
//! - **Containment CPU per attempt.** The CPU the drones used per task in each hive, read from
//!   `/proc/PID/stat` before and after: their own time and that of the commands they waited for
//!   (`cutime`, `cstime`: what a command's process does between fork and exec, and `true` itself,
//!   is counted there). The difference between the hives is what the cgroups cost a drone per
//!   attempt. The kernel frees a cgroup later, on its own workers, which no process is charged
//!   for; the machine's busy time per task (`/proc/stat`) shows that, and everything else of a
//!   hive, beside it.
//! - **Fork against posix_spawn.** An attempt's command is started with a `pre_exec` step, which
//!   makes std fork the drone rather than use `posix_spawn`: hive-bench itself spawns `true` both
//!   ways, 32 at a time, and says what a spawn costs each way.
//! - **Cancel.** One drone of each containment runs tasks that handle SIGTERM (Python, exiting at
//!   once from its handler), one at a time; once a task has set its handler, it is cancelled with
//!   `DELETE /tasks/ID`. The time measured runs from just before the DELETE to the attempt's
//!   `ended_at`, when the queen recorded its drone's report that it was cancelled and nothing of
//!   it ran any more.
//!
//! A machine where a drone run by this bench cannot make cgroups gets a row that says so.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::{Larve, Launch};
use hive_support::procfs::{cpu_ticks_with_children, machine_busy_ticks, rss_kib};
use hive_support::wait;

use super::Bench;
use super::task_throughput::{CLIENTS, DRONES, HiveRun, SLOTS, queen_args, through};
use crate::report::{Report, median, percentile, target};
use crate::tasks::Batch;
use crate::{Result, control, progress};

pub const LABEL: &str = "containment";

/// What every throughput task runs.
const COMMAND: [&str; 1] = ["true"];

/// The targets: tasks per second with cgroups ÷ with process groups, and the p99 of a
/// cancel of a task that handles SIGTERM.
const RATIO_TARGET: f64 = 0.85;
const CANCEL_P99_MS_TARGET: f64 = 200.0;

/// Spawns of each kind in the fork-against-posix_spawn measurement, and threads spawning.
const SPAWNS: usize = 4000;
const SPAWNERS: usize = 32;

/// How long a cancelled task may take to set its handler, and to be seen ended.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(2);
const END_TIMEOUT: Duration = Duration::from_secs(30);

/// Clock ticks per second in /proc (USER_HZ), and unit conversions.
const TICKS_PER_SEC: f64 = 100.0;
const US_PER_SEC: f64 = 1_000_000.0;
const MS_PER_SEC: f64 = 1000.0;

/// The two containments compared, as the table names them, with the drones' flags.
const SIDES: [(&str, &[&str]); 2] = [
    ("cgroups", &[]),
    ("process groups", &["--containment", "process-group"]),
];

/// One hive's run: what became of its tasks, and the CPU it took.
struct Measured {
    run: HiveRun,
    /// Drones' own CPU and that of the commands they waited for, per task, in µs.
    drone_us: f64,
    /// The machine's busy time per task, in µs.
    machine_us: f64,
}

pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    if let Some(why) = no_cgroups(bench)? {
        report.row(
            LABEL,
            "skipped: a drone started by this bench makes no cgroups here",
            why,
            "-",
        );
        return Ok(());
    }
    let n = bench.plan.containment_tasks;
    let rounds = bench.plan.containment_rounds;
    let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for turn in 0..SIDES.len() {
            let side = (round + turn) % SIDES.len();
            let (name, flags) = SIDES[side];
            let label = format!("containment-{}-{round}", side_label(name));
            let m = hive_run(bench, &label, flags, n)?;
            progress(&format!(
                "{name}: {n} tasks in {:.2} s ({:.0}/s); drones {:.0} µs and machine {:.0} µs CPU per task",
                m.run.secs,
                m.run.rate(),
                m.drone_us,
                m.machine_us
            ));
            measured[side].push(m);
        }
    }
    let rates = |side: usize| median(measured[side].iter().map(|m| m.run.rate()));
    for (side, (name, _)) in SIDES.iter().enumerate() {
        let runs = &measured[side];
        report.row(
            LABEL,
            format!(
                "{name}: {n} × `true` (1 queen, {DRONES} drones × {SLOTS} slots, {CLIENTS} \
                 clients): s from the first submit to the last end / tasks per s, median of {rounds}"
            ),
            format!(
                "{:.2} s / {:.0}/s",
                median(runs.iter().map(|m| m.run.secs)),
                rates(side)
            ),
            "-",
        );
        let all_once = runs.iter().all(|m| m.run.tally.all_succeeded_once(n));
        report.row(
            LABEL,
            format!("{name}: tasks succeeded / with more than one attempt / in another state (of {n}), each run"),
            runs.iter()
                .map(|m| m.run.tally.summary(n))
                .collect::<Vec<_>>()
                .join("; "),
            target(&format!("{n} / 0 / 0"), all_once),
        );
        report.row(
            LABEL,
            format!("{name}: CPU per task, µs: the drones (with the commands they ran) / the machine, median of {rounds}"),
            format!(
                "{:.0} / {:.0}",
                median(runs.iter().map(|m| m.drone_us)),
                median(runs.iter().map(|m| m.machine_us))
            ),
            "-",
        );
    }
    let ratio = rates(0) / rates(1);
    report.row(
        LABEL,
        "tasks per s with cgroups ÷ with process groups, medians, same run",
        format!("{ratio:.2}"),
        target(&format!("≥ {RATIO_TARGET}"), ratio >= RATIO_TARGET),
    );
    let per = |side: usize, pick: fn(&Measured) -> f64| median(measured[side].iter().map(pick));
    report.row(
        LABEL,
        "containment CPU per attempt, µs: cgroups − process groups, drones (with their commands) / machine",
        format!(
            "{:.0} / {:.0}",
            per(0, |m| m.drone_us) - per(1, |m| m.drone_us),
            per(0, |m| m.machine_us) - per(1, |m| m.machine_us)
        ),
        "-",
    );
    spawn_cost(report)?;
    let cancels = bench.plan.cancels;
    for (name, flags) in SIDES {
        let ms = cancel_times(bench, name, flags, cancels)?;
        let p99 = percentile(ms.iter().copied(), 99.0);
        let goal = (name == SIDES[0].0).then(|| {
            target(
                &format!("p99 ≤ {CANCEL_P99_MS_TARGET:.0}"),
                p99 <= CANCEL_P99_MS_TARGET,
            )
        });
        report.row(
            LABEL,
            format!("{name}: cancel of a task that handles SIGTERM, ms from DELETE to cancelled: p50 / p99 / max of {cancels}"),
            format!(
                "{:.0} / {:.0} / {:.0}",
                percentile(ms.iter().copied(), 50.0),
                p99,
                ms.iter().copied().fold(0.0, f64::max)
            ),
            goal.unwrap_or_else(|| "-".into()),
        );
    }
    report.note(format!(
        "{LABEL}: throughput as in task throughput (POST /tasks {}, 8 threads of hive-bench), each \
         hive on fresh larves, the sides taking turns and swapping the first each round; drones: \
         `larve --queen-host Q --port 0 --allow-exec --slots {SLOTS} --work-dir DIR`, and \
         `--containment process-group` on that side (both run their tasks as nobody). CPU per task: \
         utime + stime + cutime + cstime of every drone (/proc/PID/stat), and the machine's busy \
         ticks (/proc/stat: user, nice, system, irq, softirq, steal), before and after, ÷ tasks. \
         Cancels: a fresh queen and one drone per side, {cancels} tasks one at a time, each \
         `python3 -c` setting a SIGTERM handler that exits 0, then writing a file; DELETE once \
         the file is there; the time is the attempt's ended_at (the queen's clock, this machine's) \
         minus the Unix time just before the DELETE",
        Batch {
            prefix: "containment-N",
            command: &COMMAND,
            retries: 0
        }
        .example()
    ));
    Ok(())
}

/// The side's name as a label's part.
fn side_label(name: &str) -> String {
    name.replace(' ', "-")
}

/// Why a drone this bench starts makes no cgroups here, if it does not: one started with
/// `--containment cgroup` exits at once, saying why.
fn no_cgroups(bench: &Bench) -> Result<Option<String>> {
    let queen = bench.queen("containment-probe-queen", &[])?;
    let args = [
        "--queen-host".to_string(),
        queen.address(),
        "--port".into(),
        "0".into(),
        "--allow-exec".into(),
        "--containment".into(),
        "cgroup".into(),
        "--work-dir".into(),
        bench
            .dir
            .join("containment-probe.work")
            .to_string_lossy()
            .into_owned(),
    ];
    match bench
        .launcher
        .start("containment-probe-drone", &args, &Launch::default())
    {
        Ok(_drone) => Ok(None),
        Err(why) => Ok(Some(why)),
    }
}

/// `n` tasks through a fresh hive whose drones have `flags`, with the CPU it took.
fn hive_run(bench: &Bench, label: &str, flags: &[&str], n: usize) -> Result<Measured> {
    let queen = bench.queen(&format!("{label}-queen"), &queen_args(n))?;
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let drones =
        bench.exec_drones_with(&[&queen], &format!("{label}-drone"), DRONES, SLOTS, &flags)?;
    let drone_ticks = || -> Result<u64> {
        drones
            .iter()
            .map(|drone| cpu_ticks_with_children(drone.pid()))
            .sum()
    };
    let (drones_before, machine_before) = (drone_ticks()?, machine_busy_ticks()?);
    let batch = Batch {
        prefix: &format!("{label}-task"),
        command: &COMMAND,
        retries: 0,
    };
    let run = through(bench, &[&queen], &queen, &batch, n)?;
    // The last reports are in; the drones reaped every command before they sent them.
    let (drones_after, machine_after) = (drone_ticks()?, machine_busy_ticks()?);
    let us_per_task = |ticks: u64| ticks as f64 / TICKS_PER_SEC * US_PER_SEC / n as f64;
    Ok(Measured {
        run,
        drone_us: us_per_task(drones_after - drones_before),
        machine_us: us_per_task(machine_after - machine_before),
    })
}

/// Spawns `true` [`SPAWNS`] times from [`SPAWNERS`] threads, through `posix_spawn` (std's way
/// without a `pre_exec` step) and through fork (with an empty one), and adds the row.
fn spawn_cost(report: &mut Report) -> Result<()> {
    let rss_mb = rss_kib(std::process::id())? as f64 / 1024.0;
    let posix_spawn = spawns(false)?;
    let fork = spawns(true)?;
    let us = |took: Duration| took.as_secs_f64() * US_PER_SEC / SPAWNS as f64;
    report.row(
        LABEL,
        format!(
            "starting a command, µs of wall time per spawn of `true` by hive-bench ({rss_mb:.0} MB \
             resident, {SPAWNERS} threads spawning): posix_spawn / fork (a pre_exec step, as an attempt has)"
        ),
        format!("{:.0} / {:.0}", us(posix_spawn), us(fork)),
        "-",
    );
    Ok(())
}

/// How long [`SPAWNS`] spawns of `true` take, each waited for, with a `pre_exec` step or not.
fn spawns(with_pre_exec: bool) -> Result<Duration> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let failures = AtomicUsize::new(0);
    thread::scope(|scope| {
        for _ in 0..SPAWNERS {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < SPAWNS {
                    let mut command = Command::new(COMMAND[0]);
                    command
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    if with_pre_exec {
                        // SAFETY: an empty step: nothing in it but a return.
                        unsafe { command.pre_exec(|| Ok(())) };
                    }
                    if !command.status().is_ok_and(|s| s.success()) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    match failures.into_inner() {
        0 => Ok(started.elapsed()),
        failed => Err(format!("{failed} spawns of {COMMAND:?} failed")),
    }
}

/// Milliseconds from each DELETE to its task's cancelled end, for `count` tasks that handle
/// SIGTERM, one at a time, on a fresh queen and one drone with `flags`.
fn cancel_times(bench: &Bench, name: &str, flags: &[&str], count: usize) -> Result<Vec<f64>> {
    let label = format!("containment-cancel-{}", side_label(name));
    let queen = bench.queen(&format!("{label}-queen"), &[])?;
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let _drones = bench.exec_drones_with(&[&queen], &format!("{label}-drone"), 1, 2, &flags)?;
    // The tasks run as nobody: they write where anyone may.
    let dir = bench.dir.join(format!("{label}.ready"));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let ready = dir.join(i.to_string());
        times.push(cancel_one(bench, &queen, &label, i, &ready)?);
    }
    Ok(times)
}

/// Starts one task that handles SIGTERM, cancels it once it is ready, and returns the
/// milliseconds from the DELETE to its end as the queen recorded it.
fn cancel_one(bench: &Bench, queen: &Larve, label: &str, i: usize, ready: &Path) -> Result<f64> {
    let script = format!(
        "import signal, sys, time\n\
         signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n\
         open('{}', 'w').close()\n\
         time.sleep(300)\n",
        ready.display()
    );
    let body = serde_json::json!({
        "id": format!("{label}-{i}"),
        "command": ["python3", "-c", script],
    })
    .to_string();
    let created = bench.tasks.create(&queen.address(), &body)?;
    wait::until(
        READY_TIMEOUT,
        READY_POLL,
        "the task to set its handler",
        || ready.exists().then_some(()),
    )?;
    let asked = control::unix_now();
    let mut task = bench.tasks.cancel(queen, &created.id)?;
    if task.state != "cancelled" {
        task = bench.tasks.task(queen, &created.id, Some(END_TIMEOUT))?;
    }
    let ended = task
        .attempts
        .first()
        .and_then(|attempt| attempt.ended_at)
        .filter(|_| task.state == "cancelled")
        .ok_or_else(|| {
            format!(
                "task {} ended {} rather than cancelled",
                task.id, task.state
            )
        })?;
    Ok((ended - asked) * MS_PER_SEC)
}
