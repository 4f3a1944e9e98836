//! The drone's reporter: sends how attempts ended to a queen, any queen it knows, until one has
//! recorded them.
//!
//! Reports go in batches (what ended while the last batch was on its way goes in the next), to the
//! queen that took the last batch; a queen that cannot be reached or fails is left for the next
//! one, with a pause that doubles up to [`MAX_BACKOFF`] while every queen fails.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::warn;

use super::Drone;
use super::attempts::Attempts;
use crate::client::Client;
use crate::logging::quoted;
use crate::tasks::wire::{Reports, ReportsAnswer};

/// Most bytes of output one batch carries (a queen takes bodies of up to 4 MiB on `/reports`).
const BATCH_BYTES: usize = 1024 * 1024;

/// Limit for one call.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the reporter waits for an attempt to end before it looks again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// First and longest pause after every queen failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends `attempts`' reports to `queens`, forever, as `drone` at `address` (with its boot id and
/// credential).
pub fn run(
    attempts: &Arc<Attempts>,
    client: &Client,
    queens: &[String],
    address: &str,
    drone: &Drone,
) -> ! {
    let mut current = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let reports = attempts.reports(IDLE_WAIT, BATCH_BYTES);
        if reports.is_empty() {
            continue;
        }
        let body = serde_json::to_value(Reports {
            address: address.to_string(),
            boot: drone.boot.clone(),
            reports,
        })
        .expect("reports serialize");
        let queen = &queens[current % queens.len()];
        let sent = client
            .bearing(drone.credential())
            .post_json(queen, "/reports", &body, REPORT_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|answer| {
                serde_json::from_slice::<ReportsAnswer>(&answer)
                    .map_err(|e| format!("its answer is not a reports answer ({e})"))
            });
        match sent {
            Ok(answer) => {
                attempts.recorded(&answer.accepted);
                backoff = FIRST_BACKOFF;
            }
            Err(why) => {
                warn!(
                    "could not report to queen {}: {why}; trying the next",
                    quoted(queen)
                );
                current += 1;
                if current % queens.len() == 0 {
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
