//! Scenario 4, heartbeat scale: a queen heartbeating a simulated fleet with refusing and
//! never-answering drones: the first full round's length, her threads and memory, and submit p99
//! during the round against a second queen that never runs a round.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hive::config::HeartbeatConfig;
use hive::queen::heartbeat::MAX_PROBE_THREADS;
use hive_support::procfs::{PROBE_COUNT_EVERY_SAMPLES, SAMPLE_PERIOD, Sampler, sample_for};
use hive_support::wait;

use super::{Bench, footprint};
use crate::fleet::Fleet;
use crate::report::{self, Report, mb, ms, target};
use crate::wrk::{Call, Load};
use crate::{Result, heartbeat, progress};

pub const LABEL: &str = "4. heartbeat scale";

/// wrk connections of every submit load.
const CONNECTIONS: usize = 8;

/// wrk's timeout for these loads: above the queen's 2 s task timeout, so a submit held by a
/// never-answering drone is counted in the latencies rather than as a wrk timeout.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The queen's heartbeat interval; attempts, timeout and retry delay are the larve's defaults.
const INTERVAL_SECS: f64 = 1.0;

/// An interval so long that a queen started with it never runs a round over drones registered later.
const NO_ROUNDS_INTERVAL_SECS: f64 = 3600.0;

/// Slack on top of one drone's worst round.
const ROUND_SLACK_SECS: f64 = 1.0;

/// The targets.
const DURING_OVER_WITHOUT_TARGET: f64 = 2.0;
pub const QUEEN_RSS_MB_TARGET: f64 = 64.0;

/// How long to wait for a round over the bad drones to start, and past the bound for it to end,
/// and how often `/drones` is read meanwhile.
const ROUND_START_TIMEOUT: Duration = Duration::from_secs(15);
const ROUND_END_GRACE: Duration = Duration::from_secs(15);
const ROUND_POLL: Duration = Duration::from_millis(20);

/// Window over which the queen is sampled idle: longer than her 1 s interval plus a round, so it
/// holds at least one round.
const IDLE_ROUNDS_WINDOW: Duration = Duration::from_millis(1200);

/// Milliseconds per second.
const MS_PER_SEC: f64 = 1000.0;

/// Runs the loads around the fleet's first full round, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let size = bench.plan.fleet;
    progress(&format!(
        "fleet: {} answering, {} refusing, {} never answering",
        size.good, size.refusing, size.silent
    ));
    let fleet = Fleet::start(size)?;
    let load = Load {
        timeout: Some(LOAD_TIMEOUT),
        ..Load::new(Call::Submit, CONNECTIONS, bench.plan.scale_load)
    };

    // Without rounds: a queen whose only round ran before any drone registered.
    let calm = bench.queen(
        "s4-queen-without",
        &[
            "--heartbeat-interval".into(),
            NO_ROUNDS_INTERVAL_SECS.to_string(),
            "--log-level".into(),
            "debug".into(),
        ],
    )?;
    for address in &fleet.good {
        bench.control.register(&calm, address)?;
    }
    progress(&format!(
        "submit without rounds: {CONNECTIONS} connections for {} s",
        load.length.as_secs()
    ));
    let without = bench.wrk.run("s4-submit-without", load, &calm)?;
    drop(calm);

    // During rounds: the queen under test, sampled from start to end.
    let heartbeat = HeartbeatConfig {
        interval: Duration::from_secs_f64(INTERVAL_SECS),
        ..HeartbeatConfig::default()
    };
    let mut args = heartbeat::args(&heartbeat);
    args.extend(["--log-level".to_string(), "debug".to_string()]);
    let queen = bench.queen("s4-queen", &args)?;
    let sampler = Sampler::start(queen.pid());
    // All at once, right after start: her first round ran over an empty registry, so the next,
    // one interval later, holds every drone registered by then. The answering drones go first, so
    // if registering takes longer than an interval, that round holds only them.
    for address in fleet
        .good
        .iter()
        .chain(&fleet.refusing)
        .chain(&fleet.silent)
    {
        bench.control.register(&queen, address)?;
    }
    let refusing: HashSet<&String> = fleet.refusing.iter().collect();
    let bad: HashSet<&String> = refusing.iter().copied().chain(&fleet.silent).collect();
    let round_started = wait::until(
        ROUND_START_TIMEOUT,
        ROUND_POLL,
        "a round over the bad drones",
        || {
            let list = bench.control.list(&queen).ok()?;
            list.iter()
                .any(|d| refusing.contains(&d.address) && d.failures > 0)
                .then(Instant::now)
        },
    )?;
    let log_at_start = queen.stderr().len();
    progress(&format!(
        "submit during the first full round: {CONNECTIONS} connections for {} s",
        load.length.as_secs()
    ));
    let during = bench.wrk.run("s4-submit-during", load, &queen)?;
    let round_bound = heartbeat.detection_bound() - heartbeat.interval;
    wait::until(
        round_bound + ROUND_END_GRACE,
        ROUND_POLL,
        "the bad drones' removal",
        || {
            let list = bench.control.list(&queen).ok()?;
            (!list.iter().any(|d| bad.contains(&d.address))).then_some(())
        },
    )?;
    progress(&format!(
        "submit during rounds over the answering drones: {CONNECTIONS} connections for {} s",
        load.length.as_secs()
    ));
    let during_good = bench.wrk.run("s4-submit-during-good", load, &queen)?;
    let at_scale = sampler.finish();
    let idle = sample_for(queen.pid(), IDLE_ROUNDS_WINDOW);

    let log = queen.stderr();
    let rounds = heartbeat::rounds(&log);
    let (full_n, full_ms) = rounds
        .iter()
        .rev()
        .max_by_key(|(n, _)| *n)
        .copied()
        .ok_or("the queen logged no heartbeat round")?;
    let listed = bench.control.listed(&queen)?;
    let good_lost = fleet.good.iter().filter(|a| !listed.contains(*a)).count();
    let removals = heartbeat::removals(&log);
    let tasks_refused = heartbeat::tasks_not_taken(&log);
    // The round that was under way when the load started is the first to end after it.
    let overlap = heartbeat::rounds(log.get(log_at_start..).unwrap_or_default())
        .first()
        .map(|&(_, ms)| {
            let round_end = round_started + Duration::from_millis(ms);
            let end = round_end.min(during.started + during.elapsed());
            let start = round_started.max(during.started);
            end.saturating_duration_since(start).as_secs_f64()
        });

    let round_goal = round_bound.as_secs_f64() + ROUND_SLACK_SECS;
    let full_secs = full_ms as f64 / MS_PER_SEC;
    report.row(
        LABEL,
        "fleet: answering / refusing / never answering",
        format!("{} / {} / {}", size.good, size.refusing, size.silent),
        "-",
    );
    report.row(
        LABEL,
        format!("first full round ({full_n} drones) s"),
        format!("{full_secs:.2}"),
        target(
            &format!(
                "≤ {round_goal:.1} ({} × ({} + {}) + {ROUND_SLACK_SECS})",
                heartbeat.attempts,
                heartbeat.timeout.as_secs_f64(),
                heartbeat.retry_delay.as_secs_f64()
            ),
            full_secs <= round_goal,
        ),
    );
    report.row(
        LABEL,
        "removals logged (bad drones are expected to go)",
        removals.to_string(),
        target(
            &format!("{} (refusing + never answering)", bad.len()),
            removals == bad.len(),
        ),
    );
    report.row(
        LABEL,
        "answering drones removed",
        good_lost.to_string(),
        target("0", good_lost == 0),
    );
    report.row(
        LABEL,
        "queen peak threads",
        at_scale.max_threads.to_string(),
        "-",
    );
    report.row(
        LABEL,
        "queen peak threads named probe (workers + threads they spawn)",
        at_scale.max_probe_threads.to_string(),
        target(
            &format!("≤ {MAX_PROBE_THREADS} (MAX_PROBE_THREADS)"),
            at_scale.max_probe_threads <= MAX_PROBE_THREADS,
        ),
    );
    let overlap_text = overlap.map_or("unknown".to_string(), |s| format!("{s:.1}"));
    let without_p99 = without.p99_ms();
    let loads = [
        (
            format!(
                "during the first full round ({overlap_text} s inside it; bad drones still take tasks)"
            ),
            &during,
        ),
        (
            format!("during rounds over the {} answering drones only", size.good),
            &during_good,
        ),
    ];
    for (when, run) in &loads {
        report.row(
            LABEL,
            format!("submit p99 ms {when}"),
            ms(run.p99_ms()),
            "-",
        );
    }
    report.row(
        LABEL,
        format!(
            "submit p99 ms without rounds (second queen, same {} drones)",
            size.good
        ),
        ms(without_p99),
        "-",
    );
    for (when, run) in &loads {
        let ratio = run.p99_ms() / without_p99;
        report.row(
            LABEL,
            format!("submit p99 {when} / without"),
            format!("{ratio:.2}×"),
            target(
                &format!("≤ {DURING_OVER_WITHOUT_TARGET}×"),
                ratio <= DURING_OVER_WITHOUT_TARGET,
            ),
        );
    }
    report.row(
        LABEL,
        "submit req/s: first round / answering-only rounds / without",
        format!(
            "{:.0} / {:.0} / {:.0}",
            during.per_sec(),
            during_good.per_sec(),
            without.per_sec()
        ),
        "-",
    );
    report.row(
        LABEL,
        "submit errors (non-2xx, wrk timeouts, socket errors): first round / answering-only rounds / without",
        format!(
            "{} / {} / {}",
            during.errors(),
            during_good.errors(),
            without.errors()
        ),
        target(
            "0 / 0 / 0",
            during.errors() + during_good.errors() + without.errors() == 0,
        ),
    );
    report.row(
        LABEL,
        "tasks a bad drone failed (queen log: not taken by)",
        tasks_refused.to_string(),
        "-",
    );
    let rss_mb = report::mb_of(at_scale.hwm_kb);
    report.row(
        footprint::LABEL,
        format!(
            "queen with {} registered drones: peak RSS MB (VmHWM)",
            size.total()
        ),
        mb(at_scale.hwm_kb),
        target(
            &format!("≤ {QUEEN_RSS_MB_TARGET:.0}"),
            rss_mb <= QUEEN_RSS_MB_TARGET,
        ),
    );
    report.row(
        footprint::LABEL,
        format!(
            "queen holding {} drones after the bad ones' removal, idle: RSS MB",
            size.good
        ),
        mb(idle.rss_kb),
        "-",
    );
    report.row(
        footprint::LABEL,
        format!(
            "queen holding {} drones, idle: threads between / during rounds",
            size.good
        ),
        format!("{} / {}", idle.min_threads, idle.max_threads),
        "-",
    );
    report.note(format!(
        "{LABEL}: every submit load is `{}` (wrk opens its {CONNECTIONS} connections at once, so a connection the queen \
         leaves waiting at the start shows here too). \"during the first full round\" \
         starts when a round over the bad drones is seen to start (a refusing drone's failures > 0); its \
         overlap with that round is in the metric; the bad drones are registered and available for tasks \
         until a task fails on one (a never-answering one holds a submit for the 2 s task timeout), so this \
         measures that too. \"during rounds over the answering drones only\" runs after the bad drones' \
         removal, on the same queen, heartbeating {} drones every {} s. \"without\" runs first, against a \
         second queen started with --heartbeat-interval {NO_ROUNDS_INTERVAL_SECS} holding only the {} \
         answering drones, registered after her only (empty) round. Both queens log at debug. Tasks go to \
         the simulated drones (one thread per listener and per connection inside hive-bench)",
        load.command(),
        size.good,
        heartbeat.interval.as_secs_f64(),
        size.good
    ));
    report.note(format!(
        "{LABEL}: the round is the largest `heartbeat round over N drones` in the queen's log; threads and \
         RSS are sampled from /proc every {} ms over the whole scenario (threads named probe every {} ms: \
         Linux names a new thread after the thread that made it, so this also counts threads a probe \
         worker spawns, such as the one ureq starts for each call's address lookup when the call has a \
         timeout); the queen runs with interval {} s and the default {} tries of {} s, {} s apart",
        SAMPLE_PERIOD.as_millis(),
        SAMPLE_PERIOD.as_millis() * u128::from(PROBE_COUNT_EVERY_SAMPLES),
        heartbeat.interval.as_secs_f64(),
        heartbeat.attempts,
        heartbeat.timeout.as_secs_f64(),
        heartbeat.retry_delay.as_secs_f64()
    ));
    drop(queen);
    drop(fleet);
    Ok(())
}
