//! The scheduler's choice of drones: pure, so it is tested with scripts of tasks and drones.
//!
//! Pending tasks are taken in creation order and each goes to the first drone that fits: one that
//! runs commands, is in rotation, is not draining, and has the free slots, and the free memory and
//! cpus its task asks for (beside what its running attempts asked for). **Spread** (the default)
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

/// A drone that may take tasks: its slots, memory (MiB) and cpus (thousandths of a core), and how
/// much of each its attempts take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    pub slots: u32,
    pub used: u32,
    pub memory_mb: u64,
    pub used_memory_mb: u64,
    pub millicpus: u32,
    pub used_millicpus: u32,
}

/// What one task takes on the drone it runs on: its slots, and the memory and cpus it asked for
/// (0 when it asked for none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    pub slots: u32,
    pub memory_mb: u64,
    pub millicpus: u32,
}

impl Capacity {
    /// Whether `want` fits beside what is taken.
    pub fn fits(&self, want: &Want) -> bool {
        self.slots.saturating_sub(self.used) >= want.slots
            && self.memory_mb.saturating_sub(self.used_memory_mb) >= want.memory_mb
            && self.millicpus.saturating_sub(self.used_millicpus) >= want.millicpus
    }

    /// Whether `want` would fit on this drone were it idle.
    pub fn could_ever_fit(&self, want: &Want) -> bool {
        Capacity {
            slots: self.slots,
            memory_mb: self.memory_mb,
            millicpus: self.millicpus,
            ..Capacity::default()
        }
        .fits(want)
    }

    fn take(&mut self, want: &Want) {
        self.used += want.slots;
        self.used_memory_mb += want.memory_mb;
        self.used_millicpus += want.millicpus;
    }
}

/// For each of `tasks` (what each takes, in creation order), the index of the drone in
/// `drones` it goes to, or `None` if none fits now. `drones` is updated with what was handed out.
/// Among drones alike, the first from `turn` on (round the list) is chosen: a scheduler that moves
/// `turn` on each pass spreads short tasks over idle drones instead of handing all to the first,
/// and a pass stays reproducible.
pub fn place(
    tasks: &[Want],
    drones: &mut [Capacity],
    policy: Policy,
    turn: usize,
) -> Vec<Option<usize>> {
    let count = drones.len().max(1);
    let after_turn = |i: usize| (i + count - turn % count) % count;
    tasks
        .iter()
        .map(|want| {
            let fits = drones
                .iter()
                .enumerate()
                .filter(|(_, drone)| drone.fits(want));
            let chosen = match policy {
                Policy::Spread => fits.min_by_key(|(i, drone)| (drone.used, after_turn(*i))),
                Policy::Binpack => {
                    fits.max_by_key(|(i, drone)| (drone.used, usize::MAX - after_turn(*i)))
                }
            }
            .map(|(i, _)| i);
            if let Some(i) = chosen {
                drones[i].take(want);
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
            .map(|&(slots, used)| Capacity {
                slots,
                used,
                ..Capacity::default()
            })
            .collect()
    }

    /// Tasks that each take `slots` and nothing else.
    fn wants(slots: &[u32]) -> Vec<Want> {
        slots
            .iter()
            .map(|&slots| Want {
                slots,
                ..Want::default()
            })
            .collect()
    }

    #[test]
    fn spread_levels_the_drones() {
        let mut fleet = drones(&[(4, 0), (4, 0)]);
        let placed = place(&wants(&[1, 1, 1, 1]), &mut fleet, Policy::Spread, 0);
        assert_eq!(placed, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(fleet, drones(&[(4, 2), (4, 2)]));
        let mut idle = drones(&[(4, 0), (4, 0), (4, 0)]);
        assert_eq!(
            place(&wants(&[1]), &mut idle, Policy::Spread, 2),
            [Some(2)],
            "ties from the turn on"
        );
    }

    #[test]
    fn binpack_fills_one_drone_before_the_next() {
        let mut fleet = drones(&[(4, 0), (4, 0)]);
        let placed = place(&wants(&[1, 1, 1, 1, 1]), &mut fleet, Policy::Binpack, 0);
        assert_eq!(placed, [Some(0), Some(0), Some(0), Some(0), Some(1)]);
    }

    #[test]
    fn a_task_that_fits_nowhere_does_not_block_the_ones_behind_it() {
        let mut fleet = drones(&[(2, 0), (3, 1)]);
        let placed = place(&wants(&[4, 1, 3, 2]), &mut fleet, Policy::Spread, 0);
        assert_eq!(placed, [None, Some(0), None, Some(1)]);
    }

    #[test]
    fn slots_are_never_oversubscribed() {
        for policy in [Policy::Spread, Policy::Binpack] {
            let mut fleet = drones(&[(8, 3), (8, 8), (5, 0)]);
            let tasks: Vec<u32> = (0..40).map(|i| 1 + i % 3).collect();
            let placed = place(&wants(&tasks), &mut fleet, policy, 1);
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

    #[test]
    fn memory_and_cpus_fit_beside_what_is_placed() {
        let drone = |memory_mb, millicpus| Capacity {
            slots: 8,
            memory_mb,
            millicpus,
            ..Capacity::default()
        };
        let mut fleet = vec![drone(1024, 2000), drone(4096, 1000)];
        let want = |memory_mb, millicpus| Want {
            slots: 1,
            memory_mb,
            millicpus,
        };
        let tasks = [
            want(3000, 0),   // only the second has the memory
            want(512, 1500), // only the first has the cpus
            want(600, 0),    // the first has 512 left, the second 1096: the second
            want(1024, 600), // neither has the memory left for it now (512 and 496)
            want(0, 0),      // anything fits where a slot is free
            want(8192, 0),   // nowhere, ever
        ];
        let placed = place(&tasks, &mut fleet, Policy::Spread, 0);
        assert_eq!(placed, [Some(1), Some(0), Some(1), None, Some(0), None]);
        assert_eq!(
            (fleet[0].used_memory_mb, fleet[0].used_millicpus),
            (512, 1500)
        );
        assert_eq!(
            (fleet[1].used_memory_mb, fleet[1].used_millicpus),
            (3600, 0)
        );
        assert!(fleet[1].could_ever_fit(&want(4096, 1000)));
        assert!(!fleet.iter().any(|d| d.could_ever_fit(&want(8192, 0))));
    }
}
