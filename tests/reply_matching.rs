//! A reply is taken only if its envelope names the caller's id and a version it knows (DESIGN 13): anything else
//! on a reply channel, or stored under a reply key, is ignored and the caller keeps waiting.

mod common;

use std::time::Duration;

use common::{RedisServer, redis_con};
use redcall::protocol::{self, FORMAT_VERSION, ReplyEnvelope};
use redcall::{Client, ErrorKind};

/// Long enough never to fire on a healthy machine.
const GENEROUS: Duration = Duration::from_secs(20);

fn reply_bytes(id: &str, data: i64, version: u8) -> Vec<u8> {
    let mut reply = ReplyEnvelope::ok(id, protocol::encode(&data).expect("encode"));
    reply.v = version;
    protocol::encode(&reply).expect("encode")
}

async fn publish(server: &RedisServer, channel: &str, payload: &[u8]) -> i64 {
    let mut con = redis_con(server).await;
    redis::AsyncCommands::publish(&mut con, channel, payload)
        .await
        .expect("PUBLISH")
}

#[tokio::test]
async fn messages_that_do_not_answer_the_request_are_ignored() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("matching");
    let pending = requester
        .send("v", "echo", &1, GENEROUS)
        .await
        .expect("send");
    let channel = requester.keys().reply_channel("v");

    // Each reaches the caller's connection (one subscriber), in this order, before the real reply.
    for payload in [
        reply_bytes("other", 1, FORMAT_VERSION),
        b"not msgpack at all".to_vec(),
        reply_bytes("v", 2, FORMAT_VERSION + 1),
        reply_bytes("", 3, FORMAT_VERSION),
    ] {
        assert_eq!(
            publish(&server, &channel, &payload).await,
            1,
            "one subscriber"
        );
    }
    assert_eq!(
        publish(&server, &channel, &reply_bytes("v", 42, FORMAT_VERSION)).await,
        1
    );
    let data: i64 = pending.wait().await.expect("the caller's own reply");
    assert_eq!(data, 42, "took a message that was not its reply");
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_stored_reply_of_another_id_is_not_taken() {
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("matching");
    let pending = requester
        .send("w", "echo", &1, Duration::from_millis(300))
        .await
        .expect("send");
    // Stored after the add (the add clears what an earlier request of the id left): another id's envelope.
    let mut con = redis_con(&server).await;
    let () = redis::AsyncCommands::set(
        &mut con,
        requester.keys().reply("w"),
        reply_bytes("other", 7, FORMAT_VERSION),
    )
    .await
    .expect("SET");

    let err = pending
        .wait::<i64>()
        .await
        .expect_err("the stored envelope answers another request");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = requester
        .stored_reply::<i64>("w")
        .await
        .expect_err("stored_reply refuses it too");
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert!(err.to_string().contains("other"), "{err}");
}
