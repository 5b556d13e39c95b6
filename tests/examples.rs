//! The cargo examples under `docs/examples/` run, against a throwaway `redis-server`, so they cannot rot: the
//! responder serves while the requester calls; the two-program flow answers a call by hand. They are the built
//! example binaries (`cargo build --examples`; `cargo test` and `scripts/test.sh` build them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{ChildGuard, RedisServer, finish, redcall_bin};

const DEADLINE: Duration = Duration::from_secs(30);

/// The built example `name` (next to the `redcall` binary, in `examples/`).
fn example(name: &str) -> PathBuf {
    let bin = redcall_bin();
    let path = bin
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --examples` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `name args...` with `REDIS_URL` pointing at `server`, output piped.
fn command(server: &RedisServer, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(example(name));
    cmd.args(args)
        .env("REDIS_URL", server.url())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_requester_gets_its_receipt_from_the_responder() {
    let server = RedisServer::start();
    let mut responder = ChildGuard::spawn(&mut command(&server, "responder", &[]));
    // Its first line says it serves (its consumer group exists from then on).
    let stdout = responder.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines
        .recv_timeout(DEADLINE)
        .expect("the responder's first line");
    assert!(first.starts_with("serving orders"), "{first}");

    let requester = ChildGuard::spawn(&mut command(&server, "requester", &[]));
    let out = finish(requester, DEADLINE, "the requester example");
    assert_success(&out, "requester");
    assert_eq!(text(&out.stdout).trim(), "2 x tea: 500 cents");

    // Ctrl-C (SIGINT, by PID) stops the responder cleanly.
    let pid = responder.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = finish(responder, DEADLINE, "the responder example");
    assert_success(&out, "responder");
    let last = lines
        .recv_timeout(DEADLINE)
        .expect("the responder's last line");
    assert_eq!(last, "stopped (0 unfinished)");
}

#[test]
fn the_two_program_flow_answers_by_hand() {
    let server = RedisServer::start();
    let caller = ChildGuard::spawn(&mut command(
        &server,
        "two_programs",
        &["call", "request_123"],
    ));
    let answerer = ChildGuard::spawn(&mut command(
        &server,
        "two_programs",
        &["answer", "request_123"],
    ));
    let out = finish(answerer, DEADLINE, "two_programs answer");
    assert_success(&out, "answer");
    let said = text(&out.stdout);
    assert!(
        said.contains("request_123: SomeFunction Question { a: 1 }"),
        "{said}"
    );
    let out = finish(caller, DEADLINE, "two_programs call");
    assert_success(&out, "call");
    assert_eq!(
        text(&out.stdout).trim(),
        "request_123: got Answer { answer: 42 }"
    );

    let usage = command(&server, "two_programs", &[]).output().expect("run");
    assert_eq!(usage.status.code(), Some(2));
}
