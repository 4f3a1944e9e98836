//! The scheduler's choice of drones: pure, so it is tested with scripts of tasks and drones.
//!
//! Pending tasks are taken in creation order and each goes to the first drone that fits: one that
//! runs commands, is in rotation, is not draining, meets the task's constraints (see
//! `labels.rs`), and has the free slots, and the free memory and cpus its task asks for (beside
//! what its running attempts asked for). Which drones meet a set of constraints is worked out once
//! per pass for each distinct set ([`Eligibility`]): the tasks of a queue mostly share a few sets,
//! so a pass reads each drone's labels a few times, not once per task, and choosing among a
//! thousand drones costs a task about what it costs without constraints. **Spread** (the default)
//! picks the drone with the fewest used slots, so work lands evenly; **binpack** picks the one with
//! the most that still fits, filling drones in turn and leaving others free for big tasks. A task
//! that fits nowhere is skipped, so it does not hold up the ones behind it. Slots are counted as
//! they are handed out, so one pass never oversubscribes a drone.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::labels::{Constraint, Labels, NAME_LABEL, all_hold};

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

/// A task to place: what it takes, and what it asks of the drone.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub want: Want,
    pub constraints: &'a [Constraint],
}

/// Which of a pass's drones meet each distinct set of constraints, worked out the first time a
/// task asks with that set. A set that names one drone (`hive.name=drone-3`, as the tasks of an
/// `each_drone` group do, each its own) is checked on that drone alone: a group of a thousand
/// tasks costs a pass a thousand checks, not a million.
#[derive(Debug)]
pub struct Eligibility<'a> {
    /// Each drone's labels, in the order of the pass's drones.
    labels: Vec<&'a Labels>,
    /// Each drone's place in `labels`, by its name (its `hive.name` label).
    by_name: HashMap<&'a str, usize>,
    /// By set of constraints: whether each drone meets them all; `None` when every drone does
    /// (so the set costs placement nothing).
    sets: HashMap<Vec<Constraint>, Option<Vec<bool>>>,
}

impl<'a> Eligibility<'a> {
    /// For drones labelled `labels` (in the order the pass lists them).
    pub fn new(labels: Vec<&'a Labels>) -> Eligibility<'a> {
        let by_name = labels
            .iter()
            .enumerate()
            .filter_map(|(i, labels)| Some((labels.get(NAME_LABEL)?.as_str(), i)))
            .collect();
        Eligibility {
            labels,
            by_name,
            sets: HashMap::new(),
        }
    }

    /// Whether each drone meets all of `constraints`.
    fn meeting(&self, constraints: &[Constraint]) -> Vec<bool> {
        let named = constraints.iter().find_map(|constraint| match constraint {
            Constraint::Equals { key, value } if key == NAME_LABEL => Some(value.as_str()),
            _ => None,
        });
        match named {
            Some(name) => {
                let mut meets = vec![false; self.labels.len()];
                if let Some(&i) = self.by_name.get(name) {
                    meets[i] = all_hold(constraints, self.labels[i]);
                }
                meets
            }
            None => self
                .labels
                .iter()
                .map(|labels| all_hold(constraints, labels))
                .collect(),
        }
    }

    /// Whether each drone meets every one of `constraints`; `None` when every drone does (there
    /// are none, or they hold everywhere).
    pub fn of(&mut self, constraints: &[Constraint]) -> Option<&[bool]> {
        if constraints.is_empty() {
            return None;
        }
        if !self.sets.contains_key(constraints) {
            let meets = self.meeting(constraints);
            let everywhere = meets.iter().all(|&m| m);
            self.sets
                .insert(constraints.to_vec(), (!everywhere).then_some(meets));
        }
        self.sets.get(constraints)?.as_deref()
    }

    /// Whether any drone meets every one of `constraints`.
    pub fn any(&mut self, constraints: &[Constraint]) -> bool {
        self.of(constraints)
            .is_none_or(|meets| meets.iter().any(|&m| m))
    }
}

/// For each of `tasks` (in creation order), the index of the drone in `drones` it goes to, or
/// `None` if none that meets its constraints (by `eligibility`, made for the same drones) fits
/// now. `drones` is updated with what was handed out. Among drones alike, the first from `turn`
/// on (round the list) is chosen: a scheduler that moves `turn` on each pass spreads short tasks
/// over idle drones instead of handing all to the first, and a pass stays reproducible.
pub fn place(
    tasks: &[Ask],
    drones: &mut [Capacity],
    eligibility: &mut Eligibility,
    policy: Policy,
    turn: usize,
) -> Vec<Option<usize>> {
    let count = drones.len().max(1);
    let after_turn = |i: usize| (i + count - turn % count) % count;
    tasks
        .iter()
        .map(|ask| {
            let want = &ask.want;
            let chosen = match eligibility.of(ask.constraints) {
                None => choose(drones.iter().enumerate(), want, policy, after_turn),
                Some(meets) => {
                    let meeting = drones
                        .iter()
                        .enumerate()
                        .zip(meets)
                        .filter(|(_, meets)| **meets)
                        .map(|(drone, _)| drone);
                    choose(meeting, want, policy, after_turn)
                }
            };
            if let Some(i) = chosen {
                drones[i].take(want);
            }
            chosen
        })
        .collect()
}

/// Among `drones` (each with its index), the one `policy` picks for `want`, if any fits;
/// `after_turn` orders drones alike.
fn choose<'a>(
    drones: impl Iterator<Item = (usize, &'a Capacity)>,
    want: &Want,
    policy: Policy,
    after_turn: impl Fn(usize) -> usize,
) -> Option<usize> {
    let fits = drones.filter(|(_, drone)| drone.fits(want));
    match policy {
        Policy::Spread => fits.min_by_key(|(i, drone)| (drone.used, after_turn(*i))),
        Policy::Binpack => fits.max_by_key(|(i, drone)| (drone.used, usize::MAX - after_turn(*i))),
    }
    .map(|(i, _)| i)
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

    /// Places `wants`, none with constraints, on `drones` (none labelled).
    fn place(
        wants: &[Want],
        drones: &mut [Capacity],
        policy: Policy,
        turn: usize,
    ) -> Vec<Option<usize>> {
        let asks: Vec<Ask> = wants
            .iter()
            .map(|&want| Ask {
                want,
                constraints: &[],
            })
            .collect();
        let none = Labels::new();
        let mut eligibility = Eligibility::new(vec![&none; drones.len()]);
        super::place(&asks, drones, &mut eligibility, policy, turn)
    }

    fn labels(text: &str) -> Labels {
        text.split_whitespace()
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, "yes"));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn constraints(text: &str) -> Vec<Constraint> {
        text.split_whitespace()
            .map(|c| c.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_task_goes_only_to_drones_that_meet_every_constraint() {
        let fleet_labels = [
            labels("zone=eu hive.arch=x86_64"),
            labels("zone=eu gpu=a100 hive.arch=aarch64"),
            labels("zone=us gpu=a100 hive.arch=x86_64"),
        ];
        let mut eligibility = Eligibility::new(fleet_labels.iter().collect());
        let mut fleet = drones(&[(8, 0), (8, 0), (8, 0)]);
        let (eu, gpu, eu_gpu, not_arm, nowhere) = (
            constraints("zone=eu"),
            constraints("gpu"),
            constraints("zone=eu gpu"),
            constraints("hive.arch!=aarch64"),
            constraints("zone=ap"),
        );
        let one = Want {
            slots: 1,
            ..Want::default()
        };
        let ask = |constraints| Ask {
            want: one,
            constraints,
        };
        let tasks = [
            ask(&eu),
            ask(&eu),
            ask(&gpu),
            ask(&gpu),
            ask(&eu_gpu),
            ask(&not_arm),
            ask(&not_arm),
            ask(&nowhere),
            ask(&[]),
        ];
        let placed = super::place(&tasks, &mut fleet, &mut eligibility, Policy::Spread, 0);
        assert_eq!(
            placed,
            [
                Some(0),
                Some(1),
                Some(2),
                Some(1),
                Some(1),
                Some(0),
                Some(2),
                None,
                Some(0)
            ]
        );
        assert_eq!(eligibility.of(&eu_gpu), Some(&[false, true, false][..]));
        assert_eq!(eligibility.of(&[]), None);
        assert!(eligibility.any(&not_arm) && !eligibility.any(&nowhere));
        assert_eq!(
            eligibility.sets.len(),
            5,
            "one per distinct set: {eligibility:?}"
        );
    }

    #[test]
    fn a_set_naming_one_drone_is_met_by_that_drone_alone() {
        let fleet_labels = [
            labels("hive.name=drone-0 zone=eu"),
            labels("hive.name=drone-1 zone=eu"),
            labels("zone=eu"),
        ];
        let mut eligibility = Eligibility::new(fleet_labels.iter().collect());
        assert_eq!(
            eligibility.of(&constraints("zone=eu hive.name=drone-1")),
            Some(&[false, true, false][..])
        );
        assert_eq!(
            eligibility.of(&constraints("hive.name=drone-1 zone=us")),
            Some(&[false, false, false][..])
        );
        assert_eq!(
            eligibility.of(&constraints("hive.name=drone-7")),
            Some(&[false, false, false][..])
        );
        assert_eq!(
            eligibility.of(&constraints("hive.name!=drone-1")),
            Some(&[true, false, true][..])
        );
    }

    #[test]
    fn a_drone_that_meets_the_constraints_but_is_full_is_not_chosen() {
        let fleet_labels = [labels("gpu"), labels("cpu")];
        let mut eligibility = Eligibility::new(fleet_labels.iter().collect());
        let mut fleet = drones(&[(1, 0), (8, 0)]);
        let gpu = constraints("gpu");
        let ask = Ask {
            want: Want {
                slots: 1,
                ..Want::default()
            },
            constraints: &gpu,
        };
        let placed = super::place(
            &[ask, ask],
            &mut fleet,
            &mut eligibility,
            Policy::Binpack,
            0,
        );
        assert_eq!(
            placed,
            [Some(0), None],
            "it waits for the one drone it may use"
        );
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
