//! A clean stop: SIGTERM (what `kill` and service managers send) or SIGINT (Ctrl-C).
//!
//! Both signals are blocked in every thread ([`block_stop_signals`], called before the process
//! starts any thread, since a thread inherits its creator's mask) and taken by one thread of their
//! own with `sigwait` ([`on_stop`]), so what a larve does on a stop is plain code on a plain
//! thread: no async-signal-safety to worry about. A queen that leads lets her leadership go first,
//! so the next queen leads within moments instead of a lease's TTL later.

use std::io;
use std::thread;

/// The signals that ask for a clean stop.
const STOP_SIGNALS: [(libc::c_int, &str); 2] =
    [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")];

/// The stop signals as a set.
fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset fully initialises the set it is given; sigaddset only adds valid
    // signal numbers to it.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for (signal, _) in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Lets SIGPIPE end the process, as it ends other Unix tools: for the command line, whose output
/// may go to a pipe whose reader leaves early (`larve task ls | head`). Rust ignores SIGPIPE, so
/// that a daemon's write to a closed socket is an error to handle; a client printing to a closed
/// pipe would panic instead. Never called by a daemon.
pub fn die_on_closed_pipe() {
    // SAFETY: setting a standard signal's disposition to its default, before any other thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Blocks the stop signals in the calling thread and every thread it starts from now on. Call it
/// first thing, before any other thread exists.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_set();
    // SAFETY: a valid, initialised set; the old mask is not asked for.
    let failed = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if failed != 0 {
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok(())
}

/// Starts a thread that waits for a stop signal and then calls `stop` with its name, once.
pub fn on_stop(stop: impl FnOnce(&'static str) + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = stop_set();
            let mut taken: libc::c_int = 0;
            loop {
                // SAFETY: a valid set, and a place for the signal's number.
                if unsafe { libc::sigwait(&set, &mut taken) } == 0 {
                    break;
                }
            }
            let name = STOP_SIGNALS
                .iter()
                .find(|(signal, _)| *signal == taken)
                .map_or("a stop signal", |(_, name)| name);
            stop(name);
        })?;
    Ok(())
}
