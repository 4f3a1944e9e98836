//! Several queens, one registry in etcd: what Kubernetes does with kube-apiserver and etcd.
//!
//! Keys, under the prefix (`/hive/` by default):
//!
//! | key                     | value                                          | written by                  |
//! |-------------------------|------------------------------------------------|-----------------------------|
//! | `drones/<host:port>`    | `{"name", "address", "registered_at", "queen"}` | any queen, at registration  |
//! | `next_id`               | the number of the next `drone-N`               | bumped in the same txn      |
//! | `leader`                | `host:port` of the queen that leads            | the leader, on her lease    |
//!
//! Each queen runs two threads, each restarted if it ever panics:
//! - **sync** ([`sync`]) reads every key once, then follows a watch, and keeps her `Registry` equal
//!   to etcd's drones. Submits and `/drones` read that copy, never etcd, so they go on while etcd
//!   is away, with the drones last known.
//! - **election** ([`election`]) makes one queen the leader, on an etcd lease.
//!
//! Registrations go through any queen, in a txn that bumps the name counter and creates the drone's
//! key together, so two queens never give out one name. Only the leader runs the heartbeat, and
//! each removal is a txn that holds only while the leader key is still the one she created and the
//! drone's key is still at the revision she decided on (it did not register again): a paused or
//! cut-off ex-leader removes nothing, whatever her clock says. The requests themselves are in
//! [`gateway`].

mod base64;
mod election;
pub mod gateway;
mod sync;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::EtcdConfig;
use crate::error::{Error, Result};
use crate::logging::quoted;
use crate::registry::{Applied, Record, Registered, Registry, Target, unix_seconds};
use crate::store::{Store, StoreHealth};
use election::Election;
use gateway::{Gateway, GatewayError, Kv, Txn};

/// Limit for one call to one etcd member. A member without quorum answers only after ~5 s, so a
/// call gives up well before and tries the next member.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A registration through a queen is done or refused within this, waiting for its turn included:
/// a drone gives up on its call after 2 s.
const REGISTER_BUDGET: Duration = Duration::from_millis(1500);

/// Pause before a thread that panicked starts again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The registry in etcd, and this queen's part in the election.
pub struct Etcd {
    config: EtcdConfig,
    gateway: Gateway,
    registry: Arc<Registry>,
    keys: Keys,
    /// `host:port` this queen is known by: the leader key's value when she leads.
    me: OnceLock<String>,
    /// Set once the registry has been read: the queen serves from then on.
    ready: AtomicBool,
    election: Election,
    /// Why etcd could not be reached, when the last call that tried failed.
    unreachable: Mutex<Option<String>>,
    /// Held by the registration in progress through this queen.
    registering: Mutex<()>,
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

    /// The first key past every key under the prefix: the prefix with its last byte plus one
    /// (the prefix ends with `/`, so this never carries).
    fn prefix_end(&self) -> Vec<u8> {
        let mut end = self.prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = last.saturating_add(1);
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
    /// The queen it registered through (last), so the others can say so; empty when unknown.
    #[serde(default)]
    queen: String,
}

impl StoredDrone {
    /// The value of `kv` as a registration of `address`, or why not. Names are Hive's `drone-N`,
    /// so nothing else written there can reach a log line or an answer.
    fn read(address: &str, kv: &Kv) -> std::result::Result<StoredDrone, String> {
        let stored: StoredDrone =
            serde_json::from_slice(&kv.value).map_err(|e| format!("not a registration: {e}"))?;
        let numbered = stored
            .name
            .strip_prefix("drone-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if stored.address != address || !numbered {
            return Err("not a registration of this address".into());
        }
        Ok(stored)
    }

    fn record(&self, kv: &Kv) -> Record {
        Record {
            address: self.address.clone(),
            name: self.name.clone(),
            registered_at: self.registered_at,
            order: kv.create_revision.unsigned_abs(),
            revision: kv.mod_revision,
        }
    }
}

impl Etcd {
    /// The registry in etcd, copied into `registry`. Nothing is called before [`Store::start`].
    pub fn new(config: EtcdConfig, registry: Arc<Registry>) -> Etcd {
        Etcd {
            gateway: Gateway::new(config.endpoints.clone(), config.tls.clone(), CALL_TIMEOUT),
            keys: Keys::new(&config.prefix),
            election: Election::new(config.leader_ttl),
            config,
            registry,
            me: OnceLock::new(),
            ready: AtomicBool::new(false),
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

    fn me(&self) -> &str {
        self.me.get().map_or("", String::as_str)
    }

    /// One registration, retried while it loses races for the name counter, all within `deadline`.
    ///
    /// Registrations through this queen take turns: all of them bump the one counter, so at once
    /// they would mostly fail each other's compares. In turn, only other queens' can race one, and
    /// a retry starts at once from what the failed txn read, so it beats registrations that still
    /// have to read: a queen cannot starve the others. The turn is held across the calls to etcd
    /// (each limited by the deadline), never the registry's lock. While etcd is known to be
    /// unreachable, one registration at a time finds out whether it is back and the others are
    /// refused at once, rather than hold a handler thread each until the deadline.
    ///
    /// A drone key whose value is not a registration (written by something else) is replaced by a
    /// fresh one, as if absent, so the address can register again.
    fn register_in_etcd(
        &self,
        address: &str,
        deadline: Instant,
    ) -> std::result::Result<Registered, GatewayError> {
        let turn = match self.registering.try_lock() {
            Some(turn) => Some(turn),
            None if self.unreachable.lock().is_some() => None,
            None => self.registering.try_lock_until(deadline),
        };
        let Some(_turn) = turn else {
            return Err(GatewayError::Unreachable(
                "registrations are queued behind a slow etcd; try again".into(),
            ));
        };
        let key = self.keys.drone(address);
        let counter = &self.keys.next_id;
        let read = Txn::new().read(&key).read(counter);
        let mut seen = self.gateway.txn_before(&read, Some(deadline))?.reads;
        while Instant::now() < deadline {
            let [drone, next_id] = seen.as_slice() else {
                return Err(GatewayError::Malformed(
                    "a txn answered without its two reads".into(),
                ));
            };
            let known = drone
                .as_ref()
                .and_then(|kv| Some((kv, StoredDrone::read(address, kv).ok()?)));
            let (txn, record, new) = match known {
                // Known: write it again (naming this queen), so a removal decided before now no
                // longer applies, and the other queens hear of it.
                Some((kv, mut stored)) => {
                    stored.queen = self.me().to_string();
                    let value = serde_json::to_vec(&stored).expect("a registration serializes");
                    let txn = Txn::new()
                        .if_modified_at(&key, kv.mod_revision)
                        .put(&key, &value, 0);
                    (txn, stored.record(kv), false)
                }
                None => {
                    let n = match next_id {
                        Some(kv) => std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|text| text.parse::<u64>().ok())
                            .filter(|n| *n < u64::MAX)
                            .ok_or_else(|| {
                                GatewayError::Malformed("the name counter is not a number".into())
                            })?,
                        None => 0,
                    };
                    let stored = StoredDrone {
                        name: format!("drone-{n}"),
                        address: address.to_string(),
                        registered_at: unix_seconds(SystemTime::now()),
                        queen: self.me().to_string(),
                    };
                    let value = serde_json::to_vec(&stored).expect("a registration serializes");
                    let txn = match next_id {
                        Some(kv) => Txn::new().if_modified_at(counter, kv.mod_revision),
                        None => Txn::new().if_absent(counter),
                    };
                    let txn = match drone {
                        Some(unreadable) => txn.if_modified_at(&key, unreadable.mod_revision),
                        None => txn.if_absent(&key),
                    }
                    .put(counter, (n + 1).to_string().as_bytes(), 0)
                    .put(&key, &value, 0);
                    (txn, stored.record(&Kv::default()), true)
                }
            };
            let txn = txn.or_read(&key).or_read(counter);
            let result = self.gateway.txn_before(&txn, Some(deadline))?;
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
                self.registry.apply(&record);
                return Ok(Registered {
                    name: record.name,
                    new,
                });
            }
            seen = result.reads;
        }
        Err(GatewayError::Unreachable(
            "too many registrations at once; try again".into(),
        ))
    }

    /// Runs `body` on a thread named `name` for the life of the process, starting it again (after
    /// a pause) if it panics: a dead sync or election thread would leave the queen serving a
    /// registry that no longer changes.
    fn supervise(self: &Arc<Self>, name: &str, body: fn(&Etcd) -> !) -> std::io::Result<()> {
        let etcd = self.clone();
        let thread_name = name.to_string();
        thread::Builder::new().name(name.into()).spawn(move || {
            loop {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| body(&etcd)));
                error!("the {thread_name} thread panicked; starting it again");
                thread::sleep(RESTART_PAUSE);
            }
        })?;
        Ok(())
    }
}

impl Store for Etcd {
    fn register(&self, address: &str) -> Result<Registered> {
        let registered = self.register_in_etcd(address, Instant::now() + REGISTER_BUDGET);
        self.note(&registered);
        registered.map_err(|e| match e {
            GatewayError::Unreachable(_) => Error::StoreUnavailable(e.to_string()),
            GatewayError::Refused { .. } | GatewayError::Malformed(_) => {
                Error::StoreFailed(e.to_string())
            }
        })
    }

    fn remove(&self, target: &Target, since: Instant) -> bool {
        let Some(term) = self.election.term() else {
            return false;
        };
        let Some(revision) = self.registry.removal_revision(target, since) else {
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
                self.registry.forget(&target.address, result.revision);
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
        self.election.term().is_some()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn health(&self) -> Option<StoreHealth> {
        let store = match self.unreachable.lock().as_ref() {
            None => "etcd".to_string(),
            Some(why) => format!("etcd unreachable: {why}"),
        };
        let (leads, leader) = self.election.view();
        Some(StoreHealth {
            role: if leads { "leader" } else { "follower" },
            leader,
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
        let _ = self.me.set(me);
        self.supervise("etcd-sync", Etcd::sync)?;
        self.supervise("election", Etcd::elect)
    }
}

/// Logs that a drone registered through another queen appeared, if this record added it.
fn log_registered_elsewhere(stored: &StoredDrone, applied: Applied, me: &str) {
    if applied == Applied::Added && stored.queen != me {
        let through = if stored.queen.is_empty() {
            "another queen".to_string()
        } else {
            quoted(&stored.queen)
        };
        info!(
            "{} at {} registered through {through}",
            stored.name,
            quoted(&stored.address)
        );
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
            "<html>",
        ] {
            assert!(StoredDrone::read("a:1", &kv(bad)).is_err(), "{bad}");
        }
    }
}
