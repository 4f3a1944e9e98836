//! Several queens, failover: three queens on etcd and two drones; submits go through the two followers
//! while the leader is killed with SIGKILL, or stopped cleanly with SIGTERM (she hands leadership
//! over as she goes), and the time until both survivors name the same new leader, one of them, is
//! measured, with every submit that failed meanwhile. A fresh queen then makes three again, and
//! the next repetition stops whoever leads.

use std::thread;
use std::time::{Duration, Instant};

use hive_support::etcd::Etcd;

use super::LABEL;
use crate::report::{self, Report, median, target};
use crate::scenarios::Bench;
use crate::scenarios::group::{AGREE_POLL, AGREE_TIMEOUT, LEADER_TTL, Queens};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};

const DRONES: usize = 2;

/// The load through each follower: `wrk -t1 -c4`, with a timeout above the queen's 2 s task
/// timeout, so a submit held by a drone is counted in the latencies rather than as a timeout.
const LOAD_THREADS: usize = 1;
const LOAD_CONNECTIONS: usize = 4;
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the load runs before the kill, so it is in full swing; a random part of the lease's
/// renewal period is added, so the kill falls anywhere in the leader's renewal cycle, as a crash
/// would.
const LEAD_IN: Duration = Duration::from_secs(1);

/// How long the load goes on once the survivors agree, so submits right after the takeover count.
const TAIL: Duration = Duration::from_secs(1);

/// How long past the TTL the survivors may take to agree before the repetition fails.
const GIVE_UP: Duration = Duration::from_secs(10);

/// wrk's `-d` is set past the longest a repetition can take by this much; the load is stopped
/// (SIGINT, then wrk prints its summary) once the tail is over.
const LOAD_MARGIN: Duration = Duration::from_secs(5);

/// The target's slack on top of the TTL.
const SLACK: Duration = Duration::from_secs(1);

/// A clean stop hands leadership over within this.
const CLEAN_HANDOVER: Duration = Duration::from_secs(1);

/// How the leader goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: her lease must expire.
    Kill,
    /// SIGTERM: she resigns.
    Clean,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Kill => "kill -9",
            Stop::Clean => "a clean stop (SIGTERM)",
        }
    }
}

/// What one leader kill did.
struct Kill {
    how: Stop,
    seconds: f64,
    old_leader: String,
    new_leader: String,
    /// The two followers' loads, stopped after the tail.
    loads: Vec<Run>,
}

impl Kill {
    /// Submits that failed: non-2xx, wrk timeouts and socket errors.
    fn failed(&self) -> u64 {
        self.loads.iter().map(Run::errors).sum()
    }

    /// Submits made, whatever their answer.
    fn made(&self) -> u64 {
        self.loads.iter().map(Run::requests).sum()
    }
}

/// Kills the leader `repeats` times and adds the rows.
pub fn run(bench: &Bench, etcd: &Etcd, report: &mut Report) -> Result<()> {
    let mut queens = Queens::start(bench, etcd, "queens-failover")?;
    let _drones = bench.drones_of(&queens.refs(), "queens-failover-drone", DRONES)?;
    let longest = LEAD_IN + renewal() + LEADER_TTL + GIVE_UP + TAIL + LOAD_MARGIN;
    let load = Load {
        threads: LOAD_THREADS,
        timeout: Some(LOAD_TIMEOUT),
        ..Load::new(
            Call::Submit,
            LOAD_CONNECTIONS,
            Duration::from_secs(longest.as_secs() + 1),
        )
    };
    let mut kills = Vec::new();
    let repeats = bench.plan.failover_repeats;
    for (repeat, how) in (1..=repeats)
        .map(|_| Stop::Kill)
        .chain((1..=repeats).map(|_| Stop::Clean))
        .enumerate()
    {
        if repeat > 0 {
            queens.add()?;
        }
        kills.push(kill_leader(bench, &mut queens, load, repeat + 1, how)?);
    }
    add_rows(report, &kills, Stop::Kill);
    add_rows(report, &kills, Stop::Clean);
    report.note(format!(
        "{LABEL}, failover: three queens `{}` and {DRONES} drones `larve --queen-host \
         127.0.0.1:Q1,127.0.0.1:Q2,127.0.0.1:Q3 --port 0` (Q1-Q3: the first three queens' ports; \
         the drones stay for every repetition). Each repetition waits until every queen is ready \
         and names the same leader, starts `{}` on each follower (PORT: its port), waits {} s plus \
         a random part of the {:.2} s lease renewal period, kills the leader with SIGKILL (the \
         first half of the repetitions) or stops her with SIGTERM (the second half), and \
         reads both survivors' /healthz every {} ms until both name the same leader, one of them: \
         the seconds are from the kill to that. The loads go on {} s more and are then stopped \
         (SIGINT: wrk prints its summary); failed submits are non-2xx + wrk timeouts + socket \
         errors. A fresh queen (same command) then joins before the next repetition",
        queens.command(),
        load.command(),
        LEAD_IN.as_secs(),
        renewal().as_secs_f64(),
        AGREE_POLL.as_millis(),
        TAIL.as_secs()
    ));
    let per_kill: Vec<String> = kills
        .iter()
        .map(|k| {
            format!(
                "{}: {:.2} s ({} → {}, {}/{} failed)",
                k.how.name(),
                k.seconds,
                k.old_leader,
                k.new_leader,
                k.failed(),
                k.made()
            )
        })
        .collect();
    report.note(format!(
        "{LABEL}, failover repetitions in order: {}",
        per_kill.join("; ")
    ));
    Ok(())
}

/// The leader renews her lease this often.
fn renewal() -> Duration {
    LEADER_TTL / 3
}

/// One repetition: once the queens agree, `load` through every follower, the leader killed, and
/// the time until the survivors agree on one of them.
fn kill_leader(
    bench: &Bench,
    queens: &mut Queens,
    load: Load,
    repeat: usize,
    how: Stop,
) -> Result<Kill> {
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    let loads = queens
        .live()
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != leader)
        .map(|(_, follower)| {
            let label = format!("{}-r{repeat}", follower.label);
            bench.wrk.start(&label, load, follower)
        })
        .collect::<Result<Vec<_>>>()?;
    thread::sleep(LEAD_IN + renewal().mul_f64(fastrand::f64()));
    let mut old = queens.take(leader);
    let killed = Instant::now();
    match how {
        Stop::Kill => old.kill(),
        Stop::Clean => old.stop()?,
    }
    let new = queens.agreed_leader(LEADER_TTL + GIVE_UP)?;
    let seconds = killed.elapsed().as_secs_f64();
    thread::sleep(TAIL);
    let loads = loads
        .into_iter()
        .map(|load| load.stop())
        .collect::<Result<Vec<Run>>>()?;
    let kill = Kill {
        how,
        seconds,
        old_leader: old.label.clone(),
        new_leader: queens.live()[new].label.clone(),
        loads,
    };
    progress(&format!(
        "failover {repeat}: {} ({}), {} leads after {seconds:.2} s; {} of {} submits failed",
        kill.old_leader,
        how.name(),
        kill.new_leader,
        kill.failed(),
        kill.made()
    ));
    Ok(kill)
}

/// The failover rows of the repetitions that stopped the leader `how`: seconds against the
/// target, and the submits.
fn add_rows(report: &mut Report, all: &[Kill], how: Stop) {
    let kills: Vec<&Kill> = all.iter().filter(|k| k.how == how).collect();
    let n = report::runs(kills.len());
    let seconds: Vec<f64> = kills.iter().map(|k| k.seconds).collect();
    let (goal, goal_text) = match how {
        Stop::Kill => {
            let goal = (LEADER_TTL + SLACK).as_secs_f64();
            let text = format!(
                "≤ {goal:.0} s (TTL {} s + {} s)",
                LEADER_TTL.as_secs(),
                SLACK.as_secs()
            );
            (goal, text)
        }
        Stop::Clean => {
            let goal = CLEAN_HANDOVER.as_secs_f64();
            (goal, format!("< {goal:.0} s"))
        }
    };
    let middle = median(seconds.iter().copied());
    let max = seconds.iter().copied().fold(0.0, f64::max);
    report.row(
        LABEL,
        format!(
            "failover: s from {} of the leader until both survivors name one of them, median / max of {n}",
            how.name()
        ),
        format!("{middle:.2} / {max:.2} s"),
        target(&goal_text, max <= goal),
    );
    let failed: u64 = kills.iter().map(|k| k.failed()).sum();
    let made: u64 = kills.iter().map(|k| k.made()).sum();
    report.row(
        LABEL,
        format!(
            "failover by {}: submits through the followers failed / made, sum of {n}",
            how.name()
        ),
        format!("{failed} / {made}"),
        target("0 failed", failed == 0),
    );
}
