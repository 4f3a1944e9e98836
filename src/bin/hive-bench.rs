//! `hive-bench`: runs real larves on loopback and measures them against the performance issue's
//! targets: submit throughput and latency, failure detection, no false removals under load, the
//! heartbeat at fleet scale, and footprint. Progress goes to stderr; one markdown table of every
//! number goes to stdout. `scripts/bench.sh` builds the release binaries and runs it.
//!
//! Every larve it starts is held by a [`Larve`] guard that kills the process when dropped, the fake
//! fleet stops its threads when dropped, and every wait has a deadline: a failing scenario ends with
//! nothing left running, and the next scenario still runs.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hive::config::HeartbeatConfig;
use hive::heartbeat::MAX_PROBE_THREADS;
use serde::Deserialize;
use ureq::Agent;

/// The help text, printed by `--help`.
const USAGE: &str = "\
usage: hive-bench [--larve PATH] [--quick] [--only N[,N...]] [--clients N] [--seconds S] [--keep-logs]

Starts queens and drones on 127.0.0.1, measures them, and prints a markdown table to stdout.

options:
  --larve PATH    the larve binary (default: larve next to this binary)
  --quick         shorter runs, fewer repeats, a 200-drone fleet
  --only LIST     run only these scenarios, e.g. --only 1,4 (default: all five)
  --clients N     concurrent submit clients in scenarios 1 and 3 (default 32)
  --seconds S     length of each load in scenario 1 (default 10; 2 with --quick)
  --keep-logs     keep the larves' logs and stdout (they are kept anyway when a scenario fails)
  -h, --help      print this help";

/// Submit clients of scenarios 1 and 3: the issue's 32.
const DEFAULT_CLIENTS: usize = 32;

/// Length of each of scenario 1's two loads (submit, then healthz).
const FULL_SUBMIT_SECS: f64 = 10.0;
const QUICK_SUBMIT_SECS: f64 = 2.0;

/// Kills and freezes measured in scenario 2, each.
const FULL_DETECTION_REPEATS: usize = 5;
const QUICK_DETECTION_REPEATS: usize = 2;

/// Drones in scenario 2 that are never harmed, so the queen always has a fleet to probe.
const DETECTION_BYSTANDERS: usize = 3;

/// Length of scenario 3's load, and its drones.
const FULL_SOAK_SECS: u64 = 60;
const QUICK_SOAK_SECS: u64 = 4;
const SOAK_DRONES: usize = 4;

/// Scenario 4's simulated fleet: (answering, refusing connections, never answering).
const FULL_FLEET: FleetSize = FleetSize {
    good: 800,
    refusing: 100,
    silent: 100,
};
const QUICK_FLEET: FleetSize = FleetSize {
    good: 160,
    refusing: 20,
    silent: 20,
};

/// Submit clients and load length of scenario 4's "during rounds" and "without rounds" runs.
const SCALE_CLIENTS: usize = 8;
const FULL_SCALE_LOAD_SECS: f64 = 5.0;
const QUICK_SCALE_LOAD_SECS: f64 = 2.0;

/// Scenario 2 and 3's heartbeat: a dead drone is noticed within seconds, so short runs see many rounds.
const FAST_INTERVAL_SECS: f64 = 0.5;
const FAST_TIMEOUT_SECS: f64 = 0.3;
const FAST_ATTEMPTS: u32 = 3;

/// Scenario 4's heartbeat interval; attempts, timeout and retry delay are the larve's defaults.
const SCALE_INTERVAL_SECS: f64 = 1.0;

/// An interval so long that a queen started with it never runs a round over drones registered later.
const NO_ROUNDS_INTERVAL_SECS: f64 = 3600.0;

/// Slack the issue allows on top of the detection bound, and on top of one drone's worst round.
const DETECTION_SLACK_SECS: f64 = 0.5;
const SCALE_ROUND_SLACK_SECS: f64 = 1.0;

/// The issue's other targets.
const SUBMIT_TASKS_PER_SEC_TARGET: f64 = 12_000.0;
const SUBMIT_P99_MS_TARGET: f64 = 10.0;
const HEALTHZ_SHARE_TARGET: f64 = 0.25;
const DURING_OVER_WITHOUT_TARGET: f64 = 2.0;
const QUEEN_RSS_MB_TARGET: f64 = 64.0;

/// The environment variable a larve reads its cluster token from.
const TOKEN_ENV: &str = "HIVE_TOKEN";

/// How long a larve may take to log its address, or a drone to appear in `/drones`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit for one control call (`/drones`, `/register`); a `/drones` of 1,000 drones is ~200 KB.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Limit for one benchmark request. A task no drone takes answers within the queen's 2 s task timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests slower than this are counted in scenario 1: at these loads that is not queueing but a
/// stalled connection (one the server accepted and left unserved) or a task timeout.
const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// Pause between two load clients' first calls, so connections open one by one as clients arrive
/// rather than in one burst (which tiny_http may leave partly unserved; see [`burst`]).
const RAMP_STEP: Duration = Duration::from_millis(5);

/// How long [`burst`] holds its connections open, waiting for every first answer.
const BURST_HOLD: Duration = Duration::from_millis(600);

/// Head start given to load threads so they begin on time.
const LOAD_START_DELAY: Duration = Duration::from_millis(50);

/// Extra time a load may run past its length (requests in flight at the end) before it is a failure.
const LOAD_GRACE: Duration = Duration::from_secs(10);

/// Poll periods: `/drones` while a drone is being detected (the issue's 10 ms), `/drones` during the
/// soak (50 ms), `/drones` while waiting for a round to start, and `/proc` while sampling.
const DETECTION_POLL: Duration = Duration::from_millis(10);
const SOAK_POLL: Duration = Duration::from_millis(50);
const ROUND_START_POLL: Duration = Duration::from_millis(20);
const SAMPLE_PERIOD: Duration = Duration::from_millis(20);
const WAIT_POLL: Duration = Duration::from_millis(10);

/// Every this many `/proc` samples, also count the threads named `probe` (reading one file per thread).
const PROBE_COUNT_EVERY_SAMPLES: u32 = 5;

/// Longest a sampler runs, whatever happens to the scenario that started it.
const MAX_SAMPLING: Duration = Duration::from_secs(600);

/// How long past the detection bound a drone may stay listed before scenario 2 gives up on it.
const DETECTION_GIVE_UP: Duration = Duration::from_secs(10);

/// How long scenario 4 waits for a round over the bad drones to start, and past the bound for it to end.
const ROUND_START_TIMEOUT: Duration = Duration::from_secs(15);
const ROUND_END_GRACE: Duration = Duration::from_secs(15);

/// Window over which an idle queen or drone is sampled; nothing happens in it but its own timers.
const IDLE_WINDOW: Duration = Duration::from_millis(500);

/// Window over which scenario 4's queen is sampled idle: longer than her 1 s interval plus a round,
/// so it holds at least one round.
const IDLE_ROUNDS_WINDOW: Duration = Duration::from_millis(1200);

/// Fake drones' threads: they parse a few header lines, so a small stack keeps thousands cheap.
const FAKE_STACK_BYTES: usize = 64 * 1024;

/// A fake drone's connection thread wakes this often to see whether the fleet is stopping.
const FAKE_READ_POLL: Duration = Duration::from_millis(200);

/// Most header lines a fake drone reads in one request, and the largest body it accepts.
const MAX_FAKE_HEADERS: usize = 64;
const MAX_FAKE_BODY_BYTES: usize = 64 * 1024;

/// Pause after a failed accept (out of descriptors), so the accept loop does not spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Limit for the connection that wakes a fake drone's accept loop at shutdown.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// How long stopping the fake fleet waits for its threads to end.
const FLEET_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What a fake drone answers: a larve drone's `/healthz` and `/do_task`.
const FAKE_HEALTH_BODY: &str = r#"{"status":"Status.READY","version":"0.0.1","mode":"Mode.DRONE"}"#;
const FAKE_TASK_BODY: &str = r#"{"result":"OK"}"#;
const FAKE_NOT_FOUND_BODY: &str = r#"{"error":"not found"}"#;

/// Scenario labels; the table is sorted by them, so each scenario's rows stay together in order.
const SUBMIT: &str = "1. submit";
const DETECTION: &str = "2. failure detection";
const SOAK: &str = "3. no false removals";
const SCALE: &str = "4. heartbeat scale";
const FOOTPRINT: &str = "5. footprint";

/// Unit conversions for the table.
const KB_PER_MB: f64 = 1024.0;
const MS_PER_SEC: f64 = 1000.0;

/// Errors are one line for the table and the progress log, so a `String` carries them.
type Result<T> = std::result::Result<T, String>;

/// One scenario: it measures, and adds its rows and notes to the report.
type Scenario = fn(&Bench, &mut Report) -> Result<()>;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(why) => {
            eprintln!("hive-bench: error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every scenario, prints the table, and fails if any scenario could not finish.
fn run() -> Result<ExitCode> {
    let Some(options) = parse_options()? else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    if !options.larve.is_file() {
        return Err(format!(
            "no larve at {} (build it with cargo build --release, or pass --larve PATH)",
            options.larve.display()
        ));
    }
    let mut workdir = WorkDir::create(options.keep_logs)?;
    let plan = Plan::new(&options);
    let bench = Bench {
        larve: options.larve.clone(),
        dir: workdir.path.clone(),
        control: agent(CONTROL_TIMEOUT, 4),
        plan,
    };
    progress(&format!(
        "{} run; logs in {}",
        if options.quick { "quick" } else { "full" },
        workdir.path.display()
    ));

    let mut report = Report::default();
    let scenarios: [(&str, Scenario); 5] = [
        (SUBMIT, Bench::submit),
        (DETECTION, Bench::detection),
        (SOAK, Bench::soak),
        (FOOTPRINT, Bench::footprint),
        (SCALE, Bench::scale),
    ];
    let mut failed = false;
    let chosen = scenarios.into_iter().filter(|(label, _)| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|n| label.starts_with(n.as_str())))
    });
    for (label, scenario) in chosen {
        progress(&format!("scenario {label}"));
        let started = Instant::now();
        if let Err(why) = scenario(&bench, &mut report) {
            progress(&format!("scenario {label} failed: {why}"));
            report.row(label, "error (scenario did not finish)", why, "-");
            failed = true;
        }
        progress(&format!(
            "scenario {label} took {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    if failed {
        workdir.keep = true;
        progress(&format!("logs kept in {}", workdir.path.display()));
    }
    report.print(&machine(), &bench.plan);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One progress line on stderr, so stdout carries only the table, stamped with seconds since the
/// first line so slow steps stand out.
fn progress(line: &str) {
    static FIRST: OnceLock<Instant> = OnceLock::new();
    let since = FIRST.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("hive-bench: [{since:6.1} s] {line}");
}

/// The command line.
struct Options {
    larve: PathBuf,
    quick: bool,
    clients: usize,
    submit_secs: Option<f64>,
    keep_logs: bool,
    /// Scenario numbers to run (`1` to `5`); all when `None`.
    only: Option<Vec<String>>,
}

/// The options, or `None` when help was asked for.
fn parse_options() -> Result<Option<Options>> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    let quick = args.contains("--quick");
    let keep_logs = args.contains("--keep-logs");
    let only: Option<Vec<String>> = args
        .opt_value_from_fn("--only", |s| {
            let numbers: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
            if numbers
                .iter()
                .all(|n| ["1", "2", "3", "4", "5"].contains(&n.as_str()))
            {
                Ok(numbers)
            } else {
                Err(format!(
                    "{s:?} is not a list of scenario numbers from 1 to 5, like 1,4"
                ))
            }
        })
        .map_err(|e| e.to_string())?;
    let larve: Option<PathBuf> = args
        .opt_value_from_os_str("--larve", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let clients: usize = args
        .opt_value_from_fn("--clients", |s| match s.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!("{s:?} is not a number of clients from 1 to 1024")),
        })
        .map_err(|e| e.to_string())?
        .unwrap_or(DEFAULT_CLIENTS);
    let submit_secs: Option<f64> = args
        .opt_value_from_fn("--seconds", |s| match s.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 600.0 => Ok(secs),
            _ => Err(format!(
                "{s:?} is not a number of seconds above 0, at most 600"
            )),
        })
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
    Ok(Some(Options {
        larve,
        quick,
        clients,
        submit_secs,
        keep_logs,
        only,
    }))
}

/// Lengths and sizes of one run: the issue's numbers, or smaller ones for `--quick`.
struct Plan {
    quick: bool,
    clients: usize,
    submit: Duration,
    detection_repeats: usize,
    soak: Duration,
    fleet: FleetSize,
    scale_load: Duration,
}

impl Plan {
    fn new(options: &Options) -> Plan {
        let quick = options.quick;
        let submit_secs = options.submit_secs.unwrap_or(if quick {
            QUICK_SUBMIT_SECS
        } else {
            FULL_SUBMIT_SECS
        });
        Plan {
            quick,
            clients: options.clients,
            submit: Duration::from_secs_f64(submit_secs),
            detection_repeats: if quick {
                QUICK_DETECTION_REPEATS
            } else {
                FULL_DETECTION_REPEATS
            },
            soak: Duration::from_secs(if quick {
                QUICK_SOAK_SECS
            } else {
                FULL_SOAK_SECS
            }),
            fleet: if quick { QUICK_FLEET } else { FULL_FLEET },
            scale_load: Duration::from_secs_f64(if quick {
                QUICK_SCALE_LOAD_SECS
            } else {
                FULL_SCALE_LOAD_SECS
            }),
        }
    }
}

/// How many fake drones of each kind scenario 4 simulates.
#[derive(Clone, Copy)]
struct FleetSize {
    good: usize,
    refusing: usize,
    silent: usize,
}

impl FleetSize {
    fn total(&self) -> usize {
        self.good + self.refusing + self.silent
    }
}

/// The run's directory for larve logs and drone stdout; removed when dropped unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(keep: bool) -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("hive-bench-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A running larve. Dropping it kills it with SIGKILL (which also ends a stopped process) and reaps
/// it, so no larve outlives the scenario that started it, even when the scenario fails.
struct Larve {
    child: Child,
    label: String,
    port: u16,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Larve {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`, as a drone registers itself.
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the kernel still completes connections to its port, but nothing answers them.
    fn freeze(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -STOP {} failed: {status}", self.pid()))
        }
    }

    /// Everything it logged so far.
    fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Larve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port in a larve's `... listening on 127.0.0.1:PORT; ...` (queen) or `..., ...` (drone) line.
fn listening_port(log: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(" listening on ")?;
        let address = rest.split([';', ',']).next()?.trim();
        address.parse::<SocketAddr>().ok().map(|a| a.port())
    })
}

/// An HTTP client that reports every status as a response (a non-200 is counted, not thrown), with a
/// limit on each whole call.
fn agent(timeout: Duration, idle_per_host: usize) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections_per_host(idle_per_host)
        .build()
        .into()
}

/// One drone as `GET /drones` shows it; only the fields the scenarios read.
#[derive(Deserialize)]
struct DroneEntry {
    name: String,
    address: String,
    last_seen: f64,
    failures: u32,
}

/// What every scenario needs: where the larve is, where logs go, and the plan.
struct Bench {
    larve: PathBuf,
    dir: PathBuf,
    control: Agent,
    plan: Plan,
}

impl Bench {
    /// Starts a larve with `args` (stdout and stderr to files named after `label`) and waits until
    /// it logs the port it listens on.
    fn start(&self, label: &str, args: &[String]) -> Result<Larve> {
        let stdout_path = self.dir.join(format!("{label}.out"));
        let stderr_path = self.dir.join(format!("{label}.log"));
        let create =
            |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
        let child = Command::new(&self.larve)
            .args(args)
            // A cluster token in the environment would lock the bench's own calls out.
            .env_remove(TOKEN_ENV)
            .stdin(Stdio::null())
            .stdout(create(&stdout_path)?)
            .stderr(create(&stderr_path)?)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.larve.display()))?;
        let mut larve = Larve {
            child,
            label: label.to_string(),
            port: 0,
            stdout_path,
            stderr_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = listening_port(&larve.log()) {
                larve.port = port;
                return Ok(larve);
            }
            if let Ok(Some(status)) = larve.child.try_wait() {
                return Err(format!(
                    "{label} exited ({status}) before listening: {}",
                    larve.log().trim()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{label} did not log its address within {START_TIMEOUT:?}"
                ));
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Starts a queen on a free port with `extra` flags.
    fn queen(&self, label: &str, extra: &[String]) -> Result<Larve> {
        let mut args: Vec<String> = ["--queen", "--port", "0"].map(String::from).into();
        args.extend_from_slice(extra);
        self.start(label, &args)
    }

    /// Starts `count` drones of `queen` and waits until she lists them all.
    fn drones(&self, queen: &Larve, label: &str, count: usize) -> Result<Vec<Larve>> {
        let args: Vec<String> = [
            "--queen-host".to_string(),
            queen.address(),
            "--port".into(),
            "0".into(),
        ]
        .into();
        let drones = (0..count)
            .map(|i| self.start(&format!("{label}-{i}"), &args))
            .collect::<Result<Vec<Larve>>>()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let listed: HashSet<String> = self
                .list(queen)
                .map(|list| list.into_iter().map(|d| d.address).collect())
                .unwrap_or_default();
            if drones.iter().all(|d| listed.contains(&d.address())) {
                return Ok(drones);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{label} drones not all registered within {START_TIMEOUT:?}"
                ));
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// The queen's `GET /drones`.
    fn list(&self, queen: &Larve) -> Result<Vec<DroneEntry>> {
        let url = format!("http://{}/drones", queen.address());
        let mut reply = self
            .control
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = reply.status().as_u16();
        let body = reply
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Registers `address` with the queen by hand, as a drone would.
    fn register(&self, queen: &Larve, address: &str) -> Result<()> {
        let url = format!("http://{}/register", queen.address());
        let body = serde_json::json!({ "address": address }).to_string();
        let mut reply = self
            .control
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = reply.status().as_u16();
        let _ = reply.body_mut().read_to_vec();
        if status == 200 {
            Ok(())
        } else {
            Err(format!("POST {url} {address}: HTTP {status}"))
        }
    }

    /// Time from now until `address` is no longer in the queen's `/drones`, polled every 10 ms.
    fn time_until_gone(&self, queen: &Larve, address: &str, give_up: Duration) -> Result<f64> {
        let started = Instant::now();
        loop {
            if let Ok(list) = self.list(queen)
                && !list.iter().any(|d| d.address == address)
            {
                return Ok(started.elapsed().as_secs_f64());
            }
            if started.elapsed() > give_up {
                return Err(format!(
                    "{address} still listed after {give_up:?}; the queen never removed it"
                ));
            }
            thread::sleep(DETECTION_POLL);
        }
    }

    /// Scenario 1: submit throughput and latency against 2 drones, the healthz ceiling with the same
    /// clients, and whether every 200 became exactly one line of drone stdout.
    fn submit(&self, report: &mut Report) -> Result<()> {
        let queen = self.queen("s1-queen", &[])?;
        let drones = self.drones(&queen, "s1-drone", 2)?;
        let (clients, length) = (self.plan.clients, self.plan.submit);
        progress(&format!(
            "burst: {clients} new connections to the fresh queen at once"
        ));
        let (burst_slow, burst_failed) = burst(&queen, clients)?;
        progress(&format!(
            "submit: {clients} clients for {:.0} s",
            length.as_secs_f64()
        ));
        let submit = load(&queen, Call::Submit, clients, length)?;
        progress(&format!(
            "healthz: {clients} clients for {:.0} s",
            length.as_secs_f64()
        ));
        let health = load(&queen, Call::Health, clients, length)?;
        let task_timeouts = queen.log().matches(" not taken by drone-").count();
        let mut printed = 0;
        for drone in &drones {
            let out = fs::read(&drone.stdout_path)
                .map_err(|e| format!("{}: {e}", drone.stdout_path.display()))?;
            printed += out.iter().filter(|&&b| b == b'\n').count() as u64;
        }

        let tps = submit.per_sec();
        let p99 = submit.percentile_ms(0.99);
        let share = tps / health.per_sec();
        let context = format!("{clients} clients, {:.0} s", length.as_secs_f64());
        report.row(
            SUBMIT,
            format!("submit tasks/s ({context})"),
            format!("{tps:.0}"),
            target(
                &format!("≥ {SUBMIT_TASKS_PER_SEC_TARGET:.0}"),
                tps >= SUBMIT_TASKS_PER_SEC_TARGET,
            ),
        );
        report.row(
            SUBMIT,
            "submit errors (non-200 or transport)",
            submit.errors.to_string(),
            target("0", submit.errors == 0),
        );
        report.row(SUBMIT, "submit p50 ms", ms(submit.percentile_ms(0.5)), "-");
        report.row(
            SUBMIT,
            "submit p99 ms",
            ms(p99),
            target(
                &format!("≤ {SUBMIT_P99_MS_TARGET:.0}"),
                p99 <= SUBMIT_P99_MS_TARGET,
            ),
        );
        report.row(
            SUBMIT,
            "submit p99.9 ms",
            ms(submit.percentile_ms(0.999)),
            "-",
        );
        report.row(SUBMIT, "submit max ms", ms(submit.max_ms()), "-");
        report.row(
            SUBMIT,
            format!("healthz requests/s, same queen ({context}): HTTP ceiling"),
            format!("{:.0}", health.per_sec()),
            "-",
        );
        report.row(
            SUBMIT,
            "healthz p99 / max ms",
            format!(
                "{} / {}",
                ms(health.percentile_ms(0.99)),
                ms(health.max_ms())
            ),
            "-",
        );
        report.row(
            SUBMIT,
            "healthz errors",
            health.errors.to_string(),
            target("0", health.errors == 0),
        );
        report.row(
            SUBMIT,
            "submit / healthz throughput",
            format!("{:.1}%", share * 100.0),
            target(
                &format!("≥ {:.0}%", HEALTHZ_SHARE_TARGET * 100.0),
                share >= HEALTHZ_SHARE_TARGET,
            ),
        );
        let answered = submit.ok + submit.warmup_ok;
        let mismatch = printed as i64 - answered as i64;
        report.row(
            SUBMIT,
            "drone stdout lines − submit 200s (warm-up included)",
            format!("{mismatch} ({printed} lines, {answered} 200s)"),
            target("0", mismatch == 0),
        );
        for (what, run) in [("submit", &submit), ("healthz", &health)] {
            if let Some(error) = &run.first_error {
                report.note(format!("{SUBMIT}: first {what} error: {error}"));
            }
        }
        let (slow_submits, slow_healths) = (
            submit.slower_than(SLOW_REQUEST),
            health.slower_than(SLOW_REQUEST),
        );
        report.row(
            SUBMIT,
            "tasks a drone did not take in time (queen log: not taken by)",
            task_timeouts.to_string(),
            target("0 expected", task_timeouts == 0),
        );
        report.row(
            SUBMIT,
            format!(
                "burst of {clients} new connections to the fresh queen: first /healthz slower than {} ms / failed",
                SLOW_REQUEST.as_millis()
            ),
            format!("{burst_slow} / {burst_failed}"),
            target("0 / 0 expected", burst_slow + burst_failed == 0),
        );
        report.row(
            SUBMIT,
            format!(
                "requests slower than {} ms: submit / healthz",
                SLOW_REQUEST.as_millis()
            ),
            format!("{slow_submits} / {slow_healths}"),
            target("0 / 0 expected", slow_submits + slow_healths == 0),
        );
        report.note(format!(
            "{SUBMIT}: latency is per request as each client saw it (send to last body byte), over every \
             request including errors; one ureq Agent (one kept-alive connection) per client; clients start {} ms \
             apart and only calls sent after the last one started are counted; the queen runs at the default \
             log level (info), which logs one line per task. The burst runs first, on the fresh queen: {} clients \
             each open a connection at the same instant, ask /healthz once, and keep the connection open up to \
             {} s or until all have answered. A task a drone did not take in time goes to the other drone, and \
             the first may still print it when it gets to it: delivery is at least once, so each such task can \
             add one to the stdout mismatch",
            RAMP_STEP.as_millis(),
            self.plan.clients,
            BURST_HOLD.as_secs_f64()
        ));
        Ok(())
    }

    /// Scenario 2: seconds from kill -9 (and from SIGSTOP) of a drone until the queen no longer lists
    /// it, under a fast heartbeat. The two series run side by side, each with its own queen, so one
    /// queen's long rounds over a frozen drone cannot delay the other's verdict on a killed one.
    fn detection(&self, report: &mut Report) -> Result<()> {
        let heartbeat = fast_heartbeat();
        let repeats = self.plan.detection_repeats;
        let bound = heartbeat.detection_bound().as_secs_f64();
        let (kills, freezes) = thread::scope(|scope| {
            let kills = scope.spawn(|| self.detection_series(&heartbeat, Strike::Kill));
            let freezes = self.detection_series(&heartbeat, Strike::Freeze);
            let kills = kills
                .join()
                .unwrap_or_else(|_| Err("the kill -9 series panicked".into()));
            (kills, freezes)
        });
        let (mut killed, killed_lost) = kills?;
        let (mut frozen, frozen_lost) = freezes?;
        let bystanders_lost = killed_lost + frozen_lost;

        let goal = bound + DETECTION_SLACK_SECS;
        let goal_text = format!("≤ {goal:.1} s (bound + {DETECTION_SLACK_SECS} s)");
        report.row(
            DETECTION,
            format!(
                "bound: interval + attempts × (timeout + retry delay) = {} + {} × ({} + {})",
                heartbeat.interval.as_secs_f64(),
                heartbeat.attempts,
                heartbeat.timeout.as_secs_f64(),
                heartbeat.retry_delay.as_secs_f64()
            ),
            format!("{bound:.1} s"),
            "-",
        );
        for (what, samples) in [("kill -9", &mut killed), ("SIGSTOP", &mut frozen)] {
            samples.sort_by(f64::total_cmp);
            let median = samples[samples.len() / 2];
            let max = samples[samples.len() - 1];
            report.row(
                DETECTION,
                format!("{what}: s until gone from /drones, median of {repeats}"),
                format!("{median:.2} s"),
                target(&goal_text, median <= goal),
            );
            report.row(
                DETECTION,
                format!("{what}: s until gone, max of {repeats}"),
                format!("{max:.2} s"),
                target(&goal_text, max <= goal),
            );
            let all: Vec<String> = samples.iter().map(|s| format!("{s:.2}")).collect();
            report.note(format!(
                "{DETECTION}: {what} samples (s, sorted): {}",
                all.join(", ")
            ));
        }
        report.row(
            DETECTION,
            format!(
                "healthy bystander drones removed (of {} on the two queens)",
                2 * DETECTION_BYSTANDERS
            ),
            bystanders_lost.to_string(),
            target("0", bystanders_lost == 0),
        );
        Ok(())
    }

    /// One series of scenario 2: a queen, bystanders, and `repeats` victims struck one after
    /// another. Returns the seconds each took to disappear, and how many bystanders were lost.
    fn detection_series(
        &self,
        heartbeat: &HeartbeatConfig,
        strike: Strike,
    ) -> Result<(Vec<f64>, usize)> {
        let label = match strike {
            Strike::Kill => "s2-kill",
            Strike::Freeze => "s2-stop",
        };
        let queen = self.queen(&format!("{label}-queen"), &heartbeat_args(heartbeat))?;
        let bystanders = self.drones(&queen, &format!("{label}-drone"), DETECTION_BYSTANDERS)?;
        let victims = self.drones(
            &queen,
            &format!("{label}-victim"),
            self.plan.detection_repeats,
        )?;
        let give_up = heartbeat.detection_bound() + DETECTION_GIVE_UP;
        let interval_ms = heartbeat.interval.as_millis() as u64;
        let mut samples = Vec::new();
        for mut victim in victims {
            // Strike at a random point of the heartbeat cycle, as a real failure would.
            thread::sleep(Duration::from_millis(fastrand::u64(0..interval_ms)));
            let address = victim.address();
            match strike {
                Strike::Kill => victim.kill(),
                Strike::Freeze => victim.freeze()?,
            }
            let seconds = self.time_until_gone(&queen, &address, give_up)?;
            progress(&format!("{}: gone after {seconds:.2} s", victim.label));
            samples.push(seconds);
            // Dropping the victim SIGKILLs it: a stopped process dies too.
        }
        let listed: HashSet<String> = self.list(&queen)?.into_iter().map(|d| d.address).collect();
        let lost = bystanders
            .iter()
            .filter(|d| !listed.contains(&d.address()))
            .count();
        Ok((samples, lost))
    }

    /// Scenario 3: scenario 1's load for a minute against 4 healthy drones under the fast heartbeat;
    /// no drone may be removed, and every drone's `last_seen` should advance every interval.
    fn soak(&self, report: &mut Report) -> Result<()> {
        let heartbeat = fast_heartbeat();
        let queen = self.queen("s3-queen", &heartbeat_args(&heartbeat))?;
        let _drones = self.drones(&queen, "s3-drone", SOAK_DRONES)?;
        let before = self.list(&queen)?;
        let mut seen: HashMap<String, Vec<f64>> = before
            .iter()
            .map(|d| (d.name.clone(), vec![d.last_seen]))
            .collect();
        let (clients, length) = (self.plan.clients, self.plan.soak);
        progress(&format!(
            "soak: {clients} clients submitting for {} s while /drones is polled every {} ms",
            length.as_secs(),
            SOAK_POLL.as_millis()
        ));
        let mut polls_failed = 0;
        let mut max_failures = 0;
        let submitted = thread::scope(|scope| {
            let loader = scope.spawn(|| load(&queen, Call::Submit, clients, length));
            let deadline = Instant::now() + length + LOAD_GRACE;
            while !loader.is_finished() && Instant::now() < deadline {
                match self.list(&queen) {
                    Ok(list) => {
                        for drone in list {
                            max_failures = max_failures.max(drone.failures);
                            let values = seen.entry(drone.name).or_default();
                            if values.last() != Some(&drone.last_seen) {
                                values.push(drone.last_seen);
                            }
                        }
                    }
                    Err(_) => polls_failed += 1,
                }
                thread::sleep(SOAK_POLL);
            }
            loader
                .join()
                .unwrap_or_else(|_| Err("the load thread panicked".into()))
        })?;
        let now = unix_now();
        let after: HashSet<String> = self.list(&queen)?.into_iter().map(|d| d.name).collect();
        let missing = before.iter().filter(|d| !after.contains(&d.name)).count();
        let log = queen.log();
        let removals = log.matches(" removed drone-").count();
        let task_timeouts = log.matches(" not taken by drone-").count();

        let late_gap = 2.0 * heartbeat.interval.as_secs_f64();
        let mut late = 0;
        let mut max_gap: f64 = 0.0;
        for values in seen.values() {
            // The time since the last advance counts too: rounds that stopped altogether are late.
            let ends = values.iter().copied().chain([now]);
            for (a, b) in values.iter().zip(ends.skip(1)) {
                let gap = b - a;
                max_gap = max_gap.max(gap);
                if gap > late_gap {
                    late += 1;
                }
            }
        }

        report.row(
            SOAK,
            format!("healthy drones missing from /drones at the end (of {SOAK_DRONES})"),
            missing.to_string(),
            target("0", missing == 0),
        );
        report.row(
            SOAK,
            "removals in the queen's log",
            removals.to_string(),
            target("0", removals == 0),
        );
        report.row(
            SOAK,
            format!("last_seen gaps > 2 × interval ({late_gap} s): late rounds, all drones"),
            late.to_string(),
            target("0 expected", late == 0),
        );
        report.row(
            SOAK,
            "max last_seen gap s",
            format!("{max_gap:.2}"),
            target(&format!("≤ {late_gap} expected"), max_gap <= late_gap),
        );
        report.row(
            SOAK,
            "highest failures seen in /drones (failed probes and tasks since last seen)",
            max_failures.to_string(),
            "-",
        );
        report.row(
            SOAK,
            "tasks a drone did not take in time (queen log: not taken by)",
            task_timeouts.to_string(),
            target("0 expected", task_timeouts == 0),
        );
        report.row(
            SOAK,
            format!(
                "submit tasks/s during the soak ({clients} clients, {} s)",
                length.as_secs()
            ),
            format!("{:.0}", submitted.per_sec()),
            "-",
        );
        report.row(
            SOAK,
            "submit p99 ms / errors during the soak",
            format!(
                "{} / {}",
                ms(submitted.percentile_ms(0.99)),
                submitted.errors
            ),
            "-",
        );
        report.note(format!(
            "{SOAK}: heartbeat every {} s, {} tries of {} s, {} s apart; /drones polled every {} ms \
             ({polls_failed} polls failed); a gap is between successive distinct last_seen values of one \
             drone (plus the time from its last one to the end)",
            heartbeat.interval.as_secs_f64(),
            heartbeat.attempts,
            heartbeat.timeout.as_secs_f64(),
            heartbeat.retry_delay.as_secs_f64(),
            SOAK_POLL.as_millis()
        ));
        Ok(())
    }

    /// Scenario 5 (idle part): an idle queen and an idle drone. The queen holding a fleet is measured
    /// in scenario 4.
    fn footprint(&self, report: &mut Report) -> Result<()> {
        let queen = self.queen("s5-queen", &[])?;
        let idle_queen = sample_for(queen.pid(), IDLE_WINDOW);
        let drones = self.drones(&queen, "s5-drone", 1)?;
        let idle_drone = sample_for(drones[0].pid(), IDLE_WINDOW);
        for (what, peak) in [
            ("idle queen (no drones)", idle_queen),
            ("idle drone (registered)", idle_drone),
        ] {
            report.row(FOOTPRINT, format!("{what}: RSS MB"), mb(peak.rss_kb), "-");
            report.row(
                FOOTPRINT,
                format!("{what}: threads"),
                peak.max_threads.to_string(),
                "-",
            );
        }
        Ok(())
    }

    /// Scenario 4: a queen heartbeating a simulated fleet with refusing and never-answering drones:
    /// the first full round's length, her threads and memory, and submit p99 during the round against
    /// a second queen that never runs a round.
    fn scale(&self, report: &mut Report) -> Result<()> {
        let size = self.plan.fleet;
        progress(&format!(
            "fleet: {} answering, {} refusing, {} never answering",
            size.good, size.refusing, size.silent
        ));
        let fleet = Fleet::start(size)?;
        let load_length = self.plan.scale_load;

        // Without rounds: a queen whose only round ran before any drone registered.
        let calm = self.queen(
            "s4-queen-without",
            &[
                "--heartbeat-interval".into(),
                NO_ROUNDS_INTERVAL_SECS.to_string(),
                "--log-level".into(),
                "debug".into(),
            ],
        )?;
        for address in &fleet.good {
            self.register(&calm, address)?;
        }
        progress(&format!(
            "submit without rounds: {SCALE_CLIENTS} clients for {:.0} s",
            load_length.as_secs_f64()
        ));
        let without = load(&calm, Call::Submit, SCALE_CLIENTS, load_length)?;
        drop(calm);

        // During rounds: the queen under test, sampled from start to end.
        let heartbeat = HeartbeatConfig {
            interval: Duration::from_secs_f64(SCALE_INTERVAL_SECS),
            ..HeartbeatConfig::default()
        };
        let mut args = heartbeat_args(&heartbeat);
        args.extend(["--log-level".to_string(), "debug".to_string()]);
        let queen = self.queen("s4-queen", &args)?;
        let sampler = Sampler::start(queen.pid());
        // All at once, right after start: her first round ran over an empty registry, so the next,
        // one interval later, holds every drone registered by then. The answering drones go first, so
        // if registering takes longer than an interval, that round holds only them.
        for address in fleet
            .good
            .iter()
            .chain(&fleet.refusing)
            .chain(&fleet.silent)
        {
            self.register(&queen, address)?;
        }
        let refusing: HashSet<&String> = fleet.refusing.iter().collect();
        let bad: HashSet<&String> = refusing.iter().copied().chain(&fleet.silent).collect();
        let round_started = wait_for(ROUND_START_TIMEOUT, "a round over the bad drones", || {
            let list = self.list(&queen).ok()?;
            list.iter()
                .any(|d| refusing.contains(&d.address) && d.failures > 0)
                .then(Instant::now)
        })?;
        let log_at_start = queen.log().len();
        progress(&format!(
            "submit during the first full round: {SCALE_CLIENTS} clients for {:.0} s",
            load_length.as_secs_f64()
        ));
        let during = load(&queen, Call::Submit, SCALE_CLIENTS, load_length)?;
        let round_bound = heartbeat.detection_bound() - heartbeat.interval;
        wait_for(
            round_bound + ROUND_END_GRACE,
            "the bad drones' removal",
            || {
                let list = self.list(&queen).ok()?;
                (!list.iter().any(|d| bad.contains(&d.address))).then_some(())
            },
        )?;
        progress(&format!(
            "submit during rounds over the answering drones: {SCALE_CLIENTS} clients for {:.0} s",
            load_length.as_secs_f64()
        ));
        let during_good = load(&queen, Call::Submit, SCALE_CLIENTS, load_length)?;
        let at_scale = sampler.finish();
        let idle = sample_for(queen.pid(), IDLE_ROUNDS_WINDOW);

        let log = queen.log();
        let rounds = heartbeat_rounds(&log);
        let (full_n, full_ms) = rounds
            .iter()
            .rev()
            .max_by_key(|(n, _)| *n)
            .copied()
            .ok_or("the queen logged no heartbeat round")?;
        let listed: HashSet<String> = self.list(&queen)?.into_iter().map(|d| d.address).collect();
        let good_lost = fleet.good.iter().filter(|a| !listed.contains(*a)).count();
        let removals = log.matches(" removed drone-").count();
        let tasks_refused = log.matches(" not taken by drone-").count();
        // The round that was under way when the load started is the first to end after it.
        let overlap = heartbeat_rounds(log.get(log_at_start..).unwrap_or_default())
            .first()
            .map(|&(_, ms)| {
                let round_end = round_started + Duration::from_millis(ms);
                let end = round_end.min(during.started + during.elapsed);
                let start = round_started.max(during.started);
                end.saturating_duration_since(start).as_secs_f64()
            });

        let round_goal = round_bound.as_secs_f64() + SCALE_ROUND_SLACK_SECS;
        let full_secs = full_ms as f64 / MS_PER_SEC;
        report.row(
            SCALE,
            "fleet: answering / refusing / never answering",
            format!("{} / {} / {}", size.good, size.refusing, size.silent),
            "-",
        );
        report.row(
            SCALE,
            format!("first full round ({full_n} drones) s"),
            format!("{full_secs:.2}"),
            target(
                &format!(
                    "≤ {round_goal:.1} ({} × ({} + {}) + {SCALE_ROUND_SLACK_SECS})",
                    heartbeat.attempts,
                    heartbeat.timeout.as_secs_f64(),
                    heartbeat.retry_delay.as_secs_f64()
                ),
                full_secs <= round_goal,
            ),
        );
        report.row(
            SCALE,
            "removals logged (bad drones are expected to go)",
            removals.to_string(),
            target(
                &format!("{} (refusing + never answering)", bad.len()),
                removals == bad.len(),
            ),
        );
        report.row(
            SCALE,
            "answering drones removed",
            good_lost.to_string(),
            target("0", good_lost == 0),
        );
        report.row(
            SCALE,
            "queen peak threads",
            at_scale.max_threads.to_string(),
            "-",
        );
        report.row(
            SCALE,
            "queen peak threads named probe (workers + threads they spawn)",
            at_scale.max_probe_threads.to_string(),
            target(
                &format!("≤ {MAX_PROBE_THREADS} (MAX_PROBE_THREADS)"),
                at_scale.max_probe_threads <= MAX_PROBE_THREADS,
            ),
        );
        let overlap_text = overlap.map_or("unknown".to_string(), |s| format!("{s:.1}"));
        let without_p99 = without.percentile_ms(0.99);
        let loads = [
            (
                format!(
                    "during the first full round ({overlap_text} s inside it; bad drones still take tasks)"
                ),
                &during,
            ),
            (
                format!("during rounds over the {} answering drones only", size.good),
                &during_good,
            ),
        ];
        for (when, run) in &loads {
            report.row(
                SCALE,
                format!("submit p99 ms {when}"),
                ms(run.percentile_ms(0.99)),
                "-",
            );
        }
        report.row(
            SCALE,
            format!(
                "submit p99 ms without rounds (second queen, same {} drones)",
                size.good
            ),
            ms(without_p99),
            "-",
        );
        for (when, run) in &loads {
            let ratio = run.percentile_ms(0.99) / without_p99;
            report.row(
                SCALE,
                format!("submit p99 {when} / without"),
                format!("{ratio:.2}×"),
                target(
                    &format!("≤ {DURING_OVER_WITHOUT_TARGET}×"),
                    ratio <= DURING_OVER_WITHOUT_TARGET,
                ),
            );
        }
        report.row(
            SCALE,
            "submit tasks/s: first round / answering-only rounds / without",
            format!(
                "{:.0} / {:.0} / {:.0}",
                during.per_sec(),
                during_good.per_sec(),
                without.per_sec()
            ),
            "-",
        );
        report.row(
            SCALE,
            "submit errors: first round / answering-only rounds / without",
            format!(
                "{} / {} / {}",
                during.errors, during_good.errors, without.errors
            ),
            target(
                "0 / 0 / 0",
                during.errors + during_good.errors + without.errors == 0,
            ),
        );
        report.row(
            SCALE,
            "tasks a bad drone failed (queen log: not taken by)",
            tasks_refused.to_string(),
            "-",
        );
        let rss_mb = at_scale.hwm_kb as f64 / KB_PER_MB;
        report.row(
            FOOTPRINT,
            format!(
                "queen with {} registered drones: peak RSS MB (VmHWM)",
                size.total()
            ),
            mb(at_scale.hwm_kb),
            target(
                &format!("≤ {QUEEN_RSS_MB_TARGET:.0}"),
                rss_mb <= QUEEN_RSS_MB_TARGET,
            ),
        );
        report.row(
            FOOTPRINT,
            format!(
                "queen holding {} drones after the bad ones' removal, idle: RSS MB",
                size.good
            ),
            mb(idle.rss_kb),
            "-",
        );
        report.row(
            FOOTPRINT,
            format!(
                "queen holding {} drones, idle: threads between / during rounds",
                size.good
            ),
            format!("{} / {}", idle.min_threads, idle.max_threads),
            "-",
        );
        for (what, run) in [
            ("during the first round", &during),
            ("during answering-only rounds", &during_good),
            ("without rounds", &without),
        ] {
            if let Some(error) = &run.first_error {
                report.note(format!("{SCALE}: first submit error {what}: {error}"));
            }
        }
        report.note(format!(
            "{SCALE}: every submit load is {SCALE_CLIENTS} clients for {:.0} s. \"during the first full round\" \
             starts when a round over the bad drones is seen to start (a refusing drone's failures > 0); its \
             overlap with that round is in the metric; the bad drones are registered and available for tasks \
             until a task fails on one (a never-answering one holds a submit for the 2 s task timeout), so this \
             measures that too. \"during rounds over the answering drones only\" runs after the bad drones' \
             removal, on the same queen, heartbeating {} drones every {} s. \"without\" runs first, against a \
             second queen started with --heartbeat-interval {NO_ROUNDS_INTERVAL_SECS} holding only the {} \
             answering drones, registered after her only (empty) round. Both queens log at debug. Tasks go to \
             the simulated drones (one thread per listener and per connection inside hive-bench)",
            load_length.as_secs_f64(),
            size.good,
            heartbeat.interval.as_secs_f64(),
            size.good
        ));
        report.note(format!(
            "{SCALE}: the round is the largest `heartbeat round over N drones` in the queen's log; threads and \
             RSS are sampled from /proc every {} ms over the whole scenario (threads named probe every {} ms: \
             Linux names a new thread after the thread that made it, so this also counts threads a probe \
             worker spawns, such as the one ureq starts for each call's address lookup when the call has a \
             timeout); the queen runs with interval {} s and the default {} tries of {} s, {} s apart",
            SAMPLE_PERIOD.as_millis(),
            SAMPLE_PERIOD.as_millis() * u128::from(PROBE_COUNT_EVERY_SAMPLES),
            heartbeat.interval.as_secs_f64(),
            heartbeat.attempts,
            heartbeat.timeout.as_secs_f64(),
            heartbeat.retry_delay.as_secs_f64()
        ));
        drop(queen);
        drop(fleet);
        Ok(())
    }
}

/// Polls `check` until it gives a value, or fails after `within`, naming `what`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what} after {within:?}"));
        }
        thread::sleep(ROUND_START_POLL);
    }
}

/// How scenario 2 fails a drone.
#[derive(Clone, Copy)]
enum Strike {
    /// SIGKILL: the port closes, so probes are refused at once.
    Kill,
    /// SIGSTOP: the port stays open, so probes connect and then time out.
    Freeze,
}

/// Scenario 2 and 3's heartbeat settings, with the larve's default retry delay.
fn fast_heartbeat() -> HeartbeatConfig {
    HeartbeatConfig {
        interval: Duration::from_secs_f64(FAST_INTERVAL_SECS),
        attempts: FAST_ATTEMPTS,
        timeout: Duration::from_secs_f64(FAST_TIMEOUT_SECS),
        ..HeartbeatConfig::default()
    }
}

/// The queen flags for `config`.
fn heartbeat_args(config: &HeartbeatConfig) -> Vec<String> {
    vec![
        "--heartbeat-interval".into(),
        config.interval.as_secs_f64().to_string(),
        "--heartbeat-attempts".into(),
        config.attempts.to_string(),
        "--heartbeat-timeout".into(),
        config.timeout.as_secs_f64().to_string(),
        "--heartbeat-retry-delay".into(),
        config.retry_delay.as_secs_f64().to_string(),
    ]
}

/// Every `heartbeat round over N drones took X ms` in a queen's log, as (N, X), in order.
fn heartbeat_rounds(log: &str) -> Vec<(usize, u64)> {
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("heartbeat round over ")?;
            let (n, rest) = rest.split_once(" drones took ")?;
            let (ms, _) = rest.split_once(" ms")?;
            Some((n.parse().ok()?, ms.parse().ok()?))
        })
        .collect()
}

/// Wall-clock now in Unix seconds, as the queen's `last_seen`.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the load clients call.
#[derive(Clone, Copy)]
enum Call {
    Submit,
    Health,
}

/// What one load run saw.
struct Load {
    ok: u64,
    /// 200s to the warm-up calls, not counted in `ok`.
    warmup_ok: u64,
    errors: u64,
    started: Instant,
    elapsed: Duration,
    /// Every request's latency in microseconds, sorted.
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

impl Load {
    /// Successful calls per second of the counted window.
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile `p` (0 to 1) in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[index] as f64 / MS_PER_SEC
    }

    fn max_ms(&self) -> f64 {
        self.percentile_ms(1.0)
    }

    /// How many requests took longer than `limit`.
    fn slower_than(&self, limit: Duration) -> usize {
        let limit_us = limit.as_micros() as u64;
        self.latencies_us.len() - self.latencies_us.partition_point(|&us| us <= limit_us)
    }
}

/// One client's share of a load.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// 200s to calls sent before counting began; tasks they placed still reach drone stdout.
    warmup_ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

/// `clients` threads, each with its own agent (so its own kept-alive connection), calling the queen
/// back to back. They start [`RAMP_STEP`] apart, and only calls sent after the last one started are
/// counted, for `length`: the numbers are the steady state, not the connection ramp.
fn load(queen: &Larve, call: Call, clients: usize, length: Duration) -> Result<Load> {
    let path = match call {
        Call::Submit => "/submit_task",
        Call::Health => "/healthz",
    };
    let url = format!("http://{}{path}", queen.address());
    let ramp_start = Instant::now() + LOAD_START_DELAY;
    let started = ramp_start + RAMP_STEP * clients as u32;
    let deadline = started + length;
    let tallies = thread::scope(|scope| {
        let mut handles = Vec::new();
        for client in 0..clients {
            let url = &url;
            let window = Window {
                first_call: ramp_start + RAMP_STEP * client as u32,
                counted_from: started,
                deadline,
            };
            let spawned = thread::Builder::new()
                .name("bench-client".into())
                .spawn_scoped(scope, move || client_loop(url, call, client, window));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => return Err(format!("cannot start load client {client}: {e}")),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a load client panicked".to_string()))
            .collect::<Result<Vec<Tally>>>()
    })?;
    let elapsed = started.elapsed();
    if elapsed > length + LOAD_GRACE {
        return Err(format!("the load ran {elapsed:?}, far past its {length:?}"));
    }
    let mut total = Tally::default();
    for tally in tallies {
        total.ok += tally.ok;
        total.warmup_ok += tally.warmup_ok;
        total.errors += tally.errors;
        total.latencies_us.extend(tally.latencies_us);
        total.first_error = total.first_error.or(tally.first_error);
    }
    total.latencies_us.sort_unstable();
    Ok(Load {
        ok: total.ok,
        warmup_ok: total.warmup_ok,
        errors: total.errors,
        started,
        elapsed,
        latencies_us: total.latencies_us,
        first_error: total.first_error,
    })
}

/// When one load client calls.
#[derive(Clone, Copy)]
struct Window {
    /// Its first call: clients arrive one by one.
    first_call: Instant,
    /// Calls sent from here on are counted; earlier ones warm the connections up.
    counted_from: Instant,
    /// No call is sent after this.
    deadline: Instant,
}

/// One load client: calls until the window's deadline, timing each counted call.
fn client_loop(url: &str, call: Call, client: usize, window: Window) -> Tally {
    let agent = agent(CLIENT_TIMEOUT, 1);
    let mut tally = Tally::default();
    thread::sleep(window.first_call.saturating_duration_since(Instant::now()));
    let mut n: u64 = 0;
    while Instant::now() < window.deadline {
        n += 1;
        let sent = Instant::now();
        let reply = match call {
            Call::Submit => agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(format!("{{\"text\":\"bench {client}-{n}\"}}").as_bytes()),
            Call::Health => agent.get(url).call(),
        };
        let outcome = match reply {
            Ok(mut reply) => {
                let status = reply.status().as_u16();
                match reply.body_mut().read_to_vec() {
                    Ok(_) if status == 200 => Ok(()),
                    Ok(_) => Err(format!("HTTP {status}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if sent < window.counted_from {
            tally.warmup_ok += u64::from(outcome.is_ok());
            continue;
        }
        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(why) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(why);
            }
        }
    }
    tally
}

/// Opens `clients` connections to the queen at the same instant, each asking `/healthz` once, and
/// holds them all open until every first answer is in (or [`BURST_HOLD`] has passed). Returns how
/// many first answers took longer than [`SLOW_REQUEST`], and how many failed.
///
/// tiny_http 0.12 hands each new connection to a pool thread, and under a burst it can queue one
/// behind threads that are busy with other kept-alive connections: it is then served only when
/// another connection closes, which here is at the end of the hold.
fn burst(queen: &Larve, clients: usize) -> Result<(usize, usize)> {
    let url = format!("http://{}/healthz", queen.address());
    let start = Instant::now() + LOAD_START_DELAY;
    let release = start + BURST_HOLD;
    let answered = AtomicUsize::new(0);
    let outcomes = thread::scope(|scope| {
        let mut handles = Vec::new();
        for client in 0..clients {
            let (url, answered) = (&url, &answered);
            let spawned = thread::Builder::new()
                .name("bench-burst".into())
                .spawn_scoped(scope, move || {
                    let agent = agent(CLIENT_TIMEOUT, 1);
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    let sent = Instant::now();
                    let ok = agent
                        .get(url)
                        .call()
                        .and_then(|mut reply| reply.body_mut().read_to_vec())
                        .is_ok();
                    let took = sent.elapsed();
                    answered.fetch_add(1, Ordering::SeqCst);
                    while answered.load(Ordering::SeqCst) < clients && Instant::now() < release {
                        thread::sleep(WAIT_POLL);
                    }
                    (took, ok)
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => return Err(format!("cannot start burst client {client}: {e}")),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a burst client panicked".to_string()))
            .collect::<Result<Vec<(Duration, bool)>>>()
    })?;
    let slow = outcomes
        .iter()
        .filter(|(took, _)| *took > SLOW_REQUEST)
        .count();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    Ok((slow, failed))
}

/// Peaks of a process's `/proc` readings over a sampling window.
#[derive(Clone, Copy, Default)]
struct Peak {
    max_threads: u64,
    min_threads: u64,
    /// Largest `VmRSS` seen, in kB.
    rss_kb: u64,
    /// The kernel's own high-water mark, `VmHWM`, at the last reading, in kB.
    hwm_kb: u64,
    max_probe_threads: usize,
}

impl Peak {
    /// Folds one `/proc/PID/status` reading in.
    fn add(&mut self, status: &str) {
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..].split_whitespace().next()?.parse().ok()
        };
        if let Some(threads) = field("Threads:") {
            self.max_threads = self.max_threads.max(threads);
            self.min_threads = if self.min_threads == 0 {
                threads
            } else {
                self.min_threads.min(threads)
            };
        }
        if let Some(rss) = field("VmRSS:") {
            self.rss_kb = self.rss_kb.max(rss);
        }
        if let Some(hwm) = field("VmHWM:") {
            self.hwm_kb = self.hwm_kb.max(hwm);
        }
    }
}

/// The threads of `pid` named `probe`: the heartbeat's workers.
fn probe_threads(pid: u32) -> usize {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "probe")
        .count()
}

/// Samples a process's threads and memory every 20 ms on its own thread until finished (or dropped,
/// or the process is gone, or [`MAX_SAMPLING`] has passed).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Peak>>,
}

impl Sampler {
    /// Starts sampling `pid` now.
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = Peak::default();
            let started = Instant::now();
            let mut samples: u32 = 0;
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < MAX_SAMPLING {
                let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                    break;
                };
                peak.add(&status);
                if samples.is_multiple_of(PROBE_COUNT_EVERY_SAMPLES) {
                    peak.max_probe_threads = peak.max_probe_threads.max(probe_threads(pid));
                }
                samples += 1;
                thread::sleep(SAMPLE_PERIOD);
            }
            peak
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns what was seen.
    fn finish(mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Samples `pid` for `window`.
fn sample_for(pid: u32, window: Duration) -> Peak {
    let sampler = Sampler::start(pid);
    thread::sleep(window);
    sampler.finish()
}

/// Scenario 4's simulated fleet. Answering drones speak just enough HTTP/1.1 (keep-alive,
/// Content-Length) to pass probes and take tasks; refusing drones are ports that were bound and
/// closed; never-answering drones are bound listeners that never accept, so the kernel completes
/// connections into their backlog and nothing ever replies. Dropping it stops every thread it started.
struct Fleet {
    good: Vec<String>,
    refusing: Vec<String>,
    silent: Vec<String>,
    /// Held open, never accepted from.
    silent_listeners: Vec<TcpListener>,
    stop: Arc<AtomicBool>,
    live_threads: Arc<AtomicUsize>,
}

impl Fleet {
    /// Binds every fake drone and starts the answering ones.
    fn start(size: FleetSize) -> Result<Fleet> {
        let bind = || {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot bind a fake drone: {e}"))?;
            let address = listener
                .local_addr()
                .map_err(|e| format!("fake drone address: {e}"))?
                .to_string();
            Ok::<_, String>((listener, address))
        };
        // Built first, so the threads already started are stopped if a later step fails.
        let mut fleet = Fleet {
            good: Vec::new(),
            refusing: Vec::new(),
            silent: Vec::new(),
            silent_listeners: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            live_threads: Arc::new(AtomicUsize::new(0)),
        };
        for _ in 0..size.good {
            let (listener, address) = bind()?;
            let (stop, live) = (Arc::clone(&fleet.stop), Arc::clone(&fleet.live_threads));
            spawn_counted(&fleet.live_threads, move || {
                accept_loop(listener, stop, live)
            })
            .map_err(|e| format!("cannot start a fake drone: {e}"))?;
            fleet.good.push(address);
        }
        for _ in 0..size.silent {
            let (listener, address) = bind()?;
            fleet.silent_listeners.push(listener);
            fleet.silent.push(address);
        }
        // Bound together and closed last, so no port is handed out twice, and none of these freed
        // ports goes to another fake drone.
        let mut closing = Vec::new();
        for _ in 0..size.refusing {
            let (listener, address) = bind()?;
            closing.push(listener);
            fleet.refusing.push(address);
        }
        drop(closing);
        Ok(fleet)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.silent_listeners.clear();
        for address in &self.good {
            // A connection wakes the accept loop, which then sees the stop flag.
            if let Ok(address) = address.parse::<SocketAddr>() {
                let _ = TcpStream::connect_timeout(&address, WAKE_CONNECT_TIMEOUT);
            }
        }
        let deadline = Instant::now() + FLEET_STOP_TIMEOUT;
        while self.live_threads.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(WAIT_POLL);
        }
    }
}

/// Starts a fake-fleet thread, counted in `live` while it runs.
fn spawn_counted(live: &Arc<AtomicUsize>, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    live.fetch_add(1, Ordering::SeqCst);
    let counter = Arc::clone(live);
    let spawned = thread::Builder::new()
        .name("fake-drone".into())
        .stack_size(FAKE_STACK_BYTES)
        .spawn(move || {
            work();
            counter.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            live.fetch_sub(1, Ordering::SeqCst);
            Err(e)
        }
    }
}

/// An answering fake drone: a thread per connection, until the fleet stops.
fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, live: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            thread::sleep(ACCEPT_RETRY_PAUSE);
            continue;
        };
        let stopping = Arc::clone(&stop);
        if let Err(e) = spawn_counted(&live, move || {
            let _ = serve_fake(stream, &stopping);
        }) {
            progress(&format!("cannot start a fake drone connection thread: {e}"));
        }
    }
}

/// Answers requests on one kept-alive connection as a larve drone would, until the peer closes it,
/// it breaks, or the fleet stops.
fn serve_fake(stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(FAKE_READ_POLL))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if !read_line_until_stopped(&mut reader, &mut line, stop)? {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let request = (
            words.next().unwrap_or_default().to_string(),
            words.next().unwrap_or_default().to_string(),
        );
        let mut length = 0;
        let mut close = false;
        let mut ended = false;
        for _ in 0..MAX_FAKE_HEADERS {
            line.clear();
            if !read_line_until_stopped(&mut reader, &mut line, stop)? {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                ended = true;
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= MAX_FAKE_BODY_BYTES)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if !ended {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many headers",
            ));
        }
        let mut body = vec![0; length];
        if !read_exact_until_stopped(&mut reader, &mut body, stop)? {
            return Ok(());
        }
        let (status, answer) = match (request.0.as_str(), request.1.as_str()) {
            ("GET", "/healthz") => ("200 OK", FAKE_HEALTH_BODY),
            ("POST", "/do_task") => ("200 OK", FAKE_TASK_BODY),
            _ => ("404 Not Found", FAKE_NOT_FOUND_BODY),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        writer.write_all(reply.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// A read that timed out (the socket's poll period passed with nothing to read).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends one line to `line`, waiting out read timeouts. False at end of stream or when stopping.
fn read_line_until_stopped(
    reader: &mut impl BufRead,
    line: &mut String,
    stop: &AtomicBool,
) -> io::Result<bool> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(e) if is_timeout(&e) && !stop.load(Ordering::Relaxed) => {}
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Fills `buf`, waiting out read timeouts. False at end of stream or when stopping.
fn read_exact_until_stopped(
    reader: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) && !stop.load(Ordering::Relaxed) => {}
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The table's rows and the notes under it.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    metric: String,
    value: String,
    target: String,
}

impl Report {
    /// Adds a row; `target` says what the issue asks and whether it was met, or `-`.
    fn row(
        &mut self,
        scenario: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
    ) {
        self.rows.push(Row {
            scenario,
            metric: metric.into(),
            value: value.into(),
            target: target.into(),
        });
    }

    /// Adds a note under the table: what a metric means exactly, or what went wrong.
    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The machine line, the table (scenarios in order, each one's rows as measured), and the notes.
    fn print(&mut self, machine: &str, plan: &Plan) {
        self.rows.sort_by_key(|row| row.scenario);
        self.notes.sort();
        let mut out = String::new();
        out.push_str(&format!("machine: {machine}\n"));
        out.push_str(&format!(
            "run: {} ({} submit clients, {:.0} s submit loads, fleet of {})\n\n",
            if plan.quick { "--quick" } else { "full" },
            plan.clients,
            plan.submit.as_secs_f64(),
            plan.fleet.total()
        ));
        out.push_str("| scenario | metric | value | target |\n|---|---|---|---|\n");
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.scenario,
                cell(&row.metric),
                cell(&row.value),
                cell(&row.target)
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        print!("{out}");
    }
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A target, followed by whether this run met it.
fn target(goal: &str, met: bool) -> String {
    format!("{goal} ({})", if met { "met" } else { "MISSED" })
}

/// Milliseconds for the table.
fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// Kilobytes as megabytes for the table.
fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / KB_PER_MB)
}

/// The CPU model and how many cores this process may use, for the table's header.
fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores (nproc)")
}
