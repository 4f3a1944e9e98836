//! The larves the bench starts. Each is held by a [`Larve`], whose process is killed when it is
//! dropped (see `process.rs`); its log and stdout go to files in the run's [`WorkDir`].

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;
use crate::process::{Process, SIGSTOP};

/// How long a larve may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting larve's log is read for its address.
const START_POLL: Duration = Duration::from_millis(10);

/// The run's directory for larve logs and drone stdout; removed when dropped unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("hive-bench-{}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after the run, for a look at what went wrong.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A running larve. Dropping it kills it with SIGKILL (which also ends a stopped process) and reaps
/// it.
pub struct Larve {
    process: Process,
    pub label: String,
    port: u16,
    stderr_path: PathBuf,
}

impl Larve {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `127.0.0.1:PORT`, as a drone registers itself.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: the kernel still completes connections to its port, but nothing answers them.
    pub fn freeze(&self) -> Result<()> {
        self.process.signal(SIGSTOP)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// Starts larves from one binary, with their output in one directory.
pub struct Launcher {
    binary: PathBuf,
    dir: PathBuf,
}

impl Launcher {
    pub fn new(binary: PathBuf, dir: &Path) -> Launcher {
        Launcher {
            binary,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts a larve with `args` (stdout and stderr to files named after `label`) and waits until
    /// it logs the port it listens on.
    pub fn start(&self, label: &str, args: &[String]) -> Result<Larve> {
        let stdout_path = self.dir.join(format!("{label}.out"));
        let stderr_path = self.dir.join(format!("{label}.log"));
        let mut process = Process::start(&self.binary, args, &stdout_path, &stderr_path)?;
        let log = || fs::read_to_string(&stderr_path).unwrap_or_default();
        let port = process.wait_ready(
            label,
            "to log its address",
            (START_TIMEOUT, START_POLL),
            || listening_port(&log()),
            || log().trim().to_string(),
        )?;
        Ok(Larve {
            process,
            label: label.to_string(),
            port,
            stderr_path,
        })
    }

    /// Starts a queen on a free port with `extra` flags.
    pub fn queen(&self, label: &str, extra: &[String]) -> Result<Larve> {
        let mut args: Vec<String> = ["--queen", "--port", "0"].map(String::from).into();
        args.extend_from_slice(extra);
        self.start(label, &args)
    }

    /// Starts a drone of `queens` (several when they share a registry in etcd) on a free port; it
    /// registers itself with the first that answers.
    pub fn drone(&self, label: &str, queens: &[&Larve]) -> Result<Larve> {
        let args = ["--queen-host", &queen_hosts(queens), "--port", "0"].map(String::from);
        self.start(label, &args)
    }
}

/// What a drone's `--queen-host` takes for `queens`: their addresses, comma-separated.
fn queen_hosts(queens: &[&Larve]) -> String {
    queens
        .iter()
        .map(|queen| queen.address())
        .collect::<Vec<_>>()
        .join(",")
}

/// The port in a larve's `... listening on 127.0.0.1:PORT; ...` (queen) or `..., ...` (drone) line.
fn listening_port(log: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(" listening on ")?;
        let address = rest.split([';', ',']).next()?.trim();
        address.parse::<SocketAddr>().ok().map(|a| a.port())
    })
}
