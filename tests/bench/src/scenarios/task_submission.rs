//! Task submission: wrk on `POST /tasks`, how fast a queen takes new tasks and how
//! long each waits for its 202. No drone runs commands, so every task stays pending and the queen
//! does nothing but take them; she is started with a `--max-pending` no run can reach, so none is
//! refused. Each run is on a fresh queen, which first gets an uncounted warm-up, then `/healthz`
//! (her HTTP ceiling, the share's denominator), then the counted `POST /tasks`. The same load then
//! goes to a follower of three queens sharing one etcd, where a task is answered once etcd has
//! stored it.

use std::time::Duration;

use super::Bench;
use super::group::{AGREE_TIMEOUT, LEADER_TTL, Queens};
use crate::report::{self, Report, median, target};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};

pub const LABEL: &str = "task submission";

/// wrk's connections (on its default 2 threads).
const CONNECTIONS: usize = 32;

/// The uncounted `/healthz` load each queen gets first: her first connections cost more (see
/// queen under load), and that is not what this scenario measures.
const WARM_UP: Duration = Duration::from_secs(1);

/// Far more pending tasks than any run creates, so no submit is refused with 429.
const MAX_PENDING: usize = 10_000_000;

/// The targets.
const P99_MS_TARGET: f64 = 10.0;
const ETCD_P99_MS_TARGET: f64 = 25.0;
const HEALTHZ_SHARE_TARGET: f64 = 0.5;

/// Percent per unit share, for the table.
const PERCENT: f64 = 100.0;

/// One run on a fresh queen.
struct QueenRun {
    health: Run,
    create: Run,
    /// Tasks the queen holds pending after the load.
    pending: f64,
}

/// Runs both stores and adds the rows; the memory store's rows are in before the etcd part runs.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let length = bench.plan.submission_length;
    let create = Load::new(Call::CreateTask, CONNECTIONS, length);
    let health = Load::new(Call::Health, CONNECTIONS, length);
    let warm_up = Load::new(Call::Health, CONNECTIONS, WARM_UP);
    let args = vec!["--max-pending".to_string(), MAX_PENDING.to_string()];

    let memory = (1..=bench.plan.submission_runs)
        .map(|run| {
            let label = format!("submission-memory-r{run}");
            let queen = bench.queen(&format!("{label}-queen"), &args)?;
            bench
                .wrk
                .run(&format!("{label}-warm-up"), warm_up, &queen)?;
            let health = bench.wrk.run(&format!("{label}-healthz"), health, &queen)?;
            let create = bench.wrk.run(&format!("{label}-tasks"), create, &queen)?;
            let pending = bench.tasks.metrics(&queen)?.tasks_in("pending");
            Ok(QueenRun {
                health,
                create,
                pending,
            })
        })
        .collect::<Result<Vec<QueenRun>>>()?;
    add_memory_rows(report, &memory);

    let etcd = bench.etcd("submission-etcd")?;
    let mut followers = Vec::new();
    for run in 1..=bench.plan.submission_runs {
        let label = format!("submission-etcd-r{run}");
        let queens = Queens::start_with(bench, &etcd, &label, LEADER_TTL, &args)?;
        let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
        let follower = queens.follower(leader);
        progress(&format!("{label}: the load goes to {}", follower.label));
        bench
            .wrk
            .run(&format!("{label}-warm-up"), warm_up, follower)?;
        followers.push(bench.wrk.run(&format!("{label}-tasks"), create, follower)?);
    }
    let runs: Vec<&Run> = followers.iter().collect();
    report.load_rows(
        LABEL,
        &format!("etcd, 3 queens, POST /tasks c{CONNECTIONS} on a follower"),
        &runs,
        Some(ETCD_P99_MS_TARGET),
    );
    report.note(format!(
        "{LABEL}: each run starts a fresh queen `larve --queen --port 0 --max-pending \
         {MAX_PENDING}` without drones, gives her `{}` uncounted, then `{}`, then `{}` (PORT: her \
         port; every request is POST /tasks {{\"command\": [\"true\"]}}). The etcd runs start three \
         fresh queens each on one etcd, `larve --queen --port 0 --etcd URL --etcd-prefix \
         /submission-etcd-rN/ --leader-ttl {} --max-pending {MAX_PENDING}`, and load a follower the same \
         way after the same warm-up. Latencies are wrk's (see queen under load's note); non-2xx counts \
         answers of 400 or more, 429 included",
        warm_up.command(),
        health.command(),
        create.command(),
        LEADER_TTL.as_secs()
    ));
    Ok(())
}

/// The memory store's rows.
fn add_memory_rows(report: &mut Report, runs: &[QueenRun]) {
    let creates: Vec<&Run> = runs.iter().map(|r| &r.create).collect();
    let healths: Vec<&Run> = runs.iter().map(|r| &r.health).collect();
    report.load_rows(
        LABEL,
        &format!("memory store, POST /tasks c{CONNECTIONS}"),
        &creates,
        Some(P99_MS_TARGET),
    );
    report.load_rows(
        LABEL,
        &format!("memory store, GET /healthz c{CONNECTIONS} (same queen, just before)"),
        &healths,
        None,
    );
    let share = median(
        runs.iter()
            .map(|r| r.create.ok_per_sec() / r.health.ok_per_sec()),
    );
    report.row(
        LABEL,
        format!(
            "POST /tasks 2xx/s ÷ GET /healthz 2xx/s, same queen, median of {}",
            report::runs(runs.len())
        ),
        format!("{:.0}%", share * PERCENT),
        target(
            &format!("≥ {:.0}%", HEALTHZ_SHARE_TARGET * PERCENT),
            share >= HEALTHZ_SHARE_TARGET,
        ),
    );
    let answered: u64 = runs
        .iter()
        .map(|r| r.create.requests() - r.create.non_2xx())
        .sum();
    let pending: f64 = runs.iter().map(|r| r.pending).sum();
    report.row(
        LABEL,
        "memory store: tasks pending after the loads / POST /tasks answered below 400 (a submit \
         in flight when wrk stops is created but not counted by wrk)",
        format!("{pending:.0} / {answered}"),
        target("pending ≥ answered", pending >= answered as f64),
    );
}
