//! The command line's usage rules, run on the built binary: one duration rule on every flag, usage errors exit 2
//! with the reason (as one JSON object under `--json`), help shows defaults and keeps global flags apart.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{RedisServer, free_port, redcall_bin};
use serde_json::Value;

/// `redcall <args...>` against a closed loopback port: usage errors must be found before any connection.
fn offline(args: &[&str]) -> Output {
    // A free port nobody listens on.
    let url = format!("redis://127.0.0.1:{}", free_port());
    Command::new(redcall_bin())
        .args(["--url", &url])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run redcall")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_durations_are_usage_errors_on_every_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["call", "f", "--timeout", "0"], "more than zero"),
        (&["call", "f", "--timeout", "0ms"], "more than zero"),
        (&["call", "f", "--timeout", "nan"], "not a usable duration"),
        (&["call", "f", "--timeout", "inf"], "not a usable duration"),
        (&["call", "f", "--timeout", "-1"], "negative"),
        (&["call", "f", "--timeout", "-5s"], "negative"),
        (&["call", "f", "--timeout", "ten"], "not a duration"),
        (&["call", "f", "--timeout", "400d"], "too long"),
        (
            &["--record-retention", "nan", "call", "f"],
            "not a usable duration",
        ),
        (&["--reply-ttl", "0", "call", "f"], "more than zero"),
        (&["serve", "--visibility-timeout", "0"], "more than zero"),
        (&["serve", "--grace", "-1s"], "negative"),
        (&["serve", "--trim-interval", "x"], "not a duration"),
        (
            &["reap", "--retain-max-age", "nan"],
            "not a usable duration",
        ),
        (
            &["dlq", "replay", "--all", "--timeout", "0"],
            "more than zero",
        ),
        (&["bench", "--duration", "0"], "more than zero"),
        (&["bench", "--warmup", "-1"], "negative"),
        (&["bench", "--soak-timeout", "1e30"], "too long"),
    ];
    for (args, reason) in cases {
        let out = offline(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(reason), "{args:?}: no {reason:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn invalid_json_params_are_usage_errors() {
    let out = offline(&["call", "f", "{not json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("params are not valid JSON"),
        "{}",
        stderr(&out)
    );
    let out = offline(&["reply", "some-id", "[1,"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn errors_under_json_are_one_json_object_on_stderr() {
    for args in [
        // Found by the argument parser.
        &["--json", "call", "f", "--timeout", "nan"][..],
        &["--json", "call", "--no-such-flag"],
        // Found by the command.
        &["--json", "call", "f", "{not json"],
        // The bench's own checks, before it starts anything: an external Redis is one Redis, not a cluster.
        &["--json", "bench", "--calls", "0"],
        &["--json", "bench", "--concurrency", "0"],
        &["--json", "--cluster", "bench", "--external"],
    ] {
        let out = offline(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {err:?}");
        let value: Value =
            serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{args:?}: {e}: {err}"));
        assert_eq!(value["error"]["kind"], "usage", "{args:?}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{value}"
        );
        assert!(value["error"].get("id").is_some(), "{value}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn a_timeout_under_json_names_its_kind_and_request_id() {
    let server = RedisServer::start();
    let out = Command::new(redcall_bin())
        .args(["--url", &server.url(), "--service", "usage-json", "--json"])
        .args(["call", "nobody", "--id", "req-json-1", "--timeout", "300ms"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run redcall");
    assert_eq!(out.status.code(), Some(3));
    let value: Value = serde_json::from_str(stderr(&out).trim()).expect("one JSON object");
    assert_eq!(value["error"]["kind"], "timeout", "{value}");
    assert_eq!(value["error"]["id"], "req-json-1", "{value}");
}

#[test]
fn durations_take_human_units_and_bare_numbers_in_their_unit() {
    let server = RedisServer::start();
    // Nobody serves, so each call waits out its timeout: 300ms and 0.3 (bare: seconds) both end in well under
    // the 10 s default, and neither is read as 300 s.
    for timeout in ["300ms", "0.3"] {
        let started = Instant::now();
        let out = Command::new(redcall_bin())
            .args(["--url", &server.url(), "--service", "usage-units"])
            .args(["call", "nobody", "--timeout", timeout])
            .env_remove("RUST_LOG")
            .output()
            .expect("run redcall");
        assert_eq!(out.status.code(), Some(3), "{timeout}: {}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{timeout}: took {:?}",
            started.elapsed()
        );
    }
}

fn help(args: &[&str]) -> String {
    let out = offline(&[args, &["--help"]].concat());
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_shows_defaults_and_keeps_global_flags_apart() {
    let call = help(&["call"]);
    assert!(call.contains("[default: 10s]"), "{call}");
    let (own, global) = call
        .split_once("Global options:")
        .expect("a Global options heading");
    assert!(
        own.contains("--timeout") && !own.contains("--url"),
        "{call}"
    );
    assert!(
        global.contains("--url") && global.contains("--namespace"),
        "{call}"
    );

    let serve = help(&["serve"]);
    for default in [
        "[default: 30s]",
        "[default: 5]",
        "[default: 64]",
        "[default: workers]",
        "[default: 10s]",
    ] {
        assert!(
            serve.contains(default),
            "serve help lacks {default}: {serve}"
        );
    }
    // Flags a command ignores are not listed for it.
    let info = help(&["info"]);
    for ignored in ["--payload-limit", "--record-retention", "--reply-ttl"] {
        assert!(!info.contains(ignored), "info lists {ignored}: {info}");
    }
    assert!(info.contains("--fail-fast"), "{info}");
    let bench = help(&["bench"]);
    let lists = |help: &str, flag: &str| help.lines().any(|l| l.trim_start().starts_with(flag));
    // The bench starts its own Redis (or a cluster of its own with --cluster).
    assert!(
        !lists(&bench, "--service") && lists(&bench, "--cluster"),
        "{bench}"
    );
    assert!(lists(&info, "--cluster"), "{info}");
    // But they are still accepted there.
    let out = offline(&["--reply-ttl", "5s", "info", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    // A group of commands lists the global flags one of its commands uses, not the others.
    let dlq = help(&["dlq"]);
    assert!(
        lists(&dlq, "--payload-limit") && lists(&dlq, "--record-retention"),
        "dlq replay uses them: {dlq}"
    );
    for ignored in ["--durability", "--fail-fast", "--reply-ttl"] {
        assert!(!lists(&dlq, ignored), "dlq lists {ignored}: {dlq}");
    }
    // Hidden commands stay hidden: in the help, and in the error for a missing command.
    let top = help(&[]);
    assert!(
        top.contains("serve") && !top.contains("bench-worker"),
        "{top}"
    );
    let out = offline(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("requires a subcommand") && err.contains("serve"),
        "{err}"
    );
    assert!(!err.contains("bench-worker"), "{err}");
    // With no arguments at all: the help, as for a group of commands.
    let out = Command::new(redcall_bin())
        .env_remove("REDIS_URL")
        .output()
        .expect("run redcall");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Commands:") && !err.contains("bench-worker"),
        "{err}"
    );
}

/// Without the `otel` feature, `--otlp-endpoint` is not listed, and giving it is a usage error that says why
/// (rather than clap's "unexpected argument"); the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, set for other
/// programs, is left alone.
#[cfg(not(feature = "otel"))]
#[test]
fn otlp_endpoint_needs_the_otel_feature() {
    let out = offline(&["--otlp-endpoint", "http://127.0.0.1:4318", "call", "echo"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("built without the `otel` feature"), "{err}");
    let out = offline(&["bench", "--otel"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("built without the `otel` feature"),
        "{}",
        stderr(&out)
    );
    for args in [&[][..], &["call"], &["serve"], &["demo"], &["bench"]] {
        assert!(
            !help(args).contains("otlp"),
            "{args:?} lists --otlp-endpoint"
        );
    }
    let url = format!("redis://127.0.0.1:{}", free_port());
    let out = Command::new(redcall_bin())
        .args(["--url", &url, "call", "echo", "--timeout", "200ms"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run redcall");
    let err = stderr(&out);
    assert!(!err.contains("otel"), "{err}");
}
