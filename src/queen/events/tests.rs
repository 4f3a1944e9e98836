use std::collections::BTreeMap;

use super::*;
use crate::tasks::{Spec, State};

fn spec(env: &[(&str, &str)]) -> Spec {
    Spec {
        command: vec!["true".into()],
        slots: 1,
        timeout_s: 60.0,
        retries: 0,
        retry_delay_s: 1.0,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        resources: Default::default(),
        kill_timeout_s: 5.0,
        constraints: Vec::new(),
    }
}

/// The line of task `id` changed at `rev`, its output `x`.
fn task_line(rev: i64, id: &str) -> Line {
    let mut changed = crate::tasks::Task::new(id.into(), spec(&[]), 1.0);
    changed.stdout = "x".repeat(100);
    super::task(rev, Type::of_put(rev, rev), &changed)
}

fn limits(bytes: usize, lag_bytes: u64) -> Limits {
    Limits {
        bytes,
        lines: 1000,
        lag_bytes,
    }
}

/// The JSON lines in `bytes`.
fn parsed(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `(rev, id)` of each line in `bytes`.
fn revs(bytes: &[u8]) -> Vec<(i64, String)> {
    parsed(bytes)
        .iter()
        .map(|line| {
            (
                line["rev"].as_i64().unwrap(),
                line["id"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn a_line_is_the_change_as_a_listing_shows_it() {
    let mut task = crate::tasks::Task::new("build-7".into(), spec(&[("KEY", "secret")]), 1.0);
    task.stdout = "output is not in a listing".into();
    task.state = State::Running;
    let line = super::task(9, Type::Updated, &task);
    let full = &parsed(&line.full)[0];
    assert_eq!(
        (&full["rev"], &full["kind"], &full["id"], &full["type"]),
        (
            &json!(9),
            &json!("task"),
            &json!("build-7"),
            &json!("updated")
        )
    );
    assert_eq!(full["object"]["state"], "running");
    assert_eq!(full["object"]["env"]["KEY"], "secret");
    assert!(full["object"].get("stdout").is_none(), "{full}");
    let redacted = &parsed(line.version(false))[0];
    assert_eq!(redacted["object"]["env"]["KEY"], "***");
    assert!(line.full.ends_with(b"}\n"));

    let gone = deleted(10, Kind::Drone, "127.0.0.1:5001");
    assert_eq!(
        parsed(&gone.full)[0],
        json!({"rev": 10, "kind": "drone", "id": "127.0.0.1:5001", "type": "deleted",
               "object": {"address": "127.0.0.1:5001"}})
    );
    assert_eq!(gone.version(false), gone.version(true));
    assert_eq!(Type::of_put(4, 4), Type::Created);
    assert_eq!(Type::of_put(4, 6), Type::Updated);
}

#[test]
fn kinds_parse_as_the_query_gives_them() {
    assert_eq!(Kinds::parse("task,drone"), Ok(Kinds::ALL));
    let drones = Kinds::parse("drone").unwrap();
    assert!(drones.wants(Kind::Drone) && !drones.wants(Kind::Task));
    for bad in ["", "tasks", "task,", "task,node"] {
        let why = Kinds::parse(bad).unwrap_err();
        assert!(why.starts_with("kind: "), "{bad}: {why}");
    }
    assert_eq!(parse_after("42"), Ok(42));
    for bad in ["", "-1", "4.2", "x", "99999999999999999999"] {
        assert!(
            parse_after(bad).unwrap_err().starts_with("after: "),
            "{bad}"
        );
    }
}

#[test]
fn a_follower_gets_every_change_after_its_revision_in_order_a_revision_never_split() {
    let mut history = History::new(limits(1 << 20, 1 << 20));
    history.listed(10);
    history.push(vec![task_line(11, "a"), task_line(11, "b")], 11);
    history.push(vec![task_line(12, "c")], 14);
    assert_eq!(
        history.revision(),
        14,
        "changes that make no line move it too"
    );
    let mut cursor = history.cursor(Some(10)).unwrap();
    let mut out = Vec::new();
    // A piece of one byte still holds revision 11 whole.
    let read = history.read(&mut cursor, Kinds::ALL, true, 1, &mut out);
    assert_eq!(read, Read::Lines { more: true });
    assert_eq!(revs(&out), [(11, "a".into()), (11, "b".into())]);
    assert_eq!(cursor.after, 11);
    out.clear();
    assert_eq!(
        history.read(&mut cursor, Kinds::ALL, true, 1, &mut out),
        Read::Lines { more: false }
    );
    assert_eq!(revs(&out), [(12, "c".into())]);
    out.clear();
    assert_eq!(
        history.read(&mut cursor, Kinds::ALL, true, 1, &mut out),
        Read::Nothing
    );
    // Resuming after 11 gives just what came after it.
    let mut resumed = history.cursor(Some(11)).unwrap();
    history.read(&mut resumed, Kinds::ALL, true, 1 << 20, &mut out);
    assert_eq!(revs(&out), [(12, "c".into())]);
    // From now on: nothing of the past.
    let mut now = history.cursor(None).unwrap();
    assert_eq!(now.after, 14);
    assert_eq!(
        history.read(&mut now, Kinds::ALL, true, 1 << 20, &mut Vec::new()),
        Read::Nothing
    );
    // A line older than the history's revision cannot come after it.
    history.push(vec![task_line(13, "late")], 13);
    assert_eq!(
        history.read(&mut now, Kinds::ALL, true, 1 << 20, &mut Vec::new()),
        Read::Nothing
    );
}

#[test]
fn a_follower_of_one_kind_passes_the_others_and_moves_on() {
    let mut history = History::new(limits(1 << 20, 1 << 20));
    history.listed(1);
    history.push(vec![task_line(2, "a"), deleted(3, Kind::Drone, "h:1")], 3);
    let drones = Kinds::parse("drone").unwrap();
    let mut cursor = history.cursor(Some(1)).unwrap();
    let mut out = Vec::new();
    history.read(&mut cursor, drones, true, 1 << 20, &mut out);
    assert_eq!(revs(&out), [(3, "h:1".into())]);
    history.push(vec![task_line(4, "b")], 4);
    out.clear();
    assert_eq!(
        history.read(&mut cursor, drones, true, 1 << 20, &mut out),
        Read::Nothing
    );
    assert_eq!(cursor.after, 4, "it has seen revision 4 whole");
}

#[test]
fn a_full_history_forgets_its_oldest_changes_and_says_so() {
    let size = task_line(2, "a").size();
    let mut history = History::new(limits(size * 2, 1 << 20));
    history.listed(1);
    let mut early = history.cursor(Some(1)).unwrap();
    for rev in 2..=5 {
        history.push(vec![task_line(rev, "a")], rev);
    }
    assert_eq!(
        history.cursor(Some(2)),
        Err(Unserved::Gone { oldest_after: 3 })
    );
    assert_eq!(history.cursor(Some(3)).unwrap().after, 3);
    assert_eq!(
        history.read(&mut early, Kinds::ALL, true, 1 << 20, &mut Vec::new()),
        Read::Gone { oldest_after: 3 }
    );
    assert_eq!(
        history.cursor(Some(6)),
        Err(Unserved::Ahead { revision: 5 })
    );
}

#[test]
fn a_follower_too_far_behind_is_cut_off_where_it_can_resume() {
    let size = task_line(2, "a").full.len() as u64;
    let mut history = History::new(limits(1 << 20, size * 2));
    history.listed(1);
    let mut slow = history.cursor(Some(1)).unwrap();
    history.push(vec![task_line(2, "a")], 2);
    let mut out = Vec::new();
    history.read(&mut slow, Kinds::ALL, true, 1 << 20, &mut out);
    for rev in 3..=5 {
        history.push(vec![task_line(rev, "a")], rev);
    }
    assert_eq!(
        history.read(&mut slow, Kinds::ALL, true, 1 << 20, &mut out),
        Read::TooSlow { after: 2 }
    );
    assert!(history.cursor(Some(2)).is_ok(), "it may resume after 2");
}

#[test]
fn a_state_read_again_past_the_history_drops_it() {
    let mut history = History::new(limits(1 << 20, 1 << 20));
    history.listed(5);
    let mut cursor = history.cursor(Some(5)).unwrap();
    history.push(vec![task_line(6, "a")], 6);
    history.listed(6);
    assert!(history.cursor(Some(5)).is_ok(), "nothing was missed");
    history.listed(9);
    assert_eq!(
        history.cursor(Some(6)),
        Err(Unserved::Gone { oldest_after: 9 })
    );
    assert_eq!(
        history.read(&mut cursor, Kinds::ALL, true, 1 << 20, &mut Vec::new()),
        Read::Gone { oldest_after: 9 }
    );
}

/// Events with a short keep-alive, their state read at revision 1.
fn events(shared: bool) -> Arc<Events> {
    let events = Arc::new(Events::with_limits(
        shared,
        limits(1 << 20, 1 << 20),
        Duration::from_millis(300),
    ));
    events.listed(1);
    events
}

#[test]
fn a_follower_is_woken_by_a_change_and_kept_alive_when_there_is_none() {
    let events = events(false);
    let mut follower = events.follow(None, Kinds::ALL, true).unwrap();
    let publisher = {
        let events = events.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            events.publish(vec![task_line(2, "a")], 2);
        })
    };
    let asked = Instant::now();
    let Pulled::Data(piece) = follower.next(Duration::from_secs(5)) else {
        panic!("no piece");
    };
    assert!(asked.elapsed() < Duration::from_secs(1), "woken at once");
    assert_eq!(revs(&piece), [(2, "a".into())]);
    publisher.join().unwrap();
    // Nothing more: idle within the wait, then a blank line once the keep-alive is due.
    let mut pulls = Vec::new();
    while pulls.len() < 20 {
        let pulled = follower.next(Duration::from_millis(50));
        let blank = pulled == Pulled::Data(b"\n".to_vec());
        pulls.push(pulled);
        if blank {
            break;
        }
    }
    assert_eq!(
        pulls.last(),
        Some(&Pulled::Data(b"\n".to_vec())),
        "{pulls:?}"
    );
    assert!(pulls[..pulls.len() - 1].iter().all(|p| *p == Pulled::Idle));
}

#[test]
fn a_follower_cut_off_gets_a_last_line_then_the_end() {
    let events = Arc::new(Events::with_limits(
        false,
        limits(1 << 20, 10),
        Duration::from_secs(15),
    ));
    events.listed(1);
    let mut follower = events.follow(Some(1), Kinds::ALL, true).unwrap();
    events.publish(vec![task_line(2, "a"), task_line(3, "b")], 3);
    let Pulled::Data(last) = follower.next(Duration::from_secs(1)) else {
        panic!("no last line");
    };
    let last = &parsed(&last)[0];
    assert_eq!(last["after"], 1);
    assert!(
        last["error"].as_str().unwrap().contains("after=1"),
        "{last}"
    );
    assert_eq!(follower.next(Duration::from_secs(1)), Pulled::End);
}

#[test]
fn a_revision_ahead_is_refused_by_a_queen_alone_and_followed_on_a_shared_store() {
    let alone = events(false);
    assert_eq!(
        alone.follow(Some(7), Kinds::ALL, true).err(),
        Some(Refused::Ahead { revision: 1 })
    );
    let body = Refused::Ahead { revision: 1 }.body(7);
    assert_eq!(body["oldest_after"], 1);
    // A queen alone that reaches it within the wait serves it.
    let late = events(false);
    let publisher = {
        let late = late.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            late.publish(vec![task_line(7, "a")], 7);
        })
    };
    assert!(late.follow(Some(7), Kinds::ALL, true).is_ok());
    publisher.join().unwrap();

    let shared = events(true);
    let mut follower = shared.follow(Some(7), Kinds::ALL, true).unwrap();
    shared.publish(vec![task_line(5, "old"), task_line(8, "new")], 8);
    let Pulled::Data(piece) = follower.next(Duration::from_secs(1)) else {
        panic!("no piece");
    };
    assert_eq!(revs(&piece), [(8, "new".into())]);
}
