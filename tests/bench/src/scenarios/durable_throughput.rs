//! Durable store, task throughput: task throughput's hive (one queen, 4 drones of 8 slots, 8 client
//! threads, `true` tasks) with the memory store and with a data dir, one after the other in the
//! same run. Every task's life is three durable writes there (created, placed, ended), each shared
//! with the others queued at the same time.

use super::Bench;
use super::task_throughput::{CLIENTS, DRONES, SLOTS, add_hive_rows, batch, one_queen_hive};
use crate::report::{Report, target};
use crate::{Result, progress};

pub const LABEL: &str = "durable store: task throughput";

/// The target: the data dir's tasks/s ÷ the memory store's.
const RATIO_TARGET: f64 = 0.8;

/// Runs both hives and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let n = bench.plan.throughput_tasks;
    let memory = one_queen_hive(bench, "dur-memory", &[], n)?;
    progress(&format!(
        "memory store: {n} tasks in {:.2} s ({:.0}/s)",
        memory.secs,
        memory.rate()
    ));
    let dir = bench.dir.join("durable-throughput.data");
    let args = ["--data-dir".to_string(), dir.display().to_string()];
    let durable = one_queen_hive(bench, "dur-data-dir", &args, n)?;
    progress(&format!(
        "data dir: {n} tasks in {:.2} s ({:.0}/s)",
        durable.secs,
        durable.rate()
    ));
    let shape = format!("1 queen, {DRONES} drones × {SLOTS} slots, {CLIENTS} clients");
    add_hive_rows(
        report,
        LABEL,
        &format!("memory store ({shape})"),
        &memory,
        n,
    );
    add_hive_rows(report, LABEL, &format!("data dir ({shape})"), &durable, n);
    let ratio = durable.rate() / memory.rate();
    report.row(
        LABEL,
        "data dir tasks/s ÷ memory store tasks/s",
        format!("{ratio:.2}"),
        target(&format!("≥ {RATIO_TARGET}"), ratio >= RATIO_TARGET),
    );
    report.note(format!(
        "{LABEL}: task throughput's memory hive, then the same with its queen started with \
         `--data-dir DIR` too; every task is POST /tasks {} and the time runs from just before the \
         first submit to the last end the queen recorded (see task throughput's note)",
        batch("dur-data-dir").example()
    ));
    Ok(())
}
