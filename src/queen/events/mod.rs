//! The event stream, `GET /events`: every change to a task or a drone, as a line of JSON, in the
//! store's revision order, held open until the client leaves.
//!
//! ```text
//!   engine's watch ──► store/sync.rs: apply to the views, then encode ──► Events (a bounded
//!                      each change once (line.rs)                          history, history.rs)
//!                                                                            │ read lock, copy
//!                              client ◄── the front, on the client's ◄── Follower (one per
//!                                         own thread (front/held.rs)        client)
//! ```
//!
//! Every queen follows the store's watch to keep her views (`store/sync.rs`); the changes come
//! from there, after they are applied, so the stream is the same on the leader and on followers,
//! in memory, with a data dir and on etcd, and its revisions are the store's: a client resumes on
//! any queen of the hive from the last `rev` it saw (`?after=REV`). Each change is encoded once
//! when it arrives and the bytes are shared: a thousand followers cost a thousand copies into
//! socket buffers, not a thousand encodings.
//!
//! Memory is bounded whatever the followers do. The history keeps the newest changes up to a
//! size ([`HISTORY_BYTES`]); a follower holds only its place in it and one piece at a time. A
//! follower that falls [`MAX_LAG_BYTES`] behind the newest change is cut off with a last line
//! saying where to resume; one that asks for, or falls to, a change no longer held is told to list
//! again (a 410 at the start, a last line later). One that stops reading is cut off by the front's
//! write timeout.
//!
//! A follower that has caught up waits [`COALESCE`] before it looks again, so the changes of that
//! time go out in one write: under a thousand changes a second, a thousand followers make twenty
//! writes a second each rather than one per change, for at most that much more delay.

mod history;
mod line;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::{Value, json};

use crate::server::{BodySource, Pulled};
use history::{Cursor, History, Limits, Read, Unserved};

pub use line::{Kind, Kinds, Line, Type, deleted, drone, task};

/// The stream's content type: JSON, one value a line.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Bytes of lines the history keeps: several seconds of a thousand task changes a second, and
/// hours of a quiet hive.
pub const HISTORY_BYTES: usize = 16 * 1024 * 1024;

/// Lines the history keeps, however small.
const HISTORY_LINES: usize = 100_000;

/// How far, in bytes of lines, a follower may be behind the newest change before it is cut off:
/// half the history, so one cut off can resume at once from where it was.
pub const MAX_LAG_BYTES: u64 = HISTORY_BYTES as u64 / 2;

/// Bytes one piece of a follower's answer holds, a revision's lines always whole: what a follower
/// copies at once and sends in one write. Enough for the changes of [`COALESCE`] under a thousand
/// task changes a second (about 25 KiB), so a follower that keeps up makes one write each time.
const PIECE_BYTES: usize = 64 * 1024;

/// How long a follower that has caught up waits before it looks again. Each look is a wake-up of
/// its thread and a write to its socket: under a thousand task changes a second, a thousand
/// followers make 19,000 writes a second at 50 ms, where 20 ms (and pieces of 16 KiB) made 37,000.
pub const COALESCE: Duration = Duration::from_millis(50);

/// A blank line goes out after this long with nothing else, so clients and proxies see the
/// stream is alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a follower asking for a revision this queen has not reached yet waits for her to
/// reach it (a follower queen a moment behind the queen the client listed on).
const AHEAD_WAIT: Duration = Duration::from_secs(1);

/// A queen's recent changes, and the followers' way to wait for the next.
pub struct Events {
    history: RwLock<History>,
    /// Moves at every change to the history: a follower that found nothing waits for it to move.
    generation: AtomicU64,
    signal: Mutex<()>,
    changed: Condvar,
    /// Queens share the store (etcd): another queen may have listed at a revision this one has
    /// not seen, so a revision ahead of hers is followed, not refused.
    shared: bool,
    /// [`KEEP_ALIVE`], but in tests.
    keep_alive: Duration,
}

impl Events {
    /// No changes yet; nothing is served until the state has been read ([`Events::listed`]).
    pub fn new(shared: bool) -> Events {
        let limits = Limits {
            bytes: HISTORY_BYTES,
            lines: HISTORY_LINES,
            lag_bytes: MAX_LAG_BYTES,
        };
        Events::with_limits(shared, limits, KEEP_ALIVE)
    }

    fn with_limits(shared: bool, limits: Limits, keep_alive: Duration) -> Events {
        Events {
            history: RwLock::new(History::new(limits)),
            generation: AtomicU64::new(0),
            signal: Mutex::new(()),
            changed: Condvar::new(),
            shared,
            keep_alive,
        }
    }

    /// The revision up to which every change has reached this queen's views: a listing read after
    /// asking this reflects it, so a client lists, then follows `after` it, and misses nothing.
    pub fn revision(&self) -> i64 {
        self.history.read().revision()
    }

    /// The changes of one message of the store's watch, applied to the views, up to `revision`.
    pub fn publish(&self, lines: Vec<Line>, revision: i64) {
        self.history.write().push(lines, revision);
        self.moved();
    }

    /// The state was read whole at `revision` (see [`History::listed`]).
    pub fn listed(&self, revision: i64) {
        self.history.write().listed(revision);
        self.moved();
    }

    fn moved(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        let _signal = self.signal.lock();
        self.changed.notify_all();
    }

    /// Waits until the history moves past generation `seen`, or until `deadline`.
    fn wait(&self, seen: u64, deadline: Instant) {
        let mut signal = self.signal.lock();
        // Looked at under the lock a publisher takes to notify: no wake-up is missed.
        if self.generation.load(Ordering::Acquire) == seen {
            self.changed.wait_until(&mut signal, deadline);
        }
    }

    /// A follower of the changes after `after` (`None`: from now on) of `kinds`, as one who sees
    /// secrets (`secrets`) or not may see them; or why it cannot start there.
    pub fn follow(
        self: &Arc<Self>,
        after: Option<i64>,
        kinds: Kinds,
        secrets: bool,
    ) -> Result<Follower, Refused> {
        let give_up = Instant::now() + AHEAD_WAIT;
        let cursor = loop {
            let seen = self.generation.load(Ordering::Acquire);
            let started = self.history.read().cursor(after);
            match started {
                Ok(cursor) => break cursor,
                Err(Unserved::Ahead { revision }) if Instant::now() >= give_up => {
                    if !self.shared {
                        return Err(Refused::Ahead { revision });
                    }
                    let mut cursor = self.history.read().cursor(None).map_err(Refused::from)?;
                    cursor.after = after.unwrap_or(cursor.after);
                    break cursor;
                }
                Err(Unserved::Ahead { .. }) => self.wait(seen, give_up),
                Err(Unserved::Gone { oldest_after }) => {
                    return Err(Refused::Gone { oldest_after });
                }
            }
        };
        Ok(Follower {
            events: self.clone(),
            cursor,
            kinds,
            secrets,
            sent_at: Instant::now(),
            caught_up_at: None,
            ended: false,
        })
    }
}

/// Why a follower cannot start where it asked: answered 410, with the oldest `after` served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The changes after `after` are no longer held.
    Gone { oldest_after: i64 },
    /// `after` is past this queen's revision, and she is alone: her memory store started again.
    Ahead { revision: i64 },
}

impl From<Unserved> for Refused {
    fn from(unserved: Unserved) -> Refused {
        match unserved {
            Unserved::Gone { oldest_after } => Refused::Gone { oldest_after },
            Unserved::Ahead { revision } => Refused::Ahead { revision },
        }
    }
}

/// What a client does after a 410 or a last line telling it to list again.
const LIST_AGAIN: &str = "list again (GET /tasks and GET /drones say the revision they were read at) and follow after that revision";

impl Refused {
    /// The 410's body for a follower that asked for `after`: why, and `oldest_after`, the oldest
    /// revision this queen follows after.
    pub fn body(&self, after: i64) -> Value {
        match *self {
            Refused::Gone { oldest_after } => json!({
                "error": format!("after={after} is older than this queen's history, which holds the changes after revision {oldest_after}: {LIST_AGAIN}"),
                "oldest_after": oldest_after,
            }),
            Refused::Ahead { revision } => json!({
                "error": format!("after={after} is past this queen's revision {revision}: she started again without her state, or the revision is another hive's; {LIST_AGAIN}"),
                "oldest_after": revision,
            }),
        }
    }
}

/// `after`, as `?after=` gives it: a revision, a whole number from 0.
pub fn parse_after(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|after| *after >= 0)
        .ok_or_else(|| {
            format!(
                "after: {text:?} is not a revision (a whole number from 0: the rev of the last event seen, or the revision a list was read at)"
            )
        })
}

/// One client's stream: its place in the history, and what it asked for.
pub struct Follower {
    events: Arc<Events>,
    cursor: Cursor,
    kinds: Kinds,
    secrets: bool,
    /// When something (a keep-alive included) was last sent.
    sent_at: Instant,
    /// When the last piece that caught up with the history was sent.
    caught_up_at: Option<Instant>,
    /// A last line was sent: the answer ends.
    ended: bool,
}

impl Follower {
    /// The revision it starts after: every change up to it is not sent, every one after it is.
    pub fn after(&self) -> i64 {
        self.cursor.after
    }

    /// The last line for a follower the history no longer serves: why, and where to go on.
    fn last_line(&mut self, read: Read) -> Pulled {
        self.ended = true;
        let value = match read {
            Read::TooSlow { after } => json!({
                "error": format!("cut off: this client fell more than {} MiB of changes behind; resume with after={after}", MAX_LAG_BYTES >> 20),
                "after": after,
            }),
            _ => {
                let oldest_after = match read {
                    Read::Gone { oldest_after } => oldest_after,
                    _ => self.cursor.after,
                };
                json!({
                    "error": format!("the changes after revision {} are no longer here: {LIST_AGAIN}", self.cursor.after),
                    "oldest_after": oldest_after,
                })
            }
        };
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        Pulled::Data(line)
    }
}

impl BodySource for Follower {
    fn next(&mut self, wait: Duration) -> Pulled {
        if self.ended {
            return Pulled::End;
        }
        let deadline = Instant::now() + wait;
        if let Some(at) = self.caught_up_at.take() {
            let due = (at + COALESCE).min(deadline);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        loop {
            let seen = self.events.generation.load(Ordering::Acquire);
            let mut piece = Vec::new();
            let read = self.events.history.read().read(
                &mut self.cursor,
                self.kinds,
                self.secrets,
                PIECE_BYTES,
                &mut piece,
            );
            let now = Instant::now();
            match read {
                Read::Lines { more } => {
                    self.sent_at = now;
                    if !more {
                        self.caught_up_at = Some(now);
                    }
                    return Pulled::Data(piece);
                }
                Read::Nothing => {
                    let keep_alive = self.sent_at + self.events.keep_alive;
                    if now >= keep_alive {
                        self.sent_at = now;
                        return Pulled::Data(b"\n".to_vec());
                    }
                    if now >= deadline {
                        return Pulled::Idle;
                    }
                    self.events.wait(seen, deadline.min(keep_alive));
                }
                ended => return self.last_line(ended),
            }
        }
    }
}

#[cfg(test)]
mod tests;
