//! One log line per state change, and user text that cannot forge a log line or a stdout line.

mod common;

use common::*;

#[test]
fn state_changes_are_logged_one_line_each() {
    let queen = Larve::fast_queen();
    let mut drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    submit(&queen, "hello");
    drone.kill();
    wait_for_drones(&queen, &[], FAST_REMOVAL);

    let log = queen.log_with(&["removed drone-0"]);
    let line_with = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(line_with("registered drone-0 at"), 1, "{log}");
    assert_eq!(line_with("task \"hello\" sent to drone-0"), 1, "{log}");
    assert_eq!(line_with("removed drone-0"), 1, "{log}");
    assert!(
        log.lines()
            .all(|l| l.contains("[INFO]") || l.contains("[WARN]")),
        "{log}"
    );
    assert!(
        !log.contains("probe of"),
        "probe results are debug lines: {log}"
    );
    drone.log_with(&["registered with queen"]);
}

#[test]
fn control_characters_in_a_task_cannot_forge_lines() {
    let queen = Larve::fast_queen();
    let drone = Larve::drone(&queen.addr);
    wait_for_drones(&queen, &[&drone.addr], SOON);
    let forged = "hi\n2026-01-01T00:00:00Z [INFO] registered drone-99 at \"evil:1\"\r\x1b[2K";
    let (status, _) = submit(&queen, forged);
    assert_eq!(status, 200);

    let log = queen.log_with(&[r#"task "hi\n2026-01-01T00:00:00Z"#]);
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line reached the log: {log}"
    );
    assert!(log.contains(r#"task "hi\n2026-01-01T00:00:00Z"#), "{log}");
    let out = drone.stdout();
    assert_eq!(out.lines().count(), 1, "one task, one line: {out:?}");
    assert_eq!(
        out,
        "hi\\n2026-01-01T00:00:00Z [INFO] registered drone-99 at \"evil:1\"\\r\\u{1b}[2K\n"
    );
    let plain = "héllo wörld ✓ \"quoted\" \\ back";
    assert_eq!(submit(&queen, plain).0, 200);
    eventually(SOON, "the plain text printed exactly", || {
        drone.stdout().lines().any(|l| l == plain).then_some(())
    });
}

#[test]
fn debug_level_logs_probe_results() {
    let queen = Larve::queen(&[FAST, &["--log-level", "debug"]].concat());
    // A drone that renews no lease, as the tutorial's: the queen probes it every interval.
    let drone = FakePeer::answering(200, "application/json", "{}");
    assert_eq!(register(&queen, &drone.addr).0, 200);
    eventually(SOON, "a logged probe", || {
        queen.stderr().contains("probe of drone-0").then_some(())
    });
}
