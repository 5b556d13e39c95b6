//! Stream entries: the two fields a request entry carries, how an entry is read from a reply before anything
//! about it is trusted, how it is checked, and stream entry ids.
//!
//! The request id travels outside the envelope (field `id`) so that an entry whose envelope cannot be decoded can
//! still be answered with an error.

use redis::Value;
use redis::streams::StreamId;

use super::{RequestEnvelope, codes, decode_request};
use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Stream entry field holding the request id (plain UTF-8), kept outside the envelope so that an entry whose
/// envelope cannot be decoded can still be answered with an error.
pub const FIELD_ID: &str = "id";
/// Stream entry field holding the MessagePack request envelope.
pub const FIELD_ENVELOPE: &str = "env";

/// A stream entry as read, before anything is trusted about it.
#[derive(Clone)]
pub(crate) struct RawEntry {
    pub(crate) entry_id: String,
    /// The request id, when the `id` field holds a usable one ([`crate::names`]); a reply can then be sent.
    pub(crate) request_id: Option<String>,
    /// Why there is no usable request id, when there is none: the dead letter's precise reason.
    pub(crate) id_problem: Option<String>,
    pub(crate) envelope: Option<Vec<u8>>,
}

/// The request id of an entry's `id` field, or why it is unusable.
fn request_id_of(field: Option<Value>) -> std::result::Result<String, String> {
    let id = match field {
        None => return Err(format!("entry lacks the `{FIELD_ID}` field")),
        Some(Value::BulkString(b)) => String::from_utf8(b)
            .map_err(|_| format!("the entry's `{FIELD_ID}` field is not UTF-8"))?,
        Some(Value::SimpleString(s)) => s,
        Some(_) => return Err(format!("the entry's `{FIELD_ID}` field is not a string")),
    };
    crate::names::check_request_id(&id)
        .map_err(|problem| format!("unusable `{FIELD_ID}` field: {problem}"))?;
    Ok(id)
}

impl RawEntry {
    /// The entries of an `XREADGROUP` reply for one stream, read straight from the reply value (RESP2 arrays or
    /// RESP3 maps) without building a map per entry. `None` when the read timed out (nil reply).
    pub(crate) fn from_read_reply(reply: Value) -> Option<Vec<Self>> {
        let streams = match reply {
            Value::Nil => return None,
            Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
            Value::Array(streams) => streams
                .into_iter()
                .filter_map(|s| match s {
                    Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for entries in streams {
            let Value::Array(entries) = entries else {
                continue;
            };
            out.reserve(entries.len());
            for entry in entries {
                if let Some(raw) = Self::from_entry_value(entry) {
                    out.push(raw);
                }
            }
        }
        Some(out)
    }

    /// One `[id, [field, value, ...]]` entry; fields other than `id` and `env` are ignored.
    fn from_entry_value(entry: Value) -> Option<Self> {
        let Value::Array(parts) = entry else {
            return None;
        };
        let mut parts = parts.into_iter();
        let entry_id = match parts.next()? {
            Value::BulkString(b) => String::from_utf8(b).ok()?,
            Value::SimpleString(s) => s,
            _ => return None,
        };
        let (mut id_field, mut envelope) = (None, None);
        if let Some(Value::Array(fields)) = parts.next() {
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let Value::BulkString(name) = name else {
                    continue;
                };
                match name.as_slice() {
                    b"id" => id_field = Some(value),
                    b"env" => envelope = Some(value),
                    _ => {}
                }
            }
        }
        Some(Self::new(entry_id, id_field, envelope))
    }

    /// An entry read as a [`StreamId`] (claims, ranges); parsed by the same rules as a read.
    pub(crate) fn from_stream_id(entry: StreamId) -> Self {
        let mut map = entry.map;
        let id_field = map.remove(FIELD_ID);
        let envelope = map.remove(FIELD_ENVELOPE);
        Self::new(entry.id, id_field, envelope)
    }

    fn new(entry_id: String, id_field: Option<Value>, envelope: Option<Value>) -> Self {
        let (request_id, id_problem) = match request_id_of(id_field) {
            Ok(id) => (Some(id), None),
            Err(problem) => (None, Some(problem)),
        };
        let envelope = match envelope {
            Some(Value::BulkString(b)) => Some(b),
            _ => None,
        };
        Self {
            entry_id,
            request_id,
            id_problem,
            envelope,
        }
    }
}

impl RawEntry {
    /// Checks the entry's shape before trusting it: fields present, size within the payload limit, envelope decodable
    /// and naming the entry's id. Returns the error code and message for a dead letter otherwise.
    pub(crate) fn check(
        &self,
        config: &ClientConfig,
    ) -> std::result::Result<RequestEnvelope, (&'static str, String)> {
        let Some(id) = &self.request_id else {
            let problem = self.id_problem.clone();
            return Err((
                codes::MALFORMED,
                problem.unwrap_or_else(|| format!("entry lacks the `{FIELD_ID}` field")),
            ));
        };
        let Some(bytes) = &self.envelope else {
            return Err((
                codes::MALFORMED,
                format!("entry lacks the `{FIELD_ENVELOPE}` field (or it is not a string)"),
            ));
        };
        config
            .check_payload("request", bytes.len())
            .map_err(|e| (codes::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let envelope = decode_request(bytes).map_err(|e| (codes::MALFORMED, e.to_string()))?;
        if &envelope.id != id {
            return Err((
                codes::MALFORMED,
                format!("envelope id {:?} differs from entry id {id:?}", envelope.id),
            ));
        }
        Ok(envelope)
    }
}

/// A stream entry id, `<ms>-<seq>`, parsed for comparisons.
pub(crate) fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Checks a user-given stream entry id (`-` and `+` allowed where `ends` is true), so a typo is a clear
/// configuration error instead of a Redis one.
pub(crate) fn check_entry_id(id: &str, ends: bool) -> Result<()> {
    if (ends && (id == "-" || id == "+")) || parse_entry_id(id).is_some() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{id:?} is not a stream entry id (expected <ms>-<seq>{})",
            if ends { ", - or +" } else { "" }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    #[test]
    fn read_reply_parses_resp2_and_resp3_shapes() {
        let entries = Value::Array(vec![
            entry("1-0", &[("id", "r1"), ("env", "E1")]),
            entry("2-0", &[("other", "x"), ("id", "")]),
        ]);
        let resp3 = Value::Map(vec![(bulk("{redcall:s}:requests"), entries.clone())]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("{redcall:s}:requests"),
            entries,
        ])]);
        for reply in [resp3, resp2] {
            let parsed = RawEntry::from_read_reply(reply).expect("entries");
            assert_eq!(parsed.len(), 2);
            assert_eq!(parsed[0].entry_id, "1-0");
            assert_eq!(parsed[0].request_id.as_deref(), Some("r1"));
            assert_eq!(parsed[0].envelope.as_deref(), Some(&b"E1"[..]));
            assert_eq!(parsed[1].request_id, None, "an empty id is unusable");
            let problem = parsed[1].id_problem.as_deref().expect("a reason");
            assert!(problem.contains("must not be empty"), "{problem}");
            assert_eq!(parsed[1].envelope, None);
        }
        assert!(RawEntry::from_read_reply(Value::Nil).is_none());
    }

    #[test]
    fn entry_ids_parse_and_check() {
        assert_eq!(
            parse_entry_id("1700000000000-3"),
            Some((1_700_000_000_000, 3))
        );
        assert_eq!(parse_entry_id("17"), None);
        assert_eq!(parse_entry_id("a-1"), None);
        assert!(check_entry_id("-", true).is_ok());
        assert!(check_entry_id("+", false).is_err());
        assert!(check_entry_id("1-0", false).is_ok());
        assert!(check_entry_id("nope", true).is_err());
    }
}
