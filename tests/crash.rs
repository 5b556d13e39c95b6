//! Crash tolerance: responders die, panic, stall and shut down; no request is lost.
//!
//! DESIGN 5 (failures: a panic, a retry or a dead process leaves the entry pending for redelivery after the visibility
//! timeout; past `max_deliveries` it is dead-lettered and the requester told at once), 6 (answered once: a redelivered
//! request with a stored reply is not run again), 7 (long handlers keep their claim), 8 (the reaper hands a dead
//! responder's work to another), 9 (shutdown: stop reading, finish in-flight work within the grace period, leave the
//! rest pending), 4 (an expired request is not started).
//!
//! These tests run real `redcall serve` processes against a throwaway redis-server, kill them with SIGKILL or stop
//! them with SIGTERM, and check from the requester's side that every request is answered.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{ChildGuard, RedisServer, TestEnv, redis_con, spawn_serve, wait_until};
use redcall::{Client, ErrorKind};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

fn terminate(child: &ChildGuard) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Number of pending entries of the `workers` group.
async fn pending(con: &mut redis::aio::MultiplexedConnection, service: &str) -> usize {
    let key = format!("{{redcall:{service}}}:requests");
    let reply: redis::RedisResult<redis::streams::StreamPendingReply> = redis::cmd("XPENDING")
        .arg(&key)
        .arg("workers")
        .query_async(con)
        .await;
    reply.map(|r| r.count()).unwrap_or(0)
}

/// Waits (up to `deadline`) until the `workers` group has exactly `n` pending entries.
async fn pending_becomes(
    con: &redis::aio::MultiplexedConnection,
    service: &str,
    n: usize,
    deadline: Duration,
) -> bool {
    wait_until(deadline, || {
        let mut con = con.clone();
        async move { pending(&mut con, service).await == n }
    })
    .await
}

/// A [`TestEnv`] taken apart (the server, a client and the service's name), a requester of the service, and a plain
/// connection for inspecting Redis.
async fn setup() -> (
    RedisServer,
    Client,
    String,
    redcall::Requester,
    redis::aio::MultiplexedConnection,
) {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let requester = client.requester(&service);
    let con = redis_con(&server).await;
    (server, client, service, requester, con)
}

/// How many times the `work` handler ran for each request id.
async fn runs(con: &mut redis::aio::MultiplexedConnection, service: &str) -> HashMap<String, u64> {
    redis::cmd("HGETALL")
        .arg(format!("{{redcall:{service}}}:runs"))
        .query_async(con)
        .await
        .expect("HGETALL runs")
}

async fn dead_letters(
    con: &mut redis::aio::MultiplexedConnection,
    service: &str,
) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{{redcall:{service}}}:dead"))
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .expect("XRANGE dead");
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    redis::Value::BulkString(b) => {
                        Some((k, String::from_utf8_lossy(&b).into_owned()))
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_responder_work_is_completed_by_another() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();

    let mut first = spawn_serve(
        &server,
        service,
        "first",
        &[],
        &["--visibility-timeout", "1000"],
    );
    let mut waits = Vec::new();
    for i in 0..20 {
        let pending = requester
            .send(
                &format!("kill-{i}"),
                "work",
                &json!({"ms": 4000}),
                Duration::from_secs(60),
            )
            .await
            .expect("send");
        waits.push(pending);
    }
    assert!(
        pending_becomes(&con, service, 20, Duration::from_secs(20)).await,
        "the first responder never held all 20 requests"
    );
    first.kill().expect("SIGKILL the first responder");
    first.wait().expect("reap");

    let _second = spawn_serve(
        &server,
        service,
        "second",
        &[],
        &["--visibility-timeout", "1000"],
    );
    for pending in waits {
        let id = pending.id().to_owned();
        let reply: Value = pending.wait().await.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(reply, json!({"slept_ms": 4000}));
    }
    let runs = runs(&mut con, service).await;
    assert_eq!(
        runs.len(),
        20,
        "every request ran to completion once: {runs:?}"
    );
    assert!(
        runs.values().all(|&n| n == 1),
        "the killed responder finished none: {runs:?}"
    );
    assert_eq!(pending(&mut con, service).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_lose_no_request() {
    const REQUESTS: usize = 2000;
    const RESPONDERS: usize = 3;
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let flags = ["--visibility-timeout", "800", "--concurrency", "32"];
    let mut responders: Vec<ChildGuard> = (0..RESPONDERS)
        .map(|i| spawn_serve(&server, service, &format!("chaos-{i}-0"), &[], &flags))
        .collect();

    // Requests go out 200 at a time while a killer SIGKILLs a random responder every 250 ms and restarts it.
    let load = tokio::spawn({
        let requester = requester.clone();
        async move {
            let mut answered = 0usize;
            let ids: Vec<usize> = (0..REQUESTS).collect();
            for chunk in ids.chunks(200) {
                let mut set = tokio::task::JoinSet::new();
                for &i in chunk {
                    let requester = requester.clone();
                    set.spawn(async move {
                        let reply: redcall::Result<Value> = requester
                            .request(
                                &format!("chaos-{i}"),
                                "work",
                                &json!({"ms": 20}),
                                Duration::from_secs(60),
                            )
                            .await;
                        (i, reply)
                    });
                }
                while let Some(joined) = set.join_next().await {
                    let (i, reply) = joined.expect("request task");
                    let reply = reply.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
                    assert_eq!(reply, json!({"slept_ms": 20}));
                    answered += 1;
                }
            }
            answered
        }
    });
    let mut kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while !load.is_finished() && kills < 60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % RESPONDERS as u64) as usize;
        responders[victim].kill().expect("SIGKILL");
        responders[victim].wait().expect("reap");
        kills += 1;
        responders[victim] = spawn_serve(
            &server,
            service,
            &format!("chaos-{victim}-{kills}"),
            &[],
            &flags,
        );
    }
    let answered = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("load finished in time")
        .expect("load task");
    assert_eq!(answered, REQUESTS);
    let runs = runs(&mut con, service).await;
    assert_eq!(runs.len(), REQUESTS, "every request ran at least once");
    let twice = runs.values().filter(|&&n| n > 1).count();
    eprintln!(
        "chaos: {REQUESTS} requests, {kills} kills, {twice} requests ran more than once (all answered once)"
    );
    assert!(kills > 0, "the killer never struck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_request_is_dead_lettered_and_requester_told() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let _responder = spawn_serve(
        &server,
        service,
        "poison",
        &[],
        &["--visibility-timeout", "300", "--max-deliveries", "3"],
    );

    let err = requester
        .request::<_, Value>("poison-1", "panic", &json!({}), Duration::from_secs(30))
        .await
        .expect_err("a panicking handler never answers");
    assert_eq!(err.kind(), ErrorKind::DeadLettered, "{err}");
    assert!(err.to_string().contains("poison-1"), "{err}");

    let dead = dead_letters(&mut con, service).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], "poison-1");
    assert_eq!(dead[0]["reason"], "max_deliveries_exceeded");
    assert!(dead[0]["error"].contains("panicked"), "{dead:?}");
    assert_eq!(
        dead[0]["deliveries"], "4",
        "three deliveries ran, the fourth dead-lettered it"
    );
    assert_eq!(
        pending(&mut con, service).await,
        0,
        "acked in the requests stream"
    );

    // The responder survived its handler's panics.
    let reply: Value = requester
        .request(
            "after-poison",
            "echo",
            &json!({"still": "alive"}),
            Duration::from_secs(10),
        )
        .await
        .expect("responder still serving");
    assert_eq!(reply, json!({"still": "alive"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_requests_come_back_then_dead_letter() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let _responder = spawn_serve(
        &server,
        service,
        "retry",
        &[],
        &["--visibility-timeout", "200", "--max-deliveries", "2"],
    );
    let err = requester
        .request::<_, Value>("retry-1", "retry", &json!({}), Duration::from_secs(30))
        .await
        .expect_err("always retried");
    assert_eq!(err.kind(), ErrorKind::DeadLettered, "{err}");
    let dead = dead_letters(&mut con, service).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["error"].contains("retry requested: asked to retry (delivery 2)"),
        "{dead:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handler_is_not_stolen() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let flags = ["--visibility-timeout", "400"];
    let _a = spawn_serve(&server, service, "long-a", &[], &flags);
    let _b = spawn_serve(&server, service, "long-b", &[], &flags);

    let mut waits = Vec::new();
    for i in 0..4 {
        waits.push(
            requester
                .send(
                    &format!("long-{i}"),
                    "work",
                    &json!({"ms": 2500}),
                    Duration::from_secs(30),
                )
                .await
                .expect("send"),
        );
    }
    for pending in waits {
        let reply: Value = pending.wait().await.expect("reply");
        assert_eq!(reply, json!({"slept_ms": 2500}));
    }
    let runs = runs(&mut con, service).await;
    assert_eq!(runs.len(), 4);
    assert!(
        runs.values().all(|&n| n == 1),
        "a handler running 6x the visibility timeout was given to another responder: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let mut responder = spawn_serve(&server, service, "drain", &[], &["--grace", "10000"]);

    let mut waits = Vec::new();
    for i in 0..5 {
        waits.push(
            requester
                .send(
                    &format!("drain-{i}"),
                    "work",
                    &json!({"ms": 1500}),
                    Duration::from_secs(30),
                )
                .await
                .expect("send"),
        );
    }
    assert!(pending_becomes(&con, service, 5, Duration::from_secs(20)).await);
    terminate(&responder);
    // Sent after the stop: must not be taken by the stopping responder.
    let late = requester
        .send(
            "drain-late",
            "echo",
            &json!("late"),
            Duration::from_secs(30),
        )
        .await
        .expect("send late");
    for pending in waits {
        let reply: Value = pending
            .wait()
            .await
            .expect("in-flight work finished during the grace period");
        assert_eq!(reply, json!({"slept_ms": 1500}));
    }
    let status = tokio::task::spawn_blocking(move || responder.wait().expect("wait"))
        .await
        .expect("join");
    assert!(
        status.success(),
        "serve exits 0 after a clean shutdown: {status:?}"
    );
    assert_eq!(
        pending(&mut con, service).await,
        0,
        "everything in flight was acked"
    );

    let _next = spawn_serve(&server, service, "after-drain", &[], &[]);
    let reply: Value = late
        .wait()
        .await
        .expect("the late request is served by the next responder");
    assert_eq!(reply, json!("late"));
}

/// Redis's count of clients blocked in a command (here: a responder's `XREADGROUP ... BLOCK`).
fn blocked_clients(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "clients"])
        .lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("blocked_clients in INFO clients")
}

/// Once a stopping responder's last blocking read is over, it reads nothing more: a request added then waits for
/// another responder, while the in-flight one is still finished and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_responder_takes_no_new_entry() {
    let (server, client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    let stopping = client
        .responder(service)
        .consumer("stopping")
        .grace(Duration::from_secs(30))
        .handler("hold", move |_ctx, text: String| {
            let gate = handler_gate.clone();
            async move {
                let _pass = gate.acquire().await;
                Ok::<_, redcall::HandlerError>(text)
            }
        })
        .start()
        .await
        .expect("start");
    let held = requester
        .send("held-1", "hold", "held", Duration::from_secs(60))
        .await
        .expect("send");
    assert!(pending_becomes(&con, service, 1, Duration::from_secs(10)).await);

    let shutdown = tokio::spawn(stopping.shutdown());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            blocked_clients(&server) == 0
        })
        .await,
        "the stopping responder's reader still blocks in XREADGROUP"
    );
    let late = requester
        .send("late-1", "hold", "late", Duration::from_secs(60))
        .await
        .expect("send late");
    // Longer than a blocking read (1 s): a reader still looping would have taken the late request by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        pending(&mut con, service).await,
        1,
        "only the held request is pending: the late one was not read"
    );

    gate.add_permits(1);
    assert_eq!(
        held.wait::<String>().await.expect("held request answered"),
        "held"
    );
    let cut_off = shutdown.await.expect("join").expect("shutdown");
    assert_eq!(
        cut_off, 0,
        "the held request finished within the grace period"
    );
    assert_eq!(
        pending(&mut con, service).await,
        0,
        "the held request was acked"
    );

    let next = client
        .responder(service)
        .consumer("next")
        .handler("hold", |_ctx, text: String| async move {
            Ok::<_, redcall::HandlerError>(text)
        })
        .start()
        .await
        .expect("start the next responder");
    assert_eq!(
        late.wait::<String>()
            .await
            .expect("the late request is served by the next responder"),
        "late"
    );
    next.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_cut_off_leaves_work_pending_for_others() {
    let (_server, client, service, requester, mut con) = setup().await;
    let service = service.as_str();
    let slow = client
        .responder(service)
        .consumer("slow")
        .visibility_timeout(Duration::from_millis(500))
        .grace(Duration::from_millis(200))
        .handler("work", |_ctx, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, redcall::HandlerError>(ms)
        })
        .start()
        .await
        .expect("start");
    let pending_reply = requester
        .send("grace-1", "work", &5000u64, Duration::from_secs(30))
        .await
        .expect("send");
    assert!(pending_becomes(&con, service, 1, Duration::from_secs(10)).await);
    let cut_off = slow.shutdown().await.expect("shutdown");
    assert_eq!(
        cut_off, 1,
        "the 5 s handler could not finish in a 200 ms grace period"
    );
    assert_eq!(
        pending(&mut con, service).await,
        1,
        "left pending, not acked"
    );

    let quick = client
        .responder(service)
        .consumer("quick")
        .visibility_timeout(Duration::from_millis(500))
        .handler("work", |_ctx, ms: u64| async move {
            Ok::<_, redcall::HandlerError>(ms + 1)
        })
        .start()
        .await
        .expect("start");
    let reply: u64 = pending_reply.wait().await.expect("reclaimed and answered");
    assert_eq!(reply, 5001);
    quick.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_request_is_not_started() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();

    let err = requester
        .request::<_, Value>(
            "expired-1",
            "work",
            &json!({"ms": 1}),
            Duration::from_millis(300),
        )
        .await
        .expect_err("no responder yet");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let _responder = spawn_serve(&server, service, "late", &[], &[]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let requester = requester.clone();
            async move { requester.stored_reply::<Value>("expired-1").await.is_err() }
        })
        .await,
        "an expired-reply should be recorded"
    );
    let err = requester
        .stored_reply::<Value>("expired-1")
        .await
        .expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
    assert!(
        runs(&mut con, service).await.is_empty(),
        "the handler must not run"
    );
    assert_eq!(pending(&mut con, service).await, 0, "acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_request_with_stored_reply_is_not_run_again() {
    let (server, _client, service, requester, mut con) = setup().await;
    let service = service.as_str();

    // A responder takes the request and dies without answering; meanwhile a reply is published by hand.
    let mut first = spawn_serve(
        &server,
        service,
        "dies",
        &[],
        &["--visibility-timeout", "500"],
    );
    let pending_reply = requester
        .send(
            "once-1",
            "work",
            &json!({"ms": 10000}),
            Duration::from_secs(30),
        )
        .await
        .expect("send");
    assert!(pending_becomes(&con, service, 1, Duration::from_secs(10)).await);
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    requester
        .publish_reply("once-1", &json!("by hand"))
        .await
        .expect("publish");
    let reply: Value = pending_reply.wait().await.expect("reply");
    assert_eq!(reply, json!("by hand"));

    // The next responder reclaims the entry, finds the stored reply and acks without running the handler.
    let _second = spawn_serve(
        &server,
        service,
        "second",
        &[],
        &["--visibility-timeout", "500"],
    );
    assert!(
        pending_becomes(&con, service, 0, Duration::from_secs(15)).await,
        "the redelivered entry was never acked"
    );
    assert!(
        runs(&mut con, service).await.is_empty(),
        "the handler ran again"
    );
}
