//! Every connection gets an answer and nothing is left behind: an honest oversized body is read and
//! refused, a body that never comes costs no descriptor, and a burst of new connections is served
//! at once rather than after other connections close.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits until `pid` has at most `baseline` descriptors open again: at once, well before the 10 s
/// socket timeout would release them anyway.
fn descriptors_back_to(pid: u32, baseline: usize) {
    eventually(
        Duration::from_secs(2),
        "the descriptors to be released",
        || (open_descriptors(pid).expect("its descriptors") <= baseline).then_some(()),
    );
}

/// Reads one whole answer from `stream` and returns its status line.
fn status_line(stream: &mut TcpStream) -> String {
    read_response(stream, Instant::now() + SOON)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
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
    // Like Python's requests and most clients: the whole body first, then read the answer.
    stream
        .write_all(&body)
        .expect("the queen reads the whole body");
    assert_eq!(status_line(&mut stream), "HTTP/1.1 413 Payload Too Large");
    // It was read to its end, so the connection can carry another request.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let next = status_line(&mut stream);
    assert!(next.starts_with("HTTP/1.1 200"), "{next:?}");
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
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    descriptors_back_to(queen.pid(), baseline);
}

#[test]
fn bodies_that_never_come_are_answered_and_keep_no_descriptor() {
    let queen = Larve::fast_queen();
    let baseline = open_descriptors(queen.pid()).expect("the queen's descriptors");
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
    descriptors_back_to(queen.pid(), baseline);
    assert_eq!(metrics(&queen)["hive_parked_connections_total"], 20.0);
    assert_eq!(get(&queen.url("/healthz")).0, 200);
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
    // Without the watchdog a stalled connection waits for the 10 s socket timeout of another.
    assert!(
        slowest < Duration::from_secs(3),
        "the slowest first answer took {slowest:?}"
    );
}

#[test]
fn past_1024_requests_that_keep_a_thread_the_larve_exits_to_be_restarted() {
    let mut queen = Larve::fast_queen();
    for _ in 0..1024 {
        let mut stream = TcpStream::connect(&queen.addr).expect("connect");
        stream.set_read_timeout(Some(SOON)).unwrap();
        let _ = stream.write_all(
            b"POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n",
        );
        assert_eq!(status_line(&mut stream), "HTTP/1.1 413 Payload Too Large");
    }
    let status = queen.wait_exit(SOON).expect("the larve exits");
    assert_eq!(status.code(), Some(1));
    let log = queen.stderr();
    assert!(log.contains("1024 requests declaring bodies"), "{log}");
    assert!(
        log.contains("exiting so that a restart reclaims them"),
        "{log}"
    );
}
