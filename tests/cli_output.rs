//! The binary's output and exit status in the cases people and scripts hit: a reader that stops early
//! (`redcall dlq list | head -c 100`), a closed stderr, and commands that name ids that do not exist.

mod common;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, redcall_bin, redis_con, run_cli};
use serde_json::Value;

const RUN_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// `redcall --url <server> --service <service> <args...>` with all three standard streams piped.
fn redcall(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits (bounded) for the child to exit; returns its status and stderr.
fn wait(mut child: ChildGuard, what: &str) -> (ExitStatus, String) {
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut err).expect("read stderr");
    }
    let end = Instant::now() + RUN_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status, err);
        }
        assert!(
            Instant::now() < end,
            "{what}: still running after {RUN_DEADLINE:?}"
        );
        thread::sleep(POLL);
    }
}

/// Adds `n` dead letters (the fields the responder writes) to the service's dead-letter stream.
async fn add_dead_letters(server: &RedisServer, service: &str, n: usize) -> Vec<String> {
    let mut con = redis_con(server).await;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(format!("{{redcall:{service}}}:dead"))
            .arg("*")
            .arg("id")
            .arg(format!("dead-request-{i:06}"))
            .arg("env")
            .arg("")
            .arg("fn")
            .arg("some_function")
            .arg("reason")
            .arg("unknown_function")
            .arg("error")
            .arg(
                "no handler for function key \"some_function\" (padding the line to fill the pipe)",
            )
            .arg("deliveries")
            .arg(1)
            .arg("entry_id")
            .arg("1-0")
            .arg("dead_at_ms")
            .arg(0)
            .arg("group")
            .arg("workers");
    }
    pipe.query_async(&mut con).await.expect("XADD dead letters")
}

/// The status of a command whose output nobody reads to the end: no panic, and the quiet success the README
/// documents (0).
fn assert_quiet(status: ExitStatus, stderr: &str, what: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: stderr {stderr:?}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: exit status {status:?}; stderr {stderr:?}"
    );
}

/// `redcall dlq list | head -c 100`: more output than a pipe holds, the reader leaves after 100 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_leaves_early_is_not_a_panic() {
    let server = RedisServer::start();
    let service = "pipe";
    add_dead_letters(&server, service, 3000).await;
    for args in [
        &["dlq", "list", "--limit", "3000"][..],
        &["--json", "dlq", "list", "--limit", "3000"][..],
    ] {
        let mut child = ChildGuard::spawn(&mut redcall(&server, service, args));
        let mut stdout = child.stdout.take().expect("stdout");
        let mut head = [0u8; 100];
        stdout.read_exact(&mut head).expect("the first 100 bytes");
        drop(stdout);
        let (status, stderr) = wait(child, &format!("{args:?}"));
        assert_quiet(status, &stderr, &format!("{args:?}"));
    }
}

/// Every command that prints, with its stdout closed before it writes anything; and an error with stderr
/// closed keeps its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_command_panics_on_a_closed_stdout_or_stderr() {
    let server = RedisServer::start();
    let service = "closed";
    let dead = add_dead_letters(&server, service, 3).await;
    let requester = redcall::Client::open(&server.url())
        .expect("client")
        .requester(service);
    drop(
        requester
            .send("known", "echo", &1, Duration::from_secs(60))
            .await
            .expect("send"),
    );
    let commands: Vec<Vec<&str>> = vec![
        vec!["stats"],
        vec!["--json", "stats"],
        vec!["stats", "--all"],
        vec!["dlq", "list"],
        vec!["--json", "dlq", "list"],
        vec!["dlq", "show", &dead[0]],
        vec!["info", "known"],
        // `--include-in-flight`: the one request is unread, and a replay that replays nothing exits 1.
        vec!["replay", "--from", "-", "--to", "+", "--include-in-flight"],
        vec![
            "--json",
            "replay",
            "--from",
            "-",
            "--to",
            "+",
            "--include-in-flight",
        ],
        vec!["dlq", "replay", "--all"],
        vec!["dlq", "purge", &dead[1]],
        vec!["--json", "dlq", "purge", "--all"],
        vec!["reap", "--once"],
        vec!["--json", "reap", "--once"],
    ];
    for args in &commands {
        let mut child = ChildGuard::spawn(&mut redcall(&server, service, args));
        drop(child.stdout.take());
        let (status, stderr) = wait(child, &format!("{args:?}"));
        assert_quiet(status, &stderr, &format!("{args:?}"));
    }

    // An error goes to stderr; with stderr closed the exit code still says what happened (5: not found).
    let mut cmd = redcall(&server, service, &["dlq", "show", "1-1"]);
    let mut child = ChildGuard::spawn(&mut cmd);
    drop(child.stderr.take());
    drop(child.stdout.take());
    let (status, _) = wait(child, "dlq show 1-1");
    assert_eq!(status.code(), Some(5), "{status:?}");
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `dlq replay ID` and `dlq purge ID` exit 5 when a named id does not exist, after doing what they could with
/// the others (and saying so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_a_missing_dead_letter_exits_5() {
    let server = RedisServer::start();
    let service = "missing";
    let dead = add_dead_letters(&server, service, 2).await;

    for args in [&["dlq", "replay", "1-1"][..], &["dlq", "purge", "1-1"][..]] {
        let out = run_cli(&server, service, args);
        assert_eq!(
            out.status.code(),
            Some(5),
            "{args:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("1-1"), "{args:?}: {stderr}");
    }

    // One that exists and one that does not: the first is purged, the report says so, and the exit is still 5.
    let out = run_cli(
        &server,
        service,
        &["--json", "dlq", "purge", &dead[0], "2-2"],
    );
    assert_eq!(out.status.code(), Some(5), "{:?}", out.status);
    let report = json_of(&out);
    assert_eq!(report["purged"], 1, "{report}");
    assert_eq!(report["not_found"], serde_json::json!(["2-2"]), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2-2"), "{stderr}");

    // The same id twice is one dead letter, found.
    let out = run_cli(&server, service, &["dlq", "purge", &dead[1], &dead[1]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `dlq replay` of a missing id, next to a malformed one that exists (kept, reported): 5.
    let kept = add_dead_letters(&server, service, 1).await;
    let out = run_cli(
        &server,
        service,
        &["--json", "dlq", "replay", &kept[0], "3-3"],
    );
    assert_eq!(out.status.code(), Some(5), "{:?}", out.status);
    let report = json_of(&out);
    let mut reasons: Vec<&str> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| s["reason"].as_str().unwrap_or("?"))
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed", "not_found"], "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3-3"), "{stderr}");

    // Only a named dead letter that exists but cannot be replayed: nothing named was done, exit 1.
    let out = run_cli(&server, service, &["dlq", "replay", &kept[0]]);
    assert_eq!(out.status.code(), Some(1), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&kept[0]) && stderr.contains("malformed"),
        "{stderr}"
    );
    // (Found and replayed exits 0: `dlq_commands_of_the_binary` in tests/replay.rs.)
}
