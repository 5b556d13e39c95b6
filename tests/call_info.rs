//! Call info by id: a request's function key and params, read from its record in O(1) (one `GET`, no scan of the
//! stream) while it is pending, from any client; a clear "not found" for an unknown id or another service.
//!
//! DESIGN 2 (call info by id).

mod common;

use std::time::Duration;

use common::{GENEROUS, Order, TestEnv, connect_router, order};
use redcall::ErrorKind;

#[tokio::test]
async fn call_info_while_pending_and_not_found() {
    let env = TestEnv::new();
    let requester = env.requester();

    // No responder: the request stays pending.
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let pending = requester
        .send("request_123", "SomeFunction", &order(), GENEROUS)
        .await
        .expect("send");

    let info = requester.call_info("request_123").await.expect("info");
    assert_eq!(info.id, "request_123");
    assert_eq!(info.func_key, "SomeFunction");
    assert_eq!(info.params::<Order>().expect("typed params"), order());
    assert_eq!(
        info.params::<serde_json::Value>().expect("params as JSON"),
        serde_json::to_value(order()).unwrap()
    );
    assert!(info.created >= before, "created {:?}", info.created);
    let span = info
        .deadline
        .duration_since(info.created)
        .expect("deadline after created");
    assert!(
        span >= GENEROUS - Duration::from_millis(5) && span <= GENEROUS + Duration::from_millis(5),
        "deadline - created = {span:?}"
    );
    // From another client too (the record is in Redis, not in this process), in O(1): one GET of the record, no
    // read of the stream.
    let other = env.other_client().requester(env.service());
    connect_router(&other).await;
    env.server.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(other.call_info("request_123").await.unwrap(), info);
    let commands: Vec<String> = env
        .server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !l.starts_with("info:") && !l.starts_with("config|resetstat:"))
        .map(|l| l.split(',').next().unwrap_or(l).to_owned())
        .collect();
    assert_eq!(commands, ["get:calls=1"], "call_info ran more than one GET");

    let err = requester
        .call_info("no_such_id")
        .await
        .expect_err("unknown id");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no_such_id"), "{err}");
    // Same id in another service is a different request.
    let err = env
        .client
        .requester("other-service")
        .call_info("request_123")
        .await
        .expect_err("other service");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    drop(pending);
}
