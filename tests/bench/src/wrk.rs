//! The HTTP load generator: wrk, driven by `scripts/wrk/hive.lua`. The script ends wrk's output
//! with one `HIVE-WRK {json}` line, which this module parses; wrk's own text above it is for people.
//!
//! The script is built into this binary and written to the run's directory, so the bench always
//! runs the script of the commit it was built from, and users run the same file by hand.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_support::larve::{Larve, TOKEN_ENV};
use hive_support::process::{Process, SIGINT};
use hive_support::wait;
use serde::Deserialize;

use crate::{Result, progress};

/// The script, and where it lives in the repository (for the command lines the report prints).
const SCRIPT: &str = include_str!("../../../scripts/wrk/hive.lua");
const SCRIPT_IN_REPOSITORY: &str = "scripts/wrk/hive.lua";

/// What the script's summary line starts with.
const SUMMARY_PREFIX: &str = "HIVE-WRK ";

/// wrk's threads unless a load says otherwise: one per core of the 2-core machine the targets
/// were set on.
pub const DEFAULT_THREADS: usize = 2;

/// How long past its length a run may take (connecting, then summing up) before it counts as hung.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// How often a running wrk is checked for its exit.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Unit conversions.
const US_PER_MS: f64 = 1_000.0;
const US_PER_SEC: f64 = 1_000_000.0;

/// What a load asks the queen.
#[derive(Clone, Copy)]
pub enum Call {
    /// `POST /submit_task` with `{"text": "hello"}`: the script's `submit`.
    Submit,
    /// `GET /healthz`: the script with no argument.
    Health,
    /// `POST /tasks` with `{"command": ["true"]}`: the script's `task`.
    CreateTask,
    /// `GET /tasks?state=pending`: the first page of pending tasks, the script with no argument.
    PendingTasks,
    /// `GET /tasks?limit=1`: the newest task, a read that touches no drone.
    LatestTask,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Submit => "/submit_task",
            Call::Health => "/healthz",
            Call::CreateTask => "/tasks",
            Call::PendingTasks => "/tasks?state=pending",
            Call::LatestTask => "/tasks?limit=1",
        }
    }

    /// What the report calls it.
    pub fn name(self) -> &'static str {
        match self {
            Call::Submit => "POST /submit_task",
            Call::Health => "GET /healthz",
            Call::CreateTask => "POST /tasks",
            Call::PendingTasks => "GET /tasks?state=pending",
            Call::LatestTask => "GET /tasks?limit=1",
        }
    }

    /// What follows the URL on wrk's command line: `--` and the script's arguments.
    fn script_args(self) -> &'static [&'static str] {
        match self {
            Call::Submit => &["--", "submit"],
            Call::CreateTask => &["--", "task"],
            Call::Health | Call::PendingTasks | Call::LatestTask => &[],
        }
    }
}

/// One wrk run: what to call, over how many connections, for how long, and with which token.
#[derive(Clone, Copy)]
pub struct Load {
    pub call: Call,
    /// wrk's `-t`.
    pub threads: usize,
    pub connections: usize,
    /// Whole seconds: wrk's `-d`.
    pub length: Duration,
    /// wrk's `--timeout`: a request slower than this is counted as a timeout and left out of the
    /// latencies. `None` keeps wrk's default of 2 s.
    pub timeout: Option<Duration>,
    /// Over HTTPS: wrk's URL starts `https://` (wrk shows no client certificate and checks none of
    /// the server's).
    pub tls: bool,
    /// Sent as `Authorization: Bearer` on every request (the script reads it from `HIVE_TOKEN`).
    pub token: Option<&'static str>,
}

impl Load {
    /// A load on [`DEFAULT_THREADS`] threads with wrk's default timeout.
    pub fn new(call: Call, connections: usize, length: Duration) -> Load {
        Load {
            call,
            threads: DEFAULT_THREADS,
            connections,
            length,
            timeout: None,
            tls: false,
            token: None,
        }
    }

    /// The same load over HTTPS.
    pub fn over_tls(self) -> Load {
        Load { tls: true, ..self }
    }

    /// The same load with `token` on every request.
    pub fn with_token(self, token: &'static str) -> Load {
        Load {
            token: Some(token),
            ..self
        }
    }

    /// wrk's arguments for this load against `address`, with the script at `script`.
    fn args(&self, script: &str, address: &str) -> Vec<String> {
        let mut args = vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{}s", self.length.as_secs()),
        ];
        if let Some(timeout) = self.timeout {
            args.push(format!("--timeout={}s", timeout.as_secs()));
        }
        args.extend([
            "-s".to_string(),
            script.to_string(),
            format!(
                "{}://{address}{}",
                if self.tls { "https" } else { "http" },
                self.call.path()
            ),
        ]);
        args.extend(self.call.script_args().iter().map(|arg| arg.to_string()));
        args
    }

    /// The command line as a user types it in the repository, with `PORT` for the queen's port.
    /// A URL with a query is quoted, so a shell takes its `?` as it is.
    pub fn command(&self) -> String {
        let args: Vec<String> = self
            .args(SCRIPT_IN_REPOSITORY, "127.0.0.1:PORT")
            .into_iter()
            .map(|arg| {
                if arg.contains('?') {
                    format!("'{arg}'")
                } else {
                    arg
                }
            })
            .collect();
        format!("wrk {}", args.join(" "))
    }
}

/// The script's summary line; only the fields the bench reports.
#[derive(Deserialize)]
struct Summary {
    requests: u64,
    duration_us: u64,
    errors: Errors,
    latency_us: Latency,
}

/// wrk's error counts.
#[derive(Deserialize)]
struct Errors {
    connect: u64,
    read: u64,
    write: u64,
    /// Answers with a status of 400 or more.
    status: u64,
    /// Requests slower than the timeout.
    timeout: u64,
}

/// wrk's latency percentiles, in microseconds.
#[derive(Deserialize)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

/// What one wrk run saw.
pub struct Run {
    summary: Summary,
}

impl Run {
    /// Answers per second, as wrk's `Requests/sec` (every answer, whatever its status).
    pub fn per_sec(&self) -> f64 {
        self.summary.requests as f64 * US_PER_SEC / self.summary.duration_us.max(1) as f64
    }

    /// Answers below 400 per second: for a submit, tasks a drone took.
    pub fn ok_per_sec(&self) -> f64 {
        let ok = self
            .summary
            .requests
            .saturating_sub(self.summary.errors.status);
        ok as f64 * US_PER_SEC / self.summary.duration_us.max(1) as f64
    }

    /// How long wrk measured.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.summary.duration_us)
    }

    /// A latency percentile in milliseconds; infinite when no request was answered at all, so a
    /// run that saw nothing never meets a latency target.
    fn latency_ms(&self, us: u64) -> f64 {
        if self.summary.requests == 0 {
            f64::INFINITY
        } else {
            us as f64 / US_PER_MS
        }
    }

    pub fn p50_ms(&self) -> f64 {
        self.latency_ms(self.summary.latency_us.p50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency_ms(self.summary.latency_us.p99)
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_ms(self.summary.latency_us.max)
    }

    /// Answers with a status of 400 or more (wrk's `errors.status`; the queen sends no 3xx).
    pub fn non_2xx(&self) -> u64 {
        self.summary.errors.status
    }

    /// Requests slower than the timeout (wrk's `errors.timeout`).
    pub fn timeouts(&self) -> u64 {
        self.summary.errors.timeout
    }

    /// Connections that failed to open, or broke while reading or writing.
    pub fn socket_errors(&self) -> u64 {
        let errors = &self.summary.errors;
        errors.connect + errors.read + errors.write
    }

    /// Every kind of error.
    pub fn errors(&self) -> u64 {
        self.non_2xx() + self.timeouts() + self.socket_errors()
    }

    /// Answers wrk counted, whatever their status.
    pub fn requests(&self) -> u64 {
        self.summary.requests
    }
}

/// A wrk started by [`Wrk::start`], running in the background.
pub struct Running {
    /// Killed when dropped, so no wrk outlives a failed wait.
    process: Process,
    label: String,
    load: Load,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Running {
    /// Waits for wrk to end its run and returns its summary.
    pub fn finish(mut self) -> Result<Run> {
        let label = &self.label;
        let status = wait::poll(
            self.load.length + EXIT_GRACE,
            EXIT_POLL,
            &format!("wrk ({label}) to finish"),
            || self.process.exited(),
        )?;
        let output = fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let Some(line) = output
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(SUMMARY_PREFIX))
        else {
            let errors = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            let errors = match errors.trim() {
                "" => "nothing on stderr",
                errors => errors,
            };
            return Err(format!(
                "wrk ({label}) exited ({status}) without a {SUMMARY_PREFIX}line: {errors}"
            ));
        };
        let summary = serde_json::from_str(line)
            .map_err(|e| format!("wrk ({label}): cannot read {line:?}: {e}"))?;
        Ok(Run { summary })
    }

    /// Ends the run now rather than at its length: on SIGINT wrk stops its threads, then prints
    /// its summary over the time it ran, as at the end of a run.
    pub fn stop(self) -> Result<Run> {
        self.process.signal(SIGINT)?;
        self.finish()
    }
}

/// The wrk binary and the script, with each run's output kept in the run's directory.
pub struct Wrk {
    binary: PathBuf,
    script: PathBuf,
    dir: PathBuf,
}

impl Wrk {
    /// Checks the binary is there and writes the script into `dir`.
    pub fn new(binary: PathBuf, dir: &Path) -> Result<Wrk> {
        if !binary.is_file() {
            return Err(format!(
                "no wrk at {} (install it, e.g. apt-get install -y wrk, or pass --wrk PATH)",
                binary.display()
            ));
        }
        let script = dir.join("hive.lua");
        fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
        Ok(Wrk {
            binary,
            script,
            dir: dir.to_path_buf(),
        })
    }

    /// Runs `load` against `queen` and returns its summary; wrk's output goes to files named after
    /// `label`.
    pub fn run(&self, label: &str, load: Load, queen: &Larve) -> Result<Run> {
        self.start(label, load, queen)?.finish()
    }

    /// Starts `load` against `queen` in the background.
    pub fn start(&self, label: &str, load: Load, queen: &Larve) -> Result<Running> {
        let stdout_path = self.dir.join(format!("{label}.wrk.out"));
        let stderr_path = self.dir.join(format!("{label}.wrk.err"));
        let args = load.args(&self.script.to_string_lossy(), &queen.address());
        progress(&format!("{label}: wrk {}", args.join(" ")));
        let mut command = std::process::Command::new(&self.binary);
        command.args(&args).env_remove(TOKEN_ENV);
        if let Some(token) = load.token {
            command.env(TOKEN_ENV, token);
        }
        let process = Process::spawn(command, &stdout_path, &stderr_path)?;
        Ok(Running {
            process,
            label: label.to_string(),
            load,
            stdout_path,
            stderr_path,
        })
    }
}
