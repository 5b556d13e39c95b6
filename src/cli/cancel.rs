//! `redcall cancel ID`: cancel a request by id (see [`redcall::Requester::cancel`]).

use super::{Context, print_json};

/// Arguments of `redcall cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Request id to cancel.
    pub id: String,
}

/// Cancels the request: its caller gets `Cancelled`, and it is not run (or its result is dropped).
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let requester = ctx.client.requester(&ctx.cli.service);
    requester.cancel(&args.id).await?;
    if ctx.cli.json {
        print_json(
            ctx.cli,
            &serde_json::json!({ "id": args.id, "cancelled": true }),
        );
    } else {
        errln!("cancelled {}", args.id);
    }
    Ok(())
}
