//! etcd's v3 JSON gateway, spoken with the same blocking client as everything else.
//!
//! Every etcd crate is async or gRPC; the gateway is plain HTTP/1.1 with JSON, so a few calls
//! (`kv/range`, `kv/txn`, `lease/grant|keepalive|revoke`, `watch`) cover what Hive needs. What the
//! gateway does that a client must know (checked on etcd 3.4.23):
//! - keys and values are standard base64; int64 fields come back as JSON strings (lease IDs exceed
//!   2^53, so they are never parsed as floats);
//! - fields with default values are left out: a missing key has no `kvs`, a failed txn has no
//!   `succeeded`, a keepalive on a dead lease answers 200 without `TTL`, a PUT event has no `type`;
//! - errors are `{"error","message","code"}`, on streams `{"error":{"grpc_code","message",...}}`,
//!   and a wrong path is plain text;
//! - a watch is a stream of `{"result":{...}}` lines that says nothing while nothing changes, and a
//!   cancelled watch (its start revision compacted) stays open;
//! - the gateway does not fail over between members, so each call tries the next endpoint when one
//!   cannot be reached or answers 5xx (a member without quorum times out after about 5 s).
//!
//! Nothing here knows Hive's keys: see `mod.rs`.

use std::fmt;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::{Value, json};

use super::base64;
use crate::client::{CallError, Client, Credentials};
use crate::store::engine::{Compare, Event, Kv, Op, StoreError, Txn, TxnResult, WatchMessage};
use crate::tls::ClientTls;

/// Largest answer read from etcd: a range over a few thousand drones is a few megabytes.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// gRPC metadata, through the gateway, that makes a member refuse a watch (or end one) while it has
/// no leader. Without it, a member cut off from the others' quorum accepts a watch and then stays
/// silent, so the queen would go on serving a registry that no longer changes.
const REQUIRE_LEADER: (&str, &str) = ("Grpc-Metadata-hasleader", "true");

/// Longest line of a watch stream: one message, which may carry many events.
const MAX_WATCH_LINE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a call to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No endpoint answered (refused, timed out, or answered 5xx); the last reason.
    Unreachable(String),
    /// etcd answered and refused the request (a 4xx): retrying the same request cannot help.
    Refused { status: u16, message: String },
    /// The answer was not what the gateway sends: not JSON, or a field of the wrong type.
    Malformed(String),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Unreachable(why) => write!(f, "etcd unreachable: {why}"),
            GatewayError::Refused { status, message } => {
                write!(f, "etcd refused the request (HTTP {status}): {message}")
            }
            GatewayError::Malformed(why) => write!(f, "etcd answered something unexpected: {why}"),
        }
    }
}

impl std::error::Error for GatewayError {}

impl From<GatewayError> for StoreError {
    fn from(e: GatewayError) -> StoreError {
        match e {
            GatewayError::Unreachable(why) => StoreError::Unreachable(format!("etcd: {why}")),
            refused @ GatewayError::Refused { .. } => StoreError::Refused(refused.to_string()),
            GatewayError::Malformed(why) => StoreError::Malformed(format!("etcd: {why}")),
        }
    }
}

type Result<T> = std::result::Result<T, GatewayError>;

/// A transaction as the gateway's JSON: keys and values in base64, revisions as strings.
fn txn_body(txn: &Txn) -> Value {
    let compare: Vec<Value> = txn
        .compare
        .iter()
        .map(|compare| match compare {
            Compare::Created { key, revision } => json!({
                "key": base64::encode(key),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": revision.to_string(),
            }),
            Compare::Modified { key, revision } => json!({
                "key": base64::encode(key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": revision.to_string(),
            }),
        })
        .collect();
    let ops = |ops: &[Op]| -> Vec<Value> {
        ops.iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut put =
                        json!({ "key": base64::encode(key), "value": base64::encode(value) });
                    if *lease != 0 {
                        put["lease"] = json!(lease.to_string());
                    }
                    json!({ "request_put": put })
                }
                Op::Delete { key } => {
                    json!({ "request_delete_range": { "key": base64::encode(key) } })
                }
                Op::Get { key } => json!({ "request_range": { "key": base64::encode(key) } }),
            })
            .collect()
    };
    json!({ "compare": compare, "success": ops(&txn.success), "failure": ops(&txn.failure) })
}

/// A lease: keys attached to it go when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// What etcd granted, which may be more than asked for (it has a minimum).
    pub ttl: Duration,
}

/// The gateways of an etcd cluster's members, tried in turn.
pub struct Gateway {
    /// `host:port` of each member.
    endpoints: Vec<String>,
    /// The endpoint that answered last, tried first.
    current: AtomicUsize,
    client: Client,
    /// Limit for one try at one endpoint.
    timeout: Duration,
}

impl Gateway {
    /// A gateway over `endpoints`, reached over TLS when `tls` is given, each try limited by
    /// `timeout`.
    pub fn new(endpoints: Vec<String>, tls: Option<ClientTls>, timeout: Duration) -> Gateway {
        let credentials = Credentials { token: None, tls };
        Gateway {
            // A few kept-alive connections per member: the registry's writes, the election, reads.
            client: Client::new(4, 4 * endpoints.len(), credentials),
            endpoints,
            current: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The keys from `key` up to, not including, `end` (none: just `key`), and the store's
    /// revision they were read at.
    pub fn range(&self, key: &[u8], end: Option<&[u8]>) -> Result<(Vec<Kv>, i64)> {
        let mut body = json!({ "key": base64::encode(key) });
        if let Some(end) = end {
            body["range_end"] = json!(base64::encode(end));
        }
        let answer: RangeAnswer = self.call("/v3/kv/range", &body, None)?;
        let kvs = answer
            .kvs
            .into_iter()
            .map(Kv::try_from)
            .collect::<Result<_>>()?;
        Ok((kvs, answer.header.revision))
    }

    /// Runs `txn`.
    pub fn txn(&self, txn: &Txn) -> Result<TxnResult> {
        self.txn_before(txn, None)
    }

    /// Runs `txn`, giving up at `deadline` (when given) whichever endpoint it is trying.
    pub fn txn_before(&self, txn: &Txn, deadline: Option<Instant>) -> Result<TxnResult> {
        let answer: TxnAnswer = self.call("/v3/kv/txn", &txn_body(txn), deadline)?;
        let reads = answer
            .responses
            .into_iter()
            .filter_map(|op| op.response_range)
            .map(|range| range.kvs.into_iter().next().map(Kv::try_from).transpose())
            .collect::<Result<_>>()?;
        Ok(TxnResult {
            succeeded: answer.succeeded,
            revision: answer.header.revision,
            reads,
        })
    }

    /// A new lease of (at least) `ttl`.
    pub fn grant(&self, ttl: Duration) -> Result<Lease> {
        let body = json!({ "TTL": ttl.as_secs().max(1).to_string() });
        let answer: LeaseAnswer = self.call("/v3/lease/grant", &body, None)?;
        if answer.id == 0 || answer.ttl <= 0 {
            return Err(GatewayError::Malformed(format!(
                "a lease grant without an ID or a TTL (ID {}, TTL {})",
                answer.id, answer.ttl
            )));
        }
        Ok(Lease {
            id: answer.id,
            ttl: Duration::from_secs(answer.ttl.unsigned_abs()),
        })
    }

    /// Renews lease `id`: its new time to live, or `None` if it is gone (expired or revoked).
    pub fn keep_alive(&self, id: i64) -> Result<Option<Duration>> {
        let body = json!({ "ID": id.to_string() });
        let line: StreamLine<LeaseAnswer> = self.call("/v3/lease/keepalive", &body, None)?;
        let answer = line.into_result()?;
        Ok((answer.ttl > 0).then(|| Duration::from_secs(answer.ttl.unsigned_abs())))
    }

    /// Ends lease `id` now, deleting its keys. A lease already gone is fine.
    pub fn revoke(&self, id: i64) -> Result<()> {
        let body = json!({ "ID": id.to_string() });
        match self.call::<Value>("/v3/lease/revoke", &body, None) {
            Ok(_) | Err(GatewayError::Refused { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Watches the keys from `key` up to `end` for changes after `start_revision - 1`, for up to
    /// `lifetime`, from the first endpoint that answers.
    pub fn watch(
        &self,
        key: &[u8],
        end: &[u8],
        start_revision: i64,
        lifetime: Duration,
    ) -> Result<Stream> {
        let body = json!({ "create_request": {
            "key": base64::encode(key),
            "range_end": base64::encode(end),
            "start_revision": start_revision.to_string(),
        }});
        self.each_endpoint(None, |endpoint, timeout| {
            let (status, reader) = self.client.post_for_stream(
                endpoint,
                "/v3/watch",
                &body,
                &[REQUIRE_LEADER],
                (timeout, lifetime),
            )?;
            Ok((status, Stream::new(Box::new(reader))))
        })
        .and_then(|(status, mut watch)| {
            if status != 200 {
                // An error before the stream started: the unary shape.
                let mut text = Vec::new();
                let _ =
                    Read::take(&mut watch.lines, MAX_WATCH_LINE_BYTES).read_until(b'\n', &mut text);
                return Err(refusal(status, &text));
            }
            Ok(watch)
        })
    }

    /// POSTs `body` to `path` and reads the JSON answer as `T`, by `deadline` when given.
    fn call<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<T> {
        let reply = self.each_endpoint(deadline, |endpoint, timeout| {
            let reply =
                self.client
                    .post_for_reply(endpoint, path, body, timeout, MAX_REPLY_BYTES)?;
            Ok((reply.status, reply.body))
        })?;
        let (status, body) = reply;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| GatewayError::Malformed(format!("{e} in {}", excerpt(&body))))
    }

    /// Tries `attempt` at each endpoint, from the one that answered last, until one answers with
    /// less than a 5xx, each try within the call timeout and `deadline`. Returns that answer
    /// (status and what came with it).
    fn each_endpoint<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&str, Duration) -> std::result::Result<(u16, T), CallError>,
    ) -> Result<(u16, T)> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no time left to try");
        for i in 0..self.endpoints.len() {
            let timeout = match deadline {
                Some(deadline) => self
                    .timeout
                    .min(deadline.saturating_duration_since(Instant::now())),
                None => self.timeout,
            };
            if timeout.is_zero() {
                break;
            }
            let index = (first + i) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match attempt(endpoint, timeout) {
                Ok((status, answer)) if status < 500 => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok((status, answer));
                }
                Ok((status, _)) => last = format!("{endpoint} answered HTTP {status}"),
                Err(e) => last = format!("{endpoint}: {e}"),
            }
        }
        Err(GatewayError::Unreachable(last))
    }
}

/// What etcd said when it refused a request: its message if the body holds one, in either of its
/// error shapes, else the start of the body; cut short either way.
fn refusal(status: u16, body: &[u8]) -> GatewayError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            let text = error.as_str().or_else(|| error.get("message")?.as_str())?;
            Some(excerpt(text.as_bytes()))
        })
        .unwrap_or_else(|| excerpt(body.trim_ascii()));
    GatewayError::Refused { status, message }
}

/// Longest piece of an answer an error quotes: errors end up in log lines and in 503 answers.
const MAX_EXCERPT_BYTES: usize = 200;

/// The start of `bytes` as text, control characters escaped, with a note when it was cut.
fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.len().min(MAX_EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&bytes[..cut]);
    let mut shown = crate::logging::one_line(&text).into_owned();
    if cut < bytes.len() {
        shown.push_str(&format!("… ({} more bytes)", bytes.len() - cut));
    }
    shown
}

/// A watch stream, read one message at a time.
pub struct Stream {
    lines: Box<dyn BufRead + Send>,
}

impl Stream {
    fn new(lines: Box<dyn BufRead + Send>) -> Stream {
        Stream { lines }
    }

    /// The next message; `None` when the stream ended (etcd closed it, or its lifetime passed).
    /// A stream cut in the middle of a message, or an error message, is an error.
    pub fn next_message(&mut self) -> Result<Option<WatchMessage>> {
        loop {
            let mut line = Vec::new();
            let read =
                Read::take(&mut self.lines, MAX_WATCH_LINE_BYTES).read_until(b'\n', &mut line);
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                // The stream's lifetime is over: a quiet watch, not a broken one.
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(GatewayError::Unreachable(format!("watch stream: {e}"))),
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            return parse_watch_line(&line).map(Some);
        }
    }
}

impl crate::store::engine::Watch for Stream {
    fn next_message(&mut self) -> std::result::Result<Option<WatchMessage>, StoreError> {
        Stream::next_message(self).map_err(StoreError::from)
    }
}

/// Whether a read of a stream failed because its time ran out. ureq reports its own timeouts
/// inside an I/O error of another kind.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

/// One line of a watch stream.
fn parse_watch_line(line: &[u8]) -> Result<WatchMessage> {
    let line: StreamLine<WatchAnswer> = serde_json::from_slice(line)
        .map_err(|e| GatewayError::Malformed(format!("{e} in watch line {}", excerpt(line))))?;
    let answer = line.into_result()?;
    if answer.canceled {
        return Ok(WatchMessage::Canceled {
            compact_revision: answer.compact_revision,
        });
    }
    if answer.created {
        return Ok(WatchMessage::Created);
    }
    if answer.events.is_empty() {
        return Ok(WatchMessage::Progress);
    }
    let events = answer
        .events
        .into_iter()
        .map(|event| {
            let kv = Kv::try_from(event.kv)?;
            Ok(match event.kind.as_deref() {
                None | Some("PUT") => Event::Put(kv),
                Some("DELETE") => Event::Delete {
                    key: kv.key,
                    revision: kv.mod_revision,
                },
                Some(other) => {
                    return Err(GatewayError::Malformed(format!(
                        "an event of type {}",
                        excerpt(other.as_bytes())
                    )));
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok(WatchMessage::Events(events))
}

// The gateway's JSON, every field defaulted: it leaves out whatever has its default value.

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize, Default)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

impl TryFrom<RawKv> for Kv {
    type Error = GatewayError;

    fn try_from(raw: RawKv) -> Result<Kv> {
        let bytes = |field: &str, text: &str| {
            base64::decode(text).ok_or_else(|| {
                GatewayError::Malformed(format!(
                    "{field} {} is not base64",
                    excerpt(text.as_bytes())
                ))
            })
        };
        if raw.key.is_empty() {
            return Err(GatewayError::Malformed("a key-value without a key".into()));
        }
        Ok(Kv {
            key: bytes("key", &raw.key)?,
            value: bytes("value", &raw.value)?,
            create_revision: raw.create_revision,
            mod_revision: raw.mod_revision,
        })
    }
}

#[derive(Deserialize)]
struct RangeAnswer {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct TxnAnswer {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnOp>,
}

#[derive(Deserialize)]
struct TxnOp {
    #[serde(default)]
    response_range: Option<RangeAnswer>,
}

#[derive(Deserialize, Default)]
struct LeaseAnswer {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Deserialize, Default)]
struct WatchAnswer {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    kv: RawKv,
}

/// A line of a streamed answer: `{"result": ...}` or `{"error": {...}}`.
#[derive(Deserialize)]
struct StreamLine<T> {
    result: Option<T>,
    error: Option<Value>,
}

impl<T> StreamLine<T> {
    fn into_result(self) -> Result<T> {
        match (self.result, self.error) {
            (_, Some(error)) => {
                let message = excerpt(
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message")
                        .as_bytes(),
                );
                Err(GatewayError::Unreachable(format!(
                    "etcd ended the stream: {message}"
                )))
            }
            (Some(result), None) => Ok(result),
            (None, None) => Err(GatewayError::Malformed(
                "a stream line with neither a result nor an error".into(),
            )),
        }
    }
}

/// An int64 as the gateway writes it: a JSON string of digits (or, leniently, a JSON integer).
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Text(String),
        Number(i64),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text
            .parse()
            .map_err(|_| de::Error::custom(format!("{text:?} is not an int64"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_as_etcd_3_4_writes_them() {
        let created = br#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"33","raft_term":"3"},"created":true}}"#;
        assert_eq!(parse_watch_line(created), Ok(WatchMessage::Created));
        let put = br#"{"result":{"header":{"revision":"34"},"events":[{"kv":{"key":"dy9h","create_revision":"34","mod_revision":"34","version":"1","value":"djE="}},{"kv":{"key":"dy9lbXB0eQ==","create_revision":"36","mod_revision":"36","version":"1"}}]}}"#;
        assert_eq!(
            parse_watch_line(put),
            Ok(WatchMessage::Events(vec![
                Event::Put(Kv {
                    key: b"w/a".to_vec(),
                    value: b"v1".to_vec(),
                    create_revision: 34,
                    mod_revision: 34,
                }),
                Event::Put(Kv {
                    key: b"w/empty".to_vec(),
                    value: Vec::new(),
                    create_revision: 36,
                    mod_revision: 36,
                }),
            ]))
        );
        let delete = br#"{"result":{"header":{"revision":"37"},"events":[{"type":"DELETE","kv":{"key":"dy9h","mod_revision":"37"},"prev_kv":{"key":"dy9h","create_revision":"34","mod_revision":"35","version":"2","value":"djI="}}]}}"#;
        assert_eq!(
            parse_watch_line(delete),
            Ok(WatchMessage::Events(vec![Event::Delete {
                key: b"w/a".to_vec(),
                revision: 37
            }]))
        );
        let compacted = br#"{"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"3"},"canceled":true,"compact_revision":"38"}}"#;
        assert_eq!(
            parse_watch_line(compacted),
            Ok(WatchMessage::Canceled {
                compact_revision: 38
            })
        );
        let progress = br#"{"result":{"header":{"revision":"1"}}}"#;
        assert_eq!(parse_watch_line(progress), Ok(WatchMessage::Progress));
    }

    #[test]
    fn malformed_watch_lines_are_errors_not_panics() {
        for line in [
            &b"<html><body>502 Bad Gateway</body></html>"[..],
            b"{\"result\":{\"events\":[{\"kv\":{\"key\":\"not base64!\"}}]}}",
            b"{\"result\":{\"events\":[{\"kv\":{}}]}}",
            b"{\"result\":{\"canceled\":true,\"compact_revision\":1.5}}",
            b"{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"12x\"}}]}}",
            b"{\"result\":{\"events\":[{\"type\":\"MOVE\",\"kv\":{\"key\":\"YQ==\"}}]}}",
            b"{}",
            b"[1,2]",
            b"{\"result\":{\"created\":tr",
        ] {
            assert!(
                matches!(parse_watch_line(line), Err(GatewayError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let ended = br#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}"#;
        assert_eq!(
            parse_watch_line(ended),
            Err(GatewayError::Unreachable(
                "etcd ended the stream: transport is closing".into()
            ))
        );
    }

    /// A stand-in member on a free loopback port: it takes one request, answers it with a watch
    /// stream of `lines`, then keeps the connection open for `linger`. Gives back its address and
    /// the thread, which returns the request's head.
    fn member_streaming(
        lines: &'static [&'static [u8]],
        linger: Duration,
    ) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufReader, Write};
        let member = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = member.local_addr().unwrap().to_string();
        let serving = std::thread::spawn(move || {
            let (stream, _) = member.accept().unwrap();
            let mut request = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") && request.read_line(&mut head).unwrap() > 0 {}
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for line in lines {
                answer.extend_from_slice(format!("{:x}\r\n", line.len() + 1).as_bytes());
                answer.extend_from_slice(line);
                answer.extend_from_slice(b"\n\r\n");
            }
            (&stream).write_all(&answer).unwrap();
            std::thread::sleep(linger);
            head
        });
        (endpoint, serving)
    }

    #[test]
    fn a_watch_requires_a_leader_and_a_member_without_one_is_unreachable() {
        // A member cut off from its cluster's quorum, as etcd 3.4 answers a watch that asks for a
        // leader: a stream whose first line is the error.
        let (endpoint, serving) = member_streaming(
            &[br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#],
            Duration::ZERO,
        );
        let gateway = Gateway::new(vec![endpoint], None, Duration::from_secs(2));
        let mut watch = gateway
            .watch(b"/hive/", b"/hive0", 1, Duration::from_secs(2))
            .expect("the member answers");
        let head = serving.join().unwrap().to_ascii_lowercase();
        assert!(head.contains("grpc-metadata-hasleader: true"), "{head}");
        assert!(
            matches!(
                watch.next_message(),
                Err(GatewayError::Unreachable(why)) if why.contains("no leader")
            ),
            "a member without a leader is one to move away from"
        );
    }

    #[test]
    fn a_quiet_watch_ends_when_its_lifetime_passes() {
        // A member that confirms the watch, then has nothing more to say for longer than the
        // watch's lifetime.
        let (endpoint, serving) = member_streaming(
            &[br#"{"result":{"header":{"revision":"3"},"created":true}}"#],
            Duration::from_millis(800),
        );
        let gateway = Gateway::new(vec![endpoint], None, Duration::from_secs(1));
        let mut watch = gateway
            .watch(b"/hive/", b"/hive0", 1, Duration::from_millis(300))
            .expect("the member answers");
        assert_eq!(watch.next_message(), Ok(Some(WatchMessage::Created)));
        assert_eq!(watch.next_message(), Ok(None), "quiet, not broken");
        serving.join().unwrap();
    }

    #[test]
    fn a_cut_stream_ends_and_a_partial_line_is_an_error() {
        let cut = b"{\"result\":{\"header\":{\"revision\":\"3\"},\"created\":true}}\n{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ\"";
        let mut watch = Stream::new(Box::new(&cut[..]));
        assert_eq!(watch.next_message(), Ok(Some(WatchMessage::Created)));
        assert!(matches!(
            watch.next_message(),
            Err(GatewayError::Malformed(_))
        ));
        assert_eq!(watch.next_message(), Ok(None));
    }

    #[test]
    fn refusals_carry_etcds_message_in_either_shape() {
        assert_eq!(
            refusal(
                404,
                br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
            ),
            GatewayError::Refused {
                status: 404,
                message: "etcdserver: requested lease not found".into()
            }
        );
        assert_eq!(
            refusal(
                503,
                br#"{"error":{"grpc_code":14,"message":"etcdserver: no leader"}}"#
            ),
            GatewayError::Refused {
                status: 503,
                message: "etcdserver: no leader".into()
            }
        );
        assert_eq!(
            refusal(404, b"Not Found\n"),
            GatewayError::Refused {
                status: 404,
                message: "Not Found".into()
            }
        );
    }

    #[test]
    fn int64_fields_are_strings_and_missing_ones_are_zero() {
        let answer: LeaseAnswer =
            serde_json::from_str(r#"{"header":{},"ID":"7587880293624158213"}"#).unwrap();
        assert_eq!((answer.id, answer.ttl), (7_587_880_293_624_158_213, 0));
        let answer: TxnAnswer = serde_json::from_str(r#"{"header":{"revision":"11"}}"#).unwrap();
        assert!(!answer.succeeded, "a failed txn leaves succeeded out");
        assert!(serde_json::from_str::<LeaseAnswer>(r#"{"ID":7.5e18}"#).is_err());
    }
}
