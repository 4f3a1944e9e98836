//! The tutorial's flaws, each fixed, each with a test that fails on the tutorial's behaviour.
//! (Its third flaw, a 500 on a submit without drones, is `errors::submit_without_drones_is_503_json`;
//! the 4xx half of its sixth is `errors::a_drone_pointed_at_a_drone_exits_2`.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// interval 0.3 + 2 × (timeout 0.3 + delay 0.1) = 1.1 s at most until a dead drone is removed.
const MEASURED: &[&str] = &[
    "--heartbeat-interval",
    "0.3",
    "--heartbeat-attempts",
    "2",
    "--heartbeat-timeout",
    "0.3",
    "--heartbeat-retry-delay",
    "0.1",
];
const MEASURED_BOUND: Duration = Duration::from_millis(1100);
/// Room for a loaded two-core machine on top of a bound.
const SLACK: Duration = Duration::from_millis(600);

fn drone_info(queen: &Larve, name: &str) -> Option<Value> {
    let (_, drones) = get(&queen.url("/drones"));
    drones
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
}

#[test]
fn fix_1_a_frozen_drone_does_not_freeze_the_queen_and_is_removed_in_time() {
    let queen = Larve::queen(MEASURED);
    let frozen = Larve::drone(&queen.addr);
    let healthy = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&frozen.addr, &healthy.addr], SOON);

    frozen.freeze();
    let since = Instant::now();
    let mut slowest = Duration::ZERO;
    while drone_names(&queen).contains_key(&frozen.addr) {
        let asked = Instant::now();
        let (status, _) = get(&queen.url("/healthz"));
        slowest = slowest.max(asked.elapsed());
        assert_eq!(status, 200);
        assert!(
            since.elapsed() < MEASURED_BOUND + SLACK * 3,
            "the frozen drone was never removed"
        );
    }
    let removed_after = since.elapsed();
    assert!(
        slowest < Duration::from_millis(100),
        "healthz took {slowest:?} while a drone was frozen"
    );
    assert!(
        removed_after <= MEASURED_BOUND + SLACK,
        "removed after {removed_after:?}; the bound is {MEASURED_BOUND:?}"
    );
    assert!(drone_names(&queen).contains_key(&healthy.addr));
    let log = queen.log_with(&["timed out on all 2 tries"]);
    assert!(
        log.contains("timed out on all 2 tries"),
        "the reason is logged: {log}"
    );
}

#[test]
fn fix_2_a_round_with_many_dead_drones_takes_as_long_as_one() {
    let queen = Larve::queen(MEASURED);
    let healthy = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&healthy.addr], SOON);
    // Twenty frozen drones: probed one after another they would take 20 × 0.7 s = 14 s.
    let holes: Vec<_> = (0..20).map(|_| black_hole()).collect();
    for (_, addr) in &holes {
        assert_eq!(register(&queen, addr).0, 200);
    }
    let since = Instant::now();
    wait_for_drones(&queen, &[&healthy.addr], MEASURED_BOUND + SLACK * 3);
    let all_gone = since.elapsed();
    assert!(
        all_gone <= MEASURED_BOUND + SLACK,
        "20 dead drones took {all_gone:?} to remove; one takes at most {MEASURED_BOUND:?}"
    );
}

#[test]
fn fix_4_names_are_never_reused_and_registration_is_idempotent() {
    let queen = Larve::fast_queen();
    let mut first = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&first.addr], SOON);
    let second = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&first.addr, &second.addr], SOON);
    first.kill();
    wait_for_drones(&queen, &[&second.addr], FAST_REMOVAL);

    // The tutorial names the next one 'drone-' + len(drones) = drone-1: the second drone's name.
    let third = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&second.addr, &third.addr], SOON);
    let names = drone_names(&queen);
    assert_eq!(names[&second.addr], "drone-1");
    assert_eq!(names[&third.addr], "drone-2");

    let (status, reply) = register(&queen, &second.addr);
    assert_eq!((status, reply["name"].as_str()), (200, Some("drone-1")));
    assert_eq!(
        drone_names(&queen).len(),
        2,
        "registering again adds nobody"
    );
}

#[test]
fn fix_5_a_task_for_a_dead_drone_goes_to_a_live_one() {
    // A slow heartbeat, so the dead drone is still registered when the tasks come.
    let queen = Larve::queen(&["--heartbeat-interval", "60", "--task-timeout", "0.5"]);
    let mut dead = Larve::drone(&queen.addr);
    let live = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&dead.addr, &live.addr], SOON);
    let dead_name = drone_names(&queen)[&dead.addr]
        .as_str()
        .unwrap()
        .to_string();
    dead.kill();

    for i in 0..10 {
        let (status, reply) = submit(&queen, &format!("task {i}"));
        assert_eq!(status, 200, "{reply}");
        assert_ne!(reply["drone"], dead_name.as_str());
    }
    let printed: Vec<String> = live.stdout().lines().map(String::from).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("task {i}")).collect();
    assert_eq!(printed, expected, "every task ran, once, on the live drone");

    let info = drone_info(&queen, &dead_name).expect("still registered until a heartbeat");
    assert_eq!(info["available"], false);
    let failures = queen.stderr().matches("not taken by").count();
    assert!(
        failures <= 1,
        "the dead drone was tried once, then skipped ({failures} failures)"
    );
}

#[test]
fn fix_6_a_drone_started_before_its_queen_waits_for_her() {
    let port = free_port().expect("a free port");
    let queen_addr = format!("127.0.0.1:{port}");
    let drone = Larve::drone(&queen_addr);
    eventually(SOON, "a logged registration failure", || {
        drone
            .stderr()
            .contains("could not register with queen")
            .then_some(())
    });
    let queen = Larve::queen(&[&["--port", &port.to_string()][..], FAST].concat());
    wait_for_drones(&queen, &[&drone.addr], SOON);
    assert_eq!(get(&drone.url("/healthz")).1["status"], "Status.READY");
}

#[test]
fn fix_6_a_restarted_queen_gets_every_live_drone_back_within_three_intervals() {
    let mut queen = Larve::fast_queen();
    let port = queen.port().to_string();
    let drones = [Larve::drone(&queen.addr), Larve::drone(&queen.addr)];
    let addrs = [drones[0].addr.as_str(), drones[1].addr.as_str()];
    wait_for_drones(&queen, &addrs, SOON);

    queen.kill();
    let restarted = Larve::queen(&[&["--port", port.as_str()][..], FAST].concat());
    let since = Instant::now();
    wait_for_drones(&restarted, &addrs, SOON);
    let back_after = since.elapsed();
    // Three intervals of 0.2 s, measured from the last probe before the restart.
    assert!(
        back_after <= Duration::from_millis(600) + SLACK,
        "drones came back after {back_after:?}"
    );
    drones[0].log_with(&["registering again"]);
}

#[test]
fn fix_7_only_a_2xx_counts_as_alive() {
    let queen = Larve::fast_queen();
    let sick = FakePeer::answering(500, "text/html", "<h1>Internal Server Error</h1>");
    let moved = FakePeer::answering(302, "text/html", "<a href=\"/elsewhere\">moved</a>");
    let live = Larve::drone(&queen.addr);
    register(&queen, &sick.addr);
    register(&queen, &moved.addr);
    wait_for_drones(&queen, &[&live.addr, &sick.addr, &moved.addr], SOON);
    wait_for_drones(&queen, &[&live.addr], FAST_REMOVAL);
    queen.log_with(&[
        "answered HTTP 500 on all 2 tries",
        "answered HTTP 302 on all 2 tries",
    ]);
    assert!(sick.hits().iter().all(|h| h == "GET /healthz"));
}
