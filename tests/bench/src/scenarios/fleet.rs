//! The fleet scenarios, named rather than numbered (`--only fleet,fleet-etcd`): ten thousand
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
use crate::control::Control;
use crate::fleet::{Fleet, FleetSize};
use crate::tasks::Samples;

/// Threads registering drones by hand, as many drones registering at once.
pub const CLIENTS: usize = 32;

/// Pause before a refused or unanswered registration is tried again: a drone's first backoff.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Longest all registrations may take, retries included.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(180);

/// How often the queen's `/drones` is read while bad drones are being removed (the resolution of
/// each removal's time), and the slack allowed on top of the detection bound for it.
pub const DETECTION_POLL: Duration = Duration::from_millis(250);
pub const DETECTION_SLACK_SECS: f64 = 1.0;

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
/// retrying anything but a 200 (a 4xx fails); returns when each one's 200 came.
pub fn register_all(
    control: &Control,
    queens: &[&Larve],
    addresses: &[String],
) -> Result<HashMap<String, Instant>> {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let client = || -> Result<Vec<(String, Instant)>> {
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
            registered.push((address.clone(), Instant::now()));
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

/// Reads `queen`'s `/drones` every [`DETECTION_POLL`] until none of `bad` is listed (or `within`
/// passes); returns, for each bad drone, the seconds from its registration (in `registered`) to
/// the first reading without it.
pub fn time_removals(
    control: &Control,
    queen: &Larve,
    bad: &[String],
    registered: &HashMap<String, Instant>,
    within: Duration,
) -> Result<Vec<f64>> {
    let deadline = Instant::now() + within;
    let mut left: HashSet<&String> = bad.iter().collect();
    let mut taken = Vec::new();
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} bad drones still registered after {within:?}",
                left.len(),
                bad.len()
            ));
        }
        thread::sleep(DETECTION_POLL);
        let listed = control.listed(queen)?;
        let now = Instant::now();
        left.retain(|address| {
            if listed.contains(*address) {
                return true;
            }
            if let Some(at) = registered.get(*address) {
                taken.push(now.duration_since(*at).as_secs_f64());
            }
            false
        });
    }
    taken.sort_by(f64::total_cmp);
    Ok(taken)
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
