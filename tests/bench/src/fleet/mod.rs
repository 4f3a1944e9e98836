//! A simulated fleet: fake drones on loopback, so a queen can heartbeat a thousand of them (the
//! scale scenario) and queens can take a thousand registrations (several queens). Answering drones
//! speak just enough HTTP/1.1 to pass probes and take tasks; refusing drones are ports that were
//! bound and closed; never-answering drones are listeners that never accept. Dropping the
//! [`Fleet`] stops every thread it started.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use hive_support::wait;

use crate::{Result, progress};

/// Fake drones' threads: they parse a few header lines, so a small stack keeps thousands cheap.
const FAKE_STACK_BYTES: usize = 64 * 1024;

/// A fake drone's connection thread wakes this often to see whether the fleet is stopping.
const FAKE_READ_POLL: Duration = Duration::from_millis(200);

/// Most header lines a fake drone reads in one request, and the largest body it accepts.
const MAX_FAKE_HEADERS: usize = 64;
const MAX_FAKE_BODY_BYTES: usize = 64 * 1024;

/// Pause after a failed accept (out of descriptors), so the accept loop does not spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Limit for the connection that wakes a fake drone's accept loop at shutdown.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// How long stopping the fake fleet waits for its threads to end, and how often it looks.
const FLEET_STOP_TIMEOUT: Duration = Duration::from_secs(3);
const FLEET_STOP_POLL: Duration = Duration::from_millis(10);

/// What a fake drone answers: a larve drone's `/healthz` and `/do_task`.
const FAKE_HEALTH_BODY: &str = r#"{"status":"Status.READY","version":"0.0.1","mode":"Mode.DRONE"}"#;
const FAKE_TASK_BODY: &str = r#"{"result":"OK"}"#;
const FAKE_NOT_FOUND_BODY: &str = r#"{"error":"not found"}"#;

/// How many fake drones of each kind to simulate.
#[derive(Clone, Copy)]
pub struct FleetSize {
    pub good: usize,
    pub refusing: usize,
    pub silent: usize,
}

impl FleetSize {
    pub fn total(&self) -> usize {
        self.good + self.refusing + self.silent
    }
}

/// The fleet's addresses by kind. Answering drones keep connections alive and read Content-Length
/// bodies; never-answering drones are bound listeners that never accept, so the kernel completes
/// connections into their backlog and nothing ever replies.
pub struct Fleet {
    pub good: Vec<String>,
    pub refusing: Vec<String>,
    pub silent: Vec<String>,
    /// Held open, never accepted from.
    silent_listeners: Vec<TcpListener>,
    stop: Arc<AtomicBool>,
    live_threads: Arc<AtomicUsize>,
}

impl Fleet {
    /// Binds every fake drone and starts the answering ones.
    pub fn start(size: FleetSize) -> Result<Fleet> {
        let bind = || {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot bind a fake drone: {e}"))?;
            let address = listener
                .local_addr()
                .map_err(|e| format!("fake drone address: {e}"))?
                .to_string();
            Ok::<_, String>((listener, address))
        };
        // Built first, so the threads already started are stopped if a later step fails.
        let mut fleet = Fleet {
            good: Vec::new(),
            refusing: Vec::new(),
            silent: Vec::new(),
            silent_listeners: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            live_threads: Arc::new(AtomicUsize::new(0)),
        };
        for _ in 0..size.good {
            let (listener, address) = bind()?;
            let (stop, live) = (Arc::clone(&fleet.stop), Arc::clone(&fleet.live_threads));
            spawn_counted(&fleet.live_threads, move || {
                accept_loop(listener, stop, live)
            })
            .map_err(|e| format!("cannot start a fake drone: {e}"))?;
            fleet.good.push(address);
        }
        for _ in 0..size.silent {
            let (listener, address) = bind()?;
            fleet.silent_listeners.push(listener);
            fleet.silent.push(address);
        }
        // Bound together and closed last, so no port is handed out twice, and none of these freed
        // ports goes to another fake drone.
        let mut closing = Vec::new();
        for _ in 0..size.refusing {
            let (listener, address) = bind()?;
            closing.push(listener);
            fleet.refusing.push(address);
        }
        drop(closing);
        Ok(fleet)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.silent_listeners.clear();
        for address in &self.good {
            // A connection wakes the accept loop, which then sees the stop flag.
            if let Ok(address) = address.parse::<SocketAddr>() {
                let _ = TcpStream::connect_timeout(&address, WAKE_CONNECT_TIMEOUT);
            }
        }
        // A thread still running after the deadline is a fake drone's, harmless to leave.
        let _ = wait::until(
            FLEET_STOP_TIMEOUT,
            FLEET_STOP_POLL,
            "the fake fleet's threads",
            || (self.live_threads.load(Ordering::SeqCst) == 0).then_some(()),
        );
    }
}

/// Starts a fake-fleet thread, counted in `live` while it runs.
fn spawn_counted(live: &Arc<AtomicUsize>, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    live.fetch_add(1, Ordering::SeqCst);
    let counter = Arc::clone(live);
    let spawned = thread::Builder::new()
        .name("fake-drone".into())
        .stack_size(FAKE_STACK_BYTES)
        .spawn(move || {
            work();
            counter.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            live.fetch_sub(1, Ordering::SeqCst);
            Err(e)
        }
    }
}

/// An answering fake drone: a thread per connection, until the fleet stops.
fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, live: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            thread::sleep(ACCEPT_RETRY_PAUSE);
            continue;
        };
        let stopping = Arc::clone(&stop);
        if let Err(e) = spawn_counted(&live, move || {
            let _ = serve_fake(stream, &stopping);
        }) {
            progress(&format!("cannot start a fake drone connection thread: {e}"));
        }
    }
}

/// Answers requests on one kept-alive connection as a larve drone would, until the peer closes it,
/// it breaks, or the fleet stops.
fn serve_fake(stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(FAKE_READ_POLL))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if !read_line_until_stopped(&mut reader, &mut line, stop)? {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let request = (
            words.next().unwrap_or_default().to_string(),
            words.next().unwrap_or_default().to_string(),
        );
        let mut length = 0;
        let mut close = false;
        let mut ended = false;
        for _ in 0..MAX_FAKE_HEADERS {
            line.clear();
            if !read_line_until_stopped(&mut reader, &mut line, stop)? {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                ended = true;
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= MAX_FAKE_BODY_BYTES)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if !ended {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many headers",
            ));
        }
        let mut body = vec![0; length];
        if !read_exact_until_stopped(&mut reader, &mut body, stop)? {
            return Ok(());
        }
        // The query is ignored, as the tutorial's Flask drone ignores it (a queen probes
        // `/healthz?verbose`).
        let path = request
            .1
            .split_once('?')
            .map_or(request.1.as_str(), |(path, _)| path);
        let (status, answer) = match (request.0.as_str(), path) {
            ("GET", "/healthz") => ("200 OK", FAKE_HEALTH_BODY),
            ("POST", "/do_task") => ("200 OK", FAKE_TASK_BODY),
            _ => ("404 Not Found", FAKE_NOT_FOUND_BODY),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        writer.write_all(reply.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// A read that timed out (the socket's poll period passed with nothing to read).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends one line to `line`, waiting out read timeouts. False at end of stream or when stopping.
fn read_line_until_stopped(
    reader: &mut impl BufRead,
    line: &mut String,
    stop: &AtomicBool,
) -> io::Result<bool> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(e) if is_timeout(&e) && !stop.load(Ordering::Relaxed) => {}
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Fills `buf`, waiting out read timeouts. False at end of stream or when stopping.
fn read_exact_until_stopped(
    reader: &mut impl Read,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) && !stop.load(Ordering::Relaxed) => {}
            Err(e) if is_timeout(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
