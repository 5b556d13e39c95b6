//! The wire protocol: key layout ([`ServiceKeys`]), envelopes ([`RequestEnvelope`], [`ReplyEnvelope`]), stream
//! entry fields ([`FIELD_ID`], [`FIELD_ENVELOPE`]) and their MessagePack encoding ([`encode`], [`decode`]).
//!
//! Everything here is pure (no I/O) so that it can be tested and fuzzed on its own, and so that a program in
//! another language can be written from `docs/protocol.md`, which documents exactly what this module produces.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

mod decode;
pub(crate) mod entry;
mod envelope;
mod keys;
mod msgpack;
mod partitions;
mod progress;
#[cfg(test)]
mod strict_tests;

pub use entry::{FIELD_ENVELOPE, FIELD_ID};
pub use envelope::{ReplayInfo, ReplaySource, ReplyEnvelope, ReplyStatus, RequestEnvelope, codes};
pub use keys::ServiceKeys;
pub(crate) use keys::glob_escape;
pub use partitions::{
    CLUSTER_SLOTS, MAX_PARTITIONS, Partitions, crc16, key_slot, partition_of, partition_tag,
    target_slot,
};
pub use progress::ProgressEnvelope;

/// The envelope format version this build writes and accepts; an envelope of another version is refused, never
/// guessed at.
pub const FORMAT_VERSION: u8 = 1;

/// Milliseconds since the Unix epoch, by the local clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Encodes any serde value as MessagePack with named fields (maps, not arrays), the form other languages read
/// most easily.
///
/// # Errors
/// [`Error::Encode`] when `value`'s `Serialize` implementation fails, or it nests deeper than the encoder's limit
/// (1024 levels).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(Error::encode)
}

/// Decodes one MessagePack document into any serde value (params, reply data); `what` names the thing for the
/// error message. The bytes must be exactly one complete document: trailing bytes are refused, not ignored.
///
/// # Errors
/// [`Error::Decode`] (naming `what`) when `bytes` is not exactly one MessagePack document, or not the shape `T`
/// expects.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &'static str) -> Result<T> {
    let failed = |message: String| Error::Decode { what, message };
    msgpack::check_one_document(bytes).map_err(failed)?;
    rmp_serde::from_slice(bytes).map_err(|source| failed(source.to_string()))
}

/// Decodes a request envelope: exactly the documented shape (`docs/protocol.md`, "Envelopes"), version included;
/// anything else is [`Error::Decode`] saying what was wrong.
///
/// # Errors
/// [`Error::Decode`] when `bytes` is not a request envelope of this [`FORMAT_VERSION`] in the documented shape.
pub fn decode_request(bytes: &[u8]) -> Result<RequestEnvelope> {
    decode::request(bytes).map_err(|message| Error::Decode {
        what: "request envelope",
        message,
    })
}

/// Decodes a reply envelope: exactly the documented shape (`docs/protocol.md`, "Envelopes"), version included;
/// anything else is [`Error::Decode`] saying what was wrong.
///
/// # Errors
/// [`Error::Decode`] when `bytes` is not a reply envelope of this [`FORMAT_VERSION`] in the documented shape.
pub fn decode_reply(bytes: &[u8]) -> Result<ReplyEnvelope> {
    decode::reply(bytes).map_err(|message| Error::Decode {
        what: "reply envelope",
        message,
    })
}

/// Decodes a progress envelope, accepting exactly the documented shape (see [`decode_reply`]).
///
/// # Errors
/// [`Error::Decode`] for anything else.
pub fn decode_progress(bytes: &[u8]) -> Result<ProgressEnvelope> {
    decode::progress(bytes).map_err(|message| Error::Decode {
        what: "progress envelope",
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            trace: None,
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
            trace: None,
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
