//! `redcall call FUNC [PARAMS] [--id ID] [--timeout DURATION] [--traceparent TP [--tracestate TS]]`: the request operation. PARAMS is JSON, `@PATH`
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
    let reply: serde_json::Value = requester
        .send_with(Some(&id), &args.func, &params, timeout, &options)
        .await?
        .wait()
        .await?;
    if ctx.cli.json {
        print_json(ctx.cli, &serde_json::json!({ "id": id, "reply": reply }));
    } else {
        print_json(ctx.cli, &reply);
    }
    Ok(())
}
