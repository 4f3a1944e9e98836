//! No cascade: a task that fails on a drone takes it out of rotation only until a probe passes, the
//! probe comes at once rather than at the next heartbeat round, and when every drone is out of
//! rotation the queen still tries them: only an empty registry answers 503.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// A heartbeat so slow that no round runs during a test: what happens is the re-checks' doing.
const NO_ROUNDS: &[&str] = &["--heartbeat-interval", "600", "--task-timeout", "0.5"];

/// A stand-in drone whose first task fails with a 500 and whose later tasks succeed; its `/healthz`
/// answers `health`.
fn fails_first_task(health: u16) -> FakePeer {
    let tasks = Arc::new(AtomicUsize::new(0));
    FakePeer::new(move |line, _| match line {
        "GET /healthz" => (health, "application/json", "{}".into()),
        _ if tasks.fetch_add(1, Ordering::Relaxed) == 0 => {
            (500, "text/html", "<h1>Internal Server Error</h1>".into())
        }
        _ => (200, "application/json", "{\"result\": \"OK\"}".into()),
    })
}

fn available(queen: &Larve) -> Vec<bool> {
    let (_, drones) = get(&queen.url("/drones"));
    drones
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| d["available"].as_bool().expect("available"))
        .collect()
}

#[test]
fn when_every_drone_is_out_of_rotation_tasks_still_go_to_them() {
    let queen = Larve::queen(NO_ROUNDS);
    // Their probes never pass, so once out of rotation they stay out.
    let drones = [fails_first_task(500), fails_first_task(500)];
    for drone in &drones {
        assert_eq!(register(&queen, &drone.addr).0, 200);
    }
    let (status, reply) = submit(&queen, "first");
    assert_eq!(status, 502, "both drones failed their first task: {reply}");
    eventually(SOON, "a failed re-check of both", || {
        let counted = metrics(&queen);
        (counted["hive_rechecks_total"] >= 2.0 && counted["hive_probes_failed_total"] >= 2.0)
            .then_some(())
    });
    assert_eq!(available(&queen), [false, false]);

    for i in 0..20 {
        let (status, reply) = submit(&queen, &format!("task {i}"));
        assert_eq!(
            status, 200,
            "task {i} while every drone is out of rotation: {reply}"
        );
    }
}

#[test]
fn a_drone_that_failed_a_task_is_back_in_rotation_well_before_the_next_round() {
    let queen = Larve::queen(NO_ROUNDS);
    let drone = fails_first_task(200);
    assert_eq!(register(&queen, &drone.addr).0, 200);
    let failed_at = Instant::now();
    assert_eq!(submit(&queen, "first").0, 502);
    eventually(SOON, "the drone back in rotation", || {
        (available(&queen) == [true]).then_some(())
    });
    let back_after = failed_at.elapsed();
    assert!(
        back_after < Duration::from_secs(3),
        "back after {back_after:?}; the next round is 600 s away"
    );
    queen.log_with(&[
        "it takes no tasks until a probe passes",
        "passed a re-check; it takes tasks",
    ]);
    let (status, reply) = submit(&queen, "second");
    assert_eq!((status, reply["drone"].as_str()), (200, Some("drone-0")));
}

#[test]
fn a_task_that_times_out_does_not_take_its_drone_out_of_rotation() {
    let queen = Larve::queen(NO_ROUNDS);
    let tasks = Arc::new(AtomicUsize::new(0));
    // Its first task takes longer than the queen's 0.5 s task timeout; it answers probes at once.
    let slow = FakePeer::new(move |line, _| match line {
        "GET /healthz" => (200, "application/json", "{}".into()),
        _ => {
            if tasks.fetch_add(1, Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(800));
            }
            (200, "application/json", "{\"result\": \"OK\"}".into())
        }
    });
    assert_eq!(register(&queen, &slow.addr).0, 200);
    assert_eq!(submit(&queen, "slow").0, 502);
    assert_eq!(available(&queen), [true], "a timeout alone is no verdict");
    let log = queen.log_with(&["timed out; re-checking it"]);
    assert!(!log.contains("takes no tasks"), "{log}");
    assert_eq!(submit(&queen, "fast").0, 200);
}

#[test]
fn a_submit_gives_up_after_two_task_timeouts_however_many_drones_hang() {
    let queen = Larve::queen(&["--heartbeat-interval", "600", "--task-timeout", "0.3"]);
    // Five drones that accept connections and never answer.
    let holes: Vec<_> = (0..5).map(|_| black_hole()).collect();
    for (_, addr) in &holes {
        assert_eq!(register(&queen, addr).0, 200);
    }
    for _ in 0..3 {
        let asked = Instant::now();
        let (status, reply) = submit(&queen, "into the void");
        let took = asked.elapsed();
        assert_eq!(status, 502, "{reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert_eq!(error.matches("timed out").count(), 2, "{error}");
        assert!(
            error.contains("no time left for the other drones"),
            "{error}"
        );
        assert!(
            took < Duration::from_millis(600 + 400),
            "a submit took {took:?}; the budget is two task timeouts of 0.3 s"
        );
    }
    assert_eq!(get(&queen.url("/healthz")).0, 200);
}
