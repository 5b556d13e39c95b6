//! `redcall reap`: the reaper on its own.

use std::time::Duration;

use redcall::{Reaper, ResponderSettings};

use super::Context;

/// Arguments of `redcall reap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle time (ms) after which a pending request counts as stale.
    #[arg(long, value_name = "MS")]
    pub visibility_timeout: Option<u64>,
    /// Deliveries after which a stale request is dead-lettered.
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<u64>,
    /// Consumer group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Run one pass (and one trim) and exit (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    pub once: bool,
    /// How the reaper trims the requests stream.
    #[command(flatten)]
    pub retention: super::retention::RetentionArgs,
}

/// Runs the reaper.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let mut settings = ResponderSettings::default();
    if let Some(ms) = args.visibility_timeout {
        settings.visibility_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_deliveries {
        settings.max_deliveries = n;
    }
    if let Some(group) = &args.group {
        settings.group = group.clone();
    }
    settings.consumer = format!("reaper-{}", settings.consumer);
    settings.retention = args.retention.policy();
    let trim_policy_enabled = settings.retention.enabled;
    if args.once {
        // No loop: the one pass and the one trim below are all that runs, and all that is reported.
        let reaper = Reaper::connect(ctx.client.clone(), &ctx.cli.service, settings).await?;
        let report = reaper.pass().await?;
        let trim = if trim_policy_enabled {
            reaper.trim().await?
        } else {
            redcall::TrimReport::default()
        };
        if ctx.cli.json {
            super::print_json(
                ctx.cli,
                &serde_json::json!({
                    "reclaimed": report.reclaimed,
                    "dead_lettered": report.dead_lettered,
                    "deleted": report.deleted,
                    "consumers_removed": report.consumers_removed,
                    "trimmed": trim.trimmed,
                    "dead_letters_trimmed": trim.dead_letters_trimmed,
                    "safe_bound": trim.safe_bound,
                }),
            );
        } else {
            outln!(
                "dead-lettered {}, dropped {} deleted entries, removed {} dead consumers, trimmed {} entries \
                 ({} dead letters)",
                report.dead_lettered,
                report.deleted,
                report.consumers_removed,
                trim.trimmed,
                trim.dead_letters_trimmed
            );
        }
    } else {
        let reaper = Reaper::start(ctx.client.clone(), &ctx.cli.service, settings).await?;
        errln!("reaping {:?}; Ctrl-C to stop", ctx.cli.service);
        super::serve::wait_for_signal().await;
        reaper.shutdown().await;
    }
    Ok(())
}
