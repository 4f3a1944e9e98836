//! Big body: what a queen does with bodies far over her 64 KiB limit. (a) A client
//! sends a whole 8 MiB body to `/submit_task` and then reads the answer: how soon it has one, and
//! whether the request left a descriptor or a thread behind. (b) 100 clients each send only the
//! headers of a request declaring 100 GB, read the answer (or give up after 1 s) and close: what
//! that leaves behind, and whether `/healthz` still answers at once. Each part has a fresh queen.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use hive::front::IDLE_LIFETIME;
use hive_support::larve::Larve;
use hive_support::procfs::Usage;
use hive_support::rawhttp::{self, Answer};
use hive_support::wait;

use super::Bench;
use crate::report::{Report, ms, target};
use crate::{Result, progress};

pub const LABEL: &str = "big body";

/// (a)'s body: 8 MiB, all of it sent.
const BIG_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How long (a) may take to write its whole body, and then to read the answer.
const BODY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes handed to one `write()`.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// (a)'s target: an answer, or the connection closed, within this.
const ANSWER_SECS_TARGET: f64 = 1.0;

/// (b)'s clients, the length they declare, and how long each waits for its answer.
const HEADER_CLIENTS: usize = 100;
const DECLARED_BYTES: u64 = 100_000_000_000;
const HEADER_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// (b)'s check that the queen still serves: `/healthz` within this.
const HEALTHZ_LIMIT: Duration = Duration::from_millis(100);

/// How long the queen may take to let go of what a request held, and how often she is looked at:
/// the front keeps a connection's thread for the next connection until it has been idle for
/// [`IDLE_LIFETIME`], then a second more.
const SETTLE: Duration = IDLE_LIFETIME.saturating_add(Duration::from_secs(1));
const USAGE_POLL: Duration = Duration::from_millis(20);

/// A fresh queen's threads and descriptors count as steady once this many readings in a row agree,
/// within this long.
const STEADY_READINGS: usize = 5;
const STEADY_TIMEOUT: Duration = Duration::from_secs(5);

/// The client threads of (b) only write a head and read one: a small stack is plenty.
const STACK_BYTES: usize = 64 * 1024;

/// The shortest socket timeout to set: a zero one is refused.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(1);

/// Unit conversions for the table.
const BYTES_PER_KIB: usize = 1024;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;
const MS_PER_SEC: f64 = 1000.0;

/// How (a)'s body went out.
enum Sent {
    All,
    /// The write deadline passed with this many body bytes sent: the queen stopped reading.
    Stalled(usize),
    /// The connection broke after this many body bytes, e.g. the queen answered and closed.
    Broken(usize, io::ErrorKind),
}

/// The head of a `POST /submit_task` declaring `length` bytes of JSON.
fn submit_head(length: u64) -> String {
    format!(
        "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Runs both parts, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    whole_body(bench, report)?;
    headers_only(bench, report)?;
    report.note(format!(
        "{LABEL}: each part on a fresh queen (no drones). Descriptors are the entries of \
         /proc/PID/fd, threads the Threads: line of /proc/PID/status; before is read once they \
         are steady ({STEADY_READINGS} equal readings {} ms apart), after is read once they are \
         back to before or {} s after the clients closed, whichever is first (the front keeps an idle \
         connection thread {} s for the next connection). (a) writes the head, \
         then the body in {} KiB writes with {} s for all of it, then reads the answer for up to {} \
         s; the time runs from connect() to the final status line (past any 100 Continue) or the \
         close",
        USAGE_POLL.as_millis(),
        SETTLE.as_secs(),
        IDLE_LIFETIME.as_secs(),
        WRITE_CHUNK_BYTES / BYTES_PER_KIB,
        BODY_WRITE_TIMEOUT.as_secs(),
        ANSWER_TIMEOUT.as_secs()
    ));
    Ok(())
}

/// (a): the whole 8 MiB body.
fn whole_body(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("body-a-queen", &[])?;
    let before = steady_usage(&queen)?;
    progress(&format!(
        "body-a: {} MiB body to /submit_task",
        BIG_BODY_BYTES as f64 / BYTES_PER_MIB
    ));
    let started = Instant::now();
    let mut stream = rawhttp::connect(&queen.address(), started + CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {}: {e}", queen.address()))?;
    let sent = send_big_body(&mut stream)?;
    let answer = rawhttp::final_status(&mut stream, Instant::now() + ANSWER_TIMEOUT);
    let took = started.elapsed().as_secs_f64();
    drop(stream);
    let after = settled_usage(&queen, &before)?;

    let how = match sent {
        Sent::All => "the whole body sent".to_string(),
        Sent::Stalled(bytes) => format!(
            "the write stalled: {:.1} of {:.0} MiB sent in {} s",
            bytes as f64 / BYTES_PER_MIB,
            BIG_BODY_BYTES as f64 / BYTES_PER_MIB,
            BODY_WRITE_TIMEOUT.as_secs()
        ),
        Sent::Broken(bytes, kind) => format!(
            "the connection broke ({kind}) after {:.1} MiB",
            bytes as f64 / BYTES_PER_MIB
        ),
    };
    report.row(
        LABEL,
        format!(
            "(a) {:.0} MiB body to /submit_task: s until an answer or close",
            BIG_BODY_BYTES as f64 / BYTES_PER_MIB
        ),
        format!("{took:.2} ({answer}; {how})"),
        target(
            &format!("≤ {ANSWER_SECS_TARGET:.0}"),
            took <= ANSWER_SECS_TARGET && answer != Answer::Silent,
        ),
    );
    usage_rows(report, "(a)", &before, &after, true);
    Ok(())
}

/// Writes (a)'s head and whole body within [`BODY_WRITE_TIMEOUT`], and says how it went.
fn send_big_body(stream: &mut TcpStream) -> Result<Sent> {
    let head = submit_head(BIG_BODY_BYTES as u64);
    // Valid JSON, so a queen that reads it all judges it by its size alone.
    let (open, close) = (br#"{"text":""#.as_slice(), br#""}"#.as_slice());
    let mut body = Vec::with_capacity(BIG_BODY_BYTES);
    body.extend_from_slice(open);
    body.resize(BIG_BODY_BYTES - close.len(), b'x');
    body.extend_from_slice(close);
    let deadline = Instant::now() + BODY_WRITE_TIMEOUT;
    let set_timeout = |stream: &TcpStream| {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_write_timeout(Some(left.max(MIN_SOCKET_TIMEOUT)))
            .map_err(|e| format!("cannot set a write timeout: {e}"))
    };
    set_timeout(stream)?;
    if let Err(e) = stream.write_all(head.as_bytes()) {
        return Ok(Sent::Broken(0, e.kind()));
    }
    let mut sent = 0;
    while sent < body.len() {
        if Instant::now() >= deadline {
            return Ok(Sent::Stalled(sent));
        }
        set_timeout(stream)?;
        let end = (sent + WRITE_CHUNK_BYTES).min(body.len());
        match stream.write(&body[sent..end]) {
            Ok(0) => return Ok(Sent::Broken(sent, io::ErrorKind::WriteZero)),
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Sent::Stalled(sent));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(Sent::Broken(sent, e.kind())),
        }
    }
    Ok(Sent::All)
}

/// (b): headers only, declaring 100 GB, from 100 clients at once.
fn headers_only(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("body-b-queen", &[])?;
    let before = steady_usage(&queen)?;
    progress(&format!(
        "body-b: {HEADER_CLIENTS} requests declaring {DECLARED_BYTES} bytes, headers only"
    ));
    let address = queen.address();
    let answers = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(HEADER_CLIENTS);
        for i in 0..HEADER_CLIENTS {
            let address = &address;
            let spawned = thread::Builder::new()
                .name("headers-only".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(scope, move || headers_only_client(address));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => return Err(format!("cannot start client {i}: {e}")),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a client panicked".to_string()))
            .collect::<Result<Vec<Answer>>>()
    })?;
    let (health, health_took) = rawhttp::healthz(&address, HEALTHZ_LIMIT);
    let after = settled_usage(&queen, &before)?;

    let mut tally: BTreeMap<Answer, usize> = BTreeMap::new();
    for answer in answers {
        *tally.entry(answer).or_default() += 1;
    }
    let tally: Vec<String> = tally
        .iter()
        .map(|(answer, count)| format!("{count} × {answer}"))
        .collect();
    report.row(
        LABEL,
        format!(
            "(b) {HEADER_CLIENTS} requests with only headers declaring {DECLARED_BYTES} bytes: \
             answers within {} s",
            HEADER_ANSWER_TIMEOUT.as_secs()
        ),
        tally.join(", "),
        "-",
    );
    usage_rows(report, "(b)", &before, &after, false);
    let served = health == Answer::Status(200) && health_took <= HEALTHZ_LIMIT;
    report.row(
        LABEL,
        format!(
            "(b) then /healthz on a new connection: answered within {} ms",
            HEALTHZ_LIMIT.as_millis()
        ),
        format!(
            "{} ({health} in {} ms)",
            if served { "yes" } else { "no" },
            ms(health_took.as_secs_f64() * MS_PER_SEC)
        ),
        "-",
    );
    Ok(())
}

/// One client of (b): the head, then the answer or [`HEADER_ANSWER_TIMEOUT`], then close.
fn headers_only_client(address: &str) -> Answer {
    let Ok(mut stream) = rawhttp::connect(address, Instant::now() + CONNECT_TIMEOUT) else {
        return Answer::Closed;
    };
    if stream
        .write_all(submit_head(DECLARED_BYTES).as_bytes())
        .is_err()
    {
        return Answer::Closed;
    }
    rawhttp::final_status(&mut stream, Instant::now() + HEADER_ANSWER_TIMEOUT)
}

/// The queen's descriptors and threads once they stop changing: a fresh queen is still starting
/// threads when she logs her address.
pub(super) fn steady_usage(queen: &Larve) -> Result<Usage> {
    let (mut last, mut same) = (None, 0);
    wait::poll(
        STEADY_TIMEOUT,
        USAGE_POLL,
        &format!("{}'s threads and descriptors to settle", queen.label),
        || {
            let now = Usage::of(queen.pid())?;
            same = if last == Some(now) { same + 1 } else { 1 };
            last = Some(now);
            Ok((same >= STEADY_READINGS).then_some(now))
        },
    )
}

/// The queen's descriptors and threads once back to `before`, or as they are after [`SETTLE`].
fn settled_usage(queen: &Larve, before: &Usage) -> Result<Usage> {
    let back = wait::poll(SETTLE, USAGE_POLL, "the queen to settle", || {
        Ok(Some(Usage::of(queen.pid())?).filter(|now| now.within(before)))
    });
    match back {
        Ok(usage) => Ok(usage),
        Err(_) => Usage::of(queen.pid()),
    }
}

/// The before / after rows of one part; `targeted` when nothing may be left behind.
fn usage_rows(report: &mut Report, part: &str, before: &Usage, after: &Usage, targeted: bool) {
    let rows = [
        (
            "open descriptors",
            before.descriptors as u64,
            after.descriptors as u64,
        ),
        ("threads", before.threads, after.threads),
    ];
    for (what, was, is) in rows {
        report.row(
            LABEL,
            format!("{part} queen {what} before / after"),
            format!("{was} / {is}"),
            if targeted {
                target("none left behind", is <= was)
            } else {
                "-".to_string()
            },
        );
    }
}
