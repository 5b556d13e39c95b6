//! W3C trace context across a real Redis: a request sent with a `traceparent` reaches its handler in the same
//! trace under a new span id; a requester without one starts a new trace; a malformed trace context in an
//! envelope is dropped, never an error; an envelope without one (an older writer) is handled as before; and the
//! CLI's `call --traceparent` puts that trace id in the responder's JSON log lines (`serve --log-format json`).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ChildGuard, RedisServer, TestEnv, redcall_bin, run_cli, wait_until};
use redcall::protocol::{self, FORMAT_VERSION, RequestEnvelope};
use redcall::{HandlerError, RequestContext, RequestOptions, Responder, TraceContext, TraceParent};
use serde_json::Value;
use tokio::sync::mpsc;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A responder whose `trace` handler reports the trace context it was given, and replies with its traceparent.
async fn tracing_responder(
    env: &TestEnv,
) -> (
    Responder,
    mpsc::UnboundedReceiver<(String, Option<TraceContext>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let responder = env
        .responder()
        .handler("trace", move |ctx: RequestContext, _: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((ctx.id.clone(), ctx.trace.clone()));
                Ok::<_, HandlerError>(ctx.traceparent().map(|t| t.to_string()))
            }
        })
        .start()
        .await
        .expect("responder");
    (responder, rx)
}

#[tokio::test]
async fn the_handler_joins_the_callers_trace_with_a_new_span() {
    let env = TestEnv::new();
    let (responder, mut seen) = tracing_responder(&env).await;
    let parent = TraceContext::parse(PARENT, Some("vendor=abc")).expect("valid");
    let options = RequestOptions::default().trace(parent.clone());
    let reply: Option<String> = env
        .requester()
        .send_with(
            Some("traced-1"),
            "trace",
            &(),
            Duration::from_secs(10),
            &options,
        )
        .await
        .expect("send")
        .wait()
        .await
        .expect("reply");
    let (id, trace) = seen.recv().await.expect("handler ran");
    assert_eq!(id, "traced-1");
    let trace = trace.expect("the handler sees a trace context");
    let tp = trace.traceparent;
    assert_eq!(tp.trace_id(), parent.traceparent.trace_id(), "same trace");
    assert_ne!(tp.span_id(), parent.traceparent.span_id(), "a new span");
    assert_eq!(trace.tracestate.as_deref(), Some("vendor=abc"));
    assert_eq!(reply, Some(tp.to_string()));

    // The record keeps what was sent: the requester's span, a child of the caller's, in the same trace.
    let info = env.requester().call_info("traced-1").await.expect("info");
    let sent = info.trace.expect("the record holds the trace context");
    assert_eq!(sent.traceparent.trace_id(), parent.traceparent.trace_id());
    assert_ne!(sent.traceparent.span_id(), parent.traceparent.span_id());
    assert_ne!(sent.traceparent.span_id(), tp.span_id());
    responder.shutdown().await.expect("shutdown");
}

/// `send_with` carries a trace and a delay together, with a caller's id and with a generated one: the request
/// waits out its delay, then its handler joins the caller's trace.
#[tokio::test]
async fn a_delayed_request_keeps_the_callers_trace() {
    let env = TestEnv::new();
    let (responder, mut seen) = tracing_responder(&env).await;
    let parent = TraceContext::parse(PARENT, None).expect("valid");
    let delay = Duration::from_millis(400);
    let options = RequestOptions::default().trace(parent.clone()).delay(delay);
    for id in [Some("traced-delayed-1"), None] {
        let sent = std::time::Instant::now();
        let pending = env
            .requester()
            .send_with(id, "trace", &(), Duration::from_secs(10), &options)
            .await
            .expect("send with a trace and a delay");
        let reply: Option<String> = pending.wait().await.expect("reply");
        assert!(
            sent.elapsed() >= delay,
            "{id:?}: answered before its delay, after {:?}",
            sent.elapsed()
        );
        let (seen_id, trace) = seen.recv().await.expect("handler ran");
        if let Some(id) = id {
            assert_eq!(seen_id, id);
        }
        let trace = trace.expect("the delayed request carries the trace context");
        assert_eq!(
            trace.traceparent.trace_id(),
            parent.traceparent.trace_id(),
            "{id:?}"
        );
        assert_eq!(reply, Some(trace.traceparent.to_string()));
    }
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_request_without_a_caller_trace_starts_a_new_one() {
    let env = TestEnv::new();
    let (responder, mut seen) = tracing_responder(&env).await;
    let _: Option<String> = env
        .requester()
        .call("trace", &(), Duration::from_secs(10))
        .await
        .expect("reply");
    let (id, trace) = seen.recv().await.expect("handler ran");
    let trace = trace.expect("a new trace");
    let info = env.requester().call_info(&id).await.expect("info");
    let sent = info.trace.expect("sent");
    assert_eq!(sent.traceparent.trace_id(), trace.traceparent.trace_id());
    assert!(sent.traceparent.is_sampled());
    responder.shutdown().await.expect("shutdown");
}

/// A request envelope as another writer makes it, with `trace` (MessagePack bytes of its value) appended.
fn envelope_with_trace(id: &str, trace: Option<&[u8]>) -> Vec<u8> {
    let now = common::now_ms();
    let mut bytes = protocol::encode(&RequestEnvelope {
        v: FORMAT_VERSION,
        id: id.to_owned(),
        func_key: "trace".to_owned(),
        params: vec![0xc0],
        deadline_ms: now + 60_000,
        created_ms: now,
        replay: None,
        trace: None,
    })
    .expect("encode");
    if let Some(trace) = trace {
        assert_eq!(bytes[0], 0x86, "a fixmap of 6 pairs");
        bytes[0] = 0x87;
        bytes.push(0xa5);
        bytes.extend_from_slice(b"trace");
        bytes.extend_from_slice(trace);
    }
    bytes
}

#[tokio::test]
async fn malformed_trace_contexts_are_dropped_and_missing_ones_are_fine() {
    let env = TestEnv::new();
    let (responder, mut seen) = tracing_responder(&env).await;
    let map = |pairs: &[(&str, &str)]| {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        rmp_serde::to_vec_named(&m).expect("encode")
    };
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no-trace", None),
        ("nil-trace", Some(vec![0xc0])),
        (
            "str-trace",
            Some(rmp_serde::to_vec(PARENT).expect("encode")),
        ),
        (
            "upper-hex",
            Some(map(&[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )])),
        ),
        (
            "zero-trace-id",
            Some(map(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )])),
        ),
        ("short", Some(map(&[("traceparent", "00-abc-01")]))),
        ("only-state", Some(map(&[("tracestate", "a=b")]))),
        (
            "int-parent",
            Some(vec![
                0x81, 0xab, b't', b'r', b'a', b'c', b'e', b'p', b'a', b'r', b'e', b'n', b't', 0x07,
            ]),
        ),
    ];
    let mut con = env.redis().await;
    let stream = env.requester().keys().requests().to_owned();
    for (id, trace) in &cases {
        let env_bytes = envelope_with_trace(id, trace.as_deref());
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("id")
            .arg(*id)
            .arg("env")
            .arg(env_bytes)
            .query_async(&mut con)
            .await
            .expect("XADD");
    }
    let mut got = HashMap::new();
    for _ in &cases {
        let (id, trace) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .expect("handled in time")
            .expect("handler ran");
        got.insert(id, trace);
    }
    for (id, _) in &cases {
        assert_eq!(
            got.get(*id),
            Some(&None),
            "{id}: handled, without a trace context"
        );
    }
    // And a well-formed one in a hand-made envelope is taken.
    let good = envelope_with_trace("good", Some(&map(&[("traceparent", PARENT)])));
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("id")
        .arg("good")
        .arg("env")
        .arg(good)
        .query_async(&mut con)
        .await
        .expect("XADD");
    let (id, trace) = seen.recv().await.expect("handler ran");
    assert_eq!(id, "good");
    let parent = TraceParent::parse(PARENT).expect("valid");
    assert_eq!(
        trace.expect("taken").traceparent.trace_id(),
        parent.trace_id()
    );
    assert_eq!(
        env.admin()
            .dead_letters(None, 100)
            .await
            .map(|d| d.len())
            .unwrap_or(0),
        0,
        "nothing dead-lettered"
    );
    responder.shutdown().await.expect("shutdown");
}

/// Starts `redcall serve` with JSON logs and the request span's level on; its stderr in `<dir>/<name>.log`.
fn serve_json(server: &RedisServer, name: &str) -> ChildGuard {
    let log = std::fs::File::create(server.dir().join(format!("{name}.log"))).expect("log file");
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", name])
        .args(["--log-format", "json", "serve", "--consumer", name])
        .env("RUST_LOG", "info,redcall::responder::dispatch=debug")
        .env_remove("REDCALL_LOG_FORMAT")
        .env_remove("TRACEPARENT")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_traceparent_shows_in_the_responders_json_log() {
    let server = RedisServer::start();
    let service = "tracelogs";
    let _serve = serve_json(&server, service);
    let called = run_cli(
        &server,
        service,
        &[
            "call",
            "echo",
            "1",
            "--id",
            "cli-traced-1",
            "--timeout",
            "30s",
            "--traceparent",
            PARENT,
        ],
    );
    assert!(
        called.status.success(),
        "{}",
        String::from_utf8_lossy(&called.stderr)
    );
    let log =
        || std::fs::read_to_string(server.dir().join(format!("{service}.log"))).unwrap_or_default();
    let traced = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["id"] == "cli-traced-1" && l["message"] == "handling")
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            traced(&log()).is_some()
        })
        .await,
        "no line for the request: {}",
        log()
    );
    let line = traced(&log()).expect("line");
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(line["messaging.system"], "redcall", "{line}");
    assert_eq!(line["messaging.destination.name"], service, "{line}");
    assert_eq!(line["messaging.consumer.group.name"], "workers", "{line}");
    assert_eq!(
        line["messaging.message.conversation_id"], "cli-traced-1",
        "{line}"
    );
    // The parent is the requester's `send` span (a child of the caller's), not the caller's span itself.
    let parent = line["parent_span_id"].as_str().expect("parent_span_id");
    assert_eq!(parent.len(), 16);
    assert_ne!(parent, "00f067aa0ba902b7");
    assert_ne!(line["span_id"], line["parent_span_id"]);

    // `info` and `status` show the trace id.
    let info = run_cli(&server, service, &["--json", "info", "cli-traced-1"]);
    let info: Value = serde_json::from_slice(&info.stdout).expect("info JSON");
    assert_eq!(info["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(info["traceparent"].as_str().map(str::len), Some(55));
    let status = run_cli(&server, service, &["status", "cli-traced-1"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("trace       4bf92f3577b34da6a3ce929d0e0e4736"),
        "{text}"
    );
}

#[test]
fn a_malformed_traceparent_is_a_usage_error() {
    let out = Command::new(redcall_bin())
        .args([
            "--url",
            "redis://127.0.0.1:1",
            "call",
            "echo",
            "--traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ])
        .env_remove("TRACEPARENT")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid traceparent"), "{err}");
}
