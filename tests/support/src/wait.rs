//! The one way the bench waits for something: poll a check until it gives a value, and give up at
//! a deadline, so no wait can hang a run.

use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// Calls `check` every `every` until it gives a value, fails, or `within` has passed; the error then
/// names `what`.
pub fn poll<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what} after {within:?}"));
        }
        thread::sleep(every);
    }
}

/// [`poll`] for a check that cannot fail.
pub fn until<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    poll(within, every, what, || Ok(check()))
}
