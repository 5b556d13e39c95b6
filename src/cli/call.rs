//! `redcall call FUNC [PARAMS] [--id ID] [--timeout DURATION] [--progress] [--delay DURATION] [--traceparent TP
//! [--tracestate TS]]`: the request operation. PARAMS is JSON, `@PATH`
//! or `-` (see [`super::input`]).

use std::time::Duration;

use super::{Context, print_json};

/// Arguments of `redcall call`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Function key to call.
    pub func: String,
    /// Params: JSON, `@PATH` to read them from a file, or `-` from stdin (a JSON string starting with `@` is
    /// written quoted: '"@x"').
    #[arg(default_value = "null", value_name = "PARAMS")]
    pub params: String,
    /// Request id [default: a new UUID v7].
    #[arg(long)]
    pub id: Option<String>,
    /// How long to wait for the reply; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::duration::secs)]
    pub timeout: Duration,
    /// Join this W3C trace: the request's span becomes a child of this `traceparent`
    /// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`) [default: a new trace].
    #[arg(long, value_name = "TRACEPARENT", env = "TRACEPARENT", value_parser = parse_traceparent)]
    pub traceparent: Option<redcall::TraceParent>,
    /// W3C `tracestate` sent along with `--traceparent` (printable ASCII, at most 512 bytes).
    #[arg(long, value_name = "TRACESTATE", env = "TRACESTATE", requires = "traceparent", value_parser = parse_tracestate)]
    pub tracestate: Option<String>,
    /// Do not hand the request to a handler before this delay has passed (it is stored at once); the timeout
    /// counts from the send. A bare number is seconds.
    #[arg(long, value_name = "DURATION", value_parser = super::duration::secs)]
    pub delay: Option<Duration>,
    /// Print each progress update the handler reports (one JSON line on stderr each) while waiting.
    #[arg(long)]
    pub progress: bool,
}

/// `--traceparent`: a malformed one is a usage error (exit 2), naming what is wrong.
fn parse_traceparent(text: &str) -> Result<redcall::TraceParent, String> {
    redcall::TraceParent::parse(text).map_err(|e| e.to_string())
}

/// `--tracestate`: printable ASCII, 1 to 512 bytes.
fn parse_tracestate(text: &str) -> Result<String, String> {
    if redcall::trace::valid_tracestate(text) {
        Ok(text.to_owned())
    } else {
        Err("invalid tracestate: expected 1 to 512 bytes of printable ASCII".to_owned())
    }
}

/// Sends the request, waits, prints the reply.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let params = super::input::json_arg("params", &args.params)?;
    let timeout = args.timeout;
    let id = args.id.clone().unwrap_or_else(redcall::new_request_id);
    let requester = ctx.client.requester(&ctx.cli.service);
    let mut options = redcall::RequestOptions::default();
    if let Some(traceparent) = args.traceparent {
        options = options.trace(redcall::TraceContext {
            traceparent,
            tracestate: args.tracestate.clone(),
        });
    }
    if let Some(delay) = args.delay {
        options = options.delay(delay);
    }
    let pending = requester
        .send_with(Some(&id), &args.func, &params, timeout, &options)
        .await?;
    let reply: serde_json::Value = wait_with_progress(ctx, &id, pending, args.progress).await?;
    if ctx.cli.json {
        print_json(ctx.cli, &serde_json::json!({ "id": id, "reply": reply }));
    } else {
        print_json(ctx.cli, &reply);
    }
    Ok(())
}

/// Waits for the reply of `pending`, printing each progress update on stderr meanwhile when `progress`.
async fn wait_with_progress(
    ctx: &Context<'_>,
    id: &str,
    pending: redcall::PendingReply,
    progress: bool,
) -> redcall::Result<serde_json::Value> {
    if !progress {
        return pending.wait().await;
    }
    // The request is sent: a watch that cannot start (a Redis blip, an ACL without the progress channel) must not
    // give up on its reply, or running the command again would run the request twice.
    let mut updates = match pending.progress().await {
        Ok(updates) => updates,
        Err(err) => {
            tracing::warn!(%id, error = %err, "cannot watch progress; waiting for the reply only");
            return pending.wait().await;
        }
    };
    let wait = pending.wait();
    tokio::pin!(wait);
    let show = |update: redcall::Result<serde_json::Value>| match update {
        Ok(value) if ctx.cli.json => {
            errln!("{}", serde_json::json!({ "id": id, "progress": value }));
        }
        Ok(value) => errln!("progress: {value}"),
        Err(err) => errln!("progress: {err}"),
    };
    loop {
        tokio::select! {
            reply = &mut wait => {
                // Updates travel on their own connection and can arrive after the reply: show the ones still due.
                for update in updates.rest::<serde_json::Value>().await {
                    show(update);
                }
                return reply;
            }
            update = updates.next::<serde_json::Value>() => match update {
                Some(update) => show(update),
                // The progress connection is gone: the reply still comes.
                None => return wait.await,
            },
        }
    }
}
