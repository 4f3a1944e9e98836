//! What contains a task, as a user (and a careless or hostile task) sees it: real drones with
//! `--allow-exec`, real cgroups where the machine gives a drone some.
//!
//! A drone run as root here gets cgroups (`cgroup-v2` or `cgroup-hybrid`, whichever the machine
//! has; each test prints which it ran on) and runs its tasks as `nobody`. Where a machine gives no
//! cgroups, the tests that need them say so on stderr and end; the drone's other shape
//! (`process-group`) is tested here too, and so is a drone run as another user, which can make
//! no cgroup and runs tasks as itself.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// A drone of `queen` that runs commands in 4 slots, with `extra` flags.
fn exec_drone(queen: &Larve, extra: &[&str]) -> Larve {
    exec_drone_with(queen, extra, &Launch::default())
}

fn exec_drone_with(queen: &Larve, extra: &[&str], launch: &Launch) -> Larve {
    let mut args = vec![
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--slots",
        "4",
    ];
    args.extend_from_slice(extra);
    let drone = Larve::start_with(&args, launch);
    eventually(SOON, "the queen to list the drone", || {
        drone_names(queen).contains_key(&drone.addr).then_some(())
    });
    drone
}

/// What the queen's `GET /drones` says of `drone`.
fn drone_info(queen: &Larve, drone: &Larve) -> Value {
    let (status, drones) = get(&queen.url("/drones"));
    assert_eq!(status, 200, "{drones}");
    drones
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == drone.addr.as_str())
        .cloned()
        .expect("the drone is listed")
}

/// A drone of `queen` with cgroups, and their shape (`cgroup-v2` or `cgroup-hybrid`), or `None`
/// after saying why `test` is skipped, where the machine gives this drone none.
fn cgroup_drone(queen: &Larve, test: &str, extra: &[&str]) -> Option<(Larve, String)> {
    let drone = exec_drone(queen, extra);
    let shape = drone_info(queen, &drone)["containment"]
        .as_str()
        .unwrap()
        .to_string();
    if shape == "process-group" {
        let log = drone.log_with(&["process groups"]);
        let why = log
            .lines()
            .find(|l| l.contains("process groups"))
            .unwrap_or("");
        eprintln!("{test}: skipped, the drone has no cgroups here: {why}");
        return None;
    }
    eprintln!("{test}: ran on {shape}");
    Some((drone, shape))
}

/// `POST /tasks` with `body`; the new task's id.
fn run(queen: &Larve, body: Value) -> String {
    let (status, task) = post(&queen.url("/tasks"), &body.to_string());
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().expect("an id").to_string()
}

/// Task `id` once it has ended.
fn ended(queen: &Larve, id: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("task {id} to end"),
        || {
            let (status, task) = get(&queen.url(&format!("/tasks/{id}?wait=10")));
            assert_eq!(status, 200, "{task}");
            ["succeeded", "failed", "cancelled"]
                .contains(&task["state"].as_str()?)
                .then_some(task)
        },
    )
}

/// Task `id` once its first attempt runs.
fn running(queen: &Larve, id: &str) {
    eventually(SOON, &format!("task {id} to run"), || {
        let (_, task) = get(&queen.url(&format!("/tasks/{id}")));
        (task["state"] == "running").then_some(())
    });
}

/// `DELETE /tasks/ID`: the task, and how long the answer took.
fn cancel(queen: &Larve, id: &str) -> (Value, Duration) {
    let started = Instant::now();
    let (status, _, task) = call(
        "DELETE",
        &queen.url(&format!("/tasks/{id}")),
        None,
        None,
        &[],
    );
    assert_eq!(status, 200, "{task}");
    (task, started.elapsed())
}

/// A directory of the test's own in which anyone may write (tasks run as `nobody`, or as the
/// user a test runs its drone as), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("hive-containment-{name}-{}", std::process::id()));
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

/// The pid written in `file`, once it is there.
fn pid_in(file: &str) -> u32 {
    eventually(SOON, &format!("a pid in {file}"), || {
        fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// Kills the processes it holds if a test ends before they are gone, so none outlives it.
struct Strays(Vec<u32>);

impl Drop for Strays {
    fn drop(&mut self) {
        for pid in &self.0 {
            if runs(*pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Waits at most `within` for process `pid` to be gone; how long it took.
fn gone_within(pid: u32, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    while runs(pid) {
        assert!(
            started.elapsed() < within,
            "{what}: process {pid} still runs {within:?} after its attempt ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// The script of a task that starts a process in a session of its own (out of its process group,
/// as a daemon does), writes that process's pid to `file` once it has left, then does `rest`.
fn escapee(file: &str, rest: &str) -> Value {
    let left = r#"[ "$(cut -d' ' -f6 /proc/$!/stat)" = "$!" ]"#;
    json!([
        "sh",
        "-c",
        format!("setsid sleep 300 & until {left}; do :; done; echo $! > {file}; {rest}")
    ])
}

#[test]
fn a_process_that_left_its_session_is_gone_within_a_second_of_its_attempt_s_end() {
    let test = "a_process_that_left_its_session_is_gone_within_a_second_of_its_attempt_s_end";
    let queen = queen();
    let Some((mut drone, _)) = cgroup_drone(&queen, test, &[]) else {
        return;
    };
    let scratch = Scratch::new("setsid");
    let mut strays = Strays(Vec::new());

    // It ends by itself.
    let file = scratch.path("exit");
    let id = run(&queen, json!({"command": escapee(&file, "exit 0")}));
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    let pid = pid_in(&file);
    strays.0.push(pid);
    gone_within(pid, Duration::from_secs(1), "a normal exit");

    // It is cancelled.
    let file = scratch.path("cancel");
    let id = run(&queen, json!({"command": escapee(&file, "sleep 300")}));
    let pid = pid_in(&file);
    strays.0.push(pid);
    let (task, _) = cancel(&queen, &id);
    assert_eq!(task["state"], "cancelled", "{task}");
    gone_within(pid, Duration::from_secs(1), "a cancel");

    // It times out.
    let file = scratch.path("timeout");
    let id = run(
        &queen,
        json!({"command": escapee(&file, "sleep 300"), "timeout_s": 1}),
    );
    let pid = pid_in(&file);
    strays.0.push(pid);
    let done = ended(&queen, &id);
    assert_eq!(done["attempts"][0]["state"], "timed_out", "{done}");
    gone_within(pid, Duration::from_secs(1), "a timeout");

    // Its drone is killed: its reaper ends it.
    let file = scratch.path("kill-9");
    run(&queen, json!({"command": escapee(&file, "sleep 300")}));
    let pid = pid_in(&file);
    strays.0.push(pid);
    drone.kill();
    gone_within(pid, Duration::from_secs(1), "the drone's kill -9");
}

#[test]
fn in_a_process_group_a_process_that_left_its_session_outlives_its_attempt() {
    let queen = queen();
    let drone = exec_drone(&queen, &["--containment", "process-group"]);
    assert_eq!(drone_info(&queen, &drone)["containment"], "process-group");
    drone.log_with(&["[WARN]", "a process that calls setsid outlives its attempt"]);
    let scratch = Scratch::new("process-group");
    let file = scratch.path("pid");
    let id = run(&queen, json!({"command": escapee(&file, "exit 0")}));
    assert_eq!(ended(&queen, &id)["state"], "succeeded");
    let pid = pid_in(&file);
    let _strays = Strays(vec![pid]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        runs(pid),
        "what the README says a process group cannot do (the test ends it)"
    );
}

#[test]
fn an_attempt_over_its_memory_ends_oom_killed_and_its_drone_serves_on() {
    let test = "an_attempt_over_its_memory_ends_oom_killed_and_its_drone_serves_on";
    let queen = queen();
    let Some((drone, _)) = cgroup_drone(&queen, test, &[]) else {
        return;
    };
    let hungry = "s = b'x' * (256 << 20); print('survived')";
    let id = run(
        &queen,
        json!({"command": ["python3", "-c", hungry], "resources": {"memory_mb": 64}}),
    );
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "failed", "{done}");
    let attempt = &done["attempts"][0];
    assert_eq!(attempt["state"], "oom_killed", "{done}");
    let reason = attempt["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("killed for memory: it reached its limit of 64 MiB"),
        "{reason}"
    );
    assert_eq!(attempt["exit_signal"], 9, "{done}");
    let peak = attempt["peak_memory_bytes"].as_u64().unwrap();
    assert!((32 << 20..=65 << 20).contains(&peak), "peak {peak}");
    assert!(!done["stdout"].as_str().unwrap().contains("survived"));

    assert_eq!(get(&drone.url("/healthz")).0, 200);
    let id = run(&queen, json!({"command": ["echo", "still here"]}));
    assert_eq!(ended(&queen, &id)["stdout"], "still here\n");
    let counted = metrics(&queen);
    assert_eq!(
        counted["hive_attempts_ended_total{state=\"oom_killed\"}"],
        1.0
    );
}

#[test]
fn a_pids_limit_bounds_a_fork_loop() {
    let test = "a_pids_limit_bounds_a_fork_loop";
    let queen = queen();
    let Some(_drone) = cgroup_drone(&queen, test, &[]) else {
        return;
    };
    let forks = "\
import os, time
n = 0
try:
    while n < 200:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print('fork failed after', n, e.errno)
";
    let id = run(
        &queen,
        json!({"command": ["python3", "-c", forks], "resources": {"pids": 20}}),
    );
    let done = ended(&queen, &id);
    assert_eq!(done["state"], "succeeded", "{done}");
    // Python itself is one of the 20.
    assert_eq!(done["stdout"], "fork failed after 19 11\n", "{done}");
}

/// The v2 directory of the cgroup of the running attempt whose name starts `prefix`.
fn attempt_cgroup(prefix: &str) -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v2 = mounts
        .lines()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount = before.split(' ').nth(4)?;
            after.starts_with("cgroup2 ").then(|| PathBuf::from(mount))
        })
        .expect("a cgroup v2 mount");
    fn find(dir: &Path, prefix: &str) -> Option<PathBuf> {
        for entry in fs::read_dir(dir).ok()?.flatten() {
            if !entry.file_type().ok()?.is_dir() {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                return Some(entry.path());
            }
            if let Some(found) = find(&entry.path(), prefix) {
                return Some(found);
            }
        }
        None
    }
    eventually(SOON, &format!("the cgroup {prefix}*"), || find(&v2, prefix))
}

/// The CPU time used in the cgroup at `dir`, from its `cpu.stat`.
fn cpu_used(dir: &Path) -> Duration {
    let stat = fs::read_to_string(dir.join("cpu.stat")).unwrap();
    let usec = stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|n| n.parse().ok())
        .expect("usage_usec in cpu.stat");
    Duration::from_micros(usec)
}

#[test]
fn a_quarter_cpu_keeps_a_busy_loop_near_a_quarter_of_a_core() {
    let test = "a_quarter_cpu_keeps_a_busy_loop_near_a_quarter_of_a_core";
    let queen = queen();
    let Some(_drone) = cgroup_drone(&queen, test, &[]) else {
        return;
    };
    let id = run(
        &queen,
        json!({"command": ["sh", "-c", "while :; do :; done"], "resources": {"cpus": 0.25}}),
    );
    running(&queen, &id);
    let cgroup = attempt_cgroup(&format!("{id}.1."));
    let (used, started) = (cpu_used(&cgroup), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let share = (cpu_used(&cgroup) - used).as_secs_f64() / started.elapsed().as_secs_f64();
    cancel(&queen, &id);
    eprintln!("{test}: the busy loop used {share:.3} of a core");
    // The quota is 25 ms in each 100 ms: never more (the slack is the period's edges). A machine
    // busy with other work may give it much less, so below, it need only have run.
    assert!((0.05..=0.3).contains(&share), "{share:.3} of a core");
}

#[test]
fn a_python_task_s_sigterm_handler_runs_on_cancel_well_under_the_grace() {
    let queen = queen();
    let drones = [
        exec_drone(&queen, &[]),
        exec_drone(&queen, &["--containment", "process-group"]),
    ];
    let scratch = Scratch::new("sigterm");
    for (i, drone) in drones.iter().enumerate() {
        let shape = drone_info(&queen, drone)["containment"].clone();
        let ready = scratch.path(&format!("ready-{i}"));
        let handler = format!(
            "\
import signal, sys, time
def stop(*_):
    print('cleaning up')
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open('{ready}', 'w').close()
time.sleep(300)
"
        );
        let id = run(&queen, json!({"command": ["python3", "-c", handler]}));
        eventually(SOON, "the task to be ready", || {
            Path::new(&ready).exists().then_some(())
        });
        let (task, took) = cancel(&queen, &id);
        assert_eq!(task["state"], "cancelled", "{shape}: {task}");
        assert_eq!(task["stdout"], "cleaning up\n", "{shape}: {task}");
        assert_eq!(task["attempts"][0]["exit_code"], 0, "{shape}: {task}");
        // The grace is 5 s: the handler ran at once.
        assert!(took < Duration::from_secs(2), "{shape}: took {took:?}");
    }
}

#[test]
fn a_task_run_as_nobody_reads_nothing_of_its_drone_s_and_gets_no_drone_variable_not_passed() {
    if unsafe_geteuid() != 0 {
        eprintln!(
            "a_task_run_as_nobody...: skipped, only a drone run as root runs tasks as nobody"
        );
        return;
    }
    let scratch = Scratch::new("secrets");
    let token = scratch.path("token");
    fs::write(&token, "0123456789abcdef0123\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let work = scratch.path("work");
    let queen = Larve::start(&["--queen", "--port", "0", "--token-file", &token]);
    let launch = Launch {
        env: vec![("CLOUD_SECRET", "hunter2".into()), ("PASSED", "yes".into())],
        ..Launch::default()
    };
    let drone = RootedDrone(Larve::start_with(
        &[
            "--queen-host",
            &queen.addr,
            "--port",
            "0",
            "--allow-exec",
            "--token-file",
            &token,
            "--work-dir",
            &work,
            "--pass-env",
            "PASSED",
        ],
        &launch,
    ));
    drone.log_with(&["registered with queen"]);
    let script = format!(
        "id -un; cat {token}; cat {work}/running.log; ls {work}; ls {work}/work; env | sort"
    );
    let body = json!({"command": ["sh", "-c", script]}).to_string();
    let secret = "0123456789abcdef0123";
    let (status, created) = post_as(&queen.url("/tasks"), &body, Some(secret));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = eventually(SOON, "the task to end", || {
        let (_, task) = get_as(&queen.url(&format!("/tasks/{id}?wait=5")), Some(secret));
        (task["state"] != "running" && task["state"] != "pending").then_some(task)
    });
    let stdout = done["stdout"].as_str().unwrap();
    let stderr = done["stderr"].as_str().unwrap();
    assert!(stdout.starts_with("nobody\n"), "{stdout}");
    assert!(
        !stdout.contains(secret),
        "the token reached the task: {stdout}"
    );
    assert_eq!(stderr.matches("Permission denied").count(), 4, "{stderr}");
    let env: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(env.contains(&"PASSED=yes"), "{env:?}");
    for unwanted in ["CLOUD_SECRET", "HIVE_TOKEN", "RUST_BACKTRACE", "SHELL"] {
        assert!(
            !env.iter()
                .any(|line| line.starts_with(&format!("{unwanted}="))),
            "{unwanted} reached the task: {env:?}"
        );
    }
    // The work root lets nobody through to its own directory, and shows nothing.
    let mode = |path: &str| fs::metadata(path).unwrap().mode() & 0o777;
    assert_eq!(mode(&work), 0o711);
    for file in ["running.log", "lock", "cgroups"] {
        let path = format!("{work}/{file}");
        if Path::new(&path).exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
}

#[test]
fn a_drone_started_with_the_token_in_its_environment_gives_its_tasks_none() {
    let secret = "0123456789abcdef0123";
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(secret));
    let drone = Larve::start_with(
        &["--queen-host", &queen.addr, "--port", "0", "--allow-exec"],
        &Launch::token(secret),
    );
    drone.log_with(&["registered with queen"]);
    let body = json!({"command": ["env"]}).to_string();
    let (status, created) = post_as(&queen.url("/tasks"), &body, Some(secret));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = eventually(SOON, "the task to end", || {
        let (_, task) = get_as(&queen.url(&format!("/tasks/{id}?wait=5")), Some(secret));
        (task["state"] == "succeeded").then_some(task)
    });
    let env = done["stdout"].as_str().unwrap();
    assert!(!env.contains(secret), "{env}");
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names.retain(|name| !name.starts_with("LC_") && !["LANG", "TZ"].contains(name));
    assert_eq!(
        names,
        [
            "HIVE_ATTEMPT",
            "HIVE_ATTEMPT_ID",
            "HIVE_DRONE_ADDRESS",
            "HIVE_TASK_ID",
            "HOME",
            "PATH",
            "TMPDIR"
        ]
    );
}

#[test]
fn a_task_cannot_read_its_drones_token_through_proc() {
    if unsafe_geteuid() != 0 {
        eprintln!(
            "a_task_cannot_read...: skipped, only a drone run as root runs tasks as another user"
        );
        return;
    }
    let secret = "0123456789abcdef0123";
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(secret));
    let drone = Larve::start_with(
        &["--queen-host", &queen.addr, "--port", "0", "--allow-exec"],
        &Launch::token(secret),
    );
    drone.log_with(&["registered with queen"]);
    // Every process's environment it can see, its drone's included: how many hold a token, and
    // how many a PATH (its own, at least).
    let look = "seen=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'); \
                echo \"$seen\" | grep -c '^HIVE_TOKEN='; echo \"$seen\" | grep -c '^PATH='";
    let body = json!({"command": ["sh", "-c", look]}).to_string();
    let (status, created) = post_as(&queen.url("/tasks"), &body, Some(secret));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let done = eventually(SOON, "the task to end", || {
        let (_, task) = get_as(&queen.url(&format!("/tasks/{id}?wait=5")), Some(secret));
        (task["state"] == "succeeded").then_some(task)
    });
    let seen = done["stdout"].as_str().unwrap();
    let counts: Vec<u32> = seen.lines().map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], 0, "environments holding a token: {seen}");
    assert!(counts[1] >= 1, "it read its own environment: {seen}");
}

/// The effective user id of the test process.
fn unsafe_geteuid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

/// A user id no one else on the machine uses, for a drone run as another user: each test its
/// own, so that one's processes never count against another's limit.
fn lonely_uid(offset: u32) -> u32 {
    61_000 + (std::process::id() % 1000) * 4 + offset
}

#[test]
fn a_drone_whose_task_takes_every_thread_its_user_may_have_keeps_answering_healthz() {
    if unsafe_geteuid() != 0 {
        eprintln!("a_drone_whose_task...: skipped, only root may start a drone as another user");
        return;
    }
    // Probes far apart: what a queen makes of a drone that answers 503 is not this test's story.
    let queen = Larve::queen(&["--heartbeat-interval", "60", "--task-timeout", "1"]);
    let launch = Launch {
        user: Some(lonely_uid(0)),
        max_processes: Some(100),
        ..Launch::default()
    };
    // Its work root in the test's own directory: one left in the temporary directory, owned by
    // another user, would be refused by a later drone given the same port.
    let scratch = Scratch::new("threads");
    let work = scratch.path("work");
    let drone = exec_drone_with(&queen, &["--work-dir", &work], &launch);
    let info = drone_info(&queen, &drone);
    assert_eq!(info["containment"], "process-group", "{info}");
    let ready = scratch.path("ready");
    // Takes every process its user may have, holds them 3 s, then ends and reaps them (this
    // machine's init does not reap orphans at once, and a zombie still counts).
    let hog = format!(
        "\
import os, signal, time
pids = []
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    pids.append(pid)
open('{ready}', 'w').write(str(len(pids)))
time.sleep(3)
for pid in pids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"
    );
    let hog = run(&queen, json!({"command": ["python3", "-c", hog]}));
    eventually(SOON, "the task to take every process", || {
        Path::new(&ready).exists().then_some(())
    });
    let second = run(&queen, json!({"command": ["echo", "second"]}));
    // Every probe is answered at once: 200 by a thread the drone had, or 503 saying why.
    let mut answers = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let answer = raw(
            &drone.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            SOON,
        );
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 503"),
            "{answer:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        answers.push(answer.lines().next().unwrap_or_default().to_string());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("healthz while the task held every thread: {answers:?}");
    assert_eq!(ended(&queen, &hog)["state"], "succeeded");
    // The second attempt either could not start and says so, or (its start refused 503 by the
    // front) was started again once the drone had threads: it never hangs.
    let done = ended(&queen, &second);
    match done["state"].as_str().unwrap() {
        "failed" => {
            let reason = done["attempts"][0]["reason"].as_str().unwrap();
            assert!(reason.starts_with("could not start"), "{reason}");
        }
        state => assert_eq!(
            (state, done["stdout"].as_str()),
            ("succeeded", Some("second\n"))
        ),
    }
    eventually(SOON, "the drone to serve again", || {
        (get(&drone.url("/healthz")).0 == 200).then_some(())
    });
    let third = run(&queen, json!({"command": ["echo", "back"]}));
    let done = ended(&queen, &third);
    assert_eq!(done["stdout"], "back\n", "{done}");
}

/// Runs a task that leaves directories no one may enter (and a link out) in its own, on the one
/// drone of `queen`, whose work root is `work`, and waits for its directory to be gone.
fn locked_directories_are_removed(queen: &Larve, work: &str) {
    let id = run(
        queen,
        json!({"command": ["sh", "-c", "mkdir -p a/b/c && touch a/b/c/f && ln -s / a/root && chmod 000 a/b/c a/b a"]}),
    );
    assert_eq!(ended(queen, &id)["state"], "succeeded");
    eventually(SOON, "the attempt's directory gone", || {
        let shards = fs::read_dir(format!("{work}/work")).ok()?;
        let left: Vec<String> = shards
            .flatten()
            .flat_map(|shard| fs::read_dir(shard.path()).into_iter().flatten().flatten())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&id))
            .collect();
        left.is_empty().then_some(())
    });
}

#[test]
fn a_task_s_chmod_000_directory_is_removed_whoever_runs_it() {
    let queen = queen();
    // A drone run as root, its task as nobody.
    let scratch = Scratch::new("chmod");
    let root_work = scratch.path("root-work");
    let root_drone = RootedDrone(exec_drone(&queen, &["--work-dir", &root_work]));
    locked_directories_are_removed(&queen, &root_work);
    drop(root_drone);
    if unsafe_geteuid() != 0 {
        return;
    }
    // A drone run as another user, its task as itself: the owner of a mode 000 directory may not
    // enter it either.
    let user_work = scratch.path("user-work");
    let launch = Launch {
        user: Some(lonely_uid(1)),
        ..Launch::default()
    };
    let _user_drone = RootedDrone(exec_drone_with(
        &queen,
        &["--work-dir", &user_work],
        &launch,
    ));
    locked_directories_are_removed(&queen, &user_work);
}

#[test]
fn bad_drone_flags_exit_2_with_the_reason_and_start_nothing() {
    let queen = queen();
    let scratch = Scratch::new("flags");
    let readable = scratch.path("token");
    fs::write(&readable, "0123456789abcdef0123\n").unwrap();
    fs::set_permissions(&readable, fs::Permissions::from_mode(0o644)).unwrap();
    for (extra, said) in [
        (
            &["--run-as", "hive-no-such-user"][..],
            "no user is named \"hive-no-such-user\"",
        ),
        (
            &["--pass-env", "HIVE_TOKEN"][..],
            "--pass-env: HIVE_TOKEN is Hive's own",
        ),
        (
            // A cgroup file stands where the parent would be.
            &[
                "--containment",
                "cgroup",
                "--cgroup-parent",
                "/cpu.stat/hive",
            ][..],
            "--containment cgroup: ",
        ),
        (&["--token-file", &readable][..], "chmod 600"),
    ] {
        let mut args = vec!["--queen-host", &queen.addr, "--port", "0", "--allow-exec"];
        args.extend_from_slice(extra);
        let mut drone = Larve::spawn(&args);
        let status = drone.wait_exit(SOON).expect("it exits");
        assert_eq!(status.code(), Some(2), "{extra:?}: {}", drone.stderr());
        assert!(
            drone.stderr().contains(said),
            "{extra:?}: {}",
            drone.stderr()
        );
    }
    let (_, drones) = get(&queen.url("/drones"));
    assert_eq!(drones, json!([]), "none registered");
}

#[test]
fn a_work_root_others_may_write_is_refused_before_anything_is_set_up() {
    let queen = queen();
    let scratch = Scratch::new("open-root");
    let open = scratch.path("open-work");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let mut drone = Larve::spawn(&[
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--work-dir",
        &open,
    ]);
    let status = drone.wait_exit(SOON).expect("it exits");
    assert_eq!(status.code(), Some(1), "{}", drone.stderr());
    assert!(
        drone.stderr().contains("writable by no one else"),
        "{}",
        drone.stderr()
    );
    // No cgroup of its was made, to be left behind: their names end with the root's.
    let suffix = format!("-open-root-{}_open-work", std::process::id());
    let mut left = Vec::new();
    let mut dirs = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if path.to_string_lossy().ends_with(&suffix) {
                left.push(path);
            } else if depth < 4 {
                dirs.push((path, depth + 1));
            }
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn resources_out_of_range_are_400_naming_the_field_and_create_nothing() {
    let queen = queen();
    let _drone = exec_drone(&queen, &["--cpus", "2"]);
    for (resources, field) in [
        (json!({"memory_mb": 3}), "resources.memory_mb"),
        (json!({"cpus": 0}), "resources.cpus"),
        (json!({"cpus": 2.5}), "resources.cpus"),
        (json!({"pids": 0}), "resources.pids"),
        (json!({"disk_mb": 1}), "resources.disk_mb"),
    ] {
        let body = json!({"command": ["true"], "resources": resources}).to_string();
        let (status, answer) = post(&queen.url("/tasks"), &body);
        assert_eq!(status, 400, "{resources}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(field), "{resources}: {error}");
    }
    let body = json!({"command": ["true"], "kill_timeout_s": 301}).to_string();
    assert_eq!(post(&queen.url("/tasks"), &body).0, 400);
    let (_, page) = get(&queen.url("/tasks"));
    assert_eq!(page["tasks"], json!([]));
}

#[test]
fn drones_show_their_capacity_and_a_task_is_placed_only_where_its_memory_fits() {
    let queen = queen();
    let drone = exec_drone(&queen, &["--memory-mb", "512", "--cpus", "1"]);
    let info = drone_info(&queen, &drone);
    assert_eq!(
        (info["memory_mb"].clone(), info["cpus"].clone()),
        (json!(512), json!(1.0))
    );
    assert!(
        ["cgroup-v2", "cgroup-hybrid", "process-group"]
            .contains(&info["containment"].as_str().unwrap()),
        "{info}"
    );
    let table = std::process::Command::new(LARVE)
        .args(["drone", "ls", "--queen-host", &queen.addr])
        .env_remove("HIVE_TOKEN")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("MEMORY_MB") && table.contains("CONTAINMENT") && table.contains(" 512 "),
        "{table}"
    );

    let too_big = run(
        &queen,
        json!({"command": ["true"], "resources": {"memory_mb": 1024}}),
    );
    let (_, waiting) = get(&queen.url(&format!("/tasks/{too_big}?wait=0.5")));
    assert_eq!(waiting["state"], "pending");
    assert_eq!(
        waiting["reason"],
        "no drone has 1024 MiB of memory for it (the largest is drone-0, with 512 MiB)"
    );

    // Two of 300 MiB do not fit together in 512: the second waits for the first.
    let scratch = Scratch::new("fit");
    let go = scratch.path("go");
    let wait_for_go = format!("while [ ! -e {go} ]; do sleep 0.05; done");
    let first = run(
        &queen,
        json!({"command": ["sh", "-c", wait_for_go], "resources": {"memory_mb": 300}}),
    );
    running(&queen, &first);
    let second = run(
        &queen,
        json!({"command": ["true"], "resources": {"memory_mb": 300}}),
    );
    let (_, waiting) = get(&queen.url(&format!("/tasks/{second}?wait=0.5")));
    assert_eq!(waiting["state"], "pending", "{waiting}");
    assert_eq!(
        waiting["reason"],
        "no drone has 1 slot and 300 MiB free now; it is placed when one has"
    );
    let used = drone_info(&queen, &drone);
    assert_eq!(used["used_memory_mb"], 300, "{used}");
    fs::write(&go, "").unwrap();
    assert_eq!(ended(&queen, &second)["state"], "succeeded");
}
