//! `redcall dlq list|show|replay|purge`: the dead-letter stream. IDs are dead-letter stream entry ids (as listed);
//! `show` also takes a request id.

use std::process::ExitCode;
use std::time::Duration;

use redcall::admin::{Admin, DeadLetterEntry, ReplayOptions, ReplayReport, SkipReason};

use super::{Context, human_ms, msgpack_to_json, print_json, progress_bar};

/// Arguments of `redcall dlq`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do with the dead letters.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Most entries to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this dead-letter id (to page).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
    /// Show one dead letter with its request (function key, params, deadline, replay info).
    Show {
        /// Dead-letter id, or a request id (its newest dead letter). An id of the form `<ms>-<seq>` is tried as a
        /// dead-letter id first, then as a request id.
        id: String,
    },
    /// Re-queue dead letters under their request ids; each leaves the dead-letter stream once re-queued.
    Replay(ReplayArgs),
    /// Remove dead letters.
    Purge {
        /// Dead-letter ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter present when the purge starts.
        #[arg(long)]
        all: bool,
    },
}

/// Arguments of `redcall dlq replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Dead-letter ids.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Every dead letter present when the replay starts.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub flags: ReplayFlags,
}

/// The flags of every replay (`dlq replay` and `replay`).
#[derive(Debug, clap::Args)]
pub struct ReplayFlags {
    /// Only requests for this function key.
    #[arg(long, value_name = "KEY")]
    pub func: Option<String>,
    /// How long the replayed requests get before their deadline; a bare number is seconds [default: 10m].
    #[arg(long, value_name = "DURATION", value_parser = super::duration::secs)]
    pub timeout: Option<Duration>,
    /// Only report what would be replayed and skipped; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ReplayFlags {
    /// The replay options these flags ask for.
    pub fn options(&self) -> ReplayOptions {
        let mut opts = ReplayOptions::default();
        if let Some(timeout) = self.timeout {
            opts = opts.timeout(timeout);
        }
        if let Some(func) = &self.func {
            opts = opts.func_key(func.clone());
        }
        opts.dry_run(self.dry_run)
    }
}

/// Runs a `dlq` subcommand. Exit status as every command's, and 1 when named dead letters exist but were left
/// alone (see [`named_outcome`]).
pub async fn run(ctx: &Context<'_>, args: &Args) -> ExitCode {
    let admin = ctx.client.admin(&ctx.cli.service);
    let done = match &args.command {
        DlqCommand::List { limit, after } => list(ctx, &admin, *limit, after.as_deref()).await,
        DlqCommand::Show { id } => match show(&admin, id).await {
            Ok(entry) => {
                print_json(ctx.cli, &describe(&entry));
                Ok(())
            }
            Err(err) => Err(err),
        },
        DlqCommand::Replay(replay) => match run_replay(ctx, &admin, replay).await {
            Ok(LeftAlone(None)) => Ok(()),
            Ok(LeftAlone(Some(message))) => {
                super::print_error("not_replayed", &message, None);
                return ExitCode::from(1);
            }
            Err(err) => Err(err),
        },
        DlqCommand::Purge { ids, all } => purge(ctx, &admin, ids, *all).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err),
    }
}

/// A dead letter by its dead-letter id or by request id. An id that looks like a stream entry id (`<ms>-<seq>`) is
/// first a dead-letter id and, when there is no such dead letter, a request id (request ids may look like
/// anything); any other id is a request id, whose newest dead letter is shown.
async fn show(admin: &Admin, id: &str) -> redcall::Result<DeadLetterEntry> {
    if !looks_like_entry_id(id) {
        return admin.dead_letter_of_request(id).await;
    }
    match admin.dead_letter(id).await {
        Err(err) if err.kind() == redcall::ErrorKind::NotFound => {
            match admin.dead_letter_of_request(id).await {
                Err(again) if again.kind() == redcall::ErrorKind::NotFound => {
                    Err(redcall::Error::EntryNotFound {
                        stream: "dead-letter",
                        entry_id: format!("{id} (nor one for a request of that id)"),
                    })
                }
                other => other,
            }
        }
        other => other,
    }
}

/// Whether `id` has the form of a stream entry id, `<ms>-<seq>`.
fn looks_like_entry_id(id: &str) -> bool {
    id.split_once('-')
        .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

/// Named dead letters that exist but were not replayed (in flight, malformed, too large, ...): what to tell.
struct LeftAlone(Option<String>);

async fn list(
    ctx: &Context<'_>,
    admin: &Admin,
    limit: usize,
    after: Option<&str>,
) -> redcall::Result<()> {
    let entries = admin.dead_letters(after, limit).await?;
    if ctx.cli.json {
        let all: Vec<_> = entries.iter().map(describe).collect();
        print_json(ctx.cli, &serde_json::Value::Array(all));
        return Ok(());
    }
    if entries.is_empty() {
        outln!("no dead letters in service {:?}", ctx.cli.service);
        return Ok(());
    }
    let now = super::now_ms();
    outln!(
        "{:<20} {:<38} {:<16} {:<24} {:>5} {:>14}  ERROR",
        "DEAD ID",
        "REQUEST ID",
        "FUNCTION",
        "REASON",
        "DELIV",
        "DEAD FOR"
    );
    for e in &entries {
        let dead_for = e
            .dead_at_ms
            .map_or("?".to_owned(), |t| human_ms(now.saturating_sub(t)));
        outln!(
            "{:<20} {:<38} {:<16} {:<24} {:>5} {:>14}  {}",
            e.dead_id,
            e.request_id.as_deref().unwrap_or("-"),
            e.func_key.as_deref().unwrap_or("-"),
            e.reason,
            e.deliveries.map_or("?".to_owned(), |d| d.to_string()),
            dead_for,
            one_line(&e.error, 80)
        );
    }
    if let Some(last) = entries.last()
        && entries.len() == limit
    {
        errln!("(more may follow: --after {})", last.dead_id);
    }
    Ok(())
}

async fn run_replay(
    ctx: &Context<'_>,
    admin: &Admin,
    args: &ReplayArgs,
) -> redcall::Result<LeftAlone> {
    let opts = args.flags.options();
    let report = if args.all {
        let total = admin.dead_letter_count().await?;
        let bar = progress_bar(Some(total), "replaying dead letters");
        let report = admin
            .replay_all_dead_letters(&opts, |n| bar.set_position(n))
            .await;
        bar.finish_and_clear();
        report?
    } else {
        let bar = progress_bar(Some(args.ids.len() as u64), "replaying dead letters");
        let report = admin
            .replay_dead_letters(&args.ids, &opts, |n| bar.set_position(n))
            .await;
        bar.finish_and_clear();
        report?
    };
    print_replay_report(ctx, &report, "dead letters");
    if args.all {
        // Nothing was named: what `--all` found is what it worked on.
        return Ok(LeftAlone(None));
    }
    named_outcome(&report)
}

/// The exit status of a replay of named dead letters, once its report is printed: not found (5) when any named
/// id does not exist, an error (1) when any other was left alone (in flight, malformed, too large, ...), success
/// when every named dead letter was replayed, or some were and the others left out by `--func`; when `--func`
/// left out every one, nothing was done: 1.
fn named_outcome(report: &ReplayReport) -> redcall::Result<LeftAlone> {
    let skipped = &report.skipped;
    let missing: Vec<&str> = skipped
        .iter()
        .filter(|s| s.reason == SkipReason::NotFound)
        .map(|s| s.from.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(redcall::Error::EntryNotFound {
            stream: "dead-letter",
            entry_id: missing.join(", "),
        });
    }
    if skipped.is_empty() {
        if report.replayed.is_empty() && report.not_matching > 0 {
            return Ok(LeftAlone(Some(format!(
                "none of the {} named dead letters is for the function key asked for (--func); nothing replayed",
                report.not_matching
            ))));
        }
        return Ok(LeftAlone(None));
    }
    let left: Vec<String> = skipped
        .iter()
        .map(|s| format!("{} ({})", s.from, s.reason.code()))
        .collect();
    Ok(LeftAlone(Some(format!(
        "not replayed, still in the dead-letter stream: {}",
        left.join(", ")
    ))))
}

async fn purge(ctx: &Context<'_>, admin: &Admin, ids: &[String], all: bool) -> redcall::Result<()> {
    let report = if all {
        let total = admin.dead_letter_count().await?;
        let bar = progress_bar(Some(total), "purging dead letters");
        let removed = admin.purge_all_dead_letters(|n| bar.set_position(n)).await;
        bar.finish_and_clear();
        PurgeOutcome {
            purged: removed?,
            not_found: Vec::new(),
        }
    } else {
        let bar = progress_bar(Some(ids.len() as u64), "purging dead letters");
        let report = admin.purge_dead_letters(ids, |n| bar.set_position(n)).await;
        bar.finish_and_clear();
        let report = report?;
        PurgeOutcome {
            purged: report.purged,
            not_found: report.not_found,
        }
    };
    let PurgeOutcome { purged, not_found } = &report;
    if ctx.cli.json {
        print_json(
            ctx.cli,
            &serde_json::json!({ "purged": purged, "not_found": not_found }),
        );
    } else if not_found.is_empty() {
        outln!("purged {purged} dead letters");
    } else {
        outln!(
            "purged {purged} dead letters; not found: {}",
            not_found.join(", ")
        );
    }
    if not_found.is_empty() {
        Ok(())
    } else {
        Err(redcall::Error::EntryNotFound {
            stream: "dead-letter",
            entry_id: not_found.join(", "),
        })
    }
}

/// What `dlq purge` reports, by id or `--all`.
struct PurgeOutcome {
    purged: u64,
    not_found: Vec<String>,
}

/// Prints a replay report: the whole report as JSON, or a summary and the skipped entries as text.
pub fn print_replay_report(ctx: &Context<'_>, report: &ReplayReport, what: &str) {
    if ctx.cli.json {
        print_json(ctx.cli, &serde_json::to_value(report).unwrap_or_default());
        return;
    }
    outln!(
        "{} {} {what}, {} {}{}",
        if report.dry_run {
            "would replay"
        } else {
            "replayed"
        },
        report.replayed.len(),
        if report.dry_run {
            "would skip"
        } else {
            "skipped"
        },
        report.skipped.len(),
        if report.not_matching > 0 {
            format!(", {} for other function keys", report.not_matching)
        } else {
            String::new()
        }
    );
    const SHOWN: usize = 20;
    if report.dry_run {
        for r in report.replayed.iter().take(SHOWN) {
            outln!("  would replay {} (request {})", r.from, r.request_id);
        }
        if report.replayed.len() > SHOWN {
            outln!(
                "  ... and {} more (see --json)",
                report.replayed.len() - SHOWN
            );
        }
    }
    for s in report.skipped.iter().take(SHOWN) {
        let reason = s.reason.code();
        outln!(
            "  skipped {} (request {}): {reason}",
            s.from,
            s.request_id.as_deref().unwrap_or("?")
        );
    }
    if report.skipped.len() > SHOWN {
        outln!(
            "  ... and {} more (see --json)",
            report.skipped.len() - SHOWN
        );
    }
}

/// A dead letter as JSON, with its request decoded when possible.
pub fn describe(e: &DeadLetterEntry) -> serde_json::Value {
    let mut value = serde_json::to_value(e).unwrap_or_default();
    let request = match e.request() {
        Ok(req) => serde_json::json!({
            "func_key": req.func_key,
            "params": msgpack_to_json(&req.params),
            "created_ms": req.created_ms,
            "deadline_ms": req.deadline_ms,
            "replay": req.replay,
        }),
        Err(err) => serde_json::json!({ "undecodable": err.to_string() }),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert("request".to_owned(), request);
    }
    value
}

/// The first line of `text`, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}...", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}
