//! The reaper's housekeeping: dead consumers are removed, entries deleted while pending are dropped, and exhausted
//! entries are dead-lettered by a standalone reaper.
//!
//! DESIGN 8 (the reaper, in a responder or standalone: claims idle entries, copes with entries deleted meanwhile,
//! removes dead consumers that hold nothing), 5 (past `max_deliveries` an entry is dead-lettered and the requester
//! told), 6 (answered once: an exhausted entry with a stored reply is answered from it, not dead-lettered).

mod common;

use std::time::Duration;

use common::{RedisServer, TestEnv, pending_count, run_cli, wait_until};
use redcall::{ErrorKind, Reaper, ResponderSettings};
use serde_json::{Value, json};

const GROUP: &str = "workers";

fn settings(vt_ms: u64) -> ResponderSettings {
    let mut settings = ResponderSettings::default();
    settings.consumer = "reaper-under-test".into();
    settings.visibility_timeout = Duration::from_millis(vt_ms);
    settings.dead_consumer_idle = Duration::from_millis(300);
    settings.max_deliveries = 2;
    // Passes are driven by the test.
    settings.reap_interval = Some(Duration::from_secs(3600));
    settings
}

/// Reads the next new entry of the requests stream as consumer `consumer`, the way a responder that then dies
/// would, leaving it pending.
fn read_as(server: &RedisServer, stream: &str, consumer: &str) {
    let out = server.cli(&[
        "XREADGROUP",
        "GROUP",
        GROUP,
        consumer,
        "COUNT",
        "1",
        "STREAMS",
        stream,
        ">",
    ]);
    assert!(!out.trim().is_empty(), "nothing was read as {consumer}");
}

fn consumers(server: &RedisServer, stream: &str) -> String {
    server.cli(&["XINFO", "CONSUMERS", stream, GROUP])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_consumers_holding_nothing_are_removed() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let stream = client.keys(service).requests().to_owned();
    let reaper = Reaper::start(client.clone(), service, settings(60_000))
        .await
        .expect("reaper");

    // "ghost" read nothing and holds nothing; "holder" holds a pending request.
    assert_eq!(
        server.cli(&["XGROUP", "CREATECONSUMER", &stream, GROUP, "ghost"]),
        "1"
    );
    let requester = client.requester(service);
    let _pending = requester
        .send("held-1", "echo", &json!(1), Duration::from_secs(30))
        .await
        .expect("send");
    read_as(&server, &stream, "holder");
    assert!(consumers(&server, &stream).contains("ghost"));

    tokio::time::sleep(Duration::from_millis(400)).await; // past dead_consumer_idle for both
    let report = reaper.pass().await.expect("pass");
    assert_eq!(report.consumers_removed, 1, "{report:?}");
    let left = consumers(&server, &stream);
    assert!(
        !left.contains("ghost"),
        "the idle empty consumer is gone: {left}"
    );
    assert!(
        left.contains("holder"),
        "a consumer holding work is kept: {left}"
    );
    reaper.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_deleted_while_pending_are_dropped_and_serving_goes_on() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let stream = client.keys(service).requests().to_owned();
    let requester = client.requester(service);
    // The group must exist before the dead consumer reads.
    server.cli(&["XGROUP", "CREATE", &stream, GROUP, "0", "MKSTREAM"]);
    let pending = requester
        .send(
            "deleted-1",
            "echo",
            &json!("gone"),
            Duration::from_millis(1500),
        )
        .await
        .expect("send");
    read_as(&server, &stream, "dies");
    let entry_id = server.cli(&["XRANGE", &stream, "-", "+"]);
    let entry_id = entry_id
        .lines()
        .next()
        .expect("one entry")
        .trim()
        .to_owned();
    assert_eq!(server.cli(&["XDEL", &stream, &entry_id]), "1");

    let responder = client
        .responder(service)
        .visibility_timeout(Duration::from_millis(200))
        .handler("echo", |_ctx, v: Value| async move {
            Ok::<_, redcall::HandlerError>(v)
        })
        .start()
        .await
        .expect("responder");
    let dropped = wait_until(Duration::from_secs(10), || {
        let server = &server;
        let stream = stream.clone();
        async move { pending_count(server, &stream, GROUP) == 0 }
    })
    .await;
    assert!(
        dropped,
        "the deleted entry left the pending list: {}",
        server.cli(&["XPENDING", &stream, GROUP])
    );
    let err = pending
        .wait::<Value>()
        .await
        .expect_err("its request is gone");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let reply: Value = requester
        .request(
            "after-delete",
            "echo",
            &json!("still serving"),
            Duration::from_secs(10),
        )
        .await
        .expect("serving goes on");
    assert_eq!(reply, json!("still serving"));
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_reaper_dead_letters_exhausted_entries_only() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let stream = client.keys(service).requests().to_owned();
    let requester = client.requester(service);
    let reaper = Reaper::start(client.clone(), service, settings(100))
        .await
        .expect("reaper");

    let exhausted = requester
        .send("exhausted-1", "echo", &json!(1), Duration::from_secs(30))
        .await
        .expect("send");
    let fresh = requester
        .send("fresh-1", "echo", &json!(2), Duration::from_secs(30))
        .await
        .expect("send");
    // Deliver the first twice (max_deliveries = 2) and the second once, each time to a consumer that dies.
    read_as(&server, &stream, "dies-1");
    let first = server.cli(&["XRANGE", &stream, "-", "+", "COUNT", "1"]);
    let first = first.lines().next().expect("entry").trim().to_owned();
    server.cli(&["XCLAIM", &stream, GROUP, "dies-2", "0", &first]);
    read_as(&server, &stream, "dies-3");
    tokio::time::sleep(Duration::from_millis(200)).await; // both idle past the visibility timeout

    let report = reaper.pass().await.expect("pass");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    let err = exhausted.wait::<Value>().await.expect_err("dead-lettered");
    assert_eq!(err.kind(), ErrorKind::DeadLettered, "{err}");
    assert_eq!(
        server.cli(&["XLEN", client.keys(service).dead_letters()]),
        "1"
    );
    // The entry delivered once stays pending for a responder with a handler.
    assert_eq!(pending_count(&server, &stream, GROUP), 1);
    drop(fresh);
    reaper.shutdown().await;
}

/// `redcall reap --once` reports what its one pass did: no loop of its own runs beside it and takes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reap_once_reports_what_its_pass_did() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let stream = client.keys(service).requests().to_owned();
    server.cli(&["XGROUP", "CREATE", &stream, GROUP, "0", "MKSTREAM"]);
    let requester = client.requester(service);
    let tired = requester
        .send("tired-1", "echo", &json!(1), Duration::from_secs(30))
        .await
        .expect("send");
    read_as(&server, &stream, "dies-1");
    tokio::time::sleep(Duration::from_millis(250)).await; // idle past the visibility timeout below

    let out = run_cli(
        &server,
        service,
        &[
            "--json",
            "reap",
            "--once",
            "--max-deliveries",
            "1",
            "--visibility-timeout",
            "100",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["dead_lettered"], 1, "{report}");
    let err = tired.wait::<Value>().await.expect_err("dead-lettered");
    assert_eq!(err.kind(), ErrorKind::DeadLettered, "{err}");
}

/// Answered once: an entry that used up its deliveries but was answered by hand meanwhile (a stored reply, the
/// entry not acknowledged) is answered from that reply and acknowledged by the reaper, not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_entry_with_a_stored_reply_is_not_dead_lettered() {
    let TestEnv {
        server,
        client,
        service,
    } = TestEnv::new();
    let service = service.as_str();
    let stream = client.keys(service).requests().to_owned();
    let requester = client.requester(service);
    let reaper = Reaper::connect(client.clone(), service, settings(100))
        .await
        .expect("reaper");
    let pending = requester
        .send("answered-1", "echo", &json!(1), Duration::from_secs(30))
        .await
        .expect("send");
    // Delivered twice (max_deliveries = 2), each time to a consumer that dies.
    read_as(&server, &stream, "dies-1");
    let entry = server.cli(&["XRANGE", &stream, "-", "+", "COUNT", "1"]);
    let entry = entry.lines().next().expect("entry").trim().to_owned();
    server.cli(&["XCLAIM", &stream, GROUP, "dies-2", "0", &entry]);
    requester
        .publish_reply("answered-1", &"by hand")
        .await
        .expect("reply by hand");
    let reply: String = pending.wait().await.expect("the reply by hand");
    assert_eq!(reply, "by hand");
    tokio::time::sleep(Duration::from_millis(200)).await; // idle past the visibility timeout

    let report = reaper.pass().await.expect("pass");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert_eq!(report.reclaimed, 1, "{report:?}");
    assert_eq!(
        server.cli(&["XLEN", client.keys(service).dead_letters()]),
        "0"
    );
    assert_eq!(pending_count(&server, &stream, GROUP), 0, "acknowledged");
}

/// A live responder with nothing to do is not removed as a dead consumer, however long its consumer looks idle:
/// on Redis before 7.2 an empty read does not refresh `idle` (so a responder on a quiet service looks dead after
/// `dead_consumer_idle`), and on any server a limit shorter than the block time (here 300 ms against 1 s) does the
/// same. Its heartbeat record says it is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_responder_is_not_removed_as_a_dead_consumer() {
    a_live_responder_is_kept(1).await;
}

/// The same on a partitioned service: the heartbeat record is service-wide (under the unpartitioned tag), not in
/// the partition whose consumers the reaper looks at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_responder_of_a_partitioned_service_is_not_removed_as_a_dead_consumer() {
    a_live_responder_is_kept(2).await;
}

async fn a_live_responder_is_kept(partitions: usize) {
    let env = TestEnv::with_client(|b| b.partitions(partitions));
    let layout = env.client.partitioned_keys(env.service(), partitions);
    let stream = layout.for_id("live-1").requests().to_owned();
    let _responder =
        env.responder()
            .handler(
                "echo",
                |_ctx: redcall::RequestContext, v: Value| async move {
                    Ok::<_, redcall::HandlerError>(v)
                },
            )
            .start()
            .await
            .expect("start responder");
    // One request read: its consumer exists (an empty read does not create one on Redis 7.0).
    let reply: Value = env
        .requester()
        .request("live-1", "echo", &json!(1), Duration::from_secs(10))
        .await
        .expect("answered");
    assert_eq!(reply, json!(1));
    let admin = env.admin();
    // Its first heartbeat record is written once it runs, not before `start` returns.
    let beating = wait_until(Duration::from_secs(10), || async {
        admin.responders().await.is_ok_and(|live| live.len() == 1)
    })
    .await;
    assert!(beating, "no heartbeat record");
    let live = admin.responders().await.expect("responders");
    let name = live[0].consumer.clone();
    // Idle past the reaper's limit, as Redis sees it.
    let idle = wait_until(Duration::from_secs(10), || async {
        admin
            .last_read()
            .await
            .ok()
            .and_then(|read| read.freshest)
            .is_some_and(|c| c.idle_ms > 400)
    })
    .await;
    assert!(idle, "the consumer never looked idle");
    let mut settings = settings(60_000);
    settings.partitions = Some(partitions);
    let reaper = Reaper::start(env.client.clone(), env.service(), settings)
        .await
        .expect("reaper");
    let report = reaper.pass().await.expect("pass");
    reaper.shutdown().await;
    assert_eq!(report.consumers_removed, 0, "{report:?}");
    let left = consumers(&env.server, &stream);
    assert!(left.contains(&name), "{name} was removed: {left}");
}
