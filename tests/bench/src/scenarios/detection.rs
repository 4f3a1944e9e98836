//! Failure detection: seconds from kill -9 (and from SIGSTOP) of a drone until the
//! queen no longer lists it, under a fast heartbeat. The two series run side by side, each with its
//! own queen, so one queen's long probes of a frozen drone cannot delay the other's verdict on a
//! killed one.

use std::thread;
use std::time::{Duration, Instant};

use hive::config::HeartbeatConfig;
use hive_support::larve::Larve;
use hive_support::wait;

use super::Bench;
use crate::report::{self, Report, target};
use crate::{Result, heartbeat, progress};

pub const LABEL: &str = "failure detection";

/// Drones that are never harmed, so each queen always has a fleet to probe.
const BYSTANDERS: usize = 3;

/// Slack the issue allows on top of the detection bound.
const SLACK_SECS: f64 = 0.5;

/// How long past the detection bound a drone may stay listed before the scenario gives up on it.
const GIVE_UP: Duration = Duration::from_secs(10);

/// How often `/drones` is read while a drone is being detected: the 10 ms.
const DETECTION_POLL: Duration = Duration::from_millis(10);

/// How a drone is failed.
#[derive(Clone, Copy)]
enum Strike {
    /// SIGKILL: the port closes, so probes are refused at once.
    Kill,
    /// SIGSTOP: the port stays open, so probes connect and then time out.
    Freeze,
}

/// Measures both series side by side, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let heartbeat = heartbeat::fast();
    let repeats = bench.plan.detection_repeats;
    let bound = heartbeat.detection_bound().as_secs_f64();
    let (kills, freezes) = thread::scope(|scope| {
        let kills = scope.spawn(|| series(bench, &heartbeat, Strike::Kill));
        let freezes = series(bench, &heartbeat, Strike::Freeze);
        let kills = kills
            .join()
            .unwrap_or_else(|_| Err("the kill -9 series panicked".into()));
        (kills, freezes)
    });
    let (mut killed, killed_lost) = kills?;
    let (mut frozen, frozen_lost) = freezes?;
    let bystanders_lost = killed_lost + frozen_lost;

    let goal = bound + SLACK_SECS;
    let goal_text = format!("≤ {goal:.1} s (bound + {SLACK_SECS} s)");
    report.row(
        LABEL,
        format!("bound: {}", heartbeat::bound_formula(&heartbeat)),
        format!("{bound:.1} s"),
        "-",
    );
    for (what, samples) in [("kill -9", &mut killed), ("SIGSTOP", &mut frozen)] {
        samples.sort_by(f64::total_cmp);
        let median = report::median(samples.iter().copied());
        let max = samples[samples.len() - 1];
        report.row(
            LABEL,
            format!("{what}: s until gone from /drones, median of {repeats}"),
            format!("{median:.2} s"),
            target(&goal_text, median <= goal),
        );
        report.row(
            LABEL,
            format!("{what}: s until gone, max of {repeats}"),
            format!("{max:.2} s"),
            target(&goal_text, max <= goal),
        );
        let all: Vec<String> = samples.iter().map(|s| format!("{s:.2}")).collect();
        report.note(format!(
            "{LABEL}: {what} samples (s, sorted): {}",
            all.join(", ")
        ));
    }
    report.row(
        LABEL,
        format!(
            "healthy bystander drones removed (of {} on the two queens)",
            2 * BYSTANDERS
        ),
        bystanders_lost.to_string(),
        target("0", bystanders_lost == 0),
    );
    Ok(())
}

/// One series: a queen, bystanders, and `repeats` victims struck one after
/// another. Returns the seconds each took to disappear, and how many bystanders were lost.
fn series(bench: &Bench, heartbeat: &HeartbeatConfig, strike: Strike) -> Result<(Vec<f64>, usize)> {
    let label = match strike {
        Strike::Kill => "detection-kill",
        Strike::Freeze => "detection-stop",
    };
    let queen = bench.queen(&format!("{label}-queen"), &heartbeat::args(heartbeat))?;
    let bystanders = bench.drones(&queen, &format!("{label}-drone"), BYSTANDERS)?;
    let victims = bench.drones(
        &queen,
        &format!("{label}-victim"),
        bench.plan.detection_repeats,
    )?;
    let give_up = heartbeat.detection_bound() + GIVE_UP;
    let interval_ms = heartbeat.interval.as_millis() as u64;
    let mut samples = Vec::new();
    for mut victim in victims {
        // Strike at a random point of the heartbeat cycle, as a real failure would.
        thread::sleep(Duration::from_millis(fastrand::u64(0..interval_ms)));
        let address = victim.address();
        match strike {
            Strike::Kill => victim.kill(),
            Strike::Freeze => victim.freeze()?,
        }
        let seconds = time_until_gone(bench, &queen, &address, give_up)?;
        progress(&format!("{}: gone after {seconds:.2} s", victim.label));
        samples.push(seconds);
        // Dropping the victim SIGKILLs it: a stopped process dies too.
    }
    let listed = bench.control.listed(&queen)?;
    let lost = bystanders
        .iter()
        .filter(|d| !listed.contains(&d.address()))
        .count();
    Ok((samples, lost))
}

/// Seconds from now until `address` is no longer in the queen's `/drones`.
fn time_until_gone(bench: &Bench, queen: &Larve, address: &str, give_up: Duration) -> Result<f64> {
    let started = Instant::now();
    wait::until(
        give_up,
        DETECTION_POLL,
        &format!("the queen to remove {address}"),
        || {
            let list = bench.control.list(queen).ok()?;
            (!list.iter().any(|d| d.address == address)).then(|| started.elapsed().as_secs_f64())
        },
    )
}
