//! The progress envelope: what a handler's `ctx.progress(..)` publishes on `T:progress:<id>` and keeps (the last
//! one) under the key of the same name. Pure, no I/O, like the other envelopes.

use serde::Serialize;

/// One progress update of a request, as published and stored. Encoded with [`encode`](super::encode); decoded
/// only with [`decode_progress`](super::decode_progress), which accepts exactly the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressEnvelope {
    /// Format version, [`super::FORMAT_VERSION`].
    pub v: u8,
    /// The request id.
    pub id: String,
    /// The update: one complete MessagePack document.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// When it was made, ms since the Unix epoch.
    pub ts_ms: u64,
}

impl ProgressEnvelope {
    /// A progress update of request `id` with `data` (encoded already), made now.
    pub fn new(id: &str, data: Vec<u8>) -> Self {
        Self {
            v: super::FORMAT_VERSION,
            id: id.to_owned(),
            data,
            ts_ms: super::now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_progress, encode};

    #[test]
    fn round_trips_and_refuses_what_the_protocol_does_not_say() {
        let env = ProgressEnvelope::new("p-1", encode(&"half way").expect("encode"));
        let bytes = encode(&env).expect("encode");
        assert_eq!(decode_progress(&bytes).expect("decode"), env);

        #[derive(Serialize)]
        struct Loose<'a> {
            v: u8,
            id: &'a str,
            data: &'a str,
            ts_ms: u64,
        }
        let str_data = encode(&Loose {
            v: 1,
            id: "p-1",
            data: "x",
            ts_ms: 1,
        })
        .expect("encode");
        assert!(decode_progress(&str_data).is_err(), "data must be bin");
        let mut newer = env.clone();
        newer.v = 2;
        assert!(decode_progress(&encode(&newer).expect("encode")).is_err());
        // A reply decoder refuses a progress envelope: it has no `status`.
        assert!(crate::protocol::decode_reply(&bytes).is_err());
    }
}
