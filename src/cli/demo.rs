//! `redcall demo`: the three operations and a failure, in one process, against `--url`. Each step is a line of
//! text, or with `--json` a JSON line `{"event": ..., ...}` on stdout.

use std::time::Duration;

use serde_json::{Value, json};

use super::Context;

/// Arguments of `redcall demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints one step: `text` for people, `event` (a JSON object) under `--json`.
fn step(ctx: &Context<'_>, text: std::fmt::Arguments<'_>, event: Value) {
    if ctx.cli.json {
        super::print_json(ctx.cli, &event);
    } else {
        outln!("{text}");
    }
}

/// An error as the JSON of a step: kind, message and request id, as `--json` prints errors.
fn error_json(err: &redcall::Error) -> Value {
    json!({ "kind": err.kind().as_str(), "message": err.to_string(), "id": err.request_id() })
}

/// Runs a responder with the demo handlers on a fresh service, then shows a call, the by-hand flow
/// (request → call info → publish reply) and a handler error.
pub async fn run(ctx: &Context<'_>, _args: &Args) -> redcall::Result<()> {
    let suffix = redcall::new_request_id();
    let service = format!("demo-{}", &suffix[suffix.len() - 8..]);
    let manual_service = format!("{service}-manual");
    let redis = ctx.client.redis_connection();
    let builder = ctx.client.responder(&service);
    let responder = super::serve::demo_handlers(builder, &ctx.client, &service, redis)
        .start()
        .await?;
    step(
        ctx,
        format_args!("responder {} serves {service:?}", responder.consumer()),
        json!({ "event": "responder_started", "consumer": responder.consumer(), "service": service }),
    );

    let requester = ctx.client.requester(&service);
    let params = json!({"key1": "value1"});
    let reply: Value = requester
        .call("echo", &params, Duration::from_secs(10))
        .await?;
    step(
        ctx,
        format_args!("\n1. request: echo {params} -> {reply}"),
        json!({ "event": "request", "step": 1, "func_key": "echo", "params": params, "reply": reply }),
    );

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
    step(
        ctx,
        format_args!(
            "\n2. call info by id: {id} -> func_key {:?}, params {info_params}",
            info.func_key
        ),
        json!({
            "event": "call_info", "step": 2, "id": id, "service": manual_service,
            "func_key": info.func_key, "params": info_params,
        }),
    );
    let data = json!({"answer": 42});
    manual.publish_reply(&id, &data).await?;
    let answer: Value = pending.wait().await?;
    step(
        ctx,
        format_args!("3. publish reply: {id} <- {answer} (the waiting request got it)"),
        json!({ "event": "publish_reply", "step": 3, "id": id, "data": data, "waiter_got": answer }),
    );

    for (n, func_key, text) in [
        (4, "fail", "a handler error reaches the requester typed"),
        (5, "NoSuchFunction", "an unknown function key too, at once"),
    ] {
        let outcome = requester
            .call::<_, Value>(func_key, &json!({}), Duration::from_secs(10))
            .await;
        let gap = if n == 4 { "\n" } else { "" };
        match outcome {
            Ok(v) => step(
                ctx,
                format_args!("{gap}{n}. {func_key} unexpectedly answered {v}"),
                json!({ "event": "failure", "step": n, "func_key": func_key, "reply": v }),
            ),
            Err(err) => step(
                ctx,
                format_args!("{gap}{n}. {text}: {err}"),
                json!({ "event": "failure", "step": n, "func_key": func_key, "error": error_json(&err) }),
            ),
        }
    }

    responder.shutdown().await?;
    step(
        ctx,
        format_args!("\nresponder stopped cleanly"),
        json!({ "event": "responder_stopped" }),
    );

    // Leave no streams behind in a Redis that may be shared (records and replies expire on their own).
    let mut con = ctx.client.redis_connection();
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
