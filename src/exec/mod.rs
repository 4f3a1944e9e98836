//! Running one attempt of a task on a drone: its command in a process group and a directory of its
//! own, its output kept, and nothing of it left running once it has ended.
//!
//! Linux only: it watches processes through pidfds (Linux 5.3 and later) and `/proc`.
//!
//! Here: the attempt's life, from its directory to its outcome. Beside it: `output.rs` (reading
//! and keeping what the command prints), `journal.rs` (the records of the attempts that run),
//! `procfs.rs` (what `/proc` says, and whether a recorded group is still its attempt's) and
//! `threads.rs` (the threads attempts run on).
//!
//! # One thread per attempt
//! [`Executor::start`] hands an attempt to a thread of its own, a new one or one that has ended
//! an attempt before and waits for the next. The thread makes the attempt's directory, spawns the
//! command with std's `Command` (with no `pre_exec` closure, so std keeps its `posix_spawn` fast
//! path; `process_group(0)` and `current_dir` are part of it), records it in the journal, and then
//! waits in one `poll` on four descriptors: the command's stdout and stderr, read as they fill; a
//! pidfd of the command, readable once it has exited; and an eventfd that [`Running::stop`] writes
//! to. The poll's timeout is the next deadline: the attempt's timeout, then the end of the grace
//! after SIGTERM.
//!
//! # Ending a group without racing PID reuse
//! The command leads a new process group, whose id is the command's pid. Signalling that group is
//! safe only while the id cannot name anything else, and it cannot while the leader is unreaped: a
//! zombie keeps its pid, and so the id of its group. So the attempt's thread is the only one that
//! signals the group and the only one that reaps the leader, and it signals only before it reaps
//! (`Group` makes that order the only one its methods allow):
//! - when the pidfd turns readable the leader has exited and is a zombie; the thread kills the
//!   whole group (whatever the command left behind, a `sleep 100 &`), and only then reaps it;
//! - a timeout or a stop sends SIGTERM to the group, and SIGKILL when the grace has passed and the
//!   leader has not exited; its exit is then handled as above. A leader that exits within the grace
//!   ends the grace for its whole group: a task that wants its children to clean up waits for them.
//!
//! Once the group is killed the pipes are read to their end, which comes when the last process
//! holding them has died. A process that left the group (`setsid`) is out of a process group's
//! reach, and only a cgroup could contain it; the pipes it holds are read for at most
//! `DRAIN_WAIT` more.
//!
//! # Directories, records and restarts
//! Under the work root (mode 0700, and refused when others may write to it, because what it holds
//! decides which processes are killed) an attempt is named from its task id, its number and a
//! counter (`build-42.3.17`), with every character outside `[a-z0-9-]` replaced, so that no id can
//! name a path outside the root. `work/<shard>/<name>/` is the command's working directory, made
//! new and empty (only if missing, so no two attempts share one) and removed once the attempt has
//! ended; `SHARDS` says why attempts are spread over subdirectories. The journal `running.log`
//! records each attempt just after its spawn (its process group, the leader's start time and
//! session, the machine's boot id) and again once it has ended.
//!
//! A drone that dies leaves its attempts running, in their own groups. The next executor on the
//! same root finds their directories and records; [`Executor::reap_leftovers`] kills each group
//! that is still its attempt's (`procfs.rs` says how that is told from a group that reuses its id),
//! removes the directories and records the ends. A drone that dies between a spawn and its record
//! leaves a directory without a record: it goes, and a process the next run cannot know of may
//! remain.

mod journal;
mod output;
mod procfs;
pub mod reaper;
mod threads;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::warn;
use parking_lot::Mutex;

use crate::logging::quoted;
use journal::{Journal, Record};
use output::Streams;
use procfs::{Process, all_processes, leftover_group, read_process};
use threads::Threads;

/// How long a drone's attempts get between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How much of each output stream an outcome carries: its last bytes.
pub const KEPT_OUTPUT_BYTES: usize = 64 * 1024;

/// Longest wait for an attempt's pipes to close once its group is killed. Members close them as
/// they die; only a process that left the group keeps them open longer.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Under the work root: the attempts' working directories, and the journal of those that run.
const WORK_DIR: &str = "work";
const JOURNAL_FILE: &str = "running.log";

/// Into how many subdirectories of `work/` the attempts are spread. Making or removing an entry
/// takes its directory's lock, and on a disk file system that is slow enough for attempts in one
/// directory to queue: on ext4, 32 threads making and removing 2,000 directories took 3 to 4
/// times as long in one directory as spread over 32.
const SHARDS: u64 = 16;

/// Longest part of an attempt's name taken from its task id (task ids are at most 63 characters).
const MAX_NAME_TASK_CHARS: usize = 63;

/// Changes at every boot; a record from another boot names no process that still runs.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// An attempt to run: what the drone was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The attempt's id, unique for all time; the command sees it as `HIVE_ATTEMPT_ID`.
    pub id: String,
    /// The task's id; the command sees it as `HIVE_TASK_ID`.
    pub task: String,
    /// Which attempt at the task this is, from 1; the command sees it as `HIVE_ATTEMPT`.
    pub attempt: u32,
    /// The program and its arguments, run without a shell.
    pub command: Vec<String>,
    /// Added to the drone's own environment for the command.
    pub env: BTreeMap<String, String>,
    /// How long the command may run before its group is stopped.
    pub timeout: Duration,
    /// The drone's address as its queen knows it; the command sees it as `HIVE_DRONE_ADDRESS`.
    pub drone_address: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with code 0.
    Succeeded,
    /// The command exited with another code, was killed by a signal, or could not start.
    Failed,
    /// The attempt's timeout passed and its group was stopped.
    TimedOut,
    /// [`Running::stop`] was called and its group was stopped.
    Cancelled,
}

/// What an attempt printed on one stream: the last [`KEPT_OUTPUT_BYTES`] of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The kept bytes as UTF-8, invalid sequences replaced.
    pub text: String,
    /// True when the stream was longer than what is kept, and its start is missing.
    pub truncated: bool,
}

/// Everything a caller learns of an attempt, once nothing of it runs any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ending: Ending,
    /// The command's exit code; `None` when it was killed by a signal or never ran.
    pub exit_code: Option<i32>,
    /// One line for people: "exit code 3", "killed by signal 9", "timed out after 2 s", ...
    pub reason: String,
    pub stdout: Output,
    pub stderr: Output,
    /// When the attempt's thread took it up, and when everything of it had ended.
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
}

/// Runs attempts, each in a directory of its own under one work root.
pub struct Executor {
    shared: Arc<Shared>,
    /// What a previous run left under the root: attempts with a directory or a record, by shard
    /// and name, with their record when there is one.
    previous: Mutex<BTreeMap<(u64, String), Option<Record>>>,
    threads: Arc<Threads>,
}

/// What every attempt's thread needs from its executor.
struct Shared {
    root: PathBuf,
    kill_grace: Duration,
    boot_id: String,
    /// Makes every attempt's name new, even for the same task and attempt.
    next_name: AtomicU64,
    journal: Journal,
}

/// An attempt that has been started; the way to cancel it.
pub struct Running {
    stop: Arc<StopRequest>,
}

/// What an attempt of a previous run left, and what [`Executor::reap_leftovers`] did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The attempt's working directory.
    pub dir: PathBuf,
    /// Its task id and attempt number, when its record could be read.
    pub attempt: Option<(String, u32)>,
    /// The process group that was killed; `None` when nothing of the attempt ran any more.
    pub killed_group: Option<i32>,
    /// Why the directory or the record is still there, if either could not be removed.
    pub removal_error: Option<String>,
}

impl Executor {
    /// An executor whose attempts live under `work_root`, made with mode 0700 if it is missing.
    /// `kill_grace` is the time between SIGTERM and SIGKILL ([`KILL_GRACE`] on a drone). Fails
    /// when the root cannot be made, or others could write to it: its records say which process
    /// groups to kill. One executor at a time per root: a second would take the first's attempts
    /// for leftovers.
    pub fn new(work_root: PathBuf, kill_grace: Duration) -> io::Result<Executor> {
        let root = std::path::absolute(work_root)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)?;
        let meta = fs::metadata(&root)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the work root {} must belong to this user and be writable by no one else",
                    root.display()
                ),
            ));
        }
        let (journal, records) = Journal::open(root.join(JOURNAL_FILE))?;
        let mut previous: BTreeMap<_, _> = records
            .into_iter()
            .map(|(place, record)| (place, Some(record)))
            .collect();
        for shard in 0..SHARDS {
            let dir = root.join(WORK_DIR).join(shard.to_string());
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            for entry in fs::read_dir(&dir)? {
                if let Some(name) = entry?.file_name().to_str()
                    && is_attempt_name(name)
                {
                    previous.entry((shard, name.to_owned())).or_insert(None);
                }
            }
        }
        // New attempts are numbered past every one a previous run left, so none shares a name.
        let next_name = previous
            .keys()
            .filter_map(|(_, name)| name_number(name))
            .max()
            .map_or(0, |last| last + 1);
        let boot_id = fs::read_to_string(BOOT_ID_FILE)
            .map(|id| id.trim().to_owned())
            .unwrap_or_default();
        Ok(Executor {
            shared: Arc::new(Shared {
                root,
                kill_grace,
                boot_id,
                next_name: AtomicU64::new(next_name),
                journal,
            }),
            previous: Mutex::new(previous),
            threads: Arc::default(),
        })
    }

    /// Ends what a previous run of a drone on this work root left running, removes its
    /// directories and records; returns what it found, for a log line each. Kills with SIGKILL at once: the
    /// drone that started those attempts is gone, and nobody waits for their outcome. Only the
    /// first call does anything; call it before starting attempts.
    pub fn reap_leftovers(&self) -> Vec<Leftover> {
        let previous = std::mem::take(&mut *self.previous.lock());
        if previous.is_empty() {
            return Vec::new();
        }
        let processes = all_processes();
        previous
            .into_iter()
            .map(|((shard, name), record)| {
                let place = self.shared.place(shard, name);
                self.shared.reap(&place, record, &processes)
            })
            .collect()
    }

    /// Starts the attempt on a thread of its own and returns at once. `on_end` is called exactly
    /// once, from that thread, when the attempt has ended and nothing of it runs any more; also
    /// when it could not start. (Only when no thread can be started is it called before `start`
    /// returns, from the caller's thread.)
    pub fn start(&self, spec: Spec, on_end: impl FnOnce(Outcome) + Send + 'static) -> Running {
        let stop = Arc::new(StopRequest::new());
        let (shared, thread_stop) = (self.shared.clone(), stop.clone());
        self.threads.run(Box::new(move |thread| {
            on_end(match thread {
                Ok(()) => shared.run(&spec, &thread_stop),
                Err(e) => {
                    let reason = format!("could not start: no thread to run it on: {e}");
                    Ended::failed(reason).at(SystemTime::now())
                }
            })
        }));
        Running { stop }
    }
}

impl Running {
    /// Cancels the attempt: SIGTERM to its group now, SIGKILL when the grace has passed. The
    /// outcome is [`Ending::Cancelled`] unless the attempt had already ended. Calling it again,
    /// or after the end, changes nothing.
    pub fn stop(&self) {
        self.stop.asked.store(true, Ordering::SeqCst);
        if let Ok(wake) = &self.stop.wake {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an eventfd this handle keeps open. It
            // fails only when the counter is full, which wakes the thread just as well.
            unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// A stop asked of one attempt: a flag, and an eventfd that wakes its thread's poll.
struct StopRequest {
    asked: AtomicBool,
    /// An attempt whose eventfd could not be made does not start.
    wake: io::Result<OwnedFd>,
}

impl StopRequest {
    fn new() -> StopRequest {
        // SAFETY: a plain system call; the descriptor it returns is new and ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        let wake = if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: `fd` was just opened and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        StopRequest {
            asked: AtomicBool::new(false),
            wake,
        }
    }
}

/// How an attempt ended, before its times are added.
struct Ended {
    ending: Ending,
    exit_code: Option<i32>,
    reason: String,
    stdout: Output,
    stderr: Output,
}

impl Ended {
    fn failed(reason: String) -> Ended {
        Ended {
            ending: Ending::Failed,
            exit_code: None,
            reason,
            stdout: Output::default(),
            stderr: Output::default(),
        }
    }

    fn at(self, started_at: SystemTime) -> Outcome {
        Outcome {
            ending: self.ending,
            exit_code: self.exit_code,
            reason: self.reason,
            stdout: self.stdout,
            stderr: self.stderr,
            started_at,
            ended_at: SystemTime::now(),
        }
    }
}

/// Why the attempt's thread stopped the group, when it did.
#[derive(Clone, Copy)]
enum StopReason {
    TimedOut,
    Cancelled,
}

impl Shared {
    /// The whole attempt, on its thread. A panic here (a bug) still ends the attempt's group (see
    /// [`Group`]) and still gives the caller its outcome.
    fn run(&self, spec: &Spec, stop: &StopRequest) -> Outcome {
        let started_at = SystemTime::now();
        let ended = panic::catch_unwind(AssertUnwindSafe(|| self.run_attempt(spec, stop)))
            .unwrap_or_else(|_| Ended::failed("the drone failed while running it".into()));
        ended.at(started_at)
    }

    fn run_attempt(&self, spec: &Spec, stop: &StopRequest) -> Ended {
        let wake = match &stop.wake {
            Ok(wake) => wake,
            Err(e) => return Ended::failed(format!("could not start: no eventfd: {e}")),
        };
        let Some(program) = spec.command.first() else {
            return Ended::failed("could not start: the command is empty".into());
        };
        if stop.asked.load(Ordering::SeqCst) {
            return Ended {
                ending: Ending::Cancelled,
                ..Ended::failed("cancelled".into())
            };
        }
        let place = match self.make_place(spec) {
            Ok(place) => place,
            Err(reason) => return Ended::failed(reason),
        };
        let ended = self.run_in(&place, spec, program, wake);
        if let Err(e) = place.remove() {
            warn!(
                "could not remove what attempt {} of task {} left in {}: {e}",
                spec.attempt,
                quoted(&spec.task),
                place.work.display()
            );
        }
        ended
    }

    /// Where the attempt `name` lives under the root.
    fn place(&self, shard: u64, name: String) -> Place {
        let work = self.root.join(WORK_DIR).join(shard.to_string()).join(&name);
        Place { shard, name, work }
    }

    /// Makes the attempt's new, empty working directory; only if it is missing, so that no two
    /// attempts share one. On failure, which could not be made and why.
    fn make_place(&self, spec: &Spec) -> Result<Place, String> {
        loop {
            let number = self.next_name.fetch_add(1, Ordering::Relaxed);
            let name = attempt_name(&spec.task, spec.attempt, number);
            let place = self.place(number % SHARDS, name);
            match DirBuilder::new().mode(0o700).create(&place.work) {
                Ok(()) => return Ok(place),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let dir = place.work.display();
                    return Err(format!("could not make the work dir {dir}: {e}"));
                }
            }
        }
    }

    /// Spawns the command in its place, records it, watches it until it ends, and ends its group.
    fn run_in(&self, place: &Place, spec: &Spec, program: &str, wake: &OwnedFd) -> Ended {
        let mut child = match Command::new(program)
            .args(&spec.command[1..])
            .current_dir(&place.work)
            .envs(&spec.env)
            .env("HIVE_TASK_ID", &spec.task)
            .env("HIVE_ATTEMPT", spec.attempt.to_string())
            .env("HIVE_ATTEMPT_ID", &spec.id)
            .env("HIVE_DRONE_ADDRESS", &spec.drone_address)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return Ended::failed(format!("could not start {}: {e}", quoted(program))),
        };
        let pipes = [
            child
                .stdout
                .take()
                .map(|out| File::from(OwnedFd::from(out))),
            child
                .stderr
                .take()
                .map(|err| File::from(OwnedFd::from(err))),
        ];
        let mut streams = Streams::new(pipes);
        let group = Group::new(child);
        let pidfd = match pidfd_open(group.id()) {
            Ok(pidfd) => pidfd,
            Err(e) => return group.abandon(format!("could not watch its process: {e}")),
        };
        if let Err(e) = self.record(place, spec, group.id()) {
            let journal = self.journal.path.display();
            return group.abandon(format!("could not record it in {journal}: {e}"));
        }
        let stopped = self.watch(&group, &pidfd, wake, &mut streams, spec.timeout);
        // The leader has exited and is a zombie, so the group's id still names only its group:
        // kill whatever the command left in it, then reap.
        group.signal(libc::SIGKILL);
        let status = group.reap();
        if let Err(e) = self.journal.ended(place.shard, &place.name) {
            // The next run finds the record, and that nothing of it runs.
            warn!(
                "could not record the end of attempt {} of task {} in {}: {e}",
                spec.attempt,
                quoted(&spec.task),
                self.journal.path.display()
            );
        }
        streams.drain(Instant::now() + DRAIN_WAIT);
        let (stdout, stderr) = streams.into_outputs();
        let (ending, exit_code, reason) = ending(stopped, status, spec.timeout);
        Ended {
            ending,
            exit_code,
            reason,
            stdout,
            stderr,
        }
    }

    /// Records what a later run needs to end this attempt if this drone dies first.
    fn record(&self, place: &Place, spec: &Spec, pid: i32) -> io::Result<()> {
        let leader = read_process(pid)
            .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat cannot be read")))?;
        self.journal.started(Record {
            shard: place.shard,
            name: place.name.clone(),
            task: spec.task.clone(),
            attempt: spec.attempt,
            process_group: pid,
            start_ticks: leader.start_ticks,
            session: leader.session,
            boot_id: self.boot_id.clone(),
        })
    }

    /// Reads the pipes until the leader exits, stopping its group when its time is up or a stop
    /// is asked: SIGTERM, then SIGKILL after the grace. Returns why it stopped the group, if it
    /// did.
    fn watch(
        &self,
        group: &Group,
        pidfd: &OwnedFd,
        wake: &OwnedFd,
        streams: &mut Streams,
        timeout: Duration,
    ) -> Option<StopReason> {
        // A timeout too long to add to the clock never comes.
        let deadline = Instant::now().checked_add(timeout);
        // Why the group was stopped, and when its SIGKILL is due (`None` once it is sent).
        let mut stopping: Option<(StopReason, Option<Instant>)> = None;
        loop {
            let now = Instant::now();
            match &mut stopping {
                None if deadline.is_some_and(|due| now >= due) => {
                    group.signal(libc::SIGTERM);
                    stopping = Some((StopReason::TimedOut, now.checked_add(self.kill_grace)));
                }
                Some((_, kill_at)) if kill_at.is_some_and(|due| now >= due) => {
                    group.signal(libc::SIGKILL);
                    *kill_at = None;
                }
                _ => {}
            }
            // A stop asked while stopping changes nothing, so the eventfd is watched only before.
            let (until, wake_fd) = match stopping {
                None => (deadline, Some(wake.as_raw_fd())),
                Some((_, kill_at)) => (kill_at, None),
            };
            let woke = streams.pump(Some(pidfd.as_raw_fd()), wake_fd, until);
            if woke.exited {
                return stopping.map(|(why, _)| why);
            }
            if woke.stop_asked {
                group.signal(libc::SIGTERM);
                stopping = Some((
                    StopReason::Cancelled,
                    Instant::now().checked_add(self.kill_grace),
                ));
            }
        }
    }

    /// Ends one attempt a previous run left: kills its group if it still runs, removes its
    /// directory, and records its end.
    fn reap(&self, place: &Place, record: Option<Record>, processes: &[Process]) -> Leftover {
        let killed_group = record
            .as_ref()
            .and_then(|record| leftover_group(record, &self.boot_id, processes));
        if let Some(group) = killed_group {
            // SAFETY: a plain system call; `leftover_group` found the group to be the attempt's.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let mut removal_error = place.remove().err().map(|e| e.to_string());
        if record.is_some()
            && let Err(e) = self.journal.ended(place.shard, &place.name)
        {
            removal_error = Some(format!("its record stays: {e}"));
        }
        Leftover {
            dir: place.work.clone(),
            attempt: record.map(|record| (record.task, record.attempt)),
            killed_group,
            removal_error,
        }
    }
}

/// Where one attempt lives: its shard and name, and its working directory.
struct Place {
    shard: u64,
    name: String,
    work: PathBuf,
}

impl Place {
    /// Removes the working directory, if it is there.
    fn remove(&self) -> io::Result<()> {
        let removed = match fs::remove_dir(&self.work) {
            // Most commands leave their directory empty: then one call removes it.
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                fs::remove_dir_all(&self.work)
            }
            removed => removed,
        };
        match removed {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            removed => removed,
        }
    }
}

/// The ending, exit code and reason of an attempt whose leader has been reaped.
fn ending(
    stopped: Option<StopReason>,
    status: io::Result<ExitStatus>,
    timeout: Duration,
) -> (Ending, Option<i32>, String) {
    let status = match status {
        Ok(status) => status,
        Err(e) => return (Ending::Failed, None, format!("its end is unknown: {e}")),
    };
    let exit_code = status.code();
    match stopped {
        Some(StopReason::TimedOut) => (
            Ending::TimedOut,
            exit_code,
            format!("timed out after {} s", timeout.as_secs_f64()),
        ),
        Some(StopReason::Cancelled) => (Ending::Cancelled, exit_code, "cancelled".into()),
        None => match (exit_code, status.signal()) {
            (Some(0), _) => (Ending::Succeeded, exit_code, "exit code 0".into()),
            (Some(code), _) => (Ending::Failed, exit_code, format!("exit code {code}")),
            (None, Some(signal)) => (Ending::Failed, None, format!("killed by signal {signal}")),
            (None, None) => (Ending::Failed, None, format!("ended: {status}")),
        },
    }
}

/// The command's process group while its leader is unreaped, the only time the group's id
/// surely names it. Signals go only through here, and [`Group::reap`] takes the group away, so no
/// signal can follow the reaping. Dropped unreaped (an early return, a panic), it kills and reaps.
struct Group {
    leader: Child,
    reaped: bool,
}

impl Group {
    fn new(leader: Child) -> Group {
        Group {
            leader,
            reaped: false,
        }
    }

    /// The group's id, which is its leader's pid.
    fn id(&self) -> i32 {
        // A pid fits an i32: that is its type in the kernel.
        self.leader.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a plain system call. The leader is not reaped yet, so the id is still its group's.
        unsafe { libc::kill(-self.id(), signal) };
    }

    fn reap(mut self) -> io::Result<ExitStatus> {
        self.reaped = true;
        self.leader.wait()
    }

    /// Ends a command that cannot be watched or recorded, and says why it failed.
    fn abandon(self, reason: String) -> Ended {
        self.signal(libc::SIGKILL);
        let _ = self.reap();
        Ended::failed(reason)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = self.leader.wait();
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call; the descriptor it returns is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it; descriptors fit an int.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The name of an attempt's directory and record: its task id with every character outside
/// `[a-z0-9-]` replaced by `_`, so the name is never a path (no `/`, no `..`), then the attempt
/// and a number.
fn attempt_name(task: &str, attempt: u32, number: u64) -> String {
    let mut name: String = task
        .chars()
        .take(MAX_NAME_TASK_CHARS)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '_',
        })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    format!("{name}.{attempt}.{number}")
}

/// Whether a name under the work root is one [`attempt_name`] makes: only those are reaped.
fn is_attempt_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let (Some(task), Some(attempt), Some(number), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    !task.is_empty()
        && task
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        && digits(attempt)
        && digits(number)
}

/// The number at the end of an attempt's name.
fn name_number(name: &str) -> Option<u64> {
    name.rsplit('.').next()?.parse().ok()
}

impl fmt::Display for Leftover {
    /// One line for the log: which attempt, what was killed, whether its directory went.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attempt {
            Some((task, attempt)) => write!(
                f,
                "attempt {attempt} of task {} left by a previous run",
                quoted(task)
            )?,
            None => write!(f, "an unrecorded attempt left by a previous run")?,
        }
        match (self.killed_group, &self.attempt) {
            (Some(group), _) => write!(f, ": killed its process group {group}")?,
            (None, Some(_)) => write!(f, ": nothing of it ran any more")?,
            (None, None) => write!(f, ": no record says what it ran")?,
        }
        match &self.removal_error {
            None => write!(f, "; removed {}", self.dir.display()),
            Some(e) => write!(f, "; could not remove {}: {e}", self.dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use journal::records_left;
    use std::io::Write;
    use std::path::Path;
    use std::sync::mpsc;
    use std::thread;

    /// The grace tests give a task between SIGTERM and SIGKILL.
    const GRACE: Duration = Duration::from_millis(200);

    /// Longest a test waits for anything before it fails.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A shell line that prints the pid of the last background process and its start time
    /// (field 22 of its stat; the command names here hold no spaces).
    const PRINT_LAST_BACKGROUND: &str = r#"echo "$! $(cut -d' ' -f22 /proc/$!/stat)""#;

    /// A directory of the test's own, removed at its end: the work root and files tasks signal
    /// through.
    pub(super) struct Scratch {
        path: PathBuf,
    }

    impl Scratch {
        pub(super) fn new() -> Scratch {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "hive-exec-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            Scratch { path }
        }

        fn root(&self) -> PathBuf {
            self.path.join("root")
        }

        fn executor(&self) -> Executor {
            Executor::new(self.root(), GRACE).unwrap()
        }

        pub(super) fn file(&self, name: &str) -> PathBuf {
            self.path.join(name)
        }

        /// What is left under the work root: working directories, and records in the journal.
        fn left_in_root(&self) -> Vec<String> {
            let dirs = fs::read_dir(self.root().join(WORK_DIR))
                .unwrap()
                .flat_map(|shard| fs::read_dir(shard.unwrap().path()).unwrap())
                .map(|entry| entry.unwrap().path().display().to_string());
            let journal = fs::read(self.root().join(JOURNAL_FILE)).unwrap();
            let records = records_left(&journal)
                .into_keys()
                .map(|(shard, name)| format!("record of {shard}/{name}"));
            dirs.chain(records).collect()
        }

        /// Whether `dir` is an attempt's working directory under the work root.
        fn holds(&self, dir: &Path) -> bool {
            let shard = dir.parent().unwrap();
            let shard_number: u64 = shard
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            shard.parent() == Some(&*self.root().join(WORK_DIR))
                && shard_number < SHARDS
                && is_attempt_name(dir.file_name().unwrap().to_str().unwrap())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    /// An attempt a test started. If the test ends without seeing its end, it is stopped and
    /// waited for, so no process of it outlives the test.
    struct Started {
        running: Running,
        ended: mpsc::Receiver<Outcome>,
    }

    impl Started {
        fn outcome(&self) -> Outcome {
            self.ended
                .recv_timeout(PATIENCE)
                .expect("the attempt did not end in time")
        }
    }

    impl Drop for Started {
        fn drop(&mut self) {
            self.running.stop();
            let _ = self.ended.recv_timeout(PATIENCE);
        }
    }

    fn start(executor: &Executor, spec: Spec) -> Started {
        let (sender, ended) = mpsc::channel();
        let running = executor.start(spec, move |outcome| {
            let _ = sender.send(outcome);
        });
        Started { running, ended }
    }

    fn run(executor: &Executor, spec: Spec) -> Outcome {
        start(executor, spec).outcome()
    }

    fn spec(command: &[&str]) -> Spec {
        Spec {
            id: "0123456789abcdef0123456789abcdef".into(),
            task: "t1".into(),
            attempt: 1,
            command: command.iter().map(|arg| arg.to_string()).collect(),
            env: BTreeMap::new(),
            timeout: PATIENCE,
            drone_address: "127.0.0.1:7001".into(),
        }
    }

    fn sh(script: &str) -> Spec {
        spec(&["sh", "-c", script])
    }

    /// `spec` with one more environment variable.
    fn with_env(mut spec: Spec, name: &str, value: &Path) -> Spec {
        spec.env
            .insert(name.into(), value.to_string_lossy().into_owned());
        spec
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting until {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A process a task started, known by its pid and start time so that a later process with
    /// the same pid is not taken for it. Killed at the end of the test if it still runs.
    struct Stray {
        pid: i32,
        start_ticks: u64,
    }

    impl Stray {
        /// From a "<pid> <start ticks>" pair of words.
        fn parse(words: &[&str]) -> Stray {
            Stray {
                pid: words[0].parse().unwrap(),
                start_ticks: words[1].parse().unwrap(),
            }
        }

        /// Still running: a process that has exited counts as gone even while nobody reaps it
        /// (a container's first process may never).
        fn runs(&self) -> bool {
            read_process(self.pid)
                .is_some_and(|p| p.start_ticks == self.start_ticks && !p.is_dead())
        }

        fn wait_gone(&self) {
            wait_until(&format!("process {} is gone", self.pid), || !self.runs());
        }
    }

    impl Drop for Stray {
        fn drop(&mut self) {
            if self.runs() {
                // SAFETY: a plain system call, on the process just checked to be this one.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
        }
    }

    fn strays(text: &str) -> Vec<Stray> {
        text.lines()
            .map(|line| Stray::parse(&line.split(' ').collect::<Vec<_>>()))
            .collect()
    }

    #[test]
    fn exit_codes_say_how_an_attempt_ended() {
        let scratch = Scratch::new();
        let executor = scratch.executor();

        let done = run(&executor, spec(&["true"]));
        assert_eq!(
            (done.ending, done.exit_code, done.reason.as_str()),
            (Ending::Succeeded, Some(0), "exit code 0")
        );
        assert!(done.started_at <= done.ended_at);

        let failed = run(&executor, sh("exit 3"));
        assert_eq!(
            (failed.ending, failed.exit_code, failed.reason.as_str()),
            (Ending::Failed, Some(3), "exit code 3")
        );

        let killed = run(&executor, sh("kill -9 $$"));
        assert_eq!(
            (killed.ending, killed.exit_code, killed.reason.as_str()),
            (Ending::Failed, None, "killed by signal 9")
        );
    }

    #[test]
    fn stdout_and_stderr_are_captured_exactly() {
        let scratch = Scratch::new();
        let outcome = run(
            &scratch.executor(),
            sh(r"printf 'one\ntwo ✓\n'; printf 'warning: ü\n' >&2; printf 'three'; exit 1"),
        );
        assert_eq!(outcome.ending, Ending::Failed);
        assert_eq!(
            outcome.stdout,
            Output {
                text: "one\ntwo ✓\nthree".into(),
                truncated: false
            }
        );
        assert_eq!(
            outcome.stderr,
            Output {
                text: "warning: ü\n".into(),
                truncated: false
            }
        );
    }

    #[test]
    fn the_command_sees_the_task_env_the_drone_env_and_the_hive_variables() {
        let scratch = Scratch::new();
        let mut spec = sh(
            r#"echo "$GREETING|$HIVE_TASK_ID|$HIVE_ATTEMPT|$HIVE_DRONE_ADDRESS|${PATH:+drone path}""#,
        );
        spec.task = "build-7".into();
        spec.attempt = 3;
        spec.env.insert("GREETING".into(), "hello world".into());
        spec.env.insert("HIVE_TASK_ID".into(), "forged".into());
        let outcome = run(&scratch.executor(), spec);
        assert_eq!(
            outcome.stdout.text,
            "hello world|build-7|3|127.0.0.1:7001|drone path\n"
        );
    }

    #[test]
    fn each_attempt_runs_in_a_fresh_directory_that_is_removed_afterwards() {
        let scratch = Scratch::new();
        let executor = scratch.executor();
        let script = "pwd; ls -A; touch made-here; mkdir -p deep/er; touch deep/er/file";
        let first = run(&executor, sh(script)).stdout.text;
        let second = run(&executor, sh(script)).stdout.text;
        assert_ne!(first, second, "same task and attempt, another directory");
        for pwd in [first, second] {
            // `ls -A` printed nothing: the directory was empty.
            let dir = Path::new(pwd.strip_suffix('\n').unwrap());
            assert!(scratch.holds(dir), "{pwd}");
            assert!(!dir.exists(), "{} is still there", dir.display());
        }
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
    }

    #[test]
    fn no_task_id_makes_a_directory_outside_the_work_root() {
        let scratch = Scratch::new();
        let executor = scratch.executor();
        for task in ["../../escaped", "/tmp/escaped", "..", "", "a/../../b"] {
            let mut spec = sh("pwd");
            spec.task = task.into();
            let pwd = run(&executor, spec).stdout.text;
            assert!(scratch.holds(Path::new(pwd.trim())), "{task:?}: {pwd}");
        }
        assert!(!scratch.path.join("escaped").exists());
    }

    #[test]
    fn output_beyond_the_window_keeps_its_last_64_kib_and_says_so() {
        let scratch = Scratch::new();
        let outcome = run(&scratch.executor(), sh("seq 1 30000; seq 1 20000 >&2"));
        let lines = |last: u32| -> String { (1..=last).map(|n| format!("{n}\n")).collect() };
        let (stdout, stderr) = (lines(30000), lines(20000));
        assert!(stdout.len() > KEPT_OUTPUT_BYTES && stderr.len() > KEPT_OUTPUT_BYTES);
        assert_eq!(outcome.ending, Ending::Succeeded);
        assert!(outcome.stdout.truncated && outcome.stderr.truncated);
        assert_eq!(
            outcome.stdout.text,
            stdout[stdout.len() - KEPT_OUTPUT_BYTES..]
        );
        assert_eq!(
            outcome.stderr.text,
            stderr[stderr.len() - KEPT_OUTPUT_BYTES..]
        );
    }

    #[test]
    fn a_task_printing_hundreds_of_megabytes_ends_with_its_tail() {
        let scratch = Scratch::new();
        let outcome = run(&scratch.executor(), sh("yes | head -c 300000000"));
        assert_eq!(outcome.ending, Ending::Succeeded, "{}", outcome.reason);
        assert!(outcome.stdout.truncated);
        assert_eq!(outcome.stdout.text, "y\n".repeat(KEPT_OUTPUT_BYTES / 2));
    }

    #[test]
    fn what_cannot_start_fails_with_a_reason() {
        let scratch = Scratch::new();
        let executor = scratch.executor();

        let missing = run(&executor, spec(&["hive-no-such-program", "arg"]));
        assert_eq!(
            (missing.ending, missing.exit_code, missing.reason.as_str()),
            (
                Ending::Failed,
                None,
                "could not start \"hive-no-such-program\": No such file or directory (os error 2)"
            )
        );

        let empty = run(&executor, spec(&[]));
        assert_eq!(
            (empty.ending, empty.reason.as_str()),
            (Ending::Failed, "could not start: the command is empty")
        );
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());

        // The root is gone and a file stands in its place: no directory can be made in it.
        fs::remove_dir_all(scratch.root()).unwrap();
        fs::write(scratch.root(), "").unwrap();
        let no_dir = run(&executor, spec(&["true"]));
        assert_eq!(no_dir.ending, Ending::Failed);
        let expected = format!("could not make the work dir {}/", scratch.root().display());
        assert!(
            no_dir.reason.starts_with(&expected)
                && no_dir.reason.ends_with(": Not a directory (os error 20)"),
            "{}",
            no_dir.reason
        );
    }

    #[test]
    fn a_timeout_ends_the_whole_group() {
        let scratch = Scratch::new();
        let mut spec = sh(&format!("sleep 100 & {PRINT_LAST_BACKGROUND}; wait"));
        spec.timeout = Duration::from_millis(300);
        let outcome = run(&scratch.executor(), spec);
        let grandchild = strays(&outcome.stdout.text);
        assert_eq!(
            (outcome.ending, outcome.reason.as_str()),
            (Ending::TimedOut, "timed out after 0.3 s")
        );
        assert_eq!(grandchild.len(), 1, "{:?}", outcome.stdout);
        grandchild[0].wait_gone();
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
    }

    #[test]
    fn what_a_finished_task_leaves_behind_is_killed() {
        let scratch = Scratch::new();
        // One background process holds the output pipes, the other has let go of them.
        let script = format!(
            "sleep 100 & {PRINT_LAST_BACKGROUND}; sleep 100 >/dev/null 2>&1 & {PRINT_LAST_BACKGROUND}; exit 0"
        );
        let outcome = run(&scratch.executor(), sh(&script));
        let left = strays(&outcome.stdout.text);
        assert_eq!(outcome.ending, Ending::Succeeded, "{}", outcome.reason);
        assert_eq!(left.len(), 2, "{:?}", outcome.stdout);
        for stray in &left {
            stray.wait_gone();
        }
    }

    #[test]
    fn a_process_that_left_the_group_does_not_keep_the_attempt_open() {
        let scratch = Scratch::new();
        let script = format!("setsid sleep 100 & {PRINT_LAST_BACKGROUND}; exit 0");
        let outcome = run(&scratch.executor(), sh(&script));
        // The escaped process is out of the executor's reach; the test ends it itself.
        let escaped = strays(&outcome.stdout.text);
        assert_eq!(outcome.ending, Ending::Succeeded, "{}", outcome.reason);
        assert_eq!(escaped.len(), 1, "{:?}", outcome.stdout);
    }

    #[test]
    fn attempts_started_together_run_together_on_threads_that_are_reused() {
        let scratch = Scratch::new();
        let executor = scratch.executor();
        let go = scratch.file("go");
        let script = r#"touch "$READY"; while [ ! -e "$GO" ]; do sleep 0.01; done"#;
        for round in 0..2 {
            let _ = fs::remove_file(&go);
            let ready: Vec<PathBuf> = (0..8)
                .map(|i| scratch.file(&format!("ready-{round}-{i}")))
                .collect();
            let started: Vec<Started> = ready
                .iter()
                .map(|ready| {
                    let spec = with_env(sh(script), "READY", ready);
                    start(&executor, with_env(spec, "GO", &go))
                })
                .collect();
            // None waits for another to end: all eight run at once.
            wait_until("every attempt runs", || ready.iter().all(|r| r.exists()));
            fs::write(&go, "").unwrap();
            for attempt in &started {
                assert_eq!(attempt.outcome().ending, Ending::Succeeded);
            }
        }
    }

    #[test]
    fn stop_cancels_a_running_attempt() {
        let scratch = Scratch::new();
        let ready = scratch.file("ready");
        let started = start(
            &scratch.executor(),
            with_env(sh(r#"touch "$READY"; sleep 100"#), "READY", &ready),
        );
        wait_until("the task runs", || ready.exists());
        started.running.stop();
        started.running.stop();
        let outcome = started.outcome();
        assert_eq!(
            (outcome.ending, outcome.exit_code, outcome.reason.as_str()),
            (Ending::Cancelled, None, "cancelled")
        );
        started.running.stop();
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
    }

    #[test]
    fn stop_before_the_command_runs_starts_nothing() {
        let scratch = Scratch::new();
        let ran = scratch.file("ran");
        let executor = scratch.executor();
        // What the attempt's thread does when the stop came before it got to the command.
        let stop = StopRequest::new();
        stop.asked.store(true, Ordering::SeqCst);
        let spec = with_env(sh(r#"touch "$RAN""#), "RAN", &ran);
        let outcome = executor.shared.run(&spec, &stop);
        assert_eq!(
            (outcome.ending, outcome.exit_code, outcome.reason.as_str()),
            (Ending::Cancelled, None, "cancelled")
        );
        assert!(!ran.exists());
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
    }

    #[test]
    fn stop_sends_sigterm_first_so_a_task_can_clean_up() {
        let scratch = Scratch::new();
        let ready = scratch.file("ready");
        let script = r#"trap 'echo cleaning up; exit 7' TERM; touch "$READY"; sleep 100 & wait"#;
        let started = start(&scratch.executor(), with_env(sh(script), "READY", &ready));
        wait_until("the task runs", || ready.exists());
        started.running.stop();
        let outcome = started.outcome();
        assert_eq!(
            (outcome.ending, outcome.exit_code, outcome.reason.as_str()),
            (Ending::Cancelled, Some(7), "cancelled")
        );
        assert_eq!(outcome.stdout.text, "cleaning up\n");
    }

    #[test]
    fn a_task_that_ignores_sigterm_is_killed_after_the_grace() {
        let scratch = Scratch::new();
        let pids = scratch.file("pids");
        let script = format!(
            r#"trap '' TERM; sleep 100 & {PRINT_LAST_BACKGROUND} > "$PIDS.part"; mv "$PIDS.part" "$PIDS"; wait"#
        );
        let started = start(&scratch.executor(), with_env(sh(&script), "PIDS", &pids));
        wait_until("the task runs", || pids.exists());
        let grandchild = strays(&fs::read_to_string(&pids).unwrap());
        let stopped_at = Instant::now();
        started.running.stop();
        let outcome = started.outcome();
        assert!(
            stopped_at.elapsed() >= GRACE,
            "killed before the grace ended"
        );
        assert_eq!(
            (outcome.ending, outcome.exit_code, outcome.reason.as_str()),
            (Ending::Cancelled, None, "cancelled")
        );
        grandchild[0].wait_gone();
    }

    /// Set for the test binary run as a drone that dies with an attempt running.
    const PREVIOUS_ROOT_VAR: &str = "HIVE_EXEC_TEST_PREVIOUS_ROOT";
    const PIDS_VAR: &str = "HIVE_EXEC_TEST_PIDS";

    /// Not a test: the previous drone of the test below, run by it in a process of its own.
    /// Starts an attempt with a background process, and waits to be killed.
    #[test]
    #[ignore = "run by reap_leftovers_ends_what_a_dead_drone_left_running"]
    fn previous_drone() {
        let (Ok(root), Ok(pids)) = (std::env::var(PREVIOUS_ROOT_VAR), std::env::var(PIDS_VAR))
        else {
            return;
        };
        let executor = Executor::new(root.into(), GRACE).unwrap();
        let script = format!(
            r#"sleep 100 & echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" > "$PIDS.part"; {PRINT_LAST_BACKGROUND} >> "$PIDS.part"; mv "$PIDS.part" "$PIDS"; wait"#
        );
        let mut spec = with_env(sh(&script), "PIDS", Path::new(&pids));
        spec.task = "previous".into();
        let _running = executor.start(spec, |_| {});
        loop {
            thread::park();
        }
    }

    #[test]
    fn reap_leftovers_ends_what_a_dead_drone_left_running() {
        let scratch = Scratch::new();
        let pids = scratch.file("pids");
        let mut previous = Command::new(std::env::current_exe().unwrap())
            .args(["exec::tests::previous_drone", "--exact", "--ignored"])
            .env(PREVIOUS_ROOT_VAR, scratch.root())
            .env(PIDS_VAR, &pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        struct Killed<'a>(&'a mut Child);
        impl Drop for Killed<'_> {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let previous = Killed(&mut previous);
        wait_until("the previous drone's attempt runs", || pids.exists());
        let left = strays(&fs::read_to_string(&pids).unwrap());
        assert_eq!(left.len(), 2);
        drop(previous);
        assert!(
            left.iter().all(Stray::runs),
            "a dead drone's attempt runs on"
        );

        let executor = scratch.executor();
        let leftovers = executor.reap_leftovers();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let leftover = &leftovers[0];
        assert_eq!(leftover.attempt, Some(("previous".into(), 1)));
        assert_eq!(leftover.killed_group, Some(left[0].pid));
        assert_eq!(leftover.removal_error, None);
        assert!(leftover.to_string().contains("killed its process group"));
        for stray in &left {
            stray.wait_gone();
        }
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
        assert_eq!(executor.reap_leftovers(), Vec::new());
    }

    #[test]
    fn reap_leftovers_clears_what_no_longer_runs_and_leaves_other_files_alone() {
        let scratch = Scratch::new();
        drop(scratch.executor());
        let work = scratch.root().join(WORK_DIR);
        // A directory whose attempt was never recorded, and a file that is no attempt's.
        fs::create_dir_all(work.join("3/build.1.3/deep")).unwrap();
        fs::write(work.join("3/build.1.3/deep/file"), "x").unwrap();
        fs::write(work.join("3/notes.txt"), "kept").unwrap();
        // A record of a group that has ended (its pid is another process's now), then a line cut
        // short.
        let me = read_process(std::process::id() as i32).unwrap();
        let ended = Record {
            shard: 5,
            name: "test.2.5".into(),
            task: "test".into(),
            attempt: 2,
            process_group: me.pid,
            start_ticks: me.start_ticks + 1,
            session: me.session,
            boot_id: fs::read_to_string(BOOT_ID_FILE).unwrap().trim().into(),
        };
        let path = scratch.root().join(JOURNAL_FILE);
        Journal::open(path.clone())
            .unwrap()
            .0
            .started(ended)
            .unwrap();
        let mut journal = File::options().append(true).open(&path).unwrap();
        journal.write_all(b"{\"started\":{\"shard\":").unwrap();

        let executor = scratch.executor();
        let mut leftovers = executor.reap_leftovers();
        leftovers.sort_by_key(|leftover| leftover.dir.clone());
        let found: Vec<_> = leftovers
            .iter()
            .map(|l| {
                (
                    l.dir.clone(),
                    l.attempt.clone(),
                    l.killed_group,
                    l.removal_error.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (work.join("3/build.1.3"), None, None, None),
                (
                    work.join("5/test.2.5"),
                    Some(("test".into(), 2)),
                    None,
                    None
                ),
            ]
        );
        assert!(
            leftovers[0]
                .to_string()
                .contains("no record says what it ran")
        );
        assert!(
            leftovers[1]
                .to_string()
                .contains("nothing of it ran any more")
        );
        let notes = vec![work.join("3/notes.txt").display().to_string()];
        assert_eq!(scratch.left_in_root(), notes);

        // The journal is whole again, and new attempts are numbered past the old ones.
        let pwd = run(&executor, sh("pwd")).stdout.text;
        assert!(name_number(pwd.trim()).unwrap() > 5, "{pwd}");
        assert_eq!(scratch.left_in_root(), notes);
    }

    #[test]
    fn only_names_the_executor_makes_are_attempt_directories() {
        assert!(is_attempt_name(&attempt_name("build-42", 3, 17)));
        assert!(is_attempt_name(&attempt_name("../x", 1, 0)));
        assert_eq!(attempt_name("../x/Y", 2, 5), "___x_y.2.5".replace('y', "_"));
        for name in [
            "lost+found",
            "notes.txt",
            "a.b.c",
            ".1.2",
            "x.1.2.3",
            "x..2",
        ] {
            assert!(!is_attempt_name(name), "{name}");
        }
    }
}
