//! The command-line client of a queen's API: `larve task ...` and `larve drone ...`, in the same
//! binary, as `nomad` and `etcdctl` are.
//!
//! It speaks the HTTP API a user would with curl (see `api.rs`): one call per command, to the first
//! queen of `--queen-host` that answers (a queen that cannot be reached, or answers 503, is left
//! for the next). `task run --wait` waits with `GET /tasks/ID?wait=`, prints the task's output as
//! it was captured, and exits with the task's exit code, so a script can use it like the command
//! itself.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, Credentials, Reply};
use crate::tasks::shell_words;

/// Longest wait one `GET ?wait=` asks for; `--wait` asks again until the task ends.
const WAIT_SECS: u32 = 60;

/// Limit for a call that does not wait: a queen answers at once, or a cancel within seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What the client talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `host:port` of each queen, tried in turn.
    pub queens: Vec<String>,
    /// The token, and with TLS the CA to trust (and a certificate to show).
    pub credentials: Credentials,
}

/// One command.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `task run`: create a task (the JSON body of `POST /tasks`), and with `wait` wait for it.
    Run { task: Value, wait: bool },
    /// `task get ID`.
    Get { id: String },
    /// `task ls`.
    List {
        state: Option<String>,
        limit: Option<usize>,
        after: Option<String>,
    },
    /// `task cancel ID`.
    Cancel { id: String },
    /// `drone ls`.
    Drones,
    /// `drone drain NAME` (`undo`: `--undo`).
    Drain { name: String, undo: bool },
}

/// Why a command did not do what was asked.
#[derive(Debug)]
enum Failure {
    /// A queen answered with an error: what she said.
    Refused { status: u16, error: String },
    /// No queen could be reached.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { status, error } => write!(f, "the queen answered {status}: {error}"),
            Failure::Unreachable(why) => write!(f, "{why}"),
        }
    }
}

/// Runs `request` against `target`; returns the process's exit status: 0 when done, the task's
/// exit code for `task run --wait`, 1 when something failed (said on stderr).
pub fn run(target: &Target, request: &Request) -> u8 {
    let client = Client::new(1, 1, target.credentials.clone());
    let session = Session { client, target };
    match session.execute(request) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("larve: {failure}");
            1
        }
    }
}

struct Session<'a> {
    client: Client,
    target: &'a Target,
}

impl Session<'_> {
    fn execute(&self, request: &Request) -> Result<u8, Failure> {
        match request {
            Request::Run { task, wait } => {
                let created = self.call("POST", "/tasks", Some(task), CALL_TIMEOUT)?;
                let id = created["id"].as_str().unwrap_or_default().to_string();
                if !wait {
                    println!("{id}");
                    return Ok(0);
                }
                eprintln!("larve: task {id} created; waiting for it to end");
                let task = self.wait(&id)?;
                Ok(finish(&task))
            }
            Request::Get { id } => {
                print_json(&self.call("GET", &format!("/tasks/{id}"), None, CALL_TIMEOUT)?);
                Ok(0)
            }
            Request::List {
                state,
                limit,
                after,
            } => {
                let mut query = Vec::new();
                if let Some(state) = state {
                    query.push(format!("state={state}"));
                }
                if let Some(limit) = limit {
                    query.push(format!("limit={limit}"));
                }
                if let Some(after) = after {
                    query.push(format!("after={after}"));
                }
                let path = format!("/tasks?{}", query.join("&"));
                let page = self.call("GET", &path, None, CALL_TIMEOUT)?;
                print!("{}", task_table(&page));
                Ok(0)
            }
            Request::Cancel { id } => {
                let task = self.call("DELETE", &format!("/tasks/{id}"), None, CALL_TIMEOUT)?;
                let state = task["state"].as_str().unwrap_or("?");
                println!("task {id}: {state}");
                Ok(0)
            }
            Request::Drones => {
                let drones = self.call("GET", "/drones", None, CALL_TIMEOUT)?;
                print!("{}", drone_table(&drones));
                Ok(0)
            }
            Request::Drain { name, undo } => {
                let method = if *undo { "DELETE" } else { "POST" };
                self.call(method, &format!("/drones/{name}/drain"), None, CALL_TIMEOUT)?;
                if *undo {
                    println!("{name} takes placements again");
                } else {
                    println!("{name} drains: no new placements on it; its running tasks finish");
                }
                Ok(0)
            }
        }
    }

    /// Task `id` once it has ended, asking with `?wait=` as long as it takes.
    fn wait(&self, id: &str) -> Result<Value, Failure> {
        let path = format!("/tasks/{id}?wait={WAIT_SECS}");
        let timeout = Duration::from_secs(u64::from(WAIT_SECS)) + CALL_TIMEOUT;
        loop {
            let task = self.call("GET", &path, None, timeout)?;
            if matches!(
                task["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return Ok(task);
            }
        }
    }

    /// One call, to the first queen that answers with anything but a 503; its JSON answer, or
    /// what went wrong.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut failures = Vec::new();
        for queen in &self.target.queens {
            match self.client.exchange(method, queen, path, body, timeout) {
                Ok(reply) if reply.status == 503 => {
                    failures.push(format!("{queen}: {}", reply.said()));
                }
                Ok(Reply { status, body }) if (200..300).contains(&status) => {
                    return serde_json::from_slice(&body).map_err(|e| Failure::Refused {
                        status,
                        error: format!("an answer that is not JSON ({e})"),
                    });
                }
                Ok(reply) => {
                    return Err(Failure::Refused {
                        status: reply.status,
                        error: reply.said(),
                    });
                }
                Err(e) => {
                    let e = e.to_string();
                    let tls = self.target.credentials.tls.is_some();
                    match tls_hint(&e, tls) {
                        Some(hint) => failures.push(format!("{queen}: {e}; {hint}")),
                        None => failures.push(format!("{queen}: {e}")),
                    }
                }
            }
        }
        Err(Failure::Unreachable(format!(
            "no queen answered ({}); is the hive up, and is --queen-host (or HIVE_QUEEN) right?",
            failures.join("; ")
        )))
    }
}

/// What a user does about a call that failed with `error`, when it is TLS's doing: a client
/// without TLS (`tls` false) that a queen speaking HTTPS hung up on, a queen that wants a client
/// certificate, a certificate from another CA, or HTTPS to a queen that speaks plain HTTP.
fn tls_hint(error: &str, tls: bool) -> Option<&'static str> {
    let error = error.to_ascii_lowercase();
    let has = |needle: &str| error.contains(needle);
    if tls {
        if has("certificaterequired") || has("certificate required") {
            return Some(
                "the queen wants a client certificate: add --tls-cert and --tls-key (or set HIVE_TLS_CERT and HIVE_TLS_KEY)",
            );
        }
        if has("unknownissuer") || has("invalid peer certificate") {
            return Some("the queen's certificate is not signed by --tls-ca (HIVE_TLS_CA)");
        }
        if has("corrupt message") || has("invalidcontenttype") || has("invalid content type") {
            return Some(
                "the queen speaks plain HTTP: drop --tls-ca (and HIVE_TLS_CA), or start her with TLS",
            );
        }
        return None;
    }
    // A queen that speaks HTTPS answers a plain request with a TLS alert, which is no HTTP.
    if has("http parse fail") || has("invalid http version") {
        return Some("the queen speaks HTTPS: add --tls-ca (or set HIVE_TLS_CA)");
    }
    let hung_up = has("closed") || has("reset") || has("broken pipe") || has("eof");
    hung_up.then_some("if the queen speaks HTTPS, add --tls-ca (or set HIVE_TLS_CA)")
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints an ended task's output as it was captured and returns the exit status for it: the
/// task's exit code, or 1 when it has none (it could not start, was killed, was cancelled).
fn finish(task: &Value) -> u8 {
    let text = |field: &str| task[field].as_str().unwrap_or_default().to_string();
    print!("{}", text("stdout"));
    let _ = std::io::stdout().flush();
    eprint!("{}", text("stderr"));
    for stream in ["stdout", "stderr"] {
        if task[format!("{stream}_truncated")].as_bool() == Some(true) {
            eprintln!("larve: the task's {stream} was longer; only its last 64 KiB was kept");
        }
    }
    let state = text("state");
    match (state.as_str(), task["exit_code"].as_i64()) {
        ("succeeded", _) => 0,
        (_, Some(code)) if state == "failed" => u8::try_from(code).unwrap_or(1).max(1),
        _ => {
            let reason = task["reason"].as_str().unwrap_or(&state);
            eprintln!("larve: task {} {state}: {reason}", text("id"));
            1
        }
    }
}

/// A page of tasks as a table.
fn task_table(page: &Value) -> String {
    let mut rows = vec![
        ["ID", "STATE", "ATTEMPTS", "EXIT", "COMMAND"]
            .map(String::from)
            .to_vec(),
    ];
    for task in page["tasks"].as_array().into_iter().flatten() {
        let command = task["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        rows.push(vec![
            task["id"].as_str().unwrap_or_default().to_string(),
            task["state"].as_str().unwrap_or_default().to_string(),
            task["attempts"].as_array().map_or(0, Vec::len).to_string(),
            task["exit_code"]
                .as_i64()
                .map_or("-".into(), |c| c.to_string()),
            shell_words(command),
        ]);
    }
    let mut out = table(&rows);
    if let Some(next) = page["next"].as_str() {
        let _ = writeln!(out, "(more: --after {next})");
    }
    out
}

/// The drones as a table.
fn drone_table(drones: &Value) -> String {
    let mut rows = vec![
        [
            "NAME",
            "ADDRESS",
            "SLOTS",
            "USED",
            "MEMORY_MB",
            "CPUS",
            "CONTAINMENT",
            "EXEC",
            "DRAINING",
            "AVAILABLE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for drone in drones.as_array().into_iter().flatten() {
        let field = |name: &str| match &drone[name] {
            Value::String(s) if s.is_empty() => "-".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push(
            [
                "name",
                "address",
                "slots",
                "used",
                "memory_mb",
                "cpus",
                "containment",
                "exec",
                "draining",
                "available",
            ]
            .map(field)
            .to_vec(),
        );
    }
    table(&rows)
}

/// `rows` in columns as wide as their widest cell, two spaces apart; the last column unpadded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                let _ = writeln!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_line_up_and_quote_commands() {
        let page = json!({"tasks": [
            {"id": "a", "state": "succeeded", "attempts": [{}], "exit_code": 0, "command": ["echo", "hi there"]},
            {"id": "bbbb", "state": "pending", "attempts": [], "exit_code": null, "command": ["true"]},
        ], "next": "bbbb"});
        assert_eq!(
            task_table(&page),
            "ID    STATE      ATTEMPTS  EXIT  COMMAND\n\
             a     succeeded  1         0     echo 'hi there'\n\
             bbbb  pending    0         -     true\n\
             (more: --after bbbb)\n"
        );
        assert_eq!(shell_words(["sh", "-c", "it's"]), r"sh -c 'it'\''s'");
    }

    #[test]
    fn the_drone_table_shows_capacity_and_containment() {
        let drones = json!([
            {"name": "drone-0", "address": "127.0.0.1:5001", "slots": 4, "used": 1, "memory_mb": 2048,
             "cpus": 2.0, "containment": "cgroup-hybrid", "exec": true, "draining": false, "available": true},
            {"name": "drone-1", "address": "127.0.0.1:5002", "slots": 0, "used": 0, "memory_mb": 0,
             "cpus": 0.0, "containment": "", "exec": false, "draining": false, "available": true},
        ]);
        assert_eq!(
            drone_table(&drones),
            "NAME     ADDRESS         SLOTS  USED  MEMORY_MB  CPUS  CONTAINMENT    EXEC   DRAINING  AVAILABLE\n\
             drone-0  127.0.0.1:5001  4      1     2048       2.0   cgroup-hybrid  true   false     true\n\
             drone-1  127.0.0.1:5002  0      0     0          0.0   -              false  false     true\n"
        );
    }

    #[test]
    fn a_waited_task_exits_with_its_code() {
        assert_eq!(finish(&json!({"state": "succeeded", "exit_code": 0})), 0);
        assert_eq!(finish(&json!({"state": "failed", "exit_code": 3})), 3);
        assert_eq!(finish(&json!({"state": "failed", "exit_code": 256})), 1);
        assert_eq!(
            finish(&json!({"state": "failed", "exit_code": null, "reason": "timed out"})),
            1
        );
        assert_eq!(finish(&json!({"state": "cancelled", "exit_code": 143})), 1);
    }
}
