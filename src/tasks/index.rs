//! A queen's view of every task, kept from the store (see `store/sync.rs`), with the indexes the
//! API and the scheduler read: by id, by state in creation order, by group (`each_drone`) in
//! creation order, by drone for running attempts, and finished tasks by when they finished (for
//! garbage collection).
//!
//! A task is ordered by its key's create revision, then its id (tasks created in one transaction
//! share a revision): the same order on every queen, and after a re-read. Every method takes the
//! lock for a few map operations and never across I/O. A caller of [`TaskIndex::wait`] sleeps on a
//! condition variable of that task alone, so a thousand waiting clients cost nothing per change of
//! other tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::placement::Want;
use super::{State, Task};
use crate::store::engine::Kv;

/// Where a task sorts: its key's create revision, then its id.
pub type Order = (i64, Arc<str>);

/// A task as the index holds it: the task, and the store revision it was read at (a write of it
/// compares against this).
#[derive(Debug, Clone)]
pub struct Stored {
    pub task: Arc<Task>,
    pub revision: i64,
    pub order: Order,
}

#[derive(Default)]
struct Inner {
    /// A B-tree, not a hash map: a hash map of a hundred thousand tasks stops every create for
    /// a moment each time it doubles.
    by_id: BTreeMap<Arc<str>, Stored>,
    /// Tasks deleted (at that revision) that the watch may not have reached yet, so an older
    /// record arriving late does not bring one back; dropped by [`TaskIndex::settled`].
    forgotten: HashMap<Arc<str>, i64>,
    /// Every task, per state, in creation order.
    by_state: [BTreeSet<Order>; 5],
    /// The tasks of each group, in creation order.
    by_group: HashMap<Arc<str>, BTreeSet<Order>>,
    /// Tasks with a running attempt, by the address of the drone it runs on.
    running_on: HashMap<String, HashSet<Arc<str>>>,
    /// Finished tasks by when they finished (ms), oldest first.
    finished: BTreeSet<(u64, Order)>,
    /// Condition variables of tasks someone waits for, and how many wait.
    waiters: HashMap<Arc<str>, (Arc<Condvar>, usize)>,
}

/// Every task a queen knows. Share it with `Arc`.
#[derive(Default)]
pub struct TaskIndex {
    inner: Mutex<Inner>,
    /// Told when the scheduler may have work: a task became pending, an attempt ended.
    on_change: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Inner {
    fn insert(&mut self, stored: Stored) -> Option<Stored> {
        let task = &stored.task;
        self.by_state[task.state.index()].insert(stored.order.clone());
        if let Some(group) = &task.group {
            self.by_group
                .entry(Arc::from(group.as_str()))
                .or_default()
                .insert(stored.order.clone());
        }
        if let Some(attempt) = task.running_attempt() {
            self.running_on
                .entry(attempt.address.clone())
                .or_default()
                .insert(stored.order.1.clone());
        }
        if task.state.is_terminal() {
            self.finished
                .insert((millis(task.updated_at), stored.order.clone()));
        }
        if task.state.is_terminal()
            && let Some((waiting, _)) = self.waiters.get(&stored.order.1)
        {
            waiting.notify_all();
        }
        let old = self.by_id.insert(stored.order.1.clone(), stored);
        if let Some(old) = &old {
            self.unindex(old);
        }
        old
    }

    fn remove(&mut self, id: &str) -> Option<Stored> {
        let old = self.by_id.remove(id)?;
        self.unindex(&old);
        Some(old)
    }

    /// Takes `old` out of the secondary indexes (not `by_id`).
    fn unindex(&mut self, old: &Stored) {
        let task = &old.task;
        let current = self.by_id.get(&old.order.1);
        if current.is_none_or(|now| now.task.state != task.state) {
            self.by_state[task.state.index()].remove(&old.order);
        }
        if let Some(group) = &task.group
            && current.is_none_or(|now| now.task.group.as_ref() != Some(group))
            && let Some(members) = self.by_group.get_mut(group.as_str())
        {
            members.remove(&old.order);
            if members.is_empty() {
                self.by_group.remove(group.as_str());
            }
        }
        if let Some(attempt) = task.running_attempt() {
            let still = current
                .and_then(|now| now.task.running_attempt())
                .is_some_and(|now| now.address == attempt.address);
            if !still && let Some(ids) = self.running_on.get_mut(&attempt.address) {
                ids.remove(&old.order.1);
                if ids.is_empty() {
                    self.running_on.remove(&attempt.address);
                }
            }
        }
        if task.state.is_terminal() {
            let key = (millis(task.updated_at), old.order.clone());
            let same = current.is_some_and(|now| {
                now.task.state.is_terminal() && millis(now.task.updated_at) == key.0
            });
            if !same {
                self.finished.remove(&key);
            }
        }
    }
}

impl Inner {
    /// [`TaskIndex::list`] of one group: its tasks (a group holds one per drone, so a few
    /// thousand at most) filtered by state.
    fn list_group(
        &self,
        group: &str,
        state: Option<State>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page, ListError> {
        let before = match after {
            Some(id) => Some(
                self.by_id
                    .get(id)
                    .ok_or(ListError::UnknownAfter)?
                    .order
                    .clone(),
            ),
            None => None,
        };
        let mut tasks = Vec::new();
        let mut more = false;
        let members = self.by_group.get(group).into_iter().flatten().rev();
        for order in members.filter(|order| before.as_ref().is_none_or(|b| *order < b)) {
            let task = &self.by_id[&order.1].task;
            if state.is_some_and(|state| task.state != state) {
                continue;
            }
            if tasks.len() == limit {
                more = true;
                break;
            }
            tasks.push(task.clone());
        }
        let next = more
            .then(|| tasks.last().map(|task| task.id.clone()))
            .flatten();
        Ok(Page { tasks, next })
    }
}

/// Unix seconds as whole milliseconds, to order finished tasks.
fn millis(secs: f64) -> u64 {
    (secs.max(0.0) * 1000.0) as u64
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub tasks: Vec<Arc<Task>>,
    /// The id to pass as `after` for the next page, if there may be one.
    pub next: Option<String>,
}

/// Why a listing could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// `after` names no task this queen knows.
    UnknownAfter,
}

impl TaskIndex {
    pub fn new() -> TaskIndex {
        TaskIndex::default()
    }

    /// Calls `poke` whenever the scheduler may have work (the scheduler's wake-up).
    pub fn on_change(&self, poke: Arc<dyn Fn() + Send + Sync>) {
        *self.on_change.lock() = Some(poke);
    }

    fn poke(&self) {
        let poke = self.on_change.lock().clone();
        if let Some(poke) = poke {
            poke();
        }
    }

    /// Takes `task` as read at `kv` (its key's revisions), if it is newer than what is here.
    /// Returns whether it was taken.
    pub fn put(&self, task: Task, kv: &Kv) -> bool {
        let id: Arc<str> = Arc::from(task.id.as_str());
        let mut inner = self.inner.lock();
        let stale = inner
            .by_id
            .get(&id)
            .is_some_and(|old| old.revision >= kv.mod_revision)
            || inner
                .forgotten
                .get(&id)
                .is_some_and(|deleted| kv.mod_revision < *deleted);
        if stale {
            return false;
        }
        let wakes = matches!(task.state, State::Pending)
            || inner.by_id.get(&id).is_some_and(|old| {
                old.task.running_attempt().is_some() && task.running_attempt().is_none()
            });
        let stored = Stored {
            task: Arc::new(task),
            revision: kv.mod_revision,
            order: (kv.create_revision, id),
        };
        inner.insert(stored);
        drop(inner);
        if wakes {
            self.poke();
        }
        true
    }

    /// Takes the task in `kv` (the store's value of `tasks/<id>`), if it is newer than what is
    /// here; an unreadable value is an error, and changes nothing.
    pub fn apply(&self, id: &str, kv: &Kv) -> Result<(), String> {
        {
            let inner = self.inner.lock();
            if inner
                .by_id
                .get(id)
                .is_some_and(|old| old.revision >= kv.mod_revision)
            {
                return Ok(());
            }
        }
        let task = decode(id, kv)?;
        self.put(task, kv);
        Ok(())
    }

    /// Forgets task `id`, deleted at `revision` (a task written after that stays).
    pub fn forget(&self, id: &str, revision: i64) {
        let mut inner = self.inner.lock();
        if inner
            .by_id
            .get(id)
            .is_some_and(|old| old.revision < revision)
        {
            inner.remove(id);
            inner.forgotten.insert(Arc::from(id), revision);
        }
    }

    /// The store's watch has applied every change up to `revision`: no older record can arrive
    /// any more.
    pub fn settled(&self, revision: i64) {
        let mut inner = self.inner.lock();
        if !inner.forgotten.is_empty() {
            inner.forgotten.retain(|_, deleted| *deleted > revision);
        }
    }

    /// Makes the index hold exactly `tasks` (id and value), the store's whole list as of
    /// `revision`, keeping any task written after that revision. Returns how many were read, and
    /// the ids that could not be, with why.
    pub fn replace_all(
        &self,
        tasks: &[(String, &Kv)],
        revision: i64,
    ) -> (usize, Vec<(String, String)>) {
        let mut unreadable = Vec::new();
        let mut listed = HashSet::new();
        for (id, kv) in tasks {
            listed.insert(id.as_str());
            if let Err(why) = self.apply(id, kv) {
                unreadable.push((id.clone(), why));
            }
        }
        let mut inner = self.inner.lock();
        let gone: Vec<Arc<str>> = inner
            .by_id
            .iter()
            .filter(|(id, stored)| !listed.contains(&***id) && stored.revision <= revision)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            inner.remove(&id);
        }
        drop(inner);
        self.poke();
        (tasks.len() - unreadable.len(), unreadable)
    }

    /// Task `id`, with the revision it was read at.
    pub fn get(&self, id: &str) -> Option<Stored> {
        self.inner.lock().by_id.get(id).cloned()
    }

    /// How many tasks are in each state, in [`State::ALL`]'s order.
    pub fn counts(&self) -> [usize; 5] {
        let inner = self.inner.lock();
        std::array::from_fn(|i| inner.by_state[i].len())
    }

    /// The tasks of group `group`, oldest first.
    pub fn group(&self, group: &str) -> Vec<Stored> {
        let inner = self.inner.lock();
        inner
            .by_group
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|order| inner.by_id.get(&order.1).cloned())
            .collect()
    }

    /// Whether group `group` has any task.
    pub fn has_group(&self, group: &str) -> bool {
        self.inner.lock().by_group.contains_key(group)
    }

    /// Up to `limit` tasks, newest first, of one state or all, of one group or all, starting
    /// after task `after`.
    pub fn list(
        &self,
        state: Option<State>,
        group: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page, ListError> {
        let inner = self.inner.lock();
        if let Some(group) = group {
            return inner.list_group(group, state, limit, after);
        }
        let before = match after {
            Some(id) => Some(
                inner
                    .by_id
                    .get(id)
                    .ok_or(ListError::UnknownAfter)?
                    .order
                    .clone(),
            ),
            None => None,
        };
        let mut tasks = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let states: Vec<usize> = match state {
            Some(state) => vec![state.index()],
            None => (0..5).collect(),
        };
        if states.len() == 1 {
            let set = &inner.by_state[states[0]];
            let range: Box<dyn DoubleEndedIterator<Item = &Order>> = match &before {
                Some(before) => Box::new(set.range(..before.clone())),
                None => Box::new(set.iter()),
            };
            for order in range.rev() {
                if tasks.len() == limit {
                    more = true;
                    break;
                }
                tasks.push(inner.by_id[&order.1].task.clone());
            }
        } else {
            // All states: merge the five sets, newest first.
            let mut iters: Vec<_> = states
                .iter()
                .map(|&s| {
                    let set = &inner.by_state[s];
                    let range: Box<dyn DoubleEndedIterator<Item = &Order>> = match &before {
                        Some(before) => Box::new(set.range(..before.clone())),
                        None => Box::new(set.iter()),
                    };
                    range.rev().peekable()
                })
                .collect();
            loop {
                let newest = iters
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, it)| it.peek().map(|order| (i, (*order).clone())))
                    .max_by(|a, b| a.1.cmp(&b.1));
                let Some((i, order)) = newest else { break };
                if tasks.len() == limit {
                    more = true;
                    break;
                }
                iters[i].next();
                tasks.push(inner.by_id[&order.1].task.clone());
            }
        }
        let next = if more {
            tasks.last().map(|task| task.id.clone())
        } else {
            None
        };
        Ok(Page { tasks, next })
    }

    /// Pending tasks due by `now` (Unix seconds), not being cancelled and `placeable` (some drone
    /// meets their constraints), oldest first, at most `limit`, with their revisions: what the
    /// scheduler places next. Tasks no drone may take do not count against `limit`, so a queue
    /// whose head no drone meets still places the tasks behind it. Also the earliest time a
    /// pending task not yet due becomes due, if any.
    pub fn due(
        &self,
        now: f64,
        limit: usize,
        mut placeable: impl FnMut(&Task) -> bool,
    ) -> (Vec<Stored>, Option<f64>) {
        let inner = self.inner.lock();
        let mut due = Vec::new();
        let mut next = None::<f64>;
        for order in &inner.by_state[State::Pending.index()] {
            let stored = &inner.by_id[&order.1];
            match stored.task.not_before {
                Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
                _ if stored.task.cancel_requested => {}
                _ if !placeable(&stored.task) => {}
                _ => {
                    due.push(stored.clone());
                    if due.len() == limit {
                        break;
                    }
                }
            }
        }
        (due, next)
    }

    /// Every task with a running attempt, with its revision.
    pub fn running(&self) -> Vec<Stored> {
        let inner = self.inner.lock();
        inner
            .running_on
            .values()
            .flatten()
            .filter_map(|id| inner.by_id.get(id).cloned())
            .collect()
    }

    /// The tasks running on the drone at `address`.
    pub fn running_on(&self, address: &str) -> Vec<Stored> {
        let inner = self.inner.lock();
        inner
            .running_on
            .get(address)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| inner.by_id.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Slots, memory and cpus taken by running attempts, per drone address.
    pub fn used(&self) -> HashMap<String, Want> {
        let inner = self.inner.lock();
        inner
            .running_on
            .iter()
            .map(|(address, ids)| {
                let mut used = Want::default();
                for stored in ids.iter().filter_map(|id| inner.by_id.get(id)) {
                    let want = stored.task.spec.want();
                    used.slots += want.slots;
                    used.memory_mb += want.memory_mb;
                    used.millicpus += want.millicpus;
                }
                (address.clone(), used)
            })
            .collect()
    }

    /// How many tasks are pending.
    pub fn pending(&self) -> usize {
        self.inner.lock().by_state[State::Pending.index()].len()
    }

    /// The finished tasks beyond the `keep` most recently finished, oldest first, with their
    /// revisions: what garbage collection deletes.
    pub fn finished_beyond(&self, keep: usize, limit: usize) -> Vec<Stored> {
        let inner = self.inner.lock();
        let excess = inner.finished.len().saturating_sub(keep);
        inner
            .finished
            .iter()
            .take(excess.min(limit))
            .filter_map(|(_, order)| inner.by_id.get(&order.1).cloned())
            .collect()
    }

    /// Task `id` once it has ended, or as it is when `wait` has passed (`None`: unknown).
    pub fn wait(&self, id: &str, wait: Duration) -> Option<Arc<Task>> {
        let until = Instant::now() + wait;
        let mut inner = self.inner.lock();
        let key: Arc<str> = inner.by_id.get_key_value(id)?.0.clone();
        let waiting = {
            let entry = inner
                .waiters
                .entry(key.clone())
                .or_insert_with(|| (Arc::new(Condvar::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        loop {
            let task = inner.by_id.get(id).map(|stored| stored.task.clone());
            let done = task.as_ref().is_none_or(|task| task.state.is_terminal());
            if done || waiting.wait_until(&mut inner, until).timed_out() {
                let task = task
                    .filter(|_| done)
                    .or_else(|| inner.by_id.get(id).map(|s| s.task.clone()));
                if let Some(entry) = inner.waiters.get_mut(&key) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        inner.waiters.remove(&key);
                    }
                }
                return task;
            }
        }
    }
}

/// The task stored in `kv` under id `id`, or why it is not one.
pub fn decode(id: &str, kv: &Kv) -> Result<Task, String> {
    let task: Task = serde_json::from_slice(&kv.value).map_err(|e| format!("not a task: {e}"))?;
    if task.id != id {
        return Err("a task of another id".into());
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::lifecycle::{Event, Placement, Step, step};
    use crate::tasks::{AttemptState, Spec};
    use std::collections::BTreeMap;

    fn spec() -> Spec {
        Spec {
            command: vec!["true".into()],
            slots: 2,
            timeout_s: 60.0,
            retries: 0,
            retry_delay_s: 1.0,
            env: BTreeMap::new(),
            resources: Default::default(),
            kill_timeout_s: 5.0,
            constraints: Vec::new(),
        }
    }

    fn kv(create: i64, modified: i64) -> Kv {
        Kv {
            create_revision: create,
            mod_revision: modified,
            ..Kv::default()
        }
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn listing_is_newest_first_by_state_with_pages() {
        let index = TaskIndex::new();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let rev = 10 + i as i64;
            index.put(Task::new(id.to_string(), spec(), 1.0), &kv(rev, rev));
        }
        // Two created in one txn share a revision: ordered by id.
        index.put(Task::new("g".into(), spec(), 1.0), &kv(20, 20));
        index.put(Task::new("f".into(), spec(), 1.0), &kv(20, 20));
        let page = index.list(None, None, 3, None).unwrap();
        assert_eq!(ids(&page), ["g", "f", "e"]);
        assert_eq!(page.next.as_deref(), Some("e"));
        let page = index
            .list(Some(State::Pending), None, 3, Some("e"))
            .unwrap();
        assert_eq!(ids(&page), ["d", "c", "b"]);
        let page = index.list(None, None, 3, Some("b")).unwrap();
        assert_eq!((ids(&page), page.next.clone()), (vec!["a"], None));
        assert_eq!(
            index.list(None, None, 3, Some("zz")).unwrap_err(),
            ListError::UnknownAfter
        );
        assert!(
            index
                .list(Some(State::Running), None, 3, None)
                .unwrap()
                .tasks
                .is_empty()
        );
    }

    #[test]
    fn a_group_lists_its_tasks_alone_newest_first() {
        let index = TaskIndex::new();
        index.put(Task::new("lone".into(), spec(), 1.0), &kv(1, 1));
        for (i, drone) in ["drone-0", "drone-1", "drone-2"].iter().enumerate() {
            let mut task = Task::new(format!("fix.{drone}"), spec(), 1.0);
            task.group = Some("fix".into());
            let rev = 10 + i as i64;
            index.put(task, &kv(rev, rev));
        }
        let page = index.list(None, Some("fix"), 2, None).unwrap();
        assert_eq!(ids(&page), ["fix.drone-2", "fix.drone-1"]);
        let rest = index
            .list(None, Some("fix"), 2, page.next.as_deref())
            .unwrap();
        assert_eq!((ids(&rest), rest.next.clone()), (vec!["fix.drone-0"], None));
        assert!(index.has_group("fix") && !index.has_group("lone"));
        assert_eq!(index.group("fix").len(), 3);
        assert!(
            index
                .list(Some(State::Running), Some("fix"), 10, None)
                .unwrap()
                .tasks
                .is_empty()
        );
        assert!(
            index
                .list(None, Some("nope"), 10, None)
                .unwrap()
                .tasks
                .is_empty()
        );
        for (i, drone) in ["drone-0", "drone-1", "drone-2"].iter().enumerate() {
            index.forget(&format!("fix.{drone}"), 20 + i as i64);
        }
        assert!(!index.has_group("fix"), "a group goes with its last task");
    }

    #[test]
    fn older_records_change_nothing_and_indexes_follow_the_state() {
        let index = TaskIndex::new();
        let task = Task::new("t".into(), spec(), 1.0);
        assert!(index.put(task.clone(), &kv(5, 5)));
        let place = Placement {
            attempt: "a1".into(),
            drone: "drone-0".into(),
            address: "a:1".into(),
            boot: "b".into(),
        };
        let Step::Changed(running) = step(&task, Event::Place(&place), 2.0) else {
            panic!()
        };
        assert!(index.put(*running.clone(), &kv(5, 7)));
        assert!(!index.put(task, &kv(5, 6)), "an older record arriving late");
        assert_eq!(index.counts(), [0, 1, 0, 0, 0]);
        assert_eq!(index.used()["a:1"].slots, 2);
        assert_eq!(index.running_on("a:1").len(), 1);
        let Step::Changed(lost) = step(
            &running,
            Event::Lose {
                attempt: "a1",
                why: "gone",
            },
            3.0,
        ) else {
            panic!()
        };
        assert_eq!(lost.attempts[0].state, AttemptState::Lost);
        index.put(*lost, &kv(5, 8));
        assert_eq!(index.counts(), [0, 0, 0, 1, 0]);
        assert!(index.used().is_empty());
        assert_eq!(index.finished_beyond(0, 10).len(), 1);
        index.forget("t", 8);
        assert_eq!(
            index.counts()[3],
            1,
            "a delete older than the record keeps it"
        );
        index.forget("t", 9);
        assert_eq!(index.counts(), [0; 5]);
    }

    #[test]
    fn due_skips_backoffs_and_cancels_and_says_when_the_next_is_due() {
        let index = TaskIndex::new();
        let mut waiting = Task::new("w".into(), spec(), 1.0);
        waiting.not_before = Some(50.0);
        index.put(waiting, &kv(1, 1));
        index.put(Task::new("a".into(), spec(), 1.0), &kv(2, 2));
        let (due, next) = index.due(10.0, 10, |_| true);
        assert_eq!(
            due.iter().map(|s| s.task.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(next, Some(50.0));
        assert_eq!(index.due(60.0, 10, |_| true).0.len(), 2);
        index.put(Task::new("b".into(), spec(), 1.0), &kv(3, 3));
        let (due, _) = index.due(60.0, 1, |task| task.id != "w" && task.id != "a");
        assert_eq!(
            due.iter().map(|s| s.task.id.as_str()).collect::<Vec<_>>(),
            ["b"],
            "tasks no drone may take do not fill the limit"
        );
    }

    #[test]
    fn wait_returns_when_the_task_ends_or_the_time_is_up() {
        let index = Arc::new(TaskIndex::new());
        let task = Task::new("t".into(), spec(), 1.0);
        index.put(task.clone(), &kv(1, 1));
        let started = Instant::now();
        let seen = index.wait("t", Duration::from_millis(50)).unwrap();
        assert_eq!(seen.state, State::Pending);
        assert!(started.elapsed() >= Duration::from_millis(50));
        let waiter = {
            let index = index.clone();
            std::thread::spawn(move || index.wait("t", Duration::from_secs(30)))
        };
        let Step::Changed(cancelled) = step(&task, Event::Cancel, 2.0) else {
            panic!()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while index.inner.lock().waiters.is_empty() {
            assert!(Instant::now() < deadline, "the waiter never waited");
            std::thread::yield_now();
        }
        index.put(*cancelled, &kv(1, 2));
        let seen = waiter.join().unwrap().unwrap();
        assert_eq!(seen.state, State::Cancelled);
        assert!(
            index.inner.lock().waiters.is_empty(),
            "waiters clean up after themselves"
        );
        assert!(index.wait("nope", Duration::from_secs(1)).is_none());
    }
}
