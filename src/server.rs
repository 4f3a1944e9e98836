//! The HTTP server: tiny_http underneath, plain owned requests and responses above.
//!
//! A fixed pool of handler threads calls `recv()`; each turns the tiny_http request into a
//! [`Request`] (body read and size-checked), calls the role's handler inside `catch_unwind`, and
//! writes the [`Response`]. So handlers are plain functions, testable without sockets, and a panic
//! in one answers 500 instead of shrinking the pool.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use log::{error, warn};
use serde::Serialize;
use tiny_http::{Header, StatusCode};

use crate::error::Error;

/// Largest request body accepted; a task text or an address is far smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Bodies declared up to this size are refused the ordinary way: tiny_http reads and discards the
/// rest, which costs at most this much. Larger ones are refused by [`park_oversized`].
const MAX_DISCARDED_BODY_BYTES: usize = 1024 * 1024;

/// A request as handlers see it: everything already read, nothing left on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Who sent it, for log lines.
    pub peer: Option<SocketAddr>,
    pub body: Vec<u8>,
}

/// What a handler answers: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Pretty-printed JSON and a newline, as the tutorial's Flask larve prints it for curl.
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A JSON answer with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            body,
            allow: None,
        }
    }

    /// `{"error": "..."}` with the error's status.
    pub fn error(error: &Error) -> Response {
        let mut response = Response::json(
            error.status(),
            &serde_json::json!({ "error": error.to_string() }),
        );
        if let Error::MethodNotAllowed(allowed) = error {
            response.allow = Some(allowed);
        }
        response
    }
}

/// What the server calls for every request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A connection that sends no byte for this long is closed, and a response the client does not read
/// for this long is abandoned. tiny_http has no timeouts of its own, so without this an idle or
/// stalled client holds a thread (and, mid-body, a handler) forever.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time one request body may take to arrive, however it trickles in.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Threads that read bodies tiny_http has not already buffered (over 1 KiB, chunked, or sent after
/// `Expect: 100-continue`). They wait on the client, so they are kept apart from the handler pool:
/// slow clients queue up here while `/healthz` and small requests are answered as usual.
pub const BODY_THREADS: usize = 16;

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

/// A replaced server is let go once it has handed out no request for this long: its connections
/// have all closed or timed out by then.
const REPLACED_IDLE: Duration = Duration::from_secs(3 * SOCKET_TIMEOUT.as_secs());

/// Binds `addr`, starts `workers` handler threads and returns the address actually bound (the real
/// port when `addr` asked for port 0). The threads serve for the life of the process.
pub fn start(addr: SocketAddr, workers: usize, handler: Arc<Handler>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    set_socket_options(&listener, SOCKET_TIMEOUT)?;
    let servers = Arc::new(Servers::new(listener)?);
    let watched = servers.clone();
    thread::Builder::new()
        .name("http-watch".into())
        .spawn(move || watched.watch(local))?;
    let (body_queue, body_jobs) = mpsc::channel::<tiny_http::Request>();
    let body_jobs = Arc::new(Mutex::new(body_jobs));
    let parked = Arc::new(AtomicUsize::new(0));
    for _ in 0..BODY_THREADS {
        let (jobs, handler, parked) = (body_jobs.clone(), handler.clone(), parked.clone());
        thread::Builder::new()
            .name("http-body".into())
            .spawn(move || {
                loop {
                    let next = jobs.lock().recv();
                    let Ok(request) = next else { return };
                    serve(request, handler.as_ref(), &parked);
                }
            })?;
    }
    for _ in 0..workers {
        let (servers, handler, parked) = (servers.clone(), handler.clone(), parked.clone());
        let body_queue = body_queue.clone();
        thread::Builder::new().name("http".into()).spawn(move || {
            servers.each_request(|request| {
                if body_is_buffered(&request) {
                    serve(request, handler.as_ref(), &parked);
                } else if let Err(mpsc::SendError(request)) = body_queue.send(request) {
                    serve(request, handler.as_ref(), &parked);
                }
            })
        })?;
    }
    Ok(local)
}

/// Sets timeouts and `TCP_NODELAY` on the listening socket. Linux copies them to every accepted
/// socket, which is the only way to reach tiny_http's connections: it accepts them itself. Without
/// `TCP_NODELAY`, an answer over 1 KiB (tiny_http writes head and body apart) waits ~40 ms for the
/// client's delayed ACK. The receive timeout also makes an idle `accept()` fail after `timeout`,
/// which the self-check's connections every second prevent (and [`Servers`] survives).
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
/// for [`REPLACED_IDLE`]: by then each of its connections has closed or timed out.
struct Servers {
    listener: TcpListener,
    /// Replaced servers first, the accepting one last.
    all: RwLock<Vec<Arc<Generation>>>,
}

impl Servers {
    fn new(listener: TcpListener) -> io::Result<Servers> {
        let first = Servers::server_on(&listener)?;
        Ok(Servers {
            listener,
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
    fn each_request(&self, mut serve: impl FnMut(tiny_http::Request)) -> ! {
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

    /// Every [`SELF_CHECK_INTERVAL`], checks that the accepting server still accepts, and replaces
    /// it if not; and lets go of replaced servers that have gone quiet. tiny_http's accept thread
    /// can also die without a word: when it cannot duplicate an accepted socket (EMFILE again) it
    /// panics. The check sends a request line tiny_http answers by itself (400, without reaching a
    /// handler), so busy handlers cannot make it fail.
    fn watch(&self, local: SocketAddr) -> ! {
        let target = match local.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => {
                SocketAddr::from(([127, 0, 0, 1], local.port()))
            }
            ip if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
            }
            _ => local,
        };
        loop {
            thread::sleep(SELF_CHECK_INTERVAL);
            let current = self.current();
            if answers_self_check(target) == Some(false) {
                self.replace(&current, "it did not answer a self-check");
            }
            let mut all = self.all.write();
            let accepting = all.pop().expect("at least one server");
            all.retain(|replaced| replaced.last_request.lock().elapsed() < REPLACED_IDLE);
            all.push(accepting);
        }
    }

    fn replace(&self, failed: &Arc<Generation>, why: &str) {
        error!("the HTTP accept loop stopped ({why}); starting a new one");
        thread::sleep(REPLACE_PAUSE);
        let mut all = self.all.write();
        if !all
            .last()
            .is_some_and(|current| Arc::ptr_eq(current, failed))
        {
            return;
        }
        match Servers::server_on(&self.listener) {
            Ok(server) => all.push(server),
            Err(e) => error!("could not start a new HTTP accept loop: {e}; retrying"),
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

/// True when tiny_http has already read the whole body into memory (it does so up to 1 KiB), so
/// serving the request cannot wait on the client.
fn body_is_buffered(request: &tiny_http::Request) -> bool {
    let has = |name: &'static str| request.headers().iter().any(|h| h.field.equiv(name));
    if has("Transfer-Encoding") {
        return false;
    }
    match request.body_length() {
        None | Some(0) => true,
        Some(length) => length <= 1024 && !has("Expect"),
    }
}

fn serve(mut raw: tiny_http::Request, handler: &Handler, parked: &AtomicUsize) {
    let declared = raw.body_length().unwrap_or(0);
    if declared > MAX_DISCARDED_BODY_BYTES {
        park_oversized(raw, parked);
        return;
    }
    let response = match read_request(&mut raw) {
        Ok(request) => call(handler, &request),
        Err(error) => Response::error(&error),
    };
    let mut answer = tiny_http::Response::from_data(response.body)
        .with_status_code(StatusCode(response.status))
        .with_header(json_header());
    if let Some(allowed) = response.allow {
        answer.add_header(Header::from_bytes("Allow", allowed).expect("a valid header"));
    }
    if let Err(e) = raw.respond(answer) {
        warn!("could not send a response: {e}");
    }
}

fn read_request(raw: &mut tiny_http::Request) -> Result<Request, Error> {
    if raw.body_length().unwrap_or(0) > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let body = read_body(raw.as_reader(), Instant::now() + BODY_DEADLINE)?;
    let url = raw.url();
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let authorization = raw
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.to_string());
    Ok(Request {
        method: raw.method().as_str().to_ascii_uppercase(),
        path: path.to_string(),
        authorization,
        peer: raw.remote_addr().copied(),
        body,
    })
}

/// Reads a body of at most [`MAX_BODY_BYTES`] that must arrive by `deadline`. Each read also ends
/// after [`SOCKET_TIMEOUT`] without data, so a client that stops sending cannot hold the thread.
fn read_body(reader: &mut dyn Read, deadline: Instant) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if Instant::now() > deadline {
            return Err(Error::RequestTimeout);
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) if body.len() + n > MAX_BODY_BYTES => {
                return Err(Error::PayloadTooLarge(MAX_BODY_BYTES));
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::RequestTimeout);
            }
            Err(e) => {
                return Err(Error::BadRequest(format!(
                    "could not read the request body: {e}"
                )));
            }
        }
    }
}

fn call(handler: &Handler, request: &Request) -> Response {
    match panic::catch_unwind(AssertUnwindSafe(|| handler(request))) {
        Ok(response) => response,
        Err(_) => {
            // The panic hook has logged the message; the pool keeps this thread.
            error!("handler panicked on {} {}", request.method, request.path);
            Response::error(&Error::Internal("the request could not be handled".into()))
        }
    }
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("a valid header")
}

/// Refuses a request whose declared body is too large to discard.
///
/// tiny_http reads and throws away an unread body when the request is dropped, and first allocates
/// a buffer as large as what is left: a `Content-Length` of 100 GB aborts the process. The only way
/// to take the body reader out of its request is `upgrade`, so this writes an interim `100` (which
/// clients skip) through it, then the real 413 with `Connection: close`, and never drops the reader.
/// The cost is that connection's socket and tiny_http thread, parked for the life of the process;
/// the count is logged.
fn park_oversized(raw: tiny_http::Request, parked: &AtomicUsize) {
    let body = Response::error(&Error::PayloadTooLarge(MAX_BODY_BYTES)).body;
    let mut stream = raw.upgrade("hive", tiny_http::Response::empty(100));
    let head = format!(
        "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let written = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .and_then(|()| stream.flush());
    if let Err(e) = written {
        warn!("could not send a 413: {e}");
    }
    std::mem::forget(stream);
    let total = parked.fetch_add(1, Ordering::Relaxed) + 1;
    warn!(
        "refused a request declaring a body over {MAX_DISCARDED_BODY_BYTES} bytes; {total} such connections parked"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_status(addr: SocketAddr, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut reply = agent
            .get(format!("http://{addr}{path}"))
            .call()
            .expect("an answer");
        let body = reply.body_mut().read_to_string().expect("a body");
        (reply.status().as_u16(), body)
    }

    #[test]
    fn a_panicking_handler_answers_500_and_the_pool_keeps_its_size() {
        let handler: Arc<Handler> = Arc::new(|request: &Request| {
            assert!(request.path != "/boom", "a handler bug");
            Response::json(200, &serde_json::json!({ "result": "OK" }))
        });
        let addr = start("127.0.0.1:0".parse().unwrap(), 2, handler).expect("start");
        for _ in 0..10 {
            let (status, body) = call_status(addr, "/boom");
            assert_eq!(status, 500);
            assert!(body.contains("\"error\""), "{body}");
        }
        assert_eq!(
            call_status(addr, "/fine").0,
            200,
            "both handler threads still serve"
        );
    }

    /// A body that arrives one byte at a time, slowly.
    struct Trickle;

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            thread::sleep(Duration::from_millis(5));
            buf[0] = b' ';
            Ok(1)
        }
    }

    #[test]
    fn a_trickling_body_ends_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            read_body(&mut Trickle, deadline),
            Err(Error::RequestTimeout)
        );
    }

    #[test]
    fn a_body_over_the_limit_is_413_whatever_it_declared() {
        let mut big = io::repeat(b'x').take(MAX_BODY_BYTES as u64 + 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            read_body(&mut big, deadline),
            Err(Error::PayloadTooLarge(MAX_BODY_BYTES))
        );
        let mut fits = io::repeat(b'x').take(MAX_BODY_BYTES as u64);
        assert_eq!(
            read_body(&mut fits, deadline).map(|b| b.len()),
            Ok(MAX_BODY_BYTES)
        );
    }
}
