//! A command asked to act on something named that did nothing exits non-zero, after printing what it found:
//! `replay` of a range with no entries (5) or whose entries were all left alone (1), `dlq replay` of named ids
//! that `--func` left out (1), `reply` to an unknown id (5); and the ones that did something still exit 0.

mod common;

use std::process::{Command, Output, Stdio};

use common::{RedisServer, redcall_bin, spawn_serve};
use serde_json::Value;

fn run(server: &RedisServer, service: &str, args: &[&str]) -> Output {
    Command::new(redcall_bin())
        .args(["--url", &server.url(), "--service", service])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run redcall")
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replay_that_did_nothing_exits_non_zero() {
    let server = RedisServer::start();
    let service = "nothing";

    // No stream at all, then an empty range of a stream: 5, with the report still printed.
    let out = run(&server, service, &["replay", "--from", "-", "--to", "+"]);
    assert_exit(&out, 5, "replay of a missing stream");
    assert!(
        stderr(&out).contains("no requests between - and +"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &server,
        service,
        &["--json", "replay", "--from", "-", "--to", "+"],
    );
    assert_exit(&out, 5, "replay --json of a missing stream");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report on stdout");
    assert_eq!(report["replayed"], serde_json::json!([]), "{report}");
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON error on stderr");
    assert_eq!(err["error"]["kind"], "not_found", "{err}");

    // Requests nobody has read yet: all in flight, so a replay leaves them alone: 1 (dry run too).
    let waiting = run(
        &server,
        service,
        &["call", "echo", "1", "--id", "n-1", "--timeout", "1"],
    );
    assert_exit(&waiting, 3, "call without a responder");
    for args in [
        &["replay", "--from", "-", "--to", "+"][..],
        &["replay", "--from", "-", "--to", "+", "--dry-run"][..],
    ] {
        let out = run(&server, service, args);
        assert_exit(&out, 1, &format!("{args:?}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("in_flight"),
            "{args:?}: the report lists it: {text}"
        );
        assert!(
            stderr(&out).contains("in_flight"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // A range with entries, none for the function key asked for: 5.
    let out = run(
        &server,
        service,
        &["replay", "--from", "-", "--to", "+", "--func", "other"],
    );
    assert_exit(&out, 5, "replay --func other");
    assert!(stderr(&out).contains("\"other\""), "{}", stderr(&out));

    // Once handled, the same range replays it: 0.
    let _serve = spawn_serve(&server, service, "nothing-1", &[], &[]);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = run(&server, service, &["replay", "--from", "-", "--to", "+"]);
        if out.status.success() {
            break;
        }
        assert_exit(&out, 1, "replay while the request is still in flight");
        assert!(
            std::time::Instant::now() < end,
            "the request was never handled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn dlq_replay_and_reply_that_did_nothing_exit_non_zero() {
    let server = RedisServer::start();
    let service = "nothing-dlq";
    let _serve = spawn_serve(&server, service, "nothing-dlq-1", &[], &[]);
    let out = run(
        &server,
        service,
        &["call", "NoSuchFunction", "{}", "--id", "d-1"],
    );
    assert_exit(&out, 4, "call of an unknown function");
    let out = run(&server, service, &["--json", "dlq", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("dlq list JSON");
    let dead_id = list[0]["dead_id"].as_str().expect("dead_id").to_owned();

    // Named, but left out by --func: nothing replayed, 1, and the dead letter stays.
    let out = run(
        &server,
        service,
        &["--json", "dlq", "replay", &dead_id, "--func", "other"],
    );
    assert_exit(&out, 1, "dlq replay ID --func other");
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON error on stderr");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("--func"),
        "{err}"
    );
    let out = run(&server, service, &["dlq", "show", &dead_id]);
    assert_exit(&out, 0, "the dead letter is still there");

    // Named and not there: 5 (show, replay, purge).
    for args in [
        &["dlq", "show", "9-9"][..],
        &["dlq", "replay", "9-9"][..],
        &["dlq", "purge", "9-9"][..],
    ] {
        let out = run(&server, service, args);
        assert_exit(&out, 5, &format!("{args:?}"));
        assert!(stderr(&out).contains("9-9"), "{args:?}: {}", stderr(&out));
    }

    // A reply to an id that was never requested: 5, naming it; nothing is stored.
    let out = run(&server, service, &["reply", "never-made", "1"]);
    assert_exit(&out, 5, "reply to an unknown id");
    assert!(stderr(&out).contains("never-made"), "{}", stderr(&out));
    assert_eq!(
        server.cli(&["EXISTS", "{redcall:nothing-dlq}:reply:never-made"]),
        "0"
    );

    // Named and replayable: 0.
    let out = run(&server, service, &["dlq", "replay", &dead_id]);
    assert_exit(&out, 0, "dlq replay ID");
}
