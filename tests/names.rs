//! One rule for ids, service and namespace names, used by the library, the admin API and the CLI (DESIGN 13):
//! an unusable name is refused with a clear error before Redis is touched, and a stream entry whose id is unusable
//! is dead-lettered with the precise reason.

mod common;

use std::time::Duration;

use common::{RedisServer, TestEnv, run_cli, wait_until};
use redcall::{Client, ErrorKind, HandlerError, RequestContext};

/// Long enough never to fire on a healthy machine.
const GENEROUS: Duration = Duration::from_secs(20);

/// Service names that would break the one-hash-slot rule or garble keys.
const BAD_SERVICES: [&str; 4] = ["a}b", "{a", "", "line\nbreak"];

#[tokio::test]
async fn unusable_service_names_are_refused_everywhere_before_redis_is_touched() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    for service in BAD_SERVICES {
        let requester = client.requester(service);
        let err = requester
            .send("r1", "echo", &1, GENEROUS)
            .await
            .expect_err("send");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
        assert!(err.to_string().contains("service name"), "{err}");
        let err = requester.call_info("r1").await.expect_err("call_info");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
        let err = requester
            .publish_reply("r1", &1)
            .await
            .expect_err("publish_reply");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
        let err = client
            .responder(service)
            .handler("echo", |_ctx: RequestContext, n: i64| async move {
                Ok::<_, HandlerError>(n)
            })
            .start()
            .await
            .expect_err("responder");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
        let err = client.admin(service).stats().await.expect_err("stats");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
        let err = redcall::Reaper::connect(client.clone(), service, Default::default())
            .await
            .expect_err("reaper");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{service:?}: {err}");
    }
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0", "nothing was written");
}

#[tokio::test]
async fn unusable_request_ids_and_namespaces_are_refused() {
    let env = TestEnv::new();
    let requester = env.requester();
    for id in ["", "new\nline", "tab\there", &"x".repeat(1025)] {
        let err = requester
            .send(id, "echo", &1, GENEROUS)
            .await
            .expect_err("send");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}: {err}");
        assert!(err.to_string().contains("request id"), "{err}");
        let err = requester.call_info(id).await.expect_err("call_info");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{id:?}: {err}");
    }
    // Braces and colons are fine in an id: it always comes after the hash tag.
    let pending = requester
        .send("odd{id}:1", "echo", &1, GENEROUS)
        .await
        .expect("braces in an id");
    assert_eq!(pending.id(), "odd{id}:1");

    for namespace in ["a:b", "{x}", ""] {
        let err = Client::builder(&env.server.url())
            .namespace(namespace)
            .build()
            .expect_err("namespace");
        assert_eq!(err.kind(), ErrorKind::Config, "{namespace:?}: {err}");
        assert!(err.to_string().contains("namespace"), "{err}");
    }
}

/// An empty function key, or one with control characters, is refused before anything is sent (it could match no
/// handler, and would garble logs and dead-letter tables), from the library (every way of sending) and the CLI.
#[tokio::test]
async fn unusable_function_keys_are_refused_before_anything_is_sent() {
    let env = TestEnv::new();
    let requester = env.requester();
    for func in ["", "new\nline", &"f".repeat(1025)] {
        let err = requester
            .send("f1", func, &1, GENEROUS)
            .await
            .expect_err("send");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{func:?}: {err}");
        assert!(err.to_string().contains("function key"), "{err}");
        let err = requester
            .submit(func, &1, GENEROUS)
            .await
            .expect_err("submit");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{func:?}: {err}");
        let err = requester
            .send_in("f2", func, &1, Duration::from_secs(1), GENEROUS)
            .await
            .expect_err("send_in");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{func:?}: {err}");
    }
    let out = run_cli(&env.server, env.service(), &["call", "", "{}"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a function key must not be empty"),
        "{stderr}"
    );
    assert_eq!(
        env.server.cli(&["DBSIZE"]).trim(),
        "0",
        "nothing was written"
    );
    // Braces, colons and spaces are fine: a function key goes into no key.
    let pending = requester
        .send("f3", "odd {key}: ok", &1, GENEROUS)
        .await
        .expect("an odd but usable function key");
    assert_eq!(pending.id(), "f3");
}

#[test]
fn the_cli_refuses_an_unusable_service_as_a_usage_error() {
    let server = RedisServer::start();
    for args in [
        vec!["call", "echo", "{}", "--timeout", "1"],
        vec!["info", "r1"],
        vec!["stats"],
    ] {
        let out = run_cli(&server, "a}b", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("service name"), "{args:?}: {stderr}");
    }
    assert_eq!(server.cli(&["DBSIZE"]).trim(), "0", "nothing was written");
}

#[tokio::test]
async fn entries_with_an_unusable_id_are_dead_lettered_with_the_precise_reason() {
    let env = TestEnv::new();
    let responder = env
        .responder()
        .handler("echo", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n)
        })
        .start()
        .await
        .expect("responder");
    let keys = env.client.keys(&env.service);
    let mut con = env.redis().await;
    let entries: [(&str, Vec<u8>); 3] = [
        ("must not be empty", b"".to_vec()),
        ("not UTF-8", vec![0xff, 0xfe]),
        ("control characters", b"a\nb".to_vec()),
    ];
    for (_, id) in &entries {
        let _: String = redis::cmd("XADD")
            .arg(keys.requests())
            .arg("*")
            .arg("id")
            .arg(id.as_slice())
            .arg("env")
            .arg("x")
            .query_async(&mut con)
            .await
            .expect("XADD");
    }
    let admin = env.client.admin(&env.service);
    assert!(
        wait_until(GENEROUS, || async {
            admin.dead_letter_count().await.unwrap_or(0) == 3
        })
        .await,
        "all three dead-lettered"
    );
    let letters = admin.dead_letters(None, 10).await.expect("list");
    for (expected, _) in &entries {
        assert!(
            letters
                .iter()
                .any(|l| l.reason == "malformed_request" && l.error.contains(expected)),
            "no dead letter says {expected:?}: {:?}",
            letters.iter().map(|l| &l.error).collect::<Vec<_>>()
        );
    }
    responder.shutdown().await.expect("shutdown");
}
