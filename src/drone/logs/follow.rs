//! Serving one stream of an attempt: the body of `GET /attempts/ID/logs?stream=&offset=&follow=`
//! on a drone, pulled by the front on the caller's connection (see `server::BodySource`).
//!
//! The body is the stream's bytes from the offset asked for, as far as they are written; with
//! `follow`, it waits for more until the attempt has ended and every byte is sent. An offset that
//! was dropped (the stream went past its cap) starts the body at the first byte kept, after one
//! marker line saying so (the head's offset says where the stream bytes start; the marker is never
//! counted as the stream's). Only whole answers are bounded in time: a follow ends its answer
//! after [`FOLLOW_IDLE`] without a new byte, or after [`FOLLOW_WINDOW`] in all, and when its
//! reader fell behind past the cap; its head said the attempt had not ended, so the caller (a
//! queen's relay) asks again from where it is, and hears there what was dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use super::segments::Reader;
use super::{Live, Logs};
use crate::error::{Error, Result};
use crate::exec::Stream;
use crate::server::{BodySource, Pulled};
use crate::tasks::wire::LogHead;

/// A follow that had nothing new for this long ends its answer. Short, so that a relay whose
/// own client has gone learns it soon (it waits on this answer until then); long enough that a
/// quiet task costs a caller one call every few seconds.
pub const FOLLOW_IDLE: Duration = Duration::from_secs(5);

/// A follow ends its answer after this long in all, so that every call a caller makes has an end
/// it can set its timeout by.
const FOLLOW_WINDOW: Duration = Duration::from_secs(60);

/// Most bytes one piece of the body carries: what one pipe read gives at most.
const PIECE_BYTES: usize = 64 * 1024;

/// How a marker line starts: `[hive: 1048576 bytes of stdout were dropped (bytes 0 to 1048576): ...]`.
const MARKER_PREFIX: &str = "[hive: ";

impl Logs {
    /// `stream` of attempt `id` from byte `offset` on (to its end now, or with `follow` as it
    /// comes until the attempt ends): the answer's head, and its body. Not found: an attempt this
    /// drone does not know (never ran here, or its logs were removed).
    pub fn stream(
        &self,
        id: &str,
        stream: Stream,
        offset: u64,
        follow: bool,
    ) -> Result<(LogHead, LogBody)> {
        let not_found = || Error::NotFound(format!("logs of attempt {id:?} on this drone"));
        if !crate::tasks::valid_attempt_id(id) {
            return Err(not_found());
        }
        // Live first: a live attempt's directory may not be made yet, and an ended one's always is
        // by the time it stops being live.
        let live = self.live(id);
        let dir = self.attempt_dir(id);
        if live.is_none() && !dir.is_dir() {
            return Err(not_found());
        }
        let (reader, _) = Reader::open(&dir, stream, offset).map_err(|e| {
            Error::Internal(format!("could not read the logs of attempt {id:?}: {e}"))
        })?;
        let head = LogHead {
            offset: reader.position(),
            ended: live.as_ref().is_none_or(|live| live.progress().ended),
        };
        let marker = (offset < head.offset).then(|| marker(stream, offset, head.offset));
        let now = Instant::now();
        let body = LogBody {
            reader,
            stream,
            live: live.filter(|_| follow && !head.ended),
            marker,
            last_piece: now,
            window_ends: now + FOLLOW_WINDOW,
        };
        Ok((head, body))
    }
}

/// The marker line that stands where bytes `from` to `to` of `stream` were dropped.
fn marker(stream: Stream, from: u64, to: u64) -> Vec<u8> {
    format!(
        "{MARKER_PREFIX}{} bytes of {} were dropped (bytes {from} to {to}): past --max-log-mb, a drone keeps the last part of each stream]\n",
        to - from,
        stream.as_str()
    )
    .into_bytes()
}

/// The body of one answer of a stream (see the module's doc).
pub struct LogBody {
    reader: Reader,
    stream: Stream,
    /// The attempt's progress, while it runs and the answer follows it; `None`: the body ends at
    /// the end of what is written.
    live: Option<Arc<Live>>,
    /// The marker line, until it is sent.
    marker: Option<Vec<u8>>,
    /// When the last piece was pulled, and when this answer's window ends.
    last_piece: Instant,
    window_ends: Instant,
}

impl BodySource for LogBody {
    fn next(&mut self, wait: Duration) -> Pulled {
        if let Some(marker) = self.marker.take() {
            return Pulled::Data(marker);
        }
        let pull_ends = Instant::now() + wait;
        let mut read_again = true;
        loop {
            let mut piece = vec![0; PIECE_BYTES];
            match self.reader.read(&mut piece) {
                Ok(0) => {}
                Ok(n) => {
                    piece.truncate(n);
                    self.last_piece = Instant::now();
                    return Pulled::Data(piece);
                }
                Err(e) => {
                    warn!("could not read a stream of an attempt's logs: {e}");
                    return Pulled::End;
                }
            }
            let Some(live) = &self.live else {
                return Pulled::End;
            };
            let i = self.stream.index();
            let position = self.reader.position();
            let progress = live.progress();
            if progress.kept_from[i] > position {
                // Fell behind past the cap: the caller asks again, and hears what was dropped.
                return Pulled::End;
            }
            if progress.written[i] > position {
                // Written between the read and the look: read once more (and only once, so that
                // bytes that cannot be read end the answer rather than spin).
                if std::mem::take(&mut read_again) {
                    continue;
                }
                return Pulled::End;
            }
            if progress.ended {
                return Pulled::End;
            }
            let now = Instant::now();
            let answer_ends = (self.last_piece + FOLLOW_IDLE).min(self.window_ends);
            if now >= answer_ends {
                return Pulled::End;
            }
            if now >= pull_ends {
                return Pulled::Idle;
            }
            live.wait_past(self.stream, position, pull_ends.min(answer_ends));
            read_again = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drone::logs::segments::MIN_SEGMENT_BYTES;
    use crate::exec::tests::Scratch;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    /// Pulls `body` until it ends or idles: what it sent, and how it stopped.
    fn pull(body: &mut LogBody) -> (Vec<u8>, Pulled) {
        let mut sent = Vec::new();
        loop {
            match body.next(Duration::from_millis(30)) {
                Pulled::Data(data) => sent.extend_from_slice(&data),
                other => return (sent, other),
            }
        }
    }

    #[test]
    fn a_follow_sends_what_comes_as_it_comes_and_ends_with_the_attempt() {
        let scratch = Scratch::new();
        let logs = Arc::new(Logs::open(&scratch.file("root"), 4 * MIN_SEGMENT_BYTES).unwrap());
        let unknown = logs.stream(ID, Stream::Stdout, 0, true);
        assert!(matches!(unknown, Err(Error::NotFound(_))));
        let mut sink = logs.sink(ID);
        let (head, mut follower) = logs.stream(ID, Stream::Stdout, 0, true).unwrap();
        assert_eq!(
            head,
            LogHead {
                offset: 0,
                ended: false
            },
            "known before its thread begins"
        );
        sink.begin();
        sink.write(Stream::Stdout, b"one\n");
        assert_eq!(pull(&mut follower), (b"one\n".to_vec(), Pulled::Idle));
        let (_, mut glance) = logs.stream(ID, Stream::Stdout, 2, false).unwrap();
        assert_eq!(
            pull(&mut glance),
            (b"e\n".to_vec(), Pulled::End),
            "no follow: what is there"
        );
        sink.write(Stream::Stdout, b"two\n");
        sink.write(Stream::Stderr, b"elsewhere\n");
        assert_eq!(pull(&mut follower), (b"two\n".to_vec(), Pulled::Idle));
        drop(sink);
        assert_eq!(pull(&mut follower), (Vec::new(), Pulled::End));
        let (head, mut after) = logs.stream(ID, Stream::Stderr, 0, true).unwrap();
        assert_eq!(
            head,
            LogHead {
                offset: 0,
                ended: true
            }
        );
        assert_eq!(pull(&mut after), (b"elsewhere\n".to_vec(), Pulled::End));
    }

    #[test]
    fn a_dropped_offset_starts_at_what_is_kept_after_a_marker_line() {
        let scratch = Scratch::new();
        let cap = 2 * MIN_SEGMENT_BYTES;
        let logs = Arc::new(Logs::open(&scratch.file("root"), cap).unwrap());
        let mut sink = logs.sink(ID);
        sink.begin();
        let total = 5 * MIN_SEGMENT_BYTES as usize;
        let stream: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
        for piece in stream.chunks(4096) {
            sink.write(Stream::Stdout, piece);
        }
        drop(sink);
        let (head, mut body) = logs.stream(ID, Stream::Stdout, 10, false).unwrap();
        let kept = head.offset as usize;
        assert!(kept > 10 && total - kept <= cap as usize, "{head:?}");
        let (sent, end) = pull(&mut body);
        assert_eq!(end, Pulled::End);
        let line_end = sent.iter().position(|&b| b == b'\n').unwrap() + 1;
        let marker = String::from_utf8_lossy(&sent[..line_end]).into_owned();
        assert_eq!(
            marker,
            format!(
                "[hive: {} bytes of stdout were dropped (bytes 10 to {kept}): past --max-log-mb, a drone keeps the last part of each stream]\n",
                kept - 10
            )
        );
        assert!(marker.starts_with(MARKER_PREFIX));
        assert_eq!(&sent[line_end..], &stream[kept..]);
    }

    #[test]
    fn a_quiet_follow_ends_its_answer_saying_the_attempt_runs() {
        let scratch = Scratch::new();
        let logs = Arc::new(Logs::open(&scratch.file("root"), 4 * MIN_SEGMENT_BYTES).unwrap());
        let mut sink = logs.sink(ID);
        sink.begin();
        let (head, mut follower) = logs.stream(ID, Stream::Stdout, 0, true).unwrap();
        assert!(!head.ended);
        // As if it had been quiet for the whole idle time already.
        follower.last_piece = Instant::now() - FOLLOW_IDLE;
        assert_eq!(pull(&mut follower), (Vec::new(), Pulled::End));
    }
}
