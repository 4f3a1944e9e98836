//! The etcd that queens share their registry through: one member or a cluster, on free loopback
//! ports, with each member's data and log in the caller's directory. An [`Etcd`] guard kills every
//! member and removes their data when dropped, so no etcd outlives the test or scenario that
//! started it; the logs stay with the caller's other logs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ports::free_ports;
use crate::process::Process;
use crate::{Result, rawhttp};

/// Raft timings of members alone on loopback, in milliseconds: they elect a leader at once and are
/// healthy well within a second (etcd's defaults, 100 and 1000, are for networks).
const HEARTBEAT_INTERVAL_MS: u64 = 10;
const ELECTION_TIMEOUT_MS: u64 = 50;

/// How long a member may take to answer healthy, and how often it is asked meanwhile.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTHY_POLL: Duration = Duration::from_millis(20);

/// Limit for one `GET /health`.
const HEALTH_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What etcd's `GET /health` answers when the member has a leader and serves.
const HEALTHY: &str = r#""health":"true""#;

/// Lines of a member's log shown when it dies before it is healthy.
const LOG_TAIL_LINES: usize = 10;

/// One member: how to start it again, and its process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Process>,
}

/// What a member serves its clients over TLS with, requiring a client certificate signed by `ca`
/// (etcd's `--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a TLS member logs once it serves its clients: it cannot be asked over plain HTTP.
const SERVING_SECURELY: &str = "serving client requests on";

/// A running etcd cluster of one member or more. Dropping it kills every member with SIGKILL,
/// reaps them and removes their data.
pub struct Etcd {
    binary: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
    /// `NAME=PEER-URL,...`: every member's `--initial-cluster`.
    initial_cluster: String,
    /// TLS for clients; `None` serves plain HTTP.
    tls: Option<ServerTls>,
}

impl Etcd {
    /// Starts `size` members named `LABEL-I` from `binary` (a path, or a name looked for on the
    /// `PATH`), each on two free loopback ports (clients, peers) with its data and log in `dir`, and
    /// waits until every one answers `GET /health` healthy. Ports are found by binding port 0 and
    /// letting go, so another process could take one meanwhile: the member then dies, and its log
    /// says so in the error.
    pub fn cluster(binary: &Path, dir: &Path, label: &str, size: usize) -> Result<Etcd> {
        Etcd::start_cluster(binary, dir, label, size, None)
    }

    /// [`Etcd::cluster`] serving clients over TLS only, with a client certificate required.
    pub fn cluster_tls(
        binary: &Path,
        dir: &Path,
        label: &str,
        size: usize,
        tls: ServerTls,
    ) -> Result<Etcd> {
        Etcd::start_cluster(binary, dir, label, size, Some(tls))
    }

    fn start_cluster(
        binary: &Path,
        dir: &Path,
        label: &str,
        size: usize,
        tls: Option<ServerTls>,
    ) -> Result<Etcd> {
        let ports = free_ports(2 * size)?;
        let members: Vec<Member> = ports
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| Member {
                name: format!("{label}-{i}"),
                client_port: pair[0],
                peer_port: pair[1],
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        // Built first, so the members already started are killed if a later one fails to start.
        let mut etcd = Etcd {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            members,
            initial_cluster,
            tls,
        };
        for i in 0..size {
            etcd.start(i)?;
        }
        etcd.wait_ready()?;
        Ok(etcd)
    }

    /// What a queen's `--etcd` takes: every member's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| self.client_url(m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many members the cluster has, running or not.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s command line, for a report.
    pub fn command(&self, i: usize) -> String {
        format!("{} {}", self.binary.display(), self.args(i).join(" "))
    }

    /// Starts member `i` (again, on its data directory, after [`Etcd::kill`]) without waiting for
    /// it to be healthy.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let name = &self.members[i].name;
        let process = Process::start(
            &self.binary,
            &self.args(i),
            &self.dir.join(format!("{name}.out")),
            &log_path(&self.dir, name),
        )
        .map_err(|e| format!("{e} (is etcd installed? Debian's package is etcd-server)"))?;
        self.members[i].process = Some(process);
        Ok(())
    }

    /// Kills member `i` with SIGKILL and reaps it; its data stays for [`Etcd::start`].
    pub fn kill(&mut self, i: usize) {
        self.members[i].process = None;
    }

    /// Sends member `i` a signal by `kill`'s name for it: `STOP` leaves its ports accepting
    /// connections that nothing answers, as a hung member does; `CONT` wakes it.
    pub fn signal(&self, i: usize, name: &str) -> Result<()> {
        match &self.members[i].process {
            Some(process) => process.signal(name),
            None => Err(format!("etcd {} is not running", self.members[i].name)),
        }
    }

    /// Waits until every running member says it is healthy (the cluster has a leader); a member
    /// that exits meanwhile fails the wait at once, with the end of its log.
    pub fn wait_ready(&mut self) -> Result<()> {
        let dir = &self.dir;
        let tls = self.tls.is_some();
        for member in &mut self.members {
            let Some(process) = &mut member.process else {
                continue;
            };
            let log_path = log_path(dir, &member.name);
            let ready = || match tls {
                true => {
                    fs::read_to_string(&log_path).is_ok_and(|log| log.contains(SERVING_SECURELY))
                }
                false => healthy(member.client_port),
            };
            process.wait_ready(
                &format!("etcd {}", member.name),
                "to be healthy",
                (HEALTHY_TIMEOUT, HEALTHY_POLL),
                || ready().then_some(()),
                || log_tail(&log_path),
            )?;
        }
        Ok(())
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(log_path(&self.dir, &self.members[i].name)).unwrap_or_default()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.data", self.members[i].name))
    }

    /// Member `i`'s arguments.
    fn args(&self, i: usize) -> Vec<String> {
        let member = &self.members[i];
        let client = self.client_url(member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut args: Vec<String> = match &self.tls {
            Some(tls) => vec![
                "--cert-file".into(),
                tls.cert.to_string_lossy().into_owned(),
                "--key-file".into(),
                tls.key.to_string_lossy().into_owned(),
                "--trusted-ca-file".into(),
                tls.ca.to_string_lossy().into_owned(),
                "--client-cert-auth".into(),
            ],
            None => Vec::new(),
        };
        args.extend([
            "--name".into(),
            member.name.clone(),
            "--data-dir".into(),
            self.data_dir(i).to_string_lossy().into_owned(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--heartbeat-interval".into(),
            HEARTBEAT_INTERVAL_MS.to_string(),
            "--election-timeout".into(),
            ELECTION_TIMEOUT_MS.to_string(),
        ]);
        args
    }

    /// `http://127.0.0.1:PORT`, or `https://` with TLS: a member's client URL.
    fn client_url(&self, port: u16) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{port}")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            let _ = fs::remove_dir_all(self.data_dir(i));
        }
    }
}

/// Where the member called `name` logs, in `dir`.
fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// Whether the member with client port `port` answers `GET /health` healthy.
fn healthy(port: u16) -> bool {
    let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    rawhttp::exchange(&format!("127.0.0.1:{port}"), request, HEALTH_CALL_TIMEOUT)
        .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200") && answer.contains(HEALTHY))
}

/// The last lines of the log at `path`, on one line.
fn log_tail(path: &Path) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" / ")
}
