//! (c) Slow clients: 1,000 connections that open and say nothing, on a queen serving plain HTTP
//! and on one serving TLS (certificates made with `openssl` in the run's directory). With
//! tiny_http's TLS one silent client stopped every new connection, since the handshake ran on its
//! accept thread. A new client must be answered within 100 ms meanwhile, handshake included. Then
//! the input behind RUSTSEC-2024-0336 (a `close_notify` right after the ClientHello, which made
//! rustls before 0.23.5 loop for ever) must leave no thread spinning.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hive::front::HEAD_DEADLINE;
use hive_support::larve::Larve;
use hive_support::pki::{self, CLOSE_NOTIFY, Pki};
use hive_support::procfs::{cpu_ticks, open_descriptors};
use hive_support::rawhttp::{self, Answer};
use hive_support::wait;

use super::{LABEL, Probes, address_of, attacker, connect_from};
use crate::report::{Report, ms, target};
use crate::scenarios::Bench;
use crate::scenarios::big_body::steady_usage;
use crate::tls::TlsClient;
use crate::{Result, progress};

/// Silent connections held, spread over this many source addresses (under the per-address cap).
const SILENT: usize = 1_000;
const SOURCES: usize = 4;

/// How long a connection may take to open, and the larve to hold them all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HELD_TIMEOUT: Duration = Duration::from_secs(5);
const HELD_POLL: Duration = Duration::from_millis(20);

/// The new clients: each waits this long at most, with this pause between them.
const PROBE_LIMIT: Duration = Duration::from_secs(2);
const PROBE_PAUSE: Duration = Duration::from_millis(10);

/// The answer time the issue asks for.
const ANSWER_MS_TARGET: f64 = 100.0;

/// ClientHello-then-close_notify connections, how long each may take to be closed, and the window
/// the larve's CPU time is read over after them.
const NOTIFIES: usize = 20;
const NOTIFY_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
const SPIN_WINDOW: Duration = Duration::from_secs(2);

/// Clock ticks per second in /proc (USER_HZ), and the most the larve may use over the window: a
/// quarter of what one spinning thread would.
const TICKS_PER_SEC: u64 = 100;
const SPIN_TICKS_TARGET: u64 = 50;

const PART: &str = "(c)";

/// Milliseconds per second, for the table.
const MS_PER_SEC: f64 = 1000.0;

/// Measures a plain queen, then a TLS one, then the close_notify input on another TLS queen.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let probes = bench.plan.slow_probes;
    let plain = bench.queen("front-slow-plain-queen", &[])?;
    let held = hold_silent(&plain, probes, |address| {
        rawhttp::healthz(address, PROBE_LIMIT)
    })?;
    held.row(report, "plain HTTP");
    drop(plain);

    let pki = Pki::create(&bench.dir.join("front-pki"), "hive-bench CA")?;
    let larve = pki.issue("larve")?;
    let client = TlsClient::trusting(&pki.ca())?;
    let secure = bench.queen("front-slow-tls-queen", &pki.larve_flags(&larve))?;
    let held = hold_silent(&secure, probes, |address| {
        client.healthz(address, PROBE_LIMIT)
    })?;
    held.row(report, "TLS (handshake included)");
    drop(secure);

    let notified = bench.queen("front-notify-queen", &pki.larve_flags(&larve))?;
    close_notify(&notified, &client, report)?;
    report.note(format!(
        "{LABEL}: {PART} the silent connections come from {SOURCES} addresses (127.0.0.2 on) and \
         send nothing; once the larve holds them all (its descriptors reach the baseline's plus \
         {SILENT}) {probes} new clients from 127.0.0.1 ask /healthz one after another, {} ms \
         apart, each on a new connection (over TLS: a rustls client trusting the hive's CA, \
         handshake included). All of it runs well within the {} s the front gives a connection \
         for its first head, and the larve is checked to hold every silent connection still at \
         the end. The TLS queens are `larve --queen --port 0 --tls-cert … --tls-key … --tls-ca …` \
         (a CA and one ECDSA P-256 certificate for 127.0.0.1 made with openssl). The \
         close_notify input: {NOTIFIES} connections in turn each send a ClientHello made by \
         rustls then a close_notify alert in clear, and read until the larve closes; the larve's \
         user + system CPU ticks (/proc/PID/stat, {TICKS_PER_SEC} a second) are read then and {} \
         s later",
        PROBE_PAUSE.as_millis(),
        HEAD_DEADLINE.as_secs(),
        SPIN_WINDOW.as_secs()
    ));
    Ok(())
}

/// What new clients saw while the silent connections were held.
struct Held {
    probes: Probes,
    /// Whether the larve still held every silent connection after the last probe.
    still_held: bool,
}

impl Held {
    fn row(&self, report: &mut Report, how: &str) {
        let max = self.probes.max_ms();
        report.row(
            LABEL,
            format!(
                "{PART} {SILENT} silent connections held, {how}: a new client's /healthz, {} \
                 probes: p50 / max (silent ones held throughout)",
                self.probes.count()
            ),
            format!(
                "{} / {} ms, {} failed ({})",
                ms(self.probes.p50_ms()),
                ms(max),
                self.probes.failed(),
                if self.still_held { "yes" } else { "no" }
            ),
            target(
                &format!("each ≤ {ANSWER_MS_TARGET:.0} ms"),
                max <= ANSWER_MS_TARGET && self.probes.failed() == 0 && self.still_held,
            ),
        );
    }
}

/// Opens [`SILENT`] silent connections to `larve`, waits until it holds them all, then asks
/// `/healthz` `count` times as a new client with `ask`.
fn hold_silent(
    larve: &Larve,
    count: usize,
    ask: impl Fn(&str) -> (Answer, Duration),
) -> Result<Held> {
    let pid = larve.pid();
    let address = address_of(larve)?;
    let baseline = steady_usage(larve)?;
    progress(&format!(
        "{PART}: {SILENT} silent connections to {}",
        larve.label
    ));
    let silent = (0..SILENT)
        .map(|i| {
            connect_from(attacker(i, SOURCES), address, CONNECT_TIMEOUT)
                .map_err(|e| format!("silent connection {i}: {e}"))
        })
        .collect::<Result<Vec<TcpStream>>>()?;
    let holding =
        || -> Result<bool> { Ok(open_descriptors(pid)? >= baseline.descriptors + SILENT) };
    wait::poll(
        HELD_TIMEOUT,
        HELD_POLL,
        "the larve to hold every silent connection",
        || Ok(holding()?.then_some(())),
    )?;
    let mut probes = Probes::default();
    for _ in 0..count {
        probes.add(ask(&larve.address()));
        thread::sleep(PROBE_PAUSE);
    }
    let still_held = holding()?;
    drop(silent);
    Ok(Held { probes, still_held })
}

/// Sends [`NOTIFIES`] ClientHellos each followed by a close_notify, then reads the larve's CPU
/// time over [`SPIN_WINDOW`], and checks it still serves.
fn close_notify(larve: &Larve, client: &TlsClient, report: &mut Report) -> Result<()> {
    let pid = larve.pid();
    let address = address_of(larve)?;
    steady_usage(larve)?;
    progress(&format!(
        "{PART}: {NOTIFIES} ClientHellos each followed by a close_notify"
    ));
    let mut input = pki::client_hello()?;
    input.extend_from_slice(&CLOSE_NOTIFY);
    let mut closed_in = Vec::with_capacity(NOTIFIES);
    let mut held = Vec::with_capacity(NOTIFIES);
    for _ in 0..NOTIFIES {
        let (stream, closed) = hello_then_close_notify(address, &input)?;
        closed_in.push(closed);
        held.push(stream);
    }
    let before = cpu_ticks(pid)?;
    thread::sleep(SPIN_WINDOW);
    let used = cpu_ticks(pid)? - before;
    drop(held);
    let (answer, took) = client.healthz(&larve.address(), PROBE_LIMIT);
    let unclosed = closed_in.iter().filter(|c| c.is_none()).count();
    let slowest = closed_in
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * MS_PER_SEC)
        .fold(0.0, f64::max);
    report.row(
        LABEL,
        format!(
            "{PART} TLS: {NOTIFIES} ClientHellos each followed by close_notify: larve CPU ticks \
             over the {} s after ({TICKS_PER_SEC} = one core for 1 s)",
            SPIN_WINDOW.as_secs()
        ),
        used.to_string(),
        target(
            &format!(
                "< {SPIN_TICKS_TARGET} (one spinning thread: {})",
                TICKS_PER_SEC * SPIN_WINDOW.as_secs()
            ),
            used < SPIN_TICKS_TARGET,
        ),
    );
    report.row(
        LABEL,
        format!(
            "{PART} TLS: those connections closed by the larve (slowest, ms); then a new client's \
             /healthz"
        ),
        format!(
            "{} of {NOTIFIES} ({}); {answer} in {} ms",
            NOTIFIES - unclosed,
            ms(slowest),
            ms(took.as_secs_f64() * MS_PER_SEC)
        ),
        "-",
    );
    Ok(())
}

/// One connection from 127.0.0.1 sending `input`; it is returned open, with how long the larve
/// took to close its side (`None`: not within [`NOTIFY_CLOSE_TIMEOUT`]).
fn hello_then_close_notify(
    address: SocketAddr,
    input: &[u8],
) -> Result<(TcpStream, Option<Duration>)> {
    let sent = Instant::now();
    let deadline = sent + NOTIFY_CLOSE_TIMEOUT;
    let mut stream = rawhttp::connect(&address.to_string(), deadline)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream
        .write_all(input)
        .map_err(|e| format!("cannot send the ClientHello: {e}"))?;
    let mut scratch = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Ok((stream, None));
        }
        match stream.read(&mut scratch) {
            Ok(0) => return Ok((stream, Some(sent.elapsed()))),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok((stream, None));
            }
            Err(_) => return Ok((stream, Some(sent.elapsed()))),
        }
    }
}
