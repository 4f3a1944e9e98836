//! Hive: a small Kubernetes-like orchestrator.
//!
//! One binary, `larve`, runs as a **drone** (the worker, like a kubelet) or a **queen** (the control
//! plane). The house is drawn in one direction:
//!
//! ```text
//! cli ──► config ──► queen / drone (a role owns its threads) ──► server (HTTP, translates only)
//!                        │                                          │
//!                        ├── registry   (who the drones are)        └── api (routes to the role)
//!                        ├── heartbeat  (who is still alive)
//!                        └── client     (every outbound call, always with a timeout)
//! ```

pub mod address;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod drone;
pub mod error;
pub mod heartbeat;
pub mod larve;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod queen;
pub mod recheck;
pub mod registry;
pub mod server;
pub mod sockets;
pub mod store;

/// The version every larve reports on `/healthz` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
