//! What the client prints of a queen's answers, for a person: the tables of `task ls` and
//! `drone ls`, and the summary of `task get`. Pure functions of the JSON the API answered (and the
//! time now, for ages), so they are tested without a queen.

use std::fmt::Write as _;

use serde_json::Value;

use crate::labels::RESERVED_PREFIX;
use crate::tasks::shell_words;

/// Lines of each stream `task get` shows, the last ones.
const OUTPUT_TAIL_LINES: usize = 10;

/// Seconds in a minute, an hour, a day.
const MINUTE_SECS: f64 = 60.0;
const HOUR_SECS: f64 = 3600.0;
const DAY_SECS: f64 = 86_400.0;

/// A page of tasks as a table, at Unix time `now`: AGE is since it was created; DRONE and
/// DURATION are its last attempt's (running for as long as it has run).
pub fn task_table(page: &Value, now: f64) -> String {
    let mut rows = vec![
        [
            "ID", "STATE", "AGE", "DRONE", "DURATION", "ATTEMPTS", "EXIT", "COMMAND",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for task in page["tasks"].as_array().into_iter().flatten() {
        let last = task["attempts"].as_array().and_then(|a| a.last());
        rows.push(vec![
            text(&task["id"]),
            text(&task["state"]),
            task["created_at"]
                .as_f64()
                .map_or("-".into(), |at| age(now - at)),
            last.map_or("-".into(), |attempt| text(&attempt["drone"])),
            last.map_or("-".into(), |attempt| ran(attempt, now)),
            task["attempts"].as_array().map_or(0, Vec::len).to_string(),
            task["exit_code"]
                .as_i64()
                .map_or("-".into(), |c| c.to_string()),
            command(task),
        ]);
    }
    let mut out = table(&rows);
    if let Some(next) = page["next"].as_str() {
        let _ = writeln!(out, "(more: --after {next})");
    }
    out
}

/// The drones as a table. A drone is AVAILABLE when it takes placements: in rotation and not
/// draining. LABELS are the ones given with `--label` (the `hive.*` ones are in `-o json`).
pub fn drone_table(drones: &Value) -> String {
    let mut rows = vec![
        [
            "NAME",
            "ADDRESS",
            "SLOTS",
            "USED",
            "MEMORY_MB",
            "CPUS",
            "CONTAINMENT",
            "EXEC",
            "DRAINING",
            "AVAILABLE",
            "LABELS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for drone in drones.as_array().into_iter().flatten() {
        let field = |name: &str| match &drone[name] {
            Value::String(s) if s.is_empty() => "-".into(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut row: Vec<String> = [
            "name",
            "address",
            "slots",
            "used",
            "memory_mb",
            "cpus",
            "containment",
            "exec",
            "draining",
        ]
        .map(field)
        .to_vec();
        let available = drone["available"] == true && drone["draining"] != true;
        row.push(available.to_string());
        let labels: Vec<String> = drone["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| !key.starts_with(RESERVED_PREFIX))
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect();
        row.push(if labels.is_empty() {
            "-".into()
        } else {
            labels.join(",")
        });
        rows.push(row);
    }
    table(&rows)
}

/// A task for a person to read, at Unix time `now`: where it stands and why, what it runs, where
/// and when, each attempt, and the last lines of its output.
pub fn task_summary(task: &Value, now: f64) -> String {
    let mut fields: Vec<(&str, String)> = vec![("task", text(&task["id"]))];
    if let Some(group) = task["group"].as_str() {
        fields.push(("group", group.to_string()));
    }
    let state = text(&task["state"]);
    fields.push(("state", state.clone()));
    if let Some(reason) = task["reason"].as_str() {
        fields.push(("reason", reason.to_string()));
    }
    fields.push(("command", command(task)));
    fields.push(("takes", takes(task)));
    let constraints: Vec<&str> = task["constraints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !constraints.is_empty() {
        fields.push(("constraints", constraints.join(", ")));
    }
    let attempts = task["attempts"].as_array().cloned().unwrap_or_default();
    if let Some(last) = attempts.last() {
        fields.push((
            "drone",
            format!("{} ({})", text(&last["drone"]), text(&last["address"])),
        ));
    }
    if let Some(at) = task["created_at"].as_f64() {
        fields.push(("created", when(at, now)));
    }
    if let Some(first) = attempts.first()
        && let Some(at) = first["started_at"].as_f64()
    {
        fields.push(("started", when(at, now)));
    }
    if let Some(last) = attempts.last()
        && let Some(at) = last["ended_at"].as_f64()
        && !matches!(state.as_str(), "pending" | "running")
    {
        fields.push(("ended", when(at, now)));
    }
    if let Some(code) = task["exit_code"].as_i64() {
        fields.push(("exit", code.to_string()));
    }
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (name, value) in &fields {
        let _ = writeln!(out, "{:<width$} {value}", format!("{name}:"));
    }
    if !attempts.is_empty() {
        let mut rows = vec![
            [
                "#", "DRONE", "STATE", "STARTED", "DURATION", "EXIT", "REASON",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for attempt in &attempts {
            rows.push(vec![
                text(&attempt["n"]),
                text(&attempt["drone"]),
                text(&attempt["state"]),
                attempt["started_at"]
                    .as_f64()
                    .map_or("-".into(), |at| format!("{} ago", age(now - at))),
                ran(attempt, now),
                attempt["exit_code"]
                    .as_i64()
                    .map_or("-".into(), |c| c.to_string()),
                attempt["reason"].as_str().unwrap_or("-").to_string(),
            ]);
        }
        let _ = writeln!(out, "attempts:");
        for line in table(&rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    for stream in ["stdout", "stderr"] {
        out.push_str(&tail(task, stream));
    }
    out
}

/// The last lines of a task's `stream` (`stdout` or `stderr`), indented, under a heading that
/// says how much is shown; nothing for an empty stream. `GET /tasks` leaves output out, so a
/// listed task has none to show.
fn tail(task: &Value, stream: &str) -> String {
    let Some(text) = task[stream].as_str().filter(|t| !t.is_empty()) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let shown = &lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..];
    let mut notes = Vec::new();
    if shown.len() < lines.len() {
        notes.push(format!("last {} of {} lines", shown.len(), lines.len()));
    }
    if task[format!("{stream}_truncated")] == true {
        notes.push("of the last 64 KiB kept".to_string());
    }
    let heading = if notes.is_empty() {
        format!("{stream}:")
    } else {
        format!("{stream} ({}):", notes.join(", "))
    };
    let mut out = format!("{heading}\n");
    for line in shown {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// What a task takes on its drone, and how it is retried: `1 slot, 512 MiB, 0.5 cpus; timeout
/// 60 s, 1 retry`.
fn takes(task: &Value) -> String {
    let slots = task["slots"].as_u64().unwrap_or(1);
    let mut parts = vec![format!("{slots} slot{}", plural(slots))];
    if let Some(mb) = task["resources"]["memory_mb"].as_u64() {
        parts.push(format!("{mb} MiB"));
    }
    if let Some(cpus) = task["resources"]["cpus"].as_f64() {
        parts.push(format!("{cpus} cpus"));
    }
    let retries = task["retries"].as_u64().unwrap_or(0);
    format!(
        "{}; timeout {} s, {retries} retr{}",
        parts.join(", "),
        task["timeout_s"].as_f64().unwrap_or(0.0),
        if retries == 1 { "y" } else { "ies" }
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// How long an attempt ran: to its end, or to `now` while it runs.
fn ran(attempt: &Value, now: f64) -> String {
    match attempt["started_at"].as_f64() {
        Some(start) => duration(attempt["ended_at"].as_f64().unwrap_or(now) - start),
        None => "-".into(),
    }
}

/// A task's command as a shell would read it back.
fn command(task: &Value) -> String {
    shell_words(
        task["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
}

/// A JSON string's text, a number's digits, `-` for null.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An age in the largest unit that has a whole one: `45s`, `12m`, `3h`, `2d`.
fn age(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < MINUTE_SECS {
        format!("{}s", secs as u64)
    } else if secs < HOUR_SECS {
        format!("{}m", (secs / MINUTE_SECS) as u64)
    } else if secs < DAY_SECS {
        format!("{}h", (secs / HOUR_SECS) as u64)
    } else {
        format!("{}d", (secs / DAY_SECS) as u64)
    }
}

/// A duration to a useful precision: `0.4s`, `12.0s`, `4m05s`, `2h03m`.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < MINUTE_SECS {
        format!("{secs:.1}s")
    } else if secs < HOUR_SECS {
        let whole = secs as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        let minutes = (secs / MINUTE_SECS) as u64;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// Unix time `at` in UTC, and how long before `now`: `2026-02-03 14:05:09 UTC (3m ago)`.
fn when(at: f64, now: f64) -> String {
    format!("{} ({} ago)", utc(at), age(now - at))
}

/// Unix time `at` as a UTC date and time, to the second.
fn utc(at: f64) -> String {
    let secs = at.max(0.0) as i64;
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `rows` in columns as wide as their widest cell, two spaces apart; the last column unpadded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                let _ = writeln!(out, "{cell}");
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-02-03 14:05:09 UTC.
    const NOW: f64 = 1_770_127_509.0;

    #[test]
    fn tables_line_up_with_age_drone_and_duration() {
        let page = json!({"tasks": [
            {"id": "a", "state": "succeeded", "created_at": NOW - 300.0, "exit_code": 0,
             "command": ["echo", "hi there"],
             "attempts": [{"drone": "drone-0", "started_at": NOW - 299.0, "ended_at": NOW - 298.5}]},
            {"id": "bbbb", "state": "running", "created_at": NOW - 7200.0, "exit_code": null,
             "command": ["sleep", "9000"],
             "attempts": [{"drone": "drone-12", "started_at": NOW - 3725.0, "ended_at": null}]},
            {"id": "c", "state": "pending", "created_at": NOW - 2.0, "exit_code": null,
             "command": ["true"], "attempts": []},
        ], "next": "c"});
        assert_eq!(
            task_table(&page, NOW),
            "ID    STATE      AGE  DRONE     DURATION  ATTEMPTS  EXIT  COMMAND\n\
             a     succeeded  5m   drone-0   0.5s      1         0     echo 'hi there'\n\
             bbbb  running    2h   drone-12  1h02m     1         -     sleep 9000\n\
             c     pending    2s   -         -         0         -     true\n\
             (more: --after c)\n"
        );
        assert_eq!(shell_words(["sh", "-c", "it's"]), r"sh -c 'it'\''s'");
    }

    #[test]
    fn the_drone_table_shows_a_draining_drone_as_not_available_and_its_labels() {
        let drones = json!([
            {"name": "drone-0", "address": "127.0.0.1:5001", "slots": 4, "used": 1, "memory_mb": 2048,
             "cpus": 2.0, "containment": "cgroup-hybrid", "exec": true, "draining": false, "available": true,
             "labels": {"zone": "eu", "gpu": "a100", "hive.os": "linux"}},
            {"name": "drone-1", "address": "127.0.0.1:5002", "slots": 0, "used": 0, "memory_mb": 0,
             "cpus": 0.0, "containment": "", "exec": false, "draining": true, "available": true,
             "labels": {"hive.os": "linux"}},
        ]);
        assert_eq!(
            drone_table(&drones),
            "NAME     ADDRESS         SLOTS  USED  MEMORY_MB  CPUS  CONTAINMENT    EXEC   DRAINING  AVAILABLE  LABELS\n\
             drone-0  127.0.0.1:5001  4      1     2048       2.0   cgroup-hybrid  true   false     true       gpu=a100,zone=eu\n\
             drone-1  127.0.0.1:5002  0      0     0          0.0   -              false  true      false      -\n"
        );
    }

    #[test]
    fn a_task_s_summary_says_where_it_stands_and_shows_its_output_s_tail() {
        let stdout: String = (1..=12).map(|n| format!("line {n}\n")).collect();
        let task = json!({
            "id": "fix.drone-1", "group": "fix", "state": "failed",
            "reason": "attempt 2 failed: exit code 3 (no retries left)",
            "command": ["sh", "-c", "exit 3"], "slots": 1, "timeout_s": 60.0, "retries": 1,
            "resources": {"memory_mb": 512, "cpus": null, "pids": 4096},
            "constraints": ["zone=eu", "hive.name=drone-1"],
            "created_at": NOW - 125.0, "exit_code": 3,
            "stdout": stdout, "stdout_truncated": false, "stderr": "oops\n", "stderr_truncated": true,
            "attempts": [
                {"n": 1, "drone": "drone-1", "address": "127.0.0.1:5002", "state": "failed",
                 "started_at": NOW - 124.0, "ended_at": NOW - 123.5, "exit_code": 3, "reason": "exit code 3"},
                {"n": 2, "drone": "drone-1", "address": "127.0.0.1:5002", "state": "failed",
                 "started_at": NOW - 122.0, "ended_at": NOW - 61.0, "exit_code": 3, "reason": "exit code 3"},
            ]
        });
        assert_eq!(
            task_summary(&task, NOW),
            "task:        fix.drone-1\n\
             group:       fix\n\
             state:       failed\n\
             reason:      attempt 2 failed: exit code 3 (no retries left)\n\
             command:     sh -c 'exit 3'\n\
             takes:       1 slot, 512 MiB; timeout 60 s, 1 retry\n\
             constraints: zone=eu, hive.name=drone-1\n\
             drone:       drone-1 (127.0.0.1:5002)\n\
             created:     2026-02-03 14:03:04 UTC (2m ago)\n\
             started:     2026-02-03 14:03:05 UTC (2m ago)\n\
             ended:       2026-02-03 14:04:08 UTC (1m ago)\n\
             exit:        3\n\
             attempts:\n  \
               #  DRONE    STATE   STARTED  DURATION  EXIT  REASON\n  \
               1  drone-1  failed  2m ago   0.5s      3     exit code 3\n  \
               2  drone-1  failed  2m ago   1m01s     3     exit code 3\n\
             stdout (last 10 of 12 lines):\n  \
               line 3\n  line 4\n  line 5\n  line 6\n  line 7\n  line 8\n  line 9\n  line 10\n  line 11\n  line 12\n\
             stderr (of the last 64 KiB kept):\n  \
               oops\n"
        );
        let pending = json!({"id": "p", "state": "pending", "reason": "no drone runs commands",
            "command": ["true"], "slots": 2, "timeout_s": 5.0, "retries": 0, "created_at": NOW,
            "exit_code": null, "attempts": []});
        let summary = task_summary(&pending, NOW);
        assert!(
            summary.starts_with("task:    p\nstate:   pending\nreason:  no drone runs commands\n"),
            "{summary}"
        );
        assert!(
            summary.contains("takes:   2 slots; timeout 5 s, 0 retries\n"),
            "{summary}"
        );
        assert!(
            !summary.contains("attempts") && !summary.contains("stdout"),
            "{summary}"
        );
    }

    #[test]
    fn times_read_as_dates_ages_and_durations() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(NOW), "2026-02-03 14:05:09 UTC");
        assert_eq!(
            [age(-1.0), age(59.9), age(61.0), age(7200.0), age(200_000.0)],
            ["0s", "59s", "1m", "2h", "2d"]
        );
        assert_eq!(
            [duration(0.04), duration(65.0), duration(7380.0)],
            ["0.0s", "1m05s", "2h03m"]
        );
    }
}
