//! Riding out an outage, the default (DESIGN 12): while Redis is unreachable a request keeps trying until its own
//! timeout, and a send whose answer was lost is tried again under the same id and counts once. (`outages.rs`: the
//! opt-in `fail_fast` mode.)

mod common;

use std::time::{Duration, Instant};

use common::{
    AofPolicy, FAIL_FAST, RedisOptions, RedisServer, kill_blocking, redis_con, restart_blocking,
    spawn_serve, unreachable_redis, wait_until,
};
use redcall::{Client, HandlerError, RequestContext};
use serde_json::{Value, json};

/// The ```lua block that follows `after` in docs/protocol.md (which `protocol_doc.rs` proves is, byte for byte, a
/// script redcall runs), dedented.
fn quoted_script(after: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
        .expect("docs/protocol.md");
    let from = doc.find(after).expect("the script's heading");
    let mut lines = doc[from..].lines().skip_while(|l| l.trim() != "```lua");
    let fence = lines.next().expect("a lua block");
    let indent = fence.len() - fence.trim_start().len();
    let mut body = String::from("\n");
    for line in lines.take_while(|l| l.trim() != "```") {
        body.push_str(line.get(indent..).unwrap_or(""));
        body.push('\n');
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_rides_out_redis_being_down_at_first_use() {
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    let url = server.url();
    kill_blocking(&mut server);

    let fail_fast = Client::builder(&url)
        .fail_fast(true)
        .build()
        .expect("client");
    let started = Instant::now();
    let err = fail_fast
        .requester("away")
        .request::<_, i64>("ff", "double", &1, Duration::from_secs(10))
        .await
        .expect_err("fail_fast fails while Redis is down");
    assert!(unreachable_redis(&err), "{err}");
    assert!(
        started.elapsed() < FAIL_FAST,
        "took {:?}",
        started.elapsed()
    );

    // The default: a caller-given id and a generated one, both sent while Redis is down, both answered.
    let client = Client::open(&url).expect("client");
    let requester = client.requester("away");
    let own = tokio::spawn({
        let requester = requester.clone();
        async move {
            requester
                .request::<_, i64>("own", "double", &21, Duration::from_secs(20))
                .await
        }
    });
    let generated = tokio::spawn({
        let requester = requester.clone();
        async move {
            requester
                .call::<_, i64>("double", &5, Duration::from_secs(20))
                .await
        }
    });
    // The outage itself: Redis stays away this long while both callers wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart_blocking(&mut server);
    let responder = client
        .responder("away")
        .handler("double", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n * 2)
        })
        .start()
        .await
        .expect("responder");
    assert_eq!(own.await.expect("task").expect("own id answered"), 42);
    assert_eq!(
        generated
            .await
            .expect("task")
            .expect("generated id answered"),
        10
    );
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_fails_no_caller_that_had_time() {
    const CALLS: usize = 200;
    const CONCURRENCY: usize = 20;
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    let service = "restart-load";
    // A read in flight when Redis dies can be delivered (in the pending list, kept by the AOF) but never reach the
    // responder: the reaper gives it out again after the visibility timeout, kept short here (2 s) so that such an
    // entry is answered well within the callers' timeouts.
    let _responder = spawn_serve(
        &server,
        service,
        "resp",
        &[],
        &["--visibility-timeout", "2000"],
    );
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    for worker in 0..CONCURRENCY {
        let (requester, done) = (requester.clone(), done.clone());
        callers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in (worker..CALLS).step_by(CONCURRENCY) {
                let params = json!({"ms": 5, "i": i});
                let outcome = if i % 2 == 0 {
                    requester
                        .request::<_, Value>(
                            &format!("r{i}"),
                            "sleep",
                            &params,
                            Duration::from_secs(30),
                        )
                        .await
                } else {
                    requester
                        .call::<_, Value>("sleep", &params, Duration::from_secs(30))
                        .await
                };
                match outcome {
                    Ok(reply) => assert_eq!(reply, json!({"slept_ms": 5})),
                    Err(err) => failures.push(format!("call {i}: {err}")),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            failures
        }));
    }
    assert!(
        wait_until(Duration::from_secs(30), || async {
            done.load(std::sync::atomic::Ordering::SeqCst) >= CALLS / 4
        })
        .await,
        "the load got going"
    );
    kill_blocking(&mut server);
    // Down about a second, far less than every caller's timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart_blocking(&mut server);
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await.expect("caller task"));
    }
    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls failed across a 1 s restart: {failures:?}",
        failures.len()
    );
}

/// `EVAL body` with `keys` and `args`.
async fn eval<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    body: &str,
    keys: &[String],
    args: &[&[u8]],
) -> T {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(body).arg(keys.len()).arg(keys);
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query_async(con).await.expect("EVAL")
}

#[tokio::test]
async fn the_add_and_the_reply_by_hand_count_once_when_tried_again() {
    let server = RedisServer::start();
    let mut con = redis_con(&server).await;
    let keys = redcall::protocol::ServiceKeys::new("redcall", "again");
    let add = quoted_script("then add the request with `ADD_REQUEST`");
    let add_keys = [
        keys.record("r1"),
        keys.requests().to_owned(),
        keys.reply("r1"),
        keys.last_error("r1"),
    ];
    let first: Option<String> =
        eval(&mut con, &add, &add_keys, &[b"r1", b"envelope-1", b"60000"]).await;
    assert!(first.is_some_and(|e| e.contains('-')), "an entry id");
    // The same attempt again (its answer was lost): counted once, reported as added, nothing added twice.
    let again: Option<String> =
        eval(&mut con, &add, &add_keys, &[b"r1", b"envelope-1", b"60000"]).await;
    assert_eq!(again.as_deref(), Some("added"));
    // Another request under the same id: refused.
    let other: Option<String> =
        eval(&mut con, &add, &add_keys, &[b"r1", b"envelope-2", b"60000"]).await;
    assert_eq!(other, None);
    assert_eq!(server.cli(&["XLEN", keys.requests()]).trim(), "1");

    let publish = quoted_script("A reply by hand (`publish_reply`)");
    let publish_keys = [
        keys.reply("r1"),
        keys.last_error("r1"),
        keys.record("r1"),
        keys.by_hand(),
        keys.requests().to_owned(),
    ];
    let channel = keys.reply_channel("r1");
    for (reply, expected) in [(&b"reply-1"[..], 1), (b"reply-1", 1), (b"reply-2", 0)] {
        let stored: i64 = eval(
            &mut con,
            &publish,
            &publish_keys,
            &[reply, b"60000", channel.as_bytes()],
        )
        .await;
        assert_eq!(stored, expected, "{}", String::from_utf8_lossy(reply));
    }
    // The stream's newest entry when the reply was stored, for responders to check up to.
    let newest = server.cli(&["XREVRANGE", keys.requests(), "+", "-", "COUNT", "1"]);
    let by_hand = server.cli(&["GET", &keys.by_hand()]);
    assert!(
        newest
            .lines()
            .next()
            .is_some_and(|id| id.trim() == by_hand.trim()),
        "T:byhand {by_hand:?}, newest entry {newest:?}"
    );
}
