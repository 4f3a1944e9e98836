//! Where the registry's membership lives: which drones exist and under what name.
//!
//! A queen alone keeps it in her memory ([`memory`]), as the tutorial does. Several queens keep it in
//! etcd ([`etcd`]), as Kubernetes does, and each holds a copy in her `Registry` that a watch keeps
//! current; one of them, elected through an etcd lease, runs the heartbeat and removes drones. Both
//! sit behind [`Store`], so the queen, the API and the heartbeat do not know which one they use:
//! registrations and removals go through the store, everything else reads the registry.

pub mod etcd;
pub mod memory;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::registry::{Registered, Target};

/// The membership writes every queen makes, and what she needs to know about her part.
pub trait Store: Send + Sync {
    /// Registers the drone at `address` (idempotently) and returns its name.
    fn register(&self, address: &str) -> Result<Registered>;

    /// Removes `target`, which failed every probe of a heartbeat round that started at `since`,
    /// unless it showed life after that. Returns whether it was removed.
    fn remove(&self, target: &Target, since: Instant) -> bool;

    /// Whether this queen runs the heartbeat now: always when alone, while she leads in etcd.
    fn leads(&self) -> bool;

    /// Whether the queen has the registry to serve from.
    fn ready(&self) -> bool;

    /// What `/healthz` tells about the store and the election; `None` for a queen alone, whose
    /// answer stays the tutorial's.
    fn health(&self) -> Option<StoreHealth>;

    /// Starts the threads the store needs, for the life of the process; `me` is the `host:port`
    /// other queens and users know this queen by.
    fn start(self: Arc<Self>, me: String) -> std::io::Result<()>;
}

/// The store's part of a queen's `/healthz`, as its fields appear there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// `leader` or `follower`.
    pub role: &'static str,
    /// `host:port` of the queen that leads, if one does.
    pub leader: Option<String>,
    /// `etcd`, or why etcd cannot be reached.
    pub store: String,
}
