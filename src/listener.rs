//! The listening socket, and keeping tiny_http's accept loop alive on it.
//!
//! tiny_http accepts connections on a thread of its own, which stops for good at the first
//! `accept()` error (EMFILE, when the process is out of file descriptors) and panics when it cannot
//! duplicate an accepted socket. A [`Listener`] checks every second that its socket still answers,
//! and starts a new tiny_http server on the same socket when it does not; the old one keeps serving
//! the connections it accepted until they are gone.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::error;
use parking_lot::{Mutex, RwLock};

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

/// How often the accepting server is checked, and how long it has to answer.
const SELF_CHECK_INTERVAL: Duration = Duration::from_secs(1);
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
const FAILED_SELF_CHECKS: u32 = 3;

/// A replaced server is let go once it has handed out no request for this long: its connections
/// have all closed or timed out by then.
const REPLACED_IDLE: Duration = Duration::from_secs(3 * SOCKET_TIMEOUT.as_secs());

/// Sets timeouts and `TCP_NODELAY` on the listening socket. Linux copies them to every accepted
/// socket, which is the only way to reach tiny_http's connections: it accepts them itself. Without
/// `TCP_NODELAY`, an answer over 1 KiB (tiny_http writes head and body apart) waits ~40 ms for the
/// client's delayed ACK. The receive timeout also makes an idle `accept()` fail after `timeout`,
/// which the self-check's connections every second prevent (and [`Listener`] survives).
fn set_socket_options(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    // std offers the setsockopt calls only on TcpStream. The stream below borrows the listener's
    // descriptor for them and is never dropped, so the descriptor is not closed.
    // SAFETY: the descriptor is open (the listener owns it) and outlives this borrow.
    let borrowed = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
    borrowed.set_read_timeout(Some(timeout))?;
    borrowed.set_write_timeout(Some(timeout))?;
    borrowed.set_nodelay(true)
}

/// One tiny_http server on the listening socket, and when it last handed out a request.
struct Generation {
    server: Arc<tiny_http::Server>,
    last_request: Mutex<Instant>,
}

/// The tiny_http servers on the one listening socket. tiny_http's accept loop stops for good at its
/// first `accept()` error (EMFILE, when the process runs out of file descriptors), so a failed
/// server is replaced by a new one on a clone of the same socket. The failed one still carries the
/// requests of connections it accepted before, so handlers keep draining it until it has been quiet
/// for `REPLACED_IDLE`: by then each of its connections has closed or timed out.
pub struct Listener {
    socket: TcpListener,
    /// Replaced servers first, the accepting one last.
    all: RwLock<Vec<Arc<Generation>>>,
}

impl Listener {
    /// Binds `addr` with the socket options every connection needs, and starts serving on it.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = TcpListener::bind(addr)?;
        set_socket_options(&socket, SOCKET_TIMEOUT)?;
        let first = Listener::server_on(&socket)?;
        Ok(Listener {
            socket,
            all: RwLock::new(vec![first]),
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

    /// Every `SELF_CHECK_INTERVAL`, checks that the accepting server still accepts, and replaces
    /// it if not; and lets go of replaced servers that have gone quiet. tiny_http's accept thread
    /// can also die without a word: when it cannot duplicate an accepted socket (EMFILE again) it
    /// panics. The check sends a request line tiny_http answers by itself (400, without reaching a
    /// handler), so busy handlers cannot make it fail.
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
        loop {
            thread::sleep(SELF_CHECK_INTERVAL);
            let current = self.current();
            match answers_self_check(target) {
                Some(false) => failed_checks += 1,
                Some(true) => failed_checks = 0,
                None => {}
            }
            // Several in a row, so a loop that is only slow (a saturated machine) is left alone.
            if failed_checks >= FAILED_SELF_CHECKS {
                failed_checks = 0;
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
            }
            Err(e) => {
                error!("could not start a new HTTP accept loop ({e}); the next check tries again")
            }
        }
    }
}

/// Whether the server at `addr` accepts connections: `None` when this process cannot even open a
/// socket to find out (it is out of descriptors itself). A connection that times out counts as no:
/// the listen backlog is full because nobody accepts.
fn answers_self_check(addr: SocketAddr) -> Option<bool> {
    let mut stream = match TcpStream::connect_timeout(&addr, SELF_CHECK_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Some(false),
        Err(_) => return None,
    };
    stream.set_read_timeout(Some(SELF_CHECK_TIMEOUT)).ok()?;
    stream.write_all(b"HIVE-SELF-CHECK\r\n").ok()?;
    let mut first = [0u8; 1];
    Some(matches!(stream.read(&mut first), Ok(1)))
}
