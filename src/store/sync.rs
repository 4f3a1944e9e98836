//! Keeping a queen's views equal to the engine: read every key once, then follow a watch.
//!
//! A watch that breaks, or whose start revision the engine has compacted away, means reading
//! everything again. On etcd a watch asks for a leader, so a member cut off from its cluster's
//! quorum ends it rather than fall silent (see `etcd/gateway.rs`); and since a watch says nothing
//! while nothing changes, it is opened again every [`WATCH_LIFETIME`] from where it stopped, which
//! bounds how long a hung member goes unnoticed. Changes are applied in the order the engine made
//! them, each only if it is newer than what the view holds.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use super::Store;
use super::drones::StoredDrone;
use super::engine::{Event, Kv, StoreError, WatchMessage};
use super::keys::KeyKind;
use crate::logging::quoted;

/// How long one watch is followed before it is opened again.
const WATCH_LIFETIME: Duration = Duration::from_secs(10);

/// Pauses between failed tries to read the state: from the first to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Store {
    /// Keeps the views equal to the engine, forever. After a failure it reads again after a pause
    /// that doubles while watches fail, and starts over once a watch is under way, so an engine
    /// that fails the same way each time is not read in a tight loop.
    pub(super) fn sync(&self) -> ! {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let listed = self.list();
            self.note(&listed);
            let outcome = match listed {
                Ok(revision) => {
                    let followed = self.follow(revision.saturating_add(1), || {
                        backoff = FIRST_BACKOFF;
                    });
                    if followed.is_err() {
                        self.note(&followed);
                    }
                    followed
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                debug!("store sync: {e}; reading again in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Reads every key and makes the views hold exactly what the engine holds. Returns the
    /// revision read.
    fn list(&self) -> Result<i64, StoreError> {
        let (kvs, revision) = self
            .engine
            .range(&self.keys.prefix, Some(&self.keys.end()))?;
        let mut drones = Vec::new();
        let mut tasks = Vec::new();
        let mut leader = None;
        for kv in &kvs {
            match self.keys.kind(&kv.key) {
                KeyKind::Drone(address) => {
                    drones.extend(self.stored_drone(&address, kv).map(|s| s.record(kv)));
                }
                KeyKind::Task(id) => tasks.push((id, kv)),
                KeyKind::Leader => leader = Some(kv),
                KeyKind::Handover | KeyKind::Other => {}
            }
        }
        for gone in self.registry.replace_all(&drones, revision) {
            info!(
                "{} ({}) is no longer registered",
                gone.name,
                quoted(&gone.address)
            );
        }
        let (read, unreadable) = self.tasks.replace_all(&tasks, revision);
        for (id, why) in unreadable {
            warn!("ignoring task {} in the store: {why}", quoted(&id));
        }
        self.leadership.leader_seen(leader);
        if !self.ready.swap(true, Ordering::Relaxed) {
            info!(
                "read the hive's state: {} drones, {read} tasks, revision {revision}",
                drones.len()
            );
            // A follower campaigns only once she knows the state she would lead.
            self.leadership.store_read();
        }
        Ok(revision)
    }

    /// Follows a watch on every key from `revision`, opening it again each `WATCH_LIFETIME`, and
    /// calls `started` each time the engine confirms one. Returns `Ok` (to read everything again
    /// at once) when the engine compacted the revisions it needs, and fails on anything else.
    fn follow(&self, mut revision: i64, mut started: impl FnMut()) -> Result<(), StoreError> {
        loop {
            let end = self.keys.end();
            let mut watch = self
                .engine
                .watch(&self.keys.prefix, &end, revision, WATCH_LIFETIME)?;
            while let Some(message) = watch.next_message()? {
                match message {
                    WatchMessage::Created => started(),
                    WatchMessage::Progress => {}
                    WatchMessage::Canceled {
                        compact_revision: 0,
                    } => {
                        return Err(StoreError::Refused("the store cancelled the watch".into()));
                    }
                    WatchMessage::Canceled { compact_revision } => {
                        info!(
                            "the watch on the store was cancelled (compacted to revision {compact_revision}); reading everything again"
                        );
                        return Ok(());
                    }
                    WatchMessage::Events(events) => {
                        for event in events {
                            revision = revision.max(event.revision().saturating_add(1));
                            self.apply(event);
                        }
                        // A message ends between revisions: everything before `revision` is in.
                        self.registry.settled(revision - 1);
                        self.tasks.settled(revision - 1);
                    }
                }
            }
        }
    }

    /// Applies one change to the views or the election.
    fn apply(&self, event: Event) {
        match event {
            Event::Put(kv) => match self.keys.kind(&kv.key) {
                KeyKind::Drone(address) => {
                    if let Some(stored) = self.stored_drone(&address, &kv) {
                        let applied = self.registry.apply(&stored.record(&kv));
                        stored.log_registered_elsewhere(applied, self.me());
                    }
                }
                KeyKind::Task(id) => {
                    if let Err(why) = self.tasks.apply(&id, &kv) {
                        warn!("ignoring task {} in the store: {why}", quoted(&id));
                    }
                }
                KeyKind::Leader => self.leadership.leader_seen(Some(&kv)),
                KeyKind::Handover => self.leadership.handover_seen(&kv),
                KeyKind::Other => {}
            },
            Event::Delete { key, revision } => match self.keys.kind(&key) {
                KeyKind::Drone(address) => {
                    if let Some(gone) = self.registry.forget(&address, revision) {
                        info!("{} ({}) was removed", gone.name, quoted(&address));
                    }
                }
                KeyKind::Task(id) => self.tasks.forget(&id, revision),
                KeyKind::Leader => self.leadership.leader_seen(None),
                KeyKind::Handover | KeyKind::Other => {}
            },
        }
    }

    /// A drone key's registration, or `None` (and a warning) if its value is not one.
    fn stored_drone(&self, address: &str, kv: &Kv) -> Option<StoredDrone> {
        StoredDrone::read(address, kv)
            .inspect_err(|why| {
                warn!(
                    "ignoring the drone key of {} in the store: {why}",
                    quoted(address)
                );
            })
            .ok()
    }
}
