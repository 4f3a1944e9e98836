//! Larves started as real processes. The binary is the caller's to name: the integration tests have
//! it from Cargo (`CARGO_BIN_EXE_larve`, which exists only for the hive crate's own tests), the
//! bench from its command line. Each larve is held by a [`Larve`], whose process is killed when it
//! is dropped (see [`crate::process`]); its log (stderr) and its stdout (a drone's task texts) go
//! to files in the caller's directory.

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::Result;
use crate::process::{Process, SIGCONT, SIGSTOP, SIGTERM};

/// The environment variable a larve reads its cluster token from.
pub const TOKEN_ENV: &str = "HIVE_TOKEN";

/// How long a larve may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a starting larve's log is read for its address.
const START_POLL: Duration = Duration::from_millis(10);

/// How to start a larve beyond its arguments.
#[derive(Default)]
pub struct Launch {
    /// Environment variables to set; [`TOKEN_ENV`] is otherwise removed.
    pub env: Vec<(&'static str, String)>,
    /// A lower limit on open file descriptors (`ulimit -n`).
    pub max_open_files: Option<u32>,
    /// A user id to run as (its group id the same, no other groups) instead of the caller's.
    pub user: Option<u32>,
    /// A limit on the processes and threads its user may have at once (`RLIMIT_NPROC`).
    pub max_processes: Option<u32>,
}

impl Launch {
    /// Launch with the cluster token set.
    pub fn token(token: &str) -> Launch {
        Launch {
            env: vec![(TOKEN_ENV, token.to_string())],
            ..Launch::default()
        }
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
    /// it logs the address it listens on.
    pub fn start(&self, label: &str, args: &[impl AsRef<OsStr>], launch: &Launch) -> Result<Larve> {
        let mut larve = self.spawn(label, args, launch)?;
        let stderr_path = larve.stderr_path.clone();
        let log = || fs::read_to_string(&stderr_path).unwrap_or_default();
        let address = larve.process.wait_ready(
            label,
            "to log its address",
            (START_TIMEOUT, START_POLL),
            || listening_address(&log()),
            || log().trim().to_string(),
        )?;
        larve.address = Some(address);
        Ok(larve)
    }

    /// Starts a larve with `args` without waiting for anything (for a larve expected to exit).
    pub fn spawn(&self, label: &str, args: &[impl AsRef<OsStr>], launch: &Launch) -> Result<Larve> {
        let stdout_path = self.dir.join(format!("{label}.out"));
        let stderr_path = self.dir.join(format!("{label}.log"));
        let mut command = match launch.max_open_files {
            // The shell lowers its own limit, then becomes the larve (same pid).
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(&self.binary);
                shell
            }
            None => Command::new(&self.binary),
        };
        command.args(args).env_remove(TOKEN_ENV);
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        if let Some(user) = launch.user {
            // std drops the supplementary groups too when root changes its user.
            command.uid(user).gid(user);
        }
        if let Some(most) = launch.max_processes {
            let limit = libc::rlimit {
                rlim_cur: libc::rlim_t::from(most),
                rlim_max: libc::rlim_t::from(most),
            };
            // SAFETY: setrlimit is async-signal-safe, and `limit` is a copy the closure owns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NPROC, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        Ok(Larve {
            process: Process::spawn(command, &stdout_path, &stderr_path)?,
            label: label.to_string(),
            address: None,
            stdout_path,
            stderr_path,
        })
    }
}

/// A running larve. Dropping it kills it with SIGKILL (which also ends a stopped process) and reaps
/// it.
pub struct Larve {
    process: Process,
    pub label: String,
    /// Where it listens, once it has logged it.
    address: Option<SocketAddr>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Larve {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `127.0.0.1:PORT`, as a drone registers itself; empty for a larve started without waiting
    /// for its address ([`Launcher::spawn`]).
    pub fn address(&self) -> String {
        self.address.map(|a| a.to_string()).unwrap_or_default()
    }

    /// The port it listens on; 0 for a larve started without waiting for its address.
    pub fn port(&self) -> u16 {
        self.address.map_or(0, |a| a.port())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM: a clean stop.
    pub fn stop(&self) -> Result<()> {
        self.process.signal(SIGTERM)
    }

    /// SIGSTOP: the kernel still completes connections to its port, but nothing answers them.
    pub fn freeze(&self) -> Result<()> {
        self.process.signal(SIGSTOP)
    }

    /// SIGCONT after [`Larve::freeze`].
    pub fn thaw(&self) -> Result<()> {
        self.process.signal(SIGCONT)
    }

    /// Waits for it to exit by itself within `within` (a larve that refuses its arguments), and its
    /// exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        self.process.wait_exit(within)
    }

    /// Everything it logged so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// What it printed to stdout so far (a drone's task texts).
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }
}

/// The address in a larve's `... listening on 127.0.0.1:PORT; ...` (queen) or `..., ...` (drone)
/// line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once(" listening on ")?;
        rest.split([';', ',']).next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_a_queens_or_a_drones_line() {
        let queen =
            "10:00:00 [INFO] queen listening on 127.0.0.1:8080; heartbeat every 10s, 3 tries of 2s";
        let drone =
            "10:00:00 [INFO] drone listening on 127.0.0.1:5001, known to queens as 127.0.0.1:5001";
        assert_eq!(
            listening_address(&format!("starting\n{queen}\n")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            listening_address(drone),
            Some("127.0.0.1:5001".parse().unwrap())
        );
        assert_eq!(listening_address("starting\n"), None);
    }
}
