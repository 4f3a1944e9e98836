//! The HTTP server: tiny_http underneath, plain owned requests and responses above.
//!
//! A fixed pool of handler threads calls `recv()`; each turns the tiny_http request into a
//! [`Request`] (body read and size-checked), calls the role's handler inside `catch_unwind`, and
//! writes the [`Response`]. So handlers are plain functions, testable without sockets, and a panic
//! in one answers 500 instead of shrinking the pool.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

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

/// Binds `addr`, starts `workers` handler threads and returns the address actually bound (the real
/// port when `addr` asked for port 0). The threads serve for the life of the process.
pub fn start(addr: SocketAddr, workers: usize, handler: Arc<Handler>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
    let server = Arc::new(server);
    let parked = Arc::new(AtomicUsize::new(0));
    for _ in 0..workers {
        let server = Arc::clone(&server);
        let handler = Arc::clone(&handler);
        let parked = Arc::clone(&parked);
        thread::Builder::new().name("http".into()).spawn(move || {
            loop {
                match server.recv() {
                    Ok(request) => serve(request, handler.as_ref(), &parked),
                    Err(e) => error!("the HTTP listener failed: {e}"),
                }
            }
        })?;
    }
    Ok(local)
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
    let too_large = Error::PayloadTooLarge(MAX_BODY_BYTES);
    if raw.body_length().unwrap_or(0) > MAX_BODY_BYTES {
        return Err(too_large);
    }
    let mut body = Vec::new();
    raw.as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large);
    }
    let url = raw.url();
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    Ok(Request {
        method: raw.method().as_str().to_ascii_uppercase(),
        path: path.to_string(),
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
