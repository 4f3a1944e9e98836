//! The HTTP API: routes each request to the role, and turns JSON in and out. No decisions live here.
//!
//! | endpoint            | role  | body                          | answer                                   |
//! |---------------------|-------|-------------------------------|------------------------------------------|
//! | `GET /healthz`      | both  |                               | status, version, mode (queen: + drones; on etcd: + role, leader, store) |
//! | `POST /do_task`     | drone | `{"text": "hello"}`           | `{"result": "OK"}`                       |
//! | `POST /submit_task` | queen | `{"text": "hello"}`           | `{"result": "OK", "drone": "drone-0"}`   |
//! | `POST /register`    | queen | `{"address": "host:port"}`    | `{"result": "OK", "name", "heartbeat_interval", "lease_interval", "credential"}` |
//! | `POST /lease`       | queen | a drone's status (`/healthz?verbose`'s fields) and `after` | `{"result": "OK", "lease_interval", "renewal"}`; 421 and the leader's address from a queen that does not lead |
//! | `GET /drones`       | queen | `?label=C` (repeatable)       | every drone (meeting the constraints C) with its labels, times and failures; `X-Hive-Revision` |
//! | `GET /metrics`      | both  |                               | Prometheus text (see `metrics.rs`)       |
//! | `POST /tasks`       | queen | `{"command": [...], ...}`     | 202 and the task (200 if its id existed); with `each_drone`, a list |
//! | `GET /tasks`        | queen | `?state=&group=&limit=&after=` | `{"tasks": [...], "next", "revision"}`, newest first |
//! | `GET /tasks/ID`     | queen | `?wait=S`                     | the task (after it ended, or S seconds)  |
//! | `DELETE /tasks/ID`  | queen |                               | the task, cancelled                      |
//! | `POST`/`DELETE /drones/NAME/drain` | queen |                | the drone (by name or address), draining or not |
//! | `POST /reports`     | queen | a drone's attempt ends        | `{"accepted": ["task/n", ...]}`          |
//! | `POST /tasks`       | drone | attempts to start (a queen's) | what became of each                      |
//! | `DELETE /attempts/ID` | drone |                            | the attempt is being stopped             |
//! | `GET /tasks/ID/logs` | queen | `?stream=&attempt=N&offset=B&follow=1` | the attempt's output, text, chunked (relayed) |
//! | `GET /attempts/ID/logs` | drone | `?stream=&offset=B&follow=1` | the attempt's output, text, chunked |
//! | `POST /attempts/forget` | drone | `{"attempts": [...]}` | `{"result": "OK", "removed": N}`: their logs removed |
//! | `GET /events`       | queen | `?after=REV&kind=task,drone`  | every change after REV, a JSON line each, held open (see `queen/events/`) |
//! | `GET /ui`           | queen |                               | the dashboard (see `ui/`)                |
//!
//! The status and mode strings are the tutorial's (`Status.READY`, `Mode.QUEEN`), so tools written
//! for its Python larve read Hive's answers unchanged. Who may call what is decided before a
//! request gets here (the front asks `auth.rs`); handlers see the caller's identity, show the
//! queen's drone list on `/healthz` only to a client with a token (or anyone on an open hive),
//! task `env` values only to scopes above `read`, and log every change a client token makes once
//! (an audit line).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::drone::Drone;
use crate::error::{Error, Result};
use crate::exec::{CONTAINMENT_LEVELS, Stream};
use crate::labels::{self, Constraint, Labels, NAME_LABEL, all_hold};
use crate::logging::quoted;
use crate::metrics::{Exposition, Metrics};
use crate::queen::events::{self, Kinds};
use crate::queen::logs::LogsAsked;
use crate::queen::registry::{Offer, Registration};
use crate::queen::{Created, NotRenewed, Queen};
use crate::server::{
    BodySource, Handler, Held, HeldRoutes, JSON, Pulled, Request, Response, Streamed,
};
use crate::store::StoreHealth;
use crate::tasks::wire::{DroneStatus, Forget, LOG_ATTEMPT_FIELD, Renewal, Reports, StartRequest};
use crate::tasks::{
    MAX_CPUS, MAX_MEMORY_MB, MAX_SLOTS, State, Submission, Summary, Task, millicpus,
    valid_attempt_id, valid_boot, valid_client_id, valid_id,
};
use crate::ui;

/// What a `read` token sees of a task's `env` values.
const REDACTED: &str = "***";

/// Longest page of `GET /tasks`, and the default.
const MAX_PAGE: usize = 1000;
/// (`larve task ls --watch` keeps as many as a list without `--limit` shows.)
pub const DEFAULT_PAGE: usize = 100;

/// The role a larve plays, as the API sees it.
#[derive(Clone)]
pub enum Role {
    Queen(Arc<Queen>),
    Drone(Arc<Drone>),
}

/// The request handler for a larve playing `role` in a hive that is `open` (no cluster token);
/// `/metrics` shows `metrics`.
pub fn handler(role: Role, open: bool, metrics: Arc<Metrics>) -> Arc<Handler> {
    let api = Api {
        role,
        open,
        metrics,
    };
    Arc::new(move |request: &Request| {
        let response = api
            .route(request)
            .unwrap_or_else(|error| Response::error(&error));
        audit(request, response.status);
        response
    })
}

/// The audit line of an accepted change a client token made: who, what, from where, and the
/// answer's status. Never the secret: the identity holds only the token's name.
fn audit(request: &Request, status: u16) {
    let Some((name, scope)) = request.identity.client() else {
        return;
    };
    if matches!(request.method.as_str(), "GET" | "HEAD") || status >= 400 {
        return;
    }
    let from = request
        .peer
        .map_or_else(|| "an unknown peer".to_string(), |peer| peer.to_string());
    info!(
        "audit: {name} ({scope}) {} {} from {from}: {status}",
        request.method,
        quoted(&request.path)
    );
}

/// `{"result": "OK", ...}` in the tutorial's key order, with what the endpoint adds.
#[derive(Serialize)]
struct Ok<T: Serialize> {
    result: &'static str,
    #[serde(flatten)]
    extra: T,
}

fn ok<T: Serialize>(extra: T) -> Response {
    Response::json(
        200,
        &Ok {
            result: "OK",
            extra,
        },
    )
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    mode: &'static str,
    /// Queens sharing etcd: `leader` or `follower`, who leads, and whether etcd answers.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    shared: Option<StoreHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drones: Option<BTreeMap<String, String>>,
    /// A Hive drone asked `?verbose` by a holder of the token: who it is and what it runs (the
    /// leader's probe reads it; a renewal carries the same).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    drone: Option<DroneStatus>,
}

/// A page of `GET /tasks`.
#[derive(Serialize)]
struct Listing<'a> {
    tasks: Vec<Summary<'a>>,
    next: Option<String>,
    /// The revision it reflects: follow `GET /events?after=` it to miss no change since.
    revision: i64,
}

/// The field of `GET /tasks` and `GET /drones` answers saying the revision they reflect.
const REVISION_HEADER: &str = "X-Hive-Revision";

struct Api {
    role: Role,
    /// No cluster token: anyone may do what `admin` may.
    open: bool,
    metrics: Arc<Metrics>,
}

impl Api {
    fn route(&self, request: &Request) -> Result<Response> {
        let segments: Vec<&str> = request.path.split('/').skip(1).collect();
        match segments.as_slice() {
            ["healthz"] => {
                allow(request, "GET")?;
                Ok(Response::json(200, &self.health(request)))
            }
            ["do_task"] => {
                allow(request, "POST")?;
                let Role::Drone(drone) = &self.role else {
                    return Err(Error::BadRequest("In queen mode, not taking tasks".into()));
                };
                let text = string_field(&request.body, "text")?;
                drone.do_task(&text)?;
                Ok(ok(json!({})))
            }
            ["submit_task"] => {
                allow(request, "POST")?;
                let queen = self.queen("In drone mode, not scheduling tasks")?;
                let text = string_field(&request.body, "text")?;
                let drone = queen.submit(&text)?;
                Ok(ok(json!({ "drone": drone })))
            }
            ["register"] => {
                allow(request, "POST")?;
                let queen = self.queen("In drone mode, not taking registration")?;
                let registration = registration(&request.body)?;
                let registered = queen.register(&registration)?;
                let interval = queen.heartbeat_interval_secs();
                // The credential goes to the drone that registered, and nowhere else. A lease
                // interval tells a Hive drone this queen takes renewals (the tutorial's does not).
                Ok(ok(json!({
                    "name": registered.name,
                    "heartbeat_interval": interval,
                    "lease_interval": interval,
                    "credential": registered.credential.secret(),
                })))
            }
            // On a queen the front answers it (see `held`); here for a drone, which takes none.
            ["lease"] => {
                allow(request, "POST")?;
                let queen = self.queen("In drone mode, no leases")?;
                renew(queen, request)
            }
            ["drones"] => {
                allow(request, "GET")?;
                let queen = self.queen("In drone mode, no drone registry")?;
                let query = Query::parse(&request.query)?;
                let wanted = query
                    .all("label")
                    .map(|text| {
                        text.parse::<Constraint>()
                            .map_err(|why| Error::BadRequest(format!("label: {why}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                // Asked before the registry is read, so the answer reflects at least it.
                let revision = queen.revision();
                let mut drones = queen.drones();
                drones.retain(|drone| all_hold(&wanted, &drone.labels));
                Ok(Response::json(200, &drones).with_header(REVISION_HEADER, revision.to_string()))
            }
            ["drones", name, "drain"] => {
                allow(request, "POST, DELETE")?;
                let queen = self.queen("In drone mode, no drone registry")?;
                let drone = queen.drain(name, request.method == "POST")?;
                Ok(Response::json(200, &drone))
            }
            ["metrics"] => {
                allow(request, "GET")?;
                let mut out = Exposition::default();
                self.metrics.render(&mut out);
                if let Role::Queen(queen) = &self.role {
                    queen.render_metrics(&mut out);
                }
                Ok(Response::metrics(out.finish()))
            }
            ["tasks"] => {
                match &self.role {
                    Role::Queen(queen) => {
                        allow(request, "GET, POST")?;
                        if request.method == "POST" {
                            let submission =
                                Submission::parse(&request.body).map_err(Error::BadRequest)?;
                            Ok(match queen.create_task(submission)? {
                                Created::New(task) => Response::json(202, &*task)
                                    .with_header("Location", format!("/tasks/{}", task.id)),
                                Created::Existing(task) => Response::json(200, &*task)
                                    .with_header("Location", format!("/tasks/{}", task.id)),
                                Created::Group { tasks, new } => {
                                    let group = tasks
                                        .first()
                                        .and_then(|task| task.group.clone())
                                        .unwrap_or_default();
                                    let tasks: Vec<Task> = tasks
                                        .iter()
                                        .map(|task| redacted((**task).clone(), request, self.open))
                                        .collect();
                                    Response::json(if new { 202 } else { 200 }, &tasks)
                                        .with_header("Location", format!("/tasks?group={group}"))
                                }
                            })
                        } else {
                            let query = Query::parse(&request.query)?;
                            let state = query
                            .get("state")
                            .map(|name| {
                                State::parse(name).ok_or_else(|| {
                                    Error::BadRequest(format!(
                                        "state: {name:?} is not one of pending, running, succeeded, failed, cancelled"
                                    ))
                                })
                            })
                            .transpose()?;
                            let limit = match query.get("limit") {
                            None => DEFAULT_PAGE,
                            Some(n) => n.parse().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                                Error::BadRequest(format!("limit: {n:?} is not a whole number from 1 to {MAX_PAGE}"))
                            })?,
                        };
                            let group = query
                                .get("group")
                                .map(|group| {
                                    if valid_client_id(group) {
                                        Ok(group)
                                    } else {
                                        Err(Error::BadRequest(format!(
                                            "group: {group:?} is not a group's id ([a-z0-9][a-z0-9-]{{0,62}})"
                                        )))
                                    }
                                })
                                .transpose()?;
                            // Asked before the tasks are read, so the page reflects at least it.
                            let revision = queen.revision();
                            let (tasks, next) =
                                queen.tasks(state, group, limit, query.get("after"))?;
                            let tasks: Vec<Task> = tasks
                                .into_iter()
                                .map(|task| redacted(task, request, self.open))
                                .collect();
                            let tasks = tasks.iter().map(Task::summary).collect();
                            let listing = Listing {
                                tasks,
                                next,
                                revision,
                            };
                            Ok(Response::json(200, &listing)
                                .with_header(REVISION_HEADER, revision.to_string()))
                        }
                    }
                    Role::Drone(drone) => {
                        allow(request, "POST")?;
                        let start: StartRequest =
                            serde_json::from_slice(&request.body).map_err(|e| {
                                Error::BadRequest(format!(
                                    "body is not a list of attempts to start ({e})"
                                ))
                            })?;
                        Ok(Response::json(200, &drone.start(start)?))
                    }
                }
            }
            ["tasks", id] => {
                let queen = self.queen("In drone mode, no tasks: a drone runs attempts")?;
                if !valid_id(id) {
                    return Err(Error::NotFound(format!("task {id:?}")));
                }
                allow(request, "GET, DELETE")?;
                // With `?wait=`, the front holds it: see `held`.
                let task = if request.method == "DELETE" {
                    queen.cancel(id)?
                } else {
                    queen.task(id, None)?
                };
                Ok(Response::json(200, &redacted(task, request, self.open)))
            }
            ["attempts", "forget"] => {
                let Role::Drone(drone) = &self.role else {
                    return Err(Error::NotFound(format!("endpoint {:?}", request.path)));
                };
                allow(request, "POST")?;
                let forget: Forget = serde_json::from_slice(&request.body).map_err(|e| {
                    Error::BadRequest(format!("body is not a list of attempts to forget ({e})"))
                })?;
                Ok(ok(json!({ "removed": drone.forget(&forget)? })))
            }
            ["attempts", id] => {
                let Role::Drone(drone) = &self.role else {
                    return Err(Error::NotFound(format!("endpoint {:?}", request.path)));
                };
                allow(request, "DELETE")?;
                if !valid_attempt_id(id) {
                    return Err(Error::NotFound(format!("attempt {id:?} on this drone")));
                }
                drone.stop(id)?;
                Ok(ok(json!({ "attempt": id })))
            }
            ["reports"] => {
                allow(request, "POST")?;
                let queen = self.queen("In drone mode, not taking reports")?;
                let Identity::Drone { address } = &request.identity else {
                    return Err(Error::Forbidden(
                        "only a drone, by its own credential, reports its attempts".into(),
                    ));
                };
                let reports: Reports = serde_json::from_slice(&request.body).map_err(|e| {
                    Error::BadRequest(format!("body is not a drone's reports ({e})"))
                })?;
                Ok(Response::json(200, &queen.report(address, &reports)?))
            }
            ["events"] => {
                allow(request, "GET")?;
                self.queen("In drone mode, no event stream: it is the queen's")?;
                // A queen's `GET /events` is held, and answered by the front (see `held`).
                Err(Error::Internal("GET /events reached the handler".into()))
            }
            ["ui", file @ ..] => {
                allow(request, "GET")?;
                self.queen("In drone mode, no dashboard: it is the queen's")?;
                ui::page(file)
            }
            _ => Err(Error::NotFound(format!("endpoint {:?}", request.path))),
        }
    }

    fn queen(&self, wrong_mode: &str) -> Result<&Queen> {
        match &self.role {
            Role::Queen(queen) => Ok(queen),
            Role::Drone(_) => Err(Error::BadRequest(wrong_mode.into())),
        }
    }

    /// Liveness for anyone; the queen's drone list only for holders of the token.
    fn health(&self, request: &Request) -> Health {
        let mut shared = None;
        let mut drone_status = None;
        let (ready, mode, drones) = match &self.role {
            Role::Queen(queen) => {
                let drones = request
                    .identity
                    .reads(self.open)
                    .then(|| queen.drone_names());
                shared = queen.store_health();
                (queen.is_ready(), "Mode.QUEEN", drones)
            }
            Role::Drone(drone) => {
                // Only a queen's probes (which show this drone's credential) say she still knows
                // us; on an open hive, the tutorial's queen probes with nothing.
                let from_queen = request.identity == Identity::Queen
                    || (self.open && request.identity == Identity::Anonymous);
                if from_queen {
                    drone.checked();
                    // Only asked for (by a Hive queen's probe), so the tutorial's answer stays
                    // exactly the tutorial's.
                    let verbose = Query::parse(&request.query)
                        .is_ok_and(|query| query.get("verbose").is_some());
                    if verbose {
                        drone_status = Some(drone.status());
                    }
                }
                (drone.is_ready(), "Mode.DRONE", None)
            }
        };
        let status = if ready {
            "Status.READY"
        } else {
            "Status.NOT_READY"
        };
        Health {
            status,
            version: crate::VERSION,
            mode,
            shared,
            drones,
            drone: drone_status,
        }
    }
}

/// `POST /lease` on a queen: a drone renews its lease by its own credential.
fn renew(queen: &Queen, request: &Request) -> Result<Response> {
    let Identity::Drone { address } = &request.identity else {
        return Err(Error::Forbidden(
            "only a drone, by its own credential, renews its lease".into(),
        ));
    };
    let renewal: Renewal = serde_json::from_slice(&request.body)
        .map_err(|e| Error::BadRequest(format!("body is not a lease renewal ({e})")))?;
    match queen.renew(address, &renewal) {
        Ok(answer) => Ok(ok(answer)),
        // 421: this request went to the wrong queen; the leader takes it.
        Err(NotRenewed::Leader(leader)) => Ok(Response::json(
            421,
            &json!({
                "error": format!("this queen does not lead; renew with the leader at {leader}"),
                "leader": leader,
            }),
        )),
        Err(NotRenewed::Error(e)) => Err(e),
    }
}

/// The requests the front holds (see `server::HeldRoutes`) for a larve playing `role` in a hive
/// that is `open` (no cluster token): a queen's `GET /tasks/ID?wait=S`, `GET /tasks/ID/logs` and
/// `GET /events`, a drone's `GET /attempts/ID/logs`; and a queen's `/lease`, which neither waits
/// nor streams but is what a fleet sends most (a drone's renewal every interval), and costs half
/// as much answered on the connection's thread as handed to tiny_http and back.
pub fn held(role: Role, open: bool) -> Arc<dyn HeldRoutes> {
    Arc::new(Waits { role, open })
}

struct Waits {
    role: Role,
    open: bool,
}

impl HeldRoutes for Waits {
    fn holds(&self, method: &str, path: &str, query: &str) -> bool {
        // Asked of every request: the cheap tests first.
        if let Role::Queen(_) = self.role
            && path == "/lease"
        {
            return true;
        }
        if method != "GET" {
            return false;
        }
        match self.role {
            Role::Queen(_) if path == "/events" => true,
            Role::Queen(_) => {
                path.strip_prefix("/tasks/")
                    .is_some_and(|rest| match rest.split_once('/') {
                        Some((_, "logs")) => true,
                        Some(_) => false,
                        None => {
                            !query.is_empty()
                                && Query::parse(query)
                                    .is_ok_and(|query| query.get("wait").is_some())
                        }
                    })
            }
            Role::Drone(_) => path
                .strip_prefix("/attempts/")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(_, tail)| tail == "logs"),
        }
    }

    fn at_once(&self, _method: &str, path: &str) -> bool {
        path == "/lease"
    }

    fn open(&self, request: &Request) -> Held {
        let opened = match &self.role {
            Role::Queen(queen) if request.path == "/lease" => allow(request, "POST")
                .and_then(|()| renew(queen, request))
                .map(Held::Answer),
            Role::Queen(queen) if request.path == "/events" => {
                follow_events(queen, request, self.open)
            }
            Role::Queen(queen) if request.path.ends_with("/logs") => queen_logs(queen, request),
            Role::Queen(queen) => TaskWait::open(queen, request, self.open),
            Role::Drone(drone) => drone_logs(drone, request),
        };
        opened.unwrap_or_else(|error| Held::Answer(Response::error(&error)))
    }
}

/// Content type of an attempt's output: what a task prints is mostly text, and curl shows it.
const LOG_TEXT: &str = "text/plain; charset=utf-8";

/// `GET /tasks/ID/logs?stream=&attempt=N&offset=B&follow=1` on a queen.
fn queen_logs(queen: &Arc<Queen>, request: &Request) -> Result<Held> {
    let id = request
        .path
        .trim_start_matches("/tasks/")
        .trim_end_matches("/logs");
    if !valid_id(id) {
        return Err(Error::NotFound(format!("task {id:?}")));
    }
    let query = Query::parse(&request.query)?;
    let (stream, offset, follow) = log_query(&query)?;
    let attempt = query
        .get("attempt")
        .map(|n| {
            n.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::BadRequest(format!(
                    "attempt: {n:?} is not an attempt's number (1, 2, ...)"
                ))
            })
        })
        .transpose()?;
    let asked = LogsAsked {
        stream,
        attempt,
        offset,
        follow,
    };
    let (head, n, relay) = queen.logs(id, asked)?;
    let mut fields = head.fields();
    fields.push((LOG_ATTEMPT_FIELD, n.to_string()));
    Ok(log_stream(fields, Box::new(relay)))
}

/// `GET /attempts/ID/logs?stream=&offset=B&follow=1` on a drone.
fn drone_logs(drone: &Arc<Drone>, request: &Request) -> Result<Held> {
    let id = request
        .path
        .trim_start_matches("/attempts/")
        .trim_end_matches("/logs");
    let query = Query::parse(&request.query)?;
    let (stream, offset, follow) = log_query(&query)?;
    let (head, body) = drone.logs(id, stream, offset, follow)?;
    Ok(log_stream(head.fields(), Box::new(body)))
}

/// The answer of an attempt's output: its head's `fields` (see `tasks::wire::LogHead`), then its
/// body as it comes.
fn log_stream(fields: Vec<(&'static str, String)>, body: Box<dyn BodySource>) -> Held {
    Held::Stream(Streamed {
        status: 200,
        content_type: LOG_TEXT,
        headers: fields,
        body,
    })
}

/// The parameters both `logs` routes take: `stream` (default stdout), `offset` (default 0),
/// `follow` (`1` or `true`; default not).
fn log_query(query: &Query) -> Result<(Stream, u64, bool)> {
    let stream = match query.get("stream") {
        None => Stream::Stdout,
        Some(name) => Stream::parse(name).ok_or_else(|| {
            Error::NotFound(format!("stream {name:?} (there are stdout and stderr)"))
        })?,
    };
    let offset = match query.get("offset") {
        None => 0,
        Some(b) => b.parse::<u64>().map_err(|_| {
            Error::BadRequest(format!("offset: {b:?} is not a byte offset (0, 1, ...)"))
        })?,
    };
    let follow = match query.get("follow") {
        None | Some("0" | "false") => false,
        Some("" | "1" | "true") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "follow: {other:?} is not 1 or 0"
            )));
        }
    };
    Ok((stream, offset, follow))
}

/// `GET /events?after=REV&kind=K`: every change to a task or a drone after revision REV (none:
/// from now on), a line of JSON each, as it happens (see `queen/events/`); 410 when the changes
/// after REV are no longer held. Task `env` values are redacted for those who may not see them,
/// as everywhere.
fn follow_events(queen: &Queen, request: &Request, open: bool) -> Result<Held> {
    let query = Query::parse(&request.query)?;
    let after = query
        .get("after")
        .map(events::parse_after)
        .transpose()
        .map_err(Error::BadRequest)?;
    let kinds = query
        .get("kind")
        .map(Kinds::parse)
        .transpose()
        .map_err(Error::BadRequest)?
        .unwrap_or(Kinds::ALL);
    if !queen.is_ready() {
        return Err(Error::NotReady(
            "the queen has not read the hive's state yet; try again shortly".into(),
        ));
    }
    let secrets = request.identity.sees_secrets(open);
    Ok(match queen.events().follow(after, kinds, secrets) {
        Ok(follower) => Held::Stream(Streamed {
            status: 200,
            content_type: events::CONTENT_TYPE,
            // Where a stream asked "from now on" starts: a client that breaks before its first
            // line resumes there.
            headers: vec![
                ("Cache-Control", "no-cache".into()),
                (REVISION_HEADER, follower.after().to_string()),
            ],
            body: Box::new(follower),
        }),
        Err(refused) => Held::Answer(Response::json(
            410,
            &refused.body(after.unwrap_or_default()),
        )),
    })
}

/// Longest `?wait=` of `GET /tasks/ID`, in seconds.
const MAX_WAIT_SECS: f64 = crate::queen::MAX_WAIT.as_secs() as f64;

/// `GET /tasks/ID?wait=S`: the task once it has ended, or as it is when S seconds have passed.
struct TaskWait {
    queen: Arc<Queen>,
    id: String,
    until: Instant,
    /// The task as last seen (sent as it is, should it be deleted meanwhile).
    task: Task,
    sent: bool,
    /// The caller's request, to show the task as it may see it.
    request: Request,
    open: bool,
}

impl TaskWait {
    /// The answer at once when the task has ended (or is unknown, or the wait is malformed), else
    /// a wait for it.
    fn open(queen: &Arc<Queen>, request: &Request, open: bool) -> Result<Held> {
        let id = request.path.trim_start_matches("/tasks/");
        if !valid_id(id) {
            return Err(Error::NotFound(format!("task {id:?}")));
        }
        let query = Query::parse(&request.query)?;
        let wait = query.get("wait").unwrap_or_default();
        let wait = wait
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..=MAX_WAIT_SECS).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "wait: {wait:?} is not a number of seconds from 0 to {MAX_WAIT_SECS}"
                ))
            })?;
        let task = queen.task(id, None)?;
        if task.state.is_terminal() || wait.is_zero() {
            return Ok(Held::Answer(Response::json(
                200,
                &redacted(task, request, open),
            )));
        }
        Ok(Held::Stream(Streamed {
            status: 200,
            content_type: JSON,
            headers: Vec::new(),
            body: Box::new(TaskWait {
                queen: queen.clone(),
                id: id.to_string(),
                until: Instant::now() + wait,
                task,
                sent: false,
                request: request.clone(),
                open,
            }),
        }))
    }
}

impl BodySource for TaskWait {
    fn next(&mut self, wait: Duration) -> Pulled {
        if self.sent {
            return Pulled::End;
        }
        let left = self.until.saturating_duration_since(Instant::now());
        if let Ok(task) = self.queen.task(&self.id, Some(wait.min(left))) {
            self.task = task;
        }
        if !self.task.state.is_terminal() && Instant::now() < self.until {
            return Pulled::Idle;
        }
        self.sent = true;
        let task = redacted(self.task.clone(), &self.request, self.open);
        Pulled::Data(Response::json(200, &task).body)
    }
}

/// `task` as the caller of `request` may see it in a hive that is `open` or not: a `read` token
/// sees `***` for every `env` value (they may hold a task's secrets); whoever may submit tasks
/// sees them as they are.
fn redacted(mut task: Task, request: &Request, open: bool) -> Task {
    if !request.identity.sees_secrets(open) {
        for value in task.spec.env.values_mut() {
            *value = REDACTED.into();
        }
    }
    task
}

/// Refuses a method not among `methods` (`"GET"`, or `"GET, POST"`: the `Allow` header's value).
fn allow(request: &Request, methods: &'static str) -> Result<()> {
    if methods.split(", ").any(|method| method == request.method) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed(methods))
    }
}

/// A request's query string, as `name=value` pairs (percent-escapes decoded).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Result<Query> {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((unescape(name)?, unescape(value)?))
            })
            .collect::<Result<_>>()?;
        Ok(Query(pairs))
    }

    /// The values of every `name=...`, in order.
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value of the last `name=...`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `text` with `%XX` escapes and `+` decoded.
fn unescape(text: &str) -> Result<String> {
    let bad = || Error::BadRequest(format!("the query {text:?} is not escaped properly"));
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(b) = rest.next() {
        match b {
            b'%' => {
                let hex = [rest.next().ok_or_else(bad)?, rest.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// A `/register` body: the tutorial's `{"address": ...}`, and what a Hive drone adds of itself.
fn registration(body: &[u8]) -> Result<Registration> {
    let address = string_field(body, "address")?;
    let fields: Value = serde_json::from_slice(body).unwrap_or_default();
    let boot = match fields.get("boot") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(boot)) if valid_boot(boot) => boot.clone(),
        Some(_) => {
            return Err(Error::BadRequest(
                "field \"boot\" must be up to 32 lowercase hex digits".into(),
            ));
        }
    };
    let exec = match fields.get("exec") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(exec)) => *exec,
        Some(_) => {
            return Err(Error::BadRequest(
                "field \"exec\" must be true or false".into(),
            ));
        }
    };
    let slots = match fields.get("slots") {
        None | Some(Value::Null) => 0,
        Some(n) => n
            .as_u64()
            .filter(|n| *n <= u64::from(MAX_SLOTS))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "field \"slots\" must be a whole number from 0 to {MAX_SLOTS}"
                ))
            })? as u32,
    };
    let renews = match fields.get("renews") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(renews)) => *renews,
        Some(_) => {
            return Err(Error::BadRequest(
                "field \"renews\" must be true or false".into(),
            ));
        }
    };
    Ok(Registration {
        address,
        boot,
        exec,
        slots,
        offer: offer(&fields)?,
        renews,
        labels: drone_labels(&fields)?,
    })
}

/// What a Hive drone says it is: `"labels": {"zone": "eu", "hive.os": "linux", ...}`, each key
/// and value in the labels' alphabet; `hive.name` is the queen's to give.
fn drone_labels(fields: &Value) -> Result<Labels> {
    let bad = |why: String| Error::BadRequest(format!("field \"labels\": {why}"));
    let labels: Labels = match fields.get("labels") {
        None | Some(Value::Null) => Labels::new(),
        Some(Value::Object(pairs)) => pairs
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                _ => Err(bad(format!("the value of {key:?} is not a string"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("not an object like {\"zone\": \"eu\"}".into())),
    };
    labels::check(&labels).map_err(bad)?;
    if labels.contains_key(NAME_LABEL) {
        return Err(bad(format!(
            "{NAME_LABEL} is the drone's name, which the queen gives"
        )));
    }
    Ok(labels)
}

/// What a Hive drone that runs commands adds to its registration: its memory and cpus, and how it
/// contains its attempts. Each is optional; a drone that does not say offers none.
fn offer(fields: &Value) -> Result<Offer> {
    let memory_mb = match fields.get("memory_mb") {
        None | Some(Value::Null) => 0,
        Some(n) => n.as_u64().filter(|n| *n <= MAX_MEMORY_MB).ok_or_else(|| {
            Error::BadRequest(format!(
                "field \"memory_mb\" must be a whole number of MiB from 0 to {MAX_MEMORY_MB}"
            ))
        })?,
    };
    let cpus = match fields.get("cpus") {
        None | Some(Value::Null) => 0.0,
        Some(n) => n
            .as_f64()
            .filter(|n| n.is_finite() && (0.0..=MAX_CPUS).contains(n))
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "field \"cpus\" must be a number of cores from 0 to {MAX_CPUS}"
                ))
            })?,
    };
    let containment = match fields.get("containment") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(level)) if CONTAINMENT_LEVELS.contains(&level.as_str()) => level.clone(),
        Some(_) => {
            return Err(Error::BadRequest(format!(
                "field \"containment\" must be one of {}",
                CONTAINMENT_LEVELS.join(", ")
            )));
        }
    };
    Ok(Offer {
        memory_mb,
        millicpus: millicpus(cpus),
        containment,
    })
}

/// The non-empty string `field` of a JSON object body.
fn string_field(body: &[u8], field: &str) -> Result<String> {
    let example = format!("a JSON object like {{\"{field}\": \"...\"}}");
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON ({e}); send {example}")))?;
    let Value::Object(mut object) = value else {
        return Err(Error::BadRequest(format!("body must be {example}")));
    };
    match object.remove(field) {
        None => Err(Error::BadRequest(format!(
            "missing field {field:?}; send {example}"
        ))),
        Some(Value::String(s)) if s.is_empty() => Err(Error::BadRequest(format!(
            "field {field:?} must not be empty"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::BadRequest(format!(
            "field {field:?} must be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueenConfig, StoreConfig};

    fn request(method: &str, path: &str, body: &str) -> Request {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            identity: Identity::Anonymous,
            peer: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn answer(role: &Role, method: &str, path: &str, body: &str) -> (u16, Value) {
        let response = handler(role.clone(), true, Arc::default())(&request(method, path, body));
        (
            response.status,
            serde_json::from_slice(&response.body).expect("JSON body"),
        )
    }

    fn queen() -> Role {
        let config = QueenConfig {
            heartbeat: Default::default(),
            task_timeout: std::time::Duration::from_secs(1),
            advertise: None,
            store: StoreConfig::Memory,
            clients: Default::default(),
            tasks: Default::default(),
        };
        Role::Queen(Arc::new(
            crate::larve::build_queen(config, Default::default(), Arc::default())
                .expect("a queen in memory"),
        ))
    }

    #[test]
    fn string_field_explains_every_mistake() {
        for (body, needle) in [
            ("", "not valid JSON"),
            ("{\"text\": ", "not valid JSON"),
            ("[\"text\"]", "must be a JSON object"),
            ("\"text\"", "must be a JSON object"),
            ("{}", "missing field"),
            ("{\"text\": \"\"}", "must not be empty"),
            ("{\"text\": 5}", "must be a string"),
            ("{\"text\": null}", "must be a string"),
            (
                &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                "not valid JSON",
            ),
        ] {
            let err = string_field(body.as_bytes(), "text").unwrap_err();
            assert!(err.to_string().contains(needle), "{body:?}: {err}");
            assert_eq!(err.status(), 400);
        }
        assert_eq!(
            string_field(b"{\"text\": \"hi\", \"x\": 1}", "text").unwrap(),
            "hi"
        );
    }

    #[test]
    fn routes_answer_with_the_right_status() {
        let queen = queen();
        let drone = Role::Drone(Arc::new(Drone::new(None)));
        assert_eq!(answer(&queen, "GET", "/nope", "").0, 404);
        assert_eq!(answer(&queen, "POST", "/healthz", "").0, 405);
        assert_eq!(answer(&queen, "GET", "/submit_task", "").0, 405);
        let (status, body) = answer(&queen, "POST", "/do_task", "{\"text\": \"hi\"}");
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("In queen mode, not taking tasks"))
        );
        let (status, body) = answer(&drone, "POST", "/submit_task", "{\"text\": \"hi\"}");
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("In drone mode, not scheduling tasks"))
        );
        assert_eq!(
            answer(&drone, "POST", "/register", "{\"address\": \"a:1\"}").0,
            400
        );
        assert_eq!(answer(&drone, "GET", "/drones", "").0, 400);
        assert_eq!(
            answer(&queen, "POST", "/submit_task", "{\"text\": \"hi\"}").0,
            503
        );
    }

    #[test]
    fn a_405_names_the_allowed_method() {
        let response = handler(queen(), true, Arc::default())(&request("DELETE", "/register", ""));
        assert_eq!(response.status, 405);
        assert_eq!(response.headers, [("Allow", "POST".to_string())]);
    }

    #[test]
    fn register_refuses_addresses_that_would_steer_urls_and_changes_nothing() {
        let queen = queen();
        for address in [
            "evil.example/x#",
            "http://127.0.0.1:80",
            "127.0.0.1:80/admin?",
        ] {
            let body = json!({ "address": address }).to_string();
            assert_eq!(
                answer(&queen, "POST", "/register", &body).0,
                400,
                "{address}"
            );
        }
        let (_, drones) = answer(&queen, "GET", "/drones", "");
        assert_eq!(drones, json!([]));
    }

    #[test]
    fn long_polls_logs_and_renewals_are_held_and_nothing_else() {
        let queens = held(queen(), true);
        assert!(queens.holds("POST", "/lease", ""));
        assert!(queens.at_once("POST", "/lease"));
        assert!(!queens.at_once("GET", "/events"));
        assert!(queens.holds("GET", "/tasks/a", "wait=5"));
        assert!(queens.holds("GET", "/tasks/a", "x=1&w%61it=5"));
        assert!(queens.holds("GET", "/tasks/a/logs", ""));
        assert!(queens.holds("GET", "/tasks/a/logs", "follow=1"));
        for (method, path, query) in [
            ("GET", "/tasks/a", ""),
            ("GET", "/tasks/a", "waiting=5"),
            ("GET", "/tasks", "wait=5"),
            ("GET", "/tasks/a/b", "wait=5"),
            ("DELETE", "/tasks/a", "wait=5"),
        ] {
            assert!(
                !queens.holds(method, path, query),
                "{method} {path}?{query}"
            );
        }
        assert!(!queens.holds("DELETE", "/tasks/a/logs", ""));
        assert!(!queens.holds("GET", "/attempts/a/logs", ""));
        let drone = held(Role::Drone(Arc::new(Drone::new(None))), true);
        assert!(!drone.holds("GET", "/tasks/a", "wait=5"));
        assert!(!drone.holds("GET", "/tasks/a/logs", ""));
        assert!(drone.holds("GET", "/attempts/a/logs", "stream=stderr"));
        assert!(!drone.holds("GET", "/attempts/a", ""));
        assert!(!drone.holds("POST", "/attempts/a/logs", ""));
        assert!(!drone.holds("POST", "/lease", ""));
    }

    #[test]
    fn a_held_renewal_is_answered_as_the_route_answers_it() {
        let role = queen();
        let queens = held(role.clone(), true);
        let renewal = r#"{"boot": "", "slots": 0, "used": 0, "running": [], "ended": []}"#;
        let mut from_drone = request("POST", "/lease", renewal);
        from_drone.identity = Identity::Drone {
            address: "127.0.0.1:9".into(),
        };
        let cases = [
            (request("GET", "/lease", ""), 405),
            (request("POST", "/lease", renewal), 403),
            // This queen was never started, so she leads nothing and takes no renewal.
            (from_drone, 503),
        ];
        for (request, status) in cases {
            let Held::Answer(response) = queens.open(&request) else {
                panic!("a renewal is answered at once");
            };
            assert_eq!(
                response.status, status,
                "{} {:?}",
                request.method, request.identity
            );
            let routed = handler(role.clone(), true, Arc::default())(&request);
            assert_eq!(
                (routed.status, routed.body),
                (response.status, response.body)
            );
        }
    }

    #[test]
    fn healthz_speaks_the_tutorials_strings() {
        let (status, body) = answer(&queen(), "GET", "/healthz", "");
        assert_eq!(status, 200);
        assert_eq!(body["mode"], "Mode.QUEEN");
        assert_eq!(body["status"], "Status.NOT_READY");
        assert_eq!(body["drones"], json!({}));
        let (_, body) = answer(
            &Role::Drone(Arc::new(Drone::new(None))),
            "GET",
            "/healthz",
            "",
        );
        assert_eq!(body["mode"], "Mode.DRONE");
        assert!(body.get("drones").is_none());
    }
}
