"""A second implementation of the redcall wire protocol (format version 1), written from docs/protocol.md.

It exists to keep the protocol honest: tests/interop.rs runs it against the Rust side in both directions. It is
deliberately small and synchronous (redis-py on RESP2, msgpack), and it follows the document, not the Rust code:

* requester: subscribe to the reply channel on a pub/sub connection and wait for the confirmation, then add the
  request (record + stream entry in one step, the ADD_REQUEST script), wait for the first reply naming the id,
  and look once at the stored reply on timeout;
* call_info: the request record, decoded;
* publish_reply / publish_error: the PUBLISH_REPLY script;
* responder: XREADGROUP from the group (created with MKSTREAM, BUSYGROUP is fine), checks, handler by function key,
  then store reply + publish + XACK in one MULTI/EXEC; dead-lettering with the documented script.

Not implemented (no test needs them): the reaper and redeliveries, claim refreshing, batching, reconnects.
"""

import time

import msgpack
import redis

FORMAT_VERSION = 1
DEFAULT_NAMESPACE = "redcall"
DEFAULT_GROUP = "workers"
#: The default payload limit (1 MiB), for request and reply envelopes.
PAYLOAD_LIMIT = 1 << 20
#: How long a request record outlives the request's timeout (default 1 h).
RECORD_RETENTION_MS = 3600 * 1000
#: How long a stored reply is kept (default 1 h).
REPLY_TTL_MS = 3600 * 1000

STATUSES = ("ok", "error", "dead_lettered", "expired")

# The scripts, as quoted in docs/protocol.md.
ADD_REQUEST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
-- The entry first: a script is not rolled back when a command fails, so a refused XADD leaves no record.
local entry = redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'env', ARGV[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])  -- a fresh id starts clean: no stale reply from an earlier life
return entry
"""

PUBLISH_REPLY = """
-- KEYS: T:reply:<id>, T:err:<id>, T:req:<id>   ARGV: reply envelope, reply ttl ms, T:chan:<id>
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end          -- unknown request
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end  -- already answered
redis.call('PUBLISH', ARGV[3], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# The doc's dead-letter script, plus the `group` field that the doc's table of dead-letter fields lists (the
# quoted script body leaves it out).
DEAD_LETTER = """
-- KEYS: T:requests, T:dead, T:reply:<id>, T:err:<id>
-- ARGV: group, entry id, request id, envelope, reason, error, deliveries, now ms,
--       reply envelope ('' = none), reply ttl ms, T:chan:<id>, function key
local dead = redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'env', ARGV[4], 'fn', ARGV[12],
  'reason', ARGV[5], 'error', ARGV[6], 'deliveries', ARGV[7], 'entry_id', ARGV[2], 'dead_at_ms', ARGV[8],
  'group', ARGV[1])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[4])
if ARGV[9] ~= '' then
  if redis.call('SET', KEYS[3], ARGV[9], 'NX', 'PX', ARGV[10]) then
    redis.call('PUBLISH', ARGV[11], ARGV[9])
  end
end
return dead
"""


def now_ms():
    return time.time_ns() // 1_000_000


def pack(value):
    """One MessagePack document; str as str, bytes as bin."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data):
    """One complete MessagePack document (params or reply data: any value, so any map keys)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class RedcallError(Exception):
    """What went wrong, as a small set of kinds (named like the Rust side's, in snake case)."""

    def __init__(self, kind, request_id=None, code=None, message=""):
        super().__init__(f"{kind} (request {request_id}): [{code}] {message}")
        self.kind = kind
        self.request_id = request_id
        self.code = code
        self.message = message

    def to_json(self):
        return {"kind": self.kind, "id": self.request_id, "code": self.code, "message": self.message}


class Keys:
    """The keys and channels of one service; all share the hash tag `{<namespace>:<service>}`."""

    def __init__(self, namespace, service):
        for name in (namespace, service):
            if "{" in name or "}" in name:
                raise ValueError(f"namespace and service names must not contain braces: {name!r}")
        self.tag = "{%s:%s}" % (namespace, service)
        self.requests = self.tag + ":requests"
        self.dead = self.tag + ":dead"

    def record(self, request_id):
        return f"{self.tag}:req:{request_id}"

    def reply(self, request_id):
        return f"{self.tag}:reply:{request_id}"

    def err(self, request_id):
        return f"{self.tag}:err:{request_id}"

    def chan(self, request_id):
        return f"{self.tag}:chan:{request_id}"


def _decode_map(data, what):
    try:
        env = msgpack.unpackb(data, raw=False)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a malformed envelope
        raise RedcallError("decode", message=f"{what}: not MessagePack: {e}") from e
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise RedcallError("decode", message=f"{what}: not a map with string keys")
    v = env.get("v")
    if type(v) is not int or v != FORMAT_VERSION:
        raise RedcallError("decode", message=f"{what}: unsupported format version {v!r}")
    return env


def _field(env, key, types, what, optional=False):
    if key not in env or env[key] is None:
        if optional:
            return None
        raise RedcallError("decode", message=f"{what}: `{key}` missing")
    value = env[key]
    # bool is an int in Python; MessagePack keeps them apart, and so do we.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise RedcallError("decode", message=f"{what}: `{key}` has type {type(value).__name__}")
    if isinstance(value, int) and value < 0:
        raise RedcallError("decode", message=f"{what}: `{key}` is negative")
    return value


def encode_request(request_id, func_key, params, timeout_ms, now=None):
    now = now_ms() if now is None else now
    return pack(
        {
            "v": FORMAT_VERSION,
            "id": request_id,
            "fn": func_key,
            "params": pack(params),
            "deadline_ms": now + timeout_ms,
            "created_ms": now,
        }
    )


def decode_request(data):
    """The request envelope as a dict (params still MessagePack bytes), or RedcallError(kind="decode")."""
    what = "request envelope"
    env = _decode_map(data, what)
    out = {
        "id": _field(env, "id", (str,), what),
        "fn": _field(env, "fn", (str,), what),
        "params": _field(env, "params", (bytes,), what),
        "deadline_ms": _field(env, "deadline_ms", (int,), what),
        "created_ms": _field(env, "created_ms", (int,), what),
        "replay": _field(env, "replay", (dict,), what, optional=True),
    }
    return out


def encode_reply(request_id, status, data=None, code=None, message=None):
    """A reply envelope; `data` is already MessagePack (or None)."""
    assert status in STATUSES
    return pack(
        {
            "v": FORMAT_VERSION,
            "id": request_id,
            "status": status,
            "data": data,
            "code": code,
            "message": message,
            "ts_ms": now_ms(),
        }
    )


def decode_reply(data):
    what = "reply envelope"
    env = _decode_map(data, what)
    status = _field(env, "status", (str,), what)
    if status not in STATUSES:
        raise RedcallError("decode", message=f"{what}: unknown status {status!r}")
    return {
        "id": _field(env, "id", (str,), what),
        "status": status,
        "data": _field(env, "data", (bytes,), what, optional=True),
        "code": _field(env, "code", (str,), what, optional=True),
        "message": _field(env, "message", (str,), what, optional=True),
        "ts_ms": _field(env, "ts_ms", (int,), what),
    }


def interpret_reply(request_id, reply):
    """The result a reply carries, or the error it stands for."""
    status, code, message = reply["status"], reply["code"], reply["message"] or ""
    if status == "ok":
        if reply["data"] is None:
            raise RedcallError("decode", request_id, message="`ok` reply without data")
        return unpack(reply["data"])
    if status == "dead_lettered":
        raise RedcallError("dead_lettered", request_id, code, message)
    if status == "expired":
        raise RedcallError("expired", request_id, code, message)
    kind = {"unknown_function": "unknown_function", "malformed_request": "malformed"}.get(code, "handler")
    raise RedcallError(kind, request_id, code, message)


class Requester:
    """Makes requests to one service, looks them up, answers them by hand."""

    def __init__(self, url, service, namespace=DEFAULT_NAMESPACE, payload_limit=PAYLOAD_LIMIT):
        self.url = url
        self.keys = Keys(namespace, service)
        self.payload_limit = payload_limit
        self.redis = redis.Redis.from_url(url, protocol=2, socket_timeout=10)
        self._add = self.redis.register_script(ADD_REQUEST)
        self._publish = self.redis.register_script(PUBLISH_REPLY)

    def request(self, request_id, func_key, params, timeout_ms):
        """Sends the request and waits for its reply, at most `timeout_ms`."""
        return self.send(request_id, func_key, params, timeout_ms).wait()

    def send(self, request_id, func_key, params, timeout_ms):
        """Adds the request once its reply channel is subscribed; returns a Pending to wait on."""
        if not request_id:
            raise RedcallError("config", message="a request id must not be empty")
        started = time.monotonic()
        envelope = encode_request(request_id, func_key, params, timeout_ms)
        if len(envelope) > self.payload_limit:
            raise RedcallError(
                "payload_too_large", request_id,
                message=f"request is {len(envelope)} bytes, over the limit of {self.payload_limit}",
            )
        deadline = started + timeout_ms / 1000
        channel = self.keys.chan(request_id)
        # RESP2: a subscribed connection carries nothing else, so the add goes on another connection, and only
        # once Redis has confirmed the subscription (then no reply can be published before we listen).
        pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
        try:
            pubsub.subscribe(channel)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RedcallError("timeout", request_id, message="subscription not confirmed in time")
                msg = pubsub.get_message(timeout=left)
                if msg and msg["type"] == "subscribe" and msg["channel"] == channel.encode():
                    break
            entry = self._add(
                keys=[self.keys.record(request_id), self.keys.requests, self.keys.reply(request_id),
                      self.keys.err(request_id)],
                args=[request_id, envelope, timeout_ms + RECORD_RETENTION_MS],
            )
        except BaseException:
            pubsub.close()
            raise
        if entry is None:
            pubsub.close()
            raise RedcallError("duplicate_id", request_id, message="a request with this id already exists")
        return Pending(self, request_id, pubsub, deadline, entry.decode())

    def call_info(self, request_id):
        """The request as its record holds it: function key, params (decoded), deadline and creation time."""
        record = self.redis.get(self.keys.record(request_id))
        if record is None:
            raise RedcallError("not_found", request_id, message="no request record")
        env = decode_request(record)
        return {
            "id": env["id"],
            "func_key": env["fn"],
            "params": unpack(env["params"]),
            "deadline_ms": env["deadline_ms"],
            "created_ms": env["created_ms"],
            "replay": env["replay"],
        }

    def stored_reply(self, request_id):
        data = self.redis.get(self.keys.reply(request_id))
        return None if data is None else decode_reply(data)

    def publish_reply(self, request_id, data):
        """Answers a request by hand with `data`."""
        self._publish_envelope(request_id, encode_reply(request_id, "ok", data=pack(data)))

    def publish_error(self, request_id, code, message):
        """Answers a request by hand with an error."""
        self._publish_envelope(request_id, encode_reply(request_id, "error", code=code, message=message))

    def _publish_envelope(self, request_id, envelope):
        if len(envelope) > self.payload_limit:
            raise RedcallError("payload_too_large", request_id, message=f"reply is {len(envelope)} bytes")
        stored = self._publish(
            keys=[self.keys.reply(request_id), self.keys.err(request_id), self.keys.record(request_id)],
            args=[envelope, REPLY_TTL_MS, self.keys.chan(request_id)],
        )
        if stored == -1:
            raise RedcallError("not_found", request_id, message="no request record")
        if stored == 0:
            raise RedcallError("already_answered", request_id, message="a reply is stored already")


class Pending:
    """A request Redis accepted; `wait` returns its result or raises its error."""

    def __init__(self, requester, request_id, pubsub, deadline, entry_id):
        self.requester = requester
        self.id = request_id
        self.entry_id = entry_id
        self._pubsub = pubsub
        self._deadline = deadline
        self._channel = requester.keys.chan(request_id).encode()

    def wait(self):
        try:
            while True:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                msg = self._pubsub.get_message(timeout=left)
                if not msg or msg["type"] != "message" or msg["channel"] != self._channel:
                    continue
                reply = decode_reply(msg["data"])
                if reply["id"] != self.id:
                    continue  # a reply is taken only if it names our id
                return interpret_reply(self.id, reply)
            # Timed out: one look at the stored reply, which may have been published while nobody listened.
            reply = self.requester.stored_reply(self.id)
            if reply is not None and reply["id"] == self.id:
                return interpret_reply(self.id, reply)
            raise RedcallError(
                "timeout", self.id, message=f"no reply for request {self.id} in time (it may still be handled later)"
            )
        finally:
            try:
                self._pubsub.unsubscribe()
            finally:
                self._pubsub.close()


class HandlerError(Exception):
    """A handler's failure: answered with an error reply carrying `code` (default `handler_error`)."""

    def __init__(self, message, code="handler_error"):
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidParams(Exception):
    """The params are not what the handler takes: dead-lettered with reason and code `invalid_params`."""


class Retry(Exception):
    """Leave the request pending for a later delivery (the error is kept in `T:err:<id>`)."""


class Responder:
    """Serves one service: reads its group, runs handlers by function key, answers atomically."""

    def __init__(self, url, service, handlers, namespace=DEFAULT_NAMESPACE, group=DEFAULT_GROUP,
                 consumer="py-responder", block_ms=200, count=16, payload_limit=PAYLOAD_LIMIT, on_outcome=None):
        self.keys = Keys(namespace, service)
        self.handlers = handlers
        self.group = group
        self.consumer = consumer
        self.block_ms = block_ms
        self.count = count
        self.payload_limit = payload_limit
        self.on_outcome = on_outcome or (lambda outcome: None)
        self.redis = redis.Redis.from_url(url, protocol=2, socket_timeout=10)
        # The blocking read gets a connection of its own, with a response timeout longer than the block time.
        self.reader = redis.Redis.from_url(url, protocol=2, socket_timeout=block_ms / 1000 + 5)
        self._dead_letter = self.redis.register_script(DEAD_LETTER)

    def ensure_group(self):
        try:
            self.redis.xgroup_create(self.keys.requests, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise

    def run(self, until):
        """Serves until `until()` is true (checked between reads)."""
        self.ensure_group()
        while not until():
            try:
                streams = self.reader.xreadgroup(
                    self.group, self.consumer, {self.keys.requests: ">"}, count=self.count, block=self.block_ms
                )
            except redis.ResponseError as e:
                if str(e).startswith("NOGROUP"):
                    self.ensure_group()
                    continue
                raise
            for _stream, entries in streams or []:
                for entry_id, fields in entries:
                    self.handle(entry_id.decode(), fields)

    def handle(self, entry_id, fields, delivery=1):
        raw_id, env = fields.get(b"id"), fields.get(b"env")
        request_id = None
        if raw_id is not None:
            try:
                request_id = raw_id.decode("utf-8")
            except UnicodeDecodeError:
                request_id = None
        if request_id is None or env is None:
            return self.dead_letter(entry_id, request_id, env, None, "malformed_request",
                                    "entry lacks the `id` or `env` field", delivery)
        if len(env) > self.payload_limit:
            return self.dead_letter(entry_id, request_id, env, None, "payload_too_large",
                                    f"request is {len(env)} bytes, over the limit of {self.payload_limit}", delivery)
        try:
            request = decode_request(env)
        except RedcallError as e:
            return self.dead_letter(entry_id, request_id, env, None, "malformed_request", e.message, delivery)
        if request["id"] != request_id:
            return self.dead_letter(entry_id, request_id, env, None, "malformed_request",
                                    f"envelope id {request['id']!r} differs from entry id {request_id!r}", delivery)
        func_key = request["fn"]
        if request["deadline_ms"] <= now_ms():
            reply = encode_reply(request_id, "expired", code="expired", message="deadline passed before start")
            return self.answer(entry_id, request_id, func_key, reply, delivery, "expired")
        handler = self.handlers.get(func_key)
        if handler is None:
            return self.dead_letter(entry_id, request_id, env, func_key, "unknown_function",
                                    f"no handler for function key {func_key!r}", delivery, reply_message=func_key)
        try:
            params = unpack(request["params"])
        except Exception as e:  # noqa: BLE001
            return self.dead_letter(entry_id, request_id, env, func_key, "invalid_params",
                                    f"params are not MessagePack: {e}", delivery)
        try:
            result = handler(params)
        except InvalidParams as e:
            return self.dead_letter(entry_id, request_id, env, func_key, "invalid_params", str(e), delivery)
        except HandlerError as e:
            reply = encode_reply(request_id, "error", code=e.code, message=e.message)
            return self.answer(entry_id, request_id, func_key, reply, delivery, "error")
        except Retry as e:
            return self.leave_pending(request_id, func_key, f"retry requested: {e}")
        except Exception as e:  # noqa: BLE001 - a crash of the handler is a panic: redelivered later
            return self.leave_pending(request_id, func_key, f"handler panicked: {e!r}")
        reply = encode_reply(request_id, "ok", data=pack(result))
        if len(reply) > self.payload_limit:
            reply = encode_reply(request_id, "error", code="payload_too_large",
                                 message=f"reply is {len(reply)} bytes, over the limit of {self.payload_limit}")
        return self.answer(entry_id, request_id, func_key, reply, delivery, "ok")

    def answer(self, entry_id, request_id, func_key, reply, delivery, outcome):
        """Stores the reply (the first stored wins), publishes it and acknowledges the entry, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.reply(request_id), reply, nx=True, px=REPLY_TTL_MS)
        pipe.publish(self.keys.chan(request_id), reply)
        if delivery > 1:
            pipe.delete(self.keys.err(request_id))
        pipe.xack(self.keys.requests, self.group, entry_id)
        pipe.execute()
        self.on_outcome({"id": request_id, "fn": func_key, "entry_id": entry_id, "outcome": outcome})

    def dead_letter(self, entry_id, request_id, env, func_key, reason, error, delivery, reply_message=None):
        reply = b""
        if request_id is not None:
            reply = encode_reply(request_id, "error", code=reason,
                                 message=error if reply_message is None else reply_message)
        rid = request_id or ""
        self._dead_letter(
            keys=[self.keys.requests, self.keys.dead, self.keys.reply(rid), self.keys.err(rid)],
            args=[self.group, entry_id, rid, env or b"", reason, error, delivery, now_ms(), reply, REPLY_TTL_MS,
                  self.keys.chan(rid), func_key or ""],
        )
        self.on_outcome({"id": request_id, "fn": func_key, "entry_id": entry_id, "outcome": "dead_lettered",
                         "reason": reason})

    def leave_pending(self, request_id, func_key, error):
        self.redis.set(self.keys.err(request_id), error, px=RECORD_RETENTION_MS)
        self.on_outcome({"id": request_id, "fn": func_key, "outcome": "pending", "error": error})
