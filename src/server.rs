//! The HTTP server: the front door faces clients (see `front/`), tiny_http serves behind it, and
//! handlers see plain owned requests and responses.
//!
//! tiny_http serves only the front's Unix socket, and gets only well-formed requests whose bodies
//! are complete and within their limits (the front's). A fixed pool of handler threads calls
//! `recv()`; each turns the tiny_http request into a [`Request`], calls the role's handler inside
//! `catch_unwind`, and writes the [`Response`]. So handlers are plain functions, testable without
//! sockets, and a panic in one answers 500 instead of shrinking the pool. Every answer is counted
//! in [`Metrics`].
//!
//! Requests whose answer waits or streams never reach tiny_http, nor do a queen's lease
//! renewals: the role names them ([`HeldRoutes`]), and the front answers them on the client
//! connection's own thread.

use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{error, warn};
use serde::Serialize;
use tiny_http::{Header, Method, StatusCode};

use crate::auth::{Gate, IDENTITY_FIELD, Identity};
use crate::config::ConnectionLimits;
use crate::error::Error;
use crate::front::{self, Front, PEER_FIELD};
use crate::metrics::Metrics;
use crate::tls::ServerTls;

pub use crate::front::{BodyLimits, MAX_BODY_BYTES};

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
pub const JSON: &str = "application/json";
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

/// The role's requests whose answer waits or streams: a long poll, an event stream, logs that are
/// followed. tiny_http cannot serve them: a handler cannot learn that its client has left, so a
/// waiting handler holds its thread until the wait ends, for nobody. The front serves them instead,
/// on the client connection's own thread, which exists anyway: it sends the answer's head, then
/// pulls the body from the role with a bounded wait, checking between pulls that the client is
/// still there (see `front/held.rs`). A role may also name a request that is short but very
/// frequent (a queen's lease renewals): answered there, it skips the hop to tiny_http and back.
pub trait HeldRoutes: Send + Sync {
    /// Whether the request `method path?query` is held. Decided from the head alone (`method` in
    /// upper case, `query` as sent), before its body is read, so a request the front holds never
    /// reaches tiny_http and one it does not is answered by [`Handler`] as any other.
    fn holds(&self, method: &str, path: &str, query: &str) -> bool;

    /// Whether a held `method path` is answered at once (it neither waits nor streams), so it
    /// takes no place under the held requests' cap: a fleet's renewals must not be refused
    /// because clients follow events.
    fn at_once(&self, _method: &str, _path: &str) -> bool {
        false
    }

    /// Opens a held request: an ordinary answer at once (an error, or nothing to wait for), or a
    /// head at once and a body to pull. Called on the client connection's thread; it should not
    /// itself wait long, since the front checks for a departed client only between pulls.
    fn open(&self, request: &Request) -> Held;
}

/// What a held request is answered with.
pub enum Held {
    /// An ordinary answer, sent whole at once.
    Answer(Response),
    /// An answer whose body comes as it is made: the head is sent at once, then the body, chunked
    /// (HTTP/1.0: until the connection closes), each piece as it is pulled.
    Stream(Streamed),
}

/// The head of a streamed answer, and where its body comes from.
pub struct Streamed {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers beyond the content type and the framing.
    pub headers: Vec<(&'static str, String)>,
    pub body: Box<dyn BodySource>,
}

/// Where a streamed answer's body comes from. The front pulls it on the client connection's
/// thread, one piece at a time, and sends each piece before it pulls the next: a client slow to
/// read slows the pulls, never grows a buffer, and is cut off once a write has waited the front's
/// write timeout. Dropped when the answer ends, however it ends (the client gone included).
pub trait BodySource: Send {
    /// The next piece, waiting at most `wait` for one.
    fn next(&mut self, wait: Duration) -> Pulled;
}

/// One pull of a streamed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// Bytes to send now, as one chunk (an empty one sends nothing).
    Data(Vec<u8>),
    /// Nothing yet: the front checks that the client is still there and pulls again.
    Idle,
    /// The body is whole: the front ends it (and, for HTTP/1.1, keeps the connection).
    End,
}

/// How a larve serves: what the role says (threads, body limits, held requests) and what the
/// command line says (connection limits, TLS).
pub struct Settings {
    /// Who may make which request (see `auth.rs`).
    pub gate: Arc<Gate>,
    /// Handler threads.
    pub workers: usize,
    pub body_limits: BodyLimits,
    pub connections: ConnectionLimits,
    /// TLS for every connection; `None` serves plain HTTP.
    pub tls: Option<ServerTls>,
    /// Held requests served at once (normally [`front::max_held`] of the connections).
    pub max_held: usize,
}

/// What every handler thread shares.
struct Shared {
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
}

/// Binds `addr`, starts the front door (answering `held` requests itself), tiny_http and its
/// handler threads (calling `handler`), and returns the address actually bound (the real port when
/// `addr` asked for port 0). The threads serve for the life of the process.
pub fn start(
    addr: SocketAddr,
    settings: Settings,
    (handler, held): (Arc<Handler>, Arc<dyn HeldRoutes>),
    metrics: Arc<Metrics>,
) -> io::Result<SocketAddr> {
    let (front, backend) = Front::bind(
        addr,
        front::Settings {
            gate: settings.gate,
            connections: settings.connections,
            tls: settings.tls,
            body_limits: settings.body_limits,
            held,
            max_held: settings.max_held,
            upstream: settings.workers,
        },
    )?;
    let server =
        Arc::new(tiny_http::Server::from_listener(backend, None).map_err(io::Error::other)?);
    let shared = Arc::new(Shared {
        handler,
        metrics: metrics.clone(),
    });
    for _ in 0..settings.workers {
        let (server, shared) = (server.clone(), shared.clone());
        thread::Builder::new().name("http".into()).spawn(move || {
            loop {
                match server.recv() {
                    Ok(request) => serve(request, &shared),
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

fn serve(mut raw: tiny_http::Request, shared: &Shared) {
    // The front's ping, proving a new connection has a thread (see `front/upstream.rs`).
    if *raw.method() == Method::Options && raw.url() == "*" {
        let _ = raw.respond(tiny_http::Response::empty(204));
        return;
    }
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
    use parking_lot::Mutex;
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    /// Knows no credential: these tests call as clients of an open hive.
    struct NoKeys;

    impl crate::auth::Keyring for NoKeys {
        fn identify(&self, _: &str) -> Option<Identity> {
            None
        }
    }

    fn start_with(
        workers: usize,
        max_held: usize,
        handler: Arc<Handler>,
        held: Arc<dyn HeldRoutes>,
    ) -> (SocketAddr, Arc<Metrics>) {
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
            max_held,
        };
        let metrics = Arc::new(Metrics::default());
        let addr = start(
            "127.0.0.1:0".parse().unwrap(),
            settings,
            (handler, held),
            metrics.clone(),
        )
        .expect("start");
        (addr, metrics)
    }

    /// Holds nothing: every request is answered by the handler.
    struct NothingHeld;

    impl HeldRoutes for NothingHeld {
        fn holds(&self, _: &str, _: &str, _: &str) -> bool {
            false
        }

        fn open(&self, _: &Request) -> Held {
            unreachable!("nothing is held")
        }
    }

    fn ok_handler() -> Arc<Handler> {
        Arc::new(|_: &Request| Response::json(200, &serde_json::json!({ "result": "OK" })))
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
        let (addr, _) = start_with(2, 1, handler, Arc::new(NothingHeld));
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
        let (addr, _) = start_with(1, 1, handler, Arc::new(NothingHeld));
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

    /// Held requests for the tests, under `/held/`: `piped` streams what the test sends it,
    /// `idle` never ends, `flood` sends 64 KiB pieces without end, `short` sends "a", "b" and
    /// ends, `now` is answered at once. Counts the bodies alive and the bytes the floods made.
    #[derive(Default)]
    struct TestHeld {
        pipes: Mutex<Vec<mpsc::Receiver<Pulled>>>,
        alive: Arc<AtomicUsize>,
        flooded: Arc<AtomicUsize>,
    }

    struct TestBody {
        kind: String,
        pipe: Option<mpsc::Receiver<Pulled>>,
        script: Vec<Pulled>,
        alive: Arc<AtomicUsize>,
        flooded: Arc<AtomicUsize>,
    }

    impl BodySource for TestBody {
        fn next(&mut self, wait: Duration) -> Pulled {
            match self.kind.as_str() {
                "piped" => match self.pipe.as_ref().unwrap().recv_timeout(wait) {
                    Ok(pulled) => pulled,
                    Err(mpsc::RecvTimeoutError::Timeout) => Pulled::Idle,
                    Err(mpsc::RecvTimeoutError::Disconnected) => Pulled::End,
                },
                "flood" => {
                    self.flooded.fetch_add(64 * 1024, Ordering::Relaxed);
                    Pulled::Data(vec![b'x'; 64 * 1024])
                }
                "short" if !self.script.is_empty() => self.script.remove(0),
                "short" => Pulled::End,
                _ => {
                    thread::sleep(wait);
                    Pulled::Idle
                }
            }
        }
    }

    impl Drop for TestBody {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, Ordering::Relaxed);
        }
    }

    impl HeldRoutes for TestHeld {
        fn holds(&self, method: &str, path: &str, _: &str) -> bool {
            method == "GET" && path.starts_with("/held/")
        }

        fn open(&self, request: &Request) -> Held {
            let kind = request.path.trim_start_matches("/held/").to_string();
            if kind == "now" {
                return Held::Answer(Response::json(200, &serde_json::json!({ "now": true })));
            }
            self.alive.fetch_add(1, Ordering::Relaxed);
            let pipe = (kind == "piped").then(|| self.pipes.lock().remove(0));
            let script = vec![Pulled::Data(b"a".to_vec()), Pulled::Data(b"b".to_vec())];
            Held::Stream(Streamed {
                status: 200,
                content_type: "text/plain",
                headers: vec![("X-Held", kind.clone())],
                body: Box::new(TestBody {
                    kind,
                    pipe,
                    script,
                    alive: self.alive.clone(),
                    flooded: self.flooded.clone(),
                }),
            })
        }
    }

    /// Sends `GET path` in `version` on `stream`.
    fn ask(stream: &mut TcpStream, path: &str, version: &str) {
        let request = format!("GET {path} {version}\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
    }

    /// Reads from `stream` until what was read ends with `end` (or 5 s pass), and returns it.
    fn read_until(stream: &mut TcpStream, end: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut read = Vec::new();
        let mut chunk = [0u8; 4096];
        while !read.ends_with(end.as_bytes()) && Instant::now() < deadline {
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&read).into_owned()
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).expect("connect")
    }

    #[test]
    fn a_held_stream_is_delivered_chunk_by_chunk_as_it_is_made() {
        let held = Arc::new(TestHeld::default());
        let (pipe, piped) = mpsc::channel();
        held.pipes.lock().push(piped);
        let (addr, _) = start_with(1, 4, ok_handler(), held.clone());
        let mut stream = connect(addr);
        ask(&mut stream, "/held/piped", "HTTP/1.1");
        pipe.send(Pulled::Data(b"one\n".to_vec())).unwrap();
        let first = read_until(&mut stream, "4\r\none\n\r\n");
        assert!(
            first.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Held: piped\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none\n\r\n"),
            "the first piece arrives before the second is made: {first:?}"
        );
        pipe.send(Pulled::Data(b"two\n".to_vec())).unwrap();
        assert_eq!(read_until(&mut stream, "4\r\ntwo\n\r\n"), "4\r\ntwo\n\r\n");
        pipe.send(Pulled::End).unwrap();
        assert_eq!(read_until(&mut stream, "0\r\n\r\n"), "0\r\n\r\n");
        // The connection goes on, to requests held or not.
        ask(&mut stream, "/held/now", "HTTP/1.1");
        let now = read_until(&mut stream, "}\n");
        assert!(now.starts_with("HTTP/1.1 200 OK"), "{now}");
        assert!(now.contains("Content-Length: "), "{now}");
        ask(&mut stream, "/not-held", "HTTP/1.1");
        let plain = read_until(&mut stream, "}\n");
        assert!(plain.contains("\"result\": \"OK\""), "{plain}");
        assert_eq!(
            held.alive.load(Ordering::Relaxed),
            0,
            "the body was dropped"
        );
    }

    #[test]
    fn an_http_10_client_gets_a_body_that_ends_with_the_connection() {
        let (addr, _) = start_with(1, 4, ok_handler(), Arc::new(TestHeld::default()));
        let mut stream = connect(addr);
        ask(&mut stream, "/held/short", "HTTP/1.0");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("the whole answer, to the close");
        assert_eq!(
            answer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Held: short\r\nConnection: close\r\n\r\nab"
        );
    }

    #[test]
    fn a_held_request_whose_client_left_gives_its_place_back_within_a_second() {
        let held = Arc::new(TestHeld::default());
        let (addr, metrics) = start_with(1, 2, ok_handler(), held.clone());
        let head = "Transfer-Encoding: chunked\r\n\r\n";
        let waiting: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut stream = connect(addr);
                ask(&mut stream, "/held/idle", "HTTP/1.1");
                assert!(read_until(&mut stream, head).ends_with(head));
                stream
            })
            .collect();
        assert_eq!(metrics.front_held.get(), 2);
        let mut over = connect(addr);
        ask(&mut over, "/held/idle", "HTTP/1.1");
        let refused = read_until(&mut over, "}\n");
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("held"), "{refused}");
        let left = Instant::now();
        drop(waiting);
        let mut again = connect(addr);
        loop {
            ask(&mut again, "/held/idle", "HTTP/1.1");
            if read_until(&mut again, head).ends_with(head) {
                break;
            }
            assert!(
                left.elapsed() < Duration::from_secs(1),
                "no place given back"
            );
            thread::sleep(Duration::from_millis(20));
            again = connect(addr);
        }
        let took = left.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a place came back after {took:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        while held.alive.load(Ordering::Relaxed) > 1 {
            assert!(
                Instant::now() < deadline,
                "the departed clients' bodies were not dropped"
            );
            thread::sleep(Duration::from_millis(10));
        }
        assert!(metrics.front_held_refused.get() >= 1);
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_off_and_nothing_piles_up() {
        let held = Arc::new(TestHeld::default());
        let (addr, metrics) = start_with(1, 4, ok_handler(), held.clone());
        let mut stream = connect(addr);
        ask(&mut stream, "/held/flood", "HTTP/1.1");
        // Reads nothing: once the kernel's buffers are full, the front waits its write timeout.
        let deadline = Instant::now() + front::WRITE_TIMEOUT + Duration::from_secs(10);
        while held.flooded.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the flood never began");
            thread::sleep(Duration::from_millis(10));
        }
        while held.alive.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "the reader was never cut off");
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(metrics.front_held_cut.get(), 1);
        let flooded = held.flooded.load(Ordering::Relaxed);
        assert!(
            flooded <= 32 << 20,
            "{flooded} bytes made for a client that read none: more than the socket buffers hold"
        );
        drop(stream);
    }
}
