//! A request's body: its limits, and reading it into memory within them.
//!
//! Every body limit is checked here, in [`within`]: a path's size limit ([`BodyLimits`], declared
//! by the role; [`MAX_BODY_BYTES`] elsewhere) against a declared `Content-Length` before a byte is
//! read, and against each chunk of a chunked body as its size line arrives; the time limit
//! ([`BODY_DEADLINE`]) on every read. A chunked body is decoded as it comes (chunk sizes,
//! extensions and trailers are checked and dropped; the server gets the data and its length).
//!
//! The buffer grows as bytes arrive, never to the length the head declares before they do: a
//! client that declares 2 MiB and sends nothing costs a few KiB, not 2 MiB.

use std::time::{Duration, Instant};

use super::head::Framing;
use super::input::{Input, ReadError, Source};

/// Largest request body on any path the role does not name: a task text or an address is far
/// smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Time for a request's body to arrive in full, once its head has.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The largest body each path takes: what the role says, [`MAX_BODY_BYTES`] elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimits {
    pub by_path: &'static [(&'static str, usize)],
}

impl BodyLimits {
    /// The limit for a request to `path`.
    pub fn for_path(&self, path: &str) -> usize {
        self.by_path
            .iter()
            .find(|(known, _)| *known == path)
            .map_or(MAX_BODY_BYTES, |(_, limit)| *limit)
    }
}

/// Longest chunk-size line (size, extensions) or trailer line, and all trailer lines together.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// The room a body's buffer is first given, and the most it grows by at once: it doubles with
/// what has arrived, from this, so what is allocated ahead of the bytes is at most what came.
const FIRST_BODY_READ_BYTES: usize = 4 * 1024;
const MAX_BODY_READ_BYTES: usize = 256 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// It is larger than the limit: answer 413 and stop reading.
    TooLarge,
    /// It did not all arrive by the deadline: answer 408.
    TimedOut,
    /// The chunked framing is broken: answer 400 with this reason.
    Malformed(&'static str),
    /// The connection ended or failed: nobody to answer.
    Gone,
}

impl From<ReadError> for BodyError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::TimedOut => BodyError::TimedOut,
            ReadError::Closed | ReadError::Failed => BodyError::Gone,
        }
    }
}

/// The one check of a body's size: `more` bytes after the `so_far` already taken stay within
/// `limit`.
fn within(limit: usize, so_far: usize, more: u64) -> Result<(), BodyError> {
    if more > limit.saturating_sub(so_far) as u64 {
        return Err(BodyError::TooLarge);
    }
    Ok(())
}

/// The body a head announced, for a path that takes at most `limit` bytes.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    framing: Framing,
    limit: usize,
}

impl Expected {
    /// The body `framing` announces, or [`BodyError::TooLarge`] at once when the length it
    /// declares is over `limit`: before a byte of it is read, and before a client waiting for
    /// `100 Continue` is told to send it.
    pub fn new(framing: Framing, limit: usize) -> Result<Expected, BodyError> {
        if let Framing::Length(length) = framing {
            within(limit, 0, length)?;
        }
        Ok(Expected { framing, limit })
    }

    /// Reads the body into `out` (emptied first), what `input` holds first, all of it within
    /// [`BODY_DEADLINE`] from now.
    pub fn read(
        self,
        input: &mut Input,
        src: &mut impl Source,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyError> {
        out.clear();
        let deadline = Instant::now() + BODY_DEADLINE;
        match self.framing {
            Framing::Empty => Ok(()),
            // Checked against the limit when the head was read.
            Framing::Length(length) => read_length(input, src, length as usize, deadline, out),
            Framing::Chunked => read_chunked(input, src, self.limit, deadline, out),
        }
    }
}

/// Appends exactly `length` more bytes (already checked against the limit) to `out`, what `input`
/// holds first; `out` grows with what arrives.
fn read_length(
    input: &mut Input,
    src: &mut impl Source,
    length: usize,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let buffered = input.data().len().min(length);
    out.extend_from_slice(&input.data()[..buffered]);
    input.consume(buffered);
    let end = out.len() + length - buffered;
    while out.len() < end {
        let filled = out.len();
        let room = filled.clamp(FIRST_BODY_READ_BYTES, MAX_BODY_READ_BYTES);
        out.resize(filled + room.min(end - filled), 0);
        match input.read_direct(src, deadline, &mut out[filled..]) {
            Ok(n) => out.truncate(filled + n),
            Err(e) => {
                out.truncate(filled);
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Decodes a chunked body of at most `limit` bytes into `out`.
fn read_chunked(
    input: &mut Input,
    src: &mut impl Source,
    limit: usize,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    loop {
        let line = read_line(input, src, deadline)?;
        let size = chunk_size(&line)?;
        if size == 0 {
            let mut trailers = 0;
            loop {
                let line = read_line(input, src, deadline)?;
                if line.is_empty() {
                    return Ok(());
                }
                trailers += line.len();
                if trailers > MAX_TRAILER_BYTES {
                    return Err(BodyError::Malformed("the trailer fields are too long"));
                }
            }
        }
        within(limit, out.len(), size as u64)?;
        read_length(input, src, size, deadline, out)?;
        if !read_line(input, src, deadline)?.is_empty() {
            return Err(BodyError::Malformed("a chunk is longer than its size says"));
        }
    }
}

/// One CRLF-ended line, without the CRLF.
fn read_line(
    input: &mut Input,
    src: &mut impl Source,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut looked: usize = 0;
    loop {
        let data = input.data();
        if let Some(at) = data[looked.saturating_sub(1)..]
            .windows(2)
            .position(|w| w == b"\r\n")
        {
            let at = looked.saturating_sub(1) + at;
            let line = data[..at].to_vec();
            input.consume(at + 2);
            return Ok(line);
        }
        looked = data.len();
        if looked > MAX_CHUNK_LINE_BYTES {
            return Err(BodyError::Malformed("a chunk-size line is too long"));
        }
        input.fill(src, deadline, MAX_CHUNK_LINE_BYTES + 2)?;
    }
}

/// The size on a chunk-size line: hexadecimal digits, then maybe `;` and extensions.
fn chunk_size(line: &[u8]) -> Result<usize, BodyError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::Malformed(
            "a chunk size is not a hexadecimal number",
        ));
    }
    let text = std::str::from_utf8(digits).map_err(|_| BodyError::Malformed("a chunk size"))?;
    usize::from_str_radix(text, 16).map_err(|_| BodyError::Malformed("a chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::input::tests::Script;
    use std::time::Duration;

    fn chunked(pieces: &[&[u8]], limit: usize) -> (Result<Vec<u8>, BodyError>, Vec<u8>) {
        let mut src = Script::new(pieces, false);
        let mut input = Input::new(Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        let result = read_chunked(&mut input, &mut src, limit, deadline, &mut out).map(|()| out);
        (result, input.data().to_vec())
    }

    #[test]
    fn a_chunked_body_is_decoded_whatever_the_reads() {
        let body = b"5;name=x\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for cut in 1..body.len() {
            let (result, rest) = chunked(&[&body[..cut], &body[cut..]], 64);
            assert_eq!(result.unwrap(), b"hello world!", "cut at {cut}");
            // What was read past the body stays for the next request.
            let past = if cut < end {
                &body[end..]
            } else {
                &body[end..cut]
            };
            assert_eq!(rest, past, "cut at {cut}");
        }
    }

    #[test]
    fn a_chunked_body_over_the_limit_stops_at_the_chunk_that_passes_it() {
        let (result, rest) = chunked(
            &[b"4\r\nabcd\r\n10\r\n", b"0123456789abcdef\r\n0\r\n\r\n"],
            10,
        );
        assert!(matches!(result, Err(BodyError::TooLarge)), "{result:?}");
        assert!(rest.is_empty(), "the big chunk was never read");
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        for body in [
            &b"x\r\nab\r\n0\r\n\r\n"[..],
            b"2\r\nabc\r\n0\r\n\r\n",
            b"-1\r\n",
            b"fffffffffffffffffff\r\n",
        ] {
            let (result, _) = chunked(&[body], 1 << 20);
            assert!(
                matches!(result, Err(BodyError::Malformed(_))),
                "{body:?}: {result:?}"
            );
        }
        let endless = vec![b'1'; 5000];
        let (result, _) = chunked(&[&endless], 1 << 20);
        assert!(matches!(result, Err(BodyError::Malformed(_))), "{result:?}");
        let (result, _) = chunked(&[b"5\r\nhel"], 64);
        assert!(matches!(result, Err(BodyError::Gone)), "{result:?}");
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() {
        assert!(matches!(
            Expected::new(Framing::Length(65), 64),
            Err(BodyError::TooLarge)
        ));
        assert!(Expected::new(Framing::Length(64), 64).is_ok());
        assert!(Expected::new(Framing::Chunked, 64).is_ok());
    }

    #[test]
    fn a_body_grows_with_what_arrives_not_with_what_was_declared() {
        // Declares 2 MiB, sends 10 bytes, then nothing.
        let mut src = Script::new(&[b"0123456789"], true);
        let mut input = Input::new(Duration::from_secs(10));
        let mut out = Vec::new();
        let expected = Expected::new(Framing::Length(2 << 20), 2 << 20).unwrap();
        let read = expected.read(&mut input, &mut src, &mut out);
        assert!(matches!(read, Err(BodyError::TimedOut)), "{read:?}");
        assert_eq!(out, b"0123456789");
        assert!(
            out.capacity() <= 2 * FIRST_BODY_READ_BYTES,
            "{}",
            out.capacity()
        );
        // A body that does arrive is read whole, in reads that grow with it.
        let body = vec![b'x'; 3 << 20];
        let pieces: Vec<&[u8]> = body.chunks(100_000).collect();
        let mut src = Script::new(&pieces, false);
        let expected = Expected::new(Framing::Length(3 << 20), 3 << 20).unwrap();
        expected.read(&mut input, &mut src, &mut out).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn a_length_body_takes_what_was_read_ahead_then_the_rest() {
        let mut src = Script::new(&[b"lo world", b"!"], false);
        let mut input = Input::new(Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut first = Script::new(&[b"hel"], false);
        input.fill(&mut first, deadline, 64).unwrap();
        let mut out = Vec::new();
        read_length(&mut input, &mut src, 12, deadline, &mut out).unwrap();
        assert_eq!(out, b"hello world!");
    }
}
