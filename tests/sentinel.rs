//! Redis Sentinel, for real: a primary, replicas and three sentinels on loopback ports (`common::sentinel`). A round
//! trip through a `redis+sentinel://` URL (library, admin and the CLI), and a failover mid-load: the primary is
//! SIGKILLed while callers run; they ride it out. With `replicated` durability every accepted request is answered;
//! without it, what is lost is counted (and each loss is reported to its caller as `Lost`, never a hang).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sentinel::SentinelSet;
use common::{GENEROUS, redcall_bin};
use redcall::{Client, Durability, ErrorKind, HandlerError, RequestContext};
use serde_json::{Value, json};

/// Requests of one failover test.
const REQUESTS: usize = 200;
/// Callers running at once.
const CALLERS: usize = 12;
/// The primary dies once this many requests were answered.
const KILL_AFTER: usize = 40;
/// How long a handler works on a request. With `CONCURRENCY` below `CALLERS`, requests queue in the stream (about
/// 8 at any time): the load spans the failover (about 5 s in all), and requests wait unread when the primary dies.
const WORK: Duration = Duration::from_millis(100);
/// Requests a responder handles at once.
const CONCURRENCY: usize = 4;
/// How long the replicas receive nothing right before the primary dies.
const STOPPED_REPLICAS: Duration = Duration::from_millis(300);
/// Each caller's timeout: long enough to ride out a failover (about 3 s) and a redelivery after it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

fn unique_service(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A responder whose `echo` takes `work` per request.
async fn echo_responder(client: &Client, service: &str, work: Duration) -> redcall::Responder {
    client
        .responder(service)
        .concurrency(CONCURRENCY)
        // A read or an ack lost with the old primary is delivered again soon.
        .visibility_timeout(Duration::from_secs(2))
        .handler("echo", move |_ctx: RequestContext, v: Value| async move {
            tokio::time::sleep(work).await;
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start the responder through Sentinel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_sentinel_for_library_admin_and_cli() {
    let set = tokio::task::block_in_place(|| SentinelSet::start(1));
    let client = Client::builder(&set.url())
        .build()
        .expect("a redis+sentinel URL builds");
    let service = unique_service("sentinel-rt");
    let responder = echo_responder(&client, &service, Duration::ZERO).await;
    let reply: Value = client
        .requester(&service)
        .call("echo", &json!({"via": "sentinel"}), GENEROUS)
        .await
        .expect("round trip through Sentinel");
    assert_eq!(reply, json!({"via": "sentinel"}));
    let stats = client.admin(&service).stats().await.expect("admin stats");
    assert_eq!(stats.stream_length, 1, "{stats:?}");

    // The builder form reaches the same primary.
    let sentinels: Vec<String> = set
        .sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let built = Client::sentinel(&sentinels, common::sentinel::PRIMARY_NAME)
        .build()
        .expect("builder form");
    let reply: Value = built
        .requester(&service)
        .call("echo", &json!(2), GENEROUS)
        .await
        .expect("round trip through the builder form");
    assert_eq!(reply, json!(2));

    // The CLI takes the URL like any other, and replicated durability (the set has one replica).
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(redcall_bin())
            .args(["--url", &set.url(), "--service", &service])
            .args(["--durability", "replicated", "--durability-replicas", "1"])
            .args(["call", "echo", r#"{"from":"cli"}"#])
            .output()
            .expect("run redcall")
    });
    assert!(
        out.status.success(),
        "redcall call through Sentinel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cli"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    responder.shutdown().await.expect("shutdown");

    // The reaper on its own, from the CLI: one pass through the sentinels.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(redcall_bin())
            .args(["--url", &set.url(), "--service", &service, "--json"])
            .args(["reap", "--once"])
            .output()
            .expect("run redcall reap")
    });
    assert!(
        out.status.success(),
        "redcall reap --once through Sentinel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the reap report as JSON");
    assert_eq!(report["dead_lettered"], 0, "{report}");

    // `redcall serve` takes it too, its demo handlers' own connection included (`work` counts its runs with
    // `Client::redis_connection`).
    let served = unique_service("sentinel-serve");
    let mut serve = std::process::Command::new(redcall_bin());
    serve
        .args(["--url", &set.url(), "--service", &served])
        .args(["serve", "--consumer", "sentinel-serve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _serve = common::ChildGuard::spawn(&mut serve);
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(redcall_bin())
            .args(["--url", &set.url(), "--service", &served])
            .args([
                "call",
                "work",
                r#"{"ms":1}"#,
                "--id",
                "sentinel-work-1",
                "--timeout",
                "20s",
            ])
            .output()
            .expect("run redcall")
    });
    assert!(
        out.status.success(),
        "redcall call work through Sentinel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs_key = format!("{}:runs", client.keys(&served).tag());
    let mut con = client.redis_connection();
    let runs: Option<i64> = redis::AsyncCommands::hget(&mut con, &runs_key, "sentinel-work-1")
        .await
        .expect("HGET through the client's connection");
    assert_eq!(
        runs,
        Some(1),
        "the work handler counted its run on the primary"
    );
}

/// What became of the requests of one failover run.
#[derive(Debug, Default)]
struct Outcome {
    /// Answered correctly.
    answered: usize,
    /// Accepted (send returned), then reported lost by Redis.
    lost: usize,
    /// Accepted, then any other error (a timeout, a wrong reply): must never happen.
    failed_after_accept: Vec<String>,
    /// Not accepted (the send itself failed).
    not_accepted: Vec<String>,
    /// The longest any answered request took.
    slowest: Duration,
}

/// Runs `REQUESTS` echo requests from `CALLERS` callers through Sentinel, SIGKILLs the primary once `KILL_AFTER`
/// were answered, and waits for every caller.
async fn failover_mid_load(durability: Durability) -> Outcome {
    let mut set = tokio::task::block_in_place(|| SentinelSet::start(2));
    let client = Client::builder(&set.url())
        .durability(durability)
        .build()
        .expect("client");
    let service = unique_service("sentinel-failover");
    let responder = echo_responder(&client, &service, WORK).await;
    let requester = client.requester(&service);

    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let (requester, next, answered) = (requester.clone(), next.clone(), answered.clone());
        callers.spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    return outcome;
                }
                let started = Instant::now();
                // Half with ids of their own (the add script), half generated (the batched adder).
                let sent = if n % 2 == 0 {
                    requester
                        .send(
                            &format!("c{caller}-{n}"),
                            "echo",
                            &json!(n),
                            REQUEST_TIMEOUT,
                        )
                        .await
                } else {
                    requester.submit("echo", &json!(n), REQUEST_TIMEOUT).await
                };
                let pending = match sent {
                    Ok(pending) => pending,
                    Err(err) => {
                        outcome.not_accepted.push(format!("{n}: {err}"));
                        continue;
                    }
                };
                match pending.wait::<Value>().await {
                    Ok(v) if v == json!(n) => {
                        outcome.answered += 1;
                        outcome.slowest = outcome.slowest.max(started.elapsed());
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(v) => outcome
                        .failed_after_accept
                        .push(format!("{n}: wrong reply {v}")),
                    Err(err) if err.kind() == ErrorKind::Lost => outcome.lost += 1,
                    Err(err) => outcome.failed_after_accept.push(format!("{n}: {err}")),
                }
            }
        });
    }
    assert!(
        common::wait_until(GENEROUS, || async {
            answered.load(Ordering::SeqCst) >= KILL_AFTER
        })
        .await,
        "the load did not get going"
    );
    // Replication stops for a moment: what the primary accepts now is on the primary alone when it dies.
    // Without `WAIT` such requests were accepted all the same (and are lost); with it, their adds wait for the
    // replicas and, not confirmed, are tried again on the new primary.
    tokio::task::block_in_place(|| set.cut_replication());
    tokio::time::sleep(STOPPED_REPLICAS).await;
    let killed = Instant::now();
    let old = tokio::task::block_in_place(|| {
        let old = set.kill_primary();
        set.signal_replicas(true);
        old
    });
    let failover = tokio::task::block_in_place(|| set.wait_for_failover(old));
    eprintln!("failover: the sentinels named a new primary {failover:?} after the kill");

    let mut total = Outcome::default();
    let all_done = tokio::time::timeout(REQUEST_TIMEOUT + GENEROUS, async {
        while let Some(done) = callers.join_next().await {
            let o = done.expect("caller task");
            total.answered += o.answered;
            total.lost += o.lost;
            total.failed_after_accept.extend(o.failed_after_accept);
            total.not_accepted.extend(o.not_accepted);
            total.slowest = total.slowest.max(o.slowest);
        }
    })
    .await;
    assert!(
        all_done.is_ok(),
        "callers still running long after their timeouts"
    );
    eprintln!(
        "outcome ({durability:?}): {} answered, {} lost, {} failed after being accepted, {} not accepted; \
         slowest answered {:?}; all done {:?} after the kill",
        total.answered,
        total.lost,
        total.failed_after_accept.len(),
        total.not_accepted.len(),
        total.slowest,
        killed.elapsed()
    );
    responder.shutdown().await.expect("shutdown");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mid_load_with_replicated_durability_answers_every_accepted_request() {
    let outcome = failover_mid_load(Durability::Replicated {
        replicas: 1,
        timeout: Duration::from_secs(1),
    })
    .await;
    assert_eq!(outcome.lost, 0, "{outcome:?}");
    assert!(outcome.failed_after_accept.is_empty(), "{outcome:?}");
    assert!(outcome.not_accepted.is_empty(), "{outcome:?}");
    assert_eq!(outcome.answered, REQUESTS, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mid_load_without_replicated_durability_reports_each_loss() {
    let outcome = failover_mid_load(Durability::Primary).await;
    // What asynchronous replication can lose is lost with a clear error, never a hang or a wrong reply: every
    // request is answered, reported lost, or (sent while no primary was known) refused. And the scenario does lose
    // requests without `WAIT`: the one above, with it, loses none.
    assert!(outcome.failed_after_accept.is_empty(), "{outcome:?}");
    assert!(
        outcome.lost > 0,
        "nothing was lost without WAIT: {outcome:?}"
    );
    assert_eq!(
        outcome.answered + outcome.lost + outcome.not_accepted.len(),
        REQUESTS,
        "{outcome:?}"
    );
}

/// A manual failover (`SENTINEL FAILOVER`) demotes a primary that stays up. Sentinel drops its clients as it
/// demotes it (`CLIENT KILL TYPE normal`, `pubsub`), so every connection reconnects and must ask the sentinels
/// again rather than return to the address it had. (A node demoted without that, which answers `READONLY`, is
/// handled too, see `connection::is_wrong_role`, but this test does not reach that path: it passes without it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_is_left_for_the_new_one() {
    let set = tokio::task::block_in_place(|| SentinelSet::start(1));
    let client = Client::builder(&set.url()).build().expect("client");
    let service = unique_service("sentinel-demoted");
    let responder = echo_responder(&client, &service, Duration::ZERO).await;
    let requester = client.requester(&service);
    let reply: Value = requester
        .call("echo", &json!("before"), GENEROUS)
        .await
        .expect("before the failover");
    assert_eq!(reply, json!("before"));
    let old = set.primary_port().expect("a primary");
    tokio::task::block_in_place(|| {
        let answer =
            set.sentinels[0].cli(&["SENTINEL", "FAILOVER", common::sentinel::PRIMARY_NAME]);
        assert_eq!(answer, "OK");
        set.wait_for_failover(old);
    });
    for n in 0..20 {
        let reply: Value = requester
            .call("echo", &json!(n), GENEROUS)
            .await
            .unwrap_or_else(|err| panic!("request {n} after the failover: {err}"));
        assert_eq!(reply, json!(n));
    }
    responder.shutdown().await.expect("shutdown");
}
