//! A seeded fuzz test of the HTTP API: 10,000 random requests against a queen and a drone, with
//! random methods, paths and headers, and bodies of random bytes, truncated JSON, deep nesting,
//! huge numbers, wrong types, invalid UTF-8, NULs, control characters, sizes over the limit, and
//! valid requests mixed in.
//!
//! It proves that every answer is a well-formed HTTP/1.1 response with exactly the status the API
//! documents for that request (so never a 500), that every non-2xx body is JSON `{"error": "..."}`,
//! that both larves stay up, that the registry changes only by valid registrations, that the drone
//! prints exactly the texts it was validly given (one line each, control characters escaped), and
//! that no text in a request can forge a log line.
//!
//! The requests are random but reproducible: a failure names the seed, the thread and the request.
//! `HIVE_FUZZ_SEED=0x... cargo test --test fuzz` replays another seed.
//!
//! The HTTP framing itself stays well-formed (one `Content-Length`, no `Transfer-Encoding` or
//! `Expect`, no spaces in the path): tiny_http answers broken request lines and headers itself,
//! with an empty 400 that Hive cannot change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write as _};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fastrand::Rng;
use serde_json::{Value, json};

/// The seed of every random choice; `HIVE_FUZZ_SEED` overrides it.
const SEED: u64 = 0x4856_4546_5a5a_0001;

/// Requests in all, split evenly over [`THREADS`] client threads.
const REQUESTS: usize = 10_000;
const THREADS: usize = 4;

/// Largest body the larves accept; one byte more is a 413.
const MAX_BODY: usize = hive::server::MAX_BODY_BYTES;

/// Longest wait for any answer: a request that takes longer is a hang, and a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The timestamp that texts trying to forge a log line carry; no real log line starts with it.
const FORGED_STAMP: &str = "2001-02-03T04:05:06";

/// Texts that would forge a log line or a stdout line if printed as they are.
const FORGERIES: &[&str] = &[
    "\n2001-02-03T04:05:06Z [INFO] registered drone-99 at \"evil.example:1\"",
    "\r\n2001-02-03T04:05:06Z [WARN] forged",
    "\r2001-02-03T04:05:06Z [INFO] overwritten",
    "\x1b[2K\r2001-02-03T04:05:06Z [INFO] erased",
    "\u{85}2001-02-03T04:05:06Z next line",
    "\u{2028}2001-02-03T04:05:06Z line separator",
];

/// Every endpoint with the one method it answers.
const ENDPOINTS: [(&str, &str); 6] = [
    ("/healthz", "GET"),
    ("/do_task", "POST"),
    ("/submit_task", "POST"),
    ("/register", "POST"),
    ("/drones", "GET"),
    ("/metrics", "GET"),
];

/// The content type of `/metrics`, Prometheus' text format; every other answer is JSON.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Headers whose meaning tiny_http acts on (framing, keep-alive, response encoding): random headers
/// never use these names, so the framing stays what the test says it is.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "expect",
    "connection",
    "host",
    "te",
    "trailer",
    "upgrade",
];

/// The larve a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Queen,
    Drone,
}

/// The lasting effect a request should have, besides its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Nothing,
    /// `/do_task` on the drone: it prints this text.
    Print(String),
    /// `/submit_task` on the queen: some drone takes this text.
    Submit(String),
    /// `/register` on the queen: this address joins the registry.
    Register(String),
}

/// One fuzzed request.
struct Request {
    target: Target,
    method: String,
    /// The request target: a path, maybe with a query string.
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether an empty body still gets `Content-Length: 0`.
    length_header: bool,
    /// Sends `Connection: close`, so the server closes the connection after answering.
    close: bool,
}

impl Request {
    /// The request on the wire, framed correctly.
    fn bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\nHost: {host}\r\n", self.method, self.url);
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        if self.length_header || !self.body.is_empty() {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The request for a failure message, with a long body cut short.
    fn describe(&self) -> String {
        let shown = &self.body[..self.body.len().min(300)];
        let cut = if shown.len() < self.body.len() {
            "…"
        } else {
            ""
        };
        let close = if self.close {
            " + Connection: close"
        } else {
            ""
        };
        format!(
            "{:?} {} {:?}\nheaders: {:?}{close}\nbody ({} bytes): {:?}{cut}",
            self.target,
            self.method,
            self.url,
            self.headers,
            self.body.len(),
            String::from_utf8_lossy(shown),
        )
    }

    fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    /// The value of header `name`, if the answer has it.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when the server says it closes the connection after this answer.
    fn closes(&self) -> bool {
        self.header("Connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// A kept-alive connection to one larve, opened again after the server closed the last one.
struct Connection {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
    /// Connections opened so far.
    opened: usize,
}

impl Connection {
    fn new(addr: &str) -> Connection {
        Connection {
            addr: addr.to_string(),
            stream: None,
            opened: 0,
        }
    }

    /// Sends `request` and reads its answer. A kept-alive connection that the server closes without
    /// answering is an error too: the server closes only after `Connection: close`.
    fn exchange(&mut self, request: &Request) -> Result<Answer, String> {
        let kept = self.stream.is_some();
        if !kept {
            let stream = TcpStream::connect(&self.addr).map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                .and_then(|()| stream.set_nodelay(true))
                .map_err(|e| format!("socket options: {e}"))?;
            self.stream = Some(BufReader::new(stream));
            self.opened += 1;
        }
        let reader = self.stream.as_mut().expect("a connection");
        let answer = reader
            .get_mut()
            .write_all(&request.bytes(&self.addr))
            .map_err(|e| format!("sending: {e}"))
            .and_then(|()| read_answer(reader, request.is_head()));
        if !matches!(&answer, Ok(a) if !request.close && !a.closes()) {
            self.stream = None;
        }
        let connection = if kept { "kept-alive" } else { "new" };
        answer.map_err(|e| format!("{e} (on a {connection} connection)"))
    }
}

/// One CRLF-terminated line of an answer's head, without the CRLF.
fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(8192)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if line.is_empty() {
        return Err("the server closed the connection without answering".into());
    }
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(format!(
            "an answer line not ending in CRLF: {:?}",
            String::from_utf8_lossy(&line)
        ));
    };
    String::from_utf8(line.to_vec()).map_err(|e| format!("an answer line that is not UTF-8: {e}"))
}

/// Reads one answer: status line, headers, and a `Content-Length` body (none for `HEAD`).
fn read_answer(reader: &mut BufReader<TcpStream>, head: bool) -> Result<Answer, String> {
    let status_line = read_line(reader)?;
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (200..600).contains(code))
        .ok_or_else(|| format!("not an HTTP/1.1 final status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(name, _)| !name.is_empty() && !name.contains(char::is_whitespace))
            .ok_or_else(|| format!("a malformed header line: {line:?}"))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let lengths: Vec<&(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .collect();
    let [(_, length)] = lengths[..] else {
        return Err(format!(
            "status {status}: not exactly one Content-Length: {headers:?}"
        ));
    };
    let length: usize = length
        .parse()
        .map_err(|_| format!("status {status}: a bad Content-Length {length:?}"))?;
    let mut body = vec![0; if head { 0 } else { length }];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("status {status}: reading a {length}-byte body: {e}"))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The non-empty string `field` of a JSON object body, exactly as the API reads it; `None` where
/// the API answers 400.
fn string_field(body: &[u8], field: &str) -> Option<String> {
    let Value::Object(mut object) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    match object.remove(field)? {
        Value::String(text) if !text.is_empty() => Some(text),
        _ => None,
    }
}

/// The status the API documents for `request`, and what it should change.
fn predict(request: &Request) -> (u16, Effect) {
    // Whose credential would count is ambiguous: the front refuses the head.
    let authorizations = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .count();
    if authorizations > 1 {
        return (400, Effect::Nothing);
    }
    if request.body.len() > MAX_BODY {
        return (413, Effect::Nothing);
    }
    let url = request.url.as_str();
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let Some(&(_, allowed)) = ENDPOINTS.iter().find(|(p, _)| *p == path) else {
        return (404, Effect::Nothing);
    };
    if request.method != allowed {
        return (405, Effect::Nothing);
    }
    let body = &request.body;
    let valid = |effect: fn(String) -> Effect, value: Option<String>| {
        value.map_or((400, Effect::Nothing), |v| (200, effect(v)))
    };
    match (path, request.target) {
        ("/healthz" | "/metrics", _) => (200, Effect::Nothing),
        ("/drones", Target::Queen) => {
            let query = url.split_once('?').map_or("", |(_, query)| query);
            (
                if drones_query_ok(query) { 200 } else { 400 },
                Effect::Nothing,
            )
        }
        ("/do_task", Target::Drone) => valid(Effect::Print, string_field(body, "text")),
        ("/submit_task", Target::Queen) => valid(Effect::Submit, string_field(body, "text")),
        ("/register", Target::Queen) => valid(
            Effect::Register,
            string_field(body, "address").filter(|a| hive::address::validate(a).is_ok()),
        ),
        // The other role's endpoint.
        _ => (400, Effect::Nothing),
    }
}

/// Whether `GET /drones` takes `query`, as the API reads it: `name=value` pairs apart by `&`,
/// each escaped properly (`%XX`, `+` for a space, UTF-8 once decoded), and every `label` a
/// constraint (`KEY`, `KEY=VALUE` or `KEY!=VALUE`).
fn drones_query_ok(query: &str) -> bool {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .all(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (unescaped(name), unescaped(value)) {
                (Some(name), Some(value)) => {
                    name != "label" || value.parse::<hive::labels::Constraint>().is_ok()
                }
                _ => false,
            }
        })
}

/// `text` with its `%XX` escapes and `+` decoded, if they are well formed and make UTF-8.
fn unescaped(text: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = text.bytes();
    while let Some(b) = rest.next() {
        bytes.push(match b {
            b'%' => {
                let hex = [rest.next()?, rest.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'+' => b' ',
            b => b,
        });
    }
    String::from_utf8(bytes).ok()
}

/// What a drone prints for a task: control characters escaped, everything else as it is.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One random character: mostly ASCII, often control characters, JSON's special characters, line
/// separators, and characters from every plane.
fn random_char(rng: &mut Rng) -> char {
    match rng.u8(0..100) {
        0..=44 => rng.char(' '..='~'),
        45..=59 => match rng.u8(0..3) {
            0 => rng.char('\0'..='\u{1f}'),
            1 => '\u{7f}',
            _ => rng.char('\u{80}'..='\u{9f}'),
        },
        60..=69 => *rng
            .choice(&[
                '"', '\\', '/', '\u{2028}', '\u{2029}', '\u{feff}', '\u{200b}', '\u{200e}',
                '\u{fffd}', '\u{1b}', '\n', '\r', '\t', '\0',
            ])
            .expect("a choice"),
        70..=89 => rng.char('\u{a0}'..='\u{ffff}'),
        _ => rng.char('\u{10000}'..),
    }
}

/// A non-empty random text of up to `max_chars` characters, sometimes carrying a forged log line.
fn random_text(rng: &mut Rng, max_chars: usize) -> String {
    let mut text: String = (0..rng.usize(1..=max_chars))
        .map(|_| random_char(rng))
        .collect();
    if rng.u8(0..8) == 0 {
        text.push_str(rng.choice(FORGERIES).expect("a forgery"));
    }
    text
}

/// Random printable ASCII characters other than space, as many as a random pick from `len`.
fn printable(rng: &mut Rng, len: Range<usize>) -> String {
    (0..rng.usize(len)).map(|_| rng.char('!'..='~')).collect()
}

/// An address `hive::address::validate` refuses: garbage, or a near miss of a real one.
fn bad_address(rng: &mut Rng, pool: &[String]) -> String {
    let near_misses = [
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "127.0.0.1:80 ",
        "http://127.0.0.1:80",
        "127.0.0.1:80/admin?",
        "user@127.0.0.1:80",
        "evil.example/x#:80",
        "[::1:80",
        "::1:80",
        "[not-v6]:80",
        "999.1.1.1:80",
        "-bad.example:80",
        "a..b:80",
        "exa mple:80",
        "ünicode.example:80",
        "127.0.0.1:80\n2001-02-03T04:05:06Z [INFO] forged",
    ];
    let mut address = match rng.u8(0..4) {
        0 => rng.choice(near_misses).expect("a near miss").to_string(),
        1 => {
            let real = rng.choice(pool).expect("a pool address");
            let junk = rng.choice(["/", "#", "?x", " ", "\0", ":1", "@x", "\n"]);
            format!("{real}{}", junk.expect("junk"))
        }
        2 => format!("{}:80", "a".repeat(rng.usize(250..400))),
        _ => random_text(rng, 40),
    };
    if hive::address::validate(&address).is_ok() {
        // A port is digits only, so this makes any valid address invalid.
        address.push('/');
    }
    address
}

/// A value for `field` that the API accepts as a string: a random text, or for an address either a
/// live address from `pool` or garbage.
fn field_value(rng: &mut Rng, field: &str, pool: &[String]) -> String {
    match field {
        "text" => {
            let max_chars = if rng.u8(0..20) == 0 { 3000 } else { 60 };
            random_text(rng, max_chars)
        }
        _ if rng.bool() => rng.choice(pool).expect("a pool address").clone(),
        _ => bad_address(rng, pool),
    }
}

/// `{"field": value}` as compact JSON.
fn object(field: &str, value: &str) -> String {
    json!({ field: value }).to_string()
}

/// A random request body, aimed at an endpoint that reads `field` ("text" or "address").
fn random_body(rng: &mut Rng, field: &str, pool: &[String]) -> Vec<u8> {
    match rng.u8(0..100) {
        0..=4 => Vec::new(),
        5..=11 => {
            let len = match rng.u8(0..20) {
                0 => rng.usize(4096..72 * 1024),
                1..=3 => rng.usize(256..4096),
                _ => rng.usize(0..256),
            };
            let mut bytes = vec![0; len];
            rng.fill(&mut bytes);
            bytes
        }
        12..=15 => invalid_utf8(rng, field),
        16..=19 => {
            // A raw control character or NUL inside a JSON string: not JSON.
            let control = rng.char('\0'..='\u{1f}');
            format!("{{\"{field}\": \"a{control}b\"}}").into_bytes()
        }
        20..=27 => {
            let full = object(field, &field_value(rng, field, pool)).into_bytes();
            full[..rng.usize(0..full.len())].to_vec()
        }
        28..=32 => deep_nesting(rng, field),
        33..=37 => huge_number(rng, field),
        38..=44 => wrong_type(rng, field),
        45..=47 => format!("{{\"{field}\": \"\"}}").into_bytes(),
        48..=64 => object(field, &field_value(rng, field, pool)).into_bytes(),
        65..=79 => {
            let value = match field {
                "text" => format!("fuzz task {}", printable(rng, 8..9)),
                _ => rng.choice(pool).expect("a pool address").clone(),
            };
            object(field, &value).into_bytes()
        }
        80..=85 => oversized(rng, field),
        86..=93 => odd_json(rng, field, pool),
        _ => json_ish(rng),
    }
}

/// A JSON body with bytes that are not UTF-8 inside or around its string.
fn invalid_utf8(rng: &mut Rng, field: &str) -> Vec<u8> {
    let bad: &[u8] = rng
        .choice([
            &[0xff][..],
            &[0xc3, 0x28],
            &[0xe2, 0x82],
            &[0xed, 0xa0, 0x80],
            &[0xc0, 0xaf],
            &[0xf8, 0x88, 0x80, 0x80, 0x80],
            &[0xf4, 0x90, 0x80, 0x80],
        ])
        .expect("a bad sequence");
    let mut body = format!("{{\"{field}\": \"ab").into_bytes();
    body.extend_from_slice(bad);
    body.extend_from_slice(b"cd\"}");
    if rng.bool() {
        body.splice(0..0, bad.iter().copied());
    }
    body
}

/// Arrays or objects nested up to 10,000 deep, alone or as the value of `field`, closed or not.
fn deep_nesting(rng: &mut Rng, field: &str) -> Vec<u8> {
    let any = rng.usize(2..10_000);
    let depth = *rng
        .choice(&[1, 64, 127, 128, 129, 1000, 10_000, any])
        .expect("a depth");
    let (open, close) = if rng.bool() {
        ("[", "]")
    } else {
        ("{\"a\":", "}")
    };
    let mut nested = open.repeat(depth);
    nested.push_str(if rng.bool() { "\"deep\"" } else { "1" });
    if rng.u8(0..4) != 0 {
        nested.push_str(&close.repeat(depth));
    }
    let body = if rng.bool() {
        format!("{{\"{field}\": {nested}}}")
    } else {
        nested
    };
    body.into_bytes()
}

/// Numbers no float or integer holds, and things that only look like numbers.
fn huge_number(rng: &mut Rng, field: &str) -> Vec<u8> {
    let long = format!("1{}", "0".repeat(rng.usize(20..5000)));
    let tiny = format!("0.{}1e-400", "0".repeat(rng.usize(0..500)));
    let number = rng
        .choice([
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "-123456789012345678901234567890",
            "18446744073709551616",
            "1.7976931348623157e309",
            &long,
            &tiny,
            "NaN",
            "Infinity",
            "-0",
            "1e",
            "01",
            "0x10",
        ])
        .expect("a number")
        .to_string();
    let body = if rng.bool() {
        format!("{{\"{field}\": {number}}}")
    } else {
        number
    };
    body.into_bytes()
}

/// Valid JSON where `field` is not a string, or a body that is not an object.
fn wrong_type(rng: &mut Rng, field: &str) -> Vec<u8> {
    let value = rng
        .choice([
            "5",
            "-1",
            "1.5",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "[\"hello\"]",
            "{\"text\": \"hello\"}",
            "{\"address\": \"127.0.0.1:1/\"}",
        ])
        .expect("a value");
    let body = match rng.u8(0..4) {
        0 => value.to_string(),
        1 => format!("[\"{field}\", \"hello\"]"),
        2 => "\"hello\"".to_string(),
        _ => format!("{{\"{field}\": {value}}}"),
    };
    body.into_bytes()
}

/// A body around the 64 KiB limit: a valid `{"field": "xxx..."}` of exactly the limit, one byte
/// over, or up to about 70 KiB.
fn oversized(rng: &mut Rng, field: &str) -> Vec<u8> {
    let (under, over) = (
        rng.usize(60 * 1024..MAX_BODY),
        rng.usize(MAX_BODY + 1..70 * 1024),
    );
    let len = *rng
        .choice(&[MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, under, over])
        .expect("a length");
    let overhead = object(field, "").len();
    object(field, &"x".repeat(len - overhead)).into_bytes()
}

/// JSON that is odd but mostly valid: duplicate and extra fields, whitespace, escapes, surrogates,
/// a byte-order mark, trailing commas or values.
fn odd_json(rng: &mut Rng, field: &str, pool: &[String]) -> Vec<u8> {
    let value = field_value(rng, field, pool);
    let quoted = serde_json::to_string(&value).expect("a JSON string");
    let body = match rng.u8(0..11) {
        0 => {
            let other = serde_json::to_string(&field_value(rng, field, pool)).expect("JSON");
            format!("{{\"{field}\": {quoted}, \"{field}\": {other}}}")
        }
        1 => format!("{{\"x\": [1, {{}}], \"{field}\": {quoted}, \"other\": null}}"),
        2 => format!(" \r\n\t{{ \"{field}\" :\n{quoted} }}\n "),
        3 => format!("\u{feff}{{\"{field}\": {quoted}}}"),
        4 => format!("{{\"{}\": {quoted}}}", escape_all(field)),
        5 => format!("{{\"{field}\": \"{}\"}}", escape_all(&value)),
        6 => format!("{{\"{field}\": \"a\\ud800b\"}}"),
        7 => format!("{{\"{field}\": \"\\ud83d\\ude00 \\u0000 \\u001b[31m\"}}"),
        8 => format!("{{\"{}\": {quoted}}}", field.to_uppercase()),
        9 => format!("{{\"{field}\": {quoted},}}"),
        _ => format!(
            "{{\"{field}\": {quoted}}}{}",
            rng.choice(["{}", "\0", " x"]).expect("x")
        ),
    };
    body.into_bytes()
}

/// `text` with every character written as a JSON `\uXXXX` escape (surrogate pairs above the BMP).
fn escape_all(text: &str) -> String {
    let mut out = String::new();
    for unit in text.encode_utf16() {
        let _ = write!(out, "\\u{unit:04x}");
    }
    out
}

/// Fragments of JSON syntax thrown together.
fn json_ish(rng: &mut Rng) -> Vec<u8> {
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"text\"",
        "\"address\"",
        "\"",
        "null",
        "1",
        "-",
        "e",
        "\\",
        "\\u",
        " ",
        "\n",
        "true",
        "\0",
        "\u{1b}",
    ];
    (0..rng.usize(1..40))
        .map(|_| *rng.choice(&pieces).expect("a piece"))
        .collect::<String>()
        .into_bytes()
}

/// A request path for `endpoint`: exact, with a query string, mutated, or garbage.
fn random_path(rng: &mut Rng, endpoint: &str) -> String {
    match rng.u8(0..100) {
        0..=59 => endpoint.to_string(),
        60..=74 => format!("{endpoint}?{}", printable(rng, 0..40)),
        75..=89 => match rng.u8(0..6) {
            0 => {
                let suffix =
                    rng.choice(["/", "x", "%20", "%00", "/..", "#", "#frag", ";a=b", "//"]);
                format!("{endpoint}{}", suffix.expect("a suffix"))
            }
            1 => {
                // One character percent-escaped: the API does not decode paths.
                let i = rng.usize(1..endpoint.len());
                format!(
                    "{}%{:02X}{}",
                    &endpoint[..i],
                    endpoint.as_bytes()[i],
                    &endpoint[i + 1..]
                )
            }
            2 => endpoint.to_uppercase(),
            3 => format!("/{endpoint}"),
            4 => endpoint[..endpoint.len() - 1].to_string(),
            _ => format!("{endpoint}%{}", printable(rng, 0..3)),
        },
        _ => format!("/{}", printable(rng, 0..40)),
    }
}

/// A method: mostly the endpoint's own, else another standard one or a random upper-case token.
fn random_method(rng: &mut Rng, allowed: &str) -> String {
    match rng.u8(0..100) {
        0..=69 => allowed.to_string(),
        70..=89 => rng
            .choice([
                "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "HEAD",
            ])
            .expect("a method")
            .to_string(),
        _ => (0..rng.usize(1..12))
            .map(|i| match rng.u8(0..20) {
                0 if i > 0 => '-',
                1 if i > 0 => '_',
                _ => rng.uppercase(),
            })
            .collect(),
    }
}

/// Up to a few extra headers: random names and printable values, a content type, a token.
fn random_headers(rng: &mut Rng) -> Vec<(String, String)> {
    let count = if rng.bool() { 0 } else { rng.usize(1..6) };
    (0..count)
        .map(|_| match rng.u8(0..10) {
            0 => {
                let kind = [
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                ];
                let value = rng.choice(kind).expect("a type").to_string();
                ("Content-Type".to_string(), value)
            }
            1 => (
                "Authorization".to_string(),
                format!("Bearer {}", printable(rng, 0..40)),
            ),
            2 => ("Connection".to_string(), "keep-alive".to_string()),
            _ => {
                let name = loop {
                    let name: String = (0..rng.usize(1..20))
                        .map(|i| match rng.u8(0..10) {
                            0 if i > 0 => '-',
                            1 => rng.digit(10),
                            _ => rng.alphabetic(),
                        })
                        .collect();
                    if !FRAMING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                        break name;
                    }
                };
                let value = (0..rng.usize(0..80)).map(|_| rng.char(' '..='~')).collect();
                (name, value)
            }
        })
        .collect()
}

/// A whole random request; `pool` holds the only addresses a registration may validly name.
fn random_request(rng: &mut Rng, pool: &[String]) -> Request {
    let (endpoint, allowed) = match rng.u8(0..100) {
        0..=14 => ENDPOINTS[0],
        15..=39 => ENDPOINTS[1],
        40..=64 => ENDPOINTS[2],
        65..=84 => ENDPOINTS[3],
        85..=94 => ENDPOINTS[4],
        _ => ENDPOINTS[5],
    };
    // Mostly the larve that serves the endpoint, so valid requests really happen.
    let target = match (endpoint, rng.u8(0..4)) {
        ("/do_task", 0) | ("/submit_task" | "/register" | "/drones", 1..) => Target::Queen,
        ("/healthz" | "/metrics", n) if n < 2 => Target::Queen,
        _ => Target::Drone,
    };
    let field = match (endpoint, rng.u8(0..8)) {
        ("/register", 1..) | ("/do_task" | "/submit_task", 0) => "address",
        _ => "text",
    };
    let body = if allowed == "GET" && rng.u8(0..4) != 0 {
        Vec::new()
    } else {
        random_body(rng, field, pool)
    };
    let method = random_method(rng, allowed);
    let url = random_path(rng, endpoint);
    let mut headers = random_headers(rng);
    let close = rng.u8(0..30) == 0;
    if close {
        // tiny_http heeds only the first Connection header.
        headers.retain(|(name, _)| name != "Connection");
    }
    Request {
        target,
        method,
        url,
        headers,
        body,
        length_header: rng.bool(),
        close,
    }
}

/// What one client thread saw and caused.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    /// Texts the drone took directly on `/do_task`.
    printed: Vec<String>,
    /// `(drone name, text)` for every task the queen placed.
    submitted: Vec<(String, String)>,
    /// Addresses validly registered.
    registered: BTreeSet<String>,
    connections: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.printed.extend(other.printed);
        self.submitted.extend(other.submitted);
        self.registered.extend(other.registered);
        self.connections += other.connections;
    }
}

/// Panics with `what`, saying how to reproduce it.
fn fail(context: &str, what: impl Display) -> ! {
    panic!("{context}: {what}")
}

/// Checks the parts of an answer every request must get right, whatever its status.
fn check_answer(context: &str, request: &Request, expected: u16, answer: &Answer) {
    if answer.status >= 500 {
        fail(context, format!("a {} answer: {answer:?}", answer.status));
    }
    if answer.status != expected {
        let body = String::from_utf8_lossy(&answer.body);
        fail(
            context,
            format!("expected {expected}, got {}: {body}", answer.status),
        );
    }
    let metrics = answer.status == 200 && request.url.starts_with("/metrics");
    if metrics {
        if answer.header("Content-Type") != Some(PROMETHEUS_TEXT) {
            fail(
                context,
                format!("metrics not as Prometheus text: {answer:?}"),
            );
        }
        if request.method != "HEAD" {
            parse_prometheus(&String::from_utf8_lossy(&answer.body));
        }
        return;
    }
    if answer.header("Content-Type") != Some("application/json") {
        fail(context, format!("not a JSON answer: {answer:?}"));
    }
    if answer.status == 405 {
        let allowed = ENDPOINTS.iter().find(|(p, _)| request.url.starts_with(p));
        if answer.header("Allow") != allowed.map(|(_, m)| *m) {
            fail(
                context,
                format!("a 405 without the right Allow: {answer:?}"),
            );
        }
    }
    if request.is_head() {
        return;
    }
    let json: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
        let body = String::from_utf8_lossy(&answer.body);
        fail(context, format!("body is not JSON ({e}): {body:?}"))
    });
    if answer.status >= 300 && !json["error"].is_string() {
        fail(
            context,
            format!("an error without an \"error\" string: {json}"),
        );
    }
}

/// Where the client threads send their requests.
struct Targets<'a> {
    queen: &'a str,
    drone: &'a str,
    /// The only addresses a registration may validly name.
    pool: &'a [String],
    /// Set by the first thread that fails, so the others stop and its report comes first.
    failed: &'a AtomicBool,
}

/// Raises its flag when the thread holding it panics.
struct RaiseOnPanic<'a>(&'a AtomicBool);

impl Drop for RaiseOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Sends `count` random requests from `seed`, alternating at random between the queen and the drone
/// on one kept-alive connection each, and checks every answer.
fn fuzz(seed: u64, thread: usize, count: usize, targets: &Targets) -> Tally {
    let mut rng = Rng::with_seed(seed);
    let mut to_queen = Connection::new(targets.queen);
    let mut to_drone = Connection::new(targets.drone);
    let pool = targets.pool;
    let _raise = RaiseOnPanic(targets.failed);
    let mut tally = Tally::default();
    for i in 0..count {
        if targets.failed.load(Ordering::Relaxed) {
            break;
        }
        let request = random_request(&mut rng, pool);
        let context = format!(
            "seed {seed:#x} (thread {thread} of base seed {:#x}), request {i}\n{}\n",
            base_seed(),
            request.describe()
        );
        let (expected, effect) = predict(&request);
        let connection = match request.target {
            Target::Queen => &mut to_queen,
            Target::Drone => &mut to_drone,
        };
        let answer = connection
            .exchange(&request)
            .unwrap_or_else(|e| fail(&context, e));
        check_answer(&context, &request, expected, &answer);
        *tally.statuses.entry(answer.status).or_default() += 1;
        let json = || serde_json::from_slice::<Value>(&answer.body).expect("checked JSON");
        match effect {
            Effect::Nothing => {}
            Effect::Print(text) => tally.printed.push(text),
            Effect::Submit(text) => match json()["drone"].as_str() {
                Some(name) => tally.submitted.push((name.to_string(), text)),
                None => fail(&context, "a placed task without the drone's name"),
            },
            Effect::Register(address) => {
                if !pool.contains(&address) {
                    fail(&context, format!("the test registered {address:?}"));
                }
                tally.registered.insert(address);
            }
        }
    }
    tally.connections = to_queen.opened + to_drone.opened;
    tally
}

/// The seed in use: `HIVE_FUZZ_SEED` (decimal or 0x-hex) if set, else [`SEED`].
fn base_seed() -> u64 {
    let Ok(given) = std::env::var("HIVE_FUZZ_SEED") else {
        return SEED;
    };
    let parsed = match given.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => given.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("HIVE_FUZZ_SEED={given:?} is not a number"))
}

/// Each thread's own seed, derived from the base seed.
fn thread_seed(base: u64, thread: usize) -> u64 {
    base ^ (thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `expected` and `actual` as multisets: what is missing and what is extra, a few of each.
fn multiset_difference(expected: &[String], actual: &[String]) -> Option<String> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in expected {
        *counts.entry(line).or_default() += 1;
    }
    for line in actual {
        *counts.entry(line).or_default() -= 1;
    }
    let cut = |s: &str| s.chars().take(200).collect::<String>();
    let missing: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, _)| cut(s))
        .collect();
    let extra: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(s, _)| cut(s))
        .collect();
    (!missing.is_empty() || !extra.is_empty()).then(|| {
        format!(
            "{} missing, e.g. {:?}; {} extra, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)],
            extra.len(),
            &extra[..extra.len().min(5)]
        )
    })
}

/// Checks that every line of a log starts with a timestamp and that no control character but the
/// line breaks made it in: no text from a request forged or overwrote a line.
fn check_log(who: &str, log: &str) {
    for line in log.lines() {
        let b = line.as_bytes();
        let stamped = b.len() > 11
            && line.starts_with("20")
            && [2, 3, 5, 6, 8, 9].iter().all(|&i| b[i].is_ascii_digit())
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T';
        assert!(
            stamped && !line.starts_with(FORGED_STAMP),
            "seed {:#x}: {who} log has a line that is not its own: {line:?}",
            base_seed()
        );
        assert!(
            !line.contains("[ERROR]"),
            "seed {:#x}: {who} logged an error: {line:?}",
            base_seed()
        );
    }
    if let Some(c) = log.chars().find(|&c| c.is_control() && c != '\n') {
        panic!(
            "seed {:#x}: {who} log holds the control character {c:?}",
            base_seed()
        );
    }
}

#[test]
fn ten_thousand_random_requests_are_answered_safely() {
    let started = Instant::now();
    let seed = base_seed();
    // The queen's heartbeat never runs during the test (every 600 s), so the registry stays exact:
    // nothing is removed behind the test's back, and the drone, told that interval, never
    // registers again. Valid registrations may name only the addresses in `pool`: three live fake
    // drones that answer 200 to everything, two dead loopback ports, the drone and the queen
    // herself. So a submit may land on a fake drone (its answer names which), or fail over from a
    // dead port or from the queen (who answers /do_task with 400) to a live drone; either way it
    // is quick and a 200, as a live drone is always registered and available.
    let queen = Larve::queen(&["--heartbeat-interval", "600"]);
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let fakes: Vec<FakePeer> = (0..3)
        .map(|_| FakePeer::answering(200, "application/json", "{}"))
        .collect();
    let mut pool: Vec<String> = fakes.iter().map(|f| f.addr.clone()).collect();
    pool.extend((0..2).map(|_| format!("127.0.0.1:{}", free_port().expect("a free port"))));
    pool.extend([drone.addr.clone(), queen.addr.clone()]);

    let failed = AtomicBool::new(false);
    let targets = Targets {
        queen: &queen.addr,
        drone: &drone.addr,
        pool: &pool,
        failed: &failed,
    };
    let mut tally = Tally::default();
    thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let targets = &targets;
                let seed = thread_seed(seed, t);
                thread::Builder::new()
                    .name(format!("fuzz-{t}"))
                    .spawn_scoped(scope, move || fuzz(seed, t, REQUESTS / THREADS, targets))
                    .expect("a client thread")
            })
            .collect();
        for thread in threads {
            match thread.join() {
                Ok(part) => tally.add(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    let fuzzed = started.elapsed();

    // Both larves are alive and serving.
    assert_eq!(get(&queen.url("/healthz")).0, 200, "seed {seed:#x}: queen");
    assert_eq!(get(&drone.url("/healthz")).0, 200, "seed {seed:#x}: drone");

    // The registry holds the drone and what was validly registered, nothing else.
    let (status, drones) = get(&queen.url("/drones"));
    assert_eq!(status, 200);
    let listed: BTreeSet<String> = drones
        .as_array()
        .expect("a drone list")
        .iter()
        .map(|d| d["address"].as_str().expect("an address").to_string())
        .collect();
    let mut wanted = tally.registered.clone();
    wanted.insert(drone.addr.clone());
    assert_eq!(listed, wanted, "seed {seed:#x}: the registry");

    // Every placed task went to a live drone, and each fake drone got exactly the ones named it.
    let names = drone_names(&queen);
    let name_of = |addr: &str| names[addr].as_str().expect("a name").to_string();
    let drone_name = name_of(&drone.addr);
    for fake in &fakes {
        let placed = tally
            .submitted
            .iter()
            .filter(|(name, _)| names.get(&fake.addr).is_some_and(|n| n == name))
            .count();
        let taken = fake.hits().iter().filter(|h| *h == "POST /do_task").count();
        assert_eq!(placed, taken, "seed {seed:#x}: tasks on fake {}", fake.addr);
    }
    let live: BTreeSet<String> = fakes
        .iter()
        .filter(|f| names.contains_key(&f.addr))
        .map(|f| name_of(&f.addr))
        .chain([drone_name.clone()])
        .collect();
    for (name, text) in &tally.submitted {
        assert!(
            live.contains(name),
            "seed {seed:#x}: task {text:?} placed on {name}, not a live drone"
        );
    }

    // The drone printed exactly the texts it was validly given, one escaped line each.
    let mut expected: Vec<String> = tally.printed.iter().map(|t| one_line(t)).collect();
    expected.extend(
        tally
            .submitted
            .iter()
            .filter(|(name, _)| *name == drone_name)
            .map(|(_, text)| one_line(text)),
    );
    let printed = eventually(SOON, "the drone to print every task", || {
        let out = drone.stdout();
        let lines: Vec<String> = out.split_terminator('\n').map(String::from).collect();
        (lines.len() >= expected.len()).then_some(lines)
    });
    if let Some(difference) = multiset_difference(&expected, &printed) {
        panic!("seed {seed:#x}: the drone's stdout differs: {difference}");
    }

    // No text forged a log line, though some tried: they show up escaped inside real lines.
    let queen_log = queen.stderr();
    check_log("the queen's", &queen_log);
    check_log("the drone's", &drone.stderr());
    assert!(
        queen_log.contains(FORGED_STAMP) && printed.iter().any(|l| l.contains(FORGED_STAMP)),
        "seed {seed:#x}: no forgery was tried"
    );

    let total: usize = tally.statuses.values().sum();
    assert_eq!(total, REQUESTS);
    eprintln!(
        "fuzz: {total} requests in {fuzzed:.2?} ({:.2?} with checks) over {} connections, \
         seed {seed:#x}; statuses {:?}; {} tasks printed, {} placed on fakes, {} registrations",
        started.elapsed(),
        tally.connections,
        tally.statuses,
        expected.len(),
        tally
            .submitted
            .iter()
            .filter(|(name, _)| *name != drone_name)
            .count(),
        tally.registered.len(),
    );
    for status in [200, 400, 404, 405, 413] {
        assert!(
            tally.statuses.get(&status).is_some_and(|&n| n > 0),
            "seed {seed:#x}: no {status} among {:?}",
            tally.statuses
        );
    }
}
