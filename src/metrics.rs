//! What a larve counts, and `GET /metrics`: the counts in Prometheus' text format.
//!
//! The format is a few lines of text per metric (`# HELP`, `# TYPE`, then `name{labels} value`), so
//! it is written by hand rather than with a client library. Every part of a larve that has something
//! to count holds the process's one [`Metrics`] and bumps atomics in it: nothing here takes a lock on
//! the request path. Gauges that describe the registry (drones registered, available) are read from
//! it when `/metrics` is asked for, by the queen, so they can never drift from what `/drones` shows.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::tasks::{AttemptState, State, Task};

/// The endpoints requests are counted by. Anything else is counted as `other`, so a client probing
/// random paths cannot grow the metrics without bound.
const ENDPOINTS: [&str; 9] = [
    "/healthz",
    "/do_task",
    "/submit_task",
    "/register",
    "/drones",
    "/metrics",
    "/tasks",
    "/reports",
    "/lease",
];

/// The statuses a larve answers with (see `error.rs`), each counted apart; anything else is `other`.
const STATUSES: [u16; 17] = [
    200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 417, 429, 431, 500, 502, 503, 505,
];

/// Bucket bounds of the submit latency histogram, in seconds: from a fast loopback hand-off (under
/// a millisecond) to the task timeout and past it (a submit that tried several drones).
const SUBMIT_BUCKETS_SECS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of the scheduling latency histogram, in seconds: from a placement in the same
/// millisecond to a queue that waited minutes for free slots.
const SCHEDULING_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
];

/// The task state changes there are, as `/metrics` names them: `created` is a task's first.
const TRANSITIONS: [(&str, State); 7] = [
    ("created", State::Pending),
    ("pending", State::Running),
    ("pending", State::Cancelled),
    ("running", State::Pending),
    ("running", State::Succeeded),
    ("running", State::Failed),
    ("running", State::Cancelled),
];

/// Bucket bounds of the probe histogram, in seconds: a probe of a live drone takes a millisecond;
/// one of a dead or frozen drone takes attempts × (timeout + retry delay), seconds.
const PROBE_BUCKETS_SECS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A count that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How long something took, in fixed buckets: Prometheus computes quantiles from them.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; the `+Inf` bucket is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; the text output sums them), one more than bounds.
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Everything a larve counts. One per process, shared with `Arc` by the front door, the server and
/// the role's threads.
#[derive(Debug)]
pub struct Metrics {
    /// Answers by endpoint (index in `ENDPOINTS`, or the last for `other`) and status (index in
    /// `STATUSES`, or the last for `other`).
    requests: Vec<Vec<AtomicU64>>,
    /// Time from a submit's arrival at the queen (a valid one: malformed bodies and a missing token
    /// are answered before) to her answer, whatever the answer.
    pub submit_latency: Histogram,
    /// Tasks a drone confirmed.
    pub tasks_placed: Counter,
    /// Tries to hand a task to a drone that failed (the task then went to another drone, or failed).
    pub task_tries_failed: Counter,
    /// Tasks placed on a drone after a first try on another one failed.
    pub tasks_retried_elsewhere: Counter,
    /// Tasks no drone confirmed (answered 502).
    pub tasks_failed: Counter,
    /// Registrations that added a drone (not re-registrations of a known one).
    pub drones_registered: Counter,
    /// Drones liveness removed.
    pub drones_removed: Counter,
    /// Lease renewals this queen took (as the leader).
    pub leases_renewed: Counter,
    /// Leases found late (no sign of life for an interval), each then probed.
    pub leases_late: Counter,
    /// Probe tries started, of due drones and re-checks alike.
    pub probes: Counter,
    /// Probe tries that failed, of due drones and re-checks alike.
    pub probes_failed: Counter,
    /// Out-of-band probes of drones that failed a task.
    pub rechecks: Counter,
    /// How long each probe of a due drone took, from its first try to its verdict.
    pub probe_duration: Histogram,
    /// Time from a task's creation to its first placement.
    pub scheduling_latency: Histogram,
    /// Task state changes this queen wrote, by index in `TRANSITIONS`.
    transitions: Vec<Counter>,
    /// Attempt ends this queen recorded, by index in `AttemptState::ENDED`.
    attempts_ended: Vec<Counter>,
    /// Client connections the front door holds now (see `front/`).
    pub front_connections_open: Gauge,
    /// Connections refused because the larve held `--max-connections` already.
    front_refused_total_limit: Counter,
    /// Connections refused because their address held `--max-connections-per-peer` already.
    front_refused_peer_limit: Counter,
    /// Connections closed because a request head passed the head limit.
    pub front_heads_too_large: Counter,
    /// Requests refused (413) because their body passed its path's limit.
    pub front_bodies_refused: Counter,
    /// TLS connections whose handshake failed or did not finish in time.
    pub front_tls_handshakes_failed: Counter,
    /// Held requests (answers that wait or stream) the front serves now (see `front/held.rs`).
    pub front_held: Gauge,
    /// Held requests refused (503) because the larve held as many as it serves at once.
    pub front_held_refused: Counter,
    /// Streamed answers cut off because the client did not read a piece in time.
    pub front_held_cut: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let row = || (0..=STATUSES.len()).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            requests: (0..=ENDPOINTS.len()).map(|_| row()).collect(),
            submit_latency: Histogram::new(SUBMIT_BUCKETS_SECS),
            tasks_placed: Counter::default(),
            task_tries_failed: Counter::default(),
            tasks_retried_elsewhere: Counter::default(),
            tasks_failed: Counter::default(),
            drones_registered: Counter::default(),
            drones_removed: Counter::default(),
            leases_renewed: Counter::default(),
            leases_late: Counter::default(),
            probes: Counter::default(),
            probes_failed: Counter::default(),
            rechecks: Counter::default(),
            probe_duration: Histogram::new(PROBE_BUCKETS_SECS),
            scheduling_latency: Histogram::new(SCHEDULING_BUCKETS_SECS),
            transitions: TRANSITIONS.iter().map(|_| Counter::default()).collect(),
            attempts_ended: AttemptState::ENDED
                .iter()
                .map(|_| Counter::default())
                .collect(),
            front_connections_open: Gauge::default(),
            front_refused_total_limit: Counter::default(),
            front_refused_peer_limit: Counter::default(),
            front_heads_too_large: Counter::default(),
            front_bodies_refused: Counter::default(),
            front_tls_handshakes_failed: Counter::default(),
            front_held: Gauge::default(),
            front_held_refused: Counter::default(),
            front_held_cut: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts one answer to a request for `path`.
    pub fn request(&self, path: &str, status: u16) {
        // `/tasks/ID` and `/drones/NAME/drain` count under their collection.
        let collection = match path.split('/').nth(1) {
            Some(first @ ("tasks" | "drones")) => &path[..first.len() + 1],
            _ => path,
        };
        let endpoint = ENDPOINTS
            .iter()
            .position(|&known| known == collection)
            .unwrap_or(ENDPOINTS.len());
        let status = STATUSES
            .iter()
            .position(|&known| known == status)
            .unwrap_or(STATUSES.len());
        self.requests[endpoint][status].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task state change this queen wrote: from `from` (`None`: the task was created) to
    /// `to`. A change that keeps the state (a cancel asked for while it runs) is not one.
    pub fn task_transition(&self, from: Option<State>, to: State) {
        let from = from.map_or("created", State::as_str);
        if let Some(i) = TRANSITIONS.iter().position(|&(f, t)| f == from && t == to) {
            self.transitions[i].inc();
        }
    }

    /// Counts the end of `task`'s attempt `id`, as this queen just recorded it.
    pub fn attempt_ended(&self, task: &Task, id: &str) {
        let Some(attempt) = task.attempt(id) else {
            return;
        };
        if let Some(i) = AttemptState::ENDED.iter().position(|s| *s == attempt.state) {
            self.attempts_ended[i].inc();
        }
    }

    /// The tasks' metrics: how many are in each state now (`counts`, in `State::ALL` order), the
    /// changes this queen made, and how long tasks waited to be placed.
    pub fn render_tasks(&self, out: &mut Exposition, counts: [usize; 5]) {
        out.family(
            "hive_tasks",
            "gauge",
            "Tasks in each state now (pending is the queue's depth).",
        );
        for (state, count) in State::ALL.iter().zip(counts) {
            out.sample("hive_tasks", &[("state", state.as_str())], count as f64);
        }
        out.family(
            "hive_task_transitions_total",
            "counter",
            "Task state changes this queen wrote, by from and to state (from created: new tasks).",
        );
        for ((from, to), counter) in TRANSITIONS.iter().zip(&self.transitions) {
            out.sample(
                "hive_task_transitions_total",
                &[("from", from), ("to", to.as_str())],
                counter.get() as f64,
            );
        }
        out.family(
            "hive_attempts_ended_total",
            "counter",
            "Attempt ends this queen recorded, by how they ended (oom_killed: over their memory).",
        );
        for (state, counter) in AttemptState::ENDED.iter().zip(&self.attempts_ended) {
            out.sample(
                "hive_attempts_ended_total",
                &[("state", state.as_str())],
                counter.get() as f64,
            );
        }
        out.histogram(
            "hive_task_scheduling_seconds",
            "Time from a task's creation to its first placement on a drone.",
            &self.scheduling_latency,
        );
    }

    /// Counts a connection refused by a cap: the per-peer one, or the total.
    pub fn front_refused(&self, peer_limit: bool) {
        if peer_limit {
            self.front_refused_peer_limit.inc();
        } else {
            self.front_refused_total_limit.inc();
        }
    }

    /// The metrics every larve has, as Prometheus text.
    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "hive_http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status.",
        );
        for (e, row) in self.requests.iter().enumerate() {
            let endpoint = ENDPOINTS.get(e).copied().unwrap_or("other");
            for (s, count) in row.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(s)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                out.sample(
                    "hive_http_requests_total",
                    &[("endpoint", endpoint), ("status", &status)],
                    count as f64,
                );
            }
        }
        out.gauge(
            "hive_front_connections_open",
            "Client connections the front door holds now.",
            self.front_connections_open.get() as f64,
        );
        out.family(
            "hive_front_connections_refused_total",
            "counter",
            "Connections refused at once because a connection limit was reached, by limit.",
        );
        for (limit, counter) in [
            ("total", &self.front_refused_total_limit),
            ("peer", &self.front_refused_peer_limit),
        ] {
            out.sample(
                "hive_front_connections_refused_total",
                &[("limit", limit)],
                counter.get() as f64,
            );
        }
        for (name, help, counter) in [
            (
                "hive_front_heads_too_large_total",
                "Connections closed because a request head passed the head limit (answered 431).",
                &self.front_heads_too_large,
            ),
            (
                "hive_front_bodies_refused_total",
                "Requests whose body passed its path's limit (answered 413, never read).",
                &self.front_bodies_refused,
            ),
            (
                "hive_front_tls_handshakes_failed_total",
                "TLS connections whose handshake failed or did not finish in time.",
                &self.front_tls_handshakes_failed,
            ),
        ] {
            out.counter(name, help, counter.get());
        }
        out.gauge(
            "hive_front_held_requests",
            "Held requests (answers that wait or stream) the front serves now.",
            self.front_held.get() as f64,
        );
        for (name, help, counter) in [
            (
                "hive_front_held_refused_total",
                "Held requests refused (503) because the larve served as many as it takes at once.",
                &self.front_held_refused,
            ),
            (
                "hive_front_held_cut_total",
                "Streamed answers cut off because the client did not read a piece in time.",
                &self.front_held_cut,
            ),
        ] {
            out.counter(name, help, counter.get());
        }
    }

    /// The metrics only a queen has. `registered` and `available` are read from her registry.
    pub fn render_queen(&self, out: &mut Exposition, registered: usize, available: usize) {
        out.gauge("hive_drones", "Drones registered now.", registered as f64);
        out.gauge(
            "hive_drones_available",
            "Drones registered now that take tasks (not out of rotation).",
            available as f64,
        );
        for (name, help, counter) in [
            (
                "hive_drones_registered_total",
                "Registrations that added a drone.",
                &self.drones_registered,
            ),
            (
                "hive_drones_removed_total",
                "Drones removed for failing every try of a probe.",
                &self.drones_removed,
            ),
            (
                "hive_leases_renewed_total",
                "Lease renewals this queen took, as the leader.",
                &self.leases_renewed,
            ),
            (
                "hive_leases_late_total",
                "Leases found late (no sign of life for an interval), each then probed.",
                &self.leases_late,
            ),
            (
                "hive_probes_total",
                "Probe tries started, of due drones and re-checks.",
                &self.probes,
            ),
            (
                "hive_tasks_placed_total",
                "Tasks a drone confirmed.",
                &self.tasks_placed,
            ),
            (
                "hive_tasks_retried_elsewhere_total",
                "Tasks placed on a drone after a try on another drone failed.",
                &self.tasks_retried_elsewhere,
            ),
            (
                "hive_tasks_failed_total",
                "Tasks no drone confirmed (answered 502).",
                &self.tasks_failed,
            ),
            (
                "hive_task_tries_failed_total",
                "Tries to hand a task to a drone that failed.",
                &self.task_tries_failed,
            ),
            (
                "hive_probes_failed_total",
                "Probe tries that failed, of due drones and re-checks.",
                &self.probes_failed,
            ),
            (
                "hive_rechecks_total",
                "Out-of-band probes of drones that failed a task.",
                &self.rechecks,
            ),
        ] {
            out.counter(name, help, counter.get());
        }
        out.histogram(
            "hive_submit_duration_seconds",
            "Time from a submit's arrival to the queen's answer.",
            &self.submit_latency,
        );
        out.histogram(
            "hive_probe_duration_seconds",
            "How long each probe of a due drone took, from its first try to its verdict.",
            &self.probe_duration,
        );
    }
}

/// Prometheus text being written: the body of a `/metrics` answer.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// The text, ready to send.
    pub fn finish(self) -> String {
        self.text
    }

    /// The `# HELP` and `# TYPE` lines that open a metric family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line. Label values here are Hive's own constants, never user input, so they need
    /// no escaping.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{value}\""))
                .collect();
            let _ = write!(self.text, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in histogram.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = histogram
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), f64::to_string);
            self.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_known_endpoint_and_status_only() {
        let metrics = Metrics::default();
        metrics.request("/submit_task", 200);
        metrics.request("/submit_task", 200);
        metrics.request("/nope/../x", 404);
        metrics.request("/healthz", 299);
        let mut out = Exposition::default();
        metrics.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains("hive_http_requests_total{endpoint=\"/submit_task\",status=\"200\"} 2\n")
        );
        assert!(text.contains("hive_http_requests_total{endpoint=\"other\",status=\"404\"} 1\n"));
        assert!(
            text.contains("hive_http_requests_total{endpoint=\"/healthz\",status=\"other\"} 1\n")
        );
        assert!(!text.contains("/nope"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let metrics = Metrics::default();
        metrics.submit_latency.observe(Duration::from_micros(300));
        metrics.submit_latency.observe(Duration::from_millis(3));
        metrics.submit_latency.observe(Duration::from_secs(60));
        let mut out = Exposition::default();
        metrics.render_queen(&mut out, 2, 1);
        let text = out.finish();
        for line in [
            "hive_submit_duration_seconds_bucket{le=\"0.0005\"} 1",
            "hive_submit_duration_seconds_bucket{le=\"0.005\"} 2",
            "hive_submit_duration_seconds_bucket{le=\"10\"} 2",
            "hive_submit_duration_seconds_bucket{le=\"+Inf\"} 3",
            "hive_submit_duration_seconds_count 3",
            "hive_drones 2",
            "hive_drones_available 1",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
    }
}
