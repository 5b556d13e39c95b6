//! Round trips through the library API against a throwaway `redis-server`: typed params and replies, generated
//! ids, the non-blocking form, call info, every error a caller can branch on, concurrency, and the reply paths
//! (published before `wait`, answered by hand, stored after a timeout).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{
    RedisServer, connect_router, pending_count, redis_con, subscribed_channels, wait_until,
};
use redcall::{Client, Error, ErrorKind, HandlerError, RequestContext, Responder};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// Long enough never to fire on a healthy (if busy) machine: tests that expect a reply use it.
const GENEROUS: Duration = Duration::from_secs(20);
/// Deadline for conditions the tests wait for.
const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    item: String,
    quantity: u32,
    unit_price_cents: u64,
    tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    item: String,
    total_cents: u64,
    tagged: bool,
}

fn order() -> Order {
    Order {
        item: "widget".into(),
        quantity: 3,
        unit_price_cents: 250,
        tags: vec!["blue".into(), "large".into()],
    }
}

fn connect(server: &RedisServer) -> Client {
    Client::open(&server.url()).expect("client")
}

/// A responder for `service` with the handlers these tests share: `quote` (typed), `echo`, `fail`.
async fn start_responder(client: &Client, service: &str) -> Responder {
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

/// Stores a reply envelope for `id` the way a responder would, but publishes nothing.
async fn store_reply_silently(
    server: &RedisServer,
    requester: &redcall::Requester,
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

fn is_uuid_v7(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7) && id.len() == 36
}

#[tokio::test]
async fn typed_round_trip() {
    let server = RedisServer::start();
    let client = connect(&server);
    let responder = start_responder(&client, "typed").await;
    let requester = client.requester("typed");

    let quote: Quote = requester
        .request("order-1", "quote", &order(), GENEROUS)
        .await
        .expect("reply");
    assert_eq!(
        quote,
        Quote {
            item: "widget".into(),
            total_cents: 750,
            tagged: true,
        }
    );
    // The stored copy decodes to the same value.
    assert_eq!(
        requester.stored_reply::<Quote>("order-1").await.unwrap(),
        Some(quote)
    );
    assert_eq!(client.in_flight(), 0);
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn call_generates_uuid_v7_ids() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = start_responder(&client, "gen").await;
    let requester = client.requester("gen");

    let reply: serde_json::Value = requester
        .call("echo", &serde_json::json!({"n": 7}), GENEROUS)
        .await
        .expect("reply");
    assert_eq!(reply, serde_json::json!({"n": 7}));

    // The id the request went out with is in the stream entry's `id` field.
    let mut con = redis_con(&server).await;
    let range: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut con, requester.keys().requests())
            .await
            .unwrap();
    assert_eq!(range.ids.len(), 1);
    let id: String = range.ids[0].get("id").expect("id field");
    assert!(is_uuid_v7(&id), "not a UUID v7: {id}");
    assert!(requester.call_info(&id).await.is_ok(), "record under {id}");

    let (a, b) = (redcall::new_request_id(), redcall::new_request_id());
    assert!(is_uuid_v7(&a) && is_uuid_v7(&b));
    assert_ne!(a, b);
    assert!(a < b, "v7 ids sort by creation time: {a} !< {b}");
}

#[tokio::test]
async fn send_then_work_then_wait() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = start_responder(&client, "later").await;
    let requester = client.requester("later");

    let pending = requester
        .send("later-1", "quote", &order(), GENEROUS)
        .await
        .expect("send");
    assert_eq!(pending.id(), "later-1");

    // Other work while the first request is out, including another request on the same client.
    let other: serde_json::Value = requester
        .request("later-2", "echo", &"meanwhile", GENEROUS)
        .await
        .expect("second request");
    assert_eq!(other, "meanwhile");
    let info = requester.call_info("later-1").await.expect("info");
    assert_eq!(info.func_key, "quote");

    let quote: Quote = pending.wait().await.expect("reply");
    assert_eq!(quote.total_cents, 750);
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn call_info_while_pending_and_not_found() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("info");

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
    let other = connect(&server).requester("info");
    connect_router(&other).await;
    server.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(other.call_info("request_123").await.unwrap(), info);
    let commands: Vec<String> = server
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
    let err = client
        .requester("other-service")
        .call_info("request_123")
        .await
        .expect_err("other service");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    drop(pending);
}

#[tokio::test]
async fn timeout_names_the_id() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("nobody");

    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = requester
        .request::<_, serde_json::Value>("lonely-42", "echo", &1, timeout)
        .await
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        matches!(&err, Error::Timeout { id, timeout: t } if id == "lonely-42" && *t == timeout)
    );
    assert!(err.to_string().contains("lonely-42"), "{err}");
    assert!(elapsed >= timeout, "returned after {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(10),
        "took {elapsed:?}"
    );
    // The request is still stored: it may be handled later.
    assert_eq!(server.cli(&["XLEN", requester.keys().requests()]), "1");
    assert_eq!(client.in_flight(), 0);
}

/// A reply stored without a message reaching the waiter (as after a missed pub/sub message) is found by the one
/// look at the stored reply when the time is up: no timeout error.
#[tokio::test]
async fn timeout_looks_once_for_a_stored_reply() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("missed");
    let pending = requester
        .send("missed-1", "echo", &1, Duration::from_millis(500))
        .await
        .unwrap();

    store_reply_silently(&server, &requester, "missed-1", "from the store").await;

    let got: String = pending
        .wait()
        .await
        .expect("stored reply instead of a timeout");
    assert_eq!(got, "from the store");
    assert_eq!(client.in_flight(), 0);
}

/// A handler that started in time but finishes after the requester gave up: its reply is stored under the id.
#[tokio::test]
async fn late_reply_after_timeout_is_stored() {
    let server = RedisServer::start();
    let client = connect(&server);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let release = Arc::new(Notify::new());
    let release_h = release.clone();
    let _responder = client
        .responder("late")
        .handler("slow", move |_ctx: RequestContext, n: u32| {
            let started_tx = started_tx.clone();
            let release = release_h.clone();
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                release.notified().await;
                Ok::<_, HandlerError>(n + 1)
            }
        })
        .start()
        .await
        .expect("responder");
    let requester = client.requester("late");

    let pending = requester
        .send("late-1", "slow", &41u32, Duration::from_secs(3))
        .await
        .expect("send");
    tokio::time::timeout(WAIT, started_rx)
        .await
        .expect("handler started in time")
        .unwrap();
    let err = pending
        .wait::<u32>()
        .await
        .expect_err("handler is held back");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        requester
            .stored_reply::<u32>("late-1")
            .await
            .unwrap()
            .is_none()
    );

    release.notify_one();
    let stored = wait_until(WAIT, || async {
        requester
            .stored_reply::<u32>("late-1")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(stored, "the late reply was never stored");
    assert_eq!(
        requester.stored_reply::<u32>("late-1").await.unwrap(),
        Some(42)
    );
    assert_eq!(client.in_flight(), 0);
}

/// No responder until after the timeout: the responder that starts later does not run the expired request, but
/// answers it (stored reply `Expired`) and acknowledges it.
#[tokio::test]
async fn timeout_then_responder_stores_an_expired_reply() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("expired");
    let err = requester
        .request::<_, serde_json::Value>("exp-1", "count", &1, Duration::from_millis(300))
        .await
        .expect_err("no responder yet");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let runs = Arc::new(AtomicUsize::new(0));
    let runs_h = runs.clone();
    let _responder = client
        .responder("expired")
        .handler("count", move |_ctx: RequestContext, _n: u32| {
            let runs = runs_h.clone();
            async move { Ok::<_, HandlerError>(runs.fetch_add(1, Ordering::SeqCst)) }
        })
        .start()
        .await
        .expect("responder");

    let stored = wait_until(WAIT, || async {
        !matches!(
            requester.stored_reply::<serde_json::Value>("exp-1").await,
            Ok(None)
        )
    })
    .await;
    assert!(stored, "no reply stored for the expired request");
    let err = requester
        .stored_reply::<serde_json::Value>("exp-1")
        .await
        .expect_err("an expired reply");
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
    assert!(err.to_string().contains("exp-1"), "{err}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "expired request must not run"
    );
    // Acknowledged: nothing pending in the group.
    let acked = wait_until(WAIT, || async {
        pending_count(&server, requester.keys().requests(), "workers") == 0
    })
    .await;
    assert!(acked, "entry still pending");
}

#[tokio::test]
async fn duplicate_id_in_flight_is_refused() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("dup");

    let first = requester
        .send("dup-1", "echo", &"first", GENEROUS)
        .await
        .expect("first send");

    // Same process, same client.
    let err = requester
        .send("dup-1", "echo", &"second", GENEROUS)
        .await
        .expect_err("same-process duplicate refused");
    assert_eq!(err.kind(), ErrorKind::DuplicateId, "{err}");
    assert!(err.to_string().contains("dup-1"), "{err}");
    assert_eq!(
        client.in_flight(),
        1,
        "the refusal must not drop the first waiter"
    );

    // Another client (as another process would be).
    let other = connect(&server);
    let err = other
        .requester("dup")
        .send("dup-1", "echo", &"third", GENEROUS)
        .await
        .expect_err("cross-client duplicate refused");
    assert_eq!(err.kind(), ErrorKind::DuplicateId, "{err}");
    assert_eq!(other.in_flight(), 0, "refused request left a waiter behind");

    // Nothing of the refused attempts reached the stream; the original request is intact and still answered.
    assert_eq!(server.cli(&["XLEN", requester.keys().requests()]), "1");
    let info = requester.call_info("dup-1").await.unwrap();
    assert_eq!(info.params::<String>().unwrap(), "first");
    let _responder = start_responder(&client, "dup").await;
    let reply: String = first.wait().await.expect("first request answered");
    assert_eq!(reply, "first");
    assert_eq!(client.in_flight(), 0);

    // Done but within the record retention: still refused.
    let err = requester
        .request::<_, String>("dup-1", "echo", &"again", GENEROUS)
        .await
        .expect_err("finished id reused");
    assert_eq!(err.kind(), ErrorKind::DuplicateId, "{err}");
}

#[tokio::test]
async fn unknown_function_fails_fast() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = start_responder(&client, "unknown").await;
    let requester = client.requester("unknown");

    let started = Instant::now();
    let err = requester
        .request::<_, serde_json::Value>("unk-1", "NoSuchFunction", &1, GENEROUS)
        .await
        .expect_err("no handler");
    assert!(
        started.elapsed() < GENEROUS / 2,
        "took {:?}: looks like a timeout",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::UnknownFunction, "{err}");
    assert!(
        matches!(&err, Error::UnknownFunction { id, func_key } if id == "unk-1" && func_key == "NoSuchFunction"),
        "{err:?}"
    );
    // Recorded in the dead-letter stream.
    assert_eq!(server.cli(&["XLEN", requester.keys().dead_letters()]), "1");
}

#[tokio::test]
async fn handler_error_carries_code_and_message() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = start_responder(&client, "errors").await;
    let requester = client.requester("errors");

    let err = requester
        .request::<_, serde_json::Value>("err-1", "fail", &order(), GENEROUS)
        .await
        .expect_err("handler fails");
    assert_eq!(err.kind(), ErrorKind::Handler, "{err}");
    match &err {
        Error::Handler { id, code, message } => {
            assert_eq!(id, "err-1");
            assert_eq!(code, "out_of_stock");
            assert_eq!(message, "no widgets left");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert!(err.to_string().contains("err-1"), "{err}");
    // The entry is acknowledged: nothing pending.
    let acked = wait_until(WAIT, || async {
        pending_count(&server, requester.keys().requests(), "workers") == 0
    })
    .await;
    assert!(acked, "failed request left pending");
}

#[tokio::test]
async fn invalid_params_is_a_handler_error() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = start_responder(&client, "params").await;
    let requester = client.requester("params");

    // `quote` wants an Order; a string is not one.
    let err = requester
        .request::<_, Quote>("bad-1", "quote", &"not an order", GENEROUS)
        .await
        .expect_err("params do not decode");
    assert_eq!(err.kind(), ErrorKind::Handler, "{err}");
    match &err {
        Error::Handler { id, code, message } => {
            assert_eq!(id, "bad-1");
            assert_eq!(code, "invalid_params");
            assert!(!message.is_empty());
        }
        other => panic!("expected invalid_params, got {other:?}"),
    }
}

#[tokio::test]
async fn payload_too_large_is_refused_before_sending() {
    let server = RedisServer::start();
    let client = Client::builder(&server.url())
        .payload_limit(1024)
        .build()
        .unwrap();
    let requester = client.requester("big");
    let big = "x".repeat(2000);

    let err = requester
        .send("big-1", "echo", &big, GENEROUS)
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert!(
        matches!(err, Error::PayloadTooLarge { what: "request", size, limit: 1024 } if size > 2000),
        "{err:?}"
    );
    assert_eq!(server.cli(&["XLEN", requester.keys().requests()]), "0");
    assert_eq!(
        server.cli(&["EXISTS", &requester.keys().record("big-1")]),
        "0"
    );
    assert_eq!(client.in_flight(), 0);

    // A reply over the limit is refused too, and so is a handler's: the requester gets an error reply instead.
    let err = requester
        .publish_reply("big-2", &big)
        .await
        .expect_err("reply too large");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert_eq!(
        server.cli(&["EXISTS", &requester.keys().reply("big-2")]),
        "0"
    );

    let _responder = client
        .responder("big")
        .handler("grow", |_ctx: RequestContext, n: usize| async move {
            Ok::<_, HandlerError>("y".repeat(n))
        })
        .start()
        .await
        .unwrap();
    let err = requester
        .request::<_, String>("big-3", "grow", &4000usize, GENEROUS)
        .await
        .expect_err("handler reply too large");
    assert!(
        matches!(&err, Error::Handler { code, .. } if code == "payload_too_large"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_thousand_concurrent_requests_each_get_their_own_reply() {
    const N: u64 = 1000;
    let server = RedisServer::start();
    let client = connect(&server);
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let runs_h = runs.clone();
    let _responder = client
        .responder("many")
        .handler("echo_index", move |ctx: RequestContext, i: u64| {
            let runs = runs_h.clone();
            async move {
                *runs.lock().unwrap().entry(i).or_default() += 1;
                Ok::<_, HandlerError>((i, ctx.id))
            }
        })
        .start()
        .await
        .unwrap();
    let requester = client.requester("many");

    let calls = (0..N).map(|i| {
        let requester = requester.clone();
        async move {
            let id = format!("many-{i}");
            let reply: (u64, String) = requester
                .request(&id, "echo_index", &i, GENEROUS)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            (i, id, reply)
        }
    });
    let results = futures_util::future::join_all(calls).await;

    assert_eq!(results.len(), N as usize);
    for (i, id, (echoed, seen_id)) in results {
        assert_eq!(echoed, i, "request {i} got another request's reply");
        assert_eq!(seen_id, id);
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), N as usize, "some requests never ran");
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "handler ran more than once: {repeated:?}"
    );
    assert_eq!(client.in_flight(), 0, "waiters leaked");
    let unsubscribed = wait_until(WAIT, || async { subscribed_channels(&server).is_empty() }).await;
    assert!(unsubscribed, "reply channels still subscribed");
}

/// A handler that panics before it even returns its future (in the handler function itself, not in the async
/// block) leaves the request pending with the panic as its last error, and the responder keeps serving.
#[tokio::test]
async fn handler_panicking_before_its_future_leaves_the_request_pending() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = client
        .responder("sync-panic")
        .handler("touchy", |_ctx: RequestContext, word: String| {
            assert_ne!(word, "boom", "touchy handler panicked synchronously");
            async move { Ok::<_, HandlerError>(word) }
        })
        .start()
        .await
        .unwrap();
    let requester = client.requester("sync-panic");

    let err = requester
        .request::<_, String>("sync-boom", "touchy", &"boom", Duration::from_millis(700))
        .await
        .expect_err("a panicking handler never answers");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let last_error = server.cli(&["GET", &requester.keys().last_error("sync-boom")]);
    assert!(
        last_error.contains("handler panicked") && last_error.contains("synchronously"),
        "last error: {last_error:?}"
    );
    let pending = pending_count(&server, requester.keys().requests(), "workers");
    assert_eq!(pending, 1, "the entry stays pending");

    let fine: String = requester
        .request("sync-fine", "touchy", &"fine", GENEROUS)
        .await
        .expect("the responder still serves");
    assert_eq!(fine, "fine");
}

/// On a multi-thread runtime, handlers that compute without awaiting still run in parallel: each waits (on a
/// plain condition variable, blocking its thread) until both have started. Run one after the other, the first would
/// give up waiting after 10 s and answer "alone".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_handlers_run_in_parallel_on_a_multi_thread_runtime() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("parallel");
    // Both requests are queued before the responder starts, so one read delivers them together.
    let (first, second) = (
        requester
            .submit("meet", &1u8, GENEROUS)
            .await
            .expect("submit"),
        requester
            .submit("meet", &2u8, GENEROUS)
            .await
            .expect("submit"),
    );
    let arrivals = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
    let _responder = client
        .responder("parallel")
        .concurrency(4)
        .handler("meet", move |_ctx: RequestContext, _n: u8| {
            let (count, arrived) = &*arrivals;
            let mut count = count.lock().unwrap();
            *count += 1;
            arrived.notify_all();
            let (count, _) = arrived
                .wait_timeout_while(count, Duration::from_secs(10), |n| *n < 2)
                .unwrap();
            let met = if *count >= 2 { "together" } else { "alone" };
            async move { Ok::<_, HandlerError>(met.to_owned()) }
        })
        .start()
        .await
        .unwrap();
    for pending in [first, second] {
        let met: String = pending.wait().await.expect("reply");
        assert_eq!(met, "together", "the handlers ran one after the other");
    }
}

/// A caller that gives up (its future dropped) after its request was queued for the adder, but before the batch
/// went out, sends nothing and leaves no waiter or subscription behind.
#[tokio::test]
async fn callers_giving_up_before_their_batch_is_sent_send_nothing() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("gave-up-early");
    connect_router(&requester).await;

    // One poll each, then dropped: the request is queued, and on this single-threaded runtime the adder cannot run
    // before the drop.
    for i in 0..100u64 {
        let call = requester.call::<_, u64>("echo", &i, GENEROUS);
        let polled_once = futures_util::FutureExt::now_or_never(call);
        assert!(polled_once.is_none(), "call {i} cannot have been answered");
    }
    assert_eq!(client.in_flight(), 0, "waiters of callers that gave up");
    // A round trip on the router connection, after which the adder has seen the queue.
    connect_router(&requester).await;
    let stream_len = server.cli(&["XLEN", requester.keys().requests()]);
    assert_eq!(
        stream_len.trim(),
        "0",
        "requests of callers that gave up were sent"
    );
    assert_eq!(subscribed_channels(&server), "", "channels subscribed");
}

/// Callers that give up at any point while their request is being added leave no waiter and no subscription. On a
/// multi-thread runtime a caller can give up while its batch is on its way; an `UNSUBSCRIBE` sent at once could
/// then reach Redis before the batch's `SUBSCRIBE` and leave the channel subscribed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_while_adding_leave_no_waiter_or_subscription() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("gave-up");
    connect_router(&requester).await;

    // Dropped at all sorts of points: before, during or after their batch's round trip.
    let calls = (0..400u64).map(|i| {
        let requester = requester.clone();
        async move {
            let call = requester.call::<_, u64>("echo", &i, GENEROUS);
            let _ = tokio::time::timeout(Duration::from_micros(25 * (i % 40)), call).await;
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(client.in_flight(), 0, "waiters leaked");
    let unsubscribed = wait_until(WAIT, || async { subscribed_channels(&server).is_empty() }).await;
    let left = subscribed_channels(&server);
    assert!(
        unsubscribed,
        "{} channels still subscribed",
        left.lines().count()
    );
}

/// A handler sees its request's deadline (the requester's send time plus the timeout), the time left until it, and
/// which delivery it is running.
#[tokio::test]
async fn handlers_see_their_deadline_and_delivery() {
    let server = RedisServer::start();
    let client = connect(&server);
    let _responder = client
        .responder("deadline")
        .handler("when", |ctx: RequestContext, _: ()| async move {
            let deadline_ms = ctx
                .deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            Ok::<_, HandlerError>((
                ctx.delivery,
                deadline_ms,
                ctx.remaining().as_millis() as u64,
            ))
        })
        .start()
        .await
        .unwrap();
    let requester = client.requester("deadline");
    let timeout = Duration::from_secs(5);
    let since_epoch = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = since_epoch();
    let (delivery, deadline_ms, remaining_ms): (u64, u64, u64) =
        requester.call("when", &(), timeout).await.expect("reply");
    let after = since_epoch();
    assert_eq!(delivery, 1);
    let timeout_ms = timeout.as_millis() as u64;
    assert!(
        (before + timeout_ms..=after + timeout_ms).contains(&deadline_ms),
        "deadline {deadline_ms} not send time + {timeout_ms} ms (sent between {before} and {after})"
    );
    assert!(
        remaining_ms > 0 && remaining_ms <= timeout_ms,
        "time left {remaining_ms} ms"
    );
}

/// Namespaces keep deployments apart in one Redis: a responder in one namespace does not see requests made to the
/// same service in another, and their keys differ.
#[tokio::test]
async fn namespaces_keep_deployments_apart() {
    let server = RedisServer::start();
    let blue = Client::builder(&server.url())
        .namespace("blue")
        .build()
        .unwrap();
    let green = Client::builder(&server.url())
        .namespace("green")
        .build()
        .unwrap();
    let _blue_responder = start_responder(&blue, "shared-name").await;
    let (blue_requester, green_requester) = (
        blue.requester("shared-name"),
        green.requester("shared-name"),
    );
    assert_ne!(
        blue_requester.keys().requests(),
        green_requester.keys().requests()
    );

    let echoed: serde_json::Value = blue_requester
        .call("echo", &"blue", GENEROUS)
        .await
        .expect("served in its own namespace");
    assert_eq!(echoed, "blue");
    let err = green_requester
        .call::<_, serde_json::Value>("echo", &"green", Duration::from_millis(700))
        .await
        .expect_err("no responder in this namespace");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let green_pending = server.cli(&["XLEN", green_requester.keys().requests()]);
    assert_eq!(
        green_pending.trim(),
        "1",
        "the other namespace's request is still queued, untouched"
    );
}

/// When only the reply router's connection drops (Redis stays up), the router reconnects, subscribes again and
/// reads the stored replies: a reply stored while it was away reaches its caller long before the timeout.
#[tokio::test]
async fn router_reconnect_delivers_a_reply_stored_meanwhile() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("router-drop");
    let pending = requester
        .send("router-drop-1", "echo", &"x", Duration::from_secs(60))
        .await
        .expect("send");
    // The router's connection is the one subscribed to the reply channel.
    let clients = server.cli(&["CLIENT", "LIST"]);
    let router_ids: Vec<&str> = clients
        .lines()
        .filter(|line| {
            line.split(' ')
                .any(|field| field.starts_with("sub=") && field != "sub=0")
        })
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .collect();
    assert_eq!(router_ids.len(), 1, "one subscribed connection: {clients}");
    // Stored without a message, then the connection is cut: only the reconnect's look at stored replies finds it.
    store_reply_silently(&server, &requester, "router-drop-1", "stored meanwhile").await;
    server.cli(&["CLIENT", "KILL", "ID", router_ids[0]]);

    let started = Instant::now();
    let reply: String = pending.wait().await.expect("the stored reply");
    assert_eq!(reply, "stored meanwhile");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the reply came only after {:?}: found at the timeout's last look, not by the reconnect",
        started.elapsed()
    );
}

/// Calls of a Redis command so far, from `INFO commandstats`.
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// Requests with generated ids are added in batches: concurrent callers share one transaction, and each request
/// still gets its own record, stream entry and reply.
#[tokio::test]
async fn generated_ids_are_added_in_batches_each_with_its_own_record_and_reply() {
    const N: u64 = 1000;
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("batched");
    // Connects the reply router, so the sends below start together.
    connect_router(&requester).await;
    let transactions_before = command_calls(&server, "exec");

    let sends = (0..N).map(|i| {
        let requester = requester.clone();
        async move {
            requester
                .submit("echo_index", &i, GENEROUS)
                .await
                .unwrap_or_else(|e| panic!("submit {i}: {e}"))
        }
    });
    let pending = futures_util::future::join_all(sends).await;
    let transactions = command_calls(&server, "exec") - transactions_before;
    assert!(
        transactions * 4 <= N,
        "{transactions} transactions for {N} requests: they were not batched"
    );
    let stream_len = server.cli(&["XLEN", requester.keys().requests()]);
    assert_eq!(
        stream_len.trim(),
        N.to_string(),
        "one stream entry per request"
    );
    for (i, p) in pending.iter().enumerate() {
        let info = requester
            .call_info(p.id())
            .await
            .expect("a record per request");
        assert_eq!(info.func_key, "echo_index");
        assert_eq!(
            info.params::<u64>().expect("params"),
            i as u64,
            "{}",
            p.id()
        );
    }

    let _responder = client
        .responder("batched")
        .handler("echo_index", |ctx: RequestContext, i: u64| async move {
            Ok::<_, HandlerError>((i, ctx.id))
        })
        .start()
        .await
        .unwrap();
    for (i, p) in pending.into_iter().enumerate() {
        let id = p.id().to_owned();
        let (echoed, seen_id): (u64, String) = p.wait().await.expect("reply");
        assert_eq!(echoed, i as u64, "request {i} got another request's reply");
        assert_eq!(seen_id, id);
    }
    assert_eq!(client.in_flight(), 0, "waiters leaked");
}

/// A reply published by another program before `wait` is called is kept for the handle.
#[tokio::test]
async fn reply_published_before_wait_is_not_lost() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("early");
    let pending = requester
        .send(
            "early-1",
            "SomeFunction",
            &serde_json::json!({"a": 1}),
            GENEROUS,
        )
        .await
        .expect("send");

    let other = connect(&server);
    other
        .requester("early")
        .publish_reply("early-1", &serde_json::json!({"answer": 42}))
        .await
        .expect("publish");

    // The published message reaches the router (which then drops the waiter from its map) before `wait` runs.
    let routed = wait_until(WAIT, || async { client.in_flight() == 0 }).await;
    assert!(routed, "the published reply never reached the waiter");
    // Remove the stored copy: the reply must come from the message received before `wait`.
    assert_eq!(
        server.cli(&["DEL", &requester.keys().reply("early-1")]),
        "1"
    );

    let reply: serde_json::Value = pending.wait().await.expect("reply kept for the handle");
    assert_eq!(reply, serde_json::json!({"answer": 42}));
}

/// Same flow as the original two programs, with a short pause instead of a condition: `send`, another client
/// publishes, `wait` later still gets the reply.
#[tokio::test]
async fn reply_before_wait_with_a_pause() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("early2");
    let pending = requester
        .send("early-2", "SomeFunction", &1, GENEROUS)
        .await
        .unwrap();
    connect(&server)
        .requester("early2")
        .publish_reply("early-2", &"done")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply: String = pending.wait().await.unwrap();
    assert_eq!(reply, "done");
}

#[tokio::test]
async fn second_publish_reply_is_refused() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("twice");
    let pending = requester
        .send("twice-1", "SomeFunction", &1, GENEROUS)
        .await
        .unwrap();

    let answering = connect(&server).requester("twice");
    answering
        .publish_reply("twice-1", &"first")
        .await
        .expect("first reply");
    let err = answering
        .publish_reply("twice-1", &"second")
        .await
        .expect_err("second reply refused");
    assert_eq!(err.kind(), ErrorKind::AlreadyAnswered, "{err}");
    assert!(err.to_string().contains("twice-1"), "{err}");
    let err = answering
        .publish_error("twice-1", "late", "too late")
        .await
        .expect_err("error reply after a reply refused");
    assert_eq!(err.kind(), ErrorKind::AlreadyAnswered, "{err}");

    let reply: String = pending.wait().await.unwrap();
    assert_eq!(reply, "first");
    assert_eq!(
        requester
            .stored_reply::<String>("twice-1")
            .await
            .unwrap()
            .as_deref(),
        Some("first")
    );
}

#[tokio::test]
async fn in_flight_returns_to_zero() {
    let server = RedisServer::start();
    let client = connect(&server);
    assert_eq!(client.in_flight(), 0);
    let requester = client.requester("leak");

    // Pending handles count; dropping one without waiting releases it.
    let a = requester
        .send("leak-a", "echo", &1, GENEROUS)
        .await
        .unwrap();
    let b = requester
        .send("leak-b", "echo", &2, GENEROUS)
        .await
        .unwrap();
    let c = requester
        .send("leak-c", "echo", &3, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(client.in_flight(), 3);
    drop(a);
    assert_eq!(client.in_flight(), 2);
    // A timeout releases too.
    assert_eq!(
        c.wait::<i32>().await.unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(client.in_flight(), 1);

    // Errors and successes release.
    let _responder = start_responder(&client, "leak").await;
    assert_eq!(b.wait::<i32>().await.unwrap(), 2);
    let _ = requester
        .request::<_, ()>("leak-d", "fail", &0, GENEROUS)
        .await
        .unwrap_err();
    let _ = requester
        .request::<_, ()>("leak-e", "missing", &0, GENEROUS)
        .await
        .unwrap_err();
    assert_eq!(client.in_flight(), 0);
    // And the server-side subscriptions go away as well.
    let unsubscribed = wait_until(WAIT, || async { subscribed_channels(&server).is_empty() }).await;
    assert!(
        unsubscribed,
        "still subscribed: {}",
        subscribed_channels(&server)
    );
}

#[tokio::test]
async fn publish_reply_to_unknown_request_is_refused() {
    let server = RedisServer::start();
    let requester = connect(&server).requester("typo");
    let err = requester
        .publish_reply("never-requested", &"answer")
        .await
        .expect_err("no such request");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        requester
            .stored_reply::<String>("never-requested")
            .await
            .unwrap(),
        None,
        "nothing was stored for a future request to pick up"
    );
}

#[tokio::test]
async fn a_fresh_request_does_not_see_a_stale_reply_of_its_id() {
    let server = RedisServer::start();
    let requester = connect(&server).requester("stale");
    // A reply left over from an earlier request with this id, whose record has expired.
    store_reply_silently(&server, &requester, "reused-1", "stale").await;

    let pending = requester
        .send("reused-1", "SomeFunction", &1, GENEROUS)
        .await
        .unwrap();
    assert_eq!(
        requester.stored_reply::<String>("reused-1").await.unwrap(),
        None,
        "adding the request cleared the stale reply"
    );
    requester.publish_reply("reused-1", &"fresh").await.unwrap();
    let reply: String = pending.wait().await.unwrap();
    assert_eq!(reply, "fresh");
}

#[tokio::test]
async fn a_reply_by_hand_during_the_handler_wins_over_the_handlers_reply() {
    let server = RedisServer::start();
    let client = connect(&server);
    let service = "first-wins";
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let responder = {
        let (started, release) = (started.clone(), release.clone());
        client
            .responder(service)
            .handler(
                "slow",
                move |_ctx: RequestContext, _v: serde_json::Value| {
                    let (started, release) = (started.clone(), release.clone());
                    async move {
                        started.notify_one();
                        release.notified().await;
                        Ok::<_, HandlerError>("from the handler".to_owned())
                    }
                },
            )
            .start()
            .await
            .expect("start responder")
    };
    let requester = client.requester(service);
    let pending = requester
        .send("race-1", "slow", &1, GENEROUS)
        .await
        .unwrap();
    started.notified().await;

    // Answered by hand while the handler (first delivery) still runs.
    connect(&server)
        .requester(service)
        .publish_reply("race-1", &"by hand")
        .await
        .expect("reply by hand");
    let got: String = pending.wait().await.unwrap();
    assert_eq!(got, "by hand");

    // The handler finishes now; its answer must not replace the stored one, and the entry is acked.
    release.notify_one();
    let stream = requester.keys().requests().to_owned();
    assert!(
        wait_until(WAIT, || {
            let server = &server;
            let stream = stream.clone();
            async move { pending_count(server, &stream, "workers") == 0 }
        })
        .await,
        "the handler's answer acked the entry"
    );
    assert_eq!(
        requester
            .stored_reply::<String>("race-1")
            .await
            .unwrap()
            .as_deref(),
        Some("by hand"),
        "the first stored reply stays"
    );
    responder.shutdown().await.expect("shutdown");
}

/// An id used again while the old caller's `UNSUBSCRIBE` is still queued (here: a caller retrying an id whose
/// record is gone) must not lose its subscription to that late `UNSUBSCRIBE`: the reply comes at once, not at the
/// timeout's last look.
#[tokio::test]
async fn an_id_reused_before_its_unsubscribe_went_out_still_gets_its_reply() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("reuse");
    connect_router(&requester).await;
    let id = "retried-1";

    // The first caller gives up; meanwhile its record goes away, so the id may be used again.
    let record_key = requester.keys().record(id);
    let first = requester.request::<_, String>(id, "echo", &"first", Duration::from_millis(300));
    let remove_record = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let () = redis::AsyncCommands::del(&mut redis_con(&server).await, &record_key)
            .await
            .unwrap();
    };
    let (first, ()) = tokio::join!(first, remove_record);
    assert_eq!(
        first.expect_err("nobody answers").kind(),
        ErrorKind::Timeout
    );

    // Without yielding, so the router has not sent the first caller's UNSUBSCRIBE yet: the second caller's
    // SUBSCRIBE goes out before it.
    let second = requester.request::<_, String>(id, "echo", &"second", GENEROUS);
    tokio::pin!(second);
    assert!(futures_util::poll!(&mut second).is_pending());

    // Once the first caller's UNSUBSCRIBE has been run, the reply is published.
    let unsubscribes = || {
        let stats = server.cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_unsubscribe:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let answer = async {
        assert!(
            wait_until(WAIT, || async { unsubscribes() >= 1 }).await,
            "the first caller was never unsubscribed"
        );
        requester
            .publish_reply(id, &"answered")
            .await
            .expect("publish the reply");
    };
    let started = Instant::now();
    let (got, ()) = tokio::join!(&mut second, answer);
    assert_eq!(got.expect("the second caller's reply"), "answered");
    assert!(
        started.elapsed() < GENEROUS / 2,
        "the reply came only at the timeout's last look, after {:?}",
        started.elapsed()
    );
    // Nothing stays subscribed once the second caller has its reply.
    assert!(
        wait_until(WAIT, || async { subscribed_channels(&server).is_empty() }).await,
        "still subscribed: {}",
        subscribed_channels(&server)
    );
}

/// Redis runs each request's `SUBSCRIBE` before the `XADD` that makes the request visible to responders, for
/// generated ids (the adder's batches) and caller-given ids (the script) alike: read off `MONITOR`, which lists
/// commands in the order Redis ran them (those of a transaction or script when they run).
#[tokio::test]
async fn every_subscription_is_live_before_its_request_is_added() {
    let server = RedisServer::start();
    let client = connect(&server);
    let requester = client.requester("ordered");
    connect_router(&requester).await;
    let log_path = server.dir().join("monitor.log");
    let log = std::fs::File::create(&log_path).expect("monitor log");
    let _monitor = common::ChildGuard::spawn(
        std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port().to_string(),
                "MONITOR",
            ])
            .stdout(log),
    );
    let monitor_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(WAIT, || async { monitor_log().starts_with("OK") }).await,
        "MONITOR did not start"
    );

    // Concurrent, so that the adder batches them.
    let generated = (0..20).map(|_| requester.submit("echo", &1, GENEROUS));
    let given_ids: Vec<String> = (0..20).map(|i| format!("given-{i}")).collect();
    let given = given_ids
        .iter()
        .map(|id| requester.send(id, "echo", &1, GENEROUS));
    let (generated, given) = tokio::join!(
        futures_util::future::join_all(generated),
        futures_util::future::join_all(given)
    );
    let pending: Vec<redcall::PendingReply> = generated
        .into_iter()
        .chain(given)
        .map(|p| p.expect("request added"))
        .collect();
    let ids: Vec<String> = pending.iter().map(|p| p.id().to_owned()).collect();
    let added = |log: &str, id: &str| {
        log.lines()
            .position(|l| l.contains("\"XADD\"") && l.contains(&format!("\"{id}\"")))
    };
    assert!(
        wait_until(WAIT, || async {
            let log = monitor_log();
            ids.iter().all(|id| added(&log, id).is_some())
        })
        .await,
        "MONITOR never showed every XADD:\n{}",
        monitor_log()
    );

    let log = monitor_log();
    for id in &ids {
        let channel = requester.keys().reply_channel(id);
        let subscribed = log
            .lines()
            .position(|l| l.contains("\"SUBSCRIBE\"") && l.contains(&format!("\"{channel}\"")))
            .unwrap_or_else(|| panic!("no SUBSCRIBE for {id}:\n{log}"));
        let added = added(&log, id).expect("seen above");
        assert!(
            subscribed < added,
            "{id}: XADD (line {added}) ran before SUBSCRIBE (line {subscribed}):\n{log}"
        );
    }
    drop(pending);
}
