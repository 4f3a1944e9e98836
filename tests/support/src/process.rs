//! The bench's child processes (larves, wrk, etcd). Each is started with its output in files and
//! held by a [`Process`] guard that kills and reaps it when dropped, so none outlives the scenario
//! that started it, even when the scenario fails.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{Result, wait};

/// Signals [`Process::signal`] sends, by the names `kill` takes.
pub const SIGSTOP: &str = "STOP";
pub const SIGINT: &str = "INT";

/// The environment variable a larve reads its cluster token from.
const TOKEN_ENV: &str = "HIVE_TOKEN";

/// A running child; dropping it kills it with SIGKILL and reaps it.
pub struct Process(Child);

impl Process {
    /// Starts `binary` with `args`, its stdout and stderr to those files, without the cluster token
    /// (a token in the environment would lock the bench's own calls out, and wrk would send it).
    pub fn start(
        binary: &Path,
        args: &[String],
        stdout_path: &Path,
        stderr_path: &Path,
    ) -> Result<Process> {
        let create =
            |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
        Command::new(binary)
            .args(args)
            .env_remove(TOKEN_ENV)
            .stdin(Stdio::null())
            .stdout(create(stdout_path)?)
            .stderr(create(stderr_path)?)
            .spawn()
            .map(Process)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status once it has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.0
            .try_wait()
            .map_err(|e| format!("process {}: {e}", self.0.id()))
    }

    /// Calls `ready` every `every` until it gives a value, for up to `within`; `who` exiting first
    /// fails at once, with what `log` gives. The errors name `who` and what was awaited, `goal`.
    pub fn wait_ready<T>(
        &mut self,
        who: &str,
        goal: &str,
        (within, every): (Duration, Duration),
        mut ready: impl FnMut() -> Option<T>,
        log: impl Fn() -> String,
    ) -> Result<T> {
        wait::poll(within, every, &format!("{who} {goal}"), || {
            if let Some(value) = ready() {
                return Ok(Some(value));
            }
            match self.0.try_wait() {
                Ok(Some(status)) => Err(format!(
                    "{who} exited ({status}) while waiting for it {goal}: {}",
                    log()
                )),
                _ => Ok(None),
            }
        })
    }

    /// Sends `signal` (a name `kill` takes, such as [`SIGSTOP`]) with the `kill` command: the
    /// standard library sends no signal but SIGKILL.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.id();
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

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
