//! When each drone is probed next: pure timing, no I/O and no clock (every function takes the
//! time it decides at).
//!
//! The rule is one: **a drone is probed when it has shown no sign of life for an interval**, so a
//! dead one is found within `interval + attempts × (timeout + retry delay)`. What differs is how
//! a drone shows life:
//!
//! - A drone that **renews a lease** (a Hive drone) shows life with every renewal, so it is
//!   probed only when its lease is late: an interval after its last renewal (or registration, or
//!   passed probe). Renewals are spread by the drones' own jitter.
//! - A drone that **renews nothing** (the tutorial's) shows life only to probes, so it is probed
//!   every interval, on slots of its own: `epoch + phase + k × interval`, where its phase within
//!   the interval comes from a hash of its address. A fleet registered all at once is then probed
//!   evenly across the interval instead of in one burst. Its first probe comes between half an
//!   interval and an interval after it registered (the registration was a sign of life), at a
//!   point of that half drawn from the same hash, so a fleet registered in one burst is not
//!   probed in one either; the next ones on its slots.
//! - A queen that starts leading has seen neither renewals nor probes: she gives every drone an
//!   interval from then (a drone that renews finds her within it), and probes the others on their
//!   slots from then.
//!
//! [`Queue`] orders drones by when they are due: a heap holding one live entry per drone, named by
//! a ticket. A renewal moves a drone's due time later without touching the heap: the entry fires
//! at the old time, finds the drone not due yet, and is queued again at the new one. So a renewal
//! costs no heap operation, and each drone costs one pop and one push per interval.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How a drone shows that it is alive between probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// It renews a lease every interval (a Hive drone registered with a Hive queen).
    Renews,
    /// It renews nothing (the tutorial's drone): only probes see it.
    Probed,
}

/// The probing calendar of one queen: her interval, and the instant her slots count from.
#[derive(Debug, Clone, Copy)]
pub struct Timetable {
    interval: Duration,
    epoch: Instant,
}

impl Timetable {
    /// Slots `interval` apart, counted from `epoch`. A zero interval is taken as a millisecond, so
    /// slots always move forward.
    pub fn new(interval: Duration, epoch: Instant) -> Timetable {
        Timetable {
            interval: interval.max(Duration::from_millis(1)),
            epoch,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Where within the interval the slots of the drone at `address` fall: FNV-1a of the address,
    /// so drones spread evenly whatever their addresses look like, and a drone keeps its phase
    /// for the life of the queen.
    fn phase(&self, address: &str) -> Duration {
        let hash = address
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        let interval_ns = self.interval.as_nanos().max(1);
        Duration::from_nanos((u128::from(hash) % interval_ns) as u64)
    }

    /// The first slot of the drone at `address` strictly after `t`.
    pub fn slot_after(&self, address: &str, t: Instant) -> Instant {
        let first = self.epoch + self.phase(address);
        let Some(since) = t.checked_duration_since(first) else {
            return first;
        };
        let interval_ns = self.interval.as_nanos();
        let passed = since.as_nanos() / interval_ns + 1;
        first + Duration::from_nanos(u64::try_from(passed * interval_ns).unwrap_or(u64::MAX / 2))
    }

    /// When a drone of `kind` at `address` that registered at `now` is first due: one that renews
    /// an interval later (its first renewal comes before); one that does not within the second
    /// half of the interval, spread by its phase.
    pub fn after_registration(&self, kind: Kind, address: &str, now: Instant) -> Instant {
        match kind {
            Kind::Renews => now + self.interval,
            Kind::Probed => {
                let half = self.interval / 2;
                let fraction = self.phase(address).as_secs_f64() / self.interval.as_secs_f64();
                now + half + half.mul_f64(fraction)
            }
        }
    }

    /// When a drone that renews is due after a renewal (or another sign of life) at `now`.
    pub fn after_renewal(&self, now: Instant) -> Instant {
        now + self.interval
    }

    /// When a drone of `kind` at `address` is due after a probe of it ended at `ended`, whatever
    /// its verdict: one that renews an interval later (its lease is still late if it sends no
    /// renewal), one that does not at its next slot. A dead drone that could not be removed (the
    /// store away, leadership lost) is so probed again at the same pace, never in a loop.
    pub fn after_probe(&self, kind: Kind, address: &str, ended: Instant) -> Instant {
        match kind {
            Kind::Renews => ended + self.interval,
            Kind::Probed => self.slot_after(address, ended),
        }
    }

    /// When a drone of `kind` at `address` is first due once this queen starts leading at `now`.
    pub fn on_taking_lead(&self, kind: Kind, address: &str, now: Instant) -> Instant {
        match kind {
            Kind::Renews => now + self.interval,
            Kind::Probed => self.slot_after(address, now),
        }
    }
}

/// Drones ordered by when they are due, earliest first. An entry is `(due, ticket, address)`; the
/// registry keeps each drone's current ticket, and an entry whose ticket is not its drone's
/// current one is stale (the drone went, or was queued again earlier) and is skipped.
#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_ticket: u64,
}

impl Queue {
    /// Queues `address` at `at`; returns the entry's ticket.
    pub fn push(&mut self, address: &str, at: Instant) -> u64 {
        self.next_ticket += 1;
        self.heap
            .push(Reverse((at, self.next_ticket, address.to_string())));
        self.next_ticket
    }

    /// The earliest entry, if it is due at `now`: its address and ticket.
    pub fn pop_due(&mut self, now: Instant) -> Option<(String, u64)> {
        if self.heap.peek()?.0.0 > now {
            return None;
        }
        let Reverse((_, ticket, address)) = self.heap.pop()?;
        Some((address, ticket))
    }

    /// When the earliest entry is due (maybe a stale one: waking for it early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|entry| entry.0.0)
    }

    /// Forgets every entry (before queueing every drone again).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn timetable() -> (Timetable, Instant) {
        let epoch = Instant::now();
        (Timetable::new(INTERVAL, epoch), epoch)
    }

    #[test]
    fn a_drone_s_slots_are_an_interval_apart_within_its_phase() {
        let (table, epoch) = timetable();
        let first = table.slot_after("127.0.0.1:5001", epoch);
        assert!(first > epoch && first <= epoch + INTERVAL);
        let second = table.slot_after("127.0.0.1:5001", first);
        assert_eq!(
            second - first,
            INTERVAL,
            "strictly after a slot: the next one"
        );
        let just_before = first - Duration::from_millis(1);
        assert_eq!(table.slot_after("127.0.0.1:5001", just_before), first);
        let much_later = epoch + INTERVAL * 1000 + Duration::from_millis(1);
        let slot = table.slot_after("127.0.0.1:5001", much_later);
        assert!(slot > much_later && slot - much_later <= INTERVAL);
        assert_eq!((slot - first).as_nanos() % INTERVAL.as_nanos(), 0);
    }

    #[test]
    fn a_fleet_registered_at_once_is_probed_evenly_across_the_interval() {
        let (table, epoch) = timetable();
        // 10,000 consecutive ports, as a fleet on one machine has: a tenth of the interval each
        // should hold about a tenth of the probes.
        let mut tenths = [0usize; 10];
        for port in 20_000..30_000 {
            let slot = table.slot_after(&format!("127.0.0.1:{port}"), epoch);
            let tenth = ((slot - epoch).as_secs_f64() / INTERVAL.as_secs_f64() * 10.0) as usize;
            tenths[tenth.min(9)] += 1;
        }
        for (i, count) in tenths.iter().enumerate() {
            assert!(
                (800..=1200).contains(count),
                "tenth {i} of the interval holds {count} of 10,000 first probes: {tenths:?}"
            );
        }
    }

    #[test]
    fn a_drone_is_never_left_unprobed_for_more_than_an_interval_after_life() {
        let (table, epoch) = timetable();
        let registered = epoch + Duration::from_millis(1234);
        assert_eq!(
            table.after_registration(Kind::Renews, "127.0.0.1:5001", registered),
            registered + INTERVAL
        );
        let first = table.after_registration(Kind::Probed, "127.0.0.1:5001", registered);
        assert!(first >= registered + INTERVAL / 2 && first <= registered + INTERVAL);
        for kind in [Kind::Renews, Kind::Probed] {
            // Probed at its due time, passing 300 ms later: next due within an interval of the pass.
            let passed = registered + INTERVAL + Duration::from_millis(300);
            let next = table.after_probe(kind, "127.0.0.1:5001", passed);
            assert!(next > passed && next - passed <= INTERVAL, "{kind:?}");
        }
        let renewed = epoch + Duration::from_secs(3);
        assert_eq!(table.after_renewal(renewed), renewed + INTERVAL);
    }

    #[test]
    fn a_fleet_registered_at_once_is_first_probed_over_half_an_interval() {
        let (table, epoch) = timetable();
        let firsts: Vec<Duration> = (20_000..21_000)
            .map(|port| {
                table.after_registration(Kind::Probed, &format!("127.0.0.1:{port}"), epoch) - epoch
            })
            .collect();
        let (earliest, latest) = (firsts.iter().min().unwrap(), firsts.iter().max().unwrap());
        assert!(*earliest >= INTERVAL / 2 && *latest <= INTERVAL);
        assert!(
            *latest - *earliest >= INTERVAL * 4 / 10,
            "{earliest:?} to {latest:?}"
        );
    }

    #[test]
    fn a_new_leader_gives_renewing_drones_an_interval_and_spreads_the_others() {
        let (table, epoch) = timetable();
        let now = epoch + Duration::from_secs(77);
        assert_eq!(
            table.on_taking_lead(Kind::Renews, "127.0.0.1:5001", now),
            now + INTERVAL
        );
        let slot = table.on_taking_lead(Kind::Probed, "127.0.0.1:5001", now);
        assert_eq!(slot, table.slot_after("127.0.0.1:5001", now));
        assert!(slot > now && slot <= now + INTERVAL);
    }

    #[test]
    fn the_queue_gives_due_entries_earliest_first() {
        let mut queue = Queue::default();
        let now = Instant::now();
        let b = queue.push("b:1", now + Duration::from_secs(2));
        let a = queue.push("a:1", now + Duration::from_secs(1));
        queue.push("c:1", now + Duration::from_secs(9));
        assert_eq!(queue.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(queue.pop_due(now), None, "nothing due yet");
        let at = now + Duration::from_secs(5);
        assert_eq!(queue.pop_due(at), Some(("a:1".into(), a)));
        assert_eq!(queue.pop_due(at), Some(("b:1".into(), b)));
        assert_eq!(queue.pop_due(at), None);
        assert_eq!(queue.len(), 1);
    }
}
