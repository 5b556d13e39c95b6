//! Delayed requests (issue 17): stored at once (call info works), not handed to a handler before their time,
//! shown in stats and status, cancellable, and waiting for a responder that starts later.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestEnv, run_cli, wait_until};
use redcall::admin::RequestState;
use redcall::{ErrorKind, HandlerError, RequestContext};
use serde_json::{Value, json};

/// A responder whose `stamp` handler records when it ran.
async fn stamping(env: &TestEnv, ran: Arc<Mutex<Vec<Instant>>>) -> redcall::Responder {
    env.responder()
        .handler("stamp", move |_ctx: RequestContext, _p: Value| {
            ran.lock().expect("lock").push(Instant::now());
            async move { Ok::<_, HandlerError>(json!("ran")) }
        })
        .start()
        .await
        .expect("start responder")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_request_is_stored_at_once_and_runs_after_its_delay() {
    let env = TestEnv::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _responder = stamping(&env, ran.clone()).await;
    let requester = env.requester();
    let sent = Instant::now();
    let pending = requester
        .send_in(
            "later-1",
            "stamp",
            &json!({"a": 1}),
            Duration::from_millis(1200),
            Duration::from_secs(20),
        )
        .await
        .expect("send_in");
    let info = requester
        .call_info("later-1")
        .await
        .expect("call info at once");
    assert_eq!(info.func_key, "stamp");
    let status = env.admin().status("later-1").await.expect("status");
    assert!(
        matches!(status.state, RequestState::Scheduled { .. }),
        "{status:?}"
    );
    assert_eq!(env.admin().stats().await.expect("stats").delayed, 1);

    let reply: Value = pending.wait().await.expect("reply");
    assert_eq!(reply, json!("ran"));
    let ran_at = ran.lock().expect("lock")[0];
    let after = ran_at.duration_since(sent);
    eprintln!("ran {after:?} after the send");
    // Redis's clock and ours are the same machine's: allow a little for rounding.
    assert!(
        after >= Duration::from_millis(1100),
        "ran too early: {after:?}"
    );
    assert!(after < Duration::from_secs(6), "ran too late: {after:?}");
    assert_eq!(env.admin().stats().await.expect("stats").delayed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_delayed_request_never_runs() {
    let env = TestEnv::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _responder = stamping(&env, ran.clone()).await;
    let requester = env.requester();
    let pending = requester
        .send_in(
            "later-2",
            "stamp",
            &json!({}),
            Duration::from_millis(500),
            Duration::from_secs(20),
        )
        .await
        .expect("send_in");
    pending.cancel().await.expect("cancel");
    assert_eq!(
        env.admin().stats().await.expect("stats").delayed,
        0,
        "out of the schedule at once"
    );
    let err = pending.wait::<Value>().await.expect_err("cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    // Past its time, it was dropped from the schedule without running.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            env.admin().stats().await.map(|s| s.delayed).unwrap_or(1) == 0
        })
        .await,
        "still scheduled"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ran.lock().expect("lock").is_empty(), "the handler ran");
    let status = env.admin().status("later-2").await.expect("status");
    assert_eq!(status.state, RequestState::Cancelled, "{status:?}");
}

/// The schedule lives in Redis: a request due while no responder runs is handled by one that starts later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_request_waits_for_a_responder_that_starts_later() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send_in(
            "later-3",
            "stamp",
            &json!({}),
            Duration::from_millis(200),
            Duration::from_secs(20),
        )
        .await
        .expect("send_in");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ran = Arc::new(Mutex::new(Vec::new()));
    let _responder = stamping(&env, ran.clone()).await;
    let reply: Value = pending.wait().await.expect("reply");
    assert_eq!(reply, json!("ran"));
    assert_eq!(ran.lock().expect("lock").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_delays_a_call() {
    let env = TestEnv::new();
    let _serve = env.serve("delayer", &[], &[]);
    let started = Instant::now();
    let out = run_cli(
        &env.server,
        env.service(),
        &["call", "echo", "7", "--delay", "1s", "--timeout", "20s"],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
}

/// The schedule is an ordinary key: with AOF, a delayed request survives a Redis restart (SIGKILL, then a start on
/// the same port and directory) and still runs after its delay; its caller, waiting all along, gets the reply.
/// The last progress of a request survives the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_request_and_the_last_progress_survive_a_redis_restart() {
    use common::{AofPolicy, RedisOptions, RedisServer, kill_blocking, restart_blocking};
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    let client = redcall::Client::open(&server.url()).expect("client");
    let service = "delayed-restart";
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = ran.clone();
    let _responder = client
        .responder(service)
        .handler("stamp", move |ctx: RequestContext, _p: Value| {
            seen.lock().expect("lock").push(Instant::now());
            async move {
                ctx.progress(&"almost")
                    .await
                    .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
                Ok::<_, HandlerError>(json!("ran"))
            }
        })
        .start()
        .await
        .expect("start responder");
    let requester = client.requester(service);
    let pending = requester
        .send_in(
            "survivor-1",
            "stamp",
            &json!({}),
            Duration::from_millis(1500),
            Duration::from_secs(30),
        )
        .await
        .expect("send_in");
    kill_blocking(&mut server);
    restart_blocking(&mut server);
    assert!(ran.lock().expect("lock").is_empty(), "ran before its time");
    let reply: Value = tokio::time::timeout(Duration::from_secs(25), pending.wait())
        .await
        .expect("in time")
        .expect("reply after the restart");
    assert_eq!(reply, json!("ran"));
    assert_eq!(ran.lock().expect("lock").len(), 1);

    kill_blocking(&mut server);
    restart_blocking(&mut server);
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(status) = client.admin(service).status("survivor-1").await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("status after the second restart");
    let last = status.last_progress.expect("the last progress survived");
    let last: String = redcall::protocol::decode(&last.data, "progress").expect("decode");
    assert_eq!(last, "almost");
}

/// A delay longer than the timeout: the record (call info, the id's claim) lasts as long as the request sits in the
/// schedule, not only the timeout plus the retention. With the record gone first, `status` said unknown and the id
/// could be taken by another request before the promotion, which then ran that request a second time.
#[tokio::test]
async fn a_delayed_request_keeps_its_record_while_scheduled() {
    let env = TestEnv::with_client(|b| b.record_retention(Duration::from_secs(1)));
    let requester = env.requester();
    let _pending = requester
        .send_in(
            "late-record",
            "stamp",
            &json!({}),
            Duration::from_secs(3600),
            Duration::from_secs(1),
        )
        .await
        .expect("send_in");
    let ttl: i64 = env
        .server
        .cli(&["PTTL", &requester.keys().record("late-record")])
        .parse()
        .expect("PTTL is a number");
    assert!(
        ttl > 3_600_000,
        "the record expires in {ttl} ms, before the request is due"
    );
}

/// An entry Redis refuses to add when the request is due (the requests stream key holds a string) loses nothing:
/// the id stays in the schedule, and once the key is fixed it is promoted and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_redis_refuses_leaves_the_request_scheduled() {
    let env = TestEnv::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let requester = env.requester();
    let pending = requester
        .send_in(
            "refused-promotion",
            "stamp",
            &json!({}),
            Duration::from_millis(200),
            Duration::from_secs(30),
        )
        .await
        .expect("send_in");
    let _responder = stamping(&env, ran.clone()).await;
    env.server
        .cli(&["SET", requester.keys().requests(), "not a stream"]);
    // Give the promoter several looks (every 100 ms) past the due time with the stream broken.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let score = env
        .server
        .cli(&["ZSCORE", &requester.keys().delayed(), "refused-promotion"]);
    assert!(!score.is_empty(), "dropped from the schedule");
    env.server.cli(&["DEL", requester.keys().requests()]);
    let reply: Value = pending
        .wait()
        .await
        .expect("answered once the stream is fixed");
    assert_eq!(reply, json!("ran"));
    assert_eq!(ran.lock().expect("lock").len(), 1);
}
