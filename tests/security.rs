//! The cluster token, and a larve that survives slow and odd clients (see `front.rs` for floods).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOKEN: &str = "s3cret-token-0123456789";

/// Held by the tests that load the machine (floods) and the one that measures latency, so a flood
/// in one test cannot show up as slowness in another.
static MACHINE: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn guarded_hive() -> (Larve, Larve) {
    let launch = Launch::token(TOKEN);
    let queen = Larve::start_with(&[&["--queen", "--port", "0"][..], FAST].concat(), &launch);
    let drone = Larve::start_with(&["--queen-host", &queen.addr, "--port", "0"], &launch);
    eventually(SOON, "the drone to register", || {
        let (_, health) = get_as(&queen.url("/healthz"), Some(TOKEN));
        health["drones"]
            .as_object()
            .is_some_and(|d| d.contains_key(&drone.addr))
            .then_some(())
    });
    (queen, drone)
}

#[test]
fn with_a_token_only_holders_can_submit_register_or_list() {
    let (queen, drone) = guarded_hive();
    let task = json!({"text": "hello"}).to_string();
    let registration = json!({"address": "127.0.0.1:9"}).to_string();
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        for (status, body) in [
            post_as(&queen.url("/submit_task"), &task, token),
            post_as(&queen.url("/register"), &registration, token),
            get_as(&queen.url("/drones"), token),
            post_as(&drone.url("/do_task"), &task, token),
        ] {
            assert_eq!(status, 401, "{token:?}: {body}");
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
    }
    assert_eq!(drone.stdout(), "", "no task ran");
    let (_, drones) = get_as(&queen.url("/drones"), Some(TOKEN));
    assert_eq!(
        drones.as_array().unwrap().len(),
        1,
        "nobody was registered: {drones}"
    );

    // healthz stays open, without the drone list.
    let (status, health) = get(&queen.url("/healthz"));
    assert_eq!((status, health.get("drones")), (200, None));
    assert_eq!(get(&drone.url("/healthz")).0, 200);

    // The queen hands tasks on with the token.
    let (status, reply) = post_as(&queen.url("/submit_task"), &task, Some(TOKEN));
    assert_eq!(status, 200, "{reply}");
    eventually(SOON, "the task printed", || {
        (drone.stdout() == "hello\n").then_some(())
    });

    // Nine refusals from one address: each larve logs the first, and no more for a minute.
    let first = "refused \"POST\" \"/submit_task\" from 127.0.0.1:";
    let queen_log = queen.log_with(&[first]);
    let drone_log = drone.log_with(&["refused \"POST\" \"/do_task\" from 127.0.0.1:"]);
    assert_eq!(queen_log.matches("refused ").count(), 1, "{queen_log}");
    assert_eq!(drone_log.matches("refused ").count(), 1, "{drone_log}");
    let log = format!("{queen_log}{drone_log}");
    assert!(
        !log.contains("s3cret") && !log.contains("wrong-token"),
        "a token reached the log"
    );
}

#[test]
fn a_drone_with_the_wrong_token_is_refused_and_exits_2() {
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(TOKEN));
    let mut intruder = Larve::spawn_with(
        &["--queen-host", &queen.addr, "--port", "0"],
        &Launch::token("not-the-cluster-token"),
    );
    let status = intruder.wait_exit(SOON).expect("it exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        intruder.stderr().contains("answered HTTP 401"),
        "{}",
        intruder.stderr()
    );
    let (_, drones) = get_as(&queen.url("/drones"), Some(TOKEN));
    assert_eq!(drones, json!([]));
}

#[test]
fn the_network_needs_a_token_or_insecure() {
    let mut open = Larve::spawn(&["--queen", "--bind", "0.0.0.0", "--port", "0"]);
    assert_eq!(open.wait_exit(SOON).expect("it exits").code(), Some(2));
    assert!(
        open.stderr().contains("without a token"),
        "{}",
        open.stderr()
    );
}

#[test]
fn a_token_file_is_read_and_never_shown() {
    let path = std::env::temp_dir().join(format!("hive-token-{}", std::process::id()));
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let file = path.to_str().unwrap();
    let queen = Larve::start(&["--queen", "--port", "0", "--token-file", file]);
    std::fs::remove_file(&path).unwrap();
    let task = json!({"text": "hi"}).to_string();
    assert_eq!(post(&queen.url("/submit_task"), &task).0, 401);
    assert_eq!(
        post_as(&queen.url("/submit_task"), &task, Some(TOKEN)).0,
        503
    );
    assert!(!queen.stderr().contains(TOKEN));
}

/// Sends a request's headers and half its body, then stalls: the front waits for the rest on the
/// connection's own thread.
fn stall_mid_body(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b' '; 2000]).unwrap();
    stream
}

#[test]
fn fifty_stalled_bodies_do_not_slow_anyone_else() {
    let _alone = MACHINE.lock();
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let stalled: Vec<TcpStream> = (0..50).map(|_| stall_mid_body(&queen.addr)).collect();
    // Each stalled request is already on the server: its first 2,000 body bytes were written.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let asked = Instant::now();
        assert_eq!(get(&queen.url("/healthz")).0, 200);
        assert_eq!(submit(&queen, &format!("task {i}")).0, 200);
        slowest = slowest.max(asked.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a healthz + submit took {slowest:?}"
    );
    drop(stalled);
}

#[test]
fn a_stalled_body_times_out_with_408() {
    let _alone = MACHINE.lock();
    let queen = Larve::fast_queen();
    let started = Instant::now();
    let head = "POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n";
    let request = format!("{head}{}", " ".repeat(2000));
    let answer = exchange(&queen.addr, request.as_bytes(), SOON * 3).expect("the request sent");
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(get(&queen.url("/healthz")).0, 200);
}

#[test]
fn an_upgrade_request_is_refused_without_waiting_for_its_body() {
    let queen = Larve::fast_queen();
    let started = Instant::now();
    // tiny_http would hand over the raw socket as this body and ignore its length.
    let answer = exchange(
        &queen.addr,
        b"POST /submit_task HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nContent-Length: 15\r\n\r\n{\"text\": \"hi\"}",
        SOON,
    )
    .expect("the request sent");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("upgrade is not supported"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
