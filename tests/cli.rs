//! The command line a newcomer expects: `larve --help` that lists the client's commands, a
//! mistyped command answered in one line with the nearest one, drones named by name or address,
//! `task get` as a summary, and tables with the columns a person looks for.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Runs `larve` with `args` as a user would, with `HIVE_QUEEN` set to `queen` (when given): exit
/// code, stdout, stderr.
fn larve(queen: Option<&Larve>, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(LARVE);
    command.args(args).env_remove("HIVE_TOKEN");
    match queen {
        Some(queen) => command.env("HIVE_QUEEN", &queen.addr),
        None => command.env_remove("HIVE_QUEEN"),
    };
    let output = command.output().expect("run larve");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A queen with fast heartbeat settings.
fn queen() -> Larve {
    let mut args = FAST.to_vec();
    args.extend(["--task-timeout", "1"]);
    Larve::queen(&args)
}

/// A drone of `queen` that runs commands, with `extra` flags, once the queen lists it.
fn exec_drone(queen: &Larve, extra: &[&str]) -> Larve {
    let mut args = vec!["--queen-host", &queen.addr, "--port", "0", "--allow-exec"];
    args.extend_from_slice(extra);
    let drone = Larve::start(&args);
    wait_for(queen, &drone);
    drone
}

fn wait_for(queen: &Larve, drone: &Larve) {
    eventually(SOON, "the queen to list the drone", || {
        drone_names(queen).contains_key(&drone.addr).then_some(())
    });
}

/// Task `id` once it has ended.
fn ended(queen: &Larve, id: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("task {id} to end"),
        || {
            let (_, task) = get(&queen.url(&format!("/tasks/{id}?wait=5")));
            ["succeeded", "failed", "cancelled"]
                .contains(&task["state"].as_str()?)
                .then_some(task)
        },
    )
}

#[test]
fn help_lists_the_client_s_commands_and_a_slip_is_one_line_naming_the_nearest() {
    let (code, help, _) = larve(None, &["--help"]);
    assert_eq!(code, 0);
    for command in [
        "larve task run|get|logs|ls|cancel",
        "larve drone ls|drain",
        "larve events [--after REV]",
        "--label KEY=VALUE",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
    let (code, help, _) = larve(None, &["events", "--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("Streams the queen's events"), "{help}");

    for (args, said) in [
        (
            &["tsak", "ls"][..],
            "larve: no command \"tsak\"; did you mean \"task\"?\n",
        ),
        (
            &["evnets"][..],
            "larve: no command \"evnets\"; did you mean \"events\"?\n",
        ),
        (
            &["task", "lss"][..],
            "larve: no command \"task lss\"; did you mean \"task ls\"?\n",
        ),
        (
            &["frobnicate"][..],
            "larve: no command \"frobnicate\"; the commands are task, drone and events (larve --help)\n",
        ),
    ] {
        let (code, out, err) = larve(None, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (2, "", said),
            "{args:?}"
        );
    }
    let (code, _, err) = larve(None, &["--queen", "--heartbeat-intervall", "1"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(
            "larve: unexpected argument \"--heartbeat-intervall\"; did you mean --heartbeat-interval?\nusage: larve"
        ),
        "{err}"
    );
    assert!(err.lines().count() <= 2, "not a page of usage: {err}");
}

#[test]
fn a_drone_is_named_by_its_name_or_its_address_and_draining_is_not_available() {
    let queen = queen();
    let drone = exec_drone(&queen, &["--label", "zone=eu"]);
    let (code, said, err) = larve(Some(&queen), &["drone", "drain", &drone.addr]);
    assert_eq!(code, 0, "{err}");
    assert!(said.starts_with("drone-0 drains"), "{said}");
    let (_, drones) = get(&queen.url("/drones"));
    assert_eq!(drones[0]["draining"], true);
    let (code, table, _) = larve(Some(&queen), &["drone", "ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (column("DRAINING"), column("AVAILABLE"), column("LABELS")),
        ("true", "false", "zone=eu"),
        "{table}"
    );
    let (code, _, err) = larve(Some(&queen), &["drone", "drain", &drone.addr, "--undo"]);
    assert_eq!(code, 0, "{err}");

    let by_address = queen.url(&format!("/drones/{}/drain", drone.addr));
    let (status, _, shown) = call("POST", &by_address, None, None, &[]);
    assert_eq!((status, shown["draining"].clone()), (200, json!(true)));
    let (status, _, shown) = call("DELETE", &by_address, None, None, &[]);
    assert_eq!((status, shown["name"].clone()), (200, json!("drone-0")));
    let (status, _, answer) = call(
        "POST",
        &queen.url("/drones/127.0.0.1:1/drain"),
        None,
        None,
        &[],
    );
    assert_eq!(status, 404, "{answer}");
    let (code, _, err) = larve(Some(&queen), &["drone", "drain", "127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.contains("name or address"),
        "{err}"
    );
}

#[test]
fn drone_ls_shows_only_the_drones_with_the_labels_asked_for() {
    let queen = queen();
    let eu = exec_drone(&queen, &["--label", "zone=eu", "--label", "gpu=a100"]);
    let us = exec_drone(&queen, &["--label", "zone=us"]);
    let (code, table, _) = larve(Some(&queen), &["drone", "ls", "--label", "zone=eu"]);
    assert_eq!(code, 0);
    assert!(
        table.contains(&eu.addr) && !table.contains(&us.addr),
        "{table}"
    );
    assert!(table.contains("gpu=a100,zone=eu"), "{table}");
    let (_, table, _) = larve(Some(&queen), &["drone", "ls", "--label", "gpu!=a100"]);
    assert!(
        !table.contains(&eu.addr) && table.contains(&us.addr),
        "{table}"
    );
    let (code, json, _) = larve(Some(&queen), &["drone", "ls", "-o", "json"]);
    assert_eq!(code, 0);
    let drones: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(drones.as_array().unwrap().len(), 2);
    assert_eq!(drones[0]["labels"]["hive.os"], std::env::consts::OS);
    let (code, _, err) = larve(Some(&queen), &["drone", "ls", "--label", "zone=e u"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn task_get_is_a_summary_with_the_output_s_tail_and_o_json_the_task() {
    let queen = queen();
    let _drone = exec_drone(&queen, &[]);
    let (code, id, err) = larve(
        Some(&queen),
        &[
            "task",
            "run",
            "--id",
            "loud",
            "--",
            "sh",
            "-c",
            "seq 1 30; echo oops >&2; exit 3",
        ],
    );
    assert_eq!((code, id.trim()), (0, "loud"), "{err}");
    let task = ended(&queen, "loud");
    let drone = task["attempts"][0]["drone"].as_str().unwrap();

    let (code, summary, _) = larve(Some(&queen), &["task", "get", "loud"]);
    assert_eq!(code, 0);
    for line in [
        "task:    loud\n",
        "state:   failed\n",
        "reason:  attempt 1 failed: exit code 3",
        "command: sh -c 'seq 1 30; echo oops >&2; exit 3'\n",
        &format!("drone:   {drone} ("),
        "created: ",
        "exit:    3\n",
        "attempts:\n",
        "stdout (last 10 of 30 lines):\n  21\n",
        "  30\nstderr:\n  oops\n",
    ] {
        assert!(summary.contains(line), "{line:?} in:\n{summary}");
    }
    assert!(!summary.contains("  20\n"), "only the tail:\n{summary}");

    let (code, json, _) = larve(Some(&queen), &["task", "get", "loud", "-o", "json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(shown, task, "the task as the API has it");
}

#[test]
fn task_ls_has_age_drone_and_duration_and_lists_a_group() {
    let queen = queen();
    let drone = exec_drone(&queen, &["--label", "zone=eu"]);
    let name = drone_names(&queen)[&drone.addr]
        .as_str()
        .unwrap()
        .to_string();
    let (code, ids, err) = larve(
        Some(&queen),
        &[
            "task",
            "run",
            "--each-drone",
            "--id",
            "fix",
            "--constraint",
            "zone=eu",
            "--",
            "sleep",
            "0.2",
        ],
    );
    assert_eq!(
        (code, ids.as_str()),
        (0, format!("fix.{name}\n").as_str()),
        "{err}"
    );
    ended(&queen, &format!("fix.{name}"));
    let (_, single, _) = larve(Some(&queen), &["task", "run", "--", "true"]);
    ended(&queen, single.trim());

    let (code, table, _) = larve(Some(&queen), &["task", "ls", "--group", "fix"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "STATE", "AGE", "DRONE", "DURATION", "ATTEMPTS", "EXIT", "COMMAND"
        ]
    );
    assert_eq!(lines.len(), 2, "the group alone: {table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], format!("fix.{name}"));
    assert_eq!((row[1], row[3]), ("succeeded", name.as_str()), "{table}");
    assert!(row[2].ends_with('s') && row[4].ends_with('s'), "{table}");
    let took: f64 = row[4].trim_end_matches('s').parse().unwrap();
    assert!(took >= 0.2, "it slept 0.2 s: {table}");
    let (_, all, _) = larve(Some(&queen), &["task", "ls"]);
    assert_eq!(all.lines().count(), 3, "{all}");
}

#[test]
fn output_to_a_pipe_closed_early_ends_the_command_quietly() {
    // `larve task --help | head -0`: the reader is gone before the first write.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let done = std::process::Command::new(LARVE)
        .args(["task", "--help"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("larve runs");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        done.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}",
        done.status
    );
}
