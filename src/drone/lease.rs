//! The drone's lease: once registered with a Hive queen, it renews a lease with the leader every
//! interval, so the leader knows it is alive without probing it, and knows what it runs.
//!
//! A renewal is `POST /lease` with the drone's own credential, carrying what its verbose
//! `/healthz` gives (boot, slots, the attempts it runs and has ended) and the id of the last
//! renewal the queen answered. It goes every interval × a random factor in [0.7, 0.9), counted
//! from the previous one's start: the jitter spreads a fleet's renewals, and the tenth of an
//! interval left over (a second at the default 10 s) covers the call's own latency, so a renewal
//! arrives before the leader finds the lease late (which costs a probe). What the queen answers
//! decides what comes next:
//!
//! | the queen answers                  | the drone                                              |
//! |------------------------------------|--------------------------------------------------------|
//! | 200                                | renews again an interval later (at the interval she says) |
//! | 401 or 404: she knows no such drone (a memory queen that restarted, a drone removed) | registers again at once |
//! | 421 and the leader's address       | renews with the leader at once                         |
//! | anything else, or nothing          | tries the next queen, with a pause that doubles (capped) after each round of them |
//!
//! Each renewal asks the queen to close the connection after answering: renewals are an interval
//! apart, and a connection kept open between them would hold a thread at the queen's front door.

use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::Drone;
use crate::client::{Client, Reply};
use crate::logging::quoted;
use crate::tasks::wire::{Renewal, RenewalAnswer};

/// Limit for one renewal.
const RENEW_TIMEOUT: Duration = Duration::from_secs(2);

/// A renewal goes after the interval times a factor drawn from [MIN_JITTER, MAX_JITTER).
const MIN_JITTER: f64 = 0.7;
const MAX_JITTER: f64 = 0.9;

/// First and longest pause after every queen failed to renew: at most half an interval (so a
/// queen that answers again has her drones back within it), at most this.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Redirects (421) followed in a row before the drone counts it as a failure: a leader that has
/// just changed is followed, a queen pointing at another that points back is not.
const MAX_REDIRECTS: u32 = 2;

/// Longest interval a queen may set; a longer one is taken as this.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// Renews the lease of `drone` (registered with `queens[current]`) every `interval`, with
/// `client` (one that closes its connections), until a queen says she does not know it; returns
/// what she said, and the drone registers again at once.
pub(super) fn renew(
    drone: &Drone,
    client: &Client,
    queens: &[String],
    mut current: usize,
    mut interval: Duration,
) -> String {
    let mut target = queens[current].clone();
    let mut after = None;
    let mut backoff = FIRST_BACKOFF;
    let mut redirects = 0;
    // Tries failed since the last renewal that worked, and queens tried in this round of them.
    let mut failing = false;
    let mut tried = 0;
    let mut next = Instant::now() + jittered(interval);
    loop {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        let started = Instant::now();
        let renewal = Renewal {
            after,
            status: drone.status(),
        };
        let body = serde_json::to_value(&renewal).expect("a renewal serializes");
        let sent = client.bearing(drone.credential()).exchange(
            "POST",
            &target,
            "/lease",
            Some(&body),
            RENEW_TIMEOUT,
        );
        let why = match sent {
            Ok(reply) if (200..300).contains(&reply.status) => {
                match serde_json::from_slice::<RenewalAnswer>(&reply.body) {
                    Ok(answer) => {
                        if failing {
                            info!("renewed this drone's lease with queen {}", quoted(&target));
                        }
                        interval = Duration::try_from_secs_f64(answer.lease_interval)
                            .ok()
                            .filter(|d| !d.is_zero())
                            .map_or(interval, |d| d.min(MAX_INTERVAL));
                        after = Some(answer.renewal);
                        (failing, tried, redirects, backoff) = (false, 0, 0, FIRST_BACKOFF);
                        next = started + jittered(interval);
                        continue;
                    }
                    Err(e) => format!("its answer is not a renewal's ({e})"),
                }
            }
            Ok(reply) if reply.status == 401 || reply.status == 404 => {
                return format!(
                    "queen {} does not know this drone (HTTP {}: {}); registering again",
                    quoted(&target),
                    reply.status,
                    quoted(&reply.said())
                );
            }
            Ok(reply) if reply.status == 421 => match leader(&reply) {
                Some(leader) if leader != target && redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    info!(
                        "queen {} does not lead; renewing this drone's lease with the leader, {}",
                        quoted(&target),
                        quoted(&leader)
                    );
                    target = leader;
                    after = None;
                    next = Instant::now();
                    continue;
                }
                _ => format!("HTTP 421: {}", quoted(&reply.said())),
            },
            Ok(reply) => format!("HTTP {}: {}", reply.status, quoted(&reply.said())),
            Err(e) => e.to_string(),
        };
        if !failing {
            warn!(
                "could not renew this drone's lease with queen {}: {why}; trying its queens until one answers",
                quoted(&target)
            );
            failing = true;
        }
        // The next queen of the list; after a round of them all, a pause.
        current = (current + 1) % queens.len();
        target = queens[current].clone();
        (after, redirects) = (None, 0);
        tried += 1;
        next = Instant::now();
        if tried >= queens.len() {
            tried = 0;
            next += backoff;
            backoff = (backoff * 2)
                .min(MAX_BACKOFF)
                .min(interval / 2)
                .max(FIRST_BACKOFF);
        }
    }
}

/// `interval` times a factor drawn from [MIN_JITTER, MAX_JITTER).
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(MIN_JITTER + (MAX_JITTER - MIN_JITTER) * fastrand::f64())
}

/// The leader a 421 names.
fn leader(reply: &Reply) -> Option<String> {
    let said: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    let leader = said.get("leader")?.as_str()?;
    crate::address::validate(leader).ok()?;
    Some(leader.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_a_tenth_of_an_interval_before_it_is_over() {
        let interval = Duration::from_secs(10);
        for _ in 0..1000 {
            let pause = jittered(interval);
            assert!(
                pause >= Duration::from_secs(7) && pause < Duration::from_secs(9),
                "{pause:?}"
            );
        }
    }

    #[test]
    fn a_421_is_followed_only_to_a_well_formed_address() {
        let reply = |body: &str| Reply {
            status: 421,
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            leader(&reply(r#"{"error": "not me", "leader": "127.0.0.1:7001"}"#)),
            Some("127.0.0.1:7001".into())
        );
        for bad in [
            r#"{"error": "not me"}"#,
            r#"{"leader": "http://evil.example/x#"}"#,
            r#"{"leader": 7}"#,
            "<html>",
        ] {
            assert_eq!(leader(&reply(bad)), None, "{bad}");
        }
    }
}
