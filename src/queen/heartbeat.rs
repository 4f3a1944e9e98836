//! The queen's heartbeat: every interval, probe every drone's `/healthz` and remove the dead.
//!
//! Unlike the tutorial's loop, probes run in parallel on a bounded set of threads, every try has a
//! timeout, and the registry lock is taken only to read the list and to record each result, never
//! while a probe is in flight. So one frozen drone delays nothing but its own verdict, and a round
//! takes about as long as its slowest drone, not the sum of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::registry::Target;
use super::scheduler::Scheduler;
use crate::client::{CallError, Client, Credentials};
use crate::config::HeartbeatConfig;
use crate::logging::quoted;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::wire::DroneStatus;

/// Most probes in flight at once. Each waits on a blocking socket, so this many dead drones can be
/// waited on side by side; a round over more bad drones than this takes a few rounds' worth of time.
pub const MAX_PROBE_THREADS: usize = 256;

/// What a probe asks for: `/healthz`, and from a Hive drone also who it is and what it runs
/// (a tutorial drone ignores the query).
const PROBE_PATH: &str = "/healthz?verbose";

/// How often a queen that does not lead looks whether she does now.
const LEADERSHIP_POLL: Duration = Duration::from_millis(100);

/// Probe threads only parse a small HTTP answer; a small stack keeps hundreds of them cheap.
const PROBE_STACK_BYTES: usize = 256 * 1024;

/// How one drone's probes in one round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A try got a 2xx answer.
    Alive,
    /// Every try failed; `last` is how the final one failed.
    Dead { tries: u32, last: CallError },
    /// The registration went away while it was being probed; nothing to decide.
    Gone,
}

/// Tries `try_once` up to `attempts` times, pausing `retry_delay` between tries, and stops at the
/// first success. `on_failure` is told about each failed try and says whether to go on (false when
/// the drone is no longer registered).
pub fn probe(
    attempts: u32,
    retry_delay: Duration,
    mut try_once: impl FnMut() -> Result<(), CallError>,
    mut on_failure: impl FnMut(&CallError) -> bool,
) -> Verdict {
    let mut tries = 0;
    loop {
        tries += 1;
        let error = match try_once() {
            Ok(()) => return Verdict::Alive,
            Err(error) => error,
        };
        if !on_failure(&error) {
            return Verdict::Gone;
        }
        if tries >= attempts {
            return Verdict::Dead { tries, last: error };
        }
        thread::sleep(retry_delay);
    }
}

/// Runs `check` on every target, on up to [`MAX_PROBE_THREADS`] threads at once, and returns when
/// all are done: a batch of probes takes about as long as its slowest target, not the sum.
pub fn in_parallel(targets: &[Target], check: impl Fn(&Target) + Sync) {
    let next = AtomicUsize::new(0);
    let workers = targets.len().min(MAX_PROBE_THREADS);
    thread::scope(|scope| {
        for _ in 0..workers {
            let spawned = thread::Builder::new()
                .name("probe".into())
                .stack_size(PROBE_STACK_BYTES)
                .spawn_scoped(scope, || {
                    while let Some(target) = targets.get(next.fetch_add(1, Ordering::Relaxed)) {
                        check(target);
                    }
                });
            if let Err(e) = spawned {
                // Fewer workers only make the batch slower; the others take the work.
                warn!("could not start a probe thread: {e}");
                break;
            }
        }
    });
}

/// Logs that `target` failed `what` (a probe, a re-check) and so takes no tasks for now.
pub fn out_of_rotation(target: &Target, what: &str, error: &CallError) {
    warn!(
        "{} ({}) failed {what} ({error}); it takes no tasks until a probe passes",
        target.name,
        quoted(&target.address)
    );
}

/// Logs that `target` passed `what` and so takes tasks again.
pub fn back_in_rotation(target: &Target, what: &str) {
    info!(
        "{} ({}) passed {what}; it takes tasks",
        target.name,
        quoted(&target.address)
    );
}

/// The heartbeat loop and what it needs.
pub struct Heartbeat {
    config: HeartbeatConfig,
    /// The drones to probe, where removals go, and whether this queen leads (so runs the rounds
    /// at all).
    store: Arc<Store>,
    /// Told what each drone runs, and when a drone is removed.
    scheduler: Arc<Scheduler>,
    client: Client,
    metrics: Arc<Metrics>,
}

impl Heartbeat {
    /// A heartbeat over `store`'s drones, removing the dead through it; every probe shows
    /// `credentials`.
    pub fn new(
        config: HeartbeatConfig,
        store: Arc<Store>,
        scheduler: Arc<Scheduler>,
        credentials: Credentials,
        metrics: Arc<Metrics>,
    ) -> Heartbeat {
        Heartbeat {
            config,
            store,
            scheduler,
            // No pool: a probe every interval per drone is rare, a pool over a large fleet is
            // costly, and the drone closes each connection (keeping the TIME_WAIT socket).
            client: Client::new(0, 0, credentials),
            metrics,
        }
    }

    /// Runs rounds forever, pausing `interval` between the end of one and the start of the next,
    /// while this queen leads (a queen alone always does). A queen that starts leading runs her
    /// first round within [`LEADERSHIP_POLL`]: the drones have gone unprobed since the old leader's
    /// last round, and each registers again after three intervals without a probe.
    pub fn run(self) -> ! {
        loop {
            if self.store.leads() {
                self.round();
                thread::sleep(self.config.interval);
            } else {
                thread::sleep(LEADERSHIP_POLL.min(self.config.interval));
            }
        }
    }

    /// One round: probe every registered drone, in parallel, and apply each verdict.
    pub fn round(&self) {
        let started = Instant::now();
        let targets = self.store.registry().targets();
        if targets.is_empty() {
            return;
        }
        in_parallel(&targets, |target| self.check(target, started));
        let took = started.elapsed();
        self.metrics.heartbeat_round.observe(took);
        debug!(
            "heartbeat round over {} drones took {} ms",
            targets.len(),
            took.as_millis()
        );
    }

    fn check(&self, target: &Target, round_started: Instant) {
        let HeartbeatConfig {
            attempts,
            timeout,
            retry_delay,
            ..
        } = self.config;
        let registry = self.store.registry();
        let mut answer = None;
        let verdict = probe(
            attempts,
            retry_delay,
            || {
                let sent = Instant::now();
                let client = self.client.bearing(registry.bearer(&target.address));
                let body = client.get(&target.address, PROBE_PATH, timeout)?;
                answer = Some((sent, body));
                Ok(())
            },
            |error| {
                self.metrics.probes_failed.inc();
                let failure = registry.record_probe_failure(target);
                debug!(
                    "probe of {} ({}) failed: {error}",
                    target.name,
                    quoted(&target.address)
                );
                if failure == Some(true) {
                    out_of_rotation(target, "a probe", error);
                }
                failure.is_some()
            },
        );
        match verdict {
            Verdict::Alive => {
                if registry.record_alive(target) {
                    back_in_rotation(target, "a probe");
                }
                debug!(
                    "probe of {} ({}) passed",
                    target.name,
                    quoted(&target.address)
                );
                // A Hive drone says what it runs; a tutorial drone's answer has none of it.
                if let Some((sent, body)) = answer
                    && let Ok(status) = serde_json::from_slice::<DroneStatus>(&body)
                    && !status.boot.is_empty()
                {
                    self.scheduler.reconcile(target, &status, sent);
                }
            }
            Verdict::Dead { tries, last } => {
                if self.store.remove(target, round_started) {
                    self.metrics.drones_removed.inc();
                    warn!(
                        "removed {} ({}): {last} on all {tries} tries",
                        target.name,
                        quoted(&target.address)
                    );
                    self.scheduler.poke();
                }
            }
            Verdict::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripted(answers: &[Result<(), CallError>]) -> impl FnMut() -> Result<(), CallError> {
        let mut answers: std::collections::VecDeque<_> = answers.iter().cloned().collect();
        move || {
            answers
                .pop_front()
                .expect("probe tried more often than scripted")
        }
    }

    #[test]
    fn first_success_ends_the_probe() {
        let mut failures = 0;
        let verdict = probe(
            4,
            Duration::ZERO,
            scripted(&[Err(CallError::TimedOut), Ok(())]),
            |_| {
                failures += 1;
                true
            },
        );
        assert_eq!((verdict, failures), (Verdict::Alive, 1));
    }

    #[test]
    fn a_drone_failing_every_try_is_dead_with_the_last_reason() {
        let verdict = probe(
            3,
            Duration::ZERO,
            scripted(&[
                Err(CallError::TimedOut),
                Err(CallError::Refused),
                Err(CallError::Status(500)),
            ]),
            |_| true,
        );
        assert_eq!(
            verdict,
            Verdict::Dead {
                tries: 3,
                last: CallError::Status(500)
            }
        );
    }

    #[test]
    fn a_drone_removed_meanwhile_is_not_probed_further() {
        let verdict = probe(
            4,
            Duration::ZERO,
            scripted(&[Err(CallError::Refused)]),
            |_| false,
        );
        assert_eq!(verdict, Verdict::Gone);
    }

    #[test]
    fn retry_delay_separates_tries() {
        let started = Instant::now();
        let verdict = probe(
            3,
            Duration::from_millis(20),
            scripted(&[
                Err(CallError::Refused),
                Err(CallError::Refused),
                Err(CallError::Refused),
            ]),
            |_| true,
        );
        assert!(matches!(verdict, Verdict::Dead { tries: 3, .. }));
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "two pauses between three tries"
        );
    }
}
