//! `GET /events` as a client sees it: a task's life in order, a stream resumed after a reconnect
//! with nothing missed or repeated, 410 for changes no longer held, 400 for bad input, `larve
//! events` and `ls --watch` following it, and the stream going on across a leader's failover.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use common::etcd::Etcd;
use common::*;
use hive_support::workdir::WorkDir;
use serde_json::{Value, json};

/// The longest one stream is read in these tests: a line that does not come by then is a failure.
const STREAM_LIFETIME: Duration = Duration::from_secs(20);

/// The leader's lease of the failover test, in seconds.
const TTL_SECS: u64 = 2;

/// One `GET /events` answer, read line by line.
struct Stream {
    lines: BufReader<Box<dyn Read + Send>>,
}

/// `GET /events?QUERY` on `queen`: the stream of a 200, or the status and JSON answer of another.
fn events(queen: &Larve, query: &str) -> Result<Stream, (u16, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(STREAM_LIFETIME))
        .build()
        .into();
    let answer = agent
        .get(queen.url(&format!("/events?{query}")))
        .call()
        .expect("an answer");
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    if status != 200 {
        let text = body.read_to_string().expect("a body");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        return Err((status, value));
    }
    let reader: Box<dyn Read + Send> = Box::new(body.into_reader());
    Ok(Stream {
        lines: BufReader::new(reader),
    })
}

/// `GET /events?QUERY`, which must answer 200.
fn follow(queen: &Larve, query: &str) -> Stream {
    events(queen, query)
        .unwrap_or_else(|(status, answer)| panic!("GET /events?{query}: {status} {answer}"))
}

/// `GET /events?QUERY`, which must be refused: its status and answer.
fn refused(queen: &Larve, query: &str) -> (u16, Value) {
    match events(queen, query) {
        Ok(_) => panic!("GET /events?{query} streams"),
        Err(refused) => refused,
    }
}

impl Stream {
    /// The next change (keep-alive lines skipped); fails the test when none comes in time.
    fn next(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let read = self.lines.read_line(&mut line);
            match read {
                Ok(0) => panic!("the stream ended"),
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => return serde_json::from_str(&line).expect("a JSON line"),
                Err(e) => panic!("no change came: {e}"),
            }
        }
    }
}

/// The revision `GET /tasks` reflects.
fn revision(queen: &Larve) -> i64 {
    let (status, page) = get(&queen.url("/tasks"));
    assert_eq!(status, 200, "{page}");
    page["revision"].as_i64().expect("a revision")
}

/// Creates a task running `command`; its id.
fn create(queen: &Larve, command: &[&str]) -> String {
    let (status, task) = post(
        &queen.url("/tasks"),
        &json!({ "command": command }).to_string(),
    );
    assert!(status == 202, "{status} {task}");
    task["id"].as_str().expect("an id").to_string()
}

fn exec_drone(queen: &Larve) -> Larve {
    Larve::start(&["--queen-host", &queen.addr, "--port", "0", "--allow-exec"])
}

/// `(rev, kind, id, type)` of each event, to compare streams.
fn keys(events: &[Value]) -> Vec<(i64, String, String, String)> {
    events
        .iter()
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default().to_string();
            (
                e["rev"].as_i64().unwrap(),
                text("kind"),
                text("id"),
                text("type"),
            )
        })
        .collect()
}

#[test]
fn a_task_is_seen_created_then_running_then_succeeded_in_revision_order() {
    let queen = Larve::fast_queen();
    let _drone = exec_drone(&queen);
    let mut stream = follow(&queen, &format!("after={}&kind=task", revision(&queen)));
    let id = create(&queen, &["sh", "-c", "echo hello"]);

    let mut seen = Vec::new();
    loop {
        let event = stream.next();
        assert_eq!(
            event["kind"], "task",
            "kind=task brings only tasks: {event}"
        );
        assert_eq!(event["id"], id.as_str(), "only this task changes: {event}");
        let state = event["object"]["state"].as_str().unwrap().to_string();
        seen.push((event["rev"].as_i64().unwrap(), event["type"].clone(), state));
        if seen.last().unwrap().2 == "succeeded" {
            break;
        }
    }
    assert_eq!(seen[0].1, "created", "{seen:?}");
    assert_eq!(seen[0].2, "pending", "{seen:?}");
    assert!(
        seen[1..].iter().all(|(_, kind, _)| kind == "updated"),
        "{seen:?}"
    );
    let states: Vec<&str> = seen.iter().map(|(_, _, state)| state.as_str()).collect();
    let running = states.iter().position(|s| *s == "running");
    assert!(running.is_some(), "it was seen running: {states:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions grow: {seen:?}"
    );
    // The object is the task as GET /tasks lists it.
    let (_, page) = get(&queen.url("/tasks"));
    assert_eq!(page["tasks"][0]["state"], "succeeded");
    assert_eq!(page["revision"].as_i64().unwrap(), seen.last().unwrap().0);
}

#[test]
fn a_stream_resumed_after_a_reconnect_misses_and_repeats_nothing() {
    // No drone: each task is created, and nothing more, one revision each.
    let queen = Larve::fast_queen();
    let start = revision(&queen);
    let mut whole = follow(&queen, &format!("after={start}"));
    let mut ids: Vec<String> = (0..6).map(|_| create(&queen, &["true"])).collect();

    let mut first = follow(&queen, &format!("after={start}"));
    let read: Vec<Value> = (0..3).map(|_| first.next()).collect();
    drop(first);
    ids.extend((0..3).map(|_| create(&queen, &["true"])));
    let last = read.last().unwrap()["rev"].as_i64().unwrap();
    let mut second = follow(&queen, &format!("after={last}"));
    let rest: Vec<Value> = (0..6).map(|_| second.next()).collect();

    let expected: Vec<Value> = (0..9).map(|_| whole.next()).collect();
    let resumed: Vec<Value> = read.into_iter().chain(rest).collect();
    assert_eq!(keys(&resumed), keys(&expected));
    let created: Vec<&str> = expected.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(created, ids, "every task once, in the order created");
}

#[test]
fn a_revision_no_longer_held_answers_410_saying_where_to_list_again() {
    let dir = WorkDir::create("hive-events").expect("a data dir");
    let data = dir.path().to_str().unwrap().to_string();
    let mut queen = Larve::queen(&["--data-dir", &data]);
    create(&queen, &["true"]);
    let before = revision(&queen);
    queen.kill();
    // Started again on her state: the changes before it were not seen one by one.
    let queen = Larve::queen(&["--data-dir", &data]);
    let now = revision(&queen);
    assert!(now >= before, "{now} < {before}");

    let (status, answer) = refused(&queen, "after=0");
    assert_eq!(status, 410, "{answer}");
    assert_eq!(answer["oldest_after"].as_i64(), Some(now), "{answer}");
    let said = answer["error"].as_str().unwrap();
    assert!(said.contains("list again"), "{said}");

    // Listed again: followed from there.
    let mut stream = follow(&queen, &format!("after={now}"));
    let id = create(&queen, &["true"]);
    assert_eq!(stream.next()["id"], id.as_str());

    // A revision she never reached (another hive's, or her memory's before a restart).
    let (status, answer) = refused(&queen, &format!("after={}", now + 1000));
    assert_eq!(status, 410, "{answer}");

    // larve events says so, and fails.
    let mut client = Larve::spawn(&["events", "--after", "0", "--queen-host", &queen.addr]);
    let exit = client.wait_exit(SOON).expect("larve events to exit");
    assert_eq!(exit.code(), Some(1));
    let said = client.stderr();
    assert!(
        said.contains("410") && said.contains("list again"),
        "{said}"
    );
}

#[test]
fn bad_kind_or_after_answers_400_naming_the_part() {
    let queen = Larve::fast_queen();
    for (query, part) in [
        ("kind=tasks", "kind: \"tasks\""),
        ("kind=", "kind"),
        ("after=-1", "after: \"-1\""),
        ("after=12abc", "after: \"12abc\""),
        ("after=", "after"),
    ] {
        let (status, answer) = refused(&queen, query);
        assert_eq!(status, 400, "{query}: {answer}");
        let said = answer["error"].as_str().unwrap();
        assert!(said.starts_with(part), "{query}: {said}");
    }
    // Both kinds together are fine.
    follow(&queen, "kind=task,drone&after=0");
}

#[test]
fn larve_events_and_ls_watch_follow_the_stream() {
    let queen = Larve::fast_queen();
    let events = Larve::spawn(&["events", "--kind", "task", "--queen-host", &queen.addr]);
    let tasks = Larve::spawn(&["task", "ls", "--watch", "--queen-host", &queen.addr]);
    let drones = Larve::spawn(&["drone", "ls", "--watch", "--queen-host", &queen.addr]);
    // Each has drawn (or opened its stream) before anything changes.
    eventually(SOON, "the tables drawn", || {
        (tasks.stdout().contains("watching") && drones.stdout().contains("watching")).then_some(())
    });
    eventually(SOON, "larve events to have opened its stream", || {
        let held = metrics(&queen).get("hive_front_held_requests").copied();
        (held >= Some(3.0)).then_some(())
    });

    let drone = exec_drone(&queen);
    let id = create(&queen, &["sh", "-c", "echo watched"]);
    eventually(
        SOON,
        "the watched tables to show the drone and the task",
        || {
            let table = tasks.stdout();
            let drawn = table
                .rsplit("\x1b[2J")
                .next()
                .unwrap_or_default()
                .to_string();
            let shown = drawn.contains(&id) && drawn.contains("succeeded");
            let drones = drones.stdout();
            let last = drones.rsplit("\x1b[2J").next().unwrap_or_default();
            (shown && last.contains(&drone.addr)).then_some(())
        },
    );
    eventually(SOON, "larve events to print the task's life", || {
        let lines: Vec<Value> = events
            .stdout()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        let states: Vec<&str> = lines
            .iter()
            .filter(|e| e["id"] == id.as_str())
            .filter_map(|e| e["object"]["state"].as_str())
            .collect();
        (states.first() == Some(&"pending") && states.last() == Some(&"succeeded")).then_some(())
    });
}

/// A queen of the hive in `etcd`, with a short lease.
fn etcd_queen(etcd: &Etcd) -> Larve {
    let (urls, ttl) = (etcd.urls(), TTL_SECS.to_string());
    let mut args = vec!["--etcd", &urls, "--leader-ttl", &ttl];
    args.extend_from_slice(FAST);
    Larve::queen(&args)
}

#[test]
fn the_stream_goes_on_across_a_leader_failover_on_etcd() {
    let etcd = Etcd::single();
    let mut queens = [etcd_queen(&etcd), etcd_queen(&etcd)];
    let leader = eventually(SOON, "a leader", || {
        let (_, health) = get(&queens[0].url("/healthz"));
        let leader = health["leader"].as_str()?.to_string();
        queens.iter().position(|q| q.addr == leader)
    });
    let other = 1 - leader;
    let start = revision(&queens[leader]).to_string();
    // One client follows the leader first, then whoever answers; another follows the other
    // queen from the start.
    let hosts = format!("{},{}", queens[leader].addr, queens[other].addr);
    let through = Larve::spawn(&[
        "events",
        "--kind",
        "task",
        "--after",
        &start,
        "--queen-host",
        &hosts,
    ]);
    let steady = Larve::spawn(&[
        "events",
        "--kind",
        "task",
        "--after",
        &start,
        "--queen-host",
        &queens[other].addr,
    ]);
    let printed = |client: &Larve| -> Vec<Value> {
        client
            .stdout()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    };

    let mut ids: Vec<String> = (0..3).map(|_| create(&queens[leader], &["true"])).collect();
    eventually(SOON, "the first three tasks followed", || {
        (printed(&through).len() >= 3).then_some(())
    });
    queens[leader].kill();
    let survivor = &queens[other];
    eventually(
        SOON + Duration::from_secs(TTL_SECS),
        "the other queen to lead",
        || {
            let (_, health) = get(&survivor.url("/healthz"));
            (health["role"] == "leader").then_some(())
        },
    );
    ids.extend((0..3).map(|_| create(survivor, &["true"])));

    for client in [&through, &steady] {
        let lines = eventually(SOON, "all six tasks followed", || {
            let lines = printed(client);
            let seen: BTreeSet<&str> = lines.iter().filter_map(|e| e["id"].as_str()).collect();
            ids.iter()
                .all(|id| seen.contains(id.as_str()))
                .then_some(lines)
        });
        let created: Vec<&str> = lines
            .iter()
            .filter(|e| e["type"] == "created")
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(created, ids, "each created once, in order: {lines:?}");
        let revs: Vec<i64> = lines.iter().map(|e| e["rev"].as_i64().unwrap()).collect();
        let mut keys: Vec<(i64, &str)> = lines
            .iter()
            .map(|e| (e["rev"].as_i64().unwrap(), e["id"].as_str().unwrap()))
            .collect();
        let printed_count = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), printed_count, "nothing twice: {lines:?}");
        assert!(revs.windows(2).all(|w| w[0] <= w[1]), "in order: {revs:?}");
    }
}
