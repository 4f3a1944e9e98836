//! The daemon's command line: flags in, a [`Config`] out. Every mistake is caught here, before
//! anything starts.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::flags::{
    flag, flag_error, parse_address, parse_address_list, parse_count, parse_path, parse_text,
    token, unique,
};
use super::{USAGE, unexpected};
use crate::address;
use crate::auth::ClientTokens;
use crate::config::{
    Config, ConnectionLimits, DroneConfig, EtcdConfig, HeartbeatConfig, QueenConfig, RoleConfig,
    StoreConfig, TaskConfig,
};
use crate::drone::logs::DEFAULT_MAX_LOG_MB;
use crate::exec::Mode;
use crate::labels::{self, Labels};
use crate::tasks::placement::Policy;
use crate::tasks::{MAX_CPUS, MAX_MEMORY_MB, MAX_SLOTS, MIN_CPUS};
use crate::tls::{ClientTls, LarveTls};

/// Where Hive's keys go in etcd unless `--etcd-prefix` says otherwise.
const DEFAULT_ETCD_PREFIX: &str = "/hive/";

/// The leader's lease unless `--leader-ttl` says otherwise: a dead leader is replaced within it.
const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(5);

/// Longest lease `--leader-ttl` takes: an hour without a leader after a crash is surely a typo.
const MAX_LEADER_TTL_SECS: u64 = 3600;

/// Longest duration a flag takes: a day. Longer is surely a typo, and it keeps `Duration` math safe.
const MAX_SECONDS: f64 = 86_400.0;

/// The most `--max-log-mb` takes: a TiB of each stream of each attempt.
const MAX_LOG_MB: u64 = 1 << 20;

/// Parses a daemon's flags (the arguments after the program name), and the `HIVE_TOKEN`
/// environment variable's value (`env_token`). The error is one line saying what is wrong.
pub(super) fn parse(args: Vec<OsString>, env_token: Option<String>) -> Result<Config, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    let is_queen = args.contains("--queen");
    let port = flag(&mut args, "--port", parse_port)?.unwrap_or(8080);
    let bind = flag(&mut args, "--bind", parse_ip)?.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let log_level = flag(&mut args, "--log-level", parse_level)?.unwrap_or(LevelFilter::Info);
    let queen_hosts = flag(&mut args, "--queen-host", parse_address_list)?;
    let advertise = flag(&mut args, "--advertise", parse_address)?;
    let token_file = flag(&mut args, "--token-file", parse_path)?;
    let client_tokens = flag(&mut args, "--client-tokens", parse_path)?;
    let insecure = args.contains("--insecure");
    let tls_cert = flag(&mut args, "--tls-cert", parse_path)?;
    let tls_key = flag(&mut args, "--tls-key", parse_path)?;
    let tls_ca = flag(&mut args, "--tls-ca", parse_path)?;
    let verify_clients = args.contains("--tls-verify-clients");
    let max_connections = flag(&mut args, "--max-connections", parse_connections)?;
    let max_per_peer = flag(&mut args, "--max-connections-per-peer", parse_connections)?;
    let etcd = flag(&mut args, "--etcd", parse_etcd_endpoints)?;
    let data_dir = flag(&mut args, "--data-dir", parse_path)?;
    let etcd_ca = flag(&mut args, "--etcd-ca", parse_path)?;
    let etcd_cert = flag(&mut args, "--etcd-cert", parse_path)?;
    let etcd_key = flag(&mut args, "--etcd-key", parse_path)?;
    let etcd_prefix = flag(&mut args, "--etcd-prefix", parse_prefix)?;
    let leader_ttl = flag(&mut args, "--leader-ttl", parse_ttl)?;

    let defaults = HeartbeatConfig::default();
    let interval = flag(&mut args, "--heartbeat-interval", parse_limit)?;
    let attempts = flag(&mut args, "--heartbeat-attempts", parse_attempts)?;
    let timeout = flag(&mut args, "--heartbeat-timeout", parse_limit)?;
    let retry_delay = flag(&mut args, "--heartbeat-retry-delay", parse_pause)?;
    let task_timeout = flag(&mut args, "--task-timeout", parse_limit)?;
    let max_pending = flag(&mut args, "--max-pending", parse_max_pending)?;
    let keep_finished = flag(&mut args, "--keep-finished", parse_keep_finished)?;
    let placement = flag(&mut args, "--placement", |s| s.parse::<Policy>())?;
    let allow_exec = args.contains("--allow-exec");
    let slots = flag(&mut args, "--slots", parse_slots)?;
    let work_dir = flag(&mut args, "--work-dir", parse_path)?;
    let max_log_mb = flag(&mut args, "--max-log-mb", parse_max_log_mb)?;
    let containment = flag(&mut args, "--containment", |s| s.parse::<Mode>())?;
    let cgroup_parent = flag(&mut args, "--cgroup-parent", parse_cgroup_parent)?;
    let run_as = flag(&mut args, "--run-as", parse_text)?;
    let pass_env: Vec<String> = args
        .values_from_str::<_, String>("--pass-env")
        .map_err(|e| format!("--pass-env: {}", flag_error(e)))?
        .iter()
        .map(|name| parse_pass_env(name).map_err(|why| format!("--pass-env: {why}")))
        .collect::<Result<_, _>>()?;
    let memory_mb = flag(&mut args, "--memory-mb", parse_memory_mb)?;
    let cpus = flag(&mut args, "--cpus", parse_cpus)?;
    let labels = drone_labels(&mut args)?;

    let rest = args.finish();
    if let Some(extra) = rest.first() {
        return Err(unexpected(extra, USAGE));
    }

    if allow_exec && !is_queen {
        // What a drone's tasks must never read: they may run as another user of this machine.
        for path in [&token_file, &tls_key].into_iter().flatten() {
            private_to_owner(path)?;
        }
    }
    let token = token(token_file, env_token)?;
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
        allow_exec,
    })?;
    let connections = connection_limits(max_connections, max_per_peer)?;

    // A drone tells its queen where it is, and a queen sharing etcd tells the other queens.
    let told_to_others = !is_queen || etcd.is_some();
    if told_to_others && bind.is_unspecified() && advertise.is_none() {
        return Err(format!(
            "--bind {bind} listens everywhere, so others cannot be told one address: add --advertise HOST:PORT"
        ));
    }
    // The settings of a drone that runs commands, and which were given.
    let exec_only = [
        ("--slots", slots.is_some()),
        ("--work-dir", work_dir.is_some()),
        ("--max-log-mb", max_log_mb.is_some()),
        ("--containment", containment.is_some()),
        ("--cgroup-parent", cgroup_parent.is_some()),
        ("--run-as", run_as.is_some()),
        ("--pass-env", !pass_env.is_empty()),
        ("--memory-mb", memory_mb.is_some()),
        ("--cpus", cpus.is_some()),
    ];
    let role = if is_queen {
        let drone_only = [
            ("--allow-exec", allow_exec),
            ("--label", !labels.is_empty()),
        ];
        if let Some((flag, _)) = drone_only
            .iter()
            .chain(&exec_only)
            .find(|(_, given)| *given)
        {
            return Err(format!(
                "{flag} is a drone setting; a queen runs no commands"
            ));
        }
        if queen_hosts.is_some() {
            return Err("--queen-host is for drones; a queen does not register anywhere".into());
        }
        let clients = match client_tokens {
            None => ClientTokens::default(),
            Some(_) if token.is_none() => {
                return Err("--client-tokens needs a cluster token (--token-file or HIVE_TOKEN): without one the hive is open to anyone, and scopes would mean nothing".into());
            }
            Some(path) => ClientTokens::from_file(&path, token.as_ref())?,
        };
        if etcd.is_some() && data_dir.is_some() {
            return Err(
                "--data-dir and --etcd are two places for the same state: give one (queens sharing etcd keep it there)"
                    .into(),
            );
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
                match data_dir {
                    Some(dir) => StoreConfig::DataDir(dir),
                    None => StoreConfig::Memory,
                }
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
            clients,
            tasks: TaskConfig {
                max_pending: max_pending.unwrap_or(TaskConfig::default().max_pending),
                keep_finished: keep_finished.unwrap_or(TaskConfig::default().keep_finished),
                placement: placement.unwrap_or_default(),
            },
        })
    } else {
        let queen_only = [
            ("--heartbeat-interval", interval.is_some()),
            ("--heartbeat-attempts", attempts.is_some()),
            ("--heartbeat-timeout", timeout.is_some()),
            ("--heartbeat-retry-delay", retry_delay.is_some()),
            ("--task-timeout", task_timeout.is_some()),
            ("--etcd", etcd.is_some()),
            ("--client-tokens", client_tokens.is_some()),
            ("--data-dir", data_dir.is_some()),
            ("--etcd-prefix", etcd_prefix.is_some()),
            ("--leader-ttl", leader_ttl.is_some()),
            ("--max-pending", max_pending.is_some()),
            ("--keep-finished", keep_finished.is_some()),
            ("--placement", placement.is_some()),
            ("--etcd-ca", etcd_ca.is_some()),
            ("--etcd-cert", etcd_cert.is_some()),
            ("--etcd-key", etcd_key.is_some()),
        ];
        if let Some((flag, _)) = queen_only.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} is a queen setting; add --queen or drop it"));
        }
        if !allow_exec && let Some((flag, _)) = exec_only.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{flag} is for a drone that runs commands: add --allow-exec"
            ));
        }
        if containment == Some(Mode::ProcessGroup) && cgroup_parent.is_some() {
            return Err(
                "--cgroup-parent needs cgroups, and --containment process-group makes none".into(),
            );
        }
        let queens = queen_hosts
            .ok_or("a drone needs --queen-host HOST:PORT (or pass --queen to start a queen)")?;
        let machine_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        RoleConfig::Drone(DroneConfig {
            queens,
            advertise,
            exec_slots: allow_exec.then(|| slots.unwrap_or(machine_cpus) as u32),
            work_dir,
            max_log_mb: max_log_mb.unwrap_or(DEFAULT_MAX_LOG_MB),
            containment: containment.unwrap_or_default(),
            cgroup_parent,
            run_as,
            pass_env,
            memory_mb,
            cpus,
            labels,
        })
    };

    Ok(Config {
        bind,
        port,
        log_level,
        token,
        tls,
        connections,
        warnings,
        role,
    })
}

/// A drone's `--label KEY=VALUE` flags: keys and values in the labels' alphabet, no key twice,
/// none of Hive's own `hive.*` (see `labels.rs`).
fn drone_labels(args: &mut pico_args::Arguments) -> Result<Labels, String> {
    let given: Vec<String> = args
        .values_from_str("--label")
        .map_err(|e| format!("--label: {}", flag_error(e)))?;
    let mut labels = Labels::new();
    for text in given {
        let (key, value) = labels::parse_label(&text).map_err(|why| format!("--label: {why}"))?;
        if labels.insert(key.clone(), value).is_some() {
            return Err(format!("--label: {key} is given twice"));
        }
    }
    if labels.len() > labels::MAX_LABELS - OWN_LABELS {
        return Err(format!(
            "--label: {} labels; a drone takes at most {}",
            labels.len(),
            labels::MAX_LABELS - OWN_LABELS
        ));
    }
    Ok(labels)
}

/// The labels a drone finds itself (`hive.os`, `hive.arch`, `hive.hostname`, `hive.cpus`,
/// `hive.memory_mb`), and the queen's `hive.name`: room kept for them under [`labels::MAX_LABELS`].
const OWN_LABELS: usize = 6;

/// How a larve faces the network.
struct Exposure {
    bind: IpAddr,
    /// It has a cluster token.
    token: bool,
    /// It serves (and calls) over TLS.
    tls: bool,
    /// `--insecure`: a network without a token, or plain HTTP on it, is meant.
    insecure: bool,
    /// A drone that runs commands (`--allow-exec`).
    allow_exec: bool,
}

/// What facing the network asks of a larve, decided in one place: the error that stops it, or the
/// warnings it logs at start. Loopback asks nothing (the tutorial's set-up).
/// - A drone that runs commands needs the token, whatever the flags: running commands for anyone
///   on the network is not a mode Hive offers. It needs TLS too, since the token alone would cross
///   the network in clear text; `--insecure` waives the TLS, never the token.
/// - Any other larve needs the token unless `--insecure` says an open larve is meant (the
///   tutorial's Python larves send no token).
/// - Without TLS the token and every task cross the network in clear text: the larve says so,
///   loudly, unless `--insecure` says plain HTTP is meant.
fn exposure(larve: &Exposure) -> Result<Vec<String>, String> {
    let bind = larve.bind;
    if bind.is_loopback() {
        return Ok(Vec::new());
    }
    if larve.allow_exec && !larve.token {
        return Err(format!(
            "--allow-exec on --bind {bind} would run commands for anyone on the network: set --token-file or HIVE_TOKEN (--insecure does not waive this)"
        ));
    }
    if larve.allow_exec && !larve.tls && !larve.insecure {
        return Err(format!(
            "--allow-exec on --bind {bind} needs TLS as well as the token, which would otherwise cross the network in clear text: give --tls-cert, --tls-key and --tls-ca (or --insecure if plain HTTP is meant)"
        ));
    }
    if !larve.token && !larve.insecure {
        return Err(format!(
            "--bind {bind} serves the network without a token, so anyone there can run tasks: set --token-file or HIVE_TOKEN, or add --insecure"
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

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a port (0-65535)"))
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IP address"))
}

fn parse_attempts(s: &str) -> Result<u32, String> {
    parse_count(s, 1, 100).map(|n| n as u32)
}

fn parse_max_pending(s: &str) -> Result<usize, String> {
    parse_count(s, 1, 100_000_000)
}

fn parse_keep_finished(s: &str) -> Result<usize, String> {
    parse_count(s, 0, 100_000_000)
}

fn parse_slots(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_SLOTS as usize)
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(s.parse().expect("a known level")),
        _ => Err(format!(
            "{s:?} is not a level (error, warn, info, debug, trace)"
        )),
    }
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
fn parse_connections(s: &str) -> Result<usize, String> {
    parse_count(s, 1, 1_000_000)
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

/// A cgroup path, as `--cgroup-parent` takes it: from the hierarchies' root, like `/hive`, with
/// plain names only (no `.` or `..`, nothing a cgroup file is named).
fn parse_cgroup_parent(s: &str) -> Result<String, String> {
    let names: Vec<&str> = s.split('/').skip(1).filter(|n| !n.is_empty()).collect();
    let plain = |name: &&str| {
        *name != "."
            && *name != ".."
            && !name.starts_with("cgroup.")
            && name.bytes().all(|b| b.is_ascii_graphic())
    };
    if !s.starts_with('/') || names.is_empty() || !names.iter().all(plain) {
        return Err(format!(
            "{s:?} is not a cgroup path: it starts with / and names groups, like /hive or /system.slice/larve.service/tasks"
        ));
    }
    Ok(format!("/{}", names.join("/")))
}

/// A variable name `--pass-env` may name: never one of Hive's own (`HIVE_TOKEN` is the cluster
/// token, and the others are the drone's settings or what a task is told of itself).
fn parse_pass_env(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(['=', '\0']) {
        return Err(format!("{s:?} is not a variable name"));
    }
    if s.starts_with("HIVE_") {
        return Err(format!(
            "{s} is Hive's own (HIVE_TOKEN is the cluster token): no HIVE_ variable of the drone's reaches a task"
        ));
    }
    Ok(s.to_string())
}

/// MiB of memory a drone offers.
fn parse_memory_mb(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(mb) if (1..=MAX_MEMORY_MB).contains(&mb) => Ok(mb),
        _ => Err(format!(
            "{s:?} is not a whole number of MiB (1-{MAX_MEMORY_MB})"
        )),
    }
}

/// MiB of each output stream of an attempt a drone keeps.
fn parse_max_log_mb(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(mb) if (1..=MAX_LOG_MB).contains(&mb) => Ok(mb),
        _ => Err(format!(
            "{s:?} is not a whole number of MiB (1-{MAX_LOG_MB})"
        )),
    }
}

/// Cpus a drone offers.
fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(cpus) if cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus) => Ok(cpus),
        _ => Err(format!(
            "{s:?} is not a number of cpus ({MIN_CPUS}-{MAX_CPUS})"
        )),
    }
}

/// Refuses a secret file (a token, a TLS key) that anyone but its owner may read: a drone's
/// tasks run as another user of the machine.
fn private_to_owner(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        // Reading it says what is wrong.
        return Ok(());
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by users other than its owner, and a drone's tasks run as another user: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Whole seconds: etcd's leases have no finer grain.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) if (1..=MAX_LEADER_TTL_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{s:?} is not a whole number of seconds (1-{MAX_LEADER_TTL_SECS})"
        )),
    }
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
        let low = if zero_ok { "0" } else { "above 0" };
        return Err(format!(
            "{s:?} is not a number of seconds ({low} to {MAX_SECONDS})"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Token;

    fn run(args: &[&str]) -> Result<Config, String> {
        run_with_token(args, None)
    }

    fn run_with_token(args: &[&str], token: Option<&str>) -> Result<Config, String> {
        parse(
            args.iter().map(OsString::from).collect(),
            token.map(String::from),
        )
    }

    #[test]
    fn a_drone_s_labels_are_its_own_and_in_the_alphabet() {
        let RoleConfig::Drone(d) = run(&[
            "--queen-host",
            "127.0.0.1:8080",
            "--label",
            "zone=eu",
            "--label",
            "example.com/rack=r-7",
        ])
        .unwrap()
        .role
        else {
            panic!("not a drone")
        };
        assert_eq!(
            d.labels,
            Labels::from([
                ("zone".to_string(), "eu".to_string()),
                ("example.com/rack".to_string(), "r-7".to_string())
            ])
        );
        let many: Vec<String> = (0..labels::MAX_LABELS)
            .flat_map(|i| ["--label".to_string(), format!("k{i}=v")])
            .collect();
        let mut args = vec!["--queen-host", "127.0.0.1:8080"];
        args.extend(many.iter().map(String::as_str));
        for (args, needle) in [
            (
                &["--queen-host", "127.0.0.1:8080", "--label", "zone"][..],
                "--label: \"zone\" is not KEY=VALUE",
            ),
            (
                &["--queen-host", "127.0.0.1:8080", "--label", "zone=e u"][..],
                "--label: the value \"e u\" is not 1 to 63 of",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--label",
                    "hive.arch=sparc",
                ][..],
                "Hive's own",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--label",
                    "a=1",
                    "--label",
                    "a=2",
                ][..],
                "a is given twice",
            ),
            (
                &["--queen", "--label", "a=1"][..],
                "--label is a drone setting",
            ),
            (&args[..], "a drone takes at most"),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
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
                advertise: None,
                exec_slots: None,
                work_dir: None,
                max_log_mb: DEFAULT_MAX_LOG_MB,
                containment: Mode::Auto,
                cgroup_parent: None,
                run_as: None,
                pass_env: Vec::new(),
                memory_mb: None,
                cpus: None,
                labels: Labels::new(),
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
            (&["--queen", "--heartbeat-attempts", "0"][..], "(1-100)"),
            (&["--queen", "--log-level", "loud"][..], "not a level"),
            (
                &["--queen-host", "127.0.0.1:1", "--max-log-mb", "0"][..],
                "whole number of MiB",
            ),
            (
                &["--queen-host", "127.0.0.1:1", "--max-log-mb", "5"][..],
                "--allow-exec",
            ),
            (&["--queen", "--bogus"][..], "unexpected argument"),
            (&["--queen-host", "evil.example/x#"][..], "host:port alone"),
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
                "host:port alone",
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
            (&["--queen", "--max-connections", "0"][..], "(1-1000000)"),
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
        let RoleConfig::Queen(kept) = run(&["--queen", "--data-dir", "/var/lib/hive"])
            .unwrap()
            .role
        else {
            panic!("not a queen")
        };
        assert_eq!(kept.store, StoreConfig::DataDir("/var/lib/hive".into()));
        for (args, needle) in [
            (
                &["--queen", "--data-dir", "/d", "--etcd", "http://a:1"][..],
                "give one",
            ),
            (
                &["--queen-host", "127.0.0.1:1", "--data-dir", "/d"][..],
                "--data-dir is a queen setting",
            ),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }

        let drone = run(&["--queen-host", "127.0.0.1:8080,127.0.0.1:8081"]).unwrap();
        let RoleConfig::Drone(d) = drone.role else {
            panic!("not a drone")
        };
        assert_eq!(d.queens, ["127.0.0.1:8080", "127.0.0.1:8081"]);
    }

    #[test]
    fn a_flag_mistake_names_the_flag_and_the_value_once() {
        assert_eq!(
            run(&["--queen", "--port", "abc"]).unwrap_err(),
            "--port: \"abc\" is not a port (0-65535)"
        );
        assert_eq!(
            run(&["--queen", "--port"]).unwrap_err(),
            "--port: needs a value"
        );
        assert_eq!(
            run(&["--queen-host", "http://q:1"]).unwrap_err(),
            "--queen-host: address \"http://q:1\" has a scheme: an address is host:port alone, like 127.0.0.1:5001"
        );
    }

    #[test]
    fn tasks_flags_and_exec() {
        let queen = run(&[
            "--queen",
            "--max-pending",
            "10",
            "--keep-finished",
            "0",
            "--placement",
            "binpack",
        ])
        .unwrap();
        let RoleConfig::Queen(q) = queen.role else {
            panic!("not a queen")
        };
        assert_eq!(
            q.tasks,
            TaskConfig {
                max_pending: 10,
                keep_finished: 0,
                placement: Policy::Binpack
            }
        );
        let drone = run(&[
            "--queen-host",
            "127.0.0.1:8080",
            "--allow-exec",
            "--slots",
            "8",
        ])
        .unwrap();
        let RoleConfig::Drone(d) = drone.role else {
            panic!("not a drone")
        };
        assert_eq!(d.exec_slots, Some(8));
        let RoleConfig::Drone(d) = run(&["--queen-host", "127.0.0.1:8080"]).unwrap().role else {
            panic!()
        };
        assert_eq!(d.exec_slots, None, "off by default");
        let RoleConfig::Drone(d) = run(&[
            "--queen-host",
            "127.0.0.1:8080",
            "--allow-exec",
            "--containment",
            "cgroup",
            "--cgroup-parent",
            "/system.slice//larve.service/",
            "--run-as",
            "builder",
            "--pass-env",
            "HTTP_PROXY",
            "--pass-env",
            "GOPATH",
            "--memory-mb",
            "2048",
            "--cpus",
            "1.5",
            "--max-log-mb",
            "20",
        ])
        .unwrap()
        .role
        else {
            panic!()
        };
        assert_eq!(d.max_log_mb, 20);
        assert_eq!(
            (
                d.containment,
                d.cgroup_parent.as_deref(),
                d.run_as.as_deref(),
                d.pass_env.as_slice(),
                d.memory_mb,
                d.cpus
            ),
            (
                Mode::Cgroup,
                Some("/system.slice/larve.service"),
                Some("builder"),
                &["HTTP_PROXY".to_string(), "GOPATH".to_string()][..],
                Some(2048),
                Some(1.5)
            )
        );
        for (args, needle) in [
            (
                &["--queen", "--placement", "random"][..],
                "spread or binpack",
            ),
            (&["--queen", "--max-pending", "0"][..], "--max-pending"),
            (&["--queen", "--allow-exec"][..], "drone setting"),
            (
                &["--queen-host", "127.0.0.1:8080", "--slots", "2"][..],
                "--allow-exec",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--slots",
                    "0",
                ][..],
                "--slots",
            ),
            (
                &["--queen-host", "127.0.0.1:8080", "--max-pending", "5"][..],
                "queen setting",
            ),
            (
                &["--queen-host", "127.0.0.1:8080", "--run-as", "nobody"][..],
                "--run-as is for a drone that runs commands",
            ),
            (&["--queen", "--containment", "cgroup"][..], "drone setting"),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--containment",
                    "jail",
                ][..],
                "not auto, cgroup or process-group",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--pass-env",
                    "HIVE_TOKEN",
                ][..],
                "--pass-env: HIVE_TOKEN is Hive's own",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--pass-env",
                    "A=B",
                ][..],
                "not a variable name",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--cgroup-parent",
                    "/hive/../../etc",
                ][..],
                "not a cgroup path",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--cgroup-parent",
                    "hive",
                ][..],
                "not a cgroup path",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--containment",
                    "process-group",
                    "--cgroup-parent",
                    "/hive",
                ][..],
                "needs cgroups",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--cpus",
                    "0",
                ][..],
                "--cpus",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--memory-mb",
                    "0",
                ][..],
                "--memory-mb",
            ),
            (
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--bind",
                    "0.0.0.0",
                    "--advertise",
                    "10.0.0.1:8080",
                    "--insecure",
                ][..],
                "does not waive",
            ),
        ] {
            let err = run(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }
        let secret = Some("0123456789abcdef0123");
        assert!(
            run_with_token(
                &[
                    "--queen-host",
                    "127.0.0.1:8080",
                    "--allow-exec",
                    "--bind",
                    "0.0.0.0",
                    "--advertise",
                    "10.0.0.1:8080",
                    "--insecure"
                ],
                secret
            )
            .is_ok()
        );
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
        let file = path.to_str().unwrap();
        let from_file = run(&["--queen", "--token-file", file]);
        // A drone whose tasks run as another user refuses a token file they could read.
        let exec = [
            "--queen-host",
            "127.0.0.1:8080",
            "--allow-exec",
            "--token-file",
            file,
        ];
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let readable = run(&exec);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let private = run(&exec);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file.unwrap().token, Some(Token::new(secret).unwrap()));
        let err = readable.unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(private.unwrap().token, Some(Token::new(secret).unwrap()));
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
        let err = run(&["--queen", "--bind", "0.0.0.0"]).unwrap_err();
        assert!(err.contains("without a token"), "{err}");
        let open = run(&["--queen", "--bind", "10.1.2.3", "--insecure"]);
        assert!(
            open.is_ok_and(|config| config.warnings.is_empty()),
            "--insecure says an open larve is meant (a hive of the tutorial's Python larves)"
        );
        let tls = ["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"];
        let exec = [
            "--queen-host",
            "127.0.0.1:8080",
            "--allow-exec",
            "--bind",
            "10.1.2.3",
        ];
        let err = run_with_token(&exec, secret).unwrap_err();
        assert!(err.contains("needs TLS"), "{err}");
        let err = run(&[&exec[..], &["--insecure"]].concat()).unwrap_err();
        assert!(err.contains("does not waive"), "{err}");
        assert!(run_with_token(&[&exec[..], &["--insecure"]].concat(), secret).is_ok());
        let err = run_with_token(&[&exec[..], &tls[..]].concat(), secret).unwrap_err();
        assert!(
            !err.contains("needs TLS"),
            "the TLS files are read (and missing here): {err}"
        );
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
