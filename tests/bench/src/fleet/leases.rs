//! The fleet's drones that renew leases, as a Hive drone does (`src/drone/lease.rs`): registered
//! with `"renews": true`, then `POST /lease` with their credential every interval × a factor in
//! [0.7, 0.9); a 401 or 404 registers again at once, a 421 renews with the leader it names, and
//! anything else moves to the next queen, pausing (doubling, at most half an interval) after each
//! round of them. A few threads renew for thousands of drones, each call a blocking one on a
//! connection of its own (`Connection: close`), with a limit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Limit for one call (a registration or a renewal), connect and answer together.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Renewals go after the interval times a factor drawn from [MIN_JITTER, MAX_JITTER): a Hive
/// drone's.
const MIN_JITTER: f64 = 0.7;
const MAX_JITTER: f64 = 0.9;

/// First pause after a round of queens failed, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// 421s followed in a row before the drone counts it as a failure.
const MAX_REDIRECTS: u32 = 2;

/// Longest a renewing thread sleeps, so a stop is seen within it.
const NAP: Duration = Duration::from_millis(100);

/// Largest answer read from a queen.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the renewing drones did, counted.
#[derive(Default)]
pub struct Renewals {
    pub renewed: AtomicU64,
    /// 421s followed to the leader.
    pub redirected: AtomicU64,
    /// Registrations again after a queen said she did not know the drone.
    pub registered_again: AtomicU64,
    /// Renewals that failed (no answer, or an answer other than 2xx, 401, 404, 421).
    pub failed: AtomicU64,
    /// Renewals started [`LATE_START`] or more after they were due (the renewing thread was
    /// behind), and calls that took that long: what makes a lease late at the queen.
    pub started_late: AtomicU64,
    pub slow_calls: AtomicU64,
}

/// What counts as a renewal started late, or a slow call: a tenth of the default interval, the
/// margin a renewal has before its lease is late.
const LATE_START: Duration = Duration::from_secs(1);

/// One drone that renews.
pub struct Lease {
    pub address: String,
    boot: String,
    credential: String,
    queens: Vec<String>,
    /// The queen of `queens` it talks to, and where it sends renewals (the leader, after a 421).
    current: usize,
    target: String,
    after: Option<u64>,
    interval: Duration,
    backoff: Duration,
    redirects: u32,
    /// Queens tried since the last renewal that worked.
    tried: usize,
}

impl Lease {
    /// A drone at `address` with boot id `boot`, not yet registered, that will talk to
    /// `queens[first]` first.
    pub fn new(address: &str, boot: &str, queens: &[String], first: usize) -> Lease {
        Lease {
            address: address.to_string(),
            boot: boot.to_string(),
            credential: String::new(),
            queens: queens.to_vec(),
            current: first % queens.len(),
            target: queens[first % queens.len()].clone(),
            after: None,
            interval: Duration::from_secs(10),
            backoff: FIRST_BACKOFF,
            redirects: 0,
            tried: 0,
        }
    }

    /// Registers with its current queen, as a Hive drone does; keeps the credential and interval.
    pub fn register(&mut self) -> Result<(), String> {
        let queen = self.queens[self.current].clone();
        let body = json!({
            "address": self.address,
            "boot": self.boot,
            "exec": false,
            "slots": 0,
            "renews": true,
        });
        let (status, answer) = call(&queen, "/register", None, &body)
            .map_err(|e| format!("POST {queen}/register: {e}"))?;
        if status != 200 {
            return Err(format!("POST {queen}/register: HTTP {status}"));
        }
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("POST {queen}/register: not JSON: {e}"))?;
        self.credential = answer["credential"]
            .as_str()
            .ok_or_else(|| format!("POST {queen}/register: no credential in {answer}"))?
            .to_string();
        let interval = answer["lease_interval"]
            .as_f64()
            .ok_or_else(|| format!("POST {queen}/register: no lease_interval in {answer}"))?;
        self.interval = Duration::from_secs_f64(interval);
        self.target = queen;
        self.after = None;
        Ok(())
    }

    /// One renewal started at `now`; when the next is due.
    fn renew(&mut self, now: Instant, renewals: &Renewals) -> Instant {
        let mut body = json!({
            "boot": self.boot,
            "exec": false,
            "slots": 0,
            "used": 0,
            "running": [],
            "ended": [],
        });
        if let Some(after) = self.after {
            body["after"] = json!(after);
        }
        let bearer = format!("Bearer {}", self.credential);
        match call(&self.target, "/lease", Some(&bearer), &body) {
            Ok((200, answer)) => {
                let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
                self.after = answer["renewal"].as_u64();
                (self.redirects, self.tried, self.backoff) = (0, 0, FIRST_BACKOFF);
                renewals.renewed.fetch_add(1, Ordering::Relaxed);
                return now + jittered(self.interval);
            }
            Ok((401 | 404, _)) => {
                renewals.registered_again.fetch_add(1, Ordering::Relaxed);
                if self.register().is_ok() {
                    return Instant::now() + jittered(self.interval);
                }
            }
            Ok((421, answer)) if self.redirects < MAX_REDIRECTS => {
                let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
                if let Some(leader) = answer["leader"].as_str()
                    && leader != self.target
                {
                    renewals.redirected.fetch_add(1, Ordering::Relaxed);
                    self.redirects += 1;
                    self.target = leader.to_string();
                    self.after = None;
                    return Instant::now();
                }
            }
            _ => {}
        }
        renewals.failed.fetch_add(1, Ordering::Relaxed);
        self.current = (self.current + 1) % self.queens.len();
        self.target = self.queens[self.current].clone();
        (self.after, self.redirects) = (None, 0);
        self.tried += 1;
        if self.tried < self.queens.len() {
            return Instant::now();
        }
        self.tried = 0;
        let pause = self.backoff;
        self.backoff = (self.backoff * 2)
            .min(MAX_BACKOFF)
            .min(self.interval / 2)
            .max(FIRST_BACKOFF);
        Instant::now() + pause
    }
}

/// `interval` times a factor drawn from [MIN_JITTER, MAX_JITTER).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(MIN_JITTER + (MAX_JITTER - MIN_JITTER) * fastrand::f64())
}

/// Renews `leases` on `threads` threads until `stop` is set.
pub fn start(
    leases: Vec<Lease>,
    threads: usize,
    stop: &Arc<AtomicBool>,
    renewals: &Arc<Renewals>,
) -> io::Result<Vec<JoinHandle<()>>> {
    let mut shares: Vec<Vec<Lease>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    for (i, lease) in leases.into_iter().enumerate() {
        let share = i % shares.len();
        shares[share].push(lease);
    }
    shares
        .into_iter()
        .filter(|share| !share.is_empty())
        .map(|share| {
            let (stop, renewals) = (stop.clone(), renewals.clone());
            thread::Builder::new()
                .name("fleet-renew".into())
                .spawn(move || renew_all(share, &stop, &renewals))
        })
        .collect()
}

/// Renews each of `leases` when it is due, earliest first, until `stop` is set.
fn renew_all(mut leases: Vec<Lease>, stop: &AtomicBool, renewals: &Renewals) {
    let now = Instant::now();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = leases
        .iter()
        .enumerate()
        .map(|(i, lease)| Reverse((now + jittered(lease.interval), i)))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let Some(&Reverse((at, i))) = due.peek() else {
            return;
        };
        let now = Instant::now();
        if at > now {
            thread::sleep((at - now).min(NAP));
            continue;
        }
        due.pop();
        if now - at >= LATE_START {
            renewals.started_late.fetch_add(1, Ordering::Relaxed);
        }
        let next = leases[i].renew(now, renewals);
        if now.elapsed() >= LATE_START {
            renewals.slow_calls.fetch_add(1, Ordering::Relaxed);
        }
        due.push(Reverse((next, i)));
    }
}

/// `POST path` on `address` with a JSON body, showing `bearer`, on a connection of its own;
/// the answer's status and body, within [`CALL_TIMEOUT`].
pub fn call(
    address: &str,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> io::Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    let peer: SocketAddr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&peer, CALL_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let body = body.to_string();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(bearer) = bearer {
        request.push_str(&format!("Authorization: {bearer}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole answer in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        answer.extend_from_slice(&chunk[..n]);
        if let Some(whole) = whole_answer(&answer, n == 0)? {
            return Ok(whole);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a whole answer",
            ));
        }
    }
}

/// The status and body of `bytes`, once they hold a whole answer.
fn whole_answer(bytes: &[u8], closed: bool) -> io::Result<Option<(u16, Vec<u8>)>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    if bytes.len() > MAX_ANSWER_BYTES {
        return Err(bad("answer too large"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(&format!("not HTTP: {e}"))),
    };
    let status = response.code.unwrap_or_default();
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = &bytes[head..];
    Ok(match length {
        Some(n) if body.len() >= n => Some((status, body[..n].to_vec())),
        Some(_) => None,
        None if closed => Some((status, body.to_vec())),
        None => None,
    })
}
