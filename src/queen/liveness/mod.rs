//! Liveness: which drones are alive, at a cost that grows with what changes, not with the fleet.
//!
//! A Hive drone **renews a lease** with the leader every interval (`POST /lease`, with a little
//! jitter; see `drone/lease.rs`): the renewal is taken in the leader's memory (the registry),
//! counts as a sign of life, and carries the drone's list of attempts, which the scheduler
//! reconciles as it does a probe's answer. Nothing is written to the store for it: the store sees
//! a drone only when its state changes (registered, drained, removed).
//!
//! The leader **probes** (`GET /healthz?verbose`, as the tutorial's heartbeat does) only the
//! drones that did not show life for an interval: one that renews when its lease is late, one
//! that renews nothing (the tutorial's) on slots of its own spread across the interval
//! (`schedule.rs`). A probe is up to `--heartbeat-attempts` tries, `--heartbeat-retry-delay`
//! apart, each within `--heartbeat-timeout`; when all fail, the drone is removed, unless it showed
//! life meanwhile (`tries.rs`). So a dead drone is gone within
//! `interval + attempts × (timeout + retry delay)` of its last sign of life, and a live one is
//! never removed because the queen was busy: a late lease is probed before anything is decided.
//!
//! A drone that failed a task is **re-checked**: probed at once (plain `/healthz`), then every
//! second while it fails, on any queen; it returns to rotation when a try passes, and a re-check
//! never removes it.
//!
//! All tries run on this module's one thread, on non-blocking sockets under one epoll
//! (`prober.rs`), however many drones are silent. What a verdict takes that may wait on the store
//! or a drone (a removal, reconciling a drone's list of attempts) goes to a second thread, so the
//! prober never waits on anything but its sockets. The registry's lock is held for map operations
//! only, never across I/O.

pub mod http;
pub mod prober;
pub mod schedule;
pub mod tries;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;
use rustls::ClientConfig;

use super::registry::{Registry, Target};
use super::scheduler::Scheduler;
use crate::client::CallError;
use crate::config::HeartbeatConfig;
use crate::logging::quoted;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::wire::DroneStatus;
use prober::{Ask, Done, Outcome, Prober};
use tries::{Failure, Next, Probe, Purpose};

/// What a probe of a due drone asks for: `/healthz`, and from a Hive drone also who it is and what
/// it runs (a tutorial drone ignores the query).
const PROBE_PATH: &str = "/healthz?verbose";

/// What a re-check asks for: liveness alone. Its answer is not reconciled, so no two lists of one
/// drone are ever asked for at once.
const RECHECK_PATH: &str = "/healthz";

/// Most tries in flight at once, each a descriptor: a queen keeps room for her clients'
/// connections. More due tries wait their turn (a wait, never a failure).
pub const MAX_TRIES_IN_FLIGHT: usize = 1024;

/// Longest the thread sleeps: so a drone registered meanwhile, a suspect or a leadership won are
/// noticed within this, with a wake-up that costs a few microseconds.
const NAP: Duration = Duration::from_millis(25);

/// Shortest time between two turns: events that come meanwhile are taken together, so a thousand
/// probes a second cost a few hundred wake-ups, not several thousand. A try's steps wait this
/// much longer at most, far below any timeout.
const TURN_GAP: Duration = Duration::from_millis(10);

/// Pause before the prober is made again when the kernel refused an epoll.
const PROBER_RETRY: Duration = Duration::from_secs(1);

/// What the prober's thread hands the thread that may wait.
enum Verdict {
    /// Every try of a due probe failed: remove the drone unless it showed life after `since`.
    Dead {
        target: Target,
        since: Instant,
        tries: u32,
        last: CallError,
    },
    /// A Hive drone's list of attempts, made after `made_after` and before `made_by`.
    Listed {
        target: Target,
        status: DroneStatus,
        made_after: Instant,
        made_by: Instant,
    },
}

/// The liveness of a queen's drones: the prober's thread and what it needs.
pub struct Liveness {
    config: HeartbeatConfig,
    /// The drones, where removals go, and whether this queen leads (so probes due drones at all).
    store: Arc<Store>,
    /// Told what each drone runs, and when a drone is removed.
    scheduler: Arc<Scheduler>,
    /// With TLS: how probes speak to drones.
    tls: Option<Arc<ClientConfig>>,
    metrics: Arc<Metrics>,
    /// Drones that failed a task, and when each is re-checked next.
    suspects: Mutex<HashMap<Target, Instant>>,
}

impl Liveness {
    /// The liveness of `store`'s drones, probing with `config`'s tries over `tls` (plain HTTP
    /// without), removing the dead through the store.
    pub fn new(
        config: HeartbeatConfig,
        store: Arc<Store>,
        scheduler: Arc<Scheduler>,
        tls: Option<Arc<ClientConfig>>,
        metrics: Arc<Metrics>,
    ) -> Liveness {
        store.registry().probe_every(config.interval);
        Liveness {
            config,
            store,
            scheduler,
            tls,
            metrics,
            suspects: Mutex::new(HashMap::new()),
        }
    }

    /// A task failed on `target`: re-check it now.
    pub fn suspect(&self, target: &Target) {
        let now = Instant::now();
        let mut suspects = self.suspects.lock();
        let at = suspects.entry(target.clone()).or_insert(now);
        *at = (*at).min(now);
    }

    /// Probes drones as they fall due, and suspects, for the life of the process, on this thread
    /// (a second one takes the verdicts that may wait).
    pub fn run(self: &Arc<Self>) -> std::io::Error {
        let (verdicts, taken) = mpsc::channel();
        let applier = self.clone();
        if let Err(e) = thread::Builder::new()
            .name("liveness".into())
            .spawn(move || applier.apply_all(taken))
        {
            return e;
        }
        let prober = loop {
            match Prober::new(self.tls.clone()) {
                Ok(prober) => break prober,
                Err(e) => {
                    warn!("cannot start probing drones: {e}; trying again in {PROBER_RETRY:?}");
                    thread::sleep(PROBER_RETRY);
                }
            }
        };
        let mut probing = Probing {
            liveness: self,
            prober,
            probes: HashMap::new(),
            next_key: 0,
            ready: VecDeque::new(),
            retries: BinaryHeap::new(),
            led: false,
            verdicts,
        };
        loop {
            let started = Instant::now();
            probing.turn();
            thread::sleep(TURN_GAP.saturating_sub(started.elapsed()));
        }
    }

    /// Takes the verdicts that may wait on the store or a drone, in order, forever.
    fn apply_all(&self, verdicts: Receiver<Verdict>) {
        for verdict in verdicts {
            match verdict {
                Verdict::Dead {
                    target,
                    since,
                    tries,
                    last,
                } => {
                    if self.store.remove(&target, since) {
                        self.metrics.drones_removed.inc();
                        warn!(
                            "removed {} ({}): {last} on all {tries} tries",
                            target.name,
                            quoted(&target.address)
                        );
                        self.scheduler.poke();
                    }
                }
                Verdict::Listed {
                    target,
                    status,
                    made_after,
                    made_by,
                } => self
                    .scheduler
                    .reconcile(&target, &status, Some(made_after), made_by),
            }
        }
    }

    fn registry(&self) -> &Arc<Registry> {
        self.store.registry()
    }

    /// Takes out every suspect due at `now`.
    fn due_suspects(&self, now: Instant) -> Vec<Target> {
        let mut suspects = self.suspects.lock();
        if suspects.is_empty() {
            return Vec::new();
        }
        let due: Vec<Target> = suspects
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(target, _)| target.clone())
            .collect();
        for target in &due {
            suspects.remove(target);
        }
        due
    }

    fn next_suspect(&self) -> Option<Instant> {
        self.suspects.lock().values().min().copied()
    }
}

/// The prober's thread's own state.
struct Probing<'a> {
    liveness: &'a Liveness,
    prober: Prober,
    /// Probes under way, by key (each try of a probe goes to the prober under its probe's key).
    probes: HashMap<u64, Probe>,
    next_key: u64,
    /// Probes whose next try may start now, when the prober has room.
    ready: VecDeque<u64>,
    /// Probes waiting out their retry delay.
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Whether this queen led at the last turn.
    led: bool,
    verdicts: Sender<Verdict>,
}

impl Probing<'_> {
    /// One turn: take in what fell due, start what may start, wait for the sockets (or the next
    /// due time), and judge the tries that ended.
    fn turn(&mut self) {
        let liveness = self.liveness;
        let registry = liveness.registry();
        let now = Instant::now();
        let leads = liveness.store.leads();
        if leads && !self.led {
            registry.take_lead(now);
            info!(
                "leading: probing drones whose lease is late and, every {:?} on slots of their own, drones that renew nothing",
                liveness.config.interval
            );
        }
        self.led = leads;
        if leads {
            for due in registry.due(now) {
                if due.late_lease {
                    liveness.metrics.leases_late.inc();
                    debug!(
                        "the lease of {} ({}) is late: no sign of life for {:?}; probing it",
                        due.target.name,
                        quoted(&due.target.address),
                        due.silent_for
                    );
                }
                self.begin(due.target, Purpose::Due, now);
            }
        }
        for target in liveness.due_suspects(now) {
            liveness.metrics.rechecks.inc();
            self.begin(target, Purpose::Recheck, now);
        }
        while let Some(&Reverse((at, key))) = self.retries.peek()
            && at <= now
        {
            self.retries.pop();
            self.ready.push_back(key);
        }
        while self.prober.in_flight() < MAX_TRIES_IN_FLIGHT
            && let Some(key) = self.ready.pop_front()
        {
            self.try_once(key, now);
        }
        let next = [
            if leads { registry.next_due() } else { None },
            liveness.next_suspect(),
            self.retries.peek().map(|entry| entry.0.0),
            self.prober.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = match next {
            Some(at) => at.saturating_duration_since(now).min(NAP),
            None => NAP,
        };
        for done in self.prober.wait(wait) {
            self.judge(done);
        }
    }

    /// Starts a probe of `target` for `purpose`.
    fn begin(&mut self, target: Target, purpose: Purpose, now: Instant) {
        self.next_key += 1;
        let key = self.next_key;
        self.probes.insert(
            key,
            Probe {
                target,
                purpose,
                started: now,
                failed: 0,
            },
        );
        self.ready.push_back(key);
    }

    /// Starts the next try of probe `key`.
    fn try_once(&mut self, key: u64, now: Instant) {
        let Some(probe) = self.probes.get(&key) else {
            return;
        };
        let liveness = self.liveness;
        liveness.metrics.probes.inc();
        let ask = Ask {
            key,
            address: probe.target.address.clone(),
            path: match probe.purpose {
                Purpose::Due => PROBE_PATH,
                Purpose::Recheck => RECHECK_PATH,
            },
            bearer: liveness.registry().bearer(&probe.target.address),
            timeout: liveness.config.timeout,
        };
        self.prober.start(ask, now);
    }

    /// What a try that ended means, applied.
    fn judge(&mut self, done: Done) {
        let Some(probe) = self.probes.get_mut(&done.key) else {
            return;
        };
        let liveness = self.liveness;
        let registry = liveness.registry();
        let now = Instant::now();
        let what = match probe.purpose {
            Purpose::Due => "a probe",
            Purpose::Recheck => "a re-check",
        };
        let next = match done.outcome {
            Outcome::Passed(body) => {
                let probe = self.probes.remove(&done.key).expect("looked up above");
                let target = &probe.target;
                if registry.record_alive(target, now) {
                    back_in_rotation(target, what);
                }
                debug!(
                    "probe of {} ({}) passed",
                    target.name,
                    quoted(&target.address)
                );
                if probe.purpose == Purpose::Due {
                    // A Hive drone says what it runs; a tutorial drone's answer has none of it.
                    if let Ok(status) = serde_json::from_slice::<DroneStatus>(&body)
                        && !status.boot.is_empty()
                    {
                        let _ = self.verdicts.send(Verdict::Listed {
                            target: target.clone(),
                            status,
                            made_after: done.started,
                            made_by: now,
                        });
                    }
                    self.ended(&probe, now);
                }
                return;
            }
            Outcome::NotStarted(why) => {
                warn!(
                    "could not probe {} ({}): {why}; trying again shortly (not counted against it)",
                    probe.target.name,
                    quoted(&probe.target.address)
                );
                tries::after_local_failure(now)
            }
            Outcome::Failed(error) => {
                liveness.metrics.probes_failed.inc();
                probe.failed += 1;
                let failure = registry.record_probe_failure(&probe.target, probe.started);
                debug!(
                    "probe of {} ({}) failed: {error}",
                    probe.target.name,
                    quoted(&probe.target.address)
                );
                if failure
                    == (Failure::Counted {
                        left_rotation: true,
                    })
                {
                    out_of_rotation(&probe.target, what, &error);
                }
                let next = tries::after_failure(
                    probe,
                    failure,
                    liveness.config.attempts,
                    liveness.config.retry_delay,
                    now,
                );
                if next == Next::Remove {
                    let _ = self.verdicts.send(Verdict::Dead {
                        target: probe.target.clone(),
                        since: probe.started,
                        tries: probe.failed,
                        last: error,
                    });
                }
                next
            }
        };
        match next {
            Next::TryAgain(at) => self.retries.push(Reverse((at, done.key))),
            Next::RecheckAt(at) => {
                let probe = self.probes.remove(&done.key).expect("looked up above");
                liveness.suspects.lock().entry(probe.target).or_insert(at);
            }
            Next::Remove | Next::Stop => {
                let probe = self.probes.remove(&done.key).expect("looked up above");
                if probe.purpose == Purpose::Due {
                    self.ended(&probe, now);
                }
            }
        }
    }

    /// A due probe ended at `now`: the drone is queued for its next one, and the probe counted.
    fn ended(&self, probe: &Probe, now: Instant) {
        let liveness = self.liveness;
        liveness.registry().probe_ended(&probe.target, now);
        liveness
            .metrics
            .probe_duration
            .observe(now.saturating_duration_since(probe.started));
    }
}

/// Logs that `target` failed `what` (a probe, a re-check) and so takes no tasks for now.
fn out_of_rotation(target: &Target, what: &str, error: &CallError) {
    warn!(
        "{} ({}) failed {what} ({error}); it takes no tasks until a probe passes",
        target.name,
        quoted(&target.address)
    );
}

/// Logs that `target` passed `what` and so takes tasks again.
fn back_in_rotation(target: &Target, what: &str) {
    info!(
        "{} ({}) passed {what}; it takes tasks",
        target.name,
        quoted(&target.address)
    );
}
