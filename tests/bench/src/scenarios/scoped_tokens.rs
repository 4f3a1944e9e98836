//! Scoped tokens: what a queen's `--client-tokens` costs a client. wrk on `POST /tasks` with the
//! cluster token, then with a `submit` client token, on the same queen, in alternating rounds: the
//! gate compares every client token in constant time on each request, and logs an audit line per
//! accepted change, for both.

use std::fs;
use std::time::Duration;

use super::Bench;
use crate::report::{self, Report, median, target};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};

pub const LABEL: &str = "scoped tokens";

/// wrk's connections (on its default 2 threads).
const CONNECTIONS: usize = 32;

/// The queen's tokens: the cluster token, and the client tokens file's submit token among others,
/// as a hive with a team would have.
const CLUSTER_TOKEN: &str = "bench-cluster-token-0123456789";
const SUBMIT_TOKEN: &str = "bench-submit-token-0123456789";
const OTHER_CLIENT_TOKENS: usize = 15;

/// Far more pending tasks than any run creates, so no create is refused with 429.
const MAX_PENDING: usize = 10_000_000;

/// The uncounted load each queen gets first.
const WARM_UP: Duration = Duration::from_secs(1);

/// The target: the scoped token's rate over the cluster token's.
const RATE_SHARE_TARGET: f64 = 0.95;

pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let tokens = bench.dir.join("scoped-client-tokens");
    let mut lines = format!("submitter submit {SUBMIT_TOKEN}\n");
    for i in 0..OTHER_CLIENT_TOKENS {
        lines.push_str(&format!(
            "reader-{i} read bench-reader-token-{i:04}-0123456789\n"
        ));
    }
    fs::write(&tokens, lines).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let args = [
        "--max-pending".to_string(),
        MAX_PENDING.to_string(),
        "--client-tokens".to_string(),
        tokens.to_string_lossy().into_owned(),
    ];
    let queen = bench.queen_with_token("scoped-queen", &args, CLUSTER_TOKEN)?;
    let length = bench.plan.submission_length;
    let cluster = Load::new(Call::CreateTask, CONNECTIONS, length).with_token(CLUSTER_TOKEN);
    let scoped = Load::new(Call::CreateTask, CONNECTIONS, length).with_token(SUBMIT_TOKEN);
    let warm_up = Load {
        length: WARM_UP,
        ..cluster
    };
    bench.wrk.run("scoped-warm-up", warm_up, &queen)?;
    let (mut with_cluster, mut with_scoped) = (Vec::new(), Vec::new());
    for round in 1..=bench.plan.submission_runs {
        progress(&format!("{LABEL}: round {round}"));
        with_cluster.push(
            bench
                .wrk
                .run(&format!("scoped-r{round}-cluster"), cluster, &queen)?,
        );
        with_scoped.push(
            bench
                .wrk
                .run(&format!("scoped-r{round}-scoped"), scoped, &queen)?,
        );
    }
    report.load_rows(
        LABEL,
        &format!("POST /tasks c{CONNECTIONS} with the cluster token"),
        &with_cluster.iter().collect::<Vec<&Run>>(),
        None,
    );
    report.load_rows(
        LABEL,
        &format!("POST /tasks c{CONNECTIONS} with a submit client token"),
        &with_scoped.iter().collect::<Vec<&Run>>(),
        None,
    );
    let share = median(
        with_scoped
            .iter()
            .zip(&with_cluster)
            .map(|(scoped, cluster)| scoped.ok_per_sec() / cluster.ok_per_sec()),
    );
    report.row(
        LABEL,
        format!(
            "POST /tasks 2xx/s, submit token ÷ cluster token, same queen, alternating rounds, median of {}",
            report::runs(with_cluster.len())
        ),
        format!("{share:.2}"),
        target(&format!("≥ {RATE_SHARE_TARGET}"), share >= RATE_SHARE_TARGET),
    );
    report.note(format!(
        "{LABEL}: one queen `larve --queen --port 0 --max-pending {MAX_PENDING} --client-tokens FILE` \
         with HIVE_TOKEN set and {} client tokens in FILE; `{}` uncounted, then rounds of `{}` with \
         the cluster token and the same with the submit token (HIVE_TOKEN set for wrk)",
        OTHER_CLIENT_TOKENS + 1,
        warm_up.command(),
        cluster.command(),
    ));
    Ok(())
}
