//! The in-house HTTP load generator: client threads calling the queen back to back, each timing
//! every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ureq::Agent;

use crate::Result;
use crate::larve::Larve;

/// Limit for one benchmark request. A task no drone takes answers within the queen's 2 s task timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests slower than this are counted in scenario 1: at these loads that is not queueing but a
/// stalled connection (one the server accepted and left unserved) or a task timeout.
pub const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// Pause between two load clients' first calls, so connections open one by one as clients arrive
/// rather than in one burst (which tiny_http may leave partly unserved; see [`burst`]).
pub const RAMP_STEP: Duration = Duration::from_millis(5);

/// How long [`burst`] holds its connections open, waiting for every first answer.
pub const BURST_HOLD: Duration = Duration::from_millis(600);

/// Head start given to load threads so they begin on time.
const LOAD_START_DELAY: Duration = Duration::from_millis(50);

/// Extra time a load may run past its length (requests in flight at the end) before it is a failure.
const LOAD_GRACE: Duration = Duration::from_secs(10);

/// How often a burst client that has its answer looks whether all the others have theirs.
const BURST_POLL: Duration = Duration::from_millis(10);

const MS_PER_SEC: f64 = 1000.0;

/// One client's HTTP agent: one kept-alive connection, every status a response, a limit per call.
fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// What the load clients call.
#[derive(Clone, Copy)]
pub enum Call {
    Submit,
    Health,
}

/// What one load run saw.
pub struct Load {
    pub ok: u64,
    /// 200s to the warm-up calls, not counted in `ok`.
    pub warmup_ok: u64,
    pub errors: u64,
    pub started: Instant,
    pub elapsed: Duration,
    /// Every request's latency in microseconds, sorted.
    latencies_us: Vec<u64>,
    pub first_error: Option<String>,
}

impl Load {
    /// Successful calls per second of the counted window.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile `p` (0 to 1) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[index] as f64 / MS_PER_SEC
    }

    pub fn max_ms(&self) -> f64 {
        self.percentile_ms(1.0)
    }

    /// How many requests took longer than `limit`.
    pub fn slower_than(&self, limit: Duration) -> usize {
        let limit_us = limit.as_micros() as u64;
        self.latencies_us.len() - self.latencies_us.partition_point(|&us| us <= limit_us)
    }
}

/// One client's share of a load.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// 200s to calls sent before counting began; tasks they placed still reach drone stdout.
    warmup_ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

/// `clients` threads, each with its own agent (so its own kept-alive connection), calling the queen
/// back to back. They start [`RAMP_STEP`] apart, and only calls sent after the last one started are
/// counted, for `length`: the numbers are the steady state, not the connection ramp.
pub fn load(queen: &Larve, call: Call, clients: usize, length: Duration) -> Result<Load> {
    let path = match call {
        Call::Submit => "/submit_task",
        Call::Health => "/healthz",
    };
    let url = format!("http://{}{path}", queen.address());
    let ramp_start = Instant::now() + LOAD_START_DELAY;
    let started = ramp_start + RAMP_STEP * clients as u32;
    let deadline = started + length;
    let tallies = thread::scope(|scope| {
        let mut handles = Vec::new();
        for client in 0..clients {
            let url = &url;
            let window = Window {
                first_call: ramp_start + RAMP_STEP * client as u32,
                counted_from: started,
                deadline,
            };
            let spawned = thread::Builder::new()
                .name("bench-client".into())
                .spawn_scoped(scope, move || client_loop(url, call, client, window));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => return Err(format!("cannot start load client {client}: {e}")),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a load client panicked".to_string()))
            .collect::<Result<Vec<Tally>>>()
    })?;
    let elapsed = started.elapsed();
    if elapsed > length + LOAD_GRACE {
        return Err(format!("the load ran {elapsed:?}, far past its {length:?}"));
    }
    let mut total = Tally::default();
    for tally in tallies {
        total.ok += tally.ok;
        total.warmup_ok += tally.warmup_ok;
        total.errors += tally.errors;
        total.latencies_us.extend(tally.latencies_us);
        total.first_error = total.first_error.or(tally.first_error);
    }
    total.latencies_us.sort_unstable();
    Ok(Load {
        ok: total.ok,
        warmup_ok: total.warmup_ok,
        errors: total.errors,
        started,
        elapsed,
        latencies_us: total.latencies_us,
        first_error: total.first_error,
    })
}

/// When one load client calls.
#[derive(Clone, Copy)]
struct Window {
    /// Its first call: clients arrive one by one.
    first_call: Instant,
    /// Calls sent from here on are counted; earlier ones warm the connections up.
    counted_from: Instant,
    /// No call is sent after this.
    deadline: Instant,
}

/// One load client: calls until the window's deadline, timing each counted call.
fn client_loop(url: &str, call: Call, client: usize, window: Window) -> Tally {
    let agent = agent();
    let mut tally = Tally::default();
    thread::sleep(window.first_call.saturating_duration_since(Instant::now()));
    let mut n: u64 = 0;
    while Instant::now() < window.deadline {
        n += 1;
        let sent = Instant::now();
        let reply = match call {
            Call::Submit => agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(format!("{{\"text\":\"bench {client}-{n}\"}}").as_bytes()),
            Call::Health => agent.get(url).call(),
        };
        let outcome = match reply {
            Ok(mut reply) => {
                let status = reply.status().as_u16();
                match reply.body_mut().read_to_vec() {
                    Ok(_) if status == 200 => Ok(()),
                    Ok(_) => Err(format!("HTTP {status}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if sent < window.counted_from {
            tally.warmup_ok += u64::from(outcome.is_ok());
            continue;
        }
        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(why) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(why);
            }
        }
    }
    tally
}

/// Opens `clients` connections to the queen at the same instant, each asking `/healthz` once, and
/// holds them all open until every first answer is in (or [`BURST_HOLD`] has passed). Returns how
/// many first answers took longer than [`SLOW_REQUEST`], and how many failed.
///
/// tiny_http 0.12 hands each new connection to a pool thread, and under a burst it can queue one
/// behind threads that are busy with other kept-alive connections: it is then served only when
/// another connection closes, which here is at the end of the hold.
pub fn burst(queen: &Larve, clients: usize) -> Result<(usize, usize)> {
    let url = format!("http://{}/healthz", queen.address());
    let start = Instant::now() + LOAD_START_DELAY;
    let release = start + BURST_HOLD;
    let answered = AtomicUsize::new(0);
    let outcomes = thread::scope(|scope| {
        let mut handles = Vec::new();
        for client in 0..clients {
            let (url, answered) = (&url, &answered);
            let spawned = thread::Builder::new()
                .name("bench-burst".into())
                .spawn_scoped(scope, move || {
                    let agent = agent();
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    let sent = Instant::now();
                    let ok = agent
                        .get(url)
                        .call()
                        .and_then(|mut reply| reply.body_mut().read_to_vec())
                        .is_ok();
                    let took = sent.elapsed();
                    answered.fetch_add(1, Ordering::SeqCst);
                    while answered.load(Ordering::SeqCst) < clients && Instant::now() < release {
                        thread::sleep(BURST_POLL);
                    }
                    (took, ok)
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => return Err(format!("cannot start burst client {client}: {e}")),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a burst client panicked".to_string()))
            .collect::<Result<Vec<(Duration, bool)>>>()
    })?;
    let slow = outcomes
        .iter()
        .filter(|(took, _)| *took > SLOW_REQUEST)
        .count();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    Ok((slow, failed))
}
