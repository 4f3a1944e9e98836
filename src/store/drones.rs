//! Drones in the store: their records, and the writes that register, remove and drain them.
//!
//! A drone's key is `drones/<host:port>`; its value is a [`StoredDrone`]. Registrations go
//! through any queen, in a txn that bumps the name counter (`next_id`) and creates the drone's key
//! together, so two queens never give out one name. Removals are the leader's (liveness'):
//! fenced, and guarded by the revision the decision was made on, so a drone that registered again
//! meanwhile stays. Draining is a flag on the record, so every queen sees it and it outlives a
//! drone's restart, as a cordon on a Kubernetes node does.

use std::time::{Instant, SystemTime};

use log::info;
use serde::{Deserialize, Serialize};

use super::Store;
use super::batch::{Write, Written};
use super::engine::{Compare, Kv, Op, StoreError, Txn};
use crate::auth::Token;
use crate::clock::unix_seconds;
use crate::error::{Error, Result};
use crate::labels::{self, Labels};
use crate::logging::quoted;
use crate::queen::registry::{Applied, Offer, Record, Registered, Registration, Target};

/// A registration through a queen is done or refused within this, waiting for its turn included:
/// a drone gives up on its call after 2 s.
const REGISTER_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// Tries of a drain or undrain that keeps losing races with registrations of the same drone.
const DRAIN_TRIES: usize = 5;

/// A drone key's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDrone {
    name: String,
    address: String,
    registered_at: f64,
    /// The queen it registered through (last), so the others can say so; empty when unknown.
    #[serde(default)]
    queen: String,
    /// Changes each time the drone process starts (a Hive drone says so; a tutorial drone does not).
    #[serde(default)]
    boot: String,
    /// Whether it runs commands (`--allow-exec`).
    #[serde(default)]
    exec: bool,
    /// How many slots of tasks it runs at once.
    #[serde(default)]
    slots: u32,
    /// Its memory and cpus, and how it contains attempts.
    #[serde(default)]
    offer: Offer,
    /// What it says it is (see `labels.rs`): every queen, a new leader too, places by them.
    #[serde(default)]
    labels: Labels,
    /// Whether new placements on it are stopped.
    #[serde(default)]
    draining: bool,
    /// Registrations under this name so far: a registration, not a drain, is a sign of life.
    #[serde(default)]
    registrations: u64,
    /// The secret a queen gave the drone at its last registration under a new boot: it shows it
    /// to report and renew, queens show it to start and stop its attempts (see `auth.rs`). Every
    /// queen reads it here; `/drones` never shows it.
    #[serde(default)]
    credential: String,
    /// Whether it renews a lease (a Hive drone), so every queen, and the next leader, know
    /// which drones to probe on a schedule.
    #[serde(default)]
    renews: bool,
}

impl StoredDrone {
    /// The value of `kv` as a registration of `address`, or why not. Names are Hive's `drone-N`,
    /// so nothing else written there can reach a log line or an answer.
    pub fn read(address: &str, kv: &Kv) -> std::result::Result<StoredDrone, String> {
        let stored: StoredDrone =
            serde_json::from_slice(&kv.value).map_err(|e| format!("not a registration: {e}"))?;
        let numbered = stored
            .name
            .strip_prefix("drone-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if stored.address != address || !numbered {
            return Err("not a registration of this address".into());
        }
        if !crate::tasks::valid_boot(&stored.boot) {
            return Err("not a registration: a boot id that is not one".into());
        }
        labels::check(&stored.labels)
            .map_err(|why| format!("not a registration: labels: {why}"))?;
        Ok(stored)
    }

    pub fn record(&self, kv: &Kv) -> Record {
        Record {
            address: self.address.clone(),
            name: self.name.clone(),
            registered_at: self.registered_at,
            order: kv.create_revision.unsigned_abs(),
            revision: kv.mod_revision,
            boot: self.boot.clone(),
            exec: self.exec,
            slots: self.slots,
            offer: self.offer.clone(),
            labels: self.labels.clone(),
            draining: self.draining,
            registrations: self.registrations,
            credential: Token::new(&self.credential).ok(),
            renews: self.renews,
        }
    }

    fn value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a registration serializes")
    }

    /// Logs that a drone registered through another queen appeared, if this record added it.
    pub fn log_registered_elsewhere(&self, applied: Applied, me: &str) {
        if applied == Applied::Added && self.queen != me {
            let through = if self.queen.is_empty() {
                "another queen".to_string()
            } else {
                quoted(&self.queen)
            };
            info!(
                "{} at {} registered through {through}",
                self.name,
                quoted(&self.address)
            );
        }
    }
}

impl Store {
    /// Registers the drone (idempotently: a known address keeps its name, and under the same boot
    /// its credential) and returns its name and credential.
    pub fn register(&self, registration: &Registration) -> Result<Registered> {
        let fresh = Token::generate()
            .map_err(|e| Error::Internal(format!("no random bytes for a credential: {e}")))?;
        let registered =
            self.register_in_store(registration, fresh, Instant::now() + REGISTER_BUDGET);
        self.note(&registered);
        Ok(registered?)
    }

    /// One registration, retried while it loses races for the name counter, all by `deadline`.
    ///
    /// Registrations through this queen take turns: all of them bump the one counter, so at once
    /// they would mostly fail each other's compares. In turn, only other queens' can race one, and
    /// a retry starts at once from what the failed txn read, so it beats registrations that still
    /// have to read: a queen cannot starve the others. The turn is held across the calls to the
    /// engine (each limited by the deadline), never the registry's lock. While the engine is known
    /// to be unreachable, one registration at a time finds out whether it is back and the others
    /// are refused at once, rather than hold a handler thread each until the deadline.
    ///
    /// A drone key whose value is not a registration (written by something else) is replaced by a
    /// fresh one, as if absent, so the address can register again.
    /// A drone that registers under a new boot (it restarted) gets `fresh` as its credential: the
    /// old one is no longer anyone's.
    fn register_in_store(
        &self,
        registration: &Registration,
        fresh: Token,
        deadline: Instant,
    ) -> std::result::Result<Registered, StoreError> {
        let turn = match self.registering.try_lock() {
            Some(turn) => Some(turn),
            None if self.reach.why().is_some() => None,
            None => self.registering.try_lock_until(deadline),
        };
        let Some(_turn) = turn else {
            return Err(StoreError::Unreachable(
                "registrations are queued behind a slow store; try again".into(),
            ));
        };
        let address = registration.address.as_str();
        let key = self.keys.drone(address);
        let counter = &self.keys.next_id;
        let read = Txn::new().read(&key).read(counter);
        let mut seen = self.engine.txn(&read, Some(deadline))?.reads;
        while Instant::now() < deadline {
            let [drone, next_id] = seen.as_slice() else {
                return Err(StoreError::Malformed(
                    "a txn answered without its two reads".into(),
                ));
            };
            let known = drone
                .as_ref()
                .and_then(|kv| Some((kv, StoredDrone::read(address, kv).ok()?)));
            let (txn, stored, new, order) = match known {
                // Known: write it again (naming this queen, with what the drone says of itself
                // now), so a removal decided before now no longer applies, and the other queens
                // hear of it.
                Some((kv, stored)) => {
                    let same_boot =
                        stored.boot == registration.boot && Token::new(&stored.credential).is_ok();
                    let credential = if same_boot {
                        stored.credential.clone()
                    } else {
                        fresh.secret().to_string()
                    };
                    let stored = StoredDrone {
                        credential,
                        queen: self.me().to_string(),
                        boot: registration.boot.clone(),
                        exec: registration.exec,
                        slots: registration.slots,
                        offer: registration.offer.clone(),
                        renews: registration.renews,
                        labels: registration.labels.clone(),
                        registrations: stored.registrations + 1,
                        ..stored
                    };
                    let txn = Txn::new()
                        .if_modified_at(&key, kv.mod_revision)
                        .put(&key, &stored.value());
                    (txn, stored, false, kv.create_revision)
                }
                None => {
                    let n = match next_id {
                        Some(kv) => std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|text| text.parse::<u64>().ok())
                            .filter(|n| *n < u64::MAX)
                            .ok_or_else(|| {
                                StoreError::Malformed("the name counter is not a number".into())
                            })?,
                        None => 0,
                    };
                    let stored = StoredDrone {
                        name: format!("drone-{n}"),
                        address: address.to_string(),
                        registered_at: unix_seconds(SystemTime::now()),
                        queen: self.me().to_string(),
                        boot: registration.boot.clone(),
                        exec: registration.exec,
                        slots: registration.slots,
                        offer: registration.offer.clone(),
                        labels: registration.labels.clone(),
                        draining: false,
                        registrations: 1,
                        credential: fresh.secret().to_string(),
                        renews: registration.renews,
                    };
                    let txn = match next_id {
                        Some(kv) => Txn::new().if_modified_at(counter, kv.mod_revision),
                        None => Txn::new().if_absent(counter),
                    };
                    let txn = match drone {
                        Some(unreadable) => txn.if_modified_at(&key, unreadable.mod_revision),
                        None => txn.if_absent(&key),
                    }
                    .put(counter, (n + 1).to_string().as_bytes())
                    .put(&key, &stored.value());
                    (txn, stored, true, 0)
                }
            };
            let txn = txn.or_read(&key).or_read(counter);
            let result = self.engine.txn(&txn, Some(deadline))?;
            if result.succeeded {
                // The txn's writes carry its revision: the key's mod revision, and for a new
                // drone its create revision too.
                let kv = Kv {
                    create_revision: if new { result.revision } else { order },
                    mod_revision: result.revision,
                    ..Kv::default()
                };
                let record = stored.record(&kv);
                self.registry.apply(&record);
                return Ok(Registered {
                    name: stored.name,
                    new,
                    credential: record.credential.unwrap_or_else(|| fresh.clone()),
                });
            }
            seen = result.reads;
        }
        Err(StoreError::Unreachable(
            "too many registrations at once; try again".into(),
        ))
    }

    /// Removes `target`, which failed every try of a probe that started at `since`,
    /// unless it showed life after that or this queen no longer leads. Returns whether it was
    /// removed.
    pub fn remove(&self, target: &Target, since: Instant) -> bool {
        let Some(revision) = self.registry.removal_revision(target, since) else {
            return false;
        };
        let key = self.keys.drone(&target.address);
        let write = Write {
            compare: vec![Compare::Modified {
                key: key.clone(),
                revision,
            }],
            ops: vec![Op::Delete { key }],
            fenced: true,
        };
        let outcome = self
            .write(vec![write])
            .pop()
            .expect("one outcome per write");
        match outcome {
            Ok(Written::Done { revision }) => {
                self.registry.forget(&target.address, revision);
                true
            }
            Ok(_) => {
                log::debug!(
                    "{} ({}) not removed: it registered again, or this queen no longer leads",
                    target.name,
                    quoted(&target.address)
                );
                false
            }
            Err(e) => {
                log::warn!(
                    "could not remove {} ({}): {e}",
                    target.name,
                    quoted(&target.address)
                );
                false
            }
        }
    }

    /// Stops (or, with `draining` false, allows again) new placements on the drone named `name`.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<()> {
        let address = self
            .registry
            .address_of(name)
            .ok_or_else(|| Error::NotFound(format!("drone {name:?}")))?;
        let key = self.keys.drone(&address);
        for _ in 0..DRAIN_TRIES {
            let read = self.engine.range(&key, None);
            self.note(&read);
            let Some(kv) = read?.0.into_iter().next() else {
                break;
            };
            let stored = StoredDrone::read(&address, &kv)
                .map_err(|why| Error::StoreFailed(format!("the drone's record: {why}")))?;
            if stored.name != name {
                break;
            }
            if stored.draining == draining {
                return Ok(());
            }
            let stored = StoredDrone { draining, ..stored };
            let write = Write {
                compare: vec![Compare::Modified {
                    key: key.clone(),
                    revision: kv.mod_revision,
                }],
                ops: vec![Op::Put {
                    key: key.clone(),
                    value: stored.value(),
                    lease: 0,
                }],
                fenced: false,
            };
            match self
                .write(vec![write])
                .pop()
                .expect("one outcome per write")?
            {
                Written::Done { revision } => {
                    let kv = Kv {
                        mod_revision: revision,
                        ..kv
                    };
                    self.registry.apply(&stored.record(&kv));
                    return Ok(());
                }
                Written::Conflict(_) | Written::NotLeader => continue,
            }
        }
        Err(Error::NotFound(format!("drone {name:?}")))
    }

    /// Commits `writes` through the batcher, noting whether the engine answered.
    pub(super) fn write(
        &self,
        writes: Vec<Write>,
    ) -> Vec<std::result::Result<Written, StoreError>> {
        let outcomes = self
            .batcher
            .commit(self.engine.as_ref(), self.leadership.as_ref(), writes);
        if let Some(first) = outcomes.first() {
            self.note(first);
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registrations_of_the_key_s_address_named_drone_n_are_read() {
        let kv = |value: &str| Kv {
            value: value.as_bytes().to_vec(),
            ..Kv::default()
        };
        let good = r#"{"name":"drone-7","address":"a:1","registered_at":1.5}"#;
        assert_eq!(StoredDrone::read("a:1", &kv(good)).unwrap().name, "drone-7");
        for bad in [
            r#"{"name":"drone-7","address":"b:1","registered_at":1.5}"#,
            r#"{"name":"\n[INFO] forged","address":"a:1","registered_at":1.5}"#,
            r#"{"name":"drone-","address":"a:1","registered_at":1.5}"#,
            r#"{"name":"drone-7","address":"a:1"}"#,
            r#"{"name":"drone-7","address":"a:1","registered_at":1.5,"boot":"\n[INFO] x"}"#,
            r#"{"name":"drone-7","address":"a:1","registered_at":1.5,"labels":{"zone":"\n[INFO] x"}}"#,
            "<html>",
        ] {
            assert!(StoredDrone::read("a:1", &kv(bad)).is_err(), "{bad}");
        }
    }
}
