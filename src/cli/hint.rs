//! The hint a `redcall call` that timed out adds when nobody seems to serve the service: "no responder has read
//! from service X in the last N s", in the text error and as `hint` in the `--json` error object.
//!
//! Two signs of a live responder, either of which keeps the hint away: a consumer that read or claimed recently
//! (`XINFO CONSUMERS`), and a heartbeat record written recently. Reads alone are not enough: Redis before 7.2
//! refreshes a consumer's `idle` only by reads and claims that return entries, so there a responder waiting on an
//! empty stream (say, for a delayed request not yet due) looks as idle as a dead one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use redcall::ErrorKind;
use redcall::admin::{LastRead, ResponderInfo};

use super::{Context, call};

/// A responder this long without a read is taken for gone even when the call was shorter: a live responder reads
/// every block time (1 s by default) and, with every handler slot busy, still claims every few seconds.
const QUIET_FLOOR: Duration = Duration::from_secs(5);

/// How long looking for the hint may take: the call has failed already, so this must not hold up its error.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `redcall call`; a timeout gets the nobody-serves hint when it applies.
pub async fn run_call(ctx: &Context<'_>, args: &call::Args) -> ExitCode {
    let started = Instant::now();
    match call::run(ctx, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == ErrorKind::Timeout => {
            let hint = nobody_serves(ctx, started.elapsed()).await;
            super::fail_with_hint(&err, hint.as_deref())
        }
        Err(err) => super::fail(&err),
    }
}

/// The hint for the service of `ctx`, when no consumer of it read within `waited` (at least [`QUIET_FLOOR`]).
/// `None` when someone read recently, or when the look itself failed or took too long (no hint is better than a
/// wrong one).
async fn nobody_serves(ctx: &Context<'_>, waited: Duration) -> Option<String> {
    let admin = ctx.client.admin(&ctx.cli.service);
    let look = async {
        let read = admin.last_read().await?;
        // Without the heartbeat records (a user whose ACL does not allow reading them), reads alone decide.
        let responders = admin.responders().await.unwrap_or_default();
        Ok::<_, redcall::Error>((read, responders))
    };
    let (read, responders) = tokio::time::timeout(LOOK_TIMEOUT, look).await.ok()?.ok()?;
    let quiet = waited.max(QUIET_FLOOR);
    if beat_within(&responders, quiet, super::now_ms()) {
        return None;
    }
    hint_text(&ctx.cli.service, &read, quiet)
}

/// Whether some responder wrote its heartbeat record within `quiet` of `now_ms` (by its clock and ours: the hint
/// is advice, and clocks of one deployment are close).
fn beat_within(responders: &[ResponderInfo], quiet: Duration, now_ms: u64) -> bool {
    responders
        .iter()
        .any(|r| u128::from(now_ms.saturating_sub(r.last_seen_ms)) < quiet.as_millis())
}

/// The hint's text for `read`, when no consumer read within `quiet`.
fn hint_text(service: &str, read: &LastRead, quiet: Duration) -> Option<String> {
    if read.read_within(quiet) {
        return None;
    }
    Some(match read.idle() {
        Some(idle) => format!(
            "no responder has read from service {service:?} in the last {} s (is one running?)",
            idle.as_secs()
        ),
        None if read.groups == 0 => format!(
            "no responder has read from service {service:?}: it has no consumer group (none has ever started)"
        ),
        None => format!(
            "no responder has read from service {service:?}: its consumer group has no consumers"
        ),
    })
}
