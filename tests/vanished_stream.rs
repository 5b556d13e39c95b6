//! A requests stream deleted under a running responder (its group gone with it): the responder sees `NOGROUP`,
//! recreates the stream and the group, says so in its log, and serves the next requests.
//!
//! DESIGN 12 (recreate the group if the stream vanished), 3 (the group is created with MKSTREAM when missing).

mod common;

use std::time::Duration;

use common::{TestEnv, fresh_request_succeeds, responder_log};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_is_recreated_by_the_responder() {
    let env = TestEnv::new();
    let service = env.service();
    let _responder = env.serve("resp", &[], &[]);
    let requester = env.requester();
    fresh_request_succeeds(&requester, service, Duration::from_secs(30)).await;

    let stream = requester.keys().requests().to_owned();
    assert_eq!(env.server.cli(&["DEL", &stream]), "1");
    for i in 0..3 {
        let reply: Value = requester
            .request(
                &format!("after-del-{i}"),
                "echo",
                &json!(i),
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|e| panic!("request {i} after DEL: {e}"));
        assert_eq!(reply, json!(i));
    }
    let groups = env.server.cli(&["XINFO", "GROUPS", &stream]);
    assert!(
        groups.contains("workers"),
        "the group exists again: {groups}"
    );
    let log = responder_log(&env.server, "resp");
    assert!(
        log.contains("recreating"),
        "the responder said what it did:\n{log}"
    );
}
