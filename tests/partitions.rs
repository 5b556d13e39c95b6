//! Partitioned services: a service of N requests streams, each under its own hash tag, on one Redis and on a
//! 3+3 Redis Cluster (`common::cluster`), where the partitions sit on different primaries. The partition count is
//! recorded in Redis, and a program given another is refused.

mod common;

use std::time::Duration;

use common::cluster::RedisCluster;
use common::{GENEROUS, TestEnv};
use redcall::admin::ReplayOptions;
use redcall::protocol::{Partitions, partition_of};
use redcall::{Client, ErrorKind, HandlerError, RequestContext};
use serde_json::{Value, json};

fn unique_service(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A responder with `echo`, on `service`, with the client's partition count.
async fn echo_responder(client: &Client, service: &str) -> redcall::Responder {
    client
        .responder(service)
        .visibility_timeout(Duration::from_secs(2))
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start a responder")
}

/// Ids spread over all 3 partitions: `n` of each, found by the documented rule (CRC16 of the id mod 3).
fn ids_per_partition(prefix: &str, n: usize) -> Vec<String> {
    let mut counts = [0usize; 3];
    let mut ids = Vec::new();
    for i in 0.. {
        let id = format!("{prefix}-{i}");
        let p = partition_of(&id, 3);
        if counts[p] < n {
            counts[p] += 1;
            ids.push(id);
        }
        if counts.iter().all(|&c| c == n) {
            break;
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partitions_on_one_redis_and_a_mismatch_is_refused() {
    let env = TestEnv::with_client(|b| b.partitions(3));
    let service = env.service().to_owned();
    let responder = echo_responder(&env.client, &service).await;
    let requester = env.requester();
    let ids = ids_per_partition("solo", 4);
    for id in &ids {
        let reply: Value = requester
            .request(id, "echo", &json!(id), GENEROUS)
            .await
            .expect("a round trip on a partitioned service");
        assert_eq!(reply, json!(id));
    }
    // Generated ids too (the batched add), wherever they land.
    for i in 0..6 {
        let reply: Value = requester
            .call("echo", &json!(i), GENEROUS)
            .await
            .expect("a round trip with a generated id");
        assert_eq!(reply, json!(i));
    }

    // Each partition's stream holds exactly its ids' requests; the count is recorded.
    let layout = Partitions::new("redcall", &service, 3);
    let mut con = env.redis().await;
    let mut total = 0;
    for (i, keys) in layout.all().iter().enumerate() {
        let len: u64 = redis::cmd("XLEN")
            .arg(keys.requests())
            .query_async(&mut con)
            .await
            .expect("XLEN");
        assert!(len >= 4, "partition {i} holds {len} entries");
        total += len;
        // Every caller-given id's record sits in its own partition.
        for id in ids.iter().filter(|id| partition_of(id, 3) == i) {
            let exists: bool = redis::cmd("EXISTS")
                .arg(keys.reply(id))
                .query_async(&mut con)
                .await
                .expect("EXISTS");
            assert!(exists, "the reply of {id} is not in partition {i}");
        }
    }
    assert_eq!(total, 18);
    let recorded: Option<String> = redis::cmd("GET")
        .arg(layout.base().partition_count())
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(recorded.as_deref(), Some("3"));
    // Nothing of the unpartitioned layout's streams was made.
    let exists: bool = redis::cmd("EXISTS")
        .arg(layout.base().requests())
        .query_async(&mut con)
        .await
        .expect("EXISTS");
    assert!(!exists);

    // Stats per partition and in total.
    let admin = env.admin();
    let stats = admin.stats().await.expect("stats");
    assert_eq!(stats.partitions.len(), 3, "{stats:?}");
    assert_eq!(stats.stream_length, 18);
    assert_eq!(
        stats
            .partitions
            .iter()
            .map(|p| p.stream_length)
            .sum::<u64>(),
        18
    );
    assert!(stats.groups.iter().all(|g| g.pending == 0), "{stats:?}");

    // Delayed requests and cancels in every partition: each partition's schedule is promoted into its own stream,
    // and a cancel reaches the request through its partition's channel and keys.
    let delayed = ids_per_partition("later", 1);
    let mut waits = Vec::new();
    for id in &delayed {
        waits.push(
            requester
                .send_in(id, "echo", &json!(id), Duration::from_millis(300), GENEROUS)
                .await
                .expect("a delayed request"),
        );
    }
    for (id, pending) in delayed.iter().zip(waits) {
        let reply: Value = pending.wait().await.expect("a delayed request's reply");
        assert_eq!(reply, json!(id));
    }
    let cancelled = ids_per_partition("cancelled", 1);
    for id in &cancelled {
        let pending = requester
            .send_in(id, "echo", &json!(id), Duration::from_secs(30), GENEROUS)
            .await
            .expect("a request delayed long");
        requester.cancel(id).await.expect("cancel");
        let err = pending
            .wait::<Value>()
            .await
            .expect_err("a cancelled request");
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    }
    // `services` finds the service once, not once per partition.
    let services = redcall::admin::list_services(&env.client)
        .await
        .expect("services");
    assert_eq!(
        services.iter().filter(|s| **s == service).count(),
        1,
        "{services:?}"
    );
    assert!(!services.iter().any(|s| s.contains('#')), "{services:?}");

    // Programs given another count are refused, before anything is sent.
    for count in [1, 2] {
        let other = Client::builder(&env.server.url())
            .partitions(count)
            .build()
            .expect("client");
        let err = other
            .requester(&service)
            .call::<_, Value>("echo", &json!(1), GENEROUS)
            .await
            .expect_err("a requester with another count");
        assert_eq!(err.kind(), ErrorKind::PartitionMismatch, "{err}");
        assert!(
            matches!(
                err,
                redcall::Error::PartitionMismatch {
                    recorded: 3,
                    configured,
                    ..
                } if configured == count
            ),
            "{err}"
        );
        let err = other
            .responder(&service)
            .handler("echo", |_ctx: RequestContext, v: Value| async move {
                Ok::<_, HandlerError>(v)
            })
            .start()
            .await
            .expect_err("a responder with another count");
        assert_eq!(err.kind(), ErrorKind::PartitionMismatch, "{err}");
        let err = other
            .admin(&service)
            .stats()
            .await
            .expect_err("an admin with another count");
        assert_eq!(err.kind(), ErrorKind::PartitionMismatch, "{err}");
    }
    // The CLI: exit code 10 and a message that names the recorded count; the right count works.
    let out = common::run_cli(
        &env.server,
        &service,
        &["call", "echo", "1", "--timeout", "5"],
    );
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--partitions 3"),
        "{out:?}"
    );
    let out = common::run_cli(
        &env.server,
        &service,
        &["--partitions", "3", "call", "echo", "1", "--timeout", "5"],
    );
    assert!(out.status.success(), "{out:?}");
    // `stats` in the CLI: the totals, then one line per partition (text), and `partitions` (JSON).
    let out = common::run_cli(&env.server, &service, &["--partitions", "3", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for i in 0..3 {
        assert!(
            text.contains(&format!("  partition {i}: stream ")),
            "{text}"
        );
    }
    let out = common::run_cli(
        &env.server,
        &service,
        &["--partitions", "3", "--json", "stats"],
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    assert_eq!(
        json["partitions"].as_array().map(Vec::len),
        Some(3),
        "{json}"
    );
    responder.shutdown().await.expect("shutdown");

    // Responders given a subset each: together they serve every partition.
    let subset = |only: Vec<usize>| {
        env.client
            .responder(&service)
            .only_partitions(only)
            .handler("echo", |_ctx: RequestContext, v: Value| async move {
                Ok::<_, HandlerError>(v)
            })
            .start()
    };
    let err = subset(vec![3])
        .await
        .expect_err("a partition that does not exist");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let first = subset(vec![0, 2]).await.expect("partitions 0 and 2");
    let second = subset(vec![1]).await.expect("partition 1");
    for id in ids_per_partition("subset", 2) {
        let reply: Value = requester
            .request(&id, "echo", &json!(id), GENEROUS)
            .await
            .expect("a request to a partition served by one of the two");
        assert_eq!(reply, json!(id));
    }
    // Each partition's group knows only the responder that serves it.
    for (i, serving, other) in [
        (0, &first, &second),
        (1, &second, &first),
        (2, &first, &second),
    ] {
        let stats = admin
            .partition(i)
            .expect("a partition")
            .stats()
            .await
            .expect("stats of a partition");
        let consumers: Vec<&str> = stats
            .groups
            .iter()
            .flat_map(|g| g.consumers.iter().map(|c| c.name.as_str()))
            .collect();
        assert!(
            consumers.contains(&serving.consumer()),
            "partition {i}: {consumers:?}"
        );
        assert!(
            !consumers.contains(&other.consumer()),
            "partition {i}: {consumers:?}"
        );
    }
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");

    // One partition is the layout it always was: nothing recorded, one stream under `{ns:service}`.
    let plain = env.other_client();
    let plain_service = unique_service("plain");
    let responder = echo_responder(&plain, &plain_service).await;
    let _: Value = plain
        .requester(&plain_service)
        .call("echo", &json!(1), GENEROUS)
        .await
        .expect("an unpartitioned round trip");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{redcall:{plain_service}*"))
        .query_async(&mut con)
        .await
        .expect("KEYS");
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("{{redcall:{plain_service}}}:"))
                && !k.ends_with(":partitions")),
        "{keys:?}"
    );
    responder.shutdown().await.expect("shutdown");
}

/// A service that has run unpartitioned (its requests stream exists, no count recorded) counts as one partition: a
/// program given another count by mistake is refused and records nothing, instead of recording its own count over
/// the live service (its requests would go to streams nobody reads, and every correct program would be refused at
/// its next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_ran_unpartitioned_is_not_taken_over_by_another_count() {
    let env = TestEnv::new();
    let service = unique_service("unpart");
    let _plain = echo_responder(&env.client, &service).await;
    let reply: Value = env
        .client
        .requester(&service)
        .call("echo", &json!(1), GENEROUS)
        .await
        .expect("an unpartitioned call");
    assert_eq!(reply, json!(1));

    let three = Client::builder(&env.server.url())
        .partitions(3)
        .build()
        .expect("client");
    let err = three
        .responder(&service)
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect_err("a responder given 3 partitions");
    assert!(
        matches!(
            err,
            redcall::Error::PartitionMismatch {
                recorded: 1,
                configured: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = three
        .requester(&service)
        .call::<_, Value>("echo", &json!(2), GENEROUS)
        .await
        .expect_err("a requester given 3 partitions");
    assert_eq!(err.kind(), ErrorKind::PartitionMismatch, "{err}");
    let recorded = env
        .server
        .cli(&["EXISTS", &env.client.keys(&service).partition_count()]);
    assert_eq!(recorded, "0", "a count was recorded over the live service");
    // The unpartitioned programs go on.
    let reply: Value = env
        .client
        .requester(&service)
        .call("echo", &json!(3), GENEROUS)
        .await
        .expect("still served");
    assert_eq!(reply, json!(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partitions_on_a_cluster_spread_over_primaries() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .partitions(3)
        .build()
        .expect("cluster client");
    let service = unique_service("parts");
    let layout = client.partitioned_keys(&service, 3);

    // The three streams sit on slots near the middle of each third, so on three different primaries of this
    // balanced cluster (at least two, the issue asks).
    let primaries: Vec<usize> = layout
        .all()
        .iter()
        .map(|keys| {
            let slot = cluster.slot(keys.requests());
            assert_eq!(
                slot,
                redcall::protocol::key_slot(keys.requests().as_bytes())
            );
            cluster.primary_of_slot(slot)
        })
        .collect();
    let mut distinct = primaries.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 2, "partitions on primaries {primaries:?}");
    assert_eq!(distinct.len(), 3, "partitions on primaries {primaries:?}");

    let responder = echo_responder(&client, &service).await;
    let requester = client.requester(&service);
    for id in ids_per_partition("cl", 2) {
        let reply: Value = requester
            .request(&id, "echo", &json!(id), GENEROUS)
            .await
            .expect("a round trip on a partitioned service on a cluster");
        assert_eq!(reply, json!(id));
    }
    for i in 0..3 {
        let reply: Value = requester
            .call("echo", &json!(i), GENEROUS)
            .await
            .expect("a generated id on a cluster");
        assert_eq!(reply, json!(i));
    }

    // Call info and a reply by hand, in each partition, on a partitioned service nobody serves.
    let hand_service = unique_service("parts-hand");
    let by_hand = client.requester(&hand_service);
    for id in ids_per_partition("hand", 1) {
        let pending = by_hand
            .send(&id, "manual", &json!({"id": id}), GENEROUS)
            .await
            .expect("send");
        let info = by_hand.call_info(&id).await.expect("call info");
        assert_eq!(info.func_key, "manual");
        assert_eq!(info.params::<Value>().expect("params"), json!({"id": id}));
        by_hand
            .publish_reply(&id, &json!("by hand"))
            .await
            .expect("reply by hand");
        let reply: Value = pending.wait().await.expect("the reply by hand");
        assert_eq!(reply, json!("by hand"));
        let status = client
            .admin(&hand_service)
            .status(&id)
            .await
            .expect("status");
        assert_eq!(status.id, id);
    }

    // Dead letters in every partition (a function nobody has), then replayed to a responder that has it.
    let dead_ids = ids_per_partition("dead", 1);
    for id in &dead_ids {
        let err = requester
            .request::<_, Value>(id, "later", &json!(id), GENEROUS)
            .await
            .expect_err("unknown function");
        assert_eq!(err.kind(), ErrorKind::UnknownFunction, "{err}");
    }
    let admin = client.admin(&service);
    let dead = admin.dead_letters(None, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 3, "{dead:?}");
    let mut in_partitions: Vec<Option<usize>> = dead.iter().map(|d| d.partition).collect();
    in_partitions.sort_unstable();
    assert_eq!(in_partitions, [Some(0), Some(1), Some(2)]);
    let one = admin
        .dead_letter_of_request(&dead_ids[0])
        .await
        .expect("the dead letter of a request");
    assert_eq!(one.request_id.as_deref(), Some(dead_ids[0].as_str()));
    let stats = admin.stats().await.expect("stats");
    assert_eq!(stats.partitions.len(), 3);
    // Per partition: 2 caller ids + 1 dead letter each, plus the generated ones wherever they went.
    for (i, p) in stats.partitions.iter().enumerate() {
        assert!(p.stream_length >= 3, "partition {i}: {p:?}");
        assert_eq!(p.dead_letters, 1, "partition {i}: {p:?}");
    }
    assert_eq!(
        (stats.stream_length, stats.dead_letters),
        (12, 3),
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
        .replay_all_dead_letters(&ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(report.replayed.len(), 3, "{report:?}");
    let answered = common::wait_until(Duration::from_secs(10), || async {
        let stats = admin.stats().await.expect("stats");
        stats.dead_letters == 0
            && stats.stream_length == 15
            && stats
                .groups
                .iter()
                .all(|g| g.pending == 0 && g.lag == Some(0))
    })
    .await;
    assert!(answered, "{:?}", admin.stats().await);
    let requester_of_replays = client.requester(&service);
    for id in &dead_ids {
        let stored: Option<Value> = requester_of_replays
            .stored_reply(id)
            .await
            .expect("a replayed request's reply");
        assert_eq!(stored, Some(json!(id)));
    }
    responder.shutdown().await.expect("shutdown");

    // A cluster client with the default count is refused.
    let plain = Client::cluster(cluster.seeds()).build().expect("client");
    let err = plain
        .requester(&service)
        .call::<_, Value>("echo", &json!(1), GENEROUS)
        .await
        .expect_err("one partition against three");
    assert_eq!(err.kind(), ErrorKind::PartitionMismatch, "{err}");
}

/// On a cluster, two properties the standalone suite proves, for a 3-partition service: every reply channel is
/// subscribed before its request is added (read from `MONITOR` on the primary that owns each partition's slot, as
/// `tests/reply_paths.rs` does on one Redis), and requests held by a SIGKILLed `redcall serve --cluster
/// --partitions 3` are reclaimed and answered by another, each run to completion once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_subscriptions_come_first_and_killed_responders_work_is_reclaimed() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .partitions(3)
        .build()
        .expect("cluster client");
    let service = unique_service("parts-kill");
    let layout = client.partitioned_keys(&service, 3);
    let owners: Vec<usize> = layout
        .all()
        .iter()
        .map(|k| cluster.primary_of_slot(cluster.slot(k.requests())))
        .collect();

    // MONITOR on each partition's primary.
    let mut monitors = Vec::new();
    let mut logs = Vec::new();
    for (i, &owner) in owners.iter().enumerate() {
        let node = &cluster.nodes()[owner];
        let path = node.dir().join(format!("monitor-{i}.log"));
        let log = std::fs::File::create(&path).expect("monitor log");
        monitors.push(common::ChildGuard::spawn(
            std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &node.port().to_string(), "MONITOR"])
                .stdout(log),
        ));
        logs.push(path);
    }
    let read = |p: &std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        common::wait_until(common::WAIT, || async {
            logs.iter().all(|p| read(p).starts_with("OK"))
        })
        .await,
        "MONITOR did not start"
    );
    let requester = client.requester(&service);
    let given: Vec<String> = ids_per_partition("kill", 4);
    let mut pending = Vec::new();
    for id in &given {
        pending.push(
            requester
                .send(id, "work", &json!({"ms": 3000}), Duration::from_secs(60))
                .await
                .expect("send"),
        );
    }
    for _ in 0..3 {
        pending.push(
            requester
                .submit("work", &json!({"ms": 3000}), Duration::from_secs(60))
                .await
                .expect("submit"),
        );
    }
    let added = |log: &str, id: &str| {
        log.lines()
            .position(|l| l.contains("\"XADD\"") && l.contains(&format!("\"{id}\"")))
    };
    let ids: Vec<String> = pending.iter().map(|p| p.id().to_owned()).collect();
    assert!(
        common::wait_until(common::WAIT, || async {
            ids.iter()
                .all(|id| added(&read(&logs[partition_of(id, 3)]), id).is_some())
        })
        .await,
        "MONITOR never showed every XADD"
    );
    for id in &ids {
        let log = read(&logs[partition_of(id, 3)]);
        let channel = layout.for_id(id).reply_channel(id);
        let subscribed = log
            .lines()
            .position(|l| l.contains("\"SSUBSCRIBE\"") && l.contains(&format!("\"{channel}\"")))
            .unwrap_or_else(|| panic!("no SSUBSCRIBE for {id} on its partition's primary:\n{log}"));
        let added = added(&log, id).expect("seen above");
        assert!(
            subscribed < added,
            "{id}: XADD (line {added}) ran before SSUBSCRIBE (line {subscribed}):\n{log}"
        );
    }
    drop(monitors);

    // A responder process takes every request, and is SIGKILLed while it works on them.
    let seeds = cluster.seeds();
    let global = ["--cluster", "--url", &seeds[1], "--partitions", "3"];
    let node = &cluster.nodes()[0];
    let mut first = common::spawn_serve(
        node,
        &service,
        "first",
        &global,
        &["--visibility-timeout", "1000"],
    );
    let admin = client.admin(&service);
    let total = ids.len() as u64;
    assert!(
        common::wait_until(GENEROUS, || async {
            admin
                .stats()
                .await
                .is_ok_and(|s| s.groups.iter().map(|g| g.pending).sum::<u64>() == total)
        })
        .await,
        "the first responder never held every request: {:?}",
        admin.stats().await
    );
    first.kill().expect("SIGKILL the first responder");
    first.wait().expect("reap");
    let _second = common::spawn_serve(
        node,
        &service,
        "second",
        &global,
        &["--visibility-timeout", "1000"],
    );
    for p in pending {
        let id = p.id().to_owned();
        let reply: Value = p.wait().await.unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(reply, json!({"slept_ms": 3000}));
    }
    // Each ran to completion once (the `work` handler counts its runs under the unpartitioned tag).
    let mut con = client.redis_connection();
    let runs: std::collections::HashMap<String, i64> =
        redis::AsyncCommands::hgetall(&mut con, format!("{}:runs", layout.base().tag()))
            .await
            .expect("HGETALL runs");
    assert_eq!(runs.len(), ids.len(), "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    let stats = admin.stats().await.expect("stats");
    assert!(stats.groups.iter().all(|g| g.pending == 0), "{stats:?}");

    // The CLI against the cluster, as documented: `call --cluster --partitions 3`.
    let out = std::process::Command::new(common::redcall_bin())
        .args(["--cluster", "--url", &seeds[2], "--partitions", "3"])
        .args([
            "--service",
            &service,
            "call",
            "echo",
            r#"{"cli":1}"#,
            "--timeout",
            "20",
        ])
        .output()
        .expect("run redcall");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cli"),
        "{out:?}"
    );
}

/// The partition count is checked once per client and service, not once per `Client::requester` handle: a handle
/// made per call (as the docs allow) costs no extra round trip after the first.
#[tokio::test]
async fn the_count_is_checked_once_per_client_and_service() {
    let env = TestEnv::new();
    let service = unique_service("checked-once");
    // The first send loads the scripts and checks the count.
    drop(
        env.client
            .requester(&service)
            .send("once-first", "echo", &json!(0), GENEROUS)
            .await
            .expect("send"),
    );
    let before = common::command_calls(&env.server, "evalsha");
    for i in 0..5 {
        let pending = env
            .client
            .requester(&service)
            .send(&format!("once-{i}"), "echo", &json!(i), GENEROUS)
            .await
            .expect("send");
        drop(pending);
    }
    // Five adds (`ADD_REQUEST`), no more checks (`PARTITION_COUNT`).
    assert_eq!(common::command_calls(&env.server, "evalsha") - before, 5);
}
