//! `--json` everywhere: every subcommand of the binary, run with `--json`, prints only JSON lines on stdout
//! (one object, or one per event for `serve`, `reap` and `demo`), or refuses `--json` with a usage error (exit 2,
//! itself one JSON object on stderr). The hidden `bench-worker` (internal; it speaks JSON lines to `bench`) is
//! left out.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{ChildGuard, RedisServer, redcall_bin};
use serde_json::{Value, json};

/// Deadline for one CLI invocation (generous: the machine is shared).
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// `redcall --url <server> --service <service> --json <args...>`, stdin closed, output piped.
fn redcall(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service, "--json"])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads a pipe to the end on a thread of its own (so a big output never blocks the child).
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `cmd` to completion (bounded) and returns its output.
fn run(mut cmd: Command) -> Output {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let mut child = ChildGuard::spawn(&mut cmd);
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let end = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < end,
            "{what}: still running after {RUN_DEADLINE:?}"
        );
        thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

/// Every line of stdout parsed as JSON (panics naming the command and the line that is not); at least one.
fn json_lines(what: &str, out: &Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: stdout line is not JSON ({e}): {line:?}"))
        })
        .collect();
    assert!(
        !lines.is_empty(),
        "{what}: no output; stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// Runs `args` with `--json`, expects exit `code` and JSON-only stdout; returns its lines.
fn json_run(server: &RedisServer, service: &str, args: &[&str], code: i32) -> Vec<Value> {
    let what = format!("--json {args:?}");
    let out = run(redcall(server, service, args));
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&what, &out)
}

/// A long-running command (`serve`, `reap`): its stdout lines as they come, and the guard to stop it by PID.
struct Running {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    err: thread::JoinHandle<Vec<u8>>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = ChildGuard::spawn(&mut cmd);
        let stdout = child.stdout.take().expect("stdout");
        let err = drain(child.stderr.take());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, err }
    }

    /// The next stdout line, parsed: panics when none comes within the deadline or it is not JSON.
    fn next_json(&self, what: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(RUN_DEADLINE)
            .unwrap_or_else(|e| panic!("{what}: no line on stdout ({e})"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}"))
    }

    /// Sends SIGTERM (by PID), waits for a clean exit, and returns the rest of stdout parsed.
    fn stop(mut self, what: &str) -> Vec<Value> {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -TERM {pid}");
        let end = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < end, "{what}: did not stop on SIGTERM");
            thread::sleep(POLL);
        };
        let stderr = self.err.join().unwrap_or_default();
        assert!(
            status.success(),
            "{what}: {status:?}; stderr {}",
            String::from_utf8_lossy(&stderr)
        );
        self.lines
            .iter()
            .map(|line| {
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}"))
            })
            .collect()
    }
}

/// Polls `info ID` until the request exists.
fn wait_for_request(server: &RedisServer, service: &str, id: &str) -> Value {
    let end = Instant::now() + RUN_DEADLINE;
    loop {
        let out = run(redcall(server, service, &["info", id]));
        if out.status.success() {
            return json_lines("info", &out).remove(0);
        }
        assert_eq!(
            out.status.code(),
            Some(5),
            "info {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Instant::now() < end, "{id} never appeared");
        thread::sleep(POLL);
    }
}

#[test]
fn every_subcommand_prints_json_lines_or_refuses_json() {
    let server = RedisServer::start();
    let service = "json-all";

    // serve: a `started` line with its consumer, service and handlers, then (on SIGTERM) a `stopped` line.
    let serve = Running::start({
        let mut cmd = redcall(&server, service, &["serve", "--consumer", "json-serve"]);
        cmd.env("RUST_LOG", "info");
        cmd
    });
    let started = serve.next_json("serve");
    assert_eq!(started["event"], "started", "{started}");
    assert_eq!(started["consumer"], "json-serve", "{started}");
    assert_eq!(started["service"], service, "{started}");
    assert!(
        started["handlers"]
            .as_array()
            .is_some_and(|h| h.contains(&json!("echo"))),
        "{started}"
    );

    // call, info.
    let call = json_run(
        &server,
        service,
        &["call", "echo", r#"{"a":1}"#, "--id", "j-1"],
        0,
    );
    assert_eq!(call, [json!({"id": "j-1", "reply": {"a": 1}})]);
    let info = json_run(&server, service, &["info", "j-1"], 0);
    assert_eq!(info[0]["func_key"], "echo", "{info:?}");

    // reply: to a request of a service nobody serves, waited on by a background call.
    let waiting = Running::start(redcall(
        &server,
        "json-manual",
        &[
            "call",
            "SomeFunction",
            "{}",
            "--id",
            "j-by-hand",
            "--timeout",
            "30",
        ],
    ));
    wait_for_request(&server, "json-manual", "j-by-hand");
    let reply = json_run(
        &server,
        "json-manual",
        &["reply", "j-by-hand", r#""ok""#],
        0,
    );
    assert_eq!(
        reply,
        [json!({"id": "j-by-hand", "replied": true, "error_code": null})]
    );
    assert_eq!(
        waiting.next_json("the waiting call"),
        json!({"id": "j-by-hand", "reply": "ok"})
    );

    // A dead letter (no handler for the function key), for the dlq commands.
    let out = run(redcall(
        &server,
        service,
        &["call", "NoSuchFunction", "{}", "--id", "j-dead"],
    ));
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json_run(&server, service, &["dlq", "list"], 0);
    let dead_id = list[0][0]["dead_id"].as_str().expect("dead_id").to_owned();
    json_run(&server, service, &["dlq", "show", &dead_id], 0);
    let replayed = json_run(&server, service, &["dlq", "replay", &dead_id], 0);
    assert_eq!(
        replayed[0]["replayed"].as_array().map(Vec::len),
        Some(1),
        "{replayed:?}"
    );
    json_run(&server, service, &["stats"], 0);
    json_run(&server, service, &["stats", "--all"], 0);
    let range = json_run(
        &server,
        service,
        &["replay", "--from", "-", "--to", "+", "--func", "echo"],
        0,
    );
    assert_eq!(
        range[0]["replayed"].as_array().map(Vec::len),
        Some(1),
        "{range:?}"
    );
    json_run(&server, service, &["reap", "--once"], 0);
    json_run(&server, service, &["dlq", "purge", "--all"], 0);

    let stopped = serve.stop("serve");
    assert_eq!(
        stopped.last().map(|v| &v["event"]),
        Some(&json!("stopped")),
        "{stopped:?}"
    );
    assert!(
        stopped.last().is_some_and(|v| v["unfinished"].is_u64()),
        "{stopped:?}"
    );

    // reap (until SIGTERM): started, then stopped.
    let reap = Running::start(redcall(&server, service, &["reap"]));
    assert_eq!(reap.next_json("reap")["event"], "started");
    let rest = reap.stop("reap");
    assert_eq!(rest, [json!({"event": "stopped"})]);

    // demo: one JSON line per step.
    let demo = json_run(&server, service, &["demo"], 0);
    let events: Vec<&str> = demo
        .iter()
        .map(|v| v["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events,
        [
            "responder_started",
            "request",
            "call_info",
            "publish_reply",
            "failure",
            "failure",
            "responder_stopped"
        ],
        "{demo:?}"
    );
    assert_eq!(demo[4]["error"]["kind"], "handler", "{demo:?}");
    assert_eq!(demo[5]["error"]["kind"], "unknown_function", "{demo:?}");

    // bench: JSON lines (tiny settings, against this server).
    let bench = json_run(
        &server,
        service,
        &[
            "bench",
            "--external",
            "--system",
            "redcall",
            "--concurrency",
            "1",
            "--calls",
            "20",
            "--warmup",
            "0",
        ],
        0,
    );
    assert!(
        bench.iter().any(|v| v["kind"] == "measurement"),
        "{bench:?}"
    );

    // completions prints a shell script: it refuses --json, with a usage error that is itself JSON.
    let out = run(redcall(&server, service, &["completions", "bash"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON error on stderr");
    assert_eq!(err["error"]["kind"], "usage", "{err}");
}
