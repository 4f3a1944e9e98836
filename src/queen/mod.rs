//! The queen: keeps the registry and the tasks, hands the tutorial's tasks to live drones, takes
//! drones' reports and lease renewals, and runs liveness and the scheduler.
//!
//! - [`registry`]: the drones, as this queen knows them, and their health as she has seen it;
//! - [`liveness`]: leases, probes of the drones that are due, re-checks of drones that failed a
//!   task, and removal of the dead;
//! - [`scheduler`]: the leader's loop that places tasks, starts and stops attempts;
//! - [`logs`]: an attempt's output, relayed from the drone that keeps it;
//! - [`reconcile`]: what the leader makes of a drone's list of attempts (pure);
//! - [`events`]: every change to a task or a drone, as the store's watch brings it, for
//!   `GET /events`.

pub mod events;
pub mod liveness;
pub mod logs;
pub mod reconcile;
pub mod registry;
pub mod scheduler;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::address;
use crate::auth::Keyring;
use crate::client::{CallError, Client};
use crate::clock::now;
use crate::config::{QueenConfig, StartError};
use crate::error::{Error, Result};
use crate::front::BodyLimits;
use crate::labels::{Constraint, Labels, all_hold, listed};
use crate::logging::quoted;
use crate::metrics::{Exposition, Metrics};
use crate::store::tasks::{Change, Changed};
use crate::store::{Store, StoreHealth};
use crate::tasks::index::{Page, Stored};
use crate::tasks::lifecycle::{Event, Step, step};
use crate::tasks::placement::{Capacity, Want};
use crate::tasks::wire::{Renewal, RenewalAnswer, Reports, ReportsAnswer};
use crate::tasks::{State, Submission, Task, member_id, millicpus, new_id};
use liveness::Liveness;
use registry::{DroneInfo, Registered, Registration, Target};
use scheduler::Scheduler;

/// Handler threads of a queen. A submit waits on a drone (up to `--task-timeout`), so there are
/// enough that a few slow drones cannot starve `/healthz` and `/register`.
pub const HANDLER_THREADS: usize = 32;

/// Bodies a queen takes beyond the default 64 KiB: a drone's report carries a task's output, and
/// its lease renewal the list of every attempt it runs or has ended.
pub const BODY_LIMITS: BodyLimits = BodyLimits {
    by_path: &[("/reports", 1024 * 1024), ("/lease", 1024 * 1024)],
};

/// Drones out of rotation a submit tries when no available drone took its task.
const MAX_TRIES_OUT_OF_ROTATION: usize = 2;

/// A submit's tries together take at most this many task timeouts: a registry full of frozen
/// drones must not hold a handler for a timeout each.
const SUBMIT_BUDGET_TASK_TIMEOUTS: u32 = 2;

/// Tries of one change to a task that keeps losing races with other writers of the same task.
const CHANGE_TRIES: usize = 5;

/// A cancel of a running task waits this long for its drone to stop it (SIGTERM to every process
/// of it, and SIGKILL after its `kill_timeout_s`, 5 s unless it says), so the answer usually shows
/// the task `cancelled`.
const CANCEL_WAIT: Duration = Duration::from_secs(6);

/// Longest `?wait=` a `GET /tasks/ID` may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The queen's state and what she does on each request.
pub struct Queen {
    store: Arc<Store>,
    client: Client,
    liveness: Arc<Liveness>,
    scheduler: Arc<Scheduler>,
    config: QueenConfig,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

/// Why a queen did not take a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRenewed {
    /// She does not lead; the leader, as far as she knows, is at this address.
    Leader(String),
    /// Something the caller can act on otherwise (no queen leads now, no such drone).
    Error(Error),
}

/// What became of a `POST /tasks`.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new task.
    New(Arc<Task>),
    /// A task of the same id and spec was there already (the call is idempotent).
    Existing(Arc<Task>),
    /// The tasks of a group (`each_drone`), oldest first; `new` is false when the group of the
    /// same id and spec was there already.
    Group { tasks: Vec<Arc<Task>>, new: bool },
}

impl Queen {
    /// A queen over `store`; `client` calls drones for tasks and stops, `liveness` knows which
    /// drones are alive.
    pub fn new(
        config: QueenConfig,
        store: Arc<Store>,
        client: Client,
        liveness: Arc<Liveness>,
        scheduler: Arc<Scheduler>,
        metrics: Arc<Metrics>,
    ) -> Queen {
        Queen {
            store,
            client,
            liveness,
            scheduler,
            config,
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// True once the queen is serving and has the state to serve from.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.store.ready()
    }

    /// The store's and the election's part of `/healthz`, when the state is shared.
    pub fn store_health(&self) -> Option<StoreHealth> {
        self.store.health()
    }

    /// Registers a drone (idempotently) and returns its name and credential.
    pub fn register(&self, registration: &Registration) -> Result<Registered> {
        address::validate(&registration.address).map_err(Error::BadRequest)?;
        let registered = self.store.register(registration)?;
        let address = quoted(&registration.address);
        let exec = if registration.exec {
            format!(", runs commands in {} slots", registration.slots)
        } else {
            String::new()
        };
        if registered.new {
            self.metrics.drones_registered.inc();
            info!("registered {} at {address}{exec}", registered.name);
        } else {
            info!("{} at {address} registered again{exec}", registered.name);
        }
        Ok(registered)
    }

    /// The interval of leases and probes, which drones are told: a Hive drone renews its lease
    /// every interval, a tutorial drone notices a lost queen after three without a probe.
    pub fn heartbeat_interval_secs(&self) -> f64 {
        self.config.heartbeat.interval.as_secs_f64()
    }

    /// Renews the lease of the drone at `drone` (by its credential) with what `renewal` says it
    /// runs. Only the leader takes renewals: they live in her memory, never in the store.
    pub fn renew(
        &self,
        drone: &str,
        renewal: &Renewal,
    ) -> std::result::Result<RenewalAnswer, NotRenewed> {
        if !self.store.leads() {
            return Err(match self.store.other_leader() {
                Some(leader) => NotRenewed::Leader(leader),
                None => NotRenewed::Error(Error::NotReady(
                    "no queen leads now, so no lease is renewed; try again shortly".into(),
                )),
            });
        }
        let now = Instant::now();
        let Some(renewed) = self.store.registry().renew(drone, renewal.after, now) else {
            return Err(NotRenewed::Error(Error::NotFound(format!(
                "drone at {drone:?}; it was removed: register again"
            ))));
        };
        self.metrics.leases_renewed.inc();
        let target = &renewed.target;
        if renewed.back_in_rotation {
            info!(
                "{} ({}) renewed its lease; it takes tasks",
                target.name,
                quoted(&target.address)
            );
        }
        if !renewal.status.boot.is_empty() {
            self.scheduler
                .reconcile(target, &renewal.status, renewed.listed_after, now);
        }
        Ok(RenewalAnswer {
            lease_interval: self.heartbeat_interval_secs(),
            renewal: renewed.id,
        })
    }

    /// Hands `text` to a drone and returns the name of the drone that took it: the available drones
    /// in random order, then those out of rotation (see `place`).
    pub fn submit(&self, text: &str) -> Result<String> {
        let started = Instant::now();
        let placed = self.place(text);
        self.metrics.submit_latency.observe(started.elapsed());
        placed
    }

    /// Tries the available drones in random order until one confirms; then, if none did (or none
    /// is available), up to [`MAX_TRIES_OUT_OF_ROTATION`] drones out of rotation: when every host
    /// looks unhealthy a balancer still sends to one rather than fail the request (Envoy's panic
    /// threshold), so only an empty registry answers 503. All tries together take at most
    /// [`SUBMIT_BUDGET_TASK_TIMEOUTS`] task timeouts. A drone that fails is re-checked at once (see
    /// `recheck.rs`).
    ///
    /// At least once: a drone that timed out may have run the task before another one runs it too.
    fn place(&self, text: &str) -> Result<String> {
        let registry = self.store.registry();
        if registry.is_empty() {
            return Err(match self.store.unreachable() {
                Some(why) => Error::StoreUnavailable(why),
                None => Error::NoDrones,
            });
        }
        let deadline = Instant::now() + self.config.task_timeout * SUBMIT_BUDGET_TASK_TIMEOUTS;
        let mut failures = Vec::new();
        let mut tried: Vec<Target> = Vec::new();
        let mut out_of_rotation = 0;
        loop {
            // Drones in rotation first, then a few out of it; each drawn when its turn comes, so
            // a submit costs the same among ten drones or ten thousand.
            let target = match registry.pick(true, &tried) {
                Some(target) => target,
                None if out_of_rotation < MAX_TRIES_OUT_OF_ROTATION => {
                    out_of_rotation += 1;
                    match registry.pick(false, &tried) {
                        Some(target) => target,
                        None => break,
                    }
                }
                None => break,
            };
            tried.push(target.clone());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failures.push("no time left for the other drones".to_string());
                break;
            }
            let timeout = self.config.task_timeout.min(left);
            match self.hand_over(text, &target, failures.len(), timeout) {
                Ok(()) => return Ok(target.name),
                Err(why) => failures.push(why),
            }
        }
        self.metrics.tasks_failed.inc();
        if failures.is_empty() {
            return Err(Error::NoDrones);
        }
        let detail = failures.join("; ");
        warn!(
            "task {} not done: every drone tried failed ({detail})",
            quoted(text)
        );
        Err(Error::AllDronesFailed(detail))
    }

    /// One try at handing `text` to `target` within `timeout`, after `failed` failed tries on
    /// other drones.
    fn hand_over(
        &self,
        text: &str,
        target: &Target,
        failed: usize,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let task = serde_json::json!({ "text": text });
        let registry = self.store.registry();
        let sent = self
            .client
            .bearing(registry.bearer(&target.address))
            .post_json(&target.address, "/do_task", &task, timeout);
        match sent {
            Ok(_) => {
                self.metrics.tasks_placed.inc();
                if failed > 0 {
                    self.metrics.tasks_retried_elsewhere.inc();
                }
                info!(
                    "task {} sent to {} ({})",
                    quoted(text),
                    target.name,
                    quoted(&target.address)
                );
                Ok(())
            }
            Err(e) => {
                self.metrics.task_tries_failed.inc();
                let consequence = if e == CallError::TimedOut {
                    registry.record_task_timeout(target);
                    "re-checking it"
                } else if registry.record_task_failure(target) {
                    "it takes no tasks until a probe passes"
                } else {
                    "it was out of rotation already"
                };
                self.liveness.suspect(target);
                warn!(
                    "task {} not taken by {} ({}): {e}; {consequence}",
                    quoted(text),
                    target.name,
                    quoted(&target.address)
                );
                Err(format!("{}: {e}", target.name))
            }
        }
    }

    /// Creates the task `submission` asks for; with a client id, idempotently: the same id and
    /// spec again gives the existing task, the same id with another spec is a conflict. Answered
    /// only once the task is stored.
    pub fn create_task(&self, submission: Submission) -> Result<Created> {
        if submission.each_drone {
            return self.create_group(submission);
        }
        let tasks = self.store.tasks();
        if let Some(id) = &submission.id {
            if let Some(existing) = tasks.get(id) {
                return same_spec(existing.task, &submission);
            }
            if tasks.has_group(id) {
                return Err(Error::Conflict(format!(
                    "{id:?} is a group of tasks made with each_drone; use another id"
                )));
            }
        }
        self.check_cpus(&submission)?;
        if tasks.pending() >= self.config.tasks.max_pending {
            return Err(Error::TooManyRequests(format!(
                "{} tasks are pending, the most this queen keeps (--max-pending); try again later",
                self.config.tasks.max_pending
            )));
        }
        for _ in 0..CHANGE_TRIES {
            let id = submission.id.clone().unwrap_or_else(new_id);
            let task = Task::new(id, submission.spec.clone(), now());
            let change = Change { task, revision: 0 };
            let outcome = self.store.change_tasks(vec![change], false).remove(0)?;
            match outcome {
                Changed::Done(stored) => {
                    self.metrics.task_transition(None, State::Pending);
                    let spec = &stored.task.spec;
                    info!(
                        "task {} created: {} ({} slot{})",
                        stored.task.id,
                        quoted(&spec.command_line()),
                        spec.slots,
                        if spec.slots == 1 { "" } else { "s" }
                    );
                    return Ok(Created::New(stored.task));
                }
                Changed::Conflict(Some(existing)) if submission.id.is_some() => {
                    return same_spec(existing.task, &submission);
                }
                // A generated id that was taken (or a client id whose key holds something that is
                // not a task): a client id cannot be changed, a generated one can.
                Changed::Conflict(_) if submission.id.is_none() => continue,
                Changed::Conflict(_) | Changed::NotLeader => break,
            }
        }
        Err(Error::StoreFailed(
            "the task's key is taken by something that is not a task".into(),
        ))
    }

    /// Creates one task per drone that meets `submission`'s constraints now (it runs commands
    /// and is not draining), as one group: the group's id is the client's id or a new one, and
    /// its task on drone `drone-3` is `ID.drone-3`, pinned there by a last constraint
    /// `hive.name=drone-3` (see `labels.rs`). With a client id, idempotently: the same spec again
    /// gives the group as it was made (drones that came since get nothing), another spec is a
    /// conflict. No drone meeting the constraints is a conflict too (409), naming the constraint
    /// none meets: the request is well formed, and the fleet as it is now is what refuses it
    /// (the same request succeeds once such a drone registers).
    fn create_group(&self, submission: Submission) -> Result<Created> {
        let tasks = self.store.tasks();
        if let Some(id) = &submission.id {
            if tasks.get(id).is_some() {
                return Err(Error::Conflict(format!(
                    "task {id:?} exists, made without each_drone; use another id"
                )));
            }
            let members = tasks.group(id);
            if !members.is_empty() {
                return same_group(id, members, &submission);
            }
        }
        let constraints = &submission.spec.constraints;
        let drones: Vec<DroneInfo> = self
            .drones()
            .into_iter()
            .filter(|drone| drone.exec && !drone.draining)
            .collect();
        let meeting: Vec<&DroneInfo> = drones
            .iter()
            .filter(|drone| all_hold(constraints, &drone.labels))
            .collect();
        if meeting.is_empty() {
            let why = match drones.len() {
                0 => "no drone runs commands and takes placements".to_string(),
                n => format!(
                    "{}, of the {n} that run commands and are not draining",
                    unmet(constraints, drones.iter().map(|d| &*d.labels))
                ),
            };
            return Err(Error::Conflict(format!(
                "each_drone: {why}; nothing was created"
            )));
        }
        self.check_cpus(&submission)?;
        let max_pending = self.config.tasks.max_pending;
        if tasks.pending() + meeting.len() > max_pending {
            return Err(Error::TooManyRequests(format!(
                "{} tasks are pending and this group adds {}, more than this queen keeps (--max-pending {max_pending}); try again later",
                tasks.pending(),
                meeting.len()
            )));
        }
        let group = submission.id.clone().unwrap_or_else(new_id);
        let now = now();
        let changes = meeting
            .iter()
            .map(|drone| {
                let mut task = Task::new(
                    member_id(&group, &drone.name),
                    member_spec(&submission.spec, &drone.name),
                    now,
                );
                task.group = Some(group.clone());
                Change { task, revision: 0 }
            })
            .collect();
        let mut made = Vec::new();
        let mut raced = false;
        for outcome in self.store.change_tasks(changes, false) {
            match outcome? {
                Changed::Done(stored) => {
                    self.metrics.task_transition(None, State::Pending);
                    made.push(stored.task);
                }
                Changed::Conflict(_) | Changed::NotLeader => raced = true,
            }
        }
        let names: Vec<&str> = made
            .iter()
            .filter_map(|task| task.id.split_once('.').map(|(_, drone)| drone))
            .collect();
        if !made.is_empty() {
            info!(
                "group {group} created: {} on {}",
                quoted(&submission.spec.command_line()),
                names.join(", ")
            );
        }
        if raced {
            // The same create through another queen, or a retry of it, made some first: the
            // group as stored now answers, if it is the same.
            return match &submission.id {
                Some(id) => same_group(id, tasks.group(id), &submission),
                None => Err(Error::StoreFailed(
                    "a task's key in the new group is taken by something else".into(),
                )),
            };
        }
        Ok(Created::Group {
            tasks: made,
            new: true,
        })
    }

    /// Refuses a task that asks for more cpus than any drone that runs commands has.
    fn check_cpus(&self, submission: &Submission) -> Result<()> {
        if let Some(cpus) = submission.spec.resources.cpus
            && let Some(most) = self.store.registry().most_cpus()
            && cpus > most
        {
            return Err(Error::BadRequest(format!(
                "field \"resources.cpus\": {cpus} is more than any drone has (the most is {most})"
            )));
        }
        Ok(())
    }

    /// Task `id` as this queen knows it, after up to `wait` for it to end.
    pub fn task(&self, id: &str, wait: Option<Duration>) -> Result<Task> {
        let task = match wait {
            Some(wait) => self.store.tasks().wait(id, wait.min(MAX_WAIT)),
            None => self.store.tasks().get(id).map(|stored| stored.task),
        };
        let task = task.ok_or_else(|| Error::NotFound(format!("task {id:?}")))?;
        Ok(self.shown(&task, &mut None))
    }

    /// A page of tasks, newest first, of one state or all, of one group or all.
    pub fn tasks(
        &self,
        state: Option<State>,
        group: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Task>, Option<String>)> {
        let listed = self.store.tasks().list(state, group, limit, after);
        let Page { tasks, next } = listed.map_err(|_| {
            Error::BadRequest(format!(
                "after: no task {:?} (it may have been deleted; list from the start)",
                after.unwrap_or_default()
            ))
        })?;
        let mut drones = None;
        Ok((
            tasks
                .iter()
                .map(|task| self.shown(task, &mut drones))
                .collect(),
            next,
        ))
    }

    /// Cancels task `id`: a pending one at once; a running one is stopped by its drone (all its
    /// processes), and ends `cancelled` when the drone says it has; an ended one stays as it is.
    pub fn cancel(&self, id: &str) -> Result<Task> {
        let tasks = self.store.tasks();
        let mut stored = tasks
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("task {id:?}")))?;
        for _ in 0..CHANGE_TRIES {
            let next = match step(&stored.task, Event::Cancel, now()) {
                Step::Ignored(_) => break,
                Step::Changed(next) => next,
            };
            let from = stored.task.state;
            let change = Change {
                task: *next,
                revision: stored.revision,
            };
            match self.store.change_tasks(vec![change], false).remove(0)? {
                Changed::Done(now) => {
                    self.metrics.task_transition(Some(from), now.task.state);
                    info!("task {id} cancel asked for ({from} now)");
                    stored = now;
                    break;
                }
                Changed::Conflict(Some(fresh)) => stored = fresh,
                Changed::Conflict(None) => return Err(Error::NotFound(format!("task {id:?}"))),
                Changed::NotLeader => break,
            }
        }
        if stored.task.cancel_requested
            && let Some(attempt) = stored.task.running_attempt()
        {
            self.scheduler.stop(&attempt.address, &attempt.id);
            if let Some(task) = tasks.wait(id, CANCEL_WAIT) {
                return Ok(self.shown(&task, &mut None));
            }
        }
        self.task(id, None)
    }

    /// Records the ends of attempts the drone at `drone` (by its credential) reports. Returns the
    /// ids recorded (or with nothing to record: an attempt no task here has, a duplicate); the
    /// drone sends the others again later. A drone reports only for itself and only its own
    /// attempts: anything else refuses the whole batch (403) and changes nothing.
    pub fn report(&self, drone: &str, reports: &Reports) -> Result<ReportsAnswer> {
        if reports.address != drone {
            warn!(
                "refused reports from {} in the name of {}",
                quoted(drone),
                quoted(&reports.address)
            );
            return Err(Error::Forbidden(format!(
                "a drone reports only its own attempts: this credential is {drone}'s, not {}'s",
                reports.address
            )));
        }
        let mut accepted = Vec::new();
        let mut pending: Vec<(usize, Stored)> = Vec::new();
        for (i, report) in reports.reports.iter().enumerate() {
            match self.store.task_for_report(&report.task, &report.id)? {
                Some(stored) => {
                    if let Some(attempt) = stored.task.attempt(&report.id)
                        && attempt.address != drone
                    {
                        warn!(
                            "refused reports from {}: attempt {} of task {} was placed on {}",
                            quoted(drone),
                            report.id,
                            report.task,
                            quoted(&attempt.address)
                        );
                        return Err(Error::Forbidden(format!(
                            "attempt {} was placed on another drone; a drone reports only its own attempts",
                            report.id
                        )));
                    }
                    pending.push((i, stored));
                }
                None => accepted.push(report.id.clone()),
            }
        }
        for _ in 0..CHANGE_TRIES {
            if pending.is_empty() {
                break;
            }
            let mut changes = Vec::new();
            let mut asked = Vec::new();
            for (i, stored) in pending.drain(..) {
                let report = &reports.reports[i];
                let event = Event::End {
                    attempt: &report.id,
                    ended: &report.ended,
                };
                match step(&stored.task, event, now()) {
                    Step::Ignored(_) => accepted.push(report.id.clone()),
                    Step::Changed(next) => {
                        asked.push((i, stored.task.state));
                        changes.push(Change {
                            task: *next,
                            revision: stored.revision,
                        });
                    }
                }
            }
            let outcomes = self.store.change_tasks(changes, false);
            for ((i, from), outcome) in asked.into_iter().zip(outcomes) {
                let report = &reports.reports[i];
                match outcome {
                    Ok(Changed::Done(stored)) => {
                        let task = &stored.task;
                        self.metrics.task_transition(Some(from), task.state);
                        if task
                            .attempt(&report.id)
                            .is_some_and(|a| a.late_report.is_none())
                        {
                            self.metrics.attempt_ended(task, &report.id);
                        }
                        log_end(task, &report.id, drone);
                        accepted.push(report.id.clone());
                    }
                    Ok(Changed::Conflict(Some(fresh))) => pending.push((i, fresh)),
                    Ok(Changed::Conflict(None) | Changed::NotLeader) => {
                        accepted.push(report.id.clone())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(ReportsAnswer { accepted })
    }

    /// Stops (or with `draining` false, allows again) new placements on the drone named `drone`,
    /// or at the address `drone`.
    pub fn drain(&self, drone: &str, draining: bool) -> Result<DroneInfo> {
        let target = self
            .store
            .registry()
            .find(drone)
            .ok_or_else(|| Error::NotFound(format!("drone {drone:?} (by name or address)")))?;
        let name = target.name.as_str();
        self.store.set_draining(name, draining)?;
        info!(
            "{name} {}",
            if draining {
                "drains: no new placements on it; its running tasks finish"
            } else {
                "takes placements again"
            }
        );
        self.scheduler.poke();
        self.drones()
            .into_iter()
            .find(|drone| drone.name == name)
            .ok_or_else(|| Error::NotFound(format!("drone {name:?}")))
    }

    /// A clean stop: a leader lets her leadership go at once, so another queen takes over within
    /// moments rather than once her lease expires.
    pub fn stop(&self) {
        self.store.resign();
    }

    /// The queen's metrics, after the ones every larve has.
    pub fn render_metrics(&self, out: &mut Exposition) {
        let (registered, available) = self.store.registry().counts();
        self.metrics.render_queen(out, registered, available);
        self.metrics.render_tasks(out, self.store.tasks().counts());
    }

    /// Every change to a task or a drone this queen's views took, for `GET /events`.
    pub fn events(&self) -> &Arc<events::Events> {
        self.store.events()
    }

    /// The revision up to which every change has reached this queen's views: a listing read
    /// after asking this reflects it (see `events::Events::revision`).
    pub fn revision(&self) -> i64 {
        self.store.events().revision()
    }

    /// Address → name of every drone.
    pub fn drone_names(&self) -> BTreeMap<String, String> {
        self.store.registry().names()
    }

    /// Her drones' credentials, for the front's gate: a request showing one is from that drone.
    pub fn keyring(&self) -> Arc<dyn Keyring> {
        self.store.registry().clone()
    }

    /// Everything the queen knows about every drone, with the slots, memory and cpus their
    /// attempts use.
    pub fn drones(&self) -> Vec<DroneInfo> {
        let used = self.store.tasks().used();
        let mut drones = self.store.registry().list();
        for drone in &mut drones {
            let used = used.get(&drone.address).copied().unwrap_or_default();
            drone.used = used.slots;
            drone.used_memory_mb = used.memory_mb;
            drone.used_cpus = f64::from(used.millicpus) / 1000.0;
        }
        drones
    }

    /// What the reasons of pending tasks are worked out from: a look at every drone, so taken
    /// only for an answer that shows a pending task, and once per answer.
    fn drone_summary(&self) -> DroneSummary {
        let drones = self.drones();
        let registered = drones.len();
        let exec = drones
            .into_iter()
            .filter(|d| d.exec)
            .map(|d| ExecDrone {
                usable: d.available && !d.draining,
                capacity: capacity(&d),
                name: d.name,
                labels: d.labels,
            })
            .collect();
        DroneSummary::new(registered, exec, self.store.has_leader())
    }

    /// `task` as the API shows it: a pending task says why it waits. `drones` is the summary the
    /// answer worked out so far, if any.
    fn shown(&self, task: &Task, drones: &mut Option<DroneSummary>) -> Task {
        let mut shown = task.clone();
        if task.state == State::Pending {
            let drones = drones.get_or_insert_with(|| self.drone_summary());
            shown.reason = Some(pending_reason(task, drones, now()));
        }
        shown
    }

    /// Runs the queen's threads once her server is up at `local`: the store's and the scheduler
    /// on threads of their own, liveness on this one, for the life of the process.
    pub fn run(&self, local: SocketAddr) -> StartError {
        let me = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        if let Err(e) = self.store.start(me) {
            return StartError::Io(format!("cannot start the store's threads: {e}"));
        }
        if let Err(e) = self.scheduler.clone().start() {
            return StartError::Io(format!("cannot start the scheduler thread: {e}"));
        }
        self.ready.store(true, Ordering::Relaxed);
        let heartbeat = self.config.heartbeat;
        info!(
            "queen listening on {local}; leases and probes every {:?}, probes of {} tries of {:?}, {:?} apart",
            heartbeat.interval, heartbeat.attempts, heartbeat.timeout, heartbeat.retry_delay
        );
        let e = self.liveness.run();
        StartError::Io(format!("cannot start the liveness thread: {e}"))
    }
}

/// The spec of a group's task on the drone named `drone`: the group's, pinned to that drone.
fn member_spec(spec: &crate::tasks::Spec, drone: &str) -> crate::tasks::Spec {
    let mut spec = spec.clone();
    spec.constraints.push(Constraint::on_drone(drone));
    spec
}

/// The existing group `id` (its tasks `members`), if it was made with the same spec; else a
/// conflict.
fn same_group(id: &str, members: Vec<Stored>, submission: &Submission) -> Result<Created> {
    let same = !members.is_empty()
        && members.iter().all(|member| {
            let drone = member
                .task
                .id
                .split_once('.')
                .map_or("", |(_, drone)| drone);
            member.task.spec == member_spec(&submission.spec, drone)
        });
    if !same {
        return Err(Error::Conflict(format!(
            "group {id:?} exists with another spec; use another id, or the same spec to get it"
        )));
    }
    Ok(Created::Group {
        tasks: members.into_iter().map(|member| member.task).collect(),
        new: false,
    })
}

/// The existing task of a client id, if the spec is the same; else a conflict.
fn same_spec(existing: Arc<Task>, submission: &Submission) -> Result<Created> {
    if existing.spec == submission.spec {
        Ok(Created::Existing(existing))
    } else {
        Err(Error::Conflict(format!(
            "task {:?} exists with another spec; use another id, or the same spec to get it",
            existing.id
        )))
    }
}

/// One log line for the end of attempt `id` as recorded, and what it made of the task.
fn log_end(task: &Task, id: &str, from: &str) {
    let Some(attempt) = task.attempt(id) else {
        return;
    };
    let n = attempt.n;
    if attempt.late_report.is_some() {
        info!(
            "task {} attempt {n} reported by {} after it was replaced; recorded, nothing changes",
            task.id,
            quoted(from)
        );
        return;
    }
    let what = attempt.reason.as_deref().unwrap_or("ended");
    info!(
        "task {} attempt {n} on {} ended: {}; the task is now {}",
        task.id,
        attempt.drone,
        quoted(what),
        task.state
    );
}

/// What the queen knows of her drones, to say why a task waits.
#[derive(Debug)]
struct DroneSummary {
    registered: usize,
    /// The drones that run commands, oldest first.
    exec: Vec<ExecDrone>,
    led: bool,
    /// Which of `exec` meet each set of constraints asked about so far: the tasks of one answer
    /// mostly share a few sets, so each drone's labels are read once per set, not once per task.
    met: RefCell<HashMap<Vec<Constraint>, Met>>,
}

/// A drone that runs commands, as the reasons of pending tasks see it.
#[derive(Debug, Clone)]
struct ExecDrone {
    name: String,
    /// In rotation and not draining: it may take attempts now.
    usable: bool,
    /// What it has, and what is taken.
    capacity: Capacity,
    labels: Arc<Labels>,
}

/// Which drones meet one set of constraints.
#[derive(Debug, Clone)]
struct Met {
    /// Whether any drone that runs commands does.
    any: bool,
    /// The indexes (in [`DroneSummary::exec`]) of those that may take attempts now.
    usable: Rc<[usize]>,
}

impl DroneSummary {
    fn new(registered: usize, exec: Vec<ExecDrone>, led: bool) -> DroneSummary {
        DroneSummary {
            registered,
            exec,
            led,
            met: RefCell::default(),
        }
    }

    /// Which drones meet every one of `constraints`.
    fn met(&self, constraints: &[Constraint]) -> Met {
        if let Some(met) = self.met.borrow().get(constraints) {
            return met.clone();
        }
        let meeting: Vec<usize> = (0..self.exec.len())
            .filter(|&i| all_hold(constraints, &self.exec[i].labels))
            .collect();
        let met = Met {
            any: !meeting.is_empty(),
            usable: meeting
                .into_iter()
                .filter(|&i| self.exec[i].usable)
                .collect(),
        };
        self.met
            .borrow_mut()
            .insert(constraints.to_vec(), met.clone());
        met
    }
}

/// Why no drone labelled as `drones` says meets all of `constraints`: the first constraint none
/// meets, or, when each is met by some, that none meets them together.
fn unmet<'a>(
    constraints: &[Constraint],
    drones: impl Iterator<Item = &'a Labels> + Clone,
) -> String {
    let unmet = constraints
        .iter()
        .find(|constraint| !drones.clone().any(|labels| constraint.holds(labels)));
    match unmet {
        Some(constraint) => format!("no drone meets the constraint \"{constraint}\""),
        None => format!(
            "no drone meets the constraints {} together",
            listed(constraints)
        ),
    }
}

/// What placement counts of `drone`.
fn capacity(drone: &DroneInfo) -> Capacity {
    Capacity {
        slots: drone.slots,
        used: drone.used,
        memory_mb: drone.memory_mb,
        used_memory_mb: drone.used_memory_mb,
        millicpus: millicpus(drone.cpus),
        used_millicpus: millicpus(drone.used_cpus),
    }
}

/// Why pending `task` waits, at Unix time `now`.
fn pending_reason(task: &Task, drones: &DroneSummary, now: f64) -> String {
    if let Some(at) = task.not_before
        && at > now
    {
        let why = task.reason.as_deref().unwrap_or("an attempt failed");
        return format!(
            "{why}; waiting {:.1} s more before the next attempt",
            at - now
        );
    }
    let want = task.spec.want();
    if drones.exec.is_empty() {
        return format!(
            "no drone runs commands ({} registered, none started with --allow-exec)",
            drones.registered
        );
    }
    let constraints = &task.spec.constraints;
    let met = drones.met(constraints);
    if !met.any {
        return format!(
            "{} (of the {} that run commands)",
            unmet(constraints, drones.exec.iter().map(|d| &*d.labels)),
            drones.exec.len()
        );
    }
    if met.usable.is_empty() {
        if constraints.is_empty() {
            return "every drone that runs commands is draining or failing its probes".into();
        }
        return format!(
            "every drone that meets {} is draining or failing its probes",
            listed(constraints)
        );
    }
    let usable: Vec<(&str, &Capacity)> = met
        .usable
        .iter()
        .map(|&i| (drones.exec[i].name.as_str(), &drones.exec[i].capacity))
        .collect();
    if !usable.iter().any(|(_, c)| c.could_ever_fit(&want)) {
        return never_fits(&want, &usable);
    }
    if !usable.iter().any(|(_, c)| c.fits(&want)) {
        return format!(
            "no drone has {} free now; it is placed when one has",
            amounts(&want)
        );
    }
    if !drones.led {
        return "no queen leads now, so nothing is placed (is the store reachable?)".into();
    }
    "waiting for the scheduler".into()
}

/// Why `want` fits on none of `usable` even idle: the first of slots, memory and cpus that no
/// drone has enough of, naming the drone with the most.
fn never_fits(want: &Want, usable: &[(&str, &Capacity)]) -> String {
    let most = |key: fn(&Capacity) -> u64| {
        usable
            .iter()
            .rev()
            .max_by_key(|(_, c)| key(c))
            .map(|(name, c)| (*name, key(c)))
            .unwrap_or_default()
    };
    let (name, slots) = most(|c| u64::from(c.slots));
    if slots < u64::from(want.slots) {
        return format!(
            "no drone has {} slots (the most any has is {slots}, on {name})",
            want.slots
        );
    }
    let (name, memory_mb) = most(|c| c.memory_mb);
    if memory_mb < want.memory_mb {
        return format!(
            "no drone has {} MiB of memory for it (the largest is {name}, with {memory_mb} MiB)",
            want.memory_mb
        );
    }
    let (name, millicpus) = most(|c| u64::from(c.millicpus));
    if millicpus < u64::from(want.millicpus) {
        return format!(
            "no drone has {} cpus for it (the most any has is {}, on {name})",
            cpus(want.millicpus),
            cpus(millicpus as u32)
        );
    }
    format!("no drone has {} at once", amounts(want))
}

/// `want` in words: "2 slots", "1 slot, 512 MiB and 0.5 cpus".
fn amounts(want: &Want) -> String {
    let mut parts = vec![format!(
        "{} slot{}",
        want.slots,
        if want.slots == 1 { "" } else { "s" }
    )];
    if want.memory_mb > 0 {
        parts.push(format!("{} MiB", want.memory_mb));
    }
    if want.millicpus > 0 {
        parts.push(format!("{} cpus", cpus(want.millicpus)));
    }
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.join(""),
    }
}

/// Thousandths of a core as cores, as a user wrote them: 0.25, 2.
fn cpus(millicpus: u32) -> f64 {
    f64::from(millicpus) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Spec;

    fn pending(slots: u32) -> Task {
        let spec = Spec {
            command: vec!["true".into()],
            slots,
            timeout_s: 60.0,
            retries: 0,
            retry_delay_s: 1.0,
            env: Default::default(),
            resources: Default::default(),
            kill_timeout_s: 5.0,
            constraints: Vec::new(),
        };
        Task::new("t".into(), spec, 1.0)
    }

    /// A pending task of one slot with `constraints`.
    fn constrained(constraints: &[&str]) -> Task {
        let mut task = pending(1);
        task.spec.constraints = constraints.iter().map(|c| c.parse().unwrap()).collect();
        task
    }

    /// A drone named `name` that may take attempts, with `slots`, of which `used` are taken, and
    /// 4 GiB and 2 cpus free, labelled with its name alone.
    fn drone(name: &str, slots: u32, used: u32) -> ExecDrone {
        ExecDrone {
            name: name.into(),
            usable: true,
            capacity: Capacity {
                slots,
                used,
                memory_mb: 4096,
                millicpus: 2000,
                ..Capacity::default()
            },
            labels: Arc::new(Labels::from([("hive.name".to_string(), name.to_string())])),
        }
    }

    /// `drone` with `labels` too (`k=v`, or `k` alone for `k=yes`).
    fn labelled(mut drone: ExecDrone, labels: &str) -> ExecDrone {
        for pair in labels.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "yes"));
            Arc::make_mut(&mut drone.labels).insert(k.into(), v.into());
        }
        drone
    }

    fn summary(exec: Vec<ExecDrone>) -> DroneSummary {
        DroneSummary::new(exec.len() + 1, exec, true)
    }

    #[test]
    fn a_pending_task_says_why_it_waits() {
        let none = DroneSummary::new(2, Vec::new(), true);
        assert!(pending_reason(&pending(1), &none, 2.0).contains("--allow-exec"));
        let mut out = drone("drone-0", 2, 0);
        out.usable = false;
        let draining = summary(vec![out]);
        assert!(pending_reason(&pending(1), &draining, 2.0).contains("draining"));
        let small = summary(vec![drone("drone-0", 2, 0), drone("drone-1", 1, 0)]);
        assert_eq!(
            pending_reason(&pending(4), &small, 2.0),
            "no drone has 4 slots (the most any has is 2, on drone-0)"
        );
        let busy = summary(vec![drone("drone-0", 2, 2)]);
        assert_eq!(
            pending_reason(&pending(1), &busy, 2.0),
            "no drone has 1 slot free now; it is placed when one has"
        );
        let mut waiting = pending(1);
        waiting.not_before = Some(5.0);
        waiting.reason = Some("attempt 1 failed: exit code 3".into());
        let reason = pending_reason(&waiting, &small, 2.0);
        assert!(
            reason.contains("exit code 3") && reason.contains("3.0 s more"),
            "{reason}"
        );
    }

    #[test]
    fn a_task_no_drone_meets_names_the_constraint() {
        let mut gone = labelled(drone("drone-2", 4, 0), "zone=ap gpu");
        gone.usable = false;
        let fleet = summary(vec![
            labelled(drone("drone-0", 4, 0), "zone=eu"),
            labelled(drone("drone-1", 4, 4), "zone=us gpu"),
            gone,
        ]);
        assert_eq!(
            pending_reason(&constrained(&["zone=eu", "ssd"]), &fleet, 2.0),
            "no drone meets the constraint \"ssd\" (of the 3 that run commands)"
        );
        assert_eq!(
            pending_reason(&constrained(&["zone=eu", "gpu"]), &fleet, 2.0),
            "no drone meets the constraints zone=eu, gpu together (of the 3 that run commands)"
        );
        assert_eq!(
            pending_reason(&constrained(&["zone=ap"]), &fleet, 2.0),
            "every drone that meets zone=ap is draining or failing its probes"
        );
        assert_eq!(
            pending_reason(&constrained(&["gpu", "zone!=ap"]), &fleet, 2.0),
            "no drone has 1 slot free now; it is placed when one has",
            "only the drones that meet its constraints count"
        );
        assert_eq!(
            pending_reason(&constrained(&["hive.name=drone-0"]), &fleet, 2.0),
            "waiting for the scheduler"
        );
        assert_eq!(
            fleet.met.borrow().len(),
            5,
            "one look at the drones per distinct set"
        );
    }

    #[test]
    fn a_task_no_drone_can_ever_fit_names_the_largest_drone() {
        let mut big = drone("drone-1", 4, 0);
        big.capacity.memory_mb = 8192;
        let drones = summary(vec![drone("drone-0", 4, 0), big.clone()]);
        let mut hungry = pending(1);
        hungry.spec.resources.memory_mb = Some(10_000);
        assert_eq!(
            pending_reason(&hungry, &drones, 2.0),
            "no drone has 10000 MiB of memory for it (the largest is drone-1, with 8192 MiB)"
        );
        let mut busy = pending(1);
        busy.spec.resources.cpus = Some(3.0);
        assert_eq!(
            pending_reason(&busy, &drones, 2.0),
            "no drone has 3 cpus for it (the most any has is 2, on drone-0)"
        );
        let mut both = pending(2);
        both.spec.resources.memory_mb = Some(6000);
        both.spec.resources.cpus = Some(0.5);
        big.capacity.used_memory_mb = 4000;
        let full = summary(vec![drone("drone-0", 4, 0), big]);
        assert_eq!(
            pending_reason(&both, &full, 2.0),
            "no drone has 2 slots, 6000 MiB and 0.5 cpus free now; it is placed when one has"
        );
    }
}
