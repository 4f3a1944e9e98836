//! What a drone keeps of what its attempts print: each attempt's stdout and stderr in files under
//! its work root, written as the output is read, served from any offset and followed as it grows
//! (`GET /attempts/ID/logs`, which queens relay: see `follow.rs`), and removed when a queen says
//! the task is gone, or once they have aged past [`MAX_AGE`] otherwise.
//!
//! # Where
//! `<work root>/logs/<attempt id>/stdout.<offset>` and `stderr.<offset>`, each stream cut in
//! segments and kept up to `--max-log-mb` (see `segments.rs`). Beside the attempts' working
//! directories (`work/`), never inside them: a task runs as another user, whom the work root lets
//! pass to its own directory and no further, so `logs/` and every attempt's directory in it are
//! 0700 and the files 0600, and the work root's modes stay as they are. A restarted drone (or the
//! reaper) ends and removes what was left in `work/` only: logs outlive the drone process, and a
//! restarted drone serves them as it serves its new attempts'.
//!
//! # Following
//! While an attempt runs, its [`Live`] progress says how far each stream is written, where what is
//! kept starts, and whether the attempt has ended; the attempt's thread updates it after each
//! write (never holding its lock while writing), and a follower waits on it, so a line is served
//! as soon as its pipe read is on disk. An attempt is known while it is live or once its
//! directory exists: its thread makes the directory before the command starts, and the progress
//! goes only after the directory is there, so no moment makes a known attempt look unknown.
//!
//! # How long they stay
//! Until the task is deleted: the leader's `--keep-finished` collection tells the drones that ran
//! its attempts (`POST /attempts/forget`, best effort). What no queen ever tells of (a drone that
//! was away, a queen that died first) goes after [`MAX_AGE`] without a write: the drone looks every
//! [`SWEEP_EVERY`], and when it starts.

mod follow;
mod segments;

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use parking_lot::{Condvar, Mutex};

use crate::exec::{OutputSink, Stream};
use crate::tasks::valid_attempt_id;
pub use follow::{FOLLOW_IDLE, LogBody};
use segments::Writer;

/// Under the work root: the logs of every attempt, one directory each.
const LOGS_DIR: &str = "logs";

/// Closed to everyone but the drone's user, whatever the work root allows.
const DIR_MODE: u32 = 0o700;

/// What is kept of each stream of an attempt unless `--max-log-mb` says: 100 MiB.
pub const DEFAULT_MAX_LOG_MB: u64 = 100;

/// The logs of an attempt that no queen said to remove go once nothing was written to them for
/// this long: a week, far longer than any queen keeps a deleted task's attempts in mind, and short
/// enough that a drone whose queens were away does not fill its disk for good.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a drone looks for logs past [`MAX_AGE`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The logs of a drone's attempts.
pub struct Logs {
    /// `<work root>/logs`.
    dir: PathBuf,
    /// What is kept of each stream of an attempt at most.
    cap_bytes: u64,
    /// The attempts whose output is being written, by id.
    live: Mutex<HashMap<String, Arc<Live>>>,
}

/// How far an attempt's output is written, while it runs.
pub struct Live {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// One moment of a [`Live`] attempt's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written of each stream (by [`Stream::index`]).
    pub written: [u64; 2],
    /// The first byte of each stream still kept.
    pub kept_from: [u64; 2],
    /// The attempt has ended and its output is whole.
    pub ended: bool,
}

impl Live {
    fn new() -> Live {
        Live {
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
        }
    }

    pub fn progress(&self) -> Progress {
        *self.progress.lock()
    }

    /// Waits until `stream` is written past `position`, or what is kept of it starts past it, or
    /// the attempt ends, or `until` passes; returns the progress then.
    pub fn wait_past(&self, stream: Stream, position: u64, until: Instant) -> Progress {
        let i = stream.index();
        let mut progress = self.progress.lock();
        while progress.written[i] <= position
            && progress.kept_from[i] <= position
            && !progress.ended
        {
            if self.changed.wait_until(&mut progress, until).timed_out() {
                break;
            }
        }
        *progress
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock());
        self.changed.notify_all();
    }
}

impl Logs {
    /// The logs under `work_root` (made if missing, closed to others), keeping at most
    /// `cap_bytes` of each stream of an attempt; removes those past [`MAX_AGE`] first.
    pub fn open(work_root: &Path, cap_bytes: u64) -> io::Result<Logs> {
        let dir = work_root.join(LOGS_DIR);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))?;
        let logs = Logs {
            dir,
            cap_bytes,
            live: Mutex::new(HashMap::new()),
        };
        logs.sweep(MAX_AGE);
        Ok(logs)
    }

    /// Where attempt `id` keeps its output (`id` is an attempt id, so the path is under `logs/`).
    fn attempt_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The sink attempt `id`'s output goes to. The attempt is known (live) from now on; its
    /// directory and files are made by its own thread (see [`OutputSink::begin`]).
    pub fn sink(self: &Arc<Self>, id: &str) -> Box<dyn OutputSink> {
        let live = Arc::new(Live::new());
        self.live.lock().insert(id.to_string(), live.clone());
        Box::new(AttemptSink {
            logs: self.clone(),
            id: id.to_string(),
            writers: [None, None],
            live,
        })
    }

    /// Attempt `id`'s progress, while it runs.
    fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.live.lock().get(id).cloned()
    }

    /// Removes the logs of `attempts` (ids) that have ended; says how many were there.
    pub fn forget(&self, attempts: &[String]) -> usize {
        let mut removed = 0;
        for id in attempts {
            if !valid_attempt_id(id) || self.live(id).is_some() {
                continue;
            }
            match fs::remove_dir_all(self.attempt_dir(id)) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => warn!("could not remove the logs of attempt {id}: {e}"),
            }
        }
        removed
    }

    /// Removes the logs of ended attempts nothing was written to for `max_age`; says how many.
    pub fn sweep(&self, max_age: Duration) -> usize {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!("could not look through {}: {e}", self.dir.display());
                return 0;
            }
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !valid_attempt_id(&id) || self.live(&id).is_some() {
                continue;
            }
            let old = last_written(&entry.path())
                .is_some_and(|at| now.duration_since(at).unwrap_or_default() > max_age);
            if old && fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            info!(
                "removed the logs of {removed} attempts nothing was written to for {} days",
                max_age.as_secs() / (24 * 3600)
            );
        }
        removed
    }
}

/// When anything in the attempt's directory `dir` was last written: its files' newest time, or
/// the directory's own when it holds none.
fn last_written(dir: &Path) -> Option<SystemTime> {
    let own = fs::metadata(dir).and_then(|meta| meta.modified()).ok();
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| entry.metadata().and_then(|meta| meta.modified()).ok())
        .chain(own)
        .max()
}

/// Where one attempt's output is written: its two streams' writers, made when its thread begins,
/// and its progress for followers.
struct AttemptSink {
    logs: Arc<Logs>,
    id: String,
    /// `None` before the attempt begins, and for a stream that could not be written.
    writers: [Option<Writer>; 2],
    live: Arc<Live>,
}

impl OutputSink for AttemptSink {
    fn begin(&mut self) {
        let dir = self.logs.attempt_dir(&self.id);
        let made = DirBuilder::new()
            .mode(DIR_MODE)
            .create(&dir)
            .or_else(|e| match e.kind() {
                // The attempt ran here before: its writers go on after what it wrote.
                io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            });
        if let Err(e) = made {
            warn!("attempt {}: its output is not kept: {e}", self.id);
            return;
        }
        for stream in Stream::BOTH {
            match Writer::open(&dir, stream, self.logs.cap_bytes) {
                Ok(writer) => {
                    let (written, kept_from) = (writer.written(), writer.kept_from());
                    self.live.update(|progress| {
                        progress.written[stream.index()] = written;
                        progress.kept_from[stream.index()] = kept_from;
                    });
                    self.writers[stream.index()] = Some(writer);
                }
                Err(e) => warn!(
                    "attempt {}: its {} is not kept: {e}",
                    self.id,
                    stream.as_str()
                ),
            }
        }
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let i = stream.index();
        let Some(writer) = &mut self.writers[i] else {
            return;
        };
        match writer.write(bytes) {
            Ok(()) => {
                let (written, kept_from) = (writer.written(), writer.kept_from());
                self.live.update(|progress| {
                    progress.written[i] = written;
                    progress.kept_from[i] = kept_from;
                });
            }
            Err(e) => {
                warn!(
                    "attempt {}: its {} is kept only to byte {}: {e}",
                    self.id,
                    stream.as_str(),
                    writer.written()
                );
                self.writers[i] = None;
            }
        }
    }
}

impl Drop for AttemptSink {
    /// The output is whole: followers read to its end and stop, and the attempt is known by its
    /// directory from now on.
    fn drop(&mut self) {
        self.live.update(|progress| progress.ended = true);
        let mut live = self.logs.live.lock();
        if live
            .get(&self.id)
            .is_some_and(|l| Arc::ptr_eq(l, &self.live))
        {
            live.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::segments::MIN_SEGMENT_BYTES;
    use super::*;
    use crate::exec::tests::Scratch;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn logs(scratch: &Scratch) -> Arc<Logs> {
        Arc::new(Logs::open(&scratch.file("root"), 4 * MIN_SEGMENT_BYTES).unwrap())
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_attempt_s_output_is_kept_in_closed_files_and_its_progress_followed() {
        let scratch = Scratch::new();
        let logs = logs(&scratch);
        let mut sink = logs.sink(ID);
        let live = logs.live(ID).expect("live from the start");
        assert_eq!(live.progress(), Progress::default());
        sink.begin();
        sink.write(Stream::Stderr, b"careful\n");
        sink.write(Stream::Stdout, b"hello\n");
        assert_eq!(
            live.progress(),
            Progress {
                written: [6, 8],
                kept_from: [0, 0],
                ended: false
            }
        );
        let waited = live.wait_past(
            Stream::Stdout,
            6,
            Instant::now() + Duration::from_millis(20),
        );
        assert_eq!(waited.written[0], 6, "nothing more came");
        drop(sink);
        assert!(live.progress().ended);
        assert!(logs.live(ID).is_none(), "ended: known by its directory now");
        let dir = logs.attempt_dir(ID);
        assert_eq!((mode(&logs.dir), mode(&dir)), (0o700, 0o700));
        let segment = dir.join("stdout.00000000000000000000");
        assert_eq!(fs::read(&segment).unwrap(), b"hello\n");
        assert_eq!(mode(&segment), 0o600);
    }

    #[test]
    fn forgotten_and_old_logs_go_and_live_ones_stay() {
        let scratch = Scratch::new();
        let logs = logs(&scratch);
        let ended = ["1".repeat(32), "2".repeat(32)];
        for id in &ended {
            let mut sink = logs.sink(id);
            sink.begin();
            sink.write(Stream::Stdout, b"x");
        }
        let mut running = logs.sink(ID);
        running.begin();
        assert_eq!(logs.sweep(MAX_AGE), 0, "nothing is old yet");
        let a_week_ago = SystemTime::now() - MAX_AGE - Duration::from_secs(60);
        for dir in [logs.attempt_dir(&ended[0]), logs.attempt_dir(ID)] {
            for entry in fs::read_dir(&dir).unwrap().flatten() {
                fs::File::options()
                    .write(true)
                    .open(entry.path())
                    .unwrap()
                    .set_modified(a_week_ago)
                    .unwrap();
            }
            fs::File::open(&dir)
                .unwrap()
                .set_modified(a_week_ago)
                .unwrap();
        }
        assert_eq!(logs.sweep(MAX_AGE), 1, "the old one, not the one that runs");
        assert!(!logs.attempt_dir(&ended[0]).exists());
        let asked = vec![ended[1].clone(), ID.to_string(), "../x".to_string()];
        assert_eq!(logs.forget(&asked), 1, "the ended one only");
        assert!(!logs.attempt_dir(&ended[1]).exists());
        assert!(logs.attempt_dir(ID).exists());
        drop(running);
        assert_eq!(logs.forget(&[ID.to_string()]), 1);
        assert_eq!(fs::read_dir(&logs.dir).unwrap().count(), 0);
    }
}
