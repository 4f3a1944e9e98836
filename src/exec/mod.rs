//! Running one attempt of a task on a drone: its command in a cgroup (or a process group) and a
//! directory of its own, as another user, with an environment built for it; its output kept, and
//! nothing of it left running once it has ended.
//!
//! Linux only: it watches processes through pidfds (Linux 5.3 and later) and `/proc`, and holds
//! them in cgroups where it may (`cgroup.kill`: Linux 5.14).
//!
//! Here: the attempt's life, from its directory to its outcome. Beside it: `containment.rs` (what
//! holds an attempt's processes: the one seam between a cgroup and a process group) and
//! `cgroup.rs` (the cgroups themselves); `spawn.rs` (starting the command as `posix_spawn` does)
//! and `child.rs` (what its process does between its clone and its exec); `user.rs` and `env.rs` (who a command runs as, and its environment); `output.rs`
//! (reading what the command prints, keeping its tails, and handing every byte to the attempt's
//! [`OutputSink`]: a drone's log files, see `drone/logs/`); `journal.rs` (the records of the attempts that
//! run); `procfs.rs` (what `/proc` says, and whether a recorded group is still its attempt's);
//! `remove.rs` (removing what an attempt left in its directory); `threads.rs` (the threads
//! attempts run on); `reaper.rs` (what ends a drone's attempts when the drone dies).
//!
//! # One thread per attempt
//! [`Executor::start`] hands an attempt to a thread of its own, a new one or one that has ended
//! an attempt before and waits for the next; when no thread can be made it says so at once and
//! runs nothing. The thread makes the attempt's directory (owned by the user the command runs
//! as) and its cgroup (recorded in the journal before the command starts, so that no moment
//! leaves a process unrecorded), spawns the command, and then waits in one `poll` on the command's
//! stdout and stderr, read as they fill; a pidfd of the command, readable once it has exited; an
//! eventfd that [`Running::stop`] writes to; and, while the attempt is being stopped, its cgroup's
//! `cgroup.events`, which changes when the cgroup empties. The poll's timeout is the next
//! deadline: the attempt's timeout, then the end of the grace after SIGTERM (the task's
//! `kill_timeout_s`).
//!
//! # Ending every process of an attempt
//! When the command exits, everything it left is killed at once. When a timeout or a stop ends
//! an attempt, every process of it gets SIGTERM; the attempt ends as soon as none is left (a task
//! that exits on SIGTERM ends at once), or gets SIGKILL when the grace has passed. `Group` makes
//! that the only way its methods allow; what "every process" is depends on the containment:
//! - in a cgroup, exactly that: every process in the attempt's cgroup, `setsid` and double forks
//!   included, killed whole with `cgroup.kill`, and the attempt ends only when `cgroup.events`
//!   says `populated 0`;
//! - in a process group (where no cgroup can be made), the group the command leads. Signalling
//!   it is safe only while its id cannot name anything else, which holds while the leader is
//!   unreaped (a zombie keeps its pid, and so its group's id): the attempt's thread signals the
//!   group only before it reaps the leader, and the leader's exit ends the grace for the whole
//!   group. A process that left the group (`setsid`) is out of reach; the pipes it holds are
//!   read for at most `DRAIN_WAIT` more.
//!
//! # Directories, records and restarts
//! Under the work root (refused when others may write to it, because what it holds decides which
//! processes are killed; mode 0700, or 0711 when commands run as another user, who may pass
//! through it to their own directory but list and read nothing of it) an attempt is named from
//! its task id, its number and a counter (`build-42.3.17`), with every character outside
//! `[a-z0-9-]` replaced, so that no id can name a path outside the root. `work/<shard>/<name>/` is
//! the command's working directory, made new and empty (only if missing, so no two attempts
//! share one) and removed once the attempt has ended, whatever modes its command left in it;
//! `SHARDS` says why attempts are spread over subdirectories. The journal `running.log` (0600)
//! records each attempt (in a cgroup: its cgroups, before the command starts; else its process
//! group, the leader's start time and session, just after the spawn; and the machine's boot id)
//! and again once it has ended. The file `cgroups` (0600) names the drone's own cgroups.
//!
//! A drone that dies leaves its attempts running. Its reaper (see `reaper.rs`), or the next
//! executor on the same root, finds their directories and records; [`Executor::reap_leftovers`]
//! kills each recorded cgroup and each process group that is still its attempt's (`procfs.rs`
//! says how that is told from a group that reuses its id), then whatever is left in the drone's
//! cgroups, removes the directories and records the ends.

mod cgroup;
mod child;
pub mod containment;
mod env;
mod journal;
mod output;
mod procfs;
pub mod reaper;
mod remove;
mod spawn;
mod threads;
pub mod user;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::warn;
use parking_lot::Mutex;

use crate::logging::quoted;
use crate::tasks::DEFAULT_PIDS;
use cgroup::{AttemptGroup, Cgroups, Owned, Usage};
pub use cgroup::{drone_group_name, own_memory_limit_bytes};
use child::{ChildSetup, Ids};
pub use containment::{CONTAINMENT_LEVELS, Containment, Level, Mode};
pub use env::BaseEnv;
use journal::{Journal, Record};
use output::Streams;
pub use output::{OutputSink, Stream};
use procfs::{Process, all_processes, leftover_group, read_process};
use spawn::{Leader, Program};
use threads::Threads;
pub use user::User;

/// How much of each output stream an outcome carries: its last bytes.
pub const KEPT_OUTPUT_BYTES: usize = 64 * 1024;

/// Longest wait for an attempt's pipes to close once its group is killed. Members close them as
/// they die; only a process that left the group keeps them open longer.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Under the work root: the attempts' working directories, the journal of those that run, and
/// the drone's own cgroups.
const WORK_DIR: &str = "work";
const JOURNAL_FILE: &str = "running.log";
const CGROUPS_FILE: &str = "cgroups";

/// Into how many subdirectories of `work/` the attempts are spread. Making or removing an entry
/// takes its directory's lock, and on a disk file system that is slow enough for attempts in one
/// directory to queue: on ext4, 32 threads making and removing 2,000 directories took 3 to 4
/// times as long in one directory as spread over 32.
const SHARDS: u64 = 16;

/// Longest part of an attempt's name taken from its task id (task ids are at most 63 characters).
const MAX_NAME_TASK_CHARS: usize = 63;

/// Changes at every boot; a record from another boot names no process that still runs.
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// Modes of the work root and the directories above the attempts': closed to everyone else, or
/// passable (not listable) by the user commands run as, when that is another user.
const CLOSED_MODE: u32 = 0o700;
const PASSABLE_MODE: u32 = 0o711;

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
    /// The task's own variables, added to what the drone gives every command (see `env.rs`).
    pub env: BTreeMap<String, String>,
    /// How long the command may run before it is stopped.
    pub timeout: Duration,
    /// How long a stopped attempt's processes get between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// What its cgroup enforces.
    pub limits: Limits,
    /// The drone's address as its queen knows it; the command sees it as `HIVE_DRONE_ADDRESS`.
    pub drone_address: String,
}

/// What an attempt's cgroup enforces (nothing in a process group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most memory, swap included; `None`: no limit.
    pub memory_bytes: Option<u64>,
    /// Most CPU, in thousandths of a core; `None`: no limit.
    pub millicpus: Option<u32>,
    /// Most processes and threads at once.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: None,
            millicpus: None,
            pids: DEFAULT_PIDS,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with code 0.
    Succeeded,
    /// The command exited with another code, was killed by a signal, or could not start.
    Failed,
    /// The attempt's timeout passed and it was stopped.
    TimedOut,
    /// [`Running::stop`] was called and it was stopped.
    Cancelled,
    /// The kernel killed its processes for memory (its limit, or the machine's).
    OomKilled,
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
    /// The signal that killed the command, when one did.
    pub exit_signal: Option<i32>,
    /// The most memory the attempt held at once, where its cgroup counts it.
    pub peak_memory_bytes: Option<u64>,
    /// One line for people: "exit code 3", "killed by signal 9", "timed out after 2 s", ...
    pub reason: String,
    pub stdout: Output,
    pub stderr: Output,
    /// When the attempt's thread took it up, and when everything of it had ended.
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
}

/// How an executor runs its attempts.
#[derive(Debug, Default)]
pub struct Settings {
    /// What holds each attempt's processes.
    pub containment: Containment,
    /// Who commands run as; `None`: the drone's own user.
    pub user: Option<User>,
    /// What of the drone's environment commands get.
    pub env: BaseEnv,
}

/// Runs attempts, each in a directory of its own under one work root.
pub struct Executor {
    shared: Arc<Shared>,
    /// What a previous run left under the root, until [`Executor::reap_leftovers`] ends it.
    previous: Mutex<Previous>,
    threads: Arc<Threads>,
}

/// What a previous run left: attempts with a directory or a record, by shard and name, with their
/// record when there is one; and the cgroups it made for itself.
#[derive(Default)]
struct Previous {
    attempts: BTreeMap<(u64, String), Option<Record>>,
    cgroups: Owned,
}

/// What every attempt's thread needs from its executor.
struct Shared {
    root: PathBuf,
    boot_id: String,
    /// Makes every attempt's name new, even for the same task and attempt.
    next_name: AtomicU64,
    journal: Journal,
    containment: Containment,
    user: User,
    /// The ids a command takes, when they are not the drone's.
    ids: Option<(u32, u32, Vec<u32>)>,
    env: BaseEnv,
}

/// An attempt that has been started; the way to cancel it.
pub struct Running {
    stop: Arc<StopRequest>,
}

/// What an attempt of a previous run left, and what [`Executor::reap_leftovers`] did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The attempt's working directory (its cgroup, for one found only in the drone's cgroup).
    pub dir: PathBuf,
    /// Its task id and attempt number, when its record could be read.
    pub attempt: Option<(String, u32)>,
    /// What was killed ("its cgroup ...", "its process group 42"); `None` when nothing of the
    /// attempt ran any more.
    pub killed: Option<String>,
    /// Why the directory, the cgroup or the record is still there, if one could not be removed.
    pub removal_error: Option<String>,
}

/// Makes the work root `root` if it is missing, and checks that it belongs to this user and no
/// one else may write to it: its records say which processes to kill. The first thing a drone does
/// with its root, before it sets anything up that a refusal would leave behind.
pub fn make_work_root(root: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(CLOSED_MODE)
        .create(root)?;
    let meta = fs::metadata(root)?;
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
    Ok(())
}

impl Executor {
    /// An executor whose attempts live under `work_root`, made if missing, and run as `settings`
    /// say. Fails when the root cannot be made, or others could write to it: its records say
    /// which processes to kill. One executor at a time per root: a second would take the first's
    /// attempts for leftovers.
    pub fn new(work_root: PathBuf, settings: Settings) -> io::Result<Executor> {
        let root = std::path::absolute(work_root)?;
        make_work_root(&root)?;
        let user = settings.user.unwrap_or_else(User::of_this_process);
        let ids = (!user.is_this_process()).then(|| (user.uid, user.gid, user.groups.clone()));
        let mode = if ids.is_some() {
            PASSABLE_MODE
        } else {
            CLOSED_MODE
        };
        fs::set_permissions(&root, fs::Permissions::from_mode(mode))?;
        let (journal, records) = Journal::open(root.join(JOURNAL_FILE))?;
        let mut previous: BTreeMap<_, _> = records
            .into_iter()
            .map(|(place, record)| (place, Some(record)))
            .collect();
        let work = root.join(WORK_DIR);
        for dir in
            std::iter::once(work.clone()).chain((0..SHARDS).map(|s| work.join(s.to_string())))
        {
            DirBuilder::new().recursive(true).mode(mode).create(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
        }
        for shard in 0..SHARDS {
            for entry in fs::read_dir(work.join(shard.to_string()))? {
                if let Some(name) = entry?.file_name().to_str()
                    && is_attempt_name(name)
                {
                    previous.entry((shard, name.to_owned())).or_insert(None);
                }
            }
        }
        // The cgroups a previous run made, and these: both are named in the file until the
        // previous ones are ended (see `reap_leftovers`).
        let previous_cgroups = read_owned(&root)?;
        let current = settings.containment.owned();
        write_owned(&root, &union(&previous_cgroups, &current))?;
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
                boot_id,
                next_name: AtomicU64::new(next_name),
                journal,
                containment: settings.containment,
                user,
                ids,
                env: settings.env,
            }),
            previous: Mutex::new(Previous {
                attempts: previous,
                cgroups: previous_cgroups,
            }),
            threads: Arc::default(),
        })
    }

    /// How this executor contains its attempts.
    pub fn level(&self) -> Level {
        self.shared.containment.level()
    }

    /// The user commands run as.
    pub fn user(&self) -> &User {
        &self.shared.user
    }

    /// Ends what a previous run of a drone on this work root left running, removes its
    /// directories, records and cgroups; returns what it found, for a log line each. Kills with
    /// SIGKILL at once: the drone that started those attempts is gone, and nobody waits for
    /// their outcome. Only the first call does anything; call it before starting attempts.
    pub fn reap_leftovers(&self) -> Vec<Leftover> {
        let Previous {
            attempts: previous,
            cgroups: previous_cgroups,
        } = std::mem::take(&mut *self.previous.lock());
        let processes = if previous.is_empty() {
            Vec::new()
        } else {
            all_processes()
        };
        let mut leftovers: Vec<Leftover> = previous
            .into_iter()
            .map(|((shard, name), record)| {
                let place = self.shared.place(shard, name);
                self.shared.reap(&place, record, &processes)
            })
            .collect();
        // Attempts' cgroups no record names: made by a drone that died before it could record
        // them, so nothing ran in them; or, were the journal lost, anything.
        for (dir, ended) in Cgroups::sweep(&previous_cgroups) {
            let (killed, removal_error) = match ended {
                Ok(ran) => (ran.then(|| "what ran in it".to_string()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            leftovers.push(Leftover {
                dir,
                attempt: None,
                killed,
                removal_error,
            });
        }
        let current = self.shared.containment.owned();
        let gone = Owned {
            groups: previous_cgroups
                .groups
                .into_iter()
                .filter(|group| !current.groups.contains(group))
                .collect(),
            parents: previous_cgroups
                .parents
                .into_iter()
                .filter(|parent| !current.parents.contains(parent))
                .collect(),
        };
        Cgroups::remove(&gone);
        if let Err(e) = write_owned(&self.shared.root, &current) {
            warn!(
                "could not update {}: {e}",
                self.shared.root.join(CGROUPS_FILE).display()
            );
        }
        leftovers
    }

    /// Starts the attempt on a thread of its own and returns at once. What the command prints
    /// goes to `sink` as it is read, and the sink is dropped before `on_end` is called, exactly
    /// once, from that thread, when the attempt has ended and nothing of it runs any more; also
    /// when it could not start. Fails, without calling `on_end`, only when no thread can be made
    /// for it.
    pub fn start(
        &self,
        spec: Spec,
        sink: Option<Box<dyn OutputSink>>,
        on_end: impl FnOnce(Outcome) + Send + 'static,
    ) -> io::Result<Running> {
        let stop = Arc::new(StopRequest::new());
        let (shared, thread_stop) = (self.shared.clone(), stop.clone());
        self.threads.run(Box::new(move || {
            on_end(shared.run(&spec, sink, &thread_stop))
        }))?;
        Ok(Running { stop })
    }
}

/// The cgroups the file in `root` names: none when there is no file.
fn read_owned(root: &Path) -> io::Result<Owned> {
    match fs::read(root.join(CGROUPS_FILE)) {
        Ok(text) => Ok(serde_json::from_slice(&text).unwrap_or_default()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Owned::default()),
        Err(e) => Err(e),
    }
}

/// Writes the file in `root` that names `owned` (mode 0600), written aside and renamed over the
/// old one so that it is always one or the other whole.
fn write_owned(root: &Path, owned: &Owned) -> io::Result<()> {
    journal::replace_file(&root.join(CGROUPS_FILE), &serde_json::to_vec(owned)?)
}

/// Both `a` and `b`, each named once.
fn union(a: &Owned, b: &Owned) -> Owned {
    let mut both = a.clone();
    for group in &b.groups {
        if !both.groups.contains(group) {
            both.groups.push(group.clone());
        }
    }
    for parent in &b.parents {
        if !both.parents.contains(parent) {
            both.parents.push(parent.clone());
        }
    }
    both
}

impl Running {
    /// Cancels the attempt: SIGTERM to each of its processes now, SIGKILL when the grace has
    /// passed. The outcome is [`Ending::Cancelled`] unless the attempt had already ended.
    /// Calling it again, or after the end, changes nothing.
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
    exit_signal: Option<i32>,
    peak_memory_bytes: Option<u64>,
    reason: String,
    stdout: Output,
    stderr: Output,
}

impl Ended {
    fn failed(reason: String) -> Ended {
        Ended {
            ending: Ending::Failed,
            exit_code: None,
            exit_signal: None,
            peak_memory_bytes: None,
            reason,
            stdout: Output::default(),
            stderr: Output::default(),
        }
    }

    fn at(self, started_at: SystemTime) -> Outcome {
        Outcome {
            ending: self.ending,
            exit_code: self.exit_code,
            exit_signal: self.exit_signal,
            peak_memory_bytes: self.peak_memory_bytes,
            reason: self.reason,
            stdout: self.stdout,
            stderr: self.stderr,
            started_at,
            ended_at: SystemTime::now(),
        }
    }
}

/// Why the attempt's thread stopped the attempt, when it did.
#[derive(Clone, Copy)]
enum StopReason {
    TimedOut,
    Cancelled,
}

impl Shared {
    /// The whole attempt, on its thread. A panic here (a bug) still ends the attempt's processes
    /// (see [`Group`]) and still gives the caller its outcome.
    fn run(&self, spec: &Spec, sink: Option<Box<dyn OutputSink>>, stop: &StopRequest) -> Outcome {
        let started_at = SystemTime::now();
        let ended = panic::catch_unwind(AssertUnwindSafe(|| self.run_attempt(spec, sink, stop)))
            .unwrap_or_else(|_| Ended::failed("the drone failed while running it".into()));
        ended.at(started_at)
    }

    fn run_attempt(
        &self,
        spec: &Spec,
        mut sink: Option<Box<dyn OutputSink>>,
        stop: &StopRequest,
    ) -> Ended {
        if let Some(sink) = &mut sink {
            sink.begin();
        }
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
        let ended = self.run_in(&place, spec, program, wake, sink);
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

    /// The attempt's directory, open for its command to enter, and owned by the user the
    /// command runs as.
    fn open_place(&self, place: &Place) -> io::Result<File> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&place.work)?;
        if let Some((uid, gid, _)) = &self.ids {
            std::os::unix::fs::fchown(&dir, Some(*uid), Some(*gid))?;
        }
        Ok(dir)
    }

    /// Holds the attempt (its cgroup recorded before anything runs in it), spawns its command,
    /// watches it until it ends, and ends everything of it.
    fn run_in(
        &self,
        place: &Place,
        spec: &Spec,
        program: &str,
        wake: &OwnedFd,
        sink: Option<Box<dyn OutputSink>>,
    ) -> Ended {
        let dir = match self.open_place(place) {
            Ok(dir) => dir,
            Err(e) => {
                let dir = place.work.display();
                return Ended::failed(format!("could not start: its directory {dir}: {e}"));
            }
        };
        let cgroup = match self.containment.attempt(&place.name, &spec.limits) {
            Ok(cgroup) => cgroup,
            Err(why) => return Ended::failed(format!("could not start: {why}")),
        };
        if let Some(dirs) = cgroup.as_ref().map(AttemptGroup::dirs)
            && let Err(e) = self.record(place, spec, None, dirs)
        {
            if let Some(cgroup) = cgroup {
                let _ = cgroup.remove();
            }
            let journal = self.journal.path.display();
            return Ended::failed(format!("could not record it in {journal}: {e}"));
        }
        let recorded_before = cgroup.is_some();
        let (ended, recorded_after) =
            self.spawn_and_watch(place, spec, program, wake, &dir, cgroup, sink);
        if (recorded_before || recorded_after)
            && let Err(e) = self.journal.ended(place.shard, &place.name)
        {
            // The next run finds the record, and that nothing of it runs.
            warn!(
                "could not record the end of attempt {} of task {} in {}: {e}",
                spec.attempt,
                quoted(&spec.task),
                self.journal.path.display()
            );
        }
        ended
    }

    /// Spawns the command held by `cgroup` (or its own process group), watches it and ends it;
    /// what it prints goes to `sink` too. Returns how it ended, and whether it was recorded here
    /// (a process group's record, made once its leader runs).
    #[allow(clippy::too_many_arguments)] // Each is one part of the attempt: no struct names them better.
    fn spawn_and_watch(
        &self,
        place: &Place,
        spec: &Spec,
        program: &str,
        wake: &OwnedFd,
        dir: &File,
        cgroup: Option<AttemptGroup>,
        sink: Option<Box<dyn OutputSink>>,
    ) -> (Ended, bool) {
        let ids = self.ids.as_ref().map(|(uid, gid, groups)| Ids {
            uid: *uid,
            gid: *gid,
            groups: groups.clone(),
        });
        let joins = cgroup
            .as_ref()
            .map_or_else(Vec::new, AttemptGroup::join_fds);
        let setup = ChildSetup::new(dir.as_raw_fd(), joins, ids);
        let command = Program {
            program,
            args: &spec.command[1..],
            env: self
                .env
                .for_attempt(spec, &self.user, &place.work)
                .collect(),
        };
        let (leader, pipes) = match spawn::spawn(&command, &setup) {
            Ok(started) => started,
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.remove();
                }
                let failed = Ended::failed(format!("could not start {}: {e}", quoted(program)));
                return (failed, false);
            }
        };
        let mut streams = Streams::new(pipes.map(Some), sink);
        let held_by_cgroup = cgroup.is_some();
        let group = Group::new(leader, cgroup);
        if !held_by_cgroup && let Err(e) = self.record(place, spec, Some(group.id()), Vec::new()) {
            let journal = self.journal.path.display();
            return (
                group.abandon(format!("could not record it in {journal}: {e}")),
                false,
            );
        }
        let stopped = self.watch(&group, wake, &mut streams, spec);
        let end = group.end();
        if let Err(e) = &end.removal {
            warn!(
                "attempt {} of task {}: {e}",
                spec.attempt,
                quoted(&spec.task)
            );
        }
        streams.drain(Instant::now() + DRAIN_WAIT);
        let (stdout, stderr) = streams.into_outputs();
        let (ending, exit_code, exit_signal, reason) = ending(stopped, end.status, spec, end.usage);
        let ended = Ended {
            ending,
            exit_code,
            exit_signal,
            peak_memory_bytes: end.usage.peak_memory_bytes,
            reason,
            stdout,
            stderr,
        };
        (ended, !held_by_cgroup)
    }

    /// Records what a later run needs to end this attempt if this drone dies first: its
    /// cgroups, or its process group (`leader`).
    fn record(
        &self,
        place: &Place,
        spec: &Spec,
        leader: Option<i32>,
        cgroups: Vec<PathBuf>,
    ) -> io::Result<()> {
        let (process_group, start_ticks, session) = match leader {
            Some(pid) => {
                let leader = read_process(pid)
                    .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat cannot be read")))?;
                (pid, leader.start_ticks, leader.session)
            }
            None => (0, 0, 0),
        };
        self.journal.started(Record {
            shard: place.shard,
            name: place.name.clone(),
            task: spec.task.clone(),
            attempt: spec.attempt,
            process_group,
            start_ticks,
            session,
            boot_id: self.boot_id.clone(),
            cgroups,
        })
    }

    /// Reads the pipes until the command exits, stopping the attempt when its time is up or a
    /// stop is asked: SIGTERM to each of its processes, then SIGKILL after the grace. A stopped
    /// attempt ends as soon as nothing of it runs (in a process group: its leader has exited).
    /// Returns why it stopped the attempt, if it did.
    fn watch(
        &self,
        group: &Group,
        wake: &OwnedFd,
        streams: &mut Streams,
        spec: &Spec,
    ) -> Option<StopReason> {
        let pidfd = group.leader.pidfd();
        // A timeout too long to add to the clock never comes.
        let deadline = Instant::now().checked_add(spec.timeout);
        // Why the attempt was stopped, and when its SIGKILL is due (`None` once it is sent).
        let mut stopping: Option<(StopReason, Option<Instant>)> = None;
        let mut leader_exited = false;
        loop {
            let now = Instant::now();
            match &mut stopping {
                None if deadline.is_some_and(|due| now >= due) => {
                    group.terminate();
                    stopping = Some((StopReason::TimedOut, now.checked_add(spec.kill_grace)));
                }
                Some((_, kill_at)) if kill_at.is_some_and(|due| now >= due) => {
                    group.kill();
                    *kill_at = None;
                }
                _ => {}
            }
            // A stop asked while stopping changes nothing, so the eventfd is watched only
            // before; the cgroup's emptying only after.
            let watched = Watched {
                exited: (!leader_exited).then(|| pidfd.as_raw_fd()),
                wake: stopping.is_none().then(|| wake.as_raw_fd()),
                emptied: stopping.and(group.events_fd()),
            };
            let until = match stopping {
                None => deadline,
                Some((_, kill_at)) => kill_at,
            };
            let woke = streams.pump(&watched, until);
            leader_exited |= woke.exited;
            match stopping {
                None if leader_exited => return None,
                Some((why, _)) if group.is_empty(leader_exited) => return Some(why),
                _ => {}
            }
            if woke.stop_asked {
                group.terminate();
                stopping = Some((
                    StopReason::Cancelled,
                    Instant::now().checked_add(spec.kill_grace),
                ));
            }
        }
    }

    /// Ends one attempt a previous run left: kills its cgroup or its process group if anything
    /// of it still runs, removes its directory, and records its end.
    fn reap(&self, place: &Place, record: Option<Record>, processes: &[Process]) -> Leftover {
        let mut removal_error = None;
        let killed = match &record {
            Some(record) if !record.cgroups.is_empty() => {
                match cgroup::end_leftover(&record.cgroups) {
                    Ok(ran) => ran.then(|| format!("its cgroup {}", record.cgroups[0].display())),
                    Err(e) => {
                        removal_error = Some(e.to_string());
                        None
                    }
                }
            }
            Some(record) => leftover_group(record, &self.boot_id, processes).map(|group| {
                // SAFETY: a plain system call; `leftover_group` found the group to be the
                // attempt's.
                unsafe { libc::kill(-group, libc::SIGKILL) };
                format!("its process group {group}")
            }),
            None => None,
        };
        if let Err(e) = place.remove() {
            removal_error.get_or_insert(e.to_string());
        }
        if record.is_some()
            && let Err(e) = self.journal.ended(place.shard, &place.name)
        {
            removal_error = Some(format!("its record stays: {e}"));
        }
        Leftover {
            dir: place.work.clone(),
            attempt: record.map(|record| (record.task, record.attempt)),
            killed,
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
    /// Removes the working directory, if it is there, whatever modes its command left in it.
    fn remove(&self) -> io::Result<()> {
        remove::remove_tree(&self.work)
    }
}

/// The ending, exit code, signal and reason of an attempt whose processes have all ended.
fn ending(
    stopped: Option<StopReason>,
    status: io::Result<ExitStatus>,
    spec: &Spec,
    usage: Usage,
) -> (Ending, Option<i32>, Option<i32>, String) {
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            return (
                Ending::Failed,
                None,
                None,
                format!("its end is unknown: {e}"),
            );
        }
    };
    let (exit_code, exit_signal) = (status.code(), status.signal());
    match stopped {
        Some(StopReason::TimedOut) => (
            Ending::TimedOut,
            exit_code,
            exit_signal,
            format!("timed out after {} s", spec.timeout.as_secs_f64()),
        ),
        Some(StopReason::Cancelled) => (
            Ending::Cancelled,
            exit_code,
            exit_signal,
            "cancelled".into(),
        ),
        None if exit_code == Some(0) => (Ending::Succeeded, exit_code, None, "exit code 0".into()),
        None if usage.oom_kills > 0 => {
            let limit = match spec.limits.memory_bytes {
                Some(bytes) => format!("its limit of {} MiB", bytes >> 20),
                None => "the machine's memory".into(),
            };
            let how = match (exit_code, exit_signal) {
                (_, Some(signal)) => format!("signal {signal}"),
                (Some(code), _) => format!("exit code {code}"),
                (None, None) => status.to_string(),
            };
            let reason = format!("killed for memory: it reached {limit} ({how})");
            (Ending::OomKilled, exit_code, exit_signal, reason)
        }
        None => match (exit_code, exit_signal) {
            (Some(code), _) => (Ending::Failed, exit_code, None, format!("exit code {code}")),
            (None, Some(signal)) => (
                Ending::Failed,
                None,
                Some(signal),
                format!("killed by signal {signal}"),
            ),
            (None, None) => (Ending::Failed, None, None, format!("ended: {status}")),
        },
    }
}

/// What an attempt's thread watches besides the pipes: see [`Shared::watch`].
struct Watched {
    /// The leader's pidfd, until it has exited.
    exited: Option<RawFd>,
    /// The stop's eventfd, until a stop or timeout.
    wake: Option<RawFd>,
    /// The cgroup's `cgroup.events`, while the attempt is being stopped.
    emptied: Option<RawFd>,
}

/// The command's processes: its leader, unreaped until the end (so that in a process group the
/// group's id names only its group), and, with cgroups, the attempt's cgroup, which holds every
/// process the command starts and is what is signalled, waited for and killed. Signals go only
/// through here, and [`Group::end`] takes the group away, so no signal can follow the reaping.
/// Dropped before its end (an early return, a panic), it kills everything and reaps.
struct Group {
    leader: Leader,
    reaped: bool,
    cgroup: Option<AttemptGroup>,
}

/// What is left to know once a [`Group`] has ended.
struct GroupEnd {
    status: io::Result<ExitStatus>,
    usage: Usage,
    /// Whether its cgroup could be removed.
    removal: io::Result<()>,
}

impl Group {
    fn new(leader: Leader, cgroup: Option<AttemptGroup>) -> Group {
        Group {
            leader,
            reaped: false,
            cgroup,
        }
    }

    /// The leader's pid, which is its process group's id.
    fn id(&self) -> i32 {
        self.leader.id()
    }

    /// SIGTERM to every process: its cgroup's each, or its process group.
    fn terminate(&self) {
        match &self.cgroup {
            Some(cgroup) => cgroup.signal_each(libc::SIGTERM),
            // SAFETY: a plain system call. The leader is not reaped yet, so the id is still its
            // group's.
            None => unsafe {
                libc::kill(-self.id(), libc::SIGTERM);
            },
        }
    }

    /// SIGKILL to every process: its cgroup (`cgroup.kill`), or its process group.
    fn kill(&self) {
        match &self.cgroup {
            Some(cgroup) => cgroup.kill(),
            // SAFETY: as in `terminate`.
            None => unsafe {
                libc::kill(-self.id(), libc::SIGKILL);
            },
        }
    }

    /// What turns ready when its cgroup empties, if it has one.
    fn events_fd(&self) -> Option<RawFd> {
        self.cgroup.as_ref().and_then(AttemptGroup::events_fd)
    }

    /// Whether nothing of it runs: its cgroup is empty, or (in a process group) its leader has
    /// exited.
    fn is_empty(&self, leader_exited: bool) -> bool {
        match &self.cgroup {
            Some(cgroup) => cgroup.is_empty(),
            None => leader_exited,
        }
    }

    /// Kills whatever is left, waits until nothing of it runs, reaps the leader and removes the
    /// cgroup.
    fn end(mut self) -> GroupEnd {
        match &self.cgroup {
            // Nothing can join an empty cgroup but through this drone: one that emptied as its
            // command exited (the common end) needs no kill.
            Some(cgroup) if cgroup.is_empty() => {}
            Some(cgroup) => {
                cgroup.kill();
                cgroup.wait_empty();
            }
            None => self.kill(),
        }
        self.reaped = true;
        let status = self.leader.wait();
        let cgroup = self.cgroup.take();
        let usage = cgroup.as_ref().map(AttemptGroup::usage).unwrap_or_default();
        let removal = cgroup.map_or(Ok(()), AttemptGroup::remove);
        GroupEnd {
            status,
            usage,
            removal,
        }
    }

    /// Ends a command that cannot be watched or recorded, and says why it failed.
    fn abandon(self, reason: String) -> Ended {
        let _ = self.end();
        Ended::failed(reason)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.leader.wait();
            if let Some(cgroup) = self.cgroup.take() {
                cgroup.wait_empty();
                let _ = cgroup.remove();
            }
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

/// The name of an attempt's directory, record and cgroup: its task id with every character
/// outside `[a-z0-9-]` replaced by `_`, so the name is never a path (no `/`, no `..`), then the
/// attempt and a number.
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
        match (&self.killed, &self.attempt) {
            (Some(what), _) => write!(f, ": killed {what}")?,
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
pub(crate) mod tests {
    use super::*;
    use journal::records_left;
    use std::io::Write;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
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
    pub(crate) struct Scratch {
        path: PathBuf,
    }

    impl Scratch {
        pub(crate) fn new() -> Scratch {
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
            Executor::new(self.root(), Settings::default()).unwrap()
        }

        /// An executor whose attempts run in cgroups under a drone group of this scratch's own,
        /// or `None` (said on stderr) where the machine gives this test none.
        fn cgroup_executor(&self, test: &str) -> Option<Executor> {
            let name = drone_group_name(&self.root());
            match Containment::set_up(Mode::Cgroup, None, &name) {
                Ok((containment, _)) => {
                    let settings = Settings {
                        containment,
                        ..Settings::default()
                    };
                    Some(Executor::new(self.root(), settings).unwrap())
                }
                Err(why) => {
                    eprintln!("{test}: skipped, no cgroups here: {why}");
                    None
                }
            }
        }

        pub(crate) fn file(&self, name: &str) -> PathBuf {
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
        /// Ends what any executor on the root left (its cgroups included), as a drone's reaper
        /// does, then removes the directory.
        fn drop(&mut self) {
            if self.root().join(CGROUPS_FILE).exists()
                && let Ok(executor) = Executor::new(self.root(), Settings::default())
            {
                executor.reap_leftovers();
            }
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
        let running = executor
            .start(spec, None, move |outcome| {
                let _ = sender.send(outcome);
            })
            .expect("a thread for the attempt");
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
            kill_grace: GRACE,
            limits: Limits::default(),
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
    fn the_command_gets_only_the_allowed_and_passed_variables_of_the_drone() {
        let scratch = Scratch::new();
        let drone = [
            ("PATH", "/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("HIVE_TOKEN", "0123456789abcdef0123"),
            ("CLOUD_SECRET", "hunter2"),
            ("HOME", "/root"),
            ("PASSED", "yes"),
        ]
        .map(|(name, value)| (name.into(), value.into()));
        let settings = Settings {
            env: BaseEnv::from(drone, &["PASSED".into()]),
            ..Settings::default()
        };
        let executor = Executor::new(scratch.root(), settings).unwrap();
        let mut spec = spec(&["env"]);
        spec.env.insert("GREETING".into(), "hi".into());
        spec.env.insert("LANG".into(), "fr_FR.UTF-8".into());
        let outcome = run(&executor, spec);
        let mut seen: Vec<&str> = outcome.stdout.text.lines().collect();
        seen.sort();
        let home = User::of_this_process().home;
        let tmpdir = seen
            .iter()
            .find_map(|line| line.strip_prefix("TMPDIR="))
            .unwrap_or_default();
        assert!(scratch.holds(Path::new(tmpdir)), "{tmpdir}");
        let expected = [
            "GREETING=hi".to_string(),
            "HIVE_ATTEMPT=1".into(),
            "HIVE_ATTEMPT_ID=0123456789abcdef0123456789abcdef".into(),
            "HIVE_DRONE_ADDRESS=127.0.0.1:7001".into(),
            "HIVE_TASK_ID=t1".into(),
            format!("HOME={}", home.display()),
            "LANG=fr_FR.UTF-8".into(),
            "PASSED=yes".into(),
            "PATH=/usr/bin:/bin".into(),
            format!("TMPDIR={tmpdir}"),
        ];
        assert_eq!(
            seen,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_command_starts_with_no_signal_blocked_or_ignored() {
        let scratch = Scratch::new();
        // What a drone does to itself (signals.rs), and what it may have been started with.
        // SIGUSR2 is ignored in the whole test process: nothing else here uses it.
        let mut blocked = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        // SAFETY: plain calls on a set of this thread's; the old mask is given back below.
        let mut old = unsafe { std::mem::zeroed::<libc::sigset_t>() };
        unsafe {
            libc::sigemptyset(&mut blocked);
            libc::sigaddset(&mut blocked, libc::SIGTERM);
            libc::sigaddset(&mut blocked, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut old);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        }
        let executors = [Some(scratch.executor()), scratch.cgroup_executor("signals")];
        for executor in executors.iter().flatten() {
            let outcome = run(
                executor,
                spec(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]),
            );
            assert_eq!(
                outcome.stdout.text,
                "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
                "{:?}",
                executor.level()
            );
        }
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
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
    fn in_a_cgroup_a_process_that_left_the_group_ends_with_its_attempt() {
        let scratch = Scratch::new();
        let test = "in_a_cgroup_a_process_that_left_the_group_ends_with_its_attempt";
        let Some(executor) = scratch.cgroup_executor(test) else {
            return;
        };
        let script = format!("setsid sleep 100 & {PRINT_LAST_BACKGROUND}; exit 0");
        let outcome = run(&executor, sh(&script));
        let escaped = strays(&outcome.stdout.text);
        assert_eq!(outcome.ending, Ending::Succeeded, "{}", outcome.reason);
        assert_eq!(escaped.len(), 1, "{:?}", outcome.stdout);
        // The outcome comes once the cgroup is empty: the escapee is gone already.
        assert!(!escaped[0].runs(), "it outlived its attempt");
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
    }

    #[test]
    fn in_a_cgroup_a_stop_ends_as_soon_as_every_process_exits_on_sigterm() {
        let scratch = Scratch::new();
        let test = "in_a_cgroup_a_stop_ends_as_soon_as_every_process_exits_on_sigterm";
        let Some(executor) = scratch.cgroup_executor(test) else {
            return;
        };
        let ready = scratch.file("ready");
        // The shell cleans up and exits; its child, which handles nothing, dies of its SIGTERM.
        let script =
            r#"trap 'echo cleaning up; exit 0' TERM; setsid sleep 100 & touch "$READY"; wait"#;
        let mut spec = with_env(sh(script), "READY", &ready);
        spec.kill_grace = Duration::from_secs(20);
        let started = start(&executor, spec);
        wait_until("the task runs", || ready.exists());
        let stopped_at = Instant::now();
        started.running.stop();
        let outcome = started.outcome();
        assert_eq!(
            (outcome.ending, outcome.stdout.text.as_str()),
            (Ending::Cancelled, "cleaning up\n")
        );
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "took {:?}: it waited for the grace",
            stopped_at.elapsed()
        );
    }

    #[test]
    fn in_a_cgroup_an_attempt_over_its_memory_is_killed_for_it_and_says_its_peak() {
        let scratch = Scratch::new();
        let test = "in_a_cgroup_an_attempt_over_its_memory_is_killed_for_it_and_says_its_peak";
        let Some(executor) = scratch.cgroup_executor(test) else {
            return;
        };
        // The shell holds what the command substitution prints: 100 MB.
        let mut spec = sh(r#"x=$(head -c 100000000 /dev/zero | tr '\0' x); echo survived"#);
        spec.limits.memory_bytes = Some(32 << 20);
        let outcome = run(&executor, spec);
        assert_eq!(outcome.ending, Ending::OomKilled, "{}", outcome.reason);
        assert!(
            outcome
                .reason
                .starts_with("killed for memory: it reached its limit of 32 MiB"),
            "{}",
            outcome.reason
        );
        let peak = outcome.peak_memory_bytes.unwrap();
        assert!((16 << 20..=33 << 20).contains(&peak), "peak {peak}");
        assert!(outcome.exit_signal.is_some() || outcome.exit_code.is_some());
    }

    #[test]
    fn as_another_user_a_command_owns_its_directory_and_reads_nothing_of_the_drone_s() {
        let scratch = Scratch::new();
        if !User::of_this_process().is_this_process() || unsafe { libc::geteuid() } != 0 {
            eprintln!("as_another_user...: skipped, only root may run commands as another user");
            return;
        }
        let nobody = User::named("nobody").unwrap();
        let settings = Settings {
            user: Some(nobody.clone()),
            ..Settings::default()
        };
        let executor = Executor::new(scratch.root(), settings).unwrap();
        let script = r#"id -u; stat -c %u .; f=$(mktemp) && echo tmp ok; cat ../../../running.log; ls ../../..; ls .."#;
        let outcome = run(&executor, sh(script));
        assert_eq!(
            outcome.stdout.text,
            format!("{}\n{}\ntmp ok\n", nobody.uid, nobody.uid),
            "{}",
            outcome.stderr.text
        );
        assert_eq!(
            outcome.stderr.text.matches("Permission denied").count(),
            3,
            "{}",
            outcome.stderr.text
        );
        let mode = fs::metadata(scratch.root()).unwrap().mode() & 0o777;
        assert_eq!(mode, PASSABLE_MODE);
        let journal = fs::metadata(scratch.root().join(JOURNAL_FILE))
            .unwrap()
            .mode()
            & 0o777;
        assert_eq!(journal, 0o600);
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
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
        let outcome = executor.shared.run(&spec, None, &stop);
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
    /// Set (to anything) when that drone holds its attempt in a cgroup.
    const CGROUP_VAR: &str = "HIVE_EXEC_TEST_CGROUP";

    /// Not a test: the previous drone of the tests below, run by them in a process of its own.
    /// Starts an attempt with a background process (one that left its session too, in a
    /// cgroup), and waits to be killed.
    #[test]
    #[ignore = "run by the reap_leftovers tests"]
    fn previous_drone() {
        let (Ok(root), Ok(pids)) = (std::env::var(PREVIOUS_ROOT_VAR), std::env::var(PIDS_VAR))
        else {
            return;
        };
        let root = PathBuf::from(root);
        let (executor, background) = if std::env::var_os(CGROUP_VAR).is_some() {
            let name = drone_group_name(&root);
            let (containment, _) = Containment::set_up(Mode::Cgroup, None, &name).unwrap();
            let settings = Settings {
                containment,
                ..Settings::default()
            };
            (Executor::new(root, settings).unwrap(), "setsid sleep 100")
        } else {
            (
                Executor::new(root, Settings::default()).unwrap(),
                "sleep 100",
            )
        };
        let script = format!(
            r#"{background} & echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" > "$PIDS.part"; {PRINT_LAST_BACKGROUND} >> "$PIDS.part"; mv "$PIDS.part" "$PIDS"; wait"#
        );
        let mut spec = with_env(sh(&script), "PIDS", Path::new(&pids));
        spec.task = "previous".into();
        let _running = executor.start(spec, None, |_| {});
        loop {
            thread::park();
        }
    }

    /// Runs [`previous_drone`] on `scratch`'s root (in a cgroup when `cgroup`), kills it once its
    /// attempt runs, and returns the attempt's two processes, still running.
    fn a_drone_that_died(scratch: &Scratch, cgroup: bool) -> Vec<Stray> {
        let pids = scratch.file("pids");
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["exec::tests::previous_drone", "--exact", "--ignored"])
            .env(PREVIOUS_ROOT_VAR, scratch.root())
            .env(PIDS_VAR, &pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if cgroup {
            command.env(CGROUP_VAR, "1");
        }
        let mut previous = command.spawn().unwrap();
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
        left
    }

    #[test]
    fn reap_leftovers_ends_what_a_dead_drone_left_running() {
        let scratch = Scratch::new();
        let left = a_drone_that_died(&scratch, false);
        let executor = scratch.executor();
        let leftovers = executor.reap_leftovers();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let leftover = &leftovers[0];
        assert_eq!(leftover.attempt, Some(("previous".into(), 1)));
        assert_eq!(
            leftover.killed,
            Some(format!("its process group {}", left[0].pid))
        );
        assert_eq!(leftover.removal_error, None);
        assert!(leftover.to_string().contains("killed its process group"));
        for stray in &left {
            stray.wait_gone();
        }
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
        assert_eq!(executor.reap_leftovers(), Vec::new());
    }

    #[test]
    fn reap_leftovers_kills_a_dead_drone_s_cgroups_setsid_and_all() {
        let scratch = Scratch::new();
        let test = "reap_leftovers_kills_a_dead_drone_s_cgroups_setsid_and_all";
        let Some(probe) = scratch.cgroup_executor(test) else {
            return;
        };
        let groups = read_owned(&scratch.root()).unwrap().groups;
        drop(probe);
        let left = a_drone_that_died(&scratch, true);
        // What the reaper does: an executor with no containment of its own ends the cgroups the
        // journal and the cgroups file name.
        let executor = scratch.executor();
        let leftovers = executor.reap_leftovers();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let killed = leftovers[0].killed.clone().unwrap();
        assert!(killed.starts_with("its cgroup /sys/fs/cgroup"), "{killed}");
        for stray in &left {
            stray.wait_gone();
        }
        assert_eq!(scratch.left_in_root(), Vec::<String>::new());
        for group in groups {
            assert!(!group.exists(), "{} is left", group.display());
        }
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
            cgroups: Vec::new(),
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
                    l.killed.clone(),
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
