//! Reading a request's body into memory, never more than its path's limit, by a deadline: a
//! `Content-Length` body, or a chunked one decoded as it comes (chunk sizes, extensions and
//! trailers are checked and dropped; the server gets the data and its length).

use std::time::Instant;

use super::input::{Input, ReadError, Source};

/// Longest chunk-size line (size, extensions) or trailer line, and all trailer lines together.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

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

/// Reads exactly `length` bytes (already checked against the limit) into `out`, what `input`
/// holds first.
pub fn read_length(
    input: &mut Input,
    src: &mut impl Source,
    length: usize,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let buffered = input.data().len().min(length);
    out.extend_from_slice(&input.data()[..buffered]);
    input.consume(buffered);
    let mut filled = out.len();
    out.resize(out.len() + length - buffered, 0);
    while filled < out.len() {
        filled += input.read_direct(src, deadline, &mut out[filled..])?;
    }
    Ok(())
}

/// Decodes a chunked body of at most `limit` bytes into `out`.
pub fn read_chunked(
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
        if size > limit.saturating_sub(out.len()) {
            return Err(BodyError::TooLarge);
        }
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
