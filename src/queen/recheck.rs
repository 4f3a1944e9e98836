//! Re-checks: a drone that failed a task is probed again at once, out of band, rather than at the
//! next heartbeat round, which may be an interval (10 s by default) away.
//!
//! This is the queen's answer to outlier detection as Envoy does it. A failed task is a hint, not a
//! verdict: a drone that refused a task or answered it with an error leaves rotation (the queen
//! hands it no task), and one whose task only timed out stays in it, since under load a timeout
//! says more about the machine than about the drone. Either way the drone is probed within
//! milliseconds, returns to rotation the moment a probe passes, and while probes fail it is probed
//! again every [`RECHECK_INTERVAL`]. A re-check never removes a drone: only the heartbeat does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::heartbeat;
use super::registry::{Registry, Target};
use crate::client::{Client, Credentials};
use crate::metrics::Metrics;

/// Pause between two re-checks of a drone whose probes keep failing.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The drones due for a re-check, and the thread that probes them.
pub struct Recheck {
    /// When each suspect drone is probed next.
    due: Mutex<HashMap<Target, Instant>>,
    /// Woken when a drone becomes due sooner than the thread planned.
    wake: Condvar,
    registry: Arc<Registry>,
    client: Client,
    /// Limit for one probe: the heartbeat's.
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Recheck {
    /// Re-checks of `registry`'s drones, each probe limited by `timeout` and showing `credentials`.
    pub fn new(
        registry: Arc<Registry>,
        credentials: Credentials,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Recheck {
        Recheck {
            due: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            registry,
            // No pool, like the heartbeat: re-checks are rare.
            client: Client::new(0, 0, credentials),
            timeout,
            metrics,
        }
    }

    /// A task failed on `target`: probe it now.
    pub fn suspect(&self, target: &Target) {
        let now = Instant::now();
        let mut due = self.due.lock();
        let at = due.entry(target.clone()).or_insert(now);
        *at = (*at).min(now);
        self.wake.notify_one();
    }

    /// Probes drones as they fall due, forever.
    pub fn run(&self) -> ! {
        loop {
            let batch = self.next_batch();
            self.metrics.rechecks.add(batch.len() as u64);
            heartbeat::in_parallel(&batch, |target| self.check(target));
        }
    }

    /// Waits until at least one drone is due, and takes every drone that is.
    fn next_batch(&self) -> Vec<Target> {
        let mut due = self.due.lock();
        loop {
            let now = Instant::now();
            let batch: Vec<Target> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(target, _)| target.clone())
                .collect();
            if !batch.is_empty() {
                for target in &batch {
                    due.remove(target);
                }
                return batch;
            }
            match due.values().min().copied() {
                Some(next) => {
                    self.wake.wait_until(&mut due, next);
                }
                None => self.wake.wait(&mut due),
            }
        }
    }

    fn check(&self, target: &Target) {
        let client = self.client.bearing(self.registry.bearer(&target.address));
        match client.get(&target.address, "/healthz", self.timeout) {
            Ok(_) => {
                if self.registry.record_alive(target) {
                    heartbeat::back_in_rotation(target, "a re-check");
                }
            }
            Err(error) => {
                self.metrics.probes_failed.inc();
                let Some(left_rotation) = self.registry.record_probe_failure(target) else {
                    return; // Removed meanwhile: nothing left to check.
                };
                if left_rotation {
                    heartbeat::out_of_rotation(target, "a re-check", &error);
                }
                let mut due = self.due.lock();
                let next = Instant::now() + RECHECK_INTERVAL;
                due.entry(target.clone()).or_insert(next);
            }
        }
    }
}
