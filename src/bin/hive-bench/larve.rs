//! The larves the bench starts. Each is held by a [`Larve`] guard that kills it when dropped, so no
//! larve outlives the scenario that started it, even when the scenario fails; its log and stdout go
//! to files in the run's [`WorkDir`].

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Result, wait};

/// Signals [`signal`] sends, by the names `kill` takes.
pub const SIGSTOP: &str = "STOP";
pub const SIGINT: &str = "INT";

/// The environment variable a larve reads its cluster token from.
const TOKEN_ENV: &str = "HIVE_TOKEN";

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
    child: Child,
    pub label: String,
    port: u16,
    stderr_path: PathBuf,
}

impl Larve {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`, as a drone registers itself.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the kernel still completes connections to its port, but nothing answers them.
    pub fn freeze(&self) -> Result<()> {
        signal(self.pid(), SIGSTOP)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Larve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (a name `kill` takes, such as [`SIGSTOP`]) to the process `pid`, with the `kill`
/// command: the standard library sends no signal but SIGKILL.
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid} failed: {status}"))
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
        let child = spawn_logged(&self.binary, args, &stdout_path, &stderr_path)?;
        let mut larve = Larve {
            child,
            label: label.to_string(),
            port: 0,
            stderr_path,
        };
        larve.port = wait::poll(
            START_TIMEOUT,
            START_POLL,
            &format!("{label} to log its address"),
            || {
                if let Some(port) = listening_port(&larve.log()) {
                    return Ok(Some(port));
                }
                match larve.child.try_wait() {
                    Ok(Some(status)) => Err(format!(
                        "{label} exited ({status}) before listening: {}",
                        larve.log().trim()
                    )),
                    _ => Ok(None),
                }
            },
        )?;
        Ok(larve)
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
/// Starts `binary` with `args`, its stdout and stderr to those files, without the cluster token
/// (a token in the environment would lock the bench's own calls out, and the loads would send it).
pub fn spawn_logged(
    binary: &Path,
    args: &[String],
    stdout_path: &Path,
    stderr_path: &Path,
) -> Result<Child> {
    let create = |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    Command::new(binary)
        .args(args)
        .env_remove(TOKEN_ENV)
        .stdin(Stdio::null())
        .stdout(create(stdout_path)?)
        .stderr(create(stderr_path)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

pub fn queen_hosts(queens: &[&Larve]) -> String {
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
