//! Several queens: queens sharing one registry in etcd. One etcd member is started for
//! the scenario, and three parts run on it, each with its own queens under its own key prefix:
//! [`failover`] kills the leader under submit load, [`rate`] compares submits through a follower
//! with submits to a queen alone, and [`registration`] registers a fleet through three queens and
//! then reads their memory.
//!
//! A part that fails does not stop the others: its larves are dropped with it, and its error is
//! the scenario's, after the other parts have added their rows.

mod failover;
mod rate;
mod registration;

use hive_support::etcd::Etcd;

use super::Bench;
use crate::report::Report;
use crate::{Result, progress};

pub const LABEL: &str = "several queens";

/// One part of the scenario, on the scenario's etcd.
type Part = fn(&Bench, &Etcd, &mut Report) -> Result<()>;

/// The parts, in the order they run.
const PARTS: [(&str, Part); 3] = [
    ("failover", failover::run),
    ("submit rate", rate::run),
    ("registration", registration::run),
];

/// Starts etcd, runs every part on it, and fails with the parts' errors, if any.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let etcd = bench.etcd("queens-etcd")?;
    progress(&format!("{LABEL}: etcd is healthy: {}", etcd.command(0)));
    report.note(format!(
        "{LABEL}: one etcd member for the whole scenario, each part under its own --etcd-prefix: \
         `{}`",
        etcd.command(0)
    ));
    let mut errors = Vec::new();
    for (part, measure) in PARTS {
        progress(&format!("{LABEL}: {part}"));
        if let Err(why) = measure(bench, &etcd, report) {
            progress(&format!("{LABEL}: {part} failed: {why}"));
            errors.push(format!("{part}: {why}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
