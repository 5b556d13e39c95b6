//! Hand-made entries in the requests stream that a responder must survive: no id, no envelope, random bytes, a
//! MessagePack map of the wrong shape, another format version, an envelope over the payload limit, an envelope whose
//! id differs from the entry's. Each is dead-lettered with its reason, answered with a typed error where the id is
//! known, and acknowledged; the responder keeps serving. (The decoders alone are fuzzed without Redis in
//! `fuzz_decoders.rs`.)
//!
//! DESIGN 5 (undecodable entry, oversized payload: an error reply where the id is known, dead-letter with the
//! reason, never a crash of the responder loop), 13 (strictness: the format version is checked, a reply is taken
//! only under the caller's id).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestEnv, fresh_request_succeeds, wait_until};
use redcall::Error;
use redcall::protocol::{self, FORMAT_VERSION, RequestEnvelope};
use serde_json::{Value, json};

/// A hand-made stream entry and what the responder must say about it.
struct Garbage {
    /// The `id` field, if any.
    id: Option<&'static str>,
    /// The `env` field, if any.
    env: Option<Vec<u8>>,
    /// The dead letter's `reason`.
    reason: &'static str,
    /// Words the dead letter's `error` must contain.
    words: &'static str,
}

fn garbage(
    id: Option<&'static str>,
    env: Option<Vec<u8>>,
    reason: &'static str,
    words: &'static str,
) -> Garbage {
    Garbage {
        id,
        env,
        reason,
        words,
    }
}

fn envelope(v: u8, id: &str, params: &[u8]) -> Vec<u8> {
    let now = common::now_ms();
    protocol::encode(&RequestEnvelope {
        v,
        id: id.to_owned(),
        func_key: "echo".to_owned(),
        params: params.to_owned(),
        deadline_ms: now + 60_000,
        created_ms: now,
        replay: None,
        trace: None,
    })
    .expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_entries_are_dead_lettered_and_the_responder_keeps_serving() {
    const LIMIT: usize = 2048;
    let env = TestEnv::new();
    let service = env.service();
    let _responder = env.serve("resp", &["--payload-limit", &LIMIT.to_string()], &[]);
    let requester = env.requester();
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;
    let keys = requester.keys().clone();
    let mut con = env.redis().await;

    let params = protocol::encode(&json!({"a": 1})).expect("encode");
    let random: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let wrong_shape =
        protocol::encode(&json!({"v": 1, "id": 5, "fn": ["echo"], "params": "x"})).unwrap();
    let oversized = envelope(
        FORMAT_VERSION,
        "g-oversized",
        &protocol::encode(&"x".repeat(LIMIT)).unwrap(),
    );
    let cases = vec![
        garbage(None, None, "malformed_request", "lacks"),
        garbage(Some("g-no-env"), None, "malformed_request", "lacks"),
        garbage(
            Some("g-random"),
            Some(random),
            "malformed_request",
            "could not decode",
        ),
        garbage(
            Some("g-shape"),
            Some(wrong_shape),
            "malformed_request",
            "could not decode",
        ),
        garbage(
            Some("g-version"),
            Some(envelope(99, "g-version", &params)),
            "malformed_request",
            "version 99",
        ),
        garbage(
            Some("g-oversized"),
            Some(oversized),
            "payload_too_large",
            "over the payload limit",
        ),
        garbage(
            Some("g-mismatch"),
            Some(envelope(FORMAT_VERSION, "g-other", &params)),
            "malformed_request",
            "differs",
        ),
    ];
    let mut entry_ids = Vec::new();
    for Garbage { id, env, .. } in &cases {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(keys.requests()).arg("*").arg("junk").arg("yes");
        if let Some(id) = id {
            cmd.arg("id").arg(*id);
        }
        if let Some(env) = env {
            cmd.arg("env").arg(env.as_slice());
        }
        let entry_id: String = cmd.query_async(&mut con).await.expect("XADD");
        entry_ids.push(entry_id);
    }

    let dead_key = keys.dead_letters().to_owned();
    let read_dead = |mut con: redis::aio::MultiplexedConnection| {
        let dead_key = dead_key.clone();
        async move {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&dead_key)
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await
                .expect("XRANGE");
            reply
                .ids
                .into_iter()
                .map(|e| {
                    let fields: HashMap<String, String> = e
                        .map
                        .into_iter()
                        .filter_map(|(k, v)| match v {
                            redis::Value::BulkString(b) => {
                                Some((k, String::from_utf8_lossy(&b).into_owned()))
                            }
                            _ => None,
                        })
                        .collect();
                    (fields.get("entry_id").cloned().unwrap_or_default(), fields)
                })
                .collect::<HashMap<_, _>>()
        }
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (con, read_dead) = (con.clone(), &read_dead);
            let want = cases.len();
            async move { read_dead(con).await.len() >= want }
        })
        .await,
        "not every garbage entry was dead-lettered"
    );
    let dead = read_dead(con.clone()).await;
    for (
        Garbage {
            id, reason, words, ..
        },
        entry_id,
    ) in cases.iter().zip(&entry_ids)
    {
        let letter = dead
            .get(entry_id)
            .unwrap_or_else(|| panic!("{id:?}: no dead letter"));
        assert_eq!(letter["reason"], *reason, "{id:?}: {letter:?}");
        assert!(
            letter["error"].contains(words),
            "{id:?}: error {:?} lacks {words:?}",
            letter["error"]
        );
        assert_eq!(letter["id"], id.unwrap_or(""), "{id:?}");
        let Some(id) = id else { continue };
        // Where the id is known, the requester side gets a typed error.
        let err = requester
            .stored_reply::<Value>(id)
            .await
            .expect_err("an error reply is stored");
        match (*reason, &err) {
            ("malformed_request", Error::Malformed { id: got, message }) => {
                assert_eq!(got, id);
                assert!(message.contains(words), "{message}");
            }
            ("payload_too_large", Error::Handler { code, .. }) => {
                assert_eq!(code, "payload_too_large")
            }
            _ => panic!("{id}: unexpected error {err:?}"),
        }
    }
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(keys.requests())
        .arg("workers")
        .query_async(&mut con)
        .await
        .expect("XPENDING");
    assert_eq!(pending.count(), 0, "every garbage entry was acknowledged");
    fresh_request_succeeds(&requester, service, Duration::from_secs(10)).await;
}
