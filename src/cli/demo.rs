//! `redcall demo`: the three operations and a failure, in one process, against `--url`.

use std::time::Duration;

use serde_json::{Value, json};

use super::Context;

/// Arguments of `redcall demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs a responder with the demo handlers on a fresh service, then shows a call, the by-hand flow
/// (request → call info → publish reply) and a handler error.
pub async fn run(ctx: &Context<'_>, _args: &Args) -> redcall::Result<()> {
    let suffix = redcall::new_request_id();
    let service = format!("demo-{}", &suffix[suffix.len() - 8..]);
    let manual_service = format!("{service}-manual");
    let redis = super::serve::connect_plain(ctx.cli).await?;
    let builder = ctx.client.responder(&service);
    let responder = super::serve::demo_handlers(builder, &ctx.client, &service, redis)
        .start()
        .await?;
    outln!("responder {} serves {service:?}", responder.consumer());

    let requester = ctx.client.requester(&service);
    let params = json!({"key1": "value1"});
    let reply: Value = requester
        .call("echo", &params, Duration::from_secs(10))
        .await?;
    outln!("\n1. request: echo {params} -> {reply}");

    let manual = ctx.client.requester(&manual_service);
    let id = format!("request_{}", &suffix[suffix.len() - 6..]);
    let pending = manual
        .send(
            &id,
            "SomeFunction",
            &json!({"a": 1}),
            Duration::from_secs(10),
        )
        .await?;
    let info = manual.call_info(&id).await?;
    let info_params: Value = info.params()?;
    outln!(
        "\n2. call info by id: {id} -> func_key {:?}, params {info_params}",
        info.func_key
    );
    manual.publish_reply(&id, &json!({"answer": 42})).await?;
    let answer: Value = pending.wait().await?;
    outln!("3. publish reply: {id} <- {answer} (the waiting request got it)");

    match requester
        .call::<_, Value>("fail", &json!({}), Duration::from_secs(10))
        .await
    {
        Ok(v) => outln!("\n4. fail unexpectedly answered {v}"),
        Err(err) => outln!("\n4. a handler error reaches the requester typed: {err}"),
    }
    match requester
        .call::<_, Value>("NoSuchFunction", &json!({}), Duration::from_secs(10))
        .await
    {
        Ok(v) => outln!("5. NoSuchFunction unexpectedly answered {v}"),
        Err(err) => outln!("5. an unknown function key too, at once: {err}"),
    }

    responder.shutdown().await?;
    outln!("\nresponder stopped cleanly");

    // Leave no streams behind in a Redis that may be shared (records and replies expire on their own).
    let mut con = super::serve::connect_plain(ctx.cli).await?;
    let mut streams = Vec::new();
    for svc in [&service, &manual_service] {
        let keys = ctx.client.keys(svc);
        streams.push(keys.requests().to_owned());
        streams.push(keys.dead_letters().to_owned());
    }
    let _: i64 = redis::AsyncCommands::del(&mut con, &streams)
        .await
        .map_err(super::redis_error("removing the demo's streams"))?;
    Ok(())
}
