//! Who may do what, tried as an attacker would: client tokens of every scope, the cluster token, a
//! drone's credential used for another drone's attempts, a drone that stalls, and a queen that
//! forgot everything while a drone still ran an older run of a task id.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use serde_json::{Value, json};

const TOKEN: &str = "cluster-token-0123456789";
const READER: &str = "reader-secret-0123456789";
const SUBMITTER: &str = "submitter-secret-0123456";
const OPERATOR: &str = "operator-secret-01234567";
const ADMIN: &str = "admin-secret-0123456789ab";

/// A file of client tokens, one of each scope, removed with the test.
struct TokensFile(std::path::PathBuf);

impl TokensFile {
    fn new() -> TokensFile {
        let path = std::env::temp_dir().join(format!(
            "hive-client-tokens-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(
            &path,
            format!(
                "# name scope secret\nrita read {READER}\nsam submit {SUBMITTER}\nolga operate {OPERATOR}\nada admin {ADMIN}\n"
            ),
        )
        .unwrap();
        TokensFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TokensFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A queen with the cluster token and `tokens`' client tokens, fast heartbeats.
fn queen_with(tokens: &TokensFile) -> Larve {
    let mut args = vec!["--queen", "--port", "0", "--client-tokens", tokens.path()];
    args.extend_from_slice(FAST);
    Larve::start_with(&args, &Launch::token(TOKEN))
}

/// A drone of `queen` that runs commands, with the cluster token.
fn exec_drone(queen: &Larve) -> Larve {
    let drone = Larve::start_with(
        &["--queen-host", &queen.addr, "--port", "0", "--allow-exec"],
        &Launch::token(TOKEN),
    );
    wait_for_registration(queen, &drone.addr);
    drone
}

fn wait_for_registration(queen: &Larve, address: &str) {
    eventually(SOON, &format!("{address} to register"), || {
        let (_, drones) = get_as(&queen.url("/drones"), Some(TOKEN));
        drones
            .as_array()?
            .iter()
            .any(|d| d["address"] == address)
            .then_some(())
    });
}

/// `method url` with `body` and `token`: status and JSON answer.
fn ask(method: &str, url: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let (status, _, answer) = call(method, url, Some(&body.to_string()), token, &[]);
    (status, answer)
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

/// Task `id` once it has ended, asked with `token`.
fn ended(queen: &Larve, id: &str, token: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("task {id} to end"),
        || {
            let (_, task) = get_as(&queen.url(&format!("/tasks/{id}?wait=5")), Some(token));
            ["succeeded", "failed", "cancelled"]
                .contains(&task["state"].as_str()?)
                .then_some(task)
        },
    )
}

#[test]
fn each_scope_is_allowed_and_refused_where_it_should_be_and_changes_are_audited() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let task = json!({"command": ["true"], "env": {"API_KEY": "hunter2"}});
    let (status, created) = ask("POST", &queen.url("/tasks"), &task, Some(READER));
    assert_eq!(status, 403, "{created}");
    assert!(error(&created).contains("needs submit"), "{created}");
    let (status, created) = ask("POST", &queen.url("/tasks"), &task, Some(SUBMITTER));
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["env"]["API_KEY"], "hunter2");
    let id = created["id"].as_str().unwrap();

    // Every GET for a read token, with the env's values hidden.
    let (status, seen) = get_as(&queen.url(&format!("/tasks/{id}")), Some(READER));
    assert_eq!((status, &seen["env"]["API_KEY"]), (200, &json!("***")));
    // A long poll (held by the front, then answered) hides them too.
    let (status, waited) = get_as(&queen.url(&format!("/tasks/{id}?wait=0.2")), Some(READER));
    assert_eq!((status, &waited["env"]["API_KEY"]), (200, &json!("***")));
    let (_, listed) = get_as(&queen.url("/tasks"), Some(READER));
    assert_eq!(listed["tasks"][0]["env"]["API_KEY"], "***");
    let (_, listed) = get_as(&queen.url("/tasks"), Some(SUBMITTER));
    assert_eq!(listed["tasks"][0]["env"]["API_KEY"], "hunter2");
    for token in [READER, SUBMITTER, OPERATOR, ADMIN, TOKEN] {
        assert_eq!(get_as(&queen.url("/drones"), Some(token)).0, 200);
        assert_eq!(get_as(&queen.url("/tasks"), Some(token)).0, 200);
    }

    // Drain needs operate; registering a drone needs admin.
    let registration = json!({"address": "127.0.0.1:9"});
    let (status, answer) = ask(
        "POST",
        &queen.url("/register"),
        &registration,
        Some(OPERATOR),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("needs admin"), "{answer}");
    let (status, answer) = ask("POST", &queen.url("/register"), &registration, Some(ADMIN));
    assert_eq!(status, 200, "{answer}");
    let name = answer["name"].as_str().unwrap().to_string();
    let drain = queen.url(&format!("/drones/{name}/drain"));
    let (status, answer) = ask("POST", &drain, &json!({}), Some(SUBMITTER));
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("needs operate"), "{answer}");
    let (status, answer) = ask("POST", &drain, &json!({}), Some(OPERATOR));
    assert_eq!(
        (status, &answer["draining"]),
        (200, &json!(true)),
        "{answer}"
    );

    // No token, or one nobody issued: 401.
    for token in [None, Some("nobody-issued-this-0123456")] {
        assert_eq!(get_as(&queen.url("/tasks"), token).0, 401, "{token:?}");
    }

    let log = queen.log_with(&[
        "audit: sam (submit) POST \"/tasks\" from 127.0.0.1:",
        &format!("audit: olga (operate) POST \"/drones/{name}/drain\""),
        "audit: ada (admin) POST \"/register\"",
    ]);
    assert!(
        !log.contains("audit: rita") && !log.contains("GET \"/tasks\" from"),
        "only accepted changes are audited: {log}"
    );
    for secret in [READER, SUBMITTER, OPERATOR, ADMIN, TOKEN, "hunter2"] {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}

#[test]
fn no_client_token_and_not_the_cluster_token_starts_an_attempt_or_posts_a_report() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let drone = exec_drone(&queen);
    let start = json!({"attempts": [{"id": "0123456789abcdef0123456789abcdef", "task": "x",
        "attempt": 1, "command": ["touch", "/tmp/hive-forged-start"], "timeout_s": 5, "slots": 1}]});
    let reports = json!({"address": drone.addr, "boot": "", "reports": []});
    for token in [READER, SUBMITTER, OPERATOR, ADMIN, TOKEN] {
        let (status, answer) = ask("POST", &drone.url("/tasks"), &start, Some(token));
        assert!(status == 401 || status == 403, "{token}: {status} {answer}");
        let stop = drone.url("/attempts/0123456789abcdef0123456789abcdef");
        let (status, answer) = ask("DELETE", &stop, &json!({}), Some(token));
        assert!(status == 401 || status == 403, "{token}: {status} {answer}");
        let (status, answer) = ask("POST", &queen.url("/reports"), &reports, Some(token));
        assert_eq!(status, 403, "{token}: {answer}");
    }
    // The cluster token, which every drone holds, is known to the drone and refused by name.
    let (status, answer) = ask("POST", &drone.url("/tasks"), &start, Some(TOKEN));
    assert_eq!(status, 403, "{answer}");
    assert!(error(&answer).contains("only for its queens"), "{answer}");
    assert!(!std::path::Path::new("/tmp/hive-forged-start").exists());
}

#[test]
fn a_drone_credential_cannot_report_another_drones_attempt() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let drone = exec_drone(&queen);
    let (status, created) = ask(
        "POST",
        &queen.url("/tasks"),
        &json!({"command": ["sleep", "30"], "id": "victim"}),
        Some(TOKEN),
    );
    assert_eq!(status, 202, "{created}");
    let running = eventually(SOON, "the victim to run", || {
        let (_, task) = get_as(&queen.url("/tasks/victim"), Some(TOKEN));
        (task["state"] == "running" && task["attempts"][0]["id"].is_string()).then_some(task)
    });
    let attempt = running["attempts"][0]["id"].as_str().unwrap();

    // An intruder with the cluster token registers a drone of its own and gets a credential.
    let (status, registered) = register_as(&queen, "127.0.0.1:9", TOKEN);
    assert_eq!(status, 200, "{registered}");
    let intruder = registered["credential"].as_str().unwrap();
    let forged = |address: &str| {
        json!({"address": address, "boot": "", "reports": [{"id": attempt, "task": "victim",
            "attempt": 1, "state": "succeeded", "exit_code": 0, "reason": "exit code 0",
            "stdout": "forged"}]})
    };
    for address in ["127.0.0.1:9", drone.addr.as_str()] {
        let (status, answer) = ask(
            "POST",
            &queen.url("/reports"),
            &forged(address),
            Some(intruder),
        );
        assert_eq!(status, 403, "as {address}: {answer}");
    }
    let (_, task) = get_as(&queen.url("/tasks/victim"), Some(TOKEN));
    assert_eq!(task["state"], "running", "{task}");
    assert_eq!(task["stdout"], "");
    queen.log_with(&["refused reports from \"127.0.0.1:9\""]);
}

fn register_as(queen: &Larve, address: &str, token: &str) -> (u16, Value) {
    post_as(
        &queen.url("/register"),
        &json!({ "address": address }).to_string(),
        Some(token),
    )
}

#[test]
fn a_queen_restarted_and_a_task_id_used_again_never_returns_another_runs_output() {
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["--queen", "--port", &port];
    args.extend_from_slice(FAST);
    let queen = Larve::start(&args);
    // One slot: the new run can start only once the old one is stopped.
    let drone = Larve::start(&[
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--slots",
        "1",
    ]);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let old = json!({"id": "reused", "command": ["sh", "-c", "sleep 3; echo old run"]});
    assert_eq!(post(&queen.url("/tasks"), &old.to_string()).0, 202);
    // Started on the drone, not only placed: the queen logs it once the drone has said so.
    queen.log_with(&["task reused attempt 1 started on drone-0"]);
    drop(queen);

    // A new queen on the same port knows nothing, and the drone still runs the old attempt.
    let queen = Larve::start(&args);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let new = json!({"id": "reused", "command": ["echo", "new run"]});
    let (status, created) = post(&queen.url("/tasks"), &new.to_string());
    assert_eq!(status, 202, "{created}");
    let done = eventually(Duration::from_secs(30), "the new run to end", || {
        let (_, task) = get(&queen.url("/tasks/reused?wait=5"));
        (task["state"] != "running" && task["state"] != "pending").then_some(task)
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["stdout"], "new run\n", "{done}");
    assert_eq!(
        done["attempts"].as_array().unwrap().len(),
        1,
        "a drone without room costs no attempt: {done}"
    );
    // The old run was stopped as one no queen placed there, which freed its slot.
    queen.log_with(&["that no queen placed there", "stopping it"]);
}

/// Each request a [`StalledDrone`] saw: its line and its `Authorization`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A drone of our own making that takes every start, lists what it started as running for ever,
/// says it stops what it is told to stop and never does: a drone that stalls, or lies. It
/// records every request's line and `Authorization`.
struct StalledDrone {
    peer: FakePeer,
    boot: &'static str,
    seen: Seen,
}

impl StalledDrone {
    fn start() -> StalledDrone {
        StalledDrone::answering_first_start(None)
    }

    /// A [`StalledDrone`] that answers its first start with `status` (when some), as a drone
    /// still waiting for its registration's answer does, not knowing its credential yet.
    fn answering_first_start(status: Option<u16>) -> StalledDrone {
        let boot = "0123456789abcdef";
        let refuse_once = Arc::new(Mutex::new(status));
        let running: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let seen: Seen = Arc::default();
        let saw = seen.clone();
        let peer = FakePeer::reading(move |request| {
            saw.lock()
                .push((request.line.clone(), request.authorization.clone()));
            if request.line == "POST /tasks"
                && let Some(status) = refuse_once.lock().take()
            {
                let error = json!({"error": "no such credential"});
                return (status, "application/json", error.to_string());
            }
            let answer = if request.line == "POST /tasks" {
                let start: Value = serde_json::from_slice(&request.body).unwrap_or_default();
                let mut results = Vec::new();
                for attempt in start["attempts"].as_array().into_iter().flatten() {
                    let id = attempt["id"].as_str().unwrap_or_default().to_string();
                    let task = attempt["task"].as_str().unwrap_or_default().to_string();
                    running.lock().insert(id.clone(), task);
                    results.push(json!({"id": id, "result": "started"}));
                }
                json!({ "results": results })
            } else {
                let listed: Vec<Value> = running
                    .lock()
                    .iter()
                    .map(|(id, task)| json!({"id": id, "task": task}))
                    .collect();
                json!({"status": "Status.READY", "version": "0", "mode": "Mode.DRONE",
                    "boot": boot, "exec": true, "slots": 1, "used": listed.len(),
                    "running": listed, "ended": []})
            };
            (200, "application/json", answer.to_string())
        });
        StalledDrone { peer, boot, seen }
    }
}

#[test]
fn a_stalled_drones_attempt_times_out_on_the_queens_clock_and_never_sees_the_cluster_token() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let stalled = StalledDrone::start();
    let registration =
        json!({"address": stalled.peer.addr, "boot": stalled.boot, "exec": true, "slots": 1});
    let (status, registered) = ask("POST", &queen.url("/register"), &registration, Some(TOKEN));
    assert_eq!(status, 200, "{registered}");
    let credential = registered["credential"].as_str().unwrap().to_string();
    let task = json!({"command": ["sleep", "100"], "timeout_s": 1, "env": {"API_KEY": "hunter2"}});
    let (status, created) = ask("POST", &queen.url("/tasks"), &task, Some(SUBMITTER));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    // Its timeout (1 s), the kill grace (5 s) and 2 s more: then the queen ends it herself.
    let done = ended(&queen, id, TOKEN);
    assert_eq!(done["state"], "failed", "{done}");
    let attempt = &done["attempts"][0];
    assert_eq!(attempt["state"], "timed_out", "{done}");
    assert!(
        attempt["reason"]
            .as_str()
            .unwrap()
            .contains("its drone still ran it"),
        "{done}"
    );
    let attempt_id = attempt["id"].as_str().unwrap();
    eventually(SOON, "the queen to tell the drone to stop it", || {
        stalled
            .seen
            .lock()
            .iter()
            .any(|(line, _)| *line == format!("DELETE /attempts/{attempt_id}"))
            .then_some(())
    });
    // Every call the queen made to it showed its credential, never the cluster token.
    let seen = stalled.seen.lock().clone();
    assert!(!seen.is_empty());
    for (line, authorization) in seen {
        assert_eq!(
            authorization.as_deref(),
            Some(format!("Bearer {credential}").as_str()),
            "{line}"
        );
    }
}

#[test]
fn a_start_refused_401_by_a_drone_still_registering_costs_no_retry() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let drone = StalledDrone::answering_first_start(Some(401));
    let registration =
        json!({"address": drone.peer.addr, "boot": drone.boot, "exec": true, "slots": 1});
    let (status, registered) = ask("POST", &queen.url("/register"), &registration, Some(TOKEN));
    assert_eq!(status, 200, "{registered}");
    let task = json!({"command": ["sleep", "100"], "retries": 0});
    let (status, created) = ask("POST", &queen.url("/tasks"), &task, Some(SUBMITTER));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let starts = || {
        drone
            .seen
            .lock()
            .iter()
            .filter(|(line, _)| line == "POST /tasks")
            .count()
    };
    eventually(
        Duration::from_secs(10),
        "the start to be asked again",
        || (starts() >= 2).then_some(()),
    );
    let (_, task) = get_as(&queen.url(&format!("/tasks/{id}")), Some(TOKEN));
    assert_eq!(task["state"], "running", "{task}");
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task}");
}

#[test]
fn a_token_is_handed_out_or_taken_back_by_editing_the_file_without_a_restart() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let newcomer = "newcomer-secret-0123456789";
    assert_eq!(get_as(&queen.url("/tasks"), Some(newcomer)).0, 401);
    let before = std::fs::read_to_string(tokens.path()).unwrap();
    std::fs::write(tokens.path(), format!("{before}nina read {newcomer}\n")).unwrap();
    eventually(SOON, "the new token to be taken", || {
        (get_as(&queen.url("/tasks"), Some(newcomer)).0 == 200).then_some(())
    });
    // A file that no longer parses changes nothing.
    std::fs::write(tokens.path(), format!("{before}nina read short\n")).unwrap();
    queen.log_with(&["the client tokens stay as they were"]);
    assert_eq!(get_as(&queen.url("/tasks"), Some(newcomer)).0, 200);
    // Taken back.
    std::fs::write(tokens.path(), before).unwrap();
    eventually(SOON, "the token to be refused", || {
        (get_as(&queen.url("/tasks"), Some(newcomer)).0 == 401).then_some(())
    });
    assert_eq!(get_as(&queen.url("/tasks"), Some(READER)).0, 200);
    let log = queen.log_with(&["read the client tokens again"]);
    assert!(!log.contains(newcomer), "a secret reached the log");
}

/// `GET url` with `token`: status and the body as text (an attempt's output is no JSON).
fn get_text(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(SOON))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut answer = request.call().expect("an HTTP answer");
    let status = answer.status().as_u16();
    (status, answer.body_mut().read_to_string().expect("a body"))
}

#[test]
fn a_task_s_output_is_read_through_the_queen_with_a_read_token_and_never_from_its_drone() {
    let tokens = TokensFile::new();
    let queen = queen_with(&tokens);
    let drone = exec_drone(&queen);
    // Placed before the drone holds its credential, a start would be refused (401).
    drone.log_with(&["registered with queen"]);
    let task = json!({"command": ["echo", "what the task printed"]});
    let (status, created) = ask("POST", &queen.url("/tasks"), &task, Some(SUBMITTER));
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap();
    let task = ended(&queen, id, READER);
    assert_eq!(task["state"], "succeeded", "{task}");
    let logs = queen.url(&format!("/tasks/{id}/logs"));
    assert_eq!(
        get_text(&logs, Some(READER)),
        (200, "what the task printed\n".to_string())
    );
    assert_eq!(get_text(&logs, None).0, 401);
    let attempt = task["attempts"][0]["id"].as_str().unwrap();
    let on_drone = drone.url(&format!("/attempts/{attempt}/logs"));
    for token in [None, Some(READER), Some(ADMIN), Some(TOKEN)] {
        let (status, said) = get_text(&on_drone, token);
        assert!(status == 401 || status == 403, "{token:?}: {status} {said}");
        assert!(!said.contains("what the task printed"), "{token:?}: {said}");
    }
}
