//! Several queens sharing one registry in etcd: one leader, failover, nothing lost, and every queen
//! riding out etcd's troubles without a restart.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::*;
use hive::config::EtcdConfig;
use hive::store::Reachability;
use hive::store::conformance::{self, Subject};
use hive::store::engine::Txn;
use hive::store::etcd::{self, gateway::Gateway};
use serde_json::{Value, json};

/// The leader's lease in these tests: a dead leader is replaced within it (and a second).
const TTL_SECS: u64 = 2;
const TTL: Duration = Duration::from_secs(TTL_SECS);

/// A queen of the hive that keeps its registry in `etcd`, on `port` (0: any).
fn queen_on(etcd: &Etcd, port: u16) -> Larve {
    queen_with(etcd, port, ("0.3", "2", "0.05"))
}

/// [`queen_on`] with heartbeat flags `(interval, attempts, retry delay)`.
fn queen_with(etcd: &Etcd, port: u16, heartbeat: (&str, &str, &str)) -> Larve {
    let (port, ttl) = (port.to_string(), TTL_SECS.to_string());
    let urls = etcd.urls();
    let (interval, attempts, retry_delay) = heartbeat;
    Larve::queen(&[
        "--port",
        &port,
        "--etcd",
        &urls,
        "--leader-ttl",
        &ttl,
        "--heartbeat-interval",
        interval,
        "--heartbeat-attempts",
        attempts,
        "--heartbeat-timeout",
        "0.3",
        "--heartbeat-retry-delay",
        retry_delay,
        "--task-timeout",
        "1",
    ])
}

/// A queen whose heartbeat takes minutes to remove a drone that does not answer.
fn patient_queen(etcd: &Etcd) -> Larve {
    queen_with(etcd, 0, ("600", "100", "1"))
}

fn queens(etcd: &Etcd, count: usize) -> Vec<Larve> {
    (0..count).map(|_| queen_on(etcd, 0)).collect()
}

fn health(queen: &Larve) -> Value {
    let (status, health) = get(&queen.url("/healthz"));
    assert_eq!(status, 200);
    health
}

/// Waits until every queen names the same leader, one of them, which alone says it leads.
fn agreed_leader(queens: &[&Larve], within: Duration) -> String {
    eventually(within, "every queen to name one leader", || {
        let answers: Vec<Value> = queens.iter().map(|q| health(q)).collect();
        let leader = answers[0]["leader"].as_str()?.to_string();
        let leaders = answers.iter().filter(|h| h["role"] == "leader").count();
        let same = answers.iter().all(|h| h["leader"] == leader.as_str());
        let is_one = queens.iter().any(|q| q.addr == leader);
        (same && is_one && leaders == 1).then_some(leader)
    })
}

fn leader_index(queens: &[Larve]) -> usize {
    let refs: Vec<&Larve> = queens.iter().collect();
    let leader = agreed_leader(&refs, SOON);
    queens.iter().position(|q| q.addr == leader).unwrap()
}

#[test]
fn three_queens_agree_on_one_leader_and_share_the_registry() {
    let etcd = Etcd::single();
    let queens = queens(&etcd, 3);
    let refs: Vec<&Larve> = queens.iter().collect();
    agreed_leader(&refs, SOON);
    for queen in &queens {
        let h = health(queen);
        assert_eq!(h["status"], "Status.READY");
        assert_eq!(h["store"], "etcd");
    }

    // A drone registered through one queen takes tasks from every queen within a second.
    let drone = Larve::drone(&queens[2].addr);
    let registered = Instant::now();
    for queen in &queens {
        wait_for_drones(queen, &[&drone.addr], SOON);
    }
    assert!(registered.elapsed() < Duration::from_secs(2));
    for (i, queen) in queens.iter().enumerate() {
        assert_eq!(submit(queen, &format!("through queen {i}")).0, 200);
    }
    let printed: Vec<String> = drone.stdout().lines().map(String::from).collect();
    assert_eq!(
        printed,
        ["through queen 0", "through queen 1", "through queen 2"]
    );
}

#[test]
fn killing_the_leader_hands_over_within_the_lease_and_submits_keep_succeeding() {
    let etcd = Etcd::single();
    let mut queens = queens(&etcd, 3);
    let addrs: Vec<String> = queens.iter().map(|q| q.addr.clone()).collect();
    let drone = Larve::start(&["--queen-host", &addrs.join(","), "--port", "0"]);
    for queen in &queens {
        wait_for_drones(queen, &[&drone.addr], SOON);
    }
    let mut leader = queens.remove(leader_index(&queens));
    let survivors = queens;

    let stop = AtomicBool::new(false);
    let (sent, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let took = thread::scope(|scope| {
        for queen in &survivors {
            let (stop, sent, failed) = (&stop, &sent, &failed);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, reply) = submit(queen, "during the failover");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("submit through {} failed: {status} {reply}", queen.addr);
                    }
                }
            });
        }
        let killed = Instant::now();
        leader.kill();
        let others: Vec<&Larve> = survivors.iter().collect();
        let new_leader = agreed_leader(&others, TTL + SOON);
        let took = killed.elapsed();
        assert_ne!(new_leader, leader.addr);
        // Some more load under the new leader.
        let at_handover = sent.load(Ordering::Relaxed);
        eventually(SOON, "more submits under the new leader", || {
            (sent.load(Ordering::Relaxed) >= at_handover + 10).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        took
    });
    assert!(
        took <= TTL + Duration::from_secs(1),
        "a new leader after {took:?}; the lease is {TTL:?}"
    );
    assert!(sent.load(Ordering::Relaxed) > 10);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no submit failed");
}

#[test]
fn the_registry_survives_a_restart_of_every_queen() {
    let etcd = Etcd::single();
    let ports = free_ports(2).expect("free ports");
    let mut queens: Vec<Larve> = ports.iter().map(|&p| queen_on(&etcd, p)).collect();
    // The tutorial's drone registers once, at start, and never again: a stand-in that answers
    // probes, registered by hand.
    let once = FakePeer::answering(200, "application/json", "{\"result\": \"OK\"}");
    assert_eq!(register(&queens[0], &once.addr).0, 200);
    wait_for_drones(&queens[1], &[&once.addr], SOON);
    let name = drone_names(&queens[1])[&once.addr].clone();
    for queen in &mut queens {
        queen.kill();
    }
    let queens: Vec<Larve> = ports.iter().map(|&p| queen_on(&etcd, p)).collect();
    for queen in &queens {
        eventually(SOON, "the queen to read the registry", || {
            (health(queen)["status"] == "Status.READY").then_some(())
        });
        assert_eq!(drone_names(queen)[&once.addr], name);
    }
    let (status, reply) = submit(&queens[1], "after the restart");
    assert_eq!((status, &reply["drone"]), (200, &name));
    // And the new leader's heartbeat probes it, and keeps it: it answers.
    let refs: Vec<&Larve> = queens.iter().collect();
    agreed_leader(&refs, SOON);
    let probes = || once.hits().iter().filter(|h| *h == "GET /healthz").count();
    let before = probes();
    eventually(SOON, "the new leader to probe the drone", || {
        (probes() >= before + 2).then_some(())
    });
    assert!(drone_names(&queens[0]).contains_key(&once.addr));
}

#[test]
fn a_drone_killed_after_a_failover_is_still_removed() {
    let etcd = Etcd::single();
    let mut queens = queens(&etcd, 2);
    let mut drone = Larve::drone(&queens[0].addr);
    let keeps = Larve::drone(&queens[1].addr);
    wait_for_drones(&queens[1], &[&drone.addr, &keeps.addr], SOON);
    let leader = leader_index(&queens);
    queens[leader].kill();
    let survivor = &queens[1 - leader];
    agreed_leader(&[survivor], TTL + SOON);
    drone.kill();
    wait_for_drones(survivor, &[&keeps.addr], SOON);
    survivor.log_with(&["removed drone-"]);
}

#[test]
fn two_queens_registering_100_drones_at_once_hand_out_100_distinct_names() {
    let etcd = Etcd::single();
    // Nothing listens at these addresses: no heartbeat round may remove them during the test.
    let queens = [patient_queen(&etcd), patient_queen(&etcd)];
    let addresses: Vec<String> = (0..100)
        .map(|i| format!("127.0.0.1:{}", 20000 + i))
        .collect();
    let names: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = addresses
            .chunks(10)
            .enumerate()
            .map(|(i, chunk)| {
                let queen = &queens[i % 2];
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|address| {
                            let (status, reply) = register(queen, address);
                            assert_eq!(status, 200, "{reply}");
                            reply["name"].as_str().expect("a name").to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker"))
            .collect()
    });
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 100, "{names:?}");
    for queen in &queens {
        eventually(SOON, "every queen to list all 100", || {
            (drone_names(queen).len() == 100).then_some(())
        });
    }
}

#[test]
fn a_paused_leader_steps_down_and_no_live_drone_is_lost() {
    let etcd = Etcd::single();
    let queens = queens(&etcd, 2);
    let addrs = format!("{},{}", queens[0].addr, queens[1].addr);
    let drones: Vec<Larve> = (0..3)
        .map(|_| Larve::start(&["--queen-host", &addrs, "--port", "0"]))
        .collect();
    let drone_addrs: Vec<&str> = drones.iter().map(|d| d.addr.as_str()).collect();
    wait_for_drones(&queens[0], &drone_addrs, SOON);
    let leader = leader_index(&queens);
    let other = 1 - leader;

    queens[leader].freeze();
    agreed_leader(&[&queens[other]], TTL + SOON);
    thread::sleep(TTL * 2);
    queens[leader].thaw();

    eventually(SOON, "the old leader to step down", || {
        let h = health(&queens[leader]);
        (h["role"] == "follower" && h["leader"] == queens[other].addr.as_str()).then_some(())
    });
    queens[leader].log_with(&["no longer leads"]);
    thread::sleep(Duration::from_secs(1));
    for queen in &queens {
        wait_for_drones(queen, &drone_addrs, SOON);
    }
    assert!(!queens[leader].stderr().contains("removed drone-"));
}

#[test]
fn a_three_member_etcd_losing_one_member_changes_nothing() {
    let mut etcd = Etcd::cluster(3);
    let queens = queens(&etcd, 2);
    let refs: Vec<&Larve> = queens.iter().collect();
    let leader = agreed_leader(&refs, SOON);
    let drone = Larve::drone(&queens[0].addr);
    wait_for_drones(&queens[1], &[&drone.addr], SOON);

    // The first member is every queen's first endpoint: the one they use.
    etcd.kill(0);
    // The dead drone goes now, through the new leader; a new one registers.
    let late = Larve::drone(&queens[1].addr);
    for queen in &queens {
        wait_for_drones(queen, &[&drone.addr, &late.addr], SOON);
        assert_eq!(submit(queen, "still here").0, 200);
    }
    thread::sleep(TTL);
    assert_eq!(
        agreed_leader(&refs, SOON),
        leader,
        "the leader kept her lease"
    );
    for queen in &queens {
        assert_eq!(health(queen)["store"], "etcd");
    }
}

#[test]
fn etcd_down_for_five_seconds_and_back_every_queen_recovers_by_itself() {
    let mut etcd = Etcd::single();
    let queens = queens(&etcd, 2);
    let refs: Vec<&Larve> = queens.iter().collect();
    agreed_leader(&refs, SOON);
    let drone = Larve::drone(&queens[0].addr);
    let mut doomed = Larve::drone(&queens[0].addr);
    wait_for_drones(&queens[1], &[&drone.addr, &doomed.addr], SOON);

    etcd.kill(0);
    let down = Instant::now();
    // A drone that dies while etcd is away must not be removed by anyone meanwhile.
    doomed.kill();
    for queen in &queens {
        eventually(SOON, "the queen to see etcd gone", || {
            let store = health(queen)["store"].as_str()?.to_string();
            store.starts_with("etcd unreachable").then_some(())
        });
        // Tasks still go to the drones she knew; registrations are refused, in JSON.
        assert_eq!(submit(queen, "while etcd is down").0, 200);
        let (status, reply) = register(queen, "127.0.0.1:9");
        assert_eq!(status, 503, "{reply}");
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("cannot be reached")
        );
    }
    thread::sleep(Duration::from_secs(5).saturating_sub(down.elapsed()));
    for queen in &queens {
        assert_eq!(
            drone_names(queen).len(),
            2,
            "nothing removed while etcd was down"
        );
        assert!(!queen.stderr().contains("removed drone-"));
    }

    etcd.start(0).expect("etcd starts again");
    etcd.wait_ready().expect("etcd healthy again");
    agreed_leader(&refs, SOON);
    for queen in &queens {
        eventually(SOON, "the queen to reach etcd again", || {
            (health(queen)["store"] == "etcd").then_some(())
        });
    }
    // The dead drone goes now, through the new leader; a new one registers.
    let late = Larve::drone(&queens[1].addr);
    for queen in &queens {
        wait_for_drones(queen, &[&drone.addr, &late.addr], SOON);
    }
}

#[test]
fn while_etcd_hangs_registrations_are_refused_at_once_but_one() {
    let etcd = Etcd::single();
    let queen = patient_queen(&etcd);
    agreed_leader(&[&queen], SOON);
    etcd.signal(0, "STOP").expect("kill -STOP");
    eventually(SOON, "the queen to see etcd hang", || {
        let store = health(&queen)["store"].as_str()?.to_string();
        store.starts_with("etcd unreachable").then_some(())
    });
    // Eight at once: one finds out whether etcd is back (within the 1.5 s budget); the others
    // are refused at once instead of holding a handler thread each for that long.
    let answers: Vec<(u16, Duration)> = thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let queen = &queen;
                scope.spawn(move || {
                    let asked = Instant::now();
                    let (status, _) = register(queen, &format!("127.0.0.1:{}", 7100 + i));
                    (status, asked.elapsed())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    etcd.signal(0, "CONT").expect("kill -CONT");
    assert!(
        answers.iter().all(|(status, _)| *status == 503),
        "{answers:?}"
    );
    let at_once = answers
        .iter()
        .filter(|(_, took)| *took < Duration::from_millis(500))
        .count();
    assert!(at_once >= 7, "{answers:?}");
    // And once etcd answers again, registrations work again.
    eventually(SOON, "a registration to work again", || {
        (register(&queen, "127.0.0.1:7200").0 == 200).then_some(())
    });
}

#[test]
fn a_queen_started_while_etcd_is_down_is_not_ready_until_she_has_read_the_registry() {
    let mut etcd = Etcd::single();
    etcd.kill(0);
    let queen = queen_on(&etcd, 0);
    for _ in 0..3 {
        let h = health(&queen);
        assert_eq!(h["status"], "Status.NOT_READY", "{h}");
        assert!(
            h["store"].as_str().unwrap().starts_with("etcd unreachable"),
            "{h}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    etcd.start(0).expect("etcd starts again");
    eventually(SOON, "the queen to be ready", || {
        (health(&queen)["status"] == "Status.READY").then_some(())
    });
    agreed_leader(&[&queen], SOON);
}

#[test]
fn a_drone_renews_with_the_next_queen_when_its_queen_stops_answering() {
    let etcd = Etcd::single();
    let mut queens = queens(&etcd, 2);
    // The drone's first queen is the leader, the one that takes its renewals: when she dies, its
    // renewals fail until the other one leads, and then go to her. The new leader knows the drone
    // from etcd, so it never needs to register again.
    let first = leader_index(&queens);
    let (gone, stays) = {
        let (a, b) = queens.split_at_mut(1);
        if first == 0 {
            (&mut a[0], &b[0])
        } else {
            (&mut b[0], &a[0])
        }
    };
    let addrs = format!("{},{}", gone.addr, stays.addr);
    let drone = Larve::start(&["--queen-host", &addrs, "--port", "0"]);
    wait_for_drones(stays, &[&drone.addr], SOON);
    drone.log_with(&[&format!("registered with queen \"{}\"", gone.addr)]);
    gone.kill();
    eventually(
        TTL + SOON,
        "the drone to renew its lease with the other queen",
        || {
            drone
                .stderr()
                .contains(&format!(
                    "renewed this drone's lease with queen \"{}\"",
                    stays.addr
                ))
                .then_some(())
        },
    );
    assert!(
        !drone.stderr().contains("registering again"),
        "{}",
        drone.stderr()
    );
    assert_eq!(submit(stays, "still served").0, 200);
    assert!(
        !stays.stderr().contains("removed drone-"),
        "{}",
        stays.stderr()
    );
}

#[test]
fn a_malformed_etcd_flag_exits_2_with_the_reason() {
    for bad in [
        "127.0.0.1:2379",
        "https://127.0.0.1:2379",
        "http://127.0.0.1:2379/v3",
    ] {
        let mut queen = Larve::spawn(&["--queen", "--port", "0", "--etcd", bad]);
        let status = queen.wait_exit(SOON).expect("it exits");
        assert_eq!(status.code(), Some(2), "{bad}");
        assert!(queen.stderr().contains("--etcd"), "{}", queen.stderr());
    }
}

#[test]
fn a_gateway_that_answers_nonsense_is_an_error_never_a_crash() {
    // Stand-ins for etcd that answer every call badly: HTML, JSON missing what etcd sends, a
    // watch stream cut mid-message, a wrong status.
    let gateways = [
        FakePeer::answering(502, "text/html", "<html><body>Bad Gateway</body></html>"),
        FakePeer::answering(200, "application/json", "{}"),
        FakePeer::answering(
            200,
            "application/json",
            "{\"result\":{\"events\":[{\"kv\":{\"key\":",
        ),
        FakePeer::answering(200, "text/html", "<h1>hello</h1>"),
    ];
    for gateway in &gateways {
        let url = format!("http://{}", gateway.addr);
        let queen = Larve::queen(&["--etcd", &url, "--leader-ttl", "1"]);
        let drone = FakePeer::answering(200, "application/json", "{}");
        for _ in 0..5 {
            let (status, reply) = register(&queen, &drone.addr);
            assert!(
                [200, 502, 503].contains(&status) && reply.is_object(),
                "{status} {reply}: a registration either worked or was refused in JSON"
            );
            assert_eq!(get(&queen.url("/healthz")).0, 200);
        }
        let log = queen.stderr();
        assert!(!log.contains("panic"), "{log}");
        assert!(!gateway.hits().is_empty(), "the queen did call the gateway");
    }
}

#[test]
fn etcd_keeps_the_contract_every_engine_keeps() {
    // The same script the memory and durable engines pass in their unit tests (store::local).
    let etcd = Etcd::single();
    let endpoint = etcd.urls().replace("http://", "");
    let config = EtcdConfig {
        endpoints: vec![endpoint.clone()],
        prefix: "/hive/".into(),
        leader_ttl: TTL,
        tls: None,
    };
    let (engine, _) = etcd::connect(&config, std::sync::Arc::new(Reachability::default()));
    let compact = |revision: i64| {
        let body = json!({"revision": revision.to_string(), "physical": true}).to_string();
        let (status, answer) = post(&format!("http://{endpoint}/v3/kv/compaction"), &body);
        assert_eq!(status, 200, "etcd's compaction: {answer}");
    };
    conformance::check(&Subject {
        engine: engine.as_ref(),
        prefix: "/conformance/",
        compact: &compact,
    });
}

#[test]
fn a_removal_fenced_by_an_older_leader_key_or_drone_revision_deletes_nothing() {
    // The txns a leader's removal is, against real etcd: what makes a paused or cut-off ex-leader
    // harmless does not depend on her clock.
    let etcd = Etcd::single();
    let gateway = Gateway::new(vec![etcd.urls().replace("http://", "")], None, SOON);
    let (leader, drone) = (b"/fence/leader".as_slice(), b"/fence/drones/a:1".as_slice());
    let lease = gateway.grant(TTL).unwrap();
    let hers = gateway
        .txn(
            &Txn::new()
                .if_absent(leader)
                .put_on_lease(leader, b"a:1", lease.id),
        )
        .unwrap();
    assert!(hers.succeeded);
    let registered = gateway.txn(&Txn::new().put(drone, b"{}")).unwrap();
    let removal = |leader_revision: i64, drone_revision: i64| {
        let txn = Txn::new()
            .if_created_at(leader, leader_revision)
            .if_modified_at(drone, drone_revision)
            .delete(drone);
        gateway.txn(&txn).unwrap().succeeded
    };

    // Her lease ends and another queen takes the key: her removal does nothing.
    gateway.revoke(lease.id).unwrap();
    let other = gateway.grant(TTL).unwrap();
    let theirs = gateway
        .txn(
            &Txn::new()
                .if_absent(leader)
                .put_on_lease(leader, b"b:1", other.id),
        )
        .unwrap();
    assert!(theirs.succeeded);
    assert!(
        !removal(hers.revision, registered.revision),
        "an ex-leader removed a drone"
    );
    // The drone registers again: a removal decided on its older revision does nothing.
    let again = gateway.txn(&Txn::new().put(drone, b"{}")).unwrap();
    assert!(
        !removal(theirs.revision, registered.revision),
        "a re-registered drone was removed"
    );
    assert_eq!(gateway.range(drone, None).unwrap().0.len(), 1);
    // The current leader, deciding on the current revision, removes it.
    assert!(removal(theirs.revision, again.revision));
    assert!(gateway.range(drone, None).unwrap().0.is_empty());
}

#[test]
fn nonsense_in_etcd_neither_crashes_a_queen_nor_stops_her_following_it() {
    let etcd = Etcd::single();
    // Patient: nothing listens at the addresses below, and they must stay listed to the end.
    let queens = [patient_queen(&etcd), patient_queen(&etcd)];
    let refs: Vec<&Larve> = queens.iter().collect();
    agreed_leader(&refs, SOON);
    // Values another writer could leave under the prefix: huge numbers, forged names, garbage.
    let gateway = Gateway::new(vec![etcd.urls().replace("http://", "")], None, SOON);
    for (address, value) in [
        (
            "127.0.0.1:7001",
            json!({"name": "drone-70", "address": "127.0.0.1:7001", "registered_at": 1e19}),
        ),
        (
            "127.0.0.1:7002",
            json!({"name": "\n[INFO] forged", "address": "127.0.0.1:7002", "registered_at": 1.0}),
        ),
        ("127.0.0.1:7003", json!("<html>")),
    ] {
        let key = format!("/hive/drones/{address}");
        let put = Txn::new().put(key.as_bytes(), value.to_string().as_bytes());
        assert!(gateway.txn(&put).unwrap().succeeded);
    }
    // A name counter that cannot go on refuses registrations, saying why, and nothing else.
    let counter = |value: &[u8]| {
        let put = Txn::new().put(b"/hive/next_id", value);
        assert!(gateway.txn(&put).unwrap().succeeded);
    };
    counter(b"18446744073709551615");
    let (status, reply) = register(&queens[1], "127.0.0.1:7004");
    assert_eq!(status, 502, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("name counter"),
        "{reply}"
    );
    counter(b"100");
    // A drone key that holds no registration does not lock its address out: it is replaced.
    assert_eq!(register(&queens[1], "127.0.0.1:7003").0, 200);

    // Both queens still follow etcd: a drone registered through one shows on the other.
    let drone = Larve::drone(&queens[0].addr);
    for queen in &queens {
        wait_for_drones(
            queen,
            &[&drone.addr, "127.0.0.1:7001", "127.0.0.1:7003"],
            SOON,
        );
        assert_eq!(get(&queen.url("/healthz")).0, 200);
        let log = queen.stderr();
        assert!(!log.contains("panic"), "{log}");
        assert!(!log.contains("\n[INFO] forged"), "{log}");
    }
}

#[test]
fn each_queen_logs_and_counts_a_registration_once() {
    let etcd = Etcd::single();
    let queens = queens(&etcd, 2);
    let drones: Vec<Larve> = (0..10).map(|_| Larve::drone(&queens[0].addr)).collect();
    let addrs: Vec<&str> = drones.iter().map(|d| d.addr.as_str()).collect();
    for queen in &queens {
        wait_for_drones(queen, &addrs, SOON);
    }
    let registered: Vec<String> = drones
        .iter()
        .map(|d| format!("at \"{}\"", d.addr))
        .collect();
    let needles: Vec<&str> = registered.iter().map(String::as_str).collect();
    let (through, other) = (queens[0].log_with(&needles), queens[1].log_with(&needles));
    for drone in &drones {
        let address = format!("at \"{}\"", drone.addr);
        let lines = |log: &str, what: &str| {
            log.lines()
                .filter(|l| l.contains(&address) && l.contains(what))
                .count()
        };
        assert_eq!(lines(&through, "INFO] registered drone-"), 1, "{through}");
        assert_eq!(lines(&through, "registered again"), 0, "{through}");
        assert_eq!(lines(&through, "registered through"), 0, "{through}");
        assert_eq!(lines(&other, "registered through"), 1, "{other}");
    }
    assert_eq!(metrics(&queens[0])["hive_drones_registered_total"], 10.0);
    assert_eq!(metrics(&queens[1])["hive_drones_registered_total"], 0.0);
}

/// Creates a task through `queen`; returns its id.
fn create_task(queen: &Larve, body: Value) -> String {
    let (status, _, task) = call(
        "POST",
        &queen.url("/tasks"),
        Some(&body.to_string()),
        None,
        &[],
    );
    assert_eq!(status, 202, "{task}");
    task["id"].as_str().expect("an id").to_string()
}

#[test]
fn tasks_live_in_etcd_any_queen_serves_them_and_a_failover_loses_none() {
    let etcd = Etcd::single();
    let queens = queens(&etcd, 3);
    let leader = leader_index(&queens);
    let hosts: Vec<&str> = queens.iter().map(|q| q.addr.as_str()).collect();
    let hosts = hosts.join(",");
    let drones: Vec<Larve> = (0..2)
        .map(|_| {
            Larve::start(&[
                "--queen-host",
                &hosts,
                "--port",
                "0",
                "--allow-exec",
                "--slots",
                "4",
            ])
        })
        .collect();
    let addresses: Vec<&str> = drones.iter().map(|d| d.addr.as_str()).collect();
    for queen in &queens {
        wait_for_drones(queen, &addresses, SOON);
    }
    // Created through every queen, followers included; each answers 202 once it is stored.
    let ids: Vec<String> = (0..60)
        .map(|i| create_task(&queens[i % 3], json!({"command": ["sleep", "0.2"]})))
        .collect();
    let mut queens = queens;
    queens[leader].kill();
    let survivors: Vec<&Larve> = queens
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, q)| q)
        .collect();
    for id in &ids {
        let done = eventually(SOON + TTL * 3, &format!("task {id} to end"), || {
            let (_, task) = get(&survivors[0].url(&format!("/tasks/{id}?wait=5")));
            (task["state"] != "pending" && task["state"] != "running").then_some(task)
        });
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(
            done["attempts"].as_array().unwrap().len(),
            1,
            "no extra attempt without a lost drone: {done}"
        );
        // The other survivor serves the same task from its own copy, once that copy has caught
        // up: each queen follows etcd's watch on its own.
        let (_, same) = get(&survivors[1].url(&format!("/tasks/{id}?wait=5")));
        assert_eq!(same["state"], "succeeded");
    }
    let (_, page) = get(&survivors[1].url("/tasks?limit=1000"));
    assert_eq!(
        page["tasks"].as_array().unwrap().len(),
        ids.len(),
        "every task is kept"
    );
}

#[test]
fn with_etcd_unreachable_a_submit_names_the_store_as_the_cause() {
    let nobody = format!("http://127.0.0.1:{}", free_port().expect("a free port"));
    let queen = Larve::queen(&["--etcd", &nobody]);
    let answer = eventually(SOON, "the queen to find etcd unreachable", || {
        let answer = submit(&queen, "hello");
        (answer.0 == 503 && answer.1["error"].as_str()?.contains("store")).then_some(answer)
    });
    let said = answer.1["error"].as_str().unwrap();
    assert!(said.contains("cannot be reached"), "{said}");
    assert!(!said.contains("is any drone registered"), "{said}");
}

#[test]
fn a_leader_stopped_cleanly_hands_over_at_once_not_a_lease_later() {
    // A lease long enough that an expiry could not pass for the hand-over: without a
    // resignation, the next queen would lead only after 6.7 to 10 s.
    let etcd = Etcd::single();
    let urls = etcd.urls();
    let mut queens: Vec<Larve> = (0..3)
        .map(|_| Larve::queen(&["--etcd", &urls, "--leader-ttl", "10"]))
        .collect();
    let leader = leader_index(&queens);
    let old = queens[leader].addr.clone();
    let stopped = Instant::now();
    queens[leader].stop().expect("kill -TERM");
    let status = queens[leader].wait_exit(SOON).expect("it exits");
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
    let survivors: Vec<&Larve> = queens
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, q)| q)
        .collect();
    let new = agreed_leader(&survivors, SOON);
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "the hand-over took {took:?}");
    assert!(queens[leader].stderr().contains("resigns after leading"));
    let winner = queens.iter().find(|q| q.addr == new).unwrap();
    winner.log_with(&[&format!("{old:?} led before, and it stopped cleanly")]);
}
