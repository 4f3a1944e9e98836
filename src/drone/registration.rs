//! The drone's side of staying known to its queens: register, then keep known: with a Hive queen
//! by renewing a lease (`lease.rs`), registering again as soon as a queen says she does not know
//! it; with the tutorial's queen, which takes no lease, by registering again when no queen has
//! checked on it for a while.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{Drone, lease};
use crate::auth::Token;
use crate::client::{CallError, Client};
use crate::config::StartError;
use crate::labels::Labels;
use crate::logging::quoted;

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

/// What a queen that took a registration said.
struct Taken {
    /// Her heartbeat interval.
    interval: Duration,
    /// Whether she takes lease renewals (a Hive queen says so; the tutorial's does not).
    lease: bool,
}

/// Why a registration did not work.
enum Refusal {
    /// The queen understood and refused: trying again cannot help.
    Final(String),
    /// Worth another try, maybe with another queen.
    Retry(String),
}

/// The drone's side of staying known to its queens.
pub(super) struct Registration {
    pub(super) drone: Arc<Drone>,
    pub(super) client: Client,
    /// Renews the lease: a client that asks each queen to close the connection after answering.
    pub(super) renewals: Client,
    /// Every queen it may register with (several share one registry through etcd).
    pub(super) queens: Vec<String>,
    /// The queen it registered with last, and tries first.
    pub(super) current: usize,
    pub(super) advertise: String,
    /// What it says it is: its own `hive.*` labels and its `--label`s.
    pub(super) labels: Labels,
}

impl Registration {
    /// Registers, with capped backoff until a queen answers; then watches for the queens' probes
    /// and registers again when they stop (its queen restarted and forgot this drone, or the queens
    /// on etcd are between leaders).
    pub(super) fn run(mut self) -> StartError {
        loop {
            let Taken { interval, lease } = match self.register_until_answered() {
                Ok(taken) => taken,
                Err(fatal) => return fatal,
            };
            *self.drone.last_checked.lock() = Instant::now();
            self.drone.ready.store(true, Ordering::Relaxed);
            if lease {
                let why = lease::renew(
                    &self.drone,
                    &self.renewals,
                    &self.queens,
                    self.current,
                    interval,
                );
                warn!("{why}");
                self.drone.ready.store(false, Ordering::Relaxed);
                continue;
            }
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
    /// failures; returns what the queen that accepted said. A 4xx is a configuration error.
    fn register_until_answered(&mut self) -> std::result::Result<Taken, StartError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            for _ in 0..self.queens.len() {
                let queen = self.queens[self.current].clone();
                match self.register_once(&queen) {
                    Ok(taken) => return Ok(taken),
                    Err(Refusal::Final(said)) => {
                        return Err(StartError::Config(format!(
                            "queen {} refused this drone's registration: {said}; is --queen-host really a queen, and is {} an address she accepts?",
                            quoted(&queen),
                            quoted(&self.advertise)
                        )));
                    }
                    Err(Refusal::Retry(e)) => {
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

    /// One registration with `queen`; what she announced. A 4xx other than 408 or 429 is final,
    /// with what she said (her `error`, or the start of her answer).
    fn register_once(&self, queen: &str) -> std::result::Result<Taken, Refusal> {
        let mut body = serde_json::json!({
            "address": self.advertise,
            "boot": self.drone.boot,
            "exec": false,
            "slots": 0,
            "renews": true,
            "labels": self.labels,
        });
        if let Some(attempts) = self.drone.attempts.get() {
            let (memory_mb, cpus) = attempts.offer();
            body["exec"] = true.into();
            body["slots"] = attempts.slots().into();
            body["memory_mb"] = memory_mb.into();
            body["cpus"] = cpus.into();
            body["containment"] = attempts.level().as_str().into();
        }
        let reply = self
            .client
            .exchange("POST", queen, "/register", Some(&body), REGISTER_TIMEOUT)
            .map_err(|e| Refusal::Retry(e.to_string()))?;
        if !(200..300).contains(&reply.status) {
            let error = CallError::Status(reply.status);
            let said = format!("{error}: {}", quoted(&reply.said()));
            return Err(if error.is_client_error() {
                Refusal::Final(said)
            } else {
                Refusal::Retry(said)
            });
        }
        let reply = reply.body;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        let interval = reply["heartbeat_interval"]
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|d| !d.is_zero() && *d <= MAX_QUEEN_INTERVAL)
            .unwrap_or(DEFAULT_QUEEN_INTERVAL);
        let lease = reply["lease_interval"]
            .as_f64()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .filter(|d| !d.is_zero() && *d <= MAX_QUEEN_INTERVAL);
        if let Some(credential) = reply["credential"].as_str() {
            match Token::new(credential) {
                Ok(credential) => *self.drone.credential.lock() = Some(credential),
                Err(why) => {
                    return Err(Refusal::Retry(format!(
                        "the queen's answer holds a credential that is not one ({why})"
                    )));
                }
            }
        }
        match reply["name"].as_str() {
            Some(name) => info!(
                "registered with queen {} as {}",
                quoted(queen),
                quoted(name)
            ),
            None => info!("registered with queen {}", quoted(queen)),
        }
        Ok(Taken {
            interval: lease.unwrap_or(interval),
            lease: lease.is_some(),
        })
    }
}
