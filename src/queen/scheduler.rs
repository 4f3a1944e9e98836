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
//! An attempt is lost when its drone was removed (liveness found it dead), when its drone
//! registered again with a new boot id (it restarted, and ended what it ran: see `drone/`), or
//! when its drone's list of attempts (a lease renewal carries one, and so does a probe's answer)
//! no longer holds an attempt it had confirmed. What a list says is decided by `reconcile.rs`
//! (pure) and applied here: attempts confirmed (a restarted or new leader adopts what its drones
//! still run so), lost, expired on the queen's clock, and the ones a drone runs that no queen
//! placed there, or whose cancel was asked for, stopped.
//!
//! A drone that had no room for a start (its slots taken by attempts being stopped) costs the task
//! no retry: the placement is undone and the task placed again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use super::reconcile::{self, Placed};
use super::registry::Target;
use crate::client::{CallError, Client};
use crate::clock::now;
use crate::logging::quoted;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::tasks::{Change, Changed};
use crate::tasks::index::Stored;
use crate::tasks::lifecycle::{Event, Placement, Step, step};
use crate::tasks::placement::{self, Ask, Capacity, Eligibility, Policy};
use crate::tasks::wire::{DroneStatus, Forget, Start, StartAnswer, StartRequest, Started};
use crate::tasks::{State, new_attempt_id};

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

/// An attempt's id.
type AttemptId = String;

/// `(task, attempt id, why)`: an attempt to end, and why.
type Ending = (Stored, String, String);

/// What this queen has seen of a running attempt.
#[derive(Debug, Clone, Copy)]
struct Seen {
    first: Instant,
    /// When its drone confirmed it has it (a start's answer, or a list of its attempts).
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
            losses.push((stored.clone(), attempt.id.clone(), why));
        }
        self.lose(losses);
    }

    /// Declares each `(task, attempt, why)` lost.
    fn lose(&self, losses: Vec<Ending>) {
        self.end(losses, "lost", |id, why| Event::Lose { attempt: id, why });
    }

    /// Records starts the drones refused as failed attempts.
    fn fail_starts(&self, refused: Vec<Ending>) {
        self.end(refused, "could not start", |id, why| Event::FailStart {
            attempt: id,
            why,
        });
    }

    /// Undoes placements on drones that had no room for them: placed again, at no retry's cost.
    fn unplace(&self, full: Vec<Ending>) {
        self.end(full, "did not start", |id, why| Event::Unplace {
            attempt: id,
            why,
        });
    }

    /// Ends each `(task, attempt, why)` with the event `event` makes of it, and logs that the
    /// attempt `what` (lost, could not start).
    fn end(
        &self,
        ends: Vec<Ending>,
        what: &str,
        event: impl for<'a> Fn(&'a str, &'a str) -> Event<'a>,
    ) {
        let mut changes = Vec::new();
        let mut told = Vec::new();
        for (stored, id, why) in ends {
            let Some(n) = stored.task.attempt(&id).map(|attempt| attempt.n) else {
                continue;
            };
            if let Step::Changed(next) = step(&stored.task, event(&id, &why), now()) {
                told.push((stored.task.state, n, id, why));
                changes.push(Change {
                    task: *next,
                    revision: stored.revision,
                });
            }
        }
        for ((from, n, id, why), outcome) in
            told.into_iter().zip(self.store.change_tasks(changes, true))
        {
            if let Ok(Changed::Done(stored)) = outcome {
                self.metrics.task_transition(Some(from), stored.task.state);
                self.metrics.attempt_ended(&stored.task, &id);
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
        let mut eligibility = Eligibility::new(drones.iter().map(|d| &*d.labels).collect());
        let (due, next_due) = self.store.tasks().due(now, limit.max(1), |task| {
            eligibility.any(&task.spec.constraints)
        });
        if free == 0 || due.is_empty() {
            return next_due;
        }
        let asks: Vec<Ask> = due
            .iter()
            .map(|stored| Ask {
                want: stored.task.spec.want(),
                constraints: &stored.task.spec.constraints,
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = placement::place(
            &asks,
            &mut capacities,
            &mut eligibility,
            self.config.policy,
            turn,
        );
        let mut changes = Vec::new();
        for (stored, choice) in due.iter().zip(chosen) {
            let Some(i) = choice else { continue };
            let drone = &drones[i];
            let placement = Placement {
                attempt: new_attempt_id(),
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
        let (mut refused, mut full) = (Vec::new(), Vec::new());
        thread::scope(|scope| {
            let calls: Vec<_> = calls
                .iter()
                .map(|(address, tasks)| scope.spawn(move || (tasks, self.start_on(address, tasks))))
                .collect();
            for call in calls {
                if let Ok((tasks, answers)) = call.join() {
                    let (no, no_room) = self.note_starts(tasks, answers);
                    refused.extend(no);
                    full.extend(no_room);
                }
            }
        });
        if !refused.is_empty() {
            self.fail_starts(refused);
        }
        if !full.is_empty() {
            self.unplace(full);
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
                    id: attempt.id.clone(),
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
            .bearing(self.store.registry().bearer(address))
            .post_json(address, "/tasks", &body, self.config.call_timeout)?;
        serde_json::from_slice(&answer).map_err(|e| {
            CallError::Failed(format!("the drone's answer to a start is not one ({e})"))
        })
    }

    /// Records a drone's answers to starts; returns the attempts it refused, and those it had no
    /// room for, with why.
    fn note_starts(
        &self,
        tasks: &[Stored],
        answer: Result<StartAnswer, CallError>,
    ) -> (Vec<Ending>, Vec<Ending>) {
        let running = |stored: &Stored| Some(stored.task.running_attempt()?.id.clone());
        let answer = match answer {
            Ok(answer) => answer,
            // The drone does not hold the credential its registration was given yet (its answer
            // to the registration is on its way) or any more (it registered again since): it
            // costs no retry, and no start goes there until it shows life with its credential.
            Err(CallError::Status(401)) => {
                if let Some(target) = tasks.first().and_then(|stored| {
                    let attempt = stored.task.running_attempt()?;
                    Some(Target {
                        address: attempt.address.clone(),
                        name: attempt.drone.clone(),
                    })
                }) {
                    self.store.registry().record_full(&target);
                }
                let why = "the drone did not know the queen's credential for it yet".to_string();
                let unplaced = tasks
                    .iter()
                    .filter_map(|stored| Some((stored.clone(), running(stored)?, why.clone())))
                    .collect();
                return (Vec::new(), unplaced);
            }
            Err(e) if e.is_client_error() => {
                let why = match e {
                    CallError::Status(403) => {
                        "the drone does not run commands (no --allow-exec)".to_string()
                    }
                    other => format!("the drone refused it ({other})"),
                };
                let refused = tasks
                    .iter()
                    .filter_map(|stored| Some((stored.clone(), running(stored)?, why.clone())))
                    .collect();
                return (refused, Vec::new());
            }
            Err(e) => {
                // It may or may not have them: asked again after the grace, or found in its list.
                let address = tasks
                    .first()
                    .and_then(|stored| Some(stored.task.running_attempt()?.address.clone()))
                    .unwrap_or_default();
                warn!(
                    "could not start {} attempts on {}: {e}; asking again shortly",
                    tasks.len(),
                    quoted(&address)
                );
                return (Vec::new(), Vec::new());
            }
        };
        let by_id: HashMap<String, &Stored> = tasks
            .iter()
            .filter_map(|stored| Some((running(stored)?, stored)))
            .collect();
        let now = Instant::now();
        let mut full = Vec::new();
        let mut seen = self.seen.lock();
        for result in answer.results {
            let Some(stored) = by_id.get(&result.id) else {
                continue;
            };
            match result.result {
                Started::Started | Started::Running | Started::Ended => {
                    seen.entry(result.id.clone())
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
                            stored.task.id, attempt.n, attempt.drone
                        );
                    }
                }
                Started::Full => {
                    let attempt = stored.task.running_attempt().expect("keyed by it");
                    self.store.registry().record_full(&Target {
                        address: attempt.address.clone(),
                        name: attempt.drone.clone(),
                    });
                    full.push((
                        (*stored).clone(),
                        result.id,
                        "the drone had no free slots".to_string(),
                    ))
                }
            }
        }
        (Vec::new(), full)
    }

    /// What `target` says it runs, in a list it made after `made_after` (a probe's sending, or
    /// the answer to the renewal before; `None`: unknown) and before `made_by`: decided by
    /// `reconcile.rs`, applied here (confirmed, lost, expired, stopped; the slots of what is being
    /// stopped noted). Only a list known to be made after the queen saw an attempt confirmed can
    /// say its drone lost it.
    pub fn reconcile(
        &self,
        target: &Target,
        status: &DroneStatus,
        made_after: Option<Instant>,
        made_by: Instant,
    ) {
        if !self.store.leads() {
            return;
        }
        let here: Vec<Stored> = self
            .store
            .tasks()
            .running_on(&target.address)
            .into_iter()
            .filter(|stored| {
                stored
                    .task
                    .running_attempt()
                    .is_some_and(|attempt| attempt.drone == target.name)
            })
            .collect();
        let placed: Vec<Placed> = {
            let seen = self.seen.lock();
            here.iter()
                .filter_map(|stored| {
                    let task = &stored.task;
                    let attempt = task.running_attempt()?;
                    let confirmed = seen.get(&attempt.id).and_then(|seen| seen.confirmed);
                    let confirmed_before = match (confirmed, made_after) {
                        (Some(at), Some(after)) => at < after,
                        _ => false,
                    };
                    Some(Placed {
                        task: task.id.clone(),
                        id: attempt.id.clone(),
                        started_at: attempt.started_at,
                        timeout_s: task.spec.timeout_s,
                        kill_grace_s: task.spec.kill_timeout_s,
                        slots: task.spec.slots,
                        cancel_requested: task.cancel_requested,
                        confirmed_before,
                    })
                })
                .collect()
        };
        let plan = reconcile::reconcile(&placed, status, now());
        {
            // The drone had them by the time its list came: confirmed then.
            let mut seen = self.seen.lock();
            for id in &plan.confirm {
                seen.entry(id.clone())
                    .or_insert(Seen {
                        first: Instant::now(),
                        confirmed: None,
                    })
                    .confirmed
                    .get_or_insert(made_by);
            }
        }
        let by_task: HashMap<&str, &Stored> = here
            .iter()
            .map(|stored| (stored.task.id.as_str(), stored))
            .collect();
        let endings = |list: Vec<(String, String, String)>| -> Vec<Ending> {
            list.into_iter()
                .filter_map(|(task, id, why)| {
                    Some(((*by_task.get(task.as_str())?).clone(), id, why))
                })
                .collect()
        };
        self.lose(endings(plan.lose));
        self.expire(endings(plan.expire));
        let placed_here: HashSet<&str> = placed.iter().map(|p| p.id.as_str()).collect();
        for id in &plan.stop {
            if !placed_here.contains(id.as_str()) {
                let task = status
                    .running
                    .iter()
                    .find(|listed| &listed.id == id)
                    .map_or("", |listed| listed.task.as_str());
                info!(
                    "{} runs attempt {id} of task {} that no queen placed there (replaced, or another run's); stopping it",
                    target.name,
                    quoted(task)
                );
            }
            self.stop(&target.address, id);
        }
        self.store.registry().record_stray(target, plan.stray_slots);
    }

    /// Ends attempts that ran past their deadline on the queen's clock.
    fn expire(&self, expired: Vec<Ending>) {
        self.end(expired, "timed out on the queen's clock", |id, why| {
            Event::Expire { attempt: id, why }
        });
    }

    /// Asks the drone at `address` to stop attempt `id` (everything it runs).
    pub fn stop(&self, address: &str, id: &str) {
        let path = format!("/attempts/{id}");
        let client = self.client.bearing(self.store.registry().bearer(address));
        if let Err(e) = client.delete(address, &path, self.config.call_timeout) {
            warn!(
                "could not ask {} to stop attempt {id}: {e}",
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
        self.forget_logs(&victims);
    }

    /// Tells the drones that ran the attempts of `deleted` tasks to remove their output: once a
    /// task is gone, nobody can ask for it. Best effort, one call per drone: a drone that is
    /// away removes them itself in time (see `drone/logs/`).
    fn forget_logs(&self, deleted: &[Stored]) {
        let tasks = self.store.tasks();
        let mut by_drone: HashMap<&str, Vec<String>> = HashMap::new();
        for stored in deleted {
            if tasks.get(&stored.task.id).is_some() {
                // Not deleted after all (changed meanwhile): kept, with its output.
                continue;
            }
            for attempt in &stored.task.attempts {
                by_drone
                    .entry(attempt.address.as_str())
                    .or_default()
                    .push(attempt.id.clone());
            }
        }
        for (address, attempts) in by_drone {
            let Some(bearer) = self.store.registry().registered(address) else {
                continue;
            };
            let body = serde_json::json!(Forget { attempts });
            let client = self.client.bearing(bearer);
            if let Err(e) =
                client.post_json(address, "/attempts/forget", &body, self.config.call_timeout)
            {
                debug!(
                    "could not tell {} to remove the output of deleted tasks: {e}",
                    quoted(address)
                );
            }
        }
    }
}

/// The id of `stored`'s running attempt.
fn attempt_id(stored: &Stored) -> Option<AttemptId> {
    Some(stored.task.running_attempt()?.id.clone())
}
