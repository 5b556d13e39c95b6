//! The envelope decoders: they accept exactly the shapes `docs/protocol.md` documents (DESIGN 13) and refuse
//! anything else with a message that says what was wrong ("`params` must be bin, got str").
//!
//! The rules, for every envelope and the `replay` map inside a request:
//! - a MessagePack **map** with **str** keys (not an array of the values, as rmp-serde's compact form would be);
//! - every documented key at most once, with exactly its documented type: `str` is never taken for `bin` nor
//!   `bin` for `str`; ints may use any int encoding but must be non-negative and in range; `status` and
//!   `replay.source` are one of their documented strings;
//! - a required key present and not nil; an optional key absent or nil (both mean "not given");
//! - unknown keys ignored whatever their value (forward compatibility: newer writers may add optional keys), but
//!   not repeated either;
//! - `v` equal to [`FORMAT_VERSION`]; checked as soon as it is read, so that an envelope of another version is
//!   refused for its version (writers put `v` first);
//! - `params` and `data` hold exactly one complete MessagePack document;
//! - nothing after the envelope.
//!
//! They read the bytes with [`super::msgpack::Reader`], which sees the MessagePack types serde's visitors cannot
//! tell apart, borrows keys and payloads from the input, and allocates only the envelope's own strings and
//! buffers (the same allocations as rmp-serde's derived decoder made).

use super::FORMAT_VERSION;
use super::envelope::{ReplayInfo, ReplaySource, ReplyEnvelope, ReplyStatus, RequestEnvelope};
use super::msgpack::{Head, Reader, check_one_document};

type Result<T> = std::result::Result<T, String>;

/// Decodes a request envelope; the `Err` is the message for [`crate::Error::Decode`].
pub(super) fn request(bytes: &[u8]) -> Result<RequestEnvelope> {
    let mut reader = Reader::new(bytes);
    let pairs = map_len(reader.head()?, "the envelope")?;
    let mut keys = Keys::new("");
    let (mut v, mut id, mut func_key, mut params) = (None, None, None, None);
    let (mut deadline_ms, mut created_ms, mut replay, mut trace) = (None, None, None, None);
    for _ in 0..pairs {
        let key = key(&mut reader)?;
        let head = reader.head()?;
        match key {
            b"v" => v = Some(keys.first(0, "v").and(version(head))?),
            b"id" => id = Some(keys.first(1, "id").and(text(head, "id"))?),
            b"fn" => func_key = Some(keys.first(2, "fn").and(text(head, "fn"))?),
            b"params" => params = Some(keys.first(3, "params").and(document(head, "params"))?),
            b"deadline_ms" => {
                deadline_ms = Some(
                    keys.first(4, "deadline_ms")
                        .and(uint(head, "deadline_ms"))?,
                )
            }
            b"created_ms" => {
                created_ms = Some(keys.first(5, "created_ms").and(uint(head, "created_ms"))?)
            }
            b"replay" => {
                keys.first(6, "replay")?;
                replay = replay_info(&mut reader, head)?;
            }
            b"trace" => {
                keys.first(7, "trace")?;
                trace = trace_context(&mut reader, head)?;
            }
            _ => keys.unknown(key, &mut reader, head)?,
        }
    }
    nothing_after(&reader)?;
    Ok(RequestEnvelope {
        v: required(v, "v")?,
        id: required(id, "id")?.to_owned(),
        func_key: required(func_key, "fn")?.to_owned(),
        params: required(params, "params")?.to_vec(),
        deadline_ms: required(deadline_ms, "deadline_ms")?,
        created_ms: required(created_ms, "created_ms")?,
        replay,
        trace,
    })
}

/// Decodes a reply envelope; the `Err` is the message for [`crate::Error::Decode`].
pub(super) fn reply(bytes: &[u8]) -> Result<ReplyEnvelope> {
    let mut reader = Reader::new(bytes);
    let pairs = map_len(reader.head()?, "the envelope")?;
    let mut keys = Keys::new("");
    let (mut v, mut id, mut status, mut ts_ms) = (None, None, None, None);
    let (mut data, mut code, mut message) = (None, None, None);
    for _ in 0..pairs {
        let key = key(&mut reader)?;
        let head = reader.head()?;
        match key {
            b"v" => v = Some(keys.first(0, "v").and(version(head))?),
            b"id" => id = Some(keys.first(1, "id").and(text(head, "id"))?),
            b"status" => status = Some(keys.first(2, "status").and(reply_status(head))?),
            b"data" => {
                data = keys
                    .first(3, "data")
                    .and(optional(head, "data", document))?
            }
            b"code" => code = keys.first(4, "code").and(optional(head, "code", text))?,
            b"message" => {
                message = keys
                    .first(5, "message")
                    .and(optional(head, "message", text))?
            }
            b"ts_ms" => ts_ms = Some(keys.first(6, "ts_ms").and(uint(head, "ts_ms"))?),
            _ => keys.unknown(key, &mut reader, head)?,
        }
    }
    nothing_after(&reader)?;
    Ok(ReplyEnvelope {
        v: required(v, "v")?,
        id: required(id, "id")?.to_owned(),
        status: required(status, "status")?,
        data: data.map(<[u8]>::to_vec),
        code: code.map(str::to_owned),
        message: message.map(str::to_owned),
        ts_ms: required(ts_ms, "ts_ms")?,
    })
}

/// The `replay` map (its head already read): `None` for nil.
fn replay_info<'a>(reader: &mut Reader<'a>, head: Head<'a>) -> Result<Option<ReplayInfo>> {
    let pairs = match head {
        Head::Nil => return Ok(None),
        Head::Map(n) => n,
        other => {
            return Err(format!(
                "`replay` must be a map or nil, got {}",
                other.kind()
            ));
        }
    };
    let mut keys = Keys::new("replay.");
    let (mut count, mut source, mut from, mut at_ms) = (None, None, None, None);
    for _ in 0..pairs {
        let key = key(reader)?;
        let head = reader.head()?;
        match key {
            b"count" => count = Some(keys.first(0, "count").and(uint32(head, "replay.count"))?),
            b"source" => source = Some(keys.first(1, "source").and(replay_source(head))?),
            b"from" => from = Some(keys.first(2, "from").and(text(head, "replay.from"))?),
            b"at_ms" => at_ms = Some(keys.first(3, "at_ms").and(uint(head, "replay.at_ms"))?),
            _ => keys.unknown(key, reader, head)?,
        }
    }
    Ok(Some(ReplayInfo {
        count: required(count, "replay.count")?,
        source: required(source, "replay.source")?,
        from: required(from, "replay.from")?.to_owned(),
        at_ms: required(at_ms, "replay.at_ms")?,
    }))
}

/// The `trace` map (its head already read), read leniently: whatever is not a map holding a valid `traceparent`
/// str (and, optionally, a `tracestate` str) is dropped (`None`), never refused, so a bad trace context costs the
/// request nothing but its trace. Only what breaks MessagePack itself (a truncated value) is an error.
fn trace_context<'a>(
    reader: &mut Reader<'a>,
    head: Head<'a>,
) -> Result<Option<crate::trace::TraceContext>> {
    let Head::Map(pairs) = head else {
        reader.skip_after(head)?;
        return Ok(None);
    };
    let (mut traceparent, mut tracestate) = (None, None);
    let mut usable = true;
    for _ in 0..pairs {
        let key = reader.head()?;
        let slot = match key {
            Head::Str(b"traceparent") => Some(&mut traceparent),
            Head::Str(b"tracestate") => Some(&mut tracestate),
            Head::Str(_) => None,
            other => {
                // A key that is not a str: skip it (a container key's contents come before the value) and drop
                // the context.
                reader.skip_after(other)?;
                usable = false;
                None
            }
        };
        let value = reader.head()?;
        match (slot, value) {
            (Some(slot), Head::Str(bytes)) if slot.is_none() => {
                *slot = Some(std::str::from_utf8(bytes).ok());
            }
            (Some(slot), Head::Nil) if slot.is_none() => *slot = Some(None),
            (None, other) => reader.skip_after(other)?,
            (Some(_), other) => {
                // Another type, or a key given twice.
                reader.skip_after(other)?;
                usable = false;
            }
        }
    }
    if !usable {
        return Ok(None);
    }
    let Some(Some(traceparent)) = traceparent else {
        return Ok(None);
    };
    let tracestate = tracestate.flatten();
    Ok(crate::trace::TraceContext::parse(traceparent, tracestate).ok())
}

/// The keys of one map seen so far, to refuse a repeated one. Unknown keys are remembered (borrowed) only when
/// there are any, so a documented envelope allocates nothing here.
struct Keys<'a> {
    path: &'static str,
    known: u32,
    unknown: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            known: 0,
            unknown: Vec::new(),
        }
    }

    /// The documented key number `bit`, seen for the first time?
    #[inline]
    fn first(&mut self, bit: u32, key: &str) -> Result<()> {
        if self.known & (1 << bit) != 0 {
            return Err(format!("duplicate key `{}{key}`", self.path));
        }
        self.known |= 1 << bit;
        Ok(())
    }

    /// An unknown key: ignored with its value (its head already read), unless it was seen before.
    fn unknown(&mut self, key: &'a [u8], reader: &mut Reader<'a>, head: Head<'a>) -> Result<()> {
        let key = std::str::from_utf8(key).map_err(|_| "a key is not valid UTF-8".to_owned())?;
        if self.unknown.contains(&key) {
            return Err(format!("duplicate key `{}{key}`", self.path));
        }
        self.unknown.push(key);
        reader.skip_after(head)
    }
}

fn map_len(head: Head<'_>, what: &str) -> Result<u32> {
    match head {
        Head::Map(n) => Ok(n),
        other => Err(format!(
            "{what} must be a map with str keys, got {}",
            other.kind()
        )),
    }
}

/// The next key's bytes: a `str` (checked to be UTF-8 only when it is not a documented key, since those are
/// ASCII and compared as bytes).
#[inline]
fn key<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8]> {
    match reader.head()? {
        Head::Str(bytes) => Ok(bytes),
        other => Err(format!("keys must be str, got {}", other.kind())),
    }
}

fn nothing_after(reader: &Reader<'_>) -> Result<()> {
    match reader.remaining() {
        0 => Ok(()),
        n => Err(format!("{n} trailing bytes after the envelope")),
    }
}

#[inline]
fn required<T>(value: Option<T>, key: &str) -> Result<T> {
    value.ok_or_else(|| format!("`{key}` missing"))
}

/// An optional key's value: nil means not given.
fn optional<'a, T>(
    head: Head<'a>,
    key: &str,
    decode: fn(Head<'a>, &str) -> Result<T>,
) -> Result<Option<T>> {
    match head {
        Head::Nil => Ok(None),
        head => decode(head, key).map(Some),
    }
}

#[inline]
fn text<'a>(head: Head<'a>, key: &str) -> Result<&'a str> {
    match head {
        Head::Str(bytes) => {
            std::str::from_utf8(bytes).map_err(|_| format!("`{key}` is not valid UTF-8"))
        }
        other => Err(format!("`{key}` must be str, got {}", other.kind())),
    }
}

/// A `bin` holding exactly one complete MessagePack document.
#[inline]
fn document<'a>(head: Head<'a>, key: &str) -> Result<&'a [u8]> {
    match head {
        Head::Bin(bytes) => match check_one_document(bytes) {
            Ok(()) => Ok(bytes),
            Err(why) => Err(format!("`{key}` is not one MessagePack document: {why}")),
        },
        other => Err(format!("`{key}` must be bin, got {}", other.kind())),
    }
}

#[inline]
fn uint(head: Head<'_>, key: &str) -> Result<u64> {
    head.as_u64()
        .map_err(|got| format!("`{key}` must be a non-negative int, got {got}"))
}

fn uint32(head: Head<'_>, key: &str) -> Result<u32> {
    let n = uint(head, key)?;
    u32::try_from(n).map_err(|_| format!("`{key}` is out of range: {n} (at most {})", u32::MAX))
}

fn version(head: Head<'_>) -> Result<u8> {
    let v = match head {
        Head::Uint(n) => i128::from(n),
        Head::Int(n) => i128::from(n),
        other => return Err(format!("`v` must be a positive int, got {}", other.kind())),
    };
    if v == i128::from(FORMAT_VERSION) {
        Ok(FORMAT_VERSION)
    } else {
        Err(format!(
            "unsupported format version {v} (this build speaks {FORMAT_VERSION})"
        ))
    }
}

fn reply_status(head: Head<'_>) -> Result<ReplyStatus> {
    Ok(match text(head, "status")? {
        "ok" => ReplyStatus::Ok,
        "error" => ReplyStatus::Error,
        "dead_lettered" => ReplyStatus::DeadLettered,
        "expired" => ReplyStatus::Expired,
        other => {
            return Err(format!(
                "unknown status {other:?} (expected ok, error, dead_lettered or expired)"
            ));
        }
    })
}

fn replay_source(head: Head<'_>) -> Result<ReplaySource> {
    Ok(match text(head, "replay.source")? {
        "dead_letter" => ReplaySource::DeadLetter,
        "range" => ReplaySource::Range,
        other => {
            return Err(format!(
                "unknown `replay.source` {other:?} (expected dead_letter or range)"
            ));
        }
    })
}

/// A progress envelope (see `docs/protocol.md`, "Progress"): the same rules as the other envelopes.
pub(super) fn progress(bytes: &[u8]) -> Result<super::progress::ProgressEnvelope> {
    let mut reader = Reader::new(bytes);
    let pairs = map_len(reader.head()?, "the envelope")?;
    let mut keys = Keys::new("");
    let (mut v, mut id, mut data, mut ts_ms) = (None, None, None, None);
    for _ in 0..pairs {
        let key = key(&mut reader)?;
        let head = reader.head()?;
        match key {
            b"v" => v = Some(keys.first(0, "v").and(version(head))?),
            b"id" => id = Some(keys.first(1, "id").and(text(head, "id"))?),
            b"data" => data = Some(keys.first(2, "data").and(document(head, "data"))?),
            b"ts_ms" => ts_ms = Some(keys.first(3, "ts_ms").and(uint(head, "ts_ms"))?),
            _ => keys.unknown(key, &mut reader, head)?,
        }
    }
    nothing_after(&reader)?;
    Ok(super::progress::ProgressEnvelope {
        v: required(v, "v")?,
        id: required(id, "id")?.to_owned(),
        data: required(data, "data")?.to_vec(),
        ts_ms: required(ts_ms, "ts_ms")?,
    })
}
