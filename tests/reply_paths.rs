//! The ways a reply reaches its caller, and the order that makes them safe: published before `wait` is called,
//! answered by hand (once, and only for a request that exists), a stale reply of a reused id ignored, a reply by
//! hand winning over the handler's, a reused id keeping its subscription, and every `SUBSCRIBE` run before its
//! request's `XADD` (read off `MONITOR`).
//!
//! DESIGN 1 (subscribe and see it confirmed, then add the request; a reply that arrives before the wait begins is
//! not lost), 3 (publish reply(id, data) is open to programs that answer by hand), 6 (answered once: the first
//! stored reply stays, a second reply is refused).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    GENEROUS, TestEnv, WAIT, connect_router, pending_count, store_reply_silently,
    subscribed_channels, wait_until,
};
use redcall::{ErrorKind, HandlerError, RequestContext};
use tokio::sync::Notify;

/// A reply published by another program before `wait` is called is kept for the handle.
#[tokio::test]
async fn reply_published_before_wait_is_not_lost() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send(
            "early-1",
            "SomeFunction",
            &serde_json::json!({"a": 1}),
            GENEROUS,
        )
        .await
        .expect("send");

    let other = env.other_client();
    other
        .requester(env.service())
        .publish_reply("early-1", &serde_json::json!({"answer": 42}))
        .await
        .expect("publish");

    // The published message reaches the router (which then drops the waiter from its map) before `wait` runs.
    let routed = wait_until(WAIT, || async { env.client.in_flight() == 0 }).await;
    assert!(routed, "the published reply never reached the waiter");
    // Remove the stored copy: the reply must come from the message received before `wait`.
    assert_eq!(
        env.server.cli(&["DEL", &requester.keys().reply("early-1")]),
        "1"
    );

    let reply: serde_json::Value = pending.wait().await.expect("reply kept for the handle");
    assert_eq!(reply, serde_json::json!({"answer": 42}));
}

/// Same flow as the original two programs, with a short pause instead of a condition: `send`, another client
/// publishes, `wait` later still gets the reply.
#[tokio::test]
async fn reply_before_wait_with_a_pause() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send("early-2", "SomeFunction", &1, GENEROUS)
        .await
        .unwrap();
    env.other_client()
        .requester(env.service())
        .publish_reply("early-2", &"done")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply: String = pending.wait().await.unwrap();
    assert_eq!(reply, "done");
}

#[tokio::test]
async fn second_publish_reply_is_refused() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send("twice-1", "SomeFunction", &1, GENEROUS)
        .await
        .unwrap();

    let answering = env.other_client().requester(env.service());
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
async fn publish_reply_to_unknown_request_is_refused() {
    let env = TestEnv::new();
    let requester = env.requester();
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
    let env = TestEnv::new();
    let requester = env.requester();
    // A reply left over from an earlier request with this id, whose record has expired.
    store_reply_silently(&env.server, &requester, "reused-1", "stale").await;

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
    let env = TestEnv::new();
    let service = env.service();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let responder = {
        let (started, release) = (started.clone(), release.clone());
        env.client
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
    let requester = env.client.requester(service);
    let pending = requester
        .send("race-1", "slow", &1, GENEROUS)
        .await
        .unwrap();
    started.notified().await;

    // Answered by hand while the handler (first delivery) still runs.
    env.other_client()
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
            let server = &env.server;
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
    let env = TestEnv::new();
    let requester = env.requester();
    connect_router(&requester).await;
    let id = "retried-1";

    // The first caller gives up; meanwhile its record goes away, so the id may be used again.
    let record_key = requester.keys().record(id);
    let first = requester.request::<_, String>(id, "echo", &"first", Duration::from_millis(300));
    let remove_record = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let () = redis::AsyncCommands::del(&mut env.redis().await, &record_key)
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
        let stats = env.server.cli(&["INFO", "commandstats"]);
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
        wait_until(WAIT, || async {
            subscribed_channels(&env.server).is_empty()
        })
        .await,
        "still subscribed: {}",
        subscribed_channels(&env.server)
    );
}

/// Redis runs each request's `SUBSCRIBE` before the `XADD` that makes the request visible to responders, for
/// generated ids (the adder's batches) and caller-given ids (the script) alike: read off `MONITOR`, which lists
/// commands in the order Redis ran them (those of a transaction or script when they run).
#[tokio::test]
async fn every_subscription_is_live_before_its_request_is_added() {
    let env = TestEnv::new();
    let requester = env.requester();
    connect_router(&requester).await;
    let log_path = env.server.dir().join("monitor.log");
    let log = std::fs::File::create(&log_path).expect("monitor log");
    let _monitor = common::ChildGuard::spawn(
        std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &env.server.port().to_string(),
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
