//! The one error type of the HTTP API, and the one place its variants become status codes.

use std::fmt;

/// Everything a request can fail with. Each variant is something the caller can act on, so each maps to
/// exactly one HTTP status in [`Error::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Malformed JSON, a missing or wrong field, or an endpoint of the other mode.
    BadRequest(String),
    /// No such thing: an endpoint (`endpoint "/x"`), a task, a drone.
    NotFound(String),
    /// The request needs the cluster token and did not carry it.
    Unauthorized,
    /// The caller is known but may not do this here (a drone without `--allow-exec` asked to run
    /// a command).
    Forbidden(String),
    /// The path exists but not for this method; carries the allowed methods for the `Allow` header.
    MethodNotAllowed(&'static str),
    /// The request clashes with what exists (a task id taken by another spec).
    Conflict(String),
    /// What was asked for existed and is gone for good: the output of an attempt whose drone is no
    /// longer registered, or no longer keeps it.
    Gone(String),
    /// Too much is queued already; the caller should come back later (`Retry-After`).
    TooManyRequests(String),
    /// The body did not arrive in time.
    RequestTimeout,
    /// The body is larger than the server accepts.
    PayloadTooLarge(usize),
    /// The `Expect` field asks for something other than `100-continue`.
    ExpectationFailed,
    /// The request head (request line and fields) is larger than the server reads.
    HeadTooLarge(usize),
    /// The request head has more header fields than the server reads.
    TooManyFields(usize),
    /// The request speaks an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// The larve cannot take this request now (too many connections, or waiting requests); trying
    /// again later may work.
    Busy(String),
    /// The queen knows no drone that can take a task right now.
    NoDrones,
    /// Every drone the queen tried failed; the text says which and how.
    AllDronesFailed(String),
    /// The drone that holds what was asked for did not answer it as it should (unreachable, or an
    /// answer the queen cannot use); the text says which drone and how.
    DroneFailed(String),
    /// The registry's shared store (etcd) cannot be reached, so a registration cannot be recorded;
    /// trying again later may work.
    StoreUnavailable(String),
    /// The registry's shared store answered something a registration cannot use (a name counter
    /// that is not a number, say): trying again will not help until someone mends the store.
    StoreFailed(String),
    /// The larve is starting and cannot do this yet; trying again shortly will work.
    NotReady(String),
    /// A bug: a handler panicked. The process keeps serving.
    Internal(String),
}

/// Shorthand used by every fallible API function.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::Conflict(_) => 409,
            Error::Gone(_) => 410,
            Error::TooManyRequests(_) => 429,
            Error::RequestTimeout => 408,
            Error::PayloadTooLarge(_) => 413,
            Error::ExpectationFailed => 417,
            Error::HeadTooLarge(_) | Error::TooManyFields(_) => 431,
            Error::Internal(_) => 500,
            Error::AllDronesFailed(_) | Error::DroneFailed(_) | Error::StoreFailed(_) => 502,
            Error::NoDrones | Error::StoreUnavailable(_) | Error::Busy(_) | Error::NotReady(_) => {
                503
            }
            Error::VersionNotSupported => 505,
        }
    }

    /// The body every error is answered with, by a handler or by the front door alike:
    /// `{"error": "..."}`, pretty-printed and ended by a newline, as the tutorial's Flask larve
    /// prints JSON for curl.
    pub fn json_body(&self) -> Vec<u8> {
        let value = serde_json::json!({ "error": self.to_string() });
        let mut body = serde_json::to_vec_pretty(&value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        body
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "{why}"),
            Error::Unauthorized => write!(
                f,
                "this endpoint needs the cluster token: send Authorization: Bearer <token> (a hive started by scripts/hive-up.sh keeps it in .hive/token; scripts/submit.sh and scripts/status.sh send it)"
            ),
            Error::NotFound(what) => write!(f, "no such {what}"),
            Error::Forbidden(why)
            | Error::Conflict(why)
            | Error::Gone(why)
            | Error::DroneFailed(why)
            | Error::TooManyRequests(why)
            | Error::NotReady(why) => {
                write!(f, "{why}")
            }
            Error::RequestTimeout => write!(f, "the request body did not arrive in time"),
            Error::MethodNotAllowed(allowed) => write!(f, "method not allowed here; use {allowed}"),
            Error::PayloadTooLarge(limit) => write!(f, "request body is larger than {limit} bytes"),
            Error::ExpectationFailed => write!(f, "only Expect: 100-continue is supported"),
            Error::HeadTooLarge(limit) => write!(
                f,
                "request head (request line and header fields) is larger than {limit} bytes"
            ),
            Error::TooManyFields(limit) => {
                write!(f, "request head has more than {limit} header fields")
            }
            Error::VersionNotSupported => write!(f, "only HTTP/1.1 and HTTP/1.0 are supported"),
            Error::Busy(why) => write!(f, "{why}; try again later"),
            Error::NoDrones => write!(
                f,
                "no live drone to take the task; is any drone registered?"
            ),
            Error::AllDronesFailed(detail) => write!(f, "every drone tried failed: {detail}"),
            Error::StoreUnavailable(why) => write!(
                f,
                "the registry's store cannot be reached ({why}); try again later"
            ),
            Error::StoreFailed(why) => write!(f, "the registry's store failed: {why}"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_own_status() {
        let cases = [
            (Error::BadRequest("x".into()), 400),
            (Error::Unauthorized, 401),
            (Error::NotFound("endpoint \"/x\"".into()), 404),
            (Error::Forbidden("x".into()), 403),
            (Error::MethodNotAllowed("GET"), 405),
            (Error::Conflict("x".into()), 409),
            (Error::Gone("x".into()), 410),
            (Error::DroneFailed("x".into()), 502),
            (Error::TooManyRequests("x".into()), 429),
            (Error::RequestTimeout, 408),
            (Error::PayloadTooLarge(1), 413),
            (Error::ExpectationFailed, 417),
            (Error::HeadTooLarge(1), 431),
            (Error::TooManyFields(1), 431),
            (Error::VersionNotSupported, 505),
            (Error::Busy("x".into()), 503),
            (Error::Internal("x".into()), 500),
            (Error::AllDronesFailed("x".into()), 502),
            (Error::NoDrones, 503),
            (Error::StoreUnavailable("x".into()), 503),
            (Error::StoreFailed("x".into()), 502),
            (Error::NotReady("x".into()), 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }
}
