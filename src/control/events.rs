//! Following a queen's event stream from the command line, through whatever happens to the
//! connection: `larve events` prints it, `task ls --watch` and `drone ls --watch` redraw from it.
//!
//! A stream that ends (the queen cut off a slow reader, the connection broke, the call's lifetime
//! passed, the queen died) is opened again, on the next queen of `--queen-host` when the one asked
//! does not answer, after the last revision seen whole: nothing is missed and nothing printed
//! twice. A revision's lines come together, but a connection can break between them; so the lines
//! of the last revision read are remembered, and after a break that revision is asked for again
//! and the lines already read are skipped.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::Failure;
use crate::client::Client;

/// Limit for connecting to a queen and for her answer's head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Each read of the stream waits this long at most: it brings a blank line every 15 s, so a queen
/// silent for longer (frozen, cut off) is taken for gone, and the stream opened again from where
/// it stopped.
const READ_TIMEOUT: Duration = Duration::from_secs(35);

/// Pause after every queen failed to answer, before they are all tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The field of the stream's answer that says the revision it starts after.
const REVISION_FIELD: &str = "X-Hive-Revision";

/// What the stream brought.
#[derive(Debug)]
pub enum Got {
    /// A change: its line as sent (newline included), and parsed.
    Change(String, Value),
    /// Nothing more has arrived for now: a moment to flush, or to redraw.
    Quiet,
    /// The queen no longer holds the changes after where this stream is (she said why): list
    /// again, then [`Follow::restart`] after the list's revision.
    ListAgain(String),
}

type Reader = BufReader<Box<dyn Read + Send>>;

/// A stream of the events of `kinds`, followed across connections and queens.
pub struct Follow<'a> {
    client: &'a Client,
    queens: &'a [String],
    /// The queen to ask first next time: the last one that answered.
    at: usize,
    kinds: &'a str,
    /// The revision seen whole (`None`: from whenever the first call starts).
    after: Option<i64>,
    /// The revision of the last line read, and the lines of it read (by kind and id).
    last: Option<(i64, HashSet<(String, String)>)>,
    reader: Option<Reader>,
    /// Whether a call was ever answered: until then, a queen that cannot be reached is an error.
    answered: bool,
    /// [`Got::Quiet`] was said since the last line.
    quiet: bool,
}

impl<'a> Follow<'a> {
    /// A stream of the changes of `kinds` (`task`, `drone` or `task,drone`) after `after` (`None`:
    /// from now on), from the first of `queens` that answers.
    pub fn new(
        client: &'a Client,
        queens: &'a [String],
        kinds: &'a str,
        after: Option<i64>,
    ) -> Follow<'a> {
        Follow {
            client,
            queens,
            at: 0,
            kinds,
            after,
            last: None,
            reader: None,
            answered: false,
            quiet: false,
        }
    }

    /// Goes on after `after` (a list's revision), forgetting where it was.
    pub fn restart(&mut self, after: Option<i64>) {
        self.after = after;
        self.last = None;
        self.reader = None;
    }

    /// The revision seen whole (the one the first call started after, until a change arrives).
    pub fn after(&self) -> Option<i64> {
        self.after
    }

    /// Opens the stream now, if it is not open: so that what is read next (a list) reflects at
    /// least the revision it starts after.
    pub fn open(&mut self) -> Result<Option<Got>, Failure> {
        if self.reader.is_none() {
            return self.connect();
        }
        Ok(None)
    }

    /// The next thing the stream brings, waiting for it.
    pub fn next(&mut self) -> Result<Got, Failure> {
        loop {
            if self.reader.is_none()
                && let Some(got) = self.connect()?
            {
                return Ok(got);
            }
            let reader = self.reader.as_mut().expect("a stream, just opened");
            if reader.buffer().is_empty() && !self.quiet {
                self.quiet = true;
                return Ok(Got::Quiet);
            }
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    // Broken off: opened again after the last revision read, whose lines read so
                    // far are remembered.
                    self.reader = None;
                    continue;
                }
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => {}
            }
            self.quiet = false;
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                return Err(Failure::Refused {
                    status: 200,
                    error: format!("a line that is not JSON: {}", line.trim_end()),
                });
            };
            if let (Some(rev), Some(kind), Some(id)) = (
                value["rev"].as_i64(),
                value["kind"].as_str(),
                value["id"].as_str(),
            ) {
                let key = (kind.to_string(), id.to_string());
                match &mut self.last {
                    Some((last, seen)) if *last == rev => {
                        if !seen.insert(key) {
                            continue;
                        }
                    }
                    _ => {
                        if let Some((whole, _)) = self.last.take() {
                            self.after = Some(whole);
                        }
                        self.last = Some((rev, HashSet::from([key])));
                    }
                }
                return Ok(Got::Change(line, value));
            }
            // A last line: cut off (resume after `after`), or the changes needed are gone.
            self.reader = None;
            if let Some(after) = value["after"].as_i64() {
                self.after = Some(after);
                self.last = None;
                continue;
            }
            let why = value["error"].as_str().unwrap_or_default().to_string();
            return Ok(Got::ListAgain(why));
        }
    }

    /// Opens the stream on the first queen that answers, from the one that answered last. `Some`
    /// when the queens say to list again instead.
    fn connect(&mut self) -> Result<Option<Got>, Failure> {
        let mut after = match &self.last {
            // Broken inside or after this revision: ask for it again (its lines read are skipped).
            Some((rev, _)) => Some(rev - 1),
            None => self.after,
        };
        loop {
            let mut failures = Vec::new();
            let mut again = false;
            for turn in 0..self.queens.len() {
                let i = (self.at + turn) % self.queens.len();
                let queen = &self.queens[i];
                let mut path = format!("/events?kind={}", self.kinds);
                if let Some(after) = after {
                    path.push_str(&format!("&after={after}"));
                }
                let called = self
                    .client
                    .get_stream(queen, &path, (CONNECT_TIMEOUT, READ_TIMEOUT));
                let answer = match called {
                    Ok(answer) => answer,
                    Err(e) => {
                        failures.push(format!("{queen}: {e}"));
                        continue;
                    }
                };
                self.answered = true;
                match answer.status {
                    200 => {
                        self.at = i;
                        if self.after.is_none() {
                            self.after = answer.field(REVISION_FIELD).and_then(|r| r.parse().ok());
                        }
                        self.reader = Some(BufReader::new(answer.body));
                        self.quiet = false;
                        return Ok(None);
                    }
                    503 => failures.push(format!("{queen}: {}", answer.said())),
                    410 => match &mut self.last {
                        // The revision broken inside is gone already: go on after it.
                        Some((rev, _)) if after == Some(*rev - 1) => {
                            after = Some(*rev);
                            self.after = after;
                            self.last = None;
                            again = true;
                            break;
                        }
                        _ => return Ok(Some(Got::ListAgain(answer.said()))),
                    },
                    status => {
                        return Err(Failure::Refused {
                            status,
                            error: answer.said(),
                        });
                    }
                }
            }
            if again {
                continue;
            }
            if !self.answered {
                return Err(Failure::Unreachable(format!(
                    "no queen answered ({}); is the hive up, and is --queen-host (or HIVE_QUEEN) right?",
                    failures.join("; ")
                )));
            }
            eprintln!(
                "larve: no queen answers ({}); trying again",
                failures.join("; ")
            );
            thread::sleep(RETRY_PAUSE);
        }
    }
}
