//! What Redis says about itself: `INFO commandstats` (calls and server time per command), memory, and the
//! server's process id.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;

use super::procs::CpuTime;

/// Calls and server time of one command, as counted by `INFO commandstats`. Commands run by a Lua script are
/// counted under their own names, and their time is also part of the `evalsha` time: do not add times up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommandStat {
    /// Number of calls.
    pub calls: u64,
    /// Microseconds Redis spent executing them (not counting I/O).
    pub usec: u64,
}

/// `INFO commandstats` by command name (`xadd`, `xgroup|create`, ...).
pub type CommandStats = BTreeMap<String, CommandStat>;

/// Reads `INFO <section>` as text.
pub async fn info(con: &mut MultiplexedConnection, section: &str) -> Result<String, String> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .map_err(|e| format!("INFO {section}: {e}"))
}

/// Parses `INFO commandstats`.
pub fn parse_commandstats(text: &str) -> CommandStats {
    let mut stats = CommandStats::new();
    for line in text.lines() {
        let Some((name, fields)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let mut stat = CommandStat::default();
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => stat.calls = v.parse().unwrap_or(0),
                Some(("usec", v)) => stat.usec = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        stats.insert(name.to_owned(), stat);
    }
    stats
}

/// The commands run between two snapshots, without the bench's own `INFO`.
pub fn delta(before: &CommandStats, after: &CommandStats) -> CommandStats {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let calls = a.calls.saturating_sub(b.calls);
            (calls > 0).then(|| {
                let stat = CommandStat {
                    calls,
                    usec: a.usec.saturating_sub(b.usec),
                };
                (name.clone(), stat)
            })
        })
        .collect()
}

/// One numeric field (`used_memory`, `process_id`) of an `INFO` text.
pub fn info_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix(field)?
            .strip_prefix(':')?
            .parse()
            .ok()
    })
}

/// Redis's own CPU time (`used_cpu_user`, `used_cpu_sys` of `INFO cpu`, microsecond resolution; works for an
/// external server too).
pub async fn redis_cpu(con: &mut MultiplexedConnection) -> Result<CpuTime, String> {
    let text = info(con, "cpu").await?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)?
                    .strip_prefix(':')?
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| format!("INFO cpu has no {name}"))
    };
    Ok(CpuTime {
        user_s: field("used_cpu_user")?,
        sys_s: field("used_cpu_sys")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_parse_and_subtract() {
        let before = parse_commandstats(
            "# Commandstats\r\ncmdstat_xadd:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=1,usec=9,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n",
        );
        let after = parse_commandstats(
            "cmdstat_xadd:calls=15,usec=80,usec_per_call=5.33,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_xgroup|create:calls=1,usec=3,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=2,usec=19,usec_per_call=9.50,rejected_calls=0,failed_calls=0\r\n",
        );
        let d = delta(&before, &after);
        assert_eq!(d["xadd"], CommandStat { calls: 5, usec: 30 });
        assert_eq!(d["xgroup|create"].calls, 1);
        assert!(!d.contains_key("info"));
    }

    #[test]
    fn info_fields() {
        let text = "# Memory\r\nused_memory:123456\r\nused_memory_human:120K\r\n";
        assert_eq!(info_field(text, "used_memory"), Some(123456));
        assert_eq!(info_field(text, "used_memory_rss"), None);
    }
}
