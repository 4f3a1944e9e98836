//! The threads that serve connections: one per connection, reused when its connection ends.
//!
//! Starting a thread for every new connection costs a dozen system calls and, on a quiet machine,
//! the wait for a core to start it; reusing one costs a wake-up. A thread whose connection ends
//! waits [`IDLE_LIFETIME`] for another, then exits, so after a flood the process returns to its
//! usual size.
//!
//! A job is handed to a waiting thread only when there are more waiting threads than jobs already
//! queued for them, counted under the same lock: a thread that has been woken but has not taken
//! its job yet is not counted twice. (tiny_http's pool counts such a thread as idle, which is how
//! it strands a connection with no thread; see `upstream.rs`.) Otherwise a new thread is started.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long a thread with nothing to do waits for a new connection before it exits.
pub const IDLE_LIFETIME: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads that grows with the connections and shrinks when they end.
#[derive(Clone)]
pub struct Threads {
    shared: Arc<Shared>,
    name: &'static str,
    stack_bytes: usize,
}

struct Shared {
    state: Mutex<State>,
    queued: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    waiting: usize,
}

impl Threads {
    /// A pool of threads named `name`, each with a stack of `stack_bytes`.
    pub fn new(name: &'static str, stack_bytes: usize) -> Threads {
        Threads {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                queued: Condvar::new(),
            }),
            name,
            stack_bytes,
        }
    }

    /// Runs `job` on a waiting thread, or on a new one. Fails only when no thread can be started
    /// (the job is then dropped).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let mut state = self.shared.state.lock();
        if state.waiting > state.jobs.len() {
            state.jobs.push_back(Box::new(job));
            drop(state);
            self.shared.queued.notify_one();
            return Ok(());
        }
        drop(state);
        let shared = self.shared.clone();
        thread::Builder::new()
            .name(self.name.into())
            .stack_size(self.stack_bytes)
            .spawn(move || {
                job();
                shared.serve();
            })
            .map(drop)
    }

    /// Threads waiting for a job now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.state.lock().waiting
    }
}

impl Shared {
    /// Takes jobs until none comes for [`IDLE_LIFETIME`].
    fn serve(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.state.lock();
                continue;
            }
            state.waiting += 1;
            let timed_out = self.queued.wait_for(&mut state, IDLE_LIFETIME).timed_out();
            state.waiting -= 1;
            if timed_out && state.jobs.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_burst_gets_a_thread_per_job_and_threads_are_reused() {
        let threads = Threads::new("test", 64 * 1024);
        let (done, finished) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        // Eight jobs that all hold their thread until the gate opens: each needs its own.
        for _ in 0..8 {
            let (done, gate) = (done.clone(), gate.clone());
            threads
                .run(move || {
                    let mut open = gate.0.lock();
                    while !*open {
                        gate.1.wait(&mut open);
                    }
                    drop(open);
                    done.send(thread::current().id()).unwrap();
                })
                .unwrap();
        }
        *gate.0.lock() = true;
        gate.1.notify_all();
        let mut first: Vec<_> = (0..8).map(|_| finished.recv().unwrap()).collect();
        first.sort_by_key(|id| format!("{id:?}"));
        first.dedup();
        assert_eq!(first.len(), 8, "eight threads ran the eight jobs");
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads.waiting() < 8 {
            assert!(Instant::now() < deadline, "the threads wait for more");
            thread::sleep(Duration::from_millis(5));
        }
        let done = done.clone();
        threads
            .run(move || done.send(thread::current().id()).unwrap())
            .unwrap();
        let again = finished.recv().unwrap();
        assert!(first.contains(&again), "a waiting thread took the next job");
    }
}
