//! The queen's registry: which drones exist, under what name, and what she last heard from them.
//!
//! The drones themselves live in the store (`store/drones.rs`); this is a queen's copy of them, kept
//! current by the store's watch ([`Registry::apply`]), plus what this queen has seen of their
//! health herself: renewals of their leases, probes and tasks that failed, and when each is to be
//! probed next (`liveness/schedule.rs` decides; the registry keeps the queue, under the same lock
//! as the drones it orders). Renewals live here only, in the leader's memory: the store is written
//! when a drone's state changes, never because it is alive.
//!
//! Every method takes the lock for a few map operations, never for all drones on a request's path
//! (a submit picks drones at random, [`Registry::pick`]), and never while doing I/O: callers copy
//! what they need out ([`Registry::due`]), talk to drones unlocked, and report back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::liveness::schedule::{Kind, Queue, Timetable};
use super::liveness::tries::Failure;
use crate::auth::{Identity, Keyring, Token};
use crate::clock::unix_seconds;
use crate::config::HeartbeatConfig;
use crate::labels::{Labels, NAME_LABEL};
use serde::{Deserialize, Serialize};

/// Random draws a pick makes before it looks at every drone: enough that a pick among mostly
/// eligible drones never scans, few enough that one among mostly ineligible ones soon does.
const PICK_DRAWS: usize = 8;

/// Renewal ids stay below 2^53, so any JSON reader keeps them exact.
const MAX_RENEWAL_ID: u64 = 1 << 53;

/// One registration of one drone: its address and the name it was given. A drone that is removed
/// and registers again is a new registration with a new name, so late news about the old one (a
/// probe that started before the removal) cannot touch the new one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: String,
    pub name: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `drone-N`, unique for the life of this queen (of the hive, when queens share etcd).
    pub name: String,
    /// False when this address was already registered: the registration refreshed it and kept its name.
    pub new: bool,
    /// What the drone shows to report and renew, and what queens show it to run attempts.
    pub credential: Token,
}

/// What a drone says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// `host:port` the queen reaches it at.
    pub address: String,
    /// Changes each time the drone process starts; empty for a drone that does not say (the
    /// tutorial's).
    pub boot: String,
    /// Whether it runs commands (`--allow-exec`).
    pub exec: bool,
    /// How many slots of tasks it runs at once.
    pub slots: u32,
    /// Its memory, cpus and containment.
    pub offer: Offer,
    /// Whether it renews a lease (a Hive drone says so), rather than wait for probes.
    pub renews: bool,
    /// What it says it is: its own `hive.*` labels and its `--label`s (see `labels.rs`).
    pub labels: Labels,
}

/// What a drone that runs commands offers beside its slots: the memory and cpus its attempts may
/// take together, and how it contains them. A drone that does not say offers none of either, so
/// only tasks that ask for no memory and no cpus are placed on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// MiB.
    pub memory_mb: u64,
    /// Thousandths of a core.
    pub millicpus: u32,
    /// `cgroup-v2`, `cgroup-hybrid` or `process-group`; empty when the drone does not say.
    pub containment: String,
}

/// What `/drones` shows of one drone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroneInfo {
    pub name: String,
    pub address: String,
    /// Unix time in seconds of the first registration under this name.
    pub registered_at: f64,
    /// Unix time in seconds of the last sign of life: a registration, a renewal or a passed probe.
    pub last_seen: f64,
    /// Failed probes and tasks since the last sign of life.
    pub failures: u32,
    /// False after a task or a probe failed on it, until a probe sees it alive: the queen skips it
    /// for tasks.
    pub available: bool,
    /// Whether it runs commands.
    pub exec: bool,
    /// How many slots of tasks it runs at once, and how many its running attempts take.
    pub slots: u32,
    pub used: u32,
    /// Its memory (MiB) and cpus, and how much of them its running attempts asked for.
    pub memory_mb: u64,
    pub used_memory_mb: u64,
    pub cpus: f64,
    pub used_cpus: f64,
    /// How it contains its attempts: `cgroup-v2`, `cgroup-hybrid` or `process-group` (empty
    /// when it does not say).
    pub containment: String,
    /// Whether new placements on it are stopped.
    pub draining: bool,
    /// Whether it renews a lease with the leader (a Hive drone), rather than wait for probes (the
    /// tutorial's).
    pub renews: bool,
    /// Its labels: what it said at registration, and `hive.name`. Shared with the registry, so
    /// a listing of a thousand drones copies none.
    #[serde(serialize_with = "shared_labels")]
    pub labels: Arc<Labels>,
}

fn shared_labels<S: serde::Serializer>(labels: &Arc<Labels>, to: S) -> Result<S::Ok, S::Error> {
    labels.as_ref().serialize(to)
}

/// A drone the scheduler may place attempts on, as one pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedulable {
    pub target: Target,
    pub boot: String,
    pub slots: u32,
    pub offer: Offer,
    /// Slots its last probe showed taken by attempts the store does not count there (declared
    /// lost, yet still running until the drone has stopped them).
    pub stray_slots: u32,
    /// Its labels, `hive.name` included: shared, so a pass copies none.
    pub labels: Arc<Labels>,
}

/// A registration as a shared store holds it: everything but one queen's view of the drone's
/// health.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub address: String,
    pub name: String,
    /// Unix time in seconds of the registration that gave the name.
    pub registered_at: f64,
    /// Orders drones oldest first (etcd's create revision of the drone's key).
    pub order: u64,
    /// Changes at every write of the drone's record (its key's mod revision), so a removal
    /// decided on an older one does not apply.
    pub revision: i64,
    pub boot: String,
    pub exec: bool,
    pub slots: u32,
    pub offer: Offer,
    /// Its labels as it registered them (without `hive.name`, which is its name).
    pub labels: Labels,
    pub draining: bool,
    /// Registrations under this name so far: when it grows, the drone showed life.
    pub registrations: u64,
    /// The credential its last registration under a new boot was given (see `auth.rs`); `None`
    /// for a record written before credentials were issued.
    pub credential: Option<Token>,
    /// Whether it renews a lease (see [`Registration::renews`]).
    pub renews: bool,
}

/// A renewal taken in: whose, its id (the drone sends it back with the next one), and since when
/// the list of attempts it carried is known to be current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    pub target: Target,
    pub id: u64,
    /// When this queen answered the renewal the drone says came before this one: the drone made
    /// this one's list after that, so what this queen saw confirmed before then and the list
    /// lacks, the drone no longer runs. `None` when the drone names no renewal of this queen's.
    pub listed_after: Option<Instant>,
    /// This renewal brought the drone back into rotation.
    pub back_in_rotation: bool,
}

/// A drone that is due for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub target: Target,
    /// It renews a lease, and the lease is late.
    pub late_lease: bool,
    /// How long since its last sign of life.
    pub silent_for: Duration,
}

/// What [`Registry::apply`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A drone this queen did not know, or a new registration (a new name) at a known address.
    Added,
    /// A known drone registered again (through any queen): it counts as alive now.
    RegisteredAgain,
    /// A known drone's record changed otherwise (it was drained, say).
    Updated,
    /// Nothing new.
    Unchanged,
}

struct Drone {
    name: String,
    /// Sorts `/drones` oldest first.
    order: u64,
    /// See [`Record::revision`].
    revision: i64,
    registrations: u64,
    boot: String,
    exec: bool,
    slots: u32,
    offer: Offer,
    /// Its labels, `hive.name` included.
    labels: Arc<Labels>,
    draining: bool,
    /// See [`Schedulable::stray_slots`].
    stray_slots: u32,
    credential: Option<Token>,
    registered_at: SystemTime,
    last_seen: Instant,
    last_seen_wall: SystemTime,
    failures: u32,
    available: bool,
    renews: bool,
    /// When it is to be probed next, if it shows no life before (see `liveness/schedule.rs`).
    due: Instant,
    /// Its entry in the queue: when, and the ticket that names it. `None` while a probe of it is
    /// under way (queued again when the probe ends).
    queued: Option<(Instant, u64)>,
    /// A probe of it (for being due) is under way.
    probing: bool,
    /// The last renewal this queen took from it: its id, and when she answered it.
    renewal: Option<(u64, Instant)>,
    /// Where it sits in [`Inner::order`].
    slot: usize,
}

impl Drone {
    fn new(record: &Record, registered_at: SystemTime, due: Instant) -> Drone {
        Drone {
            name: record.name.clone(),
            order: record.order,
            revision: record.revision,
            registrations: record.registrations,
            boot: record.boot.clone(),
            exec: record.exec,
            slots: record.slots,
            offer: record.offer.clone(),
            labels: labels_of(record),
            draining: record.draining,
            stray_slots: 0,
            credential: record.credential.clone(),
            registered_at,
            last_seen: Instant::now(),
            last_seen_wall: SystemTime::now(),
            failures: 0,
            available: true,
            renews: record.renews,
            due,
            queued: None,
            probing: false,
            renewal: None,
            slot: 0,
        }
    }

    /// A registration, a renewal or a passed probe at `now`: alive, no failures, in rotation.
    /// Returns whether it was out of rotation.
    fn refresh(&mut self, now: Instant) -> bool {
        self.last_seen = now;
        self.last_seen_wall = SystemTime::now();
        self.failures = 0;
        !std::mem::replace(&mut self.available, true)
    }

    fn kind(&self) -> Kind {
        if self.renews {
            Kind::Renews
        } else {
            Kind::Probed
        }
    }

    fn target(&self, address: &str) -> Target {
        Target {
            address: address.to_string(),
            name: self.name.clone(),
        }
    }
}

struct Inner {
    drones: HashMap<String, Drone>,
    /// Each drone's address, by the secret of its credential: who a report or a renewal is from.
    /// (The map's hashing is keyed at random, so the time a lookup takes tells nothing useful.)
    by_credential: HashMap<String, String>,
    /// Addresses forgotten (deleted in the store at that revision) that the watch may not have
    /// reached yet: an older record of them arriving late must not bring them back. Dropped once
    /// the watch has passed their revision ([`Registry::settled`]).
    forgotten: HashMap<String, i64>,
    /// Every address, in no order, so a drone can be drawn at random without a scan.
    order: Vec<String>,
    /// The drones by when they are due for a probe.
    queue: Queue,
    timetable: Timetable,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            drones: HashMap::new(),
            by_credential: HashMap::new(),
            forgotten: HashMap::new(),
            order: Vec::new(),
            queue: Queue::default(),
            timetable: Timetable::new(HeartbeatConfig::default().interval, Instant::now()),
        }
    }
}

impl Inner {
    fn get_mut(&mut self, target: &Target) -> Option<&mut Drone> {
        self.drones
            .get_mut(&target.address)
            .filter(|drone| drone.name == target.name)
    }

    /// Puts `drone` at `address`, replacing what was there, queues it at its due time, and keeps
    /// the credentials' map and the order.
    fn insert(&mut self, address: &str, mut drone: Drone) {
        self.remove(address);
        if let Some(credential) = &drone.credential {
            self.by_credential
                .insert(credential.secret().to_string(), address.to_string());
        }
        drone.slot = self.order.len();
        self.order.push(address.to_string());
        drone.queued = Some((drone.due, self.queue.push(address, drone.due)));
        self.drones.insert(address.to_string(), drone);
    }

    fn remove(&mut self, address: &str) -> Option<Drone> {
        let drone = self.drones.remove(address)?;
        if let Some(credential) = &drone.credential {
            self.by_credential.remove(credential.secret());
        }
        // Its queue entry stays behind, stale; its slot in the order goes to the last address.
        self.order.swap_remove(drone.slot);
        if let Some(moved) = self.order.get(drone.slot)
            && let Some(other) = self.drones.get_mut(moved)
        {
            other.slot = drone.slot;
        }
        Some(drone)
    }

    /// `address` is due at `at` from now on: queued again if that is earlier than its entry (a
    /// later time is found when the entry fires), or when its probe ends if one is under way.
    fn reschedule(&mut self, address: &str, at: Instant) {
        let Some(drone) = self.drones.get_mut(address) else {
            return;
        };
        drone.due = at;
        if drone.probing || drone.queued.is_some_and(|(queued, _)| queued <= at) {
            return;
        }
        drone.queued = Some((at, self.queue.push(address, at)));
    }

    /// A known drone's credential is now `credential`.
    fn set_credential(&mut self, address: &str, credential: &Option<Token>) {
        let Some(drone) = self.drones.get_mut(address) else {
            return;
        };
        if drone.credential == *credential {
            return;
        }
        if let Some(old) = drone.credential.take() {
            self.by_credential.remove(old.secret());
        }
        if let Some(new) = credential {
            self.by_credential
                .insert(new.secret().to_string(), address.to_string());
        }
        if let Some(drone) = self.drones.get_mut(address) {
            drone.credential = credential.clone();
        }
    }
}

/// The drone registry. Share it with `Arc`; every method locks only for its own few map operations.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Told when drones come, go or change.
    on_change: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Probes (and leases) are `interval` apart. Set once, before any drone registers.
    pub fn probe_every(&self, interval: Duration) {
        self.inner.lock().timetable = Timetable::new(interval, Instant::now());
    }

    /// The interval probes and leases are counted in.
    pub fn interval(&self) -> Duration {
        self.inner.lock().timetable.interval()
    }

    /// Takes in a registration from the shared store: new, registered again, or already known.
    /// Records can arrive out of order (a queen applies her own registration while her watch
    /// delivers newer ones), so an older one than what is here changes nothing.
    pub fn apply(&self, record: &Record) -> Applied {
        let applied = self.apply_quietly(record);
        if applied != Applied::Unchanged {
            self.poke();
        }
        applied
    }

    fn apply_quietly(&self, record: &Record) -> Applied {
        let mut inner = self.inner.lock();
        if inner
            .forgotten
            .get(&record.address)
            .is_some_and(|deleted| record.revision < *deleted)
        {
            return Applied::Unchanged;
        }
        match inner.drones.get_mut(&record.address) {
            Some(drone) if drone.name == record.name => {
                if record.revision <= drone.revision {
                    return Applied::Unchanged;
                }
                drone.revision = record.revision;
                drone.boot.clone_from(&record.boot);
                drone.exec = record.exec;
                drone.slots = record.slots;
                drone.offer.clone_from(&record.offer);
                drone.labels = labels_of(record);
                drone.draining = record.draining;
                drone.renews = record.renews;
                let again = record.registrations > drone.registrations;
                let now = Instant::now();
                if again {
                    drone.registrations = record.registrations;
                    drone.refresh(now);
                }
                let renews = drone.renews;
                inner.set_credential(&record.address, &record.credential);
                if again && renews {
                    let due = inner.timetable.after_renewal(now);
                    inner.reschedule(&record.address, due);
                }
                if again {
                    Applied::RegisteredAgain
                } else {
                    Applied::Updated
                }
            }
            Some(drone) if record.order <= drone.order => Applied::Unchanged,
            _ => {
                let since_epoch = Duration::try_from_secs_f64(record.registered_at);
                let registered_at = since_epoch
                    .ok()
                    .and_then(|d| UNIX_EPOCH.checked_add(d))
                    .unwrap_or(UNIX_EPOCH);
                let kind = if record.renews {
                    Kind::Renews
                } else {
                    Kind::Probed
                };
                let due = inner
                    .timetable
                    .after_registration(kind, &record.address, Instant::now());
                inner.insert(&record.address, Drone::new(record, registered_at, due));
                Applied::Added
            }
        }
    }

    /// Makes the registry hold exactly `records`, the shared store's full list as of `revision`
    /// (read after its watch broke), keeping what this queen saw of drones that remain, and any
    /// registered after that revision. Returns the drones dropped.
    pub fn replace_all(&self, records: &[Record], revision: i64) -> Vec<Target> {
        for record in records {
            self.apply(record);
        }
        let listed: HashMap<&str, &str> = records
            .iter()
            .map(|r| (r.address.as_str(), r.name.as_str()))
            .collect();
        let mut inner = self.inner.lock();
        let dropped: Vec<Target> = inner
            .drones
            .iter()
            .filter(|(address, drone)| {
                listed.get(address.as_str()) != Some(&drone.name.as_str())
                    && drone.revision <= revision
            })
            .map(|(address, drone)| Target {
                address: address.clone(),
                name: drone.name.clone(),
            })
            .collect();
        for target in &dropped {
            inner.remove(&target.address);
        }
        drop(inner);
        self.poke();
        dropped
    }

    /// Forgets the registration at `address` if it was written before `revision`: the shared
    /// store deleted it then (a later registration stays). Returns it, if it was forgotten.
    pub fn forget(&self, address: &str, revision: i64) -> Option<Target> {
        let mut inner = self.inner.lock();
        if inner.drones.get(address)?.revision >= revision {
            return None;
        }
        let drone = inner.remove(address)?;
        inner.forgotten.insert(address.to_string(), revision);
        drop(inner);
        self.poke();
        Some(Target {
            address: address.to_string(),
            name: drone.name,
        })
    }

    /// The store's watch has applied every change up to `revision`: no older record can arrive
    /// any more.
    pub fn settled(&self, revision: i64) {
        let mut inner = self.inner.lock();
        if !inner.forgotten.is_empty() {
            inner.forgotten.retain(|_, deleted| *deleted > revision);
        }
    }

    /// The revision a removal of `target` must find unchanged (see [`Record::revision`]), if the
    /// registration is still here and showed no life (a registration or a passed probe) after
    /// `since`.
    pub fn removal_revision(&self, target: &Target, since: Instant) -> Option<i64> {
        self.inner
            .lock()
            .get_mut(target)
            .filter(|drone| drone.last_seen <= since)
            .map(|drone| drone.revision)
    }

    /// Every drone, oldest registration first.
    pub fn list(&self) -> Vec<DroneInfo> {
        let inner = self.inner.lock();
        let mut drones: Vec<(u64, DroneInfo)> = inner
            .drones
            .iter()
            .map(|(address, drone)| {
                let info = DroneInfo {
                    name: drone.name.clone(),
                    address: address.clone(),
                    registered_at: unix_seconds(drone.registered_at),
                    last_seen: unix_seconds(drone.last_seen_wall),
                    failures: drone.failures,
                    available: drone.available,
                    exec: drone.exec,
                    slots: drone.slots,
                    used: 0,
                    memory_mb: drone.offer.memory_mb,
                    used_memory_mb: 0,
                    cpus: f64::from(drone.offer.millicpus) / 1000.0,
                    used_cpus: 0.0,
                    containment: drone.offer.containment.clone(),
                    draining: drone.draining,
                    renews: drone.renews,
                    labels: drone.labels.clone(),
                };
                (drone.order, info)
            })
            .collect();
        drop(inner);
        drones.sort_by_key(|(id, _)| *id);
        drones.into_iter().map(|(_, info)| info).collect()
    }

    /// Address → name, the tutorial's view of the registry (its `/healthz` shows this).
    pub fn names(&self) -> BTreeMap<String, String> {
        let inner = self.inner.lock();
        inner
            .drones
            .iter()
            .map(|(address, drone)| (address.clone(), drone.name.clone()))
            .collect()
    }

    /// A drone to try a task on, drawn at random from those `in_rotation` (or, with it false, out
    /// of rotation: they failed a probe, or a task other than by timing out, since they last
    /// showed life) and not in `tried`. Draws cost no scan while most drones are eligible, so a
    /// submit costs the same among ten drones or ten thousand.
    pub fn pick(&self, in_rotation: bool, tried: &[Target]) -> Option<Target> {
        let inner = self.inner.lock();
        let eligible = |address: &String| {
            inner.drones.get(address).is_some_and(|d| {
                d.available == in_rotation && !tried.iter().any(|t| t.address == *address)
            })
        };
        let count = inner.order.len();
        if count == 0 {
            return None;
        }
        let drawn = (0..PICK_DRAWS)
            .map(|_| &inner.order[fastrand::usize(..count)])
            .find(|address| eligible(address));
        let address = match drawn {
            Some(address) => address,
            None => {
                let all: Vec<&String> = inner.order.iter().filter(|a| eligible(a)).collect();
                if all.is_empty() {
                    return None;
                }
                all[fastrand::usize(..all.len())]
            }
        };
        Some(inner.drones[address].target(address))
    }

    /// Whether no drone is registered.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().drones.is_empty()
    }

    /// The most cpus any drone that runs commands offers, if any such drone is registered.
    pub fn most_cpus(&self) -> Option<f64> {
        let inner = self.inner.lock();
        inner
            .drones
            .values()
            .filter(|drone| drone.exec)
            .map(|drone| f64::from(drone.offer.millicpus) / 1000.0)
            .reduce(f64::max)
    }

    /// How many drones are registered, and how many of them are available.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let available = inner.drones.values().filter(|d| d.available).count();
        (inner.drones.len(), available)
    }

    /// Whether this registration still exists.
    pub fn contains(&self, target: &Target) -> bool {
        self.inner.lock().get_mut(target).is_some()
    }

    /// A probe reached the drone at `now`: it is alive, has no failures, and may take tasks
    /// again; a drone that renews is not late for another interval. Returns whether this brought
    /// it back into rotation.
    pub fn record_alive(&self, target: &Target, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        let Some(drone) = inner.get_mut(target) else {
            return false;
        };
        let back = drone.refresh(now);
        if drone.renews {
            let due = inner.timetable.after_renewal(now);
            inner.reschedule(&target.address, due);
        }
        drop(inner);
        if back {
            self.poke();
        }
        back
    }

    /// A renewal of the lease of the drone at `address` at `now`, which says it follows the
    /// renewal `after` (`None`: it names none). A sign of life: alive, no failures, in rotation,
    /// not late for another interval. `None` if no drone is registered there.
    pub fn renew(&self, address: &str, after: Option<u64>, now: Instant) -> Option<Renewed> {
        let mut inner = self.inner.lock();
        let due = inner.timetable.after_renewal(now);
        let drone = inner.drones.get_mut(address)?;
        let listed_after = match (after, drone.renewal) {
            (Some(after), Some((id, answered))) if after == id => Some(answered),
            _ => None,
        };
        let back = drone.refresh(now);
        let id = fastrand::u64(1..MAX_RENEWAL_ID);
        drone.renewal = Some((id, now));
        let target = drone.target(address);
        inner.reschedule(address, due);
        drop(inner);
        if back {
            self.poke();
        }
        Some(Renewed {
            target,
            id,
            listed_after,
            back_in_rotation: back,
        })
    }

    /// A probe try that started at `since` failed: counted against the drone (it takes no tasks
    /// until it shows life), unless it is gone or showed life after `since`.
    pub fn record_probe_failure(&self, target: &Target, since: Instant) -> Failure {
        let mut inner = self.inner.lock();
        let Some(drone) = inner.get_mut(target) else {
            return Failure::Gone;
        };
        if drone.last_seen > since {
            return Failure::ShowedLife;
        }
        drone.failures += 1;
        Failure::Counted {
            left_rotation: std::mem::replace(&mut drone.available, false),
        }
    }

    /// Takes out of the queue every drone due at `now` (its lease late, or its slot come) and
    /// marks each as being probed, until [`Registry::probe_ended`].
    pub fn due(&self, now: Instant) -> Vec<Due> {
        let mut inner = self.inner.lock();
        let Inner { drones, queue, .. } = &mut *inner;
        let mut due = Vec::new();
        while let Some((address, ticket)) = queue.pop_due(now) {
            let Some(drone) = drones.get_mut(&address) else {
                continue;
            };
            if drone.queued.map(|(_, current)| current) != Some(ticket) {
                continue;
            }
            drone.queued = None;
            if drone.due > now {
                // It showed life since it was queued: not due yet.
                drone.queued = Some((drone.due, queue.push(&address, drone.due)));
                continue;
            }
            drone.probing = true;
            due.push(Due {
                target: drone.target(&address),
                late_lease: drone.renews,
                silent_for: now.saturating_duration_since(drone.last_seen),
            });
        }
        due
    }

    /// When the next drone is due (or a little before: waking early is harmless).
    pub fn next_due(&self) -> Option<Instant> {
        self.inner.lock().queue.next()
    }

    /// A probe of `target` for being due ended at `ended`, whatever its verdict: it is queued at
    /// its next due time.
    pub fn probe_ended(&self, target: &Target, ended: Instant) {
        let mut inner = self.inner.lock();
        let timetable = inner.timetable;
        let Some(drone) = inner.get_mut(target) else {
            return;
        };
        drone.probing = false;
        let next = timetable.after_probe(drone.kind(), &target.address, ended);
        drone.queued = None;
        inner.reschedule(&target.address, next);
    }

    /// This queen leads from `now`: she has seen no renewal nor probe of any drone, so each is
    /// given an interval from now (one that renews finds her within it), and the others are
    /// probed on their slots from now.
    pub fn take_lead(&self, now: Instant) {
        let mut inner = self.inner.lock();
        let Inner {
            drones,
            queue,
            timetable,
            ..
        } = &mut *inner;
        queue.clear();
        for (address, drone) in drones.iter_mut() {
            drone.due = timetable.on_taking_lead(drone.kind(), address, now);
            drone.queued = None;
            if !drone.probing {
                drone.queued = Some((drone.due, queue.push(address, drone.due)));
            }
        }
    }

    /// Handing it a task failed in a way that shows the drone unwell (refused, reset, an error
    /// status): skip it for tasks until a probe sees it alive. Returns whether this took it out of
    /// rotation.
    pub fn record_task_failure(&self, target: &Target) -> bool {
        let mut inner = self.inner.lock();
        let Some(drone) = inner.get_mut(target) else {
            return false;
        };
        drone.failures += 1;
        std::mem::replace(&mut drone.available, false)
    }

    /// Handing it a task timed out. Under load that is no evidence that the drone is unwell, so it
    /// stays in rotation: a probe decides (see `recheck.rs`).
    pub fn record_task_timeout(&self, target: &Target) {
        let mut inner = self.inner.lock();
        if let Some(drone) = inner.get_mut(target) {
            drone.failures += 1;
        }
    }

    /// The drone named `name`, or at the address `name`: a name is `drone-N`, never an address,
    /// so either names one drone.
    pub fn find(&self, name: &str) -> Option<Target> {
        let inner = self.inner.lock();
        if let Some(drone) = inner.drones.get(name) {
            return Some(Target {
                address: name.to_string(),
                name: drone.name.clone(),
            });
        }
        inner
            .drones
            .iter()
            .find(|(_, drone)| drone.name == name)
            .map(|(address, drone)| Target {
                address: address.clone(),
                name: drone.name.clone(),
            })
    }

    /// The address of the drone named `name`.
    pub fn address_of(&self, name: &str) -> Option<String> {
        let inner = self.inner.lock();
        inner
            .drones
            .iter()
            .find(|(_, drone)| drone.name == name)
            .map(|(address, _)| address.clone())
    }

    /// The credential to call the drone at `address` with: the one its registration was given.
    pub fn bearer(&self, address: &str) -> Option<Token> {
        self.inner.lock().drones.get(address)?.credential.clone()
    }

    /// Whether a drone is registered at `address`: then the credential to call it with (`None`
    /// on an open hive).
    pub fn registered(&self, address: &str) -> Option<Option<Token>> {
        let inner = self.inner.lock();
        Some(inner.drones.get(address)?.credential.clone())
    }

    /// The boot id the registration of `target` carries, if it is still here.
    pub fn boot_of(&self, target: &Target) -> Option<String> {
        self.inner
            .lock()
            .get_mut(target)
            .map(|drone| drone.boot.clone())
    }

    /// The drones that may take attempts now: they run commands, are in rotation and are not
    /// draining.
    pub fn schedulable(&self) -> Vec<Schedulable> {
        let inner = self.inner.lock();
        let mut drones: Vec<(u64, Schedulable)> = inner
            .drones
            .iter()
            .filter(|(_, drone)| {
                drone.exec && drone.available && !drone.draining && drone.slots > 0
            })
            .map(|(address, drone)| {
                let schedulable = Schedulable {
                    target: Target {
                        address: address.clone(),
                        name: drone.name.clone(),
                    },
                    boot: drone.boot.clone(),
                    slots: drone.slots,
                    offer: drone.offer.clone(),
                    stray_slots: drone.stray_slots,
                    labels: drone.labels.clone(),
                };
                (drone.order, schedulable)
            })
            .collect();
        drop(inner);
        drones.sort_by_key(|(order, _)| *order);
        drones.into_iter().map(|(_, drone)| drone).collect()
    }

    /// Notes the stray slots a probe of the drone found (see [`Schedulable::stray_slots`]).
    pub fn record_stray(&self, target: &Target, slots: u32) {
        if let Some(drone) = self.inner.lock().get_mut(target) {
            drone.stray_slots = slots;
        }
    }

    /// The drone said it had no room for a start: it takes no placement until it next lists what
    /// it runs (which sets its stray slots to what they are), rather than be asked again at once.
    pub fn record_full(&self, target: &Target) {
        if let Some(drone) = self.inner.lock().get_mut(target) {
            drone.stray_slots = drone.slots;
        }
    }

    /// Calls `poke` whenever drones come, go or change (the scheduler's wake-up).
    pub fn on_change(&self, poke: Arc<dyn Fn() + Send + Sync>) {
        *self.on_change.lock() = Some(poke);
    }

    fn poke(&self) {
        let poke = self.on_change.lock().clone();
        if let Some(poke) = poke {
            poke();
        }
    }
}

/// A registration's labels as the queen keeps them: what the drone said, and its name as
/// `hive.name` (see `labels.rs`), so a constraint can name one drone.
fn labels_of(record: &Record) -> Arc<Labels> {
    let mut labels = record.labels.clone();
    labels.insert(NAME_LABEL.to_string(), record.name.clone());
    Arc::new(labels)
}

/// On a queen, a request showing a drone's credential is from that drone.
impl Keyring for Registry {
    fn identify(&self, authorization: &str) -> Option<Identity> {
        let secret = authorization.strip_prefix("Bearer ")?;
        let inner = self.inner.lock();
        let address = inner.by_credential.get(secret)?;
        // The map found it by the secret; the comparison confirms it in constant time.
        let drone = inner.drones.get(address)?;
        drone
            .credential
            .as_ref()?
            .admits(Some(authorization))
            .then(|| Identity::Drone {
                address: address.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(registry: &Registry, address: &str) -> Target {
        Target {
            address: address.into(),
            name: registry.names()[address].clone(),
        }
    }

    /// Adds (or registers again) the drone at `address` as the store would: a new name for a
    /// new address, the same name and one more registration for a known one.
    fn add(registry: &Registry, address: &str) {
        let inner = registry.inner.lock();
        let next = inner.drones.values().map(|d| d.revision).max().unwrap_or(0) + 1;
        let known = inner
            .drones
            .get(address)
            .map(|d| (d.name.clone(), d.order, d.registrations));
        drop(inner);
        let record = match known {
            Some((name, order, registrations)) => Record {
                registrations: registrations + 1,
                ..record(address, &name, order, next)
            },
            None => record(address, &format!("drone-{next}"), next as u64, next),
        };
        registry.apply(&record);
    }

    #[test]
    fn registering_again_keeps_the_name_and_refreshes() {
        let registry = Registry::new();
        add(&registry, "a:1");
        let first = registry.list()[0].name.clone();
        let a = target(&registry, "a:1");
        registry.record_task_failure(&a);
        registry.record_probe_failure(&a, Instant::now());
        add(&registry, "a:1");
        let info = &registry.list()[0];
        assert_eq!(info.name, first);
        assert_eq!((info.failures, info.available), (0, true));
        assert_eq!(registry.list().len(), 1);
    }

    #[test]
    fn a_drain_is_not_a_sign_of_life() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 5, 5));
        let a = target(&registry, "a:1");
        registry.record_probe_failure(&a, Instant::now());
        let drained = Record {
            draining: true,
            ..record("a:1", "drone-0", 5, 6)
        };
        assert_eq!(registry.apply(&drained), Applied::Updated);
        let info = &registry.list()[0];
        assert_eq!((info.draining, info.available), (true, false));
        assert!(registry.schedulable().is_empty());
    }

    /// The addresses in rotation and out of it.
    fn rotation(registry: &Registry) -> (Vec<String>, Vec<String>) {
        let (mut available, mut out) = (Vec::new(), Vec::new());
        for drone in registry.list() {
            if drone.available {
                available.push(drone.address);
            } else {
                out.push(drone.address);
            }
        }
        available.sort();
        out.sort();
        (available, out)
    }

    #[test]
    fn a_failed_task_takes_a_drone_out_of_rotation_until_a_probe_passes() {
        let registry = Registry::new();
        add(&registry, "a:1");
        add(&registry, "b:1");
        let a = target(&registry, "a:1");
        assert!(registry.record_task_failure(&a), "it leaves rotation");
        assert!(!registry.record_task_failure(&a), "it was out already");
        assert_eq!(
            rotation(&registry),
            (vec!["b:1".into()], vec!["a:1".into()])
        );
        assert_eq!(registry.names().len(), 2, "it is still registered");
        registry.record_alive(&a, Instant::now());
        assert_eq!(rotation(&registry).0.len(), 2);
    }

    #[test]
    fn a_timed_out_task_counts_but_keeps_the_drone_in_rotation() {
        let registry = Registry::new();
        add(&registry, "a:1");
        add(&registry, "b:1");
        let a = target(&registry, "a:1");
        registry.record_task_timeout(&a);
        assert_eq!(
            rotation(&registry),
            (vec!["a:1".into(), "b:1".into()], vec![])
        );
        assert_eq!(registry.list()[0].failures, 1);
        registry.record_task_failure(&a);
        assert_eq!(rotation(&registry).1, ["a:1"]);
        assert_eq!(registry.counts(), (2, 1));
    }

    #[test]
    fn failures_count_in_a_row_and_reset_when_alive() {
        let registry = Registry::new();
        add(&registry, "a:1");
        let a = target(&registry, "a:1");
        assert_eq!(
            registry.record_probe_failure(&a, Instant::now()),
            Failure::Counted {
                left_rotation: true
            },
            "it leaves rotation"
        );
        assert_eq!(
            registry.record_probe_failure(&a, Instant::now()),
            Failure::Counted {
                left_rotation: false
            },
            "it was out already"
        );
        assert_eq!(registry.list()[0].failures, 2);
        assert!(
            rotation(&registry).0.is_empty(),
            "a failing drone takes no tasks"
        );
        assert!(
            registry.record_alive(&a, Instant::now()),
            "it comes back into rotation"
        );
        assert!(
            !registry.record_alive(&a, Instant::now()),
            "it was back already"
        );
        assert_eq!(registry.list()[0].failures, 0);
    }

    #[test]
    fn news_about_an_old_registration_does_not_touch_a_new_one() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 5, 5));
        let old = target(&registry, "a:1");
        assert!(registry.forget("a:1", 6).is_some());
        registry.apply(&record("a:1", "drone-1", 7, 7));
        assert_eq!(
            registry.record_probe_failure(&old, Instant::now()),
            Failure::Gone
        );
        registry.record_task_failure(&old);
        assert_eq!(registry.removal_revision(&old, Instant::now()), None);
        let info = &registry.list()[0];
        assert_eq!(
            (info.name.as_str(), info.failures, info.available),
            ("drone-1", 0, true)
        );
    }

    #[test]
    fn a_drone_that_registers_during_a_failing_round_is_kept() {
        let registry = Registry::new();
        add(&registry, "a:1");
        let a = target(&registry, "a:1");
        let round_started = Instant::now();
        add(&registry, "a:1");
        assert_eq!(registry.removal_revision(&a, round_started), None);
    }

    fn record(address: &str, name: &str, order: u64, revision: i64) -> Record {
        Record {
            address: address.into(),
            name: name.into(),
            registered_at: 1.7e9,
            order,
            revision,
            boot: String::new(),
            exec: true,
            slots: 4,
            offer: Offer::default(),
            labels: Labels::new(),
            draining: false,
            registrations: 1,
            credential: None,
            renews: false,
        }
    }

    #[test]
    fn a_drone_s_labels_hold_its_name_and_follow_its_record() {
        let registry = Registry::new();
        let mut a = record("a:1", "drone-4", 4, 4);
        a.labels.insert("zone".into(), "eu".into());
        registry.apply(&a);
        let labels = &registry.list()[0].labels;
        assert_eq!(
            (labels["zone"].as_str(), labels["hive.name"].as_str()),
            ("eu", "drone-4")
        );
        a.revision = 5;
        a.labels.insert("zone".into(), "us".into());
        registry.apply(&a);
        assert_eq!(registry.schedulable()[0].labels["zone"], "us");
        assert_eq!(
            registry.find("drone-4").map(|t| t.address),
            Some("a:1".into())
        );
        assert_eq!(registry.find("a:1").map(|t| t.name), Some("drone-4".into()));
        assert_eq!(registry.find("drone-5"), None);
    }

    #[test]
    fn a_drone_is_known_by_its_current_credential_only() {
        let registry = Registry::new();
        let first = Token::new("first-credential-0123456789").unwrap();
        let second = Token::new("second-credential-0123456789").unwrap();
        let mut a = record("a:1", "drone-0", 1, 1);
        a.credential = Some(first.clone());
        registry.apply(&a);
        let drone_a = Some(Identity::Drone {
            address: "a:1".into(),
        });
        assert_eq!(registry.identify(first.header()), drone_a);
        assert_eq!(registry.bearer("a:1"), Some(first.clone()));
        // Registered again under a new boot: a new credential, the old one is nobody's.
        a.revision = 2;
        a.registrations = 2;
        a.credential = Some(second.clone());
        registry.apply(&a);
        assert_eq!(registry.identify(first.header()), None);
        assert_eq!(registry.identify(second.header()), drone_a);
        assert_eq!(registry.identify("Bearer nothing-like-it-0123456"), None);
        registry.forget("a:1", 3);
        assert_eq!(registry.identify(second.header()), None);
        assert_eq!(registry.bearer("a:1"), None);
    }

    #[test]
    fn records_from_the_store_add_refresh_and_keep_local_health() {
        let registry = Registry::new();
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 20)),
            Applied::Added
        );
        assert_eq!(
            registry.apply(&record("b:1", "drone-3", 10, 10)),
            Applied::Added
        );
        let names: Vec<String> = registry.list().into_iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            ["drone-3", "drone-7"],
            "oldest first, by store order"
        );
        assert_eq!(registry.list()[1].registered_at, 1.7e9);

        let a = target(&registry, "a:1");
        registry.record_task_failure(&a);
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 20)),
            Applied::Unchanged
        );
        assert_eq!(
            rotation(&registry).1,
            ["a:1"],
            "a repeated record changes nothing"
        );
        let before = Instant::now();
        assert_eq!(
            registry.apply(&Record {
                registrations: 2,
                ..record("a:1", "drone-7", 20, 31)
            }),
            Applied::RegisteredAgain
        );
        assert_eq!(
            rotation(&registry).1.len(),
            0,
            "registered again: in rotation"
        );
        assert_eq!(registry.removal_revision(&a, before), None, "seen since");
        assert_eq!(registry.removal_revision(&a, Instant::now()), Some(31));
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 25)),
            Applied::Unchanged,
            "an older record arriving late changes nothing"
        );

        assert_eq!(
            registry.apply(&record("a:1", "drone-9", 40, 40)),
            Applied::Added,
            "removed and registered again elsewhere: a new name"
        );
        assert_eq!(registry.removal_revision(&a, Instant::now()), None);
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 33)),
            Applied::Unchanged,
            "news of the older registration changes nothing"
        );
    }

    #[test]
    fn a_removal_forgets_only_what_was_written_before_it() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 5, 9));
        assert_eq!(
            registry.forget("a:1", 9),
            None,
            "written at the removal's revision"
        );
        let gone = registry
            .forget("a:1", 12)
            .expect("written before the removal");
        assert_eq!(gone.name, "drone-0");
        assert_eq!(registry.forget("a:1", 13), None, "gone already");
    }

    #[test]
    fn a_late_older_record_does_not_bring_a_forgotten_drone_back() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 5, 5));
        assert!(
            registry.forget("a:1", 9).is_some(),
            "removed by this queen at 9"
        );
        // The watch, behind, now brings the registration at 5.
        assert_eq!(
            registry.apply(&record("a:1", "drone-0", 5, 5)),
            Applied::Unchanged
        );
        assert!(registry.names().is_empty());
        registry.settled(9);
        assert_eq!(
            registry.apply(&record("a:1", "drone-1", 11, 11)),
            Applied::Added
        );
    }

    #[test]
    fn huge_times_from_the_store_are_clamped_not_a_panic() {
        let registry = Registry::new();
        for registered_at in [1e19, f64::MAX, f64::NAN, -5.0, f64::INFINITY] {
            let mut huge = record("a:1", "drone-0", 1, 1);
            huge.registered_at = registered_at;
            registry.forget("a:1", i64::MAX);
            registry.settled(i64::MAX);
            registry.apply(&huge);
            assert_eq!(registry.list()[0].registered_at, 0.0, "{registered_at}");
        }
    }

    #[test]
    fn replace_all_keeps_the_survivors_and_drops_the_rest() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 1, 1));
        registry.apply(&record("b:1", "drone-1", 2, 2));
        registry.apply(&record("d:1", "drone-3", 9, 9));
        let b = target(&registry, "b:1");
        registry.record_task_failure(&b);
        let dropped = registry.replace_all(
            &[
                record("b:1", "drone-1", 2, 2),
                record("c:1", "drone-2", 3, 3),
            ],
            5,
        );
        assert_eq!(
            dropped,
            vec![Target {
                address: "a:1".into(),
                name: "drone-0".into()
            }]
        );
        assert_eq!(registry.names().len(), 3, "d:1 registered after the list");
        assert_eq!(
            rotation(&registry).1,
            ["b:1"],
            "local health survives a re-list"
        );
    }

    #[test]
    fn list_is_in_registration_order_with_times() {
        let registry = Registry::new();
        for (i, address) in ["c:1", "a:1", "b:1"].into_iter().enumerate() {
            registry.apply(&record(
                address,
                &format!("drone-{i}"),
                10 + i as u64,
                10 + i as i64,
            ));
        }
        let list = registry.list();
        let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["drone-0", "drone-1", "drone-2"]);
        assert!(list[0].registered_at > 1.6e9 && list[0].last_seen >= list[0].registered_at);
    }

    /// A registry whose probes are `interval` apart, with a drone at `a:1` that renews and one at
    /// `b:1` that does not, registered now.
    fn two_kinds(interval: Duration) -> (Registry, Instant) {
        let registry = Registry::new();
        registry.probe_every(interval);
        let registered = Instant::now();
        registry.apply(&Record {
            renews: true,
            ..record("a:1", "drone-0", 1, 1)
        });
        registry.apply(&record("b:1", "drone-1", 2, 2));
        (registry, registered)
    }

    fn due_at(registry: &Registry, at: Instant) -> Vec<String> {
        let mut due: Vec<String> = registry
            .due(at)
            .into_iter()
            .map(|due| due.target.address)
            .collect();
        due.sort();
        due
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn nobody_is_due_within_half_an_interval_of_registering() {
        let (registry, registered) = two_kinds(10 * SECOND);
        assert!(due_at(&registry, registered + 4 * SECOND).is_empty());
        let mut due = due_at(&registry, registered + 9 * SECOND);
        assert!(
            !due.contains(&"a:1".to_string()),
            "a drone that renews gets the whole interval"
        );
        let late = registered + 11 * SECOND;
        due.extend(due_at(&registry, late));
        due.sort();
        assert_eq!(due, ["a:1", "b:1"]);
        assert!(
            due_at(&registry, late).is_empty(),
            "being probed: not handed out twice"
        );
    }

    #[test]
    fn a_renewing_drone_is_due_only_when_its_lease_is_late() {
        let (registry, registered) = two_kinds(10 * SECOND);
        let mut renewed = registered;
        for _ in 0..5 {
            renewed += 8 * SECOND;
            let taken = registry.renew("a:1", None, renewed).expect("registered");
            assert_eq!(taken.target.name, "drone-0");
            assert!(!due_at(&registry, renewed).contains(&"a:1".to_string()));
        }
        assert!(
            !due_at(&registry, renewed + 9 * SECOND).contains(&"a:1".to_string()),
            "an interval after its last renewal it is not late yet"
        );
        let due = registry.due(renewed + 11 * SECOND);
        let late: Vec<&Due> = due.iter().filter(|d| d.target.address == "a:1").collect();
        assert_eq!(late.len(), 1, "{due:?}");
        assert!(late[0].late_lease);
        assert_eq!(late[0].silent_for, 11 * SECOND);
    }

    #[test]
    fn a_drone_that_renews_nothing_is_probed_on_its_slots_every_interval() {
        let (registry, registered) = two_kinds(10 * SECOND);
        let first = registered + 10 * SECOND + SECOND / 10;
        assert_eq!(due_at(&registry, first), ["a:1", "b:1"]);
        let b = target(&registry, "b:1");
        registry.probe_ended(&b, first);
        // Its next probe is on its slot: within an interval of the last, and then an interval on.
        let next = registry.next_due().expect("queued again");
        let mut slot = None;
        for tenth in 1..=100 {
            let at = first + SECOND / 10 * tenth;
            if due_at(&registry, at) == ["b:1"] {
                slot = Some(at);
                break;
            }
        }
        let slot = slot.expect("due within an interval of its last probe");
        assert!(slot >= next);
        registry.probe_ended(&b, slot);
        assert!(due_at(&registry, slot + 9 * SECOND).is_empty());
        assert_eq!(due_at(&registry, slot + 10 * SECOND), ["b:1"]);
    }

    #[test]
    fn a_renewal_names_the_renewal_it_follows_so_its_list_is_known_fresh() {
        let (registry, registered) = two_kinds(10 * SECOND);
        let first = registry.renew("a:1", None, registered).unwrap();
        assert_eq!(first.listed_after, None);
        let later = registered + 8 * SECOND;
        let second = registry.renew("a:1", Some(first.id), later).unwrap();
        assert_eq!(second.listed_after, Some(registered));
        let third = registry
            .renew("a:1", Some(first.id), later + SECOND)
            .unwrap();
        assert_eq!(third.listed_after, None, "an older renewal proves nothing");
        assert!(
            registry.renew("c:1", None, later).is_none(),
            "no such drone"
        );
    }

    #[test]
    fn a_renewal_or_a_registration_keeps_a_drone_being_probed() {
        let (registry, registered) = two_kinds(10 * SECOND);
        let a = target(&registry, "a:1");
        let probe_started = registered + 11 * SECOND;
        assert_eq!(due_at(&registry, probe_started), ["a:1", "b:1"]);
        registry.renew("a:1", None, probe_started + SECOND);
        assert_eq!(
            registry.record_probe_failure(&a, probe_started),
            Failure::ShowedLife
        );
        assert_eq!(registry.removal_revision(&a, probe_started), None);
    }

    #[test]
    fn a_new_leader_gives_every_drone_an_interval_from_then() {
        let (registry, registered) = two_kinds(10 * SECOND);
        let lead = registered + 60 * SECOND;
        registry.take_lead(lead);
        assert!(
            !due_at(&registry, lead).contains(&"a:1".to_string()),
            "a renewing drone gets an interval to find her"
        );
        assert!(
            due_at(&registry, lead + 9 * SECOND)
                .iter()
                .all(|a| a != "a:1")
        );
        assert!(due_at(&registry, lead + 10 * SECOND).contains(&"a:1".to_string()));
    }

    #[test]
    fn a_pick_draws_only_from_the_side_asked_and_never_twice() {
        let registry = Registry::new();
        for i in 0..100 {
            add(&registry, &format!("d:{i}"));
        }
        let sick = target(&registry, "d:7");
        registry.record_task_failure(&sick);
        assert_eq!(registry.pick(false, &[]), Some(sick.clone()));
        assert_eq!(registry.pick(false, std::slice::from_ref(&sick)), None);
        let mut tried = Vec::new();
        while let Some(target) = registry.pick(true, &tried) {
            assert_ne!(target.address, "d:7");
            assert!(!tried.contains(&target));
            tried.push(target);
        }
        assert_eq!(tried.len(), 99, "every drone in rotation, once each");
        registry.forget("d:3", i64::MAX);
        assert_eq!(registry.names().len(), 99);
        assert!(registry.pick(true, &[]).is_some());
        assert!(Registry::new().pick(true, &[]).is_none());
    }
}
