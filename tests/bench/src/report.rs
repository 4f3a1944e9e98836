//! The report on stdout: a machine line, a run line, one markdown table of every number with the
//! target it is held to, and notes saying what the numbers mean exactly.

use std::fs;
use std::thread;

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

    /// Adds a note under the table: what a metric means exactly, or what went wrong.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The machine line, `run` (what kind of run this was), the table (scenarios in order, each
    /// one's rows as measured), and the notes.
    pub fn print(&mut self, run: &str) {
        // Scenario labels start with their number, so each scenario's rows stay together in order.
        self.rows.sort_by_key(|row| row.scenario);
        self.notes.sort();
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

/// `n` runs in words: `1 run`, `3 runs`.
pub fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}
