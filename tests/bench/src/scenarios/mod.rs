//! The scenarios, one file each, and the runner that calls them in turn.
//!
//! A scenario is a plain function of the [`Bench`] (what every scenario needs) that measures and
//! adds its rows and notes to the report. Each starts its own larves and lets their guards stop
//! them, so a scenario that fails leaves nothing running: the runner records its error as a row and
//! goes on with the next one.

mod big_body;
mod burst;
mod detection;
mod footprint;
mod queens;
mod scale;
mod soak;
mod throughput;

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hive_support::etcd::Etcd;
use hive_support::larve::{Larve, Launch, Launcher};
use hive_support::wait;

use crate::control::Control;
use crate::options::Plan;
use crate::report::Report;
use crate::wrk::Wrk;
use crate::{Result, progress};

/// How long drones may take to appear in the queen's `/drones`, and how often it is read meanwhile.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_POLL: Duration = Duration::from_millis(10);

/// What every scenario needs: how to start larves, how to ask a queen, how to load her, how to
/// start the etcd queens share, and the plan.
pub struct Bench {
    pub launcher: Launcher,
    pub control: Control,
    pub wrk: Wrk,
    /// The etcd binary.
    pub etcd_binary: PathBuf,
    /// The run's directory, for etcd's data and log beside the larves' logs.
    pub dir: PathBuf,
    pub plan: Plan,
}

impl Bench {
    /// Starts a queen on a free port with `extra` flags.
    pub fn queen(&self, label: &str, extra: &[String]) -> Result<Larve> {
        let mut args: Vec<String> = ["--queen", "--port", "0"].map(String::from).into();
        args.extend_from_slice(extra);
        self.launcher.start(label, &args, &Launch::default())
    }

    /// Starts a drone of `queens` (several when they share a registry in etcd) on a free port; it
    /// registers itself with the first that answers.
    fn drone(&self, label: &str, queens: &[&Larve]) -> Result<Larve> {
        let hosts: Vec<String> = queens.iter().map(|queen| queen.address()).collect();
        let args = ["--queen-host", &hosts.join(","), "--port", "0"];
        self.launcher.start(label, &args, &Launch::default())
    }

    /// Starts one etcd member named after `label` and waits until it is healthy.
    pub fn etcd(&self, label: &str) -> Result<Etcd> {
        if !self.etcd_binary.is_file() {
            return Err(format!(
                "no etcd at {} (install it, e.g. apt-get install -y etcd-server, or pass \
                 --etcd-binary PATH)",
                self.etcd_binary.display()
            ));
        }
        Etcd::cluster(&self.etcd_binary, &self.dir, label, 1)
    }

    /// Starts `count` drones of `queen` and waits until she lists them all.
    pub fn drones(&self, queen: &Larve, label: &str, count: usize) -> Result<Vec<Larve>> {
        self.drones_of(&[queen], label, count)
    }

    /// Starts `count` drones of `queens` (sharing a registry in etcd when there are several) and
    /// waits until every one of them lists them all.
    pub fn drones_of(&self, queens: &[&Larve], label: &str, count: usize) -> Result<Vec<Larve>> {
        let drones = (0..count)
            .map(|i| self.drone(&format!("{label}-{i}"), queens))
            .collect::<Result<Vec<Larve>>>()?;
        let addresses: Vec<String> = drones.iter().map(Larve::address).collect();
        wait::until(
            REGISTER_TIMEOUT,
            REGISTER_POLL,
            &format!("every {label} drone to register"),
            || {
                queens
                    .iter()
                    .all(|queen| self.control.lists_all(queen, &addresses))
                    .then_some(())
            },
        )?;
        Ok(drones)
    }
}

/// One scenario.
type Scenario = fn(&Bench, &mut Report) -> Result<()>;

/// Every scenario, in the order they run; the label's number is what `--only` picks.
const ALL: [(&str, Scenario); 8] = [
    (throughput::LABEL, throughput::run),
    (detection::LABEL, detection::run),
    (soak::LABEL, soak::run),
    (footprint::LABEL, footprint::run),
    (scale::LABEL, scale::run),
    (burst::LABEL, burst::run),
    (big_body::LABEL, big_body::run),
    (queens::LABEL, queens::run),
];

/// How many scenarios there are, numbered from 1.
pub const COUNT: usize = ALL.len();

/// Runs the scenarios numbered in `only` (all when `None`), each timed; true if any failed.
pub fn run(bench: &Bench, only: Option<&[usize]>, report: &mut Report) -> bool {
    let mut failed = false;
    let chosen = ALL.into_iter().filter(|(label, _)| {
        only.is_none_or(|only| only.iter().any(|n| label.starts_with(&format!("{n}."))))
    });
    for (label, scenario) in chosen {
        progress(&format!("scenario {label}"));
        let started = Instant::now();
        // A panic is a failure like any other: the guards it unwinds through stop what the
        // scenario started, and the next scenario still runs.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| scenario(bench, report)))
            .unwrap_or_else(|_| Err("the scenario panicked (see the message above)".into()));
        if let Err(why) = outcome {
            progress(&format!("scenario {label} failed: {why}"));
            report.row(label, "error (scenario did not finish)", why, "-");
            failed = true;
        }
        progress(&format!(
            "scenario {label} took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    failed
}
