//! Connection burst: 256 new connections at the same instant, each asking `/healthz` once, on a
//! queen that has just logged her address (cold) and again after 2 s of light wrk traffic (warm).
//! wrk cannot do this: it times requests, not connections from their `connect()`, and keeps every
//! connection busy. Here each connection asks once and then holds on, idle, until all have their
//! answers, so a connection the queen leaves waiting behind others is seen waiting, as a browser's
//! or a proxy's would be.

use std::io::Write;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;
use hive_support::rawhttp::{self, HEALTHZ_REQUEST};

use super::Bench;
use crate::report::{self, Report, median, ms, target};
use crate::wrk::{Call, DEFAULT_THREADS, Load};
use crate::{Result, progress};

pub const LABEL: &str = "connection burst";

/// Connections opened at once.
const CONNECTIONS: usize = 256;

/// How long the connections are held open waiting for every first answer; a connection without
/// an answer by then has none.
const HOLD: Duration = Duration::from_secs(5);

/// The light traffic that makes the queen warm: `wrk -c8 -d2s` on `/healthz`.
const WARM_TRAFFIC: Load = Load {
    call: Call::Health,
    threads: DEFAULT_THREADS,
    connections: 8,
    length: Duration::from_secs(2),
    timeout: None,
    tls: false,
    token: None,
};

/// The slowest first answer each run must stay under.
const SLOWEST_MS_TARGET: f64 = 200.0;

/// The connection threads only connect, write a line and read once: a small stack is plenty.
const STACK_BYTES: usize = 64 * 1024;

/// How long the connection threads may take to start and reach the starting line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Milliseconds per second, for the table.
const MS_PER_SEC: f64 = 1000.0;

/// Where the burst's threads meet: once to start together, and once to close together.
#[derive(Default)]
struct Rendezvous {
    state: Mutex<Meeting>,
    changed: Condvar,
}

#[derive(Default)]
struct Meeting {
    /// Threads waiting at the start.
    ready: usize,
    /// Set once: the hold deadline to go with, or `None` to give up (a thread failed to start).
    start: Option<Option<Instant>>,
    /// Threads that have their answer, or know they will get none.
    done: usize,
}

impl Rendezvous {
    /// A thread waits at the start; the hold deadline once started, `None` if given up.
    fn wait_to_start(&self) -> Option<Instant> {
        let mut meeting = self.state.lock().unwrap_or_else(|e| e.into_inner());
        meeting.ready += 1;
        self.changed.notify_all();
        let meeting = self
            .changed
            .wait_while(meeting, |m| m.start.is_none())
            .unwrap_or_else(|e| e.into_inner());
        meeting.start.flatten()
    }

    /// Waits until `count` threads are at the start, or `within` has passed; true if they are.
    fn all_ready(&self, count: usize, within: Duration) -> bool {
        let meeting = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (meeting, _) = self
            .changed
            .wait_timeout_while(meeting, within, |m| m.ready < count)
            .unwrap_or_else(|e| e.into_inner());
        meeting.ready >= count
    }

    /// Releases every waiting thread, with the hold deadline, or `None` to give up.
    fn start(&self, hold_until: Option<Instant>) {
        let mut meeting = self.state.lock().unwrap_or_else(|e| e.into_inner());
        meeting.start = Some(hold_until);
        self.changed.notify_all();
    }

    /// A thread is done; it waits until all `count` are, or until `hold_until`.
    fn done_and_hold(&self, count: usize, hold_until: Instant) {
        let mut meeting = self.state.lock().unwrap_or_else(|e| e.into_inner());
        meeting.done += 1;
        self.changed.notify_all();
        let left = hold_until.saturating_duration_since(Instant::now());
        let _ = self
            .changed
            .wait_timeout_while(meeting, left, |m| m.done < count);
    }
}

/// One burst: each connection's time from `connect()` to the first byte of its answer, `None` for
/// a connection that got none within the hold.
struct Burst {
    first_answers: Vec<Option<Duration>>,
}

impl Burst {
    /// The slowest first answer in ms; infinite when a connection got none.
    fn slowest_ms(&self) -> f64 {
        self.first_answers
            .iter()
            .map(|took| took.map_or(f64::INFINITY, |d| d.as_secs_f64() * MS_PER_SEC))
            .fold(0.0, f64::max)
    }

    fn unanswered(&self) -> usize {
        self.first_answers.iter().filter(|t| t.is_none()).count()
    }
}

/// A slowest first answer for the table: milliseconds, or that some connection got none.
fn show(slowest_ms: f64) -> String {
    if slowest_ms.is_finite() {
        ms(slowest_ms)
    } else {
        format!("none within {} s", HOLD.as_secs())
    }
}

/// Runs the cold and warm bursts on fresh queens, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let runs = bench.plan.burst_runs;
    let runs_in_words = report::runs(runs);
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let label = format!("burst-r{run}");
        let queen = bench.queen(&format!("{label}-queen"), &[])?;
        progress(&format!("{label}: {CONNECTIONS} connections at once, cold"));
        cold.push(burst(&queen)?);
        bench
            .wrk
            .run(&format!("{label}-warm-traffic"), WARM_TRAFFIC, &queen)?;
        progress(&format!("{label}: {CONNECTIONS} connections at once, warm"));
        warm.push(burst(&queen)?);
    }
    for (what, bursts) in [("cold", &cold), ("warm", &warm)] {
        let slowest: Vec<f64> = bursts.iter().map(Burst::slowest_ms).collect();
        let worst = slowest.iter().copied().fold(0.0, f64::max);
        report.row(
            LABEL,
            format!("{what}: slowest of {CONNECTIONS} first answers, ms, worst of {runs_in_words}"),
            show(worst),
            target(
                &format!("≤ {SLOWEST_MS_TARGET:.0} in each run"),
                worst <= SLOWEST_MS_TARGET,
            ),
        );
        report.row(
            LABEL,
            format!(
                "{what}: slowest of {CONNECTIONS} first answers, ms, median of {runs_in_words}"
            ),
            show(median(slowest.iter().copied())),
            "-",
        );
        let unanswered: Vec<String> = bursts.iter().map(|b| b.unanswered().to_string()).collect();
        report.row(
            LABEL,
            format!(
                "{what}: connections without an answer within {} s, per run",
                HOLD.as_secs()
            ),
            unanswered.join(" / "),
            "-",
        );
        let per_run: Vec<String> = slowest.iter().map(|&s| show(s)).collect();
        report.note(format!(
            "{LABEL}: {what} slowest first answer per run (ms): {}",
            per_run.join(", ")
        ));
    }
    report.note(format!(
        "{LABEL}: {CONNECTIONS} threads wait at a common start, then each connects, sends `GET \
         /healthz HTTP/1.1` with `Host: x`, and times from just before its connect() to the first \
         byte of the answer; each keeps its connection open until every connection has its answer \
         or {} s have passed, then all close. Cold: a fresh queen (no drones) the moment she logs \
         her address; warm: the same queen right after `{}`; a fresh queen per run",
        HOLD.as_secs(),
        WARM_TRAFFIC.command()
    ));
    Ok(())
}

/// Opens [`CONNECTIONS`] connections to `queen` at once and times each one's first answer.
fn burst(queen: &Larve) -> Result<Burst> {
    let address = queen.address();
    let meeting = Rendezvous::default();
    let first_answers = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(CONNECTIONS);
        let mut failed = None;
        for i in 0..CONNECTIONS {
            let (address, meeting) = (&address, &meeting);
            let spawned = thread::Builder::new()
                .name("burst".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(scope, move || one_connection(address, meeting));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    failed = Some(format!("cannot start burst connection {i}: {e}"));
                    break;
                }
            }
        }
        if failed.is_none() && !meeting.all_ready(CONNECTIONS, READY_TIMEOUT) {
            failed = Some(format!(
                "the burst's threads were not all ready within {READY_TIMEOUT:?}"
            ));
        }
        meeting.start(failed.is_none().then(|| Instant::now() + HOLD));
        let joined = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a burst thread panicked".to_string()))
            .collect::<Result<Vec<Option<Duration>>>>();
        match failed {
            Some(why) => Err(why),
            None => joined,
        }
    })?;
    Ok(Burst { first_answers })
}

/// One connection of the burst: waits at the start, connects, asks, waits for the first byte,
/// and holds the connection until all are done or the hold is over.
fn one_connection(address: &str, meeting: &Rendezvous) -> Option<Duration> {
    let hold_until = meeting.wait_to_start()?;
    let connecting = Instant::now();
    let mut stream = rawhttp::connect(address, hold_until).ok();
    let took = stream.as_mut().and_then(|stream| {
        stream.write_all(HEALTHZ_REQUEST).ok()?;
        rawhttp::first_byte(stream, hold_until).map(|at| at - connecting)
    });
    meeting.done_and_hold(CONNECTIONS, hold_until);
    drop(stream);
    took
}
