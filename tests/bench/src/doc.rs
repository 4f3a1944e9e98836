//! `docs/benchmarks.md`, as the bench writes it: a header saying on what machine and at what
//! commit the latest run measured, then one section per scenario, each with its own table and
//! notes and the date it was measured.
//!
//! A section starts at its marker line, `<!-- bench: NAME -->`, and runs to the next marker or
//! the end of the file. A run rewrites the header and the sections of the scenarios it ran, and
//! keeps the others as they were, so `--only NAME` updates NAME's numbers alone. Sections are
//! written in the order the scenarios run; a section of a scenario the bench no longer has is
//! dropped.

use std::fs;
use std::path::Path;

use crate::machine::Machine;
use crate::report::{Report, Section};
use crate::{Result, progress};

/// The line that starts a section, before the scenario's name.
const MARKER_START: &str = "<!-- bench: ";
const MARKER_END: &str = " -->";

/// What one run was: where, when, at what commit, and what kind of run.
pub struct Run {
    pub machine: Machine,
    /// When the run started (`2026-12-06 15:40 UTC`).
    pub date: String,
    /// The commit measured, as `scripts/bench.sh` gives it.
    pub commit: String,
    /// `full length`, or `--quick` with what that means.
    pub kind: String,
    /// The scenarios picked with `--only`, or `None` for all of them.
    pub only: Option<Vec<String>>,
}

/// The whole document for `report` alone: the header and this run's sections.
pub fn render(run: &Run, report: &Report, name: impl Fn(&str) -> String) -> String {
    let mut out = header(run);
    for section in &report.sections {
        out.push_str(&section_text(run, section, &name(section.label)));
    }
    out
}

/// Writes `report` into the document at `path`: a new header, this run's sections in place of
/// theirs, and the other sections of `order` (every scenario's name, in the order they run) kept
/// from the file as it was.
pub fn update(
    path: &Path,
    run: &Run,
    report: &Report,
    name: impl Fn(&str) -> String,
    order: &[String],
) -> Result<()> {
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut sections = sections(&old);
    for section in &report.sections {
        let name = name(section.label);
        let text = section_text(run, section, &name);
        match sections.iter_mut().find(|(kept, _)| *kept == name) {
            Some(kept) => kept.1 = text,
            None => sections.push((name, text)),
        }
    }
    for (name, _) in sections.iter().filter(|(name, _)| !order.contains(name)) {
        progress(&format!(
            "{}: section {name} dropped (no such scenario)",
            path.display()
        ));
    }
    let mut out = header(run);
    for name in order {
        if let Some((_, text)) = sections.iter().find(|(kept, _)| kept == name) {
            out.push_str(text);
        }
    }
    // Written beside and then moved, so an interrupted write never leaves half a document.
    let part = path.with_extension("md.part");
    fs::write(&part, out).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    fs::rename(&part, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    progress(&format!("wrote {}", path.display()));
    Ok(())
}

/// The document's header: what it is, how it is written, and the latest run.
fn header(run: &Run) -> String {
    let picked = match &run.only {
        Some(only) => format!("`--only {}`", only.join(",")),
        None => "every scenario".to_string(),
    };
    format!(
        "# Benchmarks\n\
         \n\
         Written by `scripts/bench.sh`, which runs the scenarios of the hive-bench crate \
         (`tests/bench/src/scenarios/`). A run rewrites this header and the sections of the \
         scenarios it ran (`scripts/bench.sh --only NAME`: NAME's alone) and keeps the others; \
         each section says when and at which commit it was measured.\n\
         \n\
         The machines are shared and noisy: the numbers are medians, and ratios of two sides \
         measured in the same run. Compare within a section, not across sections.\n\
         \n\
         - Machine of the latest run: {}\n\
         - Latest run: {}, commit {}, {}, {picked}\n",
        run.machine.describe(),
        run.date,
        run.commit,
        run.kind
    )
}

/// One scenario's section: its marker, heading, when it was measured, its table and its notes.
fn section_text(run: &Run, section: &Section, name: &str) -> String {
    let mut out = format!(
        "\n{MARKER_START}{name}{MARKER_END}\n## {}\n\nMeasured {} at commit {}, {}; again with \
         `scripts/bench.sh --only {name}`.\n\n",
        heading(section.label),
        run.date,
        run.commit,
        run.kind
    );
    out.push_str("| measure | value | target | met |\n|---|---|---|---|\n");
    for row in &section.rows {
        let (goal, verdict) = row.verdict();
        out.push_str(&format!(
            "| {} | {} | {} | {verdict} |\n",
            cell(&row.measure),
            cell(&row.value),
            cell(goal)
        ));
    }
    if !section.notes.is_empty() {
        out.push('\n');
        for note in &section.notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out
}

/// The sections of `document` by name, in its order, each from its marker to the next.
fn sections(document: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in document.split_inclusive('\n') {
        let marked = line
            .trim_end()
            .strip_prefix(MARKER_START)
            .and_then(|rest| rest.strip_suffix(MARKER_END));
        match (marked, sections.last_mut()) {
            // The blank line before a marker belongs to the section it starts.
            (Some(name), _) => sections.push((name.to_string(), format!("\n{line}"))),
            (None, Some((_, text))) => text.push_str(line),
            (None, None) => {}
        }
    }
    for (_, text) in &mut sections {
        // Keep one newline at a section's end, so the blank line before the next marker is not
        // doubled by every update.
        let trimmed = text.trim_end_matches('\n').len();
        text.truncate(trimmed);
        text.push('\n');
    }
    sections
}

/// A label as a heading: its first letter in capitals (`Durable store: recovery`).
fn heading(label: &str) -> String {
    let mut chars = label.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::target;

    fn run(commit: &str, only: Option<&[&str]>) -> Run {
        Run {
            machine: Machine {
                cpu: "Some CPU".into(),
                cores: 2,
                kernel: "6.1.0".into(),
                memory_gib: 7.8,
            },
            date: "2026-12-06 15:40 UTC".into(),
            commit: commit.into(),
            kind: "full length".into(),
            only: only.map(|only| only.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn report(labels: &[&'static str], value: &str) -> Report {
        let mut report = Report::default();
        for label in labels {
            report.begin(label);
            report.row(label, "rate | req/s", value, target("≥ 10", true));
            report.note(format!("{label}: what the rate means"));
        }
        report
    }

    fn name(label: &str) -> String {
        label.replace(' ', "-")
    }

    #[test]
    fn an_only_run_replaces_its_section_and_keeps_the_others() {
        let dir = std::env::temp_dir().join(format!("hive-bench-doc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("benchmarks.md");
        let order = ["one", "two", "three"].map(String::from);

        update(
            &path,
            &run("aaaaaaa", None),
            &report(&["one", "two"], "11"),
            name,
            &order,
        )
        .unwrap();
        let only = run("bbbbbbb", Some(&["three", "one"]));
        update(&path, &only, &report(&["three", "one"], "22"), name, &order).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();

        assert!(text.contains("commit bbbbbbb, full length, `--only three,one`"));
        let kept = sections(&text);
        let names: Vec<&str> = kept.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert!(kept[0].1.contains("at commit bbbbbbb") && kept[0].1.contains("| 22 |"));
        assert!(kept[1].1.contains("at commit aaaaaaa") && kept[1].1.contains("| 11 |"));
        assert!(kept[2].1.contains("| rate \\| req/s | 22 | ≥ 10 | met |"));
        assert!(kept[2].1.contains("\n- what the rate means\n"));
        assert_eq!(text.matches("\n\n<!-- bench: ").count(), 3);
        assert!(!text.contains("\n\n\n"));
    }

    #[test]
    fn sections_of_scenarios_gone_are_dropped() {
        let document =
            "# Benchmarks\n\n<!-- bench: gone -->\n## gone\n\n<!-- bench: one -->\n## one\n";
        let names: Vec<String> = sections(document).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["gone", "one"]);
        let dir = std::env::temp_dir().join(format!("hive-bench-gone-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("benchmarks.md");
        fs::write(&path, document).unwrap();
        let order = ["one".to_string()];
        update(
            &path,
            &run("ccccccc", None),
            &Report::default(),
            name,
            &order,
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(!text.contains("gone") && text.contains("<!-- bench: one -->\n## one\n"));
    }

    #[test]
    fn headings_start_with_a_capital() {
        assert_eq!(
            heading("durable store: recovery"),
            "Durable store: recovery"
        );
        assert_eq!(heading(""), "");
    }
}
