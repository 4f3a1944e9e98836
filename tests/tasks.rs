//! Tasks that do real work, as a user sees them: `POST /tasks` on a queen, drones that run
//! commands with `--allow-exec`, and every state a task and its attempts go through.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A queen with fast heartbeat settings and a short limit for calls to drones.
fn queen() -> Larve {
    let mut args = FAST.to_vec();
    args.extend(["--task-timeout", "1"]);
    Larve::queen(&args)
}

/// A drone of `queen` that runs commands in `slots` slots.
fn exec_drone(queen: &Larve, slots: u32) -> Larve {
    let slots = slots.to_string();
    Larve::start(&[
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--slots",
        &slots,
    ])
}

/// `POST /tasks` with `body`: status, `Location` header, task.
fn create(queen: &Larve, body: Value) -> (u16, Option<String>, Value) {
    let (status, headers, task) = call(
        "POST",
        &queen.url("/tasks"),
        Some(&body.to_string()),
        None,
        &["Location"],
    );
    (status, headers[0].clone(), task)
}

/// Creates a task and returns its id.
fn run(queen: &Larve, body: Value) -> String {
    let (status, _, task) = create(queen, body);
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().expect("an id").to_string()
}

/// Task `id` once it has ended (asked with `?wait`, so no polling loop of our own).
fn ended(queen: &Larve, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, task) = get(&queen.url(&format!("/tasks/{id}?wait=10")));
        assert_eq!(status, 200, "{task}");
        if ["succeeded", "failed", "cancelled"].contains(&task["state"].as_str().unwrap()) {
            return task;
        }
        assert!(Instant::now() < deadline, "task {id} never ended: {task}");
    }
}

/// `DELETE /tasks/ID`: status and task.
fn cancel(queen: &Larve, id: &str) -> (u16, Value) {
    let (status, _, task) = call(
        "DELETE",
        &queen.url(&format!("/tasks/{id}")),
        None,
        None,
        &[],
    );
    (status, task)
}

/// Task `id` as the queen shows it now.
fn task(queen: &Larve, id: &str) -> Value {
    let (status, task) = get(&queen.url(&format!("/tasks/{id}")));
    assert_eq!(status, 200, "{task}");
    task
}

/// A directory of the test's own for files tasks write, removed when dropped. Anyone may write
/// in it: a drone run as root runs its tasks as `nobody`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("hive-tasks-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether process `pid` is alive (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    runs(pid)
}

/// The pids written, one per line, in `file`, once it holds `count` of them.
fn pids(file: &str, count: usize) -> Vec<u32> {
    eventually(SOON, &format!("{count} pids in {file}"), || {
        let text = fs::read_to_string(file).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() >= count).then_some(pids)
    })
}

/// Kills `pids` if a test failed before they were gone.
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn exec_is_off_by_default_and_the_task_waits_saying_why() {
    let queen = queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let start = json!({"attempts": [{"task": "x", "attempt": 1, "command": ["true"], "timeout_s": 5, "slots": 1}]});
    let (status, _, answer) = call(
        "POST",
        &drone.url("/tasks"),
        Some(&start.to_string()),
        None,
        &[],
    );
    // Only its queens may ask a drone to start anything.
    assert_eq!(status, 401, "{answer}");

    let id = run(&queen, json!({"command": ["true"]}));
    let (_, waited) = get(&queen.url(&format!("/tasks/{id}?wait=0.5")));
    assert_eq!(waited["state"], "pending");
    let reason = waited["reason"].as_str().unwrap();
    assert!(reason.contains("--allow-exec"), "{reason}");
    let (_, drones) = get(&queen.url("/drones"));
    assert_eq!(drones[0]["exec"], false);
}

#[test]
fn exit_codes_stdout_stderr_and_env_reach_the_user() {
    let queen = queen();
    let drone = exec_drone(&queen, 2);
    let id = run(
        &queen,
        json!({
            "command": ["sh", "-c", "echo \"$GREETING $HIVE_TASK_ID $HIVE_ATTEMPT $HIVE_DRONE_ADDRESS\"; ls -A | wc -l; echo oops >&2; exit 7"],
            "env": {"GREETING": "hello"},
            "id": "env-check",
        }),
    );
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_code"], 7);
    assert_eq!(
        done["stdout"],
        format!("hello env-check 1 {}\n0\n", drone.addr),
        "a fresh, empty directory"
    );
    assert_eq!(done["stderr"], "oops\n");
    assert_eq!(
        (
            done["stdout_truncated"].clone(),
            done["stderr_truncated"].clone()
        ),
        (json!(false), json!(false))
    );
    let attempt = &done["attempts"][0];
    assert_eq!(
        (
            attempt["n"].clone(),
            attempt["state"].clone(),
            attempt["exit_code"].clone()
        ),
        (json!(1), json!("failed"), json!(7))
    );
    assert_eq!(attempt["address"], drone.addr.as_str());
    assert!(done["reason"].as_str().unwrap().contains("exit code 7"));

    let id = run(
        &queen,
        json!({"command": ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo end"]}),
    );
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    let stdout = done["stdout"].as_str().unwrap();
    assert_eq!(
        (stdout.len(), done["stdout_truncated"].clone()),
        (64 * 1024, json!(true))
    );
    assert!(stdout.ends_with("x\nend\n"), "the last 64 KiB are kept");

    let id = run(&queen, json!({"command": ["no-such-program-here"]}));
    let done = ended(&queen, &id);
    assert_eq!(
        (done["state"].clone(), done["exit_code"].clone()),
        (json!("failed"), Value::Null)
    );
    assert!(
        done["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no-such-program-here"),
        "{done}"
    );
}

#[test]
fn a_timeout_ends_the_whole_process_group_grandchildren_too() {
    let queen = queen();
    let _drone = exec_drone(&queen, 2);
    let scratch = Scratch::new("timeout");
    let file = scratch.path("pids");
    let script = format!("sleep 300 & echo $! >> {file}; echo $$ >> {file}; wait");
    let id = run(
        &queen,
        json!({"command": ["sh", "-c", script], "timeout_s": 1}),
    );
    let pids = pids(&file, 2);
    let _reaper = Reaper(pids.clone());
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"][0]["state"], "timed_out");
    for pid in pids {
        assert!(
            !alive(pid),
            "process {pid} of the task outlived its attempt"
        );
    }
}

#[test]
fn cancel_ends_a_pending_task_at_once_and_a_running_one_with_its_processes() {
    let queen = queen();
    let id = run(&queen, json!({"command": ["true"]}));
    let (status, cancelled) = cancel(&queen, &id);
    assert_eq!(
        (status, cancelled["state"].clone()),
        (200, json!("cancelled"))
    );
    let (status, again) = cancel(&queen, &id);
    assert_eq!(
        (status, again),
        (200, cancelled),
        "cancelling an ended task changes nothing"
    );

    let _drone = exec_drone(&queen, 1);
    let scratch = Scratch::new("cancel");
    let file = scratch.path("pids");
    let script = format!("trap '' TERM; sleep 300 & echo $! >> {file}; echo $$ >> {file}; wait");
    let id = run(&queen, json!({"command": ["sh", "-c", script]}));
    let pids = pids(&file, 2);
    let _reaper = Reaper(pids.clone());
    let (status, task) = cancel(&queen, &id);
    assert_eq!(status, 200, "{task}");
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["attempts"][0]["state"], "cancelled");
    for pid in pids {
        assert!(
            !alive(pid),
            "process {pid} outlived the cancel (it ignored SIGTERM: SIGKILL follows)"
        );
    }
    assert_eq!(get(&queen.url("/tasks/nope")).0, 404);
}

#[test]
fn a_failing_task_is_retried_with_a_doubling_backoff_then_fails() {
    let queen = queen();
    let _drone = exec_drone(&queen, 1);
    let id = run(
        &queen,
        json!({"command": ["sh", "-c", "echo try $HIVE_ATTEMPT; exit 1"], "retries": 2, "retry_delay_s": 0.3}),
    );
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "failed", "{done}");
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "one try and two retries");
    assert_eq!(done["stdout"], "try 3\n", "the output of the last attempt");
    let at = |i: usize, field: &str| attempts[i][field].as_f64().unwrap();
    let first_gap = at(1, "started_at") - at(0, "ended_at");
    let second_gap = at(2, "started_at") - at(1, "ended_at");
    assert!(first_gap >= 0.29, "attempt 2 waited {first_gap} s, not 0.3");
    assert!(
        second_gap >= 0.59,
        "attempt 3 waited {second_gap} s, not 0.6"
    );
}

#[test]
fn a_lost_drone_s_attempt_is_placed_again_exactly_once() {
    let queen = queen();
    let mut first = exec_drone(&queen, 1);
    let id = run(&queen, json!({"command": ["sleep", "30"], "retries": 1}));
    eventually(SOON, "the attempt on the first drone", || {
        (task(&queen, &id)["state"] == "running").then_some(())
    });
    let _second = exec_drone(&queen, 1);
    wait_for_drones(&queen, &[&first.addr, &_second.addr], SOON);
    first.kill();
    let again = eventually(FAST_REMOVAL + SOON, "a second attempt", || {
        let task = task(&queen, &id);
        (task["attempts"].as_array().unwrap().len() == 2 && task["state"] == "running")
            .then_some(task)
    });
    assert_eq!(again["attempts"][0]["state"], "lost");
    assert!(
        again["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("removed"),
        "{again}"
    );
    assert_eq!(again["attempts"][1]["address"], _second.addr.as_str());
    // Nothing more happens to it: still one lost attempt and one running a while later.
    let (_, later) = get(&queen.url(&format!("/tasks/{id}?wait=1")));
    assert_eq!(later["attempts"].as_array().unwrap().len(), 2, "{later}");
}

#[test]
fn a_drone_restarted_after_kill_9_leaves_no_old_task_process() {
    let queen = queen();
    let port = free_port().expect("a free port").to_string();
    let scratch = Scratch::new("restart");
    let work = scratch.path("work");
    let args = drone_on(&queen, &port, &work);
    let mut drone = RootedDrone(Larve::start(&args));
    let (id, pids) = run_with_a_grandchild(&queen, &scratch);
    let _reaper = Reaper(pids.clone());
    // The drone and its reaper both killed (as by the OOM killer, or a kill of both): only the
    // restart is left to end the task.
    let reaper = reaper_of(drone.pid());
    kill_9(reaper);
    drone.kill();
    assert!(
        pids.iter().all(|pid| alive(*pid)),
        "kill -9 of the drone and its reaper leaves its task running"
    );
    let _drone = RootedDrone(Larve::start(&args));
    eventually(SOON, "the old task's processes ended", || {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    });
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempts"][0]["state"], "lost");
    assert!(
        done["attempts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{done}"
    );
    let left = names_under(Path::new(&work));
    assert!(
        !left.iter().any(|name| name.starts_with(id.as_str())),
        "its directory is gone: {left:?}"
    );
}

#[test]
fn a_drone_killed_with_kill_9_leaves_no_task_process_its_reaper_ends_them() {
    let queen = queen();
    let scratch = Scratch::new("reaper");
    let work = scratch.path("work");
    let mut drone = RootedDrone(Larve::start(&drone_on(&queen, "0", &work)));
    let (id, pids) = run_with_a_grandchild(&queen, &scratch);
    let _reaper = Reaper(pids.clone());
    let reaper = reaper_of(drone.pid());
    drone.kill();
    eventually(SOON, "the task's processes ended without a restart", || {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    });
    eventually(SOON, "the reaper ended", || (!alive(reaper)).then_some(()));
    let left = names_under(Path::new(&work));
    assert!(
        !left.iter().any(|name| name.starts_with(id.as_str())),
        "its directory is gone: {left:?}"
    );
}

/// A drone of `queen` on `port` that runs commands in 2 slots, its attempts under `work`.
fn drone_on<'a>(queen: &'a Larve, port: &'a str, work: &'a str) -> [&'a str; 9] {
    [
        "--queen-host",
        &queen.addr,
        "--port",
        port,
        "--allow-exec",
        "--slots",
        "2",
        "--work-dir",
        work,
    ]
}

/// Runs a task whose shell leaves a `sleep 300` child running, and waits until both have written
/// their pids (the shell's last): the task's id, and the pids.
fn run_with_a_grandchild(queen: &Larve, scratch: &Scratch) -> (String, Vec<u32>) {
    let file = scratch.path("pids");
    let script = format!("sleep 300 & echo $! >> {file}; echo $$ >> {file}; wait");
    let id = run(queen, json!({"command": ["sh", "-c", script]}));
    (id, pids(&file, 2))
}

/// The reaper a drone with `--allow-exec` started beside itself: its child `larve reap ...`.
fn reaper_of(drone: u32) -> u32 {
    eventually(SOON, "the drone's reaper", || find_reaper(drone))
}

fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

/// The names of everything under `dir`, at any depth.
fn names_under(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        names.push(entry.file_name().to_string_lossy().into_owned());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.extend(names_under(&entry.path()));
        }
    }
    names
}

#[test]
fn a_replaced_attempt_s_late_report_is_recorded_and_changes_nothing() {
    let queen = queen();
    let frozen = exec_drone(&queen, 1);
    let id = run(
        &queen,
        json!({"command": ["sh", "-c", "sleep 1; echo attempt $HIVE_ATTEMPT"], "retries": 1}),
    );
    eventually(SOON, "the first attempt running", || {
        (task(&queen, &id)["state"] == "running").then_some(())
    });
    let other = exec_drone(&queen, 1);
    wait_for_drones(&queen, &[&frozen.addr, &other.addr], SOON);
    frozen.freeze();
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["stdout"], "attempt 2\n");
    frozen.thaw();
    let late = eventually(SOON + SOON, "the late report", || {
        let task = task(&queen, &id);
        task["attempts"][0]
            .get("late_report")
            .is_some()
            .then_some(task)
    });
    assert_eq!(late["attempts"][0]["state"], "lost");
    assert_eq!(late["attempts"][0]["late_report"]["stdout"], "attempt 1\n");
    assert_eq!(
        (late["state"].clone(), late["stdout"].clone()),
        (json!("succeeded"), json!("attempt 2\n"))
    );
    assert_eq!(late["attempts"].as_array().unwrap().len(), 2);
}

#[test]
fn slots_are_never_oversubscribed_under_a_thousand_tasks() {
    let queen = queen();
    let drones = [exec_drone(&queen, 3), exec_drone(&queen, 3)];
    wait_for_drones(&queen, &[&drones[0].addr, &drones[1].addr], SOON);
    let ids: Vec<(String, u32)> = (0..1000)
        .map(|i| {
            let slots = if i % 10 == 0 { 2 } else { 1 };
            (
                run(&queen, json!({"command": ["true"], "slots": slots})),
                slots,
            )
        })
        .collect();
    let mut intervals: HashMap<String, Vec<(f64, f64, u32)>> = HashMap::new();
    for (id, slots) in &ids {
        let done = ended(&queen, id);
        assert_eq!(done["state"], "succeeded", "{done}");
        let attempts = done["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "no duplicate attempt: {done}");
        let a = &attempts[0];
        intervals
            .entry(a["address"].as_str().unwrap().into())
            .or_default()
            .push((
                a["started_at"].as_f64().unwrap(),
                a["ended_at"].as_f64().unwrap(),
                *slots,
            ));
    }
    // The queen's times bracket each run (placed before it starts, recorded after it ends), so
    // their overlap bounds the real one.
    for (drone, spans) in intervals {
        let mut events: Vec<(f64, i64)> = spans
            .iter()
            .flat_map(|&(s, e, n)| [(s, n as i64), (e, -(n as i64))])
            .collect();
        events.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (mut used, mut most) = (0, 0);
        for (_, delta) in events {
            used += delta;
            most = most.max(used);
        }
        assert!(most <= 3, "{drone} ran {most} slots at once");
    }
}

#[test]
fn a_draining_drone_takes_nothing_new_and_finishes_what_it_runs() {
    let queen = queen();
    let a = exec_drone(&queen, 2);
    wait_for_drones(&queen, &[&a.addr], SOON);
    let long = run(&queen, json!({"command": ["sleep", "1"]}));
    eventually(SOON, "the long task running", || {
        (task(&queen, &long)["state"] == "running").then_some(())
    });
    let (_, drones) = get(&queen.url("/drones"));
    let name = drones[0]["name"].as_str().unwrap().to_string();
    let drain = queen.url(&format!("/drones/{name}/drain"));
    let (status, _, drone) = call("POST", &drain, None, None, &[]);
    assert_eq!(
        (status, drone["draining"].clone()),
        (200, json!(true)),
        "{drone}"
    );
    let b = exec_drone(&queen, 2);
    wait_for_drones(&queen, &[&a.addr, &b.addr], SOON);
    let ids: Vec<String> = (0..6)
        .map(|_| run(&queen, json!({"command": ["true"]})))
        .collect();
    for id in &ids {
        assert_eq!(ended(&queen, id)["attempts"][0]["address"], b.addr.as_str());
    }
    assert_eq!(
        ended(&queen, &long)["state"],
        "succeeded",
        "its running task finished"
    );
    let (status, _, drone) = call("DELETE", &drain, None, None, &[]);
    assert_eq!((status, drone["draining"].clone()), (200, json!(false)));
    assert_eq!(
        call(
            "POST",
            &queen.url("/drones/drone-99/drain"),
            None,
            None,
            &[]
        )
        .0,
        404
    );
}

#[test]
fn a_client_id_makes_creation_idempotent() {
    let queen = queen();
    let spec = json!({"command": ["true"], "id": "build-7"});
    let (status, location, first) = create(&queen, spec.clone());
    assert_eq!((status, location.as_deref()), (202, Some("/tasks/build-7")));
    let (status, _, again) = create(&queen, spec);
    assert_eq!(
        (status, again["id"].clone(), again["created_at"].clone()),
        (200, json!("build-7"), first["created_at"].clone())
    );
    let (status, _, clash) = create(&queen, json!({"command": ["false"], "id": "build-7"}));
    assert_eq!(status, 409, "{clash}");
    let (_, page) = get(&queen.url("/tasks"));
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_specs_are_400_naming_the_field_and_create_nothing() {
    let queen = queen();
    let (_, before) = get(&queen.url("/tasks"));
    for (body, field) in [
        ("{}", "command"),
        (r#"{"command": []}"#, "command"),
        (r#"{"command": ["echo", 1]}"#, "command"),
        (r#"{"command": ["true"], "slots": 0}"#, "slots"),
        (r#"{"command": ["true"], "timeout_s": 0}"#, "timeout_s"),
        (r#"{"command": ["true"], "timeout_s": 86401}"#, "timeout_s"),
        (r#"{"command": ["true"], "retries": 101}"#, "retries"),
        (
            r#"{"command": ["true"], "retry_delay_s": -1}"#,
            "retry_delay_s",
        ),
        (r#"{"command": ["true"], "id": "Not OK"}"#, "id"),
        (r#"{"command": ["true"], "env": {"K": 1}}"#, "env"),
        ("not json", "JSON"),
    ] {
        let (status, _, answer) = call("POST", &queen.url("/tasks"), Some(body), None, &[]);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{body}: {answer}"
        );
    }
    let huge = json!({"command": ["echo", "x".repeat(70 * 1024)]}).to_string();
    assert_eq!(
        call("POST", &queen.url("/tasks"), Some(&huge), None, &[]).0,
        413
    );
    for query in ["state=sleeping", "limit=0", "limit=1001", "after=nope"] {
        let (status, answer) = get(&queen.url(&format!("/tasks?{query}")));
        assert_eq!(status, 400, "{query}: {answer}");
    }
    assert_eq!(
        get(&queen.url("/tasks?wait=61")).0,
        200,
        "wait is for one task"
    );
    assert_eq!(get(&queen.url("/tasks/x?wait=61")).0, 400);
    // Nothing was written: no task, and the store's revision where it was.
    let (_, page) = get(&queen.url("/tasks"));
    assert_eq!(
        page,
        json!({"tasks": [], "next": null, "revision": before["revision"]})
    );
    assert!(page["revision"].is_u64(), "{page}");
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let queen = Larve::queen(&["--max-pending", "3"]);
    for _ in 0..3 {
        run(&queen, json!({"command": ["true"]}));
    }
    let (status, headers, answer) = call(
        "POST",
        &queen.url("/tasks"),
        Some(r#"{"command": ["true"]}"#),
        None,
        &["Retry-After"],
    );
    assert_eq!(status, 429, "{answer}");
    assert_eq!(headers[0].as_deref(), Some("1"));
    let (_, page) = get(&queen.url("/tasks?state=pending&limit=2"));
    assert_eq!(page["tasks"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let (_, rest) = get(&queen.url(&format!("/tasks?state=pending&after={next}")));
    assert_eq!(
        (
            rest["tasks"].as_array().unwrap().len(),
            rest["next"].clone()
        ),
        (1, Value::Null)
    );
}

#[test]
fn wait_answers_when_the_task_ends_or_when_the_time_is_up() {
    let queen = queen();
    let pending = run(&queen, json!({"command": ["true"]}));
    let started = Instant::now();
    let (_, task) = get(&queen.url(&format!("/tasks/{pending}?wait=0.4")));
    assert_eq!(task["state"], "pending");
    assert!(started.elapsed() >= Duration::from_millis(400));
    let _drone = exec_drone(&queen, 1);
    let quick = run(&queen, json!({"command": ["sleep", "0.3"]}));
    let started = Instant::now();
    let (_, task) = get(&queen.url(&format!("/tasks/{quick}?wait=20")));
    assert_eq!(task["state"], "succeeded", "{task}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered when it ended"
    );
}

#[test]
fn every_task_endpoint_needs_the_token() {
    let token = "0123456789abcdef0123";
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(token));
    let drone = Larve::start_with(
        &["--queen-host", &queen.addr, "--port", "0", "--allow-exec"],
        &Launch::token(token),
    );
    for (larve, method, path) in [
        (&queen, "POST", "/tasks"),
        (&queen, "GET", "/tasks"),
        (&queen, "GET", "/tasks/x"),
        (&queen, "DELETE", "/tasks/x"),
        (&queen, "POST", "/drones/drone-0/drain"),
        (&queen, "DELETE", "/drones/drone-0/drain"),
        (&queen, "POST", "/reports"),
        (&drone, "POST", "/tasks"),
        (
            &drone,
            "DELETE",
            "/attempts/0123456789abcdef0123456789abcdef",
        ),
    ] {
        let (status, _, answer) = call(method, &larve.url(path), Some("{}"), None, &[]);
        assert_eq!(status, 401, "{method} {path}: {answer}");
    }
    let (status, _, created) = call(
        "POST",
        &queen.url("/tasks"),
        Some(r#"{"command": ["echo", "ok"]}"#),
        Some(token),
        &[],
    );
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = eventually(SOON, "the task done", || {
        let (_, _, task) = call(
            "GET",
            &queen.url(&format!("/tasks/{id}?wait=5")),
            None,
            Some(token),
            &[],
        );
        (task["state"] == "succeeded").then_some(task)
    });
    assert_eq!(
        done["stdout"], "ok\n",
        "queen and drone use the token between them"
    );
}

/// Runs `larve` with `args` as a user would, with `HIVE_QUEEN` set to `queen`: exit code, stdout,
/// stderr.
fn larve_command(queen: &Larve, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(LARVE)
        .args(args)
        .env("HIVE_QUEEN", &queen.addr)
        .env_remove("HIVE_TOKEN")
        .output()
        .expect("run larve");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_client_runs_lists_cancels_and_drains() {
    let queen = queen();
    let _drone = exec_drone(&queen, 2);
    let (code, out, err) = larve_command(
        &queen,
        &[
            "task",
            "run",
            "--wait",
            "--env",
            "WHO=you",
            "--",
            "sh",
            "-c",
            "echo hi $WHO; echo careful >&2; exit 3",
        ],
    );
    assert_eq!((code, out.as_str()), (3, "hi you\n"), "{err}");
    assert!(err.contains("careful"), "{err}");

    let (code, id, _) = larve_command(
        &queen,
        &["task", "run", "--retries", "1", "--", "sleep", "30"],
    );
    assert_eq!(code, 0);
    let id = id.trim();
    assert!(!id.is_empty());
    let (code, table, _) = larve_command(&queen, &["task", "ls", "--limit", "1"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("ID ") && table.contains(id) && table.contains("sleep 30"),
        "{table}"
    );
    let (code, json, _) = larve_command(&queen, &["task", "get", id, "-o", "json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(shown["retries"], 1);
    let (code, said, _) = larve_command(&queen, &["task", "cancel", id]);
    assert_eq!(
        (code, said.trim()),
        (0, format!("task {id}: cancelled").as_str())
    );

    let (code, drones, _) = larve_command(&queen, &["drone", "ls"]);
    assert_eq!(code, 0);
    assert!(
        drones.contains("drone-0") && drones.contains("SLOTS"),
        "{drones}"
    );
    let (code, _, _) = larve_command(&queen, &["drone", "drain", "drone-0"]);
    assert_eq!(code, 0);
    let (_, drones) = get(&queen.url("/drones"));
    assert_eq!(drones[0]["draining"], true);
    let (code, _, _) = larve_command(&queen, &["drone", "drain", "drone-0", "--undo"]);
    assert_eq!(code, 0);

    let (code, _, err) = larve_command(&queen, &["task", "get", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such task"), "{err}");
    let (code, _, err) = larve_command(&queen, &["task", "run"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn finished_tasks_beyond_keep_finished_are_deleted_oldest_first_and_counted_in_metrics() {
    let mut args = FAST.to_vec();
    args.extend(["--keep-finished", "2"]);
    let queen = Larve::queen(&args);
    let _drone = exec_drone(&queen, 2);
    let ids: Vec<String> = (0..5)
        .map(|_| {
            let id = run(&queen, json!({"command": ["true"]}));
            ended(&queen, &id);
            id
        })
        .collect();
    let kept = eventually(SOON, "only the two most recent kept", || {
        let (_, page) = get(&queen.url("/tasks"));
        let kept: Vec<String> = page["tasks"]
            .as_array()?
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        (kept.len() == 2).then_some(kept)
    });
    assert!(kept.contains(&ids[4]), "{kept:?} lacks the newest");
    assert_eq!(get(&queen.url(&format!("/tasks/{}", ids[0]))).0, 404);
    let counted = metrics(&queen);
    assert_eq!(counted["hive_tasks{state=\"succeeded\"}"], 2.0);
    assert_eq!(
        counted["hive_task_transitions_total{from=\"created\",to=\"pending\"}"],
        5.0
    );
    assert_eq!(
        counted["hive_task_transitions_total{from=\"pending\",to=\"running\"}"],
        5.0
    );
    assert_eq!(
        counted["hive_task_transitions_total{from=\"running\",to=\"succeeded\"}"],
        5.0
    );
    assert_eq!(counted["hive_task_scheduling_seconds_count"], 5.0);
    assert_eq!(
        counted["hive_http_requests_total{endpoint=\"/tasks\",status=\"202\"}"],
        5.0
    );
}
