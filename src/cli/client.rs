//! The client's command line: `larve task ...`, `larve drone ...` and `larve events`, into the
//! queens to ask ([`Target`]) and what to ask them ([`Request`]). `control.rs` asks.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::flags::{
    flag, flag_error, parse_address_list, parse_count, parse_path, parse_text, token,
};
use super::{Command, Environment, Mistake, no_command, unexpected};
use crate::address;
use crate::client::Credentials;
use crate::exec::Stream;
use crate::labels::Constraint;
use crate::queen::events::{self, Kinds};
use crate::tasks::{is_drone_name, valid_client_id, valid_id};
use crate::tls::ClientTls;

/// The help text of the client, printed by `larve task --help` and `larve drone --help`.
const CLIENT_USAGE: &str = "\
usage: larve task run [--slots N] [--timeout S] [--retries N] [--retry-delay S]
                      [--memory-mb MB] [--cpus N] [--pids N] [--kill-timeout S]
                      [--env NAME=VALUE]... [--constraint C]... [--each-drone]
                      [--id ID] [--wait [--wait-timeout S]] -- COMMAND [ARGS...]
       larve task get ID [-o json]
       larve task logs [-f] [--stderr] [--attempt N] ID
       larve task ls [--state STATE] [--group ID] [--limit N] [--after ID] [-o json | --watch]
       larve task cancel ID
       larve drone ls [--label C]... [-o json | --watch]
       larve drone drain NAME|ADDRESS [--undo]
       larve events [--after REV] [--kind task|drone]

A client of a queen's API. task run prints the new task's id; with --wait it prints the task's
stdout and stderr as they come, says why the task waits when it has been pending 2 s, and exits
with the task's exit code (1 when it has none; 124 when --wait-timeout S passed first). task logs
prints an attempt's stdout (--stderr: its stderr) as its drone keeps it, of the last attempt unless
--attempt N says; -f follows it until the attempt ends. With --each-drone it makes one task per
drone that meets the constraints now, ID.DRONE-NAME, and prints their ids. task get prints a
summary (-o json: the task as the API has it). ls --watch draws the table again as the queen's
events say it changed, until interrupted. A constraint C is KEY=VALUE, KEY!=VALUE or KEY (a
drone's labels, as drone ls shows them; hive.name=drone-3 is one drone).

options:
  --queen-host HOST:PORT[,...]   the queen(s) to ask, tried in turn (default: HIVE_QUEEN, else
                                 127.0.0.1:8080)
  --token-file PATH              file holding the cluster token (or set HIVE_TOKEN)
  --tls-ca PATH                  ask over HTTPS, trusting this CA (a hive with TLS; or set
                                 HIVE_TLS_CA)
  --tls-cert PATH, --tls-key PATH
                                 the certificate to show a queen that verifies clients (or
                                 set HIVE_TLS_CERT and HIVE_TLS_KEY)
  -h, --help                     print this help";

/// The help text of `larve events --help`.
const EVENTS_USAGE: &str = "\
usage: larve events [--after REV] [--kind task|drone] [--queen-host HOST:PORT[,...]]
                    [--token-file PATH]

Streams the queen's events, one JSON line per change to a task or a drone, in revision order, as
they happen, until interrupted (GET /events). --after REV starts after revision REV: where an
earlier stream left off (the rev of its last line), or the revision a list was read at
(GET /tasks' \"revision\"); without it, from now on. --kind task or --kind drone streams only
those. A stream that breaks is opened again where it stopped, on the next queen of --queen-host
if need be. The options to reach a queen are larve task's (larve task --help).";

/// Where the client asks when neither `--queen-host` nor `HIVE_QUEEN` says.
const DEFAULT_QUEEN: &str = "127.0.0.1:8080";

/// The verbs of each noun.
const TASK_COMMANDS: [&str; 5] = ["run", "get", "logs", "ls", "cancel"];
const DRONE_COMMANDS: [&str; 2] = ["ls", "drain"];

/// What the client talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// `host:port` of each queen, tried in turn.
    pub queens: Vec<String>,
    /// The token, and with TLS the CA to trust (and a certificate to show).
    pub credentials: Credentials,
}

/// How an answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// For a person: a table, a summary.
    #[default]
    Text,
    /// `-o json`: the JSON the API answered.
    Json,
}

/// One command.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `task run`: create a task (the JSON body of `POST /tasks`), and with `wait` wait for it.
    Run { task: Value, wait: Option<Wait> },
    /// `task logs ID`: the output of attempt `attempt` (the last when `None`), followed or not.
    Logs {
        id: String,
        stream: Stream,
        attempt: Option<u32>,
        follow: bool,
    },
    /// `task get ID`.
    Get { id: String, output: Output },
    /// `task ls`.
    List {
        state: Option<String>,
        group: Option<String>,
        limit: Option<usize>,
        after: Option<String>,
        output: Output,
        /// `--watch`: draw the table again at each change.
        watch: bool,
    },
    /// `task cancel ID`.
    Cancel { id: String },
    /// `drone ls`, of the drones that meet every one of `labels` (constraints); `watch`: draw the
    /// table again at each change.
    Drones {
        labels: Vec<String>,
        output: Output,
        watch: bool,
    },
    /// `drone drain NAME|ADDRESS` (`undo`: `--undo`).
    Drain { drone: String, undo: bool },
    /// `events`: stream the queen's events of `kinds` (`task`, `drone`; none: both) after
    /// revision `after` (none: from now on).
    Events {
        after: Option<i64>,
        kinds: Option<String>,
    },
}

/// How `task run --wait` waits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wait {
    /// `--wait-timeout S`: give up (exit 124) after this long; `None`: wait as long as it takes.
    pub timeout: Option<Duration>,
}

/// `larve task ...`, `larve drone ...` or `larve events ...`.
pub(super) fn parse(args: Vec<OsString>, env: &Environment) -> Result<Command, Mistake> {
    let noun = args
        .first()
        .and_then(|a| a.to_str())
        .unwrap_or_default()
        .to_string();
    let usage = if noun == "events" {
        EVENTS_USAGE
    } else {
        CLIENT_USAGE
    };
    match parse_words(args, env, &noun) {
        Ok(command) => Ok(command),
        Err(Slip::Command(why)) => Err(Mistake { why, hint: None }),
        Err(Slip::Flag(why)) => Err(Mistake {
            why,
            hint: Some(if noun == "events" {
                "usage: larve events [--after REV] [--kind task|drone]; larve events --help says more"
            } else {
                "usage: larve task run|get|logs|ls|cancel ..., larve drone ls|drain ...; larve task --help says more"
            }),
        }),
    }
    .map(|command| match command {
        Command::Help(_) => Command::Help(usage),
        other => other,
    })
}

/// A mistake in a client's command line: a command that is no command (said on its own line),
/// or anything else (followed by the usage's shape).
enum Slip {
    Command(String),
    Flag(String),
}

impl From<String> for Slip {
    fn from(why: String) -> Slip {
        Slip::Flag(why)
    }
}

fn parse_words(mut args: Vec<OsString>, env: &Environment, noun: &str) -> Result<Command, Slip> {
    // What follows `--` is the task's command, flags of its own included.
    let command: Vec<OsString> = match args.iter().position(|a| a == "--") {
        Some(at) => {
            let command = args.split_off(at + 1);
            args.pop();
            command
        }
        None => Vec::new(),
    };
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help(CLIENT_USAGE));
    }
    let _noun: String = args.free_from_str().map_err(flag_error)?;
    let verb: String = if noun == "events" {
        String::new()
    } else {
        let verbs: &[&str] = if noun == "task" {
            &TASK_COMMANDS
        } else {
            &DRONE_COMMANDS
        };
        let verb: String = args.free_from_str().map_err(|_| {
            format!(
                "larve {noun} needs a command: {}; see larve {noun} --help",
                verbs.join(", ")
            )
        })?;
        if !verbs.contains(&verb.as_str()) {
            return Err(Slip::Command(no_command(&verb, verbs, &format!("{noun} "))));
        }
        verb
    };
    let target = target(&mut args, env)?;
    let request = match (noun, verb.as_str()) {
        ("task", "run") => run(&mut args, &command)?,
        ("task", "get") => Request::Get {
            output: output(&mut args)?,
            id: task_id(&mut args, "get")?,
        },
        ("task", "logs") => Request::Logs {
            follow: args.contains(["-f", "--follow"]),
            stream: if args.contains("--stderr") {
                Stream::Stderr
            } else {
                Stream::Stdout
            },
            attempt: flag(&mut args, "--attempt", |s| {
                parse_count(s, 1, u32::MAX as usize).map(|n| n as u32)
            })?,
            id: task_id(&mut args, "logs")?,
        },
        ("task", "cancel") => Request::Cancel {
            id: task_id(&mut args, "cancel")?,
        },
        ("task", "ls") => Request::List {
            state: flag(&mut args, "--state", parse_text)?,
            group: flag(&mut args, "--group", parse_group)?,
            limit: flag(&mut args, "--limit", |s| parse_count(s, 1, 1000))?,
            after: flag(&mut args, "--after", parse_text)?,
            output: output(&mut args)?,
            watch: watch(&mut args)?,
        },
        ("drone", "ls") => {
            let given: Vec<String> = args
                .values_from_str("--label")
                .map_err(|e| format!("--label: {}", flag_error(e)))?;
            for text in &given {
                text.parse::<Constraint>()
                    .map_err(|why| format!("--label: {why}"))?;
            }
            Request::Drones {
                labels: given,
                output: output(&mut args)?,
                watch: watch(&mut args)?,
            }
        }
        ("drone", "drain") => Request::Drain {
            undo: args.contains("--undo"),
            drone: args
                .free_from_str()
                .map_err(|_| "larve drone drain needs a drone's name or address".to_string())
                .and_then(|drone: String| {
                    if is_drone_name(&drone) || address::validate(&drone).is_ok() {
                        Ok(drone)
                    } else {
                        Err(format!(
                            "larve drone drain: {drone:?} is neither a drone's name (drone-N) nor its address (host:port)"
                        ))
                    }
                })?,
        },
        _ => Request::Events {
            after: flag(&mut args, "--after", |s| {
                events::parse_after(s).map_err(|_| format!("{s:?} is not a revision (a whole number)"))
            })?,
            kinds: flag(&mut args, "--kind", |s| {
                Kinds::parse(s)
                    .map(|_| s.to_string())
                    .map_err(|why| why.trim_start_matches("kind: ").to_string())
            })?,
        },
    };
    let watched = matches!(
        request,
        Request::List { watch: true, .. } | Request::Drones { watch: true, .. }
    );
    if watched
        && matches!(
            request,
            Request::List {
                output: Output::Json,
                ..
            } | Request::List { after: Some(_), .. }
                | Request::Drones {
                    output: Output::Json,
                    ..
                }
        )
    {
        return Err("--watch draws the newest as a table: it takes neither -o json (larve events streams JSON) nor --after"
            .to_string()
            .into());
    }
    if !command.is_empty() && !matches!(request, Request::Run { .. }) {
        return Err("only larve task run takes a command after --"
            .to_string()
            .into());
    }
    let rest = args.finish();
    if let Some(extra) = rest.first() {
        return Err(unexpected(extra, CLIENT_USAGE).into());
    }
    Ok(Command::Control(Box::new((target, request))))
}

/// The queens to ask and how: `--queen-host` (else `HIVE_QUEEN`), the token, TLS.
fn target(args: &mut pico_args::Arguments, env: &Environment) -> Result<Target, String> {
    let queens = flag(args, "--queen-host", parse_address_list)?;
    let queens = match (queens, &env.queen) {
        (Some(queens), _) => queens,
        (None, Some(env)) if !env.is_empty() => {
            parse_address_list(env).map_err(|why| format!("HIVE_QUEEN: {why}"))?
        }
        _ => vec![DEFAULT_QUEEN.to_string()],
    };
    let token_file = flag(args, "--token-file", parse_path)?;
    let token = token(token_file, env.token.clone())?;
    let from_env =
        |given: Option<PathBuf>, var: &Option<String>| given.or(var.clone().map(PathBuf::from));
    let tls_ca = from_env(flag(args, "--tls-ca", parse_path)?, &env.tls_ca);
    let tls_cert = from_env(flag(args, "--tls-cert", parse_path)?, &env.tls_cert);
    let tls_key = from_env(flag(args, "--tls-key", parse_path)?, &env.tls_key);
    let tls = match (tls_ca, tls_cert, tls_key) {
        (None, None, None) => None,
        (Some(ca), None, None) => Some(ClientTls::user(&ca, None)?),
        (Some(ca), Some(cert), Some(key)) => Some(ClientTls::user(&ca, Some((&cert, &key)))?),
        _ => {
            return Err("--tls-cert and --tls-key (HIVE_TLS_CERT, HIVE_TLS_KEY) go together, and need --tls-ca (HIVE_TLS_CA)".into());
        }
    };
    Ok(Target {
        queens,
        credentials: Credentials { token, tls },
    })
}

/// `larve task run [flags] -- COMMAND...`: the body of `POST /tasks`.
fn run(args: &mut pico_args::Arguments, command: &[OsString]) -> Result<Request, String> {
    let mut task = serde_json::Map::new();
    let mut number =
        |name: &str, flag: &'static str, args: &mut pico_args::Arguments| -> Result<(), String> {
            let given: Option<String> = args.opt_value_from_str(flag).map_err(flag_error)?;
            if let Some(given) = given {
                let value: serde_json::Number = given
                    .parse()
                    .map_err(|_| format!("{flag}: {given:?} is not a number"))?;
                task.insert(name.into(), value.into());
            }
            Ok(())
        };
    number("slots", "--slots", args)?;
    number("timeout_s", "--timeout", args)?;
    number("retries", "--retries", args)?;
    number("retry_delay_s", "--retry-delay", args)?;
    number("kill_timeout_s", "--kill-timeout", args)?;
    let mut resources = serde_json::Map::new();
    for (name, flag) in [
        ("memory_mb", "--memory-mb"),
        ("cpus", "--cpus"),
        ("pids", "--pids"),
    ] {
        let given: Option<String> = args.opt_value_from_str(flag).map_err(flag_error)?;
        if let Some(given) = given {
            let value: serde_json::Number = given
                .parse()
                .map_err(|_| format!("{flag}: {given:?} is not a number"))?;
            resources.insert(name.into(), value.into());
        }
    }
    if !resources.is_empty() {
        task.insert("resources".into(), resources.into());
    }
    let env_vars: Vec<String> = args.values_from_str("--env").map_err(flag_error)?;
    let mut vars = serde_json::Map::new();
    for var in env_vars {
        let (name, value) = var
            .split_once('=')
            .ok_or_else(|| format!("--env: {var:?} is not NAME=VALUE"))?;
        vars.insert(name.into(), value.into());
    }
    if !vars.is_empty() {
        task.insert("env".into(), vars.into());
    }
    let constraints: Vec<String> = args
        .values_from_str("--constraint")
        .map_err(|e| format!("--constraint: {}", flag_error(e)))?;
    for text in &constraints {
        text.parse::<Constraint>()
            .map_err(|why| format!("--constraint: {why}"))?;
    }
    if !constraints.is_empty() {
        task.insert("constraints".into(), constraints.into());
    }
    let each_drone = args.contains("--each-drone");
    if each_drone {
        task.insert("each_drone".into(), true.into());
    }
    let id = flag(args, "--id", parse_text)?;
    if let Some(id) = id {
        task.insert("id".into(), id.into());
    }
    let wait_timeout = flag(args, "--wait-timeout", parse_seconds)?;
    let wait = args.contains("--wait");
    if wait_timeout.is_some() && !wait {
        return Err("--wait-timeout goes with --wait".into());
    }
    let wait = wait.then_some(Wait {
        timeout: wait_timeout,
    });
    if wait.is_some() && each_drone {
        return Err("--wait follows one task, and --each-drone makes one per drone: run without --wait, then larve task ls --group ID".into());
    }
    if command.is_empty() {
        return Err(
            "larve task run needs the command after --, like: larve task run -- echo hi".into(),
        );
    }
    let command: Vec<Value> = command
        .iter()
        .cloned()
        .map(|arg| {
            arg.into_string()
                .map(Into::into)
                .map_err(|arg| format!("{arg:?} is not UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    task.insert("command".into(), command.into());
    Ok(Request::Run {
        task: task.into(),
        wait,
    })
}

/// Seconds to wait, as `--wait-timeout` takes them: more than 0, at most a day.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a number of seconds (more than 0, at most 86400)"
        )),
    }
}

/// The task id after `larve task VERB`: one the API takes in a path, so it cannot steer the URL.
fn task_id(args: &mut pico_args::Arguments, verb: &str) -> Result<String, String> {
    let id: String = args
        .free_from_str()
        .map_err(|_| format!("larve task {verb} needs a task id"))?;
    if !valid_id(&id) {
        return Err(format!("larve task {verb}: {id:?} is not a task id"));
    }
    Ok(id)
}

/// A group's id, as `--group` takes it.
fn parse_group(s: &str) -> Result<String, String> {
    if valid_client_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a group's id"))
    }
}

/// `--watch`, which only `ls` takes.
fn watch(args: &mut pico_args::Arguments) -> Result<bool, String> {
    Ok(args.contains("--watch"))
}

/// `-o json` (or `--output json`); `-o text` is the default.
fn output(args: &mut pico_args::Arguments) -> Result<Output, String> {
    let given: Option<String> = args
        .opt_value_from_str(["-o", "--output"])
        .map_err(|e| format!("-o: {}", flag_error(e)))?;
    match given.as_deref() {
        None | Some("text") => Ok(Output::Text),
        Some("json") => Ok(Output::Json),
        Some(other) => Err(format!("-o: {other:?} is not json or text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse;

    fn control(args: &[&str], queen: Option<&str>) -> Result<(Target, Request), String> {
        let env = Environment {
            queen: queen.map(String::from),
            ..Environment::default()
        };
        match parse(args.iter().map(OsString::from).collect(), &env).map_err(|m| m.why)? {
            Command::Control(control) => Ok(*control),
            other => panic!("expected a control command, got {other:?}"),
        }
    }

    #[test]
    fn help_is_the_client_s() {
        let env = Environment::default();
        for (args, help) in [
            (&["task", "--help"][..], CLIENT_USAGE),
            (&["drone", "ls", "-h"][..], CLIENT_USAGE),
            (&["events", "--help"][..], EVENTS_USAGE),
        ] {
            let args = args.iter().map(OsString::from).collect();
            assert_eq!(parse(args, &env), Ok(Command::Help(help)));
        }
        assert!(EVENTS_USAGE.contains("Streams the queen's events"));
    }

    #[test]
    fn the_client_s_commands_parse() {
        let (target, request) = control(
            &[
                "task",
                "run",
                "--slots",
                "2",
                "--env",
                "A=b=c",
                "--memory-mb",
                "64",
                "--cpus",
                "0.25",
                "--pids",
                "20",
                "--kill-timeout",
                "30",
                "--constraint",
                "zone=eu",
                "--constraint",
                "hive.arch!=aarch64",
                "--wait",
                "--",
                "sh",
                "-c",
                "echo --wait",
            ],
            None,
        )
        .unwrap();
        assert_eq!(target.queens, ["127.0.0.1:8080"]);
        assert_eq!(
            request,
            Request::Run {
                task: serde_json::json!({
                    "slots": 2,
                    "kill_timeout_s": 30,
                    "resources": {"memory_mb": 64, "cpus": 0.25, "pids": 20},
                    "env": {"A": "b=c"},
                    "constraints": ["zone=eu", "hive.arch!=aarch64"],
                    "command": ["sh", "-c", "echo --wait"]
                }),
                wait: Some(Wait { timeout: None }),
            }
        );
        let (_, request) = control(
            &[
                "task",
                "run",
                "--each-drone",
                "--id",
                "restart-agent",
                "--",
                "true",
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            request,
            Request::Run {
                task: serde_json::json!({"each_drone": true, "id": "restart-agent", "command": ["true"]}),
                wait: None
            }
        );
        let (target, request) = control(
            &["drone", "drain", "127.0.0.1:5001", "--undo"],
            Some("127.0.0.1:8081,127.0.0.1:8082"),
        )
        .unwrap();
        assert_eq!(target.queens, ["127.0.0.1:8081", "127.0.0.1:8082"]);
        assert_eq!(
            request,
            Request::Drain {
                drone: "127.0.0.1:5001".into(),
                undo: true
            }
        );
        let (target, _) = control(
            &["task", "ls", "--queen-host", "10.0.0.1:8080"],
            Some("127.0.0.1:1"),
        )
        .unwrap();
        assert_eq!(
            target.queens,
            ["10.0.0.1:8080"],
            "the flag wins over HIVE_QUEEN"
        );
        assert_eq!(
            control(&["task", "get", "a.drone-3", "-o", "json"], None)
                .unwrap()
                .1,
            Request::Get {
                id: "a.drone-3".into(),
                output: Output::Json
            }
        );
        assert_eq!(
            control(&["task", "ls", "--group", "fix", "--state", "failed"], None)
                .unwrap()
                .1,
            Request::List {
                state: Some("failed".into()),
                group: Some("fix".into()),
                limit: None,
                after: None,
                output: Output::Text,
                watch: false,
            }
        );
        assert_eq!(
            control(
                &["drone", "ls", "--label", "zone=eu", "--label", "gpu"],
                None
            )
            .unwrap()
            .1,
            Request::Drones {
                labels: vec!["zone=eu".into(), "gpu".into()],
                output: Output::Text,
                watch: false,
            }
        );
        assert_eq!(
            control(
                &[
                    "task",
                    "run",
                    "--wait",
                    "--wait-timeout",
                    "2.5",
                    "--",
                    "true"
                ],
                None
            )
            .unwrap()
            .1,
            Request::Run {
                task: serde_json::json!({"command": ["true"]}),
                wait: Some(Wait {
                    timeout: Some(Duration::from_millis(2500))
                }),
            }
        );
        assert_eq!(
            control(
                &["task", "logs", "-f", "--stderr", "--attempt", "2", "t1"],
                None
            )
            .unwrap()
            .1,
            Request::Logs {
                id: "t1".into(),
                stream: Stream::Stderr,
                attempt: Some(2),
                follow: true,
            }
        );
        assert_eq!(
            control(&["task", "logs", "t1"], None).unwrap().1,
            Request::Logs {
                id: "t1".into(),
                stream: Stream::Stdout,
                attempt: None,
                follow: false,
            }
        );
        assert_eq!(
            control(&["events", "--after", "42"], None).unwrap().1,
            Request::Events {
                after: Some(42),
                kinds: None
            }
        );
        assert_eq!(
            control(&["events", "--kind", "drone"], None).unwrap().1,
            Request::Events {
                after: None,
                kinds: Some("drone".into())
            }
        );
        assert_eq!(
            control(&["drone", "ls", "--watch"], None).unwrap().1,
            Request::Drones {
                labels: Vec::new(),
                output: Output::Text,
                watch: true,
            }
        );
        for (args, needle) in [
            (&["task"][..], "needs a command: run, get, logs, ls, cancel"),
            (
                &["task", "run", "--wait-timeout", "3", "--", "true"][..],
                "--wait-timeout goes with --wait",
            ),
            (
                &["task", "run", "--wait", "--wait-timeout", "0", "--", "true"][..],
                "not a number of seconds",
            ),
            (&["task", "logs", "--attempt", "0", "t1"][..], "--attempt"),
            (&["task", "logs"][..], "needs a task id"),
            (&["task", "run"][..], "needs the command after --"),
            (
                &["task", "run", "--slots", "x", "--", "true"][..],
                "--slots",
            ),
            (
                &["task", "run", "--constraint", "zone=", "--", "true"][..],
                "--constraint: \"zone=\": the value \"\"",
            ),
            (
                &["task", "run", "--each-drone", "--wait", "--", "true"][..],
                "--wait follows one task",
            ),
            (&["task", "get"][..], "needs a task id"),
            (&["task", "get", "../drones"][..], "is not a task id"),
            (&["task", "get", "x", "-o", "yaml"][..], "not json or text"),
            (&["task", "fly"][..], "no command \"task fly\""),
            (&["drone", "drain"][..], "needs a drone's name or address"),
            (&["drone", "drain", "a/b"][..], "neither a drone's name"),
            (&["drone", "ls", "--label", "a b"][..], "--label: \"a b\""),
            (&["task", "ls", "--group", "a.b"][..], "not a group's id"),
            (&["task", "ls", "--", "true"][..], "only larve task run"),
            (&["task", "ls", "extra"][..], "unexpected argument"),
            (
                &["task", "ls", "--limt", "3"][..],
                "unexpected argument \"--limt\"; did you mean --limit?",
            ),
            (&["events", "--after", "x"][..], "not a revision"),
            (&["events", "--after", "-3"][..], "not a revision"),
            (
                &["events", "--kind", "tasks"][..],
                "\"tasks\" is not task or drone",
            ),
            (
                &["task", "ls", "--watch", "-o", "json"][..],
                "--watch draws",
            ),
            (
                &["task", "ls", "--watch", "--after", "x"][..],
                "--watch draws",
            ),
            (
                &["drone", "ls", "--watch", "-o", "json"][..],
                "--watch draws",
            ),
            (&["task", "get", "x", "--watch"][..], "unexpected argument"),
        ] {
            let err = control(args, None).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }
    }
}
