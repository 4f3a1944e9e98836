//! Keeping a queen's views equal to the engine: read every key once, then follow a watch.
//!
//! A watch that breaks because the engine cannot be reached is opened again from where it stopped
//! once it can be: the engine keeps the changes a watch needs until it compacts them, so nothing
//! is missed and the queen's event stream goes on unbroken. A watch whose start revision the
//! engine has compacted away, or that the engine refused, means reading everything again. On etcd
//! a watch asks for a leader, so a member cut off from its cluster's quorum ends it rather than
//! fall silent (see `etcd/gateway.rs`); and since a watch says nothing while nothing changes, it
//! is opened again every [`WATCH_LIFETIME`] from where it stopped, which bounds how long a hung
//! member goes unnoticed. Changes are applied in the order the engine made them, each only if it
//! is newer than what the view holds; then each becomes a line of the event stream
//! (`queen/events/`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use super::Store;
use super::drones::StoredDrone;
use super::engine::{Event, Kv, StoreError, WatchMessage};
use super::keys::KeyKind;
use crate::logging::quoted;
use crate::queen::events::{self, Kind, Line, Type};
use crate::tasks::index::decode;

/// How long one watch is followed before it is opened again.
const WATCH_LIFETIME: Duration = Duration::from_secs(10);

/// Pauses between failed tries to read the state: from the first to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Store {
    /// Keeps the views equal to the engine, forever. After a failure it tries again after a pause
    /// that doubles while watches fail, and starts over once a watch is under way, so an engine
    /// that fails the same way each time is not called in a tight loop.
    pub(super) fn sync(&self) -> ! {
        let mut backoff = FIRST_BACKOFF;
        // Where to follow from without reading everything again; none until a read.
        let mut resume: Option<i64> = None;
        loop {
            let start = match resume.take() {
                Some(revision) => Ok(revision),
                None => {
                    let listed = self.list();
                    self.note(&listed);
                    listed.map(|revision| revision.saturating_add(1))
                }
            };
            let outcome = match start {
                Ok(mut revision) => {
                    let followed = self.follow(&mut revision, || {
                        backoff = FIRST_BACKOFF;
                    });
                    if followed.is_err() {
                        self.note(&followed);
                    }
                    if let Err(StoreError::Unreachable(_)) = followed {
                        resume = Some(revision);
                    }
                    followed
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                let then = if resume.is_some() {
                    "following again"
                } else {
                    "reading again"
                };
                debug!("store sync: {e}; {then} in {backoff:?}");
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
        self.events.listed(revision);
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

    /// Follows a watch on every key from `revision` (moved past each change applied), opening it
    /// again each `WATCH_LIFETIME`, and calls `started` each time the engine confirms one. Returns
    /// `Ok` (to read everything again at once) when the engine compacted the revisions it needs,
    /// and fails on anything else.
    fn follow(&self, revision: &mut i64, mut started: impl FnMut()) -> Result<(), StoreError> {
        loop {
            let end = self.keys.end();
            let mut watch =
                self.engine
                    .watch(&self.keys.prefix, &end, *revision, WATCH_LIFETIME)?;
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
                        let mut lines = Vec::new();
                        for event in events {
                            *revision = (*revision).max(event.revision().saturating_add(1));
                            lines.extend(self.apply(event));
                        }
                        // A message ends between revisions: everything before `revision` is in.
                        self.registry.settled(*revision - 1);
                        self.tasks.settled(*revision - 1);
                        self.events.publish(lines, *revision - 1);
                    }
                }
            }
        }
    }

    /// Applies one change to the views or the election, and returns its line for the event
    /// stream when it is a task's or a drone's.
    fn apply(&self, event: Event) -> Option<Line> {
        match event {
            Event::Put(kv) => match self.keys.kind(&kv.key) {
                KeyKind::Drone(address) => {
                    let stored = self.stored_drone(&address, &kv)?;
                    let record = stored.record(&kv);
                    let applied = self.registry.apply(&record);
                    stored.log_registered_elsewhere(applied, self.me());
                    let change = Type::of_put(kv.create_revision, kv.mod_revision);
                    Some(events::drone(kv.mod_revision, change, &record))
                }
                KeyKind::Task(id) => {
                    if let Err(why) = self.tasks.apply(&id, &kv) {
                        warn!("ignoring task {} in the store: {why}", quoted(&id));
                        return None;
                    }
                    // The index holds this very write unless a newer one overtook it.
                    let task = match self.tasks.get(&id) {
                        Some(stored) if stored.revision == kv.mod_revision => stored.task,
                        _ => Arc::new(decode(&id, &kv).ok()?),
                    };
                    let change = Type::of_put(kv.create_revision, kv.mod_revision);
                    Some(events::task(kv.mod_revision, change, &task))
                }
                KeyKind::Leader => {
                    self.leadership.leader_seen(Some(&kv));
                    None
                }
                KeyKind::Handover => {
                    self.leadership.handover_seen(&kv);
                    None
                }
                KeyKind::Other => None,
            },
            Event::Delete { key, revision } => match self.keys.kind(&key) {
                KeyKind::Drone(address) => {
                    if let Some(gone) = self.registry.forget(&address, revision) {
                        info!("{} ({}) was removed", gone.name, quoted(&address));
                    }
                    Some(events::deleted(revision, Kind::Drone, &address))
                }
                KeyKind::Task(id) => {
                    self.tasks.forget(&id, revision);
                    Some(events::deleted(revision, Kind::Task, &id))
                }
                KeyKind::Leader => {
                    self.leadership.leader_seen(None);
                    None
                }
                KeyKind::Handover | KeyKind::Other => None,
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
