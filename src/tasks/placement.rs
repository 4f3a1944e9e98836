//! The scheduler's choice of drones: pure, so it is tested with scripts of tasks and drones.
//!
//! Pending tasks are taken in creation order and each goes to the first drone that fits: one that
//! runs commands, is in rotation, is not draining, and has the free slots. **Spread** (the default)
//! picks the drone with the fewest used slots, so work lands evenly; **binpack** picks the one with
//! the most that still fits, filling drones in turn and leaving others free for big tasks. A task
//! that fits nowhere is skipped, so it does not hold up the ones behind it. Slots are counted as
//! they are handed out, so one pass never oversubscribes a drone.

use std::fmt;
use std::str::FromStr;

/// How drones are chosen among those that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Fewest used slots first.
    #[default]
    Spread,
    /// Most used slots first (that still fit).
    Binpack,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "spread" => Ok(Policy::Spread),
            "binpack" => Ok(Policy::Binpack),
            _ => Err(format!("{s:?} is not spread or binpack")),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Spread => "spread",
            Policy::Binpack => "binpack",
        })
    }
}

/// A drone that may take tasks, and its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub slots: u32,
    pub used: u32,
}

impl Capacity {
    fn free(&self) -> u32 {
        self.slots.saturating_sub(self.used)
    }
}

/// For each of `tasks` (the slots each needs, in creation order), the index of the drone in
/// `drones` it goes to, or `None` if none fits now. `drones` is updated with what was handed out.
/// Among drones alike, the first from `turn` on (round the list) is chosen: a scheduler that moves
/// `turn` on each pass spreads short tasks over idle drones instead of handing all to the first,
/// and a pass stays reproducible.
pub fn place(
    tasks: &[u32],
    drones: &mut [Capacity],
    policy: Policy,
    turn: usize,
) -> Vec<Option<usize>> {
    let count = drones.len().max(1);
    let after_turn = |i: usize| (i + count - turn % count) % count;
    tasks
        .iter()
        .map(|&slots| {
            let fits = drones
                .iter()
                .enumerate()
                .filter(|(_, drone)| drone.free() >= slots);
            let chosen = match policy {
                Policy::Spread => fits.min_by_key(|(i, drone)| (drone.used, after_turn(*i))),
                Policy::Binpack => {
                    fits.max_by_key(|(i, drone)| (drone.used, usize::MAX - after_turn(*i)))
                }
            }
            .map(|(i, _)| i);
            if let Some(i) = chosen {
                drones[i].used += slots;
            }
            chosen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drones(slots: &[(u32, u32)]) -> Vec<Capacity> {
        slots
            .iter()
            .map(|&(slots, used)| Capacity { slots, used })
            .collect()
    }

    #[test]
    fn spread_levels_the_drones() {
        let mut fleet = drones(&[(4, 0), (4, 0)]);
        let placed = place(&[1, 1, 1, 1], &mut fleet, Policy::Spread, 0);
        assert_eq!(placed, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(fleet, drones(&[(4, 2), (4, 2)]));
        let mut idle = drones(&[(4, 0), (4, 0), (4, 0)]);
        assert_eq!(
            place(&[1], &mut idle, Policy::Spread, 2),
            [Some(2)],
            "ties from the turn on"
        );
    }

    #[test]
    fn binpack_fills_one_drone_before_the_next() {
        let mut fleet = drones(&[(4, 0), (4, 0)]);
        let placed = place(&[1, 1, 1, 1, 1], &mut fleet, Policy::Binpack, 0);
        assert_eq!(placed, [Some(0), Some(0), Some(0), Some(0), Some(1)]);
    }

    #[test]
    fn a_task_that_fits_nowhere_does_not_block_the_ones_behind_it() {
        let mut fleet = drones(&[(2, 0), (3, 1)]);
        let placed = place(&[4, 1, 3, 2], &mut fleet, Policy::Spread, 0);
        assert_eq!(placed, [None, Some(0), None, Some(1)]);
    }

    #[test]
    fn slots_are_never_oversubscribed() {
        for policy in [Policy::Spread, Policy::Binpack] {
            let mut fleet = drones(&[(8, 3), (8, 8), (5, 0)]);
            let tasks: Vec<u32> = (0..40).map(|i| 1 + i % 3).collect();
            let placed = place(&tasks, &mut fleet, policy, 1);
            for drone in &fleet {
                assert!(drone.used <= drone.slots, "{policy}: {fleet:?}");
            }
            let handed: u32 = tasks
                .iter()
                .zip(&placed)
                .filter(|(_, p)| p.is_some())
                .map(|(s, _)| s)
                .sum();
            assert_eq!(
                handed,
                (8 - 3) + 5,
                "{policy}: every free slot that could be used was"
            );
        }
    }
}
