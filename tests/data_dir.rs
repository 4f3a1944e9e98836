//! A queen with a data dir forgets nothing: killed with `kill -9` while she runs tasks and takes
//! new ones, and started again on the same dir, she has every task she answered for, adopts the
//! attempts her drones kept running, and every task ends once.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Tasks of the big test, each `sleep 0.5` with no retries.
const TASKS: usize = 300;

/// Threads creating them.
const SUBMITTERS: usize = 4;

/// Slots on each of the three drones.
const SLOTS: u32 = 16;

/// A data dir of the test's own, removed when dropped (kept when the test fails).
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("hive-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A queen on `port` keeping her state in `dir`.
fn queen_on(port: u16, dir: &DataDir) -> Larve {
    let port = port.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--data-dir",
        dir.path(),
        "--task-timeout",
        "1",
    ];
    args.extend_from_slice(FAST);
    Larve::queen(&args)
}

fn exec_drone(queen: &str) -> Larve {
    let slots = SLOTS.to_string();
    Larve::start(&[
        "--queen-host",
        queen,
        "--port",
        "0",
        "--allow-exec",
        "--slots",
        &slots,
    ])
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// `POST /tasks` with `body`: the status and task, or `None` when no queen answered.
fn try_create(queen: &str, body: &Value) -> Option<(u16, Value)> {
    let mut response = agent()
        .post(format!("http://{queen}/tasks"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).ok()?))
}

/// Waits until `queen` has read her state and serves.
fn ready(queen: &Larve) {
    eventually(SOON, "the queen to read her data dir", || {
        (get(&queen.url("/healthz")).1["status"] == "Status.READY").then_some(())
    });
}

/// Every task the queen lists.
fn all_tasks(queen: &Larve) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = queen.url("/tasks?limit=1000");
        if let Some(after) = &after {
            url += &format!("&after={after}");
        }
        let (status, page) = get(&url);
        assert_eq!(status, 200, "{page}");
        tasks.extend(page["tasks"].as_array().expect("tasks").iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return tasks,
        }
    }
}

#[test]
fn a_queen_killed_mid_run_comes_back_with_every_task_and_each_ends_once() {
    let dir = DataDir::new("kill-9");
    let port = free_port().expect("a free port");
    let address = format!("127.0.0.1:{port}");
    let mut queen = queen_on(port, &dir);
    let drones: Vec<Larve> = (0..3).map(|_| exec_drone(&address)).collect();
    let addresses: Vec<&str> = drones.iter().map(|d| d.addr.as_str()).collect();
    wait_for_drones(&queen, &addresses, SOON);

    // Four threads create the tasks in turn, each with a client id, so a create cut short by the
    // kill is sent again as it was; the ids answered 202 are noted as they come.
    let answered: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let (answered_before_kill, _killed) = thread::scope(|scope| {
        for _ in 0..SUBMITTERS {
            scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TASKS {
                        return;
                    }
                    let id = format!("k9-{i:03}");
                    let body = json!({"id": id, "command": ["sleep", "0.5"], "retries": 0});
                    loop {
                        assert!(Instant::now() < deadline, "task {id} was never created");
                        match try_create(&address, &body) {
                            Some((202 | 200, _)) => break,
                            Some((503, _)) | None => thread::sleep(Duration::from_millis(20)),
                            Some(other) => panic!("creating {id}: {other:?}"),
                        }
                    }
                    answered.lock().push(id);
                }
            });
        }
        // The kill: a third of the tasks answered, and some of them running on the drones.
        eventually(SOON, "100 tasks created and some running", || {
            let (_, running) = get(&queen.url("/tasks?state=running&limit=1"));
            let running = running["tasks"].as_array().is_some_and(|t| !t.is_empty());
            (answered.lock().len() >= TASKS / 3 && running).then_some(())
        });
        queen.kill();
        let before: BTreeSet<String> = answered.lock().iter().cloned().collect();
        // The killed queen stays in scope, so her log is printed if the test fails.
        let killed = std::mem::replace(&mut queen, queen_on(port, &dir));
        ready(&queen);
        (before, killed)
    });
    assert!(answered_before_kill.len() >= TASKS / 3);

    // Every task answered before the kill is there at once, read back from the data dir.
    let listed: BTreeSet<String> = all_tasks(&queen)
        .iter()
        .map(|task| task["id"].as_str().expect("an id").to_string())
        .collect();
    let lost: Vec<&String> = answered_before_kill.difference(&listed).collect();
    assert!(lost.is_empty(), "answered 202, then lost: {lost:?}");

    // And every one of the 300 ends, succeeded, after one attempt: none lost, none run twice.
    let ended = eventually(Duration::from_secs(60), "all 300 tasks ended", || {
        let tasks = all_tasks(&queen);
        let done = tasks
            .iter()
            .filter(|t| {
                ["succeeded", "failed", "cancelled"]
                    .contains(&t["state"].as_str().unwrap_or_default())
            })
            .count();
        (tasks.len() == TASKS && done == TASKS).then_some(tasks)
    });
    let unlike: Vec<String> = ended
        .iter()
        .filter(|t| t["state"] != "succeeded" || t["attempts"].as_array().map(Vec::len) != Some(1))
        .map(|t| t.to_string())
        .collect();
    assert!(
        unlike.is_empty(),
        "{} tasks did not succeed at their one attempt: {unlike:?}",
        unlike.len()
    );
    queen.log_with(&["state in the data dir", "read the hive's state"]);
}

#[test]
fn a_task_answered_202_just_before_a_kill_9_is_there_after_the_restart() {
    let dir = DataDir::new("answered");
    let port = free_port().expect("a free port");
    let mut queen = queen_on(port, &dir);
    let (status, _, task) = call(
        "POST",
        &queen.url("/tasks"),
        Some(&json!({"command": ["true"]}).to_string()),
        None,
        &[],
    );
    assert_eq!(status, 202, "{task}");
    queen.kill();
    let queen = queen_on(port, &dir);
    ready(&queen);
    let id = task["id"].as_str().expect("an id");
    let (status, found) = get(&queen.url(&format!("/tasks/{id}")));
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["command"], json!(["true"]));
    assert_eq!(found["state"], "pending", "no drone to run it: {found}");
}
