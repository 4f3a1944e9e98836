//! What every integration test needs: real `larve` processes on free loopback ports, cleaned up by a
//! `Drop` guard even when an assertion fails; plain HTTP calls; and polling with a deadline.
//!
//! What the benchmark needs as well (process guards, etcd, raw HTTP, `/proc`, free ports, waits)
//! is in `hive-support` (`tests/support`), re-exported here. This module adds what only the tests
//! know: the larve Cargo built for them, their fast heartbeat settings, calls that panic on what a
//! test must never see, and stand-in peers.

#![allow(dead_code, unused_imports)] // Each test binary uses its own part of this module.

pub mod etcd;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use hive_support::larve::Launcher;
use hive_support::workdir::WorkDir;
use parking_lot::Mutex;
use serde_json::Value;

pub use hive_support::larve::Launch;
pub use hive_support::ports::{consecutive_free_ports, free_port, free_ports};
pub use hive_support::procfs::{Usage, cpu_ticks, open_descriptors, rss_kib, threads};
pub use hive_support::rawhttp::{Answers, exchange, read_response};
pub use hive_support::wait::eventually;

/// The larve Cargo built for these tests.
pub const LARVE: &str = env!("CARGO_BIN_EXE_larve");

/// Heartbeat settings that keep tests fast: a dead drone is gone within
/// 0.2 + 2 × (0.2 + 0.05) = 0.7 s.
pub const FAST: &[&str] = &[
    "--heartbeat-interval",
    "0.2",
    "--heartbeat-attempts",
    "2",
    "--heartbeat-timeout",
    "0.2",
    "--heartbeat-retry-delay",
    "0.05",
];

/// The longest a dead drone may stay registered under [`FAST`], plus room for a loaded machine.
pub const FAST_REMOVAL: Duration = Duration::from_millis(700 + 1500);

/// How long a test waits for something that should happen at once.
pub const SOON: Duration = Duration::from_secs(10);

/// A running [`LARVE`], with a directory of its own for its output; everything else it offers is
/// `hive_support`'s larve, through `Deref`. Dropping it kills the process; if the test is failing,
/// its log is printed and its directory kept.
pub struct Larve {
    /// Dropped before `dir`, so the process is gone before its directory.
    larve: hive_support::larve::Larve,
    /// `127.0.0.1:PORT` it listens on; empty for a larve spawned without waiting.
    pub addr: String,
    dir: WorkDir,
    args: Vec<String>,
}

impl Larve {
    /// Starts a queen with `extra` flags, on a free port unless they name one.
    pub fn queen(extra: &[&str]) -> Larve {
        let mut args = vec!["--queen"];
        if !extra.contains(&"--port") {
            args.extend(["--port", "0"]);
        }
        args.extend_from_slice(extra);
        Larve::start(&args)
    }

    /// Starts a queen with [`FAST`] heartbeat settings.
    pub fn fast_queen() -> Larve {
        Larve::queen(FAST)
    }

    /// Starts a drone on a free port that registers with `queen` (a `host:port`).
    pub fn drone(queen: &str) -> Larve {
        Larve::start(&["--queen-host", queen, "--port", "0"])
    }

    /// Starts `larve` with `args` and waits until it logs the address it listens on.
    pub fn start(args: &[&str]) -> Larve {
        Larve::start_with(args, &Launch::default())
    }

    /// [`Larve::start`] with environment variables and limits.
    pub fn start_with(args: &[&str], launch: &Launch) -> Larve {
        Larve::launch(args, |launcher| launcher.start("larve", args, launch))
    }

    /// Starts `larve` with `args` without waiting for anything (for processes expected to exit).
    pub fn spawn(args: &[&str]) -> Larve {
        Larve::spawn_with(args, &Launch::default())
    }

    /// [`Larve::spawn`] with environment variables and limits.
    pub fn spawn_with(args: &[&str], launch: &Launch) -> Larve {
        Larve::launch(args, |launcher| launcher.spawn("larve", args, launch))
    }

    /// Launches [`LARVE`] the way `how` says, into a new directory.
    fn launch(
        args: &[&str],
        how: impl FnOnce(&Launcher) -> hive_support::Result<hive_support::larve::Larve>,
    ) -> Larve {
        let dir = WorkDir::create("hive-test").expect("a temp dir");
        let larve = how(&Launcher::new(LARVE.into(), dir.path()))
            .unwrap_or_else(|why| panic!("larve {args:?}: {why}"));
        Larve {
            addr: larve.address(),
            larve,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of `path` on a larve serving HTTPS.
    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Its log once it holds every one of `needles`. A larve writes its log on a thread of its
    /// own, a moment after the change a line reports, so a test that saw the change waits here.
    pub fn log_with(&self, needles: &[&str]) -> String {
        eventually(SOON, &format!("{needles:?} in the log"), || {
            let log = self.stderr();
            needles.iter().all(|n| log.contains(n)).then_some(log)
        })
    }

    /// SIGSTOP: the process keeps its socket (connections are accepted by the kernel) but never answers.
    pub fn freeze(&self) {
        self.larve.freeze().expect("kill -STOP");
    }

    /// SIGCONT after [`Larve::freeze`].
    pub fn thaw(&self) {
        self.larve.thaw().expect("kill -CONT");
    }
}

impl Deref for Larve {
    type Target = hive_support::larve::Larve;

    fn deref(&self) -> &Self::Target {
        &self.larve
    }
}

impl DerefMut for Larve {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.larve
    }
}

impl Drop for Larve {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- larve {:?} stderr ---\n{}", self.args, self.stderr());
            self.dir.keep();
        }
    }
}

/// A drone whose work root is in a test's scratch directory. Dropped (before the directory), it
/// is killed and its reaper waited for, so that the reaper ends its attempts and removes its
/// cgroups before the directory that names them goes, whether the test passed or not.
pub struct RootedDrone(pub Larve);

impl Drop for RootedDrone {
    fn drop(&mut self) {
        let reaper = find_reaper(self.0.pid());
        self.0.kill();
        let deadline = std::time::Instant::now() + SOON;
        while reaper.is_some_and(runs) && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl std::ops::Deref for RootedDrone {
    type Target = Larve;

    fn deref(&self) -> &Larve {
        &self.0
    }
}

impl std::ops::DerefMut for RootedDrone {
    fn deref_mut(&mut self) -> &mut Larve {
        &mut self.0
    }
}

/// The reaper of `drone`, if it has one now.
pub fn find_reaper(drone: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let is_reap = cmdline.split(|b| *b == 0).nth(1) == Some(b"reap".as_slice());
            (parent == drone && is_reap).then_some(pid)
        })
}

/// Whether process `pid` runs (a zombie does not: it runs no code and holds nothing).
pub fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            state.flatten().is_some_and(|s| s != 'Z')
        })
        .unwrap_or(false)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = result.expect("an HTTP answer");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("a body");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {body:?}"));
    (status, json)
}

/// `GET url` → status and JSON body.
pub fn get(url: &str) -> (u16, Value) {
    get_as(url, None)
}

/// `GET url` sending `Authorization: Bearer <token>` when a token is given.
pub fn get_as(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    reply(request.call())
}

/// `POST url` with a body sent as `application/json` → status and JSON body.
pub fn post(url: &str, body: &str) -> (u16, Value) {
    post_as(url, body, None)
}

/// [`post`] sending `Authorization: Bearer <token>` when a token is given.
pub fn post_as(url: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent().post(url).header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    reply(request.send(body))
}

/// `method url` with a JSON body (when given) and the token (when given) → status, the headers
/// asked for (`None` when absent), and the JSON body.
pub fn call(
    method: &str,
    url: &str,
    body: Option<&str>,
    token: Option<&str>,
    headers: &[&str],
) -> (u16, Vec<Option<String>>, Value) {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", "application/json");
    let request = match token {
        Some(token) => request.header("Authorization", format!("Bearer {token}")),
        None => request,
    };
    let request = request
        .body(body.unwrap_or_default().to_string())
        .expect("a request");
    let mut response = agent().run(request).expect("an HTTP answer");
    let status = response.status().as_u16();
    let found = headers
        .iter()
        .map(|name| {
            response
                .headers()
                .get(*name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        })
        .collect();
    let text = response.body_mut().read_to_string().expect("a body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, found, json)
}

/// `POST url` with `{"text": text}`.
pub fn submit(queen: &Larve, text: &str) -> (u16, Value) {
    post(
        &queen.url("/submit_task"),
        &serde_json::json!({ "text": text }).to_string(),
    )
}

/// Registers `address` with the queen by hand, as a drone would.
pub fn register(queen: &Larve, address: &str) -> (u16, Value) {
    post(
        &queen.url("/register"),
        &serde_json::json!({ "address": address }).to_string(),
    )
}

/// The queen's registry as `/healthz` shows it: address → name.
pub fn drone_names(queen: &Larve) -> serde_json::Map<String, Value> {
    let (status, health) = get(&queen.url("/healthz"));
    assert_eq!(status, 200);
    health["drones"]
        .as_object()
        .cloned()
        .expect("a drones object")
}

/// Waits until the queen lists exactly `addresses`.
pub fn wait_for_drones(queen: &Larve, addresses: &[&str], within: Duration) {
    let mut want: Vec<&str> = addresses.to_vec();
    want.sort();
    eventually(
        within,
        &format!("the queen to list exactly {want:?}"),
        || {
            let names = drone_names(queen);
            let have: Vec<&str> = names.keys().map(String::as_str).collect();
            (have == want).then_some(())
        },
    );
}

/// Sends `bytes` on a new connection to `addr` and returns the whole answer, or what came before
/// the connection ended or `within` passed (nothing if it could not connect).
pub fn raw(addr: &str, bytes: &[u8], within: Duration) -> String {
    exchange(addr, bytes, within).unwrap_or_default()
}

/// How a [`FakePeer`] answers a request line like `GET /healthz` (the query left out, as a Flask
/// route leaves it) and the request's content type (empty if none): status, content type, body.
pub type Answer = (u16, &'static str, String);

/// A request as a [`FakePeer`] read it.
pub struct PeerRequest {
    /// Like `GET /healthz`: the method and the path without its query.
    pub line: String,
    /// Empty if none.
    pub content_type: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// What a [`FakePeer`] calls for each request.
type Responder = dyn Fn(&PeerRequest) -> Answer + Send + Sync;

/// A stand-in peer on a free loopback port (a drone or queen that is not ours) that answers each
/// request by its request line, and records the request lines. Stops accepting when dropped.
pub struct FakePeer {
    pub addr: String,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakePeer {
    /// Answers every request the same way.
    pub fn answering(status: u16, content_type: &'static str, body: &'static str) -> FakePeer {
        FakePeer::new(move |_, _| (status, content_type, body.to_string()))
    }

    pub fn new(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> FakePeer {
        FakePeer::reading(move |request| answer(&request.line, &request.content_type))
    }

    /// A peer that answers each request from all of it: headers and body too.
    pub fn reading(answer: impl Fn(&PeerRequest) -> Answer + Send + Sync + 'static) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Responder> = Arc::new(answer);
        let (thread_hits, thread_stop) = (hits.clone(), stop.clone());
        thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (hits, answer) = (thread_hits.clone(), answer.clone());
                        thread::spawn(move || serve_peer(stream, answer.as_ref(), &hits));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakePeer { addr, hits, stop }
    }

    /// The request lines seen so far, like `GET /healthz`.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().clone()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_peer(stream: TcpStream, answer: &Responder, hits: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line
            .split_whitespace()
            .take(2)
            .map(|part| part.split_once('?').map_or(part, |(path, _)| path))
            .collect::<Vec<_>>()
            .join(" ");
        let mut request = PeerRequest {
            line: request_line,
            content_type: String::new(),
            authorization: None,
            body: Vec::new(),
        };
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim().to_string();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("content-type") {
                    request.content_type = value;
                } else if name.eq_ignore_ascii_case("authorization") {
                    request.authorization = Some(value);
                }
            }
        }
        request.body = vec![0; length];
        if reader.read_exact(&mut request.body).is_err() {
            return;
        }
        hits.lock().push(request.line.clone());
        let (status, reply_type, text) = answer(&request);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {reply_type}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A listener that never accepts: connections complete in its backlog and are never answered, which
/// is what a frozen drone looks like from the queen.
pub fn black_hole() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    (listener, addr)
}

/// A connection to `addr` from the loopback address `source` (127.0.0.2, say): what another
/// machine's client looks like to a larve's per-peer limit.
pub fn connect_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let from: std::net::SocketAddr = format!("{source}:0").parse().expect("a source address");
    socket.bind(&from.into())?;
    let to: std::net::SocketAddr = addr.parse().expect("an address");
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// `GET /metrics`, checked line by line against Prometheus' text format: every sample belongs to a
/// family announced by `# HELP` and `# TYPE`, its name and labels are well formed, and its value is a
/// number. Returns each sample (`name{labels}`, exactly as written) with its value.
pub fn metrics(larve: &Larve) -> std::collections::BTreeMap<String, f64> {
    metrics_as(larve, None)
}

/// [`metrics`] sending the cluster token when one is given.
pub fn metrics_as(larve: &Larve, token: Option<&str>) -> std::collections::BTreeMap<String, f64> {
    let mut request = agent().get(larve.url("/metrics"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("an HTTP answer");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().expect("a body");
    parse_prometheus(&text)
}

/// Every sample in Prometheus text, by series; panics on a line the format does not allow.
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: std::collections::HashMap<String, String> = Default::default();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(is_name(name) && !help.is_empty(), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            assert!(
                families
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "family {name} announced twice"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (key, quoted) = pair.split_once('=').expect("label=\"value\"");
                    assert!(is_name(key), "bad label name in {line:?}");
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "bad label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (families.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(
            families.contains_key(family),
            "sample {name} before its # TYPE line"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "sample {series} given twice"
        );
    }
    samples
}
