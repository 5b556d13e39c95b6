//! Round trips through the library API against a throwaway `redis-server`: typed params and replies, generated
//! UUID v7 ids and the batches they are added in, the non-blocking form (send, other work, wait), a thousand
//! concurrent requests, handlers in parallel, and namespaces.
//!
//! DESIGN 1 (the request's life: request, generated ids, the non-blocking form), 3 (responding: typed handlers by
//! function key, bounded concurrency), 6 (answered once: under load each handler runs exactly once); the wire
//! format (params and replies are any serde value) and Words (namespaces keep deployments apart).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    GENEROUS, Quote, RedisServer, TestEnv, WAIT, command_calls, connect_router, order,
    start_responder, subscribed_channels, wait_until,
};
use redcall::{Client, ErrorKind, HandlerError, RequestContext};

fn is_uuid_v7(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7) && id.len() == 36
}

#[tokio::test]
async fn typed_round_trip() {
    let env = TestEnv::new();
    let responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

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
    assert_eq!(env.client.in_flight(), 0);
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn call_generates_uuid_v7_ids() {
    let env = TestEnv::new();
    let _responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

    let reply: serde_json::Value = requester
        .call("echo", &serde_json::json!({"n": 7}), GENEROUS)
        .await
        .expect("reply");
    assert_eq!(reply, serde_json::json!({"n": 7}));

    // The id the request went out with is in the stream entry's `id` field.
    let mut con = env.redis().await;
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
    let env = TestEnv::new();
    let _responder = start_responder(&env.client, env.service()).await;
    let requester = env.requester();

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
    assert_eq!(env.client.in_flight(), 0);
}

#[tokio::test]
async fn a_thousand_concurrent_requests_each_get_their_own_reply() {
    const N: u64 = 1000;
    let env = TestEnv::new();
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let runs_h = runs.clone();
    let _responder = env
        .responder()
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
    let requester = env.requester();

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
    assert_eq!(env.client.in_flight(), 0, "waiters leaked");
    let unsubscribed = wait_until(WAIT, || async {
        subscribed_channels(&env.server).is_empty()
    })
    .await;
    assert!(unsubscribed, "reply channels still subscribed");
}

/// Requests with generated ids are added in batches: concurrent callers share one transaction, and each request
/// still gets its own record, stream entry and reply.
#[tokio::test]
async fn generated_ids_are_added_in_batches_each_with_its_own_record_and_reply() {
    const N: u64 = 1000;
    let env = TestEnv::new();
    let requester = env.requester();
    // Connects the reply router, so the sends below start together.
    connect_router(&requester).await;
    let transactions_before = command_calls(&env.server, "exec");

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
    let transactions = command_calls(&env.server, "exec") - transactions_before;
    assert!(
        transactions * 4 <= N,
        "{transactions} transactions for {N} requests: they were not batched"
    );
    let stream_len = env.server.cli(&["XLEN", requester.keys().requests()]);
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

    let _responder = env
        .responder()
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
    assert_eq!(env.client.in_flight(), 0, "waiters leaked");
}

/// On a multi-thread runtime, handlers that compute without awaiting still run in parallel: each waits (on a
/// plain condition variable, blocking its thread) until both have started. Run one after the other, the first would
/// give up waiting after 10 s and answer "alone".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_handlers_run_in_parallel_on_a_multi_thread_runtime() {
    let env = TestEnv::new();
    let requester = env.requester();
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
    let _responder = env
        .responder()
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
