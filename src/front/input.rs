//! What the front has read from a client and not used yet, and reads that end by a deadline.
//!
//! The sockets are blocking, one thread per connection, so a deadline becomes the socket's read
//! timeout: before a read, the timeout is lowered to the time left when that is shorter than the
//! timeout the socket has. A request that arrives in one read (nearly all of them) costs no system
//! call but the read; a client that trickles its head or body byte by byte still ends at the
//! deadline, not a timeout per byte later.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// A client connection the front reads from: a read waits at most the timeout set here.
pub trait Source: Read {
    fn limit_reads(&mut self, timeout: Duration) -> io::Result<()>;
}

/// Why a read brought nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed.
    TimedOut,
    /// The client closed the connection (or its sending side).
    Closed,
    /// The connection failed: reset, or a TLS error.
    Failed,
}

/// The shortest timeout ever set: a deadline that has all but passed still gets a real wait.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// How far past its deadline a read may end: the timeout is lowered only when the deadline comes
/// sooner than that, so a request that arrives at once costs no extra system call.
const SLACK: Duration = Duration::from_millis(100);

/// How many bytes the buffer starts with; it grows to what a head needs. Hive's clients send heads
/// of a few hundred bytes, and every connection holds its buffer for its life: two thousand of
/// them at 4 KiB would be 8 MB.
pub const FIRST_CAPACITY_BYTES: usize = 1024;

/// Bytes read ahead: the rest of a read that held more than one request's head.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The read timeout the socket has now.
    timeout: Duration,
}

impl Input {
    /// An empty input over a socket whose read timeout is `timeout`.
    pub fn new(timeout: Duration) -> Input {
        Input {
            buf: Vec::new(),
            start: 0,
            end: 0,
            timeout,
        }
    }

    /// The bytes read and not used yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` bytes of [`Input::data`] as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more into the buffer, by `deadline`, holding at most `max` unused bytes in all (the
    /// caller stops before that). Returns how many bytes came.
    pub fn fill(
        &mut self,
        src: &mut impl Source,
        deadline: Instant,
        max: usize,
    ) -> Result<usize, ReadError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= max {
            return Ok(0);
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(FIRST_CAPACITY_BYTES).min(max);
            self.buf.resize(grown, 0);
        }
        let room = (max - self.end).min(self.buf.len() - self.end);
        self.wait_until(src, deadline)?;
        loop {
            match src.read(&mut self.buf[self.end..self.end + room]) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) => classify(e)?,
            }
        }
    }

    /// Reads into `out` (not through the buffer) by `deadline`: for bodies, after what the buffer
    /// held. Returns how many bytes came.
    pub fn read_direct(
        &mut self,
        src: &mut impl Source,
        deadline: Instant,
        out: &mut [u8],
    ) -> Result<usize, ReadError> {
        self.wait_until(src, deadline)?;
        loop {
            match src.read(out) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => return Ok(n),
                Err(e) => classify(e)?,
            }
        }
    }

    /// Sets the socket's read timeout back to `timeout` if a deadline lowered it.
    pub fn restore_timeout(&mut self, src: &mut impl Source, timeout: Duration) -> io::Result<()> {
        if self.timeout != timeout {
            src.limit_reads(timeout)?;
            self.timeout = timeout;
        }
        Ok(())
    }

    /// Makes the next read end by `deadline`.
    pub fn wait_until(
        &mut self,
        src: &mut impl Source,
        deadline: Instant,
    ) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::TimedOut);
        }
        if left + SLACK < self.timeout {
            let timeout = left.max(MIN_TIMEOUT);
            src.limit_reads(timeout).map_err(|_| ReadError::Failed)?;
            self.timeout = timeout;
        }
        Ok(())
    }
}

/// Sorts a read error: `Ok` to try again (a signal interrupted the read).
fn classify(e: io::Error) -> Result<(), ReadError> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Err(ReadError::TimedOut),
        io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        _ => Err(ReadError::Failed),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A client in memory: each read gives the next piece; when they run out, the connection ends
    /// (or, if `stalls`, the read times out).
    pub struct Script {
        pub pieces: VecDeque<Vec<u8>>,
        pub stalls: bool,
        pub timeouts_set: usize,
    }

    impl Script {
        pub fn new(pieces: &[&[u8]], stalls: bool) -> Script {
            Script {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                stalls,
                timeouts_set: 0,
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(mut piece) = self.pieces.pop_front() else {
                return if self.stalls {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(0)
                };
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            if n < piece.len() {
                self.pieces.push_front(piece.split_off(n));
            }
            Ok(n)
        }
    }

    impl Source for Script {
        fn limit_reads(&mut self, _: Duration) -> io::Result<()> {
            self.timeouts_set += 1;
            Ok(())
        }
    }

    #[test]
    fn reads_are_kept_until_used_and_end_as_the_client_does() {
        let soon = Instant::now() + Duration::from_secs(10);
        let mut src = Script::new(&[b"GET / HT", b"TP/1.1\r\n\r\nnext"], false);
        let mut input = Input::new(Duration::from_secs(10));
        assert_eq!(input.fill(&mut src, soon, 1024).unwrap(), 8);
        assert_eq!(input.fill(&mut src, soon, 1024).unwrap(), 14);
        assert_eq!(input.data(), b"GET / HTTP/1.1\r\n\r\nnext");
        input.consume(18);
        assert_eq!(input.data(), b"next");
        assert!(matches!(
            input.fill(&mut src, soon, 1024),
            Err(ReadError::Closed)
        ));
        assert_eq!(
            src.timeouts_set, 0,
            "the deadline never needed a shorter timeout"
        );
    }

    #[test]
    fn a_deadline_shortens_the_timeout_and_ends_the_wait() {
        let mut src = Script::new(&[], true);
        let mut input = Input::new(Duration::from_secs(10));
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(matches!(
            input.fill(&mut src, soon, 64),
            Err(ReadError::TimedOut)
        ));
        assert_eq!(src.timeouts_set, 1);
        let past = Instant::now();
        assert!(matches!(
            input.fill(&mut src, past, 64),
            Err(ReadError::TimedOut)
        ));
        input
            .restore_timeout(&mut src, Duration::from_secs(10))
            .unwrap();
        assert_eq!(src.timeouts_set, 2);
    }

    #[test]
    fn the_buffer_never_holds_more_than_asked() {
        let big = vec![b'a'; 100];
        let mut src = Script::new(&[&big], false);
        let mut input = Input::new(Duration::from_secs(10));
        let soon = Instant::now() + Duration::from_secs(5);
        while input.fill(&mut src, soon, 40).unwrap() > 0 {}
        assert_eq!(input.data().len(), 40);
    }
}
