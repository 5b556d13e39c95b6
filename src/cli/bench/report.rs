//! What a measurement found, and how it is shown: one JSON object per measurement with `--json`, a table
//! otherwise, then the redcall/baseline ratios against the targets.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::System;
use super::procs::{CpuTime, MachineCpu};
use super::stats::CommandStats;

/// Target: redcall's throughput at high concurrency is at least this share of the baseline's.
pub const RPS_RATIO_TARGET: f64 = 0.6;
/// Target: redcall's median latency at concurrency 1 is at most this multiple of the baseline's.
pub const P50_RATIO_TARGET: f64 = 1.3;

/// CPU time or peak memory of the three kinds of process in a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerProcess<T> {
    /// The requester worker(s), summed.
    pub requesters: T,
    /// The responder worker(s), summed.
    pub responders: T,
    /// The Redis server, when its process is visible.
    pub redis: Option<T>,
}

/// One measurement: one system at one concurrency.
pub struct Measurement {
    /// Which system.
    pub system: System,
    /// Calls in flight at once (across requester processes).
    pub concurrency: usize,
    /// Which round of the run (from 1).
    pub round: usize,
    /// Completed calls in the measured window (successful or not).
    pub requests: u64,
    /// Failed calls.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Wall time of the measured window (the slowest requester's).
    pub elapsed_s: f64,
    /// Latencies of successful calls, µs.
    pub hist: Histogram<u64>,
    /// Commands Redis ran during the window.
    pub commands: CommandStats,
    /// CPU time used during the window (Redis's from `INFO cpu`).
    pub cpu: PerProcess<CpuTime>,
    /// Peak resident memory (`VmHWM`, kB) during the window (reset when it began); Redis's only when the bench
    /// started the server itself.
    pub peak_rss_kb: PerProcess<u64>,
    /// The whole machine's CPU use during the window (to tell how much others used).
    pub machine: MachineCpu,
}

impl Measurement {
    /// Successful calls per second.
    pub fn rps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            (self.requests - self.errors) as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    fn successes(&self) -> f64 {
        ((self.requests - self.errors) as f64).max(1.0)
    }

    /// Redis commands per successful call (script-internal commands included).
    pub fn commands_per_request(&self) -> f64 {
        self.commands.values().map(|s| s.calls).sum::<u64>() as f64 / self.successes()
    }

    /// Calls of Lua scripts (`evalsha`, `eval`, `fcall`) per successful call.
    pub fn scripts_per_request(&self) -> f64 {
        self.commands
            .iter()
            .filter(|(name, _)| name.starts_with("eval") || name.starts_with("fcall"))
            .map(|(_, s)| s.calls)
            .sum::<u64>() as f64
            / self.successes()
    }

    fn cpu_us_per_request(&self, cpu: CpuTime) -> f64 {
        cpu.total_s() * 1e6 / self.successes()
    }

    /// CPU time of every process (requesters, responders, Redis) per successful call, µs: what a request costs
    /// the machine, steadier than throughput on a shared, saturated machine.
    pub fn total_cpu_us_per_request(&self) -> f64 {
        let redis = self.cpu.redis.map(|c| c.total_s()).unwrap_or(0.0);
        (self.cpu.requesters.total_s() + self.cpu.responders.total_s() + redis) * 1e6
            / self.successes()
    }

    /// Cores busy with processes other than this measurement's (and Redis), on average over the window: the
    /// noise from a shared machine.
    pub fn other_cores(&self) -> f64 {
        if self.elapsed_s <= 0.0 {
            return 0.0;
        }
        let ours = self.cpu.requesters.total_s()
            + self.cpu.responders.total_s()
            + self.cpu.redis.map(|c| c.total_s()).unwrap_or(0.0);
        ((self.machine.busy_s - ours) / self.elapsed_s).max(0.0)
    }

    /// The latency at `quantile` in µs.
    pub fn latency_us(&self, quantile: f64) -> u64 {
        self.hist.value_at_quantile(quantile)
    }

    /// The JSON object printed with `--json`.
    pub fn to_json(&self) -> Value {
        let per_request = |cpu: CpuTime| round(self.cpu_us_per_request(cpu), 1);
        let cpu_ms = |cpu: CpuTime| json!({"user": round(cpu.user_s * 1e3, 0), "sys": round(cpu.sys_s * 1e3, 0)});
        let commands: serde_json::Map<String, Value> = self
            .commands
            .iter()
            .map(|(name, stat)| {
                let calls = stat.calls as f64 / self.successes();
                let usec = stat.usec as f64 / self.successes();
                (
                    name.clone(),
                    json!({"per_request": round(calls, 3), "usec_per_request": round(usec, 3)}),
                )
            })
            .collect();
        json!({
            "kind": "measurement",
            "system": self.system.name(),
            "concurrency": self.concurrency,
            "round": self.round,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.rps(), 1),
            "p50_us": self.latency_us(0.5),
            "p99_us": self.latency_us(0.99),
            "p999_us": self.latency_us(0.999),
            "max_us": self.hist.max(),
            "mean_us": round(self.hist.mean(), 1),
            "redis_commands_per_request": round(self.commands_per_request(), 3),
            "redis_scripts_per_request": round(self.scripts_per_request(), 3),
            "commands": commands,
            "cpu_ms": {
                "requesters": cpu_ms(self.cpu.requesters),
                "responders": cpu_ms(self.cpu.responders),
                "redis": self.cpu.redis.map(cpu_ms),
            },
            "cpu_us_per_request": {
                "total": round(self.total_cpu_us_per_request(), 1),
                "requesters": per_request(self.cpu.requesters),
                "responders": per_request(self.cpu.responders),
                "redis": self.cpu.redis.map(per_request),
            },
            "machine": {
                "busy_cores": round(self.machine.busy_s / self.elapsed_s.max(1e-9), 2),
                "other_cores": round(self.other_cores(), 2),
                "steal_cores": round(self.machine.steal_s / self.elapsed_s.max(1e-9), 2),
            },
            "peak_rss_kb": {
                "requesters": self.peak_rss_kb.requesters,
                "responders": self.peak_rss_kb.responders,
                "redis": self.peak_rss_kb.redis,
            },
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The table header for people.
pub fn table_header() -> String {
    format!(
        "{:<9} {:>5} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>20} {:>14} {:>6}",
        "system",
        "conc",
        "requests",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "cmd/req",
        "lua/req",
        "CPU µs/req req/rsp/redis",
        "peak MiB req/rsp",
        "others"
    )
}

/// One table row for people.
pub fn table_row(m: &Measurement) -> String {
    let cpu = |c: CpuTime| format!("{:.0}", m.cpu_us_per_request(c));
    let redis_cpu = m.cpu.redis.map(cpu).unwrap_or_else(|| "-".into());
    let mut row = format!(
        "{:<9} {:>5} {:>9} {:>9.0} {:>8} {:>8} {:>8} {:>7.2} {:>8.2} {:>20} {:>14} {:>6.2}",
        m.system.name(),
        m.concurrency,
        m.requests,
        m.rps(),
        m.latency_us(0.5),
        m.latency_us(0.99),
        m.latency_us(0.999),
        m.commands_per_request(),
        m.scripts_per_request(),
        format!(
            "{}/{}/{}",
            cpu(m.cpu.requesters),
            cpu(m.cpu.responders),
            redis_cpu
        ),
        format!(
            "{:.0}/{:.0}",
            m.peak_rss_kb.requesters as f64 / 1024.0,
            m.peak_rss_kb.responders as f64 / 1024.0
        ),
        m.other_cores(),
    );
    if m.errors > 0 {
        row.push_str(&format!(
            "  ({} errors; first: {})",
            m.errors,
            m.first_error.as_deref().unwrap_or("?")
        ));
    }
    row
}

/// The command mix of one measurement: calls and server µs per request, most frequent first.
pub fn command_mix(m: &Measurement) -> String {
    let mut stats: Vec<_> = m.commands.iter().collect();
    stats.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
    let parts: Vec<String> = stats
        .iter()
        .map(|(name, s)| {
            format!(
                "{name} {:.2} ({:.1} µs)",
                s.calls as f64 / m.successes(),
                s.usec as f64 / m.successes()
            )
        })
        .collect();
    format!(
        "{} at {}: {}",
        m.system.name(),
        m.concurrency,
        parts.join(", ")
    )
}

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

/// One sample of a soak run.
#[derive(Debug, Clone, Copy)]
pub struct SoakSample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Requests completed so far.
    pub done: u64,
    /// Redis `used_memory`, bytes.
    pub used_memory: u64,
    /// Length of the requests stream.
    pub stream_len: u64,
    /// Keys in the database.
    pub keys: u64,
    /// Requester RSS, kB.
    pub requester_rss_kb: u64,
    /// The requester client's requests in flight.
    pub in_flight: u64,
    /// The service's reply channels with a subscriber in Redis: those of calls in flight, and any a leak left
    /// subscribed.
    pub reply_channels: u64,
    /// Requests per second since the previous sample.
    pub rate: f64,
}

impl SoakSample {
    /// The JSON object of a sample.
    pub fn to_json(self) -> Value {
        json!({
            "kind": "soak_sample",
            "t_s": round(self.t_s, 1),
            "done": self.done,
            "redis_used_memory": self.used_memory,
            "stream_len": self.stream_len,
            "keys": self.keys,
            "requester_rss_kb": self.requester_rss_kb,
            "in_flight": self.in_flight,
            "reply_channels": self.reply_channels,
            "rps": round(self.rate, 0),
        })
    }

    /// The line for people.
    pub fn to_text(self) -> String {
        format!(
            "t={:>6.1}s done={:>9} ({:>6.0}/s) redis used_memory={:>7.1} MiB stream={:>9} keys={:>8} channels={:>6} requester RSS={:>6.1} MiB in_flight={}",
            self.t_s,
            self.done,
            self.rate,
            self.used_memory as f64 / 1048576.0,
            self.stream_len,
            self.keys,
            self.reply_channels,
            self.requester_rss_kb as f64 / 1024.0,
            self.in_flight
        )
    }
}

/// Whether one soak series stayed flat: the mean of the last half of the steady samples against the first half,
/// and the least-squares slope against requests done (what each request leaves behind).
pub struct Flatness {
    /// The series' name.
    pub name: &'static str,
    /// Mean of the first half of the steady samples.
    pub first: f64,
    /// Mean of the last half.
    pub last: f64,
    /// Growth per 100,000 requests (least-squares slope).
    pub per_100k: f64,
    /// Allowed growth of `last` over `first`; `None` for a series shown but not judged (it follows the request
    /// rate, which a shared machine makes wander).
    pub tolerance: Option<f64>,
}

impl Flatness {
    /// last / first (1 when both are zero).
    pub fn growth(&self) -> f64 {
        if self.first > 0.0 {
            self.last / self.first
        } else if self.last > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    }

    /// Whether the growth is within the tolerance.
    pub fn flat(&self) -> bool {
        self.tolerance.is_none_or(|t| self.growth() <= 1.0 + t)
    }

    /// Judges `points` (requests done, value) of the steady samples, in order.
    pub fn judge(name: &'static str, points: &[(f64, f64)], tolerance: Option<f64>) -> Self {
        let mean = |v: &[(f64, f64)]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().map(|p| p.1).sum::<f64>() / v.len() as f64
            }
        };
        let (first, last) = points.split_at(points.len() / 2);
        Flatness {
            name,
            first: mean(first),
            last: mean(last),
            per_100k: slope(points) * 100_000.0,
            tolerance,
        }
    }

    /// The JSON object of a verdict.
    pub fn to_json(&self) -> Value {
        json!({
            "series": self.name,
            "first_half_mean": round(self.first, 1),
            "last_half_mean": round(self.last, 1),
            "growth": if self.growth().is_finite() { json!(round(self.growth(), 3)) } else { Value::Null },
            "per_100k_requests": round(self.per_100k, 1),
            "flat": if self.tolerance.is_some() { json!(self.flat()) } else { Value::Null },
        })
    }

    /// The line for people.
    pub fn to_text(&self) -> String {
        format!(
            "{:<26} first half {:>13.1}  last half {:>13.1}  growth {:>5.2}x  {:>+12.1} per 100k requests  {}",
            self.name,
            self.first,
            self.last,
            self.growth(),
            self.per_100k,
            match (self.tolerance, self.flat()) {
                (None, _) => "(follows the rate; not judged)",
                (Some(_), true) => "flat",
                (Some(_), false) => "GROWS",
            }
        )
    }
}

/// What a soak run found, as the bench's outcome: `Ok` only when every call succeeded, none was left waiting, no
/// reply channel stayed subscribed, there were enough steady samples to judge, and every judged series stayed flat;
/// otherwise each reason why not.
pub fn soak_outcome(
    errors: u64,
    in_flight_at_end: u64,
    channels_left: u64,
    judged: bool,
    series: &[Flatness],
) -> Result<(), String> {
    let mut reasons = Vec::new();
    if errors > 0 {
        reasons.push(format!("{errors} calls failed"));
    }
    if in_flight_at_end > 0 {
        reasons.push(format!(
            "{in_flight_at_end} calls still waited for a reply at the end"
        ));
    }
    if channels_left > 0 {
        reasons.push(format!(
            "{channels_left} reply channels still subscribed after every call was done"
        ));
    }
    if !judged {
        reasons.push("too few steady samples to judge flatness (use a larger N)".to_owned());
    } else {
        let grown: Vec<&str> = series
            .iter()
            .filter(|s| !s.flat())
            .map(|s| s.name)
            .collect();
        if !grown.is_empty() {
            reasons.push(format!("grows: {}", grown.join(", ")));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(format!("soak: {}", reasons.join("; ")))
    }
}

/// Least-squares slope of y over x (0 with fewer than two distinct x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatness_compares_halves() {
        let flat = Flatness::judge(
            "x",
            &[(1.0, 10.0), (2.0, 11.0), (3.0, 10.0), (4.0, 10.5)],
            Some(0.1),
        );
        assert!(flat.flat(), "{}", flat.to_text());
        let grows = Flatness::judge(
            "x",
            &[(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)],
            Some(0.1),
        );
        assert!(!grows.flat());
        assert!(grows.to_text().ends_with("GROWS"), "{}", grows.to_text());
        let shown = Flatness::judge("x", &[(1.0, 10.0), (2.0, 40.0)], None);
        assert!(shown.flat(), "a series that is not judged never fails");
        assert!(
            shown.to_text().contains("not judged"),
            "{}",
            shown.to_text()
        );
        assert!((grows.per_100k - 1_000_000.0).abs() < 1e-6);
        assert!(Flatness::judge("x", &[(1.0, 0.0), (2.0, 0.0)], Some(0.1)).flat());
    }

    #[test]
    fn soak_outcome_fails_on_growth_errors_leftovers_and_too_few_samples() {
        let flat = Flatness::judge("rss", &[(1.0, 10.0), (2.0, 10.0)], Some(0.1));
        let grows = Flatness::judge("waiters", &[(1.0, 10.0), (2.0, 30.0)], Some(0.1));
        let shown = Flatness::judge("memory", &[(1.0, 10.0), (2.0, 30.0)], None);
        assert_eq!(soak_outcome(0, 0, 0, true, &[flat, shown]), Ok(()));

        let flat = || Flatness::judge("rss", &[(1.0, 10.0), (2.0, 10.0)], Some(0.1));
        let err = soak_outcome(0, 0, 0, true, &[flat(), grows]).expect_err("growth fails");
        assert!(err.contains("grows: waiters"), "{err}");
        let err = soak_outcome(3, 0, 0, true, &[flat()]).expect_err("errors fail");
        assert!(err.contains("3 calls failed"), "{err}");
        let err = soak_outcome(0, 7, 0, true, &[flat()]).expect_err("leftovers fail");
        assert!(err.contains("7 calls still waited"), "{err}");
        let err = soak_outcome(0, 0, 5, true, &[flat()]).expect_err("subscriptions left fail");
        assert!(err.contains("5 reply channels still subscribed"), "{err}");
        let err = soak_outcome(0, 0, 0, false, &[flat()]).expect_err("unjudged fails");
        assert!(err.contains("too few steady samples"), "{err}");
    }

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
