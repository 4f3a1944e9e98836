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
//!   20 ms the watchdog looks for accepted connections that hold a request line and have never
//!   answered anything (no thread ever served them; a kept-alive connection whose next request
//!   waits on a busy machine has answered before); for each one still there 2 ms later it opens a
//!   short connection of its own, a *nudge*. With no
//!   idle thread in the pool, a nudge gets a new thread, which answers it (tiny_http refuses its
//!   request line by itself), then takes the next queued connection.
//! - **A dead accept loop.** tiny_http's accept loop stops for good at the first `accept()` error
//!   (EMFILE, when the process is out of file descriptors), which handlers see as an error, and
//!   its thread panics when it cannot duplicate an accepted socket, which the panic hook counts.
//!   Either way a new tiny_http server is started on the same socket (after a panic, once a check
//!   shows that new connections go unanswered); the old one keeps serving the connections it
//!   accepted until they are gone. The watchdog's check every second also keeps an idle `accept()`
//!   from timing out (the listening socket carries a receive timeout for its connections' sake).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Connections the kernel queues for tiny_http's accept loop. std listens with a backlog of 128,
/// which a burst of 256 new connections overflows: the kernel drops the extra handshakes and those
/// clients try again after a second, then three more. The kernel caps this at `net.core.somaxconn`
/// (4096 on current Linux).
const LISTEN_BACKLOG: i32 = 1024;

/// How often an idle handler thread looks for a replaced tiny_http server.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often a handler thread looks at replaced servers that may still hold requests.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Pause before replacing a server whose accept loop failed, so a flood that exhausts file
/// descriptors is not met by a busy loop of replacements.
const REPLACE_PAUSE: Duration = Duration::from_millis(100);

/// How often the watchdog looks for stalled connections, and how long a request line must stay
/// unread to count as stalled (a thread that serves its connection reads it in microseconds).
const TICK: Duration = Duration::from_millis(20);
const STALL_CONFIRM: Duration = Duration::from_millis(2);

/// The watchdog waits at least this many times as long as its last look took: a queen holding
/// thousands of descriptors (a heartbeat round over a large fleet) looks less often rather than
/// spend more than a few percent of a core looking.
const TICK_PER_LOOK: u32 = 25;

/// How often the watchdog checks that new connections are answered, and how long a check waits
/// for its answer (freeing stalled connections meanwhile).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one nudge waits for its answer.
const NUDGE_TIMEOUT: Duration = Duration::from_millis(100);

/// What a check and a nudge send: a request line tiny_http refuses by itself (400, then it
/// closes), so the answer comes from the thread that owns the connection, never a busy handler. It
/// looks like a request line, so a stalled check is found like any stalled request.
const CHECK_LINE: &[u8] = b"HIVE self-check\r\n";

/// A replaced server is let go once it has handed out no request for this long: its connections
/// have all closed or timed out by then.
const REPLACED_IDLE: Duration = Duration::from_secs(3 * SOCKET_TIMEOUT.as_secs());

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
    /// Set when starting a new server failed: the watchdog tries again.
    replacement_failed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Listener {
    /// Binds `addr` with the socket options every connection needs, and starts serving on it.
    pub fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<Listener> {
        let socket = TcpListener::bind(addr)?;
        sockets::configure_listener(&socket, SOCKET_TIMEOUT, LISTEN_BACKLOG)?;
        let first = Listener::server_on(&socket)?;
        Ok(Listener {
            socket,
            all: RwLock::new(vec![first]),
            replacement_failed: AtomicBool::new(false),
            metrics,
        })
    }

    fn server_on(listener: &TcpListener) -> io::Result<Arc<Generation>> {
        let socket = listener.try_clone()?;
        // tiny_http starts its accept thread with `thread::spawn`, which panics when the process
        // cannot start one more thread.
        let server = panic::catch_unwind(AssertUnwindSafe(|| {
            tiny_http::Server::from_listener(socket, None)
        }))
        .map_err(|_| io::Error::other("could not start tiny_http's accept thread"))?
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

    /// The watchdog, forever: frees stalled connections every `TICK`, checks every
    /// `CHECK_INTERVAL` that new connections are answered (replacing the accepting server when they
    /// are not after a panic, or after a replacement failed), and lets go of replaced servers that
    /// have gone quiet. See the module docs.
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
        let mut panics = logging::panics();
        let mut last_check = Instant::now();
        let mut look = Duration::ZERO;
        loop {
            thread::sleep(TICK.max(look * TICK_PER_LOOK));
            let started = Instant::now();
            self.free_stalled(target);
            look = started.elapsed();
            let suspect =
                logging::panics() != panics || self.replacement_failed.load(Ordering::Relaxed);
            if last_check.elapsed() < CHECK_INTERVAL && !suspect {
                continue;
            }
            last_check = Instant::now();
            let current = self.current();
            match self.check(target) {
                Check::Answered => panics = logging::panics(),
                Check::Unanswered if suspect => {
                    panics = logging::panics();
                    self.replace(
                        &current,
                        "a thread panicked and new connections go unanswered",
                    );
                }
                Check::Unanswered => debug!("a self-check went unanswered (a busy machine?)"),
                Check::Unknown => {}
            }
            let retired: Vec<Arc<Generation>> = {
                let mut all = self.all.write();
                let accepting = all.pop().expect("at least one server");
                let (quiet, busy) = all
                    .drain(..)
                    .partition(|old| old.last_request.lock().elapsed() >= REPLACED_IDLE);
                *all = busy;
                all.push(accepting);
                quiet
            };
            // Dropping a tiny_http server connects to it to wake its accept thread: never under
            // the lock every handler takes.
            drop(retired);
        }
    }

    /// Nudges once for every accepted connection whose request line stays unread (see the
    /// module docs).
    fn free_stalled(&self, target: SocketAddr) {
        let suspects = sockets::unserved_requests(target.port());
        if suspects.is_empty() {
            return;
        }
        thread::sleep(STALL_CONFIRM);
        let stalled = sockets::unserved_requests(target.port())
            .intersection(&suspects)
            .count();
        if stalled > 0 {
            for _ in 0..stalled {
                nudge(target);
            }
            self.metrics.listener_nudges.add(stalled as u64);
            debug!("nudged tiny_http's pool for {stalled} stalled connection(s)");
        }
    }

    /// One check of the server at `target`: send [`CHECK_LINE`] and wait for the answer, freeing
    /// stalled connections meanwhile (the check may wait behind them). A connection that times out
    /// counts as unanswered: the listen backlog is full because nobody accepts.
    fn check(&self, target: SocketAddr) -> Check {
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
            self.free_stalled(target);
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
                self.replacement_failed.store(false, Ordering::Relaxed);
                self.metrics.accept_loop_replacements.inc();
            }
            Err(e) => {
                self.replacement_failed.store(true, Ordering::Relaxed);
                error!("could not start a new HTTP accept loop ({e}); the watchdog tries again");
            }
        }
    }
}

/// How a watchdog check went.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Answered,
    /// Nothing was answered within `CHECK_TIMEOUT`.
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
