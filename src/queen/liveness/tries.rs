//! One drone's probe and what a failed try of it means: pure decisions, apart from the sockets
//! (`prober.rs`) and the registry that counts the failures.
//!
//! A probe is up to `attempts` tries, `retry delay` apart, each limited by the timeout; the first
//! that gets a 2xx answer ends it. A probe made because the drone was due (its lease late, or its
//! slot come) removes the drone when every try failed, unless the drone showed life meanwhile (a
//! renewal, a registration); a re-check of a drone that failed a task never removes: while it
//! fails it is tried again every [`RECHECK_INTERVAL`].

use std::time::{Duration, Instant};

use super::super::registry::Target;

/// Pause between two re-checks of a drone whose probes keep failing.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Pause before a try the queen could not even start (out of descriptors, of memory) is started
/// again. It is not counted against the drone: the queen was short, not the drone.
pub const LOCAL_FAILURE_PAUSE: Duration = Duration::from_millis(100);

/// Why a drone is being probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// It was due: its lease is late, or its slot came. Every try failing removes it.
    Due,
    /// A task failed on it: it takes tasks again once a try passes; never removed for it.
    Recheck,
}

/// One probe of one drone in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub target: Target,
    pub purpose: Purpose,
    /// When its first try started: a sign of life after this keeps the drone.
    pub started: Instant,
    /// Tries failed so far.
    pub failed: u32,
}

/// What the registry made of a failed try (see `Registry::record_probe_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The registration is gone (removed, or replaced by a new one).
    Gone,
    /// The drone showed life after the probe started: this probe has nothing left to find.
    ShowedLife,
    /// Counted against the drone; `left_rotation` when this took it out of rotation.
    Counted { left_rotation: bool },
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again then.
    TryAgain(Instant),
    /// Every try failed: remove the drone, if it still showed no life since the probe started.
    Remove,
    /// Re-check it again then.
    RecheckAt(Instant),
    /// Nothing more: it went, or showed life meanwhile.
    Stop,
}

/// What follows a failed try of `probe` (its `failed` count already includes this one), given
/// what the registry made of it, at `now`.
pub fn after_failure(
    probe: &Probe,
    failure: Failure,
    attempts: u32,
    retry_delay: Duration,
    now: Instant,
) -> Next {
    match (failure, probe.purpose) {
        (Failure::Gone | Failure::ShowedLife, _) => Next::Stop,
        (Failure::Counted { .. }, Purpose::Recheck) => Next::RecheckAt(now + RECHECK_INTERVAL),
        (Failure::Counted { .. }, Purpose::Due) if probe.failed >= attempts => Next::Remove,
        (Failure::Counted { .. }, Purpose::Due) => Next::TryAgain(now + retry_delay),
    }
}

/// What follows a try the queen could not start: the same try a moment later, not counted.
pub fn after_local_failure(now: Instant) -> Next {
    Next::TryAgain(now + LOCAL_FAILURE_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPTS: u32 = 3;
    const DELAY: Duration = Duration::from_millis(500);

    fn probe(purpose: Purpose, failed: u32) -> Probe {
        Probe {
            target: Target {
                address: "a:1".into(),
                name: "drone-0".into(),
            },
            purpose,
            started: Instant::now(),
            failed,
        }
    }

    const COUNTED: Failure = Failure::Counted {
        left_rotation: false,
    };

    #[test]
    fn a_due_drone_is_tried_again_after_the_delay_then_removed_after_its_last_try() {
        let now = Instant::now();
        for failed in 1..ATTEMPTS {
            let next = after_failure(&probe(Purpose::Due, failed), COUNTED, ATTEMPTS, DELAY, now);
            assert_eq!(next, Next::TryAgain(now + DELAY), "after try {failed}");
        }
        let last = after_failure(
            &probe(Purpose::Due, ATTEMPTS),
            COUNTED,
            ATTEMPTS,
            DELAY,
            now,
        );
        assert_eq!(last, Next::Remove);
    }

    #[test]
    fn a_drone_that_went_or_showed_life_meanwhile_is_left_alone() {
        let now = Instant::now();
        for failure in [Failure::Gone, Failure::ShowedLife] {
            for purpose in [Purpose::Due, Purpose::Recheck] {
                let next = after_failure(&probe(purpose, ATTEMPTS), failure, ATTEMPTS, DELAY, now);
                assert_eq!(next, Next::Stop, "{failure:?} {purpose:?}");
            }
        }
    }

    #[test]
    fn a_recheck_never_removes_it_checks_again_a_second_later() {
        let now = Instant::now();
        let next = after_failure(
            &probe(Purpose::Recheck, 100),
            Failure::Counted {
                left_rotation: true,
            },
            ATTEMPTS,
            DELAY,
            now,
        );
        assert_eq!(next, Next::RecheckAt(now + RECHECK_INTERVAL));
    }

    #[test]
    fn a_try_the_queen_could_not_start_is_not_counted() {
        let now = Instant::now();
        assert_eq!(
            after_local_failure(now),
            Next::TryAgain(now + LOCAL_FAILURE_PAUSE)
        );
    }
}
