//! Progress (issue 17): a handler's `ctx.progress(..)` reaches a caller watching `PendingReply::progress()`, the
//! last value shows in `status`, `redcall call --progress` prints each one, and requests that report nothing leave
//! no trace.

mod common;

use std::time::Duration;

use common::{TestEnv, run_cli};
use redcall::{HandlerError, RequestContext};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_caller_sees_every_update_then_the_reply() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("steps", |ctx: RequestContext, n: u64| async move {
            for step in 1..=n {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ctx.progress(&json!({ "step": step }))
                    .await
                    .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
            }
            Ok::<_, HandlerError>(json!("done"))
        })
        .handler("plain", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start responder");
    let requester = env.requester();
    let pending = requester
        .send("steps-1", "steps", &3u64, Duration::from_secs(20))
        .await
        .expect("send");
    let mut updates = pending.progress().await.expect("watch progress");
    let wait = pending.wait::<Value>();
    tokio::pin!(wait);
    let mut seen = Vec::new();
    let reply = loop {
        tokio::select! {
            reply = &mut wait => break reply.expect("reply"),
            update = updates.next::<Value>() => {
                seen.push(update.expect("stream open").expect("decodes"));
            }
        }
    };
    assert_eq!(reply, json!("done"));
    // The reply may overtake the last update's delivery: take what is left.
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(2), updates.next::<Value>()).await {
            Ok(Some(update)) => seen.push(update.expect("decodes")),
            _ => break,
        }
    }
    assert_eq!(
        seen,
        vec![json!({"step": 1}), json!({"step": 2}), json!({"step": 3})]
    );
    let status = env.admin().status("steps-1").await.expect("status");
    let last = status.last_progress.expect("last progress kept");
    let last: Value = redcall::protocol::decode(&last.data, "progress").expect("decode");
    assert_eq!(last, json!({"step": 3}));

    // A request that reports nothing leaves no progress key behind.
    let _: Value = requester
        .request("plain-1", "plain", &json!(1), Duration::from_secs(10))
        .await
        .expect("plain");
    let mut con = env.redis().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{{redcall:{}}}:progress:plain-1", env.service()))
        .query_async(&mut con)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
    let status = env.admin().status("plain-1").await.expect("status");
    assert!(status.last_progress.is_none());
}

/// A watcher that starts after some updates were made gets the last one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_watcher_starts_from_the_last_update() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("report", |ctx: RequestContext, _v: Value| async move {
            ctx.progress(&"half way")
                .await
                .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok::<_, HandlerError>(json!("done"))
        })
        .start()
        .await
        .expect("start responder");
    let requester = env.requester();
    let pending = requester
        .send("late-1", "report", &json!({}), Duration::from_secs(20))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut updates = pending.progress().await.expect("watch progress");
    let first = tokio::time::timeout(Duration::from_secs(5), updates.next::<String>())
        .await
        .expect("an update in time")
        .expect("stream open")
        .expect("decodes");
    assert_eq!(first, "half way");
    assert_eq!(pending.wait::<Value>().await.expect("reply"), json!("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_progress_and_status_shows_the_last() {
    let env = TestEnv::new();
    let _serve = env.serve("progress", &[], &[]);
    let out = run_cli(
        &env.server,
        env.service(),
        &[
            "call",
            "progress",
            r#"{"steps": 3, "ms": 100}"#,
            "--id",
            "cli-progress-1",
            "--progress",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .collect();
    assert!(
        lines.last().is_some_and(|l| l.contains(r#""step":3"#)),
        "{stderr}"
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply, json!({"steps": 3}));
    let status = run_cli(&env.server, env.service(), &["status", "cli-progress-1"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("progress") && text.contains(r#""step":3"#),
        "{text}"
    );
}

/// A `call --progress` whose progress watch cannot start (here an ACL user may not subscribe to progress channels)
/// still waits for its reply, with a warning: the request is sent by then, and giving up on it would make the
/// caller run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_the_reply_when_progress_cannot_be_watched() {
    let env = TestEnv::new();
    let _serve = env.serve("progress", &[], &[]);
    let tag = format!("{{redcall:{}}}", env.service());
    env.server.cli(&[
        "ACL",
        "SETUSER",
        "no-progress",
        "on",
        ">pw",
        "~*",
        &format!("&{tag}:chan:*"),
        "+@all",
    ]);
    let url = format!("redis://no-progress:pw@127.0.0.1:{}", env.server.port());
    let out = std::process::Command::new(common::redcall_bin())
        .args(["--url", &url, "--service", env.service()])
        .args([
            "call",
            "progress",
            r#"{"steps": 2, "ms": 50}"#,
            "--progress",
            "--timeout",
            "20s",
        ])
        .output()
        .expect("run redcall");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply, json!({"steps": 2}));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot watch progress"), "{stderr}");
}

/// Updates travel on their own connection and may arrive after the reply: once the reply came, `rest` hands out
/// what is still due, and always the handler's last update (`redcall call --progress` prints these after the reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_reply_the_rest_brings_the_last_update() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("steps", |ctx: RequestContext, n: u64| async move {
            for step in 1..=n {
                ctx.progress(&step)
                    .await
                    .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
            }
            Ok::<_, HandlerError>(json!("done"))
        })
        .start()
        .await
        .expect("start");
    let requester = env.requester();
    let pending = requester
        .send("rest-1", "steps", &5u64, Duration::from_secs(20))
        .await
        .expect("send");
    let mut updates = pending.progress().await.expect("watch progress");
    // Not reading the updates while waiting: all of them are due once the reply is here.
    let reply: Value = pending.wait().await.expect("reply");
    assert_eq!(reply, json!("done"));
    let rest: Vec<u64> = updates
        .rest::<u64>()
        .await
        .into_iter()
        .map(|u| u.expect("decodes"))
        .collect();
    assert_eq!(rest.last(), Some(&5), "{rest:?}");
    assert!(rest.windows(2).all(|w| w[0] < w[1]), "in order: {rest:?}");
    assert!(updates.rest::<u64>().await.is_empty(), "handed out once");
}

/// A request under an id used before (its record expired) starts without the earlier request's last progress: the
/// add clears it with the stored reply and last error, so neither `status` nor a progress watch shows the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_starts_without_the_old_progress() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("report", |ctx: RequestContext, _p: Value| async move {
            ctx.progress(&"old")
                .await
                .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
            Ok::<_, HandlerError>(json!("done"))
        })
        .start()
        .await
        .expect("start");
    let requester = env.requester();
    let first: Value = requester
        .request("reused-1", "report", &json!({}), Duration::from_secs(20))
        .await
        .expect("first reply");
    assert_eq!(first, json!("done"));
    assert!(
        env.admin()
            .status("reused-1")
            .await
            .expect("status")
            .last_progress
            .is_some()
    );
    // The record expires (the last progress, kept as long as the reply, may outlive it).
    env.server
        .cli(&["DEL", &requester.keys().record("reused-1")]);
    // The same id again, for a function nobody serves: it stays queued, with no progress of its own.
    let pending = requester
        .send("reused-1", "nobody", &json!({}), Duration::from_secs(20))
        .await
        .expect("the id is free again");
    let status = env.admin().status("reused-1").await.expect("status");
    assert!(status.last_progress.is_none(), "{status:?}");
    let mut updates = pending.progress().await.expect("watch");
    assert!(updates.rest::<String>().await.is_empty(), "an old update");
}

/// A replayed request starts without the last progress of the run that failed: `REPLAY` clears it with the stored
/// reply and last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_starts_without_the_old_progress() {
    let env = TestEnv::new();
    let responder = env
        .responder()
        .max_deliveries(1)
        .handler("half", |ctx: RequestContext, _p: Value| async move {
            ctx.progress(&"half way")
                .await
                .map_err(|e| HandlerError::fail("progress", e.to_string()))?;
            Err::<Value, _>(HandlerError::retry("gives up"))
        })
        .start()
        .await
        .expect("start");
    let err = env
        .requester()
        .request::<_, Value>("replayed-1", "half", &json!({}), Duration::from_secs(20))
        .await
        .expect_err("dead-lettered");
    assert_eq!(err.kind(), redcall::ErrorKind::DeadLettered, "{err}");
    responder.shutdown().await.expect("shutdown");
    let admin = env.admin();
    let status = admin.status("replayed-1").await.expect("status");
    assert!(status.last_progress.is_some(), "{status:?}");

    let report = admin
        .replay_all_dead_letters(&redcall::admin::ReplayOptions::default(), |_| {})
        .await
        .expect("replay");
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    let status = admin.status("replayed-1").await.expect("status");
    assert!(status.last_progress.is_none(), "{status:?}");
}
