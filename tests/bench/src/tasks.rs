//! The bench's client of the task API: submitting tasks from many threads at once, waiting for
//! them to end with the queen's blocking `GET /tasks/ID?wait=S`, and reading them back page by
//! page to see what became of each. The task scenarios measure the queen through it, so it keeps
//! its connections alive and costs a submit no more than one request on a warm connection; the
//! throughput scenario shows how fast it submits against a queen with nothing else to do.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;
use serde::Deserialize;
use serde_json::json;
use ureq::Agent;

use crate::Result;
use crate::control;

/// Limit for one call that does not wait on purpose.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The `?wait=` asked of a queen (she allows at most 60 s), and how much longer the call may take.
const WAIT: Duration = Duration::from_secs(30);
const WAIT_SLACK: Duration = Duration::from_secs(5);

/// Kept-alive connections: enough for every submitting thread of every scenario.
const IDLE_CONNECTIONS: usize = 128;
const IDLE_CONNECTIONS_PER_QUEEN: usize = 64;

/// Pause before a submit the queen refused for now is sent again, and how long it is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const RETRY_FOR: Duration = Duration::from_secs(30);

/// The longest page the queen gives.
const PAGE: usize = 1000;

/// A task's state and an attempt's, as the API names the ones the scenarios look for.
pub const SUCCEEDED: &str = "succeeded";
pub const RUNNING: &str = "running";
pub const PENDING: &str = "pending";
pub const LOST: &str = "lost";

/// Task states that are the end of it.
const TERMINAL: [&str; 3] = [SUCCEEDED, "failed", "cancelled"];

/// A task as `GET /tasks` and `GET /tasks/ID` show it; only the fields the scenarios read.
#[derive(Deserialize, Clone, Debug)]
pub struct TaskView {
    pub id: String,
    pub state: String,
    /// Unix seconds, by the clock of the queen that took it.
    pub created_at: f64,
    pub attempts: Vec<AttemptView>,
}

/// One attempt of a [`TaskView`].
#[derive(Deserialize, Clone, Debug)]
pub struct AttemptView {
    pub address: String,
    pub state: String,
    /// When the leader wrote the placement (Unix seconds).
    pub started_at: f64,
    /// When the queen recorded its end (Unix seconds).
    pub ended_at: Option<f64>,
}

/// A page of `GET /tasks`.
#[derive(Deserialize)]
struct Page {
    tasks: Vec<TaskView>,
    next: Option<String>,
}

/// What `POST /tasks` answers; only the id.
#[derive(Deserialize)]
struct Answer {
    id: String,
}

/// Tasks a scenario submits: what they run, with how many retries, and the prefix of their ids.
/// Every task gets its own id, `PREFIX-I`, so a submit can be sent again after the queen said to
/// try later without making a second task (the API makes a create with a client id idempotent).
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// `[a-z0-9][a-z0-9-]*`, unique among the tasks of the queens the batch goes to.
    pub prefix: &'a str,
    pub command: &'a [&'a str],
    pub retries: u32,
}

impl Batch<'_> {
    /// The body of `POST /tasks` for task `i`; every field but these the API's default.
    pub fn body(&self, i: usize) -> String {
        self.body_with_id(&format!("{}-{i}", self.prefix))
    }

    /// The body as a note shows it, with `N` for the task's number.
    pub fn example(&self) -> String {
        self.body_with_id(&format!("{}-N", self.prefix))
    }

    fn body_with_id(&self, id: &str) -> String {
        json!({ "command": self.command, "retries": self.retries, "id": id }).to_string()
    }
}

/// A task the queen took.
pub struct Created {
    pub id: String,
    /// Answers that said to try again later (503, 429) before she took it.
    pub refusals: usize,
}

/// Tasks submitted by [`TaskClient::submit_many`].
pub struct Submitted {
    /// Ids in the order they were handed out to the threads (about the order of creation).
    pub ids: Vec<String>,
    /// Unix seconds just before the first submit.
    pub first_unix: f64,
    /// From just before the first submit until the last was answered.
    pub elapsed: Duration,
    /// Answers that said to try again later, each followed by the same submit again.
    pub refusals: usize,
}

impl Submitted {
    /// Submits answered per second.
    pub fn per_sec(&self) -> f64 {
        self.ids.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// What became of a set of tasks, counted from their views.
#[derive(Default, Debug)]
pub struct Tally {
    pub tasks: usize,
    pub succeeded: usize,
    /// Tasks in any other state, by state.
    pub others: BTreeMap<String, usize>,
    /// Tasks with more than one attempt.
    pub retried: usize,
    /// Attempts declared lost.
    pub lost_attempts: usize,
    /// The last end recorded (Unix seconds).
    pub last_end: f64,
}

impl Tally {
    pub fn of(tasks: &[TaskView]) -> Tally {
        let mut tally = Tally {
            tasks: tasks.len(),
            ..Tally::default()
        };
        for task in tasks {
            if task.state == SUCCEEDED {
                tally.succeeded += 1;
            } else {
                *tally.others.entry(task.state.clone()).or_default() += 1;
            }
            if task.attempts.len() > 1 {
                tally.retried += 1;
            }
            for attempt in &task.attempts {
                if attempt.state == LOST {
                    tally.lost_attempts += 1;
                }
                if let Some(end) = attempt.ended_at {
                    tally.last_end = tally.last_end.max(end);
                }
            }
        }
        tally
    }

    /// `expected` tasks, every one succeeded at its first attempt.
    pub fn all_succeeded_once(&self, expected: usize) -> bool {
        self.tasks == expected && self.succeeded == expected && self.retried == 0
    }

    /// `succeeded / more than one attempt / other states` of `expected` tasks, for the table;
    /// tasks the queen did not list count as `missing`.
    pub fn summary(&self, expected: usize) -> String {
        let mut others: Vec<String> = self
            .others
            .iter()
            .map(|(state, n)| format!("{n} {state}"))
            .collect();
        if self.tasks < expected {
            others.push(format!("{} missing", expected - self.tasks));
        }
        let others = if others.is_empty() {
            "0".to_string()
        } else {
            others.join(", ")
        };
        format!("{} / {} / {others}", self.succeeded, self.retried)
    }
}

/// The client, shared by the threads of a scenario.
pub struct TaskClient {
    agent: Agent,
}

impl TaskClient {
    /// A client that reports every status as a response (anything unexpected is an error here,
    /// said in words), with a limit on each whole call.
    pub fn new() -> TaskClient {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(CALL_TIMEOUT))
            .max_idle_connections(IDLE_CONNECTIONS)
            .max_idle_connections_per_host(IDLE_CONNECTIONS_PER_QUEEN)
            .build()
            .into();
        TaskClient { agent }
    }

    /// `POST /tasks` with `body` (a [`Batch`]'s, which names the task) until the queen takes it:
    /// 202, or 200 when an earlier try of the same body was stored after all. An answer that says
    /// to try again later (503: her store did not answer in time; 429: the queue is full) is sent
    /// again after [`RETRY_PAUSE`], for up to [`RETRY_FOR`]; anything else is an error.
    pub fn create(&self, queen: &str, body: &str) -> Result<Created> {
        let url = format!("http://{queen}/tasks");
        let deadline = Instant::now() + RETRY_FOR;
        let mut refusals = 0;
        loop {
            let mut reply = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = reply.status().as_u16();
            let text = reply
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("POST {url}: {e}"))?;
            match status {
                200 | 202 => {
                    let answer: Answer =
                        serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}"))?;
                    return Ok(Created {
                        id: answer.id,
                        refusals,
                    });
                }
                429 | 503 if Instant::now() < deadline => {
                    refusals += 1;
                    thread::sleep(RETRY_PAUSE);
                }
                _ => return Err(format!("POST {url}: HTTP {status}: {text}")),
            }
        }
    }

    /// `DELETE /tasks/ID` on `queen`: the task as her answer shows it (cancelled once its drone
    /// has stopped it, if that took less than her wait).
    pub fn cancel(&self, queen: &Larve, id: &str) -> Result<TaskView> {
        let url = format!("http://{}/tasks/{id}", queen.address());
        let mut reply = self
            .agent
            .delete(&url)
            .call()
            .map_err(|e| format!("DELETE {url}: {e}"))?;
        let status = reply.status().as_u16();
        let text = reply
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("DELETE {url}: {e}"))?;
        if status != 200 {
            return Err(format!("DELETE {url}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("DELETE {url}: {e}"))
    }

    /// The whole answer to `GET url` (200 expected) within `limit`.
    fn get_text(&self, url: &str, limit: Duration) -> Result<String> {
        let (status, body) = control::get(&self.agent, url, Some(limit))?;
        let text = String::from_utf8(body).map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {text}"));
        }
        Ok(text)
    }

    /// Task `id`; with `wait`, once it has ended or after `wait` (the queen's `?wait=`).
    pub fn task(&self, queen: &Larve, id: &str, wait: Option<Duration>) -> Result<TaskView> {
        let (query, limit) = match wait {
            Some(wait) => (
                format!("?wait={:.3}", wait.as_secs_f64()),
                wait + WAIT_SLACK,
            ),
            None => (String::new(), CALL_TIMEOUT),
        };
        let url = format!("http://{}/tasks/{id}{query}", queen.address());
        let text = self.get_text(&url, limit)?;
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}"))
    }

    /// One page of `GET /tasks`, newest first: `limit` tasks in `state` (any when `None`) after
    /// the task `after`.
    fn page(
        &self,
        queen: &Larve,
        state: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page> {
        let mut url = format!("http://{}/tasks?limit={limit}", queen.address());
        if let Some(state) = state {
            url.push_str(&format!("&state={state}"));
        }
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let text = self.get_text(&url, CALL_TIMEOUT)?;
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Every task the queen holds in `state` (all when `None`), read page by page.
    pub fn all(&self, queen: &Larve, state: Option<&str>) -> Result<Vec<TaskView>> {
        let mut tasks = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.page(queen, state, PAGE, after.as_deref())?;
            tasks.extend(page.tasks);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(tasks),
            }
        }
    }

    /// The tasks `ids` that the queen lists.
    pub fn read_back(&self, queen: &Larve, ids: &[String]) -> Result<Vec<TaskView>> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(self
            .all(queen, None)?
            .into_iter()
            .filter(|task| wanted.contains(task.id.as_str()))
            .collect())
    }

    /// Submits tasks 0 to `count` of `batch` from `clients` threads, task i through queen i mod
    /// the number of queens; each thread submits its next task as soon as its last was taken. The
    /// first error stops every thread and is the error.
    pub fn submit_many(
        &self,
        queens: &[&Larve],
        batch: &Batch,
        count: usize,
        clients: usize,
    ) -> Result<Submitted> {
        let addresses: Vec<String> = queens.iter().map(|queen| queen.address()).collect();
        let next = AtomicUsize::new(0);
        let created: Mutex<Vec<(usize, Created)>> = Mutex::new(Vec::with_capacity(count));
        let failure: Mutex<Option<String>> = Mutex::new(None);
        let first_unix = control::unix_now();
        let started = Instant::now();
        thread::scope(|scope| {
            for _ in 0..clients {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        match self.create(&addresses[i % addresses.len()], &batch.body(i)) {
                            Ok(task) => mine.push((i, task)),
                            Err(why) => {
                                next.store(count, Ordering::Relaxed);
                                failure.lock().expect("not poisoned").get_or_insert(why);
                                break;
                            }
                        }
                    }
                    created.lock().expect("not poisoned").extend(mine);
                });
            }
        });
        let elapsed = started.elapsed();
        if let Some(why) = failure.into_inner().expect("not poisoned") {
            return Err(why);
        }
        let mut created = created.into_inner().expect("not poisoned");
        created.sort_unstable_by_key(|(i, _)| *i);
        Ok(Submitted {
            refusals: created.iter().map(|(_, task)| task.refusals).sum(),
            ids: created.into_iter().map(|(_, task)| task.id).collect(),
            first_unix,
            elapsed,
        })
    }

    /// Waits until the queen holds at least `expected` ended tasks and none pending or running,
    /// within `within`. It blocks on the newest task not yet ended (`?wait=`): tasks are placed in
    /// the order they were created, so that one ends about last, and the wait comes back about
    /// when the last one ended, without polling.
    pub fn wait_all_ended(&self, queen: &Larve, expected: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let samples = self.metrics(queen)?;
            let count = |state: &str| samples.tasks_in(state);
            let ended: f64 = TERMINAL.iter().map(|state| count(state)).sum();
            let open = count(PENDING) + count(RUNNING);
            if open == 0.0 && ended >= expected as f64 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "gave up after {within:?}: {} holds {open} tasks pending or running, {ended} \
                     ended of {expected}",
                    queen.label
                ));
            }
            let newest = match self.page(queen, Some(RUNNING), 1, None)?.tasks.pop() {
                Some(task) => Some(task),
                None => self.page(queen, Some(PENDING), 1, None)?.tasks.pop(),
            };
            match newest {
                Some(task) => {
                    self.task(queen, &task.id, Some(WAIT.min(left)))?;
                }
                // Ended between the two looks, or not yet in this queen's view of the store.
                None => thread::sleep(VIEW_POLL.min(left)),
            }
        }
    }

    /// The queen's `/metrics`.
    pub fn metrics(&self, queen: &Larve) -> Result<Samples> {
        let url = format!("http://{}/metrics", queen.address());
        Ok(Samples::parse(&self.get_text(&url, CALL_TIMEOUT)?))
    }
}

/// The samples of a queen's `/metrics`, by series as she writes them (`name{label="value"}`).
pub struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// Every `series value` line of Prometheus text; comments and anything else are skipped.
    fn parse(text: &str) -> Samples {
        Samples(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of `series`, 0 when the queen does not show it.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// `hive_tasks{state="STATE"}`: the queen's count of tasks in `state`.
    pub fn tasks_in(&self, state: &str) -> f64 {
        self.get(&format!("hive_tasks{{state=\"{state}\"}}"))
    }

    /// `hive_task_transitions_total{from="pending",to="running"}`: placements this queen wrote.
    pub fn placements(&self) -> f64 {
        self.get(r#"hive_task_transitions_total{from="pending",to="running"}"#)
    }

    /// Of the tasks in `hive_task_scheduling_seconds`, the share placed within `le` seconds (a
    /// bucket bound the queen uses), and how many it holds.
    pub fn scheduled_within(&self, le: f64) -> (f64, f64) {
        let name = "hive_task_scheduling_seconds";
        let count = self.get(&format!("{name}_count"));
        let within = self.get(&format!("{name}_bucket{{le=\"{le}\"}}"));
        (within / count, count)
    }
}

/// Pause before looking again when a queen's counts and her listing disagreed for a moment.
const VIEW_POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_series_as_the_queen_writes_them() {
        let text = "# HELP hive_tasks Tasks in each state now.\n# TYPE hive_tasks gauge\n\
                    hive_tasks{state=\"pending\"} 12\n\
                    hive_task_transitions_total{from=\"pending\",to=\"running\"} 40\n\
                    hive_task_scheduling_seconds_bucket{le=\"0.02\"} 30\n\
                    hive_task_scheduling_seconds_count 40\n";
        let samples = Samples::parse(text);
        assert_eq!(samples.tasks_in(PENDING), 12.0);
        assert_eq!(samples.tasks_in(RUNNING), 0.0);
        assert_eq!(samples.placements(), 40.0);
        assert_eq!(samples.scheduled_within(0.02), (0.75, 40.0));
    }

    #[test]
    fn a_tally_counts_states_retries_and_losses() {
        let attempt = |state: &str, end: f64| AttemptView {
            address: "127.0.0.1:1".into(),
            state: state.into(),
            started_at: end - 1.0,
            ended_at: Some(end),
        };
        let task = |state: &str, attempts| TaskView {
            id: "t".into(),
            state: state.into(),
            created_at: 0.0,
            attempts,
        };
        let tally = Tally::of(&[
            task(SUCCEEDED, vec![attempt(SUCCEEDED, 5.0)]),
            task(SUCCEEDED, vec![attempt(LOST, 3.0), attempt(SUCCEEDED, 9.0)]),
            task("failed", vec![attempt("failed", 4.0)]),
        ]);
        assert_eq!(
            (tally.succeeded, tally.retried, tally.lost_attempts),
            (2, 1, 1)
        );
        assert_eq!(tally.last_end, 9.0);
        assert!(!tally.all_succeeded_once(3));
        assert_eq!(tally.summary(4), "2 / 1 / 1 failed, 1 missing");
    }
}
