//! The fleet's answering drones: every listener and every connection on one epoll, served by one
//! thread, as many drones as the process has descriptors for.
//!
//! Each drone answers `GET /healthz` (any query) as a larve drone does, the tutorial's three fields
//! or, for a drone that renews a lease, a Hive drone's verbose status; `POST /do_task` with the
//! tutorial's `{"result": "OK"}`; anything else 404. Connections are kept alive unless the
//! request asks to close (a queen's probe does), and requests are read with httparse.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

/// What a drone answers its probes with: the tutorial's drone, or a Hive drone's verbose status.
pub const TUTORIAL_HEALTH: &str =
    r#"{"status":"Status.READY","version":"0.0.1","mode":"Mode.DRONE"}"#;
const TASK_BODY: &str = r#"{"result":"OK"}"#;
const NOT_FOUND_BODY: &str = r#"{"error":"not found"}"#;

/// Events taken per wait, and how long a wait lasts at most (so a stop is seen within it).
const EVENTS_PER_WAIT: usize = 1024;
const WAIT_MS: i32 = 100;

/// Largest request head and body a fake drone reads: a queen's calls are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 32;

/// Marks an epoll key as a listener's (its index below); a connection's key is its id.
const LISTENER_KEY: u64 = 1 << 63;

/// What the fleet's drones were asked, counted.
#[derive(Default)]
pub struct Asked {
    /// Probes of drones that renew a lease: each one a lease the queen found late.
    pub probes_of_renewing: AtomicU64,
    /// Probes of drones that renew nothing.
    pub probes_of_probed: AtomicU64,
    pub tasks: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Accepts that failed (out of descriptors).
    pub accept_failures: AtomicU64,
}

/// One answering drone as the server knows it.
pub struct Answering {
    pub listener: TcpListener,
    /// The body of its `/healthz`.
    pub health: String,
    pub renews: bool,
}

struct Connection {
    stream: TcpStream,
    drone: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The peer asked to close after the answer: no more requests are read.
    closing: bool,
    /// Whether epoll is asked for writability too.
    writing: bool,
}

/// Serves `drones` on a thread of its own until `stop` is set; counts into `asked`.
pub fn start(
    drones: Vec<Answering>,
    stop: Arc<AtomicBool>,
    asked: Arc<Asked>,
) -> io::Result<JoinHandle<()>> {
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and owned by nothing else.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    for (i, drone) in drones.iter().enumerate() {
        drone.listener.set_nonblocking(true)?;
        watch(
            &epoll,
            drone.listener.as_raw_fd(),
            LISTENER_KEY | i as u64,
            false,
        )?;
    }
    thread::Builder::new()
        .name("fleet-server".into())
        .spawn(move || serve(&epoll, &drones, &stop, &asked))
}

/// Adds (or with `modify`, changes) `fd` in the epoll under `key`, for reading, and writing too
/// when asked.
fn watch(epoll: &OwnedFd, fd: i32, key: u64, writing: bool) -> io::Result<()> {
    watch_op(epoll, fd, key, writing, libc::EPOLL_CTL_ADD)
}

fn watch_op(epoll: &OwnedFd, fd: i32, key: u64, writing: bool, op: i32) -> io::Result<()> {
    let mut events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    if writing {
        events |= libc::EPOLLOUT as u32;
    }
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY: both descriptors are live; `event` outlives the call.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn serve(epoll: &OwnedFd, drones: &[Answering], stop: &AtomicBool, asked: &Asked) {
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` is a live buffer of EVENTS_PER_WAIT entries the kernel fills.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS_PER_WAIT as i32,
                WAIT_MS,
            )
        };
        for event in events.iter().take(ready.max(0) as usize) {
            let key = event.u64;
            if key & LISTENER_KEY != 0 {
                let drone = (key & !LISTENER_KEY) as usize;
                accept_all(epoll, drones, drone, &mut connections, &mut next_id, asked);
                continue;
            }
            let Some(connection) = connections.get_mut(&key) else {
                continue;
            };
            if !connection.turn(&drones[connection.drone], asked) {
                // Dropping the stream closes it, which also takes it out of the epoll.
                connections.remove(&key);
                continue;
            }
            let wants_write = !connection.output.is_empty();
            if wants_write != connection.writing {
                connection.writing = wants_write;
                let fd = connection.stream.as_raw_fd();
                if watch_op(epoll, fd, key, wants_write, libc::EPOLL_CTL_MOD).is_err() {
                    connections.remove(&key);
                }
            }
        }
    }
}

/// Accepts every connection waiting on drone `drone`'s listener.
fn accept_all(
    epoll: &OwnedFd,
    drones: &[Answering],
    drone: usize,
    connections: &mut HashMap<u64, Connection>,
    next_id: &mut u64,
    asked: &Asked,
) {
    loop {
        match drones[drone].listener.accept() {
            Ok((stream, _)) => {
                asked.connections.fetch_add(1, Ordering::Relaxed);
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                *next_id += 1;
                if watch(epoll, stream.as_raw_fd(), *next_id, false).is_err() {
                    continue;
                }
                connections.insert(
                    *next_id,
                    Connection {
                        stream,
                        drone,
                        input: Vec::new(),
                        output: Vec::new(),
                        closing: false,
                        writing: false,
                    },
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // Out of descriptors: the connection waits in the backlog for the next turn.
                asked.accept_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

impl Connection {
    /// Reads what came, answers every whole request, writes what it can; false once the
    /// connection is over.
    fn turn(&mut self, drone: &Answering, asked: &Asked) -> bool {
        let mut closed = false;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        while !self.closing {
            match self.answer_one(drone, asked) {
                Some(true) => {}
                Some(false) => break,
                // Not a request: nothing to answer, and nothing to wait for.
                None => return false,
            }
        }
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // A connection asked to close is closed once the peer has read the answer and closed its
        // end: the peer's kernel, not this drone's port, then keeps the TIME_WAIT, so the ports of
        // a fleet stay free for the next one.
        let done = closed || self.input.len() > MAX_REQUEST_BYTES;
        !(done && self.output.is_empty())
    }

    /// Answers the first request in `input`, if it is whole: `Some(true)` when one was answered,
    /// `Some(false)` when more bytes are needed, `None` when the input is no request at all.
    fn answer_one(&mut self, drone: &Answering, asked: &Asked) -> Option<bool> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&self.input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Some(false),
            Err(_) => return None,
        };
        let mut length = 0;
        let mut close = false;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()?;
            } else if header.name.eq_ignore_ascii_case("connection") {
                close = header.value.eq_ignore_ascii_case(b"close");
            }
        }
        if self.input.len() < head + length {
            return Some(false);
        }
        let path = request.path.unwrap_or_default();
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let (status, body) = match (request.method.unwrap_or_default(), path) {
            ("GET", "/healthz") => {
                let counter = if drone.renews {
                    &asked.probes_of_renewing
                } else {
                    &asked.probes_of_probed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                ("200 OK", drone.health.as_str())
            }
            ("POST", "/do_task") => {
                asked.tasks.fetch_add(1, Ordering::Relaxed);
                ("200 OK", TASK_BODY)
            }
            _ => ("404 Not Found", NOT_FOUND_BODY),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.output.extend_from_slice(reply.as_bytes());
        self.input.drain(..head + length);
        if close {
            self.closing = true;
        }
        Some(true)
    }
}

/// Raises this process's descriptor limit to at least `needed`, up to its hard limit; fails when
/// the hard limit is lower.
pub fn raise_descriptor_limit(needed: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit the kernel fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    if limit.rlim_max < needed {
        return Err(format!(
            "the fleet needs {needed} descriptors and this process may have {} at most (raise the \
             hard limit, e.g. ulimit -Hn)",
            limit.rlim_max
        ));
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a live rlimit the kernel reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE): {}",
            io::Error::last_os_error()
        ));
    }
    Ok(limit.rlim_cur)
}
