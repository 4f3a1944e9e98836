//! Cost of the front: `wrk -t2 -c32` on `/submit_task` against three hives of a
//! queen and two drones, measured in the same run: the larve from before the front door (commit
//! 047a915, given with `--old-larve`), this larve in plain HTTP, and this larve with TLS on every
//! leg. The drones require client certificates (`--tls-verify-clients`), so each call from the
//! queen to a drone is mutual TLS; wrk cannot show a certificate, so the queen it loads serves
//! TLS without asking for one.
//!
//! Each hive is started once and gets an uncounted warm-up (queen under load shows what a queen's first
//! connections cost); then the runs go round the hives, starting one hive later each round, so a
//! slow spell of the shared machine falls on all of them alike. Each ratio is the median of the
//! rounds' ratios, each taken between runs a few seconds apart.

use std::time::Duration;

use hive_support::larve::Launcher;
use hive_support::procfs::cpu_ticks;

use super::{Bench, Hive};
use crate::control::Control;
use crate::report::{self, Report, median, target};
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};
use hive_support::pki::Pki;

pub const LABEL: &str = "cost of the front";

/// Drones of each hive.
const DRONES: usize = 2;

/// wrk's connections (on its default 2 threads).
const CONNECTIONS: usize = 32;

/// The uncounted warm-up each hive gets first.
const WARM_UP: Duration = Duration::from_secs(1);

/// The issue's targets: this larve's rate over the old one's, TLS over plain, and the p99 every
/// load of 32 connections is held to (queen under load's).
const FRONT_RATIO_TARGET: f64 = 0.8;
const TLS_RATIO_TARGET: f64 = 0.6;
const P99_MS_TARGET: f64 = 10.0;

/// The commit the old larve is built from, as the report names it.
const OLD_COMMIT: &str = "047a915";

/// Clock ticks per second in /proc (USER_HZ), and microseconds per second.
const TICKS_PER_SEC: f64 = 100.0;
const US_PER_SEC: f64 = 1_000_000.0;

/// One of the hives measured.
struct Side {
    /// What the table calls it.
    name: String,
    hive: Hive,
    load: Load,
    runs: Vec<Run>,
    /// CPU ticks each run took: the queen's, and her drones' together.
    ticks: Vec<(u64, u64)>,
}

impl Side {
    /// CPU ticks of the queen and of her drones, now.
    fn cpu_ticks(&self) -> Result<(u64, u64)> {
        let queen = cpu_ticks(self.hive.queen.pid())?;
        let drones = self
            .hive
            .drones
            .iter()
            .map(|drone| cpu_ticks(drone.pid()))
            .sum::<Result<u64>>()?;
        Ok((queen, drones))
    }

    /// One counted run, with the CPU it took.
    fn measure(&mut self, bench: &Bench, label: &str) -> Result<()> {
        let before = self.cpu_ticks()?;
        let run = bench.wrk.run(label, self.load, &self.hive.queen)?;
        let after = self.cpu_ticks()?;
        self.ticks.push((after.0 - before.0, after.1 - before.1));
        self.runs.push(run);
        Ok(())
    }

    /// CPU µs per answer below 400, queen and drones, median over the runs.
    fn cpu_per_answer_us(&self) -> (f64, f64) {
        let per_answer = |pick: fn(&(u64, u64)) -> u64| {
            median(self.runs.iter().zip(&self.ticks).map(|(run, ticks)| {
                let answers = run.ok_per_sec() * run.elapsed().as_secs_f64();
                pick(ticks) as f64 / TICKS_PER_SEC * US_PER_SEC / answers
            }))
        };
        (per_answer(|t| t.0), per_answer(|t| t.1))
    }
}

/// Starts the hives, runs the rounds, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let length = bench.plan.front_cost_length;
    let plain = Load::new(Call::Submit, CONNECTIONS, length);
    let pki = Pki::create(&bench.dir.join("cost-pki"), "hive-bench CA")?;
    let larve = pki.issue("larve")?;
    let https = Control::https(&pki.ca())?;
    let tls_flags = pki.larve_flags(&larve);
    let mut verifying = tls_flags.clone();
    verifying.push("--tls-verify-clients".into());

    let mut sides = Vec::new();
    if let Some(old) = &bench.old_launcher {
        sides.push(start(
            bench,
            (old, &bench.control),
            &format!("old larve ({OLD_COMMIT}), plain HTTP"),
            "cost-old",
            (&[], &[]),
            plain,
        )?);
    }
    sides.push(start(
        bench,
        (&bench.launcher, &bench.control),
        "this larve, plain HTTP",
        "cost-plain",
        (&[], &[]),
        plain,
    )?);
    sides.push(start(
        bench,
        (&bench.launcher, &https),
        "this larve, TLS on every leg",
        "cost-tls",
        (&tls_flags, &verifying),
        plain.over_tls(),
    )?);

    let rounds = bench.plan.front_cost_rounds;
    let count = sides.len();
    for round in 0..rounds {
        for i in 0..count {
            let side = &mut sides[(round + i) % count];
            let label = format!("{}-r{}", side.hive.queen.label, round + 1);
            side.measure(bench, &label)?;
        }
    }

    let (old, new, tls) = match sides.as_slice() {
        [old, new, tls] => (Some(old), new, tls),
        [new, tls] => (None, new, tls),
        _ => return Err("the hives were not all started".into()),
    };
    let goals = [
        (old, None),
        (Some(new), Some(P99_MS_TARGET)),
        (Some(tls), None),
    ];
    for (side, goal) in goals {
        let Some(side) = side else { continue };
        let runs: Vec<&Run> = side.runs.iter().collect();
        report.load_rows(
            LABEL,
            &format!("{}: POST /submit_task c{CONNECTIONS}", side.name),
            &runs,
            goal,
        );
        let (queen, drones) = side.cpu_per_answer_us();
        report.row(
            LABEL,
            format!(
                "{}: CPU µs per answer below 400: queen / her drones, median of {}",
                side.name,
                report::runs(runs.len())
            ),
            format!("{queen:.0} / {drones:.0}"),
            "-",
        );
    }
    match old {
        Some(old) => ratio_row(
            report,
            &format!("this larve ÷ old larve ({OLD_COMMIT}), plain HTTP"),
            new,
            old,
            FRONT_RATIO_TARGET,
        ),
        None => report.row(
            LABEL,
            format!("this larve ÷ old larve ({OLD_COMMIT}), plain HTTP"),
            format!(
                "not measured: no larve from before the front door (--old-larve PATH; \
                 scripts/bench.sh builds it from commit {OLD_COMMIT} when the clone has that \
                 commit and the build succeeds, and says on stderr why not)"
            ),
            format!("≥ {FRONT_RATIO_TARGET} (not measured)"),
        ),
    }
    ratio_row(
        report,
        "this larve: TLS on every leg ÷ plain HTTP",
        tls,
        new,
        TLS_RATIO_TARGET,
    );
    report.note(format!(
        "{LABEL}: each hive is a queen and {DRONES} drones started once (`larve --queen --port 0`, \
         `larve --queen-host QUEEN --port 0`); the TLS hive's queen gets `--tls-cert … --tls-key … \
         --tls-ca …` and its drones the same plus `--tls-verify-clients` (a CA and one ECDSA P-256 \
         certificate for 127.0.0.1, made with openssl). Each gets `{}` uncounted once its drones \
         are listed, then {rounds} rounds of `{}` (`{}` for TLS) go round the hives, each round \
         starting one hive later. Rates are answers below 400 a second (a 503 is no task done); \
         each round's ratio is taken between that round's runs, and the row shows their median \
         and the median rates. CPU is the user + system ticks of /proc/PID/stat ({TICKS_PER_SEC} \
         a second) over each run, wrk's start and end included, per answer below 400; wrk itself \
         runs on the same two cores. The other load targets (8 and 256 connections, the burst, \
         the cold /healthz) are queen under load and connection burst, on this larve",
        Load::new(Call::Submit, CONNECTIONS, WARM_UP).command(),
        plain.command(),
        plain.over_tls().command()
    ));
    Ok(())
}

/// Starts one side's hive, waits until its drones are listed, and warms it up.
fn start(
    bench: &Bench,
    larves: (&Launcher, &Control),
    name: &str,
    label: &str,
    flags: (&[String], &[String]),
    load: Load,
) -> Result<Side> {
    progress(&format!("{label}: {name}: a queen and {DRONES} drones"));
    let hive = bench.hive(larves, label, flags, DRONES)?;
    let warm_up = Load {
        length: WARM_UP,
        ..load
    };
    bench
        .wrk
        .run(&format!("{label}-warm-up"), warm_up, &hive.queen)?;
    Ok(Side {
        name: name.to_string(),
        hive,
        load,
        runs: Vec::new(),
        ticks: Vec::new(),
    })
}

/// The row of `top`'s rate over `bottom`'s: the median of the rounds' ratios against `goal`.
fn ratio_row(report: &mut Report, what: &str, top: &Side, bottom: &Side, goal: f64) {
    let ratios: Vec<f64> = top
        .runs
        .iter()
        .zip(&bottom.runs)
        .map(|(t, b)| t.ok_per_sec() / b.ok_per_sec())
        .collect();
    let ratio = median(ratios.iter().copied());
    let rate = |side: &Side| median(side.runs.iter().map(Run::ok_per_sec));
    report.row(
        LABEL,
        format!(
            "{what}: 2xx/s ratio, median of {} rounds (median 2xx/s of each)",
            ratios.len()
        ),
        format!("{ratio:.2} ({:.0} / {:.0})", rate(top), rate(bottom)),
        target(&format!("≥ {goal}"), ratio >= goal),
    );
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    report.note(format!(
        "{LABEL}: {what}, each round's ratio: {}",
        each.join(", ")
    ));
}
