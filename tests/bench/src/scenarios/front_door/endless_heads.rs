//! (b) Bounded memory: 1,000 connections at all times, each sending a header line that never
//! ends; each one the larve closes is replaced at once by a new one, for the plan's window, on
//! fresh queens as many times as the plan says. Before the front door tiny_http read such a line
//! into a buffer without limit, and a hundred of them took a gigabyte. The larve's RSS must stay
//! within 128 MB of its baseline, each connection must be closed within 1 s of passing the head
//! limit, and `/healthz` p99 must stay ≤ 50 ms.
//!
//! One thread drives every connection, non-blocking, through `poll(2)`: the attacker takes at
//! most one of the machine's two cores, as an attacker on another machine takes none, and a
//! connection's close is seen within one pass over the others.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hive::front::MAX_HEAD_BYTES;
use hive_support::procfs::{Peak, Sampler, rss_kib};
use hive_support::rawhttp::{self, Answer};
use socket2::{Domain, Socket, Type};

use super::{HEALTHZ_MS_TARGET, LABEL, Prober, Probes, address_of, attacker};
use crate::report::{Report, mb_of, median, ms, target};
use crate::scenarios::Bench;
use crate::scenarios::big_body::steady_usage;
use crate::{Result, progress};

/// Connections held at all times, spread over this many source addresses (under the larve's
/// per-address cap, so each is refused for its head, not for its address).
const CONNECTIONS: usize = 1_000;
const SOURCES: usize = 4;

/// What each connection sends first, then [`CHUNK_BYTES`] of `a` at a time, without end.
const HEAD_START: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ";
const CHUNK_BYTES: usize = 16 * 1024;

/// The most bytes of the larve's answer kept, for its status.
const ANSWER_KEPT_BYTES: usize = 1024;

/// How long one `poll()` waits at most.
const POLL_TIMEOUT_MS: i32 = 10;

/// The targets.
const CLOSE_SECS_TARGET: f64 = 1.0;
const RSS_MB_TARGET: f64 = 128.0;

const PART: &str = "(b)";

/// Milliseconds per second, for the table.
const MS_PER_SEC: f64 = 1000.0;

/// One connection sending its endless head.
struct Endless {
    stream: TcpStream,
    sent: usize,
    /// When the bytes sent first reached the head limit.
    crossed: Option<Instant>,
    /// The first bytes the larve answered.
    answer: Vec<u8>,
}

/// How a connection ended: when it passed the limit, when the larve closed it, what it answered.
struct Ended {
    crossed: Option<Instant>,
    at: Instant,
    sent: usize,
    answer: Option<Answer>,
}

impl Endless {
    /// Starts connecting to `to` from `source`, without waiting.
    fn open(source: IpAddr, to: SocketAddr) -> io::Result<Endless> {
        let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        match socket.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Endless {
            stream: socket.into(),
            sent: 0,
            crossed: None,
            answer: Vec::new(),
        })
    }

    /// Reads what the larve sent and writes more, as `revents` allow; `true` once the larve has
    /// closed the connection (or it failed).
    fn step(&mut self, revents: i16, chunk: &[u8]) -> bool {
        if revents & libc::POLLIN != 0 && self.read_answer() {
            return true;
        }
        if revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return true;
        }
        if revents & libc::POLLOUT != 0 {
            let bytes = match HEAD_START.get(self.sent..) {
                Some(rest) if !rest.is_empty() => rest,
                _ => chunk,
            };
            match self.stream.write(bytes) {
                Ok(n) => {
                    self.sent += n;
                    if self.crossed.is_none() && self.sent >= MAX_HEAD_BYTES {
                        self.crossed = Some(Instant::now());
                    }
                }
                Err(e) if would_wait(&e) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Reads what is there; `true` once the larve has closed the connection.
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

    /// What the connection came to once the larve closed it at `at`: whatever answer is still
    /// queued is read first, since the close may have been seen by a write.
    fn ended(mut self, at: Instant) -> Ended {
        self.read_answer();
        Ended {
            crossed: self.crossed,
            at,
            sent: self.sent,
            answer: rawhttp::answer_in(&self.answer),
        }
    }
}

fn would_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// What one flood's window saw.
struct Flood {
    ended: Vec<Ended>,
    /// Connections still open at the end: when each passed the limit, if it did, and bytes sent.
    open: Vec<(Option<Instant>, usize)>,
    /// Connections that could not even be started.
    failed_opens: usize,
    end: Instant,
}

impl Flood {
    /// Ms from passing the limit to the close, of each connection closed past it.
    fn close_delays_ms(&self) -> impl Iterator<Item = f64> {
        self.ended
            .iter()
            .filter_map(|e| e.crossed.map(|crossed| ms_between(crossed, e.at)))
    }

    /// Ms since passing the limit, of each connection still open past it at the end.
    fn open_past_ms(&self) -> impl Iterator<Item = f64> {
        self.open
            .iter()
            .filter_map(|(crossed, _)| crossed.map(|crossed| ms_between(crossed, self.end)))
    }
}

/// One flood on a fresh queen, and what the queen did meanwhile.
struct Measured {
    flood: Flood,
    probes: Probes,
    baseline_kib: u64,
    peak: Peak,
}

impl Measured {
    fn grown_mb(&self) -> f64 {
        mb_of(self.peak.rss_kb.saturating_sub(self.baseline_kib))
    }
}

/// Runs the floods, each on a fresh queen, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let window = bench.plan.endless_window;
    let floods = (1..=bench.plan.endless_floods)
        .map(|n| measure(bench, n, window))
        .collect::<Result<Vec<Measured>>>()?;
    let n = match floods.len() {
        1 => "1 flood".to_string(),
        count => format!("{count} floods"),
    };
    let grown = floods.iter().map(Measured::grown_mb).fold(0.0, f64::max);
    let per_flood: Vec<String> = floods
        .iter()
        .map(|m| format!("{:.1} → {:.1}", mb_of(m.baseline_kib), mb_of(m.peak.rss_kb)))
        .collect();
    report.row(
        LABEL,
        format!("{PART} RSS: baseline → most during the flood, MB, each of {n}; most grown by"),
        format!("{}; {grown:.1}", per_flood.join(", ")),
        target(
            &format!("grown ≤ {RSS_MB_TARGET:.0} MB"),
            grown <= RSS_MB_TARGET,
        ),
    );
    close_rows(report, &floods, &n);
    let p99s: Vec<f64> = floods.iter().map(|m| m.probes.p99_ms()).collect();
    let p99 = median(p99s.iter().copied());
    let failed: usize = floods.iter().map(|m| m.probes.failed()).sum();
    let each: Vec<String> = floods.iter().map(|m| m.probes.show()).collect();
    report.row(
        LABEL,
        format!(
            "{PART} /healthz from 127.0.0.1 during the flood: p99 ms, median of {n} (each: p50 / \
             p99 / max, failed)"
        ),
        format!("{} ({})", ms(p99), each.join("; ")),
        target(
            &format!("p99 ≤ {HEALTHZ_MS_TARGET:.0} ms, none failed"),
            p99 <= HEALTHZ_MS_TARGET && failed == 0,
        ),
    );
    let threads: Vec<String> = floods
        .iter()
        .map(|m| m.peak.max_threads.to_string())
        .collect();
    report.row(
        LABEL,
        format!("{PART} larve threads during the flood, most, each of {n}"),
        threads.join(", "),
        "-",
    );
    report.note(format!(
        "{LABEL}: {PART} one thread keeps {CONNECTIONS} connections open from {SOURCES} addresses \
         (127.0.0.2 on) for {} s, non-blocking, driven by poll(): each sends `{}` then {} KiB of \
         `a` whenever the socket takes more, and is replaced by a new one as soon as the larve \
         closes it; {n}, each on a fresh queen. A connection passes the head limit when the bytes \
         it has sent reach {} (the front's MAX_HEAD_BYTES, request line included); it is closed \
         when a read gives the end of the stream or an error, or a write fails (what the larve \
         answered is read before the connection is counted). Bytes sent are what the client's \
         kernel took, so they include what sat in socket buffers when the larve closed. The \
         connections, opened together and replaced as they close, move in waves: a probe can find \
         hundreds of new connections in the accept queue before it",
        window.as_secs(),
        String::from_utf8_lossy(HEAD_START).escape_debug(),
        CHUNK_BYTES / 1024,
        MAX_HEAD_BYTES
    ));
    Ok(())
}

/// Flood `n` on a fresh queen.
fn measure(bench: &Bench, n: usize, window: Duration) -> Result<Measured> {
    let queen = bench.queen(&format!("front-heads-r{n}-queen"), &[])?;
    let pid = queen.pid();
    let address = address_of(&queen)?;
    steady_usage(&queen)?;
    let baseline_kib = rss_kib(pid)?;
    progress(&format!(
        "{PART}: {CONNECTIONS} connections sending header lines without end for {} s",
        window.as_secs()
    ));
    let sampler = Sampler::start(pid);
    let prober = Prober::start(&queen)?;
    let flood = flood(address, window);
    let probes = prober.finish();
    let peak = sampler.finish();
    Ok(Measured {
        flood: flood?,
        probes,
        baseline_kib,
        peak,
    })
}

/// The rows on how soon connections were closed past the limit, and how they ended.
fn close_rows(report: &mut Report, floods: &[Measured], n: &str) {
    let delays: Vec<f64> = floods
        .iter()
        .flat_map(|m| m.flood.close_delays_ms())
        .collect();
    let open_past: Vec<f64> = floods.iter().flat_map(|m| m.flood.open_past_ms()).collect();
    let open_before: usize =
        floods.iter().map(|m| m.flood.open.len()).sum::<usize>() - open_past.len();
    let max_delay = delays.iter().copied().fold(0.0, f64::max);
    let longest_open = open_past.iter().copied().fold(0.0, f64::max);
    let goal_ms = CLOSE_SECS_TARGET * MS_PER_SEC;
    report.row(
        LABEL,
        format!(
            "{PART} connections closed by the larve after passing the head limit, all {n}: \
             count, ms from passing it to the close: median / max"
        ),
        format!(
            "{}, {} / {}",
            delays.len(),
            ms(median(delays.iter().copied())),
            ms(max_delay)
        ),
        target(
            &format!("each ≤ {CLOSE_SECS_TARGET:.0} s"),
            !delays.is_empty() && max_delay <= goal_ms && longest_open <= goal_ms,
        ),
    );
    report.row(
        LABEL,
        format!(
            "{PART} still open at the end of a flood, all {n}: past the limit (longest since, \
             ms) / not yet past it"
        ),
        format!("{} ({}) / {open_before}", open_past.len(), ms(longest_open)),
        "-",
    );
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_opens = 0;
    for flood in floods.iter().map(|m| &m.flood) {
        failed_opens += flood.failed_opens;
        for ended in &flood.ended {
            let answer = ended
                .answer
                .map_or_else(|| "closed without an answer".to_string(), |a| a.to_string());
            let when = if ended.crossed.is_some() {
                "past the limit"
            } else {
                "before the limit"
            };
            *answers.entry(format!("{answer} {when}")).or_default() += 1;
        }
    }
    let mut tally: Vec<String> = answers
        .iter()
        .map(|(answer, count)| format!("{count} × {answer}"))
        .collect();
    if failed_opens > 0 {
        tally.push(format!("{failed_opens} connections not opened"));
    }
    let most_sent = floods
        .iter()
        .flat_map(|m| {
            let flood = &m.flood;
            flood
                .ended
                .iter()
                .map(|e| e.sent)
                .chain(flood.open.iter().map(|(_, sent)| *sent))
        })
        .max()
        .unwrap_or(0);
    report.row(
        LABEL,
        format!("{PART} how the connections ended, all {n}; most bytes one connection sent"),
        format!("{}; {most_sent}", tally.join(", ")),
        "-",
    );
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * MS_PER_SEC
}

/// Keeps [`CONNECTIONS`] endless heads going to `to` for `window`.
fn flood(to: SocketAddr, window: Duration) -> Result<Flood> {
    let chunk = vec![b'a'; CHUNK_BYTES];
    let source = |i: usize| attacker(i, SOURCES);
    let mut failed_opens = 0;
    let open = |i: usize, failed: &mut usize| -> Result<Endless> {
        // A connection that cannot be started at all (out of ports, of descriptors) is counted,
        // and tried again; the window bounds the tries.
        loop {
            match Endless::open(source(i), to) {
                Ok(endless) => return Ok(endless),
                Err(e) if *failed > CONNECTIONS * 100 => {
                    return Err(format!("cannot open connections to {to}: {e}"));
                }
                Err(_) => *failed += 1,
            }
        }
    };
    let mut connections = (0..CONNECTIONS)
        .map(|i| open(i, &mut failed_opens))
        .collect::<Result<Vec<Endless>>>()?;
    let mut ended = Vec::new();
    let end = Instant::now() + window;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(CONNECTIONS);
    while Instant::now() < end {
        fds.clear();
        fds.extend(connections.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN | libc::POLLOUT,
            revents: 0,
        }));
        let left_ms = end.saturating_duration_since(Instant::now()).as_millis();
        let timeout = i32::try_from(left_ms).map_or(POLL_TIMEOUT_MS, |l| l.min(POLL_TIMEOUT_MS));
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures, each naming a descriptor
        // a connection in `connections` owns until after the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll() failed: {e}"));
        }
        for (i, pollfd) in fds.iter().enumerate() {
            if pollfd.revents == 0 || !connections[i].step(pollfd.revents, &chunk) {
                continue;
            }
            let at = Instant::now();
            let fresh = open(i, &mut failed_opens)?;
            ended.push(std::mem::replace(&mut connections[i], fresh).ended(at));
        }
    }
    Ok(Flood {
        ended,
        open: connections.iter().map(|c| (c.crossed, c.sent)).collect(),
        failed_opens,
        end,
    })
}
