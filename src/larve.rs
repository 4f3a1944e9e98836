//! The composition root: builds the role a [`Config`] names, its API handler and its HTTP server,
//! then hands over to the role's threads.
//!
//! Arrows point one way: this module knows every part, the API knows the roles, and a role knows
//! nothing of HTTP serving.

use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};

use crate::api::{self, Role};
use crate::client::Credentials;
use crate::config::{Config, RoleConfig, StartError};
use crate::drone::{self, Drone};
use crate::front::BodyLimits;
use crate::metrics::Metrics;
use crate::queen::{self, Queen};
use crate::server::{self, MAX_LONG_POLLS};

/// Starts the larve `config` describes and serves until the process is killed. Returns only when
/// the larve cannot go on.
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
            let queen = Arc::new(Queen::new(settings.clone(), credentials, metrics.clone()));
            let role = Role::Queen(queen.clone());
            let limits = queen::BODY_LIMITS;
            match serve(&config, queen::HANDLER_THREADS, limits, role, metrics) {
                Ok(local) => queen.run(local),
                Err(fatal) => fatal,
            }
        }
        RoleConfig::Drone(settings) => {
            let drone = Arc::new(Drone::new());
            let role = Role::Drone(drone.clone());
            let limits = BodyLimits { by_path: &[] };
            match serve(&config, drone::HANDLER_THREADS, limits, role, metrics) {
                Ok(local) => drone::run(&drone, local, credentials, settings.clone()),
                Err(fatal) => fatal,
            }
        }
    }
}

/// Starts the HTTP server for `role`, with its `workers` handler threads and its body limits;
/// returns the address actually bound.
fn serve(
    config: &Config,
    workers: usize,
    body_limits: BodyLimits,
    role: Role,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, StartError> {
    let listen = SocketAddr::new(config.bind, config.port);
    let handler = api::handler(role, config.token.clone(), metrics.clone());
    let settings = server::Settings {
        workers,
        body_limits,
        connections: config.connections,
        tls: config.tls.as_ref().map(|tls| tls.server.clone()),
        long_polls: MAX_LONG_POLLS,
    };
    let local = server::start(listen, settings, handler, metrics)
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
