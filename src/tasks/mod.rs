//! Tasks that do real work: a command to run on a drone, with an identity and a lifecycle.
//!
//! ```text
//!              place                 attempt ends: succeeded
//!   pending ───────────► running ──────────────────────────────► succeeded
//!      ▲                  │  │ attempt failed, timed out or lost:
//!      │   retries left   │  │   no retries left ──────────────► failed
//!      └──────────────────┘  │ cancelled (DELETE) ─────────────► cancelled
//!   pending ── cancel ───────────────────────────────────────────► cancelled
//! ```
//!
//! - [`Spec`]: what the user asked for, checked field by field ([`Spec::parse`]).
//! - [`Task`] and [`Attempt`]: what the store holds and `GET /tasks/ID` shows.
//! - [`lifecycle`]: the one pure state machine every change goes through (no I/O in it).
//! - [`placement`]: the scheduler's pure choice of drones.
//! - [`index`]: a queen's view of every task, kept from the store, with the indexes the API and the
//!   scheduler read.
//! - [`wire`]: what queens and drones send each other about attempts.

pub mod index;
pub mod lifecycle;
pub mod placement;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::labels::{Constraint, MAX_CONSTRAINTS};

/// Longest command, in arguments; a body is at most 64 KiB anyway.
const MAX_COMMAND_ARGS: usize = 4096;

/// Bounds of a spec's numbers, as the API documents them.
pub const MAX_SLOTS: u32 = 1024;
pub const MAX_TIMEOUT_SECS: f64 = 86_400.0;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_RETRY_DELAY_SECS: f64 = 86_400.0;

/// Longest wait between a failed attempt and the next: the exponential backoff stops here.
pub const MAX_BACKOFF_SECS: f64 = 60.0;

/// Bounds of a spec's `resources`: below 4 MB no program starts; the highest values are far past
/// any machine, so a typo cannot overflow what the kernel is given.
pub const MIN_MEMORY_MB: u64 = 4;
pub const MAX_MEMORY_MB: u64 = 1 << 30;
/// A cgroup's cpu quota is at least 1 ms per 100 ms period.
pub const MIN_CPUS: f64 = 0.01;
pub const MAX_CPUS: f64 = 4096.0;
/// The kernel's highest `pid_max`.
pub const MAX_PIDS: u32 = 4_194_304;

/// How many processes an attempt may hold at once when its task does not say: enough for any
/// build, few enough that a fork loop stops long before the machine's table fills.
pub const DEFAULT_PIDS: u32 = 4096;

/// How long a stopped attempt's processes get between SIGTERM and SIGKILL, unless the task says,
/// and the longest a task may ask for.
pub const DEFAULT_KILL_TIMEOUT_SECS: f64 = 5.0;
pub const MAX_KILL_TIMEOUT_SECS: f64 = 300.0;

/// What a user asks to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The program and its arguments, run without a shell.
    pub command: Vec<String>,
    /// How much of a drone's capacity it takes while it runs.
    pub slots: u32,
    /// Longest an attempt may run before it is stopped.
    pub timeout_s: f64,
    /// Further attempts after a failed, timed-out or lost one.
    pub retries: u32,
    /// Pause before the second attempt; it doubles with each attempt after (at most 60 s).
    pub retry_delay_s: f64,
    /// The command's environment beyond what the drone gives every command (see `exec/env.rs`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What an attempt may use, enforced in its cgroup, and what placement counts on a drone.
    #[serde(default)]
    pub resources: Resources,
    /// Seconds between the SIGTERM that stops an attempt (cancelled, timed out) and the SIGKILL.
    #[serde(default = "default_kill_timeout")]
    pub kill_timeout_s: f64,
    /// What a drone must be to run it: every one holds on the drone's labels (see `labels.rs`).
    /// A task of a group made with `each_drone` ends with the one that names its drone.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

/// What one attempt of a task may use. Memory and cpus are also what the scheduler counts
/// against a drone's capacity; `None` asks for no limit and counts nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Most memory its processes hold together, in MiB, swap included (there is none to use).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Most CPU time it gets, in cores: 0.25 is 25 ms in every 100 ms.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Most processes (and threads) it holds at once.
    #[serde(default = "default_pids")]
    pub pids: u32,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            memory_mb: None,
            cpus: None,
            pids: DEFAULT_PIDS,
        }
    }
}

impl Resources {
    /// The cpus asked for in thousandths of a core (0 when none), the unit placement adds up in,
    /// so that sums of fractions never drift.
    pub fn millicpus(&self) -> u32 {
        self.cpus.map_or(0, millicpus)
    }
}

/// `cpus` in thousandths of a core, rounded up so that a request is never counted smaller.
pub fn millicpus(cpus: f64) -> u32 {
    (cpus * 1000.0).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

fn default_pids() -> u32 {
    DEFAULT_PIDS
}

fn default_kill_timeout() -> f64 {
    DEFAULT_KILL_TIMEOUT_SECS
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [State; 5] = [
        State::Pending,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
    ];

    /// Whether nothing more will happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, as `?state=` gives it.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Its place in [`State::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Running,
    Succeeded,
    /// Exit code ≠ 0, killed by a signal, or could not start.
    Failed,
    TimedOut,
    /// Its drone was removed or restarted, or no longer knows it.
    Lost,
    Cancelled,
    /// The kernel killed it for going over its `memory_mb`.
    OomKilled,
}

impl AttemptState {
    /// Every state an attempt ends in, in the order `/metrics` lists them.
    pub const ENDED: [AttemptState; 6] = [
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::TimedOut,
        AttemptState::OomKilled,
        AttemptState::Cancelled,
        AttemptState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::TimedOut => "timed_out",
            AttemptState::Lost => "lost",
            AttemptState::Cancelled => "cancelled",
            AttemptState::OomKilled => "oom_killed",
        }
    }
}

/// One try at running a task, on one drone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unique for all time, and not derived from the task: drones know an attempt, and report
    /// it, only by this, so a queen that restarted or a task id used again can never take another
    /// run's end for this one's.
    #[serde(default)]
    pub id: String,
    /// 1-based.
    pub n: u32,
    /// The drone's name and address when it was placed.
    pub drone: String,
    pub address: String,
    /// The drone process's boot id: a drone that restarts has a new one, and has forgotten this.
    #[serde(default)]
    pub boot: String,
    pub state: AttemptState,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub exit_code: Option<i32>,
    /// The signal that killed its command, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// The most memory its processes held at once, in bytes, where its drone measures it (in a
    /// cgroup with the memory controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub reason: Option<String>,
    /// What its drone reported after the attempt had been replaced (lost, then placed again):
    /// recorded, and it changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_report: Option<wire::Ended>,
}

/// A task: its spec, where it stands, and every attempt so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// The group it was made in by one `each_drone` create (the group's id), or null.
    #[serde(default)]
    pub group: Option<String>,
    pub state: State,
    /// Why a task failed or was cancelled, or why it waits to be retried. `GET` fills it in for a
    /// pending task from what the queen knows then (see `queen/mod.rs`).
    pub reason: Option<String>,
    #[serde(flatten)]
    pub spec: Spec,
    pub created_at: f64,
    pub updated_at: f64,
    /// A pending task is not placed before this Unix time (its retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<f64>,
    /// A cancel was asked for while it ran; it ends `cancelled` when its drone has stopped it.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The exit code of the last attempt that had one, or null.
    pub exit_code: Option<i32>,
    /// The last 64 KiB of each stream of the last attempt that ran.
    pub stdout: String,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_truncated: bool,
    pub attempts: Vec<Attempt>,
}

/// A task in a listing: everything but its output (`GET /tasks/ID` has that), so a page of a
/// thousand tasks stays small.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub id: &'a str,
    pub group: Option<&'a str>,
    pub state: State,
    pub reason: Option<&'a str>,
    #[serde(flatten)]
    pub spec: &'a Spec,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<f64>,
    pub cancel_requested: bool,
    pub exit_code: Option<i32>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub attempts: &'a [Attempt],
}

impl Spec {
    /// What an attempt of it takes on its drone, as placement counts it.
    pub fn want(&self) -> placement::Want {
        placement::Want {
            slots: self.slots,
            memory_mb: self.resources.memory_mb.unwrap_or(0),
            millicpus: self.resources.millicpus(),
        }
    }

    /// The command as a shell would read it back: arguments quoted where they need it.
    pub fn command_line(&self) -> String {
        shell_words(self.command.iter().map(String::as_str))
    }
}

/// `words` as a shell would read them back: each quoted where it needs it.
pub fn shell_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                word.to_string()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Task {
    /// This task as a listing shows it.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            id: &self.id,
            group: self.group.as_deref(),
            state: self.state,
            reason: self.reason.as_deref(),
            spec: &self.spec,
            created_at: self.created_at,
            updated_at: self.updated_at,
            not_before: self.not_before,
            cancel_requested: self.cancel_requested,
            exit_code: self.exit_code,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            attempts: &self.attempts,
        }
    }

    /// A new pending task.
    pub fn new(id: String, spec: Spec, now: f64) -> Task {
        Task {
            id,
            group: None,
            state: State::Pending,
            reason: None,
            spec,
            created_at: now,
            updated_at: now,
            not_before: None,
            cancel_requested: false,
            exit_code: None,
            stdout: String::new(),
            stdout_truncated: false,
            stderr: String::new(),
            stderr_truncated: false,
            attempts: Vec::new(),
        }
    }

    /// The attempt that runs now, if one does.
    pub fn running_attempt(&self) -> Option<&Attempt> {
        self.attempts
            .last()
            .filter(|attempt| attempt.state == AttemptState::Running)
    }

    /// The attempt with id `id`, if it is this task's.
    pub fn attempt(&self, id: &str) -> Option<&Attempt> {
        self.attempts.iter().find(|attempt| attempt.id == id)
    }
}

/// Whether `id` is a task id a client may choose, and a group's id: `[a-z0-9][a-z0-9-]{0,62}`,
/// as Kubernetes names are, so it is safe in keys, paths, file names and log lines.
pub fn valid_client_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `id` is a task id: a client's ([`valid_client_id`]), or a group's task, `GROUP.DRONE`
/// ([`member_id`]). The one dot only ever stands before a drone's name (`drone-N`), so no id is
/// `.` or `..` or holds a `/`, and what was safe in keys, paths, file names and log lines still is.
pub fn valid_id(id: &str) -> bool {
    match id.split_once('.') {
        None => valid_client_id(id),
        Some((group, drone)) => valid_client_id(group) && is_drone_name(drone),
    }
}

/// Whether `name` is a drone's name as a queen gives it: `drone-N`.
pub fn is_drone_name(name: &str) -> bool {
    name.strip_prefix("drone-")
        .is_some_and(|n| (1..=20).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The id of group `group`'s task on the drone named `drone`: `restart-agent.drone-3`.
pub fn member_id(group: &str, drone: &str) -> String {
    format!("{group}.{drone}")
}

/// A new task id: 20 random characters of the id alphabet (about 100 bits), so ids made by
/// different queens at once do not collide (a create also checks the key is absent).
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..20)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Whether `boot` is a drone's boot id: empty (a drone that does not say) or up to 32 lowercase
/// hex digits.
pub fn valid_boot(boot: &str) -> bool {
    boot.len() <= 32
        && boot
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new boot id for a drone process.
pub fn new_boot() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A new attempt id: 128 random bits as 32 hex digits. It is a name, not a secret: knowing one
/// lets nobody report or stop it (that takes the drone's credential).
pub fn new_attempt_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// Whether `id` is an attempt id: 32 lowercase hex digits (safe in paths, keys and log lines).
pub fn valid_attempt_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A request to create a task: its spec, and the id the client chose, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub id: Option<String>,
    pub spec: Spec,
    /// `each_drone`: one task per drone that meets the constraints now, as one group whose id is
    /// `id` (see `Queen::create_task`).
    pub each_drone: bool,
}

impl Submission {
    /// Reads a `POST /tasks` body. Every mistake names its field; unknown fields are mistakes too
    /// (a typo like `"retires"` must not be ignored).
    pub fn parse(body: &[u8]) -> Result<Submission, String> {
        let example = r#"a JSON object like {"command": ["sh", "-c", "echo hi"]}"#;
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("body is not valid JSON ({e}); send {example}"))?;
        let Value::Object(mut fields) = value else {
            return Err(format!("body must be {example}"));
        };
        let command = match fields.remove("command") {
            None => return Err(format!("missing field \"command\"; send {example}")),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err("field \"command\" must not be empty: give the program to run".into());
            }
            Some(Value::Array(items)) if items.len() > MAX_COMMAND_ARGS => {
                return Err(format!(
                    "field \"command\" has more than {MAX_COMMAND_ARGS} arguments"
                ));
            }
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if s.contains('\0') => Err(format!(
                        "field \"command\": argument {i} holds a NUL character"
                    )),
                    Value::String(s) if i == 0 && s.is_empty() => {
                        Err("field \"command\": the program (argument 0) must not be empty".into())
                    }
                    Value::String(s) => Ok(s),
                    _ => Err(format!(
                        "field \"command\": argument {i} is not a string (every argument must be)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(
                    "field \"command\" must be an array of strings, like [\"echo\", \"hi\"]".into(),
                );
            }
        };
        let slots = whole(&mut fields, "slots", 1, 1, u64::from(MAX_SLOTS))? as u32;
        let timeout_s = seconds(&mut fields, "timeout_s", 60.0, 1.0, MAX_TIMEOUT_SECS)?;
        let retries = whole(&mut fields, "retries", 0, 0, u64::from(MAX_RETRIES))? as u32;
        let retry_delay_s = seconds(&mut fields, "retry_delay_s", 1.0, 0.0, MAX_RETRY_DELAY_SECS)?;
        let kill_timeout_s = seconds(
            &mut fields,
            "kill_timeout_s",
            DEFAULT_KILL_TIMEOUT_SECS,
            0.0,
            MAX_KILL_TIMEOUT_SECS,
        )?;
        let resources = match fields.remove("resources") {
            None | Some(Value::Null) => Resources::default(),
            Some(Value::Object(asked)) => resources(asked)?,
            Some(_) => {
                return Err(
                    "field \"resources\" must be an object like {\"memory_mb\": 512, \"cpus\": 0.5, \"pids\": 100}".into(),
                );
            }
        };
        let env = match fields.remove("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(vars)) => vars
                .into_iter()
                .map(|(name, value)| {
                    if name.is_empty() || name.contains(['=', '\0']) {
                        return Err(format!(
                            "field \"env\": {name:?} is not a variable name (no \"=\", no NUL, not empty)"
                        ));
                    }
                    match value {
                        Value::String(s) if s.contains('\0') => {
                            Err(format!("field \"env\": {name} holds a NUL character"))
                        }
                        Value::String(s) => Ok((name, s)),
                        _ => Err(format!("field \"env\": the value of {name} must be a string")),
                    }
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err("field \"env\" must be an object of strings, like {\"K\": \"V\"}".into());
            }
        };
        let constraints = match fields.remove("constraints") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() > MAX_CONSTRAINTS => {
                return Err(format!(
                    "field \"constraints\" has more than {MAX_CONSTRAINTS} constraints"
                ));
            }
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => text
                        .parse::<Constraint>()
                        .map_err(|why| format!("field \"constraints\": {why}")),
                    other => Err(format!(
                        "field \"constraints\": {other} is not a string like \"zone=eu\""
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(
                    "field \"constraints\" must be an array of strings, like [\"zone=eu\", \"gpu\", \"hive.arch!=aarch64\"]"
                        .into(),
                );
            }
        };
        let each_drone = match fields.remove("each_drone") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(each)) => each,
            Some(_) => return Err("field \"each_drone\" must be true or false".into()),
        };
        let id = match fields.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if valid_client_id(&id) => Some(id),
            Some(_) => {
                return Err("field \"id\" must match [a-z0-9][a-z0-9-]{0,62} (lowercase letters, digits and dashes, at most 63)".into());
            }
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(format!(
                "unknown field {unknown:?}; a task has command, slots, timeout_s, retries, retry_delay_s, env, resources, kill_timeout_s, constraints, each_drone and id"
            ));
        }
        Ok(Submission {
            id,
            spec: Spec {
                command,
                slots,
                timeout_s,
                retries,
                retry_delay_s,
                env,
                resources,
                kill_timeout_s,
                constraints,
            },
            each_drone,
        })
    }
}

/// A spec's `resources` object: each field optional, every mistake named as `resources.FIELD`.
fn resources(mut asked: Map<String, Value>) -> Result<Resources, String> {
    let memory_mb = match asked.remove("memory_mb") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_u64()
                .filter(|n| (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(n))
                .ok_or_else(|| {
                    format!(
                        "field \"resources.memory_mb\" must be a whole number of MiB from {MIN_MEMORY_MB} to {MAX_MEMORY_MB}"
                    )
                })?,
        ),
    };
    let cpus = match asked.remove("cpus") {
        None | Some(Value::Null) => None,
        Some(n) => Some(
            n.as_f64()
                .filter(|n| n.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(n))
                .ok_or_else(|| {
                    format!(
                        "field \"resources.cpus\" must be a number of cores above 0, from {MIN_CPUS} to {MAX_CPUS}"
                    )
                })?,
        ),
    };
    let pids = whole(
        &mut asked,
        "pids",
        u64::from(DEFAULT_PIDS),
        1,
        u64::from(MAX_PIDS),
    )
    .map_err(|why| why.replacen("\"pids\"", "\"resources.pids\"", 1))? as u32;
    if let Some(unknown) = asked.keys().next() {
        return Err(format!(
            "unknown field \"resources.{unknown}\"; resources are memory_mb, cpus and pids"
        ));
    }
    Ok(Resources {
        memory_mb,
        cpus,
        pids,
    })
}

/// The whole number `field` of `fields`, `default` when absent, within `low..=high`.
fn whole(
    fields: &mut Map<String, Value>,
    field: &str,
    default: u64,
    low: u64,
    high: u64,
) -> Result<u64, String> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (low..=high).contains(n))
            .ok_or_else(|| format!("field {field:?} must be a whole number from {low} to {high}")),
        Some(_) => Err(format!(
            "field {field:?} must be a whole number from {low} to {high}"
        )),
    }
}

/// The number of seconds `field` of `fields`, `default` when absent, within `low..=high`.
fn seconds(
    fields: &mut Map<String, Value>,
    field: &str,
    default: f64,
    low: f64,
    high: f64,
) -> Result<f64, String> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && (low..=high).contains(s))
            .ok_or_else(|| {
                format!("field {field:?} must be a number of seconds from {low} to {high}")
            }),
        Some(_) => Err(format!(
            "field {field:?} must be a number of seconds from {low} to {high}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_command_is_required_and_the_rest_default() {
        let submission = Submission::parse(br#"{"command": ["sh", "-c", "echo hi"]}"#).unwrap();
        assert_eq!(
            submission,
            Submission {
                id: None,
                spec: Spec {
                    command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                    slots: 1,
                    timeout_s: 60.0,
                    retries: 0,
                    retry_delay_s: 1.0,
                    env: BTreeMap::new(),
                    resources: Resources {
                        memory_mb: None,
                        cpus: None,
                        pids: 4096,
                    },
                    kill_timeout_s: 5.0,
                    constraints: Vec::new(),
                },
                each_drone: false,
            }
        );
        let full = Submission::parse(
            br#"{"command": ["true"], "slots": 2, "timeout_s": 5, "retries": 3, "retry_delay_s": 0.5, "env": {"K": "V"}, "id": "build-7"}"#,
        )
        .unwrap();
        assert_eq!(full.id.as_deref(), Some("build-7"));
        assert_eq!((full.spec.slots, full.spec.retries), (2, 3));
        assert_eq!(full.spec.env["K"], "V");
        let fleet = Submission::parse(
            br#"{"command": ["true"], "constraints": ["zone=eu", "gpu", "hive.arch!=aarch64"], "each_drone": true, "id": "restart-agent"}"#,
        )
        .unwrap();
        assert!(fleet.each_drone);
        assert_eq!(
            crate::labels::listed(&fleet.spec.constraints),
            "zone=eu, gpu, hive.arch!=aarch64"
        );
        let limited = Submission::parse(
            br#"{"command": ["true"], "resources": {"memory_mb": 64, "cpus": 0.25, "pids": 20}, "kill_timeout_s": 30}"#,
        )
        .unwrap();
        assert_eq!(
            limited.spec.resources,
            Resources {
                memory_mb: Some(64),
                cpus: Some(0.25),
                pids: 20
            }
        );
        assert_eq!(
            (
                limited.spec.resources.millicpus(),
                limited.spec.kill_timeout_s
            ),
            (250, 30.0)
        );
    }

    #[test]
    fn every_mistake_names_its_field() {
        for (body, field) in [
            ("", "not valid JSON"),
            ("[]", "must be a JSON object"),
            ("{}", "missing field \"command\""),
            (r#"{"command": []}"#, "\"command\" must not be empty"),
            (r#"{"command": "echo hi"}"#, "\"command\" must be an array"),
            (r#"{"command": ["echo", 5]}"#, "argument 1 is not a string"),
            (r#"{"command": [""]}"#, "argument 0"),
            (r#"{"command": ["a\u0000b"]}"#, "NUL"),
            (r#"{"command": ["true"], "slots": 0}"#, "\"slots\""),
            (r#"{"command": ["true"], "slots": 1.5}"#, "\"slots\""),
            (r#"{"command": ["true"], "slots": "1"}"#, "\"slots\""),
            (r#"{"command": ["true"], "timeout_s": 0}"#, "\"timeout_s\""),
            (
                r#"{"command": ["true"], "timeout_s": 86401}"#,
                "\"timeout_s\"",
            ),
            (r#"{"command": ["true"], "retries": 101}"#, "\"retries\""),
            (r#"{"command": ["true"], "retries": -1}"#, "\"retries\""),
            (
                r#"{"command": ["true"], "retry_delay_s": -0.1}"#,
                "\"retry_delay_s\"",
            ),
            (r#"{"command": ["true"], "env": ["K=V"]}"#, "\"env\""),
            (r#"{"command": ["true"], "env": {"K": 1}}"#, "\"env\""),
            (r#"{"command": ["true"], "env": {"A=B": "x"}}"#, "\"env\""),
            (r#"{"command": ["true"], "id": "Build_7"}"#, "\"id\""),
            (r#"{"command": ["true"], "id": "-x"}"#, "\"id\""),
            (r#"{"command": ["true"], "id": 7}"#, "\"id\""),
            (
                r#"{"command": ["true"], "retires": 3}"#,
                "unknown field \"retires\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"memory_mb": 3}}"#,
                "\"resources.memory_mb\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"memory_mb": 1.5}}"#,
                "\"resources.memory_mb\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"cpus": 0}}"#,
                "\"resources.cpus\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"cpus": -1}}"#,
                "\"resources.cpus\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"pids": 0}}"#,
                "\"resources.pids\"",
            ),
            (
                r#"{"command": ["true"], "resources": {"disk_mb": 5}}"#,
                "\"resources.disk_mb\"",
            ),
            (r#"{"command": ["true"], "resources": 5}"#, "\"resources\""),
            (
                r#"{"command": ["true"], "kill_timeout_s": 301}"#,
                "\"kill_timeout_s\"",
            ),
            (
                r#"{"command": ["true"], "constraints": "zone=eu"}"#,
                "\"constraints\" must be an array",
            ),
            (
                r#"{"command": ["true"], "constraints": ["zone=eu", "zone="]}"#,
                "\"zone=\": the value \"\"",
            ),
            (
                r#"{"command": ["true"], "constraints": ["gp u"]}"#,
                "\"gp u\": the key",
            ),
            (
                r#"{"command": ["true"], "constraints": [7]}"#,
                "7 is not a string",
            ),
            (
                r#"{"command": ["true"], "each_drone": 1}"#,
                "\"each_drone\"",
            ),
            (r#"{"command": ["true"], "id": "a.drone-1"}"#, "\"id\""),
        ] {
            let err = Submission::parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(field), "{body}: {err:?} lacks {field:?}");
        }
        let long_id = format!(r#"{{"command": ["true"], "id": "{}"}}"#, "a".repeat(64));
        assert!(
            Submission::parse(long_id.as_bytes())
                .unwrap_err()
                .contains("\"id\"")
        );
    }

    #[test]
    fn ids_and_boots() {
        for id in ["a", "0", "build-7", &"a".repeat(63)] {
            assert!(valid_id(id), "{id}");
        }
        for id in ["", "-a", "A", "a_b", "a/b", "a.b", &"a".repeat(64)] {
            assert!(!valid_id(id), "{id}");
        }
        let member = member_id("restart-agent", "drone-3");
        assert_eq!(member, "restart-agent.drone-3");
        assert!(valid_id(&member) && !valid_client_id(&member));
        for id in [
            "a.drone-",
            "a.drone-x",
            "a..drone-1",
            "a.drone-1.drone-2",
            ".drone-1",
            "a./drone-1",
            "a.drone-123456789012345678901",
        ] {
            assert!(!valid_id(id), "{id}");
        }
        assert!(valid_id(&new_id()));
        assert!(valid_boot(&new_boot()) && valid_boot(""));
        assert!(valid_attempt_id(&new_attempt_id()));
        assert_ne!(new_attempt_id(), new_attempt_id());
        assert!(!valid_attempt_id("../../etc") && !valid_attempt_id(&"A".repeat(32)));
        assert!(!valid_boot("XYZ") && !valid_boot(&"a".repeat(33)));
    }
}
