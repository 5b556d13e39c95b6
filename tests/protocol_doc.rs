//! `docs/protocol.md` is what a program in another language is written from, so what it quotes must be what redcall
//! runs. Here: every Lua script the document quotes is, byte for byte, a script redcall loads. redcall loads all
//! its scripts on the first `NOSCRIPT`; Redis then knows each of them by the SHA1 of its body, so the SHA1 of each
//! quoted body (with the leading and trailing newline redcall's bodies have) must be known to Redis.

mod common;

use std::time::Duration;

use common::{RedisServer, redis_con};
use redcall::Client;

/// The bodies of the ```lua blocks of a Markdown text, dedented by their fence's indentation.
fn lua_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```lua" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut body = String::from("\n");
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            body.push_str(line.get(indent..).unwrap_or(""));
            body.push('\n');
        }
        blocks.push(body);
    }
    blocks
}

#[tokio::test]
async fn the_quoted_scripts_are_the_ones_redcall_runs() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"))
        .expect("docs/protocol.md");
    let blocks = lua_blocks(&doc);
    assert!(
        blocks.len() >= 4,
        "the document quotes ADD_REQUEST, ANSWER_FROM_STORED, PUBLISH_REPLY and DEAD_LETTER"
    );

    // A fresh server has no scripts: the first script call answers NOSCRIPT and redcall loads all of them.
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let requester = client.requester("doc");
    let pending = requester
        .send("doc-1", "nobody", &1, Duration::from_secs(30))
        .await
        .expect("send (runs ADD_REQUEST)");
    drop(pending);

    let mut con = redis_con(&server).await;
    for body in &blocks {
        let sha = redis::Script::new(body).get_hash().to_owned();
        let known: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query_async(&mut con)
            .await
            .expect("SCRIPT EXISTS");
        assert_eq!(
            known,
            vec![1],
            "docs/protocol.md quotes a script redcall does not run (not byte for byte):\n{body}"
        );
    }
}
