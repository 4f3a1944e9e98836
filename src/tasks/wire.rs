//! What queens and drones send each other about attempts: the JSON of `POST /tasks` on a drone
//! (start), `POST /reports` on a queen (ends), the attempts a drone lists to a probe, the head of
//! an attempt's output (`GET /attempts/ID/logs` on a drone, relayed by `GET /tasks/ID/logs` on a
//! queen), and the attempts a queen has forgotten (`POST /attempts/forget` on a drone).
//!
//! An attempt is named by its id everywhere here (see [`crate::tasks::Attempt::id`]); the task id
//! and the attempt's number travel beside it for the drone's directories, environment and logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_KILL_TIMEOUT_SECS, Resources};

/// How an attempt ended, as its drone saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The kernel killed it for going over its memory limit.
    OomKilled,
}

/// One attempt to start: `POST /tasks` on a drone carries a list of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The attempt's id.
    pub id: String,
    pub task: String,
    pub attempt: u32,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_s: f64,
    pub slots: u32,
    /// The limits its cgroup enforces.
    #[serde(default)]
    pub resources: Resources,
    /// Seconds from SIGTERM to SIGKILL when it is stopped.
    #[serde(default = "default_kill_timeout")]
    pub kill_timeout_s: f64,
}

fn default_kill_timeout() -> f64 {
    DEFAULT_KILL_TIMEOUT_SECS
}

/// `POST /tasks` on a drone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    pub attempts: Vec<Start>,
}

/// What a drone did with one attempt it was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Started {
    /// It runs now.
    Started,
    /// It was running already (the start was sent again).
    Running,
    /// This drone ran it already, and it has ended: it is not run twice.
    Ended,
    /// Not enough free slots.
    Full,
}

/// One answer of `POST /tasks` on a drone, in the order of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartResult {
    /// The attempt's id.
    pub id: String,
    pub result: Started,
}

/// `POST /tasks`' answer on a drone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartAnswer {
    pub results: Vec<StartResult>,
}

/// How one attempt ended, as its drone reports it to a queen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    pub state: Ending,
    pub exit_code: Option<i32>,
    /// The signal that killed the command, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i32>,
    /// The most memory the attempt's processes held at once, where the drone measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    pub reason: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// One report: which attempt, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The attempt's id.
    pub id: String,
    pub task: String,
    pub attempt: u32,
    #[serde(flatten)]
    pub ended: Ended,
}

/// `POST /reports` on a queen: a drone's reports, with who it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reports {
    /// The drone's advertised address.
    pub address: String,
    pub boot: String,
    pub reports: Vec<Report>,
}

/// `POST /reports`' answer: the ids of the attempts the queen recorded (or found nothing to record
/// for); the drone forgets them, and sends the others again later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportsAnswer {
    pub accepted: Vec<String>,
}

/// An attempt a drone lists: its id, and its task's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    pub task: String,
}

/// What a Hive drone adds to its `/healthz` for a caller with the token: who it is and what it
/// runs. A tutorial drone sends none of it, so every field defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DroneStatus {
    #[serde(default)]
    pub boot: String,
    #[serde(default)]
    pub exec: bool,
    #[serde(default)]
    pub slots: u32,
    /// Slots its running attempts take now.
    #[serde(default)]
    pub used: u32,
    /// The attempts it runs now.
    #[serde(default)]
    pub running: Vec<Listed>,
    /// The attempts that have ended and whose reports no queen has recorded yet.
    #[serde(default)]
    pub ended: Vec<Listed>,
}

/// `POST /lease` on a queen: a drone renewing its lease, with what it runs (the same fields its
/// verbose `/healthz` gives), so the leader reconciles its attempts without probing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Renewal {
    /// The `renewal` of the queen's answer to the drone's previous renewal: this one's list was
    /// made after that answer. Absent from a drone's first renewal with a queen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    #[serde(flatten)]
    pub status: DroneStatus,
}

/// What a queen answers a renewal she took (after the tutorial's `"result": "OK"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewalAnswer {
    /// Seconds until the next renewal is due: the drone renews a little before.
    pub lease_interval: f64,
    /// This renewal's id, for the next renewal's `after`.
    pub renewal: u64,
}

/// The head of an answer carrying an attempt's output (`GET .../logs`), as two fields say it: where
/// in the stream its body starts, and whether the attempt had ended when it began. The same on a
/// drone's answer and a queen's, so a queen relays it as it is, and any reader asks again from
/// where it stopped (see `drone/logs/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// The stream's byte the body's first stream byte is (after any marker line): the offset asked
    /// for, or the first byte kept when that one was dropped.
    pub offset: u64,
    /// The attempt had ended when the answer began: its body, once it ends whole, ends the stream.
    /// Otherwise a whole body only ends a part of it, and the reader asks again from where it is.
    pub ended: bool,
}

/// The fields a [`LogHead`] travels in.
pub const LOG_OFFSET_FIELD: &str = "X-Hive-Log-Offset";
pub const LOG_ENDED_FIELD: &str = "X-Hive-Log-Ended";

/// The field of a queen's answer naming the attempt (its number) whose output it carries: a
/// reader that asked for the last attempt asks again for that one.
pub const LOG_ATTEMPT_FIELD: &str = "X-Hive-Log-Attempt";

impl LogHead {
    /// The head's fields, as an answer carries them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (LOG_OFFSET_FIELD, self.offset.to_string()),
            (LOG_ENDED_FIELD, self.ended.to_string()),
        ]
    }

    /// The head an answer's fields carry (`field` looks one up by name); `None` when either is
    /// missing or malformed.
    pub fn from_fields<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Option<LogHead> {
        Some(LogHead {
            offset: field(LOG_OFFSET_FIELD)?.trim().parse().ok()?,
            ended: field(LOG_ENDED_FIELD)?.trim().parse().ok()?,
        })
    }
}

/// Where a reader of an attempt's output stands in the stream, as answers of `.../logs` go by: so
/// that a reader whose answer ended (a drone's follow ends its answers now and then, a connection
/// breaks) asks again from exactly the next byte. The marker line an answer may start with is not
/// the stream's, and is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogCursor {
    /// The stream's offset of the next byte.
    pub position: u64,
    /// The answer's marker line has not all gone by yet.
    in_marker: bool,
}

impl LogCursor {
    /// A reader starting at byte `offset`.
    pub fn at(offset: u64) -> LogCursor {
        LogCursor {
            position: offset,
            in_marker: false,
        }
    }

    /// An answer asked from [`LogCursor::position`] began with `head`: when it starts later (what
    /// was asked for was dropped), its body starts with a marker line.
    pub fn begin(&mut self, head: &LogHead) {
        self.in_marker = head.offset > self.position;
        self.position = head.offset;
    }

    /// `bytes` of the answer's body went by.
    pub fn pass(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.in_marker {
            let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                return;
            };
            self.in_marker = false;
            bytes = &bytes[end + 1..];
        }
        self.position += bytes.len() as u64;
    }
}

/// `POST /attempts/forget` on a drone: attempts whose tasks a queen has deleted (her
/// `--keep-finished`), whose output the drone need keep no longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forget {
    /// The attempts' ids.
    pub attempts: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_head_travels_in_its_two_fields() {
        let head = LogHead {
            offset: 52_428_800,
            ended: true,
        };
        let fields = head.fields();
        let find = |name: &str| {
            fields
                .iter()
                .find(|(field, _)| field.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(LogHead::from_fields(find), Some(head));
        assert_eq!(LogHead::from_fields(|_| Some("x")), None);
        assert_eq!(LogHead::from_fields(|_| None), None);
    }

    #[test]
    fn a_log_cursor_counts_the_stream_s_bytes_and_not_a_marker_line() {
        let mut cursor = LogCursor::at(10);
        cursor.begin(&LogHead {
            offset: 10,
            ended: false,
        });
        cursor.pass(b"abc\n");
        assert_eq!(cursor.position, 14);
        cursor.begin(&LogHead {
            offset: 100,
            ended: false,
        });
        cursor.pass(b"[hive: 86 bytes");
        cursor.pass(b" were dropped]\nxy");
        cursor.pass(b"z");
        assert_eq!(cursor.position, 103);
    }
}
