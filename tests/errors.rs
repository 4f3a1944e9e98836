//! Bad input gets a clear JSON error with the right status, and changes nothing.

mod common;

use common::*;
use serde_json::json;

fn error_of(answer: &(u16, serde_json::Value)) -> &str {
    answer.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {answer:?}"))
}

#[test]
fn malformed_bodies_are_400_and_change_nothing() {
    let queen = Larve::queen(&[]);
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    // What the registry holds, less when the heartbeat last saw each drone: a round may come
    // between the two reads (the first one comes once the queen has read her state, which may be
    // just after the drone registered).
    let registry = || {
        let (_, mut drones) = get(&queen.url("/drones"));
        for drone in drones.as_array_mut().expect("a list of drones") {
            drone.as_object_mut().expect("a drone").remove("last_seen");
        }
        drones
    };
    let drones_before = registry();

    for (body, needle) in [
        ("", "not valid JSON"),
        ("{\"text\": \"unterminated", "not valid JSON"),
        ("\u{fffd}\u{0}", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("\"hello\"", "JSON object"),
        ("{}", "missing field \"text\""),
        ("{\"txt\": \"hello\"}", "missing field \"text\""),
        ("{\"text\": \"\"}", "must not be empty"),
        ("{\"text\": 42}", "must be a string"),
        ("{\"text\": [\"a\"]}", "must be a string"),
    ] {
        for url in [queen.url("/submit_task"), drone.url("/do_task")] {
            let answer = post(&url, body);
            assert_eq!(answer.0, 400, "{url} {body:?}: {answer:?}");
            assert!(
                error_of(&answer).contains(needle),
                "{url} {body:?}: {answer:?}"
            );
        }
    }
    for body in ["{}", "{\"address\": 5}", "{\"address\": \"\"}", "[]"] {
        let answer = post(&queen.url("/register"), body);
        assert_eq!(answer.0, 400, "{body}: {answer:?}");
    }
    assert_eq!(drone.stdout(), "", "the drone printed nothing");
    assert_eq!(registry(), drones_before, "the registry is unchanged");
}

#[test]
fn register_takes_only_a_real_host_and_port() {
    // The default heartbeat: the addresses registered below are no drones, and a fast one would
    // remove them before the end.
    let queen = Larve::queen(&[]);
    for address in [
        "evil.example/x#",
        "http://127.0.0.1:80",
        "127.0.0.1:80/admin?",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "user@127.0.0.1:80",
        "[::1:80",
        &format!("{}:80", "a".repeat(300)),
    ] {
        let answer = register(&queen, address);
        assert_eq!(answer.0, 400, "{address}: {answer:?}");
        assert!(error_of(&answer).contains("address"), "{answer:?}");
    }
    assert_eq!(get(&queen.url("/drones")).1, json!([]));
    let answer = register(&queen, "http://evil/x");
    let said = error_of(&answer);
    assert!(
        said.contains("scheme") && said.contains("host:port"),
        "{said}"
    );

    for address in ["[::1]:5001", "localhost:5002", "127.0.0.1:5003"] {
        assert_eq!(register(&queen, address).0, 200, "{address}");
    }
    assert_eq!(drone_names(&queen).len(), 3);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let queen = Larve::fast_queen();
    let (status, body) = get(&queen.url("/nope"));
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/nope"));
    assert_eq!(get(&queen.url("/healthz/")).0, 404);

    let answer = exchange(
        &queen.addr,
        b"DELETE /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        SOON,
    )
    .expect("the request sent");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("Allow: POST"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    assert_eq!(get(&queen.url("/submit_task")).0, 405);
    assert_eq!(post(&queen.url("/healthz"), "{}").0, 405);
    assert_eq!(
        get(&queen.url("/healthz?verbose=1")).0,
        200,
        "a query string is ignored"
    );
}

#[test]
fn bodies_over_64_kib_are_413() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    let text = "x".repeat(64 * 1024);
    for url in [queen.url("/submit_task"), drone.url("/do_task")] {
        let answer = post(&url, &json!({ "text": text }).to_string());
        assert_eq!(answer.0, 413, "{answer:?}");
        assert!(error_of(&answer).contains("65536"), "{answer:?}");
    }
    // Just under the limit is fine.
    let fits = "y".repeat(60 * 1024);
    assert_eq!(
        post(&drone.url("/do_task"), &json!({ "text": fits }).to_string()).0,
        200
    );

    // Declaring an absurd body must not bring the process down (tiny_http would try to allocate it).
    let answer = exchange(
        &queen.addr,
        b"POST /submit_task HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n{\"text\"",
        SOON,
    )
    .expect("the request sent");
    assert!(answer.contains("413 Payload Too Large"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // A chunked body over the limit too.
    let mut chunked =
        b"POST /submit_task HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..80 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'a'; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(&queen.addr, &chunked, SOON).expect("the request sent");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(get(&queen.url("/healthz")).0, 200, "the queen still serves");
}

#[test]
fn submit_without_drones_is_503_json() {
    let queen = Larve::fast_queen();
    let answer = submit(&queen, "hello");
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(error_of(&answer).contains("no live drone"), "{answer:?}");
}

#[test]
fn submit_when_every_drone_fails_is_502_naming_each() {
    // No heartbeat round after the first: it would remove the sick drones before the second try.
    let queen = Larve::queen(&["--heartbeat-interval", "600"]);
    // Two drones that answer every request with a Flask-style HTML 500.
    let sick = [
        FakePeer::answering(500, "text/html", "<h1>Internal Server Error</h1>"),
        FakePeer::answering(500, "text/html", "<h1>Internal Server Error</h1>"),
    ];
    for peer in &sick {
        assert_eq!(register(&queen, &peer.addr).0, 200);
    }
    let answer = submit(&queen, "hello");
    assert_eq!(answer.0, 502, "{answer:?}");
    let error = error_of(&answer);
    assert!(error.contains("drone-0: answered HTTP 500"), "{error}");
    assert!(error.contains("drone-1: answered HTTP 500"), "{error}");
    // The queen's log says the task was not done, and why, on one line.
    eventually(SOON, "the failed task in the log", || {
        queen
            .stderr()
            .lines()
            .any(|line| {
                line.contains("task \"hello\" not done: every drone tried failed")
                    && line.contains("drone-0: answered HTTP 500")
            })
            .then_some(())
    });
    // Both are out of rotation now (their probes fail too), yet a task is still tried on them:
    // only an empty registry is 503.
    let again = submit(&queen, "again");
    assert_eq!(again.0, 502, "{again:?}");
}

#[test]
fn bad_flags_exit_2_with_a_reason_and_usage() {
    for args in [
        &["--port", "5001"][..],
        &["--queen", "--queen-host", "127.0.0.1:8080"][..],
        &["--queen", "--port", "nope"][..],
        &["--queen", "--heartbeat-interval", "-1"][..],
        &["--queen", "--log-level", "chatty"][..],
        &["--queen", "--frobnicate"][..],
        &["--queen-host", "127.0.0.1:8080/x"][..],
        &[
            "--queen",
            "--data-dir",
            "/tmp/d",
            "--etcd",
            "http://127.0.0.1:2379",
        ][..],
    ] {
        let mut larve = Larve::spawn(args);
        let status = larve.wait_exit(SOON).expect("it exits");
        assert_eq!(status.code(), Some(2), "{args:?}");
        let stderr = larve.stderr();
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("larve: "), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: larve"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_port_exits_1_saying_so() {
    let queen = Larve::fast_queen();
    let mut second = Larve::spawn(&["--queen", "--port", &queen.port().to_string()]);
    let status = second.wait_exit(SOON).expect("it exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        second.stderr().contains("cannot listen on"),
        "{}",
        second.stderr()
    );
    assert_eq!(get(&queen.url("/healthz")).0, 200);
}

#[test]
fn a_drone_pointed_at_a_drone_exits_2() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    let mut confused = Larve::spawn(&["--queen-host", &drone.addr, "--port", "0"]);
    let status = confused.wait_exit(SOON).expect("it exits");
    assert_eq!(status.code(), Some(2));
    let log = confused.stderr();
    assert!(
        log.contains("refused this drone's registration") && log.contains("400"),
        "{log}"
    );
    assert!(
        log.contains("In drone mode, not taking registration"),
        "the other side's own words: {log}"
    );
}

#[test]
fn a_bad_flag_is_named_once_with_its_value() {
    let output = std::process::Command::new(LARVE)
        .args(["--queen", "--port", "abc"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.starts_with("larve: --port: \"abc\" is not a port (0-65535)\n"),
        "{said}"
    );
}

#[test]
fn the_401_says_where_a_local_hive_keeps_its_token() {
    let token = "0123456789abcdef0123";
    let queen = Larve::start_with(&["--queen", "--port", "0"], &Launch::token(token));
    let answer = submit(&queen, "hello");
    assert_eq!(answer.0, 401);
    assert!(error_of(&answer).contains(".hive/token"), "{answer:?}");
}

#[test]
fn help_and_version_exit_0() {
    let output = std::process::Command::new(LARVE)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--heartbeat-interval"));
    let output = std::process::Command::new(LARVE)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("larve {}", hive::VERSION)
    );
}

/// A directory of the test's own, removed when dropped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("hive-errors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        Dir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A queen started on `dir` exits 2, saying the path and `reason`; she serves nothing first.
fn refused_data_dir(dir: &str, reason: &str) -> String {
    let mut queen = Larve::spawn(&["--queen", "--port", "0", "--data-dir", dir]);
    let status = queen.wait_exit(SOON).expect("it exits");
    let log = queen.stderr();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains(dir) && log.contains(reason), "{log}");
    assert!(!log.contains("queen listening"), "{log}");
    log
}

#[test]
fn a_data_dir_that_cannot_be_used_exits_2_with_the_path_and_the_reason() {
    // Not writable: a read-only directory, or for root (who writes anywhere else) sysfs.
    let read_only = Dir::new("read-only");
    let unwritable = if unsafe { libc::geteuid() } == 0 {
        "/sys/kernel".to_string()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o555);
        std::fs::set_permissions(&read_only.0, perms).expect("chmod");
        read_only.path().to_string()
    };
    refused_data_dir(&unwritable, "cannot write in it");

    // Another queen's: held for her whole life, and free again once she is gone.
    let held = Dir::new("held");
    let mut first = Larve::queen(&["--data-dir", held.path()]);
    let log = refused_data_dir(held.path(), "in use by another queen");
    assert!(log.contains(&format!("pid {}", first.pid())), "{log}");
    first.kill();
    let again = Larve::queen(&["--data-dir", held.path()]);
    assert_eq!(get(&again.url("/healthz")).0, 200);

    // Someone else's files, or a file of another format where the store would be.
    let foreign = Dir::new("foreign");
    std::fs::create_dir(foreign.0.join("member")).expect("mkdir");
    refused_data_dir(foreign.path(), "not a Hive store (member)");
    let other = Dir::new("other-format");
    std::fs::write(other.0.join("hive.db"), b"\x00redb\x1a\x0a\xa9\x0d\x0a").expect("write");
    refused_data_dir(other.path(), "not a SQLite file");
}

#[test]
fn a_damaged_store_stops_the_queen_and_is_left_as_it_was() {
    let dir = Dir::new("damaged");
    let mut queen = Larve::queen(&["--data-dir", dir.path()]);
    // Enough tasks that SQLite moves them from its log into the file (every 4 MiB or so).
    let padding = "x".repeat(48 * 1024);
    for i in 0..120 {
        let task = json!({"id": format!("big-{i}"), "command": ["true"], "env": {"PAD": padding}});
        let (status, _) = post(&queen.url("/tasks"), &task.to_string());
        assert_eq!(status, 202);
    }
    queen.kill();
    // The log and its index lost, and the file's pages past the first scribbled over.
    for name in ["hive.db-wal", "hive.db-shm"] {
        let _ = std::fs::remove_file(dir.0.join(name));
    }
    let file = dir.0.join("hive.db");
    let mut bytes = std::fs::read(&file).expect("the store");
    assert!(bytes.len() > 1024 * 1024, "{} bytes", bytes.len());
    for byte in &mut bytes[4096..] {
        *byte = 0xa5;
    }
    std::fs::write(&file, &bytes).expect("write");
    let log = refused_data_dir(dir.path(), "is damaged");
    assert!(
        log.contains("never resets it") && log.contains("docs/design/store.md"),
        "{log}"
    );
    assert_eq!(std::fs::read(&file).expect("the store"), bytes, "untouched");
}
