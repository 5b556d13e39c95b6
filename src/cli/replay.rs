//! `redcall replay --from ID --to ID [--func KEY]`: re-run a range of the requests stream (history after a bug
//! fix), each request under its original id.

use std::time::Duration;

use redcall::admin::ReplayOptions;

use super::{Context, parse_secs, progress_bar};

/// Arguments of `redcall replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// First requests stream entry id to replay (inclusive; `-` for the oldest; a bare ms timestamp is allowed).
    #[arg(long, value_name = "STREAM_ID")]
    pub from: String,
    /// Last requests stream entry id to replay (inclusive; `+` for the newest when the replay starts; a bare ms
    /// timestamp is allowed).
    #[arg(long, value_name = "STREAM_ID")]
    pub to: String,
    /// Only requests for this function key.
    #[arg(long, value_name = "KEY")]
    pub func: Option<String>,
    /// Seconds the replayed requests get before their deadline [default: 600].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// Also replay entries still pending or not yet delivered to every group (they would then run twice).
    #[arg(long)]
    pub include_in_flight: bool,
}

/// Replays the range and prints what was done.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let admin = ctx.client.admin(&ctx.cli.service);
    let mut opts = ReplayOptions::default().include_in_flight(args.include_in_flight);
    if let Some(timeout) = args.timeout {
        opts = opts.timeout(timeout);
    }
    if let Some(func) = &args.func {
        opts = opts.func_key(func.clone());
    }
    let bar = progress_bar(None, "replaying entries");
    let report = admin
        .replay_range(&args.from, &args.to, &opts, |n| bar.set_position(n))
        .await;
    bar.finish_and_clear();
    super::dlq::print_replay_report(ctx, &report?, "requests");
    Ok(())
}
