//! A request head, checked before anything behind the front sees it: the request line and the
//! header fields, at most [`super::MAX_HEAD_BYTES`] of them, every line ended by CRLF.
//!
//! `httparse` parses it; the front decides what it accepts. httparse is lenient where a server
//! reading any client must be, and the front is not, since it only ever has to read HTTP/1.x
//! clients and must never let two readers of one head disagree: it refuses a line ended by a bare
//! LF (httparse takes it), and bytes outside printable ASCII in the target or a field value
//! (httparse takes obs-text).
//!
//! The front then sends the server a head of its own making (see `connection.rs`): the method, the
//! target and the end-to-end fields as they came, framed by the front (`Content-Length` of the
//! body it read, HTTP/1.1, the peer's address). So what the server parses is always well formed,
//! and a field that would change how the server frames or keeps the connection never reaches it:
//! hop-by-hop fields (`Connection` and the fields it names, `Keep-Alive`, `TE`, `Trailer`,
//! `Upgrade`, `Proxy-Connection`), the framing (`Content-Length`, `Transfer-Encoding`, `Expect`)
//! and the front's own [`PEER_FIELD`] and identity field, which a client must not be able to set.
//!
//! What is refused, and why, follows RFC 9112: a request with both `Content-Length` and
//! `Transfer-Encoding`, or `Content-Length` values that differ, has no single meaning (the root of
//! request smuggling); a folded field line (obsolete) and bytes outside printable ASCII have none
//! the server could parse.

use std::ops::Range;

use crate::error::Error;

/// The field carrying the client's address to the server (the server sees only a Unix socket).
pub const PEER_FIELD: &str = "X-Hive-Peer";

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length`: this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A checked request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The head as the server gets it, but for the framing the front adds: the request line (in
    /// HTTP/1.1) and the end-to-end fields, each line ended by CRLF.
    upstream: String,
    method: Range<usize>,
    target: Range<usize>,
    pub framing: Framing,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
    /// The connection ends after this request: the client said `Connection: close`, or speaks
    /// HTTP/1.0 (whose keep-alive the front does not offer).
    pub close: bool,
    /// The client speaks HTTP/1.0, which has no chunked bodies.
    pub http10: bool,
    /// The `Authorization` field's value: the front's gate reads it, and it goes no further.
    pub authorization: Option<String>,
}

impl Head {
    /// The method, in upper case.
    pub fn method(&self) -> &str {
        &self.upstream[self.method.clone()]
    }

    /// The request target as sent: the path and the query string.
    pub fn target(&self) -> &str {
        &self.upstream[self.target.clone()]
    }

    /// The target's path, without the query string.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The raw query string (after `?`), empty if none.
    pub fn query(&self) -> &str {
        self.target().split_once('?').map_or("", |(_, query)| query)
    }

    /// A `HEAD` request, whose answer has no body whatever its `Content-Length` says.
    pub fn is_head(&self) -> bool {
        self.method() == "HEAD"
    }

    /// The request line and the fields to pass on.
    pub fn upstream(&self) -> &[u8] {
        self.upstream.as_bytes()
    }

    /// The buffer back, for the next head.
    pub fn into_buffer(self) -> String {
        self.upstream
    }
}

/// Where the head in `bytes` ends: the index just past its empty line. `from` is how far an
/// earlier call looked, so a head arriving in pieces is scanned once. Empty lines before the
/// request line (which RFC 9112 lets a server ignore) are skipped.
pub fn end(bytes: &[u8], from: usize) -> Option<usize> {
    let start = leading_empty_lines(bytes);
    let from = from.saturating_sub(3).max(start);
    bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

fn leading_empty_lines(bytes: &[u8]) -> usize {
    bytes.chunks(2).take_while(|pair| *pair == b"\r\n").count() * 2
}

/// Most header fields a head may have: what Apache takes by default (`LimitRequestFields`), five
/// times what a browser sends. httparse parses fields into a table of this size on the stack.
pub const MAX_FIELDS: usize = 100;

/// Checks the head in `bytes` (as far as [`end`] said) and reads what the front needs from it,
/// writing what the server is to get into `buffer` (emptied first; passed in so each connection
/// reuses one).
pub fn parse(bytes: &[u8], mut buffer: String) -> Result<Head, Error> {
    if !lines_end_in_crlf(bytes) {
        return Err(bad("every line of the request head must end with CRLF"));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length == bytes.len() => {}
        Ok(_) => return Err(bad("the head does not end where its empty line is")),
        Err(e) => return Err(refusal(e, &request, bytes)),
    }
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(bad("the request line is not METHOD TARGET HTTP/1.1"));
    };
    if !target.bytes().all(is_printable) {
        return Err(bad(
            "the request target holds bytes other than printable ASCII",
        ));
    }
    let http10 = version == 0;
    let fields = &*request.headers;

    let mut framing = Framing::Empty;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut close = http10;
    let mut authorization = None;
    let mut hop_by_hop: Vec<&str> = Vec::new();
    for field in fields {
        let (name, value) = (field.name, text(field.value)?);
        if name.eq_ignore_ascii_case("content-length") {
            let length = content_length(value)?;
            match framing {
                Framing::Length(earlier) if earlier != length => {
                    return Err(bad("Content-Length is given twice with different values"));
                }
                _ => framing = Framing::Length(length),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Err(bad("only Transfer-Encoding: chunked (once) is accepted"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(Error::ExpectationFailed);
            }
            expect_continue = !http10;
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.replace(value.to_string()).is_some() {
                return Err(bad("Authorization is given twice"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return Err(bad("Connection: upgrade is not supported"));
                } else {
                    hop_by_hop.push(token);
                }
            }
        }
    }
    if chunked {
        if framing != Framing::Empty {
            return Err(bad(
                "a request with both Content-Length and Transfer-Encoding is ambiguous",
            ));
        }
        if http10 {
            return Err(bad("HTTP/1.0 has no chunked transfer coding"));
        }
        framing = Framing::Chunked;
    }
    if framing == Framing::Length(0) {
        framing = Framing::Empty;
    }

    buffer.clear();
    // Methods are case-sensitive, but tiny_http reads them in any case: the front and the server
    // must agree on which request this is.
    buffer.extend(method.chars().map(|c| c.to_ascii_uppercase()));
    buffer.push(' ');
    buffer.push_str(target);
    buffer.push_str(" HTTP/1.1\r\n");
    let method = 0..method.len();
    let target = method.end + 1..method.end + 1 + target.len();
    for field in fields {
        let (name, value) = (field.name, text(field.value)?);
        let this_hop = THIS_HOP_ONLY
            .iter()
            .chain(&hop_by_hop)
            .any(|hop| hop.eq_ignore_ascii_case(name));
        if !this_hop {
            for part in [name, ": ", value, "\r\n"] {
                buffer.push_str(part);
            }
        }
    }
    Ok(Head {
        upstream: buffer,
        method,
        target,
        framing,
        expect_continue,
        close,
        http10,
        authorization,
    })
}

/// A field's value as text: printable ASCII, spaces and tabs only (httparse also takes obs-text).
fn text(value: &[u8]) -> Result<&str, Error> {
    let printable = value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || is_printable(b));
    std::str::from_utf8(value)
        .ok()
        .filter(|_| printable)
        .ok_or_else(|| bad("a field value with bytes other than printable ASCII"))
}

/// Whether every CR in `bytes` is followed by LF and every LF preceded by CR.
fn lines_end_in_crlf(bytes: &[u8]) -> bool {
    let crlf = |i: usize| bytes.get(i..i + 2) == Some(b"\r\n");
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => crlf(i),
        b'\n' => i > 0 && crlf(i - 1),
        _ => true,
    })
}

/// The refusal of a head httparse could not parse, saying which part is wrong: httparse says what
/// kind of byte it stopped at, and how far it got (the method, the target, the version it read).
fn refusal(e: httparse::Error, request: &httparse::Request, bytes: &[u8]) -> Error {
    const REQUEST_LINE: &str = "the request line is not METHOD TARGET HTTP/1.1";
    let line = bytes[leading_empty_lines(bytes)..]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    match (e, request.method, request.path) {
        (httparse::Error::Token, None, _) => {
            let word = line.split(|&b| b == b' ').next().unwrap_or_default();
            if !word.is_empty() && word.iter().copied().all(is_tchar) {
                bad(REQUEST_LINE)
            } else {
                bad("the method is not a token")
            }
        }
        (httparse::Error::Version, Some(method), Some(target)) => {
            // What follows the target: `HTTP/x.y` of another version, or not a version at all.
            let version = line
                .get(method.len() + target.len() + 2..)
                .unwrap_or_default();
            match version {
                [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                    if major.is_ascii_digit() && minor.is_ascii_digit() =>
                {
                    Error::VersionNotSupported
                }
                _ => bad(REQUEST_LINE),
            }
        }
        (httparse::Error::HeaderName, ..) => bad(
            "a field line that is folded (starts with a space), without a colon, or whose name is not a token",
        ),
        (httparse::Error::HeaderValue, ..) => {
            bad("a field value with bytes other than printable ASCII")
        }
        (httparse::Error::TooManyHeaders, ..) => Error::TooManyFields(MAX_FIELDS),
        _ => bad(REQUEST_LINE),
    }
}

/// Fields about this hop (or this front), never passed on, in lower case: the credential too,
/// which the front has turned into an identity (see `auth.rs`).
const THIS_HOP_ONLY: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "authorization",
    "x-hive-peer",
    "x-hive-identity",
];

fn bad(why: &str) -> Error {
    Error::BadRequest(format!("malformed request: {why}"))
}

fn content_length(value: &str) -> Result<u64, Error> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Content-Length is not a number"));
    }
    value
        .parse()
        .map_err(|_| bad("Content-Length is too large to be a number"))
}

/// A character of a token (RFC 9110): what methods and field names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A visible ASCII character: what a request target is made of, and a field value (with spaces and
/// tabs).
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Error> {
        let bytes = text.as_bytes();
        let end = end(bytes, 0).expect("a complete head");
        assert_eq!(end, bytes.len(), "the test gives exactly one head");
        parse(bytes, String::new())
    }

    fn refused(text: &str) -> String {
        match head(text) {
            Err(Error::BadRequest(why)) => why,
            other => panic!("{text:?}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_head_of_more_fields_than_the_table_holds_is_431() {
        let fields = "X-A: 1\r\n".repeat(MAX_FIELDS);
        assert!(head(&format!("GET / HTTP/1.1\r\n{fields}\r\n")).is_ok());
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{fields}X-B: 2\r\n\r\n")),
            Err(Error::TooManyFields(MAX_FIELDS))
        );
    }

    #[test]
    fn a_head_ends_at_its_empty_line_wherever_the_reads_cut_it() {
        let text = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nnext";
        assert_eq!(end(text, 0), Some(text.len() - 4));
        for cut in 0..text.len() - 4 {
            assert_eq!(end(&text[..cut], 0), None, "{cut}");
            assert_eq!(end(text, cut), Some(text.len() - 4), "from {cut}");
        }
        assert_eq!(
            end(b"\r\n\r\n", 0),
            None,
            "empty lines alone are not a head"
        );
    }

    #[test]
    fn a_request_is_read_and_its_end_to_end_fields_passed_on() {
        let h = head(
            "\r\nPOST /tasks/7?wait=30 HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\nAuthorization:  Bearer t \r\nX-Hive-Peer: 6.6.6.6:1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method(), "POST");
        assert_eq!((h.path(), h.query()), ("/tasks/7", "wait=30"));
        assert_eq!(h.framing, Framing::Length(15));
        assert_eq!(h.authorization.as_deref(), Some("Bearer t"));
        assert!(!h.close && !h.expect_continue && !h.is_head());
        assert_eq!(
            h.into_buffer(),
            "POST /tasks/7?wait=30 HTTP/1.1\r\nHost: x\r\n"
        );
    }

    #[test]
    fn framing_keep_alive_and_expectations() {
        let h = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue && h.close);
        let h = head("get / HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.close && h.http10, "HTTP/1.0 closes");
        assert_eq!(h.method(), "GET");
        let h = head("POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert_eq!(
            head("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n"),
            Err(Error::ExpectationFailed)
        );
        assert_eq!(
            head("GET / HTTP/2.0\r\n\r\n"),
            Err(Error::VersionNotSupported)
        );
    }

    #[test]
    fn ambiguous_or_unparsable_heads_are_refused_with_a_reason() {
        for (text, why) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "ambiguous",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                "different values",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
                "not a number",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "too large",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "only Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "only Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
            (
                "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                "upgrade",
            ),
            ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", "folded"),
            ("GET / HTTP/1.1\r\nX-A 1\r\n\r\n", "without a colon"),
            ("GET / HTTP/1.1\r\nX A: 1\r\n\r\n", "not a token"),
            ("GET / HTTP/1.1\r\n: 1\r\n\r\n", "not a token"),
            (
                "GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n",
                "printable ASCII",
            ),
            ("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", "printable ASCII"),
            ("GET / HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n", "CRLF"),
            ("GET / HTTP/1.1\rX-A: 1\r\n\r\n", "CRLF"),
            ("GET  / HTTP/1.1\r\n\r\n", "request line"),
            ("GET /a b HTTP/1.1\r\n\r\n", "request line"),
            ("GET / HTTP/1.1 \r\n\r\n", "request line"),
            ("G(T / HTTP/1.1\r\n\r\n", "not a token"),
            ("GET /\u{e9} HTTP/1.1\r\n\r\n", "printable ASCII"),
            ("GET / HTTPS/1.1\r\n\r\n", "HTTP/1.1"),
            ("HIVE self-check\r\n\r\n", "request line"),
            ("GET\r\n\r\n", "request line"),
            ("GET / HTTP/1.1\nX-A: 1\n\n\r\n\r\n", "CRLF"),
        ] {
            let reason = refused(text);
            assert!(reason.contains(why), "{text:?}: {reason:?} lacks {why:?}");
        }
    }
}
