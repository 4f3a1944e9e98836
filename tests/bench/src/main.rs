//! `hive-bench`: runs real larves on loopback and measures them against the targets of the
//! performance issue (scenarios 1 to 8), of the tasks issue (9 to 14) and of the front door's
//! (15 and 16: attacks, and the front's cost against the larve from before it, given with
//! `--old-larve`). Progress goes to stderr; one markdown table of every number goes to stdout.
//! `scripts/bench.sh` builds the release binaries (and that older larve) and runs it.
//!
//! Where things are: [`options`] reads the command line into a plan; [`scenarios`] holds one file
//! per scenario and the runner that calls them; [`control`] is the bench's own calls to a queen;
//! [`tasks`] is its client of the task API (submits from many threads, blocking waits, listings,
//! `/metrics`); [`wrk`] runs the HTTP load generator (wrk with `scripts/wrk/hive.lua`); [`fleet`]
//! simulates drones; [`heartbeat`] sets and reads a queen's heartbeat; [`tls`] makes certificates
//! with openssl and times HTTPS requests; [`report`] prints the table. What the
//! bench shares with the integration tests is in `hive-support` (`tests/support`): the process
//! guards that start larves, etcd and wrk, raw HTTP where wrk cannot go (one connection's first
//! answer, a body a server may never read), `/proc` readings, free ports, and the one way to wait.
//!
//! Every larve, etcd member and wrk is held by a guard that kills it when dropped, the fake fleet
//! stops its threads when dropped, and every wait has a deadline: a failing scenario ends with
//! nothing left running, and the next scenario still runs.

mod control;
mod fleet;
mod heartbeat;
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

/// Runs the chosen scenarios, prints the table, and fails if any scenario could not finish.
fn run() -> Result<ExitCode> {
    let Some(options) = options::parse()? else {
        println!("{}", options::USAGE);
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
    let mut report = Report::default();
    let failed = scenarios::run(&bench, options.only.as_deref(), &mut report);
    if failed {
        workdir.keep();
        progress(&format!("logs kept in {}", workdir.path().display()));
    }
    report.print(&bench.plan.describe());
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
