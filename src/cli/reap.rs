//! `redcall reap`: the reaper on its own. With `--json`, `--once` prints its report as one object, and the
//! long-running reaper its lifecycle events as JSON lines (`started`, `stopped`).

use std::time::Duration;

use redcall::{Reaper, ResponderSettings};

use super::Context;

/// Arguments of `redcall reap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle time after which a pending request counts as stale; a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::duration::millis)]
    pub visibility_timeout: Duration,
    /// Deliveries after which a stale request is dead-lettered.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_deliveries: u64,
    /// Consumer group.
    #[arg(long, value_name = "NAME", default_value = redcall::ResponderSettings::DEFAULT_GROUP)]
    pub group: String,
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
    settings.visibility_timeout = args.visibility_timeout;
    settings.max_deliveries = args.max_deliveries;
    settings.group = args.group.clone();
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
        let group = settings.group.clone();
        let reaper = Reaper::start(ctx.client.clone(), &ctx.cli.service, settings).await?;
        let stop = super::serve::wait_for_signal();
        if ctx.cli.json {
            let started = serde_json::json!({
                "event": "started",
                "service": ctx.cli.service,
                "group": group,
            });
            super::print_json(ctx.cli, &started);
        } else {
            super::status_line(
                ctx.cli,
                format_args!("reaping {:?}; Ctrl-C to stop", ctx.cli.service),
            );
        }
        stop.await;
        reaper.shutdown().await;
        if ctx.cli.json {
            super::print_json(ctx.cli, &serde_json::json!({ "event": "stopped" }));
        }
    }
    Ok(())
}
