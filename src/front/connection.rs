//! One client connection, on a thread of its own from accept to close: the TLS handshake, then
//! each request in turn (head, body, the answer) until the client closes, goes quiet or breaks a
//! limit.
//!
//! What a client can make this thread do is bounded at every step: the handshake and each head
//! must be complete by [`HEAD_DEADLINE`] (a keep-alive connection's wait for its next request
//! counts too), a head is at most [`MAX_HEAD_BYTES`], a body is within its path's limits (see
//! `body.rs`), and an answer the client does not read is abandoned after [`WRITE_TIMEOUT`].
//! Whatever the front refuses it answers itself, as JSON, and then closes the connection: after a
//! broken head it cannot know where the next request would start.
//!
//! An ordinary request goes to the server (`upstream.rs`); a held one (its answer waits or
//! streams) is answered here, on this thread (`held.rs`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::debug;
use rustls::{ServerConnection, StreamOwned};

use super::Shared;
use super::answer;
use super::body::{BodyError, Expected};
use super::head::{self, Head, PEER_FIELD};
use super::held::{self, Manner};
use super::input::{Input, ReadError, Source};
use super::upstream::UpstreamError;
use crate::auth::{IDENTITY_FIELD, Identity};
use crate::error::Error;
use crate::server::Request;

/// Largest request head (request line and fields): what nginx takes by default (four buffers of
/// 8 KiB), a hundred times what Hive's own clients send. Every byte of a head is read before the
/// front can refuse it, so the limit is also what a client can make the front read for nothing:
/// at 64 KiB, a thousand connections sending header lines without end kept a two-core machine busy
/// enough to slow everyone else's answers to about 100 ms; at 32 KiB, to under 50 ms.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Time for a request's head to arrive in full, from when the front starts waiting for it (so it
/// also ends an idle keep-alive connection, and covers the TLS handshake of a new one).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// Longest one write to a client may wait for the client to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After refusing a body, how long (and how much of it) the front reads and throws away before it
/// closes. Most clients send a whole body before reading any answer; closing on unread bytes would
/// reset the connection, and the client would see the reset, never the 413.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The most one read takes while lingering: what the input's buffer first holds.
const LINGER_READ_BYTES: usize = super::input::FIRST_CAPACITY_BYTES;

/// What a client connection carries: bytes as they are, or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    /// The parts in one write, as the socket takes them (a streamed answer's chunk: its size line,
    /// its data and its end).
    fn write_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write_vectored(parts),
            // rustls' owned stream writes the first part alone; its borrowed one takes them all.
            Stream::Tls(tls) => {
                let tls = &mut **tls;
                rustls::Stream::new(&mut tls.conn, &mut tls.sock).write_vectored(parts)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

impl Source for Stream {
    fn limit_reads(&mut self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_read_timeout(Some(timeout))
    }
}

impl Source for TcpStream {
    fn limit_reads(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl Source for &TcpStream {
    fn limit_reads(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))
    }
}

impl held::Client for Stream {
    fn gone(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.tcp().as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the length of the call, which does not wait.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    fn limit_writes(&mut self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_write_timeout(Some(timeout))
    }
}

/// Serves the connection `tcp` from `peer` until it ends.
pub fn serve(tcp: TcpStream, peer: SocketAddr, front: &Shared) {
    let configured = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| tcp.set_read_timeout(Some(HEAD_DEADLINE)));
    if configured.is_err() {
        return;
    }
    let first_deadline = Instant::now() + HEAD_DEADLINE;
    let mut input = Input::new(HEAD_DEADLINE);
    let stream = match &front.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match handshake(tcp, tls.config.clone(), &mut input, first_deadline) {
            Ok(stream) => stream,
            Err(why) => {
                front.metrics.front_tls_handshakes_failed.inc();
                debug!("TLS handshake with {peer} failed: {why}");
                return;
            }
        },
    };
    Connection {
        stream,
        input,
        peer,
        front,
        head: String::new(),
        request: Vec::new(),
        body: Vec::new(),
        answer: Vec::new(),
    }
    .run(first_deadline);
}

/// Completes the TLS handshake on `tcp` by `deadline`.
fn handshake(
    mut tcp: TcpStream,
    config: std::sync::Arc<rustls::ServerConfig>,
    input: &mut Input,
    deadline: Instant,
) -> Result<Stream, String> {
    let mut tls = ServerConnection::new(config).map_err(|e| e.to_string())?;
    while tls.is_handshaking() {
        input
            .wait_until(&mut tcp, deadline)
            .map_err(|_| "it did not finish in time".to_string())?;
        match tls.complete_io(&mut tcp) {
            // Nothing moved: the client closed the connection.
            Ok((0, 0)) => return Err("the client closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(tls, tcp))))
}

/// A client connection being served, and the buffers its requests reuse.
struct Connection<'a> {
    stream: Stream,
    input: Input,
    peer: SocketAddr,
    front: &'a Shared,
    /// Room for the next request's head.
    head: String,
    /// The request as sent to the server.
    request: Vec<u8>,
    body: Vec<u8>,
    /// The server's answer.
    answer: Vec<u8>,
}

/// How one request went, for the connection.
enum Next {
    /// Wait for the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

impl Connection<'_> {
    fn run(mut self, first_deadline: Instant) {
        let mut deadline = first_deadline;
        loop {
            if self
                .input
                .restore_timeout(&mut self.stream, HEAD_DEADLINE)
                .is_err()
            {
                return;
            }
            let next = match self.read_head(deadline) {
                Ok(Some(head)) => {
                    let next = self.serve(&head);
                    self.head = head.into_buffer();
                    next
                }
                Ok(None) => Next::Close,
                Err(error) => {
                    if matches!(error, Error::HeadTooLarge(_)) {
                        self.front.metrics.front_heads_too_large.inc();
                    }
                    self.refuse("", &error);
                    Next::Close
                }
            };
            if let Next::Close = next {
                self.close();
                return;
            }
            deadline = Instant::now() + HEAD_DEADLINE;
        }
    }

    /// The next request's head; `None` when the client closes, or stays silent until `deadline`,
    /// between requests.
    fn read_head(&mut self, deadline: Instant) -> Result<Option<Head>, Error> {
        let mut looked = 0;
        loop {
            if let Some(end) = head::end(self.input.data(), looked) {
                let buffer = std::mem::take(&mut self.head);
                let parsed = head::parse(&self.input.data()[..end], buffer);
                self.input.consume(end);
                return parsed.map(Some);
            }
            looked = self.input.data().len();
            if looked >= MAX_HEAD_BYTES {
                return Err(Error::HeadTooLarge(MAX_HEAD_BYTES));
            }
            match self.input.fill(&mut self.stream, deadline, MAX_HEAD_BYTES) {
                Ok(_) => {}
                Err(ReadError::TimedOut) if started(self.input.data()) => {
                    return Err(Error::RequestTimeout);
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Asks the gate whether the request `head` opens may be made (before a byte of its body is
    /// read), takes a held request's place, reads the body, and has the request answered.
    fn serve(&mut self, head: &Head) -> Next {
        let front = self.front;
        let path = head.path();
        let identity = match front.gate.admit(
            head.method(),
            path,
            head.authorization.as_deref(),
            Some(self.peer),
        ) {
            Ok(identity) => identity,
            Err(refusal) => return self.refuse_unread(path, &refusal),
        };
        let held = front.held.holds(head.method(), path, head.query());
        let waits = held && !front.held.at_once(head.method(), path);
        let place = match waits.then(|| front.holding.enter(&front.metrics)) {
            None => None,
            Some(Some(place)) => Some(place),
            Some(None) => {
                let busy = Error::Busy("as many requests are held as the larve serves".into());
                return self.refuse_unread(path, &busy);
            }
        };
        let limit = front.body_limits.for_path(path);
        let Ok(expected) = Expected::new(head.framing, limit) else {
            return self.refuse_body(path, limit);
        };
        if head.expect_continue
            && self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| self.stream.flush())
                .is_err()
        {
            return Next::Close;
        }
        match expected.read(&mut self.input, &mut self.stream, &mut self.body) {
            Ok(()) => {}
            Err(BodyError::TooLarge) => return self.refuse_body(path, limit),
            Err(BodyError::TimedOut) => {
                self.refuse(path, &Error::RequestTimeout);
                return Next::Close;
            }
            Err(BodyError::Malformed(why)) => {
                let error = Error::BadRequest(format!("malformed chunked body: {why}"));
                self.refuse(path, &error);
                return Next::Close;
            }
            Err(BodyError::Gone) => return Next::Close,
        }
        if held {
            let _place = place;
            self.answer_held(head, identity)
        } else {
            self.forward(head, &identity)
        }
    }

    /// Answers a held request from `identity` on this thread (see `held.rs`).
    fn answer_held(&mut self, head: &Head, identity: Identity) -> Next {
        let request = Request {
            method: head.method().to_string(),
            path: head.path().to_string(),
            query: head.query().to_string(),
            identity,
            peer: Some(self.peer),
            body: std::mem::take(&mut self.body),
        };
        let manner = Manner {
            no_body: head.is_head(),
            close: head.close,
            http10: head.http10,
        };
        let ended = held::answer(
            &mut self.stream,
            self.front.held.as_ref(),
            &request,
            manner,
            WRITE_TIMEOUT,
            &self.front.metrics,
            &mut self.answer,
        );
        self.body = request.body;
        let restored = self
            .stream
            .tcp()
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .is_ok();
        if ended == held::Ended::Whole && restored && !head.close {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }

    /// Has the server answer the request from `identity`, and passes the answer on.
    fn forward(&mut self, head: &Head, identity: &Identity) -> Next {
        let request = &mut self.request;
        request.clear();
        request.extend_from_slice(head.upstream());
        // Writing to a Vec cannot fail.
        let _ = write!(
            request,
            "{PEER_FIELD}: {}\r\n{IDENTITY_FIELD}: {}\r\nContent-Length: {}\r\n\r\n",
            self.peer,
            identity.to_field(),
            self.body.len()
        );
        request.extend_from_slice(&self.body);
        let answer = self
            .front
            .upstream
            .exchange(&self.request, head.is_head(), &mut self.answer);
        let answer = match answer {
            Ok(answer) => answer,
            Err(UpstreamError::Busy(why)) => {
                self.refuse(head.path(), &Error::Busy(why.into()));
                return Next::Close;
            }
            Err(UpstreamError::Failed(why)) => {
                log::error!("the server behind the front failed: {why}");
                let error = Error::Internal("the server could not answer".into());
                self.refuse(head.path(), &error);
                return Next::Close;
            }
        };
        let sent = if head.close {
            // The server's head, then the front's word that the connection closes.
            let mut closing = Vec::with_capacity(answer.len + CLOSE_FIELD.len());
            closing.extend_from_slice(&self.answer[..answer.head - 2]);
            closing.extend_from_slice(CLOSE_FIELD);
            closing.extend_from_slice(&self.answer[answer.head..answer.len]);
            self.send(&closing)
        } else {
            let whole = &self.answer[..answer.len];
            self.stream
                .write_all(whole)
                .and_then(|()| self.stream.flush())
        };
        match sent {
            Ok(()) if !head.close => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Answers `error` for a request to `path` (empty when the head could not be read), counts it,
    /// and says the connection closes.
    fn refuse(&mut self, path: &str, error: &Error) {
        self.front.metrics.request(path, error.status());
        let _ = self.send(&answer::refusal(error));
    }

    /// Answers `error` to a request whose body, if one comes, is not read: the connection cannot
    /// go on.
    fn refuse_unread(&mut self, path: &str, error: &Error) -> Next {
        self.refuse(path, error);
        self.shut_writes();
        self.linger();
        Next::Close
    }

    /// Reads and throws away what the client still sends, for up to [`LINGER`] and
    /// [`LINGER_MAX_BYTES`] (see there), before the connection is closed. Through the input's
    /// buffer, which the head needed anyway: a scratch buffer of its own (on the stack or not)
    /// would cost every refused connection more, and two thousand refused at once add up.
    fn linger(&mut self) {
        let deadline = Instant::now() + LINGER;
        let mut tcp = self.stream.tcp();
        let mut thrown = 0;
        while thrown < LINGER_MAX_BYTES {
            let Ok(n) = self.input.fill(&mut tcp, deadline, LINGER_READ_BYTES) else {
                return;
            };
            thrown += n;
            self.input.consume(self.input.data().len());
        }
    }

    /// Answers 413 to a request whose body is over `limit`, without reading the body.
    fn refuse_body(&mut self, path: &str, limit: usize) -> Next {
        self.front.metrics.front_bodies_refused.inc();
        self.refuse_unread(path, &Error::PayloadTooLarge(limit))
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Ends what this side sends: TLS's close_notify, then TCP's FIN.
    fn shut_writes(&mut self) {
        if let Stream::Tls(tls) = &mut self.stream {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        let _ = self.stream.tcp().shutdown(Shutdown::Write);
    }

    fn close(mut self) {
        self.shut_writes();
    }
}

/// The field the front adds to an answer when the connection closes after it.
const CLOSE_FIELD: &[u8] = b"Connection: close\r\n\r\n";

/// Whether a request has begun in `data`: anything but the empty lines a client may send between
/// requests.
fn started(data: &[u8]) -> bool {
    data.iter().any(|&b| b != b'\r' && b != b'\n')
}
