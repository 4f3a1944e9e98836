//! Output as it comes, on the command line: `task logs [-f]` copies one stream of an attempt
//! (`GET /tasks/ID/logs`), and `task run --wait` follows each attempt's two streams while it
//! watches the task (`GET /tasks/ID?wait=`), says why it waits when it has been pending a while,
//! and gives up when `--wait-timeout` says.
//!
//! A followed answer may end before the attempt has (a queen's relay lost its drone, a connection
//! broke, a quiet stream outlasted a read's timeout): the reader asks again from the next byte it
//! has not seen (see `tasks::wire::LogCursor`), so nothing is printed twice or skipped.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{CALL_TIMEOUT, Failure, Session, finish};
use crate::cli::Wait;
use crate::exec::Stream;
use crate::tasks::wire::{LOG_ATTEMPT_FIELD, LogCursor, LogHead};

/// Each read of a followed answer waits this long at most; a stream quiet for longer is asked
/// for again.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Between asks, after one that failed in a way that may pass (no queen answered, a drone that
/// does not answer now, an answer that broke off).
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Asks in a row that bring nothing before a follow gives up: some 10 s of them.
const MAX_FRUITLESS_ASKS: u32 = 20;

/// A task that has been pending this long has its reason said.
const SAY_PENDING_AFTER: Duration = Duration::from_secs(2);

/// Longest `?wait=` one look at the task asks for: how late a change of its state is seen.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long an ended task's followers may take to print what is left.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Most bytes read at once.
const PIECE_BYTES: usize = 64 * 1024;

/// Exit status of a `--wait` whose `--wait-timeout` passed first, as timeout(1)'s.
const TIMED_OUT: u8 = 124;

impl Session {
    /// Copies `stream` of attempt `attempt` (the last one when `None`) of task `id` to `out`, from
    /// its first byte kept; with `follow`, as it comes until the attempt has ended.
    pub(super) fn copy_stream(
        &self,
        id: &str,
        stream: Stream,
        mut attempt: Option<u32>,
        follow: bool,
        out: &mut dyn Write,
    ) -> Result<(), Failure> {
        let mut cursor = LogCursor::at(0);
        let mut fruitless = 0;
        let mut piece = vec![0; PIECE_BYTES];
        loop {
            if fruitless > 0 {
                if fruitless > MAX_FRUITLESS_ASKS {
                    return Err(Failure::Unreachable(format!(
                        "the {} of task {id} stopped coming, and asking again brought nothing",
                        stream.as_str()
                    )));
                }
                thread::sleep(RETRY_AFTER);
            }
            let mut path = format!(
                "/tasks/{id}/logs?stream={}&offset={}",
                stream.as_str(),
                cursor.position
            );
            if let Some(n) = attempt {
                path.push_str(&format!("&attempt={n}"));
            }
            if follow {
                path.push_str("&follow=1");
            }
            let answer = match self.stream(&path, READ_TIMEOUT) {
                Ok(answer) if answer.status == 200 => answer,
                // The attempt's drone does not answer now: it may again, or be found gone.
                Ok(answer) if follow && answer.status == 502 => {
                    fruitless += 1;
                    continue;
                }
                Ok(answer) => {
                    let status = answer.status;
                    return Err(Failure::Refused {
                        status,
                        error: answer.said(),
                    });
                }
                Err(failure) if follow => {
                    fruitless += 1;
                    if fruitless > MAX_FRUITLESS_ASKS {
                        return Err(failure);
                    }
                    continue;
                }
                Err(failure) => return Err(failure),
            };
            let Some(head) = LogHead::from_fields(|name| answer.field(name)) else {
                return Err(Failure::Refused {
                    status: 200,
                    error: "an answer that does not say where in the stream it starts".into(),
                });
            };
            // Asked again, it is the same attempt's, even when another has started since.
            attempt = attempt.or_else(|| answer.field(LOG_ATTEMPT_FIELD)?.parse().ok());
            cursor.begin(&head);
            let mut body = answer.body;
            let mut got = false;
            let whole = loop {
                match body.read(&mut piece) {
                    Ok(0) => break true,
                    Ok(n) => {
                        out.write_all(&piece[..n])
                            .and_then(|()| out.flush())
                            .map_err(Failure::Write)?;
                        cursor.pass(&piece[..n]);
                        got = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if !follow => {
                        return Err(Failure::Unreachable(format!(
                            "the {} of task {id} broke off: {e}",
                            stream.as_str()
                        )));
                    }
                    Err(_) => break false,
                }
            };
            if !follow || (whole && head.ended) {
                return Ok(());
            }
            fruitless = if got { 0 } else { fruitless + 1 };
        }
    }

    /// Waits for task `id` to end as `wait` says, printing its attempts' output as it comes;
    /// returns the exit status (see [`finish`]).
    pub(super) fn wait(&self, id: &str, wait: Wait) -> Result<u8, Failure> {
        let began = Instant::now();
        let deadline = wait.timeout.map(|timeout| began + timeout);
        // Attempts whose output was followed, or is: one at a time, in order.
        let mut followed = 0;
        let mut following: Option<mpsc::Receiver<()>> = None;
        let mut said: Option<String> = None;
        loop {
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                eprintln!(
                    "larve: gave up waiting for task {id} after {:.1} s (--wait-timeout); it goes on",
                    began.elapsed().as_secs_f64()
                );
                return Ok(TIMED_OUT);
            }
            let look = left.map_or(LOOK_EVERY, |left| left.min(LOOK_EVERY));
            let path = format!("/tasks/{id}?wait={:.3}", look.as_secs_f64());
            let task = self.call("GET", &path, None, look + CALL_TIMEOUT)?;
            if let Some(done) = &following
                && !matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty))
            {
                following = None;
            }
            let last = last_attempt(&task);
            if following.is_none() && followed < last {
                followed += 1;
                following = Some(self.follow_attempt(id, followed));
            }
            let ended = matches!(
                task["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            );
            if ended {
                match &following {
                    None if followed >= last => return Ok(finish(&task)),
                    None => {}
                    Some(done) => {
                        let grace = left.map_or(DRAIN_GRACE, |left| left.min(DRAIN_GRACE));
                        if done.recv_timeout(grace).is_err() {
                            eprintln!(
                                "larve: task {id} ended, and the rest of its output did not come"
                            );
                            return Ok(finish(&task));
                        }
                        following = None;
                    }
                }
            } else if task["state"] == "pending" && began.elapsed() >= SAY_PENDING_AFTER {
                let reason = task["reason"].as_str().unwrap_or("no reason given");
                if said.as_deref() != Some(reason) {
                    eprintln!("larve: task {id} is pending: {reason}");
                    said = Some(reason.to_string());
                }
            }
        }
    }

    /// Follows both streams of attempt `n` of task `id` to their ends, to stdout and stderr, on
    /// threads of their own; what it returns hears when both are done.
    fn follow_attempt(&self, id: &str, n: u32) -> mpsc::Receiver<()> {
        let (done, heard) = mpsc::channel();
        let (session, id) = (self.clone(), id.to_string());
        thread::spawn(move || {
            thread::scope(|scope| {
                scope.spawn(|| session.follow_stream(&id, Stream::Stderr, n, &mut io::stderr()));
                session.follow_stream(&id, Stream::Stdout, n, &mut io::stdout());
            });
            let _ = done.send(());
        });
        heard
    }

    /// Follows `stream` of attempt `n` of task `id` to `out`, saying on stderr why it stopped
    /// short.
    fn follow_stream(&self, id: &str, stream: Stream, n: u32, out: &mut dyn Write) {
        if let Err(failure) = self.copy_stream(id, stream, Some(n), true, out) {
            eprintln!(
                "larve: could not follow the {} of attempt {n}: {failure}",
                stream.as_str()
            );
        }
    }
}

/// The number of `task`'s last attempt; 0 when it has none.
fn last_attempt(task: &Value) -> u32 {
    task["attempts"]
        .as_array()
        .and_then(|attempts| attempts.last())
        .and_then(|attempt| attempt["n"].as_u64())
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}
