//! The composition root: builds the role a [`Config`] names, its API handler and its HTTP server,
//! then hands over to the role's threads.
//!
//! Arrows point one way: this module knows every part, the API knows the roles, and a role knows
//! nothing of HTTP serving.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, Role};
use crate::auth::Token;
use crate::config::{Config, RoleConfig, StartError};
use crate::drone::{self, Drone};
use crate::metrics::Metrics;
use crate::queen::{self, Queen};
use crate::server;

/// Starts the larve `config` describes and serves until the process is killed. Returns only when
/// the larve cannot go on.
pub fn run(config: Config) -> StartError {
    let metrics = Arc::new(Metrics::default());
    let listen = SocketAddr::new(config.bind, config.port);
    let token = config.token;
    match config.role {
        RoleConfig::Queen(settings) => {
            let queen = Arc::new(Queen::new(settings, token.clone(), metrics.clone()));
            let role = Role::Queen(queen.clone());
            match serve(listen, queen::HANDLER_THREADS, role, token, metrics) {
                Ok(local) => queen.run(local),
                Err(fatal) => fatal,
            }
        }
        RoleConfig::Drone(settings) => {
            let drone = Arc::new(Drone::new());
            let role = Role::Drone(drone.clone());
            match serve(listen, drone::HANDLER_THREADS, role, token.clone(), metrics) {
                Ok(local) => drone::run(&drone, local, token, settings),
                Err(fatal) => fatal,
            }
        }
    }
}

/// Starts the HTTP server for `role` on `listen`; returns the address actually bound.
fn serve(
    listen: SocketAddr,
    workers: usize,
    role: Role,
    token: Option<Token>,
    metrics: Arc<Metrics>,
) -> Result<SocketAddr, StartError> {
    let handler = api::handler(role, token, metrics.clone());
    server::start(listen, workers, handler, metrics)
        .map_err(|e| StartError::Io(format!("cannot listen on {listen}: {e}")))
}
