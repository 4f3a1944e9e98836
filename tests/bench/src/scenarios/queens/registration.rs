//! Several queens, a fleet registering through three queens, then their memory: simulated drones are
//! registered by hand, spread round-robin over the queens from many client threads at once, until
//! every queen lists them all (each through her own copy of the registry). Once the leader has
//! probed them all, the leader's and a follower's memory and threads are read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hive_support::etcd::Etcd;
use hive_support::larve::Larve;
use hive_support::procfs::Sampler;
use hive_support::wait;

use super::LABEL;
use crate::control::{self, Control};
use crate::fleet::{Fleet, FleetSize};
use crate::report::{self, Report, mb, target};
use crate::scenarios::Bench;
use crate::scenarios::footprint::QUEEN_RSS_MB_TARGET;
use crate::scenarios::group::{AGREE_TIMEOUT, QUEENS, Queens};
use crate::{Result, progress};

const CLIENTS: usize = 32;

/// Pause before a refused or unanswered registration is tried again: a drone's first backoff.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Longest all registrations may take, retries included, before the part fails.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long after the last registration every queen may take to list every drone, and how often
/// they are asked meanwhile: the 50 ms.
const LISTED_TIMEOUT: Duration = Duration::from_secs(30);
const LISTED_POLL: Duration = Duration::from_millis(50);

/// The target from the first registration until every queen lists every drone.
const LISTED_SECS_TARGET: f64 = 10.0;

/// How long the leader may take to probe every drone once all are listed: these drones renew
/// nothing, so each is probed within an interval (10 s, the default) of its registration and then
/// on its slot; two intervals, the probes' time, and slack. And how often her `/drones` is read
/// meanwhile.
const PROBED_TIMEOUT: Duration = Duration::from_secs(40);
const PROBED_POLL: Duration = Duration::from_millis(200);

/// Window over which each queen's memory and threads are sampled, at rest.
const SAMPLE_WINDOW: Duration = Duration::from_millis(500);

/// What the registering clients saw.
#[derive(Default)]
struct Tally {
    /// Registrations answered with something else than 200 at least once.
    refused_registrations: usize,
    /// Every answer other than 200, by status.
    refusals: BTreeMap<u16, usize>,
    /// Calls that got no answer at all (a connection error or the client's 5 s limit).
    unanswered: usize,
    /// Calls made again after a refusal or no answer.
    retries: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.refused_registrations += other.refused_registrations;
        for (status, count) in other.refusals {
            *self.refusals.entry(status).or_default() += count;
        }
        self.unanswered += other.unanswered;
        self.retries += other.retries;
    }
}

/// Registers the fleet, measures, and adds the rows.
pub fn run(bench: &Bench, etcd: &Etcd, report: &mut Report) -> Result<()> {
    let size = bench.plan.queens_fleet;
    let fleet = Fleet::start(FleetSize {
        renewing: 0,
        good: size,
        refusing: 0,
        silent: 0,
    })?;
    let queens = Queens::start(bench, etcd, "queens-fleet")?;
    let leader = queens.agreed_leader(AGREE_TIMEOUT)?;
    progress(&format!(
        "registering {size} drones through {QUEENS} queens from {CLIENTS} threads"
    ));
    let first = Instant::now();
    let tally = register_all(&bench.control, &queens.refs(), &fleet.good)?;
    let registered = first.elapsed().as_secs_f64();
    wait::until(
        LISTED_TIMEOUT,
        LISTED_POLL,
        &format!("every queen to list all {size} drones"),
        || {
            queens
                .live()
                .iter()
                .all(|queen| bench.control.lists_all(queen, &fleet.good))
                .then_some(())
        },
    )?;
    let listed = first.elapsed().as_secs_f64();
    let listed_at = control::unix_now();
    progress(&format!(
        "all registered after {registered:.2} s, listed by every queen after {listed:.2} s"
    ));
    report.row(
        LABEL,
        format!(
            "{size} drones registered round-robin through {QUEENS} queens from {CLIENTS} threads: \
             s until the last was answered / until every queen's /healthz lists all"
        ),
        format!("{registered:.2} / {listed:.2} s"),
        target(
            &format!("≤ {LISTED_SECS_TARGET:.0} s until listed"),
            listed <= LISTED_SECS_TARGET,
        ),
    );
    let refusals: Vec<String> = tally
        .refusals
        .iter()
        .map(|(status, count)| format!("{count} × HTTP {status}"))
        .collect();
    report.row(
        LABEL,
        "registration: registrations refused at least once / refusals (by status) / calls \
         unanswered / retries",
        format!(
            "{} / {} / {} / {}",
            tally.refused_registrations,
            if refusals.is_empty() {
                "0".to_string()
            } else {
                refusals.join(", ")
            },
            tally.unanswered,
            tally.retries
        ),
        target("0 refused", tally.refused_registrations == 0),
    );

    let leader_queen = &queens.live()[leader];
    let follower = queens.follower(leader);
    let lost = wait::poll(
        PROBED_TIMEOUT,
        PROBED_POLL,
        "the leader to probe every drone",
        || {
            let list = bench.control.list(leader_queen)?;
            let probed = list.iter().all(|drone| drone.last_seen > listed_at);
            Ok(probed.then(|| size.saturating_sub(list.len())))
        },
    )?;
    report.row(
        LABEL,
        "fleet drones the leader removed in her first probes of them all (default heartbeat)",
        lost.to_string(),
        target("0", lost == 0),
    );
    let samplers = [
        ("leader", Sampler::start(leader_queen.pid())),
        ("follower", Sampler::start(follower.pid())),
    ];
    thread::sleep(SAMPLE_WINDOW);
    for (role, sampler) in samplers {
        let peak = sampler.finish();
        let hwm_mb = report::mb_of(peak.hwm_kb);
        report.row(
            LABEL,
            format!(
                "{role} queen on etcd with {size} drones: peak RSS (VmHWM) / RSS (VmRSS) MB / threads"
            ),
            format!(
                "{} / {} / {}",
                mb(peak.hwm_kb),
                mb(peak.rss_kb),
                peak.max_threads
            ),
            target(
                &format!("VmHWM ≤ {QUEEN_RSS_MB_TARGET:.0} (the queen alone's target)"),
                hwm_mb <= QUEEN_RSS_MB_TARGET,
            ),
        );
    }
    report.note(format!(
        "{LABEL}, registration: {size} simulated drones (hive-bench's fake fleet, answering \
         /healthz) and three queens `{}`; {CLIENTS} threads take the drones in turn and POST \
         /register {{\"address\": ...}} to queen i mod 3 for drone i, trying again after {} ms on \
         anything but a 200 (a 4xx fails the part). The clock starts as the threads start; then \
         every queen's /healthz drones map is read every {} ms until each lists every drone. Once \
         the leader's /drones shows every drone probed after that (last_seen later), the leader's \
         and a follower's /proc/PID/status are sampled for {} ms: VmHWM is the kernel's peak over \
         the queen's life (registrations, the watch, a probe of every drone), VmRSS the largest seen; \
         the in-memory queen's figures are in 5. footprint",
        queens.command(),
        RETRY_PAUSE.as_millis(),
        LISTED_POLL.as_millis(),
        SAMPLE_WINDOW.as_millis()
    ));
    Ok(())
}

/// Registers every address in `addresses` from [`CLIENTS`] threads, address i through queen
/// i mod the number of queens, retrying anything but a 200 or a 4xx.
fn register_all(control: &Control, queens: &[&Larve], addresses: &[String]) -> Result<Tally> {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let client = || -> Result<Tally> {
        let mut tally = Tally::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(address) = addresses.get(i) else {
                return Ok(tally);
            };
            let queen = queens[i % queens.len()];
            let mut refused = false;
            loop {
                match control.register_status(queen, address) {
                    Ok(200) => break,
                    Ok(status) if (400..500).contains(&status) => {
                        return Err(format!(
                            "{} refused to register {address}: HTTP {status}",
                            queen.label
                        ));
                    }
                    Ok(status) => {
                        refused = true;
                        *tally.refusals.entry(status).or_default() += 1;
                    }
                    Err(_) => tally.unanswered += 1,
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "gave up registering {address} through {} after {REGISTER_TIMEOUT:?}",
                        queen.label
                    ));
                }
                tally.retries += 1;
                thread::sleep(RETRY_PAUSE);
            }
            if refused {
                tally.refused_registrations += 1;
            }
        }
    };
    thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS).map(|_| scope.spawn(client)).collect();
        let mut tally = Tally::default();
        for handle in clients {
            let done = handle
                .join()
                .unwrap_or_else(|_| Err("a registering thread panicked".into()))?;
            tally.add(done);
        }
        Ok(tally)
    })
}
