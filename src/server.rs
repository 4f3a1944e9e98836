//! The HTTP server: tiny_http underneath, plain owned requests and responses above.
//!
//! A fixed pool of handler threads calls `recv()`; each turns the tiny_http request into a
//! [`Request`] (body read and size-checked), calls the role's handler inside `catch_unwind`, and
//! writes the [`Response`]. So handlers are plain functions, testable without sockets, and a panic
//! in one answers 500 instead of shrinking the pool.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, warn};
use parking_lot::Mutex;
use serde::Serialize;
use tiny_http::{Header, StatusCode};

use crate::error::Error;
use crate::listener::Listener;

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

/// Longest time one request body may take to arrive, however it trickles in.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Threads that read bodies tiny_http has not already buffered (over 1 KiB, chunked, or sent after
/// `Expect: 100-continue`). They wait on the client, so they are kept apart from the handler pool:
/// slow clients queue up here while `/healthz` and small requests are answered as usual.
pub const BODY_THREADS: usize = 16;

/// Binds `addr`, starts `workers` handler threads and returns the address actually bound (the real
/// port when `addr` asked for port 0). The threads serve for the life of the process.
pub fn start(addr: SocketAddr, workers: usize, handler: Arc<Handler>) -> io::Result<SocketAddr> {
    let listener = Arc::new(Listener::bind(addr)?);
    let local = listener.local_addr()?;
    let watched = listener.clone();
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
        let (listener, handler, parked) = (listener.clone(), handler.clone(), parked.clone());
        let body_queue = body_queue.clone();
        thread::Builder::new().name("http".into()).spawn(move || {
            listener.each_request(|request| match intake(&request) {
                Intake::Buffered => serve(request, handler.as_ref(), &parked),
                // Cannot fail: the body threads live as long as this sender.
                Intake::OnSocket => drop(body_queue.send(request)),
                Intake::Upgrade => refuse(
                    request,
                    &Error::BadRequest("Connection: upgrade is not supported".into()),
                ),
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

fn intake(request: &tiny_http::Request) -> Intake {
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_ascii_lowercase())
    };
    if header("Connection").is_some_and(|value| value.contains("upgrade")) {
        return Intake::Upgrade;
    }
    if header("Transfer-Encoding").is_some() {
        return Intake::OnSocket;
    }
    match request.body_length() {
        None | Some(0) => Intake::Buffered,
        Some(length) if length <= 1024 && header("Expect").is_none() => Intake::Buffered,
        Some(_) => Intake::OnSocket,
    }
}

/// Answers a request without reading its body.
fn refuse(raw: tiny_http::Request, error: &Error) {
    let response = Response::error(error);
    let answer = tiny_http::Response::from_data(response.body)
        .with_status_code(StatusCode(response.status))
        .with_header(json_header());
    if let Err(e) = raw.respond(answer) {
        warn!("could not send a response: {e}");
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
/// after [`crate::listener::SOCKET_TIMEOUT`] without data, so a client that stops sending cannot hold the thread.
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
