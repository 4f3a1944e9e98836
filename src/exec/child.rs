//! What an attempt's command process does between its clone and its exec (see `spawn.rs`), in
//! order:
//! 1. every signal back to its default action, then none blocked: a drone blocks SIGTERM and
//!    SIGINT in all its threads (see `signals.rs`) and may have been started with some ignored,
//!    and a child inherits both; a task must get its SIGTERM, and may handle it;
//! 2. into the attempt's cgroups (writing `0`, itself, to each `cgroup.procs` its parent opened),
//!    so that it, and everything it starts, is held before it runs a single instruction of the
//!    command;
//! 3. its `oom_score_adj` up, so that the kernel, short of memory, takes a task before its drone
//!    (a process may always raise its own);
//! 4. into its attempt's directory (`fchdir` on a descriptor its parent opened: the work root is
//!    not searchable by the user it becomes, and std's `current_dir` would change directory only
//!    after the change of user);
//! 5. the user it runs as: its groups, its group, then its id, with the raw system calls, which
//!    change only the process that makes them, not the drone whose memory it shares.
//!
//! This runs in a child that shares the drone's memory until its exec, cloned from a threaded
//! process, so it makes system calls only: no allocation, no lock, nothing that writes memory but
//! its own stack. Everything it needs is prepared by the parent beforehand.

use std::io;
use std::os::fd::RawFd;

/// Where a task's `oom_score_adj` goes: far above its drone's, below nothing.
const TASK_OOM_SCORE_ADJ: &[u8] = b"900";

/// Signals are numbered 1 to 64 on Linux, and the kernel's signal set is that many bits.
const LAST_SIGNAL: libc::c_int = 64;
const SIGSET_BYTES: usize = 8;

/// Everything the command's process needs to set itself up, prepared before the clone.
pub(super) struct ChildSetup {
    /// An empty signal set, to unblock every signal with.
    unblocked: libc::sigset_t,
    /// `cgroup.procs` of each of the attempt's cgroups, open for writing.
    cgroup_procs: Vec<RawFd>,
    /// The attempt's directory, open.
    dir: RawFd,
    /// The ids to take, when they are not the drone's.
    ids: Option<Ids>,
}

/// A user's ids, as the system calls take them.
pub(super) struct Ids {
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    pub(super) groups: Vec<libc::gid_t>,
}

impl ChildSetup {
    /// The setup of a command that runs in the directory open at `dir`, joins the cgroups whose
    /// `cgroup.procs` are open at `cgroup_procs`, and runs as `ids` (`None`: the drone's own). The
    /// descriptors must stay open until the command has started.
    pub(super) fn new(dir: RawFd, cgroup_procs: Vec<RawFd>, ids: Option<Ids>) -> ChildSetup {
        // SAFETY: sigemptyset fully initialises the set it is given.
        let unblocked = unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            set
        };
        ChildSetup {
            unblocked,
            cgroup_procs,
            dir,
            ids,
        }
    }

    /// The steps of the module docs, in the cloned child. System calls only.
    pub(super) fn run(&self) -> io::Result<()> {
        // SAFETY (every block below): plain system calls on values prepared before the clone;
        // none allocates or takes a lock.
        // The kernel's own sigaction, all zeros: SIG_DFL, no flags, no mask. Through the raw
        // call, so that the C library's internal signals (32 and 33), which its wrapper
        // refuses, are reset too.
        let default = [0u64; 4];
        for signal in 1..=LAST_SIGNAL {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        signal,
                        default.as_ptr(),
                        std::ptr::null_mut::<u64>(),
                        SIGSET_BYTES,
                    )
                };
            }
        }
        let failed = unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.unblocked, std::ptr::null_mut())
        };
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        for &procs in &self.cgroup_procs {
            if unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        let adj = unsafe {
            libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        if adj >= 0 {
            // Best effort: a kernel without it changes nothing else.
            unsafe {
                libc::write(
                    adj,
                    TASK_OOM_SCORE_ADJ.as_ptr().cast(),
                    TASK_OOM_SCORE_ADJ.len(),
                );
                libc::close(adj);
            }
        }
        if unsafe { libc::fchdir(self.dir) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(ids) = &self.ids {
            let groups = (ids.groups.len(), ids.groups.as_ptr());
            if unsafe { libc::syscall(libc::SYS_setgroups, groups.0, groups.1) } != 0
                || unsafe { libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) } != 0
                || unsafe { libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) } != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
