//! Metrics (issue 15): `redcall serve --metrics-addr` serves Prometheus text whose counters match a known mix of
//! calls, and `/healthz` and `/readyz` tell whether the process runs and whether it can serve; and the library,
//! through the `metrics` facade with a recorder of the test's own, counts every responder outcome, delivery kind
//! and requester outcome with its exact labels.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{RedisServer, free_port, run_cli, spawn_serve, wait_until};

/// One plain HTTP/1.1 `GET` on loopback: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Polls `f` every 50 ms until it is true or `deadline` passes.
fn wait_for(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A sample of the Prometheus text format: metric name and its labels, sorted.
type Series = (String, BTreeMap<String, String>);

/// Parses the samples of a Prometheus text page (comments skipped).
fn parse(page: &str) -> Vec<(Series, f64)> {
    let mut samples = Vec::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        samples.push(((name.to_owned(), labels), value));
    }
    samples
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse(page).into_iter().find_map(|((n, l), v)| {
        let matches = n == name
            && labels
                .iter()
                .all(|(k, want)| l.get(*k).map(String::as_str) == Some(*want));
        matches.then_some(v)
    })
}

#[test]
fn scraped_counters_match_a_known_mix_of_calls_and_readiness_follows_redis() {
    let mut server = RedisServer::start();
    let service = "metered";
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _serve = spawn_serve(
        &server,
        service,
        "m1",
        &[],
        &[
            "--metrics-addr",
            &addr,
            "--max-deliveries",
            "1",
            "--visibility-timeout",
            "1s",
            "--heartbeat-interval",
            "200ms",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(20), || get(port, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "the endpoint never became ready"
    );
    assert_eq!(get(port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(get(port, "/nothing").map(|(s, _)| s), Some(404));

    let call = |func: &str| {
        run_cli(
            &server,
            service,
            &["call", func, r#"{"n":1}"#, "--timeout", "20s"],
        )
    };
    for _ in 0..2 {
        assert!(call("echo").status.success());
    }
    assert_eq!(
        call("fail").status.code(),
        Some(4),
        "fail is a handler error"
    );
    assert_eq!(
        call("panic").status.code(),
        Some(4),
        "panic ends dead-lettered"
    );
    assert_eq!(call("nosuch").status.code(), Some(4), "unknown function");

    let service_label = ("service", service);
    let handled = |page: &str, function: &str, outcome: &str| {
        value(
            page,
            "redcall_handled_total",
            &[service_label, ("function", function), ("outcome", outcome)],
        )
    };
    // The queue gauges are sampled every third heartbeat: wait until they show both dead letters.
    let mut page = String::new();
    let sampled = wait_for(Duration::from_secs(20), || {
        page = get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        value(&page, "redcall_dead_letter_stream_length", &[service_label]) == Some(2.0)
    });
    assert!(sampled, "dead-letter gauge never reached 2:\n{page}");
    assert_eq!(handled(&page, "echo", "ok"), Some(2.0), "{page}");
    assert_eq!(handled(&page, "echo", "error"), Some(0.0));
    assert_eq!(handled(&page, "fail", "error"), Some(1.0));
    assert_eq!(handled(&page, "panic", "panic"), Some(1.0));
    assert_eq!(handled(&page, "panic", "dead_lettered"), Some(1.0));
    assert_eq!(handled(&page, "_unknown", "dead_lettered"), Some(1.0));
    let dead = |reason: &str| {
        value(
            &page,
            "redcall_dead_letters_total",
            &[service_label, ("reason", reason)],
        )
    };
    assert_eq!(dead("max_deliveries_exceeded"), Some(1.0));
    assert_eq!(dead("unknown_function"), Some(1.0));
    let deliveries = |kind: &str| {
        value(
            &page,
            "redcall_deliveries_total",
            &[service_label, ("kind", kind)],
        )
    };
    assert_eq!(deliveries("first"), Some(5.0));
    assert_eq!(
        deliveries("redelivery"),
        Some(1.0),
        "the panicked entry came back"
    );
    assert_eq!(deliveries("claimed"), Some(0.0));
    let echo_runs = value(
        &page,
        "redcall_handler_duration_seconds_count",
        &[service_label, ("function", "echo")],
    );
    assert_eq!(echo_runs, Some(2.0));
    assert_eq!(
        value(&page, "redcall_stream_length", &[service_label]),
        Some(5.0)
    );
    let group = [service_label, ("group", "workers")];
    assert_eq!(value(&page, "redcall_pending", &group), Some(0.0));
    assert_eq!(value(&page, "redcall_lag", &group), Some(0.0));
    assert_eq!(
        value(&page, "redcall_oldest_pending_age_seconds", &group),
        Some(0.0)
    );
    assert_eq!(
        value(&page, "redcall_in_flight", &[service_label]),
        Some(0.0)
    );

    // Redis stops: not ready, but still healthy. Back: ready again.
    server.kill();
    assert!(
        wait_for(Duration::from_secs(10), || get(port, "/readyz")
            .is_some_and(|(s, _)| s == 503)),
        "readyz did not turn 503 without Redis"
    );
    assert_eq!(get(port, "/healthz").map(|(s, _)| s), Some(200));
    server.restart();
    assert!(
        wait_for(Duration::from_secs(20), || get(port, "/readyz")
            .is_some_and(|(s, _)| s == 200)),
        "readyz did not recover with Redis back"
    );
}

/// The library alone, through the `metrics` facade with a Prometheus recorder installed in the test process:
/// every responder outcome (`ok`, `error`, `retry`, `panic`, `expired`, `dead_lettered`, `answered_from_stored`),
/// every delivery kind (`first`, `redelivery`, `claimed`) and the requester's outcomes (`ok`, `error`, `timeout`,
/// `dead_lettered`, `duplicate`) come out with their exact counts and labels.
#[tokio::test]
async fn the_library_counts_every_outcome_through_the_facade() {
    use common::TestEnv;
    use redcall::{HandlerError, RequestContext, RequestOptions};
    use serde_json::Value;

    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the test's recorder");
    let env = TestEnv::new();
    let service = env.service().to_owned();
    let requester = env.requester();
    let long = Duration::from_secs(20);
    let mut con = env.redis().await;
    let stream = requester.keys().requests().to_owned();

    // An entry another consumer read and never answered (it died): the responder's reaper claims it.
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", stream.as_str(), "workers", "$", "MKSTREAM"][..])
        .query_async(&mut con)
        .await
        .expect("XGROUP CREATE");
    let claimed = requester
        .send("m-claimed", "echo", &1, long)
        .await
        .expect("send");
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(
            &[
                "GROUP",
                "workers",
                "ghost",
                "COUNT",
                "1",
                "STREAMS",
                stream.as_str(),
                ">",
            ][..],
        )
        .query_async(&mut con)
        .await
        .expect("XREADGROUP");
    // Nobody serves yet: a timeout for the requester, and the responder later finds the request expired.
    let err = requester
        .call::<_, Value>("echo", &2, Duration::from_millis(300))
        .await
        .expect_err("nobody serves yet");
    assert_eq!(err.kind(), redcall::ErrorKind::Timeout, "{err}");
    // Answered by hand before any responder: the responder answers it from the stored reply.
    let by_hand = requester
        .send("m-by-hand", "echo", &3, long)
        .await
        .expect("send");
    requester
        .publish_reply("m-by-hand", &3)
        .await
        .expect("reply by hand");
    assert_eq!(by_hand.wait::<i64>().await.expect("reply"), 3);

    let responder = env
        .other_client()
        .responder(&service)
        .visibility_timeout(Duration::from_millis(500))
        .max_deliveries(2)
        .heartbeat_interval(Duration::from_millis(100))
        .handler("echo", |_: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .handler("fail", |_: RequestContext, _: Value| async move {
            Err::<(), _>(HandlerError::fail("broken", "it broke"))
        })
        .handler("retry", |ctx: RequestContext, _: Value| async move {
            if ctx.delivery == 1 {
                Err(HandlerError::retry_after(
                    "not yet",
                    Duration::from_millis(100),
                ))
            } else {
                Ok(())
            }
        })
        .handler("panic", |_: RequestContext, _: Value| async move {
            if true {
                panic!("the handler panics");
            }
            Ok::<(), HandlerError>(())
        })
        .start()
        .await
        .expect("responder");
    assert_eq!(
        claimed.wait::<i64>().await.expect("claimed and answered"),
        1
    );
    for n in 0..2 {
        let v: i64 = requester.call("echo", &n, long).await.expect("echo");
        assert_eq!(v, n);
    }
    let dup = requester
        .send("m-dup", "echo", &4, long)
        .await
        .expect("send");
    let again = requester
        .send_with(Some("m-dup"), "echo", &4, long, &RequestOptions::default())
        .await
        .expect_err("the id is in flight");
    assert_eq!(again.kind(), redcall::ErrorKind::DuplicateId, "{again}");
    assert_eq!(dup.wait::<i64>().await.expect("reply"), 4);
    for (func, want) in [
        ("fail", Err(redcall::ErrorKind::Handler)),
        ("retry", Ok(())),
        ("panic", Err(redcall::ErrorKind::DeadLettered)),
        ("nosuch", Err(redcall::ErrorKind::UnknownFunction)),
    ] {
        let got = requester
            .call::<_, Value>(func, &0, long)
            .await
            .map(|_| ())
            .map_err(|e| e.kind());
        assert_eq!(got, want, "{func}");
    }

    // The expired request's entry is handled in the background: wait for it, and for the queue gauges (sampled
    // every third heartbeat) to show both dead letters.
    let service_label = ("service", service.as_str());
    let mut page = String::new();
    let settled = wait_until(Duration::from_secs(20), || {
        page = handle.render();
        let expired = value(
            &page,
            "redcall_handled_total",
            &[service_label, ("function", "echo"), ("outcome", "expired")],
        );
        let dead = value(&page, "redcall_dead_letter_stream_length", &[service_label]);
        std::future::ready(expired == Some(1.0) && dead == Some(2.0))
    })
    .await;
    assert!(settled, "{page}");
    let handled = |function: &str, outcome: &str| {
        value(
            &page,
            "redcall_handled_total",
            &[service_label, ("function", function), ("outcome", outcome)],
        )
    };
    for (function, outcome, count) in [
        ("echo", "ok", 4.0),
        ("echo", "expired", 1.0),
        ("echo", "answered_from_stored", 1.0),
        ("echo", "error", 0.0),
        ("fail", "error", 1.0),
        ("retry", "retry", 1.0),
        ("retry", "ok", 1.0),
        ("panic", "panic", 2.0),
        ("panic", "dead_lettered", 1.0),
        ("_unknown", "dead_lettered", 1.0),
    ] {
        assert_eq!(
            handled(function, outcome),
            Some(count),
            "{function} {outcome}\n{page}"
        );
    }
    let labelled =
        |name: &str, key: &str, label: &str| value(&page, name, &[service_label, (key, label)]);
    assert_eq!(
        labelled("redcall_deliveries_total", "kind", "claimed"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        labelled("redcall_deliveries_total", "kind", "first"),
        Some(9.0),
        "{page}"
    );
    assert_eq!(
        labelled("redcall_deliveries_total", "kind", "redelivery"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        labelled(
            "redcall_dead_letters_total",
            "reason",
            "max_deliveries_exceeded"
        ),
        Some(1.0)
    );
    assert_eq!(
        labelled("redcall_dead_letters_total", "reason", "unknown_function"),
        Some(1.0)
    );
    assert_eq!(
        labelled("redcall_handler_duration_seconds_count", "function", "echo"),
        Some(4.0)
    );
    assert_eq!(
        labelled("redcall_in_flight", "service", &service),
        Some(0.0)
    );
    let group = [service_label, ("group", "workers")];
    assert_eq!(value(&page, "redcall_pending", &group), Some(0.0), "{page}");
    assert_eq!(value(&page, "redcall_lag", &group), Some(0.0), "{page}");
    assert_eq!(
        value(&page, "redcall_oldest_pending_age_seconds", &group),
        Some(0.0)
    );
    assert!(
        value(&page, "redcall_stream_length", &[service_label]).is_some_and(|n| n >= 10.0),
        "{page}"
    );

    let requests = |function: &str, outcome: &str| {
        value(
            &page,
            "redcall_requests_total",
            &[service_label, ("function", function), ("outcome", outcome)],
        )
    };
    for (function, outcome, count) in [
        ("echo", "ok", 5.0),
        ("echo", "timeout", 1.0),
        ("echo", "duplicate", 1.0),
        ("echo", "error", 0.0),
        ("fail", "error", 1.0),
        ("retry", "ok", 1.0),
        ("panic", "dead_lettered", 1.0),
        ("nosuch", "error", 1.0),
    ] {
        assert_eq!(
            requests(function, outcome),
            Some(count),
            "{function} {outcome}\n{page}"
        );
    }
    assert_eq!(
        labelled("redcall_request_duration_seconds_count", "function", "fail"),
        Some(1.0),
        "{page}"
    );
    responder.shutdown().await.expect("shutdown");
}
