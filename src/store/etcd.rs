//! Several queens, one registry in etcd: what Kubernetes does with kube-apiserver and etcd.
//!
//! Keys, under the prefix (`/hive/` by default):
//!
//! | key                     | value                                        | written by                |
//! |-------------------------|----------------------------------------------|---------------------------|
//! | `drones/<host:port>`    | `{"name", "address", "registered_at"}`       | any queen, at registration |
//! | `next_id`               | the number of the next `drone-N`             | bumped in the same txn    |
//! | `leader`                | `host:port` of the queen that leads          | the leader, on her lease  |
//!
//! Each queen runs two threads here:
//! - **sync** reads every key once, then follows a watch, and keeps her `Registry` equal to
//!   etcd's drones (a broken watch, or one whose revision was compacted away, means reading
//!   everything again). Submits and `/drones` read that copy, never etcd, so they go on while etcd
//!   is away, with the drones last known.
//! - **election**: a queen grants herself a lease and creates the leader key on it, only if it is
//!   absent (a txn comparing its create revision with 0). The winner renews the lease every third
//!   of its TTL and steps down at once when a renewal says the lease is gone, or when none has
//!   worked for a whole TTL. The others wait for the watch to show the key deleted, then try.
//!
//! Only the leader runs the heartbeat, and each removal is a txn that holds only while the leader
//! key is still the one she created and the drone's key has not been written since she decided
//! (it registered again): a paused ex-leader removes nothing. Registrations go through any queen,
//! in a txn that bumps the name counter and creates the drone's key together, so two queens never
//! give out one name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::config::EtcdConfig;
use crate::error::{Error, Result};
use crate::logging::quoted;
use crate::registry::{Applied, Record, Registered, Registry, Target, unix_seconds};
use crate::store::gateway::{Event, Gateway, GatewayError, Kv, Txn, WatchMessage};
use crate::store::{Store, StoreHealth};

/// Limit for one call to one etcd member. A member without quorum answers only after ~5 s, so a
/// call gives up well before and tries the next member.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one watch stream is followed before it is opened again (from where it stopped). An
/// idle watch sends nothing, so this bounds how long a silent, hung member goes unnoticed.
const WATCH_LIFETIME: Duration = Duration::from_secs(10);

/// Pauses between failed tries to read the registry: from the first to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Pause after a failed election call, so an etcd that refuses at once is not called in a loop.
const ELECTION_RETRY: Duration = Duration::from_millis(100);

/// Tries of a registration whose txn lost a race with another queen's (the name counter moved).
/// A retry starts at once from what the failed txn read, so it beats registrations that still have
/// to read: a queen cannot starve the others.
const REGISTER_TRIES: u32 = 50;

/// Longest a registration waits for its turn on this queen (see [`Etcd::register_in_etcd`]).
const REGISTER_TURN_WAIT: Duration = Duration::from_millis(1500);

/// The registry in etcd, and this queen's part in the election.
pub struct Etcd {
    config: EtcdConfig,
    gateway: Gateway,
    registry: Arc<Registry>,
    keys: Keys,
    /// `host:port` this queen is known by: the leader key's value when she leads.
    me: Mutex<String>,
    /// Set once the registry has been read: the queen serves from then on.
    ready: AtomicBool,
    election: Mutex<Election>,
    /// Woken when the leader key changes, so a follower campaigns at once when it goes.
    leader_changed: Condvar,
    /// Why etcd could not be reached, when the last call that tried failed.
    unreachable: Mutex<Option<String>>,
    /// Held by the registration in progress through this queen.
    registering: Mutex<()>,
}

/// Who leads, as this queen knows it.
#[derive(Debug, Default)]
struct Election {
    /// The leader key's value, if it exists.
    leader: Option<String>,
    /// This queen's term, while she leads.
    term: Option<Term>,
}

/// A leader's hold on the leader key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    lease: i64,
    ttl: Duration,
    /// The leader key's create revision: unique to this term, so removals can check it is current.
    key_revision: i64,
    /// When the last renewal that worked was sent: the lease lives at least `ttl` from then.
    renewed: Instant,
}

impl Term {
    /// Whether the lease is surely still alive at `now`. Past that, this queen must act as if
    /// another one leads, whatever etcd says later.
    fn holds(&self, now: Instant) -> bool {
        now < self.renewed + self.ttl
    }

    /// When to renew: a third of the TTL after the last renewal.
    fn renew_at(&self) -> Instant {
        self.renewed + self.ttl / 3
    }
}

/// Hive's keys under one prefix.
struct Keys {
    prefix: Vec<u8>,
    drones: Vec<u8>,
    next_id: Vec<u8>,
    leader: Vec<u8>,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
enum KeyKind {
    Drone(String),
    Leader,
    Other,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let key = |name: &str| format!("{prefix}{name}").into_bytes();
        Keys {
            prefix: prefix.as_bytes().to_vec(),
            drones: key("drones/"),
            next_id: key("next_id"),
            leader: key("leader"),
        }
    }

    fn drone(&self, address: &str) -> Vec<u8> {
        [&self.drones[..], address.as_bytes()].concat()
    }

    /// The first key past every key under the prefix: the prefix with its last byte plus one.
    fn prefix_end(&self) -> Vec<u8> {
        let mut end = self.prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        end
    }

    fn kind(&self, key: &[u8]) -> KeyKind {
        if key == self.leader.as_slice() {
            return KeyKind::Leader;
        }
        match key
            .strip_prefix(self.drones.as_slice())
            .and_then(|a| std::str::from_utf8(a).ok())
        {
            Some(address) if crate::address::validate(address).is_ok() => {
                KeyKind::Drone(address.to_string())
            }
            _ => KeyKind::Other,
        }
    }
}

/// A drone's key's value.
#[derive(Debug, Serialize, Deserialize)]
struct StoredDrone {
    name: String,
    address: String,
    registered_at: f64,
}

impl Etcd {
    /// The registry in etcd, copied into `registry`. Nothing is called before [`Store::start`].
    pub fn new(config: EtcdConfig, registry: Arc<Registry>) -> Etcd {
        Etcd {
            gateway: Gateway::new(config.endpoints.clone(), CALL_TIMEOUT),
            keys: Keys::new(&config.prefix),
            config,
            registry,
            me: Mutex::new(String::new()),
            ready: AtomicBool::new(false),
            election: Mutex::new(Election::default()),
            leader_changed: Condvar::new(),
            unreachable: Mutex::new(None),
            registering: Mutex::new(()),
        }
    }

    /// Notes how a call to etcd went, logging when etcd becomes unreachable or reachable again.
    fn note<T>(&self, result: &std::result::Result<T, GatewayError>) {
        let mut unreachable = self.unreachable.lock();
        match result {
            Err(GatewayError::Unreachable(why)) => {
                if unreachable.is_none() {
                    warn!("etcd cannot be reached: {why}");
                }
                *unreachable = Some(why.clone());
            }
            _ => {
                if unreachable.take().is_some() {
                    info!("etcd answers again");
                }
            }
        }
    }

    /// The current term, if this queen leads.
    fn term(&self) -> Option<Term> {
        let election = self.election.lock();
        election.term.filter(|term| term.holds(Instant::now()))
    }

    fn me(&self) -> String {
        self.me.lock().clone()
    }

    // --- registry sync ---------------------------------------------------------------------------

    /// Keeps the registry equal to etcd's drones, forever.
    fn sync(&self) -> ! {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let listed = self.list();
            self.note(&listed);
            let outcome = listed.and_then(|revision| {
                backoff = FIRST_BACKOFF;
                self.follow(revision + 1)
            });
            if let Err(e) = outcome {
                self.note(&Err::<(), _>(e.clone()));
                debug!("registry sync: {e}; reading etcd again in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Reads every key and makes the registry hold exactly etcd's drones. Returns the revision read.
    fn list(&self) -> std::result::Result<i64, GatewayError> {
        let (kvs, revision) = self
            .gateway
            .range(&self.keys.prefix, Some(&self.keys.prefix_end()))?;
        let mut records = Vec::new();
        let mut leader = None;
        for kv in &kvs {
            match self.keys.kind(&kv.key) {
                KeyKind::Drone(address) => records.extend(self.record(&address, kv)),
                KeyKind::Leader => leader = Some(kv),
                KeyKind::Other => {}
            }
        }
        for gone in self.registry.replace_all(&records) {
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
            let _election = self.election.lock();
            self.leader_changed.notify_all();
        }
        Ok(revision)
    }

    /// Follows a watch on every key from `revision`, opening it again each `WATCH_LIFETIME`.
    /// Returns (to read everything again) when etcd cancels it, or fails.
    fn follow(&self, mut revision: i64) -> std::result::Result<(), GatewayError> {
        loop {
            let (prefix, end) = (&self.keys.prefix, self.keys.prefix_end());
            let mut watch = self.gateway.watch(prefix, &end, revision, WATCH_LIFETIME)?;
            while let Some(message) = watch.next_message()? {
                match message {
                    WatchMessage::Created { .. } | WatchMessage::Progress { .. } => {}
                    WatchMessage::Canceled { compact_revision } => {
                        info!(
                            "the watch on etcd was cancelled (compacted to revision {compact_revision}); reading everything again"
                        );
                        return Ok(());
                    }
                    WatchMessage::Events(events) => {
                        for event in events {
                            revision = revision.max(self.apply(event) + 1);
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
                        if let Some(record) = self.record(&address, &kv)
                            && self.registry.apply(&record) == Applied::Added
                        {
                            info!(
                                "{} at {} registered (seen in etcd)",
                                record.name,
                                quoted(&address)
                            );
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
                        if let Some(gone) = self.registry.forget_address(&address) {
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

    /// A drone's record from its key-value, or `None` (and a warning) if the value is not one.
    fn record(&self, address: &str, kv: &Kv) -> Option<Record> {
        match serde_json::from_slice::<StoredDrone>(&kv.value) {
            Ok(stored) if stored.address == address && !stored.name.is_empty() => Some(Record {
                address: stored.address,
                name: stored.name,
                registered_at: stored.registered_at,
                order: kv.create_revision.unsigned_abs(),
                revision: kv.mod_revision,
            }),
            _ => {
                warn!(
                    "ignoring the drone key of {} in etcd: its value is not a registration",
                    quoted(address)
                );
                None
            }
        }
    }

    /// The leader key as the watch or a read shows it (`None`: deleted). A leader whose key is
    /// gone or no longer hers steps down at once.
    fn leader_seen(&self, kv: Option<&Kv>) {
        let leader = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let mut election = self.election.lock();
        if let Some(term) = election.term {
            let still_mine = kv.is_some_and(|kv| kv.create_revision == term.key_revision);
            if !still_mine {
                election.term = None;
                warn!(
                    "this queen no longer leads: the leader key is no longer hers (leader now {})",
                    leader.as_deref().map_or("none".to_string(), quoted)
                );
            }
        }
        if election.leader != leader {
            debug!("leader key: {leader:?}");
            election.leader = leader;
            self.leader_changed.notify_all();
        }
    }

    // --- election --------------------------------------------------------------------------------

    /// Campaigns while no queen leads, and renews the lease while this one does, forever.
    fn elect(&self) -> ! {
        loop {
            let term = self.election.lock().term;
            match term {
                Some(term) => self.keep_leading(term),
                None => self.campaign(),
            }
        }
    }

    fn keep_leading(&self, term: Term) {
        let wait = term.renew_at().saturating_duration_since(Instant::now());
        thread::sleep(wait);
        if !term.holds(Instant::now()) {
            self.step_down(term, "its lease was not renewed for a whole TTL");
            return;
        }
        let sent = Instant::now();
        let renewed = self.gateway.keep_alive(term.lease);
        self.note(&renewed);
        let mut election = self.election.lock();
        if election.term != Some(term) {
            return; // Stepped down meanwhile (the watch saw the key go).
        }
        match renewed {
            Ok(Some(ttl)) => {
                election.term = Some(Term {
                    ttl,
                    renewed: sent,
                    ..term
                });
            }
            Ok(None) => {
                drop(election);
                self.step_down(term, "its lease expired");
            }
            Err(e) => {
                drop(election);
                debug!("could not renew the leader lease: {e}");
                thread::sleep(ELECTION_RETRY);
            }
        }
    }

    fn step_down(&self, term: Term, why: &str) {
        {
            let mut election = self.election.lock();
            if election.term != Some(term) {
                return;
            }
            election.term = None;
            if election.leader.as_deref() == Some(self.me().as_str()) {
                election.leader = None;
            }
        }
        warn!("this queen no longer leads: {why}");
        // Let the key go now rather than a TTL from now, if etcd still holds the lease.
        let _ = self.gateway.revoke(term.lease);
    }

    /// Tries to become the leader if no queen is; otherwise waits until the leader key goes.
    fn campaign(&self) {
        {
            let mut election = self.election.lock();
            if election.leader.is_some() || !self.ready.load(Ordering::Relaxed) {
                // Woken when the watch sees the key change; the timeout only guards a watch that
                // is down (then a campaign could not reach etcd either).
                let ttl = self.config.leader_ttl;
                self.leader_changed.wait_for(&mut election, ttl);
                return;
            }
        }
        let me = self.me();
        let sent = Instant::now();
        let lease = self.gateway.grant(self.config.leader_ttl);
        self.note(&lease);
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                debug!("could not campaign: {e}");
                thread::sleep(ELECTION_RETRY);
                return;
            }
        };
        let key = &self.keys.leader;
        let txn = Txn::new()
            .if_absent(key)
            .put(key, me.as_bytes(), lease.id)
            .or_read(key);
        let won = self.gateway.txn(&txn);
        self.note(&won);
        match won {
            Ok(result) if result.succeeded => {
                let mut election = self.election.lock();
                election.term = Some(Term {
                    lease: lease.id,
                    ttl: lease.ttl,
                    key_revision: result.revision,
                    renewed: sent,
                });
                election.leader = Some(me.clone());
                info!(
                    "this queen leads now (lease of {:?}, renewed every {:?})",
                    lease.ttl,
                    lease.ttl / 3
                );
            }
            Ok(result) => {
                let _ = self.gateway.revoke(lease.id);
                let leader = result.reads.into_iter().next().flatten();
                self.leader_seen(leader.as_ref());
            }
            Err(e) => {
                let _ = self.gateway.revoke(lease.id);
                debug!("could not campaign: {e}");
                thread::sleep(ELECTION_RETRY);
            }
        }
    }

    // --- registration ----------------------------------------------------------------------------

    /// One registration, retried while it loses races for the name counter.
    ///
    /// Registrations through this queen take turns: all of them bump the one counter, so at once
    /// they would mostly fail each other's compares. In turn, only other queens' can race one.
    /// The turn is held across the calls to etcd (each limited by `CALL_TIMEOUT`), but never the
    /// registry's lock, and a registration that waits too long for it is refused.
    fn register_in_etcd(&self, address: &str) -> std::result::Result<Registered, GatewayError> {
        let Some(_turn) = self.registering.try_lock_for(REGISTER_TURN_WAIT) else {
            return Err(GatewayError::Unreachable(
                "registrations are queued behind a slow etcd; try again".into(),
            ));
        };
        let key = self.keys.drone(address);
        let counter = &self.keys.next_id;
        let read = Txn::new().read(&key).read(counter);
        let mut seen = self.gateway.txn(&read)?.reads;
        for _ in 0..REGISTER_TRIES {
            let (drone, next_id) = match seen.as_slice() {
                [drone, next_id] => (drone.clone(), next_id.clone()),
                _ => {
                    return Err(GatewayError::Malformed(
                        "a txn answered without its two reads".into(),
                    ));
                }
            };
            let (txn, record, new) = match drone {
                // Known: write it again, so a removal decided before now no longer applies.
                Some(kv) => {
                    let record = self.record(address, &kv).ok_or_else(|| {
                        GatewayError::Malformed(format!("the drone key of {address:?}"))
                    })?;
                    let txn = Txn::new()
                        .if_modified_at(&key, kv.mod_revision)
                        .put(&key, &kv.value, 0);
                    (txn, record, false)
                }
                None => {
                    let n = match &next_id {
                        Some(kv) => std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|text| text.parse::<u64>().ok())
                            .ok_or_else(|| {
                                GatewayError::Malformed("the name counter is not a number".into())
                            })?,
                        None => 0,
                    };
                    let stored = StoredDrone {
                        name: format!("drone-{n}"),
                        address: address.to_string(),
                        registered_at: unix_seconds(SystemTime::now()),
                    };
                    let value = serde_json::to_vec(&stored).expect("a registration serializes");
                    let txn = match &next_id {
                        Some(kv) => Txn::new().if_modified_at(counter, kv.mod_revision),
                        None => Txn::new().if_absent(counter),
                    }
                    .if_absent(&key)
                    .put(counter, (n + 1).to_string().as_bytes(), 0)
                    .put(&key, &value, 0);
                    let record = Record {
                        address: stored.address,
                        name: stored.name,
                        registered_at: stored.registered_at,
                        order: 0,
                        revision: 0,
                    };
                    (txn, record, true)
                }
            };
            let result = self.gateway.txn(&txn.or_read(&key).or_read(counter))?;
            if result.succeeded {
                // The txn's writes carry its revision: the key's mod revision, and for a new
                // drone its create revision too.
                let record = Record {
                    order: if new {
                        result.revision.unsigned_abs()
                    } else {
                        record.order
                    },
                    revision: result.revision,
                    ..record
                };
                let applied = self.registry.apply(&record);
                return Ok(Registered {
                    name: record.name,
                    new: new && applied == Applied::Added,
                });
            }
            seen = result.reads;
        }
        Err(GatewayError::Unreachable(
            "too many registrations at once; try again".into(),
        ))
    }
}

impl Store for Etcd {
    fn register(&self, address: &str) -> Result<Registered> {
        let registered = self.register_in_etcd(address);
        self.note(&registered);
        registered.map_err(|e| Error::StoreUnavailable(e.to_string()))
    }

    fn remove(&self, target: &Target, since: Instant) -> bool {
        let Some(term) = self.term() else {
            return false;
        };
        if self.registry.seen_since(target, since) {
            return false;
        }
        let Some(revision) = self.registry.revision(target) else {
            return false;
        };
        let key = self.keys.drone(&target.address);
        let txn = Txn::new()
            .if_created_at(&self.keys.leader, term.key_revision)
            .if_modified_at(&key, revision)
            .delete(&key);
        let removed = self.gateway.txn(&txn);
        self.note(&removed);
        match removed {
            Ok(result) if result.succeeded => {
                self.registry.forget(target);
                true
            }
            Ok(_) => {
                debug!(
                    "{} ({}) not removed: it registered again, or this queen no longer leads",
                    target.name,
                    quoted(&target.address)
                );
                false
            }
            Err(e) => {
                warn!(
                    "could not remove {} ({}) from etcd: {e}",
                    target.name,
                    quoted(&target.address)
                );
                false
            }
        }
    }

    fn leads(&self) -> bool {
        self.term().is_some()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn health(&self) -> Option<StoreHealth> {
        let store = match self.unreachable.lock().as_ref() {
            None => "etcd".to_string(),
            Some(why) => format!("etcd unreachable: {why}"),
        };
        Some(StoreHealth {
            role: if self.leads() { "leader" } else { "follower" },
            leader: self.election.lock().leader.clone(),
            store,
        })
    }

    fn start(self: Arc<Self>, me: String) -> std::io::Result<()> {
        info!(
            "registry in etcd at {} under {}; known to other queens as {}",
            self.config.endpoints.join(","),
            quoted(&self.config.prefix),
            quoted(&me)
        );
        *self.me.lock() = me;
        let syncing = self.clone();
        thread::Builder::new()
            .name("etcd-sync".into())
            .spawn(move || syncing.sync())?;
        thread::Builder::new()
            .name("election".into())
            .spawn(move || self.elect())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_hives_keys_from_anything_else() {
        let keys = Keys::new("/hive/");
        assert_eq!(keys.drone("127.0.0.1:5001"), b"/hive/drones/127.0.0.1:5001");
        assert_eq!(keys.prefix_end(), b"/hive0");
        assert_eq!(
            keys.kind(b"/hive/drones/127.0.0.1:5001"),
            KeyKind::Drone("127.0.0.1:5001".into())
        );
        assert_eq!(keys.kind(b"/hive/leader"), KeyKind::Leader);
        for other in [
            &b"/hive/next_id"[..],
            b"/hive/drones/evil.example/x#",
            b"/hive/drones/\xff",
            b"/hive/leader2",
        ] {
            assert_eq!(keys.kind(other), KeyKind::Other, "{other:?}");
        }
    }

    #[test]
    fn a_term_holds_for_a_ttl_from_its_last_renewal() {
        let now = Instant::now();
        let term = Term {
            lease: 1,
            ttl: Duration::from_secs(3),
            key_revision: 7,
            renewed: now,
        };
        assert!(term.holds(now + Duration::from_millis(2999)));
        assert!(!term.holds(now + Duration::from_secs(3)));
        assert_eq!(term.renew_at(), now + Duration::from_secs(1));
    }
}
