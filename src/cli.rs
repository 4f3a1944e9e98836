//! The command line: flags in, a [`Config`] out. Every mistake is caught here, before anything starts.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::address;
use crate::auth::Token;
use crate::config::{
    Config, ConnectionLimits, DroneConfig, EtcdConfig, HeartbeatConfig, QueenConfig, RoleConfig,
    StoreConfig,
};
use crate::tls::{ClientTls, LarveTls};

/// The help text, printed by `--help` and after every command-line error.
pub const USAGE: &str = "\
usage: larve --queen [--port 8080] [--etcd URL[,URL...]] [options]
       larve --queen-host HOST:PORT[,HOST:PORT...] [--port 8080] [options]

A larve is a drone (worker) by default; --queen makes it the queen (control plane).

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
  --etcd-ca PATH                 queen: CA certificate(s) (PEM) to verify etcd with; needed
                                 with https:// endpoints
  --etcd-cert PATH, --etcd-key PATH
                                 queen: client certificate and key (PEM) shown to etcd
  --etcd-prefix PREFIX           queen: prefix of Hive's keys in etcd (default /hive/)
  --leader-ttl SECONDS           queen: the leader's lease, whole seconds (default 5)
  --heartbeat-interval SECONDS   queen: pause between heartbeat rounds (default 10)
  --heartbeat-attempts N         queen: tries per drone per round before removal (default 4)
  --heartbeat-timeout SECONDS    queen: limit for one try, connect + answer (default 1)
  --heartbeat-retry-delay SECS   queen: pause between tries (default 0.5)
  --task-timeout SECONDS         queen: limit for handing a task to one drone (default 2)
  --token-file PATH              file holding the cluster token (or set HIVE_TOKEN); with a
                                 token, tasks, registration and the drone list need it
  --tls-cert PATH, --tls-key PATH
                                 serve HTTPS with this certificate (chain) and key (PEM), and
                                 call other larves over HTTPS showing them; needs --tls-ca
  --tls-ca PATH                  CA certificate(s) (PEM) the larves this one calls must be
                                 signed by
  --tls-verify-clients           require every client to show a certificate signed by --tls-ca
  --insecure                     serve plain HTTP on a non-loopback --bind without a warning
                                 (a token is needed there all the same)
  --max-connections N            client connections held at once (default 2048)
  --max-connections-per-peer N   client connections from one address (default 512)
  --log-level LEVEL              error, warn, info, debug or trace (default info)
  -h, --help                     print this help
  -V, --version                  print the version";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// Where Hive's keys go in etcd unless `--etcd-prefix` says otherwise.
const DEFAULT_ETCD_PREFIX: &str = "/hive/";

/// The leader's lease unless `--leader-ttl` says otherwise: a dead leader is replaced within it.
const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);

/// Longest lease `--leader-ttl` takes: an hour without a leader after a crash is surely a typo.
const MAX_LEADER_TTL_SECS: u64 = 3600;

/// Longest duration a flag takes: a day. Longer is surely a typo, and it keeps `Duration` math safe.
const MAX_SECONDS: f64 = 86_400.0;

/// Parses the arguments after the program name, and the `HIVE_TOKEN` environment variable's value
/// (`env_token`). The error is one line saying what is wrong.
pub fn parse(args: Vec<OsString>, env_token: Option<String>) -> Result<Command, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }

    let is_queen = args.contains("--queen");
    let port: u16 = args
        .opt_value_from_fn("--port", |s| {
            s.parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port from 0 to 65535"))
        })
        .map_err(flag_error)?
        .unwrap_or(8080);
    let bind: IpAddr = args
        .opt_value_from_fn("--bind", |s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address"))
        })
        .map_err(flag_error)?
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let log_level = args
        .opt_value_from_fn("--log-level", parse_level)
        .map_err(flag_error)?
        .unwrap_or(LevelFilter::Info);
    let queen_hosts = args
        .opt_value_from_fn("--queen-host", parse_address_list)
        .map_err(flag_error)?;
    let advertise = args
        .opt_value_from_fn("--advertise", parse_address)
        .map_err(flag_error)?;
    let token_file: Option<PathBuf> = args
        .opt_value_from_str("--token-file")
        .map_err(flag_error)?;
    let insecure = args.contains("--insecure");
    let tls_cert: Option<PathBuf> = args.opt_value_from_str("--tls-cert").map_err(flag_error)?;
    let tls_key: Option<PathBuf> = args.opt_value_from_str("--tls-key").map_err(flag_error)?;
    let tls_ca: Option<PathBuf> = args.opt_value_from_str("--tls-ca").map_err(flag_error)?;
    let verify_clients = args.contains("--tls-verify-clients");
    let max_connections = args
        .opt_value_from_fn("--max-connections", parse_count)
        .map_err(|e| format!("--max-connections: {}", flag_error(e)))?;
    let max_per_peer = args
        .opt_value_from_fn("--max-connections-per-peer", parse_count)
        .map_err(|e| format!("--max-connections-per-peer: {}", flag_error(e)))?;
    let etcd = args
        .opt_value_from_fn("--etcd", parse_etcd_endpoints)
        .map_err(|e| format!("--etcd: {}", flag_error(e)))?;
    let etcd_ca: Option<PathBuf> = args.opt_value_from_str("--etcd-ca").map_err(flag_error)?;
    let etcd_cert: Option<PathBuf> = args.opt_value_from_str("--etcd-cert").map_err(flag_error)?;
    let etcd_key: Option<PathBuf> = args.opt_value_from_str("--etcd-key").map_err(flag_error)?;
    let etcd_prefix = args
        .opt_value_from_fn("--etcd-prefix", parse_prefix)
        .map_err(|e| format!("--etcd-prefix: {}", flag_error(e)))?;
    let leader_ttl = args
        .opt_value_from_fn("--leader-ttl", parse_ttl)
        .map_err(|e| format!("--leader-ttl: {}", flag_error(e)))?;

    let defaults = HeartbeatConfig::default();
    let interval = seconds_flag(&mut args, "--heartbeat-interval", false)?;
    let attempts: Option<u32> = args
        .opt_value_from_fn("--heartbeat-attempts", |s| match s.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(format!("{s:?} is not a whole number from 1 to 100")),
        })
        .map_err(flag_error)?;
    let timeout = seconds_flag(&mut args, "--heartbeat-timeout", false)?;
    let retry_delay = seconds_flag(&mut args, "--heartbeat-retry-delay", true)?;
    let task_timeout = seconds_flag(&mut args, "--task-timeout", false)?;

    let rest = args.finish();
    if let Some(extra) = rest.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }

    let env_token = env_token.filter(|t| !t.is_empty());
    let token = match (token_file, env_token) {
        (Some(_), Some(_)) => {
            return Err("both --token-file and HIVE_TOKEN are set; give the token one way".into());
        }
        (Some(path), None) => Some(Token::from_file(&path)?),
        (None, Some(secret)) => {
            Some(Token::new(&secret).map_err(|why| format!("HIVE_TOKEN: {why}"))?)
        }
        (None, None) => None,
    };
    let tls = match (tls_cert, tls_key, tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(LarveTls::load(&cert, &key, &ca, verify_clients)?)
        }
        (None, None, None) if verify_clients => {
            return Err(
                "--tls-verify-clients needs TLS: give --tls-cert, --tls-key and --tls-ca".into(),
            );
        }
        (None, None, None) => None,
        (_, _, None) => {
            return Err("--tls-cert and --tls-key need --tls-ca: a larve calls other larves over HTTPS, and trusts only that CA".into());
        }
        _ => {
            return Err("TLS needs all three of --tls-cert, --tls-key and --tls-ca".into());
        }
    };
    let warnings = exposure(&Exposure {
        bind,
        token: token.is_some(),
        tls: tls.is_some(),
        insecure,
    })?;
    let connections = connection_limits(max_connections, max_per_peer)?;

    // A drone tells its queen where it is, and a queen sharing etcd tells the other queens.
    let told_to_others = !is_queen || etcd.is_some();
    if told_to_others && bind.is_unspecified() && advertise.is_none() {
        return Err(format!(
            "--bind {bind} listens everywhere, so others cannot be told one address: add --advertise HOST:PORT"
        ));
    }
    let role = if is_queen {
        if queen_hosts.is_some() {
            return Err("--queen-host is for drones; a queen does not register anywhere".into());
        }
        let store = match etcd {
            Some((https, endpoints)) => StoreConfig::Etcd(EtcdConfig {
                endpoints,
                prefix: etcd_prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_string()),
                leader_ttl: leader_ttl.unwrap_or(DEFAULT_LEADER_TTL),
                tls: etcd_tls(https, etcd_ca, etcd_cert, etcd_key)?,
            }),
            None => {
                if etcd_prefix.is_some()
                    || leader_ttl.is_some()
                    || etcd_ca.is_some()
                    || etcd_cert.is_some()
                    || etcd_key.is_some()
                {
                    return Err(
                        "--etcd-prefix, --leader-ttl, --etcd-ca, --etcd-cert and --etcd-key need --etcd (the registry is in memory without it)"
                            .into(),
                    );
                }
                StoreConfig::Memory
            }
        };
        RoleConfig::Queen(QueenConfig {
            heartbeat: HeartbeatConfig {
                interval: interval.unwrap_or(defaults.interval),
                attempts: attempts.unwrap_or(defaults.attempts),
                timeout: timeout.unwrap_or(defaults.timeout),
                retry_delay: retry_delay.unwrap_or(defaults.retry_delay),
            },
            task_timeout: task_timeout.unwrap_or(Duration::from_secs(2)),
            advertise,
            store,
        })
    } else {
        let queen_only = [
            ("--heartbeat-interval", interval.is_some()),
            ("--heartbeat-attempts", attempts.is_some()),
            ("--heartbeat-timeout", timeout.is_some()),
            ("--heartbeat-retry-delay", retry_delay.is_some()),
            ("--task-timeout", task_timeout.is_some()),
            ("--etcd", etcd.is_some()),
            ("--etcd-prefix", etcd_prefix.is_some()),
            ("--leader-ttl", leader_ttl.is_some()),
            ("--etcd-ca", etcd_ca.is_some()),
            ("--etcd-cert", etcd_cert.is_some()),
            ("--etcd-key", etcd_key.is_some()),
        ];
        if let Some((flag, _)) = queen_only.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} is a queen setting; add --queen or drop it"));
        }
        let queens = queen_hosts
            .ok_or("a drone needs --queen-host HOST:PORT (or pass --queen to start a queen)")?;
        RoleConfig::Drone(DroneConfig { queens, advertise })
    };

    Ok(Command::Run(Box::new(Config {
        bind,
        port,
        log_level,
        token,
        tls,
        connections,
        warnings,
        role,
    })))
}

/// How a larve faces the network.
struct Exposure {
    bind: IpAddr,
    /// It has a cluster token.
    token: bool,
    /// It serves (and calls) over TLS.
    tls: bool,
    /// `--insecure`: plain HTTP on the network is meant.
    insecure: bool,
}

/// What facing the network asks of a larve, decided in one place: the error that stops it, or the
/// warnings it logs at start. Loopback asks nothing (the tutorial's set-up). Anything else needs
/// the token: whoever reaches the port could otherwise run tasks, and `--insecure` never waives
/// it. Without TLS the token and every task cross the network in clear text: the larve says so,
/// unless `--insecure` says plain HTTP is meant.
fn exposure(larve: &Exposure) -> Result<Vec<String>, String> {
    let bind = larve.bind;
    if bind.is_loopback() {
        return Ok(Vec::new());
    }
    if !larve.token {
        return Err(format!(
            "--bind {bind} serves the network without a token, so anyone there can run tasks: set --token-file or HIVE_TOKEN (--insecure waives TLS, never the token)"
        ));
    }
    if !larve.tls && !larve.insecure {
        return Ok(vec![format!(
            "serving plain HTTP on {bind}: the cluster token and every task cross the network in clear text; give --tls-cert, --tls-key and --tls-ca (or --insecure if plain HTTP is meant)"
        )]);
    }
    Ok(Vec::new())
}

/// The connection caps: the defaults, or what the flags say; one address never gets more than
/// all of them.
fn connection_limits(
    total: Option<usize>,
    per_peer: Option<usize>,
) -> Result<ConnectionLimits, String> {
    let defaults = ConnectionLimits::default();
    let total = total.unwrap_or(defaults.total);
    match per_peer {
        Some(per_peer) if per_peer > total => Err(format!(
            "--max-connections-per-peer {per_peer} is more than --max-connections {total}"
        )),
        Some(per_peer) => Ok(ConnectionLimits { total, per_peer }),
        None => Ok(ConnectionLimits {
            total,
            per_peer: defaults.per_peer.min(total),
        }),
    }
}

/// The TLS a queen reaches etcd with: none for `http://` endpoints, a CA and maybe a client
/// certificate for `https://` ones.
fn etcd_tls(
    https: bool,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<ClientTls>, String> {
    if !https {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err(
                "--etcd-ca, --etcd-cert and --etcd-key need https:// endpoints in --etcd".into(),
            );
        }
        return Ok(None);
    }
    let ca =
        ca.ok_or("https:// etcd endpoints need --etcd-ca, the CA that signed etcd's certificate")?;
    let identity = match (&cert, &key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => return Err("--etcd-cert and --etcd-key go together".into()),
    };
    ClientTls::etcd(&ca, identity).map(Some)
}

fn flag_error(e: pico_args::Error) -> String {
    match e {
        pico_args::Error::Utf8ArgumentParsingFailed { value, cause } => {
            format!("{value:?}: {cause}")
        }
        pico_args::Error::OptionWithoutAValue(flag) => format!("{flag} needs a value"),
        other => other.to_string(),
    }
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(s.parse().expect("a known level")),
        _ => Err(format!(
            "{s:?} is not one of error, warn, info, debug, trace"
        )),
    }
}

fn parse_address(s: &str) -> Result<String, String> {
    address::validate(s).map(|()| s.to_string())
}

/// `host:port[,host:port...]`, no duplicates.
fn parse_address_list(s: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = s.split(',').map(parse_address).collect::<Result<_, _>>()?;
    unique(list)
}

fn unique(list: Vec<String>) -> Result<Vec<String>, String> {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            return Err(format!("{item:?} is listed twice"));
        }
    }
    Ok(list)
}

/// `http://host:port[,...]` or `https://host:port[,...]`: the client URL of each etcd member, all
/// with one scheme. Whether it is https, and each `host:port`; paths are refused.
fn parse_etcd_endpoints(s: &str) -> Result<(bool, Vec<String>), String> {
    let https = s.starts_with("https://");
    let scheme = if https { "https://" } else { "http://" };
    let list = s
        .split(',')
        .map(|url| {
            let authority = url.strip_prefix(scheme).ok_or_else(|| {
                format!("{url:?} is not an {scheme}HOST:PORT URL (one scheme for every endpoint)")
            })?;
            let authority = authority.strip_suffix('/').unwrap_or(authority);
            address::validate(authority).map(|()| authority.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((https, unique(list)?))
}

/// A count of connections: from 1 to a million.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a whole number from 1 to 1000000")),
    }
}

/// A key prefix: starts with `/`, printable ASCII without spaces; a missing final `/` is added so
/// `/hive` and `/hive2` cannot share keys.
fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || !s.bytes().all(|b| b.is_ascii_graphic()) || s.len() > 128 {
        return Err(format!(
            "{s:?} is not a key prefix: it starts with / and holds at most 128 printable characters without spaces"
        ));
    }
    Ok(if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    })
}

/// Whole seconds: etcd's leases have no finer grain.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) if (1..=MAX_LEADER_TTL_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{s:?} is not a whole number of seconds from 1 to {MAX_LEADER_TTL_SECS}"
        )),
    }
}

fn seconds_flag(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    zero_ok: bool,
) -> Result<Option<Duration>, String> {
    let parse = if zero_ok { parse_pause } else { parse_limit };
    args.opt_value_from_fn(flag, parse)
        .map_err(flag_error)
        .map_err(|why| format!("{flag}: {why}"))
}

/// A pause in fractional seconds; zero skips it.
fn parse_pause(s: &str) -> Result<Duration, String> {
    parse_seconds(s, true)
}

/// An interval or a time limit in fractional seconds; zero would mean never waiting at all.
fn parse_limit(s: &str) -> Result<Duration, String> {
    parse_seconds(s, false)
}

/// Fractional seconds, like `0.25`. Zero only where a pause may be skipped.
fn parse_seconds(s: &str, zero_ok: bool) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let low_ok = if zero_ok { secs >= 0.0 } else { secs > 0.0 };
    if !secs.is_finite() || !low_ok || secs > MAX_SECONDS {
        let low = if zero_ok { "from 0" } else { "above 0" };
        return Err(format!(
            "{s:?} is not a number of seconds {low} and at most {MAX_SECONDS}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        run_with_token(args, None)
    }

    fn run_with_token(args: &[&str], token: Option<&str>) -> Result<Config, String> {
        match parse(
            args.iter().map(OsString::from).collect(),
            token.map(String::from),
        )? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn tutorial_command_lines_parse() {
        let queen = run(&["--queen"]).unwrap();
        assert_eq!(queen.port, 8080);
        let RoleConfig::Queen(q) = queen.role else {
            panic!("not a queen")
        };
        assert_eq!(q.heartbeat, HeartbeatConfig::default());
        assert_eq!(q.task_timeout, Duration::from_secs(2));

        let drone = run(&["--queen-host", "127.0.0.1:8080", "--port", "5001"]).unwrap();
        assert_eq!(drone.port, 5001);
        assert_eq!(
            drone.role,
            RoleConfig::Drone(DroneConfig {
                queens: vec!["127.0.0.1:8080".into()],
                advertise: None
            })
        );
    }

    #[test]
    fn fractional_heartbeat_settings() {
        let config = run(&[
            "--queen",
            "--heartbeat-interval",
            "0.2",
            "--heartbeat-attempts",
            "2",
            "--heartbeat-timeout",
            "0.1",
            "--heartbeat-retry-delay",
            "0",
        ])
        .unwrap();
        let RoleConfig::Queen(q) = config.role else {
            panic!("not a queen")
        };
        assert_eq!(q.heartbeat.interval, Duration::from_millis(200));
        assert_eq!(q.heartbeat.attempts, 2);
        assert_eq!(q.heartbeat.retry_delay, Duration::ZERO);
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        for (args, needle) in [
            (&["--port", "5001"][..], "--queen-host"),
            (
                &["--queen", "--queen-host", "127.0.0.1:8080"][..],
                "for drones",
            ),
            (&["--queen", "--port", "99999"][..], "not a port"),
            (&["--queen", "--port"][..], "needs a value"),
            (&["--queen", "--heartbeat-interval", "0"][..], "above 0"),
            (&["--queen", "--heartbeat-interval", "NaN"][..], "seconds"),
            (&["--queen", "--heartbeat-timeout", "-1"][..], "seconds"),
            (&["--queen", "--heartbeat-attempts", "0"][..], "1 to 100"),
            (&["--queen", "--log-level", "loud"][..], "not one of"),
            (&["--queen", "--bogus"][..], "unexpected argument"),
            (&["--queen-host", "evil.example/x#"][..], "not host:port"),
            (
                &["--queen-host", "127.0.0.1:8080", "--task-timeout", "1"][..],
                "queen setting",
            ),
            (
                &["--queen-host", "127.0.0.1:1,127.0.0.1:1"][..],
                "listed twice",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:1",
                    "--etcd",
                    "http://127.0.0.1:2379",
                ][..],
                "queen setting",
            ),
            (&["--queen", "--etcd", "127.0.0.1:2379"][..], "http://"),
            (
                &["--queen", "--etcd", "http://127.0.0.1:2379/v3"][..],
                "is not a number",
            ),
            (
                &["--queen", "--etcd", "http://127.0.0.1"][..],
                "not host:port",
            ),
            (&["--queen", "--etcd", ""][..], "http://"),
            (&["--queen", "--leader-ttl", "5"][..], "need --etcd"),
            (
                &[
                    "--queen",
                    "--etcd",
                    "http://127.0.0.1:2379",
                    "--leader-ttl",
                    "0.5",
                ][..],
                "whole number",
            ),
            (
                &["--queen", "--etcd", "http://a:1", "--etcd-prefix", "hive"][..],
                "starts with /",
            ),
            (
                &["--queen", "--tls-cert", "/x.pem", "--tls-key", "/x.key"][..],
                "need --tls-ca",
            ),
            (&["--queen", "--tls-ca", "/ca.pem"][..], "all three"),
            (&["--queen", "--tls-verify-clients"][..], "needs TLS"),
            (
                &[
                    "--queen",
                    "--tls-cert",
                    "/nonexistent/x.pem",
                    "--tls-key",
                    "/x.key",
                    "--tls-ca",
                    "/ca.pem",
                ][..],
                "--tls-cert /nonexistent/x.pem",
            ),
            (
                &["--queen", "--etcd", "https://127.0.0.1:2379"][..],
                "need --etcd-ca",
            ),
            (
                &["--queen", "--etcd", "http://a:1", "--etcd-ca", "/ca.pem"][..],
                "need https://",
            ),
            (
                &["--queen", "--etcd", "https://a:1,http://b:2"][..],
                "one scheme",
            ),
            (
                &[
                    "--queen",
                    "--etcd",
                    "https://a:1",
                    "--etcd-ca",
                    "/ca.pem",
                    "--etcd-cert",
                    "/c.pem",
                ][..],
                "go together",
            ),
            (&["--queen", "--etcd-ca", "/ca.pem"][..], "need --etcd"),
            (
                &["--queen-host", "127.0.0.1:1", "--etcd-key", "/k.pem"][..],
                "queen setting",
            ),
            (&["--queen", "--max-connections", "0"][..], "1 to 1000000"),
            (
                &[
                    "--queen",
                    "--max-connections",
                    "10",
                    "--max-connections-per-peer",
                    "11",
                ][..],
                "more than --max-connections 10",
            ),
            (&["--queen", "--bind", "localhost"][..], "not an IP address"),
            (&["--queen", "--bind", "0.0.0.0"][..], "without a token"),
            (
                &["--queen", "--token-file", "/nonexistent/token"][..],
                "cannot read the token file",
            ),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn several_queens_share_etcd_and_drones_list_them() {
        let queen = run(&[
            "--queen",
            "--etcd",
            "http://127.0.0.1:2379,http://127.0.0.1:22379/",
            "--etcd-prefix",
            "/hive-test",
            "--leader-ttl",
            "2",
            "--advertise",
            "queen-a.example:8080",
        ])
        .unwrap();
        let RoleConfig::Queen(q) = queen.role else {
            panic!("not a queen")
        };
        assert_eq!(q.advertise.as_deref(), Some("queen-a.example:8080"));
        assert_eq!(
            q.store,
            StoreConfig::Etcd(EtcdConfig {
                endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()],
                prefix: "/hive-test/".into(),
                leader_ttl: Duration::from_secs(2),
                tls: None,
            })
        );
        let RoleConfig::Queen(alone) = run(&["--queen"]).unwrap().role else {
            panic!("not a queen")
        };
        assert_eq!(alone.store, StoreConfig::Memory);

        let drone = run(&["--queen-host", "127.0.0.1:8080,127.0.0.1:8081"]).unwrap();
        let RoleConfig::Drone(d) = drone.role else {
            panic!("not a drone")
        };
        assert_eq!(d.queens, ["127.0.0.1:8080", "127.0.0.1:8081"]);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(vec!["--help".into()], None), Ok(Command::Help));
        assert_eq!(parse(vec!["-V".into()], None), Ok(Command::Version));
    }

    #[test]
    fn a_token_comes_from_the_environment_or_a_file_never_both() {
        let secret = "0123456789abcdef0123";
        let config = run_with_token(&["--queen"], Some(secret)).unwrap();
        assert_eq!(config.token, Some(Token::new(secret).unwrap()));
        assert_eq!(run_with_token(&["--queen"], Some("")).unwrap().token, None);
        let err = run_with_token(&["--queen"], Some("short")).unwrap_err();
        assert!(err.starts_with("HIVE_TOKEN"), "{err}");
        let err = run_with_token(&["--queen", "--token-file", "/x"], Some(secret)).unwrap_err();
        assert!(err.contains("one way"), "{err}");

        let path = std::env::temp_dir().join(format!("hive-cli-token-{}", std::process::id()));
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        let from_file = run(&["--queen", "--token-file", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file.unwrap().token, Some(Token::new(secret).unwrap()));
    }

    #[test]
    fn the_network_needs_a_token_and_plain_http_there_is_said_out_loud() {
        let secret = Some("0123456789abcdef0123");
        let plain = run_with_token(&["--queen", "--bind", "0.0.0.0"], secret).unwrap();
        assert_eq!(plain.warnings.len(), 1);
        assert!(
            plain.warnings[0].contains("plain HTTP"),
            "{:?}",
            plain.warnings
        );
        let meant = run_with_token(&["--queen", "--bind", "0.0.0.0", "--insecure"], secret);
        assert_eq!(meant.unwrap().warnings, Vec::<String>::new());
        for args in [
            &["--queen", "--bind", "0.0.0.0"][..],
            &["--queen", "--bind", "10.1.2.3", "--insecure"][..],
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains("without a token"), "{args:?}: {err}");
            assert!(err.contains("never the token"), "{args:?}: {err}");
        }
        let local = run(&["--queen", "--bind", "::1"]).expect("loopback needs no token");
        assert!(local.warnings.is_empty());
        // A larve others are told about cannot tell them "everywhere".
        for args in [
            &["--queen-host", "127.0.0.1:8080", "--bind", "0.0.0.0"][..],
            &["--queen", "--etcd", "http://a:1", "--bind", "0.0.0.0"][..],
        ] {
            let err = run_with_token(args, secret).unwrap_err();
            assert!(err.contains("--advertise"), "{args:?}: {err}");
        }
    }

    #[test]
    fn connection_limits_default_and_per_peer_never_exceeds_the_total() {
        let config = run(&["--queen"]).unwrap();
        assert_eq!(config.connections, ConnectionLimits::default());
        let small = run(&["--queen", "--max-connections", "100"]).unwrap();
        assert_eq!(
            small.connections,
            ConnectionLimits {
                total: 100,
                per_peer: 100
            }
        );
        let both = run(&[
            "--queen",
            "--max-connections",
            "100",
            "--max-connections-per-peer",
            "7",
        ])
        .unwrap();
        assert_eq!(both.connections.per_peer, 7);
    }
}
