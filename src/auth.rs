//! The cluster token: a shared secret that only the queen and her drones know.
//!
//! With a token set, a queen serves `/register`, `/submit_task` and `/drones` only to callers that
//! send `Authorization: Bearer <token>`, and a drone takes `/do_task` only from them (so only its
//! queen hands out work, as the tutorial suggests). `/healthz` stays open for liveness probes. Without
//! a token, everything is open, as in the tutorial, whose Python larves send no such header.

use std::fmt;
use std::path::Path;

/// Shortest token accepted: a guessable secret guards nothing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Longest token accepted, to keep the header small.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// A validated cluster token. Its `Debug` never shows the value, so it cannot leak into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The whole `Authorization` header value: `Bearer <token>`.
    header: String,
}

impl Token {
    /// Checks and wraps a token: printable ASCII without spaces, at least [`MIN_TOKEN_CHARS`] long.
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim_end_matches(['\n', '\r']);
        if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&secret.len()) {
            return Err(format!(
                "the token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters long"
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        Ok(Token {
            header: format!("Bearer {secret}"),
        })
    }

    /// Reads the token from a file (its first line), e.g. one only its owner may read.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let first = text.lines().next().unwrap_or_default();
        Token::new(first).map_err(|why| format!("{}: {why}", path.display()))
    }

    /// The `Authorization` header value to send to peers.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// True when `authorization` carries this token. The comparison takes the same time wherever the
    /// first difference is, so the answer time tells nothing about the token.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let given = authorization.unwrap_or_default().as_bytes();
        let wanted = self.header.as_bytes();
        let mut difference = given.len() ^ wanted.len();
        for (i, &w) in wanted.iter().enumerate() {
            difference |= usize::from(w ^ given.get(i).copied().unwrap_or(!w));
        }
        difference == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";

    #[test]
    fn admits_only_the_exact_bearer_header() {
        let token = Token::new(SECRET).unwrap();
        assert!(token.admits(Some(&format!("Bearer {SECRET}"))));
        for wrong in [
            None,
            Some(""),
            Some(SECRET),
            Some("Bearer "),
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("Bearer 0123456789abcdef0124"),
            Some("bearer 0123456789abcdef0123"),
        ] {
            assert!(!token.admits(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn refuses_weak_or_odd_tokens() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it, sadly").is_err());
        assert!(Token::new(&"x".repeat(MAX_TOKEN_CHARS + 1)).is_err());
        assert!(
            Token::new(&format!("{SECRET}\n")).is_ok(),
            "a file's trailing newline is fine"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::new(SECRET).unwrap();
        assert!(!format!("{token:?}").contains(SECRET));
    }
}
