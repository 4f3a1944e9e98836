//! Starting an attempt's command the way `posix_spawn` does, with `child.rs`'s setup between the
//! clone and the exec.
//!
//! The command's process must set itself up before it runs the command (its cgroups, its user,
//! its directory, its signals), and std's `Command` offers that only through `pre_exec`, which
//! makes it `fork` the whole drone: its page tables copied, then every page it touches
//! copy-on-write, then all of it unmapped again at the exec. On this machine that was a fifth of
//! all the CPU a hive of 4 drones spent running `true` tasks (perf: `copy_process`, `do_wp_page`,
//! `unmap_page_range`), and it halved their throughput. So the process is made as glibc's
//! `posix_spawn` makes it: `clone(CLONE_VM | CLONE_VFORK)`, which copies nothing and suspends the
//! calling thread until the child has called `execve` or exited. The child runs on a stack of its
//! own in the drone's memory, and makes only system calls; every string it needs (the program's
//! candidate paths, its arguments, its environment) is built before the clone.
//!
//! `CLONE_PIDFD` gives the parent a pidfd of the child at once, so the process is watched
//! without a window in which its pid could be another's. An exec that fails is reported by the
//! child as its errno on a close-on-exec pipe: nothing to read means the command runs.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::child::ChildSetup;

/// The child's stack, until it has called `execve`: it makes system calls only.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Where a program named without a `/` is looked for when its environment has no `PATH`.
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";

/// The exit status of a child that could not exec (it never reports it: its parent reads the
/// errno instead).
const EXEC_FAILED: i32 = 127;

/// A command to start: its program, arguments and whole environment.
pub(super) struct Program<'a> {
    pub(super) program: &'a str,
    pub(super) args: &'a [String],
    /// The environment, in order; a later variable of a name replaces an earlier one.
    pub(super) env: Vec<(&'a OsStr, OsString)>,
}

/// The started command's process, until it is reaped.
pub(super) struct Leader {
    pid: i32,
    pidfd: OwnedFd,
}

impl Leader {
    pub(super) fn id(&self) -> i32 {
        self.pid
    }

    /// A pidfd of it, readable once it has exited.
    pub(super) fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// Waits for it to exit and reaps it.
    pub(super) fn wait(&self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waits for a child of this process, writing its status to a local.
            if unsafe { libc::waitpid(self.pid, &mut status, 0) } == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// What the child needs, all of it built before the clone.
struct ChildArgs<'a> {
    setup: &'a ChildSetup,
    /// Where the program may be, each tried in turn, as `execvp` does.
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// stdin, stdout, stderr.
    stdio: [RawFd; 3],
    /// The write end of the pipe an exec failure is reported on.
    report: RawFd,
}

/// Starts `program` set up by `setup`, with stdin from `/dev/null` and stdout and stderr into
/// pipes: the process, and the pipes' read ends.
pub(super) fn spawn(program: &Program, setup: &ChildSetup) -> io::Result<(Leader, [File; 2])> {
    let env = whole_env(&program.env);
    let path = env
        .iter()
        .find(|(name, _)| name.as_bytes() == b"PATH")
        .map_or(DEFAULT_PATH, |(_, value)| value.as_bytes());
    let candidates = candidates(program.program, path)?;
    let argv: Vec<CString> = std::iter::once(program.program)
        .chain(program.args.iter().map(String::as_str))
        .map(|arg| CString::new(arg).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(name, value)| {
            let mut line = name.as_bytes().to_vec();
            line.push(b'=');
            line.extend_from_slice(value.as_bytes());
            CString::new(line).map_err(io::Error::other)
        })
        .collect::<io::Result<_>>()?;
    let null = File::open("/dev/null")?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    let args = ChildArgs {
        setup,
        candidates,
        argv: pointers(&argv),
        envp: pointers(&envp),
        stdio: [
            null.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
        report: report_write.as_raw_fd(),
    };
    let mut stack = vec![0u128; CHILD_STACK_BYTES / 16];
    // The stack grows down from its end; u128s keep it 16-byte aligned.
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let mut pidfd: libc::c_int = -1;
    let pid = {
        let _quiet = BlockedSignals::all();
        // SAFETY: the child runs `child` on `stack` in this memory, which stays alive and unchanged
        // until it has exec'd or exited: CLONE_VFORK suspends this thread until then. `child`
        // makes only system calls. Every signal is blocked meanwhile, so no handler of the drone's
        // runs in the child before it has reset them.
        unsafe {
            libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&args as *const ChildArgs).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            )
        }
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor here, which nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let leader = Leader { pid, pidfd };
    drop((null, out_write, err_write, report_write, stack));
    let mut errno = [0u8; 4];
    let read = read_all(&report_read, &mut errno);
    if read == errno.len() {
        let _ = leader.wait();
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok((leader, [File::from(out_read), File::from(err_read)]))
}

/// The child: its setup, its stdio, then each candidate program in turn. On any failure it
/// reports the errno and exits. System calls only (see the module docs).
extern "C" fn child(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the parent passed a live ChildArgs, unchanged until this process exec'd or exited.
    let args = unsafe { &*(args as *const ChildArgs) };
    let failed = |errno: i32| -> libc::c_int {
        let bytes = errno.to_ne_bytes();
        // SAFETY: writes 4 bytes from a local to the report pipe, then ends this process alone.
        unsafe {
            libc::write(args.report, bytes.as_ptr().cast(), bytes.len());
            libc::syscall(libc::SYS_exit, EXEC_FAILED);
        }
        EXEC_FAILED
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    if let Err(e) = args.setup.run() {
        return failed(e.raw_os_error().unwrap_or(libc::EIO));
    }
    for (to, &from) in args.stdio.iter().enumerate() {
        // SAFETY: a plain system call on descriptors the parent holds open.
        if unsafe { libc::dup2(from, to as RawFd) } < 0 {
            return failed(errno());
        }
    }
    // SAFETY: a plain system call.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return failed(errno());
    }
    // As execvp: a candidate that is not there is passed over; a refusal is kept in case no
    // later one runs.
    let mut last = libc::ENOENT;
    for candidate in &args.candidates {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays, built by the parent.
        unsafe { libc::execve(candidate.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr()) };
        match errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => last = libc::EACCES,
            other => return failed(other),
        }
    }
    failed(last)
}

/// Every signal blocked in this thread, until dropped.
struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    fn all() -> BlockedSignals {
        // SAFETY: sets fully initialised by sigfillset, the old one written by the call.
        unsafe {
            let mut all = std::mem::zeroed::<libc::sigset_t>();
            let mut old = std::mem::zeroed::<libc::sigset_t>();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            BlockedSignals(old)
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: gives back the mask `all` saved.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// The environment as the command gets it: each name once, its last value.
fn whole_env<'a>(env: &'a [(&'a OsStr, OsString)]) -> Vec<(&'a OsStr, &'a OsStr)> {
    let mut whole: BTreeMap<&OsStr, &OsStr> = BTreeMap::new();
    for (name, value) in env {
        whole.insert(name, value);
    }
    whole.into_iter().collect()
}

/// Where `program` may be: itself when it names a path, else in each directory of `path`.
fn candidates(program: &str, path: &[u8]) -> io::Result<Vec<CString>> {
    let nul = |e| io::Error::other(e);
    if program.contains('/') {
        return Ok(vec![CString::new(program).map_err(nul)?]);
    }
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty entry is the working directory, as execvp takes it.
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            CString::new(full).map_err(nul)
        })
        .collect()
}

/// NULL-terminated pointers to `strings`, which must outlive them.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just made, and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads from `fd` until `buf` is full or the writers are gone; how much was read.
fn read_all(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut read = 0;
    while read < buf.len() {
        // SAFETY: reads into the unfilled part of a live buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[read..].as_mut_ptr().cast(),
                buf.len() - read,
            )
        };
        match n {
            0 => break,
            n if n > 0 => read += n as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_looked_for_on_the_path_unless_it_names_one() {
        let found = candidates("sh", b"/usr/bin::/bin").unwrap();
        assert_eq!(found, [c"/usr/bin/sh", c"./sh", c"/bin/sh"]);
        assert_eq!(candidates("./run", b"/bin").unwrap(), [c"./run"]);
        let env = [
            (OsStr::new("PATH"), OsString::from("/a")),
            (OsStr::new("HOME"), OsString::from("/h")),
            (OsStr::new("PATH"), OsString::from("/b")),
        ];
        assert_eq!(
            whole_env(&env),
            [
                (OsStr::new("HOME"), OsStr::new("/h")),
                (OsStr::new("PATH"), OsStr::new("/b"))
            ]
        );
    }
}
