//! `redcall reply ID DATA`: the publish-reply operation. DATA is JSON, `@PATH` or `-` (see [`super::input`]).

use super::{Context, print_json};

/// Arguments of `redcall reply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Request id to answer.
    pub id: String,
    /// Reply data: JSON, `@PATH` to read it from a file, or `-` from stdin (a JSON string starting with `@` is
    /// written quoted: '"@x"').
    #[arg(value_name = "DATA")]
    pub data: String,
    /// Answer with an error with this code instead (DATA is then the message, as a JSON string).
    #[arg(long)]
    pub error_code: Option<String>,
}

/// Publishes the reply (stored with its TTL, then published on the request's channel).
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let requester = ctx.client.requester(&ctx.cli.service);
    let data = super::input::json_arg("reply data", &args.data)?;
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
    if ctx.cli.json {
        print_json(
            ctx.cli,
            &serde_json::json!({ "id": args.id, "replied": true, "error_code": args.error_code }),
        );
    } else {
        errln!("replied to {}", args.id);
    }
    Ok(())
}
