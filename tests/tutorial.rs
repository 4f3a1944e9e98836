//! The tutorial's walkthrough (Parts 1–3), as its own curl commands, against real larves.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// Runs curl with the tutorial's arguments; returns the HTTP status and the JSON body.
fn curl(args: &[&str]) -> (u16, Value) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test.sh installs it)");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status.parse().expect("a status"), json)
}

#[test]
fn part_1_a_drone_answers_healthz_and_prints_a_task() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);

    // ➜  ~ curl localhost:5000/healthz
    let (status, health) = curl(&[&format!("localhost:{}/healthz", drone.port())]);
    assert_eq!(status, 200);
    assert_eq!(
        health,
        json!({"status": "Status.READY", "version": hive::VERSION, "mode": "Mode.DRONE"})
    );

    let (status, result) = curl(&[
        "--location",
        "--request",
        "POST",
        &format!("localhost:{}/do_task", drone.port()),
        "--header",
        "Content-Type: application/json",
        "--data-raw",
        "{\n        \"text\": \"hello\"\n}",
    ]);
    assert_eq!((status, result), (200, json!({"result": "OK"})));
    eventually(SOON, "the drone to print hello", || {
        (drone.stdout() == "hello\n").then_some(())
    });
}

#[test]
fn part_2_each_mode_refuses_the_other_modes_work() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    let (status, health) = curl(&[&format!("localhost:{}/healthz", queen.port())]);
    assert_eq!(status, 200);
    assert_eq!(health["mode"], "Mode.QUEEN");

    let task = "{\"text\": \"hello\"}";
    let json = "Content-Type: application/json";
    let queen_do = format!("localhost:{}/do_task", queen.port());
    let (status, body) = curl(&["-X", "POST", &queen_do, "-H", json, "-d", task]);
    assert_eq!(
        (status, body),
        (400, json!({"error": "In queen mode, not taking tasks"}))
    );
    let drone_submit = format!("localhost:{}/submit_task", drone.port());
    let (status, body) = curl(&["-X", "POST", &drone_submit, "-H", json, "-d", task]);
    assert_eq!(
        (status, body),
        (400, json!({"error": "In drone mode, not scheduling tasks"}))
    );
    assert_eq!(drone.stdout(), "", "nothing was printed");
}

#[test]
fn part_3_drones_register_take_tasks_and_are_heartbeated() {
    // python3 larve.py --queen, then two drones with --queen-host and --port.
    let queen = Larve::fast_queen();
    let drones = [Larve::drone(&queen.addr), Larve::drone(&queen.addr)];
    wait_for_drones(&queen, &[&drones[0].addr, &drones[1].addr], SOON);

    let mut takers = Vec::new();
    for _ in 0..20 {
        let (status, body) = curl(&[
            "--location",
            "--request",
            "POST",
            &format!("localhost:{}/submit_task", queen.port()),
            "--header",
            "Content-Type: application/json",
            "--data-raw",
            "{\n\t\"text\": \"hello\"\n}",
        ]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"], "OK");
        takers.push(body["drone"].as_str().expect("a drone name").to_string());
    }
    let printed: usize = drones.iter().map(|d| d.stdout().lines().count()).sum();
    assert_eq!(printed, 20, "every task printed once");
    assert!(
        drones
            .iter()
            .all(|d| d.stdout().lines().all(|l| l == "hello"))
    );
    assert!(
        takers.iter().any(|t| t == "drone-0") && takers.iter().any(|t| t == "drone-1"),
        "tasks go to random drones: {takers:?}"
    );

    // "We can also shut down a drone, and watch as the heartbeating removes the unhealthy drone."
    let [mut gone, kept] = drones;
    gone.kill();
    wait_for_drones(&queen, &[&kept.addr], FAST_REMOVAL);
    let log = queen.log_with(&["registered drone-0", "removed drone-"]);
    assert!(
        log.lines()
            .any(|l| l.contains("removed drone-") && l.contains("connection refused")),
        "the removal and its reason are logged: {log}"
    );
}
