//! The queen's registry: which drones exist, under what name, and what she last heard from them.
//!
//! This is the hive's only shared state, behind one small interface (register, list, record a probe
//! or task result, remove). A queen alone keeps it here and nowhere else; queens that share etcd
//! keep here a copy of etcd's drones, kept current by a watch ([`Registry::apply`]), plus what each
//! queen has seen of their health herself (see `store/`). Every method takes the lock for a few map
//! operations and never while doing I/O: callers copy what they need out ([`Registry::targets`]),
//! talk to drones unlocked, and report back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

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
    /// `drone-N`, unique for the life of this queen.
    pub name: String,
    /// False when this address was already registered: the registration refreshed it and kept its name.
    pub new: bool,
}

/// What `/drones` shows of one drone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DroneInfo {
    pub name: String,
    pub address: String,
    /// Unix time in seconds of the first registration under this name.
    pub registered_at: f64,
    /// Unix time in seconds of the last sign of life: a registration or a passed probe.
    pub last_seen: f64,
    /// Failed probes and tasks since the last sign of life.
    pub failures: u32,
    /// False after a task or a probe failed on it, until a probe sees it alive: the queen skips it
    /// for tasks.
    pub available: bool,
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
    /// Changes at every registration of the drone (etcd's mod revision of its key), so a removal
    /// decided on an older one does not apply.
    pub revision: i64,
}

/// What [`Registry::apply`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A drone this queen did not know, or a new registration (a new name) at a known address.
    Added,
    /// A known drone registered again (through any queen): it counts as alive now.
    RegisteredAgain,
    /// Nothing new.
    Unchanged,
}

struct Drone {
    name: String,
    /// Sorts `/drones` oldest first.
    order: u64,
    /// See [`Record::revision`]; 0 for a queen alone.
    revision: i64,
    registered_at: SystemTime,
    last_seen: Instant,
    last_seen_wall: SystemTime,
    failures: u32,
    available: bool,
}

impl Drone {
    fn new(name: String, order: u64, revision: i64, registered_at: SystemTime) -> Drone {
        Drone {
            name,
            order,
            revision,
            registered_at,
            last_seen: Instant::now(),
            last_seen_wall: SystemTime::now(),
            failures: 0,
            available: true,
        }
    }

    /// A registration or a passed probe: alive now, no failures, in rotation.
    fn refresh(&mut self) {
        self.last_seen = Instant::now();
        self.last_seen_wall = SystemTime::now();
        self.failures = 0;
        self.available = true;
    }
}

#[derive(Default)]
struct Inner {
    drones: HashMap<String, Drone>,
    /// Next number for `drone-N` of a queen alone; never goes back, so a name is never given twice.
    next_id: u64,
}

impl Inner {
    fn get_mut(&mut self, target: &Target) -> Option<&mut Drone> {
        self.drones
            .get_mut(&target.address)
            .filter(|drone| drone.name == target.name)
    }
}

/// The drone registry. Share it with `Arc`; every method locks only for its own few map operations.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds the drone at `address`, or refreshes it if it is known: registration is idempotent, and a
    /// drone that registers again keeps its name and counts as alive now. For a queen alone, who
    /// names drones herself.
    pub fn register(&self, address: &str) -> Registered {
        let mut inner = self.inner.lock();
        if let Some(drone) = inner.drones.get_mut(address) {
            drone.refresh();
            return Registered {
                name: drone.name.clone(),
                new: false,
            };
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let name = format!("drone-{id}");
        let drone = Drone::new(name.clone(), id, 0, SystemTime::now());
        inner.drones.insert(address.to_string(), drone);
        Registered { name, new: true }
    }

    /// Takes in a registration from the shared store: new, registered again, or already known.
    pub fn apply(&self, record: &Record) -> Applied {
        let mut inner = self.inner.lock();
        match inner.drones.get_mut(&record.address) {
            Some(drone) if drone.name == record.name => {
                if drone.revision == record.revision {
                    return Applied::Unchanged;
                }
                drone.revision = record.revision;
                drone.refresh();
                Applied::RegisteredAgain
            }
            _ => {
                let registered_at = UNIX_EPOCH
                    + Duration::try_from_secs_f64(record.registered_at).unwrap_or_default();
                let drone = Drone::new(
                    record.name.clone(),
                    record.order,
                    record.revision,
                    registered_at,
                );
                inner.drones.insert(record.address.clone(), drone);
                Applied::Added
            }
        }
    }

    /// Makes the registry hold exactly `records` (the shared store's full list, read after its
    /// watch broke), keeping what this queen saw of drones that remain. Returns the drones that
    /// were dropped.
    pub fn replace_all(&self, records: &[Record]) -> Vec<Target> {
        for record in records {
            self.apply(record);
        }
        let mut inner = self.inner.lock();
        let mut dropped = Vec::new();
        inner.drones.retain(|address, drone| {
            let keep = records
                .iter()
                .any(|r| r.address == *address && r.name == drone.name);
            if !keep {
                dropped.push(Target {
                    address: address.clone(),
                    name: drone.name.clone(),
                });
            }
            keep
        });
        dropped
    }

    /// Forgets the registration, whatever its health: the shared store removed it. Returns whether
    /// it was here.
    pub fn forget(&self, target: &Target) -> bool {
        let mut inner = self.inner.lock();
        if inner.get_mut(target).is_none() {
            return false;
        }
        inner.drones.remove(&target.address);
        true
    }

    /// Forgets whatever registration `address` has: the shared store deleted it. Returns it, if
    /// there was one.
    pub fn forget_address(&self, address: &str) -> Option<Target> {
        let drone = self.inner.lock().drones.remove(address)?;
        Some(Target {
            address: address.to_string(),
            name: drone.name,
        })
    }

    /// The registration's revision (see [`Record::revision`]), if it is still here.
    pub fn revision(&self, target: &Target) -> Option<i64> {
        self.inner
            .lock()
            .get_mut(target)
            .map(|drone| drone.revision)
    }

    /// Whether the drone showed life (registered again, or passed a probe) after `since`.
    pub fn seen_since(&self, target: &Target, since: Instant) -> bool {
        self.inner
            .lock()
            .get_mut(target)
            .is_some_and(|drone| drone.last_seen > since)
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

    /// Every registered drone, to probe.
    pub fn targets(&self) -> Vec<Target> {
        self.select(|_| true)
    }

    /// The drones that may take a task: all but those that failed a task or a probe since a probe
    /// last saw them alive.
    pub fn available(&self) -> Vec<Target> {
        self.select(|drone| drone.available)
    }

    /// The drones out of rotation: those that failed a task or a probe since a probe last saw them
    /// alive. The queen still tries them when every available drone failed, or none is available.
    pub fn out_of_rotation(&self) -> Vec<Target> {
        self.select(|drone| !drone.available)
    }

    /// How many drones are registered, and how many of them are available.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        let available = inner.drones.values().filter(|d| d.available).count();
        (inner.drones.len(), available)
    }

    fn select(&self, keep: impl Fn(&Drone) -> bool) -> Vec<Target> {
        let inner = self.inner.lock();
        inner
            .drones
            .iter()
            .filter(|(_, drone)| keep(drone))
            .map(|(address, drone)| Target {
                address: address.clone(),
                name: drone.name.clone(),
            })
            .collect()
    }

    /// Whether this registration still exists and may take a task.
    pub fn is_available(&self, target: &Target) -> bool {
        self.inner
            .lock()
            .get_mut(target)
            .is_some_and(|drone| drone.available)
    }

    /// A probe reached the drone: it is alive now, has no failures, and may take tasks again.
    /// Returns whether this brought it back into rotation.
    pub fn record_alive(&self, target: &Target) -> bool {
        let mut inner = self.inner.lock();
        let Some(drone) = inner.get_mut(target) else {
            return false;
        };
        let was_available = drone.available;
        drone.refresh();
        !was_available
    }

    /// A probe try failed: the drone takes no tasks until a probe passes. Returns whether this
    /// took it out of rotation, or `None` if the registration is gone.
    pub fn record_probe_failure(&self, target: &Target) -> Option<bool> {
        let mut inner = self.inner.lock();
        let drone = inner.get_mut(target)?;
        drone.failures += 1;
        Some(std::mem::replace(&mut drone.available, false))
    }

    /// Handing it a task failed in a way that shows the drone unwell (refused, reset, an error
    /// status): skip it for tasks until a probe sees it alive.
    pub fn record_task_failure(&self, target: &Target) {
        let mut inner = self.inner.lock();
        if let Some(drone) = inner.get_mut(target) {
            drone.failures += 1;
            drone.available = false;
        }
    }

    /// Handing it a task timed out. Under load that is no evidence that the drone is unwell, so it
    /// stays in rotation: a probe decides (see `recheck.rs`).
    pub fn record_task_timeout(&self, target: &Target) {
        let mut inner = self.inner.lock();
        if let Some(drone) = inner.get_mut(target) {
            drone.failures += 1;
        }
    }

    /// Removes the registration, unless the drone showed life after `since` (it registered again
    /// while its probes were failing). Returns whether it was removed.
    pub fn remove_unless_seen_since(&self, target: &Target, since: Instant) -> bool {
        let mut inner = self.inner.lock();
        match inner.get_mut(target) {
            Some(drone) if drone.last_seen <= since => {
                inner.drones.remove(&target.address);
                true
            }
            _ => false,
        }
    }
}

/// `time` as Unix seconds, to the millisecond: how `/drones` and the shared store write times.
pub fn unix_seconds(time: SystemTime) -> f64 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (secs * 1000.0).round() / 1000.0
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

    #[test]
    fn names_count_up_and_are_never_reused() {
        let registry = Registry::new();
        assert_eq!(registry.register("a:1").name, "drone-0");
        assert_eq!(registry.register("b:1").name, "drone-1");
        let a = target(&registry, "a:1");
        assert!(registry.remove_unless_seen_since(&a, Instant::now()));
        // The tutorial named this one drone-1 too (len of the dict): a collision.
        assert_eq!(registry.register("c:1").name, "drone-2");
        assert_eq!(registry.register("a:1").name, "drone-3");
    }

    #[test]
    fn registering_again_keeps_the_name_and_refreshes() {
        let registry = Registry::new();
        let first = registry.register("a:1");
        let a = target(&registry, "a:1");
        registry.record_task_failure(&a);
        registry.record_probe_failure(&a);
        let again = registry.register("a:1");
        assert_eq!((first.new, again.new), (true, false));
        assert_eq!(again.name, first.name);
        let info = &registry.list()[0];
        assert_eq!((info.failures, info.available), (0, true));
        assert_eq!(registry.list().len(), 1);
    }

    #[test]
    fn a_failed_task_takes_a_drone_out_of_rotation_until_a_probe_passes() {
        let registry = Registry::new();
        registry.register("a:1");
        registry.register("b:1");
        let a = target(&registry, "a:1");
        registry.record_task_failure(&a);
        let available: Vec<String> = registry
            .available()
            .into_iter()
            .map(|t| t.address)
            .collect();
        assert_eq!(available, vec!["b:1".to_string()]);
        assert!(!registry.is_available(&a));
        assert_eq!(registry.targets().len(), 2, "it is still probed");
        registry.record_alive(&a);
        assert_eq!(registry.available().len(), 2);
    }

    #[test]
    fn a_timed_out_task_counts_but_keeps_the_drone_in_rotation() {
        let registry = Registry::new();
        registry.register("a:1");
        registry.register("b:1");
        let a = target(&registry, "a:1");
        registry.record_task_timeout(&a);
        assert_eq!(registry.available().len(), 2);
        assert!(registry.out_of_rotation().is_empty());
        assert_eq!(registry.list()[0].failures, 1);
        registry.record_task_failure(&a);
        assert_eq!(registry.out_of_rotation(), vec![a]);
        assert_eq!(registry.counts(), (2, 1));
    }

    #[test]
    fn failures_count_in_a_row_and_reset_when_alive() {
        let registry = Registry::new();
        registry.register("a:1");
        let a = target(&registry, "a:1");
        assert_eq!(
            registry.record_probe_failure(&a),
            Some(true),
            "it leaves rotation"
        );
        assert_eq!(
            registry.record_probe_failure(&a),
            Some(false),
            "it was out already"
        );
        assert_eq!(registry.list()[0].failures, 2);
        assert!(
            registry.available().is_empty(),
            "a failing drone takes no tasks"
        );
        assert!(registry.record_alive(&a), "it comes back into rotation");
        assert!(!registry.record_alive(&a), "it was back already");
        assert_eq!(registry.list()[0].failures, 0);
    }

    #[test]
    fn news_about_an_old_registration_does_not_touch_a_new_one() {
        let registry = Registry::new();
        registry.register("a:1");
        let old = target(&registry, "a:1");
        assert!(registry.remove_unless_seen_since(&old, Instant::now()));
        registry.register("a:1");
        assert_eq!(registry.record_probe_failure(&old), None);
        registry.record_task_failure(&old);
        assert!(!registry.remove_unless_seen_since(&old, Instant::now()));
        let info = &registry.list()[0];
        assert_eq!(
            (info.name.as_str(), info.failures, info.available),
            ("drone-1", 0, true)
        );
    }

    #[test]
    fn a_drone_that_registers_during_a_failing_round_is_kept() {
        let registry = Registry::new();
        registry.register("a:1");
        let a = target(&registry, "a:1");
        let round_started = Instant::now();
        registry.register("a:1");
        assert!(!registry.remove_unless_seen_since(&a, round_started));
        assert_eq!(registry.list().len(), 1);
    }

    fn record(address: &str, name: &str, order: u64, revision: i64) -> Record {
        Record {
            address: address.into(),
            name: name.into(),
            registered_at: 1.8e9,
            order,
            revision,
        }
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
        assert_eq!(registry.list()[1].registered_at, 1.8e9);

        let a = target(&registry, "a:1");
        registry.record_task_failure(&a);
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 20)),
            Applied::Unchanged
        );
        assert!(
            !registry.is_available(&a),
            "a repeated record changes nothing"
        );
        let before = Instant::now();
        assert_eq!(
            registry.apply(&record("a:1", "drone-7", 20, 31)),
            Applied::RegisteredAgain
        );
        assert!(registry.is_available(&a) && registry.seen_since(&a, before));
        assert_eq!(registry.revision(&a), Some(31));

        assert_eq!(
            registry.apply(&record("a:1", "drone-9", 40, 40)),
            Applied::Added,
            "removed and registered again elsewhere: a new name"
        );
        assert_eq!(registry.revision(&a), None, "the old registration is gone");
    }

    #[test]
    fn replace_all_keeps_the_survivors_and_drops_the_rest() {
        let registry = Registry::new();
        registry.apply(&record("a:1", "drone-0", 1, 1));
        registry.apply(&record("b:1", "drone-1", 2, 2));
        let b = target(&registry, "b:1");
        registry.record_task_failure(&b);
        let dropped = registry.replace_all(&[
            record("b:1", "drone-1", 2, 2),
            record("c:1", "drone-2", 3, 3),
        ]);
        assert_eq!(
            dropped,
            vec![Target {
                address: "a:1".into(),
                name: "drone-0".into()
            }]
        );
        assert_eq!(registry.names().len(), 2);
        assert!(
            !registry.is_available(&b),
            "local health survives a re-list"
        );
        assert!(registry.forget(&b));
        assert!(!registry.forget(&b));
    }

    #[test]
    fn list_is_in_registration_order_with_times() {
        let registry = Registry::new();
        for address in ["c:1", "a:1", "b:1"] {
            registry.register(address);
        }
        let list = registry.list();
        let names: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["drone-0", "drone-1", "drone-2"]);
        assert!(list[0].registered_at > 1.6e9 && list[0].last_seen >= list[0].registered_at);
    }
}
