//! The `redcall` binary as people and scripts use it: real processes against a throwaway `redis-server`,
//! including the original two-program flow (`call` waits while another program runs `info` and `reply`).
//!
//! DESIGN The parts (the CLI: `call`, `info`, `reply`, `serve` with its demo handlers, `demo`; human output and
//! `--json`; exit codes), and through the binary 1 (request, timeout naming the id), 2 (call info by id), 3 (a reply
//! published by hand) and 5 (a handler's error reaches the caller).

mod common;

use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, finish, redcall_bin};
use serde_json::{Value, json};

/// Deadline for one short CLI invocation (generous: the machine is shared).
const RUN_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline for conditions polled across processes.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// `redcall --url <server> --service <service> <args...>`.
fn redcall(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs a CLI command to completion (bounded) and returns its output.
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let child = ChildGuard::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    finish(child, RUN_DEADLINE, &what)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn parse(out: &Output) -> Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", stdout(out)))
}

/// Starts `redcall serve` for `service` (logs in the server's temp dir) and waits until its consumer group exists.
fn serve(server: &RedisServer, service: &str) -> ChildGuard {
    let log = File::create(server.dir().join(format!("serve-{service}.log"))).expect("serve log");
    let child = ChildGuard::spawn(
        redcall(server, service, &["serve"])
            .stdout(Stdio::null())
            .stderr(log),
    );
    let stream = format!("{{redcall:{service}}}:requests");
    let end = Instant::now() + WAIT;
    while !server
        .cli(&["XINFO", "GROUPS", &stream])
        .contains("workers")
    {
        assert!(
            Instant::now() < end,
            "responder for {service} did not create its group"
        );
        thread::sleep(POLL);
    }
    child
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[test]
fn serve_and_call_echo() {
    let server = RedisServer::start();
    let _serve = serve(&server, "cli-echo");

    let out = run(redcall(
        &server,
        "cli-echo",
        &["call", "echo", r#"{"key1":"value1"}"#],
    ));
    assert_exit(&out, 0);
    assert_eq!(parse(&out), json!({"key1": "value1"}));
}

#[test]
fn call_fail_exits_4_with_message() {
    let server = RedisServer::start();
    let _serve = serve(&server, "cli-fail");

    let out = run(redcall(
        &server,
        "cli-fail",
        &["call", "fail", "{}", "--id", "f-1"],
    ));
    assert_exit(&out, 4);
    assert!(stdout(&out).trim().is_empty(), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("f-1"), "{err}");
    assert!(err.contains("demo_failure"), "{err}");
    assert!(err.contains("the fail handler always fails"), "{err}");
}

#[test]
fn call_timeout_exits_3_and_names_the_id() {
    let server = RedisServer::start();
    let started = Instant::now();
    let out = run(redcall(
        &server,
        "cli-timeout",
        &["call", "echo", "1", "--timeout", "1", "--id", "t-123"],
    ));
    assert_exit(&out, 3);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let err = stderr(&out);
    assert!(err.contains("t-123"), "{err}");
    // The request stays stored: `info` finds it.
    let info = run(redcall(
        &server,
        "cli-timeout",
        &["info", "t-123", "--json"],
    ));
    assert_exit(&info, 0);
    assert_eq!(parse(&info)["func_key"], "echo");
}

/// The original two-program flow: A calls and waits; B finds the request by id, reads it, and answers it.
#[test]
fn two_programs_call_info_reply() {
    let server = RedisServer::start();
    let service = "cli-two";

    // Program A.
    let a = ChildGuard::spawn(
        redcall(
            &server,
            service,
            &[
                "call",
                "SomeFunction",
                r#"{"a":1}"#,
                "--id",
                "request_123",
                "--timeout",
                "20",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );

    // Program B: poll `info` until A's request is there.
    let end = Instant::now() + WAIT;
    let info = loop {
        let out = run(redcall(
            &server,
            service,
            &["info", "request_123", "--json"],
        ));
        if out.status.success() {
            break out;
        }
        assert_exit(&out, 5); // not found yet: anything else is a real failure
        assert!(Instant::now() < end, "request_123 never appeared");
        thread::sleep(POLL);
    };
    let info = parse(&info);
    assert_eq!(info["id"], "request_123");
    assert_eq!(info["func_key"], "SomeFunction");
    assert_eq!(info["params"], json!({"a": 1}));
    assert!(info["deadline_ms"].as_u64().unwrap() > info["created_ms"].as_u64().unwrap());

    let reply = run(redcall(
        &server,
        service,
        &["reply", "request_123", r#"{"answer":42}"#],
    ));
    assert_exit(&reply, 0);

    let out = finish(a, RUN_DEADLINE, "program A");
    assert_exit(&out, 0);
    assert_eq!(parse(&out), json!({"answer": 42}));

    // A second answer is refused (exit 6: duplicate).
    let again = run(redcall(&server, service, &["reply", "request_123", "1"]));
    assert_exit(&again, 6);
    assert!(stderr(&again).contains("request_123"), "{}", stderr(&again));
}

#[test]
fn json_output_parses() {
    let server = RedisServer::start();
    let service = "cli-json";
    let _serve = serve(&server, service);

    let out = run(redcall(
        &server,
        service,
        &["--json", "call", "echo", r#"{"list":[1,2,3],"s":"x"}"#],
    ));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "--json prints one line: {text}"
    );
    let v = parse(&out);
    assert_eq!(v["reply"], json!({"list": [1, 2, 3], "s": "x"}));
    let id = v["id"].as_str().expect("id");
    let uuid = uuid::Uuid::parse_str(id).expect("generated id is a UUID");
    assert_eq!(uuid.get_version_num(), 7, "{id}");

    let info = run(redcall(&server, service, &["info", id, "--json"]));
    assert_exit(&info, 0);
    let info = parse(&info);
    assert_eq!(info["id"], id);
    assert_eq!(info["func_key"], "echo");
    assert_eq!(info["params"], json!({"list": [1, 2, 3], "s": "x"}));

    let missing = run(redcall(&server, service, &["info", "nope", "--json"]));
    assert_exit(&missing, 5);
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
}

#[test]
fn demo_shows_the_three_operations_and_cleans_up() {
    let server = RedisServer::start();
    let out = run(redcall(&server, "unused", &["demo"]));
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    let text = stdout(&out);
    for step in [
        "1. request: echo {\"key1\":\"value1\"} -> {\"key1\":\"value1\"}",
        "2. call info by id:",
        "func_key \"SomeFunction\", params {\"a\":1}",
        "3. publish reply:",
        "<- {\"answer\":42}",
        "handler failed [demo_failure]",
        "no handler for function key \"NoSuchFunction\"",
        "responder stopped cleanly",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    let streams = server.cli(&["--scan", "--pattern", "*:requests"]);
    assert_eq!(streams.trim(), "", "the demo left its streams behind");
}
