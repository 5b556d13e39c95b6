//! Strict decoding (DESIGN 13): the envelope decoders accept exactly what `docs/protocol.md` documents.
//!
//! A property test builds valid envelopes byte by byte (keys in any order, ints in any int encoding, optional keys
//! absent or nil, unknown keys with any value), checks that they decode, then confuses them — one field's
//! MessagePack type swapped for another, the map written as an array, a key as a non-str, a key missing or
//! repeated, bytes after the envelope or inside `params`/`data` — and checks that every confusion is refused with
//! a decode error naming what was wrong, never a panic. The random-bytes and mutation fuzzing lives in
//! `tests/fuzz_decoders.rs`.
//!
//! An end-to-end test then sends a type-confused request to a real responder: it is dead-lettered as
//! `malformed_request`, its requester gets that error, and its handler never runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{RedisServer, pending_count, redis_con, wait_until};
use proptest::prelude::*;
use redcall::protocol::{self, ReplyStatus};
use redcall::{Client, Error, HandlerError, RequestContext};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------------------------
// MessagePack by hand
// ---------------------------------------------------------------------------------------------------------------

/// A MessagePack value, written by hand so any type can go anywhere.
#[derive(Clone, Debug)]
enum Mp {
    Nil,
    Bool(bool),
    /// A non-negative int in its shortest encoding.
    U(u64),
    /// A non-negative int in the widest unsigned encoding (`uint 64`).
    Wide(u64),
    /// An int in the signed `int 64` encoding, whatever its sign.
    I(i64),
    F(f64),
    Str(String),
    /// A `str` with these bytes, UTF-8 or not.
    RawStr(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Mp>),
    Map(Vec<(Mp, Mp)>),
    Ext(i8, Vec<u8>),
}

impl Mp {
    fn s(text: &str) -> Mp {
        Mp::Str(text.to_owned())
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn header(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3]) {
        match fix {
            Some((base, max)) if len <= max => out.push(base | len as u8),
            _ if len <= 0xff && markers[0] != 0 => out.extend([markers[0], len as u8]),
            _ if len <= 0xffff => {
                out.push(markers[1]);
                out.extend((len as u16).to_be_bytes());
            }
            _ => {
                out.push(markers[2]);
                out.extend((len as u32).to_be_bytes());
            }
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Mp::Nil => out.push(0xc0),
            Mp::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Mp::U(n) if *n < 0x80 => out.push(*n as u8),
            Mp::U(n) if *n <= 0xff => out.extend([0xcc, *n as u8]),
            Mp::U(n) if *n <= 0xffff => {
                out.push(0xcd);
                out.extend((*n as u16).to_be_bytes());
            }
            Mp::U(n) if *n <= 0xffff_ffff => {
                out.push(0xce);
                out.extend((*n as u32).to_be_bytes());
            }
            Mp::U(n) | Mp::Wide(n) => {
                out.push(0xcf);
                out.extend(n.to_be_bytes());
            }
            Mp::I(n) => {
                out.push(0xd3);
                out.extend(n.to_be_bytes());
            }
            Mp::F(x) => {
                out.push(0xcb);
                out.extend(x.to_be_bytes());
            }
            Mp::Str(s) => Mp::RawStr(s.as_bytes().to_vec()).write(out),
            Mp::RawStr(b) => {
                Mp::header(out, b.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
                out.extend(b);
            }
            Mp::Bin(b) => {
                Mp::header(out, b.len(), None, [0xc4, 0xc5, 0xc6]);
                out.extend(b);
            }
            Mp::Array(items) => {
                Mp::header(out, items.len(), Some((0x90, 15)), [0, 0xdc, 0xdd]);
                items.iter().for_each(|v| v.write(out));
            }
            Mp::Map(pairs) => {
                Mp::header(out, pairs.len(), Some((0x80, 15)), [0, 0xde, 0xdf]);
                for (k, v) in pairs {
                    k.write(out);
                    v.write(out);
                }
            }
            Mp::Ext(tag, data) => {
                out.extend([0xc7, data.len() as u8, *tag as u8]);
                out.extend(data);
            }
        }
    }
}

/// Any MessagePack value (small), for confusions and unknown keys' values.
fn any_value() -> impl Strategy<Value = Mp> {
    let leaf = prop_oneof![
        Just(Mp::Nil),
        any::<bool>().prop_map(Mp::Bool),
        any::<u64>().prop_map(Mp::U),
        (i64::MIN..0).prop_map(Mp::I),
        any::<f64>().prop_map(Mp::F),
        ".{0,12}".prop_map(Mp::Str),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Mp::RawStr),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Mp::Bin),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(t, d)| Mp::Ext(t, d)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Mp::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Mp::Map),
        ]
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Envelopes as documented
// ---------------------------------------------------------------------------------------------------------------

/// The documented type of an envelope key, as the decoders must check it.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Version,
    Str,
    /// A `bin` holding one MessagePack document.
    Doc,
    Uint,
    Uint32,
    Status,
    Source,
    Replay,
}

impl Rule {
    /// Whether `value` has the documented type (for `Doc`, whether it is a `bin`: whether its bytes are one
    /// document is a separate property). Nil is handled by the caller.
    fn accepts(self, value: &Mp) -> bool {
        let uint = |v: &Mp| match v {
            Mp::U(n) | Mp::Wide(n) => Some(*n),
            Mp::I(n) if *n >= 0 => Some(*n as u64),
            _ => None,
        };
        let text = |v: &Mp| match v {
            Mp::Str(s) => Some(s.clone()),
            Mp::RawStr(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        match self {
            Rule::Version => uint(value) == Some(1),
            Rule::Str => text(value).is_some(),
            Rule::Doc => matches!(value, Mp::Bin(_)),
            Rule::Uint => uint(value).is_some(),
            Rule::Uint32 => uint(value).is_some_and(|n| n <= u64::from(u32::MAX)),
            Rule::Status => text(value)
                .is_some_and(|s| ["ok", "error", "dead_lettered", "expired"].contains(&s.as_str())),
            Rule::Source => text(value).is_some_and(|s| s == "dead_letter" || s == "range"),
            // A map could only be a valid replay map by chance; the generator never makes one.
            Rule::Replay => matches!(value, Mp::Map(_)),
        }
    }
}

/// One key of an envelope: its name, rule, and whether it is required.
#[derive(Clone, Debug)]
struct Field {
    key: &'static str,
    rule: Rule,
    required: bool,
    value: Mp,
}

fn field(key: &'static str, rule: Rule, required: bool, value: Mp) -> Field {
    Field {
        key,
        rule,
        required,
        value,
    }
}

/// An int in one of the encodings a writer may choose.
fn int_encoding(n: u64) -> impl Strategy<Value = Mp> {
    let mut options = vec![Just(Mp::U(n)), Just(Mp::Wide(n))];
    if let Ok(signed) = i64::try_from(n) {
        options.push(Just(Mp::I(signed)));
    }
    proptest::strategy::Union::new(options)
}

/// A params/data document: a small value, encoded.
fn document() -> impl Strategy<Value = Vec<u8>> {
    any_value().prop_map(|v| v.bytes())
}

/// An optional key: absent (`None`), nil, or a value.
fn optional(value: impl Strategy<Value = Mp>) -> impl Strategy<Value = Option<Mp>> {
    prop_oneof![Just(None), Just(Some(Mp::Nil)), value.prop_map(Some)]
}

/// Keys no envelope documents (so ignored), distinct among themselves.
fn unknown_keys() -> impl Strategy<Value = Vec<(String, Mp)>> {
    proptest::collection::btree_map("[a-z_]{1,10}", any_value(), 0..3).prop_map(|keys| {
        keys.into_iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .collect()
    })
}

const KNOWN: &[&str] = &[
    "v",
    "id",
    "fn",
    "params",
    "deadline_ms",
    "created_ms",
    "replay",
    "status",
    "data",
    "code",
    "message",
    "ts_ms",
    "count",
    "source",
    "from",
    "at_ms",
];

/// A valid envelope: its documented fields plus unknown keys, in some order.
#[derive(Clone, Debug)]
struct Envelope {
    request: bool,
    fields: Vec<Field>,
    unknown: Vec<(String, Mp)>,
    /// Where each unknown key goes among the fields.
    order: Vec<usize>,
}

impl Envelope {
    fn pairs(&self) -> Vec<(Mp, Mp)> {
        let mut pairs: Vec<(Mp, Mp)> = self
            .fields
            .iter()
            .map(|f| (Mp::s(f.key), f.value.clone()))
            .collect();
        for ((k, v), at) in self.unknown.iter().zip(&self.order) {
            let at = at % (pairs.len() + 1);
            pairs.insert(at, (Mp::s(k), v.clone()));
        }
        pairs
    }

    fn bytes(&self) -> Vec<u8> {
        Mp::Map(self.pairs()).bytes()
    }

    fn decode(&self, bytes: &[u8]) -> Result<(), Error> {
        if self.request {
            protocol::decode_request(bytes).map(|_| ())
        } else {
            protocol::decode_reply(bytes).map(|_| ())
        }
    }
}

fn replay_map() -> impl Strategy<Value = Mp> {
    (
        (0..=u64::from(u32::MAX)).prop_flat_map(int_encoding),
        prop_oneof![Just("dead_letter"), Just("range")],
        "[0-9]{1,13}-[0-9]{1,3}",
        any::<u64>().prop_flat_map(int_encoding),
    )
        .prop_map(|(count, source, from, at_ms)| {
            Mp::Map(vec![
                (Mp::s("count"), count),
                (Mp::s("source"), Mp::s(source)),
                (Mp::s("from"), Mp::Str(from)),
                (Mp::s("at_ms"), at_ms),
            ])
        })
}

fn valid_request() -> impl Strategy<Value = Envelope> {
    (
        (int_encoding(1), ".{0,30}", ".{0,20}", document()),
        (
            any::<u64>().prop_flat_map(int_encoding),
            any::<u64>().prop_flat_map(int_encoding),
            optional(replay_map()),
        ),
        unknown_keys(),
        proptest::collection::vec(any::<usize>(), 3),
        any::<u64>(),
    )
        .prop_map(
            |((v, id, func_key, params), (deadline, created, replay), unknown, order, seed)| {
                let mut fields = vec![
                    field("v", Rule::Version, true, v),
                    field("id", Rule::Str, true, Mp::Str(id)),
                    field("fn", Rule::Str, true, Mp::Str(func_key)),
                    field("params", Rule::Doc, true, Mp::Bin(params)),
                    field("deadline_ms", Rule::Uint, true, deadline),
                    field("created_ms", Rule::Uint, true, created),
                ];
                if let Some(replay) = replay {
                    fields.push(field("replay", Rule::Replay, false, replay));
                }
                shuffle(&mut fields, seed);
                Envelope {
                    request: true,
                    fields,
                    unknown,
                    order,
                }
            },
        )
}

fn valid_reply() -> impl Strategy<Value = Envelope> {
    (
        (
            int_encoding(1),
            ".{0,30}",
            prop_oneof![
                Just("ok"),
                Just("error"),
                Just("dead_lettered"),
                Just("expired")
            ],
            any::<u64>().prop_flat_map(int_encoding),
        ),
        (
            optional(document().prop_map(Mp::Bin)),
            optional(".{0,20}".prop_map(Mp::Str)),
            optional(".{0,40}".prop_map(Mp::Str)),
        ),
        unknown_keys(),
        proptest::collection::vec(any::<usize>(), 3),
        any::<u64>(),
    )
        .prop_map(
            |((v, id, status, ts), (data, code, message), unknown, order, seed)| {
                let mut fields = vec![
                    field("v", Rule::Version, true, v),
                    field("id", Rule::Str, true, Mp::Str(id)),
                    field("status", Rule::Status, true, Mp::s(status)),
                    field("ts_ms", Rule::Uint, true, ts),
                ];
                for (key, rule, value) in [
                    ("data", Rule::Doc, data),
                    ("code", Rule::Str, code),
                    ("message", Rule::Str, message),
                ] {
                    if let Some(value) = value {
                        fields.push(field(key, rule, false, value));
                    }
                }
                shuffle(&mut fields, seed);
                Envelope {
                    request: false,
                    fields,
                    unknown,
                    order,
                }
            },
        )
}

fn any_envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![valid_request(), valid_reply()]
}

/// A deterministic shuffle (the order of keys in a map is the writer's choice).
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// The decoder's message for bytes that must be refused.
fn refused(envelope: &Envelope, bytes: &[u8]) -> Result<String, TestCaseError> {
    match envelope.decode(bytes) {
        Ok(()) => Err(TestCaseError::fail(format!(
            "a confused envelope decoded: {bytes:02x?}"
        ))),
        Err(Error::Decode { message, .. }) => Ok(message),
        Err(other) => Err(TestCaseError::fail(format!(
            "not a decode error: {other:?}"
        ))),
    }
}

/// The replay map's inner fields, as documented.
const REPLAY_RULES: &[(&str, Rule)] = &[
    ("count", Rule::Uint32),
    ("source", Rule::Source),
    ("from", Rule::Str),
    ("at_ms", Rule::Uint),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// The generator itself: every valid envelope decodes, whatever the key order, int encodings, optional keys
    /// and unknown keys.
    #[test]
    fn documented_envelopes_decode(envelope in any_envelope()) {
        let bytes = envelope.bytes();
        envelope.decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {envelope:?}")))?;
    }

    /// One field's MessagePack type swapped for another: refused, and the message names the field.
    #[test]
    fn a_field_of_another_type_is_refused(
        mut envelope in any_envelope(),
        pick in any::<usize>(),
        confused in any_value(),
    ) {
        let at = pick % envelope.fields.len();
        let field = envelope.fields[at].clone();
        let nil_allowed = !field.required;
        let accepted = field.rule.accepts(&confused) || (nil_allowed && matches!(confused, Mp::Nil));
        prop_assume!(!accepted);
        // A bin for a document field is the documented type; whether it holds one document is tested below.
        prop_assume!(!matches!(field.rule, Rule::Doc) || !matches!(confused, Mp::Bin(_)));
        envelope.fields[at].value = confused;
        let message = refused(&envelope, &envelope.bytes())?;
        prop_assert!(message.contains(field.key), "{message:?} does not name {}", field.key);
    }

    /// Inside `replay`: one field's type swapped, or a required field left out.
    #[test]
    fn a_confused_replay_map_is_refused(
        envelope in valid_request(),
        replay in replay_map(),
        pick in any::<usize>(),
        confused in any_value(),
        drop_it in any::<bool>(),
    ) {
        let Mp::Map(mut pairs) = replay else { unreachable!() };
        let at = pick % pairs.len();
        let (key, rule) = REPLAY_RULES[at];
        if drop_it {
            pairs.remove(at);
        } else {
            prop_assume!(!rule.accepts(&confused));
            pairs[at].1 = confused;
        }
        let mut envelope = envelope;
        envelope.fields.retain(|f| f.key != "replay");
        envelope.fields.push(field("replay", Rule::Replay, false, Mp::Map(pairs)));
        let message = refused(&envelope, &envelope.bytes())?;
        prop_assert!(message.contains(key), "{message:?} does not name {key}");
    }

    /// The map's values written as an array (rmp-serde's compact struct form): refused.
    #[test]
    fn an_array_instead_of_a_map_is_refused(envelope in any_envelope()) {
        let values = Mp::Array(envelope.pairs().into_iter().map(|(_, v)| v).collect());
        let message = refused(&envelope, &values.bytes())?;
        prop_assert!(message.contains("map"), "{message:?}");
    }

    /// A key that is not a str (its name as bin, or another type): refused.
    #[test]
    fn a_key_of_another_type_is_refused(envelope in any_envelope(), pick in any::<usize>(), other in any_value()) {
        let mut pairs = envelope.pairs();
        let at = pick % pairs.len();
        let Mp::Str(name) = pairs[at].0.clone() else { unreachable!() };
        pairs[at].0 = match other {
            Mp::Str(_) => Mp::Bin(name.into_bytes()),
            Mp::RawStr(b) if std::str::from_utf8(&b).is_ok() => Mp::Bin(b),
            other => other,
        };
        let message = refused(&envelope, &Mp::Map(pairs).bytes())?;
        prop_assert!(message.contains("key"), "{message:?}");
    }

    /// A documented key left out: refused when it is required, fine when it is optional.
    #[test]
    fn a_missing_key_is_refused_when_required(envelope in any_envelope(), pick in any::<usize>()) {
        let mut envelope = envelope;
        let at = pick % envelope.fields.len();
        let field = envelope.fields.remove(at);
        let bytes = envelope.bytes();
        if field.required {
            let message = refused(&envelope, &bytes)?;
            prop_assert!(message.contains(field.key) && message.contains("missing"), "{message:?}");
        } else {
            envelope.decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        }
    }

    /// Any key, documented or not, given twice (even with the same value): refused.
    #[test]
    fn a_repeated_key_is_refused(envelope in any_envelope(), pick in any::<usize>(), at in any::<usize>()) {
        let mut pairs = envelope.pairs();
        let again = pairs[pick % pairs.len()].clone();
        let at = at % (pairs.len() + 1);
        pairs.insert(at, again);
        let message = refused(&envelope, &Mp::Map(pairs).bytes())?;
        prop_assert!(message.contains("duplicate"), "{message:?}");
    }

    /// Bytes after the envelope: refused.
    #[test]
    fn trailing_bytes_are_refused(
        envelope in any_envelope(),
        extra in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut bytes = envelope.bytes();
        bytes.extend(extra);
        let message = refused(&envelope, &bytes)?;
        prop_assert!(message.contains("trailing"), "{message:?}");
    }

    /// `params` or `data` that is not exactly one document: bytes after it, or cut short.
    #[test]
    fn params_and_data_must_be_one_document(
        envelope in any_envelope(),
        extra in proptest::collection::vec(any::<u8>(), 1..16),
        cut in any::<usize>(),
        truncate in any::<bool>(),
    ) {
        let mut envelope = envelope;
        let Some(doc) = envelope
            .fields
            .iter_mut()
            .find(|f| matches!(f.rule, Rule::Doc) && matches!(f.value, Mp::Bin(_)))
        else {
            return Ok(());
        };
        let key = doc.key;
        let Mp::Bin(bytes) = &mut doc.value else { unreachable!() };
        if truncate {
            let len = bytes.len();
            bytes.truncate(cut % len);
        } else {
            bytes.extend(extra);
        }
        let message = refused(&envelope, &envelope.bytes())?;
        prop_assert!(message.contains(key), "{message:?} does not name {key}");
    }

    /// A request envelope is not a reply envelope, nor the other way round.
    #[test]
    fn one_envelope_is_not_the_other(envelope in any_envelope()) {
        let bytes = envelope.bytes();
        let other = Envelope { request: !envelope.request, ..envelope };
        refused(&other, &bytes)?;
    }
}

/// A reply envelope written by an older redcall (its own encoder: `data`, `code` and `message` always present,
/// nil when unused) and one written by the Python interop client (the same keys) decode.
#[test]
fn replies_of_other_writers_decode() {
    let reply = redcall::protocol::ReplyEnvelope::ok("w1", protocol::encode(&7).unwrap());
    let bytes = protocol::encode(&reply).unwrap();
    assert_eq!(protocol::decode_reply(&bytes).unwrap(), reply);
    let error = Mp::Map(vec![
        (Mp::s("v"), Mp::U(1)),
        (Mp::s("id"), Mp::s("w1")),
        (Mp::s("status"), Mp::s("expired")),
        (Mp::s("data"), Mp::Nil),
        (Mp::s("code"), Mp::s("expired")),
        (Mp::s("message"), Mp::s("deadline passed before start")),
        (Mp::s("ts_ms"), Mp::U(5)),
    ]);
    let decoded = protocol::decode_reply(&error.bytes()).unwrap();
    assert_eq!(decoded.status, ReplyStatus::Expired);
    assert_eq!(decoded.data, None);
}

// ---------------------------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------------------------

/// A request whose `params` are a MessagePack `str` instead of `bin` (with a valid id): the responder refuses it
/// as `malformed_request` (an error reply, a dead letter, the entry acknowledged) and its handler never runs;
/// requests before and after are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_confused_request_is_dead_lettered_as_malformed_and_never_handled() {
    let service = "strict";
    let server = RedisServer::start();
    let client = Client::open(&server.url()).expect("client");
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let responder = client
        .responder(service)
        .handler("echo", move |_ctx: RequestContext, params: Value| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>(params) }
        })
        .start()
        .await
        .expect("responder");
    let requester = client.requester(service);
    let timeout = Duration::from_secs(20);
    let before: Value = requester
        .request("strict-before", "echo", &json!({"a": 1}), timeout)
        .await
        .expect("a valid request is served");
    assert_eq!(before, json!({"a": 1}));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // What a sender that packs params as text would write: the JSON-ish text of {"a": 1} as a str. Its first
    // byte, `{`, is a valid MessagePack int, so a lax decoder hands the handler 123.
    let id = "strict-str-params";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let envelope = Mp::Map(vec![
        (Mp::s("v"), Mp::U(1)),
        (Mp::s("id"), Mp::s(id)),
        (Mp::s("fn"), Mp::s("echo")),
        (Mp::s("params"), Mp::s("{\"a\": 1}")),
        (Mp::s("deadline_ms"), Mp::U(now + 60_000)),
        (Mp::s("created_ms"), Mp::U(now)),
    ])
    .bytes();
    let keys = requester.keys().clone();
    let mut con = redis_con(&server).await;
    let entry_id: String = redis::cmd("XADD")
        .arg(keys.requests())
        .arg("*")
        .arg("id")
        .arg(id)
        .arg("env")
        .arg(&envelope)
        .query_async(&mut con)
        .await
        .expect("XADD");

    // The error reply is stored (and was published) under the entry's id.
    let reply_key = keys.reply(id);
    let stored = wait_until(timeout, || {
        let (mut con, key) = (con.clone(), reply_key.clone());
        async move {
            let reply: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap();
            reply.is_some()
        }
    })
    .await;
    assert!(stored, "no reply for the type-confused request");
    let err = requester
        .stored_reply::<Value>(id)
        .await
        .expect_err("an error reply, not a result");
    match &err {
        Error::Malformed { id: got, message } => {
            assert_eq!(got, id);
            assert!(
                message.contains("`params` must be bin, got str"),
                "the reply says what was wrong: {message}"
            );
        }
        other => panic!("expected a malformed_request error, got {other:?}"),
    }
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(&reply_key)
        .query_async(&mut con)
        .await
        .unwrap();
    let reply = protocol::decode_reply(&raw).expect("reply envelope");
    assert_eq!(reply.status, ReplyStatus::Error);
    assert_eq!(reply.code.as_deref(), Some("malformed_request"));

    // Dead-lettered with that reason, and acknowledged.
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.dead_letters())
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .expect("XRANGE");
    let text = |e: &redis::streams::StreamId, field: &str| -> String {
        e.get::<String>(field).unwrap_or_default()
    };
    let letter = dead
        .ids
        .iter()
        .find(|e| text(e, "entry_id") == entry_id)
        .expect("a dead letter for the entry");
    assert_eq!(text(letter, "reason"), "malformed_request");
    assert_eq!(text(letter, "id"), id);
    assert!(
        text(letter, "error").contains("`params` must be bin, got str"),
        "{:?}",
        text(letter, "error")
    );
    assert_eq!(
        letter.get::<Vec<u8>>("env").unwrap_or_default(),
        envelope,
        "the envelope kept as found"
    );
    assert_eq!(
        pending_count(&server, keys.requests(), "workers"),
        0,
        "acknowledged"
    );

    // The responder keeps serving, and the handler ran only for the valid requests.
    let after: Value = requester
        .request("strict-after", "echo", &json!({"b": 2}), timeout)
        .await
        .expect("a valid request after it is served");
    assert_eq!(after, json!({"b": 2}));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the handler never ran for the confused request"
    );
    responder.shutdown().await.expect("shutdown");
}
