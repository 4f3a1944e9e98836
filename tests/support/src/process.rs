//! Child processes (larves, etcd, wrk). Each is started with its output in files and held by a
//! [`Process`] guard that kills and reaps it when dropped, so none outlives the test or scenario
//! that started it, even when that fails.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::larve::TOKEN_ENV;
use crate::{Result, wait};

/// Signals [`Process::signal`] sends, by the names `kill` takes.
pub const SIGSTOP: &str = "STOP";
pub const SIGTERM: &str = "TERM";
pub const SIGCONT: &str = "CONT";
pub const SIGINT: &str = "INT";

/// How often [`Process::wait_exit`] looks whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A running child; dropping it kills it with SIGKILL (which also ends a stopped process) and reaps
/// it.
pub struct Process(Child);

impl Process {
    /// Starts `binary` with `args`, its stdout and stderr to those files, without the cluster token
    /// (a token in the environment would lock the caller's own calls out, and wrk would send it).
    pub fn start(
        binary: &Path,
        args: &[impl AsRef<OsStr>],
        stdout_path: &Path,
        stderr_path: &Path,
    ) -> Result<Process> {
        let mut command = Command::new(binary);
        command.args(args).env_remove(TOKEN_ENV);
        Process::spawn(command, stdout_path, stderr_path)
    }

    /// Starts `command` as the caller set it up, with nothing on its stdin and its stdout and
    /// stderr to those files.
    pub fn spawn(mut command: Command, stdout_path: &Path, stderr_path: &Path) -> Result<Process> {
        let create =
            |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
        command
            .stdin(Stdio::null())
            .stdout(create(stdout_path)?)
            .stderr(create(stderr_path)?)
            .spawn()
            .map(Process)
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}",
                    Path::new(command.get_program()).display()
                )
            })
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

    /// Waits for it to exit by itself within `within`, and its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let what = format!("process {} to exit", self.id());
        wait::poll(within, EXIT_POLL, &what, || self.exited())
    }

    /// Calls `ready` every `every` until it gives a value, for up to `within`; `who` exiting first
    /// fails at once. The errors name `who` and what was awaited, `goal`, and end with what `log`
    /// gives, which says why more often than not.
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
                    "{who} exited ({status}) while waiting for it {goal}"
                )),
                _ => Ok(None),
            }
        })
        .map_err(|why| format!("{why}; its log: {}", log()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workdir::WorkDir;

    /// Starts `sh -c script` with its output in `dir`.
    fn sh(dir: &WorkDir, script: &str) -> Process {
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        Process::start(Path::new("sh"), &["-c", script], &out, &err).expect("start sh")
    }

    #[test]
    fn the_exit_status_and_output_are_kept() {
        let dir = WorkDir::create("hive-support-test").expect("a directory");
        let mut process = sh(&dir, "echo said; echo complained >&2; exit 3");
        let status = process.wait_exit(Duration::from_secs(10)).expect("an exit");
        assert_eq!(status.code(), Some(3));
        let read = |name| std::fs::read_to_string(dir.path().join(name)).expect("the output");
        assert_eq!(read("out"), "said\n");
        assert_eq!(read("err"), "complained\n");
    }

    #[test]
    fn a_dropped_guard_kills_even_a_stopped_process() {
        let dir = WorkDir::create("hive-support-test").expect("a directory");
        let process = sh(&dir, "exec sleep 600");
        let pid = process.id();
        process.signal(SIGSTOP).expect("kill -STOP");
        drop(process);
        // Reaped by the guard, so the pid is gone rather than a zombie.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_process_that_exits_while_awaited_fails_the_wait_at_once() {
        let dir = WorkDir::create("hive-support-test").expect("a directory");
        let mut process = sh(&dir, "exit 1");
        let every = Duration::from_millis(10);
        let waited: Result<()> = process.wait_ready(
            "sh",
            "to be ready",
            (Duration::from_secs(60), every),
            || None,
            || "its log".to_string(),
        );
        let why = waited.expect_err("it exited");
        assert!(why.contains("sh exited"), "{why}");
        assert!(why.contains("its log"), "{why}");
    }
}
