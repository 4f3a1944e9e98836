//! Every connection gets an answer and nothing is left behind: an oversized body is refused
//! without being read (yet a client that sends it whole still sees the 413), a body that never
//! comes costs no descriptor, and a burst of new connections is served at once rather than after
//! other connections close.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits until `pid` has at most `baseline` descriptors open again: at once, well before the 10 s
/// head deadline would release them anyway.
fn descriptors_back_to(pid: u32, baseline: usize) {
    eventually(
        Duration::from_secs(2),
        "the descriptors to be released",
        || (open_descriptors(pid).expect("its descriptors") <= baseline).then_some(()),
    );
}

#[test]
fn a_client_that_sends_a_whole_8_mib_body_gets_its_413() {
    let queen = Larve::fast_queen();
    let baseline = open_descriptors(queen.pid()).expect("the queen's descriptors");
    let body = vec![b' '; 8 * 1024 * 1024];
    let mut stream = TcpStream::connect(&queen.addr).expect("connect");
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream.set_write_timeout(Some(SOON)).unwrap();
    let head = format!(
        "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Like Python's requests and most clients: the whole body first, then read the answer. The
    // larve throws away what it receives after its 413 for a moment, so the write does not fail.
    stream
        .write_all(&body)
        .expect("the larve lets the body arrive");
    let answer = read_response(&mut stream, Instant::now() + SOON);
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close"), "{answer}");
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0, "then it closes");
    drop(stream);
    descriptors_back_to(queen.pid(), baseline);
}

#[test]
fn a_client_waiting_for_100_continue_gets_its_413_at_once() {
    let queen = Larve::fast_queen();
    let baseline = open_descriptors(queen.pid()).expect("the queen's descriptors");
    let asked = Instant::now();
    // What curl sends for a large file: it waits for 100 Continue before the body.
    let answer = exchange(
        &queen.addr,
        b"POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\nExpect: 100-continue\r\n\r\n",
        SOON,
    )
    .expect("the request sent");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    descriptors_back_to(queen.pid(), baseline);
}

#[test]
fn a_client_waiting_for_100_continue_within_the_limit_is_told_to_go_on() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let mut stream = TcpStream::connect(&queen.addr).expect("connect");
    stream.set_read_timeout(Some(SOON)).unwrap();
    let body = br#"{"text": "after continue"}"#;
    let head = format!(
        "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).unwrap();
    let answer = read_response(&mut stream, Instant::now() + SOON);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    eventually(SOON, "the task printed", || {
        (drone.stdout() == "after continue\n").then_some(())
    });
}

#[test]
fn bodies_that_never_come_are_answered_and_keep_no_descriptor() {
    let queen = Larve::fast_queen();
    let pid = queen.pid();
    let (baseline_threads, descriptors) = (
        threads(pid).expect("its threads"),
        open_descriptors(pid).expect("its descriptors"),
    );
    for _ in 0..20 {
        // Declares 100 GB, sends a few bytes, reads the answer and goes.
        let answer = exchange(
            &queen.addr,
            b"POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n{\"text\"",
            SOON,
        )
        .expect("the request sent");
        assert!(answer.contains("413 Payload Too Large"), "{answer}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    descriptors_back_to(pid, descriptors);
    assert_eq!(metrics(&queen)["hive_front_bodies_refused_total"], 20.0);
    assert_eq!(get(&queen.url("/healthz")).0, 200);
    // The threads that served them go once idle for a few seconds: nothing is kept for good.
    eventually(Duration::from_secs(15), "the threads to go", || {
        (threads(pid).expect("its threads") <= baseline_threads + 1).then_some(())
    });
}

#[test]
fn a_path_the_role_names_takes_a_larger_body() {
    let queen = Larve::fast_queen();
    let body = format!("{{\"text\": \"{}\"}}", "x".repeat(100 * 1024));
    let (status, answer) = post(&queen.url("/submit_task"), &body);
    assert_eq!(status, 413, "{answer}");
    // A queen takes a drone's reports up to 1 MiB: a registered drone's 100 KiB is read (and,
    // being no reports, refused as such).
    let (status, registered) = register(&queen, "127.0.0.1:9");
    assert_eq!(status, 200, "{registered}");
    let credential = registered["credential"].as_str().expect("a credential");
    let (status, answer) = post_as(&queen.url("/reports"), &body, Some(credential));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not a drone's reports"),
        "{answer}"
    );
}

/// Connects to `addr`, asks for `/healthz` and waits for the first byte of the answer. Returns the
/// open connection and how long the answer took from the connect, or `None` if none came.
fn first_answer(addr: &str) -> Option<(TcpStream, Duration)> {
    let asked = Instant::now();
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(SOON)).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut first = [0u8; 1];
    (stream.read(&mut first).ok()? == 1).then(|| (stream, asked.elapsed()))
}

#[test]
fn a_burst_of_new_connections_is_served_without_waiting_for_others_to_close() {
    const CONNECTIONS: usize = 256;
    let queen = Larve::fast_queen();
    let start = Barrier::new(CONNECTIONS);
    let all_answered = Barrier::new(CONNECTIONS);
    let slowest = thread::scope(|scope| {
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (start, all_answered, addr) = (&start, &all_answered, &queen.addr);
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(scope, move || {
                        start.wait();
                        let answer = first_answer(addr);
                        // Every connection stays open until all have their answer: a connection
                        // left without a thread cannot count on another one closing.
                        all_answered.wait();
                        answer.map(|(_, took)| took)
                    })
                    .expect("a client thread")
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a client"))
            .map(|answer| answer.expect("every connection gets an answer"))
            .max()
            .expect("some clients")
    });
    // tiny_http's pool strands a connection in a burst (the front never gives it one).
    assert!(
        slowest < Duration::from_secs(3),
        "the slowest first answer took {slowest:?}"
    );
}
