//! The recent changes, as the lines followers are sent, in revision order and bounded in bytes:
//! plain data and functions, no lock and no clock, so every rule is tested without threads.
//!
//! Lines are numbered as they come (a sequence number, apart from the store's revision, which
//! several lines share when a transaction wrote several keys). A follower holds a [`Cursor`]: the
//! number of the next line it would be sent, and the revision it has seen whole. What the history
//! holds is described by two revisions: `oldest_after`, the oldest `after` it can serve (every
//! change after it is here), and `revision`, up to which every change is here.

use std::collections::VecDeque;
use std::sync::Arc;

use super::line::{Kinds, Line};

/// The revision of a store nothing was ever written to.
const EMPTY_STORE_REVISION: i64 = 1;

/// What a history may hold before it forgets its oldest lines.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of lines, both versions of each counted.
    pub bytes: usize,
    /// Lines, however small.
    pub lines: usize,
    /// Bytes a follower may be behind the newest line before it is cut off; well under `bytes`,
    /// so a follower cut off can resume at once from where it was.
    pub lag_bytes: u64,
}

/// The lines, and what they cover.
#[derive(Debug)]
pub struct History {
    lines: VecDeque<Arc<Line>>,
    /// The number of `lines[0]`.
    first: u64,
    /// Bytes held, both versions of each line.
    held: usize,
    /// Bytes of every line ever taken in (the full version), so how far a follower is behind is
    /// one subtraction.
    written: u64,
    oldest_after: i64,
    revision: i64,
    limits: Limits,
}

/// Where a follower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The number of the next line it would look at.
    pub next: u64,
    /// The revision it has seen whole: lines at or before it are not sent to it.
    pub after: i64,
}

/// What a follower reading the history found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Lines were appended; `more`: there are others after them.
    Lines { more: bool },
    /// Nothing new for it (lines it does not want may have been passed).
    Nothing,
    /// It is more than [`Limits::lag_bytes`] behind: it is cut off, and may resume after `after`.
    TooSlow { after: i64 },
    /// What it needs next is no longer here: it must list again; this history serves `after`
    /// from `oldest_after` on.
    Gone { oldest_after: i64 },
}

/// Why a follower cannot start at the revision it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unserved {
    /// Older than the oldest change held.
    Gone { oldest_after: i64 },
    /// Past every change seen here.
    Ahead { revision: i64 },
}

impl History {
    /// An empty history that serves nothing until [`History::listed`] says where the state was
    /// read.
    pub fn new(limits: Limits) -> History {
        History {
            lines: VecDeque::new(),
            first: 0,
            held: 0,
            written: 0,
            oldest_after: 0,
            revision: 0,
            limits,
        }
    }

    /// Every change up to this revision is here: what a listing read now reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Takes in the lines of the changes up to `revision`, oldest first (changes the queen
    /// follows that make no line, her election's, still move `revision`). Lines at or before the
    /// revision held are dropped: the store's watch never sends them twice, and they would break
    /// the order.
    pub fn push(&mut self, lines: Vec<Line>, revision: i64) {
        let known = self.revision;
        for mut line in lines {
            if line.rev <= known {
                continue;
            }
            self.revision = line.rev;
            line.start = self.written;
            self.written += line.full.len() as u64;
            self.held += line.size();
            self.lines.push_back(Arc::new(line));
        }
        self.revision = self.revision.max(revision);
        while self.held > self.limits.bytes || self.lines.len() > self.limits.lines {
            let Some(oldest) = self.lines.pop_front() else {
                break;
            };
            self.first += 1;
            self.held -= oldest.size();
            self.oldest_after = self.oldest_after.max(oldest.rev);
        }
    }

    /// The state was read whole at `revision` (the queen's first read, or a read again after the
    /// store forgot the changes her watch needed). Changes between the last one held and
    /// `revision` were not seen one by one: unless there are none, the lines held no longer tell
    /// a follower everything, so they are dropped and followers behind `revision` must list again.
    pub fn listed(&mut self, revision: i64) {
        if revision <= self.revision {
            return;
        }
        self.first += self.lines.len() as u64;
        self.lines.clear();
        self.held = 0;
        // An empty store is at revision 1 (etcd's and the local engine's start): nothing changed
        // at it, so a client that has seen nothing at all (`after=0`) misses nothing.
        self.oldest_after = if revision == EMPTY_STORE_REVISION {
            0
        } else {
            revision
        };
        self.revision = revision;
    }

    /// Where a follower that has seen everything up to `after` starts; `None` for `after`: from
    /// now on.
    pub fn cursor(&self, after: Option<i64>) -> Result<Cursor, Unserved> {
        let end = self.first + self.lines.len() as u64;
        let Some(after) = after else {
            return Ok(Cursor {
                next: end,
                after: self.revision,
            });
        };
        if after < self.oldest_after {
            return Err(Unserved::Gone {
                oldest_after: self.oldest_after,
            });
        }
        if after > self.revision {
            return Err(Unserved::Ahead {
                revision: self.revision,
            });
        }
        let skip = self.lines.partition_point(|line| line.rev <= after);
        Ok(Cursor {
            next: self.first + skip as u64,
            after,
        })
    }

    /// Appends to `out` the lines after `cursor` that `kinds` wants, each as one who sees secrets
    /// (`secrets`) or not may see it, and moves the cursor past them. Stops once `out` holds
    /// `max_bytes`, but never inside a revision: the lines of one revision go out together.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        kinds: Kinds,
        secrets: bool,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Read {
        if cursor.next < self.first {
            return Read::Gone {
                oldest_after: self.oldest_after,
            };
        }
        let from = (cursor.next - self.first) as usize;
        let Some(first) = self.lines.get(from) else {
            return Read::Nothing;
        };
        if self.written - first.start > self.limits.lag_bytes {
            return Read::TooSlow {
                after: cursor.after,
            };
        }
        // Room for what is there, up to a piece, at once: a piece grown as it fills copies itself
        // a dozen times and may end holding twice its bytes.
        out.reserve((self.written - first.start).min(max_bytes as u64) as usize);
        let before = out.len();
        let seen = cursor.after;
        let mut taken = 0;
        let mut last = None;
        for line in self.lines.range(from..) {
            // A line at or before what the follower has seen whole: it asked to start after a
            // revision that had not reached this queen yet (see `Events::follow`).
            if line.rev <= seen {
                taken += 1;
                continue;
            }
            // A piece ends only where a revision does.
            if out.len() - before >= max_bytes && last != Some(line.rev) {
                break;
            }
            taken += 1;
            last = Some(line.rev);
            if kinds.wants(line.kind) {
                out.extend_from_slice(line.version(secrets));
            }
        }
        if let Some(last) = last {
            cursor.after = last;
        }
        cursor.next += taken;
        if out.len() > before {
            let more = cursor.next < self.first + self.lines.len() as u64;
            Read::Lines { more }
        } else {
            Read::Nothing
        }
    }
}
