//! Looking at Redis directly, beside the library: what a test checks the library did.

use super::RedisServer;

/// A plain connection to the test server, for inspecting Redis directly.
pub async fn redis_con(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Reply channels (`T:chan:<id>`) with at least one subscriber (the reply routers' subscriptions), one per line;
/// empty when none. Responders' cancel channels (`T:cancels`) are not reply channels and are left out.
pub fn subscribed_channels(server: &RedisServer) -> String {
    server.cli(&["PUBSUB", "CHANNELS", "*:chan:*"])
}

/// How many entries `group` holds pending on `stream` (the count of `XPENDING <stream> <group>`).
pub fn pending_count(server: &RedisServer, stream: &str, group: &str) -> u64 {
    let summary = server.cli(&["XPENDING", stream, group]);
    summary
        .lines()
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("XPENDING {stream} {group}: {summary:?}"))
}

/// Calls of a Redis command so far, from `INFO commandstats`.
pub fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}
