//! TLS between larves and with their clients: HTTPS served by the front door, mutual TLS that
//! refuses whoever cannot show a certificate from the hive's CA, and queen, drone and etcd talking
//! over it end to end. Certificates are made by the test with the `openssl` command.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::tls::{Pki, agent, get_with};
use common::*;
use hive_support::pki::{CLOSE_NOTIFY, client_hello};
use serde_json::json;

const TOKEN: &str = "tls-test-token-0123456789";

/// Starts a larve with `args` and TLS `tls` (flags as strings), with the cluster token.
fn start(args: &[&str], tls: &[String]) -> Larve {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(tls.iter().map(String::as_str));
    Larve::start_with(&all, &Launch::token(TOKEN))
}

#[test]
fn mutual_tls_serves_only_clients_with_a_certificate_from_the_hives_ca() {
    let pki = Pki::new("hive-ca");
    let stranger = Pki::new("other-ca");
    let mut flags = pki.larve_flags(&pki.issue("queen"));
    flags.push("--tls-verify-clients".into());
    let queen = start(&["--queen", "--port", "0"], &flags);
    let url = queen.https("/healthz");

    let member = pki.issue("member");
    let (status, health) = get_with(&agent(&pki.ca(), Some(&member)), &url).expect("served");
    assert_eq!(status, 200);
    assert_eq!(health["mode"], "Mode.QUEEN");

    let expired = pki.expired("expired");
    let foreign = stranger.issue("foreign");
    for (who, client) in [
        ("no certificate", agent(&pki.ca(), None)),
        ("another CA's certificate", agent(&pki.ca(), Some(&foreign))),
        ("an expired certificate", agent(&pki.ca(), Some(&expired))),
    ] {
        let refused = get_with(&client, &url);
        assert!(refused.is_err(), "{who}: {refused:?}");
    }
    // A client that does not trust the hive's CA refuses the queen, too.
    assert!(get_with(&agent(&stranger.ca(), Some(&foreign)), &url).is_err());
    // Plain HTTP on an HTTPS port gets no answer.
    let answer = exchange(
        &queen.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        SOON,
    )
    .unwrap_or_default();
    assert!(!answer.contains("READY"), "{answer}");

    let member_agent = agent(&pki.ca(), Some(&member));
    let mut request = member_agent
        .get(queen.https("/metrics"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .expect("metrics");
    let text = request.body_mut().read_to_string().unwrap();
    let counted = parse_prometheus(&text);
    assert!(
        counted["hive_front_tls_handshakes_failed_total"] >= 5.0,
        "{text}"
    );
}

#[test]
fn queen_drone_and_etcd_talk_over_tls_end_to_end() {
    let pki = Pki::new("hive-ca");
    let etcd_pki = Pki::new("etcd-ca");
    let etcd = Etcd::single_tls(&etcd_pki);
    let mut queen_flags = pki.larve_flags(&pki.issue("queen"));
    queen_flags.push("--tls-verify-clients".into());
    queen_flags.extend(["--etcd".into(), etcd.urls()]);
    queen_flags.extend(etcd.tls_flags());
    let queen = start(
        &[&["--queen", "--port", "0"][..], FAST].concat(),
        &queen_flags,
    );
    let mut drone_flags = pki.larve_flags(&pki.issue("drone"));
    drone_flags.push("--tls-verify-clients".into());
    let drone = start(&["--queen-host", &queen.addr, "--port", "0"], &drone_flags);

    let user = agent(&pki.ca(), Some(&pki.issue("user")));
    let with_token = |request: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
        request.header("Authorization", format!("Bearer {TOKEN}"))
    };
    let json = |mut answer: ureq::http::Response<ureq::Body>| -> serde_json::Value {
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    };
    eventually(SOON, "the drone registered, over HTTPS, in etcd", || {
        let health = json(with_token(user.get(queen.https("/healthz"))).call().ok()?);
        (health["store"] == "etcd" && health["drones"].get(&drone.addr).is_some()).then_some(())
    });
    let answer = user
        .post(queen.https("/submit_task"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({"text": "over tls"}).to_string())
        .expect("the queen answers");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(json(answer)["result"], "OK");
    eventually(SOON, "the task printed", || {
        (drone.stdout() == "over tls\n").then_some(())
    });
    // Lease renewals (every 0.2 s) go over HTTPS: after many of them the drone is still there,
    // and never registered again.
    std::thread::sleep(Duration::from_secs(2));
    let listed = json(with_token(user.get(queen.https("/drones"))).call().unwrap());
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["failures"], 0, "{listed}");
    assert!(
        !drone.stderr().contains("registering again"),
        "{}",
        drone.stderr()
    );
    assert!(
        queen.stderr().contains("serving HTTPS"),
        "{}",
        queen.stderr()
    );
}

#[test]
fn a_close_notify_right_after_the_client_hello_leaves_no_thread_spinning() {
    let pki = Pki::new("hive-ca");
    let queen = start(
        &["--queen", "--port", "0"],
        &pki.larve_flags(&pki.issue("queen")),
    );
    // A real ClientHello, made by rustls, then a close_notify alert in clear: the input that made
    // rustls before 0.23.5 loop forever (RUSTSEC-2024-0336).
    let hello = client_hello().expect("a ClientHello");

    let before = cpu_ticks(queen.pid()).expect("its CPU time");
    let started = Instant::now();
    let mut connections = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&queen.addr).unwrap();
        stream.write_all(&hello).unwrap();
        stream.write_all(&CLOSE_NOTIFY).unwrap();
        stream.set_read_timeout(Some(SOON)).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        connections.push(stream);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each was closed at once"
    );
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(queen.pid()).expect("its CPU time") - before;
    // A spinning thread would use a whole core: 100 ticks a second.
    assert!(used < 50, "the queen used {used} ticks");
    let (status, _) = get_with(&agent(&pki.ca(), None), &queen.https("/healthz")).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn silent_tls_connections_do_not_keep_anyone_else_waiting() {
    let pki = Pki::new("hive-ca");
    let queen = start(
        &["--queen", "--port", "0"],
        &pki.larve_flags(&pki.issue("queen")),
    );
    let silent: Vec<TcpStream> = (0..500)
        .map(|i| connect_from(&format!("127.0.0.{}", 2 + i % 2), &queen.addr).expect("connect"))
        .collect();
    let client = agent(&pki.ca(), None);
    for _ in 0..10 {
        let asked = Instant::now();
        let (status, _) = get_with(&client, &queen.https("/healthz")).expect("served");
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
    }
    drop(silent);
}

#[test]
fn tls_flags_are_checked_before_anything_starts() {
    let pki = Pki::new("hive-ca");
    let queen = pki.issue("queen");
    let other = pki.issue("other");
    for (args, needle) in [
        (
            vec![
                "--tls-cert".to_string(),
                queen.cert.display().to_string(),
                "--tls-key".into(),
                other.key.display().to_string(),
                "--tls-ca".into(),
                pki.ca().display().to_string(),
            ],
            "do not make a usable pair",
        ),
        (
            vec![
                "--tls-cert".to_string(),
                queen.cert.display().to_string(),
                "--tls-key".into(),
                queen.key.display().to_string(),
                "--tls-ca".into(),
                queen.key.display().to_string(),
            ],
            "no PEM certificate",
        ),
    ] {
        let mut all = vec!["--queen", "--port", "0"];
        all.extend(args.iter().map(String::as_str));
        let mut larve = Larve::spawn(&all);
        assert_eq!(larve.wait_exit(SOON).expect("it exits").code(), Some(2));
        assert!(larve.stderr().contains(needle), "{}", larve.stderr());
    }
}

/// `larve ARGS` as a user runs it, with `env` set (and no other `HIVE_*`): exit code and stderr.
fn cli(args: &[&str], env: &[(&str, String)]) -> (i32, String) {
    let mut command = std::process::Command::new(LARVE);
    command.args(args);
    for name in [
        "HIVE_TOKEN",
        "HIVE_QUEEN",
        "HIVE_TLS_CA",
        "HIVE_TLS_CERT",
        "HIVE_TLS_KEY",
    ] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run larve");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_says_what_to_add_when_tls_is_missing_and_reads_the_tls_variables() {
    let pki = Pki::new("hive-ca");
    let mut flags = pki.larve_flags(&pki.issue("queen"));
    flags.push("--tls-verify-clients".into());
    let queen = start(&["--queen", "--port", "0"], &flags);
    let plain = start(&["--queen", "--port", "0"], &[]);
    let ca = pki.ca().to_string_lossy().into_owned();
    let me = pki.issue("me");
    let (cert, key) = (
        me.cert.to_string_lossy().into_owned(),
        me.key.to_string_lossy().into_owned(),
    );
    let token = ("HIVE_TOKEN", TOKEN.to_string());
    let ls = |queen: &Larve| ["task", "ls", "--queen-host", &queen.addr].join(" ");

    let (code, err) = cli(
        &ls(&queen).split(' ').collect::<Vec<_>>(),
        std::slice::from_ref(&token),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("the queen speaks HTTPS: add --tls-ca"),
        "{err}"
    );

    let with_ca = [token.clone(), ("HIVE_TLS_CA", ca.clone())];
    let (code, err) = cli(&ls(&queen).split(' ').collect::<Vec<_>>(), &with_ca);
    assert_eq!(code, 1);
    assert!(
        err.contains("the queen wants a client certificate: add --tls-cert and --tls-key"),
        "{err}"
    );

    let (code, err) = cli(&ls(&plain).split(' ').collect::<Vec<_>>(), &with_ca);
    assert_eq!(code, 1);
    assert!(err.contains("the queen speaks plain HTTP"), "{err}");

    let everything = [
        token,
        ("HIVE_TLS_CA", ca),
        ("HIVE_TLS_CERT", cert),
        ("HIVE_TLS_KEY", key),
    ];
    let (code, err) = cli(&ls(&queen).split(' ').collect::<Vec<_>>(), &everything);
    assert_eq!(code, 0, "{err}");
}

/// A stand-in for the tutorial's drone that serves HTTPS with a certificate from `pki`: it renews
/// nothing, so a queen probes it; every request is answered 200 and counted.
fn tls_stand_in(pki: &Pki) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let identity = pki.issue("stand-in");
    let tls = hive::tls::LarveTls::load(&identity.cert, &identity.key, &pki.ca(), false)
        .expect("the stand-in's certificate");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("an address").to_string();
    let answered = Arc::new(AtomicUsize::new(0));
    let counted = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, counted) = (tls.server.config.clone(), counted.clone());
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(SOON)).ok();
                let connection = rustls::ServerConnection::new(config).expect("a TLS connection");
                let mut tls = rustls::StreamOwned::new(connection, stream);
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
                if tls.write_all(answer.as_bytes()).is_ok() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (address, answered)
}

#[test]
fn a_drone_that_renews_nothing_is_probed_over_mutual_tls() {
    let pki = Pki::new("hive-ca");
    let mut queen_flags = pki.larve_flags(&pki.issue("queen"));
    queen_flags.push("--tls-verify-clients".into());
    // A timeout for handshakes made by a test build's rustls on a busy machine.
    let queen = start(
        &[
            "--queen",
            "--port",
            "0",
            "--heartbeat-interval",
            "0.2",
            "--heartbeat-timeout",
            "2",
        ],
        &queen_flags,
    );
    let user = agent(&pki.ca(), Some(&pki.issue("user")));
    let (address, probed) = tls_stand_in(&pki);
    let answer = user
        .post(queen.https("/register"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({ "address": address }).to_string())
        .expect("the queen answers");
    assert_eq!(answer.status().as_u16(), 200);
    // Probed every 0.2 s, each probe a TLS connection of the queen's own prober.
    eventually(SOON, "five probes over TLS", || {
        (probed.load(std::sync::atomic::Ordering::Relaxed) >= 5).then_some(())
    });
    let mut listed = user
        .get(queen.https("/drones"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .expect("drones");
    let listed: serde_json::Value =
        serde_json::from_str(&listed.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(listed[0]["address"], address.as_str(), "{listed}");
    assert_eq!(listed[0]["renews"], false, "{listed}");
    assert_eq!(listed[0]["failures"], 0, "every probe passed: {listed}");
}
