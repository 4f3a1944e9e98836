//! Scenario 1, submit: throughput and latency against 2 drones, the healthz ceiling with the same
//! clients, and whether every 200 became exactly one line of drone stdout.

use std::fs;

use super::Bench;
use crate::Result;
use crate::load::{BURST_HOLD, Call, RAMP_STEP, SLOW_REQUEST, burst, load};
use crate::progress;
use crate::report::{Report, ms, target};

pub const LABEL: &str = "1. submit";

/// Drones the queen hands tasks to.
const DRONES: usize = 2;

/// The targets.
const SUBMIT_TASKS_PER_SEC_TARGET: f64 = 12_000.0;
const SUBMIT_P99_MS_TARGET: f64 = 10.0;
const HEALTHZ_SHARE_TARGET: f64 = 0.25;

/// Measures, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("s1-queen", &[])?;
    let drones = bench.drones(&queen, "s1-drone", DRONES)?;
    let (clients, length) = (bench.plan.clients, bench.plan.submit);
    progress(&format!(
        "burst: {clients} new connections to the fresh queen at once"
    ));
    let (burst_slow, burst_failed) = burst(&queen, clients)?;
    progress(&format!(
        "submit: {clients} clients for {:.0} s",
        length.as_secs_f64()
    ));
    let submit = load(&queen, Call::Submit, clients, length)?;
    progress(&format!(
        "healthz: {clients} clients for {:.0} s",
        length.as_secs_f64()
    ));
    let health = load(&queen, Call::Health, clients, length)?;
    let task_timeouts = queen.log().matches(" not taken by drone-").count();
    let mut printed = 0;
    for drone in &drones {
        let out = fs::read(&drone.stdout_path)
            .map_err(|e| format!("{}: {e}", drone.stdout_path.display()))?;
        printed += out.iter().filter(|&&b| b == b'\n').count() as u64;
    }

    let tps = submit.per_sec();
    let p99 = submit.percentile_ms(0.99);
    let share = tps / health.per_sec();
    let context = format!("{clients} clients, {:.0} s", length.as_secs_f64());
    report.row(
        LABEL,
        format!("submit tasks/s ({context})"),
        format!("{tps:.0}"),
        target(
            &format!("≥ {SUBMIT_TASKS_PER_SEC_TARGET:.0}"),
            tps >= SUBMIT_TASKS_PER_SEC_TARGET,
        ),
    );
    report.row(
        LABEL,
        "submit errors (non-200 or transport)",
        submit.errors.to_string(),
        target("0", submit.errors == 0),
    );
    report.row(LABEL, "submit p50 ms", ms(submit.percentile_ms(0.5)), "-");
    report.row(
        LABEL,
        "submit p99 ms",
        ms(p99),
        target(
            &format!("≤ {SUBMIT_P99_MS_TARGET:.0}"),
            p99 <= SUBMIT_P99_MS_TARGET,
        ),
    );
    report.row(
        LABEL,
        "submit p99.9 ms",
        ms(submit.percentile_ms(0.999)),
        "-",
    );
    report.row(LABEL, "submit max ms", ms(submit.max_ms()), "-");
    report.row(
        LABEL,
        format!("healthz requests/s, same queen ({context}): HTTP ceiling"),
        format!("{:.0}", health.per_sec()),
        "-",
    );
    report.row(
        LABEL,
        "healthz p99 / max ms",
        format!(
            "{} / {}",
            ms(health.percentile_ms(0.99)),
            ms(health.max_ms())
        ),
        "-",
    );
    report.row(
        LABEL,
        "healthz errors",
        health.errors.to_string(),
        target("0", health.errors == 0),
    );
    report.row(
        LABEL,
        "submit / healthz throughput",
        format!("{:.1}%", share * 100.0),
        target(
            &format!("≥ {:.0}%", HEALTHZ_SHARE_TARGET * 100.0),
            share >= HEALTHZ_SHARE_TARGET,
        ),
    );
    let answered = submit.ok + submit.warmup_ok;
    let mismatch = printed as i64 - answered as i64;
    report.row(
        LABEL,
        "drone stdout lines − submit 200s (warm-up included)",
        format!("{mismatch} ({printed} lines, {answered} 200s)"),
        target("0", mismatch == 0),
    );
    for (what, run) in [("submit", &submit), ("healthz", &health)] {
        if let Some(error) = &run.first_error {
            report.note(format!("{LABEL}: first {what} error: {error}"));
        }
    }
    let (slow_submits, slow_healths) = (
        submit.slower_than(SLOW_REQUEST),
        health.slower_than(SLOW_REQUEST),
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
            "burst of {clients} new connections to the fresh queen: first /healthz slower than {} ms / failed",
            SLOW_REQUEST.as_millis()
        ),
        format!("{burst_slow} / {burst_failed}"),
        target("0 / 0 expected", burst_slow + burst_failed == 0),
    );
    report.row(
        LABEL,
        format!(
            "requests slower than {} ms: submit / healthz",
            SLOW_REQUEST.as_millis()
        ),
        format!("{slow_submits} / {slow_healths}"),
        target("0 / 0 expected", slow_submits + slow_healths == 0),
    );
    report.note(format!(
        "{LABEL}: latency is per request as each client saw it (send to last body byte), over every \
         request including errors; one ureq Agent (one kept-alive connection) per client; clients start {} ms \
         apart and only calls sent after the last one started are counted; the queen runs at the default \
         log level (info), which logs one line per task. The burst runs first, on the fresh queen: {} clients \
         each open a connection at the same instant, ask /healthz once, and keep the connection open up to \
         {} s or until all have answered. A task a drone did not take in time goes to the other drone, and \
         the first may still print it when it gets to it: delivery is at least once, so each such task can \
         add one to the stdout mismatch",
        RAMP_STEP.as_millis(),
        bench.plan.clients,
        BURST_HOLD.as_secs_f64()
    ));
    Ok(())
}
