//! Held requests: the requests whose answer waits or streams (`server::HeldRoutes` says which),
//! served on the client connection's own thread instead of through tiny_http. (A role may name a
//! short, frequent request too, a queen's lease renewal: its answer is sent at once, and it takes
//! no place under the cap below.)
//!
//! A tiny_http handler cannot learn that its client has left: a long poll whose client closed
//! held a handler thread (and a place under the long polls' cap) for the whole wait, for nobody.
//! The front can: it owns the client's socket. So for a held request it asks the role to open it,
//! sends the answer's head, and then pulls the body from the role in pieces, each pull waiting at
//! most [`PULL_WAIT`], sending each piece before it pulls the next, and between pulls it looks
//! whether the client has gone (the peer closed or shut down its side, which `poll` reports as
//! `POLLRDHUP`). A departed client frees its place within a pull's wait.
//!
//! What a held request can make the larve spend is bounded like the rest of the front's work: one
//! piece in memory at a time, each write within the write timeout (a reader too slow is cut off,
//! counted in `hive_front_held_cut_total`), and at most [`max_held`] held requests at once, a
//! place taken before the request's body is read (past it: 503). Each holds the connection's
//! thread, which exists anyway.
//!
//! A streamed body is chunked; an HTTP/1.0 client, which knows no chunks, gets it until the
//! connection closes.

use std::io::{self, IoSlice, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{debug, error};

use super::answer::{self, Framing, LAST_CHUNK};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::server::{Held, HeldRoutes, Pulled, Request, Response, Streamed};

/// Longest one pull of a held answer's body waits for a piece, and so how long a client that has
/// gone keeps its place at most (plus the time to look).
pub const PULL_WAIT: Duration = Duration::from_millis(500);

/// Held requests a larve serves at once: three quarters of the connections it takes
/// (`--max-connections`), so ordinary requests always keep a quarter. A thousand clients following
/// a queen's events fit under the default.
pub fn max_held(max_connections: usize) -> usize {
    max_connections / 4 * 3
}

/// The held requests being served, under their cap.
pub struct Holding {
    open: AtomicUsize,
    max: usize,
}

/// A held request's place under the cap, given back when dropped.
pub struct Place<'a> {
    holding: &'a Holding,
    metrics: &'a Metrics,
}

impl Holding {
    pub fn new(max: usize) -> Holding {
        Holding {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more held request, or `None` when the cap is reached (counted).
    pub fn enter<'a>(&'a self, metrics: &'a Metrics) -> Option<Place<'a>> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            metrics.front_held_refused.inc();
            return None;
        }
        metrics.front_held.inc();
        Some(Place {
            holding: self,
            metrics,
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.holding.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.front_held.dec();
    }
}

/// The client connection a held answer is written to.
pub trait Client: Write {
    /// Whether the client has gone: it closed the connection or shut down its side (what a read
    /// of zero bytes would say), or the connection broke. Looks without waiting.
    fn gone(&self) -> bool;

    /// Makes each write wait at most `timeout` for the client to read.
    fn limit_writes(&mut self, timeout: Duration) -> io::Result<()>;
}

/// How the request asks to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manner {
    /// A `HEAD` request: the head only.
    pub no_body: bool,
    /// The connection closes after this answer.
    pub close: bool,
    /// An HTTP/1.0 client: no chunked body.
    pub http10: bool,
}

/// How a held answer ended, for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Sent whole: the connection may serve its next request.
    Whole,
    /// Cut off: the client left or did not read in time, or the body broke off. The connection
    /// cannot go on.
    Cut,
}

/// Answers the held `request` on `client`: opens it with `routes`, sends the answer, and pulls a
/// streamed body until it ends or the client goes. Every write must be done within
/// `write_timeout`; `buffer` is room for a chunk's size line.
pub fn answer(
    client: &mut impl Client,
    routes: &dyn HeldRoutes,
    request: &Request,
    manner: Manner,
    write_timeout: Duration,
    metrics: &Metrics,
    buffer: &mut Vec<u8>,
) -> Ended {
    let held =
        panic::catch_unwind(AssertUnwindSafe(|| routes.open(request))).unwrap_or_else(|_| {
            // The panic hook has logged the message.
            error!(
                "a held request's handler panicked on {} {}",
                request.method, request.path
            );
            Held::Answer(Response::error(&Error::Internal(
                "the request could not be handled".into(),
            )))
        });
    match held {
        Held::Answer(response) => {
            metrics.request(&request.path, response.status);
            let bytes = answer::whole(&response, manner.no_body, manner.close);
            match write_by(
                client,
                &mut [IoSlice::new(&bytes)],
                Instant::now() + write_timeout,
            ) {
                Ok(()) => Ended::Whole,
                Err(_) => Ended::Cut,
            }
        }
        Held::Stream(streamed) => {
            metrics.request(&request.path, streamed.status);
            let ended = stream(client, streamed, manner, write_timeout, buffer);
            if ended == Err(Cutoff::TooSlow) {
                metrics.front_held_cut.inc();
                debug!(
                    "cut off a client too slow to read {} {}",
                    request.method, request.path
                );
            }
            ended.map_or(Ended::Cut, |()| Ended::Whole)
        }
    }
}

/// Why a streamed answer was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    /// The client did not take a piece within the write timeout.
    TooSlow,
    /// The client has gone, or its connection failed.
    Gone,
    /// The body's source panicked.
    Broken,
}

/// Sends `streamed`'s head, then its body piece by piece as it is pulled.
fn stream(
    client: &mut impl Client,
    streamed: Streamed,
    manner: Manner,
    write_timeout: Duration,
    buffer: &mut Vec<u8>,
) -> Result<(), Cutoff> {
    let framing = if manner.http10 {
        Framing::UntilClose
    } else {
        Framing::Chunked
    };
    let Streamed {
        status,
        content_type,
        headers,
        mut body,
    } = streamed;
    let head = answer::head(status, content_type, &headers, framing, manner.close);
    send(client, &mut [IoSlice::new(&head)], write_timeout)?;
    if manner.no_body {
        return Ok(());
    }
    loop {
        let pulled = panic::catch_unwind(AssertUnwindSafe(|| body.next(PULL_WAIT)));
        match pulled {
            Ok(Pulled::Data(data)) if !data.is_empty() => {
                // The piece is sent as it came, framed around, never copied: a thousand streams
                // keep no second copy of their pieces.
                buffer.clear();
                if framing == Framing::Chunked {
                    answer::chunk_size_line(data.len(), buffer);
                    let parts = &mut [
                        IoSlice::new(buffer),
                        IoSlice::new(&data),
                        IoSlice::new(answer::CHUNK_END),
                    ];
                    send(client, parts, write_timeout)?;
                } else {
                    send(client, &mut [IoSlice::new(&data)], write_timeout)?;
                }
            }
            Ok(Pulled::Data(_) | Pulled::Idle) => {}
            Ok(Pulled::End) => {
                if framing == Framing::Chunked {
                    send(client, &mut [IoSlice::new(LAST_CHUNK)], write_timeout)?;
                }
                return Ok(());
            }
            Err(_) => {
                error!("the body of a held answer broke off: its source panicked");
                return Err(Cutoff::Broken);
            }
        }
        if client.gone() {
            return Err(Cutoff::Gone);
        }
    }
}

/// Writes `parts`, one after the other, within `write_timeout`, and says why not.
fn send(
    client: &mut impl Client,
    parts: &mut [IoSlice<'_>],
    write_timeout: Duration,
) -> Result<(), Cutoff> {
    write_by(client, parts, Instant::now() + write_timeout).map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            Cutoff::TooSlow
        } else {
            Cutoff::Gone
        }
    })
}

/// Writes all of `parts` (in as few writes as the client takes) and flushes them by `deadline`:
/// each write may wait only as long as is left, so a client that reads a byte now and then cannot
/// stretch one piece for ever.
fn write_by(
    client: &mut impl Client,
    mut parts: &mut [IoSlice<'_>],
    deadline: Instant,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        client.limit_writes(left)?;
        if parts.is_empty() {
            return client.flush();
        }
        match client.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::BodySource;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A client in memory: what it was sent; it leaves (or stops reading) after `reads` writes.
    struct Fake {
        sent: Vec<u8>,
        writes: usize,
        leaves_after: Option<usize>,
        stops_reading_after: Option<usize>,
        looked: usize,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                sent: Vec::new(),
                writes: 0,
                leaves_after: None,
                stops_reading_after: None,
                looked: 0,
            }
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.sent).into_owned()
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.stops_reading_after.is_some_and(|n| self.writes >= n) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.writes += 1;
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }

        /// As a socket does: every part in one write.
        fn write_vectored(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
            let all: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
            self.write(&all)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Client for Fake {
        fn gone(&self) -> bool {
            self.leaves_after.is_some_and(|n| self.looked >= n)
        }

        fn limit_writes(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    /// A body of scripted pulls, then idle for ever; counts its pulls and says when it is dropped.
    struct Script {
        pulls: Vec<Pulled>,
        pulled: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl BodySource for Script {
        fn next(&mut self, _: Duration) -> Pulled {
            self.pulled.fetch_add(1, Ordering::Relaxed);
            if self.pulls.is_empty() {
                Pulled::Idle
            } else {
                self.pulls.remove(0)
            }
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    struct Routes(parking_lot::Mutex<Option<Script>>);

    impl HeldRoutes for Routes {
        fn holds(&self, _: &str, _: &str, _: &str) -> bool {
            true
        }

        fn open(&self, _: &Request) -> Held {
            let script = self.0.lock().take().expect("opened once");
            Held::Stream(Streamed {
                status: 200,
                content_type: "text/plain",
                headers: Vec::new(),
                body: Box::new(script),
            })
        }
    }

    /// Serves one held request whose body pulls `pulls`; returns how it ended, the pulls made and
    /// whether the body was dropped.
    fn serve(client: &mut Fake, pulls: Vec<Pulled>, manner: Manner) -> (Ended, usize, bool) {
        let pulled = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let routes = Routes(parking_lot::Mutex::new(Some(Script {
            pulls,
            pulled: pulled.clone(),
            dropped: dropped.clone(),
        })));
        let request = Request {
            method: "GET".into(),
            path: "/events".into(),
            query: String::new(),
            identity: crate::auth::Identity::Anonymous,
            peer: None,
            body: Vec::new(),
        };
        let ended = answer(
            client,
            &routes,
            &request,
            manner,
            Duration::from_secs(1),
            &Metrics::default(),
            &mut Vec::new(),
        );
        (
            ended,
            pulled.load(Ordering::Relaxed),
            dropped.load(Ordering::Relaxed),
        )
    }

    const KEEP: Manner = Manner {
        no_body: false,
        close: false,
        http10: false,
    };

    fn data(text: &str) -> Pulled {
        Pulled::Data(text.as_bytes().to_vec())
    }

    #[test]
    fn a_streamed_body_is_sent_chunk_by_chunk_and_ended() {
        let mut client = Fake::new();
        let pulls = vec![
            data("one\n"),
            Pulled::Idle,
            data(""),
            data("two\n"),
            Pulled::End,
        ];
        let (ended, pulled, dropped) = serve(&mut client, pulls, KEEP);
        assert_eq!((ended, pulled, dropped), (Ended::Whole, 5, true));
        assert_eq!(
            client.text(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
             4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n"
        );
        assert_eq!(client.writes, 4, "the head, each piece as it came, the end");
    }

    #[test]
    fn an_http_10_client_gets_the_body_until_the_connection_closes() {
        let mut client = Fake::new();
        let manner = Manner {
            close: true,
            http10: true,
            ..KEEP
        };
        let (ended, _, _) = serve(&mut client, vec![data("a"), data("b"), Pulled::End], manner);
        assert_eq!(ended, Ended::Whole);
        assert_eq!(
            client.text(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nab"
        );
    }

    #[test]
    fn a_client_that_has_gone_stops_the_pulls() {
        let mut client = Fake {
            leaves_after: Some(0),
            ..Fake::new()
        };
        // The client is seen gone after the first pull: no second one is made.
        let (ended, pulled, dropped) = serve(&mut client, Vec::new(), KEEP);
        assert_eq!((ended, pulled, dropped), (Ended::Cut, 1, true));
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_off_and_nothing_piles_up() {
        let mut client = Fake {
            stops_reading_after: Some(3),
            ..Fake::new()
        };
        let endless = (0..1000).map(|_| data("more")).collect();
        let (ended, pulled, dropped) = serve(&mut client, endless, KEEP);
        assert_eq!(ended, Ended::Cut);
        assert_eq!(pulled, 3, "no piece is pulled before the last one is sent");
        assert!(dropped);
    }

    #[test]
    fn a_head_request_gets_the_head_and_no_pull() {
        let mut client = Fake::new();
        let manner = Manner {
            no_body: true,
            ..KEEP
        };
        let (ended, pulled, _) = serve(&mut client, vec![data("x"), Pulled::End], manner);
        assert_eq!((ended, pulled), (Ended::Whole, 0));
        assert!(
            client.text().ends_with("chunked\r\n\r\n"),
            "{}",
            client.text()
        );
    }

    #[test]
    fn held_requests_are_capped_and_give_their_place_back() {
        let metrics = Metrics::default();
        let holding = Holding::new(2);
        let first = holding.enter(&metrics).expect("a place");
        let second = holding.enter(&metrics).expect("a place");
        assert!(holding.enter(&metrics).is_none(), "past the cap");
        assert_eq!(metrics.front_held.get(), 2);
        assert_eq!(metrics.front_held_refused.get(), 1);
        drop(first);
        let third = holding.enter(&metrics).expect("a place given back");
        drop((second, third));
        assert_eq!(metrics.front_held.get(), 0);
        assert_eq!(max_held(2048), 1536);
    }
}
