//! `redcall stats [--all]`: per service stream length, pending, lag, oldest pending age, consumers, dead letters.

use redcall::admin::{ServiceStats, list_services};

use super::{Context, human_ms, print_json};

/// Arguments of `redcall stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every service of the namespace (found with SCAN) instead of `--service`.
    #[arg(long)]
    pub all: bool,
}

/// Prints the stats: text for people, one JSON object (an array with `--all`) for scripts.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let services = if args.all {
        list_services(&ctx.client).await?
    } else {
        vec![ctx.cli.service.clone()]
    };
    let mut all = Vec::with_capacity(services.len());
    let mut live = Vec::with_capacity(services.len());
    for service in &services {
        let mut admin = ctx.client.admin(service);
        if args.all
            && let Some(count) = admin.recorded_partitions().await?
        {
            // Each service with the partition count it is served with.
            admin = admin.partitions(count);
        }
        all.push(admin.stats().await?);
        live.push(admin.responders().await?);
    }
    if ctx.cli.json {
        // Each service's object gets its live responders (`redcall services`) as `responders`.
        let mut values: Vec<serde_json::Value> = all
            .iter()
            .zip(&live)
            .map(|(stats, responders)| {
                let mut value = serde_json::to_value(stats).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    let responders = serde_json::to_value(responders).unwrap_or_default();
                    object.insert("responders".to_owned(), responders);
                }
                value
            })
            .collect();
        let value = if args.all {
            serde_json::Value::Array(values)
        } else {
            values.pop().unwrap_or_default()
        };
        print_json(ctx.cli, &value);
    } else if all.is_empty() {
        outln!("no services in namespace {:?}", ctx.cli.namespace);
    } else {
        for (stats, responders) in all.iter().zip(&live) {
            out!("{}", render(stats));
            outln!("  live responders {}", responders.len());
            out!("{}", super::services::render_responders(responders));
        }
    }
    Ok(())
}

/// The text form of one service's stats.
fn render(s: &ServiceStats) -> String {
    let mut out = format!("service {}\n", s.service);
    let span = match (&s.first_entry_id, &s.last_entry_id) {
        (Some(first), Some(last)) => format!(" ({first} .. {last})"),
        _ => String::new(),
    };
    out += &format!("  stream        {} entries{span}\n", s.stream_length);
    if s.delayed > 0 {
        out += &format!("  delayed       {} requests not yet due\n", s.delayed);
    }
    out += &format!("  dead letters  {}", s.dead_letters);
    if s.dead_letters_unattributed > 0 && !s.groups.is_empty() {
        out += &format!(
            " ({} not attributed to a group)",
            s.dead_letters_unattributed
        );
    }
    out += "\n";
    if s.groups.is_empty() {
        out += "  no consumer group yet (no responder has started)\n";
    }
    for g in &s.groups {
        let lag = g.lag.map_or("?".to_owned(), |l| l.to_string());
        out += &format!(
            "  group {}: pending {}, lag {lag}, last delivered {}, dead letters {}\n",
            g.name, g.pending, g.last_delivered_id, g.dead_letters
        );
        if let Some(p) = &g.oldest_pending {
            out += &format!(
                "    oldest pending {} (age {}, idle {}, delivered {}x, held by {})\n",
                p.entry_id,
                human_ms(p.age_ms),
                human_ms(p.idle_ms),
                p.deliveries,
                p.consumer
            );
        }
        for c in &g.consumers {
            out += &format!(
                "    consumer {}: pending {}, idle {}\n",
                c.name,
                c.pending,
                human_ms(c.idle_ms)
            );
        }
    }
    for (i, p) in s.partitions.iter().enumerate() {
        let pending: u64 = p.groups.iter().map(|g| g.pending).sum();
        out += &format!(
            "  partition {i}: stream {} entries, pending {pending}, dead letters {}, delayed {}\n",
            p.stream_length, p.dead_letters, p.delayed
        );
    }
    out
}
