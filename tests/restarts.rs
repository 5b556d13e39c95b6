//! Redis restarts (SIGKILL, then a start on the same port and directory) under load: with `appendfsync always`
//! nothing accepted is lost; with `everysec` at most the last second, each loss reported as `Lost`, never left to
//! hang; without persistence every request in flight is reported lost soon after the reconnect and the service
//! serves again; callers that give up during the reconnect leave no subscription.
//!
//! DESIGN 12 (Redis going away: both sides reconnect and re-subscribe, the group is recreated when the stream
//! vanished, on a Redis with AOF persistence nothing accepted is lost across a restart, a request in flight gets its
//! reply or a clear error), 1 (callers giving up release their subscription, even mid-reconnect).
//!
//! Responders are real `redcall serve` processes; requesters are the library in the test.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    AofPolicy, FAIL_FAST, RedisOptions, RedisServer, connect_router, fresh_request_succeeds,
    kill_blocking, restart_blocking, spawn_serve, subscribed_channels, wait_until,
};
use redcall::{Client, Error, ErrorKind};
use serde_json::{Value, json};

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
/// down until a send has failed, then restarts it on the same port. The client is `fail_fast` (so sends fail at once
/// while Redis is down: `ride_out.rs` tests the default, which waits): a caller whose send fails retries under a
/// new id (as an application would); every accepted request is awaited. Half the callers give their own ids (`send`,
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
    let client = Client::builder(&server.url())
        .fail_fast(true)
        .build()
        .expect("client");
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
    kill_blocking(&mut server);
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
    restart_blocking(&mut server);
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
        assert!(
            common::unreachable_redis(&failure.error),
            "{}",
            failure.error
        );
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
    kill_blocking(&mut server);
    restart_blocking(&mut server);
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
    kill_blocking(&mut server);
    restart_blocking(&mut server);
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
