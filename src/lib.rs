//! Hive: a small Kubernetes-like orchestrator.
//!
//! One binary, `larve`, runs as a **drone** (the worker, like a kubelet) or a **queen** (the control
//! plane). The house is drawn in one direction:
//!
//! ```text
//! cli ──► config ──► larve (composition root) ──► queen/ or drone/ (a role owns its threads)
//!                        │                          queen/: registry (who the drones are),
//!                        │                                  liveness (leases, probes, re-checks:
//!                        │                                  who is still alive),
//!                        │                                  scheduler (placing and starting tasks),
//!                        │                                  events (every change, for GET /events)
//!                        │                          drone/: registration, lease, attempts, reports
//!                        │                          exec/: one attempt's command, on a drone
//!                        │                          store/: where a queen's state lives (memory,
//!                        │                                  or etcd via its gateway)
//!                        │                          client: every outbound call, with a timeout
//!                        ├── api    (routes requests to the role; ui: the dashboard's page)
//!                        └── server (HTTP, translates only: tiny_http behind a Unix socket)
//!                              └── front/ (the front door: accepts, limits, TLS, and hands
//!                                          tiny_http only well-formed, bounded requests)
//! tls: certificates and keys for the front (server side) and the client (HTTPS calls)
//! labels: what a drone says it is, and the constraints a task asks of its drone
//! metrics: what every part counts, for GET /metrics
//! clock: the time as the store's records keep it
//! ```

pub mod address;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod drone;
pub mod error;
pub mod exec;
pub mod front;
pub mod labels;
pub mod larve;
pub mod logging;
pub mod metrics;
pub mod queen;
pub mod server;
pub mod signals;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod ui;

/// The version every larve reports on `/healthz` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
