//! The report: every scenario's rows (a measure, its value, the target it is held to and whether
//! this run met it) and notes saying what the numbers mean exactly, kept per scenario so that
//! [`crate::doc`] can write each scenario's section of `docs/benchmarks.md` on its own.

use crate::wrk::Run;

/// Unit conversions for the table.
const KB_PER_MB: f64 = 1024.0;

/// What [`target`] appends to a goal this run met, or missed.
const MET: &str = " (met)";
const MISSED: &str = " (MISSED)";

/// The rows and notes of the scenarios run, in the order they ran.
#[derive(Default)]
pub struct Report {
    pub sections: Vec<Section>,
}

/// One scenario's part of the report.
pub struct Section {
    /// The scenario's label, as in the table's heading (`queen under load`).
    pub label: &'static str,
    pub rows: Vec<Row>,
    /// What a measure means exactly, or what went wrong; without the label they started with.
    pub notes: Vec<String>,
}

/// One line of a scenario's table.
pub struct Row {
    pub measure: String,
    pub value: String,
    /// What the issue asks and whether it was met (see [`target`]), or `-`.
    pub target: String,
}

impl Row {
    /// The goal and `met` or `missed`, as the table's last two columns; empty where there is no
    /// goal.
    pub fn verdict(&self) -> (&str, &str) {
        if let Some(goal) = self.target.strip_suffix(MET) {
            (goal, "met")
        } else if let Some(goal) = self.target.strip_suffix(MISSED) {
            (goal, "**missed**")
        } else if self.target == "-" {
            ("", "")
        } else {
            (&self.target, "")
        }
    }
}

impl Report {
    /// Starts the section of the scenario `label`; the notes from here on are its.
    pub fn begin(&mut self, label: &'static str) {
        self.section(label);
    }

    /// Adds a row to `scenario`'s section; `target` says what the issue asks and whether it was
    /// met ([`target`]), or `-`.
    pub fn row(
        &mut self,
        scenario: &'static str,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
    ) {
        self.section(scenario).rows.push(Row {
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
        });
    }

    /// Two rows for one wrk load over its runs: medians of rate and latency (with the p99 target
    /// in milliseconds, if any), and sums of errors (none is the target).
    pub fn load_rows(
        &mut self,
        scenario: &'static str,
        what: &str,
        runs: &[&Run],
        p99_goal_ms: Option<f64>,
    ) {
        let n = self::runs(runs.len());
        let p99 = median(runs.iter().map(|r| r.p99_ms()));
        self.row(
            scenario,
            format!("{what}: req/s / p50 / p99 / max ms, median of {n}"),
            format!(
                "{:.0} / {} / {} / {}",
                median(runs.iter().map(|r| r.per_sec())),
                ms(median(runs.iter().map(|r| r.p50_ms()))),
                ms(p99),
                ms(median(runs.iter().map(|r| r.max_ms())))
            ),
            p99_goal_ms.map_or("-".to_string(), |goal| {
                target(&format!("p99 ≤ {goal:.0}"), p99 <= goal)
            }),
        );
        let non_2xx: u64 = runs.iter().map(|r| r.non_2xx()).sum();
        let timeouts: u64 = runs.iter().map(|r| r.timeouts()).sum();
        let socket: u64 = runs.iter().map(|r| r.socket_errors()).sum();
        self.row(
            scenario,
            format!("{what}: non-2xx / wrk timeouts / socket errors, sum of {n}"),
            format!("{non_2xx} / {timeouts} / {socket}"),
            target("0 / 0 / -", non_2xx == 0 && timeouts == 0),
        );
    }

    /// Adds a note to the section of the scenario running: what a measure means exactly, or what
    /// went wrong. Notes start with the scenario's label, which the section's heading already
    /// says, so it is left out.
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        let Some(section) = self.sections.last_mut() else {
            return;
        };
        let prefix = format!("{}: ", section.label);
        let text = match text.strip_prefix(&prefix) {
            Some(rest) => rest.to_string(),
            None => text,
        };
        section.notes.push(text);
    }

    /// `label`'s section, started when it has none yet.
    fn section(&mut self, label: &'static str) -> &mut Section {
        let at = match self.sections.iter().position(|s| s.label == label) {
            Some(at) => at,
            None => {
                self.sections.push(Section {
                    label,
                    rows: Vec::new(),
                    notes: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[at]
    }
}

/// A target, followed by whether this run met it.
pub fn target(goal: &str, met: bool) -> String {
    format!("{goal}{}", if met { MET } else { MISSED })
}

/// Milliseconds for the table.
pub fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// Kilobytes (as /proc gives them) in megabytes.
pub fn mb_of(kb: u64) -> f64 {
    kb as f64 / KB_PER_MB
}

/// Kilobytes as megabytes for the table.
pub fn mb(kb: u64) -> String {
    format!("{:.1}", mb_of(kb))
}

/// The median of `values`: the middle one, or the mean of the middle two for an even count. NaN
/// for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => f64::NAN,
        n if n.is_multiple_of(2) => (sorted[middle - 1] + sorted[middle]) / 2.0,
        _ => sorted[middle],
    }
}

/// The `p`-th percentile of `values` (0 < p ≤ 100), by nearest rank: the smallest value that at
/// least p % of them do not exceed. NaN for none.
pub fn percentile(values: impl IntoIterator<Item = f64>, p: f64) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `n` runs in words: `1 run`, `3 runs`.
pub fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_go_to_the_scenario_running_and_rows_to_their_own() {
        let mut report = Report::default();
        report.begin("first");
        report.row("first", "a", "1", target("≤ 2", true));
        report.note("first: what a means");
        report.begin("second");
        report.row("second", "b", "3", target("≤ 2", false));
        report.row("first", "c", "4", "-");
        report.note("an error, said plainly");
        let first = &report.sections[0];
        assert_eq!(first.rows.len(), 2);
        assert_eq!(first.notes, ["what a means"]);
        assert_eq!(first.rows[0].verdict(), ("≤ 2", "met"));
        assert_eq!(first.rows[1].verdict(), ("", ""));
        let second = &report.sections[1];
        assert_eq!(second.rows[0].verdict(), ("≤ 2", "**missed**"));
        assert_eq!(second.notes, ["an error, said plainly"]);
    }

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let values = (1..=200).map(f64::from);
        assert_eq!(percentile(values.clone(), 50.0), 100.0);
        assert_eq!(percentile(values.clone(), 99.0), 198.0);
        assert_eq!(percentile(values, 100.0), 200.0);
        assert_eq!(percentile([7.0], 99.0), 7.0);
        assert!(percentile([], 99.0).is_nan());
    }
}
