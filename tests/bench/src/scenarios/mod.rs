//! The scenarios, one file each, and the runner that calls them in turn.
//!
//! A scenario is a plain function of the [`Bench`] (what every scenario needs) that measures and
//! adds its rows and notes to the report. Each starts its own larves and lets their guards stop
//! them, so a scenario that fails leaves nothing running: the runner records its error as a row and
//! goes on with the next one.
//!
//! Every scenario has a name: its `LABEL`, which heads its section of the report
//! (`queen under load`), and the same in kebab case, which `--only` takes and which marks that
//! section in `docs/benchmarks.md` (`queen-under-load`, see [`name`]). A name is words, never a
//! number: it outlives any order. They run in the order of [`ALL`], and the report lists them in
//! that order. A new scenario is a module with a `LABEL` and a `run`, and one line in [`ALL`].
//!
//! The first measure the queen as the tutorial uses her: [`throughput`] (queen under load:
//! `/submit_task` and `/healthz` under wrk), [`detection`] and [`soak`] (failure detection, no
//! false removals), [`footprint`], then the [`fleet`] scenarios, ten thousand simulated drones on
//! one queen and through three on etcd, then [`burst`] (a burst of new connections), [`big_body`]
//! and [`queens`] (several queens on etcd). The task scenarios measure tasks that run commands
//! (`POST /tasks` on the queen, drones started with `--allow-exec`): [`task_throughput`] against
//! the machine spawning the same commands itself, [`task_submission`] and [`task_latency`] for the
//! queue's front, [`task_scale`] for a queen holding a large queue, [`task_failover`] and
//! [`drone_loss`] for what a dead leader or a dead drone does to the tasks in flight. Those with an
//! etcd part start their queens as [`group`] does.
//!
//! Two measure the front door, which accepts every connection before tiny_http sees a request:
//! [`front_door`] attacks it as an unauthenticated client would (huge declared bodies, endless
//! heads, silent connections, a TLS input that made rustls loop), and [`front_cost`] weighs what it
//! costs against the larve from before it, and what TLS costs on top.
//!
//! Then the durable store (`--data-dir`) beside the memory one: [`durable_submission`],
//! [`durable_throughput`] and [`durable_recovery`]; [`containment`] weighs what holding every
//! attempt in a cgroup costs against process groups, and how fast a cancel ends a task that
//! handles SIGTERM; [`scoped_tokens`] what a client token costs a create; [`placement`] what
//! constraints cost the scheduler's placement over 1,000 drones; [`follow_latency`] how soon a
//! line a task prints reaches a client following its output through a queen, and [`log_cap`]
//! what a drone's memory does while it keeps a 1 GB output to its cap;
//! [`event_watchers`] what a thousand clients following `GET /events` cost a queen, and how late
//! the changes reach them.

mod big_body;
mod burst;
mod containment;
mod detection;
mod drone_loss;
mod durable_recovery;
mod durable_submission;
mod durable_throughput;
mod event_watchers;
mod fleet;
mod follow_latency;
mod footprint;
mod front_cost;
mod front_door;
mod group;
mod log_cap;
mod placement;
mod queens;
mod scoped_tokens;
mod soak;
mod task_failover;
mod task_latency;
mod task_scale;
mod task_submission;
mod task_throughput;
mod throughput;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hive_support::etcd::Etcd;
use hive_support::larve::{Larve, Launch, Launcher};
use hive_support::wait;

use crate::control::Control;
use crate::options::Plan;
use crate::report::Report;
use crate::tasks::TaskClient;
use crate::wrk::Wrk;
use crate::{Result, progress};

/// How long drones may take to appear in the queen's `/drones`, and how often it is read meanwhile.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_POLL: Duration = Duration::from_millis(10);

/// What every scenario needs: how to start larves, how to ask a queen, how to load her, how to
/// start the etcd queens share, and the plan.
pub struct Bench {
    pub launcher: Launcher,
    /// Starts the larve from before the front door (`--old-larve`), for the cost of the front.
    pub old_launcher: Option<Launcher>,
    pub control: Control,
    /// The task API's client: submits, waits, listings, `/metrics`.
    pub tasks: TaskClient,
    pub wrk: Wrk,
    /// The etcd binary.
    pub etcd_binary: PathBuf,
    /// The run's directory, for etcd's data and log beside the larves' logs.
    pub dir: PathBuf,
    pub plan: Plan,
}

/// A queen and the drones that registered with her.
pub struct Hive {
    pub queen: Larve,
    pub drones: Vec<Larve>,
}

impl Bench {
    /// Starts a queen on a free port with `extra` flags.
    pub fn queen(&self, label: &str, extra: &[String]) -> Result<Larve> {
        queen_from(&self.launcher, label, extra)
    }

    /// Starts a queen on a free port with `extra` flags and the cluster token `token`.
    pub fn queen_with_token(&self, label: &str, extra: &[String], token: &str) -> Result<Larve> {
        let mut args: Vec<String> = ["--queen", "--port", "0"].map(String::from).into();
        args.extend_from_slice(extra);
        self.launcher.start(label, &args, &Launch::token(token))
    }

    /// Starts a drone of `queens` (several when they share a registry in etcd) from `launcher`'s
    /// binary on a free port with `extra` flags; it registers itself with the first that answers.
    fn drone(
        &self,
        launcher: &Launcher,
        label: &str,
        queens: &[&Larve],
        extra: &[String],
    ) -> Result<Larve> {
        let hosts: Vec<String> = queens.iter().map(|queen| queen.address()).collect();
        let mut args: Vec<String> = vec![
            "--queen-host".into(),
            hosts.join(","),
            "--port".into(),
            "0".into(),
        ];
        args.extend_from_slice(extra);
        launcher.start(label, &args, &Launch::default())
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
        self.start_drones(&self.launcher, &self.control, queens, label, count, |_| {
            Vec::new()
        })
    }

    /// Starts a queen from `launcher`'s binary with `queen_extra` flags and `count` drones of hers
    /// with `drone_extra`, and waits until she lists them all, asking her through `control` (over
    /// HTTPS for a queen that serves TLS).
    pub fn hive(
        &self,
        (launcher, control): (&Launcher, &Control),
        label: &str,
        (queen_extra, drone_extra): (&[String], &[String]),
        count: usize,
    ) -> Result<Hive> {
        let queen = queen_from(launcher, &format!("{label}-queen"), queen_extra)?;
        let drones = self.start_drones(
            launcher,
            control,
            &[&queen],
            &format!("{label}-drone"),
            count,
            |_| drone_extra.to_vec(),
        )?;
        Ok(Hive { queen, drones })
    }

    /// Starts `count` drones of `queens` that run commands (`--allow-exec`) in `slots` slots each,
    /// each with its work directory in the run's directory, and waits until every queen lists
    /// them all.
    pub fn exec_drones_of(
        &self,
        queens: &[&Larve],
        label: &str,
        count: usize,
        slots: u32,
    ) -> Result<Vec<Larve>> {
        self.exec_drones_with(queens, label, count, slots, &[])
    }

    /// [`Bench::exec_drones_of`] with `extra` flags for each drone.
    pub fn exec_drones_with(
        &self,
        queens: &[&Larve],
        label: &str,
        count: usize,
        slots: u32,
        extra: &[String],
    ) -> Result<Vec<Larve>> {
        self.start_drones(
            &self.launcher,
            &self.control,
            queens,
            label,
            count,
            |name| {
                let mut args: Vec<String> = vec![
                    "--allow-exec".into(),
                    "--slots".into(),
                    slots.to_string(),
                    "--work-dir".into(),
                    self.dir
                        .join(format!("{name}.work"))
                        .to_string_lossy()
                        .into_owned(),
                ];
                args.extend_from_slice(extra);
                args
            },
        )
    }

    /// Starts `count` drones of `queens` named `LABEL-I` from `launcher`'s binary, each with the
    /// flags `extra` gives for its name, and waits until every queen lists them all, asking
    /// through `control`.
    fn start_drones(
        &self,
        launcher: &Launcher,
        control: &Control,
        queens: &[&Larve],
        label: &str,
        count: usize,
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Result<Vec<Larve>> {
        let drones = (0..count)
            .map(|i| {
                let name = format!("{label}-{i}");
                self.drone(launcher, &name, queens, &extra(&name))
            })
            .collect::<Result<Vec<Larve>>>()?;
        let addresses: Vec<String> = drones.iter().map(Larve::address).collect();
        wait::until(
            REGISTER_TIMEOUT,
            REGISTER_POLL,
            &format!("every {label} drone to register"),
            || {
                queens
                    .iter()
                    .all(|queen| control.lists_all(queen, &addresses))
                    .then_some(())
            },
        )?;
        Ok(drones)
    }
}

/// Starts a queen from `launcher`'s binary on a free port with `extra` flags.
fn queen_from(launcher: &Launcher, label: &str, extra: &[String]) -> Result<Larve> {
    let mut args: Vec<String> = ["--queen", "--port", "0"].map(String::from).into();
    args.extend_from_slice(extra);
    launcher.start(label, &args, &Launch::default())
}

/// Bytes of the files under `dir`, at any depth: what a larve keeps on disk there.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One scenario.
type Scenario = fn(&Bench, &mut Report) -> Result<()>;

/// Every scenario, in the order they run (and `docs/benchmarks.md` lists them): its label, and
/// the function that runs it. `--only` picks them by [`name`].
const ALL: &[(&str, Scenario)] = &[
    (throughput::LABEL, throughput::run),
    (detection::LABEL, detection::run),
    (soak::LABEL, soak::run),
    (footprint::LABEL, footprint::run),
    (fleet::alone::LABEL, fleet::alone::run),
    (fleet::etcd::LABEL, fleet::etcd::run),
    (burst::LABEL, burst::run),
    (big_body::LABEL, big_body::run),
    (queens::LABEL, queens::run),
    (task_throughput::LABEL, task_throughput::run),
    (task_submission::LABEL, task_submission::run),
    (task_latency::LABEL, task_latency::run),
    (task_scale::LABEL, task_scale::run),
    (task_failover::LABEL, task_failover::run),
    (drone_loss::LABEL, drone_loss::run),
    (front_door::LABEL, front_door::run),
    (front_cost::LABEL, front_cost::run),
    (durable_submission::LABEL, durable_submission::run),
    (durable_throughput::LABEL, durable_throughput::run),
    (durable_recovery::LABEL, durable_recovery::run),
    (containment::LABEL, containment::run),
    (scoped_tokens::LABEL, scoped_tokens::run),
    (placement::LABEL, placement::run),
    (follow_latency::LABEL, follow_latency::run),
    (log_cap::LABEL, log_cap::run),
    (event_watchers::LABEL, event_watchers::run),
];

/// A scenario's name, as `--only` takes it and `docs/benchmarks.md` marks its section: its label
/// in lower case, `:` left out and `-` for each space (`durable-store-recovery`,
/// `queen-under-load`).
pub fn name(label: &str) -> String {
    label.to_lowercase().replace(':', "").replace(' ', "-")
}

/// Whether `pick` names a scenario.
pub fn exists(pick: &str) -> bool {
    ALL.iter().any(|(label, _)| name(label) == pick)
}

/// Every scenario's name, in the order they run.
pub fn names() -> Vec<String> {
    ALL.iter().map(|(label, _)| name(label)).collect()
}

/// Runs the scenarios picked in `only` (all when `None`), each timed; true if any failed.
pub fn run(bench: &Bench, only: Option<&[String]>, report: &mut Report) -> bool {
    let mut failed = false;
    let chosen = ALL
        .iter()
        .copied()
        .filter(|(label, _)| only.is_none_or(|only| only.contains(&name(label))));
    for (label, scenario) in chosen {
        progress(&format!("scenario {label}"));
        report.begin(label);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_name_of_its_own_that_only_can_take() {
        let names = names();
        for (i, name) in names.iter().enumerate() {
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name:?}: --only splits at commas, and a name is words joined by -"
            );
            assert!(!names[..i].contains(name), "{name:?} names two scenarios");
        }
    }
}
