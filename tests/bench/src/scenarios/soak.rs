//! No false removals: submit load for a minute against 4 healthy drones under the fast
//! heartbeat; no drone may be removed, and every drone's `last_seen` should advance every interval.

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use super::Bench;
use crate::report::{Report, ms, target};
use crate::wrk::{Call, Load};
use crate::{Result, control, heartbeat, progress};

pub const LABEL: &str = "no false removals";

/// Healthy drones under the load.
const DRONES: usize = 4;

/// wrk connections submitting: the 32.
const CONNECTIONS: usize = 32;

/// How often `/drones` is read during the load.
const SOAK_POLL: Duration = Duration::from_millis(50);

/// Extra time the load may run past its length before the polling stops waiting for it.
const LOAD_GRACE: Duration = Duration::from_secs(10);

/// A gap between two `last_seen` values longer than this many intervals is a late sign of life
/// (a renewal or a probe that came late).
const LATE_GAP_INTERVALS: f64 = 2.0;

/// Runs the load while polling `/drones`, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let heartbeat = heartbeat::fast();
    let queen = bench.queen("soak-queen", &heartbeat::args(&heartbeat))?;
    let _drones = bench.drones(&queen, "soak-drone", DRONES)?;
    let before = bench.control.list(&queen)?;
    let mut seen: HashMap<String, Vec<f64>> = before
        .iter()
        .map(|d| (d.name.clone(), vec![d.last_seen]))
        .collect();
    let length = bench.plan.soak;
    let load = Load::new(Call::Submit, CONNECTIONS, length);
    progress(&format!(
        "soak: {CONNECTIONS} connections submitting for {} s while /drones is polled every {} ms",
        length.as_secs(),
        SOAK_POLL.as_millis()
    ));
    let mut polls_failed = 0;
    let mut max_failures = 0;
    let submitted = thread::scope(|scope| {
        let loader = scope.spawn(|| bench.wrk.run("soak-submit", load, &queen));
        let deadline = Instant::now() + length + LOAD_GRACE;
        while !loader.is_finished() && Instant::now() < deadline {
            match bench.control.list(&queen) {
                Ok(list) => {
                    for drone in list {
                        max_failures = max_failures.max(drone.failures);
                        let values = seen.entry(drone.name).or_default();
                        if values.last() != Some(&drone.last_seen) {
                            values.push(drone.last_seen);
                        }
                    }
                }
                Err(_) => polls_failed += 1,
            }
            thread::sleep(SOAK_POLL);
        }
        loader
            .join()
            .unwrap_or_else(|_| Err("the load thread panicked".into()))
    })?;
    let now = control::unix_now();
    let after: HashSet<String> = bench
        .control
        .list(&queen)?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let missing = before.iter().filter(|d| !after.contains(&d.name)).count();
    let log = queen.stderr();
    let removals = heartbeat::removals(&log);
    let task_timeouts = heartbeat::tasks_not_taken(&log);

    let late_gap = LATE_GAP_INTERVALS * heartbeat.interval.as_secs_f64();
    let mut late = 0;
    let mut max_gap: f64 = 0.0;
    for values in seen.values() {
        // The time since the last advance counts too: signs of life that stopped altogether are late.
        let ends = values.iter().copied().chain([now]);
        for (a, b) in values.iter().zip(ends.skip(1)) {
            let gap = b - a;
            max_gap = max_gap.max(gap);
            if gap > late_gap {
                late += 1;
            }
        }
    }

    report.row(
        LABEL,
        format!("healthy drones missing from /drones at the end (of {DRONES})"),
        missing.to_string(),
        target("0", missing == 0),
    );
    report.row(
        LABEL,
        "removals in the queen's log",
        removals.to_string(),
        target("0", removals == 0),
    );
    report.row(
        LABEL,
        format!("last_seen gaps > 2 × interval ({late_gap} s): late signs of life, all drones"),
        late.to_string(),
        target("0 expected", late == 0),
    );
    report.row(
        LABEL,
        "max last_seen gap s",
        format!("{max_gap:.2}"),
        target(&format!("≤ {late_gap} expected"), max_gap <= late_gap),
    );
    report.row(
        LABEL,
        "highest failures seen in /drones (failed probes and tasks since last seen)",
        max_failures.to_string(),
        "-",
    );
    report.row(
        LABEL,
        "tasks a drone did not take in time (queen log: not taken by)",
        task_timeouts.to_string(),
        target("0 expected", task_timeouts == 0),
    );
    report.row(
        LABEL,
        format!(
            "submit req/s during the soak ({CONNECTIONS} connections, {} s)",
            length.as_secs()
        ),
        format!("{:.0}", submitted.per_sec()),
        "-",
    );
    report.row(
        LABEL,
        "submit p99 ms / non-2xx / wrk timeouts / socket errors during the soak",
        format!(
            "{} / {} / {} / {}",
            ms(submitted.p99_ms()),
            submitted.non_2xx(),
            submitted.timeouts(),
            submitted.socket_errors()
        ),
        "-",
    );
    report.note(format!(
        "{LABEL}: heartbeat every {} s, {} tries of {} s, {} s apart; /drones polled every {} ms \
         ({polls_failed} polls failed); a gap is between successive distinct last_seen values of one \
         drone (plus the time from its last one to the end); the load is `{}`",
        heartbeat.interval.as_secs_f64(),
        heartbeat.attempts,
        heartbeat.timeout.as_secs_f64(),
        heartbeat.retry_delay.as_secs_f64(),
        SOAK_POLL.as_millis(),
        load.command()
    ));
    Ok(())
}
