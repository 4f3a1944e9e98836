//! The task state machine: every change to a task is one [`step`], a pure function of the task,
//! an [`Event`] and the time. No I/O: the queen decides with it, then writes what it returns
//! (compare-and-write, so a decision made on a stale copy is made again on the fresh one).
//!
//! | event                      | from                      | to                                                  |
//! |----------------------------|---------------------------|-----------------------------------------------------|
//! | [`Event::Place`]           | pending (due, not cancelled) | running, with a new running attempt              |
//! | [`Event::End`] succeeded   | running (that attempt)    | succeeded                                           |
//! | [`Event::End`] failed / timed out / oom killed, [`Event::FailStart`], [`Event::Expire`] | running | pending after the backoff if retries are left, else failed |
//! | [`Event::Lose`]            | running (that attempt)    | pending at once if retries are left, else failed    |
//! | [`Event::Unplace`]         | running (that attempt)    | pending at once; the attempt never ran, so it is forgotten and costs no retry |
//! | [`Event::End`] cancelled   | running                   | cancelled                                           |
//! | [`Event::Cancel`]          | pending / running         | cancelled / running with the cancel asked for       |
//!
//! Attempts are named by their id (see [`crate::tasks::Attempt::id`]), never by the task and a
//! number, so an event about another run's attempt finds nothing here. A failed, timed-out or lost
//! attempt of a task whose cancel was asked for ends it `cancelled`. A report of an attempt that
//! was replaced (lost, then placed again) is recorded on that attempt and changes nothing else.

use super::wire::{Ended, Ending};
use super::{AttemptState, MAX_BACKOFF_SECS, State, Task};
use crate::tasks::Attempt;

/// Where an attempt is placed, and the id it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// A new attempt id ([`crate::tasks::new_attempt_id`]): decided by the caller, so that this
    /// function stays pure.
    pub attempt: String,
    pub drone: String,
    pub address: String,
    pub boot: String,
}

/// Something that happens to a task. `attempt` is always an attempt id.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The scheduler placed it on a drone.
    Place(&'a Placement),
    /// Its drone reports how the attempt ended.
    End { attempt: &'a str, ended: &'a Ended },
    /// The attempt is lost: its drone was removed or restarted, or no longer knows it.
    Lose { attempt: &'a str, why: &'a str },
    /// The drone refused to start the attempt.
    FailStart { attempt: &'a str, why: &'a str },
    /// The drone had no room for the attempt (its slots were taken by attempts the queen did not
    /// count): it never ran, and the task is placed again without costing a retry.
    Unplace { attempt: &'a str, why: &'a str },
    /// The attempt ran past its timeout and kill grace and its drone still says it runs: the
    /// queen ends it on her own clock, so no drone can keep a task running for ever.
    Expire { attempt: &'a str, why: &'a str },
    /// A user asked to cancel it.
    Cancel,
}

/// What [`step`] made of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The task as it is now.
    Changed(Box<Task>),
    /// The event does not apply to the task as it is; why, for a log line.
    Ignored(&'static str),
}

/// Applies `event` to `task` at Unix time `now`.
pub fn step(task: &Task, event: Event, now: f64) -> Step {
    let mut next = task.clone();
    next.updated_at = now;
    match event {
        Event::Place(placement) => {
            if task.state != State::Pending {
                return Step::Ignored("only a pending task is placed");
            }
            if task.cancel_requested {
                return Step::Ignored("its cancel was asked for");
            }
            if task.not_before.is_some_and(|at| at > now) {
                return Step::Ignored("it waits for its retry backoff");
            }
            next.state = State::Running;
            next.reason = None;
            next.not_before = None;
            next.attempts.push(Attempt {
                id: placement.attempt.clone(),
                n: task.attempts.len() as u32 + 1,
                drone: placement.drone.clone(),
                address: placement.address.clone(),
                boot: placement.boot.clone(),
                state: AttemptState::Running,
                started_at: now,
                ended_at: None,
                exit_code: None,
                exit_signal: None,
                peak_memory_bytes: None,
                reason: None,
                late_report: None,
            });
        }
        Event::End { attempt, ended } => {
            let Some(n) = running_number(task, attempt) else {
                return record_late(task, next, attempt, ended);
            };
            let state = match ended.state {
                Ending::Succeeded => AttemptState::Succeeded,
                Ending::Failed => AttemptState::Failed,
                Ending::TimedOut => AttemptState::TimedOut,
                Ending::Cancelled => AttemptState::Cancelled,
                Ending::OomKilled => AttemptState::OomKilled,
            };
            end_attempt(&mut next, state, ended.exit_code, &ended.reason, now);
            let last = next.attempts.last_mut().expect("the attempt just ended");
            last.exit_signal = ended.exit_signal;
            last.peak_memory_bytes = ended.peak_memory_bytes;
            next.exit_code = ended.exit_code;
            next.stdout = ended.stdout.clone();
            next.stdout_truncated = ended.stdout_truncated;
            next.stderr = ended.stderr.clone();
            next.stderr_truncated = ended.stderr_truncated;
            match ended.state {
                Ending::Succeeded => {
                    next.state = State::Succeeded;
                    next.reason = None;
                }
                Ending::Cancelled => cancelled(&mut next),
                Ending::Failed | Ending::TimedOut | Ending::OomKilled => {
                    let why = format!("attempt {n} {}: {}", past(state), ended.reason);
                    after_failure(&mut next, n, false, why, now);
                }
            }
        }
        Event::Lose { attempt, why } => {
            let Some(n) = running_number(task, attempt) else {
                return Step::Ignored("that attempt does not run");
            };
            end_attempt(&mut next, AttemptState::Lost, None, why, now);
            let why = format!("attempt {n} was lost: {why}");
            after_failure(&mut next, n, true, why, now);
        }
        Event::FailStart { attempt, why } => {
            let Some(n) = running_number(task, attempt) else {
                return Step::Ignored("that attempt does not run");
            };
            let why = format!("could not start: {why}");
            end_attempt(&mut next, AttemptState::Failed, None, &why, now);
            let why = format!("attempt {n} {why}");
            after_failure(&mut next, n, false, why, now);
        }
        Event::Unplace { attempt, why } => {
            let Some(n) = running_number(task, attempt) else {
                return Step::Ignored("that attempt does not run");
            };
            next.attempts.pop();
            if task.cancel_requested {
                cancelled(&mut next);
            } else {
                next.state = State::Pending;
                next.reason = Some(format!(
                    "attempt {n} did not start ({why}); placing it again"
                ));
            }
        }
        Event::Expire { attempt, why } => {
            let Some(n) = running_number(task, attempt) else {
                return Step::Ignored("that attempt does not run");
            };
            end_attempt(&mut next, AttemptState::TimedOut, None, why, now);
            let why = format!("attempt {n} timed out: {why}");
            after_failure(&mut next, n, false, why, now);
        }
        Event::Cancel => match task.state {
            State::Pending => {
                next.state = State::Cancelled;
                next.not_before = None;
                next.reason = Some("cancelled before it ran".into());
            }
            State::Running if !task.cancel_requested => next.cancel_requested = true,
            State::Running => return Step::Ignored("its cancel was asked for already"),
            _ => return Step::Ignored("it has ended"),
        },
    }
    Step::Changed(Box::new(next))
}

/// The number of the attempt with id `id`, if it is the one that runs now.
fn running_number(task: &Task, id: &str) -> Option<u32> {
    if task.state != State::Running {
        return None;
    }
    task.running_attempt()
        .filter(|attempt| attempt.id == id)
        .map(|attempt| attempt.n)
}

fn end_attempt(task: &mut Task, state: AttemptState, exit_code: Option<i32>, why: &str, now: f64) {
    let attempt = task.attempts.last_mut().expect("a running attempt");
    attempt.state = state;
    attempt.ended_at = Some(now);
    attempt.exit_code = exit_code;
    attempt.reason = Some(why.to_string());
}

fn cancelled(task: &mut Task) {
    task.state = State::Cancelled;
    task.reason = Some("cancelled".into());
}

/// After attempt `n` failed, timed out or was lost: again after the backoff (at once when
/// `immediate`) if retries are left, else the task has failed.
fn after_failure(task: &mut Task, n: u32, immediate: bool, why: String, now: f64) {
    if task.cancel_requested {
        cancelled(task);
        return;
    }
    if task.attempts.len() as u32 > task.spec.retries {
        task.state = State::Failed;
        task.reason = Some(if task.spec.retries == 0 {
            why
        } else {
            format!("{why} (no retries left)")
        });
        return;
    }
    let delay = if immediate {
        0.0
    } else {
        backoff(task.spec.retry_delay_s, n)
    };
    task.state = State::Pending;
    task.not_before = (delay > 0.0).then_some(now + delay);
    task.reason = Some(format!("{why}; attempt {} after {delay:.1} s", n + 1));
}

/// The pause after attempt `n` failed: `retry_delay × 2^(n-1)`, at most [`MAX_BACKOFF_SECS`].
pub fn backoff(retry_delay_s: f64, n: u32) -> f64 {
    let doublings = n.saturating_sub(1).min(63);
    (retry_delay_s * 2f64.powi(doublings as i32)).min(MAX_BACKOFF_SECS)
}

fn past(state: AttemptState) -> &'static str {
    match state {
        AttemptState::TimedOut => "timed out",
        AttemptState::OomKilled => "was killed for memory",
        _ => "failed",
    }
}

/// A report of attempt `id`, which no longer runs: recorded on it if it was replaced, else nothing.
fn record_late(task: &Task, mut next: Task, id: &str, ended: &Ended) -> Step {
    let Some(index) = task.attempts.iter().position(|a| a.id == id) else {
        return Step::Ignored("no such attempt");
    };
    let attempt = &task.attempts[index];
    if attempt.state != AttemptState::Lost || attempt.late_report.is_some() {
        return Step::Ignored("that attempt's end is recorded already");
    }
    next.attempts[index].late_report = Some(ended.clone());
    // Recording it is not a change of the task's state.
    next.updated_at = task.updated_at;
    Step::Changed(Box::new(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Spec;
    use std::collections::BTreeMap;

    fn task(retries: u32) -> Task {
        let spec = Spec {
            command: vec!["true".into()],
            slots: 1,
            timeout_s: 60.0,
            retries,
            retry_delay_s: 1.0,
            env: BTreeMap::new(),
            resources: Default::default(),
            kill_timeout_s: 5.0,
            constraints: Vec::new(),
        };
        Task::new("t".into(), spec, 100.0)
    }

    /// The placement of attempt `n`, whose id is `a{n}`.
    fn here(n: u32) -> Placement {
        Placement {
            attempt: format!("a{n}"),
            drone: "drone-0".into(),
            address: "127.0.0.1:5001".into(),
            boot: "b1".into(),
        }
    }

    fn ended(state: Ending, exit_code: Option<i32>) -> Ended {
        Ended {
            state,
            exit_code,
            exit_signal: None,
            peak_memory_bytes: None,
            reason: match exit_code {
                Some(code) => format!("exit code {code}"),
                None => "timed out after 60 s".into(),
            },
            stdout: "out".into(),
            stdout_truncated: false,
            stderr: "err".into(),
            stderr_truncated: true,
        }
    }

    /// Applies `events` in turn from `t`, one second apart, and returns the last task.
    fn run(mut t: Task, events: &[Event]) -> Task {
        let mut now = 101.0;
        for event in events {
            match step(&t, *event, now) {
                Step::Changed(next) => t = *next,
                Step::Ignored(why) => panic!("{event:?} ignored: {why}"),
            }
            now += 1.0;
        }
        t
    }

    #[test]
    fn a_task_runs_once_and_succeeds() {
        let done = ended(Ending::Succeeded, Some(0));
        let t = run(
            task(0),
            &[
                Event::Place(&here(1)),
                Event::End {
                    attempt: "a1",
                    ended: &done,
                },
            ],
        );
        assert_eq!(t.state, State::Succeeded);
        assert_eq!(
            (t.exit_code, t.stdout.as_str(), t.stderr_truncated),
            (Some(0), "out", true)
        );
        let attempt = &t.attempts[0];
        assert_eq!(
            (
                attempt.n,
                attempt.state,
                attempt.started_at,
                attempt.ended_at
            ),
            (1, AttemptState::Succeeded, 101.0, Some(102.0))
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_after_a_doubling_backoff_then_the_task_fails() {
        let failed = ended(Ending::Failed, Some(3));
        let mut t = run(
            task(2),
            &[
                Event::Place(&here(1)),
                Event::End {
                    attempt: "a1",
                    ended: &failed,
                },
            ],
        );
        assert_eq!(
            (t.state, t.not_before),
            (State::Pending, Some(103.0)),
            "1 s after attempt 1"
        );
        assert!(
            matches!(step(&t, Event::Place(&here(2)), 102.5), Step::Ignored(_)),
            "not before its time"
        );
        for (n, now, wait) in [(2u32, 103.0, 2.0), (3, 110.0, 0.0)] {
            let Step::Changed(placed) = step(&t, Event::Place(&here(n)), now) else {
                panic!()
            };
            let id = format!("a{n}");
            let Step::Changed(next) = step(
                &placed,
                Event::End {
                    attempt: &id,
                    ended: &failed,
                },
                now + 1.0,
            ) else {
                panic!()
            };
            t = *next;
            if wait > 0.0 {
                assert_eq!(
                    t.not_before,
                    Some(now + 1.0 + wait),
                    "attempt {n}: retry_delay × 2^(n-1)"
                );
            }
        }
        assert_eq!(t.state, State::Failed);
        assert_eq!(t.attempts.len(), 3);
        assert!(
            t.reason.as_deref().unwrap().contains("no retries left"),
            "{:?}",
            t.reason
        );
        assert_eq!(backoff(1.0, 10), 60.0, "capped");
    }

    #[test]
    fn a_lost_attempt_is_retried_at_once_within_the_retries() {
        let t = run(
            task(1),
            &[
                Event::Place(&here(1)),
                Event::Lose {
                    attempt: "a1",
                    why: "its drone was removed",
                },
            ],
        );
        assert_eq!((t.state, t.not_before), (State::Pending, None));
        assert_eq!(t.attempts[0].state, AttemptState::Lost);
        let t = run(
            task(0),
            &[
                Event::Place(&here(1)),
                Event::Lose {
                    attempt: "a1",
                    why: "its drone restarted",
                },
            ],
        );
        assert_eq!(t.state, State::Failed);
        assert!(t.reason.unwrap().contains("its drone restarted"));
    }

    #[test]
    fn a_late_report_of_a_replaced_attempt_is_recorded_and_changes_nothing() {
        let done = ended(Ending::Succeeded, Some(0));
        let t = run(
            task(1),
            &[
                Event::Place(&here(1)),
                Event::Lose {
                    attempt: "a1",
                    why: "gone",
                },
                Event::Place(&here(2)),
            ],
        );
        let Step::Changed(late) = step(
            &t,
            Event::End {
                attempt: "a1",
                ended: &done,
            },
            200.0,
        ) else {
            panic!()
        };
        assert_eq!(late.state, State::Running);
        assert_eq!(late.updated_at, t.updated_at);
        assert_eq!(late.attempts[0].late_report.as_ref(), Some(&done));
        assert_eq!(late.attempts[1].state, AttemptState::Running);
        assert_eq!(
            step(
                &late,
                Event::End {
                    attempt: "a1",
                    ended: &done
                },
                201.0
            ),
            Step::Ignored("that attempt's end is recorded already")
        );
        assert!(matches!(
            step(
                &late,
                Event::End {
                    attempt: "a7",
                    ended: &done
                },
                201.0
            ),
            Step::Ignored(_)
        ));
        assert!(matches!(
            step(
                &late,
                Event::Lose {
                    attempt: "a1",
                    why: "x"
                },
                201.0
            ),
            Step::Ignored(_)
        ));
    }

    #[test]
    fn cancel_ends_a_pending_task_at_once_and_a_running_one_when_its_drone_stops_it() {
        let t = run(task(0), &[Event::Cancel]);
        assert_eq!(t.state, State::Cancelled);
        let t = run(task(3), &[Event::Place(&here(1)), Event::Cancel]);
        assert_eq!((t.state, t.cancel_requested), (State::Running, true));
        let stopped = Ended {
            state: Ending::Cancelled,
            exit_code: None,
            reason: "cancelled".into(),
            ..ended(Ending::Cancelled, None)
        };
        let done = run(
            t.clone(),
            &[Event::End {
                attempt: "a1",
                ended: &stopped,
            }],
        );
        assert_eq!(done.state, State::Cancelled);
        let failed = run(
            t.clone(),
            &[Event::End {
                attempt: "a1",
                ended: &ended(Ending::Failed, Some(143)),
            }],
        );
        assert_eq!(
            failed.state,
            State::Cancelled,
            "no retry once a cancel was asked for"
        );
        let lost = run(
            t,
            &[Event::Lose {
                attempt: "a1",
                why: "gone",
            }],
        );
        assert_eq!(lost.state, State::Cancelled);
        assert_eq!(
            step(&done, Event::Cancel, 300.0),
            Step::Ignored("it has ended")
        );
        assert!(matches!(
            step(
                &run(task(0), &[Event::Cancel]),
                Event::Place(&here(1)),
                300.0
            ),
            Step::Ignored(_)
        ));
    }

    #[test]
    fn an_attempt_of_another_run_is_never_taken_for_this_one() {
        // The same task id and attempt number, another id: what a queen that forgot, or a task
        // id used again, would see from a drone still holding an older run.
        let done = ended(Ending::Succeeded, Some(0));
        let t = run(task(0), &[Event::Place(&here(1))]);
        for event in [
            Event::End {
                attempt: "another-run",
                ended: &done,
            },
            Event::Lose {
                attempt: "another-run",
                why: "x",
            },
            Event::Expire {
                attempt: "another-run",
                why: "x",
            },
        ] {
            assert!(
                matches!(step(&t, event, 200.0), Step::Ignored(_)),
                "{event:?}"
            );
        }
    }

    #[test]
    fn a_drone_without_room_costs_no_retry() {
        let t = run(
            task(0),
            &[
                Event::Place(&here(1)),
                Event::Unplace {
                    attempt: "a1",
                    why: "the drone had no free slots",
                },
            ],
        );
        assert_eq!((t.state, t.attempts.len()), (State::Pending, 0));
        assert!(t.reason.as_deref().unwrap().contains("no free slots"));
        let t = run(t, &[Event::Place(&here(2))]);
        assert_eq!(
            t.attempts[0].n, 1,
            "the number is used again; the id is new"
        );
        assert_eq!(t.attempts[0].id, "a2");
    }

    #[test]
    fn an_attempt_its_drone_keeps_running_past_its_deadline_times_out_on_the_queens_clock() {
        let t = run(
            task(1),
            &[
                Event::Place(&here(1)),
                Event::Expire {
                    attempt: "a1",
                    why: "its drone still ran it 2 s after its timeout and kill grace",
                },
            ],
        );
        assert_eq!(t.attempts[0].state, AttemptState::TimedOut);
        assert_eq!(t.state, State::Pending, "retries apply");
        assert!(t.reason.unwrap().contains("attempt 1 timed out"));
    }

    #[test]
    fn an_attempt_killed_for_memory_is_retried_like_a_failed_one_and_keeps_its_peak() {
        let oom = Ended {
            exit_signal: Some(9),
            peak_memory_bytes: Some(64 << 20),
            reason: "killed for memory: over its 64 MiB".into(),
            ..ended(Ending::OomKilled, None)
        };
        let t = run(
            task(1),
            &[
                Event::Place(&here(1)),
                Event::End {
                    attempt: "a1",
                    ended: &oom,
                },
            ],
        );
        assert_eq!((t.state, t.not_before), (State::Pending, Some(103.0)));
        let first = &t.attempts[0];
        assert_eq!(
            (first.state, first.exit_signal, first.peak_memory_bytes),
            (AttemptState::OomKilled, Some(9), Some(64 << 20))
        );
        assert!(
            t.reason
                .as_deref()
                .unwrap()
                .starts_with("attempt 1 was killed for memory: "),
            "{:?}",
            t.reason
        );
        let t = run(
            task(0),
            &[
                Event::Place(&here(1)),
                Event::End {
                    attempt: "a1",
                    ended: &oom,
                },
            ],
        );
        assert_eq!(t.state, State::Failed);
    }

    #[test]
    fn a_start_the_drone_refuses_is_a_failed_attempt() {
        let t = run(
            task(0),
            &[
                Event::Place(&here(1)),
                Event::FailStart {
                    attempt: "a1",
                    why: "no free slots",
                },
            ],
        );
        assert_eq!(t.state, State::Failed);
        assert_eq!(t.attempts[0].state, AttemptState::Failed);
        assert!(
            t.attempts[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("could not start")
        );
    }
}
