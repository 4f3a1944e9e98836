//! The threads attempts run on, one attempt at a time each.
//!
//! A thread that has run an attempt waits [`IDLE_THREAD_WAIT`] for another, so that a drone doing
//! many short attempts does not make and end a thread for each: that took a quarter of the
//! executor's own CPU time for a short command (a thread's stack and signal stack are mapped, then
//! unmapped, and unmapping has every CPU that runs the process flush its TLB). A job never waits
//! for another to end: when every thread is busy, a new one is made. When none can be made (the
//! machine or the user is out of threads), the job is not run at all, and the caller hears so at
//! once, on its own thread, holding whatever it holds: it decides what the failure means.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

/// How long a thread that has run an attempt waits for another before it ends.
const IDLE_THREAD_WAIT: Duration = Duration::from_secs(10);

/// An attempt handed to a thread.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// The threads, and the jobs handed to them.
#[derive(Default)]
pub(super) struct Threads {
    waiting: Mutex<Waiting>,
    job_queued: Condvar,
}

#[derive(Default)]
struct Waiting {
    /// Jobs handed over and not yet taken: never more than there are idle threads.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
}

impl Threads {
    /// Runs `job` on an idle thread, or on a new one when every thread is busy: a job never
    /// waits for another to end. Fails, without running `job`, when no thread can be made.
    pub(super) fn run(self: &Arc<Self>, job: Job) -> io::Result<()> {
        let mut waiting = self.waiting.lock();
        if waiting.idle == waiting.jobs.len() {
            let threads = self.clone();
            thread::Builder::new()
                .name("attempt".into())
                .spawn(move || threads.work())?;
            waiting.idle += 1;
        }
        waiting.jobs.push_back(job);
        self.job_queued.notify_one();
        Ok(())
    }

    /// A thread's life: jobs as they come, until none has come for [`IDLE_THREAD_WAIT`].
    fn work(&self) {
        let mut waiting = self.waiting.lock();
        loop {
            if let Some(job) = waiting.jobs.pop_front() {
                waiting.idle -= 1;
                MutexGuard::unlocked(&mut waiting, job);
                waiting.idle += 1;
            } else if self
                .job_queued
                .wait_for(&mut waiting, IDLE_THREAD_WAIT)
                .timed_out()
                && waiting.jobs.is_empty()
            {
                waiting.idle -= 1;
                return;
            }
        }
    }
}
