//! Redis away for a while, or one connection cut: with `fail_fast`, sends fail fast (and say so) while Redis is
//! down; both sides reconnect after an outage longer than the client's own reconnect budget, a request in flight
//! across the outage is answered without its handler running again, and a reply router whose connection alone was
//! cut reconnects and finds a reply stored meanwhile. (`ride_out.rs`: the default, riding an outage out.)
//!
//! DESIGN 12 (Redis going away: requesters and responders reconnect by themselves and re-subscribe; a request in
//! flight gets its reply; fail-fast is opt-in), 6 (answered once: the reply made during the outage is stored, the
//! handler not rerun).
//!
//! Responders are real `redcall serve` processes; Redis is a throwaway `redis-server` that the tests SIGKILL and
//! restart on the same port and directory.

mod common;

use std::time::{Duration, Instant};

use common::{
    AofPolicy, FAIL_FAST, RedisOptions, RedisServer, TestEnv, connect_router,
    fresh_request_succeeds, kill_blocking, pending_count, redis_con, restart_blocking, spawn_serve,
    store_reply_silently, unreachable_redis, wait_until,
};
use redcall::{Client, ErrorKind, protocol};
use serde_json::{Value, json};

/// A client that fails at once while Redis is unreachable (the opt-in mode).
fn fail_fast_client(url: &str) -> Client {
    Client::builder(url)
        .fail_fast(true)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_redis_is_down() {
    let mut server = RedisServer::start();
    let url = server.url();
    let connected = fail_fast_client(&url);
    let requester = connected.requester("down");
    connect_router(&requester).await;
    // Accepted before the outage (no responder): still a timeout, not "nothing was sent", when Redis is away at
    // the deadline.
    let accepted_timeout = Duration::from_millis(1500);
    let accepted = requester
        .send("down-accepted", "echo", &json!(1), accepted_timeout)
        .await
        .expect("send");
    let accepted_at = Instant::now();
    kill_blocking(&mut server);

    let never_connected = fail_fast_client(&url);
    for (who, requester) in [
        ("a client connected before", connected.requester("down")),
        (
            "a client never connected",
            never_connected.requester("down"),
        ),
    ] {
        // Own ids (added by a script) and generated ids (added in batches) alike.
        for attempt in 0..6 {
            let started = Instant::now();
            let err = if attempt % 2 == 0 {
                requester
                    .request::<_, Value>(
                        &format!("down-{attempt}"),
                        "echo",
                        &json!(1),
                        Duration::from_secs(10),
                    )
                    .await
            } else {
                requester
                    .call::<_, Value>("echo", &json!(1), Duration::from_secs(10))
                    .await
            }
            .expect_err("Redis is down");
            let took = started.elapsed();
            assert!(unreachable_redis(&err), "{who}: {err}");
            assert!(took < FAIL_FAST, "{who}: failing took {took:?}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("Redis") && (text.contains("unavailable") || text.contains("while")),
                "{who}: the error says what failed: {text}"
            );
            eprintln!("{who}: failed after {took:?}: {text}");
        }
    }
    let err = accepted.wait::<Value>().await.expect_err("no responder");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("down-accepted"), "{err}");
    assert!(
        accepted_at.elapsed() < accepted_timeout + FAIL_FAST,
        "the wait ended {:?} after the send",
        accepted_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_reconnect_after_a_long_outage() {
    // Longer than the redis crate's own reconnect budget (~6 s).
    const OUTAGE: Duration = Duration::from_secs(8);
    let service = "long-outage";
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    // The default visibility timeout (30 s): the in-flight request below must be answered by the run that was
    // under way when Redis went down, not by a redelivery.
    let _responder = spawn_serve(&server, service, "resp", &[], &[]);
    let client = fail_fast_client(&server.url());
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    // In flight across the outage: its handler finishes while Redis is down. Redis goes down once it has delivered
    // the request to the responder (pending in the group): the responder needs nothing more from Redis to start
    // its handler (a fresh entry is not history, so no stored-reply check).
    let stream = client.keys(service).requests().to_owned();
    let in_flight = requester
        .send(
            "outage-in-flight",
            "sleep",
            &json!({"ms": 300}),
            Duration::from_secs(90),
        )
        .await
        .expect("send");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending_count(&server, &stream, "workers") == 1
        })
        .await,
        "the responder read the request"
    );
    kill_blocking(&mut server);
    let down_since = Instant::now();
    let mut failed_sends = 0;
    while down_since.elapsed() < OUTAGE {
        let started = Instant::now();
        let err = requester
            .send(
                &format!("outage-{failed_sends}"),
                "echo",
                &json!(1),
                Duration::from_secs(10),
            )
            .await
            .expect_err("Redis is down");
        assert!(unreachable_redis(&err), "{err}");
        assert!(
            started.elapsed() < FAIL_FAST,
            "a send hung for {:?}",
            started.elapsed()
        );
        failed_sends += 1;
        // The outage itself is what this test is about: keep Redis away this long.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    restart_blocking(&mut server);
    let restarted_ms = common::now_ms();
    let took = fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;
    // Its timeout is far away: an answer only at the timeout (from the stored copy) would mean the router did not
    // restore its subscription.
    let reply: Value = tokio::time::timeout(Duration::from_secs(15), in_flight.wait())
        .await
        .expect("the in-flight request is answered soon after the restart, not at its timeout")
        .expect("the in-flight request is answered");
    assert_eq!(reply, json!({"slept_ms": 300}));
    // The stored reply was made during the outage: the responder kept it and stored it once Redis was back,
    // rather than running the handler again.
    let stored: Vec<u8> = redis::AsyncCommands::get(
        &mut redis_con(&server).await,
        requester.keys().reply("outage-in-flight"),
    )
    .await
    .expect("GET the stored reply");
    let made_ms = protocol::decode_reply(&stored).expect("reply").ts_ms;
    assert!(
        made_ms < restarted_ms,
        "the reply was made {} ms after the restart: the handler ran again",
        made_ms - restarted_ms
    );
    eprintln!(
        "after a {OUTAGE:?} outage ({failed_sends} sends failed fast): serving again {took:?} after the restart"
    );
}

/// When only the reply router's connection drops (Redis stays up), the router reconnects, subscribes again and
/// reads the stored replies: a reply stored while it was away reaches its caller long before the timeout.
#[tokio::test]
async fn router_reconnect_delivers_a_reply_stored_meanwhile() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send("router-drop-1", "echo", &"x", Duration::from_secs(60))
        .await
        .expect("send");
    // The router's connection is the one subscribed to the reply channel.
    let clients = env.server.cli(&["CLIENT", "LIST"]);
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
    store_reply_silently(&env.server, &requester, "router-drop-1", "stored meanwhile").await;
    env.server.cli(&["CLIENT", "KILL", "ID", router_ids[0]]);

    let started = Instant::now();
    let reply: String = pending.wait().await.expect("the stored reply");
    assert_eq!(reply, "stored meanwhile");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the reply came only after {:?}: found at the timeout's last look, not by the reconnect",
        started.elapsed()
    );
}
