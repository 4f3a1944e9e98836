//! Event watchers: a thousand clients following one queen's `GET /events` while a thousand tasks a
//! second are created. How late a change reaches them (from the task's `created_at` to the line
//! read), how much the queen grows meanwhile, and what the watchers cost `POST /tasks` at full
//! speed, against the same wrk load on the same queen with no watcher.
//!
//! The queen has no drone, so every create is one change at its own revision, and the watchers
//! read nothing but creates. They run in this process, on threads that read their sockets and pick
//! two numbers out of each line (see [`watcher`]).

mod watcher;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::procfs::{cpu_ticks, machine_busy_ticks, rss_kib};

use super::Bench;
use crate::report::{self, Report, mb, median, target};
use crate::tasks::Batch;
use crate::wrk::{Call, Load, Run};
use crate::{Result, progress};
use watcher::{LAG_BUCKETS_MS, LAG_SAMPLE, Tally, Watchers};

pub const LABEL: &str = "event watchers";

/// Clients following the queen's events.
const WATCHERS: usize = 1_000;

/// Tasks created a second while the lag is measured, by this many threads.
const CREATES_PER_SEC: u64 = 1_000;
const CREATORS: u64 = 8;

/// wrk's connections for the rate with and without watchers.
const CONNECTIONS: usize = 32;

/// Connections the queen takes, from one address (every client here is 127.0.0.1): the watchers,
/// wrk's and the creators', with room.
const MAX_CONNECTIONS: usize = 4_096;

/// Far more pending tasks than any run creates, so no create is refused with 429.
const MAX_PENDING: usize = 10_000_000;

/// How long the watchers take to connect before the creates start, at most.
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// How long the watchers may take to read the last changes after the creates end.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// How often the queen's RSS is read during the paced creates.
const RSS_POLL: Duration = Duration::from_millis(100);

/// Clock ticks a second in `/proc` (Linux's USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The targets.
const LAG_P99_TARGET_MS: f64 = 100.0;
const RSS_GROWTH_TARGET_MB: f64 = 64.0;
const RATE_SHARE_TARGET: f64 = 0.8;

/// Rounds of the rate with watchers, then without.
const RATE_ROUNDS: usize = 2;

pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let args = [
        "--max-pending".to_string(),
        MAX_PENDING.to_string(),
        "--max-connections".to_string(),
        MAX_CONNECTIONS.to_string(),
        "--max-connections-per-peer".to_string(),
        MAX_CONNECTIONS.to_string(),
    ];
    let queen = bench.queen("watchers-queen", &args)?;
    let address = queen.address();
    let paced = if bench.plan.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(15)
    };

    // What the same creates cost a queen with no watcher: her tasks grow her too.
    let control = bench.queen("watchers-control-queen", &args)?;
    progress(&format!(
        "{LABEL}: {CREATES_PER_SEC} creates/s for {paced:?}, no watcher"
    ));
    let control_before = rss_kib(control.pid())?;
    let (_, control_peak, _) = paced_creates(bench, &control.address(), paced, control.pid())?;
    drop(control);
    let control_growth = control_peak.saturating_sub(control_before);

    // The lag, and the queen's growth, under the paced creates.
    let rss_before = rss_kib(queen.pid())?;
    progress(&format!("{LABEL}: {WATCHERS} watchers connect"));
    let watchers = Watchers::start(&address, WATCHERS).map_err(|e| e.to_string())?;
    wait_for_held(bench, &queen, WATCHERS)?;
    progress(&format!(
        "{LABEL}: {CREATES_PER_SEC} creates/s for {paced:?}"
    ));
    let (created, rss_peak, cpu) = paced_creates(bench, &address, paced, queen.pid())?;
    // Late lines are counted as late, not as missed: the watchers read on until they have every
    // change, or until it is clear they never will.
    let expected = created as u64 * WATCHERS as u64;
    let _ = hive_support::wait::until(DRAIN_WAIT, Duration::from_millis(100), "", || {
        (watchers.read() >= expected).then_some(())
    });
    let seen = watchers.stop();
    let rss_growth = rss_peak.saturating_sub(rss_before);
    lag_rows(report, &seen, created, paced);
    report.row(
        LABEL,
        format!("queen RSS growth with {WATCHERS} watchers, {CREATES_PER_SEC} creates/s for {:.0} s (peak − before the watchers)", paced.as_secs_f64()),
        format!(
            "{} ({} → {}); the same creates with no watcher: {}",
            mb(rss_growth),
            mb(rss_before),
            mb(rss_peak),
            mb(control_growth)
        ),
        target(
            &format!("≤ {RSS_GROWTH_TARGET_MB} MB"),
            report::mb_of(rss_growth) <= RSS_GROWTH_TARGET_MB,
        ),
    );

    report.row(
        LABEL,
        format!("CPU during the {CREATES_PER_SEC} creates/s with {WATCHERS} watchers, in cores of the machine's {}: the queen / this bench (watchers and creators) / the whole machine", cpu.cores),
        format!("{:.2} / {:.2} / {:.2}", cpu.queen, cpu.bench, cpu.machine),
        "-",
    );

    // POST /tasks at full speed, with the watchers and without, alternating.
    let load = Load::new(Call::CreateTask, CONNECTIONS, bench.plan.submission_length);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut during = Tally::default();
    for round in 1..=RATE_ROUNDS {
        progress(&format!("{LABEL}: rate round {round}"));
        let watchers = Watchers::start(&address, WATCHERS).map_err(|e| e.to_string())?;
        wait_for_held(bench, &queen, WATCHERS)?;
        with.push(
            bench
                .wrk
                .run(&format!("watchers-r{round}-with"), load, &queen)?,
        );
        during.add(&watchers.stop());
        wait_for_held(bench, &queen, 0)?;
        without.push(
            bench
                .wrk
                .run(&format!("watchers-r{round}-without"), load, &queen)?,
        );
    }
    report.load_rows(
        LABEL,
        &format!("POST /tasks c{CONNECTIONS} with {WATCHERS} watchers"),
        &with.iter().collect::<Vec<&Run>>(),
        None,
    );
    report.load_rows(
        LABEL,
        &format!("POST /tasks c{CONNECTIONS} with no watcher"),
        &without.iter().collect::<Vec<&Run>>(),
        None,
    );
    let share = median(
        with.iter()
            .zip(&without)
            .map(|(with, without)| with.ok_per_sec() / without.ok_per_sec()),
    );
    report.row(
        LABEL,
        format!(
            "POST /tasks 2xx/s, with {WATCHERS} watchers ÷ with none, same queen, alternating rounds, median of {}",
            report::runs(with.len())
        ),
        format!("{share:.2}"),
        target(&format!("≥ {RATE_SHARE_TARGET}"), share >= RATE_SHARE_TARGET),
    );
    report.row(
        LABEL,
        "watchers under the full-speed creates: changes read / cut off and resumed / told to list again",
        format!("{} / {} / {}", during.changes, during.cut_off, during.gone),
        "-",
    );
    report.note(format!(
        "{LABEL}: one queen `larve --queen --port 0 {}`, no drone; {WATCHERS} clients in the bench \
         process follow `GET /events?kind=task` (resuming after a cut-off); lag is from a task's \
         `created_at` to its line read, over every line of one watcher in {LAG_SAMPLE}, while {CREATORS} threads \
         create {CREATES_PER_SEC} tasks/s for {:.0} s; RSS is the queen's VmRSS, read every {} ms, and the same creates go to a queen of their own \
         first, with no watcher, to tell what the tasks cost from what the watchers do; \
         the watchers read on after the creates end until they have every change (at most {} s more); \
         the rate is `{}`, with {WATCHERS} watchers connected and then with none, in {RATE_ROUNDS} rounds",
        args.join(" "),
        paced.as_secs_f64(),
        RSS_POLL.as_millis(),
        DRAIN_WAIT.as_secs(),
        load.command(),
    ));
    Ok(())
}

/// Waits until the queen holds `count` requests (the watchers' streams) and no others.
fn wait_for_held(bench: &Bench, queen: &hive_support::larve::Larve, count: usize) -> Result<()> {
    hive_support::wait::until(
        CONNECT_WAIT,
        Duration::from_millis(100),
        &format!("the queen to hold {count} streams"),
        || {
            let metrics = bench.tasks.metrics(queen).ok()?;
            (metrics.get("hive_front_held_requests") as usize == count).then_some(())
        },
    )
}

/// CPU used over a run of paced creates, in cores: whether the bench, on the same cores as the
/// queen, left her room, and how busy the shared machine was besides.
struct Cpu {
    queen: f64,
    bench: f64,
    machine: f64,
    cores: usize,
}

/// Creates [`CREATES_PER_SEC`] tasks a second for `length`, reading the queen's RSS meanwhile;
/// the tasks created, the highest RSS read, and the CPU used meanwhile.
fn paced_creates(
    bench: &Bench,
    queen: &str,
    length: Duration,
    pid: u32,
) -> Result<(usize, u64, Cpu)> {
    let ticks = || -> Result<[u64; 3]> {
        Ok([
            cpu_ticks(pid)?,
            cpu_ticks(std::process::id())?,
            machine_busy_ticks()?,
        ])
    };
    let ticks_before = ticks()?;
    let per_creator = CREATES_PER_SEC / CREATORS;
    let interval = Duration::from_secs(1) / per_creator as u32;
    let done = AtomicBool::new(false);
    let created = AtomicUsize::new(0);
    let failed = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let peak = thread::scope(|scope| {
        for creator in 0..CREATORS {
            let (done, created, failed) = (&done, &created, failed.clone());
            scope.spawn(move || {
                let prefix = format!("watched-{creator}");
                let batch = Batch {
                    prefix: &prefix,
                    command: &["true"],
                    retries: 0,
                };
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let due = started + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    if let Err(why) = bench.tasks.create(queen, &batch.body(i)) {
                        *failed.lock().expect("not poisoned") = Some(why);
                        return;
                    }
                    created.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        let mut peak = 0;
        while started.elapsed() < length {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            thread::sleep(RSS_POLL);
        }
        done.store(true, Ordering::Relaxed);
        peak
    });
    let ticks_after = ticks()?;
    let seconds = started.elapsed().as_secs_f64();
    let cores = |i: usize| (ticks_after[i] - ticks_before[i]) as f64 / TICKS_PER_SEC / seconds;
    let cpu = Cpu {
        queen: cores(0),
        bench: cores(1),
        machine: cores(2),
        cores: thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if let Some(why) = failed.lock().expect("not poisoned").take() {
        return Err(why);
    }
    Ok((created.load(Ordering::Relaxed), peak, cpu))
}

/// The rows of the lag the watchers saw.
fn lag_rows(report: &mut Report, seen: &Tally, created: usize, paced: Duration) {
    let at = |p: f64| {
        seen.lag_percentile_ms(p).map_or("-".to_string(), |ms| {
            if ms >= LAG_BUCKETS_MS {
                format!("≥ {ms}")
            } else {
                ms.to_string()
            }
        })
    };
    let p99 = seen.lag_percentile_ms(0.99);
    report.row(
        LABEL,
        format!(
            "event lag with {WATCHERS} watchers, {:.0} creates/s: p50 / p99 / max ms",
            created as f64 / paced.as_secs_f64()
        ),
        format!("{} / {} / {}", at(0.5), at(0.99), at(1.0)),
        target(
            &format!("p99 ≤ {LAG_P99_TARGET_MS} ms"),
            p99.is_some_and(|ms| (ms as f64) <= LAG_P99_TARGET_MS),
        ),
    );
    let expected = created as u64 * WATCHERS as u64;
    report.row(
        LABEL,
        "changes read by the watchers ÷ tasks created × watchers; cut off and resumed / told to list again",
        format!(
            "{:.3}; {} / {}",
            seen.changes as f64 / expected.max(1) as f64,
            seen.cut_off,
            seen.gone
        ),
        target("1.000", seen.changes == expected),
    );
}
