//! What tasks print, as a user gets it: `GET /tasks/ID/logs` on a queen (relayed from the drone
//! that keeps the files), `larve task logs [-f]`, and `larve task run --wait` printing output as
//! it comes and saying why a task waits.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use hive_support::workdir::WorkDir;
use serde_json::{Value, json};

/// A queen with fast heartbeat settings, and `extra` flags.
fn queen(extra: &[&str]) -> Larve {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    Larve::queen(&args)
}

/// A drone of `queen` that runs commands, its work root in `root`, on `port` (0: any), with
/// `extra` flags; once it has taken the credential its registration was answered with (a queen
/// may place an attempt on it as soon as she has recorded it, and the drone refuses a start that
/// shows a credential it does not know yet).
fn exec_drone(queen: &Larve, root: &Path, port: u16, extra: &[&str]) -> RootedDrone {
    let (port, root) = (port.to_string(), root.to_string_lossy().into_owned());
    let mut args = vec![
        "--queen-host",
        &queen.addr,
        "--port",
        &port,
        "--allow-exec",
        "--work-dir",
        &root,
    ];
    args.extend_from_slice(extra);
    let drone = RootedDrone(Larve::start(&args));
    drone.log_with(&["registered with queen"]);
    drone
}

/// A directory of the test's own; anyone may write in it (a drone run as root runs its tasks as
/// `nobody`).
fn scratch(name: &str) -> WorkDir {
    let dir = WorkDir::create(&format!("hive-logs-{name}")).expect("a scratch directory");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Creates a task running `sh -c script` and returns its id.
fn run_sh(queen: &Larve, script: &str) -> String {
    let body = json!({"command": ["sh", "-c", script], "retries": 0});
    let (status, task) = post(&queen.url("/tasks"), &body.to_string());
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().expect("an id").to_string()
}

/// Task `id` once it is in one of `states`.
fn task_in(queen: &Larve, id: &str, states: &[&str], within: Duration) -> Value {
    eventually(within, &format!("task {id} in {states:?}"), || {
        let (status, task) = get(&queen.url(&format!("/tasks/{id}?wait=1")));
        assert_eq!(status, 200, "{task}");
        states
            .contains(&task["state"].as_str().unwrap_or_default())
            .then_some(task)
    })
}

fn ended(queen: &Larve, id: &str, within: Duration) -> Value {
    task_in(queen, id, &["succeeded", "failed", "cancelled"], within)
}

/// `GET url`: status, and the body's bytes (text or JSON), read whole.
fn get_bytes(url: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut answer = agent.get(url).call().expect("an HTTP answer");
    let status = answer.status().as_u16();
    let mut body = Vec::new();
    answer
        .body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .expect("the whole body");
    (status, body)
}

/// A `larve` command line run by the test, killed if the test ends first.
struct Cli(Child);

impl Cli {
    /// Starts `larve args` against `queen`, its stdout and stderr piped to the test.
    fn spawn(queen: &Larve, args: &[&str]) -> Cli {
        let child = Command::new(LARVE)
            .args(args)
            .env("HIVE_QUEEN", &queen.addr)
            .env_remove("HIVE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run larve");
        Cli(child)
    }

    /// Each line of stdout (or stderr) with when it arrived, as it arrives.
    fn lines(&mut self, stderr: bool) -> mpsc::Receiver<(SystemTime, String)> {
        let reader: Box<dyn Read + Send> = if stderr {
            Box::new(self.0.stderr.take().expect("stderr"))
        } else {
            Box::new(self.0.stdout.take().expect("stdout"))
        };
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if send.send((SystemTime::now(), line)).is_err() {
                    return;
                }
            }
        });
        lines
    }

    /// Its exit code, once it has exited within `within`.
    fn exit_code(&mut self, within: Duration) -> i32 {
        let status = eventually(within, "larve to exit", || self.0.try_wait().unwrap());
        status.code().unwrap_or(-1)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SHA-256 of `path`, as sha256sum says it.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_task_printing_a_line_every_100_ms_is_followed_line_by_line() {
    let queen = queen(&[]);
    let root = scratch("follow");
    let _drone = exec_drone(&queen, &root.path().join("drone"), 0, &[]);
    // Each line says when it was printed (ns since the epoch), the first after a second.
    let id = run_sh(
        &queen,
        "sleep 1; i=0; while [ $i -lt 20 ]; do echo \"$i $(date +%s%N)\"; i=$((i+1)); sleep 0.1; done",
    );
    task_in(&queen, &id, &["running"], SOON);
    let mut cli = Cli::spawn(&queen, &["task", "logs", "-f", &id]);
    let lines = cli.lines(false);
    let mut latencies = Vec::new();
    for n in 0..20 {
        let (at, line) = lines
            .recv_timeout(SOON)
            .unwrap_or_else(|_| panic!("line {n} never came"));
        let (i, printed) = line.split_once(' ').expect("`i ns`");
        assert_eq!(i, n.to_string(), "lines in order, none missing: {line:?}");
        let printed = UNIX_EPOCH + Duration::from_nanos(printed.parse().expect("ns"));
        latencies.push(at.duration_since(printed).unwrap_or_default());
        if n == 0 {
            let task = queen_task(&queen, &id);
            assert_eq!(task["state"], "running", "the first line came while it ran");
        }
    }
    assert!(
        latencies[0] < Duration::from_millis(500),
        "the first line came {:?} after it was printed",
        latencies[0]
    );
    assert_eq!(cli.exit_code(SOON), 0, "a follow ends with the attempt");
    assert!(
        lines.recv_timeout(Duration::from_secs(1)).is_err(),
        "nothing more"
    );
}

fn queen_task(queen: &Larve, id: &str) -> Value {
    let (status, task) = get(&queen.url(&format!("/tasks/{id}")));
    assert_eq!(status, 200, "{task}");
    task
}

#[test]
fn fifty_megabytes_of_output_come_back_byte_for_byte() {
    let queen = queen(&[]);
    let root = scratch("big");
    let _drone = exec_drone(&queen, &root.path().join("drone"), 0, &[]);
    let written = root.path().join("written");
    let script = format!("head -c 52428800 /dev/urandom | tee {} ", written.display());
    let id = run_sh(&queen, &script);
    let task = ended(&queen, &id, Duration::from_secs(60));
    assert_eq!(task["state"], "succeeded", "{task}");
    let read = root.path().join("read");
    let status = Command::new(LARVE)
        .args(["task", "logs", &id])
        .env("HIVE_QUEEN", &queen.addr)
        .env_remove("HIVE_TOKEN")
        .stdout(File::create(&read).unwrap())
        .status()
        .expect("larve task logs");
    assert!(status.success());
    assert_eq!(fs::metadata(&read).unwrap().len(), 52_428_800);
    assert_eq!(sha256(&read), sha256(&written), "the same bytes");
    // From an offset, over HTTP as curl gets it.
    let (status, tail) = get_bytes(&queen.url(&format!("/tasks/{id}/logs?offset=52428000")));
    assert_eq!(status, 200);
    assert_eq!(tail, fs::read(&written).unwrap()[52_428_000..]);
}

#[test]
fn logs_survive_a_drone_restart_and_are_gone_while_their_drone_is() {
    let queen = queen(&[]);
    let root = scratch("restart");
    let port = free_port().expect("a free port");
    let drone_root = root.path().join("drone");
    let mut drone = exec_drone(&queen, &drone_root, port, &[]);
    let id = run_sh(&queen, "echo kept; echo also >&2");
    ended(&queen, &id, SOON);
    let logs = |stream: &str| get_bytes(&queen.url(&format!("/tasks/{id}/logs?stream={stream}")));
    assert_eq!(logs("stdout"), (200, b"kept\n".to_vec()));
    drone.0.kill();
    drop(drone);
    let (status, said) = eventually(SOON, "a 410 once the drone is gone", || {
        let (status, said) = logs("stdout");
        (status == 410).then_some((status, said))
    });
    let said = String::from_utf8_lossy(&said).into_owned();
    assert!(
        said.contains("no longer registered") && said.contains(&format!("127.0.0.1:{port}")),
        "{status}: {said}"
    );
    let _again = exec_drone(&queen, &drone_root, port, &[]);
    let (status, body) = eventually(SOON, "the logs from the restarted drone", || {
        let answer = logs("stderr");
        (answer.0 == 200).then_some(answer)
    });
    assert_eq!((status, body), (200, b"also\n".to_vec()));
    assert_eq!(logs("stdout"), (200, b"kept\n".to_vec()));
}

#[test]
fn a_logs_request_for_what_is_not_there_is_refused_saying_what() {
    let queen = queen(&[]);
    let root = scratch("refused");
    let id = run_sh(&queen, "echo one");
    // Pending, with no drone that runs commands: no attempt yet.
    let (status, said) = get(&queen.url(&format!("/tasks/{id}/logs")));
    assert_eq!(status, 404, "{said}");
    assert!(
        said["error"].as_str().unwrap().contains("not started"),
        "{said}"
    );
    let _drone = exec_drone(&queen, &root.path().join("drone"), 0, &[]);
    ended(&queen, &id, SOON);
    for (query, want, needle) in [
        ("", 200, ""),
        ("?stream=stderr&follow=1", 200, ""),
        ("?attempt=1&offset=4", 200, ""),
        ("?stream=stdin", 404, "no such stream"),
        ("?attempt=2", 404, "no such attempt 2"),
        ("?attempt=0", 400, "attempt"),
        ("?offset=-1", 400, "offset"),
        ("?follow=maybe", 400, "follow"),
    ] {
        let (status, body) = get_bytes(&queen.url(&format!("/tasks/{id}/logs{query}")));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
    let (status, said) = get(&queen.url("/tasks/no-such-task/logs"));
    assert_eq!(status, 404, "{said}");
    let (_, out) = get_bytes(&queen.url(&format!("/tasks/{id}/logs")));
    assert_eq!(out, b"one\n");
}

#[test]
fn past_its_cap_a_stream_keeps_its_last_part_after_a_line_saying_what_was_dropped() {
    let queen = queen(&[]);
    let root = scratch("cap");
    let _drone = exec_drone(
        &queen,
        &root.path().join("drone"),
        0,
        &["--max-log-mb", "1"],
    );
    let id = run_sh(&queen, "seq 1 400000");
    let task = ended(&queen, &id, SOON);
    assert_eq!(task["state"], "succeeded", "{task}");
    let printed: Vec<u8> = (1..=400_000)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    let (status, body) = get_bytes(&queen.url(&format!("/tasks/{id}/logs")));
    assert_eq!(status, 200);
    let line_end = body.iter().position(|&b| b == b'\n').unwrap() + 1;
    let marker = String::from_utf8_lossy(&body[..line_end]).into_owned();
    let kept = &body[line_end..];
    let dropped = printed.len() - kept.len();
    assert!(
        marker.starts_with(&format!(
            "[hive: {dropped} bytes of stdout were dropped (bytes 0 to {dropped})"
        )),
        "{marker}"
    );
    assert!(
        kept.len() <= 1 << 20 && kept.len() >= (1 << 20) - (64 << 10),
        "{}",
        kept.len()
    );
    assert_eq!(kept, &printed[dropped..], "the last part, whole");
    // From a kept offset there is nothing to say; the task's own tail is still there.
    let (_, from_kept) = get_bytes(&queen.url(&format!("/tasks/{id}/logs?offset={dropped}")));
    assert_eq!(from_kept, kept);
    assert_eq!(task["stdout_truncated"], true, "{task}");
}

#[test]
fn the_logs_of_tasks_beyond_keep_finished_are_removed_from_their_drone() {
    let queen = queen(&["--keep-finished", "1"]);
    let root = scratch("forget");
    let drone_root = root.path().join("drone");
    let _drone = exec_drone(&queen, &drone_root, 0, &[]);
    let first = run_sh(&queen, "echo first");
    let task = ended(&queen, &first, SOON);
    assert_eq!(task["state"], "succeeded", "{task}");
    let attempt = task["attempts"][0]["id"].as_str().unwrap().to_string();
    let kept = drone_root.join("logs").join(&attempt);
    assert!(kept.is_dir(), "{} holds the attempt's logs", kept.display());
    let second = run_sh(&queen, "echo second");
    ended(&queen, &second, SOON);
    eventually(SOON, "the first task's logs removed", || {
        (!kept.exists()).then_some(())
    });
    let (_, out) = get_bytes(&queen.url(&format!("/tasks/{second}/logs")));
    assert_eq!(out, b"second\n");
}

#[test]
fn task_run_wait_prints_output_as_it_comes_and_exits_with_the_task_s_code() {
    let queen = queen(&[]);
    let root = scratch("wait");
    let _drone = exec_drone(&queen, &root.path().join("drone"), 0, &[]);
    let began = Instant::now();
    let mut cli = Cli::spawn(
        &queen,
        &[
            "task",
            "run",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo first; echo careful >&2; sleep 3; echo second; exit 7",
        ],
    );
    let (out, err) = (cli.lines(false), cli.lines(true));
    let (_, first) = out.recv_timeout(SOON).expect("the first line");
    assert_eq!(first, "first");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "the first line came before the task ended: after {:?}",
        began.elapsed()
    );
    let said: Vec<String> = std::iter::from_fn(|| err.recv_timeout(SOON).ok().map(|(_, l)| l))
        .take_while(|line| line != "careful")
        .collect();
    assert!(
        said.iter().all(|line| line.starts_with("larve: ")),
        "{said:?}"
    );
    assert_eq!(out.recv_timeout(SOON).expect("the second line").1, "second");
    assert_eq!(cli.exit_code(SOON), 7);
}

#[test]
fn task_run_wait_on_a_hive_with_no_exec_drone_says_why_within_3_s_and_gives_up_when_told() {
    let queen = queen(&[]);
    let _drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&_drone.addr], SOON);
    let (began, began_at) = (Instant::now(), SystemTime::now());
    let mut cli = Cli::spawn(
        &queen,
        &["task", "run", "--wait", "--wait-timeout", "4", "--", "true"],
    );
    let err = cli.lines(true);
    let (at, why) = eventually(SOON, "the pending reason", || {
        let (at, line) = err.recv_timeout(SOON).ok()?;
        line.contains("pending").then_some((at, line))
    });
    let waited = at.duration_since(began_at).unwrap_or_default();
    assert!(why.contains("no drone runs commands"), "{why}");
    assert!(waited < Duration::from_secs(3), "said after {waited:?}");
    assert_eq!(cli.exit_code(SOON), 124);
    assert!(
        began.elapsed() >= Duration::from_secs(4),
        "gave up after {:?}",
        began.elapsed()
    );
    let rest: Vec<String> =
        std::iter::from_fn(|| err.recv_timeout(SOON).ok().map(|(_, l)| l)).collect();
    assert_eq!(
        rest.iter().filter(|line| line.contains("pending")).count(),
        0,
        "the reason is said once: {rest:?}"
    );
    assert!(rest.iter().any(|line| line.contains("gave up")), "{rest:?}");
}
