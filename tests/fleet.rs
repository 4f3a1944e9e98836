//! Steering the fleet, as a user sees it: drones with labels (`--label`, and the `hive.*` ones they
//! find themselves), tasks with constraints that run only where those hold, and `each_drone`, one
//! task on every drone that meets them, as one group.

mod common;

use std::time::Duration;

use common::etcd::Etcd;
use common::*;
use serde_json::{Value, json};

/// A queen with fast heartbeat settings and a short limit for calls to drones.
fn queen() -> Larve {
    let mut args = FAST.to_vec();
    args.extend(["--task-timeout", "1"]);
    Larve::queen(&args)
}

/// A drone of `queen` that runs commands in 2 slots, labelled `labels` (`KEY=VALUE` each), once
/// the queen lists it.
fn labelled_drone(queen: &Larve, labels: &[&str]) -> Larve {
    let mut args = vec![
        "--queen-host",
        &queen.addr,
        "--port",
        "0",
        "--allow-exec",
        "--slots",
        "2",
    ];
    for label in labels {
        args.extend(["--label", label]);
    }
    let drone = Larve::start(&args);
    eventually(SOON, "the queen to list the drone", || {
        drone_names(queen).contains_key(&drone.addr).then_some(())
    });
    drone
}

/// What the queen's `GET /drones` says of `drone`.
fn drone_info(queen: &Larve, drone: &Larve) -> Value {
    let (status, drones) = get(&queen.url("/drones"));
    assert_eq!(status, 200, "{drones}");
    drones
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == drone.addr.as_str())
        .cloned()
        .expect("the drone is listed")
}

/// `POST /tasks` with `body`: status and answer.
fn create(queen: &Larve, body: Value) -> (u16, Value) {
    post(&queen.url("/tasks"), &body.to_string())
}

/// Task `id` once it has ended.
fn ended(queen: &Larve, id: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("task {id} to end"),
        || {
            let (status, task) = get(&queen.url(&format!("/tasks/{id}?wait=5")));
            assert_eq!(status, 200, "{task}");
            ["succeeded", "failed", "cancelled"]
                .contains(&task["state"].as_str()?)
                .then_some(task)
        },
    )
}

/// The ids of a page of `GET /tasks`.
fn ids(page: &Value) -> Vec<String> {
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn drones_show_their_labels_and_the_ones_they_find_themselves() {
    let queen = queen();
    let drone = labelled_drone(&queen, &["zone=eu", "example.com/rack=r7"]);
    let info = drone_info(&queen, &drone);
    let labels = &info["labels"];
    assert_eq!(labels["zone"], "eu", "{info}");
    assert_eq!(labels["example.com/rack"], "r7");
    assert_eq!(labels["hive.os"], std::env::consts::OS);
    assert_eq!(labels["hive.arch"], std::env::consts::ARCH);
    assert_eq!(labels["hive.name"], info["name"]);
    assert_eq!(
        labels["hive.cpus"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        info["cpus"].as_f64().unwrap(),
        "the cpus it offers tasks"
    );
    assert_eq!(
        labels["hive.memory_mb"].as_str().unwrap(),
        info["memory_mb"].to_string()
    );
    assert!(labels["hive.hostname"].is_string(), "{labels}");

    let plain = labelled_drone(&queen, &[]);
    let (_, eu) = get(&queen.url("/drones?label=zone=eu"));
    let (_, not_eu) = get(&queen.url("/drones?label=zone!=eu&label=hive.os"));
    let addresses = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(addresses(&eu), [drone.addr.as_str()]);
    assert_eq!(addresses(&not_eu), [plain.addr.as_str()]);
    let (status, answer) = get(&queen.url("/drones?label=zone=e%20u"));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"e u\""),
        "{answer}"
    );
}

#[test]
fn constraints_place_tasks_only_on_drones_that_meet_them() {
    let queen = queen();
    let eu = labelled_drone(&queen, &["zone=eu"]);
    let eu_gpu = labelled_drone(&queen, &["zone=eu", "gpu=a100"]);
    let us_gpu = labelled_drone(&queen, &["zone=us", "gpu=a100"]);
    let name = |drone: &Larve| drone_info(&queen, drone)["name"].clone();
    let cases: Vec<(Value, Vec<Value>)> = vec![
        (json!(["zone=eu"]), vec![name(&eu), name(&eu_gpu)]),
        (json!(["gpu"]), vec![name(&eu_gpu), name(&us_gpu)]),
        (json!(["zone=eu", "gpu"]), vec![name(&eu_gpu)]),
        (json!(["gpu", "zone!=eu"]), vec![name(&us_gpu)]),
        (
            json!([format!("hive.name={}", name(&eu).as_str().unwrap())]),
            vec![name(&eu)],
        ),
    ];
    let mut created = Vec::new();
    for (constraints, allowed) in &cases {
        for _ in 0..4 {
            let (status, task) = create(
                &queen,
                json!({"command": ["true"], "constraints": constraints}),
            );
            assert_eq!(status, 202, "{task}");
            assert_eq!(&task["constraints"], constraints, "kept as written");
            created.push((task["id"].as_str().unwrap().to_string(), allowed));
        }
    }
    for (id, allowed) in created {
        let task = ended(&queen, &id);
        assert_eq!(task["state"], "succeeded", "{task}");
        let ran_on = &task["attempts"][0]["drone"];
        assert!(
            allowed.contains(ran_on),
            "{id} ran on {ran_on}, not one of {allowed:?}"
        );
    }
}

#[test]
fn a_task_no_drone_meets_stays_pending_naming_the_constraint_and_holds_up_nothing() {
    let queen = queen();
    let _eu = labelled_drone(&queen, &["zone=eu", "gpu=a100"]);
    let impossible: Vec<String> = (0..80)
        .map(|_| {
            let (status, task) = create(
                &queen,
                json!({"command": ["true"], "constraints": ["gpu", "zone=ap"]}),
            );
            assert_eq!(status, 202, "{task}");
            task["id"].as_str().unwrap().to_string()
        })
        .collect();
    let (_, possible) = create(&queen, json!({"command": ["true"], "constraints": ["gpu"]}));
    let possible = ended(&queen, possible["id"].as_str().unwrap());
    assert_eq!(
        possible["state"], "succeeded",
        "the tasks no drone meets, ahead of it in the queue, did not hold it up: {possible}"
    );
    let (_, task) = get(&queen.url(&format!("/tasks/{}", impossible[0])));
    assert_eq!(task["state"], "pending");
    let reason = task["reason"].as_str().unwrap();
    assert!(
        reason.contains("no drone meets the constraint \"zone=ap\""),
        "{reason}"
    );
    let (_, page) = get(&queen.url("/tasks?state=pending&limit=1000"));
    for task in page["tasks"].as_array().unwrap() {
        assert!(
            task["reason"].as_str().unwrap().contains("zone=ap"),
            "{task}"
        );
    }

    // A drone that meets it comes: it runs.
    let _ap = labelled_drone(&queen, &["zone=ap", "gpu=h100"]);
    for id in &impossible[..3] {
        assert_eq!(ended(&queen, id)["state"], "succeeded");
    }
}

#[test]
fn each_drone_runs_once_on_every_matching_drone_as_one_group() {
    let queen = queen();
    let a = labelled_drone(&queen, &["zone=eu"]);
    let b = labelled_drone(&queen, &["zone=eu"]);
    let _c = labelled_drone(&queen, &["zone=us"]);
    let spec = json!({
        "command": ["sh", "-c", "echo $HIVE_TASK_ID on $HIVE_DRONE_ADDRESS"],
        "constraints": ["zone=eu"],
        "each_drone": true,
        "id": "restart-agent",
    });
    let (status, headers, group) = call(
        "POST",
        &queen.url("/tasks"),
        Some(&spec.to_string()),
        None,
        &["Location"],
    );
    assert_eq!(status, 202, "{group}");
    assert_eq!(headers[0].as_deref(), Some("/tasks?group=restart-agent"));
    let members = group.as_array().expect("a list of tasks");
    let mut expected: Vec<(String, String)> = [&a, &b]
        .iter()
        .map(|drone| {
            let name = drone_info(&queen, drone)["name"]
                .as_str()
                .unwrap()
                .to_string();
            (format!("restart-agent.{name}"), drone.addr.clone())
        })
        .collect();
    expected.sort();
    let mut made: Vec<String> = members
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_string())
        .collect();
    made.sort();
    assert_eq!(
        made,
        expected
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    );
    for (id, address) in &expected {
        let task = ended(&queen, id);
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["group"], "restart-agent");
        assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "once");
        assert_eq!(task["stdout"], format!("{id} on {address}\n"));
        let drone = id.split_once('.').unwrap().1;
        assert_eq!(
            task["constraints"],
            json!(["zone=eu", format!("hive.name={drone}")]),
            "pinned to its drone, and shown so"
        );
    }
    let (_, listed) = get(&queen.url("/tasks?group=restart-agent"));
    let mut listed = ids(&listed);
    listed.sort();
    assert_eq!(listed, made);
    let (_, all) = get(&queen.url("/tasks"));
    assert_eq!(ids(&all).len(), 2);

    // Idempotent on the id, as a single task is: the group as it was made, even with a drone
    // that came since.
    let _late = labelled_drone(&queen, &["zone=eu"]);
    let (status, again) = create(&queen, spec.clone());
    assert_eq!(status, 200, "{again}");
    let mut again: Vec<String> = again
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    again.sort();
    assert_eq!(again, made);
    let mut other = spec.clone();
    other["command"] = json!(["true"]);
    let (status, answer) = create(&queen, other);
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = create(&queen, json!({"command": ["true"], "id": "restart-agent"}));
    assert_eq!(status, 409, "a group's id is not a task's: {answer}");

    // No drone meets it: nothing is made, and the answer says which constraint.
    let (status, answer) = create(
        &queen,
        json!({"command": ["true"], "constraints": ["zone=eu", "gpu"], "each_drone": true, "id": "nowhere"}),
    );
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("\"gpu\""), "{error}");
    let (_, nothing) = get(&queen.url("/tasks?group=nowhere"));
    assert_eq!(nothing["tasks"], json!([]));
    let (_, all) = get(&queen.url("/tasks"));
    assert_eq!(ids(&all).len(), 2, "nothing was created");
}

#[test]
fn labels_and_constraints_out_of_the_alphabet_are_refused_and_change_nothing() {
    let queen = queen();
    for (label, needle) in [
        ("zone=e u", "--label: the value \"e u\""),
        ("zone", "--label: \"zone\" is not KEY=VALUE"),
        ("hive.os=plan9", "Hive's own"),
        (&format!("k={}", "v".repeat(64)), "--label: the value"),
    ] {
        let mut drone =
            Larve::spawn(&["--queen-host", &queen.addr, "--port", "0", "--label", label]);
        let status = drone.wait_exit(SOON).expect("it exits");
        assert_eq!(status.code(), Some(2), "{label}");
        let said = drone.stderr();
        assert!(said.contains(needle), "{label}: {said}");
    }
    for (constraints, needle) in [
        (json!(["zone=e u"]), "\"zone=e u\": the value \"e u\""),
        (json!(["zone=eu", "=eu"]), "\"=eu\": the key \"\""),
        (json!(["zone=é"]), "the value \"é\""),
        (json!("zone=eu"), "\"constraints\" must be an array"),
    ] {
        let (status, answer) = create(
            &queen,
            json!({"command": ["true"], "constraints": constraints}),
        );
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(needle), "{constraints}: {error}");
    }
    let (_, page) = get(&queen.url("/tasks"));
    assert_eq!(page["tasks"], json!([]));
    for labels in [
        json!({"zone": "e u"}),
        json!({"hive.name": "drone-0"}),
        json!({"zone": 5}),
        json!(["zone=eu"]),
    ] {
        let body = json!({"address": "127.0.0.1:1", "labels": labels});
        let (status, answer) = post(&queen.url("/register"), &body.to_string());
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("\"labels\""),
            "{answer}"
        );
    }
    let (_, drones) = get(&queen.url("/drones"));
    assert_eq!(drones, json!([]));
}

/// A queen of the hive that keeps its state in `etcd`, with a lease of 2 s.
fn queen_on(etcd: &Etcd) -> Larve {
    let urls = etcd.urls();
    let mut args = vec!["--etcd", &urls, "--leader-ttl", "2", "--task-timeout", "1"];
    args.extend_from_slice(FAST);
    Larve::queen(&args)
}

#[test]
fn every_queen_and_a_new_leader_place_by_the_labels_in_the_store() {
    let etcd = Etcd::single();
    let mut queens = [queen_on(&etcd), queen_on(&etcd)];
    let eu = labelled_drone(&queens[1], &["zone=eu"]);
    let _us = labelled_drone(&queens[1], &["zone=us"]);
    for queen in &queens {
        wait_for_drones(queen, &[&eu.addr, &_us.addr], SOON);
        assert_eq!(drone_info(queen, &eu)["labels"]["zone"], "eu");
    }
    let eu_name = drone_info(&queens[0], &eu)["name"].clone();
    let placed_through = |queen: &Larve| {
        let (status, task) = create(
            queen,
            json!({"command": ["true"], "constraints": ["zone=eu"]}),
        );
        assert_eq!(status, 202, "{task}");
        let task = ended(queen, task["id"].as_str().unwrap());
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["attempts"][0]["drone"], eu_name);
    };
    placed_through(&queens[0]);
    placed_through(&queens[1]);

    let leader = eventually(SOON, "a leader", || {
        let (_, health) = get(&queens[0].url("/healthz"));
        health["leader"].as_str().map(String::from)
    });
    let (dead, alive) = if queens[0].addr == leader {
        (0, 1)
    } else {
        (1, 0)
    };
    queens[dead].kill();
    eventually(Duration::from_secs(10), "the other queen to lead", || {
        let (_, health) = get(&queens[alive].url("/healthz"));
        (health["role"] == "leader").then_some(())
    });
    placed_through(&queens[alive]);
}
