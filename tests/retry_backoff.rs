//! Retries with backoff (issue 17): a known failure (a retry asked for, a panic) is delivered again after its
//! backoff, not after the visibility timeout; delivery counts and `max_deliveries` keep their meaning; a responder
//! that dies mid-backoff is covered by the visibility timeout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestEnv, wait_until};
use redcall::{ErrorKind, HandlerError, RequestContext, RetryPolicy};
use serde_json::{Value, json};

/// The dead-letter entries' fields, oldest first.
async fn dead_letters(env: &TestEnv) -> Vec<std::collections::HashMap<String, String>> {
    let mut con = env.redis().await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{{redcall:{}}}:dead", env.service()))
        .arg("-")
        .arg("+")
        .query_async(&mut con)
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

/// The example: `max_deliveries 3` and a 100 ms initial backoff dead-letter a panicking request, and its
/// caller gets `DeadLettered`, within about a second, although the visibility timeout is the default 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_request_is_dead_lettered_after_its_backoffs_not_the_visibility_timeout() {
    let env = TestEnv::new();
    let _serve = env.serve(
        "backoff",
        &[],
        &["--max-deliveries", "3", "--retry-backoff", "100ms"],
    );
    let requester = env.requester();
    // The request waits in the stream until the responder reads it: the clock starts at the send.
    let started = Instant::now();
    let err = requester
        .request::<_, Value>("poison-1", "panic", &json!({}), Duration::from_secs(30))
        .await
        .expect_err("a panicking handler never answers");
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::DeadLettered, "{err}");
    eprintln!("dead-lettered after {took:?}");
    // "Within about a second": the pauses are 100 + 200 ms (measured: ~0.3 s in all); 2 s leaves room for a loaded
    // machine and is still far from the 30 s visibility timeout's 90 s.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "max_deliveries_exceeded");
    assert_eq!(
        dead[0]["deliveries"], "4",
        "three deliveries ran, the fourth dead-lettered it"
    );
    assert!(
        dead[0]["error"].contains("(delivery 3)"),
        "the last error is the third run's: {dead:?}"
    );
}

/// `HandlerError::retry_after` picks the pause itself, and the per-handler policy overrides the responder's: here
/// the responder's policy would wait 20 s, the handler asks for 300 ms, and the second delivery succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_uses_the_handlers_delay_and_the_count_goes_up() {
    let env = TestEnv::new();
    let slow = RetryPolicy::exponential(Duration::from_secs(20), Duration::from_secs(20));
    let fast = RetryPolicy::exponential(Duration::from_millis(50), Duration::from_millis(50));
    let _responder = env
        .responder()
        .retry_backoff(slow)
        .retry_backoff_for("flaky", fast)
        .handler("later", |ctx: RequestContext, _p: Value| async move {
            if ctx.delivery == 1 {
                return Err(HandlerError::retry_after(
                    "rate limited",
                    Duration::from_millis(300),
                ));
            }
            Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery }))
        })
        .handler("flaky", |ctx: RequestContext, _p: Value| async move {
            if ctx.delivery < 3 {
                return Err(HandlerError::retry("not yet"));
            }
            Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery }))
        })
        .start()
        .await
        .expect("start responder");
    let requester = env.requester();

    let started = Instant::now();
    let reply: Value = requester
        .request("later-1", "later", &json!({}), Duration::from_secs(15))
        .await
        .expect("the second delivery succeeds");
    let took = started.elapsed();
    assert_eq!(reply, json!({ "delivery": 2 }));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "took {took:?}: the handler's 300 ms, not the policy's 20 s"
    );

    let started = Instant::now();
    let reply: Value = requester
        .request("flaky-1", "flaky", &json!({}), Duration::from_secs(15))
        .await
        .expect("the third delivery succeeds");
    assert_eq!(reply, json!({ "delivery": 3 }));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the per-handler policy's 50 ms pauses, not the responder's 20 s"
    );
}

/// A responder that dies during a backoff leaves the entry pending; after the visibility timeout another
/// responder's reaper claims it (the claim is a delivery) and runs it, long before the dead one's backoff would
/// have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_dying_mid_backoff_is_covered_by_the_visibility_timeout() {
    let env = TestEnv::new();
    let mut first = env.serve(
        "dies-mid-backoff",
        &[],
        &[
            "--visibility-timeout",
            "1s",
            "--retry-backoff",
            "30s",
            "--retry-backoff-max",
            "30s",
        ],
    );
    let requester = env.requester();
    let pending = requester
        .send("crash-1", "retry", &json!({}), Duration::from_secs(30))
        .await
        .expect("send");
    // The first delivery failed once its error is recorded: the responder is now in its 30 s backoff.
    let mut con = env.redis().await;
    let err_key = format!("{{redcall:{}}}:err:crash-1", env.service());
    let failed = wait_until(Duration::from_secs(10), || {
        let mut con = con.clone();
        let key = err_key.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<i64>(&mut con)
                .await
                .unwrap_or(0)
                == 1
        }
    })
    .await;
    assert!(failed, "the first delivery never failed");
    first.kill().expect("kill the responder");
    first.wait().expect("reap it");
    let killed_at = Instant::now();

    let ran = Arc::new(AtomicU64::new(0));
    let seen = ran.clone();
    let _second = env
        .responder()
        .visibility_timeout(Duration::from_secs(1))
        .handler("retry", move |ctx: RequestContext, _p: Value| {
            seen.store(ctx.delivery, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery })) }
        })
        .start()
        .await
        .expect("start the second responder");
    let reply: Value = pending
        .wait()
        .await
        .expect("answered by the second responder");
    let took = killed_at.elapsed();
    assert_eq!(
        reply,
        json!({ "delivery": 2 }),
        "the claim counted a delivery"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(
        took < Duration::from_secs(15),
        "took {took:?}: the visibility timeout (1 s), not the dead responder's 30 s backoff"
    );
    let _ = redis::cmd("PING").query_async::<String>(&mut con).await;
}

/// `INFO errorstats`'s count of errors with this code (`EXECABORT`, `OOM`), 0 when there were none.
async fn error_count(con: &mut redis::aio::MultiplexedConnection, code: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(con)
        .await
        .expect("INFO errorstats");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("errorstat_{code}:count=")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `CONFIG SET maxmemory 1` from a handler, on a connection of its own: every write that may grow memory is
/// refused with `OOM` from then on, the handler's own answer included.
fn refuse_writes(url: &str) {
    let client = redis::Client::open(url).expect("client");
    let mut con = client.get_connection().expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut con)
        .expect("CONFIG SET maxmemory 1");
}

/// A failed answer is a known failure too (issue 17): the handler's first delivery succeeds, but Redis refuses the
/// transaction that stores its reply (the handler set `maxmemory` to 1 byte, so the `SET` in the `MULTI` is refused
/// with `OOM` and `EXEC` with `EXECABORT`). Once Redis takes writes again, the request is delivered again after the
/// retry backoff and answered by its second delivery, long before the 30 s visibility timeout.
async fn a_failed_answer_is_delivered_again(inline: bool) {
    let env = TestEnv::new();
    let url = env.server.url();
    let builder = env
        .responder()
        .visibility_timeout(Duration::from_secs(30))
        .retry_backoff(RetryPolicy::exponential(
            Duration::from_millis(500),
            Duration::from_millis(500),
        ));
    let builder = if inline {
        builder.handler("refused", move |ctx: RequestContext, _p: Value| {
            if ctx.delivery == 1 {
                refuse_writes(&url);
            }
            // Ready at once: on a current-thread runtime the read loop answers it inline.
            std::future::ready(Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery })))
        })
    } else {
        builder.handler("refused", move |ctx: RequestContext, _p: Value| {
            let url = url.clone();
            async move {
                tokio::task::yield_now().await;
                if ctx.delivery == 1 {
                    tokio::task::spawn_blocking(move || refuse_writes(&url))
                        .await
                        .expect("refuse writes");
                }
                Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery }))
            }
        })
    };
    let _responder = builder.start().await.expect("start responder");
    let requester = env.requester();
    let mut con = env.redis().await;
    let started = Instant::now();
    let pending = requester
        .send("refused-1", "refused", &json!({}), Duration::from_secs(15))
        .await
        .expect("send");
    // The answer of the first delivery was refused: let Redis take writes again, within the 500 ms backoff.
    let refused = wait_until(Duration::from_secs(10), || {
        let mut con = con.clone();
        async move { error_count(&mut con, "EXECABORT").await > 0 }
    })
    .await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async(&mut con)
        .await
        .expect("CONFIG SET maxmemory 0");
    assert!(refused, "the first answer was never refused");
    assert!(
        error_count(&mut con, "OOM").await > 0,
        "the answer was refused for memory"
    );
    let reply: Value = pending
        .wait()
        .await
        .unwrap_or_else(|err| panic!("answered by the second delivery: {err}"));
    let took = started.elapsed();
    assert_eq!(reply, json!({ "delivery": 2 }));
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: the backoff, not the 30 s visibility timeout"
    );
}

/// [`a_failed_answer_is_delivered_again`] for an answer made by a request task (an async handler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_answer_from_a_request_task_is_delivered_again_after_the_backoff() {
    a_failed_answer_is_delivered_again(false).await;
}

/// [`a_failed_answer_is_delivered_again`] for an answer made inline by the read loop (a handler ready at once, on a
/// current-thread runtime, as the CLI runs).
#[tokio::test(flavor = "current_thread")]
async fn a_failed_answer_made_inline_is_delivered_again_after_the_backoff() {
    a_failed_answer_is_delivered_again(true).await;
}

/// Runs a script on Redis for `busy_for`, after `CONFIG SET busy-reply-threshold 100`: from 100 ms into it until it
/// ends, Redis answers every other client `BUSY`.
fn keep_redis_busy(url: &str, busy_for: Duration) {
    let client = redis::Client::open(url).expect("client");
    let mut con = client.get_connection().expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg("100")
        .query(&mut con)
        .expect("CONFIG SET busy-reply-threshold");
    let _: () = redis::cmd("EVAL")
        .arg(
            "local s = redis.call('TIME') \
             while true do \
               local n = redis.call('TIME') \
               if (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > tonumber(ARGV[1]) then break end \
             end",
        )
        .arg(0)
        .arg(busy_for.as_micros() as u64)
        .query(&mut con)
        .expect("the busy script");
}

/// A reply refused because Redis cannot serve for a moment (`BUSY` while a long script runs; `LOADING` after a
/// restart and `CLUSTERDOWN` mid-failover are the same kind) is stored once Redis answers again: the handler, whose
/// result is in hand, does not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_refused_while_redis_is_busy_is_stored_without_running_the_handler_again() {
    let env = TestEnv::new();
    let url = env.server.url();
    let ran = Arc::new(AtomicU64::new(0));
    let runs = ran.clone();
    let _responder = env
        .responder()
        .visibility_timeout(Duration::from_secs(30))
        .retry_backoff(RetryPolicy::exponential(
            Duration::from_millis(100),
            Duration::from_millis(100),
        ))
        .handler("busy", move |ctx: RequestContext, _p: Value| {
            let url = url.clone();
            runs.fetch_add(1, Ordering::SeqCst);
            async move {
                if ctx.delivery == 1 {
                    std::thread::spawn(move || keep_redis_busy(&url, Duration::from_millis(1500)));
                    // Past the busy threshold: the answer meets BUSY.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                Ok::<_, HandlerError>(json!({ "delivery": ctx.delivery }))
            }
        })
        .start()
        .await
        .expect("start responder");
    let reply: Value = env
        .requester()
        .request("busy-1", "busy", &json!({}), Duration::from_secs(20))
        .await
        .expect("answered");
    assert_eq!(reply, json!({ "delivery": 1 }), "the handler ran again");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let mut con = env.redis().await;
    assert!(
        error_count(&mut con, "BUSY").await > 0,
        "Redis was never busy"
    );
}
