//! The redcall/baseline ratios of a comparison, against their targets.

use serde_json::{Value, json};

use super::Measurement;
use crate::cli::bench::System;
use crate::cli::bench::round;

/// Target: redcall's throughput at high concurrency is at least this share of the baseline's.
pub const RPS_RATIO_TARGET: f64 = 0.6;
/// Target: redcall's median latency at concurrency 1 is at most this multiple of the baseline's.
pub const P50_RATIO_TARGET: f64 = 1.3;

/// The redcall/baseline ratios: throughput at the highest concurrency measured by both (512 by default),
/// median latency at concurrency 1. Each ratio compares measurements of the same round (taken minutes apart at
/// most, so a shared machine's changing load hits both systems alike); with several rounds the median is used.
pub struct Ratios {
    /// (concurrency, redcall rps / baseline rps per round).
    pub rps: Option<(usize, Vec<f64>)>,
    /// redcall p50 / baseline p50 at concurrency 1, per round.
    pub p50: Vec<f64>,
    /// redcall / baseline CPU time of all processes per request, at the throughput ratio's concurrency, per round.
    pub cpu: Vec<f64>,
    /// Failed calls in the whole run, per system (redcall, baseline). The ratios count successful calls only, so
    /// with any failure no target counts as met.
    pub errors: (u64, u64),
}

impl Ratios {
    /// Computes the ratios from the measurements of one run.
    pub fn of(measurements: &[Measurement]) -> Self {
        let find = |system: System, concurrency: usize, round: usize| {
            measurements
                .iter()
                .find(|m| m.system == system && m.concurrency == concurrency && m.round == round)
        };
        let rounds: Vec<usize> = {
            let mut r: Vec<usize> = measurements.iter().map(|m| m.round).collect();
            r.dedup();
            r
        };
        let both = |c: usize, round: usize| {
            Some((
                find(System::Redcall, c, round)?,
                find(System::Baseline, c, round)?,
            ))
        };
        let top = measurements
            .iter()
            .filter(|m| m.concurrency > 1)
            .map(|m| m.concurrency)
            .filter(|&c| rounds.iter().any(|&r| both(c, r).is_some()))
            .max();
        let rps = top.map(|c| {
            let ratios = rounds
                .iter()
                .filter_map(|&r| both(c, r))
                .filter(|(_, b)| b.rps() > 0.0)
                .map(|(r, b)| r.rps() / b.rps())
                .collect();
            (c, ratios)
        });
        let cpu = top
            .map(|c| {
                rounds
                    .iter()
                    .filter_map(|&r| both(c, r))
                    .filter(|(_, b)| b.total_cpu_us_per_request() > 0.0)
                    .map(|(r, b)| r.total_cpu_us_per_request() / b.total_cpu_us_per_request())
                    .collect()
            })
            .unwrap_or_default();
        let p50 = rounds
            .iter()
            .filter_map(|&r| both(1, r))
            .filter(|(_, b)| b.latency_us(0.5) > 0)
            .map(|(r, b)| r.latency_us(0.5) as f64 / b.latency_us(0.5) as f64)
            .collect();
        let errors_of = |system: System| {
            measurements
                .iter()
                .filter(|m| m.system == system)
                .map(|m| m.errors)
                .sum()
        };
        Ratios {
            rps,
            p50,
            cpu,
            errors: (errors_of(System::Redcall), errors_of(System::Baseline)),
        }
    }

    /// Whether every call of the run succeeded; a target is met only then.
    pub fn no_errors(&self) -> bool {
        self.errors == (0, 0)
    }

    /// Whether the throughput target is met (false when not measured).
    pub fn rps_met(&self) -> bool {
        self.no_errors()
            && self
                .rps_median()
                .is_some_and(|(_, r)| r >= RPS_RATIO_TARGET)
    }

    /// Whether the latency target is met (false when not measured).
    pub fn p50_met(&self) -> bool {
        self.no_errors() && self.p50_median().is_some_and(|r| r <= P50_RATIO_TARGET)
    }

    /// The median throughput ratio and its concurrency.
    pub fn rps_median(&self) -> Option<(usize, f64)> {
        let (c, ratios) = self.rps.as_ref()?;
        Some((*c, median(ratios)?))
    }

    /// The median p50 ratio.
    pub fn p50_median(&self) -> Option<f64> {
        median(&self.p50)
    }

    /// The summary JSON object.
    pub fn to_json(&self) -> Value {
        let rps = self.rps_median();
        let p50 = self.p50_median();
        let all = |v: &[f64]| v.iter().map(|r| round(*r, 3)).collect::<Vec<f64>>();
        json!({
            "kind": "summary",
            "rps_ratio": rps.map(|(_, r)| round(r, 3)),
            "rps_ratio_concurrency": rps.map(|(c, _)| c),
            "rps_ratio_rounds": self.rps.as_ref().map(|(_, v)| all(v)),
            "rps_ratio_target": RPS_RATIO_TARGET,
            "rps_ratio_met": rps.map(|_| self.rps_met()),
            "p50_ratio": p50.map(|r| round(r, 3)),
            "p50_ratio_concurrency": 1,
            "p50_ratio_rounds": all(&self.p50),
            "p50_ratio_target": P50_RATIO_TARGET,
            "p50_ratio_met": p50.map(|_| self.p50_met()),
            "errors": { "redcall": self.errors.0, "baseline": self.errors.1 },
            "cpu_per_request_ratio": median(&self.cpu).map(|r| round(r, 3)),
            "cpu_per_request_ratio_rounds": all(&self.cpu),
        })
    }

    /// The summary for people.
    pub fn to_text(&self) -> String {
        let verdict = |met: bool| match (met, self.no_errors()) {
            (true, _) => "met",
            (false, true) => "NOT met",
            (false, false) => "NOT met: calls failed",
        };
        let rounds = |v: &[f64]| {
            if v.len() > 1 {
                let list: Vec<String> = v.iter().map(|r| format!("{r:.2}")).collect();
                format!(" [median of rounds: {}]", list.join(", "))
            } else {
                String::new()
            }
        };
        let rps = match (self.rps_median(), &self.rps) {
            (Some((c, r)), Some((_, all))) => format!(
                "throughput redcall/baseline at concurrency {c}: {r:.2}{} (target ≥ {RPS_RATIO_TARGET}: {})",
                rounds(all),
                verdict(self.rps_met())
            ),
            _ => "throughput ratio: not measured (needs both systems at a concurrency above 1)"
                .into(),
        };
        let p50 = match self.p50_median() {
            Some(r) => format!(
                "p50 latency redcall/baseline at concurrency 1: {r:.2}{} (target ≤ {P50_RATIO_TARGET}: {})",
                rounds(&self.p50),
                verdict(self.p50_met())
            ),
            None => "p50 ratio: not measured (needs both systems at concurrency 1)".into(),
        };
        let cpu = match (median(&self.cpu), self.rps.as_ref()) {
            (Some(r), Some((c, _))) => format!(
                "\nCPU time of all processes per request, redcall/baseline at concurrency {c}: {r:.2}{} (what \
                 bounds the throughput ratio when the machine is saturated)",
                rounds(&self.cpu)
            ),
            _ => String::new(),
        };
        let failed = if self.no_errors() {
            String::new()
        } else {
            format!(
                "\n{} redcall and {} baseline calls FAILED (see the rows above); the figures count successful calls \
                 only, so no target counts as met",
                self.errors.0, self.errors.1
            )
        };
        format!("{rps}\n{p50}{cpu}{failed}")
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::Histogram;

    use super::*;

    /// A measurement of `system` at `concurrency` with `calls` calls of `latency_us` each over one second.
    fn measured(
        system: System,
        concurrency: usize,
        calls: u64,
        latency_us: u64,
        errors: u64,
    ) -> Measurement {
        let mut hist = Histogram::new(3).expect("histogram");
        hist.record_n(latency_us, calls - errors).expect("record");
        Measurement {
            system,
            concurrency,
            round: 1,
            requests: calls,
            errors,
            first_error: (errors > 0).then(|| "timed out".to_owned()),
            elapsed_s: 1.0,
            hist,
            commands: Default::default(),
            cpu: Default::default(),
            peak_rss_kb: Default::default(),
            machine: Default::default(),
        }
    }

    #[test]
    fn ratios_meet_targets_only_without_failed_calls() {
        // A run with 700 successful redcall calls against 1000 of the baseline at 512, and p50s of 120 against
        // 100 µs at 1; `failed` more redcall calls failed at 512.
        let run = |failed: u64| {
            [
                measured(System::Redcall, 512, 700 + failed, 1000, failed),
                measured(System::Baseline, 512, 1000, 1000, 0),
                measured(System::Redcall, 1, 100, 120, 0),
                measured(System::Baseline, 1, 100, 100, 0),
            ]
        };
        let ratios = Ratios::of(&run(0));
        assert_eq!(ratios.rps_median(), Some((512, 0.7)));
        assert_eq!(ratios.p50_median(), Some(1.2));
        assert!(ratios.rps_met() && ratios.p50_met(), "{}", ratios.to_text());
        assert!(
            !ratios.to_text().contains("NOT met"),
            "{}",
            ratios.to_text()
        );
        assert_eq!(ratios.to_json()["rps_ratio_met"], true);

        // The same figures, but some redcall calls failed: the ratios stand, the targets do not.
        let ratios = Ratios::of(&run(10));
        assert_eq!(ratios.rps_median(), Some((512, 0.7)));
        assert_eq!(ratios.errors, (10, 0));
        assert!(!ratios.rps_met() && !ratios.p50_met());
        let text = ratios.to_text();
        assert!(text.contains("NOT met: calls failed"), "{text}");
        assert!(
            text.contains("10 redcall and 0 baseline calls FAILED"),
            "{text}"
        );
        let json = ratios.to_json();
        assert_eq!(json["rps_ratio_met"], false, "{json}");
        assert_eq!(json["p50_ratio_met"], false, "{json}");
        assert_eq!(json["errors"]["redcall"], 10, "{json}");
    }

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
