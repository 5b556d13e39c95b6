//! `redcall status ID`: the whole story of one request (what it asked for, replays, where it is now, its reply).

use redcall::admin::{Answer, RequestState, RequestStatus};
use redcall::protocol::ReplaySource;

use super::{Context, human_ms, msgpack_to_json, print_json};

/// Arguments of `redcall status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Request id to look up.
    pub id: String,
}

/// Prints the status of a request; an id without a record is "not found" (exit 5).
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let status = ctx.client.admin(&ctx.cli.service).status(&args.id).await?;
    if status.state == RequestState::Unknown {
        return Err(redcall::Error::NotFound {
            id: status.id.clone(),
        });
    }
    if ctx.cli.json {
        print_json(ctx.cli, &to_json(&status));
    } else {
        print_text(&status);
    }
    Ok(())
}

/// The status as JSON: the library's shape, with params and reply data decoded to JSON.
pub fn to_json(status: &RequestStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(request) = &status.request
        && let Some(map) = value.get_mut("request").and_then(|r| r.as_object_mut())
    {
        map.insert("params".to_owned(), msgpack_to_json(&request.params));
    }
    if let Some(reply) = &status.reply
        && let Some(map) = value.get_mut("reply").and_then(|r| r.as_object_mut())
    {
        let data = reply
            .data
            .as_deref()
            .map_or(serde_json::Value::Null, msgpack_to_json);
        map.insert("data".to_owned(), data);
    }
    if let Some(progress) = &status.last_progress
        && let Some(map) = value
            .get_mut("last_progress")
            .and_then(|r| r.as_object_mut())
    {
        map.insert("data".to_owned(), msgpack_to_json(&progress.data));
    }
    value
}

/// `in 3.2 s` or `3.2 s ago`, from `now_ms` to `at_ms`.
fn relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms >= now_ms {
        format!("in {}", human_ms(at_ms - now_ms))
    } else {
        format!("{} ago", human_ms(now_ms - at_ms))
    }
}

/// The state in one line for people.
fn describe_state(state: &RequestState) -> String {
    match state {
        RequestState::Scheduled { due_ms } => {
            format!("scheduled: due at {due_ms} ms since the epoch (Redis's clock)")
        }
        RequestState::Queued { group: Some(group) } => {
            format!("queued: not yet delivered to group {group:?}")
        }
        RequestState::Queued { group: None } => {
            "queued: the stream has no consumer group (no responder has started)".to_owned()
        }
        RequestState::Pending {
            group,
            consumer,
            idle_ms,
            deliveries,
        } => format!(
            "pending: held by consumer {consumer:?} of group {group:?}, idle {}, delivered {deliveries} time{}",
            human_ms(*idle_ms),
            if *deliveries == 1 { "" } else { "s" }
        ),
        RequestState::Answered { answer: Answer::Ok } => "answered: ok".to_owned(),
        RequestState::Answered {
            answer: Answer::Error { code, message },
        } => format!("answered: error [{code}] {message}"),
        RequestState::DeadLettered {
            dead_letter_entry_id: Some(dead),
            reason,
        } => {
            format!("dead-lettered ({reason}): dead letter {dead} (see `redcall dlq show {dead}`)")
        }
        RequestState::DeadLettered {
            dead_letter_entry_id: None,
            reason,
        } => format!("dead-lettered ({reason}): the dead letter is gone (purged) or was not found"),
        RequestState::Expired => "expired: the deadline passed without a reply".to_owned(),
        RequestState::Cancelled => "cancelled: cancelled by id before it was answered".to_owned(),
        RequestState::Acknowledged => {
            "acknowledged by every group, but no reply is stored".to_owned()
        }
        RequestState::InFlight => {
            "in flight: not answered, and its stream entry was not found (queued or being handled)"
                .to_owned()
        }
        RequestState::Unknown => "unknown: no record".to_owned(),
        other => other.as_str().to_owned(),
    }
}

fn print_text(status: &RequestStatus) {
    let now = status.server_time_ms;
    outln!(
        "request {} (service {:?}): {}",
        status.id,
        status.service,
        describe_state(&status.state)
    );
    if let Some(request) = &status.request {
        outln!(
            "  function    {} (params {} bytes)",
            request.func_key,
            request.params_size
        );
        outln!(
            "  params      {}",
            serde_json::to_string(&msgpack_to_json(&request.params)).unwrap_or_default()
        );
        outln!(
            "  created     {} ({})",
            request.created_ms,
            relative(request.created_ms, now)
        );
        outln!(
            "  deadline    {} ({})",
            request.deadline_ms,
            relative(request.deadline_ms, now)
        );
        if let Some(traceparent) = &request.traceparent {
            outln!(
                "  trace       {} (traceparent {traceparent})",
                traceparent.trace_id()
            );
        }
        if let Some(replay) = &request.replay {
            let from = match replay.source {
                ReplaySource::DeadLetter => "dead letter",
                ReplaySource::Range => "requests stream entry",
            };
            outln!(
                "  replayed    {} time{}, latest from {from} {} at {} ({})",
                replay.count,
                if replay.count == 1 { "" } else { "s" },
                replay.from,
                replay.at_ms,
                relative(replay.at_ms, now)
            );
        }
    }
    if let Some(entry) = &status.entry_id {
        outln!("  entry       {entry}");
    }
    if let Some(progress) = &status.last_progress {
        outln!(
            "  progress    {} ({})",
            msgpack_to_json(&progress.data),
            relative(progress.ts_ms, status.server_time_ms)
        );
    }
    if let Some(error) = &status.last_error {
        outln!("  last error  {error}");
    }
    if let Some(reply) = &status.reply {
        let status_name = serde_json::to_value(reply.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match &reply.data {
            Some(data) => outln!(
                "  reply       {status_name}: {}",
                serde_json::to_string(&msgpack_to_json(data)).unwrap_or_default()
            ),
            None => outln!(
                "  reply       {status_name} [{}] {}",
                reply.code.as_deref().unwrap_or(""),
                reply.message.as_deref().unwrap_or("")
            ),
        }
        outln!(
            "  replied at  {} ({})",
            reply.ts_ms,
            relative(reply.ts_ms, now)
        );
    }
}
