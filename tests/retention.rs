//! Retention: trimming by policy never removes a pending or undelivered entry; records and replies expire.
//!
//! DESIGN 10 (retention: streams trimmed by a policy that never removes an entry pending or not yet delivered to every
//! group; stored replies and request records expire), 2 (call info for a retention period after the request).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ChildGuard, RedisServer, TestEnv, redcall_bin, redis_con, run_cli, wait_until};
use futures_util::future::join_all;
use redcall::{
    Client, ErrorKind, HandlerError, RequestContext, ResponderSettings, RetentionPolicy,
};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

async fn entry_ids(con: &mut MultiplexedConnection, key: &str) -> Vec<String> {
    let all: StreamRangeReply = con.xrange_all(key).await.expect("XRANGE");
    all.ids.into_iter().map(|e| e.id).collect()
}

/// Reads `count` new entries for `group` (consumer `c`), returning their ids.
async fn read_group(
    con: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    count: usize,
) -> Vec<String> {
    let opts = StreamReadOptions::default().group(group, "c").count(count);
    let reply: Option<StreamReadReply> = con
        .xread_options(&[key], &[">"], &opts)
        .await
        .expect("XREADGROUP");
    reply
        .map(|r| {
            r.keys
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|e| e.id)
                .collect()
        })
        .unwrap_or_default()
}

/// A stream entry id as a comparable pair.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("stream id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

fn policy(max_len: Option<u64>, max_age: Option<Duration>) -> RetentionPolicy {
    RetentionPolicy::default().max_len(max_len).max_age(max_age)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_stops_at_the_least_advanced_group_and_the_oldest_pending_entry() {
    let env = TestEnv::new();
    let admin = env.admin();
    let requester = env.requester();
    let key = admin.keys().requests().to_owned();
    let mut con = env.redis().await;
    for i in 0..100 {
        drop(
            requester
                .send(&format!("g{i}"), "f", &i, LONG)
                .await
                .expect("send"),
        );
    }
    let e = entry_ids(&mut con, &key).await;
    assert_eq!(e.len(), 100);

    // No group: nothing was delivered, nothing may go.
    let report = admin.trim(&policy(Some(0), None)).await.expect("trim");
    assert_eq!(
        (report.trimmed, report.policy_bound.as_deref()),
        (0, Some("+"))
    );
    assert_eq!(report.safe_bound, None);
    assert_eq!(entry_ids(&mut con, &key).await.len(), 100);

    // Group a read and acknowledged everything; group b only the first 30.
    let _: () = con.xgroup_create(&key, "a", "0").await.expect("group a");
    let _: () = con.xgroup_create(&key, "b", "0").await.expect("group b");
    let read = read_group(&mut con, &key, "a", 100).await;
    let _: i64 = con.xack(&key, "a", &read).await.expect("ack");
    let read = read_group(&mut con, &key, "b", 30).await;
    let _: i64 = con.xack(&key, "b", &read).await.expect("ack");
    let report = admin.trim(&policy(Some(0), None)).await.expect("trim");
    assert_eq!(
        report.safe_bound.as_deref(),
        Some(e[29].as_str()),
        "b's last delivered"
    );
    assert_eq!(
        report.trimmed, 29,
        "everything below b's last delivered entry"
    );
    assert_eq!(entry_ids(&mut con, &key).await, e[29..]);

    // b reads 20 more and acknowledges only 10: its oldest pending entry is now the bound.
    let read = read_group(&mut con, &key, "b", 20).await;
    let _: i64 = con.xack(&key, "b", &read[..10]).await.expect("ack");
    let report = admin.trim(&policy(Some(0), None)).await.expect("trim");
    assert_eq!(
        report.safe_bound.as_deref(),
        Some(e[40].as_str()),
        "b's oldest pending"
    );
    assert_eq!(report.trimmed, 11);
    assert_eq!(entry_ids(&mut con, &key).await, e[40..]);

    // A length policy that wants more gone than is safe stops at the safe bound.
    let report = admin.trim(&policy(Some(55), None)).await.expect("trim");
    assert_eq!(report.policy_bound.as_deref(), Some(e[45].as_str()));
    assert_eq!(
        (report.trimmed, report.applied_bound.as_deref()),
        (0, Some(e[40].as_str()))
    );

    // Once b is done, the length policy applies in full.
    let _: i64 = con.xack(&key, "b", &read[10..]).await.expect("ack");
    let read = read_group(&mut con, &key, "b", 100).await;
    assert_eq!(read.len(), 50);
    let _: i64 = con.xack(&key, "b", &read).await.expect("ack");
    let report = admin.trim(&policy(Some(55), None)).await.expect("trim");
    assert_eq!(report.trimmed, 5);
    assert_eq!(entry_ids(&mut con, &key).await, e[45..]);

    // Nothing is older than an hour; everything is older than zero seconds except the last delivered entry,
    // which the safe bound keeps.
    let report = admin
        .trim(&policy(None, Some(Duration::from_secs(3600))))
        .await
        .expect("trim");
    assert_eq!(report.trimmed, 0);
    let report = admin
        .trim(&policy(None, Some(Duration::ZERO)))
        .await
        .expect("trim");
    assert_eq!(report.trimmed, 54);
    assert_eq!(entry_ids(&mut con, &key).await, e[99..]);

    // The dead-letter stream is trimmed by length only.
    let dead = admin.keys().dead_letters().to_owned();
    for i in 0..5 {
        let _: String = con
            .xadd(&dead, "*", &[("id", format!("x{i}"))])
            .await
            .expect("XADD");
    }
    let report = admin
        .trim(
            &RetentionPolicy::default()
                .dead_letter_max_len(Some(2))
                .max_age(None),
        )
        .await
        .expect("trim");
    assert_eq!(report.dead_letters_trimmed, 3);
    assert_eq!(admin.dead_letter_count().await.expect("count"), 2);
}

/// Counts, atomically, the entries pending in any group that are missing from the stream.
const MISSING_PENDING: &str = r#"
local checked, missing = 0, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name
  for i = 1, #g, 2 do if g[i] == 'name' then name = g[i + 1] end end
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], name, '-', '+', 100000)) do
    checked = checked + 1
    if #redis.call('XRANGE', KEYS[1], p[1], p[1]) == 0 then missing = missing + 1 end
  end
end
return {checked, missing}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_under_load_never_removes_a_pending_entry() {
    const SLOW: usize = 5;
    const FAST_PER_PHASE: usize = 200;
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let admin = client.admin(service);
    let requester = client.requester(service);
    let key = admin.keys().requests().to_owned();

    // The responder's own reaper trims as hard as it can, every 20 ms.
    let aggressive = RetentionPolicy::default()
        .max_len(Some(0))
        .max_age(Some(Duration::ZERO))
        .interval(Duration::from_millis(20));
    let mut settings = ResponderSettings::default();
    settings.reap_interval = Some(Duration::from_millis(20));
    settings.retention = aggressive.clone();
    // slow-i waits until at least i+1 slow requests are released; it records its stream entry id.
    let (release, released) = watch::channel(0usize);
    let slow_entries: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let recorded = slow_entries.clone();
    let _responder = client
        .responder(service)
        .settings(settings)
        .concurrency(16)
        .handler("fast", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n)
        })
        .handler("slow", move |ctx: RequestContext, i: usize| {
            let mut released = released.clone();
            let recorded = recorded.clone();
            async move {
                recorded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(i, ctx.entry_id.clone());
                released
                    .wait_for(|n| *n > i)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(i)
            }
        })
        .start()
        .await
        .expect("start responder");

    // Meanwhile a second trimmer (the admin API) trims in a loop and checks, atomically, that every pending
    // entry is still in the stream.
    let stop = Arc::new(AtomicBool::new(false));
    let (trims, checked, missing) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let trimmer = {
        let (admin, stop, key) = (admin.clone(), stop.clone(), key.clone());
        let (trims, checked, missing) = (trims.clone(), checked.clone(), missing.clone());
        let mut con = redis_con(&server).await;
        let script = redis::Script::new(MISSING_PENDING);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                admin.trim(&aggressive).await.expect("trim");
                trims.fetch_add(1, Ordering::SeqCst);
                let (c, m): (u64, u64) = script
                    .key(&key)
                    .invoke_async(&mut con)
                    .await
                    .expect("check");
                checked.fetch_add(c, Ordering::SeqCst);
                missing.fetch_add(m, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };

    // Load: phases of fast requests, each followed by one slow request that stays pending.
    let mut slow = Vec::new();
    let mut fast = Vec::new();
    for phase in 0..SLOW {
        let sends = (0..FAST_PER_PHASE).map(|j| {
            let requester = requester.clone();
            async move {
                requester
                    .send(&format!("fast-{phase}-{j}"), "fast", &(j as i64), LONG)
                    .await
                    .expect("send")
            }
        });
        fast.extend(join_all(sends).await);
        slow.push(
            requester
                .send(&format!("slow-{phase}"), "slow", &phase, LONG)
                .await
                .expect("send"),
        );
    }
    for (n, pending) in fast.into_iter().enumerate() {
        let v: i64 = pending
            .wait()
            .await
            .expect("every fast request is answered");
        assert_eq!(v, (n % FAST_PER_PHASE) as i64);
    }
    let mut con = redis_con(&server).await;
    let all_started = wait_until(WAIT, || async {
        slow_entries.lock().unwrap_or_else(|p| p.into_inner()).len() == SLOW
    })
    .await;
    assert!(all_started, "slow requests not all started");
    let slow_ids: Vec<String> = {
        let map = slow_entries.lock().unwrap_or_else(|p| p.into_inner());
        (0..SLOW).filter_map(|i| map.get(&i).cloned()).collect()
    };

    // Release the slow requests one by one: each time the trim advances to the next one still pending, and never
    // past it.
    for (i, pending) in slow.into_iter().enumerate() {
        let first = wait_until(WAIT, || {
            let mut con = con.clone();
            let key = key.clone();
            let oldest_pending = id_key(&slow_ids[i]);
            async move {
                let first = entry_ids(&mut con, &key).await.first().map(|f| id_key(f));
                first >= Some(oldest_pending)
            }
        })
        .await;
        assert!(
            first,
            "the trim should reach slow-{i}, the oldest pending entry"
        );
        let present = entry_ids(&mut con, &key).await;
        for later in &slow_ids[i..] {
            assert!(present.contains(later), "pending entry {later} was trimmed");
        }
        assert_eq!(
            present.first(),
            Some(&slow_ids[i]),
            "trimmed up to the oldest pending entry"
        );
        release.send(i + 1).expect("release");
        let v: usize = pending.wait().await.expect("slow request answered");
        assert_eq!(v, i);
    }
    // Everything answered: the stream shrinks to the last delivered entry.
    let shrunk = wait_until(WAIT, || {
        let mut con = con.clone();
        let key = key.clone();
        async move { entry_ids(&mut con, &key).await.len() == 1 }
    })
    .await;
    assert!(shrunk, "the stream was not trimmed down");
    stop.store(true, Ordering::SeqCst);
    trimmer.await.expect("trimmer");
    assert!(trims.load(Ordering::SeqCst) > 10, "the trimmer hardly ran");
    assert!(
        checked.load(Ordering::SeqCst) > 0,
        "no pending entry was ever checked"
    );
    assert_eq!(
        missing.load(Ordering::SeqCst),
        0,
        "a pending entry was missing from the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_reap_trim_by_their_flags() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let requester = client.requester(service);
    let key = client.keys(service).requests().to_owned();
    let mut con = redis_con(&server).await;

    // A responder that does not trim; then `reap --once` trims by its flags.
    let serve = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &server.url(),
                "--service",
                service,
                "serve",
                "--no-trim",
            ])
            .stderr(Stdio::null()),
    );
    for i in 0..10 {
        let _: serde_json::Value = requester
            .request(&format!("e{i}"), "echo", &i, LONG)
            .await
            .expect("reply");
    }
    let out = run_cli(
        &server,
        service,
        &["--json", "reap", "--once", "--retain-max-len", "3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["trimmed"], 7);
    assert_eq!(entry_ids(&mut con, &key).await.len(), 3);
    drop(serve);

    // A responder whose reaper trims to 2 entries every 50 ms.
    let _serve = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &server.url(),
                "--service",
                service,
                "serve",
                "--visibility-timeout",
                "400",
            ])
            .args([
                "--retain-max-len",
                "2",
                "--retain-max-age",
                "off",
                "--trim-interval",
                "0.05",
            ])
            .stderr(Stdio::null()),
    );
    for i in 10..20 {
        let _: serde_json::Value = requester
            .request(&format!("e{i}"), "echo", &i, LONG)
            .await
            .expect("reply");
    }
    let trimmed = wait_until(WAIT, || {
        let mut con = con.clone();
        let key = key.clone();
        async move { entry_ids(&mut con, &key).await.len() == 2 }
    })
    .await;
    assert!(trimmed, "serve did not trim to 2 entries");
    let bad = run_cli(
        &server,
        service,
        &["reap", "--once", "--no-trim", "--retain-max-len", "1"],
    );
    assert!(
        !bad.status.success(),
        "--no-trim conflicts with a policy flag"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_replies_expire() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::with_client(|builder| {
        builder
            .record_retention(Duration::from_millis(500))
            .reply_ttl(Duration::from_millis(500))
    });
    let service = service.as_str();
    let requester = client.requester(service);
    let keys = client.keys(service);
    let _responder = client
        .responder(service)
        .handler("echo", |_ctx: RequestContext, v: i64| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start responder");

    let started = std::time::Instant::now();
    let v: i64 = requester
        .request("short", "echo", &5, Duration::from_secs(1))
        .await
        .expect("reply");
    assert_eq!(v, 5);
    assert_eq!(
        requester.call_info("short").await.expect("record").func_key,
        "echo"
    );
    assert_eq!(
        requester.stored_reply::<i64>("short").await.expect("read"),
        Some(5)
    );
    let record_ttl: i64 = server
        .cli(&["PTTL", &keys.record("short")])
        .parse()
        .expect("PTTL");
    // Set when the request was added (after `started`) to the deadline plus the retention: 1.5 s then, less only
    // by the time gone since.
    let since_start = started.elapsed().as_millis() as i64;
    assert!(
        (1500 - since_start..=1500).contains(&record_ttl),
        "record TTL {record_ttl} ms, {since_start} ms after the request began: timeout 1 s + retention 0.5 s"
    );
    let reply_ttl: i64 = server
        .cli(&["PTTL", &keys.reply("short")])
        .parse()
        .expect("PTTL");
    assert!((1..=500).contains(&reply_ttl), "reply TTL {reply_ttl} ms");
    let gone = wait_until(Duration::from_secs(10), || {
        let requester = requester.clone();
        async move {
            let info = requester.call_info("short").await;
            let reply = requester.stored_reply::<i64>("short").await;
            matches!(info, Err(e) if e.kind() == ErrorKind::NotFound) && matches!(reply, Ok(None))
        }
    })
    .await;
    assert!(gone, "record and reply should have expired");

    // The same through the binary's global flags: the requester sets the record TTL, the responder the reply TTL.
    let _serve = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &server.url(),
                "--service",
                "ttlcli",
                "--reply-ttl",
                "0.4",
                "serve",
            ])
            .stderr(Stdio::null()),
    );
    let out = run_cli(
        &server,
        "ttlcli",
        &[
            "--record-retention",
            "0.3",
            "call",
            "echo",
            "7",
            "--id",
            "cli-1",
            "--timeout",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_keys = client.keys("ttlcli");
    let record_ttl: i64 = server
        .cli(&["PTTL", &cli_keys.record("cli-1")])
        .parse()
        .expect("PTTL");
    assert!(
        (1..=2300).contains(&record_ttl),
        "record TTL {record_ttl} ms"
    );
    let reply_ttl: i64 = server
        .cli(&["PTTL", &cli_keys.reply("cli-1")])
        .parse()
        .expect("PTTL");
    assert!((1..=400).contains(&reply_ttl), "reply TTL {reply_ttl} ms");
    assert!(
        run_cli(&server, "ttlcli", &["info", "cli-1"])
            .status
            .success()
    );
    let gone = wait_until(Duration::from_secs(10), || async {
        run_cli(&server, "ttlcli", &["info", "cli-1"]).status.code() == Some(5)
    })
    .await;
    assert!(
        gone,
        "`redcall info` should report not found (exit 5) once the record expired"
    );
    assert_eq!(server.cli(&["EXISTS", &cli_keys.reply("cli-1")]), "0");
}

/// Memory of N answered requests, per key kind, for sizing retention (`docs/operations.md`). Run with
/// `cargo test --release --test retention -- --ignored --nocapture measure_memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test; prints numbers"]
async fn measure_memory_per_request() {
    const N: usize = 10_000;
    for note_len in [60usize, 1000] {
        let server = RedisServer::start();
        let client = Client::open(&server.url()).expect("client");
        let service = "mem";
        let requester = client.requester(service);
        let admin = client.admin(service);
        let keys = client.keys(service);
        let _responder = client
            .responder(service)
            .handler("echo", |_ctx: RequestContext, v: serde_json::Value| async move {
                Ok::<_, HandlerError>(v)
            })
            .start()
            .await
            .expect("start responder");
        let used = || -> u64 {
            let info = server.cli(&["INFO", "memory"]);
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("used_memory")
        };
        let params = |i: usize| serde_json::json!({"order": i, "items": [1, 2, 3], "note": "x".repeat(note_len)});
        let before = used();
        for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
            let calls = chunk.iter().map(|i| {
                let requester = requester.clone();
                let p = params(*i);
                async move {
                    let _: serde_json::Value = requester
                        .request(&format!("m{i:06}"), "echo", &p, LONG)
                        .await
                        .expect("reply");
                }
            });
            join_all(calls).await;
        }
        let after = used();
        let usage = |key: &str| -> u64 {
            server
                .cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
                .parse()
                .unwrap_or(0)
        };
        let strlen = |key: &str| -> u64 { server.cli(&["STRLEN", key]).parse().unwrap_or(0) };
        let stream = usage(keys.requests());
        let record = usage(&keys.record("m000123"));
        let reply = usage(&keys.reply("m000123"));
        let envelope = strlen(&keys.record("m000123"));
        let reply_len = strlen(&keys.reply("m000123"));
        admin
            .trim(&RetentionPolicy::default().max_len(Some(0)))
            .await
            .expect("trim");
        let trimmed = used();
        println!(
            "params note {note_len} B: envelope {envelope} B, reply {reply_len} B | total {:.0} B/request \
             (used_memory +{} for {N}) | stream {:.0} B/entry (MEMORY USAGE {stream}; trim freed {}) | record key \
             {record} B | reply key {reply} B",
            (after - before) as f64 / N as f64,
            after - before,
            stream as f64 / N as f64,
            after.saturating_sub(trimmed),
        );
    }
}

/// A trim interval shorter than the reap interval is honoured: the responder's reaper wakes for trims too, instead
/// of trimming only on its (here 7.5 s) reap ticks.
#[tokio::test]
async fn trim_interval_shorter_than_the_reap_interval_is_honoured() {
    const REQUESTS: u64 = 50;
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let _responder = client
        .responder(service)
        .retain_max_age(Duration::from_millis(200))
        .trim_interval(Duration::from_millis(100))
        .handler("fast", |_ctx: RequestContext, n: u64| async move {
            Ok::<_, HandlerError>(n)
        })
        .start()
        .await
        .expect("responder");
    let requester = client.requester(service);
    let replies = join_all((0..REQUESTS).map(|n| {
        let requester = requester.clone();
        async move { requester.call::<_, u64>("fast", &n, LONG).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.is_ok()), "{replies:?}");

    let key = requester.keys().requests().to_owned();
    let mut con = redis_con(&server).await;
    // The default visibility timeout (30 s) makes the reap interval 7.5 s; trims must come far sooner.
    let trimmed = wait_until(Duration::from_secs(3), || {
        let (mut con, key) = (con.clone(), key.clone());
        // The last delivered entry is the safe bound, which the trim keeps.
        async move { con.xlen::<_, u64>(&key).await.is_ok_and(|len| len <= 1) }
    })
    .await;
    let left: u64 = con.xlen(&key).await.expect("xlen");
    assert!(
        trimmed,
        "{left} of {REQUESTS} entries still in the stream after 3 s"
    );
}
