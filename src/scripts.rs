//! The Lua scripts that make redcall's multi-key steps atomic, and how they are invoked.
//!
//! Every script touches only keys of one service (one hash tag), so they are legal on Redis Cluster too. Scripts
//! are called by SHA (`EVALSHA`); after a Redis restart the script cache is empty, so a `NOSCRIPT` answer loads
//! them again and retries once.
//!
//! On a cluster replies travel over sharded pub/sub: a script that publishes a reply runs there in its sharded
//! form ([`Lua::on`]), the same body with `SPUBLISH` in place of `PUBLISH` (the channel shares the keys' hash tag,
//! so it is local to the script's slot). The plain bodies, which `docs/protocol.md` quotes, stay as they are.

use redis::Pipeline;
use std::borrow::Cow;
use std::sync::{LazyLock, OnceLock};

use crate::connection::PubSub;

/// A Lua script and its SHA1, as Redis names it in `EVALSHA`.
pub(crate) struct Lua {
    code: Cow<'static, str>,
    hash: String,
    /// The sharded form, made on first use (only scripts that publish differ).
    sharded: OnceLock<Box<Lua>>,
}

/// How a plain script publishes a reply, and how its sharded form does.
const PUBLISH_CALL: &str = "redis.call('PUBLISH',";
const SPUBLISH_CALL: &str = "redis.call('SPUBLISH',";

impl Lua {
    fn new(code: &'static str) -> Self {
        Self::of(Cow::Borrowed(code))
    }

    fn of(code: Cow<'static, str>) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Self {
            code,
            hash,
            sharded: OnceLock::new(),
        }
    }

    /// Whether the script publishes (and so has a sharded form of its own).
    fn publishes(&self) -> bool {
        self.code.contains(PUBLISH_CALL)
    }

    /// The script for replies over `pubsub`: itself, or on a cluster its sharded form (`SPUBLISH`).
    pub(crate) fn on(&self, pubsub: PubSub) -> &Lua {
        if !pubsub.is_sharded() || !self.publishes() {
            return self;
        }
        self.sharded.get_or_init(|| {
            Box::new(Lua::of(Cow::Owned(
                self.code.replace(PUBLISH_CALL, SPUBLISH_CALL),
            )))
        })
    }
}

/// Adds a request: the stream entry and the record, in one step, unless a record exists (an existing id is
/// refused). The entry is written first: a script is not rolled back when a command in it fails, so a request
/// Redis refuses to add (say, the stream key holds another type) leaves no record behind that would answer
/// `call_info` or refuse the id later. A fresh id starts clean: a stored reply or error left by an earlier request
/// with the same id (whose record expired) is removed, so it cannot answer this one.
///
/// A record holding exactly this envelope is the same request, added by an earlier attempt whose answer was lost
/// (a connection cut mid-command, then a retry under the same id): it counts once, and is reported as added
/// (`'added'` instead of an entry id) without adding anything. The envelope names its creation time to the
/// millisecond, its deadline and its params, so another request under the same id does not match.
///
/// KEYS: record, requests stream, reply, last error, and optionally the last progress (a key a caller of the
/// four-key form leaves as it is). ARGV: id, envelope, record TTL (ms).
/// Returns the stream entry id, `'added'` when this very request was added already, or nil when the id exists.
pub(crate) static ADD_REQUEST: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local existing = redis.call('GET', KEYS[1])
if existing then
  if existing == ARGV[2] then
    return 'added'
  end
  return false
end
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'env', ARGV[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])
if KEYS[5] then
  redis.call('DEL', KEYS[5])
end
return entry
"#,
    )
});

/// Answers a request by hand (`publish_reply`): refuses an id without a request record, stores the reply unless
/// one is stored already (the first reply wins), publishes it when stored, and forgets the last delivery error.
/// The stream entry is not acknowledged: a responder that later reads it answers from the stored reply.
///
/// The record and the reply key are read with `GET` first: a key holding another type (a stray `HSET`, a broken
/// deployment) is refused with a `WRONGTYPE` error naming the key, before anything is written. Without this, a
/// record of another type would pass for a request (`EXISTS` does not look at types) and a reply key of another
/// type would read as "already answered" (`SET NX` refuses any existing key).
///
/// A stored reply byte-identical to this one is this very reply, stored by an earlier attempt whose answer was lost:
/// it counts once, as stored (each reply envelope names the time it was made, to the millisecond).
///
/// With every reply stored, `T:byhand` is set to the newest entry id of the requests stream: the request answered is
/// at or below it, and responders check every entry up to it for a stored reply (see `responder/history.rs`).
///
/// KEYS: reply, last error, record, `T:byhand`, requests stream. ARGV: reply envelope, reply TTL (ms), channel.
/// Returns 1 when this reply was stored (now or by an earlier attempt), 0 when an earlier one was kept, -1 when the
/// request is unknown.
pub(crate) static PUBLISH_REPLY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local function wrong_type(key, what)
  local t = redis.pcall('TYPE', key)
  local held = (type(t) == 'table' and t['ok']) and ('a ' .. t['ok']) or 'another type'
  return redis.error_reply('WRONGTYPE ' .. key .. ' holds ' .. held .. ', not ' .. what ..
    '; nothing was stored or published')
end
local record = redis.pcall('GET', KEYS[3])
if type(record) == 'table' then
  return wrong_type(KEYS[3], 'a request record (a string)')
end
if not record then
  return -1
end
local stored = redis.pcall('GET', KEYS[1])
if type(stored) == 'table' then
  return wrong_type(KEYS[1], 'a stored reply (a string)')
end
if stored == ARGV[1] then
  return 1
end
if stored then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('DEL', KEYS[2])
local newest = redis.pcall('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
if type(newest) == 'table' and newest.err == nil and newest[1] then
  redis.pcall('SET', KEYS[4], newest[1][1])
end
return 1
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
/// When the dead letter cannot be written (the `XADD` fails: the dead-letter stream key holds another type, say),
/// nothing is lost and the requester is still told at once: the entry is **not** acknowledged (it stays pending and
/// is delivered again after the visibility timeout, until the dead letter can be written), the failure reply is
/// published but not stored (a stored reply would answer the redelivery and acknowledge the entry without a dead
/// letter), and the reason is kept as the id's last error, so a dead letter written later (after
/// `max_deliveries`, with the last error) still names it. The script then answers with the `XADD`'s error.
///
/// KEYS: requests stream, dead-letter stream, reply, last error.
/// ARGV: group, entry id, request id, envelope, reason, error, deliveries, dead-at (ms), reply envelope ('' for
/// none), reply TTL (ms), channel, function key, the text to keep as last error if the dead letter cannot be
/// written ('' to keep the last error as it is), its TTL (ms).
/// The dead-letter entry's fields: `id`, `env`, `fn`, `reason`, `error`, `deliveries`, `entry_id`, `dead_at_ms`
/// and `group` (the consumer group that gave up, so dead letters can be counted per group).
/// Returns the dead-letter entry id.
pub(crate) static DEAD_LETTER: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local dead = redis.pcall('XADD', KEYS[2], '*', 'id', ARGV[3], 'env', ARGV[4], 'fn', ARGV[12],
  'reason', ARGV[5], 'error', ARGV[6], 'deliveries', ARGV[7], 'entry_id', ARGV[2], 'dead_at_ms', ARGV[8],
  'group', ARGV[1])
if type(dead) == 'table' and dead.err then
  if ARGV[13] ~= '' then
    redis.pcall('SET', KEYS[4], ARGV[13], 'PX', ARGV[14])
  end
  if ARGV[9] ~= '' and redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('PUBLISH', ARGV[11], ARGV[9])
  end
  return dead
end
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

/// Re-queues a request under its own id (a replay), unless that would make it run twice: in one step it decides
/// whether the id may be replayed and, when it may, adds a new stream entry, forgets the id's stored reply and last
/// error, overwrites its record with the new envelope, notes the new entry as the id's latest and, for a
/// dead-letter replay, removes the dead-letter entry.
///
/// **The rule.** An id is replayed only when its *latest* entry in the requests stream is neither pending in, nor
/// not yet delivered to, any consumer group, and neither is the entry the replay names (`candidate`). The latest
/// entry is the one the latest-entry key names (every replay writes it, with the record's TTL, so both expire
/// together); without one, the record tells: when it holds the candidate's own envelope the candidate is the
/// latest; when it holds another envelope, a newer request under the same id exists (made after the candidate's
/// record expired) and replaying the old one would overwrite it (`superseded`); with no record at all nothing newer
/// is known. An entry no longer in the stream is only in flight while a group still lists it as pending. With no
/// group at all, every entry still in the stream counts as undelivered.
///
/// **Why one script.** Deciding and re-queuing in the same script means two replays racing for the same id (two
/// operators, or `replay` run twice) cannot both see it idle: the first one's new entry is the latest (and
/// undelivered) when the second one's script runs. The dead-letter entry is checked first, so replaying the same
/// dead letter twice queues it once; it is removed only after the XADD, and the XADD comes first, so a refused
/// XADD (the stream key holding another type) changes nothing.
///
/// KEYS: dead-letter stream, requests stream, record, reply, last error, latest entry, and optionally the last
/// progress.
/// ARGV: dead-letter entry id ('' for a range replay), request id, new envelope, record TTL (ms), the candidate's
/// requests stream entry id ('' when unknown), the candidate's envelope, '1' to apply the rule ('' to replay even
/// what is in flight), '1' for a dry run (decide, change nothing).
/// Returns `{outcome, detail}`: `{'queued', new entry id}`, `{'would_queue', ''}` (dry run), `{'not_found', ''}`
/// (no such dead-letter entry), `{'in_flight', the entry in flight}` or `{'superseded', ''}`.
pub(crate) static REPLAY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local function num_cmp(a, b)
  if #a ~= #b then
    if #a < #b then return -1 else return 1 end
  end
  if a == b then return 0 end
  if a < b then return -1 else return 1 end
end
local function id_cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = num_cmp(am, bm)
  if c ~= 0 then return c end
  return num_cmp(as, bs)
end
local function text(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'string' then return v end
  return nil
end
local function in_flight(entry)
  if redis.call('EXISTS', KEYS[2]) == 0 then return false end
  local present = nil
  local function in_stream()
    if present == nil then present = #redis.call('XRANGE', KEYS[2], entry, entry) > 0 end
    return present
  end
  local groups = redis.call('XINFO', 'GROUPS', KEYS[2])
  if #groups == 0 then return in_stream() end
  for _, g in ipairs(groups) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if #redis.call('XPENDING', KEYS[2], name, entry, entry, 1) > 0 then return true end
    if id_cmp(entry, last) > 0 and in_stream() then return true end
  end
  return false
end

if ARGV[1] ~= '' and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return {'not_found', ''}
end
if ARGV[7] == '1' then
  local latest = text(KEYS[6])
  if latest and not string.match(latest, '^%d+%-%d+$') then
    latest = nil
  end
  if not latest then
    local record = text(KEYS[3])
    if record and record ~= ARGV[6] then
      return {'superseded', ''}
    end
    latest = ARGV[5]
  end
  if latest ~= '' and in_flight(latest) then
    return {'in_flight', latest}
  end
  if ARGV[5] ~= '' and ARGV[5] ~= latest and in_flight(ARGV[5]) then
    return {'in_flight', ARGV[5]}
  end
end
if ARGV[8] == '1' then
  return {'would_queue', ''}
end
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'env', ARGV[3])
redis.call('DEL', KEYS[4], KEYS[5])
if KEYS[7] then
  redis.call('DEL', KEYS[7])
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[6], entry, 'PX', ARGV[4])
if ARGV[1] ~= '' then
  redis.call('XDEL', KEYS[1], ARGV[1])
end
return {'queued', entry}
"#,
    )
});

/// Trims the requests stream by a retention policy without ever removing an entry that is pending in, or not yet
/// delivered to, any consumer group. Runs as one script so no group can be created, read from or claimed from
/// between computing the bound and trimming.
///
/// The policy bound is the larger (more trimming) of `TIME - max age` and the id of the first entry kept under
/// `max len` (looking at most `scan cap` entries ahead per call). The safe bound is, over every group, the
/// smallest of its last-delivered id and its oldest pending id (`XPENDING` summary); with no group nothing is
/// safe. `XTRIM MINID` removes only entries below both bounds (the entry at the bound itself is kept).
///
/// KEYS: requests stream. ARGV: max len ('' for none), max age in ms ('' for none), scan cap.
/// Returns `{trimmed, policy bound, safe bound, applied bound}` ('' where there is none; policy bound `+` means
/// "everything").
pub(crate) static TRIM: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local function num_cmp(a, b)
  if #a ~= #b then
    if #a < #b then return -1 else return 1 end
  end
  if a == b then return 0 end
  if a < b then return -1 else return 1 end
end
local function id_cmp(a, b)
  if a == '+' or b == '+' then
    if a == b then return 0 elseif a == '+' then return 1 else return -1 end
  end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = num_cmp(am, bm)
  if c ~= 0 then return c end
  return num_cmp(as, bs)
end
local function min_id(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if id_cmp(a, b) <= 0 then return a else return b end
end
local function max_id(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if id_cmp(a, b) >= 0 then return a else return b end
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, '', '', ''}
end
local policy = nil
if ARGV[2] ~= '' then
  local t = redis.call('TIME')
  local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
  if cut > 0 then
    policy = string.format('%d-0', cut)
  end
end
if ARGV[1] ~= '' then
  local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
  if excess > 0 then
    local n = math.min(excess, tonumber(ARGV[3]))
    local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', n + 1)
    if #head > n then
      policy = max_id(policy, head[n + 1][1])
    else
      policy = '+'
    end
  end
end
if policy == nil then
  return {0, '', '', ''}
end
local safe = nil
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
  return {0, policy, '', ''}
end
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  safe = min_id(safe, last)
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 then
    safe = min_id(safe, pending[2])
  end
end
local applied = min_id(policy, safe)
if applied == '0-0' then
  return {0, policy, safe, ''}
end
local trimmed = redis.call('XTRIM', KEYS[1], 'MINID', '=', applied)
return {trimmed, policy, safe, applied}
"#,
    )
});

/// Removes the oldest entries of a stream, at most a chunk per call and none above a bound: the chunk's last id is
/// found inside Redis (nothing is sent back), the entries below it are trimmed and it is deleted.
///
/// KEYS: stream. ARGV: bound (highest id to remove), chunk size. Returns how many entries were removed.
pub(crate) static PURGE_UPTO: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local head = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', ARGV[2])
if #head == 0 then
  return 0
end
local last = head[#head][1]
redis.call('XTRIM', KEYS[1], 'MINID', '=', last)
redis.call('XDEL', KEYS[1], last)
return #head
"#,
    )
});

/// Takes back, for a retry after its backoff, an entry this responder left pending after a known failure: claims it
/// to the same consumer with `XCLAIM ... 0 <entry id>` (which counts a delivery), but only while it is still this
/// consumer's and still on the delivery that failed. Anything else means another consumer took it meanwhile (the
/// visibility timeout passed, say during an outage): it is theirs now, and running it here too would run it twice.
///
/// KEYS: requests stream. ARGV: group, consumer, entry id, the delivery count of the failed delivery.
/// Returns the new delivery count, 0 when the entry is not this consumer's on that delivery any more (or not
/// pending), -1 when its stream entry was deleted (`XCLAIM` then drops it from the pending list).
pub(crate) static RETRY_CLAIM: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
local p = pending[1]
if not p or p[2] ~= ARGV[2] or p[4] ~= tonumber(ARGV[4]) then
  return 0
end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
if not claimed[1] then
  return -1
end
return p[4] + 1
"#,
    )
});

/// Cancels a request by id: unless a reply is stored already (the first reply wins), stores and publishes the
/// `cancelled` reply, publishes the id on the service's cancel channel (responders running it tell its handler),
/// forgets the last delivery error, and sets `T:byhand` like `PUBLISH_REPLY`, so that a responder reading the
/// entry later answers it from the stored reply without running it. The reply is kept at least as long as the
/// request record, so it answers every later delivery of the request.
///
/// A stored reply byte-identical to this one is this very cancel, stored by an earlier attempt whose answer was
/// lost: it counts once, as cancelled.
///
/// A delayed request not yet due leaves the schedule at once (it would be dropped when due anyway).
///
/// KEYS: record, reply, last error, `T:byhand`, requests stream, schedule. ARGV: cancelled reply envelope, reply
/// TTL (ms), reply channel, cancel channel, request id. Returns 1 when cancelled, 0 when a reply was stored already, -1 when
/// the request is unknown.
pub(crate) static CANCEL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local stored = redis.call('GET', KEYS[2])
if stored == ARGV[1] then
  return 1
end
if stored then
  return 0
end
local keep = tonumber(ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > keep then
  keep = ttl
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', keep)
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[6], ARGV[5])
local newest = redis.pcall('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
if type(newest) == 'table' and newest.err == nil and newest[1] then
  redis.pcall('SET', KEYS[4], newest[1][1])
end
return 1
"#,
    )
});

/// Adds a delayed request: the record at once (call info works, the id is taken), and the id in the schedule
/// `T:delayed` scored by when it is due (Redis's clock plus the delay), but no stream entry: responders promote it
/// to the requests stream when it is due (`PROMOTE_DELAYED`). Same duplicate rules as `ADD_REQUEST`.
///
/// KEYS: record, schedule, reply, last error, and optionally the last progress. ARGV: id, envelope, record TTL
/// (ms), delay (ms).
/// Returns `'scheduled'`, `'added'` when this very request was added already, or nil when the id exists.
pub(crate) static ADD_DELAYED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local existing = redis.call('GET', KEYS[1])
if existing then
  if existing == ARGV[2] then
    return 'added'
  end
  return false
end
local t = redis.call('TIME')
local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])
if KEYS[5] then
  redis.call('DEL', KEYS[5])
end
return 'scheduled'
"#,
    )
});

/// The delayed requests due now, by Redis's clock: at most ARGV[1] ids of the schedule.
///
/// KEYS: schedule. ARGV: most ids. Returns the ids.
pub(crate) static DUE_DELAYED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"#,
    )
});

/// Promotes one due delayed request to the requests stream, once: adds its record's envelope as a stream entry and
/// removes it from the schedule, unless another responder promoted it already (not in the schedule any more), or
/// its record expired, or a reply is stored for it (cancelled, or answered by hand): then it is only removed from
/// the schedule. The entry is added first: a script is not rolled back when a command in it fails, so an `XADD`
/// Redis refuses (the stream key holds another type, say) leaves the id scheduled, to be promoted once the stream
/// is fixed, instead of dropped.
///
/// KEYS: schedule, requests stream, record, reply. ARGV: id. Returns 1 when added, 0 when not scheduled (any
/// more), -1 when dropped.
pub(crate) static PROMOTE_DELAYED: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local record = redis.call('GET', KEYS[3])
if not record or redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -1
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'env', record)
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// Reads (and, for a partitioned program that records, writes once) the partition count recorded for a service.
/// Nothing recorded while the unpartitioned requests stream exists means the service has run with one partition:
/// that is answered as a count of 1, so a program given N > 1 by mistake is refused instead of recording N over a
/// live service (whose requests would then go to streams nobody reads). Both keys share the service's
/// unpartitioned hash tag, so the look and the write are one atomic step.
///
/// KEYS: the count key, the unpartitioned requests stream. ARGV: the program's count, '1' to record it.
/// Returns the recorded count (a string), or nil when none is recorded (one partition so far, or just recorded).
pub(crate) static PARTITION_COUNT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r#"
local recorded = redis.call('GET', KEYS[1])
if recorded then
  return recorded
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return '1'
end
if ARGV[2] == '1' and tonumber(ARGV[1]) > 1 then
  redis.call('SET', KEYS[1], ARGV[1])
end
return false
"#,
    )
});

/// Every script, for loading after a `NOSCRIPT` answer.
pub(crate) fn all() -> [&'static Lua; 13] {
    [
        &ADD_REQUEST,
        &PUBLISH_REPLY,
        &ANSWER_FROM_STORED,
        &DEAD_LETTER,
        &REPLAY,
        &TRIM,
        &PURGE_UPTO,
        &RETRY_CLAIM,
        &CANCEL,
        &ADD_DELAYED,
        &DUE_DELAYED,
        &PROMOTE_DELAYED,
        &PARTITION_COUNT,
    ]
}

/// Whether an error is Redis saying a script is not loaded.
pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.code() == Some("NOSCRIPT")
}

/// Loads every script, and the sharded form of each that publishes, into the server's cache. One command per
/// script: a cluster connection sends a lone `SCRIPT LOAD` to every primary (a pipeline of them would go to one
/// node only).
pub(crate) async fn load_all<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
) -> redis::RedisResult<()> {
    for script in all() {
        let forms = [script, script.on(PubSub::Sharded)];
        let forms = if script.publishes() {
            &forms[..]
        } else {
            &forms[..1]
        };
        for form in forms {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(form.code.as_ref())
                .query_async::<()>(con)
                .await?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FIELD_ENVELOPE, FIELD_ID};

    /// The scripts that add stream entries spell the entry's field names out in Lua; they must be the ones the
    /// rest of the crate reads and writes.
    #[test]
    fn scripts_use_the_protocols_field_names() {
        let fields = format!("'{FIELD_ID}', ARGV[1], '{FIELD_ENVELOPE}', ARGV[2]");
        assert!(ADD_REQUEST.code.contains(&fields), "ADD_REQUEST");
        let fields = format!("'{FIELD_ID}', ARGV[2], '{FIELD_ENVELOPE}', ARGV[3]");
        assert!(REPLAY.code.contains(&fields), "REPLAY");
        let fields = format!("'{FIELD_ID}', ARGV[3], '{FIELD_ENVELOPE}', ARGV[4]");
        assert!(DEAD_LETTER.code.contains(&fields), "DEAD_LETTER");
    }

    /// The sharded form of a script differs only in how it publishes; scripts that publish nothing have none.
    #[test]
    fn sharded_forms_publish_with_spublish_only() {
        for script in [&*PUBLISH_REPLY, &*ANSWER_FROM_STORED, &*DEAD_LETTER] {
            let sharded = script.on(PubSub::Sharded);
            assert!(!sharded.code.contains(PUBLISH_CALL));
            assert_eq!(
                sharded.code.replace(SPUBLISH_CALL, PUBLISH_CALL),
                script.code,
                "only the publish calls differ"
            );
            assert_ne!(sharded.hash, script.hash);
            assert!(std::ptr::eq(script.on(PubSub::Plain), script));
        }
        assert!(std::ptr::eq(ADD_REQUEST.on(PubSub::Sharded), &*ADD_REQUEST));
    }
}
