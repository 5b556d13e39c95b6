//! Requests and replies the tests repeat: the shared handlers and their types, connecting a reply router, storing a
//! reply behind the library's back, and waiting for a service to serve again after a fault.

use std::time::{Duration, Instant};

use redcall::{Client, ErrorKind, HandlerError, RequestContext, Requester, Responder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{RedisServer, redis_con};

/// Long enough never to fire on a healthy (if busy) machine: tests that expect a reply use it.
pub const GENEROUS: Duration = Duration::from_secs(20);
/// Deadline for conditions the tests wait for.
pub const WAIT: Duration = Duration::from_secs(15);
/// A send that fails while Redis is down must fail at least this fast (its timeout is far longer).
pub const FAIL_FAST: Duration = Duration::from_secs(2);

/// The typed params of the `quote` handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub item: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub tags: Vec<String>,
}

/// The typed reply of the `quote` handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub item: String,
    pub total_cents: u64,
    pub tagged: bool,
}

/// Three blue, large widgets at 2.50 each.
pub fn order() -> Order {
    Order {
        item: "widget".into(),
        quantity: 3,
        unit_price_cents: 250,
        tags: vec!["blue".into(), "large".into()],
    }
}

/// A responder for `service` with the handlers these tests share: `quote` (typed), `echo`, `fail`.
pub async fn start_responder(client: &Client, service: &str) -> Responder {
    client
        .responder(service)
        .handler("quote", |_ctx: RequestContext, o: Order| async move {
            Ok::<_, HandlerError>(Quote {
                total_cents: o.unit_price_cents * u64::from(o.quantity),
                tagged: !o.tags.is_empty(),
                item: o.item,
            })
        })
        .handler(
            "echo",
            |_ctx: RequestContext, v: serde_json::Value| async move { Ok::<_, HandlerError>(v) },
        )
        .handler(
            "fail",
            |_ctx: RequestContext, _v: serde_json::Value| async move {
                Err::<(), _>(HandlerError::fail("out_of_stock", "no widgets left"))
            },
        )
        .start()
        .await
        .expect("start responder")
}

/// Connects a requester's reply router by looking up an id that does not exist, so that what a test does next
/// starts on a live connection.
pub async fn connect_router(requester: &Requester) {
    let err = requester.call_info("nobody").await.expect_err("no such id");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Stores a reply envelope for `id` the way a responder would, but publishes nothing.
pub async fn store_reply_silently(
    server: &RedisServer,
    requester: &Requester,
    id: &str,
    data: &str,
) {
    let reply = redcall::protocol::ReplyEnvelope::ok(id, redcall::protocol::encode(&data).unwrap());
    let mut con = redis_con(server).await;
    let () = redis::AsyncCommands::set(
        &mut con,
        requester.keys().reply(id),
        redcall::protocol::encode(&reply).unwrap(),
    )
    .await
    .unwrap();
}

/// Sends `echo` until one succeeds (Redis and both sides may still be recovering), then checks the reply.
/// Returns how long it took.
pub async fn fresh_request_succeeds(
    requester: &Requester,
    tag: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let mut attempt = 0;
    let mut last_error = String::new();
    while started.elapsed() < within {
        attempt += 1;
        let id = format!("{tag}-fresh-{}", redcall::new_request_id());
        match requester
            .request::<_, Value>(&id, "echo", &json!({"fresh": attempt}), within)
            .await
        {
            Ok(reply) => {
                assert_eq!(reply, json!({"fresh": attempt}));
                return started.elapsed();
            }
            Err(err) => {
                assert!(
                    super::unreachable_redis(&err),
                    "only Redis errors while recovering: {err}"
                );
                last_error = err.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("no fresh request succeeded within {within:?}; last error: {last_error}");
}
