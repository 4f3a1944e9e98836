//! One client following a queen's `GET /events` over a plain socket, as a dashboard or `larve
//! events` would, resuming where it was when the queen cuts it off; and what it saw.
//!
//! It reads the chunked answer line by line without decoding the chunks: the queen sends whole
//! lines in each piece, so a chunk's size line and the blank line after its data are told apart
//! from a change by their first byte. Only what the bench needs is picked out of a change's line:
//! its `rev`, at the start; and, for one watcher in [`LAG_SAMPLE`], its task's `created_at`. The
//! watchers share the machine with the queen, so what they spend beyond reading their bytes is
//! taken from her.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One watcher in this many measures the lag of every line it reads; all of them count lines.
pub const LAG_SAMPLE: usize = 10;

/// Lag is counted in buckets of a millisecond up to this; slower lines go in the last bucket.
pub const LAG_BUCKETS_MS: usize = 5_000;

/// How often a watcher looks whether it is asked to stop, between lines.
const STOP_POLL: Duration = Duration::from_millis(500);

/// A watcher's thread needs little: a buffer, a socket and a histogram.
const STACK_BYTES: usize = 256 * 1024;

/// What one watcher saw.
#[derive(Default)]
pub struct Tally {
    /// Changes read.
    pub changes: u64,
    /// Lines of changes read per millisecond of lag (from the task's `created_at` to the read).
    pub lag_ms: Vec<u64>,
    /// Times the queen cut it off (it resumed after the revision she said).
    pub cut_off: u64,
    /// Times she no longer had the changes it needed (410, or a last line saying to list again).
    pub gone: u64,
    /// Connections that failed or broke.
    pub broken: u64,
}

impl Tally {
    /// Adds `other`'s counts to this one's.
    pub fn add(&mut self, other: &Tally) {
        self.changes += other.changes;
        self.cut_off += other.cut_off;
        self.gone += other.gone;
        self.broken += other.broken;
        if self.lag_ms.len() < other.lag_ms.len() {
            self.lag_ms.resize(other.lag_ms.len(), 0);
        }
        for (mine, theirs) in self.lag_ms.iter_mut().zip(&other.lag_ms) {
            *mine += theirs;
        }
    }

    /// The lag below which `p` (0 to 1) of the lines were read, in milliseconds.
    pub fn lag_percentile_ms(&self, p: f64) -> Option<usize> {
        let total: u64 = self.lag_ms.iter().sum();
        let wanted = (total as f64 * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.lag_ms.iter().position(|&n| {
            seen += n;
            seen >= wanted
        })
    }
}

/// Watchers of one queen, stopped together.
pub struct Watchers {
    stop: Arc<AtomicBool>,
    /// Changes read by all of them so far.
    read: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Watchers {
    /// Starts `count` watchers of the task events `queen` (`host:port`) has from now on.
    pub fn start(queen: &str, count: usize) -> std::io::Result<Watchers> {
        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let shared = Shared {
                queen: queen.to_string(),
                stop: stop.clone(),
                read: read.clone(),
                lag: i % LAG_SAMPLE == 0,
            };
            threads.push(
                thread::Builder::new()
                    .name(format!("watcher-{i}"))
                    .stack_size(STACK_BYTES)
                    .spawn(move || watch(&shared))?,
            );
        }
        Ok(Watchers {
            stop,
            read,
            threads,
        })
    }

    /// Changes read by all of them so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Stops every watcher; what they saw, together.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for thread in self.threads {
            if let Ok(tally) = thread.join() {
                total.add(&tally);
            }
        }
        total
    }
}

/// What a watcher's thread is given.
struct Shared {
    queen: String,
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    /// Whether it measures lag.
    lag: bool,
}

/// Follows the queen's task events until `stop`, reconnecting after the last revision read.
fn watch(shared: &Shared) -> Tally {
    let mut tally = Tally {
        lag_ms: vec![0; LAG_BUCKETS_MS + 1],
        ..Tally::default()
    };
    let mut after: Option<u64> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if follow(shared, &mut after, &mut tally).is_err() {
            tally.broken += 1;
            thread::sleep(STOP_POLL);
        }
    }
    tally
}

/// One connection: reads until it ends, `stop`, or the queen says where to go on.
fn follow(shared: &Shared, after: &mut Option<u64>, tally: &mut Tally) -> std::io::Result<()> {
    let (queen, stop) = (&shared.queen, &shared.stop);
    let mut stream = TcpStream::connect(queen)?;
    stream.set_read_timeout(Some(STOP_POLL))?;
    let query = after.map_or_else(String::new, |rev| format!("&after={rev}"));
    write!(
        stream,
        "GET /events?kind=task{query} HTTP/1.1\r\nHost: {queen}\r\n\r\n"
    )?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    let mut head = true;
    let mut unshared = Unshared {
        count: 0,
        read: &shared.read,
    };
    loop {
        if reader.buffer().is_empty() {
            unshared.add();
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        if head {
            if line.starts_with(b"HTTP/1.1 410") {
                tally.gone += 1;
                *after = None;
                return Ok(());
            }
            if line.starts_with(b"HTTP/") && !line.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&line).into_owned(),
                ));
            }
            head = line != b"\r\n";
        } else if let Some(rest) = line.strip_prefix(b"{\"rev\":") {
            tally.changes += 1;
            unshared.count += 1;
            *after = leading(rest).map(|rev| rev as u64);
            if !shared.lag {
                line.clear();
                continue;
            }
            if let Some(created) = number(&line, "\"created_at\":") {
                let lag_ms = (unix_now() - created) * 1000.0;
                let bucket = (lag_ms.max(0.0) as usize).min(LAG_BUCKETS_MS);
                tally.lag_ms[bucket] += 1;
            }
        } else if line.starts_with(b"{") {
            // A last line: cut off (resume after its revision), or the changes are gone.
            match number(&line, "\"after\":") {
                Some(rev) => {
                    tally.cut_off += 1;
                    *after = Some(rev as u64);
                }
                None => {
                    tally.gone += 1;
                    *after = None;
                }
            }
            return Ok(());
        }
        line.clear();
    }
}

/// Changes read and not yet added to the watchers' count: added once a read's bytes are used up
/// (and when the connection ends), not at each line, so a thousand watchers do not take turns at
/// one counter a million times a second on the cores the queen needs.
struct Unshared<'a> {
    count: u64,
    read: &'a AtomicU64,
}

impl Unshared<'_> {
    fn add(&mut self) {
        self.read
            .fetch_add(std::mem::take(&mut self.count), Ordering::Relaxed);
    }
}

impl Drop for Unshared<'_> {
    fn drop(&mut self) {
        self.add();
    }
}

/// The number after the first `field` in `line`.
fn number(line: &[u8], field: &str) -> Option<f64> {
    let text = std::str::from_utf8(line).ok()?;
    let at = text.find(field)? + field.len();
    leading(&line[at..])
}

/// The number `rest` starts with.
fn leading(rest: &[u8]) -> Option<f64> {
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'.' || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_picked_out_of_a_line() {
        let line = br#"{"rev":42,"kind":"task","object":{"created_at":1796570591.534,"x":1}}"#;
        assert_eq!(number(line, "\"rev\":"), Some(42.0));
        assert_eq!(number(line, "\"created_at\":"), Some(1796570591.534));
        assert_eq!(number(line, "\"after\":"), None);
        assert_eq!(leading(b"17,\"kind\""), Some(17.0));
    }

    #[test]
    fn percentiles_come_from_the_buckets() {
        let mut tally = Tally {
            lag_ms: vec![0; 10],
            ..Tally::default()
        };
        tally.lag_ms[2] = 98;
        tally.lag_ms[7] = 2;
        assert_eq!(tally.lag_percentile_ms(0.5), Some(2));
        assert_eq!(tally.lag_percentile_ms(0.99), Some(7));
    }
}
