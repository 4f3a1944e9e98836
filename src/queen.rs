//! The queen: keeps the registry, hands tasks to live drones, and runs the heartbeat and the
//! re-checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::address;
use crate::client::{CallError, Client, Credentials};
use crate::config::StoreConfig;
use crate::config::{QueenConfig, StartError};
use crate::error::{Error, Result};
use crate::front::BodyLimits;
use crate::heartbeat::Heartbeat;
use crate::logging::quoted;
use crate::metrics::{Exposition, Metrics};
use crate::recheck::Recheck;
use crate::registry::{DroneInfo, Registry, Target};
use crate::store::etcd::Etcd;
use crate::store::memory::Memory;
use crate::store::{Store, StoreHealth};

/// Handler threads of a queen. A submit waits on a drone (up to `--task-timeout`), so there are
/// enough that a few slow drones cannot starve `/healthz` and `/register`.
pub const HANDLER_THREADS: usize = 32;

/// Bodies a queen takes beyond the default 64 KiB: a drone's report carries a task's output.
pub const BODY_LIMITS: BodyLimits = BodyLimits {
    by_path: &[("/reports", 1024 * 1024)],
};

/// Drones out of rotation a submit tries when no available drone took its task.
const MAX_TRIES_OUT_OF_ROTATION: usize = 2;

/// A submit's tries together take at most this many task timeouts: a registry full of frozen
/// drones must not hold a handler for a timeout each.
const SUBMIT_BUDGET_TASK_TIMEOUTS: u32 = 2;

/// Idle kept-alive connections per drone, and in all, so steady task traffic reuses connections.
/// No more than the handlers that may call drones at once: ureq's pool compares every idle
/// connection's key on every call returned, which took 8% of a queen's CPU at twice this size.
const IDLE_CONNECTIONS_PER_DRONE: usize = HANDLER_THREADS;
const IDLE_CONNECTIONS: usize = HANDLER_THREADS;

/// The queen's state and what she does on each request.
pub struct Queen {
    registry: Arc<Registry>,
    /// Where registrations and removals go: the registry itself, or etcd.
    store: Arc<dyn Store>,
    client: Client,
    recheck: Arc<Recheck>,
    config: QueenConfig,
    /// What she shows drones with every task and probe: the token, and with TLS her certificate.
    credentials: Credentials,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl Queen {
    /// A queen with an empty registry, who calls drones with `credentials`.
    pub fn new(config: QueenConfig, credentials: Credentials, metrics: Arc<Metrics>) -> Queen {
        let registry = Arc::new(Registry::new());
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Memory => Arc::new(Memory::new(registry.clone())),
            StoreConfig::Etcd(etcd) => Arc::new(Etcd::new(etcd.clone(), registry.clone())),
        };
        let recheck = Recheck::new(
            registry.clone(),
            credentials.clone(),
            config.heartbeat.timeout,
            metrics.clone(),
        );
        Queen {
            registry,
            store,
            client: Client::new(
                IDLE_CONNECTIONS_PER_DRONE,
                IDLE_CONNECTIONS,
                credentials.clone(),
            ),
            recheck: Arc::new(recheck),
            config,
            credentials,
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// True once the queen is serving and has the registry to serve from.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.store.ready()
    }

    /// The store's and the election's part of `/healthz`, when the registry is shared.
    pub fn store_health(&self) -> Option<StoreHealth> {
        self.store.health()
    }

    /// Registers the drone at `address` (idempotently) and returns its name.
    pub fn register(&self, address: &str) -> Result<String> {
        address::validate(address).map_err(Error::BadRequest)?;
        let registered = self.store.register(address)?;
        if registered.new {
            self.metrics.drones_registered.inc();
            info!("registered {} at {}", registered.name, quoted(address));
        } else {
            info!(
                "{} at {} registered again",
                registered.name,
                quoted(address)
            );
        }
        Ok(registered.name)
    }

    /// The pause between heartbeat rounds, which drones are told so they notice a lost queen.
    pub fn heartbeat_interval_secs(&self) -> f64 {
        self.config.heartbeat.interval.as_secs_f64()
    }

    /// Hands `text` to a drone and returns the name of the drone that took it: the available drones
    /// in random order, then those out of rotation (see `place`).
    pub fn submit(&self, text: &str) -> Result<String> {
        let started = Instant::now();
        let placed = self.place(text);
        self.metrics.submit_latency.observe(started.elapsed());
        placed
    }

    /// Tries the available drones in random order until one confirms; then, if none did (or none
    /// is available), up to [`MAX_TRIES_OUT_OF_ROTATION`] drones out of rotation: when every host
    /// looks unhealthy a balancer still sends to one rather than fail the request (Envoy's panic
    /// threshold), so only an empty registry answers 503. All tries together take at most
    /// [`SUBMIT_BUDGET_TASK_TIMEOUTS`] task timeouts. A drone that fails is re-checked at once (see
    /// `recheck.rs`).
    ///
    /// At least once: a drone that timed out may have run the task before another one runs it too.
    fn place(&self, text: &str) -> Result<String> {
        let (mut available, mut out_of_rotation) = self.registry.rotation();
        if available.is_empty() && out_of_rotation.is_empty() {
            return Err(Error::NoDrones);
        }
        fastrand::shuffle(&mut available);
        fastrand::shuffle(&mut out_of_rotation);
        out_of_rotation.truncate(MAX_TRIES_OUT_OF_ROTATION);
        let deadline = Instant::now() + self.config.task_timeout * SUBMIT_BUDGET_TASK_TIMEOUTS;
        let mut failures = Vec::new();
        for target in available.into_iter().chain(out_of_rotation) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push("no time left for the other drones".to_string());
                break;
            }
            // The heartbeat may have removed it meanwhile.
            if !self.registry.contains(&target) {
                continue;
            }
            let timeout = self.config.task_timeout.min(left);
            match self.hand_over(text, &target, failures.len(), timeout) {
                Ok(()) => return Ok(target.name),
                Err(why) => failures.push(why),
            }
        }
        self.metrics.tasks_failed.inc();
        if failures.is_empty() {
            return Err(Error::NoDrones);
        }
        let detail = failures.join("; ");
        warn!(
            "task {} not done: every drone tried failed ({detail})",
            quoted(text)
        );
        Err(Error::AllDronesFailed(detail))
    }

    /// One try at handing `text` to `target` within `timeout`, after `failed` failed tries on
    /// other drones.
    fn hand_over(
        &self,
        text: &str,
        target: &Target,
        failed: usize,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let task = serde_json::json!({ "text": text });
        let sent = self
            .client
            .post_json(&target.address, "/do_task", &task, timeout);
        match sent {
            Ok(_) => {
                self.metrics.tasks_placed.inc();
                if failed > 0 {
                    self.metrics.tasks_retried_elsewhere.inc();
                }
                info!(
                    "task {} sent to {} ({})",
                    quoted(text),
                    target.name,
                    quoted(&target.address)
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.task_tries_failed.inc();
                let consequence = if e == CallError::TimedOut {
                    self.registry.record_task_timeout(target);
                    "re-checking it"
                } else if self.registry.record_task_failure(target) {
                    "it takes no tasks until a probe passes"
                } else {
                    "it was out of rotation already"
                };
                self.recheck.suspect(target);
                warn!(
                    "task {} not taken by {} ({}): {e}; {consequence}",
                    quoted(text),
                    target.name,
                    quoted(&target.address)
                );
                Err(format!("{}: {e}", target.name))
            }
        }
    }

    /// The queen's metrics, after the ones every larve has.
    pub fn render_metrics(&self, out: &mut Exposition) {
        let (registered, available) = self.registry.counts();
        self.metrics.render_queen(out, registered, available);
    }

    /// Address → name of every drone.
    pub fn drone_names(&self) -> BTreeMap<String, String> {
        self.registry.names()
    }

    /// Everything the queen knows about every drone.
    pub fn drones(&self) -> Vec<DroneInfo> {
        self.registry.list()
    }

    /// Runs the queen's threads once her server is up at `local`: the store's, re-checks on a
    /// thread of their own, the heartbeat on this one, for the life of the process.
    pub fn run(&self, local: SocketAddr) -> StartError {
        let me = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        if let Err(e) = self.store.clone().start(me) {
            return StartError::Io(format!("cannot start the store's threads: {e}"));
        }
        let recheck = self.recheck.clone();
        if let Err(e) = thread::Builder::new()
            .name("recheck".into())
            .spawn(move || recheck.run())
        {
            return StartError::Io(format!("cannot start the re-check thread: {e}"));
        }
        self.ready.store(true, Ordering::Relaxed);
        let heartbeat = self.config.heartbeat;
        info!(
            "queen listening on {local}; heartbeat every {:?}, {} tries of {:?}, {:?} apart",
            heartbeat.interval, heartbeat.attempts, heartbeat.timeout, heartbeat.retry_delay
        );
        Heartbeat::new(
            heartbeat,
            self.registry.clone(),
            self.store.clone(),
            self.credentials.clone(),
            self.metrics.clone(),
        )
        .run()
    }
}
