//! The etcd that queens share their registry through: one member on free loopback ports, with its
//! data in a directory of the run's [`WorkDir`](hive_support::larve::WorkDir). Each is held by a
//! [`Member`] guard that kills it and removes its data when dropped, so no etcd outlives the
//! scenario that started it; its log stays with the larves' logs.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_support::process::Process;

use crate::control::Control;
use crate::{Result, progress};

/// Raft timings of a member alone on loopback, in milliseconds: it elects itself at once and is
/// healthy well within a second (etcd's defaults, 100 and 1000, are for networks).
const HEARTBEAT_INTERVAL_MS: u64 = 10;
const ELECTION_TIMEOUT_MS: u64 = 50;

/// How long a member may take to answer healthy, and how often it is asked meanwhile.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTHY_POLL: Duration = Duration::from_millis(20);

/// Lines of a member's log shown when it dies before it is healthy.
const LOG_TAIL_LINES: usize = 10;

/// The etcd binary, with each member's data and log in one directory.
pub struct Etcd {
    binary: PathBuf,
    dir: PathBuf,
}

impl Etcd {
    pub fn new(binary: PathBuf, dir: &Path) -> Etcd {
        Etcd {
            binary,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts a member named `label` on two free loopback ports (clients, peers) and waits until it
    /// answers `GET /health` healthy. Ports are found by binding port 0 and letting go, so another
    /// process could take one meanwhile: the member then dies, and its log says so in the error.
    pub fn start(&self, label: &str, control: &Control) -> Result<Member> {
        if !self.binary.is_file() {
            return Err(format!(
                "no etcd at {} (install it, e.g. apt-get install -y etcd-server, or pass \
                 --etcd-binary PATH)",
                self.binary.display()
            ));
        }
        let [client_port, peer_port] = free_ports()?;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let data_dir = self.dir.join(format!("{label}.data"));
        let log_path = self.dir.join(format!("{label}.log"));
        let args: Vec<String> = vec![
            "--name".into(),
            label.into(),
            "--data-dir".into(),
            data_dir.to_string_lossy().into_owned(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("{label}={peer}"),
            "--heartbeat-interval".into(),
            HEARTBEAT_INTERVAL_MS.to_string(),
            "--election-timeout".into(),
            ELECTION_TIMEOUT_MS.to_string(),
        ];
        let command = format!("{} {}", self.binary.display(), args.join(" "));
        progress(&format!("{label}: {command}"));
        let mut process = Process::start(
            &self.binary,
            &args,
            &self.dir.join(format!("{label}.out")),
            &log_path,
        )?;
        process.wait_ready(
            &format!("etcd ({label})"),
            "to be healthy",
            (HEALTHY_TIMEOUT, HEALTHY_POLL),
            || control.etcd_healthy(&client).then_some(()),
            || log_tail(&log_path),
        )?;
        Ok(Member {
            process,
            client_url: client,
            data_dir,
            command,
        })
    }
}

/// A running etcd member. Dropping it kills it with SIGKILL, reaps it and removes its data.
pub struct Member {
    /// Killed when dropped, before the data is removed.
    process: Process,
    client_url: String,
    data_dir: PathBuf,
    command: String,
}

impl Member {
    /// `http://127.0.0.1:PORT`: what a queen's `--etcd` takes.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The command line it was started with, for the report.
    pub fn command(&self) -> &str {
        &self.command
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.process.kill();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// Two distinct free loopback ports: both are bound at once, so they differ, then let go.
fn free_ports() -> Result<[u16; 2]> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| Ok((listener.local_addr()?.port(), listener)))
            .map_err(|e| format!("cannot find a free port: {e}"))
    };
    let (first, _held) = bind()?;
    let (second, _also_held) = bind()?;
    Ok([first, second])
}

/// The last lines of the log at `path`, on one line.
fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" / ")
}
