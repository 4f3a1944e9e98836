//! The command-line client of a queen's API: `larve task ...`, `larve drone ...` and `larve
//! events`, in the same binary, as `nomad` and `etcdctl` are. `cli/` reads the command into a
//! [`Request`]; this asks, and prints the answer as `cli::output` writes it.
//!
//! It speaks the HTTP API a user would with curl (see `api.rs`): one call per command, to the first
//! queen of `--queen-host` that answers (a queen that cannot be reached, or answers 503, is left
//! for the next). `task logs` and `task run --wait` follow output as it comes (see [`output`]);
//! `--wait` exits with the task's exit code, so a script can use it like the command itself.
//! `larve events` and `ls --watch` follow `GET /events` across broken connections and queens (see
//! [`events`] and [`watch`]).

mod events;
mod output;
mod watch;

use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::cli::output::{drone_table, task_summary, task_table};
use crate::cli::{Output, Request, Target};
use crate::client::{Client, Reply, Streaming};
use crate::clock::now;

/// Limit for a call that does not wait: a queen answers at once, or a cancel within seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a command did not do what was asked.
#[derive(Debug)]
enum Failure {
    /// A queen answered with an error: what she said.
    Refused { status: u16, error: String },
    /// No queen could be reached.
    Unreachable(String),
    /// What a queen sent could not be printed (stdout closed).
    Write(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { status, error } => write!(f, "the queen answered {status}: {error}"),
            Failure::Unreachable(why) => write!(f, "{why}"),
            Failure::Write(e) => write!(f, "could not print the output: {e}"),
        }
    }
}

/// Runs `request` against `target`; returns the process's exit status: 0 when done, the task's
/// exit code for `task run --wait`, 1 when something failed (said on stderr).
pub fn run(target: &Target, request: &Request) -> u8 {
    // A connection for each stream `task run --wait` follows, and one to watch the task.
    let client = Client::new(3, 3, target.credentials.clone());
    let session = Session {
        client,
        target: target.clone(),
    };
    match session.execute(request) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("larve: {failure}");
            1
        }
    }
}

/// What asks the queens: cheap to clone, for the threads that follow a task's streams.
#[derive(Clone)]
struct Session {
    client: Client,
    target: Target,
}

impl Session {
    fn execute(&self, request: &Request) -> Result<u8, Failure> {
        match request {
            Request::Run { task, wait } => {
                let created = self.call("POST", "/tasks", Some(task), CALL_TIMEOUT)?;
                if let Some(group) = created.as_array() {
                    // each_drone: one task per drone.
                    for task in group {
                        println!("{}", task["id"].as_str().unwrap_or_default());
                    }
                    return Ok(0);
                }
                let id = created["id"].as_str().unwrap_or_default().to_string();
                match wait {
                    None => {
                        println!("{id}");
                        Ok(0)
                    }
                    Some(wait) => {
                        eprintln!("larve: task {id} created; waiting for it to end");
                        self.wait(&id, *wait)
                    }
                }
            }
            Request::Logs {
                id,
                stream,
                attempt,
                follow,
            } => {
                let mut out = std::io::stdout().lock();
                self.copy_stream(id, *stream, *attempt, *follow, &mut out)?;
                Ok(0)
            }
            Request::Get { id, output } => {
                let task = self.call("GET", &format!("/tasks/{id}"), None, CALL_TIMEOUT)?;
                match output {
                    Output::Json => print_json(&task),
                    Output::Text => print!("{}", task_summary(&task, now())),
                }
                Ok(0)
            }
            Request::List {
                state,
                group,
                limit,
                after,
                output,
                watch,
            } => {
                let mut query = Vec::new();
                if let Some(state) = state {
                    query.push(format!("state={state}"));
                }
                if let Some(group) = group {
                    query.push(format!("group={group}"));
                }
                if let Some(limit) = limit {
                    query.push(format!("limit={limit}"));
                }
                if let Some(after) = after {
                    query.push(format!("after={after}"));
                }
                let path = format!("/tasks?{}", query.join("&"));
                if *watch {
                    let filter = watch::TaskFilter {
                        state: state.as_deref(),
                        group: group.as_deref(),
                        limit: limit.unwrap_or(crate::api::DEFAULT_PAGE),
                        path,
                    };
                    return watch::tasks(self, &filter);
                }
                let page = self.call("GET", &path, None, CALL_TIMEOUT)?;
                match output {
                    Output::Json => print_json(&page),
                    Output::Text => print!("{}", task_table(&page, now())),
                }
                Ok(0)
            }
            Request::Cancel { id } => {
                let task = self.call("DELETE", &format!("/tasks/{id}"), None, CALL_TIMEOUT)?;
                let state = task["state"].as_str().unwrap_or("?");
                println!("task {id}: {state}");
                Ok(0)
            }
            Request::Drones {
                labels,
                output,
                watch,
            } => {
                let query: Vec<String> = labels.iter().map(|c| format!("label={c}")).collect();
                let path = format!("/drones?{}", query.join("&"));
                if *watch {
                    return watch::drones(self, &path);
                }
                let drones = self.call("GET", &path, None, CALL_TIMEOUT)?;
                match output {
                    Output::Json => print_json(&drones),
                    Output::Text => print!("{}", drone_table(&drones)),
                }
                Ok(0)
            }
            Request::Drain { drone, undo } => {
                let method = if *undo { "DELETE" } else { "POST" };
                let path = format!("/drones/{drone}/drain");
                let shown = self.call(method, &path, None, CALL_TIMEOUT)?;
                let name = shown["name"].as_str().unwrap_or(drone);
                if *undo {
                    println!("{name} takes placements again");
                } else {
                    println!("{name} drains: no new placements on it; its running tasks finish");
                }
                Ok(0)
            }
            Request::Events { after, kinds } => {
                let kinds = kinds.as_deref().unwrap_or("task,drone");
                let mut follow =
                    events::Follow::new(&self.client, &self.target.queens, kinds, *after);
                let mut out = std::io::stdout().lock();
                loop {
                    let written = match follow.next()? {
                        events::Got::Change(line, _) => out.write_all(line.as_bytes()),
                        events::Got::Quiet => out.flush(),
                        events::Got::ListAgain(why) => {
                            return Err(Failure::Refused {
                                status: 410,
                                error: why,
                            });
                        }
                    };
                    if written.is_err() {
                        // Whoever read the output is gone (a closed pipe): so is the point.
                        return Ok(0);
                    }
                }
            }
        }
    }

    /// `GET path` for an answer that streams, of the first queen that answers with anything but
    /// a 503: the answer, whatever its status. Each read of its body waits `read_timeout` at most.
    fn stream(&self, path: &str, read_timeout: Duration) -> Result<Streaming, Failure> {
        let mut failures = Vec::new();
        for queen in &self.target.queens {
            match self
                .client
                .get_stream(queen, path, (CALL_TIMEOUT, read_timeout))
            {
                Ok(answer) if answer.status == 503 => {
                    failures.push(format!("{queen}: {}", answer.said()));
                }
                Ok(answer) => return Ok(answer),
                Err(e) => failures.push(self.failed(queen, &e.to_string())),
            }
        }
        Err(unreachable(&failures))
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
                Err(e) => failures.push(self.failed(queen, &e.to_string())),
            }
        }
        Err(unreachable(&failures))
    }

    /// What a call to `queen` that failed with `error` says, with a hint when TLS is why.
    fn failed(&self, queen: &str, error: &str) -> String {
        match tls_hint(error, self.target.credentials.tls.is_some()) {
            Some(hint) => format!("{queen}: {error}; {hint}"),
            None => format!("{queen}: {error}"),
        }
    }
}

/// No queen answered: each one's `failures`.
fn unreachable(failures: &[String]) -> Failure {
    Failure::Unreachable(format!(
        "no queen answered ({}); is the hive up, and is --queen-host (or HIVE_QUEEN) right?",
        failures.join("; ")
    ))
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

/// The exit status for an ended task, whose output was printed as it came: the task's exit code,
/// or 1 when it has none (it could not start, was killed, was cancelled; said on stderr).
fn finish(task: &Value) -> u8 {
    let text = |field: &str| task[field].as_str().unwrap_or_default().to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
