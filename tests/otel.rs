//! The `otel` feature (run with `cargo test --features otel --test otel`): the requester's `send` span and the
//! responder's `process` span are real OpenTelemetry spans, the responder's a child of the requester's across a
//! real Redis (through the envelope's trace context), with the messaging attributes; and the binary exports them
//! over OTLP/HTTP to `--otlp-endpoint`.
//!
//! The in-process tests install one global subscriber with `tracing-opentelemetry` and an SDK tracer provider
//! whose simple processor hands every ended span to [`Collected`], an in-memory exporter (what the SDK's
//! `InMemorySpanExporter` does; the SDK's `testing` feature that has it would be built into every `cargo test`
//! run as a dev-dependency, for these tests alone). Requester and responder use separate [`redcall::Client`]s, as
//! two processes would; each test finds its own spans by request id.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, TestEnv, redcall_bin, wait_until};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use redcall::{HandlerError, RequestContext, RequestOptions, TraceContext};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// Every span ended in this test process, in the order they ended.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

impl Collected {
    /// The ended span whose `messaging.message.conversation_id` is `id` and whose name starts with `prefix`.
    fn find(&self, prefix: &str, id: &str) -> Option<SpanData> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .find(|s| {
                s.name.starts_with(prefix) && attr(s, "messaging.message.conversation_id") == id
            })
            .cloned()
    }
}

/// The global subscriber with the OpenTelemetry layer, installed once for the whole test binary.
fn spans() -> &'static Collected {
    static COLLECTED: OnceLock<Collected> = OnceLock::new();
    COLLECTED.get_or_init(|| {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("redcall-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber");
        collected
    })
}

/// A span attribute as text ("" when absent).
fn attr(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_default()
}

/// Waits until the `send` and `process` spans of request `id` have both ended.
async fn both_spans(collected: &Collected, id: &str) -> (SpanData, SpanData) {
    let ended = wait_until(Duration::from_secs(10), || async {
        collected.find("send ", id).is_some() && collected.find("process ", id).is_some()
    })
    .await;
    let send = collected.find("send ", id);
    let process = collected.find("process ", id);
    assert!(ended, "spans of {id}: send {send:?}, process {process:?}");
    (send.expect("send"), process.expect("process"))
}

/// Checks the messaging attributes both spans carry, and each side's own.
fn assert_messaging(send: &SpanData, process: &SpanData, service: &str, id: &str) {
    for (span, op) in [(send, "send"), (process, "process")] {
        assert_eq!(span.name, format!("{op} {service}"));
        assert_eq!(attr(span, "messaging.system"), "redcall", "{span:?}");
        assert_eq!(attr(span, "messaging.operation.name"), op, "{span:?}");
        assert_eq!(attr(span, "messaging.operation.type"), op, "{span:?}");
        assert_eq!(
            attr(span, "messaging.destination.name"),
            service,
            "{span:?}"
        );
        assert_eq!(
            attr(span, "messaging.message.conversation_id"),
            id,
            "{span:?}"
        );
    }
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(attr(process, "messaging.consumer.group.name"), "workers");
    assert_eq!(attr(send, "messaging.consumer.group.name"), "");
}

/// A responder on a client of its own (another process, as far as Redis can tell): `ok` replies with the trace
/// context its handler was given, `fail` fails.
async fn responder(env: &TestEnv) -> (redcall::Responder, mpsc::UnboundedReceiver<TraceContext>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let responder = env
        .other_client()
        .responder(env.service())
        .handler("ok", move |ctx: RequestContext, _: Value| {
            let tx = tx.clone();
            async move {
                if let Some(trace) = ctx.trace.clone() {
                    let _ = tx.send(trace);
                }
                Ok::<_, HandlerError>(())
            }
        })
        .handler("fail", |_: RequestContext, _: Value| async move {
            Err::<(), _>(HandlerError::fail("broken", "it broke"))
        })
        .start()
        .await
        .expect("responder");
    (responder, rx)
}

#[tokio::test]
async fn the_responders_span_is_a_child_of_the_requesters_across_redis() {
    let collected = spans();
    let env = TestEnv::new();
    let (responder, mut handler_saw) = responder(&env).await;
    let service = env.service().to_owned();
    let parent = TraceContext::parse(PARENT, Some("vendor=abc")).expect("valid");
    let id = "otel-child-1";
    env.requester()
        .send_with(
            Some(id),
            "ok",
            &(),
            Duration::from_secs(10),
            &RequestOptions::default().trace(parent),
        )
        .await
        .expect("send")
        .wait::<()>()
        .await
        .expect("reply");
    let (send, process) = both_spans(collected, id).await;
    let trace = TraceId::from_hex(PARENT_TRACE).expect("hex");

    // The requester's span: a child of the caller's (remote) span, in the caller's trace.
    assert_eq!(send.span_context.trace_id(), trace);
    assert_eq!(
        send.parent_span_id,
        SpanId::from_hex(PARENT_SPAN).expect("hex")
    );
    assert!(send.parent_span_is_remote);
    // The responder's span: a child of the requester's, across Redis, in the same trace.
    assert_eq!(process.span_context.trace_id(), trace);
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert!(process.parent_span_is_remote);
    assert_ne!(process.span_context.span_id(), send.span_context.span_id());
    assert_eq!(send.span_context.trace_state().header(), "vendor=abc");
    assert_messaging(&send, &process, &service, id);
    for span in [&send, &process] {
        assert_eq!(
            span.status,
            Status::Unset,
            "success leaves the status unset"
        );
        assert_eq!(attr(span, "error.type"), "");
        // The log fields name the same ids as the exported span.
        assert_eq!(attr(span, "trace_id"), PARENT_TRACE);
        assert_eq!(
            attr(span, "span_id"),
            span.span_context.span_id().to_string()
        );
    }

    // What travelled: the record holds the `send` span's context, and the handler saw the `process` span's.
    let sent = env
        .requester()
        .call_info(id)
        .await
        .expect("info")
        .trace
        .expect("trace");
    assert_eq!(
        sent.traceparent.span_id().to_bytes(),
        send.span_context.span_id().to_bytes()
    );
    let seen = handler_saw
        .recv()
        .await
        .expect("the handler saw a trace context");
    assert_eq!(seen.traceparent.trace_id().to_string(), PARENT_TRACE);
    assert_eq!(
        seen.traceparent.span_id().to_bytes(),
        process.span_context.span_id().to_bytes()
    );
    assert_eq!(seen.tracestate.as_deref(), Some("vendor=abc"));
    responder.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn failures_set_error_type_on_both_sides() {
    let collected = spans();
    let env = TestEnv::new();
    let (responder, _) = responder(&env).await;
    let service = env.service().to_owned();
    let requester = env.requester();
    // (request id, function key, the requester's error.type, the responder's error.type)
    let cases = [
        ("otel-fail-1", "fail", "handler", "error"),
        (
            "otel-unknown-1",
            "nope",
            "unknown_function",
            "unknown_function",
        ),
    ];
    for (id, func, sent_error, processed_error) in cases {
        let err = requester
            .send_with(
                Some(id),
                func,
                &(),
                Duration::from_secs(10),
                &RequestOptions::default(),
            )
            .await
            .expect("send")
            .wait::<()>()
            .await
            .expect_err("a failure");
        assert_eq!(err.kind().as_str(), sent_error, "{err}");
        let (send, process) = both_spans(collected, id).await;
        // No caller trace: the requester's span starts a trace, the responder's is its child.
        assert_eq!(send.parent_span_id, SpanId::INVALID, "{id}: a root span");
        assert_eq!(
            process.span_context.trace_id(),
            send.span_context.trace_id(),
            "{id}"
        );
        assert_eq!(process.parent_span_id, send.span_context.span_id(), "{id}");
        assert_messaging(&send, &process, &service, id);
        assert_eq!(attr(&send, "error.type"), sent_error, "{id}");
        assert_eq!(attr(&process, "error.type"), processed_error, "{id}");
        for span in [&send, &process] {
            assert!(
                matches!(span.status, Status::Error { .. }),
                "{id}: {:?}",
                span.status
            );
        }
    }
    responder.shutdown().await.expect("shutdown");
}

/// One HTTP request the fake collector received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A tiny OTLP/HTTP receiver on a loopback port: records every request and answers `200` with an empty
/// protobuf body (an `ExportTraceServiceResponse` with no partial failure). Keep-alive connections are served
/// request after request, each on a thread of its own.
struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let sink = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || serve_http(stream, &sink));
            }
        });
        Collector { port, posts }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().expect("lock").clone()
    }
}

/// Reads HTTP/1.1 requests (with a `content-length` body) off one connection until it closes.
fn serve_http(stream: TcpStream, sink: &Mutex<Vec<Post>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        sink.lock().expect("lock").push(Post {
            path,
            content_type: headers.get("content-type").cloned().unwrap_or_default(),
            body,
        });
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// `redcall` against `server` and `service`, exporting spans to `endpoint`, logs to `<dir>/<log>.log`.
fn redcall(server: &RedisServer, service: &str, endpoint: &str, log: &str) -> Command {
    let log = std::fs::File::create(server.dir().join(format!("{log}.log"))).expect("log file");
    let mut cmd = Command::new(redcall_bin());
    cmd.args([
        "--url",
        &server.url(),
        "--service",
        service,
        "--otlp-endpoint",
        endpoint,
    ])
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_SERVICE_NAME")
    .env_remove("TRACEPARENT")
    .env("RUST_LOG", "info")
    .stdout(Stdio::piped())
    .stderr(log);
    cmd
}

/// Sends SIGTERM to `child` (by its PID) and waits for it to exit cleanly.
fn stop(child: &mut ChildGuard) {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "serve exited with {status}");
            return;
        }
        assert!(Instant::now() < end, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_both_spans_over_otlp_http() {
    let server = RedisServer::start();
    let collector = Collector::start();
    let service = "otlpexport";
    let mut serve = ChildGuard::spawn(redcall(&server, service, &collector.url(), "serve").args([
        "serve",
        "--consumer",
        "otlp",
    ]));
    let called = redcall(&server, service, &collector.url(), "call")
        .args([
            "call",
            "echo",
            "1",
            "--id",
            "otlp-1",
            "--timeout",
            "30s",
            "--traceparent",
            PARENT,
        ])
        .output()
        .expect("call");
    let log = |name: &str| {
        std::fs::read_to_string(server.dir().join(format!("{name}.log"))).unwrap_or_default()
    };
    assert!(called.status.success(), "{}", log("call"));
    // `call` flushed its span before it exited; `serve` flushes its own when it stops.
    stop(&mut serve);

    let trace_id = TraceId::from_hex(PARENT_TRACE).expect("hex").to_bytes();
    let posts = collector.posts();
    assert!(
        !posts.is_empty(),
        "nothing reached the collector; call: {}; serve: {}",
        log("call"),
        log("serve")
    );
    for post in &posts {
        assert_eq!(post.path, "/v1/traces", "{post:?}");
        assert_eq!(post.content_type, "application/x-protobuf", "{post:?}");
        assert!(!post.body.is_empty(), "{post:?}");
    }
    // Protobuf carries the ids as raw bytes and the names and attributes as plain strings.
    let with = |needle: &[u8]| posts.iter().filter(|p| contains(&p.body, needle)).count();
    let send_name = format!("send {service}");
    let process_name = format!("process {service}");
    let sent = posts
        .iter()
        .find(|p| contains(&p.body, send_name.as_bytes()))
        .expect("the send span");
    let processed = posts
        .iter()
        .find(|p| contains(&p.body, process_name.as_bytes()))
        .expect("the process span");
    for body in [&sent.body, &processed.body] {
        assert!(contains(body, &trace_id), "the caller's trace id");
        assert!(contains(body, b"messaging.system"));
        assert!(contains(body, b"otlp-1"), "the request id");
        assert!(contains(body, b"redcall"), "service.name");
    }
    assert!(contains(&processed.body, b"messaging.consumer.group.name"));
    assert!(with(&trace_id) >= 2, "{posts:?}");
}

#[test]
fn an_unreachable_collector_does_not_fail_or_hold_up_a_command() {
    let server = RedisServer::start();
    let closed = common::free_port();
    let started = Instant::now();
    let out = redcall(
        &server,
        "otlpdown",
        &format!("http://127.0.0.1:{closed}"),
        "down",
    )
    .args(["call", "echo", "1", "--timeout", "100ms"])
    .output()
    .expect("run");
    // Nobody serves: a timeout (exit 3), not an exporter error; the failed export costs no more than its retry.
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_https_or_malformed_endpoint_is_a_usage_error() {
    for (endpoint, says) in [
        ("https://127.0.0.1:4318", "https"),
        ("127.0.0.1:4318", "http://"),
    ] {
        let out = Command::new(redcall_bin())
            .args([
                "--url",
                "redis://127.0.0.1:1",
                "--otlp-endpoint",
                endpoint,
                "call",
                "echo",
            ])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{endpoint}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--otlp-endpoint") && err.contains(says),
            "{endpoint}: {err}"
        );
    }
}

/// The standard environment variables, often set for a whole fleet: an unusable one never stops a command (only
/// `call`, `serve` and `demo` read them, and warn), and `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the traces URL
/// itself) wins over `OTEL_EXPORTER_OTLP_ENDPOINT`, as the OpenTelemetry specification says.
#[test]
fn the_environments_endpoint_is_read_as_the_specification_says_and_never_stops_a_command() {
    let server = RedisServer::start();
    let env_command = |args: &[&str]| {
        let mut cmd = Command::new(redcall_bin());
        cmd.args(["--url", &server.url(), "--service", "otlpenv"])
            .args(args)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("TRACEPARENT");
        cmd
    };
    // An https base URL: `stats` ignores it, `call` warns and goes on (a timeout: nobody serves).
    let stats = env_command(&["stats"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.invalid:4318",
        )
        .output()
        .expect("stats");
    assert_eq!(stats.status.code(), Some(0), "{stats:?}");
    let call = env_command(&["call", "echo", "1", "--timeout", "100ms"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.invalid:4318",
        )
        .output()
        .expect("call");
    assert_eq!(call.status.code(), Some(3), "{call:?}");
    let err = String::from_utf8_lossy(&call.stderr);
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && err.contains("not exporting"),
        "{err}"
    );

    // The traces URL is taken as it is, before the base URL (which would post to /v1/traces).
    let collector = Collector::start();
    let mut serve = ChildGuard::spawn(
        env_command(&["serve", "--consumer", "otlpenv"])
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{}/custom/traces", collector.url()),
            )
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.invalid:4318",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let called = env_command(&["call", "echo", "1", "--timeout", "30s"])
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/custom/traces", collector.url()),
        )
        .output()
        .expect("call");
    assert!(called.status.success(), "{called:?}");
    stop(&mut serve);
    let posts = collector.posts();
    assert!(!posts.is_empty(), "nothing reached the collector");
    assert!(
        posts.iter().all(|p| p.path == "/custom/traces"),
        "{posts:?}"
    );
}

#[test]
fn the_flag_is_listed_where_it_is_used() {
    let help = |args: &[&str]| {
        let out = Command::new(redcall_bin())
            .args(args)
            .arg("--help")
            .output()
            .expect("run");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in ["call", "serve", "demo"] {
        let text = help(&[command]);
        assert!(text.contains("--otlp-endpoint <URL>"), "{command}: {text}");
        assert!(
            text.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{command}: {text}"
        );
    }
    assert!(!help(&["stats"]).contains("--otlp-endpoint"));
}

/// `bench --otel` measures `redcall-otel` (every worker exporting its spans to the bench's own OTLP receiver) beside
/// plain redcall in the same round and reports the ratio; the receiver really got spans.
#[test]
fn bench_otel_measures_the_export_beside_plain_redcall() {
    let server = RedisServer::start();
    let out = Command::new(redcall_bin())
        .args([
            "--url",
            &server.url(),
            "--json",
            "bench",
            "--external",
            "--system",
            "redcall",
            "--otel",
        ])
        .args([
            "--duration",
            "1",
            "--warmup",
            "0",
            "--rounds",
            "1",
            "--concurrency",
            "8",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for system in ["redcall", "redcall-otel"] {
        let m = lines
            .iter()
            .find(|v| v["kind"] == "measurement" && v["system"] == system)
            .unwrap_or_else(|| panic!("no {system} measurement: {lines:#?}"));
        assert!(m["rps"].as_f64().unwrap_or(0.0) > 0.0, "{m}");
        assert_eq!(m["errors"], 0, "{m}");
    }
    let cost = lines
        .iter()
        .find_map(|v| v.get("otel_cost"))
        .unwrap_or_else(|| panic!("no otel_cost: {lines:#?}"));
    assert_eq!(cost["concurrency"], 8, "{cost}");
    assert!(
        cost["rps_ratio_median"].as_f64().unwrap_or(0.0) > 0.0,
        "{cost}"
    );
    let received = lines
        .iter()
        .find_map(|v| v.get("otlp_received"))
        .unwrap_or_else(|| panic!("no otlp_received: {lines:#?}"));
    assert!(received["exports"].as_u64().unwrap_or(0) > 0, "{received}");
    assert!(received["bytes"].as_u64().unwrap_or(0) > 0, "{received}");
    assert_eq!(server.cli(&["DBSIZE"]), "0");
}
