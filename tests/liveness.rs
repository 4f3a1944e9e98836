//! Liveness: a Hive drone renews a lease with the leader and is probed only when it stops; a drone
//! that renews nothing (the tutorial's) is probed on a schedule of its own; the dead are removed
//! within the bound; a queen that forgot her drones gets them back as soon as she answers; and on
//! etcd renewals reach the leader, whoever she is.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;
use parking_lot::Mutex;
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

/// Settings whose interval leaves renewals a tenth of it (200 ms) to arrive before a lease is
/// late, which a busy test machine's delays stay within.
fn slow(interval: &str) -> Vec<&str> {
    vec![
        "--heartbeat-interval",
        interval,
        "--heartbeat-attempts",
        "2",
        "--heartbeat-timeout",
        "0.3",
        "--heartbeat-retry-delay",
        "0.1",
    ]
}

/// The drone at `address` as the queen's `/drones` shows it.
fn listed(queen: &Larve, address: &str) -> Option<Value> {
    let (_, drones) = get(&queen.url("/drones"));
    drones
        .as_array()?
        .iter()
        .find(|d| d["address"] == address)
        .cloned()
}

/// Seconds from now until `address` is no longer in the queen's `/drones` (at most `within`).
fn gone_after(queen: &Larve, address: &str, within: Duration) -> Duration {
    let since = Instant::now();
    eventually(within, &format!("{address} to be removed"), || {
        listed(queen, address).is_none().then(|| since.elapsed())
    })
}

#[test]
fn a_hive_drone_renews_its_lease_and_is_not_probed_while_it_does() {
    let queen = Larve::queen(&slow("2"));
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let info = listed(&queen, &drone.addr).expect("listed");
    assert_eq!(info["renews"], true, "{info}");
    let registered_seen = info["last_seen"].as_f64().unwrap();

    // Three renewals, each 1.4 to 1.8 s after the one before.
    let counted = eventually(SOON, "three renewals", || {
        let counted = metrics(&queen);
        (counted["hive_leases_renewed_total"] >= 3.0).then_some(counted)
    });
    assert_eq!(counted["hive_leases_late_total"], 0.0);
    assert_eq!(
        counted["hive_probes_total"], 0.0,
        "a renewing drone is not probed"
    );
    let at_drone = metrics(&drone);
    assert!(
        at_drone
            .keys()
            .all(|series| !series.contains("endpoint=\"/healthz\"")),
        "nobody asked the drone's /healthz: {at_drone:?}"
    );
    let info = listed(&queen, &drone.addr).expect("listed");
    assert!(
        info["last_seen"].as_f64().unwrap() > registered_seen,
        "a renewal is a sign of life: {info}"
    );
    assert_eq!(
        (info["failures"].as_u64(), &info["available"]),
        (Some(0), &Value::Bool(true))
    );
}

#[test]
fn a_killed_drone_is_removed_within_the_bound() {
    let queen = Larve::queen(MEASURED);
    let mut drone = Larve::drone(&queen.addr);
    let stays = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr, &stays.addr], SOON);
    eventually(SOON, "the drones to renew", || {
        (metrics(&queen)["hive_leases_renewed_total"] >= 2.0).then_some(())
    });
    drone.kill();
    let took = gone_after(&queen, &drone.addr, MEASURED_BOUND + SLACK * 3);
    assert!(
        took <= MEASURED_BOUND + SLACK,
        "removed after {took:?}; the bound is {MEASURED_BOUND:?}"
    );
    queen.log_with(&["connection refused on all 2 tries"]);
    assert!(listed(&queen, &stays.addr).is_some());
}

#[test]
fn a_frozen_lease_drone_is_probed_and_removed() {
    let queen = Larve::queen(MEASURED);
    let drone = Larve::drone(&queen.addr);
    let stays = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr, &stays.addr], SOON);
    eventually(SOON, "the drones to renew", || {
        (metrics(&queen)["hive_leases_renewed_total"] >= 2.0).then_some(())
    });
    // Its port stays open: the probes of its late lease connect, then time out.
    drone.freeze();
    let took = gone_after(&queen, &drone.addr, MEASURED_BOUND + SLACK * 3);
    drone.thaw();
    assert!(
        took <= MEASURED_BOUND + SLACK,
        "removed after {took:?}; the bound is {MEASURED_BOUND:?}"
    );
    let counted = metrics(&queen);
    assert!(counted["hive_leases_late_total"] >= 1.0, "{counted:?}");
    assert!(counted["hive_probes_failed_total"] >= 2.0, "{counted:?}");
    queen.log_with(&["timed out on all 2 tries"]);
    assert!(listed(&queen, &stays.addr).is_some());
}

/// A stand-in for the tutorial's drone (it renews nothing) that notes when each probe came.
fn tutorial_drone() -> (FakePeer, Arc<Mutex<Vec<Instant>>>) {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let noted = probes.clone();
    let drone = FakePeer::new(move |line, _| {
        if line == "GET /healthz" {
            noted.lock().push(Instant::now());
        }
        (200, "application/json", "{}".into())
    });
    (drone, probes)
}

#[test]
fn a_drone_that_renews_nothing_is_probed_every_interval_on_a_slot_of_its_own() {
    // A timeout long enough that a busy machine's slow answer is never a failed try (and a second
    // try): what is measured is when probes come.
    let queen = Larve::queen(&[
        "--heartbeat-interval",
        "1",
        "--heartbeat-attempts",
        "2",
        "--heartbeat-timeout",
        "1",
        "--heartbeat-retry-delay",
        "0.1",
    ]);
    let drones: Vec<_> = (0..10).map(|_| tutorial_drone()).collect();
    for (drone, _) in &drones {
        assert_eq!(register(&queen, &drone.addr).0, 200);
    }
    // Each is probed half an interval to an interval after it registered, then every interval on
    // its slot.
    eventually(SOON, "five probes of each", || {
        drones
            .iter()
            .all(|(_, probes)| probes.lock().len() >= 5)
            .then_some(())
    });
    for (drone, probes) in &drones {
        let probes = probes.lock();
        // From its second probe on (its first slot), one an interval: never two intervals
        // without one, about one a second on average (a late probe's next is on its slot).
        let slots = &probes[1..];
        for pair in slots.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= Duration::from_millis(2000),
                "{}: probes {gap:?} apart; the interval is 1 s: {probes:?}",
                drone.addr
            );
        }
        let mean = (slots[slots.len() - 1] - slots[0]) / (slots.len() - 1) as u32;
        assert!(
            mean >= Duration::from_millis(700) && mean <= Duration::from_millis(1300),
            "{}: probes {mean:?} apart on average; the interval is 1 s: {probes:?}",
            drone.addr
        );
    }
    // Registered together, they are not probed together: their slots spread over the interval.
    let third: Vec<Instant> = drones.iter().map(|(_, probes)| probes.lock()[2]).collect();
    let spread = *third.iter().max().unwrap() - *third.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(300),
        "ten drones' probes within {spread:?} of each other"
    );
    let counted = metrics(&queen);
    assert_eq!(counted["hive_leases_renewed_total"], 0.0);
    assert_eq!(counted["hive_probes_failed_total"], 0.0, "{counted:?}");
}

#[test]
fn a_drone_that_renews_nothing_is_removed_when_it_dies() {
    let queen = Larve::queen(MEASURED);
    let (drone, probes) = tutorial_drone();
    assert_eq!(register(&queen, &drone.addr).0, 200);
    eventually(SOON, "two probes", || {
        (probes.lock().len() >= 2).then_some(())
    });
    let address = drone.addr.clone();
    drop(drone);
    let took = gone_after(&queen, &address, MEASURED_BOUND + SLACK * 3);
    assert!(
        took <= MEASURED_BOUND + SLACK,
        "removed after {took:?}; the bound is {MEASURED_BOUND:?}"
    );
}

#[test]
fn a_restarted_memory_queen_gets_her_drones_back_as_soon_as_she_answers() {
    let mut queen = Larve::queen(&slow("2"));
    let port = queen.port().to_string();
    let drones = [Larve::drone(&queen.addr), Larve::drone(&queen.addr)];
    let addrs = [drones[0].addr.as_str(), drones[1].addr.as_str()];
    wait_for_drones(&queen, &addrs, SOON);

    queen.kill();
    thread::sleep(Duration::from_millis(500));
    let restarted = Larve::queen(&[&["--port", port.as_str()][..], &slow("2")].concat());
    // She answers from here: her drones' next renewals (or tries) find that she does not know
    // them, and they register again at once, not after three intervals (6 s) without a probe.
    let answering = Instant::now();
    wait_for_drones(&restarted, &addrs, SOON);
    let back_after = answering.elapsed();
    assert!(
        back_after <= Duration::from_secs(2) + SLACK,
        "drones came back after {back_after:?}; the interval is 2 s"
    );
    for drone in &drones {
        drone.log_with(&["does not know this drone", "registering again"]);
    }
}

/// A queen on `etcd` with `interval` and a lease of two seconds.
fn queen_on(etcd: &Etcd, interval: &str) -> Larve {
    let urls = etcd.urls();
    let mut args = vec!["--etcd", &urls, "--leader-ttl", "2"];
    args.extend(slow(interval));
    Larve::queen(&args)
}

/// Waits until every one of `queens` names the same leader, one of them; returns her index.
fn leader_of(queens: &[&Larve], within: Duration) -> usize {
    eventually(within, "one leader", || {
        let answers: Vec<Value> = queens.iter().map(|q| get(&q.url("/healthz")).1).collect();
        let leader = answers[0]["leader"].as_str()?;
        let agreed = answers.iter().all(|h| h["leader"] == leader)
            && answers.iter().filter(|h| h["role"] == "leader").count() == 1;
        agreed.then(|| queens.iter().position(|q| q.addr == leader))?
    })
}

#[test]
fn on_etcd_a_follower_sends_renewals_to_the_leader() {
    let etcd = Etcd::single();
    let queens = [queen_on(&etcd, "1"), queen_on(&etcd, "1")];
    let leader = leader_of(&[&queens[0], &queens[1]], SOON);
    let follower = &queens[1 - leader];
    // It knows only the follower: she takes its registration and sends its renewals on.
    let drone = Larve::drone(&follower.addr);
    wait_for_drones(&queens[leader], &[&drone.addr], SOON);
    eventually(SOON, "renewals with the leader", || {
        (metrics(&queens[leader])["hive_leases_renewed_total"] >= 3.0).then_some(())
    });
    drone.log_with(&[&format!(
        "renewing this drone's lease with the leader, \"{}\"",
        queens[leader].addr
    )]);
    assert_eq!(metrics(follower)["hive_leases_renewed_total"], 0.0);
    assert_eq!(
        metrics(&queens[leader])["hive_probes_total"],
        0.0,
        "its lease was never late"
    );
    let log = drone.stderr();
    assert!(!log.contains("registering again"), "{log}");
}

#[test]
fn on_etcd_a_leader_failover_removes_no_live_drone() {
    let etcd = Etcd::single();
    let mut queens: Vec<Larve> = (0..3).map(|_| queen_on(&etcd, "0.5")).collect();
    let hosts: Vec<&str> = queens.iter().map(|q| q.addr.as_str()).collect();
    let hosts = hosts.join(",");
    let renewing: Vec<Larve> = (0..4)
        .map(|_| Larve::start(&["--queen-host", &hosts, "--port", "0"]))
        .collect();
    let tutorial: Vec<_> = (0..2).map(|_| tutorial_drone()).collect();
    for (drone, _) in &tutorial {
        assert_eq!(register(&queens[0], &drone.addr).0, 200);
    }
    let mut all: Vec<&str> = renewing.iter().map(|d| d.addr.as_str()).collect();
    all.extend(tutorial.iter().map(|(d, _)| d.addr.as_str()));
    for queen in &queens {
        wait_for_drones(queen, &all, SOON);
    }
    let refs: Vec<&Larve> = queens.iter().collect();
    let leader = leader_of(&refs, SOON);
    queens[leader].kill();
    let survivors: Vec<&Larve> = queens
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, q)| q)
        .collect();
    let new = survivors[leader_of(&survivors, SOON)];
    // An interval for every lease to reach her, then the bound for any probe to end: 0.5 + 1.3 s.
    thread::sleep(Duration::from_secs(3));
    for queen in &survivors {
        wait_for_drones(queen, &all, SOON);
        let log = queen.stderr();
        assert!(!log.contains("removed drone-"), "{log}");
    }
    let counted = metrics(new);
    assert_eq!(counted["hive_drones_removed_total"], 0.0);
    assert!(counted["hive_leases_renewed_total"] >= 4.0, "{counted:?}");
    for drone in &renewing {
        assert!(
            !drone.stderr().contains("registering again"),
            "{}",
            drone.stderr()
        );
    }
    queens.clear();
}
