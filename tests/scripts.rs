//! The scripts a user starts a hive with. `scripts/hive-up.sh` brings up queens and drones (and
//! etcd, and mutual TLS with `--tls`), and the curl and larve lines it prints work as pasted, as do
//! `submit.sh` and `status.sh`; it never joins a queen it did not start; run again after a queen
//! died, it brings her back, and meanwhile the other scripts use the queen still there;
//! `hive-down.sh` stops all of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A hive started by `scripts/hive-up.sh` in a directory of its own, on free ports. Dropping it
/// runs `scripts/hive-down.sh` and then kills whatever still runs from its directory, so a failing
/// test leaves nothing behind.
struct Hive {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Hive {
    /// A directory named for the test, and room for `queens` queens from `queen_port` (free ports
    /// when `None`) and `drones` drones.
    fn new(test: &str, queens: u16, drones: u16, queen_port: Option<u16>) -> Hive {
        let dir = std::env::temp_dir().join(format!("hive-up-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let queen_port =
            queen_port.unwrap_or_else(|| consecutive_free_ports(queens).expect("free ports"));
        Hive {
            env: vec![
                ("HIVE_DIR", dir.display().to_string()),
                ("HIVE_LARVE", LARVE.to_string()),
                ("HIVE_PORT", queen_port.to_string()),
                (
                    "HIVE_DRONE_PORT",
                    consecutive_free_ports(drones)
                        .expect("free ports")
                        .to_string(),
                ),
                (
                    "HIVE_ETCD_PORT",
                    consecutive_free_ports(2).expect("free ports").to_string(),
                ),
            ],
            dir,
        }
    }

    fn var(&self, name: &str) -> &str {
        let (_, value) = self.env.iter().find(|(k, _)| *k == name).expect(name);
        value
    }

    fn port(&self, name: &str) -> u16 {
        self.var(name).parse().expect("a port")
    }

    /// Runs `scripts/NAME` with the hive's environment; `unset` names variables it must not see.
    fn script_without(&self, name: &str, args: &[&str], unset: &[&str]) -> Output {
        let mut command = Command::new("bash");
        command
            .arg(Path::new(ROOT).join("scripts").join(name))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("HIVE_TOKEN");
        for name in unset {
            command.env_remove(name);
        }
        command.output().expect("run the script")
    }

    fn script(&self, name: &str, args: &[&str]) -> Output {
        self.script_without(name, args, &[])
    }

    /// `scripts/hive-up.sh ARGS`, which must succeed; what it printed.
    fn up(&self, args: &[&str]) -> String {
        let up = self.script("hive-up.sh", args);
        let printed = text(&up.stdout);
        assert!(up.status.success(), "{printed}\n{}", text(&up.stderr));
        printed
    }

    /// The pid in `NAME.pid`.
    fn pid(&self, piece: &str) -> u32 {
        let file = self.dir.join(format!("{piece}.pid"));
        let pid = std::fs::read_to_string(&file).unwrap_or_default();
        pid.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {file:?}"))
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token")).expect("the hive's token")
    }
}

impl Drop for Hive {
    fn drop(&mut self) {
        let down = self.script("hive-down.sh", &[]);
        if std::thread::panicking() {
            eprintln!(
                "--- hive-down ---\n{}{}",
                text(&down.stdout),
                text(&down.stderr)
            );
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    eprintln!("--- {:?} ---\n{}", entry.file_name(), tail.join("\n"));
                }
            }
        }
        // A drone's reaper outlives its drone by a moment, removing the drone's cgroups: it is let
        // finish, and only what is still there after that is killed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !processes_of(&self.dir).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for pid in processes_of(&self.dir) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The processes whose command line names `dir`: what a hive started there runs.
fn processes_of(dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&dir)
                .then_some(pid)
        })
        .collect()
}

/// True if something accepts connections on loopback port `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `line` as a user who pasted it into bash would, from a directory outside the repo.
fn paste(line: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(line)
        .current_dir(std::env::temp_dir())
        .env_remove("HIVE_TOKEN")
        .env_remove("HIVE_QUEEN")
        .output()
        .expect("run bash")
}

/// Runs every ready-to-paste line hive-up printed, as printed, and checks each does what it
/// says: every queen's health lists the drones, the text task and the command task are taken, the
/// task hive-up ran succeeded, and larve runs `echo hi`.
fn run_printed_lines(printed: &str, queens: usize, drones: usize, tls: bool) {
    let curls: Vec<&str> = printed
        .lines()
        .filter_map(|line| line.strip_prefix("  curl "))
        .collect();
    assert_eq!(
        curls.len(),
        queens + 3,
        "each queen's health, /submit_task, POST /tasks, GET /tasks/ID:\n{printed}"
    );
    let mut seen = Vec::new();
    for line in curls {
        assert!(line.contains("Authorization: Bearer $(cat "), "{line}");
        assert_eq!(
            line.contains("--cert") && line.contains("https://"),
            tls,
            "{line}"
        );
        let ran = paste(&format!("curl -sS --max-time 40 {line}"));
        let answer = text(&ran.stdout);
        assert!(
            ran.status.success(),
            "{line}\n{answer}{}",
            text(&ran.stderr)
        );
        let json: Value = serde_json::from_str(&answer).expect("a JSON answer");
        if line.ends_with("/healthz") {
            assert_eq!(json["status"], "Status.READY", "{answer}");
            assert_eq!(json["drones"].as_object().map(|d| d.len()), Some(drones));
            seen.push("healthz");
        } else if line.ends_with("/submit_task") {
            assert_eq!(json["result"], "OK", "{answer}");
            seen.push("submit_task");
        } else if line.ends_with("/tasks") {
            assert_eq!(
                json["command"],
                serde_json::json!(["echo", "hi"]),
                "{answer}"
            );
            assert!(json["id"].is_string(), "{answer}");
            seen.push("POST /tasks");
        } else if line.contains("/tasks/") && line.ends_with("?wait=30'") {
            assert_eq!(json["state"], "succeeded", "{answer}");
            assert_eq!(json["stdout"], "hi\n", "{answer}");
            seen.push("GET /tasks/ID");
        } else {
            panic!("a curl line of no kind this test knows: {line}");
        }
    }
    assert_eq!(seen.iter().filter(|s| **s == "healthz").count(), queens);

    let larve: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains(" task run --wait "))
        .collect();
    assert_eq!(larve.len(), 1, "one larve line:\n{printed}");
    let line = larve[0].trim();
    assert!(
        line.starts_with(LARVE) && line.ends_with(" -- echo hi"),
        "{line}"
    );
    assert_eq!(line.matches("127.0.0.1:").count(), queens, "{line}");
    assert_eq!(line.contains("--tls-cert"), tls, "{line}");
    let ran = paste(line);
    assert!(
        ran.status.success(),
        "{line}\n{}{}",
        text(&ran.stdout),
        text(&ran.stderr)
    );
    assert_eq!(text(&ran.stdout), "hi\n", "{line}");
}

#[test]
fn hive_up_with_tls_prints_lines_that_work_as_pasted() {
    let hive = Hive::new("tls", 2, 2, None);
    let printed = hive.up(&["--tls", "--queens", "2", "2"]);
    assert!(printed.contains("ran on drone-"), "{printed}");
    run_printed_lines(&printed, 2, 2, true);

    let submitted = hive.script("submit.sh", &["from", "a", "test"]);
    assert!(
        submitted.status.success(),
        "{}{}",
        text(&submitted.stdout),
        text(&submitted.stderr)
    );
    assert!(text(&submitted.stdout).contains("\"result\": \"OK\""));
    let status = hive.script("status.sh", &[]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains("GET /drones -> HTTP 200"));
    // Without a certificate, the queen is not reachable at all.
    let bare = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(hive.dir.join("tls/ca.pem"))
        .arg(format!(
            "https://127.0.0.1:{}/healthz",
            hive.var("HIVE_PORT")
        ))
        .output()
        .expect("run curl");
    assert!(!bare.status.success(), "{}", text(&bare.stdout));

    let down = hive.script("hive-down.sh", &[]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(
        text(&down.stdout).contains("(5 process(es) stopped)"),
        "{}",
        text(&down.stdout)
    );
    assert!(
        !hive.dir.join("shape").exists(),
        "hive-down forgets the hive"
    );
}

#[test]
fn hive_up_with_one_queen_prints_lines_that_work_as_pasted() {
    let hive = Hive::new("plain", 1, 2, None);
    let printed = hive.up(&["2"]);
    assert!(printed.contains("ran on drone-"), "{printed}");
    run_printed_lines(&printed, 1, 2, false);

    // The line that hands a teammate a submit token, as pasted: the queen takes the new token at
    // once, for what a submit token may do and no more.
    let add = printed
        .lines()
        .skip_while(|line| !line.contains("hand a teammate a token"))
        .nth(1)
        .expect("the line that adds a token");
    assert!(paste(add.trim()).status.success(), "{add}");
    let file = format!("{}/client-tokens", hive.var("HIVE_DIR"));
    let tokens = std::fs::read_to_string(&file).expect("the client tokens file");
    let secret = tokens
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("alice submit "))
        .expect("alice's line")
        .to_string();
    let queen = format!("http://127.0.0.1:{}", hive.port("HIVE_PORT"));
    eventually(SOON, "alice's token to be taken", || {
        (get_as(&format!("{queen}/tasks"), Some(&secret)).0 == 200).then_some(())
    });
    let (status, answer) = post_as(&format!("{queen}/drones/drone-0/drain"), "", Some(&secret));
    assert_eq!(status, 403, "{answer}");
}

#[test]
fn hive_up_refuses_a_port_held_by_a_queen_it_did_not_start() {
    let foreign = Larve::queen(&[]);
    let hive = Hive::new("foreign", 1, 2, Some(foreign.port()));
    let up = hive.script("hive-up.sh", &["2"]);
    let said = format!("{}{}", text(&up.stdout), text(&up.stderr));
    assert!(!up.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "port {} (queen-{}) is in use by larve (pid {}",
            foreign.port(),
            foreign.port(),
            foreign.pid()
        )),
        "{said}"
    );
    assert!(said.contains("nothing started"), "{said}");

    let (code, health) = get(&foreign.url("/healthz"));
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        health["drones"],
        serde_json::json!({}),
        "no drone joined her"
    );
    assert_eq!(processes_of(&hive.dir), Vec::<u32>::new(), "{said}");
    let drone_port = hive.port("HIVE_DRONE_PORT");
    assert!(!listening(drone_port) && !listening(drone_port + 1));
    let pid_files: Vec<_> = std::fs::read_dir(&hive.dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .collect();
    assert!(pid_files.is_empty(), "{pid_files:?}");
}

#[test]
fn hive_up_brings_back_a_killed_queen_and_the_scripts_use_the_one_left() {
    let hive = Hive::new("restart", 2, 1, None);
    hive.up(&["--queens", "2", "1"]);
    let first = hive.port("HIVE_PORT");
    let token = hive.token();
    let dead = hive.pid(&format!("queen-{first}"));
    let killed = Command::new("kill")
        .args(["-KILL", &dead.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    eventually(SOON, "the queen gone", || (!listening(first)).then_some(()));

    // The scripts ask every queen of the hive in turn; HIVE_PORT would pin them to the dead one.
    let submitted =
        hive.script_without("submit.sh", &["while", "one", "is", "down"], &["HIVE_PORT"]);
    let said = text(&submitted.stderr);
    assert!(
        submitted.status.success(),
        "{}{said}",
        text(&submitted.stdout)
    );
    assert!(text(&submitted.stdout).contains("\"result\": \"OK\""));
    assert!(said.contains(&format!("port(s) {first} refused")), "{said}");
    let status = hive.script_without("status.sh", &[], &["HIVE_PORT"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains(&format!("HTTP 200 (queen on port {})", first + 1)),
        "{}",
        text(&status.stdout)
    );

    // Flags that do not match the hive are refused, and change nothing.
    let bigger = hive.script("hive-up.sh", &["--queens", "3"]);
    assert!(!bigger.status.success());
    assert!(
        text(&bigger.stderr).contains("stop it first with scripts/hive-down.sh"),
        "{}",
        text(&bigger.stderr)
    );
    assert!(!listening(first));

    let printed = hive.up(&[]);
    assert!(
        printed.contains(&format!("restarted queen-{first} (pid ")),
        "{printed}"
    );
    assert_eq!(hive.token(), token, "the same token");
    let back = hive.pid(&format!("queen-{first}"));
    assert_ne!(back, dead);
    let (code, health) = get_as(
        &format!("http://127.0.0.1:{first}/healthz"),
        Some(token.trim()),
    );
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "Status.READY", "{health}");
    let drone = format!("127.0.0.1:{}", hive.var("HIVE_DRONE_PORT"));
    assert!(health["drones"].get(&drone).is_some(), "{health}");
    let (code, drones) = get_as(
        &format!("http://127.0.0.1:{first}/drones"),
        Some(token.trim()),
    );
    assert_eq!(code, 200, "the old token opens the new queen: {drones}");

    // With all of it running, hive-up starts nothing.
    let again = hive.up(&[]);
    assert!(
        again.contains("the hive is already running") && again.contains("nothing started"),
        "{again}"
    );
    assert_eq!(hive.pid(&format!("queen-{first}")), back);
}

#[test]
fn hive_up_brings_back_a_lone_queen_killed_mid_task_with_her_tasks() {
    let hive = Hive::new("data-dir", 1, 1, None);
    let printed = hive.up(&["1"]);
    let port = hive.port("HIVE_PORT");
    assert!(
        printed.contains(&format!(
            "data dir {}/queen-{port}.data/",
            hive.dir.display()
        )),
        "{printed}"
    );
    let token = hive.token();
    let token = Some(token.trim());
    let queen = format!("http://127.0.0.1:{port}");
    let body = serde_json::json!({"command": ["sleep", "1"]}).to_string();
    let (code, task) = post_as(&format!("{queen}/tasks"), &body, token);
    assert_eq!(code, 202, "{task}");
    let id = task["id"].as_str().expect("an id").to_string();
    eventually(SOON, "the task running", || {
        let (_, task) = get_as(&format!("{queen}/tasks/{id}"), token);
        (task["state"] == "running").then_some(())
    });
    let dead = hive.pid(&format!("queen-{port}"));
    let killed = Command::new("kill")
        .args(["-KILL", &dead.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    eventually(SOON, "the queen gone", || (!listening(port)).then_some(()));

    let printed = hive.up(&[]);
    assert!(printed.contains("the queen's data dir"), "{printed}");
    assert!(
        printed.contains(&format!("restarted queen-{port} (pid ")),
        "{printed}"
    );
    // Her task is there, and ends once, on the attempt the drone kept running.
    let (code, task) = get_as(&format!("{queen}/tasks/{id}?wait=30"), token);
    assert_eq!(code, 200, "{task}");
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempts"].as_array().map(Vec::len), Some(1), "{task}");
}

#[test]
fn hive_up_help_lists_its_options_and_every_variable_it_reads() {
    let help = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/hive-up.sh"))
        .arg("--help")
        .output()
        .expect("run hive-up.sh --help");
    assert!(help.status.success());
    let help = text(&help.stdout);
    for option in ["--queens Q", "--tls", "N ", "-h, --help"] {
        assert!(help.contains(option), "{option} in:\n{help}");
    }
    let mut read = String::new();
    for script in ["hive-up.sh", "common.sh"] {
        read += &std::fs::read_to_string(Path::new(ROOT).join("scripts").join(script))
            .expect("read the script");
    }
    let mut variables: Vec<&str> = read
        .match_indices("HIVE_")
        .map(|(at, _)| {
            let rest = &read[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| name.len() > "HIVE_".len() && !name.ends_with('_'))
        .collect();
    variables.sort_unstable();
    variables.dedup();
    assert!(variables.len() >= 5, "{variables:?}");
    for variable in variables {
        let listed = help
            .lines()
            .any(|line| line.trim_start().starts_with(&format!("{variable} ")));
        assert!(listed, "{variable} with its default in:\n{help}");
    }
    assert!(help.contains("(default 8080)") && help.contains("(default 5001)"));
}

/// The README's shell blocks marked `<!-- readme-test: hive -->`, in order, each as one bash
/// script run from the repository's root against a hive `hive-up.sh` started: every command must
/// succeed (curl fails on an HTTP error, as a reader would see one). The hive's place and ports are
/// the test's own, so `.hive/`, `localhost:8080` and `target/release/larve` are read as those.
#[test]
fn the_readmes_marked_blocks_run_as_pasted() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("the README");
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "<!-- readme-test: hive -->" {
            assert_eq!(lines.next(), Some("```sh"), "a marked block is a sh block");
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    assert!(blocks.len() >= 3, "the marked blocks: {blocks:?}");
    let hive = Hive::new("readme", 1, 3, None);
    hive.up(&["3"]);
    let port = hive.var("HIVE_PORT").to_string();
    for block in &blocks {
        let script = block
            .replace(".hive/", &format!("{}/", hive.var("HIVE_DIR")))
            .replace("localhost:8080", &format!("localhost:{port}"))
            .replace("target/release/larve", LARVE);
        let ran = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; }}\n{script}"
            ))
            .current_dir(ROOT)
            .envs(hive.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HIVE_QUEEN", format!("127.0.0.1:{port}"))
            .env_remove("HIVE_TOKEN")
            .output()
            .expect("run bash");
        assert!(
            ran.status.success(),
            "{block}\n--- stdout ---\n{}--- stderr ---\n{}",
            text(&ran.stdout),
            text(&ran.stderr)
        );
    }
}
