//! Redis Cluster, for real: 3 primaries and 3 replicas on loopback ports (`common::cluster`). A service lives on the
//! shard of its hash tag's slot; replies travel over sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`). Each test starts its
//! own cluster (a few seconds), and runs several checks on it.

mod common;

use std::time::Duration;

use common::GENEROUS;
use common::cluster::RedisCluster;
use redcall::{Client, HandlerError, RequestContext};
use serde_json::{Value, json};

fn unique_service(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A responder with `echo` and `fail` (an error reply), on `service`.
async fn echo_responder(client: &Client, service: &str) -> redcall::Responder {
    client
        .responder(service)
        .visibility_timeout(Duration::from_secs(2))
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start a responder on the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_a_cluster() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .build()
        .expect("cluster client");
    let service = unique_service("cluster-rt");
    let responder = echo_responder(&client, &service).await;
    let requester = client.requester(&service);
    let reply: Value = requester
        .call("echo", &json!({"via": "cluster"}), GENEROUS)
        .await
        .expect("round trip on the cluster");
    assert_eq!(reply, json!({"via": "cluster"}));
    let reply: Value = requester
        .request("rt-1", "echo", &json!(1), GENEROUS)
        .await
        .expect("round trip with a caller's id");
    assert_eq!(reply, json!(1));

    // Call info, and a reply by hand, on a service nobody serves.
    let by_hand = client.requester(&unique_service("cluster-hand"));
    let pending = by_hand
        .send("hand-1", "manual", &json!({"n": 7}), GENEROUS)
        .await
        .expect("send");
    let info = by_hand.call_info("hand-1").await.expect("call info");
    assert_eq!(info.func_key, "manual");
    assert_eq!(info.params::<Value>().expect("params"), json!({"n": 7}));
    by_hand
        .publish_reply("hand-1", &json!("by hand"))
        .await
        .expect("reply by hand");
    let reply: Value = pending.wait().await.expect("the reply by hand");
    assert_eq!(reply, json!("by hand"));

    // A dead letter (a function nobody has), replayed to a responder that has it.
    let err = requester
        .call::<_, Value>("later", &json!(3), GENEROUS)
        .await
        .expect_err("unknown function");
    assert_eq!(err.kind(), redcall::ErrorKind::UnknownFunction, "{err}");
    let admin = client.admin(&service);
    let dead = admin.dead_letters(None, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let stats = admin.stats().await.expect("stats");
    assert_eq!(
        (stats.stream_length, stats.dead_letters),
        (3, 1),
        "{stats:?}"
    );
    responder.shutdown().await.expect("shutdown");
    let responder = client
        .responder(&service)
        .handler("later", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("a responder that has it");
    let report = admin
        .replay_all_dead_letters(&redcall::admin::ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    let answered = common::wait_until(Duration::from_secs(10), || async {
        let stats = admin.stats().await.expect("stats");
        stats.dead_letters == 0
            && stats.stream_length == 4
            && stats
                .groups
                .iter()
                .all(|g| g.pending == 0 && g.lag == Some(0))
    })
    .await;
    assert!(answered, "{:?}", admin.stats().await);
    responder.shutdown().await.expect("shutdown");
}

/// Runs `redcall --cluster --url <node 0> --url <node 1> --service <service> <args>` and returns its output.
fn cli(cluster: &RedisCluster, service: &str, args: &[&str]) -> std::process::Output {
    let seeds = cluster.seeds();
    std::process::Command::new(common::redcall_bin())
        .args([
            "--cluster",
            "--url",
            &seeds[0],
            "--url",
            &seeds[1],
            "--service",
            service,
        ])
        .args(args)
        .output()
        .expect("run redcall")
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_serve_call_info_reply_stats_and_dlq_on_a_cluster() {
    let cluster = RedisCluster::start();
    let service = unique_service("cluster-cli");
    let seeds = cluster.seeds();
    let _serve = common::spawn_serve(
        &cluster.nodes()[0],
        &service,
        "serve-1",
        // Comma-separated seeds work as repeated ones.
        &["--cluster", "--url", &format!("{},{}", seeds[1], seeds[2])],
        &[],
    );
    let out = ok_stdout(&cli(
        &cluster,
        &service,
        &["call", "echo", r#"{"a":1}"#, "--timeout", "20"],
    ));
    assert!(out.contains("\"a\""), "{out}");
    // Call info and a reply by hand, on a service nobody serves.
    let other = unique_service("cluster-cli-hand");
    let waiting = std::process::Command::new(common::redcall_bin())
        .args(["--url", &cluster.url(), "--service", &other])
        .args([
            "call",
            "manual",
            "5",
            "--id",
            "cli-hand-1",
            "--timeout",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn call");
    let found = (0..200).any(|_| {
        let out = cli(&cluster, &other, &["info", "cli-hand-1"]);
        if out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    assert!(found, "the request never showed in `info`");
    ok_stdout(&cli(
        &cluster,
        &other,
        &["reply", "cli-hand-1", r#""by hand""#],
    ));
    let waited = waiting.wait_with_output().expect("call exits");
    assert!(ok_stdout(&waited).contains("by hand"));
    // A dead letter, listed.
    let out = cli(
        &cluster,
        &service,
        &["call", "nobody-has-it", "1", "--timeout", "20"],
    );
    assert!(!out.status.success());
    let out = ok_stdout(&cli(&cluster, &service, &["--json", "dlq", "list"]));
    assert!(out.contains("nobody-has-it"), "{out}");
    let out = ok_stdout(&cli(&cluster, &service, &["--json", "stats"]));
    assert!(out.contains("\"stream_length\":2"), "{out}");
}

/// Cancellation and progress on a cluster: the cancel reaches the waiting caller and the running handler at once
/// (over sharded pub/sub, like replies), and progress updates reach the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_progress_on_a_cluster() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .build()
        .expect("cluster client");
    let service = unique_service("cluster-life");
    let (saw_tx, saw_rx) = tokio::sync::oneshot::channel::<()>();
    let saw_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(saw_tx)));
    let responder = client
        .responder(&service)
        .visibility_timeout(Duration::from_secs(2))
        .handler("wait_for_cancel", move |ctx: RequestContext, _v: Value| {
            let saw_tx = saw_tx.clone();
            async move {
                ctx.cancelled().await;
                if let Some(tx) = saw_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(());
                }
                Ok::<_, HandlerError>(json!("ignored the cancel"))
            }
        })
        .handler("steps", |ctx: RequestContext, n: u64| async move {
            for step in 1..=n {
                ctx.progress(&json!({ "step": step }))
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, HandlerError>(json!("done"))
        })
        .start()
        .await
        .expect("start a responder on the cluster");
    let requester = client.requester(&service);

    // Cancel while the handler runs: the caller gets Cancelled well before its timeout, and the handler saw it.
    let pending = requester
        .send(
            "life-cancel-1",
            "wait_for_cancel",
            &json!(null),
            Duration::from_secs(30),
        )
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    requester.cancel("life-cancel-1").await.expect("cancel");
    let waited = pending.wait::<Value>().await;
    assert_eq!(
        waited.as_ref().map_err(|e| e.kind()),
        Err(redcall::ErrorKind::Cancelled),
        "{waited:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(10), saw_rx)
        .await
        .expect("the running handler saw the cancel")
        .expect("sender kept");

    // Progress: every update arrives, then the reply.
    let pending = requester
        .send("life-steps-1", "steps", &json!(3), GENEROUS)
        .await
        .expect("send");
    let mut updates = pending.progress().await.expect("watch progress");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), updates.next::<Value>()).await {
            Ok(Some(Ok(update))) => seen.push(update),
            other => panic!("progress stopped after {seen:?}: {other:?}"),
        }
    }
    assert_eq!(seen.last(), Some(&json!({ "step": 3 })), "{seen:?}");
    let reply: Value = pending.wait().await.expect("reply");
    assert_eq!(reply, json!("done"));
    responder.shutdown().await.expect("shutdown");
}

/// After a manual failover of the service's shard (the old primary stays up and ends the sharded subscriptions of
/// its slots, keeping the connections open), a running handler still hears its cancel: the responder's cancel
/// listener subscribes again on the new primary. And `list_services` finds services on every primary: `SCAN` has
/// no key, so it must be sent to each primary rather than to one random node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_manual_failover_cancels_reach_handlers_and_every_service_is_listed() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .build()
        .expect("cluster client");
    let service = unique_service("cluster-fo");
    let (saw_tx, mut saw_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let responder = client
        .responder(&service)
        .visibility_timeout(Duration::from_secs(2))
        .handler("wait_for_cancel", move |ctx: RequestContext, _v: Value| {
            let saw_tx = saw_tx.clone();
            async move {
                tokio::select! {
                    _ = ctx.cancelled() => { let _ = saw_tx.send(ctx.id.clone()); }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                Ok::<_, HandlerError>(json!("done"))
            }
        })
        .start()
        .await
        .expect("start a responder on the cluster");
    let requester = client.requester(&service);
    let cancel_while_running = |id: &'static str| {
        let requester = requester.clone();
        async move {
            let pending = requester
                .send(id, "wait_for_cancel", &json!(null), Duration::from_secs(30))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(300)).await;
            requester.cancel(id).await.expect("cancel");
            let waited = pending.wait::<Value>().await;
            assert_eq!(
                waited.as_ref().map_err(|e| e.kind()),
                Err(redcall::ErrorKind::Cancelled),
                "{waited:?}"
            );
        }
    };
    cancel_while_running("fo-before").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), saw_rx.recv()).await;
    assert_eq!(
        seen,
        Ok(Some("fo-before".to_owned())),
        "before the failover"
    );

    let slot = cluster.slot(requester.keys().requests());
    tokio::task::block_in_place(|| cluster.fail_over_slot(slot));
    // The listener learns of the lost subscription at once and subscribes again after its backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cancel_while_running("fo-after").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), saw_rx.recv()).await;
    assert_eq!(
        seen,
        Ok(Some("fo-after".to_owned())),
        "the running handler heard the cancel after the failover"
    );

    // Services whose streams sit on every primary.
    let mut services = vec![service.clone()];
    let mut primaries = std::collections::BTreeSet::from([cluster.primary_of_slot(slot)]);
    while primaries.len() < common::cluster::PRIMARIES {
        let other = unique_service("cluster-ls");
        let other_requester = client.requester(&other);
        let other_slot = cluster.slot(other_requester.keys().requests());
        if primaries.insert(cluster.primary_of_slot(other_slot)) {
            drop(
                other_requester
                    .send("ls-1", "echo", &json!(1), Duration::from_secs(5))
                    .await
                    .expect("send"),
            );
            services.push(other);
        }
    }
    let listed = redcall::admin::list_services(&client)
        .await
        .expect("list services");
    for service in &services {
        assert!(
            listed.contains(service),
            "{service} missing from {listed:?}"
        );
    }
    responder.shutdown().await.expect("shutdown");
}
