//! What Linux's `/proc` says of processes, and whether a process group that a previous run
//! recorded is still its attempt's.
//!
//! A record names a group by its id, which is its leader's pid, and pids are reused. The leader's
//! pid with the recorded start time says the group is the attempt's: the leader, alive or a
//! zombie, holds the id. A leader that is gone leaves its group's id reserved for as long as any
//! member lives, so members that are all from the recorded session and no older than the leader
//! are the attempt's remains; a group of another session that reuses the id (a daemon's, after its
//! first process exited) is left alone. A record from another boot names nothing that runs.

use std::fs::{self, File};
use std::io::Read;

use super::journal::Record;

/// Longer than any `/proc/<pid>/stat` line: 52 numbers and a command name of at most 16 bytes.
const STAT_LINE_BYTES: usize = 1024;

/// The group of an attempt a previous run left, if any of it still runs: see the module docs.
pub(super) fn leftover_group(record: &Record, boot_id: &str, processes: &[Process]) -> Option<i32> {
    // A record without a group (a cgroup's, made before its command ran) names none.
    if record.boot_id != boot_id || record.process_group <= 0 {
        return None;
    }
    let group = record.process_group;
    let mut live = processes
        .iter()
        .filter(|p| p.group == group && !p.is_dead())
        .peekable();
    live.peek()?;
    let ours = match processes.iter().find(|p| p.pid == group) {
        // The leader, alive or a zombie, still holds the id; or a later process has its pid,
        // which means the attempt's whole group had ended before.
        Some(leader) => leader.start_ticks == record.start_ticks,
        None => live.all(|p| p.session == record.session && p.start_ticks >= record.start_ticks),
    };
    ours.then_some(group)
}

/// What `/proc/<pid>/stat` says of a process that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Process {
    pub(super) pid: i32,
    pub(super) state: char,
    pub(super) group: i32,
    pub(super) session: i32,
    pub(super) start_ticks: u64,
}

impl Process {
    /// A zombie or a dying process: it runs no more code.
    pub(super) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// What `/proc` says of process `pid`, while it (or its zombie) is there.
pub(super) fn read_process(pid: i32) -> Option<Process> {
    // /proc reports no size, so a buffer big enough for any stat line takes it in one read.
    let mut stat = String::with_capacity(STAT_LINE_BYTES);
    File::open(format!("/proc/{pid}/stat"))
        .ok()?
        .read_to_string(&mut stat)
        .ok()?;
    parse_stat(&stat)
}

/// Parses a `/proc/<pid>/stat` line. The command name in parentheses may hold spaces and
/// parentheses itself, so the fields after it are found from the last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let (pid, rest) = stat.split_once(" (")?;
    let (_, fields) = rest.rsplit_once(") ")?;
    let mut fields = fields.split(' ');
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 (terminal to interval timer), then field 22: the start time.
    let start_ticks = fields.nth(15)?.parse().ok()?;
    Some(Process {
        pid: pid.parse().ok()?,
        state,
        group,
        session,
        start_ticks,
    })
}

/// Every process on the machine, as far as `/proc` shows them.
pub(super) fn all_processes() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_process)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::journal::tests::record;

    fn process(pid: i32, state: char, group: i32, session: i32, start_ticks: u64) -> Process {
        Process {
            pid,
            state,
            group,
            session,
            start_ticks,
        }
    }

    #[test]
    fn a_leftover_group_is_killed_only_while_it_is_the_attempts() {
        let record = record();
        let leader = process(100, 'S', 100, 7, 5000);
        let member = process(101, 'S', 100, 7, 5001);
        let zombie_leader = process(100, 'Z', 100, 7, 5000);
        let cases = [
            (
                "leader runs",
                vec![leader.clone(), member.clone()],
                Some(100),
            ),
            (
                "leader a zombie, member runs",
                vec![zombie_leader.clone(), member.clone()],
                Some(100),
            ),
            ("leader gone, member runs", vec![member.clone()], Some(100)),
            ("only a zombie left", vec![zombie_leader], None),
            ("nothing left", vec![], None),
            (
                "pid reused by a newer process",
                vec![process(100, 'S', 100, 7, 9000)],
                None,
            ),
            (
                "group id reused in another session",
                vec![process(300, 'S', 100, 300, 9000)],
                None,
            ),
            (
                "a member older than the leader",
                vec![process(300, 'S', 100, 7, 10)],
                None,
            ),
        ];
        for (case, processes, expected) in cases {
            assert_eq!(
                leftover_group(&record, "boot", &processes),
                expected,
                "{case}"
            );
        }
        assert_eq!(
            leftover_group(&record, "another boot", &[leader, member]),
            None
        );
    }

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let stat = "4242 (a) b (c) S 1 4240 4100 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1 2";
        assert_eq!(
            parse_stat(stat),
            Some(process(4242, 'S', 4240, 4100, 987654))
        );
        let me = read_process(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(!me.is_dead());
    }
}
