//! Queen under load: submit throughput and latency as wrk measures them, at 8, 32 and 256
//! connections. Every run starts a fresh queen with 2 drones and loads her three times: submit
//! right after the drones registered (cold: the first connections she ever sees), submit again
//! (warm), then `/healthz`, her HTTP ceiling. Apart from that, `/healthz` on a fresh queen with no
//! drones (cold healthz). Each is repeated on fresh queens and summed up as medians, error sums,
//! and for the cold healthz the worst run.

use super::Bench;
use crate::report::{self, Report, median, ms, target};
use crate::wrk::{Call, Load, Run};
use crate::{Result, heartbeat, progress};

pub const LABEL: &str = "queen under load";

/// wrk's connection counts, one series of runs each.
const CONNECTIONS: [usize; 3] = [8, 32, 256];

/// Drones of each queen that takes tasks.
const DRONES: usize = 2;

/// Connections of the cold healthz load.
const COLD_HEALTHZ_CONNECTIONS: usize = 8;

/// p99 targets: the tight one up to this many connections, the loose one above.
const TIGHT_P99_MAX_CONNECTIONS: usize = 32;
const TIGHT_P99_MS_TARGET: f64 = 10.0;
const LOOSE_P99_MS_TARGET: f64 = 50.0;

/// Submit rate as a share of the same queen's `/healthz` rate.
const SUBMIT_SHARE_TARGET: f64 = 0.30;

/// The cold healthz p99 every run must meet.
const COLD_HEALTHZ_P99_MS_TARGET: f64 = 10.0;

/// Percent per unit share, for the table.
const PERCENT: f64 = 100.0;

/// The p99 target at `connections`.
fn p99_target_ms(connections: usize) -> f64 {
    if connections <= TIGHT_P99_MAX_CONNECTIONS {
        TIGHT_P99_MS_TARGET
    } else {
        LOOSE_P99_MS_TARGET
    }
}

/// What one fresh queen with drones saw.
struct QueenRun {
    cold: Run,
    warm: Run,
    health: Run,
    /// Tasks the queen logged as not taken by a drone in time (she then tried the other one).
    not_taken: usize,
}

/// The names of a [`QueenRun`]'s loads, in the order they ran.
const LOADS: [&str; 3] = ["submit cold", "submit warm", "healthz"];

impl QueenRun {
    /// The loads, as [`LOADS`] names them.
    fn loads(&self) -> [&Run; 3] {
        [&self.cold, &self.warm, &self.health]
    }
}

/// Measures every connection count, then the cold healthz, and adds the rows. Each count's rows
/// are added as soon as it is measured, so a later failure keeps them.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let (runs, length) = (bench.plan.wrk_runs, bench.plan.wrk_length);
    let submit = |connections| Load::new(Call::Submit, connections, length);
    let health = |connections| Load::new(Call::Health, connections, length);
    let mut commands: Vec<String> = Vec::new();
    for connections in CONNECTIONS {
        let queens = (1..=runs)
            .map(|run| measure_queen(bench, submit(connections), health(connections), run))
            .collect::<Result<Vec<QueenRun>>>()?;
        add_queen_rows(report, connections, &queens);
        commands.extend([submit(connections).command(), health(connections).command()]);
    }
    let cold_load = health(COLD_HEALTHZ_CONNECTIONS);
    let cold = (1..=runs)
        .map(|run| {
            let queen = bench.queen(&format!("load-cold-healthz-r{run}-queen"), &[])?;
            bench
                .wrk
                .run(&format!("load-cold-healthz-r{run}"), cold_load, &queen)
        })
        .collect::<Result<Vec<Run>>>()?;
    add_cold_healthz_rows(report, &cold);
    report.note(format!(
        "{LABEL}: the wrk commands, with PORT the queen's port (a fresh queen on a free port each \
         run): `{}`",
        commands.join("`, `")
    ));
    report.note(format!(
        "{LABEL}: each run starts a fresh queen (default heartbeat, no token) and {DRONES} drones, \
         waits until the queen lists both, then runs wrk on /submit_task at once (cold), again \
         (warm), then on /healthz; the cold /healthz runs are on fresh queens without drones, \
         started the moment the queen logs her address. Rates are wrk's Requests/sec (every answer, \
         whatever its status), but the submit ÷ healthz share counts only answers below 400 (a 503 \
         is no task done). p50, p99 and max are wrk's, over answers within wrk's 2 s timeout (slower \
         ones are counted as timeouts instead), after wrk's own correction for coordinated omission: \
         each answer slower than the mean time between answers on one connection adds samples for \
         the requests it held up, so one connection left waiting for a second adds hundreds of slow \
         samples. Non-2xx is wrk's errors.status (status ≥ 400); socket errors are its connect, read \
         and write errors. The queen logs one line per task (info)"
    ));
    Ok(())
}

/// One run at one connection count: a fresh queen and drones, cold submit, warm submit, healthz.
fn measure_queen(bench: &Bench, submit: Load, health: Load, run: usize) -> Result<QueenRun> {
    let label = format!("load-c{}-r{run}", submit.connections);
    progress(&format!("{label}: fresh queen and {DRONES} drones"));
    let queen = bench.queen(&format!("{label}-queen"), &[])?;
    let _drones = bench.drones(&queen, &format!("{label}-drone"), DRONES)?;
    let cold = bench
        .wrk
        .run(&format!("{label}-submit-cold"), submit, &queen)?;
    let warm = bench
        .wrk
        .run(&format!("{label}-submit-warm"), submit, &queen)?;
    let health = bench.wrk.run(&format!("{label}-healthz"), health, &queen)?;
    Ok(QueenRun {
        cold,
        warm,
        health,
        not_taken: heartbeat::tasks_not_taken(&queen.stderr()),
    })
}

/// The rows of one connection count.
fn add_queen_rows(report: &mut Report, connections: usize, queens: &[QueenRun]) {
    let goal = p99_target_ms(connections);
    for (i, what) in LOADS.iter().enumerate() {
        let runs: Vec<&Run> = queens.iter().map(|q| q.loads()[i]).collect();
        report.load_rows(LABEL, &format!("c{connections} {what}"), &runs, Some(goal));
    }
    let share = |pick: fn(&QueenRun) -> &Run| {
        median(
            queens
                .iter()
                .map(|q| pick(q).ok_per_sec() / q.health.ok_per_sec()),
        )
    };
    let (cold, warm) = (share(|q| &q.cold), share(|q| &q.warm));
    report.row(
        LABEL,
        format!(
            "c{connections} submit 2xx/s ÷ healthz 2xx/s, same queen: cold / warm, median of {}",
            report::runs(queens.len())
        ),
        format!("{:.0}% / {:.0}%", cold * PERCENT, warm * PERCENT),
        target(
            &format!("≥ {:.0}%", SUBMIT_SHARE_TARGET * PERCENT),
            cold >= SUBMIT_SHARE_TARGET && warm >= SUBMIT_SHARE_TARGET,
        ),
    );
    let not_taken: usize = queens.iter().map(|q| q.not_taken).sum();
    report.row(
        LABEL,
        format!(
            "c{connections} tasks a drone did not take in time (queen log: not taken by), sum of {}",
            report::runs(queens.len())
        ),
        not_taken.to_string(),
        "-",
    );
    let per_run: Vec<String> = queens
        .iter()
        .map(|q| {
            format!(
                "{:.0} / {:.0} / {:.0} req/s, p99 {} / {} / {} ms",
                q.cold.per_sec(),
                q.warm.per_sec(),
                q.health.per_sec(),
                ms(q.cold.p99_ms()),
                ms(q.warm.p99_ms()),
                ms(q.health.p99_ms())
            )
        })
        .collect();
    report.note(format!(
        "{LABEL}: c{connections} runs (submit cold / submit warm / healthz): {}",
        per_run.join("; ")
    ));
}

/// The cold healthz rows: the worst run against the target, and the medians.
fn add_cold_healthz_rows(report: &mut Report, runs: &[Run]) {
    let what = format!("cold healthz c{COLD_HEALTHZ_CONNECTIONS}");
    let met = |run: &Run| run.p99_ms() <= COLD_HEALTHZ_P99_MS_TARGET && run.timeouts() == 0;
    let worst = runs.iter().max_by(|a, b| {
        a.timeouts()
            .cmp(&b.timeouts())
            .then(a.p99_ms().total_cmp(&b.p99_ms()))
    });
    if let Some(worst) = worst {
        report.row(
            LABEL,
            format!(
                "{what}, worst of {}: p99 / max ms / wrk timeouts",
                report::runs(runs.len())
            ),
            format!(
                "{} / {} / {}",
                ms(worst.p99_ms()),
                ms(worst.max_ms()),
                worst.timeouts()
            ),
            target(
                &format!("p99 ≤ {COLD_HEALTHZ_P99_MS_TARGET:.0} and no timeout, every run"),
                runs.iter().all(met),
            ),
        );
    }
    let all: Vec<&Run> = runs.iter().collect();
    report.load_rows(LABEL, &what, &all, None);
}
