//! The wire protocol: key layout, envelopes and their MessagePack encoding.
//!
//! Everything here is pure (no I/O) so that it can be tested and fuzzed on its own, and so that a program in
//! another language can be written from `docs/protocol.md`, which documents exactly what this module produces.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The envelope format version this build writes and accepts.
pub const FORMAT_VERSION: u8 = 1;

/// Stream entry field holding the request id (plain UTF-8), kept outside the envelope so that an entry whose
/// envelope cannot be decoded can still be answered with an error.
pub const FIELD_ID: &str = "id";
/// Stream entry field holding the MessagePack request envelope.
pub const FIELD_ENVELOPE: &str = "env";

/// The keys and channels of one service, all sharing the hash tag `{<namespace>:<service>}` so that a Redis
/// Cluster places the whole service on one shard and multi-key scripts stay legal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKeys {
    tag: String,
    requests: String,
    dead_letters: String,
}

impl ServiceKeys {
    /// Builds the key layout of `service` inside `namespace`.
    pub fn new(namespace: &str, service: &str) -> Self {
        let tag = format!("{{{namespace}:{service}}}");
        Self {
            requests: format!("{tag}:requests"),
            dead_letters: format!("{tag}:dead"),
            tag,
        }
    }

    /// The hash tag shared by every key of the service, braces included.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The requests stream.
    pub fn requests(&self) -> &str {
        &self.requests
    }

    /// The dead-letter stream.
    pub fn dead_letters(&self) -> &str {
        &self.dead_letters
    }

    /// `<tag><infix><id>`, built without the formatting machinery: these keys are made several times per request.
    fn per_id(&self, infix: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.tag.len() + infix.len() + id.len());
        key.push_str(&self.tag);
        key.push_str(infix);
        key.push_str(id);
        key
    }

    /// The request record (the request envelope, for `call_info` and duplicate detection).
    pub fn record(&self, id: &str) -> String {
        self.per_id(":req:", id)
    }

    /// The stored copy of the reply (a reply envelope, with a TTL).
    pub fn reply(&self, id: &str) -> String {
        self.per_id(":reply:", id)
    }

    /// The last error of a failed delivery (kept for the dead-letter record).
    pub fn last_error(&self, id: &str) -> String {
        self.per_id(":err:", id)
    }

    /// The pub/sub channel the reply to `id` is published on.
    pub fn reply_channel(&self, id: &str) -> String {
        self.per_id(":chan:", id)
    }

    /// The request id a reply channel of this service belongs to (the inverse of [`ServiceKeys::reply_channel`]).
    pub(crate) fn id_of_reply_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.tag.as_str())?
            .strip_prefix(":chan:")
    }
}

/// A request as it travels in the stream and is kept in the request record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Format version, [`FORMAT_VERSION`].
    pub v: u8,
    /// The request id.
    pub id: String,
    /// The function key the request asks for.
    #[serde(rename = "fn")]
    pub func_key: String,
    /// The parameters: one MessagePack document, carried as binary.
    #[serde(with = "serde_bytes")]
    pub params: Vec<u8>,
    /// Absolute deadline, milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// When the request was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Set when this is a replay of an earlier request (see `docs/operations.md`); absent (not even encoded) for
    /// a request as first made, so envelopes of ordinary requests are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
}

/// Where a replayed request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySource {
    /// Re-queued from the dead-letter stream (`redcall dlq replay`).
    DeadLetter,
    /// Re-queued from a range of the requests stream (`redcall replay --from .. --to ..`).
    Range,
}

/// The provenance of a replayed request, carried in its envelope and therefore in its record, so `call_info`
/// and handlers' logs can tell a replay from the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayInfo {
    /// How many times this request id has been replayed, this replay included.
    pub count: u32,
    /// Where the replay came from.
    pub source: ReplaySource,
    /// The entry that was replayed: a dead-letter stream entry id or a requests stream entry id.
    pub from: String,
    /// When the replay was queued, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl RequestEnvelope {
    /// The deadline as a [`SystemTime`].
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline_ms)
    }

    /// Whether the deadline is behind `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms <= now_ms
    }
}

/// How a request ended, as told by its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// The handler succeeded; `data` holds its result.
    Ok,
    /// The request failed; `code` and `message` say why.
    Error,
    /// The request was moved to the dead-letter stream.
    DeadLettered,
    /// The request's deadline passed before a responder started it.
    Expired,
}

/// Built-in error codes a responder puts in error replies (handlers choose their own codes).
pub mod codes {
    /// No handler is registered for the function key.
    pub const UNKNOWN_FUNCTION: &str = "unknown_function";
    /// The params could not be decoded into the handler's parameter type.
    pub const INVALID_PARAMS: &str = "invalid_params";
    /// The stream entry was malformed (missing fields, bad envelope, unknown version).
    pub const MALFORMED: &str = "malformed_request";
    /// The request or the reply was larger than the payload limit.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The handler failed without choosing a code.
    pub const HANDLER: &str = "handler_error";
    /// The deadline passed before a responder started the request (status `expired`).
    pub const EXPIRED: &str = "expired";
}

/// A reply as it is published on the reply channel and stored under the reply key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    /// Format version, [`FORMAT_VERSION`].
    pub v: u8,
    /// The request id this answers.
    pub id: String,
    /// How the request ended.
    pub status: ReplyStatus,
    /// The result (one MessagePack document) when `status` is `ok`.
    #[serde(default, with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    /// Machine-readable error code when `status` is not `ok`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable error message when `status` is not `ok`.
    #[serde(default)]
    pub message: Option<String>,
    /// When the reply was made, milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

impl ReplyEnvelope {
    /// A successful reply carrying `data` (already MessagePack).
    pub fn ok(id: &str, data: Vec<u8>) -> Self {
        Self::new(id, ReplyStatus::Ok, Some(data), None, None)
    }

    /// A failed reply with a code and a message.
    pub fn failure(id: &str, status: ReplyStatus, code: &str, message: impl Into<String>) -> Self {
        Self::new(
            id,
            status,
            None,
            Some(code.to_owned()),
            Some(message.into()),
        )
    }

    fn new(
        id: &str,
        status: ReplyStatus,
        data: Option<Vec<u8>>,
        code: Option<String>,
        message: Option<String>,
    ) -> Self {
        Self {
            v: FORMAT_VERSION,
            id: id.to_owned(),
            status,
            data,
            code,
            message,
            ts_ms: now_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch, by the local clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Encodes any serde value as MessagePack with named fields (maps, not arrays), the form other languages read
/// most easily.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|source| Error::Encode { source })
}

/// Decodes a MessagePack document; `what` names the thing for the error message.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|source| Error::Decode {
        what,
        message: source.to_string(),
    })
}

/// Decodes a request envelope and checks its version.
pub fn decode_request(bytes: &[u8]) -> Result<RequestEnvelope> {
    let envelope: RequestEnvelope = decode(bytes, "request envelope")?;
    check_version(envelope.v, "request envelope")?;
    Ok(envelope)
}

/// Decodes a reply envelope and checks its version.
pub fn decode_reply(bytes: &[u8]) -> Result<ReplyEnvelope> {
    let envelope: ReplyEnvelope = decode(bytes, "reply envelope")?;
    check_version(envelope.v, "reply envelope")?;
    Ok(envelope)
}

fn check_version(v: u8, what: &'static str) -> Result<()> {
    if v == FORMAT_VERSION {
        Ok(())
    } else {
        Err(Error::Decode {
            what,
            message: format!("unsupported format version {v} (this build speaks {FORMAT_VERSION})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = ServiceKeys::new("redcall", "orders");
        for key in [
            keys.requests().to_owned(),
            keys.dead_letters().to_owned(),
            keys.record("r1"),
            keys.reply("r1"),
            keys.last_error("r1"),
            keys.reply_channel("r1"),
        ] {
            assert!(key.starts_with("{redcall:orders}:"), "{key}");
        }
    }

    #[test]
    fn request_round_trips() {
        let env = RequestEnvelope {
            v: FORMAT_VERSION,
            id: "request_123".into(),
            func_key: "SomeFunction".into(),
            params: encode(&serde_json::json!({"key1": "value1"})).expect("encode"),
            deadline_ms: 10,
            created_ms: 5,
            replay: None,
        };
        let bytes = encode(&env).expect("encode");
        assert_eq!(decode_request(&bytes).expect("decode"), env);
    }

    #[test]
    fn replay_info_is_optional_on_the_wire() {
        #[derive(Serialize)]
        struct Original<'a> {
            v: u8,
            id: &'a str,
            #[serde(rename = "fn")]
            func_key: &'a str,
            #[serde(with = "serde_bytes")]
            params: &'a [u8],
            deadline_ms: u64,
            created_ms: u64,
        }
        let old = Original {
            v: FORMAT_VERSION,
            id: "r1",
            func_key: "f",
            params: &[0xc0],
            deadline_ms: 10,
            created_ms: 5,
        };
        let old_bytes = encode(&old).expect("encode");
        let mut env = decode_request(&old_bytes).expect("an envelope without replay decodes");
        assert_eq!(env.replay, None);
        assert_eq!(
            encode(&env).expect("encode"),
            old_bytes,
            "no replay field written"
        );
        env.replay = Some(ReplayInfo {
            count: 2,
            source: ReplaySource::DeadLetter,
            from: "1-0".into(),
            at_ms: 7,
        });
        let bytes = encode(&env).expect("encode");
        assert_eq!(decode_request(&bytes).expect("decode"), env);
    }

    /// Decodes a hex fixture.
    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex fixture"))
            .collect()
    }

    /// The envelopes as bytes, made by another MessagePack implementation (Python's `msgpack.packb` of the maps
    /// documented in docs/protocol.md): what a program in another language sends and expects. A change here is a
    /// change of the wire format.
    #[test]
    fn envelopes_match_the_documented_wire_format() {
        // {"key1": "value1"}
        let params = hex("81a46b657931a676616c756531");
        let request = RequestEnvelope {
            v: FORMAT_VERSION,
            id: "request_123".into(),
            func_key: "SomeFunction".into(),
            params,
            deadline_ms: 1_764_500_000_000,
            created_ms: 1_764_499_990_000,
            replay: None,
        };
        let request_bytes = hex(concat!(
            "86a17601a26964ab726571756573745f313233a2666eac536f6d6546756e6374696f6ea6706172616d73c40d81a46b",
            "657931a676616c756531ab646561646c696e655f6d73cf0000019ad4654d00aa637265617465645f6d73cf000001",
            "9ad46525f0"
        ));
        assert_eq!(encode(&request).unwrap(), request_bytes);
        assert_eq!(decode_request(&request_bytes).unwrap(), request);

        // {"total_cents": 500}
        let mut ok = ReplyEnvelope::ok("request_123", hex("81ab746f74616c5f63656e7473cd01f4"));
        ok.ts_ms = 1_764_499_995_000;
        let ok_bytes = hex(concat!(
            "87a17601a26964ab726571756573745f313233a6737461747573a26f6ba464617461c41081ab746f74616c5f6365",
            "6e7473cd01f4a4636f6465c0a76d657373616765c0a574735f6d73cf0000019ad4653978"
        ));
        assert_eq!(encode(&ok).unwrap(), ok_bytes);
        assert_eq!(decode_reply(&ok_bytes).unwrap(), ok);

        let mut failed = ReplyEnvelope::failure(
            "request_123",
            ReplyStatus::Error,
            "out_of_stock",
            "no widgets left",
        );
        failed.ts_ms = 1_764_499_995_000;
        let failed_bytes = hex(concat!(
            "87a17601a26964ab726571756573745f313233a6737461747573a56572726f72a464617461c0a4636f6465ac6f75",
            "745f6f665f73746f636ba76d657373616765af6e6f2077696467657473206c656674a574735f6d73cf0000019ad4",
            "653978"
        ));
        assert_eq!(encode(&failed).unwrap(), failed_bytes);
        assert_eq!(decode_reply(&failed_bytes).unwrap(), failed);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut reply = ReplyEnvelope::ok("x", vec![0xc0]);
        reply.v = 9;
        let bytes = encode(&reply).expect("encode");
        let err = decode_reply(&bytes).expect_err("must refuse");
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic sweep; the property test in tests/ goes further.
        let mut seed: u32 = 12345;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }
    }
}
