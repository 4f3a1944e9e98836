//! The report on stdout: a machine line, a run line, one markdown table of every number with the
//! target it is held to, and notes saying what the numbers mean exactly.

use std::fs;
use std::thread;

use crate::wrk::Run;

/// Unit conversions for the table.
const KB_PER_MB: f64 = 1024.0;

/// The table's rows and the notes under it.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// One line of the table.
struct Row {
    scenario: &'static str,
    metric: String,
    value: String,
    target: String,
}

impl Report {
    /// Adds a row; `target` says what the issue asks and whether it was met, or `-`.
    pub fn row(
        &mut self,
        scenario: &'static str,
        metric: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
    ) {
        self.rows.push(Row {
            scenario,
            metric: metric.into(),
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

    /// Adds a note under the table: what a metric means exactly, or what went wrong.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The machine line, `run` (what kind of run this was), the table (scenarios in order, each
    /// one's rows as measured), and the notes.
    pub fn print(&mut self, run: &str) {
        // Scenario labels and notes start with the scenario's number: sorted by that number (not
        // as text, where 10 comes before 2), each scenario's rows stay together, in the order
        // they were added.
        self.rows.sort_by_key(|row| number(row.scenario));
        self.notes
            .sort_by(|a, b| number(a).cmp(&number(b)).then(a.cmp(b)));
        let mut out = String::new();
        out.push_str(&format!("machine: {}\n", machine()));
        out.push_str(&format!("run: {run}\n\n"));
        out.push_str("| scenario | metric | value | target |\n|---|---|---|---|\n");
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.scenario,
                cell(&row.metric),
                cell(&row.value),
                cell(&row.target)
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in &self.notes {
                out.push_str(&format!("- {note}\n"));
            }
        }
        print!("{out}");
    }
}

/// The number a scenario's label (or a note about it) starts with; text without one goes last.
fn number(text: &str) -> usize {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(usize::MAX)
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A target, followed by whether this run met it.
pub fn target(goal: &str, met: bool) -> String {
    format!("{goal} ({})", if met { "met" } else { "MISSED" })
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

/// The CPU model and how many cores this process may use, for the table's header.
fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores (nproc)")
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
    fn rows_and_notes_follow_the_scenario_numbers_not_their_text() {
        let mut report = Report::default();
        report.row("10. tenth", "a", "1", "-");
        report.row("2. second", "b", "2", "-");
        report.row("10. tenth", "c", "3", "-");
        report.note("10. tenth: z");
        report.note("2. second: y");
        report.print("test");
        let order: Vec<&str> = report.rows.iter().map(|row| row.metric.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert_eq!(report.notes, ["2. second: y", "10. tenth: z"]);
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
