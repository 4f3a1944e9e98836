//! On the wire with the tutorial's Python larve. Its peers are stood in for by fakes that speak as
//! Flask does: they read JSON only when sent as `application/json`, answer errors as HTML, send no
//! extra headers, and its queen answers a registration with only `{"result": "OK"}`.

mod common;

use common::*;

/// A Flask larve in drone mode: 400 HTML unless the body is declared JSON.
fn flask_drone() -> FakePeer {
    FakePeer::new(|line, content_type| match line {
        "GET /healthz" => (
            200,
            "application/json",
            r#"{"mode":"Mode.DRONE","status":"Status.READY","version":"0.0.1"}"#.into(),
        ),
        "POST /do_task" if content_type == "application/json" => {
            (200, "application/json", r#"{"result":"OK"}"#.into())
        }
        _ => (400, "text/html", "<title>400 Bad Request</title>".into()),
    })
}

#[test]
fn our_queen_registers_probes_and_tasks_a_flask_drone() {
    let queen = Larve::fast_queen();
    let drone = flask_drone();
    // The tutorial's drone registers with exactly this body.
    let (status, reply) = post(
        &queen.url("/register"),
        &format!("{{\"address\": \"{}\"}}", drone.addr),
    );
    assert_eq!((status, reply["result"].as_str()), (200, Some("OK")));
    let (status, reply) = submit(&queen, "hello");
    assert_eq!(
        (status, reply["drone"].as_str()),
        (200, Some("drone-0")),
        "{reply}"
    );
    eventually(SOON, "a few probes", || {
        (drone.hits().iter().filter(|h| *h == "GET /healthz").count() >= 3).then_some(())
    });
    assert!(
        drone_names(&queen).contains_key(&drone.addr),
        "it stays registered"
    );
}

#[test]
fn our_queen_survives_a_flask_larve_answering_html_errors() {
    let queen = Larve::fast_queen();
    // A tutorial larve started with --queen, registered by mistake as a drone.
    let wrong = FakePeer::answering(400, "text/html", "<p>In queen mode, not taking tasks</p>");
    register(&queen, &wrong.addr);
    let (status, reply) = submit(&queen, "hello");
    assert_eq!(status, 502, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("answered HTTP 400")
    );
    assert_eq!(get(&queen.url("/healthz")).0, 200);
}

#[test]
fn our_drone_registers_with_a_queen_that_only_says_ok() {
    let queen = FakePeer::new(|line, content_type| match line {
        "POST /register" if content_type == "application/json" => {
            (200, "application/json", r#"{"result":"OK"}"#.into())
        }
        _ => (400, "text/html", "<title>400 Bad Request</title>".into()),
    });
    let drone = Larve::drone(&queen.addr);
    eventually(SOON, "the drone to be ready", || {
        (get(&drone.url("/healthz")).1["status"] == "Status.READY").then_some(())
    });
    assert_eq!(queen.hits(), ["POST /register"]);
    drone.log_with(&["registered with queen"]);
}

#[test]
fn our_drone_takes_a_task_sent_as_the_tutorials_queen_sends_it() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    // requests.request("POST", url, headers={'Content-Type': 'application/json'}, data=json.dumps(payload))
    let answer = exchange(
        &drone.addr,
        b"POST /do_task HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: python-requests/2.31.0\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"text\": \"hello\"}",
        SOON,
    )
    .expect("the request sent");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"result\": \"OK\""), "{answer}");
    eventually(SOON, "the text printed", || {
        (drone.stdout() == "hello\n").then_some(())
    });
}
