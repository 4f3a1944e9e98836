//! The fleet scenarios, named rather than numbered (`--only fleet-on-one-queen,fleet-on-etcd`): ten thousand
//! simulated drones (`crate::fleet`: half of the answering ones renewing leases as Hive drones do,
//! half only answering probes as the tutorial's do, plus refusing and silent ones) on one queen
//! ([`alone`]) and through three queens on etcd ([`etcd`]), at the default heartbeat. What both
//! measure is here: registering the fleet from many threads, timing each bad drone's removal from
//! its registration, and a steady-state window (the queen's CPU with no API load, and what her
//! `/metrics` and the fleet counted in it).

pub mod alone;
pub mod etcd;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::larve::Larve;
use hive_support::procfs::cpu_ticks;

use super::Bench;
use crate::Result;
use crate::control::{Control, unix_now};
use crate::fleet::{Fleet, FleetSize};
use crate::tasks::Samples;

/// Threads registering drones by hand, as many drones registering at once.
pub const CLIENTS: usize = 32;

/// Pause before a refused or unanswered registration is tried again: a drone's first backoff.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Longest all registrations may take, retries included.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(180);

/// How often the queen's log is read while bad drones are being removed, and the slack allowed on
/// top of the detection bound.
const DETECTION_POLL: Duration = Duration::from_millis(250);
pub const DETECTION_SLACK_SECS: f64 = 0.5;

/// Clock ticks per second in /proc (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The fleet as the report's first row says it.
pub fn describe(size: &FleetSize) -> String {
    format!(
        "{} / {} / {} / {}",
        size.renewing, size.good, size.refusing, size.silent
    )
}

/// Registers `addresses` by hand from [`CLIENTS`] threads, address i through `queens[i mod n]`,
/// retrying anything but a 200 (a 4xx fails); returns when (Unix seconds) each one's 200 came.
pub fn register_all(
    control: &Control,
    queens: &[&Larve],
    addresses: &[String],
) -> Result<HashMap<String, f64>> {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let client = || -> Result<Vec<(String, f64)>> {
        let mut registered = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(address) = addresses.get(i) else {
                return Ok(registered);
            };
            let queen = queens[i % queens.len()];
            loop {
                match control.register_status(queen, address) {
                    Ok(200) => break,
                    Ok(status) if (400..500).contains(&status) => {
                        return Err(format!(
                            "{} refused to register {address}: HTTP {status}",
                            queen.label
                        ));
                    }
                    _ if Instant::now() > deadline => {
                        return Err(format!("gave up registering {address}"));
                    }
                    _ => thread::sleep(RETRY_PAUSE),
                }
            }
            registered.push((address.clone(), unix_now()));
        }
    };
    thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS).map(|_| scope.spawn(client)).collect();
        let mut all = HashMap::new();
        for handle in clients {
            let done = handle
                .join()
                .unwrap_or_else(|_| Err("a registering thread panicked".into()))?;
            all.extend(done);
        }
        Ok(all)
    })
}

/// Reads `queen`'s log every [`DETECTION_POLL`] until it says every one of `bad` was removed (or
/// `within` passes); returns, sorted, the seconds from each one's registration (Unix seconds, in
/// `registered`) to its removal, as the log line's own time says. The log costs the queen
/// nothing to read, where `/drones` of 10,000 drones every moment would.
pub fn time_removals(
    queen: &Larve,
    bad: &[String],
    registered: &HashMap<String, f64>,
    within: Duration,
) -> Result<Vec<f64>> {
    let deadline = Instant::now() + within;
    let wanted: HashSet<&str> = bad.iter().map(String::as_str).collect();
    loop {
        let removed = removals(&queen.stderr(), &wanted);
        if removed.len() == wanted.len() {
            let mut taken: Vec<f64> = removed
                .iter()
                .filter_map(|(address, at)| Some(at - registered.get(*address)?))
                .collect();
            taken.sort_by(f64::total_cmp);
            return Ok(taken);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} bad drones still registered after {within:?}",
                wanted.len() - removed.len(),
                wanted.len()
            ));
        }
        thread::sleep(DETECTION_POLL);
    }
}

/// When (Unix seconds) the log says each of `wanted` was removed: its lines
/// `<RFC 3339 time> [WARN] removed drone-N ("ADDRESS"): ...`.
fn removals<'a>(log: &str, wanted: &HashSet<&'a str>) -> HashMap<&'a str, f64> {
    let mut found = HashMap::new();
    for line in log.lines() {
        let Some((time, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((_, rest)) = rest.split_once(" removed drone-") else {
            continue;
        };
        let Some(address) = rest.split('"').nth(1) else {
            continue;
        };
        if let (Some(address), Some(at)) = (wanted.get(address), unix_seconds(time)) {
            found.insert(*address, at);
        }
    }
    found
}

/// `2026-12-06T13:07:13.366853983Z` (UTC, as the larves log it) in Unix seconds.
fn unix_seconds(time: &str) -> Option<f64> {
    let (date, clock) = time.strip_suffix('Z')?.split_once('T')?;
    let mut ymd = date.split('-').map(|n| n.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = clock.split(':');
    let (h, min) = (
        hms.next()?.parse::<i64>().ok()?,
        hms.next()?.parse::<i64>().ok()?,
    );
    let secs: f64 = hms.next()?.parse().ok()?;
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
    // days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + secs)
}

/// What one steady-state window saw.
pub struct Steady {
    pub seconds: f64,
    /// Cores the queen used (CPU seconds per second).
    pub cores: f64,
    /// Per second, from her `/metrics`: renewals taken, leases found late, probe tries, failed
    /// probe tries, drones removed.
    pub renewals: f64,
    pub late: f64,
    pub probes: f64,
    pub failed: f64,
    pub removed: f64,
    /// Per second, as the fleet counted: probes of drones that renew, and of the others.
    pub probes_of_renewing: f64,
    pub probes_of_probed: f64,
}

/// Watches `queen` for `window` with nothing else asked of her.
pub fn steady(bench: &Bench, queen: &Larve, fleet: &Fleet, window: Duration) -> Result<Steady> {
    let asked = |fleet: &Fleet| {
        (
            fleet.asked.probes_of_renewing.load(Ordering::Relaxed),
            fleet.asked.probes_of_probed.load(Ordering::Relaxed),
        )
    };
    let metrics_before = bench.tasks.metrics(queen)?;
    let (renewing_before, probed_before) = asked(fleet);
    let ticks_before = cpu_ticks(queen.pid())?;
    let started = Instant::now();
    thread::sleep(window);
    let ticks_after = cpu_ticks(queen.pid())?;
    let seconds = started.elapsed().as_secs_f64();
    let (renewing_after, probed_after) = asked(fleet);
    let metrics_after = bench.tasks.metrics(queen)?;
    let rate = |name: &str| per_sec(&metrics_before, &metrics_after, name, seconds);
    Ok(Steady {
        seconds,
        cores: (ticks_after - ticks_before) as f64 / TICKS_PER_SEC / seconds,
        renewals: rate("hive_leases_renewed_total"),
        late: rate("hive_leases_late_total"),
        probes: rate("hive_probes_total"),
        failed: rate("hive_probes_failed_total"),
        removed: rate("hive_drones_removed_total"),
        probes_of_renewing: (renewing_after - renewing_before) as f64 / seconds,
        probes_of_probed: (probed_after - probed_before) as f64 / seconds,
    })
}

/// How much `name` grew per second from `before` to `after`, `seconds` apart.
fn per_sec(before: &Samples, after: &Samples, name: &str, seconds: f64) -> f64 {
    (after.get(name) - before.get(name)) / seconds
}

/// Answering drones of `fleet` that `listed` lacks.
pub fn answering_lost(fleet: &Fleet, listed: &HashSet<String>) -> usize {
    fleet
        .renewing
        .iter()
        .chain(&fleet.good)
        .filter(|address| !listed.contains(*address))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_s_time_is_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(
            unix_seconds("2026-12-06T13:07:13.25Z"),
            Some(1_796_562_433.25)
        );
        assert_eq!(unix_seconds("2024-02-29T00:00:00Z"), Some(1_709_164_800.0));
        assert_eq!(unix_seconds("yesterday"), None);
    }

    #[test]
    fn removals_are_found_by_address() {
        let log = "2026-12-06T13:07:13.25Z [WARN] removed drone-7 (\"127.0.0.1:5\"): connection refused on all 4 tries\n\
                   2026-12-06T13:07:14Z [INFO] drone-8 (\"127.0.0.1:6\") was removed\n";
        let wanted: HashSet<&str> = ["127.0.0.1:5", "127.0.0.1:6"].into();
        let found = removals(log, &wanted);
        assert_eq!(found.len(), 1);
        assert_eq!(found["127.0.0.1:5"], 1_796_562_433.25);
    }
}
