//! The HTTP server: tiny_http underneath, plain owned requests and responses above.
//!
//! A fixed pool of handler threads calls `recv()`; each turns the tiny_http request into a
//! [`Request`] (body read and size-checked), calls the role's handler inside `catch_unwind`, and
//! writes the [`Response`]. So handlers are plain functions, testable without sockets, and a panic
//! in one answers 500 instead of shrinking the pool. Every answer is counted in [`Metrics`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, warn};
use parking_lot::Mutex;
use serde::Serialize;
use tiny_http::{Header, StatusCode};

use crate::error::Error;
use crate::listener::{Listener, SOCKET_TIMEOUT};
use crate::metrics::Metrics;
use crate::sockets::Connection;

/// Largest request body accepted; a task text, an address or a task's spec is far smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest body on the paths a role names as large (see [`start`]): larves' own messages that
/// carry tasks' output (a drone's reports) or many attempts at once (a queen's starts).
pub const MAX_LARGE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Oversized bodies declared up to this size are read and thrown away (see [`refuse_oversized`]);
/// larger ones are refused without reading them, by [`park`]. An honest 8 MiB body gets its 413.
const MAX_DISCARDED_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Requests [`park`] keeps a thread for, at most: about 20 MiB of memory and as many threads.
const MAX_PARKED: u64 = 1024;

/// A request as handlers see it: everything already read, nothing left on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The query string, without the `?` (empty when there is none).
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Who sent it, for log lines.
    pub peer: Option<SocketAddr>,
    pub body: Vec<u8>,
}

/// What a handler answers: a status and a body, JSON but for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Pretty-printed JSON and a newline, as the tutorial's Flask larve prints it for curl.
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// Headers beyond the content type: `Allow` of a 405, `Retry-After` of a 429, `Location`.
    pub headers: Vec<(&'static str, String)>,
}

/// Content types of Hive's answers: JSON, and Prometheus' text format for `/metrics`.
const JSON: &str = "application/json";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Response {
    /// A JSON answer with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            body,
            content_type: JSON,
            headers: Vec::new(),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// A 200 answer in Prometheus' text format.
    pub fn metrics(text: String) -> Response {
        Response {
            status: 200,
            body: text.into_bytes(),
            content_type: PROMETHEUS_TEXT,
            headers: Vec::new(),
        }
    }

    /// `{"error": "..."}` with the error's status.
    pub fn error(error: &Error) -> Response {
        let mut response = Response::json(
            error.status(),
            &serde_json::json!({ "error": error.to_string() }),
        );
        match error {
            Error::MethodNotAllowed(allowed) => {
                response = response.with_header("Allow", allowed.to_string());
            }
            Error::TooManyRequests(_) => {
                response = response.with_header("Retry-After", RETRY_AFTER_SECS.to_string());
            }
            _ => {}
        }
        response
    }
}

/// What a 429 tells the client to wait, in seconds, before it tries again.
const RETRY_AFTER_SECS: u32 = 1;

/// What the server calls for every request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Longest time one request body may take to arrive, however it trickles in.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Threads that read bodies tiny_http has not already buffered (over 1 KiB, chunked, or sent after
/// `Expect: 100-continue`). They wait on the client, so they are kept apart from the handler pool:
/// slow clients queue up here while `/healthz` and small requests are answered as usual.
pub const BODY_THREADS: usize = 16;

/// How long an oversized body is read and thrown away, so a client that sends it whole before
/// reading any answer (as most do) gets its 413; and the chunks it is read in.
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);
const DRAIN_CHUNK_BYTES: usize = 64 * 1024;

/// What every serving thread shares.
struct Shared {
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    /// Paths whose bodies may be up to [`MAX_LARGE_BODY_BYTES`].
    large_bodies: &'static [&'static str],
    /// The port served, to find a connection's socket by its two ends (see `sockets.rs`).
    port: u16,
}

impl Shared {
    /// The largest body a request for `path` may have.
    fn body_limit(&self, path: &str) -> usize {
        if self.large_bodies.contains(&path) {
            MAX_LARGE_BODY_BYTES
        } else {
            MAX_BODY_BYTES
        }
    }
}

/// Binds `addr`, starts `workers` handler threads and returns the address actually bound (the real
/// port when `addr` asked for port 0). Requests for `large_bodies` may carry up to
/// [`MAX_LARGE_BODY_BYTES`], all others [`MAX_BODY_BYTES`]. The threads serve for the life of the
/// process.
pub fn start(
    addr: SocketAddr,
    workers: usize,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    large_bodies: &'static [&'static str],
) -> io::Result<SocketAddr> {
    let listener = Arc::new(Listener::bind(addr, metrics.clone())?);
    let local = listener.local_addr()?;
    let watched = listener.clone();
    thread::Builder::new()
        .name("http-watch".into())
        .spawn(move || watched.watch(local))?;
    let shared = Arc::new(Shared {
        handler,
        metrics,
        large_bodies,
        port: local.port(),
    });
    let (body_queue, body_jobs) = mpsc::channel::<tiny_http::Request>();
    let body_jobs = Arc::new(Mutex::new(body_jobs));
    for _ in 0..BODY_THREADS {
        let (jobs, shared) = (body_jobs.clone(), shared.clone());
        thread::Builder::new()
            .name("http-body".into())
            .spawn(move || {
                loop {
                    let next = jobs.lock().recv();
                    let Ok(request) = next else { return };
                    serve(request, &shared);
                }
            })?;
    }
    for _ in 0..workers {
        let (listener, shared) = (listener.clone(), shared.clone());
        let body_queue = body_queue.clone();
        thread::Builder::new().name("http".into()).spawn(move || {
            listener.each_request(|request| match intake(&request) {
                Intake::Buffered => serve(request, &shared),
                // Cannot fail: the body threads live as long as this sender.
                Intake::OnSocket => drop(body_queue.send(request)),
                Intake::Upgrade => {
                    let error = Error::BadRequest("Connection: upgrade is not supported".into());
                    respond(request, &Response::error(&error), &shared);
                }
            })
        })?;
    }
    Ok(local)
}

/// Where a request's body is, which decides which thread may serve it.
enum Intake {
    /// tiny_http has already read the whole body into memory (it does so up to 1 KiB): serving
    /// cannot wait on the client.
    Buffered,
    /// The body is still on the socket: a body thread reads it.
    OnSocket,
    /// `Connection: upgrade`: tiny_http hands over the raw socket as the body, whatever the
    /// declared length, so reading it would wait until the client closes. Refused unread.
    Upgrade,
}

fn header(request: &tiny_http::Request, name: &'static str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str().to_ascii_lowercase())
}

fn intake(request: &tiny_http::Request) -> Intake {
    if header(request, "Connection").is_some_and(|value| value.contains("upgrade")) {
        return Intake::Upgrade;
    }
    if header(request, "Transfer-Encoding").is_some() {
        return Intake::OnSocket;
    }
    match request.body_length() {
        None | Some(0) => Intake::Buffered,
        Some(length) if length <= 1024 && header(request, "Expect").is_none() => Intake::Buffered,
        Some(_) => Intake::OnSocket,
    }
}

fn serve(mut raw: tiny_http::Request, shared: &Shared) {
    let limit = shared.body_limit(path(&raw));
    if raw.body_length().is_some_and(|n| n > limit) {
        refuse_oversized(raw, limit, shared);
        return;
    }
    let response = match read_request(&mut raw, limit) {
        Ok(request) => call(shared.handler.as_ref(), &request),
        Err(error) => Response::error(&error),
    };
    respond(raw, &response, shared);
}

/// Sends `response` and counts it.
fn respond(raw: tiny_http::Request, response: &Response, shared: &Shared) {
    shared.metrics.request(path(&raw), response.status);
    let content_type =
        Header::from_bytes("Content-Type", response.content_type).expect("a valid header");
    let mut answer = tiny_http::Response::from_data(response.body.as_slice())
        .with_status_code(StatusCode(response.status))
        .with_header(content_type);
    for (name, value) in &response.headers {
        // Values are Hive's own (methods, seconds, task ids): always valid header text.
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            answer.add_header(header);
        }
    }
    if let Err(e) = raw.respond(answer) {
        warn!("could not send a response: {e}");
    }
}

/// The request's path without the query string.
fn path(raw: &tiny_http::Request) -> &str {
    let url = raw.url();
    url.split_once('?').map_or(url, |(path, _)| path)
}

fn read_request(raw: &mut tiny_http::Request, limit: usize) -> Result<Request, Error> {
    let body = read_body(raw.as_reader(), Instant::now() + BODY_DEADLINE, limit)?;
    let authorization = raw
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.to_string());
    let query = raw.url().split_once('?').map_or("", |(_, query)| query);
    Ok(Request {
        method: raw.method().as_str().to_ascii_uppercase(),
        path: path(raw).to_string(),
        query: query.to_string(),
        authorization,
        peer: raw.remote_addr().copied(),
        body,
    })
}

/// Reads a body of at most `limit` bytes that must arrive by `deadline`. Each read also ends
/// after [`crate::listener::SOCKET_TIMEOUT`] without data, so a client that stops sending cannot hold the thread.
fn read_body(reader: &mut dyn Read, deadline: Instant, limit: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if Instant::now() > deadline {
            return Err(Error::RequestTimeout);
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) if body.len() + n > limit => {
                return Err(Error::PayloadTooLarge(limit));
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

/// Answers 413 to a request whose declared body is over its `limit`.
///
/// tiny_http, when a request is dropped, reads and throws away what is left of its declared body,
/// and first allocates a buffer that large; it does the same when a read of the body meets the end
/// of the stream early. A `Content-Length` of 100 GB would abort the process. So a body reader is
/// dropped only when what is left of it fits [`MAX_DISCARDED_BODY_BYTES`]:
/// - Up to that size, the body is read and thrown away for up to [`DRAIN_DEADLINE`], so a client
///   that sends its whole body before reading any answer gets its 413, and keeps its connection. If
///   the body is not all there by then (or the client waits for `100 Continue`, which it never
///   gets), the socket stops reading, so tiny_http's discard ends at once, and the 413 goes out as
///   the connection closes.
/// - Above it, the request is parked (see [`park`]).
fn refuse_oversized(mut raw: tiny_http::Request, limit: usize, shared: &Shared) {
    let connection = raw
        .remote_addr()
        .and_then(|peer| Connection::find(*peer, shared.port));
    if raw.body_length().unwrap_or(0) > MAX_DISCARDED_BODY_BYTES {
        park(raw, connection, limit, shared);
        return;
    }
    let drained = header(&raw, "Expect").is_none()
        && connection
            .as_ref()
            .is_some_and(|connection| drain(&mut raw, connection));
    if !drained && let Some(connection) = &connection {
        let _ = connection.stop_reading();
    }
    let response = Response::error(&Error::PayloadTooLarge(limit));
    respond(raw, &response, shared);
}

/// Reads and throws away `raw`'s body until it ends, for up to [`DRAIN_DEADLINE`] in all (each read
/// waits only for the time left). True if it ended; the connection then keeps its usual timeout.
fn drain(raw: &mut tiny_http::Request, connection: &Connection) -> bool {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let reader = raw.as_reader();
    let mut chunk = vec![0u8; DRAIN_CHUNK_BYTES];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || connection.set_read_timeout(left).is_err() {
            return false;
        }
        match reader.read(&mut chunk) {
            Ok(0) => return connection.set_read_timeout(SOCKET_TIMEOUT).is_ok(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Refuses a request whose declared body is too large to ever drop (see [`refuse_oversized`]), and
/// lets go of its connection.
///
/// The only way to take the body reader out of a tiny_http request without dropping it is
/// `upgrade`, which writes the 413's status line and headers (with `Connection: upgrade`; the JSON
/// body follows, ended by closing the connection). The connection's sockets are then closed; the
/// reader and writer are leaked, never dropped, and the thread tiny_http gave the connection waits
/// for that reader forever: each parked request costs one thread (and no descriptor) for the life
/// of the process. Past [`MAX_PARKED`] the larve exits, so its supervisor restarts it and the
/// threads are reclaimed, rather than grow until the machine refuses it threads or memory.
fn park(raw: tiny_http::Request, connection: Option<Connection>, limit: usize, shared: &Shared) {
    shared.metrics.request(path(&raw), 413);
    let body = Response::error(&Error::PayloadTooLarge(limit)).body;
    let status = tiny_http::Response::empty(413)
        .with_header(Header::from_bytes("Content-Type", JSON).expect("a valid header"));
    let mut stream = raw.upgrade("hive", status);
    if let Err(e) = stream.write_all(&body).and_then(|()| stream.flush()) {
        warn!("could not send a 413: {e}");
    }
    std::mem::forget(stream);
    match connection {
        // SAFETY: the only owners of these descriptors are the leaked stream and the tiny_http
        // thread that waits for its reader forever; neither ever touches them again.
        Some(connection) => unsafe { connection.close_for_good() },
        None => warn!("the socket of a refused request was not found; it stays open"),
    }
    shared.metrics.parked_connections.inc();
    let parked = shared.metrics.parked_connections.get();
    warn!(
        "refused a request declaring a body over {MAX_DISCARDED_BODY_BYTES} bytes; {parked} such requests hold a thread for good"
    );
    if parked >= MAX_PARKED {
        error!(
            "{parked} requests declaring bodies over {MAX_DISCARDED_BODY_BYTES} bytes hold a thread each; exiting so that a restart reclaims them"
        );
        log::logger().flush();
        std::process::exit(1);
    }
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
        let addr = start(
            "127.0.0.1:0".parse().unwrap(),
            2,
            handler,
            Arc::default(),
            &[],
        )
        .expect("start");
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
            read_body(&mut Trickle, deadline, MAX_BODY_BYTES),
            Err(Error::RequestTimeout)
        );
    }

    #[test]
    fn a_body_over_the_limit_is_413_whatever_it_declared() {
        let mut big = io::repeat(b'x').take(MAX_BODY_BYTES as u64 + 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            read_body(&mut big, deadline, MAX_BODY_BYTES),
            Err(Error::PayloadTooLarge(MAX_BODY_BYTES))
        );
        let mut fits = io::repeat(b'x').take(MAX_BODY_BYTES as u64);
        assert_eq!(
            read_body(&mut fits, deadline, MAX_BODY_BYTES).map(|b| b.len()),
            Ok(MAX_BODY_BYTES)
        );
    }
}
