//! The command line: what `larve` is asked to do, read from its arguments and its environment.
//!
//! - [`daemon`]: a queen's or a drone's flags, into a [`Config`];
//! - [`client`]: `larve task|drone|events ...`, the client of a queen's API, into a [`Target`]
//!   and a [`Request`];
//! - [`output`]: what the client prints of the queen's answers: tables and a task's summary;
//! - [`flags`]: reading one flag's value, one way for both;
//! - [`suggest`]: the nearest command or flag to a mistyped one.
//!
//! The command line builds a config or a request, nothing else: `larve::run` starts the daemon,
//! and `control::run` asks the queen. Every mistake is one line saying what is wrong (a mistyped
//! command names the nearest one), so it is seen, not scrolled past.

mod client;
mod daemon;
mod flags;
pub mod output;
mod suggest;

use std::ffi::{OsStr, OsString};
use std::fmt;

pub use client::{Output, Request, Target, Wait};

use crate::config::Config;

/// The help text, printed by `larve --help`: the daemon's flags, and the client's commands.
pub const USAGE: &str = "\
usage: larve --queen [--port 8080] [--data-dir DIR | --etcd URL[,URL...]] [options]
       larve --queen-host HOST:PORT[,HOST:PORT...] [--port 8080] [options]
       larve task run|get|logs|ls|cancel ...  ask a queen about tasks (larve task --help)
       larve drone ls|drain ...               ask a queen about drones (larve drone --help)
       larve events [--after REV]             stream the queen's events (larve events --help)

A larve is a drone (worker) by default; --queen makes it the queen (control plane). The task,
drone and events commands are clients of a queen's API (HIVE_QUEEN, else 127.0.0.1:8080).

options:
  --queen                        run as the queen
  --queen-host HOST:PORT[,...]   drone: the queen(s) to register with, tried in turn
                                 (required for a drone)
  --port PORT                    port to listen on (default 8080; 0 picks a free port)
  --bind IP                      address to listen on (default 127.0.0.1)
  --advertise HOST:PORT          address others are told: a drone's to its queen, a queen's
                                 to other queens (default bind:port; required with --bind
                                 0.0.0.0 or ::)
  --etcd URL[,URL...]            queen: keep the registry in etcd (http://HOST:PORT or
                                 https://HOST:PORT of each member), shared by every queen
                                 given the same; default: in the queen's memory
  --data-dir PATH                queen: keep the registry and the tasks on disk too, in this
                                 directory (made if missing; one queen's at a time), so a
                                 restart or a crash loses nothing; default: memory only
  --etcd-ca PATH                 queen: CA certificate(s) (PEM) to verify etcd with; needed
                                 with https:// endpoints
  --etcd-cert PATH, --etcd-key PATH
                                 queen: client certificate and key (PEM) shown to etcd
  --etcd-prefix PREFIX           queen: prefix of Hive's keys in etcd (default /hive/)
  --leader-ttl SECONDS           queen: the leader's lease, whole seconds (default 5)
  --heartbeat-interval SECONDS   queen: drones renew leases this often; one that shows no
                                 life for this long is probed (default 10)
  --heartbeat-attempts N         queen: tries of a probe before removal (default 4)
  --heartbeat-timeout SECONDS    queen: limit for one try, connect + answer (default 1)
  --heartbeat-retry-delay SECS   queen: pause between tries (default 0.5)
  --task-timeout SECONDS         queen: limit for handing a task to one drone, or starting
                                 or stopping an attempt on one (default 2)
  --max-pending N                queen: pending tasks at most; more are refused with 429
                                 (default 100000)
  --keep-finished N              queen: finished tasks kept, the most recent; older ones are
                                 deleted (default 10000)
  --placement POLICY             queen: spread (fewest used slots first) or binpack (fill
                                 drones in turn) (default spread)
  --allow-exec                   drone: run the commands of tasks queens place here (off by
                                 default; on a non-loopback --bind it needs a token)
  --slots N                      drone: slots of tasks run at once (default: the CPUs)
  --work-dir PATH                drone: where attempts run, each in a fresh directory
                                 (default: hive-drone-IP-PORT in the temporary directory)
  --max-log-mb MB                drone: what it keeps of each attempt's stdout and of its
                                 stderr, in MiB; past it the oldest part goes (default 100)
  --containment MODE             drone: what holds each attempt: cgroup (a cgroup of its own,
                                 with its limits; the drone does not start without), process-group
                                 (no limits; a process that calls setsid escapes), or auto (a
                                 cgroup where the drone may make one; default)
  --cgroup-parent PATH           drone: the cgroup under which attempts' cgroups are made, as a
                                 path in the hierarchies (default: hive under the drone's own)
  --run-as USER                  drone: the user attempts run as (default: nobody for a drone
                                 run as root, else the drone's own user)
  --pass-env NAME                drone: pass this variable of the drone's environment to its
                                 commands too (repeatable; no HIVE_ variable is ever passed)
  --memory-mb MB, --cpus N       drone: the memory and cpus tasks may ask for here together
                                 (default: what the machine, or the drone's cgroup, has)
  --label KEY=VALUE              drone: a label tasks' constraints select by (repeatable; keys
                                 and values 1 to 63 of A-Z a-z 0-9 . _ / -); the drone adds its
                                 own hive.os, hive.arch, hive.hostname, hive.cpus, hive.memory_mb
  --token-file PATH              file holding the cluster token (or set HIVE_TOKEN): the join
                                 secret of drones, and an admin's token; with it, every
                                 endpoint but /healthz needs a token
  --client-tokens PATH           queen: client tokens, one NAME SCOPE SECRET a line; SCOPE is
                                 read, submit, operate or admin (needs a cluster token)
  --tls-cert PATH, --tls-key PATH
                                 serve HTTPS with this certificate (chain) and key (PEM), and
                                 call other larves over HTTPS showing them; needs --tls-ca
  --tls-ca PATH                  CA certificate(s) (PEM) the larves this one calls must be
                                 signed by
  --tls-verify-clients           require every client to show a certificate signed by --tls-ca
  --insecure                     serve a non-loopback --bind over plain HTTP, or without a
                                 token (a drone with --allow-exec needs a token all the same)
  --max-connections N            client connections held at once (default 2048)
  --max-connections-per-peer N   client connections from one address (default 512)
  --log-level LEVEL              error, warn, info, debug or trace (default info)
  -h, --help                     print this help
  -V, --version                  print the version";

/// What follows a mistake in a daemon's flags: the usage's shape, not its every flag.
const DAEMON_HINT: &str = "usage: larve --queen [options] | larve --queen-host HOST:PORT [options] | larve task|drone|events ...; larve --help lists every flag";

/// The client's commands: a first argument that is none of these, and no flag, is a mistyped one.
const COMMANDS: [&str; 3] = ["task", "drone", "events"];

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Start a larve.
    Run(Box<Config>),
    /// Ask a queen something (`larve task ...`, `larve drone ...`, `larve events`).
    Control(Box<(Target, Request)>),
    /// Print this help.
    Help(&'static str),
    Version,
}

/// A command line that cannot be run: what is wrong, on one line, and maybe a line saying where
/// to read more.
#[derive(Debug, Clone, PartialEq)]
pub struct Mistake {
    pub why: String,
    pub hint: Option<&'static str>,
}

impl fmt::Display for Mistake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.why)?;
        if let Some(hint) = self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

/// What a command may read from the environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// `HIVE_TOKEN`.
    pub token: Option<String>,
    /// `HIVE_QUEEN`: the queens the command-line client asks.
    pub queen: Option<String>,
    /// `HIVE_TLS_CA`, `HIVE_TLS_CERT`, `HIVE_TLS_KEY`: the command-line client's `--tls-ca`,
    /// `--tls-cert` and `--tls-key` when those are not given.
    pub tls_ca: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

impl Environment {
    /// What the process's environment says.
    pub fn read() -> Environment {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Environment {
            token: var("HIVE_TOKEN"),
            queen: var("HIVE_QUEEN"),
            tls_ca: var("HIVE_TLS_CA"),
            tls_cert: var("HIVE_TLS_CERT"),
            tls_key: var("HIVE_TLS_KEY"),
        }
    }
}

/// Reads the arguments after the program name, with what `env` says.
pub fn parse(args: Vec<OsString>, env: &Environment) -> Result<Command, Mistake> {
    match args.first().and_then(|a| a.to_str()) {
        Some(command) if COMMANDS.contains(&command) => return client::parse(args, env),
        Some(word) if !word.starts_with('-') => {
            return Err(Mistake {
                why: no_command(word, &COMMANDS, ""),
                hint: None,
            });
        }
        _ => {}
    }
    let given = |names: [&str; 2]| args.iter().any(|arg| names.iter().any(|name| arg == name));
    if given(["-h", "--help"]) {
        return Ok(Command::Help(USAGE));
    }
    if given(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    daemon::parse(args, env.token.clone())
        .map(|config| Command::Run(Box::new(config)))
        .map_err(|why| Mistake {
            why,
            hint: Some(DAEMON_HINT),
        })
}

/// `no command "tsak"; did you mean "task"?`: `word` is none of `commands` (those that may follow
/// `before`, like `task `), and the nearest, if one is near.
fn no_command(word: &str, commands: &[&str], before: &str) -> String {
    match suggest::nearest(word, commands.iter().copied()) {
        Some(meant) => format!("no command \"{before}{word}\"; did you mean \"{before}{meant}\"?"),
        None => {
            let (last, rest) = commands.split_last().expect("some commands");
            format!(
                "no command \"{before}{word}\"; the commands are {}{} and {last} (larve --help)",
                before,
                rest.join(&format!(", {before}"))
            )
        }
    }
}

/// `unexpected argument "--queeen"; did you mean --queen?`: `arg` is no flag `help` names, and
/// the nearest, if one is near.
fn unexpected(arg: &OsStr, help: &str) -> String {
    let text = arg.to_string_lossy();
    match suggest::nearest(&text, suggest::flags_in(help)) {
        Some(meant) if text.starts_with("--") => {
            format!("unexpected argument {arg:?}; did you mean {meant}?")
        }
        _ => format!("unexpected argument {arg:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Command, Mistake> {
        parse(
            args.iter().map(OsString::from).collect(),
            &Environment::default(),
        )
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(&["--help"]), Ok(Command::Help(USAGE)));
        assert_eq!(parse_args(&["--queen", "-h"]), Ok(Command::Help(USAGE)));
        assert_eq!(parse_args(&["-V"]), Ok(Command::Version));
        for command in COMMANDS {
            assert!(USAGE.contains(&format!("larve {command} ")), "{command}");
        }
    }

    #[test]
    fn a_mistyped_command_says_so_in_one_line_with_the_nearest() {
        for (args, said) in [
            (
                &["tsak", "ls"][..],
                "no command \"tsak\"; did you mean \"task\"?",
            ),
            (
                &["dron"][..],
                "no command \"dron\"; did you mean \"drone\"?",
            ),
            (
                &["queen"][..],
                "no command \"queen\"; the commands are task, drone and events (larve --help)",
            ),
            (
                &["task", "lss"][..],
                "no command \"task lss\"; did you mean \"task ls\"?",
            ),
            (
                &["drone", "drian", "drone-1"][..],
                "no command \"drone drian\"; did you mean \"drone drain\"?",
            ),
        ] {
            let mistake = parse_args(args).unwrap_err();
            assert_eq!(mistake.why, said, "{args:?}");
            assert_eq!(mistake.hint, None, "one line: {args:?}");
            assert!(!mistake.to_string().contains('\n'));
        }
        let mistake = parse_args(&["--queen", "--heartbeat-intervall", "1"]).unwrap_err();
        assert_eq!(
            mistake.why,
            "unexpected argument \"--heartbeat-intervall\"; did you mean --heartbeat-interval?"
        );
        assert_eq!(mistake.to_string().lines().count(), 2, "{mistake}");
        assert!(mistake.to_string().contains("usage: larve"));
    }
}
