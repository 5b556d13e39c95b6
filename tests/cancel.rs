//! Cancellation by id (issue 17): a request not yet started is never run (answered `cancelled` and acked), a
//! running handler sees the cancel, a late result is dropped in favour of the `cancelled` reply (first stored reply
//! wins), the caller gets `Cancelled` at once, and an unknown id is `NotFound`.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ChildGuard, TestEnv, finish, pending_count, redcall_bin, run_cli, wait_until};
use redcall::admin::RequestState;
use redcall::{ErrorKind, HandlerError, RequestContext};
use serde_json::{Value, json};

fn requests_key(env: &TestEnv) -> String {
    format!("{{redcall:{}}}:requests", env.service())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_it_starts_is_never_run() {
    let env = TestEnv::new();
    let requester = env.requester();
    // Nobody serves yet: the request waits in the stream.
    let pending = requester
        .send("early-1", "count", &json!({}), Duration::from_secs(30))
        .await
        .expect("send");
    let started = Instant::now();
    requester.cancel("early-1").await.expect("cancel");
    let err = pending
        .wait::<Value>()
        .await
        .expect_err("cancelled before it ran");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(err.to_string().contains("early-1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    let status = env.admin().status("early-1").await.expect("status");
    assert_eq!(status.state, RequestState::Cancelled, "{status:?}");

    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let _responder = env
        .responder()
        .handler("count", move |_ctx: RequestContext, _p: Value| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>(json!("ran")) }
        })
        .start()
        .await
        .expect("start responder");
    // A later request is read after the cancelled one: once it is answered, the cancelled one was dealt with.
    let after: Value = requester
        .request("after-1", "count", &json!({}), Duration::from_secs(10))
        .await
        .expect("the next request");
    assert_eq!(after, json!("ran"));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the later request ran");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending_count(&env.server, &requests_key(&env), "workers") == 0
        })
        .await,
        "the cancelled entry is acknowledged"
    );
    // A cancel after the end is refused, and the first reply stays.
    let again = requester.cancel("after-1").await.expect_err("answered");
    assert_eq!(again.kind(), ErrorKind::AlreadyAnswered, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_handler_sees_its_cancellation_and_its_late_result_is_dropped() {
    let env = TestEnv::new();
    let started = Arc::new(AtomicBool::new(false));
    // When the handler saw the cancel.
    let observed_after = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (s, o) = (started.clone(), observed_after.clone());
    let _responder = env
        .responder()
        .handler("long", move |ctx: RequestContext, _p: Value| {
            let (s, o) = (s.clone(), o.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = ctx.cancelled() => {
                        *o.lock().expect("lock") = Some(Instant::now());
                    }
                    _ = tokio::time::sleep(Duration::from_secs(20)) => {}
                }
                assert!(ctx.is_cancelled());
                // It answers anyway: this result must be dropped.
                Ok::<_, HandlerError>(json!("finished anyway"))
            }
        })
        .start()
        .await
        .expect("start responder");
    let requester = env.requester();
    let pending = requester
        .send("running-1", "long", &json!({}), Duration::from_secs(30))
        .await
        .expect("send");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            started.load(Ordering::SeqCst)
        })
        .await,
        "the handler never started"
    );
    let cancelled_at = Instant::now();
    pending.cancel().await.expect("cancel");
    let err = pending.wait::<Value>().await.expect_err("cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    assert!(
        wait_until(Duration::from_secs(5), || async {
            observed_after.lock().expect("lock").is_some()
        })
        .await,
        "the handler never saw the cancel"
    );
    let seen = observed_after
        .lock()
        .expect("lock")
        .map(|at| at.saturating_duration_since(cancelled_at))
        .expect("seen");
    eprintln!("handler saw the cancel {seen:?} after it was made");
    // Issue 17: "within ~100 ms, without polling Redis per request" (measured: under 1 ms on loopback); the bound
    // leaves room for a loaded machine and still fails a per-second poll.
    assert!(seen < Duration::from_millis(500), "{seen:?}");
    // The late result was not stored: the stored reply is still the cancel.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pending_count(&env.server, &requests_key(&env), "workers") == 0
        })
        .await,
        "acknowledged once the handler returned"
    );
    let stored = requester
        .stored_reply::<Value>("running-1")
        .await
        .expect_err("the stored reply is the cancel");
    assert_eq!(stored.kind(), ErrorKind::Cancelled, "{stored}");
}

/// Cancels racing completions: for every request exactly one reply is stored, and the caller's outcome, the
/// cancel's outcome and the stored reply agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_racing_completion_ends_one_way_for_everyone() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("nap", |_ctx: RequestContext, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(json!("done"))
        })
        .start()
        .await
        .expect("start responder");
    let requester = env.requester();
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let requester = requester.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("race-{i}");
            let pending = requester
                .send(&id, "nap", &(i % 8), Duration::from_secs(20))
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis((i * 7) % 11)).await;
            let cancel = requester.cancel(&id).await;
            let waited = pending.wait::<Value>().await;
            let stored = requester.stored_reply::<Value>(&id).await;
            (id, cancel, waited, stored)
        }));
    }
    let (mut cancelled, mut completed) = (0, 0);
    for task in tasks {
        let (id, cancel, waited, stored) = task.await.expect("task");
        match cancel {
            Ok(()) => {
                cancelled += 1;
                let waited = waited.expect_err("cancelled");
                assert_eq!(waited.kind(), ErrorKind::Cancelled, "{id}: {waited}");
                let stored = stored.expect_err("the stored reply is the cancel");
                assert_eq!(stored.kind(), ErrorKind::Cancelled, "{id}: {stored}");
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::AlreadyAnswered, "{id}: {err}");
                completed += 1;
                assert_eq!(waited.expect("the result"), json!("done"), "{id}");
                assert_eq!(stored.expect("stored"), Some(json!("done")), "{id}");
            }
        }
    }
    eprintln!("{cancelled} cancelled, {completed} completed first");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pending_count(&env.server, &requests_key(&env), "workers") == 0
        })
        .await,
        "every entry acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_id_is_not_found() {
    let env = TestEnv::new();
    let err = env
        .requester()
        .cancel("never-made")
        .await
        .expect_err("no such request");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let out = run_cli(&env.server, env.service(), &["cancel", "never-made"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
}

/// `redcall cancel ID` from another process ends a `redcall call` waiting on a running handler: the call exits 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cancels_a_call() {
    let env = TestEnv::new();
    let _serve = env.serve("canceller", &[], &[]);
    let call = ChildGuard::spawn(
        Command::new(redcall_bin())
            .args(["--url", &env.server.url(), "--service", env.service()])
            .args([
                "call",
                "sleep",
                r#"{"ms": 20000}"#,
                "--id",
                "cli-1",
                "--timeout",
                "30s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let admin = env.admin();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            matches!(
                admin.status("cli-1").await.map(|s| s.state),
                Ok(RequestState::Pending { .. })
            )
        })
        .await,
        "the call never reached the handler"
    );
    let out = run_cli(&env.server, env.service(), &["cancel", "cli-1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let called = finish(call, Duration::from_secs(10), "redcall call");
    assert_eq!(called.status.code(), Some(9), "{called:?}");
    let out = run_cli(&env.server, env.service(), &["status", "cli-1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancelled"),
        "{out:?}"
    );
}
