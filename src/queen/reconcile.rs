//! What the leader makes of what a drone says it runs: a pure function from the store's view of
//! the attempts placed on the drone, the drone's own list, what the queen had seen of each attempt
//! and the time, to a [`Plan`] (confirm, lose, expire, stop). No I/O and no clock here: the
//! scheduler gathers the inputs, calls [`reconcile`], and applies the plan (writes through the
//! task lifecycle, calls to the drone). Nomad's reconciler is the model: decisions as data, I/O
//! after.
//!
//! | the store says                     | the drone lists it        | the plan                                   |
//! |------------------------------------|---------------------------|--------------------------------------------|
//! | running here                       | running or ended          | confirm (a restarted or new leader adopts it so) |
//! | running here, past its deadline    | running                   | expire (timed out on the queen's clock), stop it |
//! | running here, cancel asked for     | running                   | stop it (again)                            |
//! | running here, confirmed before     | not at all                | lose (the drone no longer knows it)        |
//! | running here, never confirmed      | not at all                | nothing yet (its start may still be on its way) |
//! | anything else, or nothing          | running                   | stop it: the drone runs what no queen placed there |
//!
//! An attempt's deadline is its start, its timeout, its kill grace and [`REPORT_GRACE`]: a drone
//! that still says it runs an attempt past that has stalled or lies, and no drone can keep a task
//! running for ever. Only a list the drone sent after the deadline counts, so a queen that was
//! away (restarted, or not leading) never expires what a drone is about to report.

use std::collections::HashSet;

use crate::tasks::wire::DroneStatus;

/// How long after an attempt's timeout and kill grace a drone may still list it as running
/// before the queen ends it herself: the drone kills it at the end of the grace, and its end is
/// then a moment away.
pub const REPORT_GRACE_SECS: f64 = 2.0;

/// An attempt the store places on the drone and holds as running.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub task: String,
    pub id: String,
    /// Unix seconds the attempt was placed.
    pub started_at: f64,
    /// Its timeout and kill grace, in seconds.
    pub timeout_s: f64,
    pub kill_grace_s: f64,
    /// Slots it takes.
    pub slots: u32,
    pub cancel_requested: bool,
    /// Whether the queen saw the drone confirm it (a start's answer, or an earlier list) before
    /// this list was asked for.
    pub confirmed_before: bool,
}

/// What the leader does after one list from one drone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Attempt ids the drone has: seen confirmed from now on.
    pub confirm: Vec<String>,
    /// `(task, attempt id, why)`: the drone no longer knows them.
    pub lose: Vec<(String, String, String)>,
    /// `(task, attempt id, why)`: past their deadline on the queen's clock.
    pub expire: Vec<(String, String, String)>,
    /// Attempt ids to ask the drone to stop.
    pub stop: Vec<String>,
    /// Slots the drone's running attempts take beyond those the store counts there: taken by
    /// attempts being stopped, so not free for placements yet.
    pub stray_slots: u32,
}

/// The plan for one drone's list `status`, at Unix time `now`, given the attempts the store
/// places on it (`placed`).
pub fn reconcile(placed: &[Placed], status: &DroneStatus, now: f64) -> Plan {
    let running: HashSet<&str> = status.running.iter().map(|l| l.id.as_str()).collect();
    let ended: HashSet<&str> = status.ended.iter().map(|l| l.id.as_str()).collect();
    let mut plan = Plan::default();
    let mut counted_slots = 0;
    for attempt in placed {
        let id = attempt.id.as_str();
        let runs = running.contains(id);
        if runs || ended.contains(id) {
            plan.confirm.push(attempt.id.clone());
        }
        if runs {
            counted_slots += attempt.slots;
            let deadline =
                attempt.started_at + attempt.timeout_s + attempt.kill_grace_s + REPORT_GRACE_SECS;
            if now > deadline {
                let why = format!(
                    "its drone still ran it {:.1} s after its timeout ({} s) and kill grace ({} s)",
                    now - attempt.started_at - attempt.timeout_s - attempt.kill_grace_s,
                    attempt.timeout_s,
                    attempt.kill_grace_s
                );
                plan.expire
                    .push((attempt.task.clone(), attempt.id.clone(), why));
                plan.stop.push(attempt.id.clone());
            } else if attempt.cancel_requested {
                plan.stop.push(attempt.id.clone());
            }
        } else if !ended.contains(id) && attempt.confirmed_before {
            plan.lose.push((
                attempt.task.clone(),
                attempt.id.clone(),
                "its drone no longer knows it".into(),
            ));
        }
    }
    let placed_here: HashSet<&str> = placed.iter().map(|a| a.id.as_str()).collect();
    plan.stop.extend(
        status
            .running
            .iter()
            .filter(|listed| !placed_here.contains(listed.id.as_str()))
            .map(|listed| listed.id.clone()),
    );
    plan.stray_slots = status.used.saturating_sub(counted_slots);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::wire::Listed;

    fn placed(id: &str) -> Placed {
        Placed {
            task: format!("task-{id}"),
            id: id.into(),
            started_at: 100.0,
            timeout_s: 10.0,
            kill_grace_s: 5.0,
            slots: 1,
            cancel_requested: false,
            confirmed_before: true,
        }
    }

    fn listed(ids: &[&str]) -> Vec<Listed> {
        ids.iter()
            .map(|id| Listed {
                id: id.to_string(),
                task: format!("task-{id}"),
            })
            .collect()
    }

    fn status(running: &[&str], ended: &[&str], used: u32) -> DroneStatus {
        DroneStatus {
            boot: "b".into(),
            exec: true,
            slots: 4,
            used,
            running: listed(running),
            ended: listed(ended),
        }
    }

    #[test]
    fn what_the_drone_lists_is_confirmed_and_adopted() {
        let plan = reconcile(
            &[placed("a"), placed("b")],
            &status(&["a"], &["b"], 1),
            101.0,
        );
        assert_eq!(plan.confirm, ["a", "b"]);
        assert!(plan.lose.is_empty() && plan.stop.is_empty() && plan.expire.is_empty());
        assert_eq!(plan.stray_slots, 0);
    }

    #[test]
    fn a_confirmed_attempt_the_drone_forgot_is_lost_an_unconfirmed_one_waits() {
        let unconfirmed = Placed {
            confirmed_before: false,
            ..placed("b")
        };
        let plan = reconcile(&[placed("a"), unconfirmed], &status(&[], &[], 0), 101.0);
        assert_eq!(
            plan.lose,
            [(
                "task-a".to_string(),
                "a".to_string(),
                "its drone no longer knows it".to_string()
            )]
        );
    }

    #[test]
    fn what_runs_there_unplaced_is_stopped_and_its_slots_are_not_free() {
        // "x" is another run's attempt (a queen that forgot, a task id used again): same task
        // name, another id.
        let plan = reconcile(&[placed("a")], &status(&["a", "x"], &[], 3), 101.0);
        assert_eq!(plan.confirm, ["a"]);
        assert_eq!(plan.stop, ["x"]);
        assert_eq!(plan.stray_slots, 2);
    }

    #[test]
    fn an_attempt_still_running_past_its_deadline_expires_and_is_stopped() {
        // Deadline: 100 + 10 + 5 + 2 = 117.
        let on_time = reconcile(&[placed("a")], &status(&["a"], &[], 1), 117.0);
        assert!(on_time.expire.is_empty() && on_time.stop.is_empty());
        let late = reconcile(&[placed("a")], &status(&["a"], &[], 1), 118.0);
        assert_eq!(late.expire.len(), 1);
        assert!(
            late.expire[0].2.contains("after its timeout"),
            "{:?}",
            late.expire
        );
        assert_eq!(late.stop, ["a"]);
        // Ended and not yet reported: its end is on its way, nothing expires.
        let reporting = reconcile(&[placed("a")], &status(&[], &["a"], 0), 500.0);
        assert!(reporting.expire.is_empty() && reporting.lose.is_empty());
    }

    #[test]
    fn a_cancelled_attempt_still_running_is_stopped_again() {
        let cancelled = Placed {
            cancel_requested: true,
            ..placed("a")
        };
        let plan = reconcile(&[cancelled], &status(&["a"], &[], 1), 101.0);
        assert_eq!(plan.stop, ["a"]);
        assert!(plan.expire.is_empty());
    }
}
