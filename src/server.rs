//! The HTTP server: the front door faces clients (see `front/`), tiny_http serves behind it, and
//! handlers see plain owned requests and responses.
//!
//! tiny_http serves only the front's Unix socket, and gets only well-formed requests whose bodies
//! are complete and within their limits (the front's). A fixed pool of handler threads calls `recv()`; each turns the
//! tiny_http request into a [`Request`], calls the role's handler inside `catch_unwind`, and writes
//! the [`Response`]. So handlers are plain functions, testable without sockets, and a panic in one
//! answers 500 instead of shrinking the pool. A long poll (a `wait=` parameter) may hold its
//! handler for up to a minute, so it is handed to a thread started for it, at most
//! [`MAX_LONG_POLLS`] at once: the pool stays free for everything else. Every answer is counted
//! in [`Metrics`].

use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use log::{error, warn};
use serde::Serialize;
use tiny_http::{Header, Method, StatusCode};

use crate::auth::{Gate, IDENTITY_FIELD, Identity};
use crate::config::ConnectionLimits;
use crate::error::Error;
use crate::front::{self, Front, PEER_FIELD, is_long_poll};
use crate::metrics::Metrics;
use crate::tls::ServerTls;

pub use crate::front::{BodyLimits, MAX_BODY_BYTES};

/// Long polls served at once, each on a thread of its own; past it a long poll is answered 503.
pub const MAX_LONG_POLLS: usize = 64;

/// A request as handlers see it: everything already read, nothing left on the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string (after `?`), empty if none.
    pub query: String,
    /// Who sent it, as the front's gate found out (see `auth.rs`).
    pub identity: Identity,
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
        Response {
            status: error.status(),
            body: error.json_body(),
            content_type: JSON,
            headers: match error {
                Error::MethodNotAllowed(allowed) => vec![("Allow", allowed.to_string())],
                Error::TooManyRequests(_) => vec![("Retry-After", RETRY_AFTER_SECS.to_string())],
                _ => Vec::new(),
            },
        }
    }
}

/// What a 429 tells the client to wait, in seconds, before it tries again.
const RETRY_AFTER_SECS: u32 = 1;

/// What the server calls for every request.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// How a larve serves: what the role says (threads, body limits) and what the command line says
/// (connection limits, TLS).
pub struct Settings {
    /// Who may make which request (see `auth.rs`).
    pub gate: Arc<Gate>,
    /// Handler threads.
    pub workers: usize,
    pub body_limits: BodyLimits,
    pub connections: ConnectionLimits,
    /// TLS for every connection; `None` serves plain HTTP.
    pub tls: Option<ServerTls>,
    /// Long polls served at once (normally [`MAX_LONG_POLLS`]).
    pub long_polls: usize,
}

/// What every serving thread shares.
struct Shared {
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    /// Long polls being served now, and how many may be.
    long_polls: AtomicUsize,
    max_long_polls: usize,
}

/// Binds `addr`, starts the front door, tiny_http and its handler threads, and returns the address
/// actually bound (the real port when `addr` asked for port 0). The threads serve for the life of
/// the process.
pub fn start(
    addr: SocketAddr,
    settings: Settings,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
) -> io::Result<SocketAddr> {
    let (front, backend) = Front::bind(
        addr,
        front::Settings {
            gate: settings.gate,
            connections: settings.connections,
            tls: settings.tls,
            body_limits: settings.body_limits,
            upstream_regular: settings.workers,
            upstream_long_polls: settings.long_polls,
        },
    )?;
    let server =
        Arc::new(tiny_http::Server::from_listener(backend, None).map_err(io::Error::other)?);
    let shared = Arc::new(Shared {
        handler,
        metrics: metrics.clone(),
        long_polls: AtomicUsize::new(0),
        max_long_polls: settings.long_polls,
    });
    for _ in 0..settings.workers {
        let (server, shared) = (server.clone(), shared.clone());
        thread::Builder::new().name("http".into()).spawn(move || {
            loop {
                match server.recv() {
                    Ok(request) => dispatch(request, &shared),
                    // Its accept loop stopped: the connections the front holds keep serving.
                    Err(e) => {
                        error!("the server stopped taking new connections from the front: {e}")
                    }
                }
            }
        })?;
    }
    front.open(metrics)
}

/// Serves `raw` on this thread, or on a thread of its own if it is a long poll.
fn dispatch(raw: tiny_http::Request, shared: &Arc<Shared>) {
    // The front's ping, proving a new connection has a thread (see `front/upstream.rs`).
    if *raw.method() == Method::Options && raw.url() == "*" {
        let _ = raw.respond(tiny_http::Response::empty(204));
        return;
    }
    if !is_long_poll(query(&raw)) {
        serve(raw, shared);
        return;
    }
    let taken = shared.long_polls.fetch_add(1, Ordering::Relaxed);
    if taken >= shared.max_long_polls {
        shared.long_polls.fetch_sub(1, Ordering::Relaxed);
        let error = Error::Busy("too many requests are waiting already".into());
        respond(raw, &Response::error(&error), shared);
        return;
    }
    let waiting = shared.clone();
    let spawned = thread::Builder::new()
        .name("http-wait".into())
        .spawn(move || {
            serve(raw, &waiting);
            waiting.long_polls.fetch_sub(1, Ordering::Relaxed);
        });
    if let Err(e) = spawned {
        shared.long_polls.fetch_sub(1, Ordering::Relaxed);
        // The request went with the closure: tiny_http answers a dropped request 500 itself.
        warn!("could not start a thread for a long poll: {e}");
    }
}

fn serve(mut raw: tiny_http::Request, shared: &Shared) {
    let response = match read_request(&mut raw) {
        Ok(request) => call(shared.handler.as_ref(), &request),
        Err(error) => Response::error(&error),
    };
    respond(raw, &response, shared);
}

/// Sends `response` and counts it. Always framed by `Content-Length`, which the front reads.
fn respond(raw: tiny_http::Request, response: &Response, shared: &Shared) {
    shared.metrics.request(path(&raw), response.status);
    let content_type =
        Header::from_bytes("Content-Type", response.content_type).expect("a valid header");
    let mut answer = tiny_http::Response::from_data(response.body.as_slice())
        .with_status_code(StatusCode(response.status))
        .with_header(content_type)
        .with_chunked_threshold(usize::MAX);
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

/// The request's raw query string, empty if none.
fn query(raw: &tiny_http::Request) -> &str {
    raw.url().split_once('?').map_or("", |(_, query)| query)
}

fn header(raw: &tiny_http::Request, name: &'static str) -> Option<String> {
    raw.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.to_string())
}

fn read_request(raw: &mut tiny_http::Request) -> Result<Request, Error> {
    // The front has read the body whole, within its path's limit, and framed it by length.
    let mut body = Vec::new();
    raw.as_reader()
        .read_to_end(&mut body)
        .map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
    Ok(Request {
        method: raw.method().as_str().to_ascii_uppercase(),
        path: path(raw).to_string(),
        query: query(raw).to_string(),
        // The front always sets it; without it, the request is nobody's.
        identity: header(raw, IDENTITY_FIELD)
            .and_then(|field| Identity::from_field(&field))
            .unwrap_or(Identity::Anonymous),
        peer: header(raw, PEER_FIELD).and_then(|peer| peer.parse().ok()),
        body,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Knows no credential: these tests call as clients of an open hive.
    struct NoKeys;

    impl crate::auth::Keyring for NoKeys {
        fn identify(&self, _: &str) -> Option<Identity> {
            None
        }
    }

    fn start_with(workers: usize, long_polls: usize, handler: Arc<Handler>) -> SocketAddr {
        let settings = Settings {
            gate: Arc::new(Gate::new(
                crate::auth::RoleKind::Queen,
                None,
                Default::default(),
                Arc::new(NoKeys),
            )),
            workers,
            body_limits: BodyLimits { by_path: &[] },
            connections: ConnectionLimits::default(),
            tls: None,
            long_polls,
        };
        start(
            "127.0.0.1:0".parse().unwrap(),
            settings,
            handler,
            Arc::default(),
        )
        .expect("start")
    }

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
        let addr = start_with(2, 1, handler);
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

    #[test]
    fn handlers_see_the_query_and_the_clients_address() {
        let handler: Arc<Handler> = Arc::new(|request: &Request| {
            Response::json(
                200,
                &serde_json::json!({ "query": request.query, "peer": request.peer }),
            )
        });
        let addr = start_with(1, 1, handler);
        let (status, body) = call_status(addr, "/x?a=1&b=2");
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["query"], "a=1&b=2");
        let peer: SocketAddr = seen["peer"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            peer.ip(),
            addr.ip(),
            "the client's address, not the Unix socket's"
        );
    }

    #[test]
    fn long_polls_wait_on_threads_of_their_own_and_are_capped() {
        let (entered, waits) = mpsc::channel::<()>();
        let gate = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let held = gate.clone();
        let handler: Arc<Handler> = Arc::new(move |request: &Request| {
            if request.query.starts_with("wait=") {
                entered.send(()).unwrap();
                let mut open = held.0.lock();
                while !*open {
                    if held
                        .1
                        .wait_for(&mut open, Duration::from_secs(10))
                        .timed_out()
                    {
                        break;
                    }
                }
            }
            Response::json(200, &serde_json::json!({ "result": "OK" }))
        });
        // One handler thread, and two long polls at most.
        let addr = start_with(1, 2, handler);
        let polls: Vec<_> = (0..2)
            .map(|_| thread::spawn(move || call_status(addr, "/task?wait=10").0))
            .collect();
        for _ in 0..2 {
            waits
                .recv_timeout(Duration::from_secs(5))
                .expect("a long poll waits");
        }
        assert_eq!(
            call_status(addr, "/healthz").0,
            200,
            "the handler thread is free"
        );
        let (status, body) = call_status(addr, "/task?wait=10");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("waiting already"), "{body}");
        *gate.0.lock() = true;
        gate.1.notify_all();
        for poll in polls {
            assert_eq!(poll.join().unwrap(), 200);
        }
    }
}
