//! The fleet through three queens on etcd (`--only fleet-on-etcd`): the simulated fleet registered
//! round-robin through three queens sharing one etcd member, at the default heartbeat. Once every
//! bad drone is gone and the queens have settled, etcd's revision is read across a window (every
//! write makes one: renewals must make none), with the leader's CPU; then the leader is killed
//! (`kill -9`) and the new leader must keep every live drone.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use hive::config::HeartbeatConfig;
use hive::store::etcd::gateway::Gateway;
use hive_support::procfs::Sampler;
use hive_support::wait;

use super::{
    CLIENTS, DETECTION_SLACK_SECS, answering_lost, describe, register_all, steady, time_removals,
};
use crate::fleet::Fleet;
use crate::report::{self, Report, mb, target};
use crate::scenarios::Bench;
use crate::scenarios::group::{AGREE_TIMEOUT, LEADER_TTL, QUEENS, Queens};
use crate::{Result, progress};

pub const LABEL: &str = "fleet on etcd";

/// The queens' key prefix (`Queens` puts their keys under `/{PREFIX}/`).
const PREFIX: &str = "fleet";

/// The target: etcd writes per second in steady state.
const WRITES_PER_SEC_TARGET: f64 = 10.0;

/// Intervals after the last registration before steady state.
const SETTLE_INTERVALS: u32 = 2;

/// How long every queen may take to list every answering drone after the last registration, and
/// how often they are asked.
const LISTED_TIMEOUT: Duration = Duration::from_secs(60);
const LISTED_POLL: Duration = Duration::from_millis(500);

/// Limit for the bench's own calls to etcd.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// Window over which the queens' memory and threads are sampled at the end.
const SAMPLE_WINDOW: Duration = Duration::from_millis(500);

/// Runs the scenario and adds its rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let size = bench.plan.fleet;
    let etcd = bench.etcd("fleet-etcd")?;
    let mut queens = Queens::start(bench, &etcd, PREFIX)?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    let config = HeartbeatConfig::default();
    // After etcd and the queens: a refusing drone's port is closed, and one started after could
    // get it.
    let mut fleet = Fleet::start(size)?;
    let addresses: Vec<String> = queens.live().iter().map(|q| q.address()).collect();
    progress(&format!(
        "registering {} drones through {QUEENS} queens from {CLIENTS} threads",
        size.total()
    ));
    let started = Instant::now();
    fleet.join(&addresses, CLIENTS)?;
    register_all(&bench.control, &queens.refs(), &fleet.good)?;
    let bad: Vec<String> = fleet
        .refusing
        .iter()
        .chain(&fleet.silent)
        .cloned()
        .collect();
    let registered = register_all(&bench.control, &queens.refs(), &bad)?;
    let registering = started.elapsed();
    progress(&format!(
        "registered in {:.1} s; timing the bad drones' removals",
        registering.as_secs_f64()
    ));
    let leader_queen = &queens.live()[leader];
    let removals = time_removals(
        leader_queen,
        &bad,
        &registered,
        config.detection_bound() * 2 + registering,
    )?;
    let answering: Vec<String> = fleet.renewing.iter().chain(&fleet.good).cloned().collect();
    wait::until(
        LISTED_TIMEOUT,
        LISTED_POLL,
        "every queen to list every answering drone",
        || {
            queens
                .live()
                .iter()
                .all(|queen| bench.control.lists_all(queen, &answering))
                .then_some(())
        },
    )?;
    let settled = started + registering + config.interval * SETTLE_INTERVALS;
    thread::sleep(settled.saturating_duration_since(Instant::now()));

    let gateway = Gateway::new(
        etcd.urls()
            .split(',')
            .map(|url| url.trim_start_matches("http://").to_string())
            .collect(),
        None,
        ETCD_TIMEOUT,
    );
    let counter = format!("/{PREFIX}/next_id");
    let revision = || -> Result<i64> {
        gateway
            .range(counter.as_bytes(), None)
            .map(|(_, revision)| revision)
            .map_err(|e| format!("etcd: {e}"))
    };
    let window = bench.plan.fleet_steady;
    progress(&format!(
        "steady state: etcd's revision and the leader's CPU for {} s",
        window.as_secs()
    ));
    let before = revision()?;
    let still = steady(bench, leader_queen, &fleet, window)?;
    let after = revision()?;
    let writes = (after - before) as f64 / still.seconds;

    progress("kill -9 of the leader");
    let renewals_before = fleet.renewals.registered_again.load(Ordering::Relaxed);
    let failover_revision = revision()?;
    let mut killed = queens.take(leader);
    let killed_at = Instant::now();
    killed.kill();
    let new_leader = queens.agreed_leader(AGREE_TIMEOUT + LEADER_TTL)?;
    let took = killed_at.elapsed().as_secs_f64();
    // Long enough for every lease to be late with the new leader and every other drone to be
    // probed by her, and for any probe of those to end in a removal.
    let watch = config.interval + config.detection_bound();
    progress(&format!(
        "new leader after {took:.1} s; watching the fleet for {} s",
        watch.as_secs()
    ));
    thread::sleep(watch);
    let new_queen = &queens.live()[new_leader];
    let listed = bench.control.listed(new_queen)?;
    let lost = answering_lost(&fleet, &listed);
    let metrics = bench.tasks.metrics(new_queen)?;
    let removed = metrics.get("hive_drones_removed_total");
    let late = metrics.get("hive_leases_late_total");
    let registered_again =
        fleet.renewals.registered_again.load(Ordering::Relaxed) - renewals_before;
    let failover_writes = revision()? - failover_revision;
    let samplers = [
        ("new leader", Sampler::start(new_queen.pid())),
        (
            "follower",
            Sampler::start(queens.follower(new_leader).pid()),
        ),
    ];
    thread::sleep(SAMPLE_WINDOW);

    report.row(
        LABEL,
        "fleet: renewing leases / answering probes only / refusing / silent",
        describe(&size),
        "-",
    );
    report.row(
        LABEL,
        format!("registering them all round-robin through {QUEENS} queens, {CLIENTS} threads: s"),
        format!("{:.1}", registering.as_secs_f64()),
        "-",
    );
    let bound = config.detection_bound().as_secs_f64();
    let goal = bound + DETECTION_SLACK_SECS;
    let max = removals.last().copied().unwrap_or(f64::INFINITY);
    report.row(
        LABEL,
        "bad drones removed by the leader: how many / s from registration to removal, median / max",
        format!(
            "{} / {:.1} / {max:.1}",
            removals.len(),
            report::median(removals.iter().copied())
        ),
        target(
            &format!("{} / max ≤ {goal:.1}", bad.len()),
            removals.len() == bad.len() && max <= goal,
        ),
    );
    report.row(
        LABEL,
        format!(
            "steady state, {:.0} s: etcd writes per s (revisions) / leader CPU cores / renewals taken per s",
            still.seconds
        ),
        format!("{writes:.2} / {:.3} / {:.0}", still.cores, still.renewals),
        target(
            &format!("writes ≤ {WRITES_PER_SEC_TARGET}"),
            writes <= WRITES_PER_SEC_TARGET,
        ),
    );
    report.row(
        LABEL,
        format!(
            "kill -9 of the leader: s until a new one / live drones she removed in {} s / answering drones not listed",
            watch.as_secs()
        ),
        format!("{took:.1} / {removed:.0} / {lost}"),
        target("- / 0 / 0", removed == 0.0 && lost == 0),
    );
    report.row(
        LABEL,
        "after the failover: leases she found late / drones that registered again / etcd writes",
        format!("{late:.0} / {registered_again} / {failover_writes}"),
        "-",
    );
    for (role, sampler) in samplers {
        let peak = sampler.finish();
        report.row(
            LABEL,
            format!("{role}: RSS MB / threads"),
            format!("{} / {}", mb(peak.rss_kb), peak.max_threads),
            "-",
        );
    }
    report.note(format!(
        "{LABEL}: `{}`, the default heartbeat, one etcd member; renewing drones are told all \
         three queens and renew with the leader (a follower answers 421 naming her). Writes are \
         the growth of etcd's revision (one per write) over the steady window, read with a range \
         of one key before and after. After the kill, the new leader is watched for an interval \
         plus the detection bound; \"leases she found late\" counts leases that were not renewed \
         with her within her first interval (each then probed, not removed)",
        queens.command()
    ));
    drop(queens);
    drop(fleet);
    Ok(())
}
