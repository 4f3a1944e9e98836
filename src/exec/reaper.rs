//! The reaper: a small process a drone that runs commands starts beside itself, which ends the
//! drone's attempts when the drone itself ends, however it ends (`kill -9` included).
//!
//! A drone ends its attempts' process groups when they time out, are cancelled or exit, and a
//! drone restarted on the same work root ends what its previous run left. That leaves a drone
//! that dies and is not restarted: its attempts would run on, although its queen has declared
//! them lost and placed them again. So the drone starts `larve reap ROOT` with a pipe on its
//! standard input, whose other end only the drone holds. When the drone ends, the kernel closes
//! that end, the reaper reads the end of its input, and it does what a restarted drone does first
//! ([`Executor::reap_leftovers`]): it kills the cgroup or the process group of every attempt in
//! the journal and removes their directories, then removes the drone's own cgroups. It lives in a process group of its own, so a Ctrl-C meant for the
//! drone reaches it only through the drone's end.
//!
//! The work root's lock ([`lock_root`]) keeps the reaper and a drone from using one root at once:
//! the drone holds it for its life; the reaper takes it only once the drone is gone (waiting for
//! the kernel to let go of a dead drone's lock), and gives up if a new drone took it first (that
//! drone ends the leftovers itself).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{Executor, Settings};

/// The lock file in a work root.
const LOCK_FILE: &str = "lock";

/// How long a drone waits for a work root that is locked: long enough for a reaper to end what the
/// previous drone left; a root still locked after it has a live drone on it.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How often a locked root is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// Takes the work root's lock for as long as the returned file is open, waiting up to `wait`.
/// Makes the root (mode 0700) and the lock file (0600) if they are missing.
pub fn lock_root(root: &Path, wait: Duration) -> io::Result<File> {
    super::make_work_root(root)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(root.join(LOCK_FILE))?;
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another drone (its lock is held)",
                    root.display()
                ),
            ));
        }
        thread::sleep(LOCK_RETRY);
    }
}

/// A drone's side of its reaper: the lock of its work root, and the end of the pipe whose closing
/// wakes the reaper. Both are held for the life of the process.
pub struct Watched {
    _lock: File,
    _pipe: Option<ChildStdin>,
}

/// Starts the reaper of the drone that holds `lock`, the lock of `root` (see [`lock_root`]). A
/// reaper that cannot start is a warning, not an error: the drone still ends its leftovers when
/// it restarts.
pub fn watch(root: &Path, lock: File) -> Watched {
    let pipe = match start_reaper(root) {
        Ok((child, pipe)) => {
            wait_for(child);
            Some(pipe)
        }
        Err(e) => {
            warn!(
                "cannot start the reaper of {}: {e}; if this drone is killed, its tasks run on until it restarts",
                root.display()
            );
            None
        }
    };
    Watched {
        _lock: lock,
        _pipe: pipe,
    }
}

fn start_reaper(root: &Path) -> io::Result<(Child, ChildStdin)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("reap")
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child.stdin.take().expect("stdin is piped");
    Ok((child, pipe))
}

/// Waits for the reaper on a thread, so that it leaves no zombie and a reaper that ends while the
/// drone lives is said.
fn wait_for(mut child: Child) {
    let spawned = thread::Builder::new()
        .name("reaper-wait".into())
        .spawn(move || match child.wait() {
            Ok(status) => warn!(
                "the reaper ended ({status}); if this drone is killed, its tasks run on until it restarts"
            ),
            Err(e) => warn!("cannot wait for the reaper: {e}"),
        });
    if let Err(e) = spawned {
        warn!("cannot start the thread that waits for the reaper: {e}");
    }
}

/// The reaper's life (`larve reap ROOT`): waits for the end of its input, then ends what the
/// drone left on `root`. Returns the process's exit code.
pub fn run(root: PathBuf) -> u8 {
    let mut rest = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut rest);
    // The kernel closes a dead drone's descriptors one by one: the pipe may close (and wake this
    // process) before the lock is let go, so the lock is waited for. A new drone that takes the
    // root meanwhile ends the leftovers itself.
    let _lock = match lock_root(&root, LOCK_WAIT) {
        Ok(lock) => lock,
        // A new drone has the root: the leftovers are its to end.
        Err(_) => return 0,
    };
    // Ending needs nothing of the drone's settings: the journal and the cgroups file say all.
    let executor = match Executor::new(root.clone(), Settings::default()) {
        Ok(executor) => executor,
        Err(e) => {
            warn!("reaper: cannot open the work root {}: {e}", root.display());
            return 1;
        }
    };
    let leftovers = executor.reap_leftovers();
    for leftover in &leftovers {
        info!("reaper: the drone is gone; {leftover}");
    }
    0
}
