//! The composition root: builds the role a [`Config`] names, its API handler and its HTTP server,
//! then hands over to the role's threads.
//!
//! Arrows point one way: this module knows every part, the API knows the roles, and a role knows
//! nothing of HTTP serving.

use std::net::SocketAddr;
use std::sync::Arc;

use log::{info, warn};

use crate::api::{self, Role};
use crate::auth::Token;
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
    let listen = SocketAddr::new(config.bind, config.port);
    let token = config.token.clone();
    let credentials = Credentials {
        token: token.clone(),
        tls: config.tls.as_ref().map(|tls| tls.client.clone()),
    };
    match config.role {
        RoleConfig::Queen(ref settings) => {
            let queen = Arc::new(Queen::new(settings.clone(), credentials, metrics.clone()));
            let role = Role::Queen(queen.clone());
            let serving = (queen::HANDLER_THREADS, queen::BODY_LIMITS);
            match serve(&config, listen, serving, role, token, metrics) {
                Ok(local) => queen.run(local),
                Err(fatal) => fatal,
            }
        }
        RoleConfig::Drone(ref settings) => {
            let drone = Arc::new(Drone::new());
            let role = Role::Drone(drone.clone());
            let serving = (drone::HANDLER_THREADS, BodyLimits { by_path: &[] });
            match serve(&config, listen, serving, role, token, metrics) {
                Ok(local) => drone::run(&drone, local, credentials, settings.clone()),
                Err(fatal) => fatal,
            }
        }
    }
}

/// Starts the HTTP server for `role` on `listen` with the role's handler threads and body limits;
/// returns the address actually bound.
fn serve(
    config: &Config,
    listen: SocketAddr,
    (workers, body_limits): (usize, BodyLimits),
    role: Role,
    token: Option<Token>,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, StartError> {
    let handler = api::handler(role, token, metrics.clone());
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
