//! How an executor holds an attempt's processes so that it can end every one of them: the one
//! seam between the executor and the two ways Linux offers.
//!
//! | level           | what holds an attempt                         | limits | a process that calls `setsid` |
//! |-----------------|-----------------------------------------------|--------|-------------------------------|
//! | `cgroup-v2`     | a cgroup of its own (v2: `cgroup.kill`)        | memory, cpu, pids | is still in the cgroup: killed at the end |
//! | `cgroup-hybrid` | a v2 cgroup, and v1 cgroups for the limits     | memory, cpu, pids | is still in the cgroup: killed at the end |
//! | `process-group` | the process group its command leads            | none   | leaves the group, and outlives the attempt |
//!
//! `--containment auto` (the default) takes the strongest the machine offers: a cgroup where the
//! drone may make one (root, or a delegated group given as `--cgroup-parent`), else process
//! groups, which it says once at start. The executor asks this module for an attempt's hold
//! ([`Containment::attempt`]); everything it does with it goes through `Group` (in `mod.rs`), which
//! signals and ends a process group or a cgroup alike.

use std::fmt;
use std::str::FromStr;

use super::Limits;
use super::cgroup::{AttemptGroup, Cgroups, Layout, Owned, Shape};

/// The levels a drone reports, as `GET /drones` shows them.
pub const CONTAINMENT_LEVELS: [&str; 3] = ["cgroup-v2", "cgroup-hybrid", "process-group"];

/// What `--containment` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The strongest the machine offers.
    #[default]
    Auto,
    /// Cgroups, or the drone does not start.
    Cgroup,
    /// Process groups, as where cgroups cannot be made.
    ProcessGroup,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "cgroup" => Ok(Mode::Cgroup),
            "process-group" => Ok(Mode::ProcessGroup),
            _ => Err(format!("{s:?} is not auto, cgroup or process-group")),
        }
    }
}

/// How a drone contains its attempts: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    CgroupV2,
    CgroupHybrid,
    ProcessGroup,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::CgroupV2 => CONTAINMENT_LEVELS[0],
            Level::CgroupHybrid => CONTAINMENT_LEVELS[1],
            Level::ProcessGroup => CONTAINMENT_LEVELS[2],
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What holds a drone's attempts.
#[derive(Debug, Default)]
pub enum Containment {
    /// Each attempt's command leads a process group.
    #[default]
    ProcessGroup,
    /// Each attempt has a cgroup of its own, under the drone's.
    Cgroups(Cgroups),
}

impl Containment {
    /// What `mode` gets on this machine for the drone whose cgroups are named `drone_name`
    /// (see `cgroup::drone_group_name`), under `parent` (a cgroup path; `None` for the default).
    /// With [`Mode::Auto`], a machine without usable cgroups gives process groups and the reason
    /// (to be said at start); with [`Mode::Cgroup`] it is an error, with the reason.
    pub fn set_up(
        mode: Mode,
        parent: Option<&str>,
        drone_name: &str,
    ) -> Result<(Containment, Option<String>), String> {
        if mode == Mode::ProcessGroup {
            return Ok((Containment::ProcessGroup, None));
        }
        let cgroups = Layout::read()
            .map_err(|e| format!("cannot read this process's cgroups: {e}"))
            .and_then(|layout| Cgroups::set_up(&layout, parent, drone_name));
        match (cgroups, mode) {
            (Ok(cgroups), _) => Ok((Containment::Cgroups(cgroups), None)),
            (Err(why), Mode::Auto) => Ok((Containment::ProcessGroup, Some(why))),
            (Err(why), _) => Err(why),
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Containment::ProcessGroup => Level::ProcessGroup,
            Containment::Cgroups(cgroups) => match cgroups.shape() {
                Shape::V2 => Level::CgroupV2,
                Shape::Hybrid => Level::CgroupHybrid,
            },
        }
    }

    /// Makes what will hold the attempt named `name`, with `limits`: its cgroup, or nothing
    /// (its command's process group is made as it starts).
    pub(super) fn attempt(
        &self,
        name: &str,
        limits: &Limits,
    ) -> Result<Option<AttemptGroup>, String> {
        match self {
            Containment::ProcessGroup => Ok(None),
            Containment::Cgroups(cgroups) => cgroups.attempt(name, limits).map(Some),
        }
    }

    /// The cgroups the drone made for itself, for whoever ends it.
    pub(super) fn owned(&self) -> Owned {
        match self {
            Containment::ProcessGroup => Owned::default(),
            Containment::Cgroups(cgroups) => cgroups.owned.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_levels_read_and_print_as_the_flags_and_the_api_say() {
        assert_eq!("auto".parse(), Ok(Mode::Auto));
        assert_eq!("cgroup".parse(), Ok(Mode::Cgroup));
        assert_eq!("process-group".parse(), Ok(Mode::ProcessGroup));
        assert!("cgroups".parse::<Mode>().is_err());
        assert_eq!(
            [Level::CgroupV2, Level::CgroupHybrid, Level::ProcessGroup].map(Level::as_str),
            CONTAINMENT_LEVELS
        );
        let (containment, why) = Containment::set_up(Mode::ProcessGroup, None, "x").unwrap();
        assert_eq!((containment.level(), why), (Level::ProcessGroup, None));
    }
}
