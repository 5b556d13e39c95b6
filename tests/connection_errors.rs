//! Connection errors as an operator meets them from the `redcall` binary: each says what is wrong (a bad URL with
//! its password masked, a port that is not Redis, `rediss://` against a plain Redis, a missing or wrong password,
//! an unreachable Redis), with its exit code, and in good time; `serve` keeps trying to start while Redis is
//! unreachable (or exits, with `--exit-if-unreachable`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, free_port, redcall_bin, wait_until};
use serde_json::Value;

/// Runs `redcall --url <url> <args>` and returns its output and how long it took.
fn redcall(url: &str, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(redcall_bin())
        .args(["--url", url])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("REDCALL_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .expect("run redcall");
    (out, start.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `kind` of the one JSON error object `--json` prints on stderr.
fn json_error_kind(out: &Output) -> String {
    let text = stderr(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("{\"error\""))
        .unwrap_or_else(|| panic!("no JSON error in: {text}"));
    let value: Value = serde_json::from_str(line).expect("JSON error");
    value["error"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_bad_url_is_echoed_with_its_password_masked_and_the_reason() {
    let (out, _) = redcall("redis://:s3cret-pw@127.0.0.1:99999", &["info", "some-id"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("\"redis://:***@127.0.0.1:99999\""),
        "URL not echoed: {err}"
    );
    assert!(
        err.contains("the port \"99999\" is not a number from 1 to 65535"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "password shown: {err}");

    let (out, _) = redcall("http://127.0.0.1:6380", &["stats"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown scheme \"http\""), "{err}");
}

#[test]
fn a_port_that_answers_but_is_not_redis_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // A tiny HTTP-ish server: whatever comes in, it answers 400.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 512];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let url = format!("redis://127.0.0.1:{port}");
    for args in [&["info", "some-id"][..], &["stats"][..]] {
        let (out, took) = redcall(&url, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("not a Redis server"), "{args:?}: {err}");
        assert!(err.contains("HTTP/1.1 400 Bad Request"), "{args:?}: {err}");
        assert!(!err.contains("Parse error"), "{args:?}: {err}");
        assert!(took < Duration::from_secs(8), "{args:?} took {took:?}");
    }
}

#[test]
fn rediss_against_a_plain_redis_fails_within_the_connect_timeout_with_a_tls_error() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    for args in [&["info", "some-id"][..], &["stats"][..]] {
        let (out, took) = redcall(&url, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("TLS"), "{args:?}: {err}");
        assert!(
            err.contains("use redis://, not rediss://"),
            "{args:?}: {err}"
        );
        // The connect timeout is 3 s; riding the timeout out as an outage took 13 s.
        assert!(took < Duration::from_secs(9), "{args:?} took {took:?}");
    }
}

#[test]
fn a_missing_or_wrong_password_is_named_as_such() {
    let server = RedisServer::start();
    server.cli(&["CONFIG", "SET", "requirepass", "the-pw"]);
    let port = server.port();
    let cases = [
        (
            format!("redis://127.0.0.1:{port}"),
            "this Redis requires a password",
        ),
        (
            format!("redis://:not-it@127.0.0.1:{port}"),
            "wrong password",
        ),
    ];
    for (url, expected) in &cases {
        for args in [&["info", "some-id"][..], &["stats"][..]] {
            let (out, _) = redcall(url, args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{url} {args:?}: {err}");
            assert!(err.contains(expected), "{url} {args:?}: {err}");
            for internal in ["HELLO", "NOAUTH", "WRONGPASS"] {
                assert!(!err.contains(internal), "{url} {args:?}: {err}");
            }
        }
    }
    // The right password works.
    let (out, _) = redcall(
        &format!("redis://:the-pw@127.0.0.1:{port}"),
        &["info", "some-id"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn admin_commands_report_an_unreachable_redis_as_unavailable() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let (out, took) = redcall(&url, &["--json", "stats"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(json_error_kind(&out), "unavailable");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let (out, _) = redcall(&url, &["stats"]);
    let err = stderr(&out);
    assert!(err.contains("unreachable"), "{err}");
    assert!(
        err.contains(&url["redis://".len()..]),
        "address not named: {err}"
    );
}

/// A call that rode out an unreachable Redis until its deadline fails with `Unavailable`, whose message names no
/// address: the hint says where nothing answered (password masked), in text and under `--json`.
#[test]
fn a_call_that_rode_out_an_unreachable_redis_names_the_url_in_a_hint() {
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", free_port());
    let masked = url.replace("s3cret-pw", "***");
    let (out, _) = redcall(&url, &["call", "echo", "1", "--timeout", "1s"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains(&format!("hint: nothing answered at {masked}")),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let (out, _) = redcall(&url, &["--json", "call", "echo", "1", "--timeout", "1s"]);
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with("{\"error\""))
        .map(str::to_owned)
        .unwrap_or_default();
    let value: Value = serde_json::from_str(&line).expect("a JSON error");
    assert_eq!(value["error"]["kind"], "unavailable", "{value}");
    assert!(
        value["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains(&masked)),
        "{value}"
    );
}

#[test]
fn serve_exits_at_once_when_asked_to() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let (out, took) = redcall(&url, &["serve", "--exit-if-unreachable"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_trying_with_backoff_until_redis_is_there() {
    let mut server = RedisServer::start();
    let url = server.url();
    // Its port, with nothing listening: a Redis that is not up yet.
    server.kill();
    let log_path = server.dir().join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let started = Instant::now();
    let _serve = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args([
                "--url",
                &url,
                "--service",
                "later",
                "--log-format",
                "json",
                "serve",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let attempts = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Redis is unreachable"))
            })
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(5), || async {
            !attempts(&read()).is_empty()
        })
        .await,
        "no word of the unreachable Redis within 5 s: {}",
        read()
    );
    let first_seen = started.elapsed();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            attempts(&read()).len() >= 4
        })
        .await,
        "serve did not keep trying: {}",
        read()
    );
    let seen = attempts(&read());
    let pauses: Vec<u64> = seen
        .iter()
        .map(|v| v["retry_in_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        pauses.windows(2).all(|w| w[1] >= w[0]) && pauses[3] > pauses[0],
        "no backoff: {pauses:?}"
    );
    assert!(
        seen.iter().all(|v| v["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable"))),
        "{seen:?}"
    );
    // Redis comes up: serve starts serving.
    server.restart();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            read().contains("responder started")
        })
        .await,
        "serve did not start once Redis was there: {}",
        read()
    );
    let (out, _) = redcall(
        &url,
        &[
            "--service",
            "later",
            "call",
            "echo",
            "{\"x\":1}",
            "--timeout",
            "20s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("serve: first word of the unreachable Redis after {first_seen:?}");
}
