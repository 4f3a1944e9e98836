//! The drone: does the tasks it is handed, and keeps itself registered with its queen.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;

use crate::client::{CallError, Client, Credentials};
use crate::config::{DroneConfig, StartError};
use crate::error::{Error, Result};
use crate::logging::{one_line, quoted};

/// Handler threads of a drone; a task is a print, so a few are plenty.
pub const HANDLER_THREADS: usize = 8;

/// The interval assumed when the queen does not say (the tutorial's queen answers only `OK`).
const DEFAULT_QUEEN_INTERVAL: Duration = Duration::from_secs(10);

/// A drone registers again when its queen has not probed it for this many heartbeat intervals.
const MISSED_INTERVALS: u32 = 3;

/// Limit for one registration call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// First and longest pause between failed registrations.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest interval a queen may announce; anything longer is treated as unknown.
const MAX_QUEEN_INTERVAL: Duration = Duration::from_secs(86_400);

/// The drone's state and what it does on each request.
pub struct Drone {
    /// Registered with its queen, and serving.
    ready: AtomicBool,
    /// Last time anyone probed `/healthz`: the sign that the queen still knows this drone.
    last_checked: Mutex<Instant>,
}

impl Default for Drone {
    fn default() -> Self {
        Drone {
            ready: AtomicBool::new(false),
            last_checked: Mutex::new(Instant::now()),
        }
    }
}

impl Drone {
    pub fn new() -> Drone {
        Drone::default()
    }

    /// True once serving and registered with the queen.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Notes a `/healthz` probe: the queen (or someone) is checking on this drone.
    pub fn checked(&self) {
        *self.last_checked.lock() = Instant::now();
    }

    /// Does the task: prints its text to stdout as one line.
    pub fn do_task(&self, text: &str) -> Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "{}", one_line(text))
            .map_err(|e| Error::Internal(format!("could not print the task: {e}")))
    }
}

/// Once the drone serves at `local`: registers with a queen and keeps registered, on this thread,
/// for the life of the process. Returns only on a fatal error.
pub fn run(
    drone: &Arc<Drone>,
    local: SocketAddr,
    credentials: Credentials,
    config: DroneConfig,
) -> StartError {
    let advertise = config.advertise.unwrap_or_else(|| local.to_string());
    info!(
        "drone listening on {local}, known to queens as {}",
        quoted(&advertise)
    );
    Registration {
        drone: drone.clone(),
        client: Client::new(1, 1, credentials),
        queens: config.queens,
        current: 0,
        advertise,
    }
    .run()
}

/// The drone's side of staying known to its queens.
struct Registration {
    drone: Arc<Drone>,
    client: Client,
    /// Every queen it may register with (several share one registry through etcd).
    queens: Vec<String>,
    /// The queen it registered with last, and tries first.
    current: usize,
    advertise: String,
}

impl Registration {
    /// Registers, with capped backoff until a queen answers; then watches for the queens' probes
    /// and registers again when they stop (its queen restarted and forgot this drone, or the queens
    /// on etcd are between leaders).
    fn run(mut self) -> StartError {
        loop {
            let interval = match self.register_until_answered() {
                Ok(interval) => interval,
                Err(fatal) => return fatal,
            };
            *self.drone.last_checked.lock() = Instant::now();
            self.drone.ready.store(true, Ordering::Relaxed);
            let deadline = interval * MISSED_INTERVALS;
            let pause = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                thread::sleep(pause);
                let silent = self.drone.last_checked.lock().elapsed();
                if silent > deadline {
                    warn!(
                        "no queen has checked on this drone for {silent:.1?} ({MISSED_INTERVALS} heartbeat intervals); registering again"
                    );
                    self.drone.ready.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
    }

    /// Tries each queen in turn, from the current one, with capped backoff after every round of
    /// failures; returns the heartbeat interval of the queen that accepted. A 4xx is a
    /// configuration error.
    fn register_until_answered(&mut self) -> std::result::Result<Duration, StartError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            for _ in 0..self.queens.len() {
                let queen = self.queens[self.current].clone();
                match self.register_once(&queen) {
                    Ok(interval) => return Ok(interval),
                    Err(e) if e.is_client_error() => {
                        return Err(StartError::Config(format!(
                            "queen {} refused this drone's registration ({e}); is --queen-host really a queen, and is {} an address she accepts?",
                            quoted(&queen),
                            quoted(&self.advertise)
                        )));
                    }
                    Err(e) => {
                        warn!("could not register with queen {}: {e}", quoted(&queen));
                        self.current = (self.current + 1) % self.queens.len();
                    }
                }
            }
            warn!("no queen took this drone's registration; retrying in {backoff:?}");
            thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn register_once(&self, queen: &str) -> std::result::Result<Duration, CallError> {
        let body = serde_json::json!({ "address": self.advertise });
        let reply = self
            .client
            .post_json(queen, "/register", &body, REGISTER_TIMEOUT)?;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        let interval = reply["heartbeat_interval"]
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|d| !d.is_zero() && *d <= MAX_QUEEN_INTERVAL)
            .unwrap_or(DEFAULT_QUEEN_INTERVAL);
        match reply["name"].as_str() {
            Some(name) => info!(
                "registered with queen {} as {}",
                quoted(queen),
                quoted(name)
            ),
            None => info!("registered with queen {}", quoted(queen)),
        }
        Ok(interval)
    }
}
