//! Live responders (issue 15): each responder keeps an expiring heartbeat record that every program can read
//! (`Admin::responders`, `redcall services`); a stopped responder disappears at once, a killed one once its record
//! expires.

mod common;

use std::time::Duration;

use common::{TestEnv, run_cli, wait_until};
use redcall::{HandlerError, RequestContext};

#[tokio::test]
async fn a_responder_is_listed_with_its_counts_and_gone_after_shutdown() {
    let env = TestEnv::new();
    let admin = env.admin();
    assert!(!admin.has_responders().await.expect("has_responders"));
    let responder = env
        .responder()
        .consumer("hb-1")
        .heartbeat_interval(Duration::from_millis(100))
        .handler(
            "echo",
            |_ctx: RequestContext, v: serde_json::Value| async move { Ok::<_, HandlerError>(v) },
        )
        .handler(
            "fail",
            |_ctx: RequestContext, _v: serde_json::Value| async move {
                Err::<(), _>(HandlerError::fail("nope", "always"))
            },
        )
        .start()
        .await
        .expect("start");
    let requester = env.requester();
    for _ in 0..3 {
        let _: serde_json::Value = requester
            .call("echo", &1, Duration::from_secs(10))
            .await
            .expect("echo");
    }
    let failed: redcall::Result<()> = requester.call("fail", &1, Duration::from_secs(10)).await;
    assert!(failed.is_err());

    let counted = wait_until(Duration::from_secs(10), || async {
        admin
            .responders()
            .await
            .is_ok_and(|r| r.len() == 1 && r[0].handled == 4)
    })
    .await;
    assert!(counted, "{:?}", admin.responders().await);
    let live = admin.responders().await.expect("responders");
    let r = &live[0];
    assert_eq!(r.consumer, "hb-1");
    assert_eq!(r.group, "workers");
    assert_eq!(r.pid, std::process::id());
    assert_eq!(r.functions, ["echo", "fail"]);
    assert_eq!((r.handled, r.failed, r.in_flight), (4, 1, 0));
    assert_eq!(r.heartbeat_ms, 100);
    assert!(r.last_seen_ms >= r.started_ms);
    assert!(admin.has_responders().await.expect("has_responders"));

    // The record expires after three heartbeat intervals unless refreshed.
    let mut redis = env.redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(admin.keys().responder("hb-1"))
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= 300, "ttl {ttl}");

    responder.shutdown().await.expect("shutdown");
    assert!(admin.responders().await.expect("responders").is_empty());
    assert!(!admin.has_responders().await.expect("has_responders"));
}

#[test]
fn services_lists_a_live_responder_and_drops_it_after_it_is_killed() {
    let env = TestEnv::new();
    let service = env.service();
    let mut serve = env.serve("svc-1", &[], &["--heartbeat-interval", "200ms"]);
    let listed = |want: usize| {
        let out = run_cli(&env.server, service, &["--json", "services"]);
        assert!(out.status.success(), "{out:?}");
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let ours = value
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == service))
            .cloned();
        ours.and_then(|s| s["responders"].as_array().cloned())
            .is_some_and(|r| r.len() == want && (want == 0 || r[0]["consumer"] == "svc-1"))
    };
    let wait = |want: usize, secs: u64| {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if listed(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(wait(1, 20), "services never listed the responder");
    let text = run_cli(&env.server, service, &["services", "--only"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("1 live responder"), "{text}");
    assert!(text.contains("svc-1"), "{text}");
    assert!(
        text.contains("echo, fail, panic, progress, retry, sleep, work"),
        "{text}"
    );
    let stats = run_cli(&env.server, service, &["stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(stats.contains("live responders 1"), "{stats}");

    // SIGKILL: no chance to delete the record; it expires after three heartbeat intervals (600 ms).
    serve.kill().expect("kill");
    let _ = serve.wait();
    assert!(wait(0, 10), "the killed responder was still listed");
}

/// The index of responders keeps names for an hour: with more dead names in it than are read at once (a
/// crash-looping deployment starts under a new name each time), the live responder is still found, since the
/// newest heartbeats are read first.
#[tokio::test]
async fn a_live_responder_is_found_among_many_dead_names() {
    let env = TestEnv::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let index = env.requester().keys().responders();
    let mut args = vec!["ZADD".to_owned(), index];
    for n in 0..10_050 {
        args.push((now_ms - 60_000).to_string());
        args.push(format!("dead-{n}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(env.server.cli(&args), "10050");
    let _responder = env
        .responder()
        .consumer("alive-1")
        .handler(
            "echo",
            |_ctx: RequestContext, v: serde_json::Value| async move { Ok::<_, HandlerError>(v) },
        )
        .start()
        .await
        .expect("start");
    // Its first heartbeat is written once it runs.
    let admin = env.admin();
    let found = wait_until(Duration::from_secs(5), || async {
        admin
            .responders()
            .await
            .is_ok_and(|live| live.iter().any(|r| r.consumer == "alive-1"))
    })
    .await;
    assert!(found, "the live responder is not listed");
    assert!(admin.has_responders().await.expect("has_responders"));
}
