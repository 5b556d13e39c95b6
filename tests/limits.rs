//! Limits a caller can reach with any value: every duration the API takes (0, huge, `Duration::MAX`) gives a
//! clear error or is clamped, never a panic or an overflow sent to Redis. DESIGN 1 (a request with its timeout),
//! 4 (deadlines), 10 (retention) and the builders' settings.

mod common;

use std::time::Duration;

use common::RedisServer;
use redcall::admin::ReplayOptions;
use redcall::{
    Client, ErrorKind, HandlerError, RequestContext, ResponderSettings, RetentionPolicy,
};

/// Longest redcall works with (one year); longer durations are clamped to it.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Long enough never to fire on a healthy machine.
const GENEROUS: Duration = Duration::from_secs(20);

fn ttl_ms(server: &RedisServer, key: &str) -> i64 {
    server.cli(&["PTTL", key]).trim().parse().expect("PTTL")
}

#[tokio::test]
async fn a_request_with_duration_max_is_clamped_and_answered() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let responder = client
        .responder("limits")
        .handler("echo", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n)
        })
        .start()
        .await
        .expect("responder");
    let requester = client.requester("limits");

    // `send` with the longest timeout there is: stored, answered, and its deadline is a year away, not wrapped.
    let pending = requester
        .send("forever", "echo", &7, Duration::MAX)
        .await
        .expect("a Duration::MAX timeout is clamped, not a panic");
    let info = requester.call_info("forever").await.expect("call info");
    let ahead = info
        .deadline
        .duration_since(info.created)
        .expect("deadline after creation");
    assert!(
        ahead >= YEAR - Duration::from_secs(1) && ahead <= YEAR,
        "deadline {ahead:?} after creation, expected one year"
    );
    let record_ttl = ttl_ms(&server, &requester.keys().record("forever"));
    assert!(
        record_ttl > YEAR.as_millis() as i64,
        "record TTL {record_ttl} ms: a year plus the retention"
    );
    assert_eq!(pending.wait::<i64>().await.expect("reply"), 7);

    // The generated-id path and the blocking form take it too.
    let n: i64 = requester
        .call("echo", &8, Duration::MAX)
        .await
        .expect("call");
    assert_eq!(n, 8);
    let n: i64 = requester
        .request("forever-2", "echo", &9, Duration::MAX)
        .await
        .expect("request");
    assert_eq!(n, 9);
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_zero_timeout_is_refused_before_anything_is_sent() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("limits");
    let err = requester
        .send("never", "echo", &1, Duration::ZERO)
        .await
        .expect_err("a zero timeout cannot be met");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("never"), "names the id: {err}");
    let err = requester
        .call::<_, i64>("echo", &1, Duration::ZERO)
        .await
        .expect_err("a zero timeout cannot be met");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        server
            .cli(&["EXISTS", &requester.keys().record("never")])
            .trim(),
        "0",
        "nothing was stored"
    );
    assert_eq!(
        server.cli(&["EXISTS", requester.keys().requests()]).trim(),
        "0",
        "nothing was queued"
    );
}

#[tokio::test]
async fn client_and_responder_settings_of_duration_max_are_clamped() {
    let server = RedisServer::start();
    let client = Client::builder(&server.url())
        .record_retention(Duration::MAX)
        .reply_ttl(Duration::MAX)
        .command_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .build()
        .expect("huge client settings are clamped");
    let responder = client
        .responder("huge")
        .visibility_timeout(Duration::MAX)
        .grace(Duration::MAX)
        .retain_max_age(Duration::MAX)
        .trim_interval(Duration::MAX)
        .handler("echo", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n)
        })
        .start()
        .await
        .expect("huge responder settings are clamped");
    let requester = client.requester("huge");
    let n: i64 = requester
        .request("r1", "echo", &5, GENEROUS)
        .await
        .expect("round trip");
    assert_eq!(n, 5);
    // TTLs Redis accepted: a year, not a wrapped or refused number.
    let reply_ttl = ttl_ms(&server, &requester.keys().reply("r1"));
    assert!(
        reply_ttl > (YEAR - Duration::from_secs(60)).as_millis() as i64
            && reply_ttl <= YEAR.as_millis() as i64,
        "reply TTL {reply_ttl} ms"
    );
    let record_ttl = ttl_ms(&server, &requester.keys().record("r1"));
    assert!(
        record_ttl > YEAR.as_millis() as i64,
        "record TTL {record_ttl} ms"
    );
    responder.shutdown().await.expect("shutdown");

    let mut settings = ResponderSettings::default();
    settings.visibility_timeout = Duration::MAX;
    settings.reap_interval = Some(Duration::MAX);
    settings.dead_consumer_idle = Duration::MAX;
    settings.block = Duration::MAX;
    let reaper = redcall::Reaper::start(client.clone(), "huge", settings)
        .await
        .expect("a standalone reaper with huge settings starts");
    reaper.shutdown().await;

    let err = Client::builder(&server.url())
        .command_timeout(Duration::ZERO)
        .build()
        .expect_err("a zero command timeout fails every command");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn admin_durations_of_zero_and_duration_max() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let admin = client.admin("adm");
    let requester = client.requester("adm");
    let _pending = requester
        .send("old", "echo", &1, GENEROUS)
        .await
        .expect("send");

    // A retention policy of any age trims nothing it must not (no group has read the entry), and does not fail.
    let report = admin
        .trim(&RetentionPolicy::default().max_age(Some(Duration::MAX)))
        .await
        .expect("trim with the longest age");
    assert_eq!(report.trimmed, 0);
    let report = admin
        .trim(&RetentionPolicy::default().max_age(Some(Duration::ZERO)))
        .await
        .expect("trim with age zero");
    assert_eq!(report.trimmed, 0, "nothing delivered, nothing trimmed");

    // Range replay: a zero timeout is refused, Duration::MAX is clamped.
    let err = admin
        .replay_range(
            "-",
            "+",
            &ReplayOptions::default()
                .timeout(Duration::ZERO)
                .include_in_flight(true),
            |_| {},
        )
        .await
        .expect_err("a replay that would expire at once");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let report = admin
        .replay_range(
            "-",
            "+",
            &ReplayOptions::default()
                .timeout(Duration::MAX)
                .include_in_flight(true),
            |_| {},
        )
        .await
        .expect("replay with the longest timeout");
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    let info = requester.call_info("old").await.expect("call info");
    let ahead = info
        .deadline
        .duration_since(std::time::SystemTime::now())
        .expect("deadline ahead");
    assert!(
        ahead > YEAR - Duration::from_secs(60),
        "deadline {ahead:?} ahead"
    );
}
