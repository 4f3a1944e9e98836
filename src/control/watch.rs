//! `task ls --watch` and `drone ls --watch`: the table of `ls`, drawn again as the queen's events
//! say it changed, until interrupted.
//!
//! The tasks' table is kept from the events themselves: a list first, then every change after the
//! revision the list reflects. A drone's event carries what the store holds of it, not what only a
//! queen sees (whether it is available) or works out from tasks (the slots used), so the drones'
//! table is read again when a drone or a task changed, at most every [`DRONES_REDRAW`].

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::events::{Follow, Got};
use super::{CALL_TIMEOUT, Failure, Session};
use crate::cli::output::{drone_table, task_table};
use crate::clock::now;

/// Clears the terminal and puts the cursor at the top left (ANSI), before each drawing.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// The drones' table is read again at most this often.
const DRONES_REDRAW: Duration = Duration::from_millis(250);

/// What `task ls` shows: tasks of one state, or one group, the newest `limit`.
pub struct TaskFilter<'a> {
    pub state: Option<&'a str>,
    pub group: Option<&'a str>,
    pub limit: usize,
    /// `GET /tasks` with these filters.
    pub path: String,
}

impl TaskFilter<'_> {
    fn shows(&self, task: &Value) -> bool {
        self.state.is_none_or(|state| task["state"] == state)
            && self.group.is_none_or(|group| task["group"] == group)
    }
}

/// The tasks' table, drawn again at each change, for ever (or until the queens fail).
pub fn tasks(session: &Session, filter: &TaskFilter) -> Result<u8, Failure> {
    let mut shown = HashMap::new();
    let revision = list_tasks(session, filter, &mut shown)?;
    let kinds = "task";
    let mut follow = Follow::new(&session.client, &session.target.queens, kinds, revision);
    loop {
        match follow.next()? {
            Got::Change(_, event) => {
                let id = event["id"].as_str().unwrap_or_default().to_string();
                let task = &event["object"];
                if event["type"] == "deleted" || !filter.shows(task) {
                    shown.remove(&id);
                } else {
                    shown.insert(id, task.clone());
                    if shown.len() > filter.limit * 2 {
                        let kept = newest(&shown, filter.limit);
                        shown = kept
                            .into_iter()
                            .map(|task| (task["id"].as_str().unwrap_or_default().into(), task))
                            .collect();
                    }
                }
            }
            Got::Quiet => {
                let tasks = newest(&shown, filter.limit);
                let page = json!({ "tasks": tasks, "next": null });
                draw(&task_table(&page, now()), follow.after());
            }
            Got::ListAgain(_) => {
                let revision = list_tasks(session, filter, &mut shown)?;
                follow.restart(revision);
            }
        }
    }
}

/// Reads the first page of tasks into `shown`; returns the revision it reflects.
fn list_tasks(
    session: &Session,
    filter: &TaskFilter,
    shown: &mut HashMap<String, Value>,
) -> Result<Option<i64>, Failure> {
    let page = session.call("GET", &filter.path, None, CALL_TIMEOUT)?;
    shown.clear();
    for task in page["tasks"].as_array().into_iter().flatten() {
        let id = task["id"].as_str().unwrap_or_default().to_string();
        shown.insert(id, task.clone());
    }
    Ok(page["revision"].as_i64())
}

/// The newest `limit` of `tasks`, newest first, as `GET /tasks` orders them.
fn newest(tasks: &HashMap<String, Value>, limit: usize) -> Vec<Value> {
    let mut sorted: Vec<&Value> = tasks.values().collect();
    sorted.sort_by(|a, b| {
        let at = |task: &Value| task["created_at"].as_f64().unwrap_or_default();
        at(b)
            .partial_cmp(&at(a))
            .unwrap_or(Ordering::Equal)
            .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
    });
    sorted.into_iter().take(limit).cloned().collect()
}

/// The drones' table (`path`: `GET /drones` with its filters), read again when something changed.
pub fn drones(session: &Session, path: &str) -> Result<u8, Failure> {
    let kinds = "drone,task";
    let mut follow = Follow::new(&session.client, &session.target.queens, kinds, None);
    // The stream starts first, so the table read next misses no change after it.
    follow.open()?;
    let mut drawn = draw_drones(session, path, &follow)?;
    let mut changed = false;
    loop {
        match follow.next()? {
            Got::Change(..) => changed = true,
            Got::Quiet if changed => {
                let due = drawn + DRONES_REDRAW;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                drawn = draw_drones(session, path, &follow)?;
                changed = false;
            }
            Got::Quiet => {}
            Got::ListAgain(_) => {
                follow.restart(None);
                follow.open()?;
                drawn = draw_drones(session, path, &follow)?;
            }
        }
    }
}

fn draw_drones(session: &Session, path: &str, follow: &Follow) -> Result<Instant, Failure> {
    let drones = session.call("GET", path, None, CALL_TIMEOUT)?;
    draw(&drone_table(&drones), follow.after());
    Ok(Instant::now())
}

/// Draws `table` over the last one, with a line saying what it reflects.
fn draw(table: &str, revision: Option<i64>) {
    let at = revision.map_or_else(String::new, |r| format!(" at revision {r}"));
    println!("{CLEAR}{table}(watching{at}; Ctrl-C to stop)");
    let _ = std::io::stdout().flush();
}
