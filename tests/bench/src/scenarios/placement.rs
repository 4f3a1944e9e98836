//! Placement with constraints: what labels and constraints cost the scheduler. One pass places
//! the same pending tasks over the same 1,000 drones, with 3 constraints per task and without,
//! in alternating rounds of one run.
//!
//! It calls the library's pure placement (`tasks::placement`) as the scheduler's pass does: an
//! [`Eligibility`] for the pass's drones, each due task checked against it (the queue's filter),
//! then `place`. Not through a queen with registered drones: a pass there also writes each
//! placement to the store and asks drones to start attempts, which costs the same with and
//! without constraints and would hide what constraints add, and 1,000 drones that run commands
//! would each need a process.

use std::time::Instant;

use hive::labels::{Constraint, Labels};
use hive::tasks::placement::{Ask, Capacity, Eligibility, Policy, Want, place};

use super::Bench;
use crate::report::{self, Report, median, target};
use crate::{Result, progress};

pub const LABEL: &str = "placement with constraints";

/// The fleet.
const DRONES: usize = 1000;

/// Each drone's slots: enough that every task of a pass fits somewhere, so each pass places all.
const DRONE_SLOTS: u32 = 8;

/// Pending tasks one pass places (a pass takes at most the free slots, and a few more).
const FULL_TASKS: usize = 4000;
const QUICK_TASKS: usize = 1000;

/// Rounds (one pass of each kind each).
const FULL_ROUNDS: usize = 15;
const QUICK_ROUNDS: usize = 5;

/// Distinct sets of 3 constraints the tasks share, as a queue's tasks share a few.
const SETS: usize = 12;

/// The target: the rate with 3 constraints per task over the rate without.
const RATE_SHARE_TARGET: f64 = 0.8;

pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let (tasks, rounds) = if bench.plan.quick {
        (QUICK_TASKS, QUICK_ROUNDS)
    } else {
        (FULL_TASKS, FULL_ROUNDS)
    };
    let labels: Vec<Labels> = (0..DRONES).map(drone_labels).collect();
    let none: Vec<Vec<Constraint>> = vec![Vec::new(); tasks];
    let shared: Vec<Vec<Constraint>> = (0..tasks).map(|i| shared_set(i % SETS)).collect();
    let pinned: Vec<Vec<Constraint>> = (0..tasks).map(pinned_set).collect();
    let everywhere: Vec<Vec<Constraint>> =
        vec![constraints(&["hive.os=linux", "hive.arch!=sparc64", "hive.cpus"]); tasks];
    let (mut without, mut with, mut all, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        progress(&format!("{LABEL}: round {round} of {rounds}"));
        without.push(pass(&labels, &none)?);
        with.push(pass(&labels, &shared)?);
        all.push(pass(&labels, &everywhere)?);
        own.push(pass(&labels, &pinned)?);
    }
    let ms = |times: &[f64]| median(times.iter().map(|t| t * 1000.0));
    let share = |times: &[f64]| {
        median(
            without
                .iter()
                .zip(times)
                .map(|(without, with)| without / with),
        )
    };
    let n = report::runs(rounds);
    report.row(
        LABEL,
        format!(
            "one pass placing {tasks} tasks over {DRONES} drones, no constraints: ms, median of {n}"
        ),
        format!("{:.1}", ms(&without)),
        "-",
    );
    report.row(
        LABEL,
        format!("the same, 3 constraints per task ({SETS} distinct sets): ms, median of {n}"),
        format!("{:.1}", ms(&with)),
        "-",
    );
    let with_share = share(&with);
    report.row(
        LABEL,
        format!(
            "tasks placed/s, 3 constraints per task ÷ none, same run, alternating rounds, median of {n}"
        ),
        format!("{with_share:.2}"),
        target(&format!("≥ {RATE_SHARE_TARGET}"), with_share >= RATE_SHARE_TARGET),
    );
    let all_share = share(&all);
    report.row(
        LABEL,
        format!(
            "the same, 3 constraints every drone meets (each task may go anywhere, as without): ÷ none, median of {n}"
        ),
        format!("{all_share:.2}"),
        target(&format!("≥ {RATE_SHARE_TARGET}"), all_share >= RATE_SHARE_TARGET),
    );
    report.row(
        LABEL,
        format!(
            "the same, each task its own 3 constraints (pinned to one drone by hive.name, as each_drone's are): ÷ none, median of {n}"
        ),
        format!("{:.2}", share(&own)),
        "-",
    );
    report.note(format!(
        "{LABEL}: the library's placement called as the scheduler's pass calls it (an Eligibility \
         per pass, each task checked against it, then place, spread), timed per pass, without a \
         queen; {DRONES} drones of {DRONE_SLOTS} slots each with 8 labels (zone, rack, gpu on one \
         in five, hive.arch, hive.os, hive.name, hive.cpus, hive.memory_mb); the constrained tasks \
         ask zone=Z, hive.arch!=aarch64 and rack!=R, from {SETS} sets (a third of the drones or \
         less meet each, so each task weighs fewer drones: faster than without); constraints every \
         drone meets leave every drone to weigh, and show what checking them costs; every pass \
         places every task"
    ));
    Ok(())
}

/// One pass over fresh drones labelled `labels`, a task per entry of `constraints`: its
/// seconds. Fails unless every task was placed where its constraints hold.
fn pass(labels: &[Labels], constraints: &[Vec<Constraint>]) -> Result<f64> {
    let mut drones = vec![
        Capacity {
            slots: DRONE_SLOTS,
            memory_mb: 16_384,
            millicpus: 8000,
            ..Capacity::default()
        };
        labels.len()
    ];
    let want = Want {
        slots: 1,
        memory_mb: 256,
        millicpus: 250,
    };
    let started = Instant::now();
    let mut eligibility = Eligibility::new(labels.iter().collect());
    let due: Vec<Ask> = constraints
        .iter()
        .filter(|constraints| eligibility.any(constraints))
        .map(|constraints| Ask { want, constraints })
        .collect();
    let placed = place(&due, &mut drones, &mut eligibility, Policy::Spread, 0);
    let took = started.elapsed().as_secs_f64();
    for (ask, choice) in due.iter().zip(&placed) {
        let Some(i) = choice else {
            return Err(format!(
                "a task asking {:?} was not placed",
                ask.constraints
            ));
        };
        if !hive::labels::all_hold(ask.constraints, &labels[*i]) {
            return Err(format!(
                "a task asking {:?} went to drone {i}",
                ask.constraints
            ));
        }
    }
    if due.len() != constraints.len() {
        return Err(format!(
            "{} of {} tasks had no drone meeting their constraints",
            constraints.len() - due.len(),
            constraints.len()
        ));
    }
    Ok(took)
}

/// Drone `i`'s labels, as a fleet's might be.
fn drone_labels(i: usize) -> Labels {
    let zone = ["eu", "us", "ap"][i % 3];
    let arch = if i % 4 == 3 { "aarch64" } else { "x86_64" };
    let mut labels = Labels::from([
        ("zone".to_string(), zone.to_string()),
        ("rack".to_string(), format!("r{}", i % 20)),
        ("hive.arch".to_string(), arch.to_string()),
        ("hive.os".to_string(), "linux".to_string()),
        ("hive.name".to_string(), format!("drone-{i}")),
        ("hive.cpus".to_string(), "8".to_string()),
        ("hive.memory_mb".to_string(), "16384".to_string()),
    ]);
    if i.is_multiple_of(5) {
        labels.insert("gpu".to_string(), "a100".to_string());
    }
    labels
}

/// Shared set `k`: a zone, no ARM, not one rack.
fn shared_set(k: usize) -> Vec<Constraint> {
    let zone = ["eu", "us", "ap"][k % 3];
    constraints(&[
        &format!("zone={zone}"),
        "hive.arch!=aarch64",
        &format!("rack!=r{}", k % 20),
    ])
}

/// Task `i`'s own set: pinned to one x86_64 drone (every fourth is aarch64: the `j`-th x86_64 one
/// is `j + j / 3`), as a group's task is, with two more.
fn pinned_set(i: usize) -> Vec<Constraint> {
    let j = i % (DRONES / 4 * 3);
    let drone = j + j / 3;
    constraints(&[
        &format!("zone={}", ["eu", "us", "ap"][drone % 3]),
        "hive.arch!=aarch64",
        &format!("hive.name=drone-{drone}"),
    ])
}

fn constraints(texts: &[&str]) -> Vec<Constraint> {
    texts
        .iter()
        .map(|text| text.parse().expect("a constraint"))
        .collect()
}
