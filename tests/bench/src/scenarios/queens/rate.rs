//! Several queens, submit rate: submits through a follower of three queens on etcd against submits to
//! a queen alone (registry in memory), each with two drones. A follower serves submits from her
//! copy of the registry, never from etcd, so the two should be about as fast.
//!
//! Both hives are started once and each gets a warm-up run that is not counted (queen under load shows
//! how much a queen's first connections cost); then the runs alternate, alone first, so slow
//! spells of the shared machine fall on both sides alike.

use std::time::Duration;

use hive_support::etcd::Etcd;

use super::LABEL;
use crate::report::{self, Report, median, target};
use crate::scenarios::Bench;
use crate::scenarios::group::{AGREE_TIMEOUT, Queens};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};

const DRONES: usize = 2;

/// wrk's connections (on its default 2 threads).
const CONNECTIONS: usize = 32;

/// Length of the warm-up run each hive gets before the counted ones.
const WARM_UP: Duration = Duration::from_secs(1);

/// Follower's rate over the alone queen's that the issue asks for.
const RATIO_TARGET: f64 = 0.9;

/// Measures both sides in turn and adds the rows.
pub fn run(bench: &Bench, etcd: &Etcd, report: &mut Report) -> Result<()> {
    let alone = bench.queen("queens-rate-alone-queen", &[])?;
    let _alone_drones = bench.drones(&alone, "queens-rate-alone-drone", DRONES)?;
    let queens = Queens::start(bench, etcd, "queens-rate")?;
    let _drones = bench.drones_of(&queens.refs(), "queens-rate-drone", DRONES)?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    let follower = queens.follower(leader);
    progress(&format!(
        "submit rate: {} leads; the load goes through {}",
        queens.live()[leader].label,
        follower.label
    ));
    let load = Load::new(Call::Submit, CONNECTIONS, bench.plan.queens_rate_length);
    let warm_up = Load::new(Call::Submit, CONNECTIONS, WARM_UP);
    bench
        .wrk
        .run("queens-rate-alone-warm-up", warm_up, &alone)?;
    bench
        .wrk
        .run("queens-rate-follower-warm-up", warm_up, follower)?;
    let mut alone_runs = Vec::new();
    let mut follower_runs = Vec::new();
    for run in 1..=bench.plan.queens_rate_runs {
        alone_runs.push(
            bench
                .wrk
                .run(&format!("queens-rate-alone-r{run}"), load, &alone)?,
        );
        follower_runs.push(bench.wrk.run(
            &format!("queens-rate-follower-r{run}"),
            load,
            follower,
        )?);
    }
    let rate = |runs: &[Run]| median(runs.iter().map(Run::per_sec));
    let (alone_rate, follower_rate) = (rate(&alone_runs), rate(&follower_runs));
    let ratio = follower_rate / alone_rate;
    let n = report::runs(alone_runs.len());
    report.row(
        LABEL,
        format!(
            "submit req/s, c{CONNECTIONS}: queen alone (memory) / follower of three on etcd, median of {n} each"
        ),
        format!("{alone_rate:.0} / {follower_rate:.0}"),
        "-",
    );
    report.row(
        LABEL,
        "submit rate: follower ÷ queen alone",
        format!("{ratio:.2}"),
        target(&format!("≥ {RATIO_TARGET}"), ratio >= RATIO_TARGET),
    );
    let errors = |runs: &[Run]| runs.iter().map(Run::errors).sum::<u64>();
    let (alone_errors, follower_errors) = (errors(&alone_runs), errors(&follower_runs));
    report.row(
        LABEL,
        format!(
            "submit rate: errors (non-2xx + wrk timeouts + socket errors), queen alone / follower, sum of {n} each"
        ),
        format!("{alone_errors} / {follower_errors}"),
        target("0 / 0", alone_errors + follower_errors == 0),
    );
    let each = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{:.0}", r.per_sec()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.note(format!(
        "{LABEL}, submit rate: a queen alone `larve --queen --port 0` with {DRONES} drones \
         `larve --queen-host 127.0.0.1:Q --port 0`, and three queens `{}` with {DRONES} drones \
         `larve --queen-host 127.0.0.1:Q1,127.0.0.1:Q2,127.0.0.1:Q3 --port 0`, all started once; \
         each side gets one uncounted warm-up `{}`, then the counted runs `{}` (PORT: the queen \
         alone's, or a follower's) alternate, queen alone first. Rates are wrk's Requests/sec; \
         queen alone: {}; follower: {} req/s",
        queens.command(),
        warm_up.command(),
        load.command(),
        each(&alone_runs),
        each(&follower_runs)
    ));
    Ok(())
}
