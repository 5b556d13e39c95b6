//! `redcall reply ID DATA_JSON`: the publish-reply operation.

use super::{Context, parse_json};

/// Arguments of `redcall reply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Request id to answer.
    pub id: String,
    /// Reply data as JSON.
    pub data: String,
    /// Answer with an error with this code instead (DATA_JSON is then the message, as a JSON string).
    #[arg(long)]
    pub error_code: Option<String>,
}

/// Publishes the reply (stored with its TTL, then published on the request's channel).
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let requester = ctx.client.requester(&ctx.cli.service);
    let data = parse_json("reply data", &args.data)?;
    match &args.error_code {
        Some(code) => {
            let message = data
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| data.to_string());
            requester.publish_error(&args.id, code, &message).await?;
        }
        None => requester.publish_reply(&args.id, &data).await?,
    }
    if !ctx.cli.json {
        errln!("replied to {}", args.id);
    }
    Ok(())
}
