//! However a call ends, it leaves no waiter and no subscription behind: answered, failed, timed out, its handle
//! dropped, or its caller giving up before or while its request is added.
//!
//! DESIGN 1 (the request's life: the handle of the non-blocking form releases its waiter and its reply channel's
//! subscription however it ends; a request given up before its batch went out is not sent).

mod common;

use std::time::Duration;

use common::{
    GENEROUS, TestEnv, WAIT, connect_router, start_responder, subscribed_channels, wait_until,
};
use redcall::ErrorKind;

#[tokio::test]
async fn in_flight_returns_to_zero() {
    let env = TestEnv::new();
    assert_eq!(env.client.in_flight(), 0);
    let requester = env.requester();

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
    assert_eq!(env.client.in_flight(), 3);
    drop(a);
    assert_eq!(env.client.in_flight(), 2);
    // A timeout releases too.
    assert_eq!(
        c.wait::<i32>().await.unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(env.client.in_flight(), 1);

    // Errors and successes release.
    let _responder = start_responder(&env.client, env.service()).await;
    assert_eq!(b.wait::<i32>().await.unwrap(), 2);
    let _ = requester
        .request::<_, ()>("leak-d", "fail", &0, GENEROUS)
        .await
        .unwrap_err();
    let _ = requester
        .request::<_, ()>("leak-e", "missing", &0, GENEROUS)
        .await
        .unwrap_err();
    assert_eq!(env.client.in_flight(), 0);
    // And the server-side subscriptions go away as well.
    let unsubscribed = wait_until(WAIT, || async {
        subscribed_channels(&env.server).is_empty()
    })
    .await;
    assert!(
        unsubscribed,
        "still subscribed: {}",
        subscribed_channels(&env.server)
    );
}

/// A caller that gives up (its future dropped) after its request was queued for the adder, but before the batch
/// went out, sends nothing and leaves no waiter or subscription behind.
#[tokio::test]
async fn callers_giving_up_before_their_batch_is_sent_send_nothing() {
    let env = TestEnv::new();
    let requester = env.requester();
    connect_router(&requester).await;

    // One poll each, then dropped: the request is queued, and on this single-threaded runtime the adder cannot run
    // before the drop.
    for i in 0..100u64 {
        let call = requester.call::<_, u64>("echo", &i, GENEROUS);
        let polled_once = futures_util::FutureExt::now_or_never(call);
        assert!(polled_once.is_none(), "call {i} cannot have been answered");
    }
    assert_eq!(env.client.in_flight(), 0, "waiters of callers that gave up");
    // A round trip on the router connection, after which the adder has seen the queue.
    connect_router(&requester).await;
    let stream_len = env.server.cli(&["XLEN", requester.keys().requests()]);
    assert_eq!(
        stream_len.trim(),
        "0",
        "requests of callers that gave up were sent"
    );
    assert_eq!(subscribed_channels(&env.server), "", "channels subscribed");
}

/// Callers that give up at any point while their request is being added leave no waiter and no subscription. On a
/// multi-thread runtime a caller can give up while its batch is on its way; an `UNSUBSCRIBE` sent at once could
/// then reach Redis before the batch's `SUBSCRIBE` and leave the channel subscribed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_while_adding_leave_no_waiter_or_subscription() {
    let env = TestEnv::new();
    let requester = env.requester();
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
    assert_eq!(env.client.in_flight(), 0, "waiters leaked");
    let unsubscribed = wait_until(WAIT, || async {
        subscribed_channels(&env.server).is_empty()
    })
    .await;
    let left = subscribed_channels(&env.server);
    assert!(
        unsubscribed,
        "{} channels still subscribed",
        left.lines().count()
    );
}
