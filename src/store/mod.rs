//! Where a queen's state lives: one versioned key-value engine, and typed views over it.
//!
//! ```text
//!   queen, API, liveness, scheduler
//!        │ register / remove / drain        │ create / change tasks
//!        ▼                                  ▼
//!   Store ── drones.rs, tasks.rs: records ⇄ keys, each change a compare-and-write (batch.rs)
//!        │                                  ▲
//!        ▼                                  │ sync.rs: list once, then watch
//!   Engine (engine.rs): range · txn · watch ├──► Registry (queen/registry.rs): drones, and this queen's
//!     ├── local.rs   (a queen alone,        │    view of their health
//!     │    + data_dir.rs with --data-dir)   ├──► TaskIndex (tasks/index.rs): tasks by id, state,
//!     └── etcd/      (queens sharing etcd)  │    drone
//!                                           └──► Events (queen/events/): each change, encoded
//!                                                once, for `GET /events`
//!   conformance.rs: the one contract every engine is checked against
//!   Leadership (leadership.rs): Alone, or the etcd election; fences the leader's writes
//! ```
//!
//! Every engine takes the same path: every write is a transaction on the engine, every change
//! reaches the views through the same watch, so a queen alone and queens on etcd differ only in
//! the engine and the leadership they are built with (in `larve.rs`). A queen applies her own
//! writes to her views at once (reads after writes see them); the watch brings the same change a
//! moment later, and a view takes a record only if it is newer than what it holds.
//!
//! Reads never touch the engine: submits, `/drones` and `/tasks` are served from the views, so
//! they go on while etcd is away, with what was last known.

pub mod batch;
pub mod conformance;
pub mod data_dir;
pub mod drones;
pub mod engine;
pub mod etcd;
pub mod keys;
pub mod leadership;
pub mod local;
mod sync;
pub mod tasks;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use log::{error, info, warn};
use parking_lot::Mutex;
use serde::Serialize;

use crate::error::Error;
use crate::queen::events::Events;
use crate::queen::registry::Registry;
use crate::tasks::index::TaskIndex;
use batch::Batcher;
use engine::{Engine, StoreError};
use keys::Keys;
use leadership::Leadership;

/// Pause before a thread that panicked starts again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// A queen's state: the engine, who leads, and the views kept from it.
pub struct Store {
    engine: Arc<dyn Engine>,
    leadership: Arc<dyn Leadership>,
    keys: Keys,
    batcher: Batcher,
    registry: Arc<Registry>,
    tasks: Arc<TaskIndex>,
    /// Every change the views took, as `GET /events` streams it.
    events: Arc<Events>,
    /// Shared with other queens (etcd): `/healthz` tells about it.
    shared: bool,
    /// `host:port` this queen is known by, once started.
    me: OnceLock<String>,
    /// Set once everything has been read: the queen serves from then on.
    ready: AtomicBool,
    /// Whether the engine answers, as the last call that tried found (the election's calls too).
    reach: Arc<Reachability>,
    /// Held by the registration in progress through this queen (see `drones.rs`).
    registering: Mutex<()>,
}

/// The store's part of a queen's `/healthz`, as its fields appear there (queens sharing etcd only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// `leader` or `follower`.
    pub role: &'static str,
    /// `host:port` of the queen that leads, if one does.
    pub leader: Option<String>,
    /// `etcd`, or why etcd cannot be reached.
    pub store: String,
}

impl Store {
    /// A store over `engine` under `prefix`, led by `leadership`; `shared` when other queens use
    /// the same engine. Nothing is read before [`Store::start`].
    pub fn new(
        engine: Arc<dyn Engine>,
        leadership: Arc<dyn Leadership>,
        reach: Arc<Reachability>,
        prefix: &str,
        shared: bool,
    ) -> Store {
        Store {
            engine,
            leadership,
            keys: Keys::new(prefix),
            batcher: Batcher::new(),
            registry: Arc::new(Registry::new()),
            tasks: Arc::new(TaskIndex::new()),
            events: Arc::new(Events::new(shared)),
            shared,
            me: OnceLock::new(),
            ready: AtomicBool::new(false),
            reach,
            registering: Mutex::new(()),
        }
    }

    /// The drones, as this queen knows them.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The tasks, as this queen knows them.
    pub fn tasks(&self) -> &Arc<TaskIndex> {
        &self.tasks
    }

    /// The changes the views took, for `GET /events`, and the revision the views reflect.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// Whether this queen leads now, which she does only once she has read the state she leads:
    /// a queen alone from her first read on (with a data dir, decisions on a half-read state would
    /// place tasks on slots that are taken), one on etcd once elected (she campaigns only after
    /// her first read).
    pub fn leads(&self) -> bool {
        self.ready() && self.leadership.term().is_some()
    }

    /// The `host:port` of the queen that leads, when another one does, as far as this one knows.
    pub fn other_leader(&self) -> Option<String> {
        let (leads, leader) = self.leadership.view();
        leader.filter(|leader| !leads && leader != self.me())
    }

    /// Whether any queen leads, as far as this one knows.
    pub fn has_leader(&self) -> bool {
        let (leads, leader) = self.leadership.view();
        leads || leader.is_some()
    }

    /// Lets leadership go now, on a clean stop.
    pub fn resign(&self) {
        self.leadership.resign();
    }

    /// Whether the queen has read the state to serve from.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Why the engine cannot be reached, if the last call that tried failed.
    pub fn unreachable(&self) -> Option<String> {
        self.reach.why()
    }

    /// What `/healthz` tells about the store and the election; `None` for a queen alone, whose
    /// answer stays the tutorial's.
    pub fn health(&self) -> Option<StoreHealth> {
        if !self.shared {
            return None;
        }
        let store = match self.reach.why() {
            None => "etcd".to_string(),
            Some(why) => format!("etcd unreachable: {why}"),
        };
        let (leads, leader) = self.leadership.view();
        Some(StoreHealth {
            role: if leads { "leader" } else { "follower" },
            leader,
            store,
        })
    }

    /// Starts the store's threads (the sync, and the election's), for the life of the process;
    /// `me` is the `host:port` other queens and users know this queen by.
    pub fn start(self: &Arc<Self>, me: String) -> std::io::Result<()> {
        if self.shared {
            info!(
                "state in etcd under {}; known to other queens as {}",
                crate::logging::quoted(&String::from_utf8_lossy(&self.keys.prefix)),
                crate::logging::quoted(&me)
            );
        }
        let _ = self.me.set(me.clone());
        self.supervise("store-sync", Store::sync)?;
        self.leadership.clone().start(me)
    }

    fn me(&self) -> &str {
        self.me.get().map_or("", String::as_str)
    }

    /// Notes how a call to the engine went (see [`Reachability::note`]).
    fn note<T>(&self, result: &Result<T, StoreError>) {
        self.reach.note(result);
    }

    /// Runs `body` on a thread named `name` for the life of the process, starting it again (after
    /// a pause) if it panics: a dead sync thread would leave the queen serving a state that no
    /// longer changes.
    fn supervise(self: &Arc<Self>, name: &str, body: fn(&Store) -> !) -> std::io::Result<()> {
        let store = self.clone();
        let thread_name = name.to_string();
        thread::Builder::new().name(name.into()).spawn(move || {
            loop {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| body(&store)));
                error!("the {thread_name} thread panicked; starting it again");
                thread::sleep(RESTART_PAUSE);
            }
        })?;
        Ok(())
    }
}

/// Whether the store answers, as the last call that tried found: what `/healthz` says, and why a
/// registration is refused at once while it does not. Shared by the store and the election.
#[derive(Debug, Default)]
pub struct Reachability {
    unreachable: Mutex<Option<String>>,
}

impl Reachability {
    /// Notes how a call went, logging when the store becomes unreachable or reachable again.
    pub fn note<T>(&self, result: &Result<T, StoreError>) {
        let mut unreachable = self.unreachable.lock();
        match result {
            Err(StoreError::Unreachable(why)) => {
                if unreachable.is_none() {
                    warn!("the store cannot be reached: {why}");
                }
                *unreachable = Some(why.clone());
            }
            _ => {
                if unreachable.take().is_some() {
                    info!("the store answers again");
                }
            }
        }
    }

    /// Why the store cannot be reached, if the last call that tried failed.
    pub fn why(&self) -> Option<String> {
        self.unreachable.lock().clone()
    }
}

/// A store failure as the API answers it: unreachable is worth retrying (503), anything else
/// needs someone to look (502).
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::Unreachable(_) => Error::StoreUnavailable(e.to_string()),
            StoreError::Refused(_) | StoreError::Malformed(_) => Error::StoreFailed(e.to_string()),
        }
    }
}
