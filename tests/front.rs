//! The front door under attack: what an unauthenticated client can do to a larve, and what it
//! cannot. The larve survives, its memory stays bounded, a slow or greedy client holds only its
//! own connections, and everyone else is answered meanwhile.
//!
//! The attackers connect from other loopback addresses (127.0.0.2 and up), as clients on other
//! machines would; the larve's own checks come from 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Held by the tests that flood the larve, so one flood does not slow another test's larve.
static MACHINE: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// How long a check of the larve may take while it is under attack: far more than it does (the
/// benchmark measures that), far less than a stalled server would.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Asks `/healthz` on a new connection and returns how long the answer took.
fn healthz_took(larve: &Larve) -> Duration {
    let asked = Instant::now();
    assert_eq!(get(&larve.url("/healthz")).0, 200);
    asked.elapsed()
}

/// Waits until `pid` runs no more threads and holds no more descriptors than at `baseline`.
fn back_to(pid: u32, baseline: Usage, within: Duration) {
    eventually(
        within,
        "threads and descriptors back to their baseline",
        || {
            Usage::of(pid)
                .expect("its threads and descriptors")
                .within(&baseline)
                .then_some(())
        },
    );
}

#[test]
fn thousands_of_huge_declared_bodies_from_one_peer_kill_nothing() {
    let _alone = MACHINE.lock();
    let queen = Larve::fast_queen();
    let pid = queen.pid();
    assert!(healthz_took(&queen) < PROMPTLY);
    let baseline = Usage::of(pid).expect("its threads and descriptors");
    let request = b"POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n";
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (refused_bodies, refused_connections, slowest) = thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                slowest = slowest.max(healthz_took(&queen));
            }
            slowest
        });
        let attackers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    // Every connection is held open, answered or not, until the attack ends.
                    let mut held = Vec::new();
                    let (mut bodies, mut connections) = (0, 0);
                    for _ in 0..500 {
                        let Ok(mut stream) = connect_from("127.0.0.2", &queen.addr) else {
                            connections += 1;
                            continue;
                        };
                        stream.set_read_timeout(Some(SOON)).unwrap();
                        let _ = stream.write_all(request);
                        let answer = read_response(&mut stream, Instant::now() + SOON);
                        if answer.starts_with("HTTP/1.1 413") {
                            assert!(answer.contains("Connection: close"), "{answer}");
                            bodies += 1;
                        } else {
                            // Over the per-peer limit: answered 503 or closed at once.
                            assert!(
                                answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
                                "{answer:?}"
                            );
                            connections += 1;
                        }
                        held.push(stream);
                    }
                    (bodies, connections)
                })
            })
            .collect();
        let counts: Vec<(usize, usize)> =
            attackers.into_iter().map(|a| a.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (
            counts.iter().map(|c| c.0).sum::<usize>(),
            counts.iter().map(|c| c.1).sum::<usize>(),
            watcher.join().unwrap(),
        )
    });
    assert_eq!(refused_bodies + refused_connections, 2000);
    assert!(
        refused_bodies >= 512,
        "{refused_bodies} bodies refused with 413"
    );
    assert!(
        slowest < PROMPTLY,
        "a /healthz took {slowest:?} during the attack"
    );
    // The attacker has left (every stream above is dropped): the larve is as it was.
    back_to(pid, baseline, Duration::from_secs(15));
    let counted = metrics(&queen);
    assert_eq!(
        counted["hive_front_bodies_refused_total"],
        refused_bodies as f64
    );
    assert_eq!(
        counted["hive_http_requests_total{endpoint=\"/submit_task\",status=\"413\"}"],
        refused_bodies as f64
    );
    assert_eq!(
        counted["hive_front_connections_open"], 1.0,
        "this /metrics call"
    );
}

#[test]
fn endless_header_lines_cost_a_bounded_amount_of_memory() {
    let _alone = MACHINE.lock();
    let queen = Larve::fast_queen();
    let pid = queen.pid();
    let baseline_kib = rss_kib(pid).expect("its memory");
    let chunk = vec![b'a'; 64 * 1024];
    let senders: Vec<_> = (0..200)
        .map(|i| {
            let (addr, chunk) = (queen.addr.clone(), chunk.clone());
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let source = format!("127.0.0.{}", 2 + i % 4);
                    let mut stream = connect_from(&source, &addr).expect("connect");
                    stream.set_write_timeout(Some(SOON)).unwrap();
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nX-Endless: ")
                        .unwrap();
                    // Up to 8 MiB, unless the larve closes the connection first.
                    let mut sent = 0;
                    let closed = (0..128).any(|_| {
                        let wrote = stream.write_all(&chunk);
                        sent += chunk.len();
                        wrote.is_err()
                    });
                    (closed, sent, stream)
                })
                .expect("a sender")
        })
        .collect();
    let peak_kib = (0..20)
        .map(|_| {
            thread::sleep(Duration::from_millis(50));
            rss_kib(pid).expect("its memory")
        })
        .max()
        .unwrap();
    assert!(healthz_took(&queen) < PROMPTLY);
    let results: Vec<(bool, usize, TcpStream)> =
        senders.into_iter().map(|s| s.join().unwrap()).collect();
    let most_sent = results.iter().map(|r| r.1).max().unwrap();
    assert!(
        results.iter().all(|(closed, _, _)| *closed),
        "the larve closes every such connection (one sent {most_sent} bytes)"
    );
    let grown_mib = peak_kib.saturating_sub(baseline_kib) / 1024;
    assert!(grown_mib <= 64, "RSS grew by {grown_mib} MiB");
    drop(results);
    assert_eq!(metrics(&queen)["hive_front_heads_too_large_total"], 200.0);
}

#[test]
fn a_head_over_32_kib_is_answered_431_in_json() {
    let queen = Larve::fast_queen();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(vec![b'a'; 40 * 1024]);
    request.extend_from_slice(b"\r\n\r\n");
    let answer = raw(&queen.addr, &request, SOON);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert!(answer.contains("larger than 32768 bytes"), "{answer}");
    // Just under the limit is fine.
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(vec![b'a'; 30 * 1024]);
    request.extend_from_slice(b"\r\n\r\n");
    assert!(raw(&queen.addr, &request, SOON).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_thousand_silent_connections_do_not_keep_anyone_else_waiting() {
    let _alone = MACHINE.lock();
    let queen = Larve::fast_queen();
    let silent: Vec<TcpStream> = (0..1000)
        .map(|i| connect_from(&format!("127.0.0.{}", 2 + i % 4), &queen.addr).expect("connect"))
        .collect();
    eventually(SOON, "the larve to hold every silent connection", || {
        let counted = metrics(&queen);
        (counted["hive_front_connections_open"] >= 1000.0).then_some(())
    });
    for _ in 0..20 {
        assert!(healthz_took(&queen) < PROMPTLY);
    }
    assert_eq!(submit(&queen, "nobody to take it").0, 503);
    drop(silent);
}

#[test]
fn a_silent_connection_is_closed_when_no_head_comes_in_time() {
    let queen = Larve::fast_queen();
    let mut silent = TcpStream::connect(&queen.addr).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let opened = Instant::now();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    let took = opened.elapsed();
    assert!(rest.is_empty(), "nothing was asked, nothing answered");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}"
    );
}

#[test]
fn a_head_that_never_ends_is_answered_408() {
    let queen = Larve::fast_queen();
    let started = Instant::now();
    let answer = raw(
        &queen.addr,
        b"GET /healthz HTTP/1.1\r\nHost:",
        Duration::from_secs(20),
    );
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "answered after {took:?}"
    );
}

#[test]
fn each_peer_gets_its_share_of_connections() {
    let queen = Larve::queen(&["--max-connections-per-peer", "5", "--max-connections", "8"]);
    // The accept loop admits connections in the order they come, so by the time it reaches one,
    // every connection opened before it is counted.
    let refused = |source: &str| {
        let mut stream = connect_from(source, &queen.addr).expect("the kernel accepts it");
        stream.set_read_timeout(Some(SOON)).unwrap();
        read_response(&mut stream, Instant::now() + SOON)
    };
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| connect_from("127.0.0.2", &queen.addr).expect("connect"))
        .collect();
    let answer = refused("127.0.0.2");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("as many connections as one address may"),
        "{answer}"
    );
    held.extend((0..3).map(|_| connect_from("127.0.0.3", &queen.addr).expect("connect")));
    let answer = refused("127.0.0.4");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("as many connections as it takes"),
        "{answer}"
    );
    drop(held);
    eventually(SOON, "room for another connection", || {
        (get(&queen.url("/healthz")).0 == 200).then_some(())
    });
    let counted = eventually(SOON, "every place given back", || {
        let counted = metrics(&queen);
        (counted["hive_front_connections_open"] == 1.0).then_some(counted)
    });
    assert_eq!(
        counted["hive_front_connections_refused_total{limit=\"peer\"}"],
        1.0
    );
    assert!(counted["hive_front_connections_refused_total{limit=\"total\"}"] >= 1.0);
}

#[test]
fn malformed_requests_get_a_json_error_and_the_connection_closes() {
    let queen = Larve::fast_queen();
    for (request, status, needle) in [
        (&b"GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n"[..], 400, "folded"),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, "without a colon"),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400, "request line"),
        (b"GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n", 400, "printable ASCII"),
        (
            b"POST /submit_task HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            400,
            "different values",
        ),
        (
            b"POST /submit_task HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            400,
            "ambiguous",
        ),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "HTTP/1.1"),
        (
            b"POST /submit_task HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
            417,
            "100-continue",
        ),
    ] {
        let answer = raw(&queen.addr, request, SOON);
        let shown = String::from_utf8_lossy(request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{shown:?}: {answer}"
        );
        assert!(answer.contains("Connection: close"), "{shown:?}: {answer}");
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{shown:?}: {error}");
    }
    assert_eq!(get(&queen.url("/healthz")).0, 200);
}

#[test]
fn a_chunked_body_is_read_and_a_pipelined_request_after_it_served() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let mut stream = TcpStream::connect(&queen.addr).expect("connect");
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream
        .write_all(
            b"POST /submit_task HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              7\r\n{\"text\"\r\n9;ext=1\r\n: \"chunk\"\r\n1\r\n}\r\n0\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
    // Both answers may arrive in one read: each is taken from what was read, not from a read.
    let mut answers = Answers::new(&mut stream);
    let first = answers.next(Instant::now() + SOON);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let second = answers.next(Instant::now() + SOON);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("Status.READY"), "{second}");
    eventually(SOON, "the task printed", || {
        (drone.stdout() == "chunk\n").then_some(())
    });
}

#[test]
fn the_accept_loop_outlives_running_out_of_descriptors() {
    let _alone = MACHINE.lock();
    // A low descriptor limit makes accept() fail with EMFILE during the flood.
    let launch = Launch {
        max_open_files: Some(256),
        ..Launch::default()
    };
    let queen = Larve::start_with(&[&["--queen", "--port", "0"][..], FAST].concat(), &launch);
    let addr: std::net::SocketAddr = queen.addr.parse().unwrap();
    // The flood's connections stay open until the queen has run out: closed sooner, each would
    // give its descriptor back as fast as the queen takes the next.
    let idle: Vec<TcpStream> = thread::scope(|scope| {
        let flooders: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    (0..50)
                        .filter_map(|_| {
                            TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        flooders
            .into_iter()
            .flat_map(|f| f.join().unwrap())
            .collect()
    });
    assert!(
        idle.len() > 256,
        "the flood opened {} connections",
        idle.len()
    );
    queen.log_with(&["accept() failed (Too many open files"]);
    drop(idle);
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], Duration::from_secs(30));
    assert_eq!(submit(&queen, "still here").0, 200);
    queen.log_with(&["accepting connections again"]);
}

#[test]
fn a_write_error_mid_flood_is_not_a_crash() {
    let queen = Larve::fast_queen();
    // Clients that send a request and reset the connection before the answer.
    for _ in 0..200 {
        let stream = TcpStream::connect(&queen.addr).expect("connect");
        let _ = (&stream).write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }
    assert_eq!(get(&queen.url("/healthz")).0, 200);
    let log = queen.stderr();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn long_polls_whose_clients_left_give_their_places_back_within_a_second() {
    let queen = Larve::fast_queen();
    // No drone runs commands: the task stays pending, and each long poll on it waits its minute.
    let (status, task) = post(&queen.url("/tasks"), r#"{"command": ["true"]}"#);
    assert_eq!(status, 202, "{task}");
    let poll = format!(
        "GET /tasks/{}?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n",
        task["id"].as_str().expect("an id")
    );
    let head_end = "Transfer-Encoding: chunked\r\n\r\n";
    // As many as the long polls' old cap, where each held a handler for its whole wait.
    let polls: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = TcpStream::connect(&queen.addr).expect("connect");
            stream.set_read_timeout(Some(SOON)).unwrap();
            stream.write_all(poll.as_bytes()).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(head_end.as_bytes()) {
                assert_eq!(stream.read(&mut byte).expect("the answer's head"), 1);
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200 OK"));
            stream
        })
        .collect();
    assert_eq!(metrics(&queen)["hive_front_held_requests"], 64.0);
    let left = Instant::now();
    drop(polls);
    eventually(SOON, "every long poll's place given back", || {
        (metrics(&queen)["hive_front_held_requests"] == 0.0).then_some(())
    });
    let took = left.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "places given back after {took:?}"
    );
    // A poll of a task that has ended is answered at once.
    let url = queen.url(&format!("/tasks/{}", task["id"].as_str().unwrap()));
    assert_eq!(call("DELETE", &url, None, None, &[]).0, 200);
    let asked = Instant::now();
    let (status, task) = get(&format!("{url}?wait=60"));
    assert_eq!((status, task["state"].as_str()), (200, Some("cancelled")));
    assert!(asked.elapsed() < PROMPTLY);
}
