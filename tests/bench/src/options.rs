//! The command line, and the [`Plan`] it makes: how long and how often each scenario measures.

use std::path::PathBuf;
use std::time::Duration;

use crate::Result;
use crate::fleet::FleetSize;
use crate::{report, scenarios};

/// The help text, printed by `--help`.
pub const USAGE: &str = "\
usage: hive-bench [--larve PATH] [--old-larve PATH] [--wrk PATH] [--etcd-binary PATH] [--quick]
                  [--only PICK[,PICK...]] [--keep-logs]

Starts queens and drones on 127.0.0.1, loads them with wrk, measures them, and prints a markdown
table to stdout.

options:
  --larve PATH        the larve binary (default: larve next to this binary)
  --old-larve PATH    the larve from before the front door (commit 047a915), which scenario 16
                      compares with; scripts/bench.sh builds and passes it (default: none, and
                      scenario 16 says the comparison was not measured)
  --wrk PATH          the wrk binary (default: wrk on the PATH)
  --etcd-binary PATH  the etcd binary scenarios 8 to 11 and 13 and fleet-etcd start (default:
                      etcd on the PATH)
  --quick             one run of 2 s per wrk load in scenario 1, one run of scenario 6, shorter
                      runs and fewer repetitions elsewhere, a 1,000-drone fleet; 2,000 tasks in
                      scenario 9, 20,000 in 12, 400 in 13; one flood of 3 s in 15 (not three
                      of 10 s) and 3 s of big bodies (not 10); 2 rounds of 2 s in 16
  --only LIST         run only these scenarios, by number or name, e.g. --only
                      1,fleet-one-queen,durable-store-recovery,containment (default: all)
  --keep-logs         keep the larves' logs and wrk's output (they are kept anyway when a scenario
                      fails)
  -h, --help          print this help

scenarios: 1 wrk, 2 failure detection, 3 no false removals, 5 footprint, 6 burst, 7 big body,
8 several queens (etcd); fleet (10,000 simulated drones on one queen: detection, liveness CPU,
API and submit against a queen without them), fleet-etcd (the same fleet through three queens on
etcd: writes in steady state, a leader's kill -9); tasks that run commands: 9 task throughput (against
the machine spawning them itself; and on etcd), 10 task submission (wrk on POST /tasks), 11 task
latency (created to running at 100 tasks/s), 12 task queue scale (100,000 pending), 13 task
failover (leader killed with 2,000 tasks in flight), 14 drone loss (a drone killed running 8
tasks); the front door: 15 under attack (10,000 huge declared bodies from one peer, 1,000 endless
heads, 1,000 silent connections plain and TLS, close_notify after a ClientHello, 2,048
unauthenticated big bodies against a hive with a token), 16 cost of the front (against the larve
from before it, and TLS on every leg against plain); the durable store (--data-dir) beside the
memory one: durable-store-task-submission (scenario 10's load), durable-store-task-throughput
(scenario 9's hive), durable-store-recovery (a queen killed with 100,000 tasks in her data dir,
started again); containment (10,000 `true` tasks with cgroups against process groups, the
containment's CPU per attempt, fork against posix_spawn, cancels of tasks that handle SIGTERM);
scoped-tokens (POST /tasks with a submit client token against the cluster token);
placement-with-constraints (the scheduler's placement over 1,000 drones, 3 constraints per task
against none; no larve started); event-watchers (1,000 clients following GET /events while 1,000
tasks/s are created: lag, the queen's growth, and POST /tasks with them against without)";

/// Runs of scenario 1 per load (each on fresh queens), and each load's length.
const FULL_WRK_RUNS: usize = 3;
const QUICK_WRK_RUNS: usize = 1;
const FULL_WRK_SECS: u64 = 6;
const QUICK_WRK_SECS: u64 = 2;

/// Kills and freezes measured in scenario 2, each.
const FULL_DETECTION_REPEATS: usize = 5;
const QUICK_DETECTION_REPEATS: usize = 2;

/// Runs of scenario 6, each on a fresh queen.
const FULL_BURST_RUNS: usize = 3;
const QUICK_BURST_RUNS: usize = 1;

/// Length of scenario 3's load.
const FULL_SOAK_SECS: u64 = 60;
const QUICK_SOAK_SECS: u64 = 4;

/// The fleet scenarios' simulated fleet.
const FULL_FLEET: FleetSize = FleetSize {
    renewing: 4500,
    good: 4500,
    refusing: 500,
    silent: 500,
};
const QUICK_FLEET: FleetSize = FleetSize {
    renewing: 450,
    good: 450,
    refusing: 50,
    silent: 50,
};

/// The fleet scenarios: the steady-state window, each wrk load's length, and rounds of loads.
const FULL_FLEET_STEADY_SECS: u64 = 30;
const QUICK_FLEET_STEADY_SECS: u64 = 10;
const FULL_FLEET_LOAD_SECS: u64 = 5;
const QUICK_FLEET_LOAD_SECS: u64 = 2;
const FULL_FLEET_ROUNDS: usize = 3;
const QUICK_FLEET_ROUNDS: usize = 1;

/// Scenario 8: leader kills measured, submit runs per side (in-memory queen, follower on etcd) and
/// their length, and drones registered through three queens.
const FULL_FAILOVER_REPEATS: usize = 5;
const QUICK_FAILOVER_REPEATS: usize = 2;
const FULL_QUEENS_RATE_RUNS: usize = 3;
const QUICK_QUEENS_RATE_RUNS: usize = 1;
const FULL_QUEENS_RATE_SECS: u64 = 6;
const QUICK_QUEENS_RATE_SECS: u64 = 2;
const FULL_QUEENS_FLEET: usize = 1000;
const QUICK_QUEENS_FLEET: usize = 200;

/// Scenario 9: tasks through each hive, and commands the baseline spawns.
const FULL_THROUGHPUT_TASKS: usize = 10_000;
const QUICK_THROUGHPUT_TASKS: usize = 2_000;

/// Scenario 10: runs per store (each on fresh queens), and each wrk load's length.
const FULL_SUBMISSION_RUNS: usize = 3;
const QUICK_SUBMISSION_RUNS: usize = 1;
const FULL_SUBMISSION_SECS: u64 = 6;
const QUICK_SUBMISSION_SECS: u64 = 2;

/// Scenario 11: how long tasks arrive (at 100 a second) on each store.
const FULL_LATENCY_SECS: u64 = 30;
const QUICK_LATENCY_SECS: u64 = 5;

/// Scenario 12: pending tasks the queen holds, and the length of each wrk load on her.
const FULL_QUEUE_TASKS: usize = 100_000;
const QUICK_QUEUE_TASKS: usize = 20_000;
const FULL_QUEUE_LOAD_SECS: u64 = 5;
const QUICK_QUEUE_LOAD_SECS: u64 = 2;

/// Scenario 13: tasks in flight when the leader is killed.
const FULL_FAILOVER_TASKS: usize = 2_000;
const QUICK_FAILOVER_TASKS: usize = 400;

/// Scenario 14: drones killed, one after another, each running 8 tasks.
const FULL_DRONE_LOSS_REPEATS: usize = 3;
const QUICK_DRONE_LOSS_REPEATS: usize = 1;

/// Scenario 15: how long the attacker's connections are held once all are answered, how long the
/// endless heads flood and how many times (each on a fresh queen), and how many new clients ask
/// while silent connections are held.
const FULL_ATTACK_HOLD_SECS: u64 = 3;
const QUICK_ATTACK_HOLD_SECS: u64 = 1;
const FULL_ENDLESS_SECS: u64 = 10;
const QUICK_ENDLESS_SECS: u64 = 3;
const FULL_ENDLESS_FLOODS: usize = 3;
const FULL_BIG_BODIES_SECS: u64 = 10;
const QUICK_BIG_BODIES_SECS: u64 = 3;
const QUICK_ENDLESS_FLOODS: usize = 1;
const FULL_SLOW_PROBES: usize = 50;
const QUICK_SLOW_PROBES: usize = 20;

/// Containment: tasks through each hive per round, rounds, and cancels measured.
const FULL_CONTAINMENT_TASKS: usize = 10_000;
const QUICK_CONTAINMENT_TASKS: usize = 2_000;
const FULL_CONTAINMENT_ROUNDS: usize = 2;
const QUICK_CONTAINMENT_ROUNDS: usize = 1;
const FULL_CANCELS: usize = 100;
const QUICK_CANCELS: usize = 20;

/// Scenario 16: rounds (one run of each hive each), and each run's length.
const FULL_FRONT_COST_ROUNDS: usize = 5;
const QUICK_FRONT_COST_ROUNDS: usize = 2;
const FULL_FRONT_COST_SECS: u64 = 6;
const QUICK_FRONT_COST_SECS: u64 = 2;

/// The command line.
pub struct Options {
    pub larve: PathBuf,
    /// The larve from before the front door, for scenario 16.
    pub old_larve: Option<PathBuf>,
    pub wrk: PathBuf,
    pub etcd: PathBuf,
    pub quick: bool,
    pub keep_logs: bool,
    /// Scenarios to run, by number or name; all when `None`.
    pub only: Option<Vec<String>>,
}

/// The options, or `None` when help was asked for.
pub fn parse() -> Result<Option<Options>> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    let quick = args.contains("--quick");
    let keep_logs = args.contains("--keep-logs");
    let only: Option<Vec<String>> = args
        .opt_value_from_fn("--only", |s| {
            s.split(',')
                .map(|pick| {
                    let pick = pick.trim();
                    if scenarios::exists(pick) {
                        Ok(pick.to_string())
                    } else {
                        Err(format!(
                            "{pick:?} is no scenario; pick among {}",
                            scenarios::names().join(", ")
                        ))
                    }
                })
                .collect()
        })
        .map_err(|e| e.to_string())?;
    let larve: Option<PathBuf> = args
        .opt_value_from_os_str("--larve", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let old_larve: Option<PathBuf> = args
        .opt_value_from_os_str("--old-larve", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let wrk: Option<PathBuf> = args
        .opt_value_from_os_str("--wrk", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let etcd: Option<PathBuf> = args
        .opt_value_from_os_str("--etcd-binary", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    if let Some(extra) = args.finish().first() {
        return Err(format!("unexpected argument {extra:?}\n\n{USAGE}"));
    }
    let larve = match larve {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary's directory: {e}"))?
            .with_file_name("larve"),
    };
    let found = |name: &str| on_path(name).unwrap_or_else(|| PathBuf::from(name));
    let wrk = wrk.unwrap_or_else(|| found(WRK));
    let etcd = etcd.unwrap_or_else(|| found(ETCD));
    Ok(Some(Options {
        larve,
        old_larve,
        wrk,
        etcd,
        quick,
        keep_logs,
        only,
    }))
}

/// The load generator's name, looked for on the `PATH` when `--wrk` is not given.
const WRK: &str = "wrk";

/// etcd's name, looked for on the `PATH` when `--etcd-binary` is not given.
const ETCD: &str = "etcd";

/// The first file called `name` in a directory of the `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `full`, or `quick_value` for a `--quick` run.
fn pick<T>(quick: bool, full: T, quick_value: T) -> T {
    if quick { quick_value } else { full }
}

/// Lengths and sizes of one run: the numbers, or smaller ones for `--quick`.
pub struct Plan {
    pub quick: bool,
    /// Scenario 1: runs per load, each on fresh queens, and each load's length.
    pub wrk_runs: usize,
    pub wrk_length: Duration,
    pub detection_repeats: usize,
    pub soak: Duration,
    /// The fleet scenarios: the fleet, the steady-state window, each load's length and rounds.
    pub fleet: FleetSize,
    pub fleet_steady: Duration,
    pub fleet_load: Duration,
    pub fleet_rounds: usize,
    pub burst_runs: usize,
    /// Scenario 8: leader kills, submit runs per side and their length, drones registered.
    pub failover_repeats: usize,
    pub queens_rate_runs: usize,
    pub queens_rate_length: Duration,
    pub queens_fleet: usize,
    /// Scenario 9: tasks through each hive (and commands the baseline spawns).
    pub throughput_tasks: usize,
    /// Scenario 10: runs per store and each load's length.
    pub submission_runs: usize,
    pub submission_length: Duration,
    /// Scenario 11: how long tasks arrive on each store.
    pub latency_length: Duration,
    /// Scenario 12: pending tasks held, and each load's length.
    pub queue_tasks: usize,
    pub queue_load: Duration,
    /// Scenario 13: tasks in flight at the leader's kill.
    pub failover_tasks: usize,
    /// Scenario 14: drones killed.
    pub drone_loss_repeats: usize,
    /// Scenario 15: the hold of the attacker's connections, the endless heads' flood and its
    /// repetitions, and the new clients asking while silent connections are held.
    pub attack_hold: Duration,
    pub endless_window: Duration,
    pub endless_floods: usize,
    pub slow_probes: usize,
    /// Scenario 15: how long the unauthenticated big bodies go on, against each larve.
    pub big_bodies_window: Duration,
    /// Scenario 16: rounds, and each run's length.
    pub front_cost_rounds: usize,
    pub front_cost_length: Duration,
    /// Containment: tasks through each hive per round, rounds, and cancels measured.
    pub containment_tasks: usize,
    pub containment_rounds: usize,
    pub cancels: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        Plan {
            quick,
            wrk_runs: pick(quick, FULL_WRK_RUNS, QUICK_WRK_RUNS),
            wrk_length: Duration::from_secs(pick(quick, FULL_WRK_SECS, QUICK_WRK_SECS)),
            detection_repeats: pick(quick, FULL_DETECTION_REPEATS, QUICK_DETECTION_REPEATS),
            soak: Duration::from_secs(pick(quick, FULL_SOAK_SECS, QUICK_SOAK_SECS)),
            fleet: pick(quick, FULL_FLEET, QUICK_FLEET),
            fleet_steady: Duration::from_secs(pick(
                quick,
                FULL_FLEET_STEADY_SECS,
                QUICK_FLEET_STEADY_SECS,
            )),
            fleet_load: Duration::from_secs(pick(
                quick,
                FULL_FLEET_LOAD_SECS,
                QUICK_FLEET_LOAD_SECS,
            )),
            fleet_rounds: pick(quick, FULL_FLEET_ROUNDS, QUICK_FLEET_ROUNDS),
            burst_runs: pick(quick, FULL_BURST_RUNS, QUICK_BURST_RUNS),
            failover_repeats: pick(quick, FULL_FAILOVER_REPEATS, QUICK_FAILOVER_REPEATS),
            queens_rate_runs: pick(quick, FULL_QUEENS_RATE_RUNS, QUICK_QUEENS_RATE_RUNS),
            queens_rate_length: Duration::from_secs(pick(
                quick,
                FULL_QUEENS_RATE_SECS,
                QUICK_QUEENS_RATE_SECS,
            )),
            queens_fleet: pick(quick, FULL_QUEENS_FLEET, QUICK_QUEENS_FLEET),
            throughput_tasks: pick(quick, FULL_THROUGHPUT_TASKS, QUICK_THROUGHPUT_TASKS),
            submission_runs: pick(quick, FULL_SUBMISSION_RUNS, QUICK_SUBMISSION_RUNS),
            submission_length: Duration::from_secs(pick(
                quick,
                FULL_SUBMISSION_SECS,
                QUICK_SUBMISSION_SECS,
            )),
            latency_length: Duration::from_secs(pick(quick, FULL_LATENCY_SECS, QUICK_LATENCY_SECS)),
            queue_tasks: pick(quick, FULL_QUEUE_TASKS, QUICK_QUEUE_TASKS),
            queue_load: Duration::from_secs(pick(
                quick,
                FULL_QUEUE_LOAD_SECS,
                QUICK_QUEUE_LOAD_SECS,
            )),
            failover_tasks: pick(quick, FULL_FAILOVER_TASKS, QUICK_FAILOVER_TASKS),
            drone_loss_repeats: pick(quick, FULL_DRONE_LOSS_REPEATS, QUICK_DRONE_LOSS_REPEATS),
            attack_hold: Duration::from_secs(pick(
                quick,
                FULL_ATTACK_HOLD_SECS,
                QUICK_ATTACK_HOLD_SECS,
            )),
            endless_window: Duration::from_secs(pick(quick, FULL_ENDLESS_SECS, QUICK_ENDLESS_SECS)),
            endless_floods: pick(quick, FULL_ENDLESS_FLOODS, QUICK_ENDLESS_FLOODS),
            slow_probes: pick(quick, FULL_SLOW_PROBES, QUICK_SLOW_PROBES),
            big_bodies_window: Duration::from_secs(pick(
                quick,
                FULL_BIG_BODIES_SECS,
                QUICK_BIG_BODIES_SECS,
            )),
            front_cost_rounds: pick(quick, FULL_FRONT_COST_ROUNDS, QUICK_FRONT_COST_ROUNDS),
            front_cost_length: Duration::from_secs(pick(
                quick,
                FULL_FRONT_COST_SECS,
                QUICK_FRONT_COST_SECS,
            )),
            containment_tasks: pick(quick, FULL_CONTAINMENT_TASKS, QUICK_CONTAINMENT_TASKS),
            containment_rounds: pick(quick, FULL_CONTAINMENT_ROUNDS, QUICK_CONTAINMENT_ROUNDS),
            cancels: pick(quick, FULL_CANCELS, QUICK_CANCELS),
        }
    }

    /// What kind of run this is, for the report's run line.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} of {} s per wrk load in scenario 1, fleet of {}, {} tasks in scenario 9)",
            if self.quick { "--quick" } else { "full" },
            report::runs(self.wrk_runs),
            self.wrk_length.as_secs(),
            self.fleet.total(),
            self.throughput_tasks
        )
    }
}
