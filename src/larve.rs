//! The composition root: builds the role a [`Config`] names, its state, its API handler and its
//! HTTP server, then hands over to the role's threads.
//!
//! Arrows point one way: this module knows every part, the API knows the roles, and a role knows
//! nothing of HTTP serving. A queen's store (engine and leadership) is chosen here, and nowhere
//! else knows which one it is.

use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};

use crate::api::{self, Role};
use crate::auth::{ClientTokens, Gate, RoleKind};
use crate::client::{Client, Credentials};
use crate::config::{Config, QueenConfig, RoleConfig, StartError, StoreConfig};
use crate::drone::{self, Drone};
use crate::front::{self, BodyLimits};
use crate::metrics::Metrics;
use crate::queen::liveness::Liveness;
use crate::queen::scheduler::{Scheduler, SchedulerConfig};
use crate::queen::{self, Queen};
use crate::server;
use crate::signals;
use crate::store::data_dir::DataDir;
use crate::store::engine::Engine;
use crate::store::etcd;
use crate::store::leadership::{Alone, Leadership};
use crate::store::local::Local;
use crate::store::{Reachability, Store};

/// Prefix of a queen alone's keys (in memory or in a data dir): the same layout as in etcd.
const LOCAL_PREFIX: &str = "/hive/";

/// Idle kept-alive connections per drone, and in all, so steady task traffic reuses connections.
/// No more than the handlers that may call drones at once: ureq's pool compares every idle
/// connection's key on every call returned, which took 8% of a queen's CPU at twice this size.
const IDLE_CONNECTIONS_PER_DRONE: usize = queen::HANDLER_THREADS;
const IDLE_CONNECTIONS: usize = queen::HANDLER_THREADS;

/// Starts the larve `config` describes and serves until the process is killed or stopped
/// cleanly. Returns only when the larve cannot go on.
pub fn run(config: Config) -> StartError {
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::default());
    let credentials = Credentials {
        token: config.token.clone(),
        tls: config.tls.as_ref().map(|tls| tls.client.clone()),
    };
    match &config.role {
        RoleConfig::Queen(settings) => {
            let queen = match build_queen(settings.clone(), credentials, metrics.clone()) {
                Ok(queen) => Arc::new(queen),
                Err(fatal) => return fatal,
            };
            let stopping = queen.clone();
            if let Err(e) = signals::on_stop(move |signal| stop(signal, || stopping.stop())) {
                return StartError::Io(format!("cannot start the signal thread: {e}"));
            }
            let gate = Arc::new(Gate::new(
                RoleKind::Queen,
                config.token.clone(),
                settings.clients.clone(),
                queen.keyring(),
            ));
            if let Err(e) = gate.watch_client_tokens() {
                return StartError::Io(format!("cannot start the client tokens' thread: {e}"));
            }
            let role = Role::Queen(queen.clone());
            let limits = queen::BODY_LIMITS;
            match serve(&config, gate, queen::HANDLER_THREADS, limits, role, metrics) {
                Ok(local) => queen.run(local),
                Err(fatal) => fatal,
            }
        }
        RoleConfig::Drone(settings) => {
            // A clean stop ends the drone; its reaper then ends what it ran (see exec/reaper.rs).
            if let Err(e) = signals::on_stop(|signal| stop(signal, || {})) {
                return StartError::Io(format!("cannot start the signal thread: {e}"));
            }
            let drone = Arc::new(Drone::new(settings.exec_slots));
            let gate = Arc::new(Gate::new(
                RoleKind::Drone,
                config.token.clone(),
                ClientTokens::default(),
                drone.clone(),
            ));
            let role = Role::Drone(drone.clone());
            let limits = drone::BODY_LIMITS;
            match serve(&config, gate, drone::HANDLER_THREADS, limits, role, metrics) {
                Ok(local) => drone::run(&drone, local, credentials, settings.clone()),
                Err(fatal) => fatal,
            }
        }
    }
}

/// A clean stop on `signal`: logs it, runs the role's `last_words`, and exits with status 0 once
/// the log is written.
fn stop(signal: &str, last_words: impl FnOnce()) {
    info!("stopping on {signal}");
    last_words();
    log::logger().flush();
    std::process::exit(0);
}

/// A queen and everything she owns: her store (in memory, in a data dir, or etcd with an
/// election), her client for drones, liveness and the scheduler; she calls drones with
/// `credentials`' TLS and each drone's own credential, never the cluster token. A data dir is
/// opened and read here, before anything serves: one that cannot be used is a mistake to fix
/// (exit 2).
pub fn build_queen(
    config: QueenConfig,
    credentials: Credentials,
    metrics: Arc<Metrics>,
) -> Result<Queen, StartError> {
    let credentials = Credentials {
        token: None,
        ..credentials
    };
    let reach = Arc::new(Reachability::default());
    let (engine, leadership, prefix, shared): (Arc<dyn Engine>, Arc<dyn Leadership>, String, bool) =
        match &config.store {
            StoreConfig::Memory => (
                Arc::new(Local::in_memory()),
                Arc::new(Alone),
                LOCAL_PREFIX.into(),
                false,
            ),
            StoreConfig::DataDir(path) => {
                let (dir, kept) =
                    DataDir::open(path).map_err(|e| StartError::Config(e.to_string()))?;
                info!(
                    "state in the data dir {}: {} keys read, revision {}",
                    crate::logging::quoted(&path.display().to_string()),
                    kept.kvs.len(),
                    kept.revision
                );
                let engine = Local::kept_by(kept, Box::new(dir));
                (
                    Arc::new(engine),
                    Arc::new(Alone),
                    LOCAL_PREFIX.into(),
                    false,
                )
            }
            StoreConfig::Etcd(etcd) => {
                let (engine, election) = etcd::connect(etcd, reach.clone());
                (engine, election, etcd.prefix.clone(), true)
            }
        };
    let store = Arc::new(Store::new(engine, leadership, reach, &prefix, shared));
    let client = Client::new(
        IDLE_CONNECTIONS_PER_DRONE,
        IDLE_CONNECTIONS,
        credentials.clone(),
    );
    let scheduler = Scheduler::new(
        store.clone(),
        client.clone(),
        SchedulerConfig {
            policy: config.tasks.placement,
            keep_finished: config.tasks.keep_finished,
            call_timeout: config.task_timeout,
        },
        metrics.clone(),
    );
    let liveness = Arc::new(Liveness::new(
        config.heartbeat,
        store.clone(),
        scheduler.clone(),
        credentials.tls.as_ref().map(|tls| tls.rustls_config()),
        metrics.clone(),
    ));
    Ok(Queen::new(
        config, store, client, liveness, scheduler, metrics,
    ))
}

/// Starts the HTTP server for `role` behind `gate`, with its `workers` handler threads and its
/// body limits; returns the address actually bound.
fn serve(
    config: &Config,
    gate: Arc<Gate>,
    workers: usize,
    body_limits: BodyLimits,
    role: Role,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, StartError> {
    let listen = SocketAddr::new(config.bind, config.port);
    let handler = api::handler(role.clone(), gate.open(), metrics.clone());
    let held = api::held(role, gate.open());
    let settings = server::Settings {
        gate,
        workers,
        body_limits,
        connections: config.connections,
        tls: config.tls.as_ref().map(|tls| tls.server.clone()),
        max_held: front::max_held(config.connections.total),
    };
    let local = server::start(listen, settings, (handler, held), metrics)
        .map_err(|e| StartError::Io(format!("cannot listen on {listen}: {e}")))?;
    if let Some(tls) = &config.tls {
        let clients = if tls.server.verify_clients {
            "clients must show a certificate signed by --tls-ca"
        } else {
            "any client may connect"
        };
        info!("serving HTTPS on {local}; {clients}; calling other larves over HTTPS");
    }
    Ok(local)
}
