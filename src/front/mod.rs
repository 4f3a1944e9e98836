//! The front door: Hive accepts every connection itself, bounds what a client can make it do, and
//! hands tiny_http only requests that are well formed, bounded and complete.
//!
//! ```text
//!  clients ──TCP/TLS──► accept loop ──► one thread per connection ──► pool of kept-alive ──► tiny_http
//!                       (never dies;     TLS handshake, head, body,     connections over      (server.rs:
//!                        caps: in all    each bounded; answers          a Unix socket in a     handler threads)
//!                        and per peer)   400/408/413/431 itself;        private directory
//!                                        held requests served here
//! ```
//!
//! tiny_http, which Hive keeps (it is not forked or patched), has no limits of its own: it reads a
//! head line of any length into memory, allocates a declared body's whole length when a request is
//! dropped, stops accepting for good at the first `accept()` error, and its thread pool can leave a
//! new connection with no thread. Its TLS backends run the handshake on the accept thread (one
//! silent client stops every new connection) or use a rustls line with an unfixed advisory, and
//! its handlers cannot learn that a client has left. So tiny_http no longer faces the network: it
//! serves a Unix socket only the front can reach (`socket_dir.rs`), and the front faces clients.
//!
//! Each limit has one check, in the module named here:
//!
//! | limit                                        | where                                     |
//! |----------------------------------------------|-------------------------------------------|
//! | connections in all, and per peer address     | `admission.rs` (`--max-connections`, `--max-connections-per-peer`) |
//! | `accept()` failing                           | `accept_loop`: retried after a pause that doubles up to a second |
//! | TLS handshake and head time, head size       | `connection.rs` ([`HEAD_DEADLINE`], [`MAX_HEAD_BYTES`]); fields: `head.rs` |
//! | body size per path, and body time            | `body.rs` ([`BodyLimits`], [`BODY_DEADLINE`]) |
//! | time for a client to take each write         | `connection.rs` ([`WRITE_TIMEOUT`]); a held answer's pieces: `held.rs` |
//! | held requests at once                        | `held.rs` ([`max_held`])                  |
//!
//! - **Accept** (`accept_loop`): one loop that never ends. An `accept()` that fails (out of file
//!   descriptors, of memory) is retried after a pause, as mini-redis does, so a flood is waited out
//!   rather than fatal.
//! - **Admission** (`admission.rs`): past a connection cap, a new connection is answered 503
//!   (plain HTTP; a TLS one is closed) and counted.
//! - **Each connection** (`connection.rs`) has a thread of its own (`threads.rs`: reused, and
//!   gone a few seconds after its connection), so a slow client holds only its own: TLS, the
//!   head (`head.rs`, parsed by httparse), the body (`body.rs`), each bounded in size and time.
//! - **The gate** (`auth.rs`): once a head is read, and before a byte of its body, the front asks
//!   who sent it and whether they may; a refusal (401, 403) is answered and the connection closed.
//!   The request goes on with the caller's identity in a field only the front sets.
//! - **Held requests** (`held.rs`): a request whose answer waits or streams (the role says which,
//!   from the head) is answered on the connection's own thread, which sees a client leave; so is
//!   a queen's lease renewal, too frequent to pay for the hop to tiny_http.
//! - **Upstream** (`upstream.rs`): every other request goes to tiny_http over a pool of kept-alive
//!   connections, grown one at a time so tiny_http's pool never sees a burst. The client's address
//!   travels in a field only the front sets.

mod admission;
mod answer;
mod body;
mod connection;
mod head;
mod held;
mod input;
mod socket_dir;
mod threads;
mod upstream;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use crate::auth::Gate;
use crate::config::ConnectionLimits;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::HeldRoutes;
use crate::tls::ServerTls;

use admission::{Admission, Refusal};
use held::Holding;
use socket_dir::SocketDir;
use threads::Threads;
use upstream::Upstream;

pub use body::{BODY_DEADLINE, BodyLimits, MAX_BODY_BYTES};
pub use connection::{HEAD_DEADLINE, MAX_HEAD_BYTES, WRITE_TIMEOUT};
pub use head::PEER_FIELD;
pub use held::max_held;
pub use threads::IDLE_LIFETIME;

/// Connections the kernel queues before the accept loop takes them. std listens with 128, which
/// a burst of 256 new connections overflows: the kernel drops the extra handshakes and those
/// clients try again a second later. At 1,024, 2,048 connections arriving together (the default
/// cap's worth) overflowed it, and a client among them waited that second. The kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: i32 = 4096;

/// Pauses of the accept loop after a failed `accept()`: the first, and the longest it doubles to.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(5);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Stack of a connection's thread: a TLS handshake, a head and a body buffer (on the heap) need
/// far less than std's 2 MiB, and a thousand connections should not reserve 2 GiB.
const CONNECTION_STACK_BYTES: usize = 512 * 1024;

/// What the front needs from the role and the command line.
pub struct Settings {
    /// Who may make which request, asked on each head.
    pub gate: Arc<Gate>,
    pub connections: ConnectionLimits,
    /// TLS for every connection; `None` serves plain HTTP.
    pub tls: Option<ServerTls>,
    pub body_limits: BodyLimits,
    /// The role's held requests, which the front answers itself.
    pub held: Arc<dyn HeldRoutes>,
    /// Held requests served at once (normally [`max_held`]).
    pub max_held: usize,
    /// Connections to the server: as many as it has handler threads.
    pub upstream: usize,
}

/// What every connection's thread shares.
struct Shared {
    gate: Arc<Gate>,
    threads: Threads,
    tls: Option<ServerTls>,
    upstream: Upstream,
    body_limits: BodyLimits,
    held: Arc<dyn HeldRoutes>,
    holding: Holding,
    admission: Admission,
    metrics: Arc<Metrics>,
}

/// A front bound to its address, before it accepts.
pub struct Front {
    listener: TcpListener,
    dir: SocketDir,
    settings: Settings,
}

impl Front {
    /// Binds `listen` (the address clients reach) and the Unix socket the server is to serve,
    /// returned for tiny_http.
    pub fn bind(listen: SocketAddr, settings: Settings) -> io::Result<(Front, UnixListener)> {
        let listener = TcpListener::bind(listen)?;
        // SAFETY: a plain system call on a descriptor the listener owns; on a listening socket it
        // only changes the backlog.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let dir = SocketDir::create()?;
        let backend = UnixListener::bind(dir.socket())?;
        let front = Front {
            listener,
            dir,
            settings,
        };
        Ok((front, backend))
    }

    /// Opens the first connections to the server (which must be serving by now), then accepts
    /// clients on a thread of its own for the life of the process. Returns the address bound.
    pub fn open(self, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
        let local = self.listener.local_addr()?;
        let settings = self.settings;
        let upstream = Upstream::new(self.dir.socket(), settings.upstream);
        upstream.open_ahead(settings.upstream)?;
        let shared = Arc::new(Shared {
            gate: settings.gate,
            threads: Threads::new("front", CONNECTION_STACK_BYTES),
            tls: settings.tls,
            upstream,
            body_limits: settings.body_limits,
            held: settings.held,
            holding: Holding::new(settings.max_held),
            admission: Admission::new(settings.connections),
            metrics,
        });
        let (listener, dir) = (self.listener, self.dir);
        thread::Builder::new()
            .name("front-accept".into())
            .spawn(move || {
                // The directory stays (and stays locked) as long as the front accepts: for good.
                let _dir = dir;
                accept_loop(&listener, &shared)
            })?;
        Ok(local)
    }
}

/// Accepts connections forever (see the module docs).
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> ! {
    let mut pause = FIRST_ACCEPT_PAUSE;
    let mut failures: u64 = 0;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if failures > 0 {
                    info!("accepting connections again after {failures} failed accept()s");
                    failures = 0;
                    pause = FIRST_ACCEPT_PAUSE;
                }
                admit(stream, peer, shared);
            }
            // The client gave up before it was accepted, or a signal came: nothing to wait out.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if failures == 0 {
                    warn!(
                        "accept() failed ({e}); retrying with a pause that doubles up to {MAX_ACCEPT_PAUSE:?}"
                    );
                }
                failures += 1;
                thread::sleep(pause);
                pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
            }
        }
    }
}

/// Starts serving `stream` on a thread of its own, or refuses it when a cap is reached.
fn admit(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let ip = peer.ip();
    if let Err(refusal) = shared.admission.admit(ip) {
        refuse(stream, peer, refusal, shared);
        return;
    }
    shared.metrics.front_connections_open.inc();
    let worker = shared.clone();
    let unserved = Unserved {
        stream: Some(stream),
        plain: shared.tls.is_none(),
    };
    let started = shared.threads.run(move || {
        let _admitted = Admitted {
            shared: &worker,
            ip,
        };
        connection::serve(unserved.take(), peer, &worker);
    });
    if let Err(e) = started {
        // The connection went with the closure, which answered it 503 as it was dropped.
        release(shared, ip);
        warn!("could not start a thread for a connection from {peer}: {e}");
        thread::sleep(FIRST_ACCEPT_PAUSE);
    }
}

/// A connection on its way to its thread. Dropped before it got there (no thread could be
/// started: the machine or the user is out of them), it is answered 503, as a connection over a
/// cap is (a TLS one is just closed), so its client hears why at once.
struct Unserved {
    stream: Option<TcpStream>,
    /// It speaks plain HTTP, which an answer can be written in without a handshake.
    plain: bool,
}

impl Unserved {
    fn take(mut self) -> TcpStream {
        self.stream.take().expect("taken once")
    }
}

impl Drop for Unserved {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take()
            && self.plain
            && stream.set_nonblocking(true).is_ok()
        {
            let why = "this larve cannot start a thread for the connection now";
            let _ = stream.write_all(&answer::refusal(&Error::Busy(why.into())));
        }
    }
}

/// A connection's place under the caps, given back when its thread ends (even by a panic).
struct Admitted<'a> {
    shared: &'a Shared,
    ip: IpAddr,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        release(self.shared, self.ip);
    }
}

fn release(shared: &Shared, ip: IpAddr) {
    shared.admission.release(ip);
    shared.metrics.front_connections_open.dec();
}

/// Answers a connection over a cap with 503 (a TLS client cannot read a plain answer: it is just
/// closed), counts it and closes it. The answer fits an empty socket buffer, so the write never
/// waits; the accept loop moves on either way.
fn refuse(mut stream: TcpStream, peer: SocketAddr, refusal: Refusal, shared: &Shared) {
    let (limit, why) = match refusal {
        Refusal::Total => ("total", "the larve holds as many connections as it takes"),
        Refusal::Peer => (
            "peer",
            "this address holds as many connections as one address may",
        ),
    };
    shared.metrics.front_refused(refusal == Refusal::Peer);
    debug!("refused a connection from {peer}: {why} ({limit} limit)");
    if shared.tls.is_none() && stream.set_nonblocking(true).is_ok() {
        let _ = stream.write_all(&answer::refusal(&Error::Busy(why.into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_the_role_names_has_its_own_body_limit() {
        let limits = BodyLimits {
            by_path: &[("/reports", 1 << 20)],
        };
        assert_eq!(limits.for_path("/reports"), 1 << 20);
        assert_eq!(limits.for_path("/reports/x"), MAX_BODY_BYTES);
        assert_eq!(limits.for_path("/submit_task"), MAX_BODY_BYTES);
    }
}
