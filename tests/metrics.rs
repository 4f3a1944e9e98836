//! `GET /metrics`: Prometheus text on queen and drone, counters that move with what the hive does,
//! and the cluster token in front of it.

mod common;

use common::*;

#[test]
fn counters_move_when_tasks_are_placed_and_drones_removed() {
    let queen = Larve::fast_queen();
    let mut drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);

    let before = metrics(&queen);
    assert_eq!(before["hive_drones"], 1.0);
    assert_eq!(before["hive_drones_available"], 1.0);
    assert_eq!(before["hive_drones_registered_total"], 1.0);
    assert_eq!(before["hive_tasks_placed_total"], 0.0);
    assert_eq!(before["hive_drones_removed_total"], 0.0);

    for i in 0..3 {
        assert_eq!(submit(&queen, &format!("task {i}")).0, 200);
    }
    let after = metrics(&queen);
    assert_eq!(after["hive_tasks_placed_total"], 3.0);
    assert_eq!(
        after["hive_http_requests_total{endpoint=\"/submit_task\",status=\"200\"}"],
        3.0
    );
    assert_eq!(after["hive_submit_duration_seconds_count"], 3.0);
    assert_eq!(
        after["hive_submit_duration_seconds_bucket{le=\"+Inf\"}"],
        3.0
    );
    let at_drone = metrics(&drone);
    assert_eq!(
        at_drone["hive_http_requests_total{endpoint=\"/do_task\",status=\"200\"}"],
        3.0
    );
    assert!(
        !at_drone.contains_key("hive_drones"),
        "a drone has no registry"
    );

    eventually(SOON, "the drone to renew its lease", || {
        (metrics(&queen)["hive_leases_renewed_total"] >= 1.0).then_some(())
    });
    drone.kill();
    // Its lease goes late, it is probed, and every try fails: the probe's duration is observed
    // as it ends, beside the removal it asked for.
    let gone = eventually(
        FAST_REMOVAL,
        "the drone's removal and its probe to be counted",
        || {
            let now = metrics(&queen);
            (now["hive_drones_removed_total"] == 1.0
                && now["hive_probe_duration_seconds_count"] >= 1.0)
                .then_some(now)
        },
    );
    assert_eq!(gone["hive_drones"], 0.0);
    assert!(gone["hive_leases_late_total"] >= 1.0, "its lease went late");
    assert!(
        gone["hive_probes_failed_total"] >= 2.0,
        "and both tries failed"
    );
}

#[test]
fn unknown_paths_are_counted_together_and_errors_by_status() {
    let queen = Larve::fast_queen();
    for path in ["/a", "/b/c", "/../etc/passwd"] {
        assert_eq!(get(&queen.url(path)).0, 404);
    }
    assert_eq!(submit(&queen, "nobody").0, 503);
    let counted = metrics(&queen);
    assert_eq!(
        counted["hive_http_requests_total{endpoint=\"other\",status=\"404\"}"],
        3.0
    );
    assert_eq!(
        counted["hive_http_requests_total{endpoint=\"/submit_task\",status=\"503\"}"],
        1.0
    );
    assert!(counted.keys().all(|k| !k.contains("passwd")));
}

#[test]
fn with_a_token_metrics_need_it() {
    const TOKEN: &str = "metrics-token-0123456789";
    let queen = Larve::start_with(
        &[&["--queen", "--port", "0"][..], FAST].concat(),
        &Launch::token(TOKEN),
    );
    assert_eq!(get(&queen.url("/metrics")).0, 401);
    let counted = metrics_as(&queen, Some(TOKEN));
    assert_eq!(
        counted["hive_http_requests_total{endpoint=\"/metrics\",status=\"401\"}"],
        1.0
    );
}
