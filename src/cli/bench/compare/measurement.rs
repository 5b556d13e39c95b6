//! What a measurement found, and its JSON object (printed with `--json`).

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::cli::bench::System;
use crate::cli::bench::procs::{CpuTime, MachineCpu};
use crate::cli::bench::round;
use crate::cli::bench::stats::CommandStats;

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

    /// Successful calls, at least 1 (what the per-request figures divide by).
    pub fn successes(&self) -> f64 {
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

    /// CPU time `cpu` per successful call, µs.
    pub fn cpu_us_per_request(&self, cpu: CpuTime) -> f64 {
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
