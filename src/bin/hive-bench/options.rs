//! The command line, and the [`Plan`] it makes: how long and how often each scenario measures.

use std::path::PathBuf;
use std::time::Duration;

use crate::Result;
use crate::fleet::FleetSize;
use crate::scenarios;

/// The help text, printed by `--help`.
pub const USAGE: &str = "\
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

/// Submit clients of scenarios 1 and 3: the 32.
const DEFAULT_CLIENTS: usize = 32;

/// Most submit clients `--clients` accepts, and the longest `--seconds`.
const MAX_CLIENTS: usize = 1024;
const MAX_SUBMIT_SECS: f64 = 600.0;

/// Length of each of scenario 1's two loads (submit, then healthz).
const FULL_SUBMIT_SECS: f64 = 10.0;
const QUICK_SUBMIT_SECS: f64 = 2.0;

/// Kills and freezes measured in scenario 2, each.
const FULL_DETECTION_REPEATS: usize = 5;
const QUICK_DETECTION_REPEATS: usize = 2;

/// Length of scenario 3's load.
const FULL_SOAK_SECS: u64 = 60;
const QUICK_SOAK_SECS: u64 = 4;

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

/// Length of each of scenario 4's submit loads.
const FULL_SCALE_LOAD_SECS: f64 = 5.0;
const QUICK_SCALE_LOAD_SECS: f64 = 2.0;

/// The command line.
pub struct Options {
    pub larve: PathBuf,
    pub quick: bool,
    pub clients: usize,
    pub submit_secs: Option<f64>,
    pub keep_logs: bool,
    /// Scenario numbers to run; all when `None`.
    pub only: Option<Vec<usize>>,
}

/// The options, or `None` when help was asked for.
pub fn parse() -> Result<Option<Options>> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        return Ok(None);
    }
    let quick = args.contains("--quick");
    let keep_logs = args.contains("--keep-logs");
    let only: Option<Vec<usize>> = args
        .opt_value_from_fn("--only", |s| {
            s.split(',')
                .map(|n| match n.trim().parse::<usize>() {
                    Ok(n) if (1..=scenarios::COUNT).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{s:?} is not a list of scenario numbers from 1 to {}, like 1,4",
                        scenarios::COUNT
                    )),
                })
                .collect()
        })
        .map_err(|e| e.to_string())?;
    let larve: Option<PathBuf> = args
        .opt_value_from_os_str("--larve", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(|e| e.to_string())?;
    let clients: usize = args
        .opt_value_from_fn("--clients", |s| match s.parse::<usize>() {
            Ok(n) if (1..=MAX_CLIENTS).contains(&n) => Ok(n),
            _ => Err(format!(
                "{s:?} is not a number of clients from 1 to {MAX_CLIENTS}"
            )),
        })
        .map_err(|e| e.to_string())?
        .unwrap_or(DEFAULT_CLIENTS);
    let submit_secs: Option<f64> = args
        .opt_value_from_fn("--seconds", |s| match s.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= MAX_SUBMIT_SECS => Ok(secs),
            _ => Err(format!(
                "{s:?} is not a number of seconds above 0, at most {MAX_SUBMIT_SECS}"
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

/// `full`, or `quick_value` for a `--quick` run.
fn pick<T>(quick: bool, full: T, quick_value: T) -> T {
    if quick { quick_value } else { full }
}

/// Lengths and sizes of one run: the numbers, or smaller ones for `--quick`.
pub struct Plan {
    pub quick: bool,
    pub clients: usize,
    pub submit: Duration,
    pub detection_repeats: usize,
    pub soak: Duration,
    pub fleet: FleetSize,
    pub scale_load: Duration,
}

impl Plan {
    pub fn new(options: &Options) -> Plan {
        let quick = options.quick;
        let submit_secs =
            options
                .submit_secs
                .unwrap_or(pick(quick, FULL_SUBMIT_SECS, QUICK_SUBMIT_SECS));
        Plan {
            quick,
            clients: options.clients,
            submit: Duration::from_secs_f64(submit_secs),
            detection_repeats: pick(quick, FULL_DETECTION_REPEATS, QUICK_DETECTION_REPEATS),
            soak: Duration::from_secs(pick(quick, FULL_SOAK_SECS, QUICK_SOAK_SECS)),
            fleet: pick(quick, FULL_FLEET, QUICK_FLEET),
            scale_load: Duration::from_secs_f64(pick(
                quick,
                FULL_SCALE_LOAD_SECS,
                QUICK_SCALE_LOAD_SECS,
            )),
        }
    }

    /// What kind of run this is, for the report's run line.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} submit clients, {:.0} s submit loads, fleet of {})",
            if self.quick { "--quick" } else { "full" },
            self.clients,
            self.submit.as_secs_f64(),
            self.fleet.total()
        )
    }
}
