//! The Lua scripts that make redcall's multi-key steps atomic, and how they are invoked.
//!
//! Every script touches only keys of one service (one hash tag), so they are legal on Redis Cluster too. Scripts
//! are called by SHA (`EVALSHA`); after a Redis restart the script cache is empty, so a `NOSCRIPT` answer loads
//! them again and retries once.

use redis::Pipeline;
use std::sync::LazyLock;

/// A Lua script and its SHA1, as Redis names it in `EVALSHA`.
pub(crate) struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_owned();
        Self { code, hash }
    }
}

/// Adds a request: the record (`SET NX`, so an existing id is refused) and the stream entry, in one step. A fresh
/// id starts clean: a stored reply or error left by an earlier request with the same id (whose record expired) is
/// removed, so it cannot answer this one.
///
/// KEYS: record, requests stream, reply, last error. ARGV: id, envelope, record TTL (ms).
/// Returns the stream entry id, or nil when the id already exists.
pub(crate) static ADD_REQUEST: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return false
end
redis.call('DEL', KEYS[3], KEYS[4])
return redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'env', ARGV[2])
"#,
    )
});

/// Answers a request: stores the reply unless one is stored already (the first reply wins) and publishes the
/// stored one, forgets the last delivery error and, when an entry id is given, acknowledges the stream entry. A
/// reply by hand (no entry id) is refused when the request record does not exist.
///
/// KEYS: reply, requests stream, last error, record. ARGV: reply envelope, reply TTL (ms), channel, group, entry id
/// ('' for a reply by hand). Returns 1 when this reply was stored, 0 when an earlier one was kept (and published
/// again), -1 when a reply by hand names an unknown request.
pub(crate) static FINISH: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if ARGV[5] == '' and redis.call('EXISTS', KEYS[4]) == 0 then
  return -1
end
local stored = 1
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  stored = 0
end
if stored == 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[1])
elseif ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[3], redis.call('GET', KEYS[1]))
end
redis.call('DEL', KEYS[3])
if ARGV[5] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[4], ARGV[5])
end
return stored
"#,
    )
});

/// For a redelivered request: when a reply is already stored, publish it again and acknowledge the entry, so the
/// handler does not run twice.
///
/// KEYS: reply, requests stream. ARGV: channel, group, entry id. Returns 1 when answered from the stored reply.
pub(crate) static ANSWER_FROM_STORED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local reply = redis.call('GET', KEYS[1])
if not reply then
  return 0
end
redis.call('PUBLISH', ARGV[1], reply)
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// Moves an entry to the dead-letter stream, acknowledges it in the requests stream and, when the request id is
/// known, stores and publishes a failure reply (unless a reply is stored already).
///
/// KEYS: requests stream, dead-letter stream, reply, last error.
/// ARGV: group, entry id, request id, envelope, reason, error, deliveries, dead-at (ms), reply envelope ('' for
/// none), reply TTL (ms), channel, function key.
/// Returns the dead-letter entry id.
pub(crate) static DEAD_LETTER: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local dead = redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'env', ARGV[4], 'fn', ARGV[12],
  'reason', ARGV[5], 'error', ARGV[6], 'deliveries', ARGV[7], 'entry_id', ARGV[2], 'dead_at_ms', ARGV[8])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[4])
if ARGV[9] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[9], 'NX', 'PX', ARGV[10]) then
    redis.call('PUBLISH', ARGV[11], ARGV[9])
  end
end
return dead
"#,
    )
});

/// Every script, for loading after a `NOSCRIPT` answer.
pub(crate) fn all() -> [&'static Lua; 4] {
    [&ADD_REQUEST, &FINISH, &ANSWER_FROM_STORED, &DEAD_LETTER]
}

/// Whether an error is Redis saying a script is not loaded.
pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.code() == Some("NOSCRIPT")
}

/// Loads every script into the server's cache.
pub(crate) async fn load_all<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for script in all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.code).ignore();
    }
    pipe.query_async::<()>(con).await
}

/// Appends an `EVALSHA` of `script` to a pipeline; the caller adds keys count, keys and args through the returned
/// command builder.
pub(crate) fn evalsha<'a>(pipe: &'a mut Pipeline, script: &Lua) -> &'a mut Pipeline {
    pipe.cmd("EVALSHA").arg(&script.hash)
}

/// Runs a pipeline that calls scripts, loading the scripts once and retrying when Redis has forgotten them.
pub(crate) async fn query_with_scripts<T, C>(pipe: &Pipeline, con: &mut C) -> redis::RedisResult<T>
where
    T: redis::FromRedisValue,
    C: redis::aio::ConnectionLike + Send,
{
    match pipe.query_async(con).await {
        Err(err) if is_noscript(&err) => {
            load_all(con).await?;
            pipe.query_async(con).await
        }
        other => other,
    }
}
