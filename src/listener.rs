//! The listening socket, and keeping tiny_http's accept loop alive and its connections served.
//!
//! tiny_http accepts connections on a thread of its own and hands each to a pool thread that serves
//! it until it closes. Two things go wrong there, and a [`Listener`]'s watchdog mends both from
//! outside the crate:
//!
//! - **Stalled connections.** The pool starts a thread for a new connection only when no thread
//!   counts as idle, and a thread it has just woken still counts as idle until it runs. So when a
//!   burst of connections arrives faster than woken threads run, some are queued with no thread to
//!   serve them, and wait until another connection closes: under kept-alive load, for good. Every
//!   50 ms the watchdog looks for accepted connections whose bytes nobody has read (it peeks at
//!   each socket), and for each one seen twice in a row opens a short connection of its own, a
//!   *nudge*. With no idle thread in the pool, a nudge gets a new thread, which answers it, then
//!   takes the next queued connection.
//! - **A dead accept loop.** tiny_http's accept loop stops for good at the first `accept()` error
//!   (EMFILE, when the process is out of file descriptors) and panics when it cannot duplicate an
//!   accepted socket. Every second the watchdog checks that a new connection is answered; when
//!   three checks in a row go unanswered (one, after a panic), it starts a new tiny_http server on
//!   the same socket; the old one keeps serving the connections it accepted until they are gone.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error};
use parking_lot::{Mutex, RwLock};

use crate::logging;
use crate::metrics::Metrics;
use crate::sockets;

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

/// How often the watchdog looks for accepted connections nobody reads.
const TICK: Duration = Duration::from_millis(50);

/// How often the watchdog checks that the accepting server still accepts, and how long a check
/// waits for its answer (looking for stalled connections meanwhile) before it counts as failed.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one nudge waits for its answer.
const NUDGE_TIMEOUT: Duration = Duration::from_millis(100);

/// Failed checks in a row before the accepting server is replaced, so a loop that is only slow (a
/// saturated machine) is left alone. One is enough after a panic: tiny_http's accept thread dies
/// by panicking when it cannot duplicate an accepted socket.
const FAILED_CHECKS: u32 = 3;

/// What a check and a nudge send: a request line tiny_http refuses by itself (400, then it
/// closes), so the answer comes from the thread that owns the connection, never a busy handler.
const CHECK_LINE: &[u8] = b"HIVE-SELF-CHECK\r\n";

/// A replaced server is let go once it has handed out no request for this long: its connections
/// have all closed or timed out by then.
const REPLACED_IDLE: Duration = Duration::from_secs(3 * SOCKET_TIMEOUT.as_secs());

/// Connections the kernel queues for tiny_http's accept loop. std listens with a backlog of 128,
/// which a burst of 256 new connections overflows: the kernel drops the extra handshakes and those
/// clients try again after a second, then three more. The kernel caps this at `net.core.somaxconn`
/// (4096 on current Linux).
const LISTEN_BACKLOG: i32 = 1024;

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
    sockets::set_backlog(listener, LISTEN_BACKLOG)
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

    /// The watchdog, forever: frees stalled connections every `TICK`, checks the accepting server
    /// every `CHECK_INTERVAL` (at once after a panic or a failed check) and replaces it after
    /// `FAILED_CHECKS` failed checks, and lets go of replaced servers that have gone quiet. See the
    /// module docs.
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
        let mut unread = HashSet::new();
        let mut failed_checks = 0;
        let mut panics = logging::panics();
        let mut last_check = Instant::now();
        loop {
            thread::sleep(TICK);
            unread = self.free_stalled(target, &unread);
            let panicked = logging::panics() != panics;
            if last_check.elapsed() < CHECK_INTERVAL && !panicked && failed_checks == 0 {
                continue;
            }
            last_check = Instant::now();
            let current = self.current();
            match self.check(target, &mut unread) {
                Check::Answered => {
                    failed_checks = 0;
                    panics = logging::panics();
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

    /// Nudges once for each accepted connection that held unread bytes at the last look and still
    /// does: it waits for a thread. Returns the connections with unread bytes now.
    fn free_stalled(
        &self,
        target: SocketAddr,
        before: &HashSet<SocketAddr>,
    ) -> HashSet<SocketAddr> {
        let now = sockets::unread(target.port());
        let stalled = now.intersection(before).count();
        if stalled > 0 {
            for _ in 0..stalled {
                nudge(target);
            }
            self.metrics.listener_nudges.add(stalled as u64);
            debug!("nudged the server for {stalled} connection(s) nobody read");
        }
        now
    }

    /// One check of the server at `target`: send [`CHECK_LINE`] and wait for the answer, freeing
    /// stalled connections meanwhile (the check may wait behind them). A connection that times out
    /// counts as unanswered: the listen backlog is full because nobody accepts.
    fn check(&self, target: SocketAddr, unread: &mut HashSet<SocketAddr>) -> Check {
        let mut connection = match TcpStream::connect_timeout(&target, CHECK_TIMEOUT) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Check::Unanswered,
            Err(_) => return Check::Unknown,
        };
        if connection.write_all(CHECK_LINE).is_err() {
            return Check::Unknown;
        }
        let deadline = Instant::now() + CHECK_TIMEOUT;
        loop {
            if answered_within(&mut connection, TICK) {
                return Check::Answered;
            }
            if Instant::now() >= deadline {
                return Check::Unanswered;
            }
            *unread = self.free_stalled(target, unread);
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
    Answered,
    /// Nothing was answered within `CHECK_TIMEOUT`: nobody accepts.
    Unanswered,
    /// This process could not even open a socket to find out (it is out of descriptors itself).
    Unknown,
}

/// Opens a short connection to `target` and waits for its answer (see the module docs).
fn nudge(target: SocketAddr) {
    if let Ok(mut stream) = TcpStream::connect_timeout(&target, NUDGE_TIMEOUT)
        && stream.write_all(CHECK_LINE).is_ok()
    {
        answered_within(&mut stream, NUDGE_TIMEOUT);
    }
}

/// Whether the first byte of an answer arrives on `stream` within `wait`.
fn answered_within(stream: &mut TcpStream, wait: Duration) -> bool {
    if stream.set_read_timeout(Some(wait)).is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1))
}
