//! `redcall services`: the live responders of each service, from their heartbeat records.

use redcall::admin::{ResponderInfo, list_services};

use super::{Context, human_ms, now_ms, print_json};

/// Arguments of `redcall services`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only `--service`, instead of every service of the namespace (found with SCAN).
    #[arg(long)]
    pub only: bool,
}

/// Prints each service with its live responders: text for people, a JSON array of
/// `{"service", "responders": [...]}` for scripts.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let services = if args.only {
        vec![ctx.cli.service.clone()]
    } else {
        list_services(&ctx.client).await?
    };
    let mut all = Vec::with_capacity(services.len());
    for service in services {
        let responders = ctx.client.admin(&service).responders().await?;
        all.push((service, responders));
    }
    if ctx.cli.json {
        let value: Vec<serde_json::Value> = all
            .iter()
            .map(|(service, responders)| {
                serde_json::json!({ "service": service, "responders": responders })
            })
            .collect();
        print_json(ctx.cli, &serde_json::Value::Array(value));
    } else if all.is_empty() {
        outln!("no services in namespace {:?}", ctx.cli.namespace);
    } else {
        for (service, responders) in &all {
            out!("{}", render(service, responders));
        }
    }
    Ok(())
}

/// The text form of one service and its responders.
pub fn render(service: &str, responders: &[ResponderInfo]) -> String {
    let mut out = match responders.len() {
        0 => format!("service {service}: no live responder\n"),
        1 => format!("service {service}: 1 live responder\n"),
        n => format!("service {service}: {n} live responders\n"),
    };
    out += &render_responders(responders);
    out
}

/// One block per responder, indented under its service (also used by `redcall stats`).
pub fn render_responders(responders: &[ResponderInfo]) -> String {
    let now = now_ms();
    let mut out = String::new();
    for r in responders {
        out += &format!(
            "  {} (group {}, host {}, pid {}, redcall {})\n",
            r.consumer, r.group, r.host, r.pid, r.version
        );
        out += &format!("    functions  {}\n", r.functions.join(", "));
        out += &format!(
            "    up {}, seen {} ago; in flight {}, handled {} (failed {}), mean handler time {:.2} ms\n",
            human_ms(now.saturating_sub(r.started_ms)),
            human_ms(now.saturating_sub(r.last_seen_ms)),
            r.in_flight,
            r.handled,
            r.failed,
            r.mean_handler_ms
        );
    }
    out
}
