//! Time as the store's records keep it: Unix seconds, to the millisecond. Decisions take the time
//! as an argument (see `tasks::lifecycle`); only the loops that apply them read the clock, here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as the Unix seconds the store's records use.
pub fn now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// `time` as Unix seconds, to the millisecond: how `/drones` and the shared store write times.
pub fn unix_seconds(time: SystemTime) -> f64 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    (secs * 1000.0).round() / 1000.0
}
