//! Resilience: Redis restarts (with and without persistence), long outages, a vanished stream, garbage in the
//! requests stream, and fuzzed envelopes.
//!
//! Responders are real `redcall serve` processes; requesters are the library in the test; Redis is a throwaway
//! `redis-server` from the harness that the tests SIGKILL and restart on the same port and directory.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    AofPolicy, RedisOptions, RedisServer, connect_router, redis_con, spawn_serve,
    subscribed_channels, wait_until,
};
use redcall::protocol::{self, FORMAT_VERSION, ReplyEnvelope, ReplyStatus, RequestEnvelope};
use redcall::{Client, Error, ErrorKind, Requester};
use serde_json::{Value, json};

/// A send that fails while Redis is down must fail at least this fast (its timeout is far longer).
const FAIL_FAST: Duration = Duration::from_secs(2);

/// Whether `err` says Redis could not be reached: nothing was sent (`Unavailable`), or the connection failed
/// under the command (`Redis`).
fn unreachable_redis(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Redis)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn responder_log(server: &RedisServer, name: &str) -> String {
    std::fs::read_to_string(server.dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// Sends `echo` until one succeeds (Redis and both sides may still be recovering), then checks the reply.
/// Returns how long it took.
async fn fresh_request_succeeds(requester: &Requester, tag: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let mut attempt = 0;
    let mut last_error = String::new();
    while started.elapsed() < within {
        attempt += 1;
        let id = format!("{tag}-fresh-{}", redcall::new_request_id());
        match requester
            .request::<_, Value>(&id, "echo", &json!({"fresh": attempt}), within)
            .await
        {
            Ok(reply) => {
                assert_eq!(reply, json!({"fresh": attempt}));
                return started.elapsed();
            }
            Err(err) => {
                assert!(
                    unreachable_redis(&err),
                    "only Redis errors while recovering: {err}"
                );
                last_error = err.to_string();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("no fresh request succeeded within {within:?}; last error: {last_error}");
}

/// SIGKILLs the server from async code (the harness is blocking).
fn kill(server: &mut RedisServer) {
    tokio::task::block_in_place(|| server.kill());
}

/// Restarts the server on the same port and directory (the AOF, if any, is reloaded).
fn restart(server: &mut RedisServer) {
    tokio::task::block_in_place(|| server.restart());
}

// ---------------------------------------------------------------------------------------------------------------
// Restart mid-load
// ---------------------------------------------------------------------------------------------------------------

/// What happened to one request index of the load.
#[derive(Debug)]
enum Outcome {
    Answered,
    Failed { accepted_at: Instant, error: Error },
}

/// A `send` that Redis refused or could not take.
#[derive(Debug)]
struct SendFailure {
    took: Duration,
    error: Error,
}

#[derive(Default)]
struct LoadLog {
    outcomes: Mutex<Vec<Outcome>>,
    send_failures: Mutex<Vec<SendFailure>>,
    answered: AtomicUsize,
}

/// What a restart run measured (printed through `Debug`).
#[allow(dead_code)]
#[derive(Debug)]
struct RestartReport {
    accepted: usize,
    answered: usize,
    lost: usize,
    send_failures: usize,
    slowest_send_failure: Duration,
    answered_before_kill: usize,
    outage: Duration,
    recovery: Duration,
}

/// Runs `REQUESTS` requests (`work`, 5 ms) with `CONCURRENCY` callers; SIGKILLs redis-server mid-load, keeps it
/// down until a send has failed, then restarts it on the same port. A caller whose send fails retries under a new
/// id (as an application would); every accepted request is awaited. Half the callers give their own ids (`send`,
/// added by a script), half let redcall make them (`submit`, added in batches), so both ways of adding are tested.
async fn restart_mid_load(policy: AofPolicy, service: &str) -> (RestartReport, Vec<Outcome>) {
    const REQUESTS: usize = 500;
    const CONCURRENCY: usize = 50;
    const OUTAGE: Duration = Duration::from_secs(1);
    // Far longer than recovery may take: a request answered only at its timeout (from the stored copy) means the
    // reply router did not restore its subscriptions, and fails the bound below.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
    const RECOVERY_BOUND: Duration = Duration::from_secs(30);
    let mut server = RedisServer::start_with(RedisOptions::default().aof(policy));
    let _responder = spawn_serve(
        &server,
        service,
        "resp",
        &[],
        &["--visibility-timeout", "2000", "--concurrency", "32"],
    );
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    let log = Arc::new(LoadLog::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (requester, log, next) = (requester.clone(), log.clone(), next.clone());
        let service = service.to_owned();
        let own_ids = worker % 2 == 0;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    return;
                }
                for attempt in 0.. {
                    assert!(attempt < 200, "request {i}: sends kept failing");
                    let started = Instant::now();
                    let sent = if own_ids {
                        let id = format!("{service}-{i}-{attempt}");
                        requester
                            .send(&id, "work", &json!({"ms": 5}), REQUEST_TIMEOUT)
                            .await
                    } else {
                        requester
                            .submit("work", &json!({"ms": 5}), REQUEST_TIMEOUT)
                            .await
                    };
                    let pending = match sent {
                        Ok(p) => p,
                        Err(error) => {
                            let took = started.elapsed();
                            log.send_failures
                                .lock()
                                .unwrap()
                                .push(SendFailure { took, error });
                            // A caller backs off before trying again; not a synchronisation.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let accepted_at = Instant::now();
                    let id = pending.id().to_owned();
                    let outcome = match pending.wait::<Value>().await {
                        Ok(reply) => {
                            assert_eq!(reply, json!({"slept_ms": 5}), "{id}");
                            log.answered.fetch_add(1, Ordering::SeqCst);
                            Outcome::Answered
                        }
                        Err(error) => Outcome::Failed { accepted_at, error },
                    };
                    log.outcomes.lock().unwrap().push(outcome);
                    break;
                }
            }
        });
    }

    assert!(
        wait_until(Duration::from_secs(60), || {
            let log = log.clone();
            async move { log.answered.load(Ordering::SeqCst) >= REQUESTS / 4 }
        })
        .await,
        "the load never got going"
    );
    let answered_before_kill = log.answered.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    kill(&mut server);
    // Redis stays away for a while (the scenario, not a synchronisation). Callers blocked in `wait` keep waiting;
    // new sends must fail at once.
    let mut probe = 0;
    while killed_at.elapsed() < OUTAGE {
        let started = Instant::now();
        let sent = if probe % 2 == 0 {
            requester
                .send(
                    &format!("{service}-probe-{probe}"),
                    "work",
                    &json!({"ms": 5}),
                    Duration::from_secs(30),
                )
                .await
        } else {
            requester
                .submit("work", &json!({"ms": 5}), Duration::from_secs(30))
                .await
        };
        let err = sent.expect_err("Redis is down");
        log.send_failures.lock().unwrap().push(SendFailure {
            took: started.elapsed(),
            error: err,
        });
        probe += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    restart(&mut server);
    let restarted_at = Instant::now();
    let outage = restarted_at - killed_at;
    let before = log.answered.load(Ordering::SeqCst);
    let first_after = wait_until(RECOVERY_BOUND, || {
        let log = log.clone();
        async move { log.answered.load(Ordering::SeqCst) > before }
    })
    .await;
    assert!(first_after, "no request was answered after the restart");
    let recovery = restarted_at.elapsed();

    let joined = tokio::time::timeout_at((restarted_at + RECOVERY_BOUND).into(), async {
        while let Some(res) = workers.join_next().await {
            res.expect("load worker");
        }
    })
    .await;
    assert!(
        joined.is_ok(),
        "accepted requests were not all answered within {RECOVERY_BOUND:?} of the restart"
    );
    fresh_request_succeeds(&requester, service, Duration::from_secs(20)).await;

    let outcomes = std::mem::take(&mut *log.outcomes.lock().unwrap());
    let failures = std::mem::take(&mut *log.send_failures.lock().unwrap());
    for failure in &failures {
        assert!(unreachable_redis(&failure.error), "{}", failure.error);
        assert!(
            failure.took < FAIL_FAST,
            "a send took {:?} to fail: {}",
            failure.took,
            failure.error
        );
    }
    let report = RestartReport {
        accepted: outcomes.len(),
        answered: outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Answered))
            .count(),
        lost: outcomes.len()
            - outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Answered))
                .count(),
        send_failures: failures.len(),
        slowest_send_failure: failures.iter().map(|f| f.took).max().unwrap_or_default(),
        answered_before_kill,
        outage,
        recovery,
    };
    eprintln!(
        "{policy:?}: {report:?}; a failed send says: {}",
        failures
            .first()
            .map(|f| f.error.to_string())
            .unwrap_or_default()
    );
    assert_eq!(report.accepted, REQUESTS, "every index ends accepted");
    // For `everysec`, a lost request must have been accepted shortly before the kill.
    let outcomes = outcomes
        .into_iter()
        .inspect(|o| {
            if let Outcome::Failed { accepted_at, .. } = o {
                assert!(
                    *accepted_at + Duration::from_secs(2) >= killed_at
                        && *accepted_at <= restarted_at,
                    "a request accepted well before the kill was lost: {o:?}"
                );
            }
        })
        .collect();
    (report, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_aof_always_loses_nothing_accepted() {
    let (report, outcomes) = restart_mid_load(AofPolicy::Always, "restart-always").await;
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Answered))
        .collect();
    assert!(
        failed.is_empty(),
        "accepted requests failed with appendfsync always: {failed:?}"
    );
    assert_eq!(report.answered, report.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_aof_everysec_loses_at_most_the_last_second() {
    let (report, outcomes) = restart_mid_load(AofPolicy::EverySec, "restart-everysec").await;
    // A lost request is reported as lost (right after the reconnect), never left to hang or time out.
    for outcome in &outcomes {
        if let Outcome::Failed { error, .. } = outcome {
            assert_eq!(error.kind(), ErrorKind::Lost, "{error}");
        }
    }
    eprintln!(
        "everysec: {} of {} accepted requests lost across a SIGKILL of redis-server",
        report.lost, report.accepted
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Without persistence
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_reports_lost_requests_and_recovers() {
    let service = "restart-volatile";
    let mut server = RedisServer::start();
    // One slot, taken by a slow request, so the others wait in the stream when Redis goes away.
    let _responder = spawn_serve(
        &server,
        service,
        "resp",
        &[],
        &["--concurrency", "1", "--visibility-timeout", "2000"],
    );
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    let timeout = Duration::from_secs(40);
    let slow = requester
        .send("volatile-slow", "sleep", &json!({"ms": 4000}), timeout)
        .await
        .expect("send");
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(
            requester
                .send(&format!("volatile-{i}"), "echo", &json!(i), timeout)
                .await
                .expect("send"),
        );
    }
    // Generated ids too: they are added in batches, and must be marked accepted all the same.
    for i in 0..3 {
        queued.push(
            requester
                .submit("echo", &json!(i), timeout)
                .await
                .expect("submit"),
        );
    }
    kill(&mut server);
    restart(&mut server);
    let restarted = Instant::now();
    for pending in std::iter::once(slow).chain(queued) {
        let id = pending.id().to_owned();
        let err = pending
            .wait::<Value>()
            .await
            .expect_err("Redis forgot this request");
        assert_eq!(err.kind(), ErrorKind::Lost, "{id}: {err}");
        assert!(
            err.to_string().contains(&id),
            "the error names the id: {err}"
        );
    }
    let told_within = restarted.elapsed();
    assert!(
        told_within < Duration::from_secs(10),
        "lost requests were reported after {told_within:?}, not soon after the reconnect"
    );
    // The responder recreates its group (the stream is gone: NOGROUP) and serves again.
    let took = fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;
    // The lost requests' callers were told during the reconnect, before the new connection was in place; their
    // channels are unsubscribed all the same.
    let unsubscribed = wait_until(Duration::from_secs(10), || async {
        subscribed_channels(&server).trim().is_empty()
    })
    .await;
    assert!(
        unsubscribed,
        "still subscribed after the reconnect: {}",
        subscribed_channels(&server)
    );
    assert_eq!(client.in_flight(), 0, "waiters left");
    eprintln!(
        "no persistence: 9 in-flight requests reported lost {told_within:?} after the restart; serving again after {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_redis_is_down() {
    let mut server = RedisServer::start();
    let url = server.url();
    let connected = Client::open(&url).expect("client");
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
    kill(&mut server);

    let never_connected = Client::open(&url).expect("client");
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
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    // In flight across the outage: its handler finishes while Redis is down.
    let in_flight = requester
        .send(
            "outage-in-flight",
            "sleep",
            &json!({"ms": 300}),
            Duration::from_secs(90),
        )
        .await
        .expect("send");
    kill(&mut server);
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
    restart(&mut server);
    let restarted_ms = now_ms();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_is_recreated_by_the_responder() {
    let service = "nogroup";
    let server = RedisServer::start();
    let _responder = spawn_serve(&server, service, "resp", &[], &[]);
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    let stream = requester.keys().requests().to_owned();
    assert_eq!(server.cli(&["DEL", &stream]), "1");
    for i in 0..3 {
        let reply: Value = requester
            .request(
                &format!("after-del-{i}"),
                "echo",
                &json!(i),
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|e| panic!("request {i} after DEL: {e}"));
        assert_eq!(reply, json!(i));
    }
    let groups = server.cli(&["XINFO", "GROUPS", &stream]);
    assert!(
        groups.contains("workers"),
        "the group exists again: {groups}"
    );
    let log = responder_log(&server, "resp");
    assert!(
        log.contains("recreating"),
        "the responder said what it did:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Garbage in the requests stream
// ---------------------------------------------------------------------------------------------------------------

/// A hand-made stream entry and what the responder must say about it.
struct Garbage {
    /// The `id` field, if any.
    id: Option<&'static str>,
    /// The `env` field, if any.
    env: Option<Vec<u8>>,
    /// The dead letter's `reason`.
    reason: &'static str,
    /// Words the dead letter's `error` must contain.
    words: &'static str,
}

fn garbage(
    id: Option<&'static str>,
    env: Option<Vec<u8>>,
    reason: &'static str,
    words: &'static str,
) -> Garbage {
    Garbage {
        id,
        env,
        reason,
        words,
    }
}

fn envelope(v: u8, id: &str, params: &[u8]) -> Vec<u8> {
    let now = now_ms();
    protocol::encode(&RequestEnvelope {
        v,
        id: id.to_owned(),
        func_key: "echo".to_owned(),
        params: params.to_owned(),
        deadline_ms: now + 60_000,
        created_ms: now,
        replay: None,
    })
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_entries_are_dead_lettered_and_the_responder_keeps_serving() {
    const LIMIT: usize = 2048;
    let service = "garbage";
    let server = RedisServer::start();
    let _responder = spawn_serve(
        &server,
        service,
        "resp",
        &["--payload-limit", &LIMIT.to_string()],
        &[],
    );
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;
    let keys = requester.keys().clone();
    let mut con = redis_con(&server).await;

    let params = protocol::encode(&json!({"a": 1})).expect("encode");
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let wrong_shape =
        protocol::encode(&json!({"v": 1, "id": 5, "fn": ["echo"], "params": "x"})).unwrap();
    let oversized = envelope(
        FORMAT_VERSION,
        "g-oversized",
        &protocol::encode(&"x".repeat(LIMIT)).unwrap(),
    );
    let cases = vec![
        garbage(None, None, "malformed_request", "lacks"),
        garbage(Some("g-no-env"), None, "malformed_request", "lacks"),
        garbage(
            Some("g-random"),
            Some(random),
            "malformed_request",
            "could not decode",
        ),
        garbage(
            Some("g-shape"),
            Some(wrong_shape),
            "malformed_request",
            "could not decode",
        ),
        garbage(
            Some("g-version"),
            Some(envelope(99, "g-version", &params)),
            "malformed_request",
            "version 99",
        ),
        garbage(
            Some("g-oversized"),
            Some(oversized),
            "payload_too_large",
            "over the payload limit",
        ),
        garbage(
            Some("g-mismatch"),
            Some(envelope(FORMAT_VERSION, "g-other", &params)),
            "malformed_request",
            "differs",
        ),
    ];
    let mut entry_ids = Vec::new();
    for Garbage { id, env, .. } in &cases {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keys.requests()).arg("*").arg("junk").arg("yes");
        if let Some(id) = id {
            cmd.arg("id").arg(*id);
        }
        if let Some(env) = env {
            cmd.arg("env").arg(env.as_slice());
        }
        let entry_id: String = cmd.query_async(&mut con).await.expect("XADD");
        entry_ids.push(entry_id);
    }

    let dead_key = keys.dead_letters().to_owned();
    let read_dead = |mut con: redis::aio::MultiplexedConnection| {
        let dead_key = dead_key.clone();
        async move {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&dead_key)
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await
                .expect("XRANGE");
            reply
                .ids
                .into_iter()
                .map(|e| {
                    let fields: HashMap<String, String> = e
                        .map
                        .into_iter()
                        .filter_map(|(k, v)| match v {
                            redis::Value::BulkString(b) => {
                                Some((k, String::from_utf8_lossy(&b).into_owned()))
                            }
                            _ => None,
                        })
                        .collect();
                    (fields.get("entry_id").cloned().unwrap_or_default(), fields)
                })
                .collect::<HashMap<_, _>>()
        }
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (con, read_dead) = (con.clone(), &read_dead);
            let want = cases.len();
            async move { read_dead(con).await.len() >= want }
        })
        .await,
        "not every garbage entry was dead-lettered"
    );
    let dead = read_dead(con.clone()).await;
    for (
        Garbage {
            id, reason, words, ..
        },
        entry_id,
    ) in cases.iter().zip(&entry_ids)
    {
        let letter = dead
            .get(entry_id)
            .unwrap_or_else(|| panic!("{id:?}: no dead letter"));
        assert_eq!(letter["reason"], *reason, "{id:?}: {letter:?}");
        assert!(
            letter["error"].contains(words),
            "{id:?}: error {:?} lacks {words:?}",
            letter["error"]
        );
        assert_eq!(letter["id"], id.unwrap_or(""), "{id:?}");
        let Some(id) = id else { continue };
        // Where the id is known, the requester side gets a typed error.
        let err = requester
            .stored_reply::<Value>(id)
            .await
            .expect_err("an error reply is stored");
        match (*reason, &err) {
            ("malformed_request", Error::Malformed { id: got, message }) => {
                assert_eq!(got, id);
                assert!(message.contains(words), "{message}");
            }
            ("payload_too_large", Error::Handler { code, .. }) => {
                assert_eq!(code, "payload_too_large")
            }
            _ => panic!("{id}: unexpected error {err:?}"),
        }
    }
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(keys.requests())
        .arg("workers")
        .query_async(&mut con)
        .await
        .expect("XPENDING");
    assert_eq!(pending.count(), 0, "every garbage entry was acknowledged");
    fresh_request_succeeds(&requester, service, Duration::from_secs(10)).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Fuzzing the decoders
// ---------------------------------------------------------------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Params or reply data: one complete MessagePack document, as the protocol requires.
    fn document() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| protocol::encode(&b).unwrap())
    }

    fn valid_request() -> impl Strategy<Value = RequestEnvelope> {
        (".{0,40}", ".{0,20}", document(), any::<u64>(), any::<u64>()).prop_map(
            |(id, func_key, params, deadline_ms, created_ms)| RequestEnvelope {
                v: FORMAT_VERSION,
                id,
                func_key,
                params,
                deadline_ms,
                created_ms,
                replay: None,
            },
        )
    }

    fn valid_reply() -> impl Strategy<Value = ReplyEnvelope> {
        (
            ".{0,40}",
            prop_oneof![
                Just(ReplyStatus::Ok),
                Just(ReplyStatus::Error),
                Just(ReplyStatus::DeadLettered),
                Just(ReplyStatus::Expired)
            ],
            proptest::option::of(document()),
            proptest::option::of(".{0,20}"),
            proptest::option::of(".{0,60}"),
            any::<u64>(),
        )
            .prop_map(|(id, status, data, code, message, ts_ms)| ReplyEnvelope {
                v: FORMAT_VERSION,
                id,
                status,
                data,
                code,
                message,
                ts_ms,
            })
    }

    /// Flips, overwrites, truncates or extends a valid encoding.
    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(pos, op, value) in edits {
            if bytes.is_empty() {
                bytes.push(value);
                continue;
            }
            let pos = pos % bytes.len();
            match op % 4 {
                0 => bytes[pos] ^= value | 1,
                1 => bytes[pos] = value,
                2 => bytes.truncate(pos),
                _ => bytes.insert(pos, value),
            }
        }
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = protocol::decode_request(&bytes);
            let _ = protocol::decode_reply(&bytes);
        }

        #[test]
        fn mutated_envelopes_never_panic(
            request in valid_request(),
            reply in valid_reply(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        ) {
            let request = mutate(protocol::encode(&request).unwrap(), &edits);
            let reply = mutate(protocol::encode(&reply).unwrap(), &edits);
            for bytes in [&request, &reply] {
                let _ = protocol::decode_request(bytes);
                let _ = protocol::decode_reply(bytes);
            }
        }

        #[test]
        fn valid_envelopes_round_trip(request in valid_request(), reply in valid_reply()) {
            let bytes = protocol::encode(&request).unwrap();
            prop_assert_eq!(protocol::decode_request(&bytes).unwrap(), request);
            let bytes = protocol::encode(&reply).unwrap();
            prop_assert_eq!(protocol::decode_reply(&bytes).unwrap(), reply);
        }

        #[test]
        fn other_versions_are_refused(request in valid_request(), v in any::<u8>()) {
            prop_assume!(v != FORMAT_VERSION);
            let bytes = protocol::encode(&RequestEnvelope { v, ..request }).unwrap();
            let err = protocol::decode_request(&bytes).unwrap_err();
            prop_assert!(err.to_string().contains(&format!("version {v}")), "{}", err);
        }
    }
}

/// Callers that give up while the reply router is restoring its subscriptions after a reconnect (their timeouts run
/// out then) are unsubscribed all the same. Their release finds no connection yet; the router unsubscribes such
/// channels once the new connection is in place. Thousands of callers with timeouts spread over two seconds around
/// a Redis restart make sure some give up in that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_during_a_reconnect_leave_no_subscription() {
    const CALLERS: u64 = 20_000;
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("restore-release");
    connect_router(&requester).await;

    // No responder: every caller waits until its timeout, 1 to 3 s after its send.
    let sends = (0..CALLERS).map(|i| {
        let requester = requester.clone();
        async move {
            let timeout = Duration::from_millis(1000 + (i * 2000) / CALLERS);
            requester.submit("echo", &i, timeout).await.expect("send")
        }
    });
    let pending = futures_util::future::join_all(sends).await;
    let waits = tokio::spawn(futures_util::future::join_all(
        pending.into_iter().map(|p| p.wait::<Value>()),
    ));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    kill(&mut server);
    restart(&mut server);
    let outcomes = waits.await.expect("waits");
    let timeouts = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.kind() == ErrorKind::Timeout))
        .count();
    assert_eq!(
        timeouts as u64, CALLERS,
        "every caller timed out (nothing lost with AOF always)"
    );

    assert_eq!(client.in_flight(), 0, "waiters left");
    let unsubscribed = wait_until(Duration::from_secs(10), || async {
        subscribed_channels(&server).trim().is_empty()
    })
    .await;
    let left = subscribed_channels(&server);
    assert!(
        unsubscribed,
        "{} channels still subscribed",
        left.lines().count()
    );
}

/// A request Redis refuses to add (here the requests stream key holds a string, a broken deployment) leaves
/// nothing behind: no record to answer `call_info` with, nothing that would refuse the same id once the key is
/// fixed.
#[tokio::test]
async fn a_request_redis_refuses_to_add_leaves_nothing_behind() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("broken");
    server.cli(&["SET", requester.keys().requests(), "not a stream"]);

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

    server.cli(&["DEL", requester.keys().requests()]);
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
