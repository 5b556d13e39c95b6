//! The envelopes: a request as it travels in the stream and sits in its record, and a reply as it is published
//! and stored.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{FORMAT_VERSION, now_ms};

/// A request as it travels in the stream and is kept in the request record.
///
/// Encoded with [`encode`](super::encode); decoded only with [`decode_request`](super::decode_request), which
/// accepts exactly the documented shape (there is deliberately no serde `Deserialize`: serde cannot tell
/// MessagePack's `str` from `bin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayInfo>,
    /// The W3C trace context the requester sent (key `trace`; see [`crate::trace`]): absent (not even encoded)
    /// when there is none. A decoder drops a malformed one rather than refuse the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceContext>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

    /// Whether the deadline is behind `now_ms`: a responder then answers `expired` instead of running the request.
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
    /// The request was delivered more than `max_deliveries` times (status `dead_lettered`; also the dead-letter
    /// record's reason).
    pub const MAX_DELIVERIES_EXCEEDED: &str = "max_deliveries_exceeded";
    /// The request was cancelled by id (status `error`); reserved: a handler's error with this code reads as a
    /// cancellation too.
    pub const CANCELLED: &str = "cancelled";
}

/// A reply as it is published on the reply channel and stored under the reply key.
///
/// Encoded with [`encode`](super::encode); decoded only with [`decode_reply`](super::decode_reply), which
/// accepts exactly the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyEnvelope {
    /// Format version, [`FORMAT_VERSION`].
    pub v: u8,
    /// The request id this answers.
    pub id: String,
    /// How the request ended.
    pub status: ReplyStatus,
    /// The result (one MessagePack document) when `status` is `ok`.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    /// Machine-readable error code when `status` is not `ok`.
    pub code: Option<String>,
    /// Human-readable error message when `status` is not `ok`.
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
