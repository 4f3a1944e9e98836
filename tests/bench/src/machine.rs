//! What a run ran on, and when: numbers from a shared 2-core machine mean little without it.

use std::fs;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unit conversions for the memory line.
const KIB_PER_GIB: f64 = 1024.0 * 1024.0;
const SECS_PER_DAY: u64 = 86_400;
const SECS_PER_MINUTE: u64 = 60;
const MINUTES_PER_HOUR: u64 = 60;

/// The machine a run measured, read from `/proc` when the run starts.
pub struct Machine {
    /// `model name` in `/proc/cpuinfo`.
    pub cpu: String,
    /// The cores this process may use (what `nproc` says), not those the machine has.
    pub cores: usize,
    /// The kernel's release (`uname -r`).
    pub kernel: String,
    /// `MemTotal` in `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// This machine; "unknown" for whatever `/proc` does not say.
    pub fn this() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| field(&info, "model name"))
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| field(&info, "MemTotal"))
            .and_then(|total| total.trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / KIB_PER_GIB);
        Machine {
            cpu,
            cores: thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            memory_gib,
        }
    }

    /// One line: `Intel(R) Xeon(R) …, 2 cores (nproc), Linux 6.1.0, 7.8 GiB of memory`.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} cores (nproc), Linux {}, {:.1} GiB of memory",
            self.cpu, self.cores, self.kernel, self.memory_gib
        )
    }
}

/// The value of the first `key: value` line of `text` whose key is `key`.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, value)| value.trim().to_string())
}

/// Now in UTC, to the minute: `2026-12-06 15:40 UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    utc(secs)
}

/// `secs` since the epoch as a UTC date and time to the minute. The date is Howard Hinnant's
/// `civil_from_days`, so that one line needs no calendar crate.
fn utc(secs: u64) -> String {
    let days = (secs / SECS_PER_DAY) as i64;
    let minutes = secs % SECS_PER_DAY / SECS_PER_MINUTE;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minutes / MINUTES_PER_HOUR,
        minutes % MINUTES_PER_HOUR
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_to_the_minute() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_571_059), "2026-12-06 15:30 UTC");
    }

    #[test]
    fn fields_are_found_by_their_key() {
        let info = "processor\t: 0\nmodel name\t: Some CPU @ 2.80GHz\nMemTotal:  8000 kB\n";
        assert_eq!(
            field(info, "model name").as_deref(),
            Some("Some CPU @ 2.80GHz")
        );
        assert_eq!(field(info, "MemTotal").as_deref(), Some("8000 kB"));
        assert_eq!(field(info, "flags"), None);
    }
}
