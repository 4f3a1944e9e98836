//! The one way to wait for something: poll a check until it gives a value, and give up at a
//! deadline, so no wait can hang a run. Sleeping a fixed time instead would be either too short on
//! a loaded machine or needlessly long on an idle one.

use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// How often [`eventually`] looks: often enough that a test waits no longer than it must.
pub const EVENTUALLY_POLL: Duration = Duration::from_millis(10);

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

/// [`until`] every [`EVENTUALLY_POLL`], for tests: at the deadline it panics, naming `what`, which
/// fails the test.
pub fn eventually<T>(within: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    until(within, EVENTUALLY_POLL, what, check).unwrap_or_else(|why| panic!("{why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_returns_the_first_value() {
        let mut calls = 0;
        let value = poll(
            Duration::from_secs(5),
            Duration::ZERO,
            "a third call",
            || {
                calls += 1;
                Ok((calls == 3).then_some(calls))
            },
        );
        assert_eq!(value, Ok(3));
    }

    #[test]
    fn poll_stops_at_the_first_error() {
        let mut calls = 0;
        let value: Result<()> = poll(Duration::from_secs(5), Duration::ZERO, "nothing", || {
            calls += 1;
            Err("broken".to_string())
        });
        assert_eq!(value, Err("broken".to_string()));
        assert_eq!(calls, 1);
    }

    #[test]
    fn until_gives_up_at_the_deadline_naming_what_it_waited_for() {
        let started = Instant::now();
        let value: Result<()> = until(
            Duration::from_millis(50),
            Duration::from_millis(5),
            "the impossible",
            || None,
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        let why = value.expect_err("no value ever came");
        assert!(why.contains("the impossible"), "{why}");
    }

    #[test]
    #[should_panic(expected = "gave up waiting for the impossible")]
    fn eventually_panics_at_the_deadline() {
        eventually(Duration::from_millis(20), "the impossible", || None::<()>);
    }
}
