//! The answers the front writes itself rather than pass on from the server: its refusals, and the
//! answers to held requests (see `held.rs`). One way to write an answer's head, whatever its body.

use std::fmt::Write as _;

use crate::error::Error;
use crate::server::Response;

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`: this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`: a body whose length is not known when its head is sent.
    Chunked,
    /// Neither: the body ends when the connection closes (HTTP/1.0 has no chunked coding).
    UntilClose,
}

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// An answer's head: the status line, `Content-Type`, `headers`, the framing, and
/// `Connection: close` when `close`.
pub fn head(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    framing: Framing,
    close: bool,
) -> Vec<u8> {
    let reason = tiny_http::StatusCode(status).default_reason_phrase();
    let mut text = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n");
    // Writing to a String cannot fail.
    for (name, value) in headers {
        let _ = write!(text, "{name}: {value}\r\n");
    }
    match framing {
        Framing::Length(length) => {
            let _ = write!(text, "Content-Length: {length}\r\n");
        }
        Framing::Chunked => text.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::UntilClose => {}
    }
    if close || framing == Framing::UntilClose {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// `response` whole: its head and, unless the request was a `HEAD` (`no_body`), its body.
pub fn whole(response: &Response, no_body: bool, close: bool) -> Vec<u8> {
    let mut bytes = head(
        response.status,
        response.content_type,
        &response.headers,
        Framing::Length(response.body.len()),
        close,
    );
    if !no_body {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

/// The front's own answer to `error`: the same JSON a handler would send, and the connection
/// closes after it.
pub fn refusal(error: &Error) -> Vec<u8> {
    whole(&Response::error(error), false, true)
}

/// Appends to `out` the line that starts a chunk of `len` bytes of a chunked body; the chunk's
/// data follows it, then [`CHUNK_END`].
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// What ends a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_json_and_closes() {
        let text = String::from_utf8(refusal(&Error::PayloadTooLarge(10))).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: 54\r\nConnection: close\r\n\r\n{\n  \"error\": \"request body is larger than 10 bytes\"\n}\n"
        );
    }

    #[test]
    fn heads_say_how_their_body_ends() {
        let chunked = head(
            200,
            "text/plain",
            &[("X-A", "1".into())],
            Framing::Chunked,
            false,
        );
        assert_eq!(
            chunked,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let until_close = head(200, "text/plain", &[], Framing::UntilClose, false);
        assert_eq!(
            until_close,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        );
        let data = b"hello world, in one chunk";
        let mut out = Vec::new();
        chunk_size_line(data.len(), &mut out);
        out.extend_from_slice(data);
        out.extend_from_slice(CHUNK_END);
        assert_eq!(out, b"19\r\nhello world, in one chunk\r\n");
    }
}
