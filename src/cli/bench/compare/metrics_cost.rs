//! `redcall bench --metrics`: what a metrics recorder costs, as the throughput of `redcall-metrics` (a Prometheus
//! recorder in every worker) over plain redcall's, each pair from the same round and concurrency (the machine is
//! shared: only measurements taken side by side are compared).

use serde_json::json;

use super::Measurement;
use crate::cli::bench::{System, round};

/// Prints, per concurrency, each round's ratio and their median; nothing when `--metrics` was not asked for.
pub fn report(measurements: &[Measurement], json: bool) {
    let mut levels: Vec<usize> = measurements
        .iter()
        .filter(|m| m.system == System::RedcallMetrics)
        .map(|m| m.concurrency)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.is_empty() {
        return;
    }
    if !json {
        outln!("\nmetrics cost (redcall-metrics / redcall throughput, same round; 1.00 = free):");
    }
    for c in levels {
        let mut ratios: Vec<f64> = measurements
            .iter()
            .filter(|m| m.system == System::RedcallMetrics && m.concurrency == c)
            .filter_map(|with| {
                let without = measurements.iter().find(|m| {
                    m.system == System::Redcall && m.concurrency == c && m.round == with.round
                })?;
                (without.rps() > 0.0).then(|| with.rps() / without.rps())
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
        if json {
            let rounds: Vec<f64> = ratios.iter().map(|r| round(*r, 3)).collect();
            let value = json!({"metrics_cost": {"concurrency": c, "rps_ratio_median": round(median, 3), "rps_ratios": rounds}});
            outln!("{value}");
        } else {
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
            outln!(
                "  concurrency {c}: median {median:.3} (rounds, sorted: {})",
                each.join(", ")
            );
        }
    }
}
