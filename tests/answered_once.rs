//! Answered once on every delivery (DESIGN 6): a request with a stored reply is answered from it without running
//! the handler again — also on a first delivery: to a group destroyed and created again over the stream's
//! history, to a second group added to a stream with history, and of a request answered by hand before any
//! responder read it (before it started, or while it was busy).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RedisServer, pending_count, wait_until};
use redcall::{Client, HandlerError, RequestContext, Responder};

/// Long enough never to fire on a healthy machine.
const GENEROUS: Duration = Duration::from_secs(20);

/// A responder in `group` whose `count` handler counts its runs in `runs` and answers with its params.
async fn counting_responder(
    client: &Client,
    service: &str,
    group: &str,
    runs: &Arc<AtomicUsize>,
) -> Responder {
    let runs = runs.clone();
    client
        .responder(service)
        .group(group)
        .handler("count", move |_ctx: RequestContext, n: u32| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(n)
            }
        })
        .start()
        .await
        .expect("responder")
}

/// `XINFO GROUPS` of `stream`: whether `group` has read everything and holds nothing pending.
fn group_caught_up(server: &RedisServer, stream: &str, group: &str) -> bool {
    let out = server.cli(&["XINFO", "GROUPS", stream]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let Some(at) = lines
        .windows(2)
        .position(|w| w[0] == "name" && w[1] == group)
    else {
        return false;
    };
    let field = |name: &str| {
        lines[at..]
            .windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].to_owned())
    };
    field("pending").as_deref() == Some("0") && field("lag").as_deref() == Some("0")
}

async fn answer_three(client: &Client, service: &str) {
    let requester = client.requester(service);
    for n in 0..3u32 {
        let got: u32 = requester
            .request(&format!("r{n}"), "count", &n, GENEROUS)
            .await
            .expect("answered");
        assert_eq!(got, n);
    }
}

#[tokio::test]
async fn a_recreated_group_does_not_run_answered_requests_again() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let runs = Arc::new(AtomicUsize::new(0));
    let responder = counting_responder(&client, "recreated", "workers", &runs).await;
    answer_three(&client, "recreated").await;
    responder.shutdown().await.expect("shutdown");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // The group is lost (destroyed here; a restart that kept the stream but not the group is the same): the next
    // responder creates it at 0, and the three answered entries are delivered to it as first deliveries.
    let stream = client.keys("recreated").requests().to_owned();
    assert_eq!(
        server
            .cli(&["XGROUP", "DESTROY", &stream, "workers"])
            .trim(),
        "1"
    );
    let responder = counting_responder(&client, "recreated", "workers", &runs).await;
    assert!(
        wait_until(GENEROUS, || async {
            group_caught_up(&server, &stream, "workers")
        })
        .await,
        "the recreated group read the history and acked it"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "answered requests ran again after the group was recreated"
    );
    assert_eq!(pending_count(&server, &stream, "workers"), 0);
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_second_group_over_history_answers_from_the_stored_replies() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let first = Arc::new(AtomicUsize::new(0));
    let responder = counting_responder(&client, "two-groups", "a", &first).await;
    answer_three(&client, "two-groups").await;
    let second = Arc::new(AtomicUsize::new(0));
    let other = counting_responder(&client, "two-groups", "b", &second).await;
    let stream = client.keys("two-groups").requests().to_owned();
    assert!(
        wait_until(GENEROUS, || async {
            group_caught_up(&server, &stream, "b")
        })
        .await,
        "group b read the history and acked it"
    );
    assert_eq!(first.load(Ordering::SeqCst), 3);
    assert_eq!(
        second.load(Ordering::SeqCst),
        0,
        "a second group ran requests answered already"
    );
    responder.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_request_answered_by_hand_before_any_responder_is_not_run() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("by-hand");
    let pending = requester
        .send("early", "count", &5u32, GENEROUS)
        .await
        .expect("send");
    requester
        .publish_reply("early", &50u32)
        .await
        .expect("reply by hand");
    assert_eq!(pending.wait::<u32>().await.expect("reply"), 50);

    let runs = Arc::new(AtomicUsize::new(0));
    let responder = counting_responder(&client, "by-hand", "workers", &runs).await;
    let stream = requester.keys().requests().to_owned();
    assert!(
        wait_until(GENEROUS, || async {
            group_caught_up(&server, &stream, "workers")
        })
        .await,
        "the responder read the request and acked it"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the handler ran for a request answered by hand"
    );
    let stored: Option<u32> = requester.stored_reply("early").await.expect("stored");
    assert_eq!(stored, Some(50), "the hand reply stays");
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_request_answered_by_hand_while_the_responder_is_busy_is_not_run() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let responder = {
        let (runs, gate) = (runs.clone(), gate.clone());
        client
            .responder("busy")
            .concurrency(1)
            .handler("gate", move |_ctx: RequestContext, _n: u32| {
                let gate = gate.clone();
                async move {
                    let _ = gate.acquire().await;
                    Ok::<_, HandlerError>(0u32)
                }
            })
            .handler("count", move |_ctx: RequestContext, n: u32| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(n)
                }
            })
            .start()
            .await
            .expect("responder")
    };
    let requester = client.requester("busy");
    let stream = requester.keys().requests().to_owned();
    // The only permit is held by `gate`: the responder reads nothing more until it is released.
    let blocker = requester
        .send("blocker", "gate", &0u32, GENEROUS)
        .await
        .expect("send");
    assert!(
        wait_until(GENEROUS, || async {
            pending_count(&server, &stream, "workers") == 1
        })
        .await,
        "the responder took the blocker"
    );
    // Two wait in the stream; the second is answered by hand. With one permit the responder reads them one at a
    // time: the second comes a read after the first.
    let first = requester
        .send("first", "count", &6u32, GENEROUS)
        .await
        .expect("send");
    let waiting = requester
        .send("waiting", "count", &7u32, GENEROUS)
        .await
        .expect("send");
    requester
        .publish_reply("waiting", &70u32)
        .await
        .expect("reply by hand");
    assert_eq!(waiting.wait::<u32>().await.expect("hand reply"), 70);
    gate.add_permits(1);
    assert_eq!(first.wait::<u32>().await.expect("first"), 6);
    assert_eq!(blocker.wait::<u32>().await.expect("blocker"), 0);
    assert!(
        wait_until(GENEROUS, || async {
            group_caught_up(&server, &stream, "workers")
        })
        .await,
        "the responder read the answered request and acked it"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler ran (only `first` should) for a request answered by hand while it waited in the stream"
    );
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_broken_by_hand_counter_does_not_stop_the_responder() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let keys = client.keys("broken-counter");
    // Another type at the counter's key (a broken deployment, or a stray command): the reader must go on reading.
    server.cli(&["HSET", &keys.by_hand(), "not", "a counter"]);
    let runs = Arc::new(AtomicUsize::new(0));
    let responder = counting_responder(&client, "broken-counter", "workers", &runs).await;
    let requester = client.requester("broken-counter");
    let got: u32 = requester
        .request("r1", "count", &9u32, GENEROUS)
        .await
        .expect("answered despite the broken key");
    assert_eq!(got, 9);
    responder.shutdown().await.expect("shutdown");
    // A reply by hand still goes through: only its count is skipped.
    let pending = requester
        .send("r2", "count", &1u32, GENEROUS)
        .await
        .expect("send");
    requester
        .publish_reply("r2", &10u32)
        .await
        .expect("a reply by hand despite the broken counter");
    assert_eq!(pending.wait::<u32>().await.expect("hand reply"), 10);
}
