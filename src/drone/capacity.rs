//! What a drone that runs commands offers its queens beside its slots: the memory and cpus its
//! attempts may ask for together, found on the machine at start (`--memory-mb` and `--cpus` say
//! otherwise), and how it keeps itself out of the kernel's way when memory runs short.

use std::fs;

use log::debug;

use crate::exec;

/// Where the machine says how much memory it has.
const MEMINFO_FILE: &str = "/proc/meminfo";

/// A drone's own `oom_score_adj`: the kernel, short of memory, kills almost anything before it
/// (its tasks raise theirs, see `exec/child.rs`).
const DRONE_OOM_SCORE_ADJ: &str = "-900";

/// The memory (MiB) and cpus this drone offers: what the flags say, else the machine's memory
/// (or its own cgroup's limit, when lower) and the cpus it may run on.
pub fn offered(memory_mb: Option<u64>, cpus: Option<f64>) -> (u64, f64) {
    let memory_mb = memory_mb.unwrap_or_else(machine_memory_mb);
    let cpus = cpus.unwrap_or_else(|| {
        // Counts the cpus this process may use: its affinity, and its cgroup's quota.
        std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    });
    (memory_mb, cpus)
}

/// The machine's memory in MiB, or its own cgroup's limit when that is lower.
fn machine_memory_mb() -> u64 {
    let total_kib = fs::read_to_string(MEMINFO_FILE)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .unwrap_or(0);
    let mut bytes = total_kib * 1024;
    if let Some(limit) = exec::own_memory_limit_bytes() {
        bytes = bytes.min(limit);
    }
    bytes >> 20
}

/// Lowers this process's `oom_score_adj`, where it may (lowering takes CAP_SYS_RESOURCE).
pub fn protect_this_process() {
    if let Err(e) = fs::write("/proc/self/oom_score_adj", DRONE_OOM_SCORE_ADJ) {
        debug!("could not lower this drone's oom_score_adj: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_win_and_the_machine_fills_in() {
        assert_eq!(offered(Some(512), Some(0.5)), (512, 0.5));
        let (memory_mb, cpus) = offered(None, None);
        assert!(memory_mb > 0 && cpus >= 1.0, "{memory_mb} MiB, {cpus} cpus");
    }
}
