//! The server check at connect (issue 18: "refuse a server too old with a clear error at connect, not a strange one
//! later"), against real servers made to look like the cases: a server that does not know `HELLO` (Redis before
//! 6.0: here a Redis with `rename-command HELLO ""`) is refused as too old, at once and with exit 7; a server that
//! renamed `INFO` away (as some providers do) is not refused: the version check is skipped with a warning.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{RedisOptions, RedisServer, redcall_bin};
use redcall::{Client, ErrorKind};
use serde_json::{Value, json};

/// A server whose configuration renames `command` away, as a server without it.
fn server_without(command: &str) -> RedisServer {
    RedisServer::start_with(
        RedisOptions::new().config_file(format!("rename-command {command} \"\"\n")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_hello_is_refused_as_too_old() {
    let server = server_without("HELLO");
    let client = Client::open(&server.url()).expect("open");
    let started = Instant::now();
    let err = client
        .requester("old")
        .call_info("some-id")
        .await
        .expect_err("a server without HELLO");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("HELLO") && shown.contains("Redis 7.0.0"),
        "{shown}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not ridden out: {:?}",
        started.elapsed()
    );

    // The CLI: exit 7 at once (no riding out, no --fail-fast needed), the same words.
    let started = Instant::now();
    let out = Command::new(redcall_bin())
        .args(["--url", &server.url(), "info", "some-id"])
        .output()
        .expect("run redcall");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("is too old: redcall needs Redis 7.0.0"),
        "{stderr}"
    );
    assert!(!stderr.contains("ResponseError"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");

    let out = Command::new(redcall_bin())
        .args([
            "--url",
            &server.url(),
            "--json",
            "serve",
            "--exit-if-unreachable",
        ])
        .output()
        .expect("run redcall serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains(r#""kind":"unsupported""#),
        "the JSON error names the kind: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_info_is_used_unchecked() {
    let server = server_without("INFO");
    let client = Client::open(&server.url()).expect("open");
    let _responder = client
        .responder("no-info")
        .handler("echo", |_ctx, params: Value| async move {
            Ok::<_, redcall::HandlerError>(params)
        })
        .start()
        .await
        .expect("a responder starts without INFO");
    let reply: Value = client
        .requester("no-info")
        .request("r-1", "echo", &json!({"a": 1}), Duration::from_secs(10))
        .await
        .expect("a round trip without INFO");
    assert_eq!(reply, json!({"a": 1}));
}
