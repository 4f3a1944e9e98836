//! The scheduler: the leader's loop that places pending tasks on drones and starts their
//! attempts, declares attempts lost, and deletes old finished tasks. On a queen that does not
//! lead it waits.
//!
//! Each pass works from the queen's views (registry and tasks), decides with the pure functions
//! of `tasks::lifecycle` and `tasks::placement`, and writes every decision fenced by the leader's
//! term, so a queen that lost her term (paused, cut off) changes nothing. A pass runs when
//! something changed (a task became pending, an attempt ended, a drone came or went), when a
//! retry's backoff is over, and at least every [`PASS_INTERVAL`].
//!
//! Starting an attempt: the placement is written first (the task is `running` on drone D), then D
//! is asked to start it (`POST /tasks` on the drone, idempotent). So a leader that dies between
//! the two leaves a running attempt its drone never heard of; a new leader finds every running
//! attempt it has not seen confirmed and asks its drone to start it again ([`START_GRACE`] after
//! it first saw it): the drone starts it, says it runs it already, or says it ran it and it ended.
//! No attempt is started twice on a drone, and none is lost to a failover.
//!
//! An attempt is lost when its drone was removed (the heartbeat found it dead), when its drone
//! registered again with a new boot id (it restarted, and ended what it ran: see `drone/`), or
//! when its drone, asked by a probe, no longer lists an attempt it had confirmed. Probes also let
//! the leader stop attempts that run where they no longer belong (declared lost, then placed
//! elsewhere) and re-send the stop of a task whose cancel was asked for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::registry::Target;
use crate::client::{CallError, Client};
use crate::clock::now;
use crate::logging::quoted;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::tasks::{Change, Changed};
use crate::tasks::index::Stored;
use crate::tasks::lifecycle::{Event, Placement, Step, step};
use crate::tasks::placement::{self, Capacity, Policy, Want};
use crate::tasks::wire::{DroneStatus, Start, StartAnswer, StartRequest, Started, attempt_key};
use crate::tasks::{AttemptState, State};

/// A pass runs at least this often, to notice drones that went away and backoffs that ended.
const PASS_INTERVAL: Duration = Duration::from_secs(1);

/// A running attempt this queen did not see its drone confirm is started again (idempotently)
/// this long after she first saw it.
const START_GRACE: Duration = Duration::from_millis(500);

/// Tasks one pass places at most, beyond the free slots it knows of (a task too big for any drone
/// is skipped, and the next one may fit).
const PLACEMENT_MARGIN: usize = 64;

/// Bytes of specs (as JSON) one start call carries, about: a drone takes bodies of up to 2 MiB on
/// `/tasks`.
const START_CALL_BYTES: usize = 1024 * 1024;

/// Finished tasks deleted per pass at most, so a large backlog goes in steps.
const GC_PER_PASS: usize = 1000;

/// The attempt of task `.0` numbered `.1`.
type AttemptId = (Arc<str>, u32);

/// What this queen has seen of a running attempt.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    /// When its drone confirmed it has it (a start's answer, or a probe listing it).
    confirmed: Option<Instant>,
}

/// How the scheduler places and how long it keeps finished tasks.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub policy: Policy,
    /// Finished tasks kept; older ones are deleted.
    pub keep_finished: usize,
    /// Limit for a call to a drone (start, stop).
    pub call_timeout: Duration,
}

/// The scheduler's state and its thread's wake-up.
pub struct Scheduler {
    store: Arc<Store>,
    client: Client,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
    poked: Mutex<bool>,
    wake: Condvar,
    seen: Mutex<HashMap<AttemptId, Seen>>,
    /// Moves on each pass, so drones alike take turns (see `placement::place`).
    turn: AtomicUsize,
}

impl Scheduler {
    pub fn new(
        store: Arc<Store>,
        client: Client,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            store,
            client,
            config,
            metrics,
            poked: Mutex::new(false),
            wake: Condvar::new(),
            seen: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&scheduler);
        let poke: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(scheduler) = weak.upgrade() {
                scheduler.poke();
            }
        });
        scheduler.store.tasks().on_change(poke.clone());
        scheduler.store.registry().on_change(poke);
        scheduler
    }

    /// Something changed: run a pass soon.
    pub fn poke(&self) {
        let mut poked = self.poked.lock();
        *poked = true;
        self.wake.notify_one();
    }

    /// Starts the scheduler's thread, for the life of the process.
    pub fn start(self: Arc<Self>) -> std::io::Result<()> {
        thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(&self) -> ! {
        loop {
            let next_due = if self.store.leads() {
                self.pass()
            } else {
                self.seen.lock().clear();
                None
            };
            let mut wait = PASS_INTERVAL;
            if let Some(at) = next_due {
                let left = Duration::try_from_secs_f64((at - now()).max(0.0)).unwrap_or(wait);
                wait = wait.min(left + Duration::from_millis(1));
            }
            let mut poked = self.poked.lock();
            if !*poked {
                self.wake.wait_for(&mut poked, wait);
            }
            *poked = false;
        }
    }

    /// One pass; returns when the next pending task's backoff ends, if one waits.
    fn pass(&self) -> Option<f64> {
        let running = self.store.tasks().running();
        self.track(&running);
        self.lose_orphans(&running);
        self.start_unconfirmed(&running);
        let next_due = self.place();
        self.collect_garbage();
        next_due
    }

    /// Keeps `seen` to the attempts that run now.
    fn track(&self, running: &[Stored]) {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        let current: HashSet<AttemptId> = running.iter().filter_map(attempt_id).collect();
        seen.retain(|id, _| current.contains(id));
        for id in current {
            seen.entry(id).or_insert(Seen {
                first: now,
                confirmed: None,
            });
        }
    }

    /// Attempts whose drone is gone, or restarted, are lost.
    fn lose_orphans(&self, running: &[Stored]) {
        let registry = self.store.registry();
        let mut losses = Vec::new();
        for stored in running {
            let Some(attempt) = stored.task.running_attempt() else {
                continue;
            };
            let target = Target {
                address: attempt.address.clone(),
                name: attempt.drone.clone(),
            };
            let why = match registry.boot_of(&target) {
                None => format!("its drone {} was removed", attempt.drone),
                Some(boot) if !attempt.boot.is_empty() && boot != attempt.boot => {
                    format!("its drone {} restarted", attempt.drone)
                }
                Some(_) => continue,
            };
            losses.push((stored.clone(), attempt.n, why));
        }
        self.lose(losses);
    }

    /// Declares each `(task, attempt, why)` lost.
    fn lose(&self, losses: Vec<(Stored, u32, String)>) {
        self.end(losses, "lost", |n, why| Event::Lose { attempt: n, why });
    }

    /// Records starts the drones refused as failed attempts.
    fn fail_starts(&self, refused: Vec<(Stored, u32, String)>) {
        self.end(refused, "could not start", |n, why| Event::FailStart {
            attempt: n,
            why,
        });
    }

    /// Ends each `(task, attempt, why)` with the event `event` makes of it, and logs that the
    /// attempt `what` (lost, could not start).
    fn end(
        &self,
        ends: Vec<(Stored, u32, String)>,
        what: &str,
        event: impl for<'a> Fn(u32, &'a str) -> Event<'a>,
    ) {
        let mut changes = Vec::new();
        let mut told = Vec::new();
        for (stored, n, why) in ends {
            if let Step::Changed(next) = step(&stored.task, event(n, &why), now()) {
                told.push((stored.task.state, n, why));
                changes.push(Change {
                    task: *next,
                    revision: stored.revision,
                });
            }
        }
        for ((from, n, why), outcome) in
            told.into_iter().zip(self.store.change_tasks(changes, true))
        {
            if let Ok(Changed::Done(stored)) = outcome {
                self.metrics.task_transition(Some(from), stored.task.state);
                self.metrics.attempt_ended(&stored.task, n);
                warn!(
                    "task {} attempt {n} {what}: {why}; the task is {}",
                    stored.task.id, stored.task.state
                );
            }
        }
    }

    /// Asks drones again to start running attempts they have not confirmed.
    fn start_unconfirmed(&self, running: &[Stored]) {
        let due: HashSet<AttemptId> = {
            let seen = self.seen.lock();
            seen.iter()
                .filter(|(_, s)| s.confirmed.is_none() && s.first.elapsed() >= START_GRACE)
                .map(|(id, _)| id.clone())
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let again: Vec<Stored> = running
            .iter()
            .filter(|stored| attempt_id(stored).is_some_and(|id| due.contains(&id)))
            .cloned()
            .collect();
        debug!(
            "asking drones again to start {} attempts they have not confirmed",
            again.len()
        );
        self.start_attempts(again);
    }

    /// Places due pending tasks on drones with free slots, writes the placements, and starts
    /// them. Returns when the next pending task's backoff ends, if one waits.
    fn place(&self) -> Option<f64> {
        let drones = self.store.registry().schedulable();
        let used = self.store.tasks().used();
        let mut capacities: Vec<Capacity> = drones
            .iter()
            .map(|drone| {
                let used = used.get(&drone.target.address).copied().unwrap_or_default();
                Capacity {
                    slots: drone.slots,
                    used: used.slots + drone.stray_slots,
                    memory_mb: drone.offer.memory_mb,
                    used_memory_mb: used.memory_mb,
                    millicpus: drone.offer.millicpus,
                    used_millicpus: used.millicpus,
                }
            })
            .collect();
        let free: u32 = capacities
            .iter()
            .map(|c| c.slots.saturating_sub(c.used))
            .sum();
        let now = now();
        let limit = if free == 0 {
            0
        } else {
            free as usize + PLACEMENT_MARGIN
        };
        let (due, next_due) = self.store.tasks().due(now, limit.max(1));
        if free == 0 || due.is_empty() {
            return next_due;
        }
        let wants: Vec<Want> = due.iter().map(|stored| stored.task.spec.want()).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = placement::place(&wants, &mut capacities, self.config.policy, turn);
        let mut changes = Vec::new();
        for (stored, choice) in due.iter().zip(chosen) {
            let Some(i) = choice else { continue };
            let drone = &drones[i];
            let placement = Placement {
                drone: drone.target.name.clone(),
                address: drone.target.address.clone(),
                boot: drone.boot.clone(),
            };
            if let Step::Changed(next) = step(&stored.task, Event::Place(&placement), now) {
                changes.push(Change {
                    task: *next,
                    revision: stored.revision,
                });
            }
        }
        let mut placed = Vec::new();
        for outcome in self.store.change_tasks(changes, true) {
            if let Ok(Changed::Done(stored)) = outcome {
                let task = &stored.task;
                self.metrics
                    .task_transition(Some(State::Pending), State::Running);
                if task.attempts.len() == 1 {
                    let waited = (now - task.created_at).max(0.0);
                    self.metrics
                        .scheduling_latency
                        .observe(Duration::from_secs_f64(waited));
                }
                placed.push(stored);
            }
        }
        if !placed.is_empty() {
            self.start_attempts(placed);
        }
        next_due
    }

    /// Asks each drone to start its attempts among `tasks` (one call per drone, drones in
    /// parallel), and records what each drone said.
    fn start_attempts(&self, tasks: Vec<Stored>) {
        let mut by_drone: HashMap<String, Vec<Stored>> = HashMap::new();
        for stored in tasks {
            if let Some(attempt) = stored.task.running_attempt() {
                by_drone
                    .entry(attempt.address.clone())
                    .or_default()
                    .push(stored);
            }
        }
        // Calls of at most about START_CALL_BYTES each: a drone takes 2 MiB at most.
        let calls: Vec<(String, Vec<Stored>)> = by_drone
            .into_iter()
            .flat_map(|(address, tasks)| {
                let mut chunks: Vec<Vec<Stored>> = vec![Vec::new()];
                let mut bytes = 0;
                for stored in tasks {
                    let size = serde_json::to_vec(&stored.task.spec).map_or(0, |json| json.len());
                    if bytes + size > START_CALL_BYTES && !chunks.last().is_some_and(Vec::is_empty)
                    {
                        chunks.push(Vec::new());
                        bytes = 0;
                    }
                    bytes += size;
                    chunks.last_mut().expect("one chunk at least").push(stored);
                }
                chunks
                    .into_iter()
                    .map(move |chunk| (address.clone(), chunk))
            })
            .collect();
        let mut refused = Vec::new();
        thread::scope(|scope| {
            let calls: Vec<_> = calls
                .iter()
                .map(|(address, tasks)| scope.spawn(move || (tasks, self.start_on(address, tasks))))
                .collect();
            for call in calls {
                if let Ok((tasks, answers)) = call.join() {
                    refused.extend(self.note_starts(tasks, answers));
                }
            }
        });
        if !refused.is_empty() {
            self.fail_starts(refused);
        }
    }

    /// One `POST /tasks` to the drone at `address` for `tasks`' running attempts.
    fn start_on(&self, address: &str, tasks: &[Stored]) -> Result<StartAnswer, CallError> {
        let attempts = tasks
            .iter()
            .filter_map(|stored| {
                let task = &stored.task;
                let attempt = task.running_attempt()?;
                Some(Start {
                    task: task.id.clone(),
                    attempt: attempt.n,
                    command: task.spec.command.clone(),
                    env: task.spec.env.clone(),
                    timeout_s: task.spec.timeout_s,
                    slots: task.spec.slots,
                    resources: task.spec.resources.clone(),
                    kill_timeout_s: task.spec.kill_timeout_s,
                })
            })
            .collect();
        let body = serde_json::to_value(StartRequest { attempts }).expect("a start serializes");
        let answer = self
            .client
            .post_json(address, "/tasks", &body, self.config.call_timeout)?;
        serde_json::from_slice(&answer).map_err(|e| {
            CallError::Failed(format!("the drone's answer to a start is not one ({e})"))
        })
    }

    /// Records a drone's answers to starts; returns the attempts it refused, with why.
    fn note_starts(
        &self,
        tasks: &[Stored],
        answer: Result<StartAnswer, CallError>,
    ) -> Vec<(Stored, u32, String)> {
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) if e.is_client_error() => {
                let why = match e {
                    CallError::Status(403) => {
                        "the drone does not run commands (no --allow-exec)".to_string()
                    }
                    other => format!("the drone refused it ({other})"),
                };
                return tasks
                    .iter()
                    .filter_map(|stored| {
                        Some((
                            stored.clone(),
                            stored.task.running_attempt()?.n,
                            why.clone(),
                        ))
                    })
                    .collect();
            }
            Err(e) => {
                // It may or may not have them: asked again after the grace, or found by a probe.
                let address = tasks
                    .first()
                    .and_then(|stored| Some(stored.task.running_attempt()?.address.clone()))
                    .unwrap_or_default();
                warn!(
                    "could not start {} attempts on {}: {e}; asking again shortly",
                    tasks.len(),
                    quoted(&address)
                );
                return Vec::new();
            }
        };
        let by_key: HashMap<String, &Stored> = tasks
            .iter()
            .filter_map(|stored| {
                Some((
                    attempt_key(&stored.task.id, stored.task.running_attempt()?.n),
                    stored,
                ))
            })
            .collect();
        let now = Instant::now();
        let mut refused = Vec::new();
        let mut seen = self.seen.lock();
        for result in answer.results {
            let Some(stored) = by_key.get(&attempt_key(&result.task, result.attempt)) else {
                continue;
            };
            match result.result {
                Started::Started | Started::Running | Started::Ended => {
                    let id: AttemptId = (Arc::from(result.task.as_str()), result.attempt);
                    seen.entry(id)
                        .or_insert(Seen {
                            first: now,
                            confirmed: None,
                        })
                        .confirmed
                        .get_or_insert(now);
                    if result.result == Started::Started {
                        let attempt = stored.task.running_attempt().expect("keyed by it");
                        info!(
                            "task {} attempt {} started on {}",
                            result.task, result.attempt, attempt.drone
                        );
                    }
                }
                Started::Full => refused.push((
                    (*stored).clone(),
                    result.attempt,
                    "the drone had no free slots".to_string(),
                )),
            }
        }
        refused
    }

    /// What a probe of `target`, sent at `sent`, found it runs: confirms the attempts it lists,
    /// loses confirmed ones it no longer lists, and stops the ones it should not run.
    pub fn reconcile(&self, target: &Target, status: &DroneStatus, sent: Instant) {
        if !self.store.leads() {
            return;
        }
        let tasks = self.store.tasks();
        let listed: HashSet<&str> = status.attempts.iter().map(String::as_str).collect();
        let mut losses = Vec::new();
        {
            let mut seen = self.seen.lock();
            for stored in tasks.running_on(&target.address) {
                let Some(attempt) = stored.task.running_attempt() else {
                    continue;
                };
                if attempt.drone != target.name {
                    continue;
                }
                let id: AttemptId = (Arc::from(stored.task.id.as_str()), attempt.n);
                let entry = seen.entry(id).or_insert(Seen {
                    first: Instant::now(),
                    confirmed: None,
                });
                if listed.contains(attempt_key(&stored.task.id, attempt.n).as_str()) {
                    entry.confirmed.get_or_insert(sent);
                } else if entry.confirmed.is_some_and(|at| at < sent) {
                    let n = attempt.n;
                    losses.push((
                        stored,
                        n,
                        format!("its drone {} no longer knows it", target.name),
                    ));
                }
            }
        }
        self.lose(losses);
        // Slots taken on the drone by attempts the store does not count there.
        let mut stray = 0;
        for key in &status.attempts {
            let Some((id, n)) = key
                .rsplit_once('/')
                .and_then(|(id, n)| Some((id, n.parse::<u32>().ok()?)))
            else {
                continue;
            };
            let Some(stored) = tasks.get(id) else {
                continue;
            };
            let task = &stored.task;
            let Some(attempt) = task.attempts.iter().find(|a| a.n == n) else {
                continue;
            };
            let placed_here = attempt.address == target.address && attempt.drone == target.name;
            if attempt.state == AttemptState::Lost
                || (attempt.state == AttemptState::Running && !placed_here)
            {
                stray += task.spec.slots;
                info!(
                    "task {id} attempt {n} still runs on {} after it was replaced; stopping it",
                    target.name
                );
                self.stop(&target.address, id, n);
            } else if attempt.state == AttemptState::Running && task.cancel_requested {
                self.stop(&target.address, id, n);
            }
        }
        self.store.registry().record_stray(target, stray);
    }

    /// Asks the drone at `address` to stop attempt `n` of task `id` (every process of it).
    pub fn stop(&self, address: &str, id: &str, n: u32) {
        let path = format!("/tasks/{id}?attempt={n}");
        if let Err(e) = self.client.delete(address, &path, self.config.call_timeout) {
            warn!(
                "could not ask {} to stop task {id} attempt {n}: {e}",
                quoted(address)
            );
        }
    }

    /// Deletes the finished tasks beyond `--keep-finished`, oldest first.
    fn collect_garbage(&self) {
        let victims = self
            .store
            .tasks()
            .finished_beyond(self.config.keep_finished, GC_PER_PASS);
        if victims.is_empty() {
            return;
        }
        let deleted = self.store.delete_tasks(&victims);
        debug!(
            "deleted {deleted} finished tasks beyond the {} kept",
            self.config.keep_finished
        );
    }
}

/// The running attempt of `stored`'s task, as an id.
fn attempt_id(stored: &Stored) -> Option<AttemptId> {
    let attempt = stored.task.running_attempt()?;
    Some((Arc::from(stored.task.id.as_str()), attempt.n))
}
