//! Params and reply data from a file (`@PATH`) or stdin (`-`), through the built binary: the way past the kernel's
//! 128 KiB cap on one argument, up to the payload limit and not beyond it.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ChildGuard, RedisServer, finish, redcall_bin, spawn_serve};
use serde_json::{Value, json};

/// Deadline for one CLI invocation (generous: the machine is shared).
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// `redcall --url <server> --service <service> <args...>`, its output piped.
fn redcall(server: &RedisServer, service: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` with `input` on its stdin (none: stdin is /dev/null), to completion (bounded).
fn run(mut cmd: Command, input: Option<&[u8]>) -> Output {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = ChildGuard::spawn(&mut cmd);
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        // Written from a thread: the child may fill its stdout pipe before reading all of stdin.
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    // The replies here are big: read stdout while waiting, or the child blocks on a full pipe.
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
    });
    let mut out = finish(child, RUN_DEADLINE, &what);
    out.stdout = reader.join().expect("reader").expect("read stdout");
    out
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(500)]),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(500)])
        )
    })
}

/// Params of about `bytes` bytes of JSON.
fn big_params(bytes: usize) -> Value {
    json!({ "blob": "x".repeat(bytes), "n": 1 })
}

/// A ~900 KB params file round-trips through `call @file` and `call -` (argv caps one argument at 128 KiB, so
/// neither worked before); over the payload limit the typed payload error comes back with exit 2.
#[test]
fn big_params_from_a_file_or_stdin_round_trip() {
    let server = RedisServer::start();
    let service = "cli-input";
    let _serve = spawn_serve(&server, service, "input-1", &[], &[]);

    let params = big_params(900_000);
    let text = serde_json::to_vec(&params).expect("encode");
    assert!(text.len() > 128 * 1024 * 6, "{}", text.len());
    let path = server.dir().join("params.json");
    std::fs::write(&path, &text).expect("write params");
    let at_path = format!("@{}", path.display());

    let out = run(
        redcall(
            &server,
            service,
            &["call", "echo", &at_path, "--timeout", "20"],
        ),
        None,
    );
    assert_exit(&out, 0);
    assert_eq!(json_of(&out), params, "the reply to @file is the params");

    let out = run(
        redcall(
            &server,
            service,
            &["--json", "call", "echo", "-", "--timeout", "20"],
        ),
        Some(&text),
    );
    assert_exit(&out, 0);
    assert_eq!(
        json_of(&out)["reply"],
        params,
        "the reply to - is the params"
    );

    // Over the limit (1 MiB by default): nothing is sent, the typed error says so, exit 2.
    let over = serde_json::to_vec(&big_params(1_100_000)).expect("encode");
    let over_path = server.dir().join("over.json");
    std::fs::write(&over_path, &over).expect("write params");
    let out = run(
        redcall(
            &server,
            service,
            &[
                "--json",
                "call",
                "echo",
                &format!("@{}", over_path.display()),
                "--id",
                "too-big",
            ],
        ),
        None,
    );
    assert_exit(&out, 2);
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON error on stderr");
    assert_eq!(err["error"]["kind"], "payload_too_large", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("payload limit"), "{message}");
    assert_eq!(
        server.cli(&["EXISTS", "{redcall:cli-input}:req:too-big"]),
        "0"
    );

    // The same in text.
    let out = run(
        redcall(&server, service, &["call", "echo", "-", "--id", "too-big"]),
        Some(&over),
    );
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("over the payload limit"), "{stderr}");
}

/// `@PATH` that cannot be read, stdin that is not JSON, and `@` alone are usage errors (2) naming the file and
/// the reason; a quoted JSON string starting with `@` is a string, not a file.
#[test]
fn unreadable_files_and_bad_input_are_usage_errors() {
    let server = RedisServer::start();
    let service = "cli-input-bad";
    let missing = server.dir().join("no-such-params.json");
    let out = run(
        redcall(
            &server,
            service,
            &["call", "echo", &format!("@{}", missing.display())],
        ),
        None,
    );
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");

    // A directory is not readable as a file.
    let dir = server.dir().display().to_string();
    let out = run(
        redcall(
            &server,
            service,
            &["--json", "reply", "some-id", &format!("@{dir}")],
        ),
        None,
    );
    assert_exit(&out, 2);
    let err: Value = serde_json::from_slice(&out.stderr).expect("one JSON error on stderr");
    assert_eq!(err["error"]["kind"], "usage", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&dir),
        "{err}"
    );

    let bad = server.dir().join("bad.json");
    std::fs::write(&bad, b"{not json").expect("write");
    let out = run(
        redcall(
            &server,
            service,
            &["call", "echo", &format!("@{}", bad.display())],
        ),
        None,
    );
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("not valid JSON"),
        "{stderr}"
    );

    for (input, what) in [(&b""[..], "empty stdin"), (&b"\xff\xfe"[..], "not UTF-8")] {
        let out = run(
            redcall(&server, service, &["call", "echo", "-"]),
            Some(input),
        );
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stdin"), "{what}: {stderr}");
    }

    let out = run(redcall(&server, service, &["call", "echo", "@"]), None);
    assert_exit(&out, 2);

    // Nothing of the above reached Redis.
    assert_eq!(
        server.cli(&["EXISTS", "{redcall:cli-input-bad}:requests"]),
        "0"
    );
}

/// `reply ID @file` and `reply ID -` answer a waiting call with the data read; a JSON string starting with `@`
/// (quoted, as JSON strings are) is sent as that string.
#[test]
fn reply_data_from_a_file_or_stdin() {
    let server = RedisServer::start();
    let service = "cli-input-reply";
    let data = big_params(400_000);
    let path = server.dir().join("data.json");
    std::fs::write(&path, serde_json::to_vec(&data).expect("encode")).expect("write");

    for (n, source, input) in [
        (1, format!("@{}", path.display()), None),
        (
            2,
            "-".to_owned(),
            Some(serde_json::to_vec(&data).expect("encode")),
        ),
    ] {
        let id = format!("by-hand-{n}");
        let caller = ChildGuard::spawn(
            redcall(
                &server,
                service,
                &[
                    "call",
                    "SomeFunction",
                    r#""@home""#,
                    "--id",
                    &id,
                    "--timeout",
                    "20",
                ],
            )
            .stdin(Stdio::null()),
        );
        // Wait until the request is there (`info` exits 5 until then), and check its params are the string.
        let end = std::time::Instant::now() + RUN_DEADLINE;
        let info = loop {
            let out = run(redcall(&server, service, &["--json", "info", &id]), None);
            if out.status.success() {
                break json_of(&out);
            }
            assert_exit(&out, 5);
            assert!(std::time::Instant::now() < end, "{id} never appeared");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(info["params"], json!("@home"), "{info}");

        let out = run(
            redcall(&server, service, &["--json", "reply", &id, &source]),
            input.as_deref(),
        );
        assert_exit(&out, 0);
        assert_eq!(
            json_of(&out),
            json!({"id": id, "replied": true, "error_code": null})
        );

        let mut caller = caller;
        let stdout = caller.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
        });
        let mut out = finish(caller, RUN_DEADLINE, "the waiting call");
        out.stdout = reader.join().expect("reader").expect("read");
        assert_exit(&out, 0);
        assert_eq!(
            json_of(&out),
            data,
            "the caller got the data read by `reply` ({source})"
        );
    }
}
