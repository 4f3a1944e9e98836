//! The front's connections to tiny_http, over the Unix socket: kept alive, shared by every client
//! connection (each request takes one, and gives it back once the answer is read), and opened one
//! at a time.
//!
//! One at a time, because of tiny_http's thread pool: it gives a new connection a new thread only
//! when no thread counts as idle, and a thread it has just woken still counts as idle until it
//! runs. Two connections arriving together can therefore leave one queued with no thread, until
//! some other connection closes. So a new connection is first proven with a ping, `OPTIONS *`,
//! which the server answers at once (see `server.rs`): once that answer is back, a thread holds
//! the connection, and only then may the next one be opened. tiny_http never sees a burst.
//!
//! The requests a handler holds for a long time (long polls, `?wait=`) have a quota of their own,
//! so they can never take every connection from the others; past it they are refused with 503.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// What a request does to a connection, for the quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answered within the handler's own time limits.
    Regular = 0,
    /// Held by its handler for up to a minute.
    LongPoll = 1,
}

/// Why no answer came from the server.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection was free in time, or the long polls' quota is used up: 503.
    Busy(&'static str),
    /// The connection failed, or what came back was not an answer: 502.
    Failed(String),
}

/// Longest a request waits for a connection to the server before the client gets a 503.
const WAIT_FOR_CONNECTION: Duration = Duration::from_secs(30);

/// Longest a new connection's ping may take: the server answers it on the next free handler
/// thread, which a burst of slow submits may hold for a few task timeouts.
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// The ping: a request every HTTP/1.1 server must accept, which Hive's server answers 204.
const PING: &[u8] = b"OPTIONS * HTTP/1.1\r\nContent-Length: 0\r\n\r\n";

/// Room an answer is first read into; larger answers grow it.
const ANSWER_BUFFER_BYTES: usize = 16 * 1024;

/// The pool of connections to the server.
pub struct Upstream {
    path: PathBuf,
    /// Connections each kind may hold at once: `[regular, long polls]`.
    quotas: [usize; 2],
    state: Mutex<State>,
    /// Signalled when a connection comes back or a new one is open.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<UnixStream>,
    busy: [usize; 2],
    /// A new connection is being opened and proven.
    growing: bool,
}

/// Where an answer sits in the buffer [`Upstream::exchange`] filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Length of the head, its final empty line included.
    pub head: usize,
    /// Length of the whole answer.
    pub len: usize,
}

impl Upstream {
    /// A pool of connections to the socket at `path`, up to `regular` for ordinary requests and
    /// `long_polls` more for long polls.
    pub fn new(path: PathBuf, regular: usize, long_polls: usize) -> Upstream {
        Upstream {
            path,
            quotas: [regular.max(1), long_polls],
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// Opens `count` connections, one after another, so the first requests find them ready.
    pub fn open_ahead(&self, count: usize) -> io::Result<()> {
        for _ in 0..count.min(self.quotas[0]) {
            let stream = self.open()?;
            self.state.lock().idle.push(stream);
        }
        Ok(())
    }

    /// Sends `request` on a connection of the pool and reads the whole answer into `buffer`; a
    /// `HEAD` request's answer (`no_body`) has no body.
    pub fn exchange(
        &self,
        kind: Kind,
        request: &[u8],
        no_body: bool,
        buffer: &mut Vec<u8>,
    ) -> Result<Answer, UpstreamError> {
        let mut stream = self.take(kind)?;
        let answer = stream
            .write_all(request)
            .map_err(|e| format!("sending the request: {e}"))
            .and_then(|()| read_answer(&mut stream, no_body, buffer));
        let mut state = self.state.lock();
        state.busy[kind as usize] -= 1;
        if answer.is_ok() {
            state.idle.push(stream);
        }
        drop(state);
        self.changed.notify_one();
        answer.map_err(UpstreamError::Failed)
    }

    /// A connection for a request of `kind`: an idle one, a new one if the pool may grow now, or
    /// the next one given back.
    fn take(&self, kind: Kind) -> Result<UnixStream, UpstreamError> {
        let deadline = Instant::now() + WAIT_FOR_CONNECTION;
        let mut state = self.state.lock();
        loop {
            let mine = kind as usize;
            if state.busy[mine] < self.quotas[mine] {
                if let Some(stream) = state.idle.pop() {
                    state.busy[mine] += 1;
                    return Ok(stream);
                }
                let open = state.idle.len() + state.busy[0] + state.busy[1];
                if !state.growing && open < self.quotas[0] + self.quotas[1] {
                    state.growing = true;
                    state.busy[mine] += 1;
                    drop(state);
                    let opened = self.open();
                    let mut state = self.state.lock();
                    state.growing = false;
                    if opened.is_err() {
                        state.busy[mine] -= 1;
                    }
                    drop(state);
                    self.changed.notify_all();
                    return opened.map_err(|e| {
                        UpstreamError::Failed(format!("opening a connection to the server: {e}"))
                    });
                }
            } else if kind == Kind::LongPoll {
                return Err(UpstreamError::Busy("too many requests are waiting already"));
            }
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                return Err(UpstreamError::Busy("the server is busy"));
            }
        }
    }

    /// A new connection, proven by its ping (see the module docs).
    fn open(&self) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)?;
        stream.set_read_timeout(Some(PING_TIMEOUT))?;
        stream.write_all(PING)?;
        let mut buffer = Vec::new();
        read_answer(&mut stream, false, &mut buffer).map_err(io::Error::other)?;
        stream.set_read_timeout(None)?;
        Ok(stream)
    }
}

/// Reads one answer from `stream` into `buffer`: its head, then `Content-Length` bytes (none for
/// a `HEAD` request or a status that has no body). The server frames every answer so.
fn read_answer(
    stream: &mut UnixStream,
    no_body: bool,
    buffer: &mut Vec<u8>,
) -> Result<Answer, String> {
    if buffer.len() < ANSWER_BUFFER_BYTES {
        buffer.resize(ANSWER_BUFFER_BYTES, 0);
    }
    let mut filled = 0;
    let mut answer: Option<Answer> = None;
    loop {
        if filled == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let n = match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        let looked = filled;
        filled += n;
        if answer.is_none()
            && let Some(at) = buffer[looked.saturating_sub(3)..filled]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
        {
            let head = looked.saturating_sub(3) + at + 4;
            let body = body_length(&buffer[..head], no_body)?;
            answer = Some(Answer {
                head,
                len: head + body,
            });
        }
        if let Some(answer) = answer {
            if filled > answer.len {
                return Err("the server sent more than one answer".into());
            }
            if filled == answer.len {
                return Ok(answer);
            }
        }
    }
}

/// The length of the body that follows `head`.
fn body_length(head: &[u8], no_body: bool) -> Result<usize, String> {
    let status = head
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| head.starts_with(b"HTTP/1."))
        .ok_or("an answer without a status line")?;
    if no_body || status < 200 || status == 204 || status == 304 {
        return Ok(0);
    }
    head.split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at_checked(line.iter().position(|&b| b == b':')?)?;
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| std::str::from_utf8(&value[1..]).ok()?.trim().parse().ok())?
        })
        .ok_or_else(|| "an answer without a Content-Length".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_framed_by_its_content_length() {
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(body_length(head, false), Ok(12));
        assert_eq!(body_length(head, true), Ok(0), "HEAD");
        assert_eq!(
            body_length(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok(0)
        );
        assert!(body_length(b"HTTP/1.1 200 OK\r\n\r\n", false).is_err());
        assert!(body_length(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn answers_are_read_whole_whatever_the_pieces() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let writer = std::thread::spawn(move || {
            for piece in answer.chunks(7) {
                server.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            server
        });
        let mut buffer = Vec::new();
        let read = read_answer(&mut client, false, &mut buffer).unwrap();
        assert_eq!(read, Answer { head: 38, len: 43 });
        assert_eq!(&buffer[..read.len], answer);
        drop(writer.join().unwrap());
        assert!(
            read_answer(&mut client, false, &mut buffer).is_err(),
            "closed"
        );
    }
}
