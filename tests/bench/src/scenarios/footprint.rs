//! Footprint: an idle queen and an idle drone. A queen holding a fleet is measured in
//! the fleet scenarios.

use std::time::Duration;

use hive_support::procfs::sample_for;

use super::Bench;
use crate::Result;
use crate::report::{Report, mb};

pub const LABEL: &str = "footprint";

/// The performance issue's target for a queen holding a thousand drones (several queens reads it).
pub const QUEEN_RSS_MB_TARGET: f64 = 64.0;

/// Window over which an idle queen or drone is sampled; nothing happens in it but its own timers.
const IDLE_WINDOW: Duration = Duration::from_millis(500);

/// Samples an idle queen, then an idle drone, and adds the rows.
pub fn run(bench: &Bench, report: &mut Report) -> Result<()> {
    let queen = bench.queen("footprint-queen", &[])?;
    let idle_queen = sample_for(queen.pid(), IDLE_WINDOW);
    let drones = bench.drones(&queen, "footprint-drone", 1)?;
    let idle_drone = sample_for(drones[0].pid(), IDLE_WINDOW);
    for (what, peak) in [
        ("idle queen (no drones)", idle_queen),
        ("idle drone (registered)", idle_drone),
    ] {
        report.row(LABEL, format!("{what}: RSS MB"), mb(peak.rss_kb), "-");
        report.row(
            LABEL,
            format!("{what}: threads"),
            peak.max_threads.to_string(),
            "-",
        );
    }
    Ok(())
}
