//! What an attempt prints: its stdout and stderr, read as they fill so that the command never
//! blocks on a full pipe, the last `KEPT_OUTPUT_BYTES` of each kept for the outcome, and every
//! byte handed on, as it is read, to the attempt's [`OutputSink`] (a drone's log files).
//!
//! The attempt's thread waits for everything in one `poll` ([`Streams::pump`]): the pipes, and
//! the descriptors that say the command has exited or a stop was asked.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::{KEPT_OUTPUT_BYTES, Output, Watched};

/// One of a command's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// Both, in the order of their pipes.
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream named `name` (`stdout` or `stderr`).
    pub fn parse(name: &str) -> Option<Stream> {
        Stream::BOTH
            .into_iter()
            .find(|stream| stream.as_str() == name)
    }

    /// Its place in [`Stream::BOTH`] and in arrays kept per stream.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where an attempt's output goes besides the tails its outcome carries. Everything is called on
/// the attempt's thread: [`OutputSink::begin`] when the thread takes the attempt up, then every
/// byte in order as soon as it is read (so whoever follows the output is never more than a pipe
/// read behind). It is dropped once the command's pipes are drained, before the outcome is handed
/// on, so its drop says the output is whole; also, without `begin`, when no thread could be made.
pub trait OutputSink: Send {
    /// The attempt's thread has taken it up: make what the output will be written to.
    fn begin(&mut self);

    /// `bytes` the command printed on `stream`.
    fn write(&mut self, stream: Stream, bytes: &[u8]);
}

/// How much is read from a pipe at once: a whole pipe buffer of Linux's default size.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The command's stdout and stderr: the pipes while they are open, and what they said.
pub(super) struct Streams {
    pipes: [Option<File>; 2],
    tails: [Tail; 2],
    chunk: Vec<u8>,
    sink: Option<Box<dyn OutputSink>>,
}

/// What woke a [`Streams::pump`], besides output.
pub(super) struct Woke {
    /// The leader exited.
    pub(super) exited: bool,
    /// A stop was asked.
    pub(super) stop_asked: bool,
}

impl Streams {
    pub(super) fn new(pipes: [Option<File>; 2], sink: Option<Box<dyn OutputSink>>) -> Streams {
        Streams {
            pipes,
            tails: [Tail::default(), Tail::default()],
            chunk: vec![0; READ_CHUNK_BYTES],
            sink,
        }
    }

    /// Waits until a pipe has bytes or closes, one of `watched` is ready (the leader exited, a
    /// stop was asked, the cgroup's population changed), or `until` passes; takes in what the
    /// pipes have.
    pub(super) fn pump(&mut self, watched: &Watched, until: Option<Instant>) -> Woke {
        let poll_for = |fd: Option<RawFd>, events| libc::pollfd {
            // poll skips negative descriptors.
            fd: fd.unwrap_or(-1),
            events,
            revents: 0,
        };
        let mut fds = [
            poll_for(self.pipes[0].as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN),
            poll_for(self.pipes[1].as_ref().map(AsRawFd::as_raw_fd), libc::POLLIN),
            poll_for(watched.exited, libc::POLLIN),
            poll_for(watched.wake, libc::POLLIN),
            // cgroup files report a change as POLLPRI (with POLLERR).
            poll_for(watched.emptied, libc::POLLPRI),
        ];
        let timeout_ms = until.map_or(-1, |until| {
            let left = until.saturating_duration_since(Instant::now());
            // Rounded up, so a wait never ends just before its deadline and spins.
            i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        // SAFETY: `fds` is a live array of initialised pollfds, and its length is right. An
        // interrupted or failed poll reports nothing ready and the caller looks again.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        for (stream, fd) in fds[..2].iter().enumerate() {
            if fd.revents != 0 {
                self.read(stream);
            }
        }
        Woke {
            exited: fds[2].revents != 0,
            stop_asked: fds[3].revents != 0,
        }
    }

    /// Reads once from a ready pipe; closes it at its end or on an error.
    fn read(&mut self, stream: usize) {
        let Some(pipe) = &mut self.pipes[stream] else {
            return;
        };
        match pipe.read(&mut self.chunk) {
            Ok(0) => self.pipes[stream] = None,
            Ok(n) => {
                self.tails[stream].push(&self.chunk[..n]);
                if let Some(sink) = &mut self.sink {
                    sink.write(Stream::BOTH[stream], &self.chunk[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.pipes[stream] = None,
        }
    }

    /// Reads the pipes to their end, or until `until`.
    pub(super) fn drain(&mut self, until: Instant) {
        while self.pipes.iter().any(Option::is_some) && Instant::now() < until {
            let nothing = Watched {
                exited: None,
                wake: None,
                emptied: None,
            };
            self.pump(&nothing, Some(until));
        }
    }

    /// What each stream kept; the sink is dropped here, its output whole.
    pub(super) fn into_outputs(self) -> (Output, Output) {
        let [stdout, stderr] = self.tails;
        (stdout.into_output(), stderr.into_output())
    }
}

/// The last `KEPT_OUTPUT_BYTES` of a stream, in at most twice that much memory however much
/// passes through: bytes are appended until twice the window is full, then the window's worth is
/// moved to the front, so each byte is moved at most once on average.
#[derive(Default)]
struct Tail {
    kept: Vec<u8>,
    /// Bytes pushed in all.
    seen: u64,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(KEPT_OUTPUT_BYTES)..];
        let wanted = self.kept.len() + bytes.len();
        if wanted > 2 * KEPT_OUTPUT_BYTES {
            // Never more than what was kept: `bytes` is at most a window long.
            self.kept.drain(..wanted - KEPT_OUTPUT_BYTES);
        } else if wanted > self.kept.capacity() {
            let grown = (2 * wanted).min(2 * KEPT_OUTPUT_BYTES);
            self.kept.reserve_exact(grown - self.kept.len());
        }
        self.kept.extend_from_slice(bytes);
    }

    fn into_output(self) -> Output {
        let mut window = &self.kept[self.kept.len().saturating_sub(KEPT_OUTPUT_BYTES)..];
        let truncated = self.seen > window.len() as u64;
        if truncated {
            // The window may start inside a character: its continuation bytes (at most 3) go.
            let cut = window
                .iter()
                .take(3)
                .take_while(|&&byte| byte & 0xC0 == 0x80)
                .count();
            window = &window[cut..];
        }
        Output {
            text: String::from_utf8_lossy(window).into_owned(),
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_in_bounded_memory() {
        let mut tail = Tail::default();
        let mut pushed = Vec::new();
        // Chunks of every size up to past a whole window, many windows' worth in all.
        for size in (1..KEPT_OUTPUT_BYTES + 5000).step_by(997) {
            let chunk: Vec<u8> = (0..size)
                .map(|i| b'a' + ((i + pushed.len()) % 26) as u8)
                .collect();
            tail.push(&chunk);
            pushed.extend_from_slice(&chunk);
            assert!(tail.kept.capacity() <= 2 * KEPT_OUTPUT_BYTES);
        }
        let output = tail.into_output();
        assert!(output.truncated);
        assert_eq!(
            output.text.as_bytes(),
            &pushed[pushed.len() - KEPT_OUTPUT_BYTES..]
        );
    }

    #[test]
    fn a_tail_never_starts_inside_a_character() {
        for suffix in ["", "x", "xy", "xyz"] {
            // Four-byte characters, then a suffix that moves the window's start into one.
            let mut tail = Tail::default();
            tail.push("😀".repeat(KEPT_OUTPUT_BYTES / 4 + 1).as_bytes());
            tail.push(suffix.as_bytes());
            let output = tail.into_output();
            let whole = (KEPT_OUTPUT_BYTES - suffix.len()) / 4;
            let expected = format!("{}{suffix}", "😀".repeat(whole));
            assert!(output.truncated);
            assert!(
                output.text == expected,
                "suffix {suffix:?}: kept {} bytes starting {:?}",
                output.text.len(),
                output.text.chars().next()
            );
        }
    }

    #[test]
    fn a_tail_replaces_invalid_utf8_and_keeps_short_streams_whole() {
        let mut tail = Tail::default();
        tail.push(b"ok \xff\xfe end");
        assert_eq!(
            tail.into_output(),
            Output {
                text: "ok \u{fffd}\u{fffd} end".into(),
                truncated: false
            }
        );
    }
}
