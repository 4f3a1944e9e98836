//! The listening socket, and keeping tiny_http's accept loop alive and its connections served.
//!
//! tiny_http accepts connections on a thread of its own and hands each to a pool thread that serves
//! it until it closes. Two things go wrong there, and a [`Listener`]'s watchdog mends both from
//! outside the crate:
//!
//! - **Stalled connections.** The pool starts a thread for a new connection only when no thread
//!   counts as idle, and a thread it has just woken still counts as idle until it runs. So when a
//!   burst of connections arrives faster than woken threads run, some are queued with no thread to
//!   serve them, and wait until another connection closes: under kept-alive load, for good. The
//!   watchdog sends a connection of its own through the pool every 50 ms while requests arrive (every
//!   second when idle). If it is not answered at once, it is queued behind stalled ones, and the
//!   watchdog *nudges*: it opens short connections one after another. With no idle thread, each gets
//!   a new thread, which answers it, then takes the next queued connection. The watchdog stops when
//!   its own connection is answered, since the queue is first in, first out: every connection queued
//!   before it has a thread by then.
//! - **A dead accept loop.** tiny_http's accept loop stops for good at the first `accept()` error
//!   (EMFILE, when the process is out of file descriptors) and panics when it cannot duplicate an
//!   accepted socket. When checks go unanswered, nudges and all, three times in a row, the watchdog
//!   starts a new tiny_http server on the same socket; the old one keeps serving the connections it
//!   accepted until they are gone.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error};
use parking_lot::{Mutex, RwLock};

use crate::logging;
use crate::metrics::Metrics;

/// A connection that sends no byte for this long is closed, and a response the client does not read
/// for this long is abandoned. tiny_http has no timeouts of its own, so without this an idle or
/// stalled client holds a thread (and, mid-body, a handler) forever.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle handler thread looks for a replaced tiny_http server.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often a handler thread looks at replaced servers that may still hold requests.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Pause before replacing a server whose accept loop failed, so a flood that exhausts file
/// descriptors is not met by a busy loop of replacements.
const REPLACE_PAUSE: Duration = Duration::from_millis(100);

/// How often the watchdog checks the accepting server while requests arrive, and while none do.
const CHECK_BUSY: Duration = Duration::from_millis(50);
const CHECK_IDLE: Duration = Duration::from_secs(1);

/// How long a check's connection waits for its answer before the watchdog starts nudging.
const CHECK_PATIENCE: Duration = Duration::from_millis(20);

/// Longest a check waits, nudging, for its connection to be answered; past it the check failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one nudge waits for its own answer, and how long the check's connection is then given
/// to be answered before the next nudge.
const NUDGE_TIMEOUT: Duration = Duration::from_millis(100);
const NUDGE_PACE: Duration = Duration::from_millis(2);

/// Failed checks in a row before the accepting server is replaced, so a loop that is only slow (a
/// saturated machine) is left alone. One is enough after a panic: tiny_http's accept thread dies
/// by panicking when it cannot duplicate an accepted socket.
const FAILED_CHECKS: u32 = 3;

/// What a check sends: a request line tiny_http refuses by itself (400, then it closes), so the
/// answer comes from the thread that owns the connection and never waits on a busy handler.
const CHECK_LINE: &[u8] = b"HIVE-SELF-CHECK\r\n";

/// A replaced server is let go once it has handed out no request for this long: its connections
/// have all closed or timed out by then.
const REPLACED_IDLE: Duration = Duration::from_secs(3 * SOCKET_TIMEOUT.as_secs());

/// Connections the kernel queues for tiny_http's accept loop. std listens with a backlog of 128,
/// which a burst of 256 new connections overflows: the kernel drops the extra handshakes and those
/// clients try again after a second, then three more. The kernel caps this at `net.core.somaxconn`
/// (4096 on current Linux).
const LISTEN_BACKLOG: i32 = 1024;

// std links the C library but offers no way to set the backlog; `listen` on a listening socket
// only changes it.
unsafe extern "C" {
    fn listen(fd: i32, backlog: i32) -> i32;
}

/// Sets timeouts, `TCP_NODELAY` and the backlog on the listening socket. Linux copies them to every accepted
/// socket, which is the only way to reach tiny_http's connections: it accepts them itself. Without
/// `TCP_NODELAY`, an answer over 1 KiB (tiny_http writes head and body apart) waits ~40 ms for the
/// client's delayed ACK. The receive timeout also makes an idle `accept()` fail after `timeout`,
/// which the watchdog's checks every second prevent (and [`Listener`] survives).
fn set_socket_options(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    // std offers the setsockopt calls only on TcpStream. The stream below borrows the listener's
    // descriptor for them and is never dropped, so the descriptor is not closed.
    // SAFETY: the descriptor is open (the listener owns it) and outlives this borrow.
    let borrowed = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
    borrowed.set_read_timeout(Some(timeout))?;
    borrowed.set_write_timeout(Some(timeout))?;
    borrowed.set_nodelay(true)?;
    // SAFETY: a plain system call on a descriptor the listener owns.
    if unsafe { listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One tiny_http server on the listening socket, and when it last handed out a request.
struct Generation {
    server: Arc<tiny_http::Server>,
    last_request: Mutex<Instant>,
}

/// The tiny_http servers on the one listening socket, and the watchdog that keeps them serving. A
/// failed server is replaced by a new one on a clone of the same socket. The failed one still
/// carries the requests of connections it accepted before, so handlers keep draining it until it has
/// been quiet for `REPLACED_IDLE`: by then each of its connections has closed or timed out.
pub struct Listener {
    socket: TcpListener,
    /// Replaced servers first, the accepting one last.
    all: RwLock<Vec<Arc<Generation>>>,
    /// Requests handed to handlers so far: while it moves, the watchdog checks often.
    served: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Listener {
    /// Binds `addr` with the socket options every connection needs, and starts serving on it.
    pub fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<Listener> {
        let socket = TcpListener::bind(addr)?;
        set_socket_options(&socket, SOCKET_TIMEOUT)?;
        let first = Listener::server_on(&socket)?;
        Ok(Listener {
            socket,
            all: RwLock::new(vec![first]),
            served: AtomicU64::new(0),
            metrics,
        })
    }

    fn server_on(listener: &TcpListener) -> io::Result<Arc<Generation>> {
        let server = tiny_http::Server::from_listener(listener.try_clone()?, None)
            .map_err(io::Error::other)?;
        Ok(Arc::new(Generation {
            server: Arc::new(server),
            last_request: Mutex::new(Instant::now()),
        }))
    }

    fn current(&self) -> Arc<Generation> {
        self.all
            .read()
            .last()
            .cloned()
            .expect("at least one server")
    }

    /// Calls `serve` with every request that reaches this thread, forever.
    pub fn each_request(&self, mut serve: impl FnMut(tiny_http::Request)) -> ! {
        let mut serve = |request| {
            self.served.fetch_add(1, Ordering::Relaxed);
            serve(request);
        };
        loop {
            let (current, replaced) = {
                let all = self.all.read();
                let (current, replaced) = all.split_last().expect("at least one server");
                (current.clone(), replaced.to_vec())
            };
            for old in &replaced {
                while let Ok(Some(request)) = old.server.try_recv() {
                    *old.last_request.lock() = Instant::now();
                    serve(request);
                }
            }
            let wait = if replaced.is_empty() {
                IDLE_POLL
            } else {
                DRAIN_POLL
            };
            match current.server.recv_timeout(wait) {
                Ok(Some(request)) => serve(request),
                Ok(None) => {}
                Err(e) => self.replace(&current, &e.to_string()),
            }
        }
    }

    /// The address actually bound (the real port when `bind` asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The watchdog, forever: checks the accepting server every `CHECK_BUSY` while requests arrive
    /// and every `CHECK_IDLE` otherwise (see the module docs), replaces it after `FAILED_CHECKS`
    /// failed checks in a row, and lets go of replaced servers that have gone quiet.
    pub fn watch(&self, local: SocketAddr) -> ! {
        let target = match local.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                SocketAddr::from(([127, 0, 0, 1], local.port()))
            }
            ip if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
            }
            _ => local,
        };
        let mut failed_checks = 0;
        let mut seen = self.served.load(Ordering::Relaxed);
        let mut panics = logging::panics();
        let mut last_check = Instant::now();
        loop {
            thread::sleep(CHECK_BUSY);
            let served = self.served.load(Ordering::Relaxed);
            let panicked = logging::panics() != panics;
            let due = served != seen || last_check.elapsed() >= CHECK_IDLE;
            if !due && !panicked && failed_checks == 0 {
                continue;
            }
            seen = served;
            last_check = Instant::now();
            let current = self.current();
            match check(target) {
                Check::Answered { nudges } => {
                    failed_checks = 0;
                    panics = logging::panics();
                    if nudges > 0 {
                        self.metrics.listener_nudges.add(nudges);
                        debug!("the watchdog nudged {nudges} time(s) to free stalled connections");
                    }
                }
                Check::Unanswered if panicked => failed_checks = FAILED_CHECKS,
                Check::Unanswered => failed_checks += 1,
                Check::Unknown => {}
            }
            if failed_checks >= FAILED_CHECKS {
                failed_checks = 0;
                panics = logging::panics();
                self.replace(&current, "it did not answer self-checks");
            }
            let mut all = self.all.write();
            let accepting = all.pop().expect("at least one server");
            all.retain(|replaced| replaced.last_request.lock().elapsed() < REPLACED_IDLE);
            all.push(accepting);
        }
    }

    fn replace(&self, failed: &Arc<Generation>, why: &str) {
        thread::sleep(REPLACE_PAUSE);
        let mut all = self.all.write();
        if !all
            .last()
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            return;
        }
        error!("the HTTP accept loop stopped ({why}); starting a new one");
        match Listener::server_on(&self.socket) {
            Ok(server) => {
                // Its quiet time starts now: it served until a moment ago.
                *failed.last_request.lock() = Instant::now();
                all.push(server);
                self.metrics.accept_loop_replacements.inc();
            }
            Err(e) => {
                error!("could not start a new HTTP accept loop ({e}); the next check tries again")
            }
        }
    }
}

/// How a watchdog check went.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// The check's connection was answered, after `nudges` extra connections.
    Answered { nudges: u64 },
    /// Nothing was answered within `CHECK_TIMEOUT`, nudges included: nobody accepts.
    Unanswered,
    /// This process could not even open a socket to find out (it is out of descriptors itself).
    Unknown,
}

/// One check of the server at `addr`: send [`CHECK_LINE`] and wait for the answer, nudging when it
/// is slow (see the module docs). A connection that times out counts as unanswered: the listen
/// backlog is full because nobody accepts.
fn check(addr: SocketAddr) -> Check {
    let mut connection = match TcpStream::connect_timeout(&addr, CHECK_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Check::Unanswered,
        Err(_) => return Check::Unknown,
    };
    if connection.write_all(CHECK_LINE).is_err() {
        return Check::Unknown;
    }
    if answered_within(&mut connection, CHECK_PATIENCE) {
        return Check::Answered { nudges: 0 };
    }
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut nudges = 0;
    while Instant::now() < deadline {
        nudges += 1;
        if let Ok(mut nudge) = TcpStream::connect_timeout(&addr, NUDGE_TIMEOUT)
            && nudge.write_all(CHECK_LINE).is_ok()
        {
            answered_within(&mut nudge, NUDGE_TIMEOUT);
        }
        if answered_within(&mut connection, NUDGE_PACE) {
            return Check::Answered { nudges };
        }
    }
    Check::Unanswered
}

/// Whether the first byte of an answer arrives on `stream` within `wait`.
fn answered_within(stream: &mut TcpStream, wait: Duration) -> bool {
    if stream.set_read_timeout(Some(wait)).is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1))
}
