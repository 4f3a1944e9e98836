//! Durable store, task submission: task submission's wrk load on `POST /tasks`, on a queen with a data
//! dir (`--data-dir`: every create is synced to disk before its 202) beside one in memory, run by
//! run in the same run of the bench. The group commit is what this measures: 32 connections'
//! creates share each sync, so the durable queen's rate should stay within a small factor of the
//! memory one's.

use std::time::Duration;

use super::Bench;
use crate::report::{self, Report, median, target};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};

pub const LABEL: &str = "durable store: task submission";

/// wrk's connections (on its default 2 threads), as in task submission.
const CONNECTIONS: usize = 32;

/// The uncounted `/healthz` load each queen gets first (see task submission).
const WARM_UP: Duration = Duration::from_secs(1);

/// Far more pending tasks than any run creates, so no submit is refused with 429.
const MAX_PENDING: usize = 10_000_000;

/// The targets: the durable queen's rate ÷ the memory queen's, and her p99.
const RATIO_TARGET: f64 = 0.5;
const P99_MS_TARGET: f64 = 20.0;

/// Runs memory and durable queens in turn and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let length = bench.plan.submission_length;
    let create = Load::new(Call::CreateTask, CONNECTIONS, length);
    let warm_up = Load::new(Call::Health, CONNECTIONS, WARM_UP);
    let mut memory = Vec::new();
    let mut durable = Vec::new();
    for run in 1..=bench.plan.submission_runs {
        for kept in [false, true] {
            let label = format!(
                "durable-submission-{}-r{run}",
                if kept { "data-dir" } else { "memory" }
            );
            let mut args = vec!["--max-pending".to_string(), MAX_PENDING.to_string()];
            if kept {
                let dir = bench.dir.join(format!("{label}.data"));
                args.extend(["--data-dir".to_string(), dir.display().to_string()]);
            }
            let queen = bench.queen(&format!("{label}-queen"), &args)?;
            bench
                .wrk
                .run(&format!("{label}-warm-up"), warm_up, &queen)?;
            let measured = bench.wrk.run(&format!("{label}-tasks"), create, &queen)?;
            progress(&format!(
                "{label}: {:.0} creates/s, p99 {:.1} ms",
                measured.ok_per_sec(),
                measured.p99_ms()
            ));
            if kept {
                durable.push(measured);
            } else {
                memory.push(measured);
            }
        }
    }
    report.load_rows(
        LABEL,
        &format!("memory store, POST /tasks c{CONNECTIONS}"),
        &memory.iter().collect::<Vec<&Run>>(),
        None,
    );
    report.load_rows(
        LABEL,
        &format!("data dir, POST /tasks c{CONNECTIONS}"),
        &durable.iter().collect::<Vec<&Run>>(),
        Some(P99_MS_TARGET),
    );
    let ratio = median(
        memory
            .iter()
            .zip(&durable)
            .map(|(memory, durable)| durable.ok_per_sec() / memory.ok_per_sec()),
    );
    report.row(
        LABEL,
        format!(
            "data dir 2xx/s ÷ memory store 2xx/s, run by run, median of {}",
            report::runs(memory.len())
        ),
        format!("{ratio:.2}"),
        target(&format!("≥ {RATIO_TARGET}"), ratio >= RATIO_TARGET),
    );
    report.note(format!(
        "{LABEL}: each run starts a fresh queen `larve --queen --port 0 --max-pending \
         {MAX_PENDING}` without drones, gives her `{}` uncounted, then `{}`; then the same with a \
         fresh queen started with `--data-dir DIR` too (SQLite in WAL mode, synchronous=FULL: \
         every create is on disk before its 202; the group commit shares a sync among the creates \
         queued behind it). Latencies are wrk's (see queen under load's note)",
        warm_up.command(),
        create.command(),
    ));
    Ok(())
}
