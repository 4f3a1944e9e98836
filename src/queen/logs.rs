//! `GET /tasks/ID/logs` on any queen: an attempt's output, relayed piece by piece from the drone
//! that keeps it (`GET /attempts/ID/logs`, see `drone/logs/`). A queen keeps no output herself;
//! she finds the attempt and its drone, asks, and passes each piece on as it comes, so what she
//! holds of a stream is one piece, however long it is.
//!
//! A drone's follow ends its answer now and then (see `drone/logs/follow.rs`): the relay asks
//! again from where it is, so that the queen's own answer ends only when the attempt has, or the
//! drone can no longer be asked. A relay reads on the client connection's thread (the front's),
//! so a client that left is noticed between pieces: at most one drone answer's quiet time late.

use std::io::Read;
use std::time::Duration;

use log::warn;

use super::Queen;
use crate::client::{CallError, Client, Streaming};
use crate::drone::logs::FOLLOW_IDLE;
use crate::error::{Error, Result};
use crate::exec::Stream;
use crate::logging::quoted;
use crate::server::{BodySource, Pulled};
use crate::tasks::wire::{LogCursor, LogHead};

/// Most bytes passed on at once.
const PIECE_BYTES: usize = 64 * 1024;

/// What a caller asks of an attempt's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsAsked {
    pub stream: Stream,
    /// The attempt's number (1-based); `None`: the last.
    pub attempt: Option<u32>,
    /// The stream's first byte wanted.
    pub offset: u64,
    /// Go on as the attempt writes, until it ends.
    pub follow: bool,
}

impl Queen {
    /// The head of task `id`'s output as `asked`, the attempt's number, and its body, relayed
    /// from the attempt's drone. Not found: no such task, attempt (none yet included); gone: the
    /// attempt's drone is no longer registered, or no longer keeps its output.
    pub fn logs(&self, id: &str, asked: LogsAsked) -> Result<(LogHead, u32, Relay)> {
        let task = self.task(id, None)?;
        let attempt = match asked.attempt {
            None => task.attempts.last().ok_or_else(|| {
                Error::NotFound(format!(
                    "attempt of task {id:?}: it has not started one yet"
                ))
            })?,
            Some(n) => task
                .attempts
                .iter()
                .find(|attempt| attempt.n == n)
                .ok_or_else(|| Error::NotFound(format!("attempt {n} of task {id:?}")))?,
        };
        let what = format!("the output of attempt {} of task {}", attempt.n, quoted(id));
        let Some(bearer) = self.store.registry().registered(&attempt.address) else {
            return Err(Error::Gone(format!(
                "{what} is gone: its drone {} ({}) is no longer registered",
                attempt.drone, attempt.address
            )));
        };
        let mut relay = Relay {
            client: self.client.bearing(bearer),
            address: attempt.address.clone(),
            attempt: attempt.id.clone(),
            asked,
            cursor: LogCursor::at(asked.offset),
            answer: None,
            call_timeout: self.config.task_timeout,
        };
        let head = relay.ask().map_err(|failure| match failure {
            Failure::Status(404, _) => Error::Gone(format!(
                "{what} is gone: its drone {} ({}) no longer keeps it",
                attempt.drone, attempt.address
            )),
            failure => Error::DroneFailed(format!(
                "{what} could not be read from its drone {} ({}): {failure}",
                attempt.drone, attempt.address
            )),
        })?;
        Ok((head, attempt.n, relay))
    }
}

/// Why a drone's answer could not be relayed.
enum Failure {
    Call(CallError),
    /// It answered this status, saying this.
    Status(u16, String),
    /// Its answer lacked the head fields of an attempt's output.
    NoHead,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Call(e) => write!(f, "{e}"),
            Failure::Status(status, said) => write!(f, "it answered {status}: {said}"),
            Failure::NoHead => write!(f, "its answer does not say where in the stream it starts"),
        }
    }
}

/// One stream of one attempt, asked of its drone as often as it takes (see the module's doc).
pub struct Relay {
    /// Bearing the drone's credential.
    client: Client,
    address: String,
    /// The attempt's id, as the drone knows it.
    attempt: String,
    asked: LogsAsked,
    cursor: LogCursor,
    /// The drone's answer being passed on, and whether the attempt had ended when it began.
    answer: Option<(Streaming, bool)>,
    call_timeout: Duration,
}

impl Relay {
    /// Asks the drone from where the relay stands; its answer is the one passed on from now.
    fn ask(&mut self) -> std::result::Result<LogHead, Failure> {
        let path = format!(
            "/attempts/{}/logs?stream={}&offset={}{}",
            self.attempt,
            self.asked.stream.as_str(),
            self.cursor.position,
            if self.asked.follow { "&follow=1" } else { "" }
        );
        // A follow's answer goes quiet for up to FOLLOW_IDLE before the drone ends it.
        let read_timeout = FOLLOW_IDLE + self.call_timeout;
        let answer = self
            .client
            .get_stream(&self.address, &path, (self.call_timeout, read_timeout))
            .map_err(Failure::Call)?;
        if answer.status != 200 {
            let status = answer.status;
            return Err(Failure::Status(status, answer.said()));
        }
        let head = LogHead::from_fields(|name| answer.field(name)).ok_or(Failure::NoHead)?;
        self.cursor.begin(&head);
        self.answer = Some((answer, head.ended));
        Ok(head)
    }
}

impl BodySource for Relay {
    /// Blocks on the drone's answer for as long as it is quiet (at most [`FOLLOW_IDLE`] and a
    /// call's timeout), whatever `wait` says: the relay has no thread of its own to wait on.
    fn next(&mut self, _wait: Duration) -> Pulled {
        // One new answer per pull at most, so a drone that keeps ending its answers at once
        // cannot make a pull spin.
        let mut asked_again = false;
        loop {
            let Some((answer, ended)) = &mut self.answer else {
                if asked_again {
                    return Pulled::Idle;
                }
                asked_again = true;
                if let Err(failure) = self.ask() {
                    warn!(
                        "stopped relaying the {} of attempt {} from {}: {failure}",
                        self.asked.stream.as_str(),
                        self.attempt,
                        quoted(&self.address)
                    );
                    return Pulled::End;
                }
                continue;
            };
            let mut piece = vec![0; PIECE_BYTES];
            match answer.body.read(&mut piece) {
                Ok(0) => {
                    if *ended || !self.asked.follow {
                        return Pulled::End;
                    }
                    self.answer = None;
                }
                Ok(n) => {
                    piece.truncate(n);
                    self.cursor.pass(&piece);
                    return Pulled::Data(piece);
                }
                Err(e) => {
                    if !self.asked.follow {
                        warn!(
                            "the {} of attempt {} from {} broke off: {e}",
                            self.asked.stream.as_str(),
                            self.attempt,
                            quoted(&self.address)
                        );
                        return Pulled::End;
                    }
                    self.answer = None;
                }
            }
        }
    }
}
