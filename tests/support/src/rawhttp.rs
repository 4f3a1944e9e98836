//! Hand-written HTTP/1.1 on a plain socket, for what a load generator hides: when the first byte of
//! an answer arrives on a brand-new connection, and what a server answers to a body it may never
//! read. Every read and connect ends at a deadline.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

/// The smallest valid HTTP/1.1 `GET /healthz`.
pub const HEALTHZ_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Bytes read at a time.
const READ_CHUNK_BYTES: usize = 4096;

/// The most bytes of answer heads read before an answer counts as garbled.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Where an answer's head ends.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// Interim statuses (`100 Continue` and the like): a final answer follows them.
const INTERIM_STATUSES: Range<u16> = 100..200;

/// How an answer began, or why none came.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    /// The final status, past any interim one.
    Status(u16),
    /// The server closed or reset the connection without a final status.
    Closed,
    /// Nothing final came by the deadline.
    Silent,
    /// What came was not an HTTP answer head.
    Garbled,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(status) => write!(f, "HTTP {status}"),
            Answer::Closed => f.write_str("closed without an answer"),
            Answer::Silent => f.write_str("no answer"),
            Answer::Garbled => f.write_str("not an HTTP answer"),
        }
    }
}

/// Connects to `address` (`IP:PORT`) by `deadline`, with Nagle off so a request leaves at once.
pub fn connect(address: &str, deadline: Instant) -> io::Result<TcpStream> {
    let address: SocketAddr = address
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{address}: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let stream = TcpStream::connect_timeout(&address, left)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads some bytes into `buf`, waiting no later than `deadline`: `Ok(0)` when the peer closed,
/// a `TimedOut` error when the deadline passed first.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            done => return done,
        }
    }
}

/// When the first byte of an answer arrived on `stream`, or `None` if the server closed the
/// connection or sent nothing before `deadline`. A read can wake a few milliseconds past its
/// timeout, so a byte that came after the deadline counts as none.
pub fn first_byte(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    match read_by(stream, &mut chunk, deadline) {
        Ok(n) if n > 0 => Some(Instant::now()).filter(|&at| at < deadline),
        _ => None,
    }
}

/// Reads answer heads from `stream` until a final status, skipping interim ones, or until the
/// connection ends or `deadline` passes.
pub fn final_status(stream: &mut TcpStream, deadline: Instant) -> Answer {
    let mut head: Vec<u8> = Vec::new();
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        while let Some(end) = head.windows(HEAD_END.len()).position(|w| w == HEAD_END) {
            match status_of(&head[..end]) {
                Some(status) if INTERIM_STATUSES.contains(&status) => {
                    head.drain(..end + HEAD_END.len());
                }
                Some(status) => return Answer::Status(status),
                None => return Answer::Garbled,
            }
        }
        if head.len() > MAX_HEAD_BYTES {
            return Answer::Garbled;
        }
        match read_by(stream, &mut chunk, deadline) {
            Ok(0) => return Answer::Closed,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Answer::Silent,
            Err(_) => return Answer::Closed,
        }
    }
}

/// The status in an answer head's first line, `HTTP/1.1 413 Payload Too Large`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Asks `GET /healthz` on a new connection to `address`: the answer, and how long it took, all
/// within `limit`.
pub fn healthz(address: &str, limit: Duration) -> (Answer, Duration) {
    let started = Instant::now();
    let deadline = started + limit;
    let answer = match connect(address, deadline) {
        Ok(mut stream) => match stream.write_all(HEALTHZ_REQUEST) {
            Ok(()) => final_status(&mut stream, deadline),
            Err(_) => Answer::Closed,
        },
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Answer::Silent,
        Err(_) => Answer::Closed,
    };
    (answer, started.elapsed())
}
