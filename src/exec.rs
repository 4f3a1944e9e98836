//! INTERIM: replaced by the executor of the `exec` branch before this lands.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub struct Spec {
    pub task: String,
    pub attempt: u32,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub drone_address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub stdout: Output,
    pub stderr: Output,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
}

pub struct Leftover {
    pub task: String,
    pub attempt: u32,
}

pub struct Executor {
    root: PathBuf,
}

pub struct Running {
    stop: Arc<AtomicBool>,
}

impl Running {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Executor {
    pub fn new(work_root: PathBuf, _kill_grace: Duration) -> io::Result<Executor> {
        std::fs::create_dir_all(&work_root)?;
        Ok(Executor { root: work_root })
    }

    pub fn reap_leftovers(&self) -> Vec<Leftover> {
        Vec::new()
    }

    pub fn start(&self, spec: Spec, on_end: impl FnOnce(Outcome) + Send + 'static) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dir = self.root.join(format!("{}.{}", spec.task, spec.attempt));
        std::thread::spawn(move || {
            let started_at = SystemTime::now();
            let _ = std::fs::create_dir_all(&dir);
            let child = Command::new(&spec.command[0])
                .args(&spec.command[1..])
                .envs(&spec.env)
                .env("HIVE_TASK_ID", &spec.task)
                .env("HIVE_ATTEMPT", spec.attempt.to_string())
                .env("HIVE_DRONE_ADDRESS", &spec.drone_address)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    on_end(Outcome {
                        ending: Ending::Failed,
                        exit_code: None,
                        reason: format!("could not start {:?}: {e}", spec.command[0]),
                        stdout: Output::default(),
                        stderr: Output::default(),
                        started_at,
                        ended_at: SystemTime::now(),
                    });
                    return;
                }
            };
            let mut out = child.stdout.take().unwrap();
            let mut err = child.stderr.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = out.read_to_string(&mut text);
                text
            });
            let err_reader = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            });
            let deadline = Instant::now() + spec.timeout;
            let mut ending = None;
            let status = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break status;
                }
                if flag.load(Ordering::Relaxed) && ending.is_none() {
                    ending = Some(Ending::Cancelled);
                    let _ = child.kill();
                }
                if Instant::now() > deadline && ending.is_none() {
                    ending = Some(Ending::TimedOut);
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            let stdout = reader.join().unwrap_or_default();
            let stderr = err_reader.join().unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            let code = status.code();
            let ending = ending.unwrap_or(if code == Some(0) {
                Ending::Succeeded
            } else {
                Ending::Failed
            });
            on_end(Outcome {
                ending,
                exit_code: code,
                reason: match (ending, code) {
                    (Ending::TimedOut, _) => "timed out".into(),
                    (Ending::Cancelled, _) => "cancelled".into(),
                    (_, Some(c)) => format!("exit code {c}"),
                    _ => "killed by a signal".into(),
                },
                stdout: Output {
                    text: stdout,
                    truncated: false,
                },
                stderr: Output {
                    text: stderr,
                    truncated: false,
                },
                started_at,
                ended_at: SystemTime::now(),
            });
        });
        Running { stop }
    }
}
