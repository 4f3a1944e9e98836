//! Cgroups: every attempt in a group of its own, which holds every process its command starts
//! (`setsid` and double forks included), enforces its limits, and is killed whole at its end.
//!
//! # Shapes
//! Linux has two cgroup hierarchies, and a machine mounts them one of two ways:
//! - **v2** (most current distributions): one hierarchy at `/sys/fs/cgroup`, with the memory,
//!   pids and cpu controllers in it. An attempt's group is one directory.
//! - **hybrid**: the controllers are still on v1 hierarchies (`/sys/fs/cgroup/memory`, `pids`,
//!   `cpu`) and only the v2 core is mounted (`/sys/fs/cgroup/unified`). An attempt's group is a
//!   directory in the v2 hierarchy, which lists its processes, says when it is empty and kills it
//!   whole, and one in each v1 hierarchy whose limit it needs.
//!
//! Either way the v2 core does the containing: `cgroup.kill` (Linux 5.14) sends SIGKILL to every
//! process of a group, and `cgroup.events` says `populated 0` once none is left, and wakes a
//! `poll` for `POLLPRI` when that changes. A controller is used where it is (in the v2 hierarchy
//! when its root lists it, else on a v1 hierarchy); each limit is written in its controller's
//! own terms (`memory.max` or `memory.limit_in_bytes`, and so on).
//!
//! # Where the groups are
//! Under a parent (`--cgroup-parent`, a path in the hierarchies such as `/hive`; by default a
//! `hive` group under the drone's own group in each hierarchy), a group per drone named after its
//! work root, which no two drones share, and in it a group per attempt named after the attempt's
//! directory. On v2 the controllers are enabled in `cgroup.subtree_control` down to the drone's
//! group. A group of the v2 hierarchy that holds processes cannot enable controllers for its
//! children; when that group is the drone's own (a systemd unit with `Delegate=yes`), the drone
//! moves itself into a leaf `larve` group beside the `hive` one first, as systemd asks delegated
//! services to.
//!
//! # Joining
//! The command's process joins its groups between its clone and its exec, by writing `0` (itself) to each
//! group's `cgroup.procs` through descriptors its parent opened (see `child.rs`), so nothing it
//! runs is ever outside them, and its memory is counted from its first page.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::Limits;

/// The files that say which hierarchies are mounted where, and where this process is in them.
const MOUNTINFO_FILE: &str = "/proc/self/mountinfo";
const OWN_CGROUP_FILE: &str = "/proc/self/cgroup";

/// The default parent's name, under the drone's own group.
pub const DEFAULT_PARENT: &str = "hive";

/// Where a drone that must leave its own v2 group (so that the group may enable controllers for
/// its children) moves itself: a leaf beside the parent.
const DRONE_LEAF: &str = "larve";

/// The cpu period the quota is a share of, in microseconds: the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// The controllers whose limits an attempt may have.
const CONTROLLERS: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

/// Longest name of a drone's group: cgroup names are file names.
const MAX_DRONE_GROUP_CHARS: usize = 128;

/// How long an attempt's end waits for its killed group to empty before it says so (it goes on
/// waiting: a process in the kernel's uninterruptible sleep dies only when it wakes).
const EMPTY_WARN: Duration = Duration::from_secs(10);

/// How long ending a leftover group (a previous drone's) waits for it to empty.
const LEFTOVER_WAIT: Duration = Duration::from_secs(5);

/// Tries of making the drone's groups while another drone's reaper may be removing the parent
/// they share.
const MAKE_TRIES: usize = 5;

/// A controller that enforces one of an attempt's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// How the machine mounts its cgroups, as `/proc/self/mountinfo` and `/proc/self/cgroup` say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// The v2 hierarchy: where it is mounted, the part of it the mount shows, and this
    /// process's group in it.
    pub v2: Option<Hierarchy>,
    /// The v1 hierarchies of the controllers Hive uses.
    pub v1: Vec<(Controller, Hierarchy)>,
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The group the mount shows at its mount point (`/` unless in a container).
    pub root: String,
    /// This process's group, as `/proc/self/cgroup` names it.
    pub own: String,
}

impl Hierarchy {
    /// The directory of the group at `path` (a path from the hierarchy's root), if the mount
    /// shows it.
    fn dir(&self, path: &str) -> Option<PathBuf> {
        let root = self.root.trim_end_matches('/');
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(self.mount.join(rest.trim_start_matches('/')))
    }
}

impl Layout {
    /// The machine's layout, read from `/proc`.
    pub fn read() -> io::Result<Layout> {
        let mounts = fs::read_to_string(MOUNTINFO_FILE)?;
        let own = fs::read_to_string(OWN_CGROUP_FILE)?;
        Ok(Layout::parse(&mounts, &own))
    }

    /// The layout `mountinfo` and `own` (the files' texts) describe.
    pub fn parse(mountinfo: &str, own: &str) -> Layout {
        let mut layout = Layout::default();
        // `N:controllers:path` lines; `0::path` is the v2 hierarchy.
        let own_groups: Vec<(Vec<&str>, &str)> = own
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                Some((controllers.split(',').collect(), path))
            })
            .collect();
        for line in mountinfo.lines() {
            // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = before.split(' ').collect();
            let theirs: Vec<&str> = after.split(' ').collect();
            let (Some(root), Some(mount), Some(fstype), Some(options)) =
                (fields.get(3), fields.get(4), theirs.first(), theirs.get(2))
            else {
                continue;
            };
            let mount = PathBuf::from(unescape_mount(mount));
            match *fstype {
                "cgroup2" if layout.v2.is_none() => {
                    if let Some((_, own)) = own_groups.iter().find(|(c, _)| c == &[""]) {
                        layout.v2 = Some(Hierarchy {
                            mount,
                            root: (*root).to_string(),
                            own: (*own).to_string(),
                        });
                    }
                }
                "cgroup" => {
                    let options: Vec<&str> = options.split(',').collect();
                    for controller in CONTROLLERS {
                        if !options.contains(&controller.name())
                            || layout.v1.iter().any(|(c, _)| *c == controller)
                        {
                            continue;
                        }
                        let Some((_, own)) = own_groups
                            .iter()
                            .find(|(c, _)| c.contains(&controller.name()))
                        else {
                            continue;
                        };
                        layout.v1.push((
                            controller,
                            Hierarchy {
                                mount: mount.clone(),
                                root: (*root).to_string(),
                                own: (*own).to_string(),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        layout
    }
}

/// A mount point as mountinfo writes it: spaces and such as octal escapes (`\040`).
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&text[i + 1..i + 4], 8)
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The shape a drone's cgroups have: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    V2,
    Hybrid,
}

/// A drone's cgroups: where its attempts' groups are made, and where each controller is.
#[derive(Debug)]
pub struct Cgroups {
    shape: Shape,
    /// The drone's group in the v2 hierarchy.
    core: PathBuf,
    /// The drone's group in the v1 hierarchy of each controller the v2 one lacks.
    v1: Vec<(Controller, PathBuf)>,
    /// The controllers the v2 hierarchy has, enabled for attempts' groups.
    v2_controllers: Vec<Controller>,
    /// What the drone's groups are, and which parents Hive made, for whoever ends the drone.
    pub(super) owned: Owned,
}

/// Groups a drone made: its own (removed when it ends) and the parents of its name it made
/// (removed when it ends and no other drone's group is left in them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owned {
    pub groups: Vec<PathBuf>,
    pub parents: Vec<PathBuf>,
}

impl Cgroups {
    /// Sets up the drone's cgroups on `layout`: its group (named `drone_name`) under `parent` (a
    /// path in the hierarchies, or `None` for `hive` under the drone's own group), in the v2
    /// hierarchy and in each v1 hierarchy that holds a controller the v2 one lacks. Fails with
    /// what is missing or could not be made.
    pub fn set_up(
        layout: &Layout,
        parent: Option<&str>,
        drone_name: &str,
    ) -> Result<Cgroups, String> {
        let v2 = layout.v2.as_ref().ok_or(
            "no cgroup v2 hierarchy is mounted (it kills an attempt's processes and says when none is left)",
        )?;
        let v2_root = v2
            .dir(&v2.root)
            .ok_or("the cgroup v2 mount shows none of its hierarchy")?;
        let on_v2: BTreeSet<String> = read_words(&v2_root.join("cgroup.controllers"))
            .map_err(|e| {
                format!(
                    "cannot read {}: {e}",
                    v2_root.join("cgroup.controllers").display()
                )
            })?
            .into_iter()
            .collect();
        let mut v2_controllers = Vec::new();
        let mut v1_places = Vec::new();
        for controller in CONTROLLERS {
            if on_v2.contains(controller.name()) {
                v2_controllers.push(controller);
            } else if let Some((_, hierarchy)) = layout.v1.iter().find(|(c, _)| *c == controller) {
                v1_places.push((controller, hierarchy));
            } else {
                return Err(format!(
                    "the {} controller is on no mounted cgroup hierarchy",
                    controller.name()
                ));
            }
        }
        let shape = if v1_places.is_empty() {
            Shape::V2
        } else {
            Shape::Hybrid
        };
        let mut owned = Owned::default();
        let core = make_drone_group(v2, parent, drone_name, &mut owned)?;
        if !core.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&core);
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later has it)",
                core.display()
            ));
        }
        if !v2_controllers.is_empty() {
            enable_controllers(v2, &core, &v2_controllers)?;
        }
        let mut v1 = Vec::new();
        for (controller, hierarchy) in v1_places {
            let dir = make_drone_group(hierarchy, parent, drone_name, &mut owned)?;
            v1.push((controller, dir));
        }
        Ok(Cgroups {
            shape,
            core,
            v1,
            v2_controllers,
            owned,
        })
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The drone's group in the v2 hierarchy.
    pub fn core(&self) -> &Path {
        &self.core
    }

    /// Makes the group of the attempt named `name`, with `limits`: in the v2 hierarchy always,
    /// and in each v1 hierarchy whose controller a limit needs (pids always: every attempt has a
    /// pids limit). On failure nothing is left of it.
    pub fn attempt(&self, name: &str, limits: &Limits) -> Result<AttemptGroup, String> {
        let mut group = AttemptGroup {
            core: self.core.join(name),
            v1: Vec::new(),
            memory: None,
            events: None,
            procs: Vec::new(),
        };
        if let Err(e) = group.make(self, limits) {
            let _ = group.remove_dirs();
            return Err(e);
        }
        Ok(group)
    }

    /// The groups left in the drone's groups (by a previous drone on the same work root): each
    /// killed, waited for and removed. Returns each group's v2 directory, and whether anything
    /// in it still ran.
    pub fn sweep(owned: &Owned) -> Vec<(PathBuf, io::Result<bool>)> {
        let mut found = Vec::new();
        // The v2 group lists the attempts (every attempt has one); the v1 ones follow it.
        let Some(core) = owned.groups.first() else {
            return found;
        };
        let Ok(entries) = fs::read_dir(core) else {
            return found;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let dirs: Vec<PathBuf> = owned.groups.iter().map(|g| g.join(&name)).collect();
            found.push((entry.path(), end_leftover(&dirs)));
        }
        // v1 groups of attempts whose v2 group was already gone.
        for group in &owned.groups[1..] {
            for entry in fs::read_dir(group).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        found
    }

    /// Removes the drone's groups (which must be empty) and the parents Hive made for them, when
    /// no other drone's group is left in them.
    pub fn remove(owned: &Owned) {
        for group in &owned.groups {
            if let Err(e) = fs::remove_dir(group)
                && e.kind() != ErrorKind::NotFound
            {
                warn!("could not remove the cgroup {}: {e}", group.display());
            }
        }
        for parent in &owned.parents {
            // Another drone's group in it keeps it (and it removes it when it ends).
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Makes the drone's group `drone_name` under `parent` (or the default) in `hierarchy`, noting
/// in `owned` what it made. Retries when another drone's reaper removed a shared parent midway.
fn make_drone_group(
    hierarchy: &Hierarchy,
    parent: Option<&str>,
    drone_name: &str,
    owned: &mut Owned,
) -> Result<PathBuf, String> {
    let parent_path = match parent {
        Some(path) => path.to_string(),
        None => format!("{}/{DEFAULT_PARENT}", hierarchy.own.trim_end_matches('/')),
    };
    let parent_dir = hierarchy.dir(&parent_path).ok_or_else(|| {
        format!(
            "the cgroup {parent_path} is outside what {} shows",
            hierarchy.mount.display()
        )
    })?;
    let group = parent_dir.join(drone_name);
    let mut last = None;
    for _ in 0..MAKE_TRIES {
        let existed = parent_dir.is_dir();
        if let Err(e) = fs::create_dir_all(&parent_dir) {
            return Err(format!(
                "cannot make the cgroup {}: {e}",
                parent_dir.display()
            ));
        }
        // The default parent is Hive's, whoever made it, and so is a parent this drone made:
        // the last drone in it removes it when it ends.
        if (parent.is_none() || !existed) && !owned.parents.contains(&parent_dir) {
            owned.parents.push(parent_dir.clone());
        }
        match fs::create_dir(&group) {
            Ok(()) => {
                owned.groups.push(group.clone());
                return Ok(group);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                owned.groups.push(group.clone());
                return Ok(group);
            }
            // The parent went between the two calls: another drone's reaper left it empty.
            Err(e) if e.kind() == ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(format!("cannot make the cgroup {}: {e}", group.display())),
        }
    }
    Err(format!(
        "cannot make the cgroup {}: {}",
        group.display(),
        last.map_or_else(|| "its parent keeps going away".into(), |e| e.to_string())
    ))
}

/// Enables `controllers` for the children of every group from the v2 hierarchy's root down to
/// the drone's group `core`. A group that holds processes cannot: when that is the drone's own
/// group, the drone moves into a leaf of it first (see the module docs).
fn enable_controllers(
    v2: &Hierarchy,
    core: &Path,
    controllers: &[Controller],
) -> Result<(), String> {
    let root = v2
        .dir(&v2.root)
        .ok_or("the cgroup v2 mount shows none of its hierarchy")?;
    let mut chain = vec![root.clone()];
    let below = core
        .strip_prefix(&root)
        .map_err(|_| format!("{} is not under {}", core.display(), root.display()))?;
    let mut dir = root.clone();
    for part in below.components() {
        if let Component::Normal(name) = part {
            dir = dir.join(name);
            chain.push(dir.clone());
        }
    }
    let own = v2.dir(&v2.own);
    for dir in chain {
        let enabled = read_words(&dir.join("cgroup.subtree_control")).map_err(|e| {
            format!(
                "cannot read {}: {e}",
                dir.join("cgroup.subtree_control").display()
            )
        })?;
        let missing: Vec<Controller> = controllers
            .iter()
            .copied()
            .filter(|c| !enabled.iter().any(|e| e == c.name()))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let available = read_words(&dir.join("cgroup.controllers")).unwrap_or_default();
        if let Some(absent) = missing
            .iter()
            .find(|c| !available.iter().any(|a| a == c.name()))
        {
            return Err(format!(
                "the {} controller is not delegated to {} (a systemd unit needs Delegate=yes)",
                absent.name(),
                dir.display()
            ));
        }
        let line: Vec<String> = missing.iter().map(|c| format!("+{}", c.name())).collect();
        let line = line.join(" ");
        let write = || write_file(&dir.join("cgroup.subtree_control"), &line);
        match write() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && own.as_ref() == Some(&dir) => {
                move_into_leaf(&dir)?;
                write().map_err(|e| {
                    format!(
                        "cannot enable {line} in {}: {e} (it holds processes other than this drone)",
                        dir.display()
                    )
                })?;
            }
            Err(e) => return Err(format!("cannot enable {line} in {}: {e}", dir.display())),
        }
    }
    Ok(())
}

/// Moves this process (every thread of it) into the leaf [`DRONE_LEAF`] of `own`, its v2 group.
fn move_into_leaf(own: &Path) -> Result<(), String> {
    let leaf = own.join(DRONE_LEAF);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make the cgroup {}: {e}", leaf.display())),
    }
    write_file(&leaf.join("cgroup.procs"), "0")
        .map_err(|e| format!("cannot move this drone into {}: {e}", leaf.display()))?;
    info!(
        "moved this drone into the cgroup {}, so that its group may hold its attempts' groups",
        leaf.display()
    );
    Ok(())
}

/// One attempt's groups.
#[derive(Debug)]
pub struct AttemptGroup {
    /// Its group in the v2 hierarchy: lists its processes, says when it is empty, kills it.
    core: PathBuf,
    /// Its groups in v1 hierarchies, by controller.
    v1: Vec<(Controller, PathBuf)>,
    /// Where its memory is counted, if it is: the group, and whether it is a v1 one.
    memory: Option<(PathBuf, bool)>,
    /// `cgroup.events` of the v2 group, open for reading and polling.
    events: Option<File>,
    /// `cgroup.procs` of each group, open for the command's process to write itself into.
    procs: Vec<OwnedFd>,
}

impl AttemptGroup {
    fn make(&mut self, cgroups: &Cgroups, limits: &Limits) -> Result<(), String> {
        make_dir(&self.core)?;
        for controller in &cgroups.v2_controllers {
            write_limit(&self.core, *controller, false, limits)?;
        }
        if cgroups.v2_controllers.contains(&Controller::Memory) {
            self.memory = Some((self.core.clone(), false));
        }
        for (controller, drone_group) in &cgroups.v1 {
            let needed = match controller {
                Controller::Memory => limits.memory_bytes.is_some(),
                Controller::Cpu => limits.millicpus.is_some(),
                Controller::Pids => true,
            };
            if !needed {
                continue;
            }
            let dir = drone_group.join(self.core.file_name().expect("an attempt's name"));
            make_dir(&dir)?;
            self.v1.push((*controller, dir.clone()));
            write_limit(&dir, *controller, true, limits)?;
            if *controller == Controller::Memory {
                self.memory = Some((dir, true));
            }
        }
        let events = File::open(self.core.join("cgroup.events")).map_err(|e| {
            format!(
                "cannot open {}: {e}",
                self.core.join("cgroup.events").display()
            )
        })?;
        self.events = Some(events);
        for dir in self.dirs() {
            let procs = OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| format!("cannot open {}: {e}", dir.join("cgroup.procs").display()))?;
            self.procs.push(OwnedFd::from(procs));
        }
        Ok(())
    }

    /// Every directory of it, the v2 one first: what the journal records.
    pub fn dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.core.clone())
            .chain(self.v1.iter().map(|(_, dir)| dir.clone()))
            .collect()
    }

    /// The descriptors of its `cgroup.procs` files, for the command's process to join through.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The descriptor that turns ready for `POLLPRI` when the group's population changes.
    pub fn events_fd(&self) -> Option<RawFd> {
        self.events.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether no process is left in it. A group whose events cannot be read counts as empty:
    /// its end kills it anyway.
    pub fn is_empty(&self) -> bool {
        let Some(events) = &self.events else {
            return true;
        };
        let mut text = [0u8; 128];
        let Ok(n) = events.read_at(&mut text, 0) else {
            return true;
        };
        !String::from_utf8_lossy(&text[..n])
            .lines()
            .any(|line| line == "populated 1")
    }

    /// Sends `signal` to every process in it. Each is pinned with a pidfd before it is checked
    /// to be still in the group, so a pid that was reused meanwhile is never signalled.
    pub fn signal_each(&self, signal: i32) {
        let Ok(listed) = fs::read_to_string(self.core.join("cgroup.procs")) else {
            return;
        };
        let relative = cgroup_line(&self.core);
        for pid in listed
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
        {
            let Ok(pidfd) = super::pidfd_open(pid) else {
                continue;
            };
            let still_here = fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|text| relative.as_ref().is_none_or(|line| text.contains(line)));
            if still_here {
                // SAFETY: a plain system call on a pidfd this function holds.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        signal,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
        }
    }

    /// Kills every process in it at once (`cgroup.kill`).
    pub fn kill(&self) {
        if let Err(e) = write_file(&self.core.join("cgroup.kill"), "1")
            && e.kind() != ErrorKind::NotFound
        {
            warn!("could not kill the cgroup {}: {e}", self.core.display());
        }
    }

    /// Waits until no process is left in it, saying so after [`EMPTY_WARN`].
    pub fn wait_empty(&self) {
        let started = Instant::now();
        let mut warned = false;
        while !self.is_empty() {
            if !warned && started.elapsed() >= EMPTY_WARN {
                warn!(
                    "the cgroup {} is not empty {EMPTY_WARN:?} after it was killed; waiting for it",
                    self.core.display()
                );
                warned = true;
            }
            wait_events(self.events_fd(), Duration::from_millis(100));
        }
    }

    /// What it used: the times the kernel killed one of its processes for memory, and the most
    /// memory it held at once, where its memory is counted.
    pub fn usage(&self) -> Usage {
        let Some((dir, v1)) = &self.memory else {
            return Usage::default();
        };
        let (peak_file, oom_file) = if *v1 {
            ("memory.max_usage_in_bytes", "memory.oom_control")
        } else {
            ("memory.peak", "memory.events")
        };
        let peak_memory_bytes = fs::read_to_string(dir.join(peak_file))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let oom_kills = fs::read_to_string(dir.join(oom_file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
            .unwrap_or(0);
        Usage {
            oom_kills,
            peak_memory_bytes,
        }
    }

    /// Removes its groups, which must be empty; says which could not be removed.
    pub fn remove(mut self) -> io::Result<()> {
        self.events = None;
        self.procs.clear();
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for dir in self.dirs().iter().rev() {
            match fs::remove_dir(dir) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    result = Err(io::Error::new(
                        e.kind(),
                        format!("cannot remove the cgroup {}: {e}", dir.display()),
                    ));
                }
                _ => {}
            }
        }
        result
    }
}

/// What an attempt's group says it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub oom_kills: u64,
    pub peak_memory_bytes: Option<u64>,
}

/// Ends a group a previous drone left (its directories, the v2 one first): kills it, waits up to
/// [`LEFTOVER_WAIT`] for it to empty, and removes it. Returns whether anything in it still ran.
pub fn end_leftover(dirs: &[PathBuf]) -> io::Result<bool> {
    let Some(core) = dirs.first() else {
        return Ok(false);
    };
    let events = match File::open(core.join("cgroup.events")) {
        Ok(events) => events,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            for dir in &dirs[1..] {
                let _ = fs::remove_dir(dir);
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let populated = |events: &File| {
        let mut text = String::new();
        let _ = (&*events).read_to_string(&mut text);
        text.lines().any(|line| line == "populated 1")
    };
    let ran = populated(&events);
    if ran {
        write_file(&core.join("cgroup.kill"), "1")?;
        let deadline = Instant::now() + LEFTOVER_WAIT;
        loop {
            let events = File::open(core.join("cgroup.events"))?;
            if !populated(&events) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{} still holds processes {LEFTOVER_WAIT:?} after it was killed",
                    core.display()
                )));
            }
            wait_events(Some(events.as_raw_fd()), Duration::from_millis(50));
        }
    }
    for dir in dirs.iter().rev() {
        match fs::remove_dir(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", dir.display()),
                ));
            }
            _ => {}
        }
    }
    Ok(ran)
}

/// Waits up to `most` for the `cgroup.events` behind `fd` to change.
fn wait_events(fd: Option<RawFd>, most: Duration) {
    let Some(fd) = fd else {
        thread::sleep(most);
        return;
    };
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one live, initialised pollfd. A failed or interrupted poll is a spurious wake.
    unsafe { libc::poll(&mut poll, 1, most.as_millis() as i32) };
}

/// The line `/proc/PID/cgroup` has for a process in the v2 group at `dir`, as far as it can be
/// told from the directory (`None` when it cannot: then membership is not checked).
fn cgroup_line(dir: &Path) -> Option<String> {
    let mounts = fs::read_to_string(MOUNTINFO_FILE).ok()?;
    let own = fs::read_to_string(OWN_CGROUP_FILE).ok()?;
    let v2 = Layout::parse(&mounts, &own).v2?;
    let below = dir.strip_prefix(&v2.mount).ok()?;
    let root = v2.root.trim_end_matches('/');
    Some(format!("0::{root}/{}\n", below.display()))
}

/// The memory limit of this process's own group, where it has one: a drone in a container or
/// a systemd unit with `MemoryMax=` offers no more than that.
pub fn own_memory_limit_bytes() -> Option<u64> {
    let layout = Layout::read().ok()?;
    let (dir, file) = match layout.v1.iter().find(|(c, _)| *c == Controller::Memory) {
        Some((_, v1)) => (v1.dir(&v1.own)?, "memory.limit_in_bytes"),
        None => {
            let v2 = layout.v2?;
            (v2.dir(&v2.own)?, "memory.max")
        }
    };
    // "max", or v1's "no limit" (a page short of i64::MAX), are no limit.
    fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|bytes| *bytes < (1 << 62))
}

/// Makes an attempt's group.
fn make_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir(dir).map_err(|e| format!("cannot make the cgroup {}: {e}", dir.display()))
}

/// Writes `controller`'s part of `limits` in the group `dir` (a v1 group when `v1`).
fn write_limit(
    dir: &Path,
    controller: Controller,
    v1: bool,
    limits: &Limits,
) -> Result<(), String> {
    let mut writes: Vec<(&str, String)> = Vec::new();
    match (controller, v1) {
        (Controller::Memory, false) => {
            if let Some(bytes) = limits.memory_bytes {
                writes.push(("memory.max", bytes.to_string()));
                // No swap: past its limit an attempt is killed, not slowed to a crawl.
                writes.push(("memory.swap.max", "0".into()));
            }
            // The kernel kills the whole attempt, not one process of it: an attempt is a unit.
            writes.push(("memory.oom.group", "1".into()));
        }
        (Controller::Memory, true) => {
            if let Some(bytes) = limits.memory_bytes {
                writes.push(("memory.limit_in_bytes", bytes.to_string()));
                writes.push(("memory.memsw.limit_in_bytes", bytes.to_string()));
            }
        }
        (Controller::Pids, _) => writes.push(("pids.max", limits.pids.to_string())),
        (Controller::Cpu, false) => {
            if let Some(quota) = limits.millicpus.map(cpu_quota_us) {
                writes.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            }
        }
        (Controller::Cpu, true) => {
            if let Some(quota) = limits.millicpus.map(cpu_quota_us) {
                writes.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                writes.push(("cpu.cfs_quota_us", quota.to_string()));
            }
        }
    }
    for (file, value) in writes {
        let path = dir.join(file);
        match write_file(&path, &value) {
            Ok(()) => {}
            // Kernels without swap accounting, or older ones without the oom group, lack these.
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    && matches!(
                        file,
                        "memory.swap.max" | "memory.memsw.limit_in_bytes" | "memory.oom.group"
                    ) => {}
            Err(e) => return Err(format!("cannot write {value} to {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// The quota of `millicpus` thousandths of a core in each [`CPU_PERIOD_US`].
pub fn cpu_quota_us(millicpus: u32) -> u64 {
    (u64::from(millicpus) * CPU_PERIOD_US / 1000).max(1000)
}

/// Writes `value` to the existing file at `path`, in one write (cgroup files take one value per
/// write).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    // SAFETY: writes from a live buffer to a descriptor `file` holds.
    let written = unsafe { libc::write(file.as_raw_fd(), value.as_ptr().cast(), value.len()) };
    if written < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The space-separated words of a file.
fn read_words(path: &Path) -> io::Result<Vec<String>> {
    Ok(fs::read_to_string(path)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The name of the group of a drone whose work root is `root`: the root's path with every
/// character outside `[A-Za-z0-9._-]` replaced, shortened with a hash of the whole when long.
/// Two drones on one machine never share a work root (its lock), so never a group.
pub fn drone_group_name(root: &Path) -> String {
    let path = root.to_string_lossy();
    let plain: String = path
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    let name = format!("drone-{plain}");
    if name.len() <= MAX_DRONE_GROUP_CHARS {
        return name;
    }
    // FNV-1a: stable from release to release, unlike std's hasher.
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    });
    let keep = MAX_DRONE_GROUP_CHARS - 17;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash:016x}", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_OWN: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/1c4b
1:cpu:/
0::/
";

    #[test]
    fn a_hybrid_layout_has_the_v2_core_and_the_controllers_on_v1() {
        let layout = Layout::parse(HYBRID_MOUNTS, HYBRID_OWN);
        let v2 = layout.v2.as_ref().unwrap();
        assert_eq!(
            (v2.mount.as_path(), v2.root.as_str(), v2.own.as_str()),
            (Path::new("/sys/fs/cgroup/unified"), "/", "/")
        );
        let v1: Vec<(Controller, &Path, &str)> = layout
            .v1
            .iter()
            .map(|(c, h)| (*c, h.mount.as_path(), h.own.as_str()))
            .collect();
        assert_eq!(
            v1,
            [
                (Controller::Cpu, Path::new("/sys/fs/cgroup/cpu"), "/"),
                (
                    Controller::Memory,
                    Path::new("/sys/fs/cgroup/memory"),
                    "/process_api/1c4b"
                ),
                (Controller::Pids, Path::new("/sys/fs/cgroup/pids"), "/"),
            ]
        );
        let memory = &layout.v1[1].1;
        assert_eq!(
            memory.dir("/process_api/1c4b/hive"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/1c4b/hive"))
        );
    }

    #[test]
    fn a_v2_layout_inside_a_container_maps_groups_under_its_root() {
        let mounts = "\
29 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        let own = "0::/kubepods/pod1/app\n";
        let layout = Layout::parse(mounts, own);
        let v2 = layout.v2.unwrap();
        assert!(layout.v1.is_empty());
        assert_eq!(
            v2.dir("/kubepods/pod1/app/hive"),
            Some(PathBuf::from("/sys/fs/cgroup/app/hive"))
        );
        assert_eq!(v2.dir("/elsewhere"), None, "outside what the mount shows");
        assert_eq!(v2.dir("/kubepods/pod10"), None);
    }

    #[test]
    fn cpus_become_a_quota_of_the_100_ms_period() {
        assert_eq!(cpu_quota_us(250), 25_000);
        assert_eq!(cpu_quota_us(2000), 200_000);
        assert_eq!(cpu_quota_us(1), 1000, "the kernel's least quota is 1 ms");
    }

    #[test]
    fn a_drone_s_group_is_named_after_its_work_root() {
        assert_eq!(
            drone_group_name(Path::new("/tmp/hive-drone-127.0.0.1-8080")),
            "drone-tmp_hive-drone-127.0.0.1-8080"
        );
        let long = PathBuf::from(format!("/srv/{}", "d".repeat(300)));
        let name = drone_group_name(&long);
        assert_eq!(name.len(), MAX_DRONE_GROUP_CHARS);
        assert_ne!(
            name,
            drone_group_name(&PathBuf::from(format!("/srv/{}e", "d".repeat(299))))
        );
        assert_eq!(unescape_mount(r"/mnt/with\040space"), "/mnt/with space");
    }
}
