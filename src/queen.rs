//! The queen: keeps the registry, hands tasks to live drones, and runs the heartbeat.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};

use crate::address;
use crate::api::{self, Role};
use crate::auth::Token;
use crate::client::Client;
use crate::config::{QueenConfig, StartError};
use crate::error::{Error, Result};
use crate::heartbeat::Heartbeat;
use crate::logging::quoted;
use crate::registry::{DroneInfo, Registry};
use crate::server;

/// Handler threads of a queen. A submit waits on a drone (up to `--task-timeout`), so there are
/// enough that a few slow drones cannot starve `/healthz` and `/register`.
const HANDLER_THREADS: usize = 32;

/// Idle kept-alive connections per drone, and in all, so steady task traffic reuses connections.
/// As many per drone as handlers that may call it at once; few in all, as ureq's pool grows costly.
const IDLE_CONNECTIONS_PER_DRONE: usize = HANDLER_THREADS;
const IDLE_CONNECTIONS: usize = 2 * HANDLER_THREADS;

/// The queen's state and what she does on each request.
pub struct Queen {
    registry: Arc<Registry>,
    client: Client,
    config: QueenConfig,
    ready: AtomicBool,
}

impl Queen {
    /// A queen with an empty registry; `token` is sent to drones with every task.
    pub fn new(config: QueenConfig, token: Option<Token>) -> Queen {
        Queen {
            registry: Arc::new(Registry::new()),
            client: Client::new(IDLE_CONNECTIONS_PER_DRONE, IDLE_CONNECTIONS, token),
            config,
            ready: AtomicBool::new(false),
        }
    }

    /// True once the queen is serving.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Registers the drone at `address` (idempotently) and returns its name.
    pub fn register(&self, address: &str) -> Result<String> {
        address::validate(address).map_err(Error::BadRequest)?;
        let registered = self.registry.register(address);
        if registered.new {
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

    /// Hands `text` to a random available drone, trying the others in random order until one
    /// confirms. Returns the name of the drone that took it.
    ///
    /// At least once: a drone that timed out may have run the task before another one runs it too.
    pub fn submit(&self, text: &str) -> Result<String> {
        let mut candidates = self.registry.available();
        if candidates.is_empty() {
            return Err(Error::NoDrones);
        }
        fastrand::shuffle(&mut candidates);
        let task = serde_json::json!({ "text": text });
        let mut failures = Vec::new();
        for target in candidates {
            // Another submit may have found it dead meanwhile.
            if !self.registry.is_available(&target) {
                continue;
            }
            match self.client.post_json(
                &target.address,
                "/do_task",
                &task,
                self.config.task_timeout,
            ) {
                Ok(_) => {
                    info!(
                        "task {} sent to {} ({})",
                        quoted(text),
                        target.name,
                        quoted(&target.address)
                    );
                    return Ok(target.name);
                }
                Err(e) => {
                    self.registry.record_task_failure(&target);
                    warn!(
                        "task {} not taken by {} ({}): {e}; skipping it until a heartbeat passes",
                        quoted(text),
                        target.name,
                        quoted(&target.address)
                    );
                    failures.push(format!("{}: {e}", target.name));
                }
            }
        }
        if failures.is_empty() {
            // Every candidate was found dead by other submits meanwhile.
            return Err(Error::NoDrones);
        }
        Err(Error::AllDronesFailed(failures.join("; ")))
    }

    /// Address → name of every drone.
    pub fn drone_names(&self) -> BTreeMap<String, String> {
        self.registry.names()
    }

    /// Everything the queen knows about every drone.
    pub fn drones(&self) -> Vec<DroneInfo> {
        self.registry.list()
    }
}

/// Serves as a queen on `bind:port` and runs the heartbeat on this thread, for the life of the
/// process. Returns only if the queen cannot start.
pub fn run(listen: SocketAddr, token: Option<Token>, config: QueenConfig) -> StartError {
    let heartbeat = config.heartbeat;
    let queen = Arc::new(Queen::new(config, token.clone()));
    let handler = api::handler(Role::Queen(Arc::clone(&queen)), token.clone());
    let local = match server::start(listen, HANDLER_THREADS, handler) {
        Ok(local) => local,
        Err(e) => return StartError::Io(format!("cannot listen on {listen}: {e}")),
    };
    queen.ready.store(true, Ordering::Relaxed);
    info!(
        "queen listening on {local}; heartbeat every {:?}, {} tries of {:?}, {:?} apart",
        heartbeat.interval, heartbeat.attempts, heartbeat.timeout, heartbeat.retry_delay
    );
    Heartbeat::new(heartbeat, Arc::clone(&queen.registry), token).run()
}
