//! `--aggregate`: every target at once. Each run writes `--size-mib` to every target at the same
//! time (`--streams` connections each, UNSTABLE writes and one COMMIT per target), then reads it
//! all back at the same time (every byte checked); `sync` runs before each run. The aggregate rate of a run is the bytes of
//! all targets over the slowest target's time; the median of `--repeat` runs is reported. Used by
//! `bench/shards.sh` to measure 1, 2 and 3 shards side by side on one machine.

use std::sync::Arc;

use anyhow::Result;
use futures::future::try_join_all;

use crate::Target;
use crate::workload::{self, Seq};

/// One phase of one run: per-target results and the aggregate MiB/s.
fn aggregate(runs: &[Seq]) -> f64 {
    let bytes: u64 = runs.iter().map(|s| s.bytes).sum();
    let secs = runs.iter().map(|s| s.secs).fold(0.0, f64::max);
    bytes as f64 / (1024.0 * 1024.0) / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(
    targets: &[Target],
    data: &Arc<Vec<u8>>,
    chunk: u32,
    streams: usize,
    repeat: usize,
) -> Result<()> {
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for i in 0..repeat {
        // The previous run's dirty pages written back first, so no run pays for another's.
        let _ = std::process::Command::new("sync").status();
        let w = try_join_all(
            targets
                .iter()
                .map(|t| workload::seq_write(&t.ep, data, chunk, streams)),
        )
        .await?;
        let r = try_join_all(
            targets
                .iter()
                .map(|t| workload::seq_read(&t.ep, data, chunk, streams)),
        )
        .await?;
        let per = |v: &[Seq]| {
            v.iter()
                .map(|s| format!("{:.0}", s.mib_per_sec()))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        println!(
            "run {}: write {:.1} MiB/s ({}), read {:.1} MiB/s ({})",
            i + 1,
            aggregate(&w),
            per(&w),
            aggregate(&r),
            per(&r)
        );
        writes.push(aggregate(&w));
        reads.push(aggregate(&r));
    }
    for t in targets {
        workload::cleanup(&t.ep).await?;
    }
    println!();
    println!("| servers | seq write, aggregate MiB/s | seq read, aggregate MiB/s |");
    println!("|---|---|---|");
    println!(
        "| {} | {:.1} | {:.1} |",
        targets.len(),
        median(writes),
        median(reads)
    );
    Ok(())
}
