//! The probes' I/O: every try in flight on one thread, each a non-blocking socket under one
//! epoll, so a thousand silent drones cost a thousand descriptors and no thread each.
//!
//! A try connects, sends `GET` (over TLS when the hive has it: rustls is sans-IO, so a
//! `rustls::ClientConnection` is driven over the same socket), reads the answer as it comes
//! (`http.rs`), and ends with the answer, a failure, or its deadline, whichever comes first. Reads
//! are taken before deadlines, so an answer that arrived while the thread was busy still counts.
//! An address that is a host name rather than an IP literal is resolved on a small helper thread,
//! within the try's deadline. A try the queen cannot even start (out of descriptors, of memory,
//! of local ports) says so apart: it is not the drone's failure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::http::{self, Read as Answer};
use crate::auth::Token;
use crate::client::CallError;

/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 256;

/// Bytes read from a socket at a time: a drone's answer is a few hundred.
const READ_CHUNK_BYTES: usize = 4 * 1024;

/// One try to start: `GET path` on `address`, showing `bearer`, within `timeout`.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The caller's name for this try; finished tries are reported under it.
    pub key: u64,
    pub address: String,
    pub path: &'static str,
    pub bearer: Option<Token>,
    pub timeout: Duration,
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer, with its body.
    Passed(Vec<u8>),
    /// No 2xx answer: why.
    Failed(CallError),
    /// The queen could not start the try (out of descriptors, of memory, of local ports): the
    /// drone was never asked.
    NotStarted(String),
}

/// A finished try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub key: u64,
    /// When the try started: what an answer says was true after this.
    pub started: Instant,
    pub outcome: Outcome,
}

/// Where one try is.
enum Stage {
    /// Waiting for the helper thread to resolve its host name.
    Resolving,
    /// `connect` is under way.
    Connecting,
    /// Connected: sending the request and reading the answer.
    Exchanging,
}

struct Try {
    /// The caller's key: what epoll hands back for this try's socket.
    key: u64,
    address: String,
    stage: Stage,
    stream: Option<TcpStream>,
    tls: Option<ClientConnection>,
    request: Vec<u8>,
    written: usize,
    answer: Vec<u8>,
    started: Instant,
    deadline: Instant,
    /// The epoll events asked for now.
    interest: u32,
}

/// The tries in flight, and the epoll they wait on.
pub struct Prober {
    epoll: OwnedFd,
    /// With TLS: how every try speaks to its drone.
    tls: Option<Arc<ClientConfig>>,
    tries: HashMap<u64, Try>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Tries that ended as they started (refused at once, say), reported by the next `wait`.
    ended: Vec<Done>,
    resolver: Option<Resolver>,
}

impl Prober {
    /// A prober whose tries speak TLS with `tls`, or plain HTTP without.
    pub fn new(tls: Option<Arc<ClientConfig>>) -> io::Result<Prober> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Prober {
            // SAFETY: `fd` was just created and is owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            tls,
            tries: HashMap::new(),
            deadlines: BinaryHeap::new(),
            ended: Vec::new(),
            resolver: None,
        })
    }

    /// Tries in flight.
    pub fn in_flight(&self) -> usize {
        self.tries.len()
    }

    /// Starts `ask` at `now`. Its end comes out of a later [`Prober::wait`].
    pub fn start(&mut self, ask: Ask, now: Instant) {
        let request = http::request(&ask.address, ask.path, ask.bearer.as_ref());
        let mut attempt = Try {
            key: ask.key,
            address: ask.address,
            stage: Stage::Resolving,
            stream: None,
            tls: None,
            request,
            written: 0,
            answer: Vec::new(),
            started: now,
            deadline: now + ask.timeout,
            interest: 0,
        };
        let mut connected = false;
        match attempt.address.parse::<SocketAddr>() {
            Ok(peer) => match self.connect(ask.key, &mut attempt, peer) {
                Ok(at_once) => connected = at_once,
                Err(outcome) => {
                    self.ended.push(Done {
                        key: ask.key,
                        started: now,
                        outcome,
                    });
                    return;
                }
            },
            Err(_) => {
                let resolver = match &self.resolver {
                    Some(resolver) => resolver,
                    None => match Resolver::start() {
                        Ok(resolver) => self.resolver.insert(resolver),
                        Err(e) => {
                            self.ended.push(Done {
                                key: ask.key,
                                started: now,
                                outcome: Outcome::NotStarted(format!(
                                    "cannot start the thread that resolves host names: {e}"
                                )),
                            });
                            return;
                        }
                    },
                };
                resolver.ask(ask.key, &attempt.address);
            }
        }
        self.deadlines.push(Reverse((attempt.deadline, ask.key)));
        self.tries.insert(ask.key, attempt);
        // On loopback a connection is often up before `connect` returns: send at once rather
        // than wait a turn for epoll to say so.
        if connected
            && let Some(outcome) = self.advance(ask.key, libc::EPOLLOUT as u32)
            && let Some(done) = self.finish(ask.key, outcome)
        {
            self.ended.push(done);
        }
    }

    /// When the earliest try in flight times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|entry| entry.0.0)
    }

    /// Waits up to `wait` for tries to move, moves them, and returns those that ended (answered,
    /// failed or timed out); returns at once when some had ended already.
    pub fn wait(&mut self, wait: Duration) -> Vec<Done> {
        let mut done = std::mem::take(&mut self.ended);
        let wait = if done.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        // Rounded up, so a wait for a deadline a fraction of a millisecond away does not spin.
        let millis = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` is a live array of EVENTS_PER_WAIT entries the kernel fills.
        let ready = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS_PER_WAIT as i32,
                millis,
            )
        };
        for event in events.iter().take(ready.max(0) as usize) {
            let (key, flags) = (event.u64, event.events);
            if let Some(outcome) = self.advance(key, flags) {
                done.extend(self.finish(key, outcome));
            }
        }
        if let Some(resolver) = &self.resolver {
            let resolved: Vec<_> = resolver.answers.try_iter().collect();
            for (key, found) in resolved {
                let Some(mut attempt) = self.tries.remove(&key) else {
                    continue;
                };
                let connected = found
                    .map_err(|why| Outcome::Failed(CallError::Failed(why)))
                    .and_then(|peer| self.connect(key, &mut attempt, peer));
                self.tries.insert(key, attempt);
                let outcome = match connected {
                    Ok(true) => self.advance(key, libc::EPOLLOUT as u32),
                    Ok(false) => None,
                    Err(outcome) => Some(outcome),
                };
                if let Some(outcome) = outcome {
                    done.extend(self.finish(key, outcome));
                }
            }
        }
        let now = Instant::now();
        while let Some(Reverse((deadline, key))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // A try that ended already left its entry behind; one that was started again under
            // the same key has a later deadline of its own.
            if self.tries.get(&key).is_some_and(|t| t.deadline == deadline) {
                done.extend(self.finish(key, Outcome::Failed(CallError::TimedOut)));
            }
        }
        done
    }

    /// Opens a non-blocking connection to `peer` for the try `key` and watches it; whether it
    /// was up at once.
    fn connect(&self, key: u64, attempt: &mut Try, peer: SocketAddr) -> Result<bool, Outcome> {
        let stream = connect(peer)?;
        let up = stream.peer_addr().is_ok();
        attempt.stage = Stage::Connecting;
        attempt.interest = (libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
        let mut event = libc::epoll_event {
            events: attempt.interest,
            u64: key,
        };
        // SAFETY: both descriptors are live; `event` outlives the call.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                &mut event,
            )
        };
        if added != 0 {
            return Err(Outcome::NotStarted(format!(
                "cannot watch a socket: {}",
                io::Error::last_os_error()
            )));
        }
        attempt.stream = Some(stream);
        Ok(up)
    }

    /// Ends the try `key` with `outcome`, closing its socket.
    fn finish(&mut self, key: u64, outcome: Outcome) -> Option<Done> {
        let attempt = self.tries.remove(&key)?;
        // Closing the socket also takes it out of the epoll.
        drop(attempt.stream);
        Some(Done {
            key,
            started: attempt.started,
            outcome,
        })
    }

    /// Moves the try `key` on after epoll said `flags` of its socket; its outcome, once it has one.
    fn advance(&mut self, key: u64, flags: u32) -> Option<Outcome> {
        let tls = self.tls.clone();
        let epoll = self.epoll.as_raw_fd();
        let attempt = self.tries.get_mut(&key)?;
        let outcome = match attempt.stage {
            Stage::Resolving => return None,
            Stage::Connecting => match attempt.connected() {
                Ok(()) => {
                    attempt.stage = Stage::Exchanging;
                    if let Some(config) = tls
                        && let Err(outcome) = attempt.start_tls(config)
                    {
                        return Some(outcome);
                    }
                    attempt.exchange(true)
                }
                Err(outcome) => Some(outcome),
            },
            Stage::Exchanging => attempt.exchange(flags & libc::EPOLLIN as u32 != 0),
        };
        if outcome.is_none() {
            attempt.watch(epoll);
        }
        outcome
    }
}

impl Try {
    /// Whether the connection is up, once epoll says the socket is writable (or failed).
    fn connected(&self) -> Result<(), Outcome> {
        let stream = self.stream.as_ref().expect("a connecting try has a socket");
        match stream.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(e)) | Err(e) => Err(Outcome::Failed(call_error(&e))),
        }
    }

    /// Starts TLS on the connected socket, with the request queued behind the handshake.
    fn start_tls(&mut self, config: Arc<ClientConfig>) -> Result<(), Outcome> {
        let host = host_of(&self.address);
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            Outcome::Failed(CallError::Failed(format!(
                "{host:?} is not a name TLS can check: {e}"
            )))
        })?;
        let mut connection = ClientConnection::new(config, name)
            .map_err(|e| Outcome::Failed(CallError::Failed(format!("TLS: {e}"))))?;
        connection
            .writer()
            .write_all(&self.request)
            .map_err(|e| Outcome::Failed(CallError::Failed(format!("TLS: {e}"))))?;
        self.written = self.request.len();
        self.tls = Some(connection);
        Ok(())
    }

    /// Sends what is left of the request and reads what has come of the answer; the outcome,
    /// once there is one. `readable` when epoll said there is something to read.
    fn exchange(&mut self, readable: bool) -> Option<Outcome> {
        let stream = self
            .stream
            .as_mut()
            .expect("an exchanging try has a socket");
        let closed = match &mut self.tls {
            None => {
                while self.written < self.request.len() {
                    match stream.write(&self.request[self.written..]) {
                        Ok(n) => self.written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(Outcome::Failed(call_error(&e))),
                    }
                }
                if !readable {
                    return None;
                }
                match read_plain(stream, &mut self.answer) {
                    Ok(closed) => closed,
                    Err(e) => return Some(Outcome::Failed(call_error(&e))),
                }
            }
            Some(tls) => match drive_tls(tls, stream, &mut self.answer) {
                Ok(closed) => closed,
                Err(outcome) => return Some(outcome),
            },
        };
        match http::read(&self.answer, closed) {
            Answer::More => None,
            Answer::Answer { status, body } if (200..300).contains(&status) => {
                Some(Outcome::Passed(body))
            }
            Answer::Answer { status, .. } => Some(Outcome::Failed(CallError::Status(status))),
            Answer::Bad(why) => Some(Outcome::Failed(CallError::Failed(why))),
        }
    }

    /// Asks epoll for what this try waits for now.
    fn watch(&mut self, epoll: RawFd) {
        let Some(stream) = &self.stream else {
            return;
        };
        let mut wanted = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        let sending = match &self.tls {
            Some(tls) => tls.wants_write(),
            None => self.written < self.request.len(),
        };
        if sending || matches!(self.stage, Stage::Connecting) {
            wanted |= libc::EPOLLOUT as u32;
        }
        if wanted == self.interest {
            return;
        }
        self.interest = wanted;
        // MOD replaces the event's data too, so it repeats the key.
        let mut event = libc::epoll_event {
            events: wanted,
            u64: self.key,
        };
        // SAFETY: both descriptors are live; `event` outlives the call.
        unsafe {
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_MOD, stream.as_raw_fd(), &mut event);
        }
    }
}

/// Reads everything there is into `answer`; whether the peer closed.
fn read_plain(stream: &mut TcpStream, answer: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > http::MAX_ANSWER_BYTES {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Moves TLS records both ways and takes the plaintext that came into `answer`; whether the peer
/// closed.
fn drive_tls(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    answer: &mut Vec<u8>,
) -> Result<bool, Outcome> {
    let failed =
        |e: &dyn std::fmt::Display| Outcome::Failed(CallError::Failed(format!("TLS: {e}")));
    let mut closed = false;
    loop {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Outcome::Failed(call_error(&e))),
            }
        }
        if closed || !tls.wants_read() {
            break;
        }
        match tls.read_tls(stream) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Outcome::Failed(call_error(&e))),
        }
        tls.process_new_packets().map_err(|e| failed(&e))?;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The drone closed the connection without a close_notify: the answer's framing
                // says whether it is whole.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    closed = true;
                    break;
                }
                Err(e) => return Err(failed(&e)),
            }
        }
        if answer.len() > http::MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(closed)
}

/// The host of `host:port` (an IPv6 address without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// How a failed socket call is told to the caller.
fn call_error(e: &io::Error) -> CallError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => CallError::Refused,
        io::ErrorKind::TimedOut => CallError::TimedOut,
        _ => CallError::Failed(e.to_string()),
    }
}

/// Whether a failure to open a socket is the queen's own shortage rather than anything about the
/// drone.
fn is_local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// A non-blocking socket connecting to `peer` (the connection completes later; epoll says when).
fn connect(peer: SocketAddr) -> Result<TcpStream, Outcome> {
    let shortage = |e: io::Error| {
        if is_local_shortage(&e) {
            Outcome::NotStarted(format!("cannot open a socket: {e}"))
        } else {
            Outcome::Failed(call_error(&e))
        }
    };
    let domain = match peer {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes no pointers; a non-negative result is a new descriptor.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(shortage(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else; dropping the stream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (address, length) = sockaddr(&peer);
    // SAFETY: `address` is a live sockaddr_storage holding `length` meaningful bytes.
    let started = unsafe {
        libc::connect(
            fd,
            (&address as *const libc::sockaddr_storage).cast(),
            length,
        )
    };
    if started != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(shortage(e));
        }
    }
    // Requests are one small write: no need to wait to fill a segment.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `peer` as the kernel takes it.
fn sockaddr(peer: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid value of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let length = match peer {
        SocketAddr::V4(v4) => {
            let address = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    address,
                )
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let address = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    address,
                )
            };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, length as libc::socklen_t)
}

/// The helper thread that resolves host names, one at a time, so the prober's thread never waits
/// on a lookup; each answer comes back under the try's key.
struct Resolver {
    asks: Sender<(u64, String)>,
    answers: Receiver<(u64, Result<SocketAddr, String>)>,
}

impl Resolver {
    fn start() -> io::Result<Resolver> {
        let (asks, asked) = mpsc::channel::<(u64, String)>();
        let (answer, answers) = mpsc::channel();
        thread::Builder::new()
            .name("resolver".into())
            .spawn(move || {
                for (key, address) in asked {
                    let found = address
                        .to_socket_addrs()
                        .map_err(|e| format!("cannot resolve {address:?}: {e}"))
                        .and_then(|mut found| {
                            found
                                .next()
                                .ok_or_else(|| format!("{address:?} resolves to no address"))
                        });
                    if answer.send((key, found)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Resolver { asks, answers })
    }

    fn ask(&self, key: u64, address: &str) {
        let _ = self.asks.send((key, address.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A peer on loopback that answers one connection with `answer`, after reading its request.
    fn answering(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        address
    }

    /// Runs one try of `GET /healthz` on `address` within `timeout` to its end.
    fn one_try(address: &str, timeout: Duration) -> (Outcome, Duration) {
        let mut prober = Prober::new(None).unwrap();
        let started = Instant::now();
        prober.start(
            Ask {
                key: 7,
                address: address.into(),
                path: "/healthz",
                bearer: None,
                timeout,
            },
            started,
        );
        loop {
            let done = prober.wait(Duration::from_millis(50));
            if let Some(done) = done.into_iter().next() {
                assert_eq!(done.key, 7);
                assert_eq!(prober.in_flight(), 0);
                return (done.outcome, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout + Duration::from_secs(5),
                "no end"
            );
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_2xx_answer_passes_with_its_body() {
        let address = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(one_try(&address, SECOND).0, Outcome::Passed(b"{}".to_vec()));
    }

    #[test]
    fn another_status_fails_with_it() {
        let address = answering("HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            one_try(&address, SECOND).0,
            Outcome::Failed(CallError::Status(500))
        );
    }

    #[test]
    fn a_closed_port_is_refused_and_a_silent_one_times_out_on_time() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert_eq!(
            one_try(&address, SECOND).0,
            Outcome::Failed(CallError::Refused)
        );
        // Bound and never accepted from: connections complete and nothing answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let (outcome, took) = one_try(&address, Duration::from_millis(300));
        assert_eq!(outcome, Outcome::Failed(CallError::TimedOut));
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(800),
            "{took:?}"
        );
    }

    #[test]
    fn a_host_name_is_resolved_off_the_thread() {
        let address = answering("HTTP/1.1 204 No Content\r\n\r\n");
        let port = address.rsplit_once(':').unwrap().1;
        assert_eq!(
            one_try(&format!("localhost:{port}"), SECOND).0,
            Outcome::Passed(Vec::new())
        );
        let (outcome, _) = one_try("no-such-host.invalid:80", SECOND);
        assert!(
            matches!(outcome, Outcome::Failed(CallError::Failed(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_answer_cut_short_fails() {
        let address = answering("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}");
        match one_try(&address, SECOND).0 {
            Outcome::Failed(CallError::Failed(why)) => assert!(why.contains("middle"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
