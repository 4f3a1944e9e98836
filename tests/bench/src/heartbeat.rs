//! The queen's heartbeat as the bench sets and reads it: the fast settings, the flags that pass
//! them, and the round lines in her log.

use std::time::Duration;

use hive::config::HeartbeatConfig;

/// The detection and soak scenarios' heartbeat: a dead drone is noticed within seconds, so short
/// runs see many rounds.
const FAST_INTERVAL_SECS: f64 = 0.5;
const FAST_TIMEOUT_SECS: f64 = 0.3;
const FAST_ATTEMPTS: u32 = 3;

/// The fast settings, with the larve's default retry delay.
pub fn fast() -> HeartbeatConfig {
    HeartbeatConfig {
        interval: Duration::from_secs_f64(FAST_INTERVAL_SECS),
        attempts: FAST_ATTEMPTS,
        timeout: Duration::from_secs_f64(FAST_TIMEOUT_SECS),
        ..HeartbeatConfig::default()
    }
}

/// The queen flags for `config`.
pub fn args(config: &HeartbeatConfig) -> Vec<String> {
    vec![
        "--heartbeat-interval".into(),
        config.interval.as_secs_f64().to_string(),
        "--heartbeat-attempts".into(),
        config.attempts.to_string(),
        "--heartbeat-timeout".into(),
        config.timeout.as_secs_f64().to_string(),
        "--heartbeat-retry-delay".into(),
        config.retry_delay.as_secs_f64().to_string(),
    ]
}

/// How long `config` takes at most to notice a dead drone, as the formula with its values, for a
/// report row (the value itself is `config.detection_bound()`).
pub fn bound_formula(config: &HeartbeatConfig) -> String {
    format!(
        "interval + attempts × (timeout + retry delay) = {} + {} × ({} + {})",
        config.interval.as_secs_f64(),
        config.attempts,
        config.timeout.as_secs_f64(),
        config.retry_delay.as_secs_f64()
    )
}

/// Drones a queen's log says the heartbeat removed.
pub fn removals(log: &str) -> usize {
    log.matches(" removed drone-").count()
}

/// Tasks a queen's log says a drone did not take in time (or refused).
pub fn tasks_not_taken(log: &str) -> usize {
    log.matches(" not taken by drone-").count()
}
