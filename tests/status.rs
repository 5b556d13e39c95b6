//! A request's whole story by its id (`Admin::status`, `redcall status`), `redcall dlq show REQUEST_ID`, and the
//! hint a timed-out `redcall call` gives when nobody serves the service; against real `redis-server` processes and
//! the built binary.
//!
//! DESIGN The parts (the CLI's `status`, `dlq show`, errors under `--json`), 11 (replay: what became of a replayed
//! request), 16 (observability: is anyone serving?).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ChildGuard, TestEnv, finish, redcall_bin, wait_until};
use redcall::admin::{Answer, RequestState, RequestStatus};
use redcall::protocol::ReplaySource;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};

/// Timeout of requests that must stay in flight for the whole test.
const LONG: Duration = Duration::from_secs(120);
/// Deadline for conditions polled across processes (generous: the machine is shared).
const WAIT: Duration = Duration::from_secs(30);
/// Deadline for one CLI run.
const RUN: Duration = Duration::from_secs(30);

/// Runs `redcall --url <server> --service <service> <args>` to completion (bounded), off the async workers.
async fn cli(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &env.server.url(), "--service", env.service()])
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || finish(ChildGuard::spawn(&mut cmd), RUN, &what))
        .await
        .expect("cli task")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `redcall --json status ID`, which must succeed; its JSON.
async fn status_json(env: &TestEnv, id: &str) -> Value {
    let out = cli(env, &["--json", "status", id]).await;
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// `redcall status ID` as text, which must succeed.
async fn status_text(env: &TestEnv, id: &str) -> String {
    let out = cli(env, &["status", id]).await;
    assert_exit(&out, 0);
    text(&out.stdout)
}

/// Polls the library's status of `id` until `done` holds; the last status.
async fn await_status(
    env: &TestEnv,
    id: &str,
    done: impl Fn(&RequestStatus) -> bool,
) -> RequestStatus {
    let admin = env.admin();
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let status = admin.status(id).await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "status of {id} never reached the state: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds a request and stops waiting for it (the request stays in Redis).
async fn send(env: &TestEnv, id: &str, func: &str, params: &Value, timeout: Duration) {
    let pending = env
        .requester()
        .send(id, func, params, timeout)
        .await
        .expect("send");
    drop(pending);
}

/// The ids of the requests stream's entries, oldest first.
async fn stream_entries(env: &TestEnv, stream: &str) -> Vec<String> {
    let mut con = env.redis().await;
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    range.ids.into_iter().map(|e| e.id).collect()
}

/// Waits until the service's consumer group exists (a responder started).
async fn await_group(env: &TestEnv) {
    let stream = env.client.keys(env.service()).requests().to_owned();
    let server = &env.server;
    let ok = wait_until(WAIT, || {
        let stream = stream.clone();
        async move {
            server
                .cli(&["XINFO", "GROUPS", &stream])
                .contains("workers")
        }
    })
    .await;
    assert!(ok, "no responder created its group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_shows_what_it_asked_for_and_its_entry() {
    let env = TestEnv::new();
    let params = json!({"order": 17, "items": ["a", "b"]});
    send(&env, "q-1", "echo", &params, LONG).await;

    // No responder has ever started: the stream has no group.
    let status = env.admin().status("q-1").await.expect("status");
    assert_eq!(status.state, RequestState::Queued { group: None });
    let request = status.request.as_ref().expect("the record");
    assert_eq!(request.func_key, "echo");
    assert_eq!(request.params_size, request.params.len());
    assert!(request.params_size > 0);
    assert!(request.deadline_ms > request.created_ms);
    assert_eq!(request.replay, None);
    let entries = stream_entries(&env, env.admin().keys().requests()).await;
    assert_eq!(
        status.entry_id.as_ref(),
        entries.first(),
        "the request's own entry"
    );

    let value = status_json(&env, "q-1").await;
    assert_eq!(value["state"], json!({"kind": "queued", "group": null}));
    assert_eq!(value["request"]["params"], params);
    assert_eq!(value["request"]["func_key"], "echo");
    assert_eq!(value["entry_id"], json!(entries[0]));
    assert!(value["reply"].is_null());

    // A group that has not read it yet: queued for that group.
    let stream = env.admin().keys().requests().to_owned();
    env.server
        .cli(&["XGROUP", "CREATE", &stream, "workers", "0"]);
    let value = status_json(&env, "q-1").await;
    assert_eq!(
        value["state"],
        json!({"kind": "queued", "group": "workers"})
    );
    let shown = status_text(&env, "q-1").await;
    assert!(
        shown.contains("queued: not yet delivered to group \"workers\""),
        "{shown}"
    );
    assert!(shown.contains("function    echo"), "{shown}");

    // Among other requests, the entry found is still its own.
    for i in 0..5 {
        send(&env, &format!("other-{i}"), "echo", &json!(i), LONG).await;
    }
    // An entry naming the same id with another envelope (an older request of that id) is not taken for it.
    env.server.cli(&[
        "XADD",
        &stream,
        "*",
        "id",
        "q-2",
        "env",
        "an older envelope",
    ]);
    send(&env, "q-2", "echo", &json!(2), LONG).await;
    let entries = stream_entries(&env, &stream).await;
    let status = env.admin().status("q-2").await.expect("status");
    assert_eq!(status.entry_id.as_ref(), entries.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_being_handled_is_pending_with_its_consumer() {
    let env = TestEnv::new();
    let _serve = env.serve("slowpoke", &[], &[]);
    await_group(&env).await;
    send(&env, "slow-1", "sleep", &json!({"ms": 60_000}), LONG).await;

    let status = await_status(&env, "slow-1", |s| {
        matches!(s.state, RequestState::Pending { .. })
    })
    .await;
    let RequestState::Pending {
        group,
        consumer,
        deliveries,
        ..
    } = &status.state
    else {
        unreachable!()
    };
    assert_eq!(
        (group.as_str(), consumer.as_str(), *deliveries),
        ("workers", "slowpoke", 1)
    );
    assert!(status.reply.is_none());

    let value = status_json(&env, "slow-1").await;
    assert_eq!(value["state"]["kind"], "pending");
    assert_eq!(value["state"]["consumer"], "slowpoke");
    assert_eq!(value["state"]["deliveries"], 1);
    let shown = status_text(&env, "slow-1").await;
    assert!(
        shown.contains("pending: held by consumer \"slowpoke\" of group \"workers\""),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_show_their_reply_ok_or_error() {
    let env = TestEnv::new();
    let _serve = env.serve("answers", &[], &[]);
    await_group(&env).await;

    let out = cli(&env, &["call", "echo", r#"{"x": [1, 2]}"#, "--id", "ok-1"]).await;
    assert_exit(&out, 0);
    let status = env.admin().status("ok-1").await.expect("status");
    assert_eq!(status.state, RequestState::Answered { answer: Answer::Ok });
    let value = status_json(&env, "ok-1").await;
    assert_eq!(
        value["state"],
        json!({"kind": "answered", "answer": {"status": "ok"}})
    );
    assert_eq!(value["reply"]["status"], "ok");
    assert_eq!(value["reply"]["data"], json!({"x": [1, 2]}));
    let shown = status_text(&env, "ok-1").await;
    assert!(shown.contains("answered: ok"), "{shown}");
    assert!(shown.contains(r#"reply       ok: {"x":[1,2]}"#), "{shown}");

    let out = cli(&env, &["call", "fail", "null", "--id", "err-1"]).await;
    assert_exit(&out, 4);
    let status = env.admin().status("err-1").await.expect("status");
    assert_eq!(
        status.state,
        RequestState::Answered {
            answer: Answer::Error {
                code: "demo_failure".to_owned(),
                message: "the fail handler always fails".to_owned(),
            }
        }
    );
    let value = status_json(&env, "err-1").await;
    assert_eq!(value["state"]["answer"]["code"], "demo_failure");
    assert_eq!(value["reply"]["status"], "error");
    let shown = status_text(&env, "err-1").await;
    assert!(
        shown.contains("answered: error [demo_failure] the fail handler always fails"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_request_names_its_dead_letter_and_dlq_show_takes_its_id() {
    let env = TestEnv::new();
    let _serve = env.serve(
        "panicky",
        &[],
        &["--max-deliveries", "1", "--visibility-timeout", "300ms"],
    );
    await_group(&env).await;
    let out = cli(
        &env,
        &["call", "panic", "{}", "--id", "dl-1", "--timeout", "30s"],
    )
    .await;
    assert_exit(&out, 4);

    let dead = stream_entries(&env, env.admin().keys().dead_letters()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let status = env.admin().status("dl-1").await.expect("status");
    assert_eq!(
        status.state,
        RequestState::DeadLettered {
            dead_letter_entry_id: Some(dead[0].clone()),
            reason: "max_deliveries_exceeded".to_owned(),
        }
    );
    let entries = stream_entries(&env, env.admin().keys().requests()).await;
    assert_eq!(status.entry_id.as_ref(), entries.first());
    let value = status_json(&env, "dl-1").await;
    assert_eq!(value["state"]["kind"], "dead_lettered");
    assert_eq!(value["state"]["dead_letter_entry_id"], json!(dead[0]));
    assert_eq!(value["reply"]["status"], "dead_lettered");

    // `dlq show` by request id and by dead-letter id show the same dead letter.
    for id in ["dl-1", dead[0].as_str()] {
        let out = cli(&env, &["--json", "dlq", "show", id]).await;
        assert_exit(&out, 0);
        let shown: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(shown["dead_id"], json!(dead[0]), "dlq show {id}");
        assert_eq!(shown["request_id"], "dl-1");
    }
    let out = cli(&env, &["dlq", "show", "no-such-request"]).await;
    assert_exit(&out, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_looks_like_an_entry_id_is_also_a_request_id_for_dlq_show() {
    let env = TestEnv::new();
    let _serve = env.serve("strict", &[], &[]);
    await_group(&env).await;
    // An unknown function is dead-lettered at once, answered with the error `unknown_function`.
    let out = cli(&env, &["call", "no_such_function", "{}", "--id", "123-4"]).await;
    assert_exit(&out, 4);
    let dead = stream_entries(&env, env.admin().keys().dead_letters()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_ne!(dead[0], "123-4");

    let out = cli(&env, &["--json", "dlq", "show", "123-4"]).await;
    assert_exit(&out, 0);
    let shown: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["dead_id"], json!(dead[0]));
    assert_eq!(shown["reason"], "unknown_function");

    let value = status_json(&env, "123-4").await;
    assert_eq!(
        value["state"],
        json!({"kind": "dead_lettered", "dead_letter_entry_id": dead[0], "reason": "unknown_function"})
    );
    assert_eq!(value["reply"]["code"], "unknown_function");

    // Neither a dead letter nor a request of that id: not found.
    let out = cli(&env, &["--json", "dlq", "show", "999-9"]).await;
    assert_exit(&out, 5);
    let error: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(error["error"]["kind"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_without_a_reply_is_expired() {
    let env = TestEnv::new();
    send(
        &env,
        "late-1",
        "echo",
        &json!(1),
        Duration::from_millis(300),
    )
    .await;
    let status = await_status(&env, "late-1", |s| s.state == RequestState::Expired).await;
    let request = status.request.expect("record");
    assert!(status.server_time_ms >= request.deadline_ms);
    assert!(status.entry_id.is_some(), "still queued in the stream");
    let value = status_json(&env, "late-1").await;
    assert_eq!(value["state"], json!({"kind": "expired"}));
    let shown = status_text(&env, "late-1").await;
    assert!(
        shown.contains("expired: the deadline passed without a reply"),
        "{shown}"
    );

    // A responder that reads it now answers `expired` without running it: still expired, with that reply.
    let _serve = env.serve("too-late", &[], &[]);
    let answered = await_status(&env, "late-1", |s| s.reply.is_some()).await;
    assert_eq!(answered.state, RequestState::Expired);
    let value = status_json(&env, "late-1").await;
    assert_eq!(value["reply"]["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_is_not_found() {
    let env = TestEnv::new();
    let status = env.admin().status("never-made").await.expect("status");
    assert_eq!(status.state, RequestState::Unknown);
    assert!(status.request.is_none());

    let out = cli(&env, &["status", "never-made"]).await;
    assert_exit(&out, 5);
    assert!(
        text(&out.stderr).contains("never-made"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&env, &["--json", "status", "never-made"]).await;
    assert_exit(&out, 5);
    let error: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(error["error"]["kind"], "not_found");
    assert_eq!(error["error"]["id"], "never-made");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_replay_status_shows_the_replay_and_the_new_state() {
    let env = TestEnv::new();
    let serve = env.serve(
        "retrier",
        &[],
        &["--max-deliveries", "1", "--visibility-timeout", "300ms"],
    );
    await_group(&env).await;
    let out = cli(
        &env,
        &["call", "retry", "{}", "--id", "again-1", "--timeout", "30s"],
    )
    .await;
    assert_exit(&out, 4);
    let first = env.admin().status("again-1").await.expect("status");
    let RequestState::DeadLettered {
        dead_letter_entry_id: Some(first_dead),
        ..
    } = &first.state
    else {
        panic!("not dead-lettered: {first:?}")
    };
    assert!(first.request.as_ref().expect("record").replay.is_none());
    // With nobody serving, the replay waits in the stream.
    drop(serve);
    let out = cli(&env, &["dlq", "replay", first_dead]).await;
    assert_exit(&out, 0);

    let replayed = env.admin().status("again-1").await.expect("status");
    assert_eq!(
        replayed.state,
        RequestState::Queued {
            group: Some("workers".to_owned())
        }
    );
    let replay = replayed
        .request
        .as_ref()
        .and_then(|r| r.replay.clone())
        .expect("replay info");
    assert_eq!(
        (replay.count, replay.source, replay.from.as_str()),
        (1, ReplaySource::DeadLetter, first_dead.as_str())
    );
    let entries = stream_entries(&env, env.admin().keys().requests()).await;
    assert_eq!(entries.len(), 2, "the original and the replay");
    assert_eq!(
        replayed.entry_id.as_ref(),
        entries.last(),
        "the replay's entry"
    );
    assert!(replayed.reply.is_none(), "the replay forgot the old reply");
    let value = status_json(&env, "again-1").await;
    assert_eq!(value["request"]["replay"]["count"], 1);
    assert_eq!(value["request"]["replay"]["source"], "dead_letter");
    assert_eq!(value["request"]["replay"]["from"], json!(first_dead));
    let shown = status_text(&env, "again-1").await;
    assert!(
        shown.contains(&format!(
            "replayed    1 time, latest from dead letter {first_dead}"
        )),
        "{shown}"
    );

    // Served again, it fails again: a new dead letter.
    let _serve = env.serve(
        "retrier-2",
        &[],
        &["--max-deliveries", "1", "--visibility-timeout", "300ms"],
    );
    let again = await_status(&env, "again-1", |s| {
        matches!(&s.state, RequestState::DeadLettered { dead_letter_entry_id: Some(d), .. } if d != first_dead)
    })
    .await;
    assert_eq!(again.entry_id.as_ref(), entries.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_hints_when_nobody_serves() {
    let env = TestEnv::new();
    // No responder has ever started.
    let out = cli(&env, &["call", "echo", "{}", "--timeout", "500ms"]).await;
    assert_exit(&out, 3);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "hint: no responder has read from service {:?}",
            env.service()
        )),
        "{err}"
    );
    let out = cli(
        &env,
        &["--json", "call", "echo", "{}", "--timeout", "500ms"],
    )
    .await;
    assert_exit(&out, 3);
    let error: Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    assert_eq!(error["error"]["kind"], "timeout");
    let hint = error["error"]["hint"].as_str().expect("a hint");
    assert!(hint.contains("it has no consumer group"), "{hint}");

    // A responder that stopped reading (killed) more than the call's wait ago.
    let serve = env.serve("gone", &[], &[]);
    await_group(&env).await;
    let out = cli(&env, &["call", "echo", "{}", "--timeout", "10s"]).await;
    assert_exit(&out, 0);
    drop(serve);
    let out = cli(&env, &["--json", "call", "echo", "{}", "--timeout", "5s"]).await;
    assert_exit(&out, 3);
    let error: Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    let hint = error["error"]["hint"].as_str().expect("a hint");
    assert!(
        hint.contains("no responder has read from service") && hint.contains("in the last"),
        "{hint}"
    );
    let read = env.admin().last_read().await.expect("last read");
    assert_eq!((read.groups, read.consumers), (1, 1));
    assert!(!read.read_within(Duration::from_secs(5)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_gives_no_hint_while_a_responder_serves() {
    let env = TestEnv::new();
    let _serve = env.serve("busy", &[], &[]);
    await_group(&env).await;
    // The function exists; it just takes longer than the call waits.
    let out = cli(
        &env,
        &["call", "sleep", r#"{"ms": 5000}"#, "--timeout", "1s"],
    )
    .await;
    assert_exit(&out, 3);
    let err = text(&out.stderr);
    assert!(err.contains("no reply within"), "{err}");
    assert!(!err.contains("hint:"), "{err}");
    let out = cli(
        &env,
        &[
            "--json",
            "call",
            "sleep",
            r#"{"ms": 5000}"#,
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert_exit(&out, 3);
    let error: Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    assert_eq!(error["error"]["kind"], "timeout");
    assert!(error["error"].get("hint").is_none(), "{error}");

    let read = env.admin().last_read().await.expect("last read");
    assert!(read.read_within(Duration::from_secs(5)), "{read:?}");
    assert_eq!(read.freshest.expect("a consumer").consumer, "busy");
}

/// A responder that is alive but has had nothing to read (here the request is delayed past the call's timeout)
/// gives no hint: on Redis before 7.2 its consumer's `idle` is not refreshed by empty reads (nor is the consumer
/// created by one), so reads alone made a live responder look gone ("no responder has read ... in the last 1313 s
/// (is one running?)"); its heartbeat record says it is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_gives_no_hint_while_an_idle_responder_waits() {
    let env = TestEnv::new();
    let _serve = env.serve("idle", &[], &["--heartbeat-interval", "500ms"]);
    await_group(&env).await;
    let live = wait_until(WAIT, || async {
        env.admin().has_responders().await.unwrap_or(false)
    })
    .await;
    assert!(live, "the responder never wrote its heartbeat record");
    let out = cli(
        &env,
        &[
            "--json",
            "call",
            "echo",
            "{}",
            "--delay",
            "20s",
            "--timeout",
            "1s",
        ],
    )
    .await;
    assert_exit(&out, 3);
    let error: Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    assert_eq!(error["error"]["kind"], "timeout");
    assert!(error["error"].get("hint").is_none(), "{error}");
}
