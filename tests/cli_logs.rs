//! The binary's logs as a log collector meets them: `--log-format json` (or `REDCALL_LOG_FORMAT=json`) gives one
//! JSON object per line naming the request (`id`, `service`, `func`); a handler panic is one log line with the
//! request id and the panic message, without the default panic hook's text or a backtrace; and no ANSI colours
//! when stderr is not a terminal.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ChildGuard, RedisServer, free_port, redcall_bin, run_cli, wait_until};
use serde_json::Value;

/// Starts `redcall serve` with `args` before the subcommand, its stderr in `<dir>/<name>.log`.
fn serve(server: &RedisServer, name: &str, global: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let log = std::fs::File::create(server.dir().join(format!("{name}.log"))).expect("log file");
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", name])
        .args(global)
        .args(["serve", "--consumer", name])
        .env_remove("RUST_LOG")
        .env_remove("REDCALL_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
}

fn log(server: &RedisServer, name: &str) -> String {
    std::fs::read_to_string(server.dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// The log's JSON lines, each parsed; a line that starts like JSON but does not parse fails the test.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn names(line: &Value, id: &str, service: &str, func: &str) -> bool {
    line["id"] == id && line["service"] == service && line["func"] == func
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_name_the_request_and_a_handler_panic_is_logged_once() {
    let server = RedisServer::start();
    let service = "jsonlogs";
    let _serve = serve(
        &server,
        service,
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "info,redcall::responder::dispatch=debug"),
            ("RUST_BACKTRACE", "1"),
        ],
    );
    let echoed = run_cli(
        &server,
        service,
        &[
            "call",
            "echo",
            "{\"x\":1}",
            "--id",
            "log-echo-1",
            "--timeout",
            "30s",
        ],
    );
    assert!(
        echoed.status.success(),
        "{}",
        String::from_utf8_lossy(&echoed.stderr)
    );
    // The panic handler never answers: the call times out, the panic is logged.
    let panicked = run_cli(
        &server,
        service,
        &[
            "call",
            "panic",
            "{}",
            "--id",
            "log-panic-1",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(panicked.status.code(), Some(3));
    let panic_line = |text: &str| {
        json_lines(text)
            .into_iter()
            .find(|l| l["level"] == "ERROR" && names(l, "log-panic-1", service, "panic"))
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            panic_line(&log(&server, service)).is_some()
        })
        .await,
        "no panic line: {}",
        log(&server, service)
    );
    // Whatever the default hook would print comes before the catch, so it would be in the log by now; one more
    // request handled after the panic makes sure.
    let after = run_cli(
        &server,
        service,
        &[
            "call",
            "echo",
            "2",
            "--id",
            "log-echo-2",
            "--timeout",
            "30s",
        ],
    );
    assert!(after.status.success());
    let text = log(&server, service);
    let lines = json_lines(&text);

    let handled = lines
        .iter()
        .find(|l| l["message"] == "handling" && names(l, "log-echo-1", service, "echo"))
        .unwrap_or_else(|| panic!("no line naming the handled request: {text}"));
    assert_eq!(handled["level"], "DEBUG");
    assert!(
        handled["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{handled}"
    );

    let panic = panic_line(&text).expect("panic line");
    assert!(
        panic["panic"]
            .as_str()
            .is_some_and(|m| m.contains("the panic handler always panics")),
        "{panic}"
    );
    assert!(
        panic["message"]
            .as_str()
            .is_some_and(|m| m.contains("panicked")),
        "{panic}"
    );
    // The request is delivered again after each panic's retry backoff: each panic is logged once.
    let mentions = text
        .lines()
        .filter(|l| l.contains("panick") && l.contains("(delivery 1)"))
        .count();
    assert_eq!(mentions, 1, "the panic is logged more than once: {text}");
    assert!(
        !text.contains("panicked at"),
        "the default hook's text: {text}"
    );
    assert!(!text.contains("stack backtrace"), "a backtrace: {text}");
    assert!(
        !text.contains("RUST_BACKTRACE"),
        "the default hook's note: {text}"
    );
    // Every line is JSON, serve's own status lines too.
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(
        text.lines().any(|l| l.contains("serving ")),
        "serve's status line is logged: {text}"
    );
}

#[test]
fn the_environment_variable_chooses_json_and_text_has_no_colours_when_piped() {
    // A closed port: `call` logs its warnings about the unreachable Redis, then fails.
    let url = format!("redis://127.0.0.1:{}", free_port());
    let run = |env: &[(&str, &str)]| {
        Command::new(redcall_bin())
            .args(["--url", &url, "call", "echo", "1", "--timeout", "1s"])
            .env_remove("RUST_LOG")
            .env_remove("REDCALL_LOG_FORMAT")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run redcall")
    };
    let text = run(&[]);
    let stderr = String::from_utf8_lossy(&text.stderr).into_owned();
    assert!(stderr.contains("WARN"), "no warnings logged: {stderr}");
    assert!(
        !text.stderr.contains(&0x1b),
        "ANSI escapes on a pipe: {stderr:?}"
    );

    let json = run(&[("REDCALL_LOG_FORMAT", "json")]);
    let stderr = String::from_utf8_lossy(&json.stderr).into_owned();
    let warnings: Vec<Value> = json_lines(&stderr)
        .into_iter()
        .filter(|l| l["level"] == "WARN")
        .collect();
    assert!(!warnings.is_empty(), "no JSON warnings: {stderr}");
    for w in &warnings {
        assert!(
            w["message"].is_string() && w["timestamp"].is_string() && w["target"].is_string(),
            "{w}"
        );
        if let Some(error) = w.get("error") {
            assert!(
                error.is_string() && !error.as_str().unwrap_or("").contains("RedisError {"),
                "{w}"
            );
        }
    }
    assert!(!json.stderr.contains(&0x1b));
}

#[test]
fn serve_text_logs_have_no_colours_when_piped() {
    let server = RedisServer::start();
    let service = "textlogs";
    let _serve = serve(&server, service, &[], &[]);
    let started = || log(&server, service).contains("responder started");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !started() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = log(&server, service);
    assert!(started(), "{text}");
    assert!(text.contains(" INFO "), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes on a pipe: {text:?}");
}
