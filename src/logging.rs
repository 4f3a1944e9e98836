//! Logging to stderr, and making user-supplied text safe to print.
//!
//! Every state change is one log line. Text that came from a user (task texts, addresses) goes
//! through [`quoted`] in log lines and [`one_line`] on a drone's stdout, so a newline or an escape
//! sequence in it can never forge a second line.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

/// Longest user string a log line carries; the rest is cut with a note of how much.
const MAX_LOGGED_CHARS: usize = 120;

/// Longest panic message a log line carries: its location alone can take half of the usual limit.
const MAX_PANIC_CHARS: usize = 2000;

/// Sends `log` records at `level` and above to stderr, one line each, with a UTC timestamp, and
/// logs panics the same way.
pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        // Hive's own lines only: tiny_http logs its accept errors (the server logs what they mean),
        // ureq logs every call at debug, and rustls every failed handshake (the front counts them).
        .add_filter_ignore_str("tiny_http")
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .build();
    // A second init (only possible in tests) keeps the first logger, which is fine.
    let _ = WriteLogger::init(level, config, Lines::start());
    // A panic is one error line like any other, not a multi-line dump between log lines.
    std::panic::set_hook(Box::new(|info| {
        log::error!(
            "panic: {}",
            quoted_up_to(&info.to_string(), MAX_PANIC_CHARS)
        );
    }));
}

/// Where simplelog writes: each finished line goes to a thread of its own that writes to stderr.
///
/// simplelog formats a line in many small writes under its lock, and stderr is unbuffered, so
/// writing there directly costs a `write()` per piece, with every thread that logs queued on the
/// lock meanwhile; at thousands of tasks a second (one line each) that took a seventh of the
/// queen's throughput. Here a line is gathered in memory, handed over whole, and the writer thread
/// writes whatever lines are waiting with one `write()`. `flush` waits (up to [`FLUSH_WAIT`]) until
/// every line handed over is written, so nothing is lost when the process exits.
struct Lines {
    line: Vec<u8>,
    to_writer: mpsc::SyncSender<Message>,
}

/// Lines waiting for the writer thread at most. A stderr that blocks (a full pipe, a stalled
/// journal) would otherwise let lines pile up without bound; past this they are dropped and
/// counted, and the count is written once stderr takes lines again.
const MAX_WAITING_LINES: usize = 10_000;

/// How long the writer gathers lines before it writes them.
const WRITE_LINGER: Duration = Duration::from_millis(2);

/// Longest `flush` waits for the writer thread.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Lines dropped since the writer last said so.
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

enum Message {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

impl Lines {
    fn start() -> Lines {
        let (to_writer, from_loggers) = mpsc::sync_channel(MAX_WAITING_LINES);
        let spawned = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || write_lines(&from_loggers));
        if let Err(e) = spawned {
            eprintln!("larve: cannot start the log writer thread ({e}); logging is off");
        }
        Lines {
            line: Vec::new(),
            to_writer,
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        if self.line.ends_with(b"\n") {
            let line = std::mem::take(&mut self.line);
            if self.to_writer.try_send(Message::Line(line)).is_err() {
                DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let (done, written) = mpsc::channel();
        if self.to_writer.try_send(Message::Flush(done)).is_ok() {
            // A stderr that never takes lines must not keep the process from exiting.
            let _ = written.recv_timeout(FLUSH_WAIT);
        }
        Ok(())
    }
}

/// The writer thread: writes lines as they come, all that are waiting in one `write()`.
fn write_lines(from_loggers: &mpsc::Receiver<Message>) {
    let mut stderr = io::stderr();
    let mut batch = Vec::new();
    while let Ok(first) = from_loggers.recv() {
        let mut flushed = Vec::new();
        let mut take = |message| match message {
            Message::Line(line) => batch.extend_from_slice(&line),
            Message::Flush(done) => flushed.push(done),
        };
        let flushing = matches!(first, Message::Flush(_));
        take(first);
        if !flushing {
            // Under load lines come one after another: gathering them for a moment writes many
            // with one call and one wake-up, where a wake-up per line cost a busy drone an
            // eighth of its CPU.
            std::thread::sleep(WRITE_LINGER);
        }
        while let Ok(next) = from_loggers.try_recv() {
            take(next);
        }
        let _ = stderr.write_all(&batch);
        batch.clear();
        for done in flushed {
            let _ = done.send(());
        }
        let dropped = DROPPED_LINES.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            // There is room again: this line goes through the queue like any other.
            log::warn!("{dropped} log lines were dropped: stderr did not keep up");
        }
    }
}

/// `text` with every control character written as an escape (`\n`, `\u{1b}`), everything else as it
/// is: what a drone prints for a task, so each task is exactly one line of its stdout.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` quoted and escaped for a log line, and cut to a readable length.
pub fn quoted(text: &str) -> String {
    quoted_up_to(text, MAX_LOGGED_CHARS)
}

fn quoted_up_to(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(max_chars).collect();
    format!("{head:?}… ({} more chars)", total - max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_keeps_ordinary_text_exactly() {
        assert_eq!(one_line("hello"), "hello");
        assert_eq!(one_line("héllo \"wörld\" \\ ✓"), "héllo \"wörld\" \\ ✓");
    }

    #[test]
    fn one_line_escapes_control_characters() {
        assert_eq!(
            one_line("a\nb\r\tc\u{1b}[31m\0"),
            "a\\nb\\r\\tc\\u{1b}[31m\\0"
        );
    }

    #[test]
    fn quoted_escapes_and_truncates() {
        assert_eq!(quoted("a\nINFO forged"), "\"a\\nINFO forged\"");
        let long = quoted(&"x".repeat(500));
        assert!(long.ends_with("(380 more chars)"), "{long}");
        assert!(!long.contains('\n'));
    }
}
