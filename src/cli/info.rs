//! `redcall info ID`: the call-info-by-id operation.

use std::time::UNIX_EPOCH;

use super::{Context, print_json};

/// Arguments of `redcall info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Request id to look up.
    pub id: String,
}

/// Prints the function key and params of a request.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let info = ctx
        .client
        .requester(&ctx.cli.service)
        .call_info(&args.id)
        .await?;
    let params: serde_json::Value = info.params()?;
    let millis = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    };
    print_json(
        ctx.cli,
        &serde_json::json!({
            "id": info.id,
            "func_key": info.func_key,
            "params": params,
            "deadline_ms": millis(info.deadline),
            "created_ms": millis(info.created),
            "replay": info.replay,
            "trace_id": info.trace.as_ref().map(|t| t.traceparent.trace_id()),
            "traceparent": info.trace.as_ref().map(|t| t.traceparent),
            "tracestate": info.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
        }),
    );
    Ok(())
}
