//! The protocol kept honest by a second implementation: a Python requester and responder written from
//! `docs/protocol.md` alone (`tests/interop/`), run against the Rust side in both directions, each test on its own
//! throwaway `redis-server`.
//!
//! The Python side runs in the virtual environment `scripts/test.sh` makes (`target/py-venv`, with redis-py and
//! msgpack from PyPI). Without it these tests fail, on purpose: CI always goes through `scripts/test.sh`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, finish};
use redcall::protocol::{self, ReplyEnvelope};
use redcall::{Client, Error, Requester};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Deadline for one short Python or CLI invocation (generous: the machine is shared, and Python starts slowly).
const RUN_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for a condition polled across processes, and for one library call.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
/// Where `scripts/test.sh` makes the virtual environment; keep in step with `PY_VENV` there.
const PY_VENV: &str = "target/py-venv";

/// The venv's interpreter; fails the test, with what to do, when it is missing.
fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(PY_VENV)
        .join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `scripts/test.sh` (it creates the Python virtual environment with redis and msgpack \
         that the interop tests need), e.g. `bash scripts/test.sh --test interop`",
        python.display()
    );
    python
}

/// `python tests/interop/interop_cli.py --url <server> --service <service> <args...>`.
fn py(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/interop_cli.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(["--url", &server.url(), "--service", service])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

/// `redcall --url <server> --service <service> <args...>`.
fn redcall_cli(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Spawns `cmd` with its output piped.
fn spawn(cmd: &mut Command) -> ChildGuard {
    ChildGuard::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
}

/// Runs a command to completion (bounded) and returns its output.
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    finish(spawn(&mut cmd), RUN_DEADLINE, &what)
}

/// The one JSON document a Python command printed; panics unless it exited 0.
fn py_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python exited with {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("python's stdout is not one JSON document ({e}): {stdout:?}"))
}

/// Runs a Python command (bounded) and returns what it printed.
fn run_py(server: &RedisServer, service: &str, args: &[&str]) -> Value {
    py_json(&run(py(server, service, args)))
}

/// A Python request: `{"ok": true, "reply": ...}` or `{"ok": false, "error": {...}}`.
fn py_request(server: &RedisServer, service: &str, id: &str, func: &str, params: &str) -> Value {
    let out = run_py(server, service, &["request", func, params, "--id", id]);
    assert_eq!(out["id"], id, "{out}");
    out
}

/// The error of a Python request, with its `ok: false` checked.
fn py_error(out: &Value) -> &Value {
    assert_eq!(out["ok"], false, "expected an error: {out}");
    &out["error"]
}

/// Bounds one library call.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

/// Polls `f` until it yields a value, or panics after [`WAIT`].
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {WAIT:?}");
        thread::sleep(POLL);
    }
}

/// Polls the Rust requester's `call_info` until the request is there (made by another process).
async fn rust_call_info(requester: &Requester, id: &str) -> redcall::CallInfo {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        match within("call_info", requester.call_info(id)).await {
            Ok(info) => return info,
            Err(Error::NotFound { .. }) if tokio::time::Instant::now() < end => {
                tokio::time::sleep(POLL).await
            }
            Err(e) => panic!("call_info({id}): {e}"),
        }
    }
}

/// Starts `redcall serve` (the Rust responder with its demo handlers) and waits until its group exists.
fn rust_responder(server: &RedisServer, service: &str) -> ChildGuard {
    let child = common::spawn_serve(server, service, "rust-serve", &[], &[]);
    let stream = format!("{{redcall:{service}}}:requests");
    poll("the Rust responder's group", || {
        server
            .cli(&["XINFO", "GROUPS", &stream])
            .contains("workers")
            .then_some(())
    });
    child
}

/// The Python responder (`interop_cli.py serve`): its stdout lines, read by a thread, arrive on `lines`.
struct PyResponder {
    _child: ChildGuard,
    lines: mpsc::Receiver<Value>,
}

impl PyResponder {
    /// Starts it and waits for its `ready` line (printed once its group exists).
    fn start(server: &RedisServer, service: &str) -> Self {
        let log = std::fs::File::create(server.dir().join("py-serve.log")).expect("log file");
        let mut child = ChildGuard::spawn(
            py(server, service, &["serve", "--max-seconds", "120"])
                .stdout(Stdio::piped())
                .stderr(log),
        );
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| json!({"unparsed": line, "error": e.to_string()}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let mut responder = PyResponder {
            _child: child,
            lines,
        };
        let ready = responder.next_line();
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["group"], "workers", "{ready}");
        responder
    }

    fn next_line(&mut self) -> Value {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("the Python responder printed nothing within {WAIT:?}: {e}"))
    }

    /// The next request it handled: `{"id", "fn", "entry_id", "outcome", ...}`.
    fn next_outcome(&mut self) -> Value {
        let line = self.next_line();
        line.get("outcome")
            .cloned()
            .unwrap_or_else(|| panic!("not an outcome line: {line}"))
    }
}

fn pending(server: &RedisServer, service: &str) -> u64 {
    common::pending_count(
        server,
        &format!("{{redcall:{service}}}:requests"),
        "workers",
    )
}

/// PTTL of a key, in ms.
fn pttl(server: &RedisServer, key: &str) -> i64 {
    let text = server.cli(&["PTTL", key]);
    text.parse()
        .unwrap_or_else(|_| panic!("PTTL {key}: {text:?}"))
}

const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------------------------------------------
// 1. Python requester → Rust responder.

/// The Python requester's envelopes are what the Rust responder decodes (JSON-ish values, a struct-typed
/// parameter), and the Rust responder's reply envelopes, ok and error, are what Python decodes, with the error
/// codes mapped to the documented kinds.
#[test]
fn python_requester_calls_the_rust_responder() {
    let server = RedisServer::start();
    let service = "py-to-rust";
    let _serve = rust_responder(&server, service);

    let params =
        r#"{"key1":"value1","list":[1,-2,2.5,true,null],"nested":{"s":"x","big":4294967296}}"#;
    let echo = py_request(&server, service, "py-echo-1", "echo", params);
    assert_eq!(echo["ok"], true, "{echo}");
    assert_eq!(
        echo["reply"],
        serde_json::from_str::<Value>(params).unwrap(),
        "echo came back changed"
    );

    // `sleep` takes a struct ({ms: u64}) and answers one ({slept_ms}): Python's map is Rust's struct and back.
    let slept = py_request(&server, service, "py-sleep-1", "sleep", r#"{"ms":3}"#);
    assert_eq!(
        slept,
        json!({"ok": true, "id": "py-sleep-1", "reply": {"slept_ms": 3}})
    );

    let failed = py_request(&server, service, "py-fail-1", "fail", "null");
    assert_eq!(
        py_error(&failed),
        &json!({"kind": "handler", "id": "py-fail-1", "code": "demo_failure",
                "message": "the fail handler always fails"})
    );

    let unknown = py_request(&server, service, "py-unknown-1", "NoSuchFunction", "{}");
    assert_eq!(
        py_error(&unknown),
        &json!({"kind": "unknown_function", "id": "py-unknown-1", "code": "unknown_function",
                "message": "NoSuchFunction"})
    );

    let invalid = py_request(
        &server,
        service,
        "py-invalid-1",
        "sleep",
        r#""not a struct""#,
    );
    let error = py_error(&invalid);
    assert_eq!(error["kind"], "handler", "{invalid}");
    assert_eq!(error["code"], "invalid_params", "{invalid}");

    // An id in use is refused by the documented script, on the Python side too.
    let again = py_request(&server, service, "py-echo-1", "echo", "1");
    assert_eq!(py_error(&again)["kind"], "duplicate_id", "{again}");

    // Everything the Rust responder read was acknowledged; the two bad requests were dead-lettered with the
    // function key and reason taken from Python's envelopes.
    assert_eq!(pending(&server, service), 0);
    let dead = server.cli(&[
        "--no-raw",
        "XRANGE",
        &format!("{{redcall:{service}}}:dead"),
        "-",
        "+",
    ]);
    for expected in [
        "\"py-unknown-1\"",
        "\"NoSuchFunction\"",
        "\"unknown_function\"",
        "\"py-invalid-1\"",
        "\"invalid_params\"",
    ] {
        assert!(dead.contains(expected), "{expected} not in {dead}");
    }
}

/// The Python requester's timeout path: with no answer it reports a timeout naming the id and the request stays
/// stored; a reply stored (not published) while it waited is found by the one look at `T:reply:<id>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requester_times_out_and_reads_the_stored_reply() {
    let server = RedisServer::start();
    let service = "py-timeout";
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);

    let out = run_py(
        &server,
        service,
        &[
            "request",
            "echo",
            "1",
            "--id",
            "never-1",
            "--timeout-ms",
            "300",
        ],
    );
    let error = py_error(&out);
    assert_eq!(error["kind"], "timeout", "{out}");
    assert!(
        error["message"].as_str().unwrap().contains("never-1"),
        "{out}"
    );
    let info = rust_call_info(&requester, "never-1").await;
    assert_eq!(info.func_key, "echo");
    assert_eq!(info.params::<i64>().unwrap(), 1);

    // A reply that is stored but never published: only the last look finds it.
    let waiting = spawn(&mut py(
        &server,
        service,
        &[
            "request",
            "echo",
            "2",
            "--id",
            "late-1",
            "--timeout-ms",
            "3000",
        ],
    ));
    rust_call_info(&requester, "late-1").await;
    let reply = ReplyEnvelope::ok("late-1", protocol::encode(&json!({"late": true})).unwrap());
    let mut con = common::redis_con(&server).await;
    let _: () = redis::cmd("SET")
        .arg(requester.keys().reply("late-1"))
        .arg(protocol::encode(&reply).unwrap())
        .query_async(&mut con)
        .await
        .expect("SET the reply");
    let out = py_json(&finish(waiting, RUN_DEADLINE, "python request late-1"));
    assert_eq!(
        out,
        json!({"ok": true, "id": "late-1", "reply": {"late": true}})
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Rust requester → Python responder.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    name: String,
    count: u32,
    ratio: f64,
    signed: i64,
    flags: Vec<bool>,
    nested: BTreeMap<String, i64>,
    missing: Option<String>,
    pair: (u8, String),
}

#[derive(Debug, Serialize)]
struct Greet<'a> {
    name: &'a str,
    times: u32,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Greeting {
    greeting: String,
    repeated: Vec<String>,
    name_len: usize,
    by: String,
}

/// The Rust library's envelopes (both ways of adding: the duplicate-checking script for a caller's id, the batched
/// transaction for generated ids) are what the Python responder reads, and its replies decode into the caller's
/// types; its error replies, dead letters and expired answers surface as the right `redcall::Error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_requester_calls_the_python_responder() {
    let server = RedisServer::start();
    let service = "rust-to-py";
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);

    // Made before any responder runs, with a deadline that passes meanwhile: the Python responder must answer it
    // `expired` without running it.
    let err = within(
        "expiring request",
        requester.request::<_, i64>("expired-1", "double", &1, Duration::from_millis(200)),
    )
    .await
    .expect_err("no responder yet");
    assert!(
        matches!(&err, Error::Timeout { id, .. } if id == "expired-1"),
        "{err}"
    );

    let mut py_serve = PyResponder::start(&server, service);
    let expired = py_serve.next_outcome();
    assert_eq!(
        (&expired["id"], &expired["outcome"]),
        (&json!("expired-1"), &json!("expired"))
    );
    let stored = within("stored reply", requester.stored_reply::<i64>("expired-1"))
        .await
        .expect_err("an expired reply is an error");
    assert!(
        matches!(&stored, Error::Expired { id } if id == "expired-1"),
        "{stored}"
    );

    let sample = Sample {
        name: "zoë".into(),
        count: 7,
        ratio: 0.25,
        signed: -1_234_567_890_123,
        flags: vec![true, false],
        nested: BTreeMap::from([("a".into(), 1), ("b".into(), -2)]),
        missing: None,
        pair: (255, "x".into()),
    };
    let back: Sample = within(
        "echo",
        requester.request("rust-echo-1", "echo", &sample, WAIT),
    )
    .await
    .expect("echo");
    assert_eq!(back, sample);
    assert_eq!(py_serve.next_outcome()["outcome"], "ok");

    let greeting: Greeting = within(
        "greet",
        requester.request(
            "rust-greet-1",
            "greet",
            &Greet {
                name: "ana",
                times: 2,
            },
            WAIT,
        ),
    )
    .await
    .expect("greet");
    assert_eq!(
        greeting,
        Greeting {
            greeting: "hello ana".into(),
            repeated: vec!["ana".into(), "ana".into()],
            name_len: 3,
            by: "python".into(),
        }
    );
    py_serve.next_outcome();

    // Generated ids go out in batches (one MULTI for many requests): all of them reach Python, each reply its own.
    let calls = (0..20i64).map(|n| {
        let requester = requester.clone();
        async move { requester.call::<_, i64>("double", &n, WAIT).await }
    });
    let doubled = within("20 calls", futures_util::future::join_all(calls)).await;
    let doubled: Vec<i64> = doubled.into_iter().map(|r| r.expect("double")).collect();
    assert_eq!(doubled, (0..20).map(|n| n * 2).collect::<Vec<_>>());
    for _ in 0..20 {
        assert_eq!(py_serve.next_outcome()["outcome"], "ok");
    }

    let err = within(
        "fail",
        requester.request::<_, Value>("rust-fail-1", "fail", &(), WAIT),
    )
    .await
    .expect_err("fail fails");
    match &err {
        Error::Handler { id, code, message } => {
            assert_eq!(
                (id.as_str(), code.as_str(), message.as_str()),
                (
                    "rust-fail-1",
                    "py_failure",
                    "the python handler fails on purpose"
                )
            );
        }
        other => panic!("expected Error::Handler, got {other:?}"),
    }
    let err = within(
        "fail_plain",
        requester.request::<_, Value>("rust-fail-2", "fail_plain", &(), WAIT),
    )
    .await
    .expect_err("fail_plain fails");
    assert!(
        matches!(&err, Error::Handler { code, message, .. }
            if code == "handler_error" && message == "failed without a code"),
        "{err:?}"
    );

    let err = within(
        "unknown",
        requester.request::<_, Value>("rust-unknown-1", "NoSuchFunction", &1, WAIT),
    )
    .await
    .expect_err("no such function");
    assert!(
        matches!(&err, Error::UnknownFunction { id, func_key }
            if id == "rust-unknown-1" && func_key == "NoSuchFunction"),
        "{err:?}"
    );

    let err = within(
        "invalid params",
        requester.request::<_, i64>("rust-invalid-1", "double", &"twenty-one", WAIT),
    )
    .await
    .expect_err("double takes an integer");
    assert!(
        matches!(&err, Error::Handler { id, code, .. } if id == "rust-invalid-1" && code == "invalid_params"),
        "{err:?}"
    );
    for _ in 0..4 {
        py_serve.next_outcome();
    }

    // Python acknowledged everything; its dead letters read back through the Rust admin API.
    assert_eq!(pending(&server, service), 0);
    let dead = within("dead letters", client.admin(service).dead_letters(None, 10))
        .await
        .expect("dead letters");
    let summary: Vec<_> = dead
        .iter()
        .map(|d| {
            (
                d.request_id.as_deref(),
                d.func_key.as_deref(),
                d.reason.as_str(),
                d.deliveries,
                d.group.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("rust-unknown-1"),
                Some("NoSuchFunction"),
                "unknown_function",
                Some(1),
                Some("workers")
            ),
            (
                Some("rust-invalid-1"),
                Some("double"),
                "invalid_params",
                Some(1),
                Some("workers")
            ),
        ]
    );
    let request = dead[1]
        .request()
        .expect("the dead letter keeps the envelope");
    assert_eq!(request.id, "rust-invalid-1");
    assert_eq!(
        protocol::decode::<String>(&request.params, "params").unwrap(),
        "twenty-one"
    );
    // Python stored its replies with the documented TTL.
    let ttl = pttl(&server, &requester.keys().reply("rust-echo-1"));
    assert!(ttl > HOUR_MS - 60_000 && ttl <= HOUR_MS, "reply PTTL {ttl}");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. The original two-program flow, both ways.

/// Python asks with id `request_123` and waits; Rust finds it by id, reads what it asks, and answers by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_programs_python_asks_rust_answers() {
    let server = RedisServer::start();
    let service = "two-py-rust";
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);

    let a = spawn(&mut py(
        &server,
        service,
        &[
            "request",
            "SomeFunction",
            r#"{"a":1}"#,
            "--id",
            "request_123",
            "--timeout-ms",
            "20000",
        ],
    ));

    let info = rust_call_info(&requester, "request_123").await;
    assert_eq!(info.id, "request_123");
    assert_eq!(info.func_key, "SomeFunction");
    assert_eq!(info.params::<Value>().unwrap(), json!({"a": 1}));
    assert_eq!(info.replay, None);
    let timeout = info.deadline.duration_since(info.created).unwrap();
    assert_eq!(timeout, Duration::from_secs(20));
    // The record lives for the timeout plus the record retention (1 h), as documented.
    let ttl = pttl(&server, &requester.keys().record("request_123"));
    assert!(
        ttl > HOUR_MS && ttl <= HOUR_MS + 20_000,
        "record PTTL {ttl}"
    );
    // The stream entry carries the id outside the envelope, and the same envelope as the record.
    let mut con = common::redis_con(&server).await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(requester.keys().requests())
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    assert_eq!(entries.ids.len(), 1);
    let entry = &entries.ids[0];
    assert_eq!(entry.get::<String>("id").as_deref(), Some("request_123"));
    let record: Vec<u8> = redis::cmd("GET")
        .arg(requester.keys().record("request_123"))
        .query_async(&mut con)
        .await
        .expect("GET record");
    assert_eq!(entry.get::<Vec<u8>>("env"), Some(record));

    within(
        "publish_reply",
        requester.publish_reply("request_123", &json!({"answer": 42})),
    )
    .await
    .expect("publish_reply");

    let out = py_json(&finish(a, RUN_DEADLINE, "python request_123"));
    assert_eq!(
        out,
        json!({"ok": true, "id": "request_123", "reply": {"answer": 42}})
    );

    // A second answer is refused, and the stored one stays.
    let again = within("second reply", requester.publish_reply("request_123", &1))
        .await
        .expect_err("answered already");
    assert!(
        matches!(&again, Error::AlreadyAnswered { id } if id == "request_123"),
        "{again}"
    );
    let stored: Value = within("stored", requester.stored_reply("request_123"))
        .await
        .expect("stored reply")
        .expect("a stored reply");
    assert_eq!(stored, json!({"answer": 42}));
}

/// Rust asks with id `request_123` (`send`, then the handle's `wait`); Python finds it by id, reads what it asks,
/// and answers by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_programs_rust_asks_python_answers() {
    let server = RedisServer::start();
    let service = "two-rust-py";
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester(service);

    let missing = run_py(&server, service, &["call-info", "request_123"]);
    assert_eq!(
        missing["error"]["kind"], "not_found",
        "no request yet: {missing}"
    );

    let pending_reply = within(
        "send",
        requester.send(
            "request_123",
            "SomeFunction",
            &json!({"a": 1}),
            Duration::from_secs(20),
        ),
    )
    .await
    .expect("send");

    let info = run_py(&server, service, &["call-info", "request_123"]);
    assert_eq!(info["ok"], true, "{info}");
    let info = &info["info"];
    assert_eq!(info["id"], "request_123");
    assert_eq!(info["func_key"], "SomeFunction");
    assert_eq!(info["params"], json!({"a": 1}));
    assert_eq!(info["replay"], Value::Null);
    assert_eq!(
        info["deadline_ms"].as_u64().unwrap() - info["created_ms"].as_u64().unwrap(),
        20_000,
        "{info}"
    );

    let replied = run_py(
        &server,
        service,
        &["reply", "request_123", r#"{"answer":42}"#],
    );
    assert_eq!(replied, json!({"ok": true, "id": "request_123"}));

    let answer: Value = within("wait", pending_reply.wait())
        .await
        .expect("the reply");
    assert_eq!(answer, json!({"answer": 42}));

    let again = run_py(&server, service, &["reply", "request_123", "1"]);
    assert_eq!(again["error"]["kind"], "already_answered", "{again}");
    let unknown = run_py(&server, service, &["reply", "request_999", "1"]);
    assert_eq!(unknown["error"]["kind"], "not_found", "{unknown}");
}

/// The same flow with the `redcall call` program on the Rust side, answered by Python with an error: the CLI
/// reports the handler's code and message.
#[test]
fn two_programs_cli_asks_python_answers_with_an_error() {
    let server = RedisServer::start();
    let service = "two-cli-py";

    let a = spawn(&mut redcall_cli(
        &server,
        service,
        &[
            "call",
            "SomeFunction",
            r#"{"a":[1,2]}"#,
            "--id",
            "request_123",
            "--timeout",
            "20",
        ],
    ));

    let info = poll("request_123 from the CLI", || {
        let out = run_py(&server, service, &["call-info", "request_123"]);
        (out["ok"] == true).then_some(out)
    });
    assert_eq!(info["info"]["func_key"], "SomeFunction", "{info}");
    assert_eq!(info["info"]["params"], json!({"a": [1, 2]}), "{info}");

    let replied = run_py(
        &server,
        service,
        &[
            "reply",
            "request_123",
            r#""python says no""#,
            "--error-code",
            "py_refused",
        ],
    );
    assert_eq!(replied["ok"], true, "{replied}");

    let out = finish(a, RUN_DEADLINE, "redcall call request_123");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(
        stderr.contains("request request_123: handler failed [py_refused]: python says no"),
        "{stderr}"
    );
}
