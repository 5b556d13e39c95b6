//! Timeouts and deadlines: a timeout names the id and leaves the request stored; it looks once for a stored reply
//! before giving up; a reply made after the timeout is stored; a request whose deadline passed before any responder
//! started it is not run but answered `expired` and acked; handlers see their deadline and delivery.
//!
//! DESIGN 1 (on timeout, look once for a stored reply, then a timeout error that names the id; the request may
//! still be handled later), 4 (deadlines: each request carries its absolute deadline, an expired one is not
//! started, handlers see their deadline).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{TestEnv, WAIT, pending_count, store_reply_silently, wait_until};
use redcall::{Error, ErrorKind, HandlerError, RequestContext};
use tokio::sync::{Notify, oneshot};

#[tokio::test]
async fn timeout_names_the_id() {
    let env = TestEnv::new();
    let requester = env.requester();

    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = requester
        .request::<_, serde_json::Value>("lonely-42", "echo", &1, timeout)
        .await
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        matches!(&err, Error::Timeout { id, timeout: t } if id == "lonely-42" && *t == timeout)
    );
    assert!(err.to_string().contains("lonely-42"), "{err}");
    assert!(elapsed >= timeout, "returned after {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_secs(10),
        "took {elapsed:?}"
    );
    // The request is still stored: it may be handled later.
    assert_eq!(env.server.cli(&["XLEN", requester.keys().requests()]), "1");
    assert_eq!(env.client.in_flight(), 0);
}

/// A reply stored without a message reaching the waiter (as after a missed pub/sub message) is found by the one
/// look at the stored reply when the time is up: no timeout error.
#[tokio::test]
async fn timeout_looks_once_for_a_stored_reply() {
    let env = TestEnv::new();
    let requester = env.requester();
    let pending = requester
        .send("missed-1", "echo", &1, Duration::from_millis(500))
        .await
        .unwrap();

    store_reply_silently(&env.server, &requester, "missed-1", "from the store").await;

    let got: String = pending
        .wait()
        .await
        .expect("stored reply instead of a timeout");
    assert_eq!(got, "from the store");
    assert_eq!(env.client.in_flight(), 0);
}

/// A handler that started in time but finishes after the requester gave up: its reply is stored under the id.
#[tokio::test]
async fn late_reply_after_timeout_is_stored() {
    let env = TestEnv::new();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let release = Arc::new(Notify::new());
    let release_h = release.clone();
    let _responder = env
        .responder()
        .handler("slow", move |_ctx: RequestContext, n: u32| {
            let started_tx = started_tx.clone();
            let release = release_h.clone();
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                release.notified().await;
                Ok::<_, HandlerError>(n + 1)
            }
        })
        .start()
        .await
        .expect("responder");
    let requester = env.requester();

    let pending = requester
        .send("late-1", "slow", &41u32, Duration::from_secs(3))
        .await
        .expect("send");
    tokio::time::timeout(WAIT, started_rx)
        .await
        .expect("handler started in time")
        .unwrap();
    let err = pending
        .wait::<u32>()
        .await
        .expect_err("handler is held back");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        requester
            .stored_reply::<u32>("late-1")
            .await
            .unwrap()
            .is_none()
    );

    release.notify_one();
    let stored = wait_until(WAIT, || async {
        requester
            .stored_reply::<u32>("late-1")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert!(stored, "the late reply was never stored");
    assert_eq!(
        requester.stored_reply::<u32>("late-1").await.unwrap(),
        Some(42)
    );
    assert_eq!(env.client.in_flight(), 0);
}

/// No responder until after the timeout: the responder that starts later does not run the expired request, but
/// answers it (stored reply `Expired`) and acknowledges it.
#[tokio::test]
async fn timeout_then_responder_stores_an_expired_reply() {
    let env = TestEnv::new();
    let requester = env.requester();
    let err = requester
        .request::<_, serde_json::Value>("exp-1", "count", &1, Duration::from_millis(300))
        .await
        .expect_err("no responder yet");
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let runs = Arc::new(AtomicUsize::new(0));
    let runs_h = runs.clone();
    let _responder = env
        .responder()
        .handler("count", move |_ctx: RequestContext, _n: u32| {
            let runs = runs_h.clone();
            async move { Ok::<_, HandlerError>(runs.fetch_add(1, Ordering::SeqCst)) }
        })
        .start()
        .await
        .expect("responder");

    let stored = wait_until(WAIT, || async {
        !matches!(
            requester.stored_reply::<serde_json::Value>("exp-1").await,
            Ok(None)
        )
    })
    .await;
    assert!(stored, "no reply stored for the expired request");
    let err = requester
        .stored_reply::<serde_json::Value>("exp-1")
        .await
        .expect_err("an expired reply");
    assert_eq!(err.kind(), ErrorKind::Expired, "{err}");
    assert!(err.to_string().contains("exp-1"), "{err}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "expired request must not run"
    );
    // Acknowledged: nothing pending in the group.
    let acked = wait_until(WAIT, || async {
        pending_count(&env.server, requester.keys().requests(), "workers") == 0
    })
    .await;
    assert!(acked, "entry still pending");
}

/// A handler sees its request's deadline (the requester's send time plus the timeout), the time left until it, and
/// which delivery it is running.
#[tokio::test]
async fn handlers_see_their_deadline_and_delivery() {
    let env = TestEnv::new();
    let _responder = env
        .responder()
        .handler("when", |ctx: RequestContext, _: ()| async move {
            let deadline_ms = ctx
                .deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            Ok::<_, HandlerError>((
                ctx.delivery,
                deadline_ms,
                ctx.remaining().as_millis() as u64,
            ))
        })
        .start()
        .await
        .unwrap();
    let requester = env.requester();
    let timeout = Duration::from_secs(5);
    let since_epoch = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = since_epoch();
    let (delivery, deadline_ms, remaining_ms): (u64, u64, u64) =
        requester.call("when", &(), timeout).await.expect("reply");
    let after = since_epoch();
    assert_eq!(delivery, 1);
    let timeout_ms = timeout.as_millis() as u64;
    assert!(
        (before + timeout_ms..=after + timeout_ms).contains(&deadline_ms),
        "deadline {deadline_ms} not send time + {timeout_ms} ms (sent between {before} and {after})"
    );
    assert!(
        remaining_ms > 0 && remaining_ms <= timeout_ms,
        "time left {remaining_ms} ms"
    );
}
