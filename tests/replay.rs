//! Operations: stats, dead-letter list/show/replay/purge and range replay, against a real redis-server.
//!
//! DESIGN 11 (replay: dead letters listed, inspected, replayed one, several or all, and purged; a range of the
//! requests stream replayed), 2 (call info shows a replay's provenance); The parts (admin stats, and the CLI's `stats`,
//! `dlq`, `replay` and `info`).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ChildGuard, RedisServer, TestEnv, redcall_bin, redis_con, run_cli, wait_until};
use futures_util::future::join_all;
use redcall::admin::{ReplayOptions, SkipReason};
use redcall::protocol::ReplaySource;
use redcall::{Client, ErrorKind, HandlerError, RequestContext, Responder};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// Counts handler runs per request id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn add(&self, id: &str) {
        *self.lock().entry(id.to_owned()).or_insert(0) += 1;
    }
    fn of(&self, id: &str) -> u32 {
        self.lock().get(id).copied().unwrap_or(0)
    }
    fn total(&self) -> u32 {
        self.lock().values().sum()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A responder whose `count` handler doubles its param and counts runs.
async fn counting_responder(
    client: &Client,
    service: &str,
    runs: &Runs,
    concurrency: usize,
) -> Responder {
    let runs = runs.clone();
    client
        .responder(service)
        .consumer("counter")
        .concurrency(concurrency)
        .handler("count", move |ctx: RequestContext, n: i64| {
            let runs = runs.clone();
            async move {
                runs.add(&ctx.id);
                Ok::<_, HandlerError>(n * 2)
            }
        })
        .start()
        .await
        .expect("start responder")
}

/// (entry id, request id) of every entry of the requests stream, in stream order.
async fn stream_entries(server: &RedisServer, service: &str) -> Vec<(String, String)> {
    let mut con = redis_con(server).await;
    let key = format!("{{redcall:{service}}}:requests");
    let all: StreamRangeReply = con.xrange_all(&key).await.expect("XRANGE");
    all.ids
        .into_iter()
        .map(|e| {
            let id = e.get::<String>("id").unwrap_or_default();
            (e.id, id)
        })
        .collect()
}

/// A `redcall serve` responder (demo handlers only: it has no `count` handler, so `count` requests are
/// dead-lettered at once as unknown function).
fn serve_without_count(server: &RedisServer, service: &str) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &server.url(),
                "--service",
                service,
                "serve",
                "--consumer",
                "first",
            ])
            .stderr(Stdio::null()),
    )
}

/// Kills a responder process and waits until Redis has let go of its blocking read: from then on no entry can be
/// delivered to it (a blocked `XREADGROUP` would otherwise still take the next entries added).
async fn kill_responder(server: &RedisServer, responder: ChildGuard) {
    drop(responder);
    let released = wait_until(WAIT, || async {
        !server.cli(&["CLIENT", "LIST"]).lines().any(|client| {
            client.contains("cmd=xreadgroup")
                && client
                    .split(' ')
                    .any(|kv| kv.strip_prefix("flags=").is_some_and(|f| f.contains('b')))
        })
    })
    .await;
    assert!(released, "a client is still blocked reading");
}

fn cli_json(server: &RedisServer, service: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_cli(server, service, &all);
    assert!(
        out.status.success(),
        "redcall {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Like [`cli_json`], for a command expected to exit with `code` (its report is still printed).
fn cli_json_exit(
    server: &RedisServer,
    service: &str,
    args: &[&str],
    code: i32,
) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_cli(server, service, &all);
    assert_eq!(
        out.status.code(),
        Some(code),
        "redcall {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_a_known_state() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let admin = client.admin(service);

    // Nothing yet: an empty service.
    let empty = admin.stats().await.expect("stats");
    assert_eq!((empty.stream_length, empty.dead_letters), (0, 0));
    assert!(empty.groups.is_empty());

    // 2 requests for an unknown function first (dead-lettered at once), then 10 that a handler holds.
    let mut waiting = Vec::new();
    for i in 0..2 {
        waiting.push(
            requester
                .send(&format!("nope-{i}"), "nope", &i, LONG)
                .await
                .expect("send"),
        );
    }
    let mut held = Vec::new();
    for i in 0..10 {
        held.push(
            requester
                .send(&format!("hold-{i}"), "hold", &i, LONG)
                .await
                .expect("send"),
        );
    }
    let before = admin.stats().await.expect("stats");
    assert_eq!(before.stream_length, 12);
    assert!(
        before.groups.is_empty(),
        "no group before a responder starts"
    );

    let (release, released) = watch::channel(false);
    let responder = client
        .responder(service)
        .consumer("holder")
        .concurrency(3)
        .reaper(false)
        .handler("hold", move |_ctx: RequestContext, n: i64| {
            let mut released = released.clone();
            async move {
                released
                    .wait_for(|r| *r)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(n)
            }
        })
        .start()
        .await
        .expect("start responder");
    // A second group that has read nothing: everything is lag for it.
    server.cli(&["XGROUP", "CREATE", admin.keys().requests(), "audit", "0"]);

    let settled = wait_until(WAIT, || {
        let admin = admin.clone();
        async move {
            let s = admin.stats().await.expect("stats");
            s.dead_letters == 2
                && s.groups
                    .iter()
                    .any(|g| g.name == "workers" && g.pending == 3)
        }
    })
    .await;
    assert!(settled, "responder did not take 3 and dead-letter 2");

    let entries = stream_entries(&server, service).await;
    let stats = admin.stats().await.expect("stats");
    assert_eq!(stats.stream_length, 12);
    assert_eq!(stats.dead_letters, 2);
    assert_eq!(stats.dead_letters_unattributed, 0);
    assert_eq!(stats.first_entry_id.as_deref(), Some(entries[0].0.as_str()));
    assert_eq!(stats.last_entry_id.as_deref(), Some(entries[11].0.as_str()));
    let names: Vec<&str> = stats.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["audit", "workers"]);
    let audit = &stats.groups[0];
    assert_eq!(
        (audit.pending, audit.lag, audit.dead_letters),
        (0, Some(12), 0)
    );
    assert!(audit.oldest_pending.is_none() && audit.consumers.is_empty());
    let workers = &stats.groups[1];
    assert_eq!(workers.pending, 3);
    assert_eq!(workers.lag, Some(7), "12 entries, 5 delivered");
    assert_eq!(workers.dead_letters, 2);
    assert_eq!(workers.last_delivered_id, entries[4].0);
    let oldest = workers
        .oldest_pending
        .as_ref()
        .expect("an oldest pending entry");
    assert_eq!(
        oldest.entry_id, entries[2].0,
        "hold-0 is the oldest pending"
    );
    assert_eq!((oldest.deliveries, oldest.consumer.as_str()), (1, "holder"));
    let added_ms: u64 = entries[2]
        .0
        .split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("ms");
    assert_eq!(oldest.age_ms, stats.server_time_ms - added_ms);
    assert_eq!(workers.consumers.len(), 1);
    assert_eq!(
        (
            workers.consumers[0].name.as_str(),
            workers.consumers[0].pending
        ),
        ("holder", 3)
    );

    // The binary reports the same numbers.
    let json = cli_json(&server, service, &["stats"]);
    assert_eq!(json["stream_length"], 12);
    assert_eq!(json["dead_letters"], 2);
    assert_eq!(json["groups"][1]["name"], "workers");
    assert_eq!(json["groups"][1]["pending"], 3);
    assert_eq!(json["groups"][1]["lag"], 7);
    assert_eq!(json["groups"][1]["dead_letters"], 2);
    assert_eq!(json["groups"][1]["consumers"][0]["pending"], 3);
    assert_eq!(json["groups"][0]["lag"], 12);
    let all = cli_json(&server, service, &["stats", "--all"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    let text = run_cli(&server, service, &["stats"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("group workers: pending 3, lag 7"), "{text}");

    // Release the handler: everything is answered, nothing pending or lagging for `workers`.
    release.send(true).expect("release");
    for (i, pending) in held.into_iter().enumerate() {
        assert_eq!(pending.wait::<i64>().await.expect("reply"), i as i64);
    }
    for pending in waiting {
        let err = pending.wait::<i64>().await.expect_err("unknown function");
        assert_eq!(err.kind(), ErrorKind::UnknownFunction);
    }
    let done = wait_until(WAIT, || {
        let admin = admin.clone();
        async move {
            let s = admin.stats().await.expect("stats");
            s.groups
                .iter()
                .any(|g| g.name == "workers" && g.pending == 0 && g.lag == Some(0))
        }
    })
    .await;
    assert!(done, "workers did not drain");
    drop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_replay_of_1000_entries_is_answered() {
    const N: usize = 1000;
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let admin = client.admin(service);

    // A responder without the `count` handler dead-letters every request at once (unknown function).
    let first = serve_without_count(&server, service);
    for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
        let sends = chunk.iter().map(|i| {
            let requester = requester.clone();
            async move {
                let pending = requester
                    .send(&format!("job-{i}"), "count", &(*i as i64), LONG)
                    .await
                    .expect("send");
                pending
                    .wait::<i64>()
                    .await
                    .expect_err("unknown function")
                    .kind()
            }
        });
        for kind in join_all(sends).await {
            assert_eq!(kind, ErrorKind::UnknownFunction);
        }
    }
    assert_eq!(admin.dead_letter_count().await.expect("count"), N as u64);
    kill_responder(&server, first).await;
    let listed = admin.dead_letters(None, 5).await.expect("list");
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].reason, "unknown_function");
    assert_eq!(listed[0].func_key.as_deref(), Some("count"));
    assert_eq!(listed[0].group.as_deref(), Some("workers"));
    assert_eq!(listed[0].request().expect("envelope").func_key, "count");

    // With the handler deployed, replay them all.
    let runs = Runs::default();
    let responder = counting_responder(&client, service, &runs, 64).await;
    let mut seen_progress = 0;
    let report = admin
        .replay_all_dead_letters(&ReplayOptions::default(), |n| seen_progress = n)
        .await
        .expect("replay");
    assert_eq!(
        report.replayed.len(),
        N,
        "skipped: {:?}",
        report.skipped.first()
    );
    assert!(report.skipped.is_empty());
    assert_eq!(seen_progress, N as u64);

    let all_ran = wait_until(WAIT, || {
        let runs = runs.clone();
        async move { runs.total() as usize >= N }
    })
    .await;
    assert!(all_ran, "only {} of {N} replays ran", runs.total());
    for i in 0..N {
        let id = format!("job-{i}");
        assert_eq!(runs.of(&id), 1, "{id} ran {} times", runs.of(&id));
    }
    // Every reply is stored (the last FINISH may land just after the handler counted).
    let stored = wait_until(WAIT, || {
        let requester = requester.clone();
        async move {
            for i in (0..N).rev() {
                match requester.stored_reply::<i64>(&format!("job-{i}")).await {
                    Ok(Some(v)) => assert_eq!(v, 2 * i as i64),
                    _ => return false,
                }
            }
            true
        }
    })
    .await;
    assert!(stored, "not every replay has a stored reply");
    assert_eq!(admin.dead_letter_count().await.expect("count"), 0);
    let info = requester.call_info("job-7").await.expect("record");
    let replay = info.replay.clone().expect("the record shows the replay");
    assert_eq!((replay.count, replay.source), (1, ReplaySource::DeadLetter));
    assert_eq!(info.params::<i64>().expect("params"), 7);
    drop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_of_the_binary() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let admin = client.admin(service);
    let first = serve_without_count(&server, service);
    for i in 0..6 {
        let pending = requester
            .send(&format!("d{i}"), "count", &i, LONG)
            .await
            .expect("send");
        pending.wait::<i64>().await.expect_err("unknown function");
    }
    kill_responder(&server, first).await;

    let list = cli_json(&server, service, &["dlq", "list", "--limit", "10"]);
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 6);
    let dead: Vec<String> = list
        .iter()
        .filter_map(|e| e["dead_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(list[0]["request_id"], "d0");
    assert_eq!(list[0]["request"]["params"], 0);
    let page = cli_json(
        &server,
        service,
        &["dlq", "list", "--limit", "2", "--after", &dead[1]],
    );
    assert_eq!(page[0]["dead_id"], dead[2].as_str());
    let show = cli_json(&server, service, &["dlq", "show", &dead[3]]);
    assert_eq!(
        (show["request_id"].as_str(), show["reason"].as_str()),
        (Some("d3"), Some("unknown_function"))
    );
    assert_eq!(show["request"]["func_key"], "count");
    let missing = run_cli(&server, service, &["dlq", "show", "1-1"]);
    assert_eq!(missing.status.code(), Some(5), "not found exits with 5");
    // Not an entry id: a request id, whose dead letter does not exist.
    let missing = run_cli(&server, service, &["dlq", "show", "nope"]);
    assert_eq!(
        missing.status.code(),
        Some(5),
        "no dead letter for request nope"
    );
    let bad = run_cli(&server, service, &["dlq", "show", "bad\u{1}id"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "neither an entry id nor a usable request id is a usage error"
    );
    let text = run_cli(&server, service, &["dlq", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("unknown_function"));

    // `--func` replays only dead letters of that function key: none of these is for `other`.
    let filtered = cli_json(
        &server,
        service,
        &["dlq", "replay", "--all", "--func", "other"],
    );
    assert_eq!(
        filtered["replayed"].as_array().map(Vec::len),
        Some(0),
        "{filtered}"
    );
    assert_eq!(filtered["not_matching"], 6, "{filtered}");
    // A request over the payload limit is not replayed; it stays dead-lettered.
    // Nothing named was replayed: exit 1, with the report on stdout.
    let too_large = cli_json_exit(
        &server,
        service,
        &["--payload-limit", "20", "dlq", "replay", &dead[4]],
        1,
    );
    assert_eq!(
        too_large["replayed"].as_array().map(Vec::len),
        Some(0),
        "{too_large}"
    );
    assert_eq!(
        too_large["skipped"][0]["reason"], "payload_too_large",
        "{too_large}"
    );
    assert_eq!(admin.dead_letter_count().await.expect("count"), 6);

    // Replay two by id; the second replay of the same id finds nothing.
    let runs = Runs::default();
    let responder = counting_responder(&client, service, &runs, 8).await;
    let replay = cli_json(&server, service, &["dlq", "replay", &dead[0], &dead[1]]);
    assert_eq!(replay["replayed"].as_array().map(Vec::len), Some(2));
    let again = cli_json_exit(&server, service, &["dlq", "replay", &dead[0]], 5);
    assert_eq!(again["replayed"].as_array().map(Vec::len), Some(0));
    assert_eq!(again["skipped"][0]["reason"], "not_found");
    for (id, n) in [("d0", 0), ("d1", 2)] {
        let answered = wait_until(WAIT, || {
            let requester = requester.clone();
            async move { matches!(requester.stored_reply::<i64>(id).await, Ok(Some(v)) if v == n) }
        })
        .await;
        assert!(answered, "{id} not answered after replay");
    }
    // `info` shows the replay.
    let info = cli_json(&server, service, &["info", "d1"]);
    assert_eq!(info["replay"]["source"], "dead_letter");
    assert_eq!(info["replay"]["from"], dead[1].as_str());

    // Purge one by id, then the rest.
    let purged = cli_json(&server, service, &["dlq", "purge", &dead[2]]);
    assert_eq!(purged["purged"], 1);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 3);
    let purged = cli_json(&server, service, &["dlq", "purge", "--all"]);
    assert_eq!(purged["purged"], 3);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 0);
    let nothing = run_cli(&server, service, &["dlq", "purge"]);
    assert!(!nothing.status.success(), "purge needs ids or --all");
    assert_eq!(runs.total(), 2);
    drop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_range_reruns_exactly_that_range() {
    const N: usize = 30;
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let admin = client.admin(service);
    let runs = Runs::default();
    // One request at a time, so a request answered after the replays proves the replays were all handled.
    let responder = counting_responder(&client, service, &runs, 1).await;
    for i in 0..N {
        let v: i64 = requester
            .request(&format!("r{i:02}"), "count", &(i as i64), LONG)
            .await
            .expect("reply");
        assert_eq!(v, 2 * i as i64);
    }
    let entries = stream_entries(&server, service).await;
    assert_eq!(entries.len(), N);
    let (from, to) = (&entries[10].0, &entries[19].0);

    let report = admin
        .replay_range(from, to, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    let replayed: Vec<&str> = report
        .replayed
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    let expected: Vec<String> = (10..20).map(|i| format!("r{i:02}")).collect();
    assert_eq!(replayed, expected);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let _: i64 = requester
        .request("barrier", "count", &0, LONG)
        .await
        .expect("barrier");
    for i in 0..N {
        let id = format!("r{i:02}");
        let want = if (10..20).contains(&i) { 2 } else { 1 };
        assert_eq!(runs.of(&id), want, "{id}");
    }
    assert_eq!(runs.total() as usize, N + 10 + 1);
    let info = requester.call_info("r15").await.expect("record");
    let replay = info.replay.expect("replay info");
    assert_eq!(
        (replay.source, replay.from.as_str()),
        (ReplaySource::Range, entries[15].0.as_str())
    );
    assert_eq!(
        requester.stored_reply::<i64>("r15").await.expect("read"),
        Some(30)
    );

    // Only one function key: nothing else in the range matches.
    let none = admin
        .replay_range("-", to, &ReplayOptions::default().func_key("other"), |_| {})
        .await
        .expect("replay");
    assert_eq!((none.replayed.len(), none.not_matching), (0, 20));

    // A bare millisecond timestamp covers that whole millisecond (r00, and any other request made in it).
    let ms = entries[0].0.split('-').next().expect("ms").to_owned();
    let in_ms: Vec<&str> = entries
        .iter()
        .filter(|(e, _)| e.split('-').next() == Some(ms.as_str()))
        .map(|(_, id)| id.as_str())
        .collect();
    let report = admin
        .replay_range(&ms, &ms, &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    let replayed: Vec<&str> = report
        .replayed
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(replayed, in_ms);
    let _: i64 = requester
        .request("barrier-2", "count", &0, LONG)
        .await
        .expect("barrier");
    assert_eq!(runs.of("r00"), 2);
    drop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_replay_skips_in_flight_and_stops_at_the_start_bound() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let admin = client.admin(service);

    // No group yet: nothing was delivered, so everything is in flight.
    for i in 0..3 {
        drop(
            requester
                .send(&format!("f{i}"), "count", &i, LONG)
                .await
                .expect("send"),
        );
    }
    let report = admin
        .replay_range("-", "+", &ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(report.replayed.len(), 0);
    assert_eq!(report.skipped.len(), 3);
    assert!(
        report
            .skipped
            .iter()
            .all(|s| s.reason == SkipReason::InFlight)
    );

    // Handled by the demo responder of the binary; then `replay --from - --to +` replays each once, and the
    // replays it adds are beyond its bound.
    let mut serve = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &server.url(),
                "--service",
                service,
                "serve",
                "--consumer",
                "demo",
            ])
            .stderr(Stdio::null()),
    );
    for i in 3..6 {
        let _: serde_json::Value = requester
            .request(
                &format!("w{i}"),
                "work",
                &serde_json::json!({"ms": 1}),
                LONG,
            )
            .await
            .expect("work reply");
    }
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
    assert!(drained);
    let out = cli_json(
        &server,
        service,
        &["replay", "--from", "-", "--to", "+", "--func", "work"],
    );
    assert_eq!(out["replayed"].as_array().map(Vec::len), Some(3));
    assert_eq!(out["not_matching"], 3);
    let runs_key = &format!("{}:runs", admin.keys().tag());
    let twice = wait_until(WAIT, || async {
        (3..6).all(|i| server.cli(&["HGET", runs_key, &format!("w{i}")]) == "2")
    })
    .await;
    assert!(twice, "each work request should have run twice");
    assert_eq!(server.cli(&["XLEN", admin.keys().requests()]), "9");
    assert!(
        serve.try_wait().expect("status").is_none(),
        "responder still running"
    );
}
