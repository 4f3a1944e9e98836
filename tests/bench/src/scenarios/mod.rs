//! The scenarios, one file each, and the runner that calls them in turn.
//!
//! A scenario is a plain function of the [`Bench`] (what every scenario needs) that measures and
//! adds its rows and notes to the report. Each starts its own larves and lets their guards stop
//! them, so a scenario that fails leaves nothing running: the runner records its error as a row and
//! goes on with the next one.
//!
//! Scenarios 1 to 8 measure the queen as the tutorial uses her: `/submit_task`, the heartbeat, the
//! registry, several queens. The [`fleet`] scenarios, named rather than numbered (`fleet`,
//! `fleet-etcd`), hold ten thousand simulated drones on one queen and through three on etcd. Scenarios 9 to 14 measure tasks that run commands (`POST /tasks` on
//! the queen, drones started with `--allow-exec`): [`task_throughput`] against the machine
//! spawning the same commands itself, [`task_submission`] and [`task_latency`] for the queue's
//! front, [`task_scale`] for a queen holding a large queue, [`task_failover`] and [`drone_loss`]
//! for what a dead leader or a dead drone does to the tasks in flight. Those with an etcd part start
//! their queens as [`group`] does.
//!
//! The named scenarios after them measure the durable store (`--data-dir`) beside the memory one:
//! [`durable_submission`], [`durable_throughput`] and [`durable_recovery`].
//!
//! Scenarios 15 and 16 measure the front door, which accepts every connection before tiny_http
//! sees a request: [`front_door`] attacks it as an unauthenticated client would (huge declared
//! bodies, endless heads, silent connections, a TLS input that made rustls loop), and
//! [`front_cost`] weighs what it costs against the larve from before it, and what TLS costs on top.
//!
//! Scenarios from here on are named, not numbered: [`containment`] weighs what holding every
//! attempt in a cgroup costs against process groups, and how fast a cancel ends a task that
//! handles SIGTERM; [`scoped_tokens`] what a client token costs a create; [`placement`] what
//! constraints cost the scheduler's placement over 1,000 drones; [`event_watchers`] what a thousand
//! clients following `GET /events` cost a queen, and how late the changes reach them.

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
mod footprint;
mod front_cost;
mod front_door;
mod group;
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
use std::path::PathBuf;
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
    /// Starts the larve from before the front door (`--old-larve`), for scenario 16's comparison.
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

/// One scenario.
type Scenario = fn(&Bench, &mut Report) -> Result<()>;

/// Every scenario, in the order they run; `--only` picks one by its label's number, if it has
/// one, or by its name (see [`name`]).
const ALL: [(&str, Scenario); 24] = [
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
    (event_watchers::LABEL, event_watchers::run),
];

/// A scenario's name, as `--only` takes it: its label after the number, if any, in lower case,
/// `:` left out and `-` for each space (`durable-store-recovery`, `burst`).
fn name(label: &str) -> String {
    let name = label.split_once(". ").map_or(label, |(_, name)| name);
    name.to_lowercase().replace(':', "").replace(' ', "-")
}

/// Whether `label` is the scenario `pick` names: its number, or its name.
fn picked(label: &str, pick: &str) -> bool {
    label.starts_with(&format!("{pick}.")) || name(label) == pick
}

/// Whether `pick` names a scenario.
pub fn exists(pick: &str) -> bool {
    ALL.iter().any(|(label, _)| picked(label, pick))
}

/// Every scenario's name, as `--help` lists them.
pub fn names() -> Vec<String> {
    ALL.iter().map(|(label, _)| name(label)).collect()
}

/// Runs the scenarios picked in `only` (all when `None`), each timed; true if any failed.
pub fn run(bench: &Bench, only: Option<&[String]>, report: &mut Report) -> bool {
    let mut failed = false;
    let chosen = ALL
        .into_iter()
        .filter(|(label, _)| only.is_none_or(|only| only.iter().any(|pick| picked(label, pick))));
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
