//! Every error a caller can branch on, other than timeouts: a duplicate id, an unknown function, a handler's error,
//! params that do not decode, a payload over the limit, a handler that panics, a request Redis refuses to add.
//! Each is typed (`ErrorKind`), names the request id, and leaves Redis in a clean state.
//!
//! DESIGN 1 (an id in flight is refused; record and stream entry are added together or not at all), 5 (failures:
//! handler error → typed error reply, acked; unknown function → error reply and dead letter; a panic leaves the
//! entry pending and the responder running); Security (the payload limit is refused before anything is sent).

mod common;

use std::time::{Duration, Instant};

use common::{GENEROUS, Quote, TestEnv, WAIT, order, pending_count, start_responder, wait_until};
use redcall::{Error, ErrorKind, HandlerError, RequestContext, RetryPolicy};

#[tokio::test]
async fn duplicate_id_in_flight_is_refused() {
    let env = TestEnv::new();
    let requester = env.requester();

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
        env.client.in_flight(),
        1,
        "the refusal must not drop the first waiter"
    );

    // Another client (as another process would be).
    let other = env.other_client();
    let err = other
        .requester(env.service())
        .send("dup-1", "echo", &"third", GENEROUS)
        .await
        .expect_err("cross-client duplicate refused");
    assert_eq!(err.kind(), ErrorKind::DuplicateId, "{err}");
    assert_eq!(other.in_flight(), 0, "refused request left a waiter behind");

    // Nothing of the refused attempts reached the stream; the original request is intact and still answered.
    assert_eq!(env.server.cli(&["XLEN", requester.keys().requests()]), "1");
    let info = requester.call_info("dup-1").await.unwrap();
    assert_eq!(info.params::<String>().unwrap(), "first");
    let _responder = start_responder(&env.client, env.service()).await;
    let reply: String = first.wait().await.expect("first request answered");
    assert_eq!(reply, "first");
    assert_eq!(env.client.in_flight(), 0);

    // Done but within the record retention: still refused.
    let err = requester
        .request::<_, String>("dup-1", "echo", &"again", GENEROUS)
        .await
        .expect_err("finished id reused");
    assert_eq!(err.kind(), ErrorKind::DuplicateId, "{err}");
}

#[tokio::test]
async fn unknown_function_fails_fast() {
    let env = TestEnv::new();
    let _responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

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
    assert_eq!(
        env.server.cli(&["XLEN", requester.keys().dead_letters()]),
        "1"
    );
}

#[tokio::test]
async fn handler_error_carries_code_and_message() {
    let env = TestEnv::new();
    let _responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

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
        pending_count(&env.server, requester.keys().requests(), "workers") == 0
    })
    .await;
    assert!(acked, "failed request left pending");
}

#[tokio::test]
async fn invalid_params_is_a_handler_error() {
    let env = TestEnv::new();
    let _responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

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
    let env = TestEnv::with_client(|builder| builder.payload_limit(1024));
    let requester = env.requester();
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
    assert_eq!(env.server.cli(&["XLEN", requester.keys().requests()]), "0");
    assert_eq!(
        env.server
            .cli(&["EXISTS", &requester.keys().record("big-1")]),
        "0"
    );
    assert_eq!(env.client.in_flight(), 0);

    // A reply over the limit is refused too, and so is a handler's: the requester gets an error reply instead.
    let err = requester
        .publish_reply("big-2", &big)
        .await
        .expect_err("reply too large");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
    assert_eq!(
        env.server
            .cli(&["EXISTS", &requester.keys().reply("big-2")]),
        "0"
    );

    let _responder = env
        .responder()
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

/// A handler that panics before it even returns its future (in the handler function itself, not in the async
/// block) leaves the request pending with the panic as its last error, and the responder keeps serving.
///
/// The retry backoff is longer than the test: with the default (100 ms, doubling) the fourth delivery lands near
/// the caller's 700 ms deadline, and one that starts past it answers the request `expired` (clearing the last
/// error and acking the entry), which made this test fail on a loaded machine.
#[tokio::test]
async fn handler_panicking_before_its_future_leaves_the_request_pending() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .retry_backoff(RetryPolicy::exponential(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ))
        .handler("touchy", |_ctx: RequestContext, word: String| {
            assert_ne!(word, "boom", "touchy handler panicked synchronously");
            async move { Ok::<_, HandlerError>(word) }
        })
        .start()
        .await
        .unwrap();
    let requester = env.requester();

    let err = requester
        .request::<_, String>("sync-boom", "touchy", &"boom", Duration::from_millis(700))
        .await
        .expect_err("a panicking handler never answers");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let last_error = env
        .server
        .cli(&["GET", &requester.keys().last_error("sync-boom")]);
    assert!(
        last_error.contains("handler panicked") && last_error.contains("synchronously"),
        "last error: {last_error:?}"
    );
    let pending = pending_count(&env.server, requester.keys().requests(), "workers");
    assert_eq!(pending, 1, "the entry stays pending");

    let fine: String = requester
        .request("sync-fine", "touchy", &"fine", GENEROUS)
        .await
        .expect("the responder still serves");
    assert_eq!(fine, "fine");
}

/// A request Redis refuses to add (here the requests stream key holds a string, a broken deployment) leaves
/// nothing behind: no record to answer `call_info` with, nothing that would refuse the same id once the key is
/// fixed.
#[tokio::test]
async fn a_request_redis_refuses_to_add_leaves_nothing_behind() {
    let env = TestEnv::new();
    let requester = env.requester();
    env.server
        .cli(&["SET", requester.keys().requests(), "not a stream"]);

    let err = requester
        .send("refused-1", "echo", &1, Duration::from_secs(5))
        .await
        .expect_err("XADD onto a string fails");
    assert_eq!(err.kind(), ErrorKind::Redis, "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let err = requester
        .call_info("refused-1")
        .await
        .expect_err("no record of a request that was not added");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    env.server.cli(&["DEL", requester.keys().requests()]);
    let pending = requester
        .send("refused-1", "echo", &1, Duration::from_secs(5))
        .await
        .expect("the same id is accepted once the stream is fixed");
    assert_eq!(
        requester
            .call_info("refused-1")
            .await
            .expect("record")
            .func_key,
        "echo"
    );
    drop(pending);
}
