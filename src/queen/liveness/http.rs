//! A probe's HTTP/1.1: the request's bytes, and its answer read as the bytes come, the head by
//! httparse. Pure: the prober feeds it whatever each read brought.
//!
//! A probe asks for `Connection: close`, so the drone's kernel, not the queen's, keeps the
//! connection's TIME_WAIT, and an answer without a length ends where the connection does.

use crate::auth::Token;

/// Largest answer a probe reads: a drone's status lists the attempts it runs and has ended, a few
/// hundred bytes each.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Header fields read from an answer's head; a larve's answers have four or five.
const MAX_HEADERS: usize = 32;

/// `GET path` on `host` (the drone's `host:port`), showing `bearer`.
pub fn request(host: &str, path: &str, bearer: Option<&Token>) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hive-larve/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        crate::VERSION
    );
    if let Some(token) = bearer {
        head.push_str("Authorization: ");
        head.push_str(token.header());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// What the bytes of an answer received so far make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Not a whole answer yet: read on.
    More,
    /// A whole answer: its status and body (chunks joined).
    Answer { status: u16, body: Vec<u8> },
    /// Not an answer, and never will be: why.
    Bad(String),
}

/// Reads `bytes`, everything received so far; `closed` when the drone has closed the connection
/// (nothing more will come).
pub fn read(bytes: &[u8], closed: bool) -> Read {
    if bytes.len() > MAX_ANSWER_BYTES {
        return Read::Bad(format!("an answer over {MAX_ANSWER_BYTES} bytes"));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let head_len = match answer.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if closed => {
            return Read::Bad(if bytes.is_empty() {
                "the connection closed without an answer".into()
            } else {
                "the connection closed in the middle of an answer".into()
            });
        }
        Ok(httparse::Status::Partial) => return Read::More,
        Err(e) => return Read::Bad(format!("not an HTTP answer ({e})")),
    };
    let status = answer.code.unwrap_or_default();
    let mut length = None;
    let mut chunked = false;
    for header in answer.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok());
            match parsed {
                Some(n) => length = Some(n),
                None => return Read::Bad("an answer whose Content-Length is not a number".into()),
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(header.value)
                .to_ascii_lowercase()
                .contains("chunked");
        }
    }
    let rest = &bytes[head_len..];
    if matches!(status, 100..=199 | 204 | 304) {
        return Read::Answer {
            status,
            body: Vec::new(),
        };
    }
    if chunked {
        return match dechunk(rest) {
            Some(body) => Read::Answer { status, body },
            None if closed => Read::Bad("the connection closed in the middle of an answer".into()),
            None => Read::More,
        };
    }
    match length {
        Some(n) if rest.len() >= n => Read::Answer {
            status,
            body: rest[..n].to_vec(),
        },
        Some(_) if closed => Read::Bad("the connection closed in the middle of an answer".into()),
        Some(_) => Read::More,
        // No length: the body is everything until the connection closes.
        None if closed => Read::Answer {
            status,
            body: rest.to_vec(),
        },
        None => Read::More,
    }
}

/// A chunked body's bytes, once its last chunk is in; `None` until then (or if it is not chunked
/// at all, which then never completes and times out).
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (taken, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            _ => return None,
        };
        rest = &rest[taken..];
        let size = usize::try_from(size).ok()?;
        if size == 0 {
            return Some(body);
        }
        // The chunk, then its CRLF.
        let chunk = rest.get(..size.checked_add(2)?)?;
        body.extend_from_slice(&chunk[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}";

    #[test]
    fn the_request_asks_for_close_and_shows_the_credential() {
        let token = Token::new("credential-0123456789abcdef").unwrap();
        let sent =
            String::from_utf8(request("127.0.0.1:5001", "/healthz?verbose", Some(&token))).unwrap();
        assert!(sent.starts_with("GET /healthz?verbose HTTP/1.1\r\nHost: 127.0.0.1:5001\r\n"));
        assert!(sent.contains("\r\nConnection: close\r\n"));
        assert!(sent.contains("\r\nAuthorization: Bearer credential-0123456789abcdef\r\n"));
        assert!(sent.ends_with("\r\n\r\n"));
        let anonymous = String::from_utf8(request("h:1", "/healthz", None)).unwrap();
        assert!(!anonymous.contains("Authorization"));
    }

    #[test]
    fn an_answer_is_whole_only_once_its_body_is_in_whatever_the_reads_brought() {
        for cut in 0..ANSWER.len() {
            assert_eq!(read(&ANSWER[..cut], false), Read::More, "cut at {cut}");
        }
        assert_eq!(
            read(ANSWER, false),
            Read::Answer {
                status: 200,
                body: b"{\"a\": true}".to_vec()
            }
        );
    }

    #[test]
    fn a_chunked_answer_and_one_ended_by_the_close_are_read_too() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n7\r\n: true}\r\n0\r\n\r\n";
        assert_eq!(read(&chunked[..chunked.len() - 7], false), Read::More);
        assert_eq!(
            read(chunked, false),
            Read::Answer {
                status: 200,
                body: b"{\"a\": true}".to_vec()
            }
        );
        let unframed = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        assert_eq!(read(unframed, false), Read::More);
        assert_eq!(
            read(unframed, true),
            Read::Answer {
                status: 200,
                body: b"all of it".to_vec()
            }
        );
    }

    #[test]
    fn an_error_status_is_an_answer_the_caller_judges() {
        let moved = b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            read(moved, false),
            Read::Answer { status: 302, .. }
        ));
    }

    #[test]
    fn what_is_not_an_answer_says_why() {
        for (bytes, closed, needle) in [
            (&b""[..], true, "without an answer"),
            (&ANSWER[..30], true, "in the middle"),
            (&ANSWER[..ANSWER.len() - 1], true, "in the middle"),
            (b"SSH-2.0-OpenSSH_9.6\r\n", false, "not an HTTP answer"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
                false,
                "not a number",
            ),
        ] {
            match read(bytes, closed) {
                Read::Bad(why) => assert!(why.contains(needle), "{why}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        let huge = vec![b'x'; MAX_ANSWER_BYTES + 1];
        assert!(matches!(read(&huge, false), Read::Bad(_)));
    }
}
