//! Keys of a service holding another type than the protocol says (a broken deployment, a stray `HSET`): the
//! operation that meets one refuses clearly, and nothing a requester is owed is lost.

mod common;

use std::time::{Duration, Instant};

use common::{RedisServer, pending_count, wait_until};
use redcall::{Client, ErrorKind, HandlerError, Reaper, RequestContext, ResponderSettings};

const LONG: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// `publish_reply` to an id whose record key holds a hash: refused with an error naming the key and its type;
/// nothing is stored under the reply key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reply_refuses_a_record_of_another_type() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("wt");
    server.cli(&["HSET", "{redcall:wt}:req:h1", "field", "value"]);

    let err = requester
        .publish_reply("h1", &42)
        .await
        .expect_err("a hash is not a request record");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Redis, "{text}");
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert!(text.contains("{redcall:wt}:req:h1"), "{text}");
    assert!(text.contains("hash"), "{text}");
    assert_eq!(server.cli(&["EXISTS", "{redcall:wt}:reply:h1"]), "0");
}

/// `publish_reply` to a real request whose reply key holds a hash: refused as a wrong type, not reported as
/// "already answered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reply_refuses_a_reply_key_of_another_type() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("wt");
    drop(requester.send("r1", "echo", &1, LONG).await.expect("send"));
    server.cli(&["HSET", "{redcall:wt}:reply:r1", "field", "value"]);

    let err = requester
        .publish_reply("r1", &42)
        .await
        .expect_err("a hash is not a reply");
    let text = err.to_string();
    assert_ne!(err.kind(), ErrorKind::AlreadyAnswered, "{text}");
    assert_eq!(err.kind(), ErrorKind::Redis, "{text}");
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert!(text.contains("{redcall:wt}:reply:r1"), "{text}");
}

/// The dead-letter stream key holds a string, and a request names a function nobody handles. The requester still
/// gets `UnknownFunction` at once; the entry is not lost (it stays pending) and keeps the original reason as its
/// last error, so the dead letter written once the key is fixed names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_dead_letter_stream_keeps_the_original_reason() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let service = "brokendead";
    let requests = "{redcall:brokendead}:requests";
    server.cli(&["SET", "{redcall:brokendead}:dead", "not a stream"]);
    let responder = client
        .responder(service)
        .reaper(false)
        .handler("other", |_ctx: RequestContext, n: i64| async move {
            Ok::<_, HandlerError>(n)
        })
        .start()
        .await
        .expect("start responder");

    let started = Instant::now();
    let err = client
        .requester(service)
        .request::<_, i64>("u1", "nope", &1, Duration::from_secs(5))
        .await
        .expect_err("no handler for nope");
    assert_eq!(err.kind(), ErrorKind::UnknownFunction, "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "not at once");
    responder.shutdown().await.expect("shutdown");
    assert_eq!(
        pending_count(&server, requests, "workers"),
        1,
        "kept pending"
    );

    // The deployment is fixed; a reaper gives up on the entry and dead-letters it with what it knows.
    server.cli(&["DEL", "{redcall:brokendead}:dead"]);
    let mut settings = ResponderSettings::default();
    settings.max_deliveries = 1;
    settings.visibility_timeout = Duration::from_millis(100);
    settings.consumer = "reaper".into();
    let reaper = Reaper::connect(client.clone(), service, settings)
        .await
        .expect("reaper");
    let admin = client.admin(service);
    let dead = wait_until(WAIT, || {
        let (reaper, admin) = (&reaper, admin.clone());
        async move {
            reaper.pass().await.expect("pass");
            admin.dead_letter_count().await.expect("count") == 1
        }
    })
    .await;
    assert!(dead, "never dead-lettered");
    let letter = admin.dead_letters(None, 1).await.expect("list").remove(0);
    let named = format!("{} / {}", letter.reason, letter.error);
    assert!(
        named.contains("unknown_function")
            && named.contains("no handler for function key \"nope\""),
        "the dead letter lost the original reason: {named}"
    );
    assert_eq!(pending_count(&server, requests, "workers"), 0);
}
