//! The front door under attack: what an unauthenticated client can do to a larve.
//! Four parts: [`remote_kill`] sends 10,000 requests declaring 100 GB bodies from one peer and
//! holds them open; [`endless_heads`] keeps 1,000 connections sending header lines without end;
//! [`slow_clients`] holds 1,000 connections that say nothing, plain and over TLS, and sends a
//! `close_notify` right after a ClientHello (each on fresh queens without drones);
//! [`unauthenticated_big_bodies`] keeps 2,048 connections without a token declaring the largest
//! body a queen and a drone take, against a hive with a cluster token.
//!
//! The attackers connect from other loopback addresses (127.0.0.2 and up), as clients on other
//! machines would, so the larve counts them as other peers than the bench's own checks, which come
//! from 127.0.0.1: a [`Prober`] asks `/healthz` on a new connection over and over while an attack
//! runs. Attackers and prober share the machine with the larve, as they share its two cores.
//!
//! A part that fails does not stop the others: its larves are dropped with it, and its error is
//! the scenario's, after the other parts have added their rows.

mod endless_heads;
mod remote_kill;
mod slow_clients;
mod unauthenticated_big_bodies;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hive_support::larve::Larve;
use hive_support::rawhttp::{self, Answer, HEALTHZ_REQUEST};
use socket2::{Domain, Socket, Type};

use super::Bench;
use crate::report::{Report, ms, percentile, target};
use crate::{Result, progress};

pub const LABEL: &str = "front door under attack";

/// One part of the scenario.
type Part = fn(&Bench, &mut Report) -> Result<()>;

/// The parts, in the order they run.
const PARTS: [(&str, Part); 4] = [
    ("no remote kill", remote_kill::run),
    ("bounded memory", endless_heads::run),
    ("slow clients", slow_clients::run),
    (
        "unauthenticated big bodies",
        unauthenticated_big_bodies::run,
    ),
];

/// The `/healthz` answer time the issue asks for while a larve is under attack.
const HEALTHZ_MS_TARGET: f64 = 50.0;

/// The prober's pause after each answer, and how long it waits for one.
const PROBE_PAUSE: Duration = Duration::from_millis(10);
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Longest a prober runs, whatever happens to the part that started it.
const MAX_PROBING: Duration = Duration::from_secs(600);

/// Loopback addresses the attackers connect from: 127.0.0.2 and the next ones.
const FIRST_ATTACKER_OCTET: u8 = 2;

/// Milliseconds per second, for the table.
const MS_PER_SEC: f64 = 1000.0;

/// Runs every part and fails with the parts' errors, if any.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let mut errors = Vec::new();
    for (part, measure) in PARTS {
        progress(&format!("{LABEL}: {part}"));
        if let Err(why) = measure(bench, report) {
            progress(&format!("{LABEL}: {part} failed: {why}"));
            errors.push(format!("{part}: {why}"));
        }
    }
    report.note(format!(
        "{LABEL}: every part runs on fresh queens (`larve --queen --port 0`, no token, no drones, \
         the default connection caps). Attackers connect from 127.0.0.2 and up (bound with \
         socket2 before connecting), the bench's own checks from 127.0.0.1; /healthz probes each \
         open a new connection, send `GET /healthz HTTP/1.1` and time from connect() to the \
         answer's head (a probe not answered 200 within {} s counts as failed, at that time). \
         While an attack runs, a prober thread asks again {} ms after each answer. Threads are \
         the Threads: line of /proc/PID/status, descriptors the entries of /proc/PID/fd, RSS its \
         VmRSS: line sampled every 20 ms",
        PROBE_LIMIT.as_secs(),
        PROBE_PAUSE.as_millis()
    ));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The `n`-th attacker's address, over `count` of them: 127.0.0.2, 127.0.0.3, ...
fn attacker(n: usize, count: usize) -> IpAddr {
    let offset = u8::try_from(n % count.max(1)).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, FIRST_ATTACKER_OCTET + offset))
}

/// A blocking connection to `to` from the address `source`, opened within `timeout`.
fn connect_from(source: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// The address a larve listens on.
fn address_of(larve: &Larve) -> Result<SocketAddr> {
    larve
        .address()
        .parse()
        .map_err(|e| format!("{}: no address ({e})", larve.label))
}

/// Whether `larve` has not exited.
fn still_running(larve: &mut Larve) -> bool {
    // A wait of no time looks once: an error means it has not exited.
    larve.wait_exit(Duration::ZERO).is_err()
}

/// `/healthz` answers, each with how long it took.
#[derive(Default)]
struct Probes(Vec<(Answer, Duration)>);

impl Probes {
    fn add(&mut self, (answer, took): (Answer, Duration)) {
        self.0.push((answer, took));
    }

    fn count(&self) -> usize {
        self.0.len()
    }

    /// Probes not answered 200.
    fn failed(&self) -> usize {
        self.0
            .iter()
            .filter(|(answer, _)| *answer != Answer::Status(200))
            .count()
    }

    /// The `p`-th percentile of the times, in ms; infinite with no probe at all.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::INFINITY;
        }
        percentile(
            self.0
                .iter()
                .map(|(_, took)| took.as_secs_f64() * MS_PER_SEC),
            p,
        )
    }

    fn p50_ms(&self) -> f64 {
        self.percentile_ms(50.0)
    }

    fn p99_ms(&self) -> f64 {
        self.percentile_ms(99.0)
    }

    fn max_ms(&self) -> f64 {
        self.percentile_ms(100.0)
    }

    /// `p50 / p99 / max`, in ms, and the failures.
    fn show(&self) -> String {
        format!(
            "{} / {} / {} ms, {} failed",
            ms(self.p50_ms()),
            ms(self.p99_ms()),
            ms(self.max_ms()),
            self.failed()
        )
    }

    /// The row of the probes made while `what` ran, held to p99 (and max, when `max_too`) ≤
    /// [`HEALTHZ_MS_TARGET`] with none failed.
    fn row(&self, report: &mut Report, part: &str, what: &str, max_too: bool) {
        let p99_met = self.p99_ms() <= HEALTHZ_MS_TARGET;
        let max_met = !max_too || self.max_ms() <= HEALTHZ_MS_TARGET;
        let goal = if max_too { "p99 and max" } else { "p99" };
        report.row(
            LABEL,
            format!(
                "{part} /healthz from 127.0.0.1 {what}, {} probes: p50 / p99 / max",
                self.count()
            ),
            self.show(),
            target(
                &format!("{goal} ≤ {HEALTHZ_MS_TARGET:.0} ms, none failed"),
                p99_met && max_met && self.failed() == 0,
            ),
        );
    }
}

/// Asks `/healthz` on a new connection to `address` from the loopback address `source`: the
/// answer, and how long it took from the connect, all within `limit`.
fn healthz_from(source: IpAddr, address: SocketAddr, limit: Duration) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = match connect_from(source, address, limit) {
        Ok(mut stream) => match stream.write_all(HEALTHZ_REQUEST) {
            Ok(()) => rawhttp::final_status(&mut stream, started + limit),
            Err(_) => Answer::Closed,
        },
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Answer::Silent,
        Err(_) => Answer::Closed,
    };
    (answer, started.elapsed())
}

/// Asks `/healthz` on a thread of its own, a new connection each time, until finished (or
/// dropped, or [`MAX_PROBING`] has passed): from 127.0.0.1, or from the address given.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Probes>>,
}

impl Prober {
    /// Starts probing `larve` from 127.0.0.1 now.
    fn start(larve: &Larve) -> Result<Prober> {
        Prober::start_from(larve, None)
    }

    /// Starts probing `larve` now, from `source` when one is given.
    fn start_from(larve: &Larve, source: Option<IpAddr>) -> Result<Prober> {
        let address = address_of(larve)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("prober".into())
            .spawn(move || {
                let mut probes = Probes::default();
                let started = Instant::now();
                while !stopping.load(Ordering::Relaxed) && started.elapsed() < MAX_PROBING {
                    probes.add(match source {
                        Some(source) => healthz_from(source, address, PROBE_LIMIT),
                        None => rawhttp::healthz(&address.to_string(), PROBE_LIMIT),
                    });
                    thread::sleep(PROBE_PAUSE);
                }
                probes
            })
            .map_err(|e| format!("cannot start the prober: {e}"))?;
        Ok(Prober {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops probing and returns every probe.
    fn finish(mut self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
