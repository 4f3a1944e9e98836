//! Keeping a queen's registry equal to etcd's drones: read every key once, then follow a watch.
//!
//! A watch that breaks, or whose start revision etcd has compacted away, means reading everything
//! again. A watch asks for a leader, so a member cut off from its cluster's quorum ends it rather
//! than fall silent (see `gateway.rs`); and since a watch says nothing while nothing changes, it is
//! opened again every [`WATCH_LIFETIME`] from where it stopped, which bounds how long a hung member
//! goes unnoticed. Changes are applied in the order etcd made them, each only if it is newer than what
//! the registry holds (see `Registry::apply`).

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use log::{debug, info, warn};

use super::gateway::{Event, GatewayError, Kv, WatchMessage};
use super::{Etcd, KeyKind, StoredDrone, log_registered_elsewhere};
use crate::logging::quoted;

/// How long one watch stream is followed before it is opened again.
const WATCH_LIFETIME: Duration = Duration::from_secs(10);

/// Pauses between failed tries to read the registry: from the first to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Etcd {
    /// Keeps the registry equal to etcd's drones, forever. After a failure it reads again after a
    /// pause that doubles while watches fail, and starts over once a watch is under way, so an
    /// etcd that fails the same way each time is not read in a tight loop.
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
                debug!("registry sync: {e}; reading etcd again in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Reads every key and makes the registry hold exactly etcd's drones. Returns the revision read.
    fn list(&self) -> Result<i64, GatewayError> {
        let (kvs, revision) = self
            .gateway
            .range(&self.keys.prefix, Some(&self.keys.prefix_end()))?;
        let mut records = Vec::new();
        let mut leader = None;
        for kv in &kvs {
            match self.keys.kind(&kv.key) {
                KeyKind::Drone(address) => {
                    records.extend(self.stored(&address, kv).map(|s| s.record(kv)));
                }
                KeyKind::Leader => leader = Some(kv),
                KeyKind::Other => {}
            }
        }
        for gone in self.registry.replace_all(&records, revision) {
            info!(
                "{} ({}) is no longer registered in etcd",
                gone.name,
                quoted(&gone.address)
            );
        }
        self.leader_seen(leader);
        if !self.ready.swap(true, Ordering::Relaxed) {
            info!(
                "read the registry from etcd: {} drones, revision {revision}",
                records.len()
            );
            // The election waits for this before its first campaign.
            self.election.wake();
        }
        Ok(revision)
    }

    /// Follows a watch on every key from `revision`, opening it again each `WATCH_LIFETIME`, and
    /// calls `started` each time etcd confirms one. Returns `Ok` (to read everything again at
    /// once) when etcd compacted the revisions it needs, and fails on anything else.
    fn follow(&self, mut revision: i64, mut started: impl FnMut()) -> Result<(), GatewayError> {
        loop {
            let (prefix, end) = (&self.keys.prefix, self.keys.prefix_end());
            let mut watch = self.gateway.watch(prefix, &end, revision, WATCH_LIFETIME)?;
            while let Some(message) = watch.next_message()? {
                match message {
                    WatchMessage::Created => started(),
                    WatchMessage::Progress => {}
                    WatchMessage::Canceled {
                        compact_revision: 0,
                    } => {
                        return Err(GatewayError::Refused {
                            status: 200,
                            message: "etcd cancelled the watch".into(),
                        });
                    }
                    WatchMessage::Canceled { compact_revision } => {
                        info!(
                            "the watch on etcd was cancelled (compacted to revision {compact_revision}); reading everything again"
                        );
                        return Ok(());
                    }
                    WatchMessage::Events(events) => {
                        for event in events {
                            revision = revision.max(self.apply(event).saturating_add(1));
                        }
                    }
                }
            }
        }
    }

    /// Applies one change to the registry or the election; returns its revision.
    fn apply(&self, event: Event) -> i64 {
        match event {
            Event::Put(kv) => {
                match self.keys.kind(&kv.key) {
                    KeyKind::Drone(address) => {
                        if let Some(stored) = self.stored(&address, &kv) {
                            let applied = self.registry.apply(&stored.record(&kv));
                            log_registered_elsewhere(&stored, applied, self.me());
                        }
                    }
                    KeyKind::Leader => self.leader_seen(Some(&kv)),
                    KeyKind::Other => {}
                }
                kv.mod_revision
            }
            Event::Delete { key, revision } => {
                match self.keys.kind(&key) {
                    KeyKind::Drone(address) => {
                        if let Some(gone) = self.registry.forget(&address, revision) {
                            info!("{} ({}) was removed from etcd", gone.name, quoted(&address));
                        }
                    }
                    KeyKind::Leader => self.leader_seen(None),
                    KeyKind::Other => {}
                }
                revision
            }
        }
    }

    /// A drone key's registration, or `None` (and a warning) if its value is not one.
    fn stored(&self, address: &str, kv: &Kv) -> Option<StoredDrone> {
        StoredDrone::read(address, kv)
            .inspect_err(|why| {
                warn!(
                    "ignoring the drone key of {} in etcd: {why}",
                    quoted(address)
                );
            })
            .ok()
    }
}
