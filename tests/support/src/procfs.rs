//! What `/proc` says about a process (a larve): threads, memory and open descriptors, read once or
//! sampled on a thread of its own over a window. Linux only, as Hive's tests and bench are.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Result;

/// How often a [`Sampler`] reads `/proc/PID/status`.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(20);

/// Longest a sampler runs, whatever happens to the scenario that started it.
pub const MAX_SAMPLING: Duration = Duration::from_secs(600);

/// The number after `name` in a `/proc/PID/status` text, e.g. `Threads:` or `VmRSS:` (in kB).
fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// How many descriptors process `pid` has open: the entries of `/proc/PID/fd`.
pub fn open_descriptors(pid: u32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count())
}

/// How many threads process `pid` runs: the `Threads:` line of `/proc/PID/status`.
pub fn threads(pid: u32) -> Result<u64> {
    status_number(pid, "Threads:")
}

/// Resident memory of process `pid`, in KiB: the `VmRSS:` line of `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_number(pid, "VmRSS:")
}

/// The number after `name` in process `pid`'s `/proc/PID/status`.
fn status_number(pid: u32, name: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status_field(&status, name).ok_or_else(|| format!("no {name} line in /proc/{pid}/status"))
}

/// CPU time process `pid` has used, user and system, in clock ticks (`/proc/PID/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("/proc/{pid}/stat is not a stat line"))?
        .1
        .split_whitespace()
        .collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => Err(format!("/proc/{pid}/stat has no CPU times")),
    }
}

/// CPU time process `pid` has used with its children it has waited for, user and system, in clock
/// ticks (`/proc/PID/stat`): what a drone spends on the commands it runs, theirs included.
pub fn cpu_ticks_with_children(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(|| format!("/proc/{pid}/stat is not a stat line"))?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 to 17 of the line: utime, stime, cutime, cstime.
    (11..15)
        .map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum::<Option<u64>>()
        .ok_or_else(|| format!("/proc/{pid}/stat has no CPU times"))
}

/// CPU time the whole machine has spent doing anything but waiting, in clock ticks (the `cpu`
/// line of `/proc/stat`: user, nice, system, irq, softirq and steal). It counts what no one
/// process does, such as the kernel's workers.
pub fn machine_busy_ticks() -> Result<u64> {
    let stat = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .ok_or("/proc/stat has no cpu line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Ok(busy)
}

/// A process's open descriptors and threads at one instant: what a request may leave behind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub descriptors: usize,
    pub threads: u64,
}

impl Usage {
    /// Reads both now.
    pub fn of(pid: u32) -> Result<Usage> {
        Ok(Usage {
            descriptors: open_descriptors(pid)?,
            threads: threads(pid)?,
        })
    }

    /// Neither more descriptors nor more threads than `before`.
    pub fn within(&self, before: &Usage) -> bool {
        self.descriptors <= before.descriptors && self.threads <= before.threads
    }
}

/// Peaks of a process's `/proc` readings over a sampling window.
#[derive(Clone, Copy, Default)]
pub struct Peak {
    pub max_threads: u64,
    pub min_threads: u64,
    /// Largest `VmRSS` seen, in kB.
    pub rss_kb: u64,
    /// The kernel's own high-water mark, `VmHWM`, at the last reading, in kB.
    pub hwm_kb: u64,
}

impl Peak {
    /// Folds one `/proc/PID/status` reading in.
    fn add(&mut self, status: &str) {
        if let Some(threads) = status_field(status, "Threads:") {
            self.max_threads = self.max_threads.max(threads);
            self.min_threads = if self.min_threads == 0 {
                threads
            } else {
                self.min_threads.min(threads)
            };
        }
        if let Some(rss) = status_field(status, "VmRSS:") {
            self.rss_kb = self.rss_kb.max(rss);
        }
        if let Some(hwm) = status_field(status, "VmHWM:") {
            self.hwm_kb = self.hwm_kb.max(hwm);
        }
    }
}

/// Samples a process's threads and memory every [`SAMPLE_PERIOD`] on its own thread until finished
/// (or dropped, or the process is gone, or [`MAX_SAMPLING`] has passed).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Peak>>,
}

impl Sampler {
    /// Starts sampling `pid` now.
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = Peak::default();
            let started = Instant::now();
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < MAX_SAMPLING {
                let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                    break;
                };
                peak.add(&status);
                thread::sleep(SAMPLE_PERIOD);
            }
            peak
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Samples `pid` for `window`: the window is the measurement, not a wait for something.
pub fn sample_for(pid: u32, window: Duration) -> Peak {
    let sampler = Sampler::start(pid);
    thread::sleep(window);
    sampler.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Process;
    use crate::wait;
    use crate::workdir::WorkDir;
    use std::path::Path;

    #[test]
    fn a_status_field_is_read_by_its_name() {
        let status = "Name:\tlarve\nVmHWM:\t  5120 kB\nVmRSS:\t  4096 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert_eq!(status_field(status, "VmRSS:"), Some(4096));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let mut peak = Peak::default();
        peak.add(status);
        peak.add("Threads:\t3\nVmRSS:\t1024 kB\n");
        assert_eq!((peak.min_threads, peak.max_threads), (3, 7));
        assert_eq!((peak.rss_kb, peak.hwm_kb), (4096, 5120));
    }

    #[test]
    fn a_descriptor_more_is_counted_and_threads_are_read() {
        let dir = WorkDir::create("hive-support-test").expect("a directory");
        let start = |name: &str, script: &str| {
            let output = dir.path().join(name);
            Process::start(Path::new("sh"), &["-c", script], &output, &output).expect("sh")
        };
        // Both inherit whatever descriptors this test runs with; one holds one more.
        let plain = start("plain", "exec sleep 600");
        let holding = start("holding", "exec sleep 600 3</dev/null");
        // Polled: just after exec, the C library may still hold a file it reads at start.
        let counts = wait::until(Duration::from_secs(10), SAMPLE_PERIOD, "one more", || {
            let (plain, holding) = (open_descriptors(plain.id()), open_descriptors(holding.id()));
            (plain.as_ref().ok()? + 1 == *holding.as_ref().ok()?).then_some(())
        });
        assert_eq!(counts, Ok(()));
        assert_eq!(threads(plain.id()), Ok(1));
        drop(plain);
        assert!(open_descriptors(u32::MAX).is_err());
    }
}
