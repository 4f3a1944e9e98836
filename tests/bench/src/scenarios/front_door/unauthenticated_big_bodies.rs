//! (d) Unauthenticated big bodies: a hive with a cluster token (a queen and her drone), and 2,048
//! connections without a token, each sending only a head that declares the largest body the larve
//! takes (a queen's `/reports`, a drone's `/tasks`), and then nothing. Each connection is held
//! open after the larve's answer (a larve keeps reading a refused request's connection for a
//! moment, so that the client sees the answer rather than a reset), then replaced by a new one,
//! for the plan's window: 2,048 such requests in the larve at all times, against the queen and
//! then the drone. The front asks the gate on the head, before it reads or allocates a body, and a
//! body grows only as its bytes arrive; so each larve's RSS must grow by at most 64 MB, and
//! `/healthz` asked from another address must keep a p99 ≤ 50 ms. Before either, 400 such
//! connections grew a drone by 814 MB.
//!
//! The attackers connect from 127.0.0.3 to 127.0.0.6, 512 each (the per-address cap), the probes
//! from 127.0.0.2. The larves take 4,096 connections in all (`--max-connections`), so the
//! attackers alone never reach the total cap, and the probe's connections are refused by nothing
//! but the larve's own load. One thread drives every attacking connection through `poll()`, as in
//! (b).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hive::front::{BodyLimits, MAX_BODY_BYTES};
use hive_support::larve::{Larve, Launch};
use hive_support::procfs::{Peak, Sampler, rss_kib};
use hive_support::rawhttp;
use hive_support::wait;
use socket2::{Domain, Socket, Type};

use super::{HEALTHZ_MS_TARGET, LABEL, Prober, Probes, address_of};
use crate::report::{Report, mb_of, target};
use crate::scenarios::Bench;
use crate::scenarios::big_body::steady_usage;
use crate::{Result, progress};

/// Connections at all times, from this many source addresses (each at its per-address cap).
const CONNECTIONS: usize = 2_048;
const SOURCES: usize = 4;

/// The attackers' first address, 127.0.0.3; the probes come from 127.0.0.2.
const FIRST_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The larves' cap on connections in all: above the attackers' 2,048.
const MAX_CONNECTIONS: &str = "4096";

/// How long a connection is held open after the larve answered it: longer than the larve reads
/// on after a refusal (a second), so each connection costs the larve all it can.
const HOLD_AFTER_ANSWER: Duration = Duration::from_millis(1500);

/// The most bytes of the larve's answer kept, for its status.
const ANSWER_KEPT_BYTES: usize = 1024;

/// How long one `poll()` waits at most.
const POLL_TIMEOUT_MS: i32 = 10;

/// How long the drone may take to register with the queen.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_POLL: Duration = Duration::from_millis(20);

/// The cluster token of the hive attacked (the attackers send none).
const TOKEN: &str = "hive-bench-unauthenticated-big-bodies";

/// The target on memory.
const RSS_MB_TARGET: f64 = 64.0;

const PART: &str = "(d)";

/// Where a connection is.
enum Stage {
    /// Connecting, or sending the head (this many bytes of it sent).
    Sending(usize),
    /// The head is sent: reading the answer until the larve closes.
    Reading,
    /// Answered and closed by the larve; held open until then.
    Holding(Instant),
}

/// One attacking connection.
struct Attacker {
    stream: TcpStream,
    stage: Stage,
    answer: Vec<u8>,
}

impl Attacker {
    /// Starts connecting to `to` from `source`, without waiting.
    fn open(source: IpAddr, to: SocketAddr) -> io::Result<Attacker> {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Attacker {
            stream: socket.into(),
            stage: Stage::Sending(0),
            answer: Vec::new(),
        })
    }

    /// What to poll for.
    fn events(&self) -> i16 {
        match self.stage {
            Stage::Sending(_) => libc::POLLOUT,
            Stage::Reading => libc::POLLIN,
            Stage::Holding(_) => 0,
        }
    }

    /// Sends the head or reads the answer, as `revents` allow; `true` once the connection is done
    /// (held long enough after its answer, or failed).
    fn step(&mut self, revents: i16, head: &[u8], now: Instant) -> bool {
        match self.stage {
            Stage::Holding(since) => return now.duration_since(since) >= HOLD_AFTER_ANSWER,
            _ if revents & libc::POLLERR != 0 => return true,
            Stage::Sending(sent) if revents & libc::POLLOUT != 0 => {
                match self.stream.write(&head[sent..]) {
                    Ok(n) if sent + n == head.len() => self.stage = Stage::Reading,
                    Ok(n) => self.stage = Stage::Sending(sent + n),
                    Err(e) if would_wait(&e) => {}
                    Err(_) => return true,
                }
            }
            Stage::Reading if revents & (libc::POLLIN | libc::POLLHUP) != 0 => {
                let closed = self.read_answer();
                self.stage = if closed {
                    Stage::Holding(now)
                } else {
                    Stage::Reading
                };
            }
            _ => {}
        }
        false
    }

    /// Reads what is there; `true` once the larve has closed its side.
    fn read_answer(&mut self) -> bool {
        let mut buf = [0u8; ANSWER_KEPT_BYTES];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    let room = ANSWER_KEPT_BYTES.saturating_sub(self.answer.len());
                    self.answer.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if would_wait(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// What the larve answered, if it did.
    fn outcome(&self) -> String {
        match (&self.stage, rawhttp::answer_in(&self.answer)) {
            (Stage::Holding(_), Some(answer)) => answer.to_string(),
            (Stage::Holding(_), None) => "closed without an answer".to_string(),
            _ => "failed before an answer".to_string(),
        }
    }
}

fn would_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// What the attack on one larve saw.
struct Attack {
    /// How the connections that ended ended, by what the larve answered.
    answers: BTreeMap<String, usize>,
    /// Connections that could not be started at all.
    failed_opens: usize,
    probes: Probes,
    baseline_kib: u64,
    peak: Peak,
}

/// Attacks the queen and then the drone of a hive with a token, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let window = bench.plan.big_bodies_window;
    let launch = Launch::token(TOKEN);
    let queen = bench.launcher.start(
        "front-bodies-queen",
        &[
            "--queen",
            "--port",
            "0",
            "--max-connections",
            MAX_CONNECTIONS,
        ],
        &launch,
    )?;
    let drone = bench.launcher.start(
        "front-bodies-drone",
        &[
            "--queen-host",
            &queen.address(),
            "--port",
            "0",
            "--max-connections",
            MAX_CONNECTIONS,
        ],
        &launch,
    )?;
    wait::until(
        REGISTER_TIMEOUT,
        REGISTER_POLL,
        "the drone to register with the queen",
        || queen.stderr().contains("registered drone-0").then_some(()),
    )?;
    for (who, larve, limits) in [
        ("queen", &queen, hive::queen::BODY_LIMITS),
        ("drone", &drone, hive::drone::BODY_LIMITS),
    ] {
        let (path, declared) = largest(&limits);
        let attack = attack(larve, path, declared, window)?;
        rows(report, who, path, declared, &attack);
    }
    report.note(format!(
        "{LABEL}: {PART} a queen `larve --queen --port 0 --max-connections {MAX_CONNECTIONS}` and \
         her drone (`--queen-host QUEEN --port 0 --max-connections {MAX_CONNECTIONS}`), both with \
         a cluster token (HIVE_TOKEN). One thread keeps {CONNECTIONS} connections open to one of \
         them for {} s, from {SOURCES} addresses ({FIRST_ATTACKER} on), non-blocking, driven by \
         poll(): each sends `POST PATH HTTP/1.1`, `Host`, `Content-Type: application/json` and a \
         `Content-Length` of the larve's largest body limit (PATH: the path that has it), no \
         token and no body; reads what the larve answers until it closes its side; is held open \
         {} ms more; and is replaced by a new one. Meanwhile /healthz is asked from \
         {PROBE_SOURCE}, another address, on a new connection each time, and the larve's VmRSS \
         is sampled every 20 ms; the baseline is read once its threads and descriptors are \
         steady, before the attack",
        window.as_secs(),
        HOLD_AFTER_ANSWER.as_millis()
    ));
    Ok(())
}

/// The path with the largest body limit in `limits`, and that limit.
fn largest(limits: &BodyLimits) -> (&'static str, usize) {
    limits
        .by_path
        .iter()
        .copied()
        .max_by_key(|(_, limit)| *limit)
        .filter(|(_, limit)| *limit > MAX_BODY_BYTES)
        .unwrap_or(("/healthz", MAX_BODY_BYTES))
}

/// Keeps [`CONNECTIONS`] heads declaring `declared` bytes to `path` going to `larve` for `window`,
/// probing and sampling meanwhile.
fn attack(larve: &Larve, path: &str, declared: usize, window: Duration) -> Result<Attack> {
    let to = address_of(larve)?;
    steady_usage(larve)?;
    let baseline_kib = rss_kib(larve.pid())?;
    progress(&format!(
        "{PART}: {CONNECTIONS} connections without a token declaring {declared}-byte bodies to \
         {} {path} for {} s",
        larve.label,
        window.as_secs()
    ));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    let sampler = Sampler::start(larve.pid());
    let prober = Prober::start_from(larve, Some(IpAddr::V4(PROBE_SOURCE)))?;
    let flood = flood(to, head.as_bytes(), window);
    let probes = prober.finish();
    let peak = sampler.finish();
    let (answers, failed_opens) = flood?;
    Ok(Attack {
        answers,
        failed_opens,
        probes,
        baseline_kib,
        peak,
    })
}

/// The `n`-th attacker's address: 127.0.0.3 and the next ones.
fn source(n: usize) -> IpAddr {
    let [a, b, c, d] = FIRST_ATTACKER.octets();
    IpAddr::V4(Ipv4Addr::new(a, b, c, d + (n % SOURCES) as u8))
}

/// Keeps the attacking connections going for `window`; returns how those that ended ended, and
/// how many could not be started.
fn flood(
    to: SocketAddr,
    head: &[u8],
    window: Duration,
) -> Result<(BTreeMap<String, usize>, usize)> {
    let mut failed_opens = 0;
    let mut open = |i: usize| -> Result<Attacker> {
        // A connection that cannot be started (out of ports, of descriptors) is counted and tried
        // again; the window bounds the tries.
        loop {
            match Attacker::open(source(i), to) {
                Ok(attacker) => return Ok(attacker),
                Err(e) if failed_opens > CONNECTIONS * 100 => {
                    return Err(format!("cannot open connections to {to}: {e}"));
                }
                Err(_) => failed_opens += 1,
            }
        }
    };
    let mut connections = (0..CONNECTIONS)
        .map(&mut open)
        .collect::<Result<Vec<Attacker>>>()?;
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let end = Instant::now() + window;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(CONNECTIONS);
    while Instant::now() < end {
        fds.clear();
        fds.extend(connections.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: c.events(),
            revents: 0,
        }));
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures, each naming a descriptor
        // a connection in `connections` owns until after the call.
        let ready =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_TIMEOUT_MS) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll() failed: {e}"));
        }
        let now = Instant::now();
        for (i, pollfd) in fds.iter().enumerate() {
            if connections[i].step(pollfd.revents, head, now) {
                let done = std::mem::replace(&mut connections[i], open(i)?);
                *answers.entry(done.outcome()).or_default() += 1;
            }
        }
    }
    Ok((answers, failed_opens))
}

/// The rows of one larve's attack.
fn rows(report: &mut Report, who: &str, path: &str, declared: usize, attack: &Attack) {
    let mut tally: Vec<String> = attack
        .answers
        .iter()
        .map(|(answer, count)| format!("{count} × {answer}"))
        .collect();
    if attack.failed_opens > 0 {
        tally.push(format!("{} connections not opened", attack.failed_opens));
    }
    report.row(
        LABEL,
        format!(
            "{PART} {who}: {CONNECTIONS} connections at all times without a token, each \
             declaring a {declared}-byte body to {path}: how they ended"
        ),
        tally.join(", "),
        "-",
    );
    let grown = mb_of(attack.peak.rss_kb.saturating_sub(attack.baseline_kib));
    report.row(
        LABEL,
        format!("{PART} {who}: RSS baseline → most during the attack, MB; grown by"),
        format!(
            "{:.1} → {:.1}; {grown:.1}",
            mb_of(attack.baseline_kib),
            mb_of(attack.peak.rss_kb)
        ),
        target(
            &format!("grown ≤ {RSS_MB_TARGET:.0} MB"),
            grown <= RSS_MB_TARGET,
        ),
    );
    report.row(
        LABEL,
        format!("{PART} {who}: threads during the attack, most"),
        attack.peak.max_threads.to_string(),
        "-",
    );
    let probes = &attack.probes;
    report.row(
        LABEL,
        format!(
            "{PART} {who}: /healthz from {PROBE_SOURCE} during the attack, {} probes: p50 / p99 / \
             max",
            probes.count()
        ),
        probes.show(),
        target(
            &format!("p99 ≤ {HEALTHZ_MS_TARGET:.0} ms, none failed"),
            probes.p99_ms() <= HEALTHZ_MS_TARGET && probes.failed() == 0,
        ),
    );
}
