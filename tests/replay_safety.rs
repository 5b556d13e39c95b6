//! Replays are safe to repeat: a request id whose newest entry is still in flight (pending in, or not yet
//! delivered to, a group) is not queued again, whichever of its entries a replay names, and two replays racing
//! each other queue it once. `--dry-run` reports the same decisions and changes nothing.

mod common;

use std::time::Duration;

use common::{RedisServer, redis_con, run_cli, spawn_serve, wait_until};
use futures_util::future::join_all;
use redcall::Client;
use redcall::admin::{ReplayOptions, SkipReason};
use redis::AsyncCommands;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

fn stream(service: &str) -> String {
    format!("{{redcall:{service}}}:requests")
}

/// Sends `ids` (function key `count`) without waiting for replies.
async fn send_all(client: &Client, service: &str, ids: &[&str]) {
    let requester = client.requester(service);
    for (i, id) in ids.iter().enumerate() {
        drop(
            requester
                .send(id, "count", &(i as i64), LONG)
                .await
                .expect("send"),
        );
    }
}

/// Plays a responder by hand: creates the `workers` group if needed, reads everything not yet delivered and
/// acknowledges it, so nothing in the stream is in flight. Returns the (entry id, request id) pairs it read.
async fn deliver_and_ack(server: &RedisServer, service: &str) -> Vec<(String, String)> {
    let mut con = redis_con(server).await;
    let key = stream(service);
    let _: redis::RedisResult<()> = con.xgroup_create_mkstream(&key, "workers", "0").await;
    let read: StreamReadReply = con
        .xread_options(
            &[&key],
            &[">"],
            &StreamReadOptions::default()
                .group("workers", "by-hand")
                .count(10_000),
        )
        .await
        .expect("XREADGROUP");
    let entries: Vec<(String, String)> = read
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .map(|e| {
            let id = e.get::<String>("id").unwrap_or_default();
            (e.id, id)
        })
        .collect();
    if !entries.is_empty() {
        let ids: Vec<&str> = entries.iter().map(|(e, _)| e.as_str()).collect();
        let _: u64 = con.xack(&key, "workers", &ids).await.expect("XACK");
    }
    entries
}

async fn xlen(server: &RedisServer, service: &str) -> u64 {
    let mut con = redis_con(server).await;
    con.xlen(stream(service)).await.expect("XLEN")
}

fn cli_json(server: &RedisServer, service: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_cli(server, service, &all);
    assert!(
        out.status.success(),
        "redcall {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn request_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|e| e["request_id"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The case: `replay --from - --to +` twice before the first replay's requests were handled. The second
/// run sees the original entries (handled, so not in flight themselves) and the first run's entries (in flight);
/// it must queue nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_range_replay_before_the_first_drained_replays_nothing() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "twice";
    let admin = client.admin(service);
    send_all(&client, service, &["a0", "a1", "a2"]).await;
    assert_eq!(deliver_and_ack(&server, service).await.len(), 3);

    let first = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("first replay");
    assert_eq!(first.replayed.len(), 3, "{first:?}");
    assert_eq!(xlen(&server, service).await, 6);

    let second = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("second replay");
    let again: Vec<&str> = second
        .replayed
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert!(
        again.is_empty(),
        "the second replay queued {again:?} again while the first replay's entries were in flight"
    );
    assert_eq!(second.skipped.len(), 6, "{:?}", second.skipped);
    assert!(
        second
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::InFlight),
        "{:?}",
        second.skipped
    );
    assert_eq!(xlen(&server, service).await, 6, "nothing was added");
}

/// A dead letter whose request was already re-queued (here by a range replay) and is still in flight is not
/// queued a second time by `dlq replay`; the dead letter stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_whose_request_is_in_flight_again_is_skipped() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "dead-then-range";
    let admin = client.admin(service);
    send_all(&client, service, &["x"]).await;
    let read = deliver_and_ack(&server, service).await;
    let (entry_id, _) = read.first().cloned().expect("one entry");
    // Dead-letter it the way the responder's script does (same fields, the entry's own envelope).
    let mut con = redis_con(&server).await;
    let found: StreamRangeReply = con
        .xrange(stream(service), &entry_id, &entry_id)
        .await
        .expect("XRANGE");
    let env: Vec<u8> = found.ids[0].get("env").expect("env");
    let dead_id: String = redis::cmd("XADD")
        .arg("{redcall:dead-then-range}:dead")
        .arg("*")
        .arg("id")
        .arg("x")
        .arg("env")
        .arg(&env)
        .arg("fn")
        .arg("count")
        .arg("reason")
        .arg("unknown_function")
        .arg("error")
        .arg("no handler")
        .arg("deliveries")
        .arg(1)
        .arg("entry_id")
        .arg(&entry_id)
        .arg("dead_at_ms")
        .arg(0)
        .arg("group")
        .arg("workers")
        .query_async(&mut con)
        .await
        .expect("XADD dead letter");

    let range = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("range replay");
    assert_eq!(range.replayed.len(), 1, "{range:?}");

    let dlq = admin
        .replay_dead_letters(
            std::slice::from_ref(&dead_id),
            &ReplayOptions::default(),
            |_| {},
        )
        .await
        .expect("dlq replay");
    assert!(
        dlq.replayed.is_empty(),
        "x was queued twice: {:?}",
        dlq.replayed
    );
    assert_eq!(dlq.skipped.len(), 1);
    assert_eq!(dlq.skipped[0].reason, SkipReason::InFlight);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 1);
    assert_eq!(xlen(&server, service).await, 2);
}

/// Two replays of the same range started at the same time queue each request once between them: the decision
/// and the re-queue are one script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_range_replays_queue_each_request_once() {
    const N: usize = 300;
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "race";
    let ids: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    send_all(&client, service, &refs).await;
    assert_eq!(deliver_and_ack(&server, service).await.len(), N);

    // Separate clients: separate connections, so the two replays' scripts interleave in Redis.
    let replays = (0..2).map(|_| {
        let client = Client::open(&server.url()).expect("client");
        async move {
            client
                .admin(service)
                .replay_range("-", "+", &ReplayOptions::default(), |_| {})
                .await
                .expect("replay")
        }
    });
    let reports = join_all(replays).await;
    let queued: usize = reports.iter().map(|r| r.replayed.len()).sum();
    assert_eq!(
        queued, N,
        "two racing replays queued {queued} requests for {N} ids"
    );
    assert_eq!(xlen(&server, service).await, 2 * N as u64);
}

/// With a responder running: a `work` request, then `replay` twice in a row while the first replay's run is still
/// going. The handler runs twice in all (the original and one replay), not three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_request_replayed_twice_runs_twice_in_all() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "work-twice";
    let requester = client.requester(service);
    let admin = client.admin(service);
    let _serve = spawn_serve(&server, service, "demo", &[], &[]);
    // Long enough that the second replay below starts while the first replay's run is in flight.
    let params = json!({"ms": 2000});
    let _: Value = requester
        .request("w", "work", &params, LONG)
        .await
        .expect("work reply");
    let runs = || server.cli(&["HGET", "{redcall:work-twice}:runs", "w"]);
    assert_eq!(runs(), "1");

    let first = cli_json(&server, service, &["replay", "--from", "-", "--to", "+"]);
    assert_eq!(request_ids(&first["replayed"]), ["w"], "{first}");
    // The second replays nothing (both entries in flight): a replay that did nothing exits 1, report printed.
    let out = run_cli(
        &server,
        service,
        &["--json", "replay", "--from", "-", "--to", "+"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    // Wait until everything in the stream was handled, then count.
    let drained = wait_until(WAIT, || {
        let admin = admin.clone();
        async move {
            let s = admin.stats().await.expect("stats");
            s.groups
                .first()
                .is_some_and(|g| g.pending == 0 && g.lag == Some(0))
        }
    })
    .await;
    assert!(drained, "the responder did not drain the stream");
    assert_eq!(runs(), "2", "the work request ran {} times", runs());
    assert_eq!(
        request_ids(&second["replayed"]),
        Vec::<String>::new(),
        "{second}"
    );
    let reasons: Vec<&str> = second["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["reason"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(reasons, ["in_flight", "in_flight"], "{second}");
}

/// `replay --dry-run` changes nothing (stream, records, keys) and names exactly what the real replay then does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_names_what_a_replay_then_does() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "dry";
    send_all(&client, service, &["d0", "d1", "d2", "d3"]).await;
    deliver_and_ack(&server, service).await;
    // One more that nobody has read: in flight.
    send_all(&client, service, &["d4"]).await;

    let mut con = redis_con(&server).await;
    let ids = ["d0", "d1", "d2", "d3", "d4"];
    let records = |mut con: redis::aio::MultiplexedConnection| async move {
        let mut all = Vec::new();
        for id in ids {
            let bytes: Option<Vec<u8>> = con
                .get(format!("{{redcall:dry}}:req:{id}"))
                .await
                .expect("GET");
            all.push(bytes);
        }
        all
    };
    let before = (
        xlen(&server, service).await,
        records(con.clone()).await,
        server.cli(&["DBSIZE"]),
    );

    let dry = cli_json(
        &server,
        service,
        &["replay", "--from", "-", "--to", "+", "--dry-run"],
    );
    assert_eq!(dry["dry_run"], true, "{dry}");
    let after = (
        xlen(&server, service).await,
        records(con.clone()).await,
        server.cli(&["DBSIZE"]),
    );
    assert_eq!(before, after, "a dry run changed Redis");
    let text = run_cli(
        &server,
        service,
        &["replay", "--from", "-", "--to", "+", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("would replay 4 requests"), "{text}");

    let real = cli_json(&server, service, &["replay", "--from", "-", "--to", "+"]);
    assert_eq!(
        request_ids(&dry["replayed"]),
        request_ids(&real["replayed"])
    );
    assert_eq!(request_ids(&real["replayed"]), ["d0", "d1", "d2", "d3"]);
    assert_eq!(dry["skipped"], real["skipped"]);
    assert_eq!(request_ids(&real["skipped"]), ["d4"]);
    assert_eq!(real["skipped"][0]["reason"], "in_flight");
    let len: u64 = con.xlen(stream(service)).await.expect("XLEN");
    assert_eq!(len, 9);
}

/// Once the first replay was handled, the next one replays each id again, once (its other entries are
/// duplicates), and the replay count goes on from the id's latest replay even when the entry replayed is the
/// original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_replay_was_handled_the_next_replays_each_id_once() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "again";
    let admin = client.admin(service);
    send_all(&client, service, &["b0", "b1"]).await;
    deliver_and_ack(&server, service).await;
    let first = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("first replay");
    assert_eq!(first.replayed.len(), 2);
    assert!(first.replayed.iter().all(|r| r.entry_id.is_some()));
    assert_eq!(deliver_and_ack(&server, service).await.len(), 2);

    let second = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("second replay");
    let ids: Vec<&str> = second
        .replayed
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["b0", "b1"], "{second:?}");
    assert_eq!(second.skipped.len(), 2, "{:?}", second.skipped);
    assert!(
        second
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::DuplicateId),
        "{:?}",
        second.skipped
    );
    let info = client
        .requester(service)
        .call_info("b0")
        .await
        .expect("record");
    assert_eq!(info.replay.expect("replay info").count, 2);
}

/// An id used again for a new request after the old one's record expired: replaying the old entry would
/// overwrite the new request's record and reply, so it is skipped as superseded; the new request's own entry is
/// replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_entry_of_a_reused_id_is_superseded() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "reused";
    let admin = client.admin(service);
    send_all(&client, service, &["same"]).await;
    // The record expires (deleted here), then a new request takes the id.
    server.cli(&["DEL", "{redcall:reused}:req:same"]);
    drop(
        client
            .requester(service)
            .send("same", "count", &99, LONG)
            .await
            .expect("send again"),
    );
    let read = deliver_and_ack(&server, service).await;
    assert_eq!(read.len(), 2);

    let report = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].from, read[0].0);
    assert_eq!(report.skipped[0].reason, SkipReason::Superseded);
    assert_eq!(report.replayed.len(), 1);
    assert_eq!(report.replayed[0].from, read[1].0);
    let info = client
        .requester(service)
        .call_info("same")
        .await
        .expect("record");
    assert_eq!(info.params::<i64>().expect("params"), 99);
}

/// A dead letter whose request record expired long ago is still replayable; `--dry-run` of dead letters keeps
/// them in place and adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_outliving_their_records_replay_and_dry_runs_keep_them() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "old-dead";
    let requester = client.requester(service);
    let admin = client.admin(service);
    // A responder without a `count` handler dead-letters both at once.
    let responder = client
        .responder(service)
        .handler("other", |_ctx: redcall::RequestContext, n: i64| async move {
            Ok::<_, redcall::HandlerError>(n)
        })
        .start()
        .await
        .expect("responder");
    for id in ["o0", "o1"] {
        let pending = requester.send(id, "count", &1, LONG).await.expect("send");
        pending.wait::<i64>().await.expect_err("unknown function");
    }
    responder.shutdown().await.expect("shutdown");
    server.cli(&[
        "DEL",
        "{redcall:old-dead}:req:o0",
        "{redcall:old-dead}:req:o1",
    ]);
    let before = (xlen(&server, service).await, server.cli(&["DBSIZE"]));

    let dry = cli_json(&server, service, &["dlq", "replay", "--all", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(request_ids(&dry["replayed"]), ["o0", "o1"], "{dry}");
    assert!(dry["replayed"][0]["entry_id"].is_null(), "{dry}");
    assert_eq!(admin.dead_letter_count().await.expect("count"), 2);
    assert_eq!(
        before,
        (xlen(&server, service).await, server.cli(&["DBSIZE"]))
    );

    let dead: Vec<String> = admin
        .dead_letters(None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.dead_id)
        .collect();
    let real = admin
        .replay_dead_letters(&dead, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(real.replayed.len(), 2, "{real:?}");
    assert!(!real.dry_run);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 0);
    let lib_dry = admin
        .replay_range("-", "+", &ReplayOptions::default().dry_run(true), |_| {})
        .await
        .expect("dry range replay");
    assert!(lib_dry.dry_run && lib_dry.replayed.is_empty());
    assert!(
        lib_dry
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::InFlight || s.reason == SkipReason::DuplicateId),
        "{:?}",
        lib_dry.skipped
    );
}
