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
//! Requests that find every connection busy wait in line, and each connection given back goes to
//! the one waiting longest, as tiny_http's own queue serves requests in order. Nothing waits long
//! in a handler: a request whose answer waits is held by the front (`held.rs`) and never comes
//! here.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why no answer came from the server.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection was free in time: 503.
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
    /// Connections open at most.
    size: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    idle: Vec<UnixStream>,
    busy: usize,
    /// A new connection is being opened and proven.
    growing: bool,
    /// Requests waiting for a connection, first come first served: a connection given back goes
    /// to the longest waiting, never to a request that arrived after it.
    waiting: VecDeque<Arc<Ticket>>,
}

/// A waiting request's place in line, and what it is handed.
struct Ticket {
    handed: Mutex<Option<Handed>>,
    ready: Condvar,
}

/// What a waiting request is handed.
enum Handed {
    Connection(UnixStream),
    /// Its turn to open a new connection.
    Growth,
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
    /// A pool of up to `size` connections to the socket at `path`.
    pub fn new(path: PathBuf, size: usize) -> Upstream {
        Upstream {
            path,
            size: size.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Opens `count` connections, one after another, so the first requests find them ready.
    pub fn open_ahead(&self, count: usize) -> io::Result<()> {
        for _ in 0..count.min(self.size) {
            let stream = self.open()?;
            self.state.lock().idle.push(stream);
        }
        Ok(())
    }

    /// Sends `request` on a connection of the pool and reads the whole answer into `buffer`; a
    /// `HEAD` request's answer (`no_body`) has no body.
    pub fn exchange(
        &self,
        request: &[u8],
        no_body: bool,
        buffer: &mut Vec<u8>,
    ) -> Result<Answer, UpstreamError> {
        let mut stream = self.take()?;
        let answer = stream
            .write_all(request)
            .map_err(|e| format!("sending the request: {e}"))
            .and_then(|()| read_answer(&mut stream, no_body, None, buffer));
        let mut state = self.state.lock();
        state.busy -= 1;
        if answer.is_ok() {
            state.idle.push(stream);
        }
        self.hand_out(&mut state);
        drop(state);
        answer.map_err(UpstreamError::Failed)
    }

    /// A connection: an idle one, a new one if the pool may grow now, or the one handed to this
    /// request when its turn in line comes.
    fn take(&self) -> Result<UnixStream, UpstreamError> {
        let mut state = self.state.lock();
        if state.waiting.is_empty() {
            if let Some(stream) = state.idle.pop() {
                state.busy += 1;
                return Ok(stream);
            }
            if self.may_grow(&state) {
                state.growing = true;
                state.busy += 1;
                drop(state);
                return self.grow();
            }
        }
        let ticket = Arc::new(Ticket {
            handed: Mutex::new(None),
            ready: Condvar::new(),
        });
        state.waiting.push_back(ticket.clone());
        drop(state);

        let deadline = Instant::now() + WAIT_FOR_CONNECTION;
        let mut handed = ticket.handed.lock();
        while handed.is_none() {
            if ticket.ready.wait_until(&mut handed, deadline).timed_out() {
                break;
            }
        }
        let handed = match handed.take() {
            Some(handed) => handed,
            None => {
                // Out of line, unless it was handed something meanwhile.
                drop(handed);
                let mut state = self.state.lock();
                state
                    .waiting
                    .retain(|waiting| !Arc::ptr_eq(waiting, &ticket));
                drop(state);
                match ticket.handed.lock().take() {
                    Some(handed) => handed,
                    None => return Err(UpstreamError::Busy("the server is busy")),
                }
            }
        };
        match handed {
            Handed::Connection(stream) => Ok(stream),
            Handed::Growth => self.grow(),
        }
    }

    /// Whether a new connection may be opened now: none is being opened, and the pool is not full.
    fn may_grow(&self, state: &State) -> bool {
        !state.growing && state.idle.len() + state.busy < self.size
    }

    /// Opens a connection for a request whose place in the pool is already counted.
    fn grow(&self) -> Result<UnixStream, UpstreamError> {
        let opened = self.open();
        let mut state = self.state.lock();
        state.growing = false;
        if opened.is_err() {
            state.busy -= 1;
        }
        self.hand_out(&mut state);
        drop(state);
        opened
            .map_err(|e| UpstreamError::Failed(format!("opening a connection to the server: {e}")))
    }

    /// Hands idle connections, or the turn to open one, to the requests waiting longest.
    fn hand_out(&self, state: &mut State) {
        while let Some(ticket) = state.waiting.front() {
            let handed = if let Some(stream) = state.idle.pop() {
                Handed::Connection(stream)
            } else if self.may_grow(state) {
                state.growing = true;
                Handed::Growth
            } else {
                break;
            };
            state.busy += 1;
            *ticket.handed.lock() = Some(handed);
            ticket.ready.notify_one();
            state.waiting.pop_front();
        }
    }

    /// A new connection, proven by its ping (see the module docs).
    fn open(&self) -> io::Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)?;
        stream.write_all(PING)?;
        let mut buffer = Vec::new();
        read_answer(&mut stream, false, Some(PING_TIMEOUT), &mut buffer)
            .map_err(io::Error::other)?;
        Ok(stream)
    }
}

/// Reads one answer from `stream` into `buffer`: its head, then `Content-Length` bytes (none for
/// a `HEAD` request or a status that has no body). The server frames every answer so. Each wait
/// for more ends after `timeout` (`None`: never).
fn read_answer(
    stream: &mut UnixStream,
    no_body: bool,
    timeout: Option<Duration>,
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
        wait_readable(stream, timeout).map_err(|e| format!("waiting for the answer: {e}"))?;
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

/// Waits until `stream` has bytes to read (or the server closed it), for at most `timeout`.
///
/// Waiting in `poll` rather than in `read` saves a wake-up per request. A thread blocked in a
/// Unix stream socket's `read` is woken by any event on the socket, and one comes with every
/// request: when the server reads the request, the kernel announces room to write again on the
/// front's end (`unix_write_space`), so the front thread woke, found no answer yet and slept
/// again. `poll` for `POLLIN` is woken only by what it waits for. On a queen under
/// `wrk -c32` the front threads went from 2.96 to 2.00 context switches per request (a drone's
/// from 2.35 to 2.13). tiny_http's connection threads, blocked in `read` on the other end, are
/// woken the same way when the front reads an answer; that one the front cannot avoid.
fn wait_readable(stream: &UnixStream, timeout: Option<Duration>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let millis = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, for the length of the call.
        match unsafe { libc::poll(&mut fd, 1, millis) } {
            0 => return Err(io::ErrorKind::TimedOut.into()),
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Most header fields in one of the server's answers: tiny_http sends four or five.
const MAX_ANSWER_FIELDS: usize = 16;

/// The length of the body that follows `head`, an answer's head from the server.
fn body_length(head: &[u8], no_body: bool) -> Result<usize, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_ANSWER_FIELDS];
    let mut answer = httparse::Response::new(&mut fields);
    match answer.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("an answer with an unfinished head".into()),
        Err(e) => return Err(format!("an answer whose head does not parse ({e})")),
    }
    let status = answer.code.ok_or("an answer without a status line")?;
    if no_body || status < 200 || status == 204 || status == 304 {
        return Ok(0);
    }
    answer
        .headers
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case("content-length"))
        .and_then(|field| std::str::from_utf8(field.value).ok()?.parse().ok())
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

    /// A stand-in for tiny_http on a Unix socket in `dir`: it answers each request on each
    /// connection in turn, a ping with 204, anything else with 200 and the request's first line,
    /// which it also records.
    fn stand_in(dir: &std::path::Path) -> (PathBuf, Arc<Mutex<Vec<String>>>) {
        use std::io::BufRead;
        let path = dir.join("stand-in.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (stream, record) = (stream.unwrap(), record.clone());
                std::thread::spawn(move || {
                    let mut lines = std::io::BufReader::new(stream.try_clone().unwrap()).lines();
                    while let Some(Ok(first)) = lines.next() {
                        while let Some(Ok(line)) = lines.next() {
                            if line.is_empty() {
                                break;
                            }
                        }
                        let answer = if first.starts_with("OPTIONS *") {
                            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
                        } else {
                            std::thread::sleep(Duration::from_millis(20));
                            record.lock().push(first.clone());
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{first}",
                                first.len()
                            )
                        };
                        (&stream).write_all(answer.as_bytes()).unwrap();
                    }
                });
            }
        });
        (path, seen)
    }

    #[test]
    fn requests_waiting_for_a_connection_get_one_in_the_order_they_came() {
        let dir = std::env::temp_dir().join(format!("hive-upstream-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, seen) = stand_in(&dir);
        // One connection for ordinary requests: every request after the first waits in line.
        let upstream = Arc::new(Upstream::new(path, 1));
        let sent: Vec<_> = (0..5)
            .map(|i| {
                let pool = upstream.clone();
                let handle = std::thread::spawn(move || {
                    let request = format!("GET /{i} HTTP/1.1\r\n\r\n");
                    let mut buffer = Vec::new();
                    pool.exchange(request.as_bytes(), false, &mut buffer)
                        .map(|answer| {
                            String::from_utf8_lossy(&buffer[answer.head..answer.len]).into_owned()
                        })
                });
                // The next request comes once this one holds the connection or waits in line.
                let deadline = Instant::now() + Duration::from_secs(5);
                while {
                    let state = upstream.state.lock();
                    state.busy + state.waiting.len() <= i
                } {
                    assert!(Instant::now() < deadline, "request {i} never got in line");
                    std::thread::sleep(Duration::from_millis(1));
                }
                handle
            })
            .collect();
        let answers: Vec<String> = sent
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        let order: Vec<String> = (0..5).map(|i| format!("GET /{i} HTTP/1.1")).collect();
        assert_eq!(answers, order, "each request got its own answer");
        assert_eq!(*seen.lock(), order, "first come, first served");
        std::fs::remove_dir_all(&dir).unwrap();
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
        let read = read_answer(&mut client, false, None, &mut buffer).unwrap();
        assert_eq!(read, Answer { head: 38, len: 43 });
        assert_eq!(&buffer[..read.len], answer);
        drop(writer.join().unwrap());
        assert!(
            read_answer(&mut client, false, None, &mut buffer).is_err(),
            "closed"
        );
    }

    #[test]
    fn a_wait_for_an_answer_ends_at_its_timeout() {
        let (_server, client) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let waited = wait_readable(&client, Some(Duration::from_millis(20)));
        assert_eq!(waited.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
