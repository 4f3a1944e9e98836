//! `hive-bench`: runs real larves on loopback and measures them against the targets of the
//! issues, one named scenario at a time (the cost of the front compares with the larve from
//! before it, given with `--old-larve`). Progress goes to stderr; the report (the machine, then
//! each scenario's table and notes) goes to stdout and, with `--doc`, into `docs/benchmarks.md`.
//! `scripts/bench.sh` builds the release binaries (and that older larve) and runs it.
//!
//! Where things are: [`options`] reads the command line into a plan; [`scenarios`] holds one file
//! per scenario and the runner that calls them; [`control`] is the bench's own calls to a queen;
//! [`tasks`] is its client of the task API (submits from many threads, blocking waits, listings,
//! `/metrics`); [`wrk`] runs the HTTP load generator (wrk with `scripts/wrk/hive.lua`); [`fleet`]
//! simulates drones; [`heartbeat`] sets and reads a queen's heartbeat; [`tls`] makes certificates
//! with openssl and times HTTPS requests; [`report`] gathers each scenario's rows and notes,
//! [`machine`] says what the run ran on, and [`doc`] writes them as markdown. What the
//! bench shares with the integration tests is in `hive-support` (`tests/support`): the process
//! guards that start larves, etcd and wrk, raw HTTP where wrk cannot go (one connection's first
//! answer, a body a server may never read), `/proc` readings, free ports, and the one way to wait.
//!
//! Every larve, etcd member and wrk is held by a guard that kills it when dropped, the fake fleet
//! stops its threads when dropped, and every wait has a deadline: a failing scenario ends with
//! nothing left running, and the next scenario still runs.

mod control;
mod doc;
mod fleet;
mod heartbeat;
mod machine;
mod options;
mod report;
mod scenarios;
mod tasks;
mod tls;
mod wrk;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use hive_support::Result;
use hive_support::larve::Launcher;
use hive_support::workdir::WorkDir;

use control::Control;
use doc::Run;
use machine::Machine;
use options::Plan;
use report::Report;
use scenarios::Bench;
use tasks::TaskClient;
use wrk::Wrk;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(why) => {
            eprintln!("hive-bench: error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen scenarios, prints the report (and writes it into `--doc`), and fails if any
/// scenario could not finish.
fn run() -> Result<ExitCode> {
    let Some(options) = options::parse()? else {
        println!("{}", options::usage());
        return Ok(ExitCode::SUCCESS);
    };
    if !options.larve.is_file() {
        return Err(format!(
            "no larve at {} (build it with cargo build --release, or pass --larve PATH)",
            options.larve.display()
        ));
    }
    if let Some(old) = options.old_larve.as_ref().filter(|old| !old.is_file()) {
        return Err(format!("no larve at {} (--old-larve)", old.display()));
    }
    let mut workdir = WorkDir::create("hive-bench")?;
    if options.keep_logs {
        workdir.keep();
    }
    let bench = Bench {
        launcher: Launcher::new(options.larve.clone(), workdir.path()),
        old_launcher: options
            .old_larve
            .clone()
            .map(|old| Launcher::new(old, workdir.path())),
        control: Control::new(),
        tasks: TaskClient::new(),
        wrk: Wrk::new(options.wrk.clone(), workdir.path())?,
        etcd_binary: options.etcd.clone(),
        dir: workdir.path().to_path_buf(),
        plan: Plan::new(options.quick),
    };
    progress(&format!(
        "{} run; logs in {}",
        if options.quick { "quick" } else { "full" },
        workdir.path().display()
    ));
    let run = Run {
        machine: Machine::this(),
        date: machine::now_utc(),
        commit: options.commit.unwrap_or_else(|| "not given".into()),
        kind: bench.plan.describe().to_string(),
        only: options.only.clone(),
    };
    let mut report = Report::default();
    let failed = scenarios::run(&bench, options.only.as_deref(), &mut report);
    if failed {
        workdir.keep();
        progress(&format!("logs kept in {}", workdir.path().display()));
    }
    print!("{}", doc::render(&run, &report, scenarios::name));
    if let Some(path) = &options.doc {
        doc::update(path, &run, &report, scenarios::name, &scenarios::names())?;
    }
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
