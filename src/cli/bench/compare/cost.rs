//! `redcall bench --metrics` and `--otel`: what a metrics recorder and OpenTelemetry export cost, as the throughput
//! of `redcall-metrics` (a Prometheus recorder in every worker) or `redcall-otel` (request spans exported over
//! OTLP/HTTP from every worker) over plain redcall's, each pair from the same round and concurrency (the machine is
//! shared: only measurements taken side by side are compared).

use serde_json::json;

use super::Measurement;
use crate::cli::bench::{System, round};

/// Prints the cost of every measured variant of redcall (`--metrics`, `--otel`); nothing for those not asked for.
pub fn report(measurements: &[Measurement], json: bool) {
    report_one(
        measurements,
        json,
        System::RedcallMetrics,
        "metrics_cost",
        "metrics cost",
    );
    report_one(
        measurements,
        json,
        System::RedcallOtel,
        "otel_cost",
        "OpenTelemetry export cost",
    );
}

/// Prints, per concurrency, each round's ratio `variant / redcall` and their median (JSON: one object per
/// concurrency under `key`, text under `title`); nothing when `variant` was not measured.
fn report_one(measurements: &[Measurement], json: bool, variant: System, key: &str, title: &str) {
    let mut levels: Vec<usize> = measurements
        .iter()
        .filter(|m| m.system == variant)
        .map(|m| m.concurrency)
        .collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.is_empty() {
        return;
    }
    if !json {
        outln!(
            "\n{title} ({} / redcall throughput, same round; 1.00 = free):",
            variant.name()
        );
    }
    for c in levels {
        let mut ratios: Vec<f64> = measurements
            .iter()
            .filter(|m| m.system == variant && m.concurrency == c)
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
            let value = json!({key: {"concurrency": c, "rps_ratio_median": round(median, 3), "rps_ratios": rounds}});
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
