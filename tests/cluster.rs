//! Redis Cluster, for real: 3 primaries and 3 replicas on loopback ports (`common::cluster`). A service lives on the
//! shard of its hash tag's slot; replies travel over sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`). Each test starts its
//! own cluster (a few seconds), and runs several checks on it.

mod common;

use std::time::Duration;

use common::GENEROUS;
use common::cluster::RedisCluster;
use redcall::{Client, HandlerError, RequestContext};
use serde_json::{Value, json};

fn unique_service(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

/// A responder with `echo` and `fail` (an error reply), on `service`.
async fn echo_responder(client: &Client, service: &str) -> redcall::Responder {
    client
        .responder(service)
        .visibility_timeout(Duration::from_secs(2))
        .handler("echo", |_ctx: RequestContext, v: Value| async move {
            Ok::<_, HandlerError>(v)
        })
        .start()
        .await
        .expect("start a responder on the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_a_cluster() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let client = Client::cluster(cluster.seeds())
        .build()
        .expect("cluster client");
    let service = unique_service("cluster-rt");
    let responder = echo_responder(&client, &service).await;
    let requester = client.requester(&service);
    let reply: Value = requester
        .call("echo", &json!({"via": "cluster"}), GENEROUS)
        .await
        .expect("round trip on the cluster");
    assert_eq!(reply, json!({"via": "cluster"}));
    let reply: Value = requester
        .request("rt-1", "echo", &json!(1), GENEROUS)
        .await
        .expect("round trip with a caller's id");
    assert_eq!(reply, json!(1));
    responder.shutdown().await.expect("shutdown");
}
