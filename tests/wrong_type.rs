//! Keys of a service holding another type than the protocol says (a broken deployment, a stray `HSET`): the
//! operation that meets one refuses clearly, and nothing a requester is owed is lost.

mod common;

use std::time::Duration;

use common::RedisServer;
use redcall::{Client, ErrorKind};

const LONG: Duration = Duration::from_secs(60);

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
