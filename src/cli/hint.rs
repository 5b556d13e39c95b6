//! The hint a `redcall call` that timed out adds when nobody seems to serve the service: "no responder has read
//! from service X in the last N s", in the text error and as `hint` in the `--json` error object.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use redcall::ErrorKind;
use redcall::admin::LastRead;

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
    let read = tokio::time::timeout(LOOK_TIMEOUT, admin.last_read())
        .await
        .ok()?
        .ok()?;
    hint_text(&ctx.cli.service, &read, waited.max(QUIET_FLOOR))
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
