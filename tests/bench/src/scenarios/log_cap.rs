//! A 1 GB output kept to its cap: one task prints 1 GiB to stdout on a drone with the default
//! `--max-log-mb` (100), and the drone's RSS is sampled all the while. The drone reads each pipe
//! in 64 KiB pieces and appends them to the attempt's segment files, removing the oldest past the
//! cap, so its memory should not grow with the output; what stays on disk is the cap's worth, read
//! back through the queen after the line that says how much was dropped.

use std::time::{Duration, Instant};

use hive_support::procfs::{Sampler, sample_for};

use super::{Bench, dir_bytes};
use crate::report::{Report, mb, mb_of, target};
use crate::{Result, control, progress};

pub const LABEL: &str = "a 1 GB output kept to its cap";

/// What the task prints, and the drone keeps of it (its default `--max-log-mb`).
const OUTPUT_BYTES: u64 = 1 << 30;
const CAP_MIB: u64 = 100;

/// The target for the drone's RSS growth while it keeps the output.
const RSS_GROWTH_MB_TARGET: f64 = 16.0;

/// How long an idle drone is sampled first, and how long the task may take.
const IDLE_WINDOW: Duration = Duration::from_millis(500);
const TASK_TIMEOUT: Duration = Duration::from_secs(300);

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the task with the drone sampled, reads what is kept back, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("cap-queen", &[])?;
    let drones = bench.exec_drones_of(&[&queen], "cap-drone", 1, 1)?;
    let pid = drones[0].pid();
    let idle = sample_for(pid, IDLE_WINDOW);
    let sampler = Sampler::start(pid);
    let body = serde_json::json!({
        "command": ["head", "-c", OUTPUT_BYTES.to_string(), "/dev/zero"],
        "timeout_s": TASK_TIMEOUT.as_secs(),
    })
    .to_string();
    let started = Instant::now();
    let id = bench.tasks.create(&queen.address(), &body)?.id;
    progress(&format!("task {id} prints {} MiB", OUTPUT_BYTES >> 20));
    loop {
        let task = bench
            .tasks
            .task(&queen, &id, Some(Duration::from_secs(10)))?;
        if task.state == "succeeded" {
            break;
        }
        if task.state != "pending" && task.state != "running" {
            return Err(format!("task {id} ended {}", task.state));
        }
        if started.elapsed() > TASK_TIMEOUT {
            return Err(format!("task {id} did not end within {TASK_TIMEOUT:?}"));
        }
    }
    let ran = started.elapsed();
    let peak = sampler.finish();
    let growth_kb = peak.rss_kb.saturating_sub(idle.rss_kb);
    let on_disk = dir_bytes(&bench.dir.join("cap-drone-0.work").join("logs"));

    let read_started = Instant::now();
    let url = format!("http://{}/tasks/{id}/logs", queen.address());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let (status, read) = control::get(&agent, &url, Some(Duration::from_secs(120)))?;
    let read_in = read_started.elapsed();
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let line_end = read.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
    let marker = String::from_utf8_lossy(&read[..line_end])
        .trim()
        .to_string();
    let kept = read.len() - line_end;
    let whole = read[line_end..].iter().all(|&b| b == 0) && marker.starts_with("[hive: ");
    progress(&format!("{marker}; {kept} bytes after it"));

    report.row(
        LABEL,
        format!(
            "one task prints {} MiB of zeros (head -c), drone with --max-log-mb {CAP_MIB}: \
             drone RSS MB idle / peak / growth",
            OUTPUT_BYTES >> 20
        ),
        format!(
            "{} / {} / {}",
            mb(idle.rss_kb),
            mb(peak.rss_kb),
            mb(growth_kb)
        ),
        target(
            &format!("growth ≤ {RSS_GROWTH_MB_TARGET:.0} MB"),
            mb_of(growth_kb) <= RSS_GROWTH_MB_TARGET,
        ),
    );
    report.row(
        LABEL,
        "s to run it / MiB kept on disk / read back through the queen: MiB after the marker \
         line, s",
        format!(
            "{:.1} / {:.1} / {:.1}, {:.2}",
            ran.as_secs_f64(),
            on_disk as f64 / MIB,
            kept as f64 / MIB,
            read_in.as_secs_f64()
        ),
        target(
            &format!("≤ {CAP_MIB} MiB kept, a marker line, zeros after it"),
            on_disk <= CAP_MIB << 20 && kept as u64 <= CAP_MIB << 20 && whole,
        ),
    );
    report.note(format!(
        "{LABEL}: one queen, one drone (--allow-exec, default --max-log-mb); the drone's VmRSS is \
         read every 20 ms from before the task is created until the queen says it succeeded; \
         growth is the peak less the idle drone's; the marker line read back was `{marker}`"
    ));
    Ok(())
}
