//! Follow latency: how long a line a task prints takes to reach a client that follows the task's
//! output through a queen (`GET /tasks/ID/logs?follow=1`): the drone reads it from the pipe and
//! writes it to the attempt's file, its follower reads it there and sends it, the queen relays it.
//!
//! Each line is `date +%s%N`'s, so it says when it was printed (the task and the client share the
//! machine's clock); the client notes when it arrived.

use std::io::{BufRead, BufReader};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hive_support::wait;

use super::Bench;
use crate::report::{Report, percentile, target};
use crate::{Result, progress};

pub const LABEL: &str = "follow latency";

/// Lines printed, and the pause after each.
const LINES: usize = 400;
const QUICK_LINES: usize = 100;
const PAUSE_SECS: f64 = 0.05;

/// The target for the 99th percentile.
const P99_MS_TARGET: f64 = 100.0;

/// How long the task may take to start, and the whole follow to end.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the task, follows it, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("follow-queen", &[])?;
    let _drones = bench.exec_drones_of(&[&queen], "follow-drone", 1, 2)?;
    let lines = if bench.plan.quick { QUICK_LINES } else { LINES };
    let script = format!(
        "sleep 0.5; i=0; while [ $i -lt {lines} ]; do date +%s%N; sleep {PAUSE_SECS}; i=$((i+1)); done"
    );
    let body = serde_json::json!({"command": ["sh", "-c", script], "timeout_s": 300}).to_string();
    let id = bench.tasks.create(&queen.address(), &body)?.id;
    wait::until(
        START_TIMEOUT,
        Duration::from_millis(10),
        "the task to start",
        || {
            let task = bench.tasks.task(&queen, &id, None).ok()?;
            (task.state == "running").then_some(())
        },
    )?;
    progress(&format!(
        "following {lines} lines, one every {PAUSE_SECS} s"
    ));
    let url = format!("http://{}/tasks/{id}/logs?follow=1", queen.address());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(FOLLOW_TIMEOUT))
        .build()
        .into();
    let answer = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    if answer.status() != 200 {
        return Err(format!("GET {url}: HTTP {}", answer.status()));
    }
    let mut latencies_ms = Vec::with_capacity(lines);
    for line in BufReader::new(answer.into_body().into_reader()).lines() {
        let line = line.map_err(|e| format!("GET {url}: {e}"))?;
        let arrived = SystemTime::now();
        let ns: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("a line that is no time: {line:?}"))?;
        let printed = UNIX_EPOCH + Duration::from_nanos(ns);
        let latency = arrived.duration_since(printed).unwrap_or_default();
        latencies_ms.push(latency.as_secs_f64() * 1000.0);
    }
    if latencies_ms.len() != lines {
        return Err(format!(
            "{} lines came of the {lines} printed",
            latencies_ms.len()
        ));
    }
    let p99 = percentile(latencies_ms.iter().copied(), 99.0);
    report.row(
        LABEL,
        format!(
            "{lines} lines printed one every {:.0} ms (date +%s%N), followed through the queen \
             (GET /tasks/ID/logs?follow=1): ms from the print to the client, p50 / p99 / max",
            PAUSE_SECS * 1000.0
        ),
        format!(
            "{:.1} / {p99:.1} / {:.1}",
            percentile(latencies_ms.iter().copied(), 50.0),
            latencies_ms.iter().copied().fold(0.0, f64::max)
        ),
        target(
            &format!("p99 ≤ {P99_MS_TARGET:.0} ms"),
            p99 <= P99_MS_TARGET,
        ),
    );
    report.note(format!(
        "{LABEL}: one queen, one drone with --allow-exec; the task runs `sh -c` printing `date \
         +%s%N` then sleeping {PAUSE_SECS} s, {lines} times; hive-bench reads the followed answer \
         line by line and takes each line's time of arrival less the time it carries"
    ));
    Ok(())
}
