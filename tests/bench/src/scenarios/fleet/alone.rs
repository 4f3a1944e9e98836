//! The fleet on one queen (`--only fleet-on-one-queen`): a queen at the default heartbeat holding the whole
//! simulated fleet, against a second queen started alike that holds only a few drones (the "no
//! fleet" side). Every bad drone is timed from its registration to its removal; then, in steady
//! state, the queen's CPU with no API load; then `GET /tasks?limit=1` and `/submit_task` on both
//! queens in alternating rounds; and her threads and memory over the whole scenario.

use std::time::{Duration, Instant};

use hive::config::HeartbeatConfig;
use hive_support::procfs::Sampler;

use super::{
    CLIENTS, DETECTION_SLACK_SECS, answering_lost, describe, register_all, steady, time_removals,
};
use crate::fleet::{Fleet, RENEW_THREADS};
use crate::report::{self, Report, mb, ms, target};
use crate::scenarios::Bench;
use crate::wrk::{Call, Load, Run};
use crate::{Result, heartbeat, progress};

pub const LABEL: &str = "fleet on one queen";

/// Drones registered on both queens, so the queen without the fleet has drones to hand tasks to.
const BASE_DRONES: usize = 10;

/// wrk connections of every load, and its timeout (above the queen's 2 s task timeout).
const CONNECTIONS: usize = 8;
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The targets.
const P99_RATIO_TARGET: f64 = 2.0;
const RATE_RATIO_TARGET: f64 = 0.5;
const CPU_CORES_TARGET: f64 = 0.1;
const RSS_MB_TARGET: f64 = 128.0;
const THREADS_TARGET: u64 = 200;

/// Intervals after the last registration before steady state: the first probes of the drones
/// that renew nothing come an interval after their registration, then on their slots.
const SETTLE_INTERVALS: u32 = 2;

/// Runs the scenario and adds its rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let size = bench.plan.fleet;
    progress(&format!(
        "fleet: {} renewing, {} answering probes only, {} refusing, {} silent",
        size.renewing, size.good, size.refusing, size.silent
    ));
    let config = HeartbeatConfig::default();
    let args = heartbeat::args(&config);
    // The queens first: a refusing drone's port is closed, and a queen started after could get it.
    let queen = bench.queen("fleet-queen", &args)?;
    let calm = bench.queen("fleet-calm", &args)?;
    let mut fleet = Fleet::start(size)?;
    let sampler = Sampler::start(queen.pid());
    let base: Vec<String> = fleet.good.iter().take(BASE_DRONES).cloned().collect();
    register_all(&bench.control, &[&calm], &base)?;
    register_all(&bench.control, &[&queen], &base)?;

    progress(&format!(
        "registering {} drones from {CLIENTS} threads",
        size.total() - base.len()
    ));
    let started = Instant::now();
    fleet.join(&[queen.address()], CLIENTS)?;
    register_all(&bench.control, &[&queen], &fleet.good[base.len()..])?;
    let bad: Vec<String> = fleet
        .refusing
        .iter()
        .chain(&fleet.silent)
        .cloned()
        .collect();
    let registered = register_all(&bench.control, &[&queen], &bad)?;
    let registering = started.elapsed();
    progress(&format!(
        "registered in {:.1} s; timing the bad drones' removals",
        registering.as_secs_f64()
    ));
    let bound = config.detection_bound().as_secs_f64();
    let removals = time_removals(
        &queen,
        &bad,
        &registered,
        config.detection_bound() * 2 + registering,
    )?;

    let settled = started + registering + config.interval * SETTLE_INTERVALS;
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    let window = bench.plan.fleet_steady;
    progress(&format!(
        "steady state: the queen with no API load for {} s",
        window.as_secs()
    ));
    let still = steady(bench, &queen, &fleet, window)?;

    let rounds = bench.plan.fleet_rounds;
    let length = bench.plan.fleet_load;
    let mut loads: Vec<(Call, [Vec<Run>; 2])> = vec![
        (Call::LatestTask, [Vec::new(), Vec::new()]),
        (Call::Submit, [Vec::new(), Vec::new()]),
    ];
    for round in 0..rounds {
        for (call, runs) in &mut loads {
            for (side, larve) in [(0, &queen), (1, &calm)] {
                let load = Load {
                    timeout: Some(LOAD_TIMEOUT),
                    ..Load::new(*call, CONNECTIONS, length)
                };
                // A file name: wrk's output is kept under it.
                let name = format!(
                    "fleet-{}-{}-{round}",
                    if matches!(call, Call::Submit) {
                        "submit"
                    } else {
                        "tasks"
                    },
                    if side == 0 { "fleet" } else { "calm" }
                );
                runs[side].push(bench.wrk.run(&name, load, larve)?);
            }
        }
    }

    let listed = bench.control.listed(&queen)?;
    let lost = answering_lost(&fleet, &listed);
    let bad_left = bad.iter().filter(|a| listed.contains(*a)).count();
    let removed_total = bench
        .tasks
        .metrics(&queen)?
        .get("hive_drones_removed_total");
    let peak = sampler.finish();

    report.row(
        LABEL,
        "fleet: renewing leases / answering probes only / refusing / silent",
        describe(&size),
        "-",
    );
    report.row(
        LABEL,
        format!("registering them all, {CLIENTS} threads: s"),
        format!("{:.1}", registering.as_secs_f64()),
        "-",
    );
    let goal = bound + DETECTION_SLACK_SECS;
    let (median, max) = (
        report::median(removals.iter().copied()),
        removals.last().copied().unwrap_or(f64::INFINITY),
    );
    report.row(
        LABEL,
        format!(
            "bad drones removed: how many / s from registration to removal, median / max ({})",
            heartbeat::bound_formula(&config)
        ),
        format!("{} / {median:.1} / {max:.1}", removals.len()),
        target(
            &format!(
                "{} / max ≤ {goal:.1} (bound {bound:.0} + {DETECTION_SLACK_SECS})",
                bad.len()
            ),
            removals.len() == bad.len() && bad_left == 0 && max <= goal,
        ),
    );
    report.row(
        LABEL,
        "answering drones removed (at the end) / removals counted by the queen",
        format!("{lost} / {removed_total:.0}"),
        target(
            &format!("0 / {}", bad.len()),
            lost == 0 && removed_total as usize == bad.len(),
        ),
    );
    report.row(
        LABEL,
        format!(
            "steady state, no API load, {:.0} s: queen CPU, cores",
            still.seconds
        ),
        format!("{:.3}", still.cores),
        target(
            &format!("≤ {CPU_CORES_TARGET}"),
            still.cores <= CPU_CORES_TARGET,
        ),
    );
    report.row(
        LABEL,
        "steady state, per s: renewals taken / leases late / probe tries / failed tries / removals",
        format!(
            "{:.0} / {:.2} / {:.0} / {:.2} / {:.2}",
            still.renewals, still.late, still.probes, still.failed, still.removed
        ),
        "-",
    );
    report.row(
        LABEL,
        "steady state, per s, as the fleet counted: probes of drones that renew / of the others",
        format!(
            "{:.2} / {:.0}",
            still.probes_of_renewing, still.probes_of_probed
        ),
        "-",
    );
    for (call, runs) in &loads {
        let [with, without] = runs;
        let what = call.name();
        let p99 = |runs: &[Run]| report::median(runs.iter().map(Run::p99_ms));
        let rate = |runs: &[Run]| report::median(runs.iter().map(Run::per_sec));
        let errors: u64 = with.iter().chain(without).map(Run::errors).sum();
        report.row(
            LABEL,
            format!(
                "{what} c{CONNECTIONS}, median of {}: req/s / p99 ms with the fleet, then without",
                report::runs(with.len())
            ),
            format!(
                "{:.0} / {} ; {:.0} / {}",
                rate(with),
                ms(p99(with)),
                rate(without),
                ms(p99(without))
            ),
            target("0 errors", errors == 0),
        );
        let p99_ratio = p99(with) / p99(without);
        let rate_ratio = rate(with) / rate(without);
        report.row(
            LABEL,
            format!("{what}: p99 with / without ; rate with / without"),
            format!("{p99_ratio:.2}× ; {rate_ratio:.2}"),
            target(
                &format!("≤ {P99_RATIO_TARGET}× ; ≥ {RATE_RATIO_TARGET}"),
                p99_ratio <= P99_RATIO_TARGET && rate_ratio >= RATE_RATIO_TARGET,
            ),
        );
    }
    report.row(
        LABEL,
        "queen over the whole scenario: peak threads / peak RSS (VmHWM) MB",
        format!("{} / {}", peak.max_threads, mb(peak.hwm_kb)),
        target(
            &format!("≤ {THREADS_TARGET} / ≤ {RSS_MB_TARGET:.0}"),
            peak.max_threads <= THREADS_TARGET && report::mb_of(peak.hwm_kb) <= RSS_MB_TARGET,
        ),
    );
    let renewals = &fleet.renewals;
    let count = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    report.row(
        LABEL,
        "the fleet's leases over the scenario: renewed / failed / registered again / redirected / started a second late / calls of a second or more",
        format!(
            "{} / {} / {} / {} / {} / {}",
            count(&renewals.renewed),
            count(&renewals.failed),
            count(&renewals.registered_again),
            count(&renewals.redirected),
            count(&renewals.started_late),
            count(&renewals.slow_calls)
        ),
        target(
            "- / 0 / 0 / 0 / - / -",
            count(&renewals.failed) + count(&renewals.registered_again) == 0,
        ),
    );
    report.note(format!(
        "{LABEL}: one hive-bench process serves the whole fleet on one epoll (renewing drones \
         register with \"renews\": true and renew every interval × [0.7, 0.9) from {} threads, as \
         Hive drones do; the others are registered as the tutorial's drone registers, by \
         address). Both queens run `larve --queen --port 0 {}` (the default heartbeat); the \
         second holds only {BASE_DRONES} of the answering drones. A bad drone's time runs from \
         its registration's answer to the time of the queen's log line that removes it. \
         Steady state starts {SETTLE_INTERVALS} intervals after the last registration; CPU is \
         /proc/PID/stat's user + system over the window. Loads are `{}` and the same on \
         /submit_task, each queen in turn, {} round(s) of {} s",
        RENEW_THREADS,
        args.join(" "),
        Load::new(Call::LatestTask, CONNECTIONS, length).command(),
        rounds,
        length.as_secs()
    ));
    drop(queen);
    drop(calm);
    drop(fleet);
    Ok(())
}
