//! The comparison's table for people: a header, one row per measurement, and the command mix.

use super::Measurement;
use crate::cli::bench::procs::CpuTime;

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
