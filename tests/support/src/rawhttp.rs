//! Hand-written HTTP/1.1 on a plain socket, for what an HTTP client hides or refuses to send: when
//! the first byte of an answer arrives on a brand-new connection, what a server answers to a body
//! it may never read, to a malformed request, or to exactly the bytes another client sends. Every
//! connect, write and read ends at a deadline.

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

/// What the bytes read so far on a connection hold.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Not yet a final answer's whole head.
    Partial,
    /// A final answer's head, past any interim ones: its status, where its body starts, and the
    /// body's length when the head gives one.
    Final {
        status: u16,
        body_start: usize,
        length: Option<usize>,
    },
    /// Not an HTTP answer.
    Garbled,
}

/// Finds the final answer's head in `bytes`, skipping interim ones.
fn parse(bytes: &[u8]) -> Parsed {
    let mut start = 0;
    loop {
        let rest = &bytes[start..];
        let Some(end) = rest.windows(HEAD_END.len()).position(|w| w == HEAD_END) else {
            return if rest.len() > MAX_HEAD_BYTES {
                Parsed::Garbled
            } else {
                Parsed::Partial
            };
        };
        let head = &rest[..end];
        let Some(status) = status_of(head) else {
            return Parsed::Garbled;
        };
        let body_start = start + end + HEAD_END.len();
        if !INTERIM_STATUSES.contains(&status) {
            return Parsed::Final {
                status,
                body_start,
                length: content_length(head),
            };
        }
        start = body_start;
    }
}

/// The final answer's status in `bytes`, the first bytes a server sent (past any interim answer);
/// [`Answer::Garbled`] when they are no HTTP answer, `None` while its head is not in yet.
pub fn answer_in(bytes: &[u8]) -> Option<Answer> {
    match parse(bytes) {
        Parsed::Final { status, .. } => Some(Answer::Status(status)),
        Parsed::Garbled => Some(Answer::Garbled),
        Parsed::Partial => None,
    }
}

/// Appends what `stream` has next to `bytes`, waiting no later than `deadline`: `Ok(0)` when the
/// peer closed.
fn read_more(stream: &mut TcpStream, bytes: &mut Vec<u8>, deadline: Instant) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let n = read_by(stream, &mut chunk, deadline)?;
    bytes.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads answer heads from `stream` until a final status, skipping interim ones, or until the
/// connection ends or `deadline` passes. The body is left unread.
pub fn final_status(stream: &mut TcpStream, deadline: Instant) -> Answer {
    let mut bytes = Vec::new();
    loop {
        match parse(&bytes) {
            Parsed::Final { status, .. } => return Answer::Status(status),
            Parsed::Garbled => return Answer::Garbled,
            Parsed::Partial => {}
        }
        match read_more(stream, &mut bytes, deadline) {
            Ok(0) => return Answer::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Answer::Silent,
            Err(_) => return Answer::Closed,
        }
    }
}

/// Reads one whole answer from `stream` ([`Answers::next`]), for a connection that gets one: what
/// arrives past it is dropped.
pub fn read_response(stream: &mut TcpStream, deadline: Instant) -> String {
    Answers::new(stream).next(deadline)
}

/// The answers on one connection, one after another. A read takes whatever the socket holds, and
/// a server may send the answer to a pipelined request right behind the one before it, so what
/// arrives past one answer is kept for the next.
pub struct Answers<'a> {
    stream: &'a mut TcpStream,
    /// Read and not yet part of an answer returned.
    bytes: Vec<u8>,
}

impl<'a> Answers<'a> {
    pub fn new(stream: &'a mut TcpStream) -> Answers<'a> {
        Answers {
            stream,
            bytes: Vec::new(),
        }
    }

    /// The next whole answer: status line, headers and a body of the length it declares, past any
    /// interim answer (which stays in the text), or what came before the connection ended or
    /// `deadline` passed. A body of no declared length ends with the connection.
    pub fn next(&mut self, deadline: Instant) -> String {
        loop {
            let end = match parse(&self.bytes) {
                Parsed::Final {
                    body_start,
                    length: Some(length),
                    ..
                } => Some(body_start + length).filter(|&end| end <= self.bytes.len()),
                Parsed::Final { length: None, .. } | Parsed::Partial => None,
                Parsed::Garbled => Some(self.bytes.len()),
            };
            if let Some(end) = end {
                let rest = self.bytes.split_off(end);
                let answer = std::mem::replace(&mut self.bytes, rest);
                return String::from_utf8_lossy(&answer).into_owned();
            }
            if !matches!(read_more(self.stream, &mut self.bytes, deadline), Ok(n) if n > 0) {
                return String::from_utf8_lossy(&std::mem::take(&mut self.bytes)).into_owned();
            }
        }
    }
}

/// Sends `request` on a new connection to `address` (`IP:PORT`) and reads one whole answer
/// ([`read_response`]), all within `within`. `Err` when the request could not be sent.
pub fn exchange(address: &str, request: &[u8], within: Duration) -> io::Result<String> {
    let deadline = Instant::now() + within;
    let mut stream = connect(address, deadline)?;
    stream.set_write_timeout(Some(within))?;
    stream.write_all(request)?;
    Ok(read_response(&mut stream, deadline))
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

/// The `Content-Length` an answer head declares.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    const INTERIM_THEN_413: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn the_final_head_is_found_past_interim_ones() {
        assert_eq!(
            parse(INTERIM_THEN_413),
            Parsed::Final {
                status: 413,
                body_start: INTERIM_THEN_413.len() - 5,
                length: Some(5),
            }
        );
        assert_eq!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"),
            Parsed::Partial
        );
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), Parsed::Garbled);
        assert_eq!(parse(&[b'x'; MAX_HEAD_BYTES + 1]), Parsed::Garbled);
        assert_eq!(answer_in(INTERIM_THEN_413), Some(Answer::Status(413)));
        assert_eq!(answer_in(b"HTTP/1.1 431 Req"), None);
    }

    /// A server on a free loopback port that answers its first connection with `answer` once it
    /// has read the request's head, then holds the connection open until the client closes it.
    fn answering(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("an address").to_string();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a connection");
            let mut request = Vec::new();
            while !request.ends_with(HEAD_END) {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).unwrap_or(0) == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            stream.write_all(answer).expect("answer");
            let _ = stream.read(&mut [0u8; 1]);
        });
        address
    }

    #[test]
    fn an_exchange_ends_once_the_declared_body_is_in() {
        let address = answering(INTERIM_THEN_413);
        let started = Instant::now();
        let text = exchange(&address, HEALTHZ_REQUEST, Duration::from_secs(30)).expect("sent");
        assert_eq!(text.as_bytes(), INTERIM_THEN_413);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it waited for the close"
        );
    }

    #[test]
    fn answers_that_arrive_together_are_read_one_by_one() {
        let two: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let deadline = || Instant::now() + Duration::from_secs(10);
        let mut stream = connect(&answering(two), deadline()).expect("connect");
        stream.write_all(HEALTHZ_REQUEST).expect("send");
        let mut answers = Answers::new(&mut stream);
        assert_eq!(
            answers.next(deadline()),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert_eq!(
            answers.next(deadline()),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_final_status_is_read_past_interim_ones_and_silence_is_told_apart() {
        let deadline = || Instant::now() + Duration::from_secs(10);
        let mut stream = connect(&answering(INTERIM_THEN_413), deadline()).expect("connect");
        stream.write_all(HEALTHZ_REQUEST).expect("send");
        assert_eq!(final_status(&mut stream, deadline()), Answer::Status(413));

        let mut quiet = connect(&answering(b""), deadline()).expect("connect");
        let soon = Instant::now() + Duration::from_millis(100);
        assert_eq!(final_status(&mut quiet, soon), Answer::Silent);
    }
}
