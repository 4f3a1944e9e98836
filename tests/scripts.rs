//! The scripts a user starts a hive with: `scripts/hive-up.sh --tls` brings up queens, drones and
//! etcd over mutual TLS, and the curl lines it prints work as pasted, as do `submit.sh` and
//! `status.sh`; `hive-down.sh` stops all of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A hive started by `scripts/hive-up.sh` in a directory of its own, stopped by
/// `scripts/hive-down.sh` when dropped.
struct Hive {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Hive {
    fn script(&self, name: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(Path::new(ROOT).join("scripts").join(name))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("HIVE_TOKEN")
            .output()
            .expect("run the script")
    }
}

impl Drop for Hive {
    fn drop(&mut self) {
        let down = self.script("hive-down.sh", &[]);
        if std::thread::panicking() {
            eprintln!(
                "--- hive-down ---\n{}",
                String::from_utf8_lossy(&down.stdout)
            );
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    eprintln!("--- {:?} ---\n{}", entry.file_name(), tail.join("\n"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn hive_up_with_tls_prints_curl_lines_that_work_as_pasted() {
    let dir = std::env::temp_dir().join(format!("hive-up-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hive = Hive {
        env: vec![
            ("HIVE_DIR", dir.display().to_string()),
            ("HIVE_LARVE", LARVE.to_string()),
            (
                "HIVE_PORT",
                consecutive_free_ports(2).expect("free ports").to_string(),
            ),
            (
                "HIVE_DRONE_PORT",
                consecutive_free_ports(2).expect("free ports").to_string(),
            ),
            (
                "HIVE_ETCD_PORT",
                consecutive_free_ports(2).expect("free ports").to_string(),
            ),
        ],
        dir,
    };
    let up = hive.script("hive-up.sh", &["--tls", "--queens", "2", "2"]);
    let printed = text(&up.stdout);
    assert!(up.status.success(), "{printed}\n{}", text(&up.stderr));
    let lines: Vec<&str> = printed
        .lines()
        .filter_map(|line| line.strip_prefix("  curl "))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "a health and a submit line per queen:\n{printed}"
    );
    for line in lines {
        assert!(
            line.contains("--cert") && line.contains("https://"),
            "{line}"
        );
        let ran = Command::new("bash")
            .arg("-c")
            .arg(format!("curl -sS --max-time 10 {line}"))
            .output()
            .expect("run curl");
        let answer = text(&ran.stdout);
        assert!(
            ran.status.success(),
            "{line}\n{answer}{}",
            text(&ran.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
        if line.ends_with("/healthz") {
            assert_eq!(json["status"], "Status.READY", "{answer}");
            assert_eq!(json["drones"].as_object().map(|d| d.len()), Some(2));
        } else {
            assert_eq!(json["result"], "OK", "{answer}");
        }
    }
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
    let port = &hive.env[2].1;
    let bare = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(hive.dir.join("tls/ca.pem"))
        .arg(format!("https://127.0.0.1:{port}/healthz"))
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
}
