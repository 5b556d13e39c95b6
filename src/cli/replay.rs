//! `redcall replay --from ID --to ID [--func KEY]`: re-run a range of the requests stream (history after a bug
//! fix), each request under its original id.

use super::dlq::ReplayFlags;
use super::{Context, progress_bar};

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
    #[command(flatten)]
    pub flags: ReplayFlags,
    /// Also replay requests still in flight: whose latest entry, or the entry named, is pending or not yet delivered
    /// to every group (they then run twice).
    #[arg(long)]
    pub include_in_flight: bool,
}

/// Replays the range and prints what was done.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let admin = ctx.client.admin(&ctx.cli.service);
    let opts = args
        .flags
        .options()
        .include_in_flight(args.include_in_flight);
    let bar = progress_bar(None, "replaying entries");
    let report = admin
        .replay_range(&args.from, &args.to, &opts, |n| bar.set_position(n))
        .await;
    bar.finish_and_clear();
    super::dlq::print_replay_report(ctx, &report?, "requests");
    Ok(())
}
