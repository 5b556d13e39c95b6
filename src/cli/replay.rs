//! `redcall replay --from ID --to ID [--func KEY]`: re-run a range of the requests stream (history after a bug
//! fix), each request under its original id.
//!
//! A range names what to act on, so a replay that did nothing says so with its exit status (after printing its
//! report): 5 when the range (with `--func`: for that function key) holds no entry, 1 when it holds entries but
//! every one was left alone (in flight, superseded, ...; running the same replay twice in a row is the common
//! case). A dry run exits as the real run would.

use std::process::ExitCode;

use redcall::admin::ReplayReport;

use super::dlq::ReplayFlags;
use super::{Context, print_error, progress_bar};

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

/// Replays the range, prints what was done, and exits by the rule in the module docs.
pub async fn run(ctx: &Context<'_>, args: &Args) -> ExitCode {
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
    let report = match report {
        Ok(report) => report,
        Err(err) => return super::fail(&err),
    };
    super::dlq::print_replay_report(ctx, &report, "requests");
    match did_nothing(&report, args) {
        None => ExitCode::SUCCESS,
        Some((kind, code, message)) => {
            print_error(kind, &message, None);
            ExitCode::from(code)
        }
    }
}

/// When the replay did nothing: the error kind, exit code and message to give.
fn did_nothing(report: &ReplayReport, args: &Args) -> Option<(&'static str, u8, String)> {
    if !report.replayed.is_empty() {
        return None;
    }
    let range = format!("between {} and {}", args.from, args.to);
    if report.skipped.is_empty() {
        let message = match (&args.flags.func, report.not_matching) {
            (Some(func), n) if n > 0 => format!(
                "no requests for function key {func:?} {range} in the requests stream ({n} for other keys)"
            ),
            _ => format!("no requests {range} in the requests stream"),
        };
        return Some(("not_found", 5, message));
    }
    let mut reasons: Vec<&str> = report.skipped.iter().map(|s| s.reason.code()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    let verb = if report.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    Some((
        "not_replayed",
        1,
        format!(
            "{verb} none of the {} requests {range} (skipped: {})",
            report.skipped.len(),
            reasons.join(", ")
        ),
    ))
}
