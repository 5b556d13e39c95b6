//! The decoders accept exactly what `docs/protocol.md` documents (DESIGN 13): one test per confusion a sender in
//! another language could make, each built byte by byte so the test does not depend on how rmp-serde happens to
//! encode. A confused envelope must fail with [`Error::Decode`] naming what was wrong, never decode into garbage.

use super::*;

/// A MessagePack value, written by hand so a test can put any type anywhere.
#[derive(Clone, Debug)]
pub(super) enum Mp {
    Nil,
    Bool(bool),
    /// A non-negative int, in its shortest encoding.
    U(u64),
    /// A signed int, always in the signed `int 64` encoding (`0xd3`), even when it is non-negative.
    I(i64),
    F(f64),
    Str(String),
    /// A `str` whose bytes are given as they are (possibly not UTF-8).
    RawStr(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Mp>),
    Map(Vec<(Mp, Mp)>),
    Ext(i8, Vec<u8>),
}

impl Mp {
    pub(super) fn s(text: &str) -> Mp {
        Mp::Str(text.to_owned())
    }

    /// A map with str keys.
    pub(super) fn map(pairs: &[(&str, Mp)]) -> Mp {
        Mp::Map(pairs.iter().map(|(k, v)| (Mp::s(k), v.clone())).collect())
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn len_header(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3]) {
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
            Mp::U(n) => {
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
                Mp::len_header(out, b.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
                out.extend(b);
            }
            Mp::Bin(b) => {
                Mp::len_header(out, b.len(), None, [0xc4, 0xc5, 0xc6]);
                out.extend(b);
            }
            Mp::Array(items) => {
                Mp::len_header(out, items.len(), Some((0x90, 15)), [0, 0xdc, 0xdd]);
                items.iter().for_each(|v| v.write(out));
            }
            Mp::Map(pairs) => {
                Mp::len_header(out, pairs.len(), Some((0x80, 15)), [0, 0xde, 0xdf]);
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

/// A valid request envelope's pairs, in the order redcall writes them.
fn request_pairs() -> Vec<(&'static str, Mp)> {
    vec![
        ("v", Mp::U(1)),
        ("id", Mp::s("r1")),
        ("fn", Mp::s("echo")),
        // {"a": 1}
        ("params", Mp::Bin(vec![0x81, 0xa1, b'a', 0x01])),
        ("deadline_ms", Mp::U(1_764_500_000_000)),
        ("created_ms", Mp::U(1_764_499_990_000)),
    ]
}

/// A valid reply envelope's pairs, in the order redcall writes them.
fn reply_pairs() -> Vec<(&'static str, Mp)> {
    vec![
        ("v", Mp::U(1)),
        ("id", Mp::s("r1")),
        ("status", Mp::s("error")),
        ("data", Mp::Nil),
        ("code", Mp::s("out_of_stock")),
        ("message", Mp::s("no widgets left")),
        ("ts_ms", Mp::U(1_764_499_995_000)),
    ]
}

fn replay_pairs() -> Vec<(&'static str, Mp)> {
    vec![
        ("count", Mp::U(1)),
        ("source", Mp::s("dead_letter")),
        ("from", Mp::s("1-0")),
        ("at_ms", Mp::U(7)),
    ]
}

/// `pairs` with `key`'s value replaced (or the pair appended when absent).
fn with(pairs: &[(&'static str, Mp)], key: &'static str, value: Mp) -> Vec<(&'static str, Mp)> {
    let mut out = pairs.to_vec();
    match out.iter_mut().find(|(k, _)| *k == key) {
        Some(pair) => pair.1 = value,
        None => out.push((key, value)),
    }
    out
}

fn without(pairs: &[(&'static str, Mp)], key: &str) -> Vec<(&'static str, Mp)> {
    pairs.iter().filter(|(k, _)| *k != key).cloned().collect()
}

/// The decoder's message for a request envelope that must be refused.
fn request_refused(bytes: &[u8]) -> String {
    match decode_request(bytes) {
        Ok(env) => panic!("decoded a request envelope that must be refused: {env:?}"),
        Err(Error::Decode { what, message }) => {
            assert_eq!(what, "request envelope");
            message
        }
        Err(other) => panic!("expected a decode error, got {other:?}"),
    }
}

fn reply_refused(bytes: &[u8]) -> String {
    match decode_reply(bytes) {
        Ok(env) => panic!("decoded a reply envelope that must be refused: {env:?}"),
        Err(Error::Decode { what, message }) => {
            assert_eq!(what, "reply envelope");
            message
        }
        Err(other) => panic!("expected a decode error, got {other:?}"),
    }
}

fn says(message: &str, words: &[&str]) {
    for word in words {
        assert!(message.contains(word), "{message:?} does not say {word:?}");
    }
}

#[test]
fn the_valid_fixtures_decode() {
    let request = decode_request(&Mp::map(&request_pairs()).bytes()).expect("valid request");
    assert_eq!(request.params, vec![0x81, 0xa1, b'a', 0x01]);
    let with_replay = with(&request_pairs(), "replay", Mp::map(&replay_pairs()));
    let request = decode_request(&Mp::map(&with_replay).bytes()).expect("valid replayed request");
    assert_eq!(
        request.replay.expect("replay").source,
        ReplaySource::DeadLetter
    );
    let reply = decode_reply(&Mp::map(&reply_pairs()).bytes()).expect("valid reply");
    assert_eq!(reply.code.as_deref(), Some("out_of_stock"));
}

#[test]
fn an_array_instead_of_a_map_is_refused() {
    let values = |pairs: Vec<(&str, Mp)>| Mp::Array(pairs.into_iter().map(|(_, v)| v).collect());
    let message = request_refused(&values(request_pairs()).bytes());
    says(&message, &["map", "array"]);
    let message = reply_refused(&values(reply_pairs()).bytes());
    says(&message, &["map", "array"]);
    let replay = Mp::Array(replay_pairs().into_iter().map(|(_, v)| v).collect());
    let message = request_refused(&Mp::map(&with(&request_pairs(), "replay", replay)).bytes());
    says(&message, &["replay", "array"]);
}

#[test]
fn params_as_str_are_refused() {
    let pairs = with(&request_pairs(), "params", Mp::s("{\"a\": 1}"));
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["params", "bin", "str"],
    );
    // Not UTF-8: a decoder that takes undecodable str bytes for binary would let this through.
    let pairs = with(
        &request_pairs(),
        "params",
        Mp::RawStr(vec![0x81, 0xa1, b'a', 0x01]),
    );
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["params", "bin", "str"],
    );
}

#[test]
fn params_as_an_array_of_bytes_are_refused() {
    let pairs = with(
        &request_pairs(),
        "params",
        Mp::Array(vec![Mp::U(0x81), Mp::U(0xa1), Mp::U(0x61), Mp::U(1)]),
    );
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["params", "bin", "array"],
    );
}

#[test]
fn a_bin_id_or_function_key_is_refused() {
    for key in ["id", "fn"] {
        let pairs = with(&request_pairs(), key, Mp::Bin(b"r1".to_vec()));
        says(
            &request_refused(&Mp::map(&pairs).bytes()),
            &[key, "str", "bin"],
        );
    }
    let pairs = with(&reply_pairs(), "id", Mp::Bin(b"r1".to_vec()));
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["id", "str", "bin"],
    );
}

#[test]
fn a_str_that_is_not_utf8_is_refused() {
    let pairs = with(&request_pairs(), "id", Mp::RawStr(vec![b'r', 0xff]));
    says(&request_refused(&Mp::map(&pairs).bytes()), &["id", "UTF-8"]);
}

#[test]
fn reply_data_as_str_is_refused() {
    let pairs = with(
        &with(&reply_pairs(), "status", Mp::s("ok")),
        "data",
        Mp::s("\u{1}"),
    );
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["data", "bin", "str"],
    );
    let pairs = with(&reply_pairs(), "data", Mp::Array(vec![Mp::U(1)]));
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["data", "bin", "array"],
    );
}

#[test]
fn a_bin_code_or_message_is_refused() {
    for key in ["code", "message"] {
        let pairs = with(&reply_pairs(), key, Mp::Bin(b"oops".to_vec()));
        says(
            &reply_refused(&Mp::map(&pairs).bytes()),
            &[key, "str", "bin"],
        );
    }
}

#[test]
fn trailing_bytes_after_the_envelope_are_refused() {
    for extra in [&[0xc0][..], &[0x00], &b"junk"[..]] {
        let mut bytes = Mp::map(&request_pairs()).bytes();
        bytes.extend(extra);
        says(&request_refused(&bytes), &["trailing"]);
        let mut bytes = Mp::map(&reply_pairs()).bytes();
        bytes.extend(extra);
        says(&reply_refused(&bytes), &["trailing"]);
    }
}

#[test]
fn params_must_be_one_complete_document() {
    // Trailing bytes after the document inside the bin.
    let pairs = with(
        &request_pairs(),
        "params",
        Mp::Bin(vec![0x81, 0xa1, b'a', 0x01, 0x02]),
    );
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["params", "trailing"],
    );
    // Two documents.
    let pairs = with(&request_pairs(), "params", Mp::Bin(vec![0xc0, 0xc0]));
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["params", "trailing"],
    );
    // Truncated, empty, and the never-used marker.
    for bad in [&[0x81, 0xa1, b'a'][..], &[], &[0xc1]] {
        let pairs = with(&request_pairs(), "params", Mp::Bin(bad.to_vec()));
        says(&request_refused(&Mp::map(&pairs).bytes()), &["params"]);
    }
    // The same for a reply's data.
    let ok = with(&reply_pairs(), "status", Mp::s("ok"));
    let pairs = with(&ok, "data", Mp::Bin(vec![0x01, 0x02]));
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["data", "trailing"],
    );
    let pairs = with(&ok, "data", Mp::Bin(vec![0x92, 0x01]));
    says(&reply_refused(&Mp::map(&pairs).bytes()), &["data"]);
}

#[test]
fn a_missing_required_key_is_refused() {
    for key in ["v", "id", "fn", "params", "deadline_ms", "created_ms"] {
        let message = request_refused(&Mp::map(&without(&request_pairs(), key)).bytes());
        says(&message, &[key, "missing"]);
    }
    for key in ["v", "id", "status", "ts_ms"] {
        let message = reply_refused(&Mp::map(&without(&reply_pairs(), key)).bytes());
        says(&message, &[key, "missing"]);
    }
    for key in ["count", "source", "from", "at_ms"] {
        let replay = Mp::map(&without(&replay_pairs(), key));
        let message = request_refused(&Mp::map(&with(&request_pairs(), "replay", replay)).bytes());
        says(&message, &[key, "missing"]);
    }
}

#[test]
fn a_nil_required_key_is_refused() {
    for key in ["v", "id", "fn", "params", "deadline_ms", "created_ms"] {
        let message = request_refused(&Mp::map(&with(&request_pairs(), key, Mp::Nil)).bytes());
        says(&message, &[key, "nil"]);
    }
    for key in ["id", "status", "ts_ms"] {
        let message = reply_refused(&Mp::map(&with(&reply_pairs(), key, Mp::Nil)).bytes());
        says(&message, &[key, "nil"]);
    }
}

#[test]
fn optional_keys_may_be_absent_or_nil() {
    let env = decode_request(&Mp::map(&with(&request_pairs(), "replay", Mp::Nil)).bytes())
        .expect("replay nil");
    assert_eq!(env.replay, None);
    let mut pairs = reply_pairs();
    for key in ["data", "code", "message"] {
        pairs = without(&pairs, key);
        let env = decode_reply(&Mp::map(&pairs).bytes()).expect("optional key absent");
        assert_eq!(env.id, "r1");
    }
    assert_eq!(decode_reply(&Mp::map(&pairs).bytes()).unwrap().code, None);
}

#[test]
fn a_duplicate_key_is_refused() {
    for key in ["v", "id", "params", "created_ms"] {
        let mut pairs = request_pairs();
        let again = pairs.iter().find(|(k, _)| *k == key).cloned().unwrap();
        pairs.push(again);
        says(
            &request_refused(&Mp::map(&pairs).bytes()),
            &[key, "duplicate"],
        );
    }
    let mut pairs = reply_pairs();
    pairs.push(("code", Mp::s("other")));
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["code", "duplicate"],
    );
    // An unknown key is ignored, but not twice.
    let mut pairs = request_pairs();
    pairs.push(("trace", Mp::s("a")));
    pairs.push(("trace", Mp::s("b")));
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["trace", "duplicate"],
    );
}

#[test]
fn unknown_keys_are_ignored_whatever_their_value() {
    let mut pairs = request_pairs();
    pairs.insert(0, ("traceparent", Mp::s("00-abc-01")));
    pairs.push((
        "future",
        Mp::map(&[("nested", Mp::Array(vec![Mp::Nil, Mp::F(1.5)]))]),
    ));
    pairs.push(("ext", Mp::Ext(5, vec![1, 2])));
    let env = decode_request(&Mp::map(&pairs).bytes()).expect("unknown keys are ignored");
    assert_eq!(env.id, "r1");
    let mut pairs = reply_pairs();
    pairs.push(("progress", Mp::U(50)));
    decode_reply(&Mp::map(&pairs).bytes()).expect("unknown keys are ignored");
}

#[test]
fn keys_must_be_str() {
    let mut bytes = Mp::Map(
        request_pairs()
            .into_iter()
            .map(|(k, v)| {
                let key = if k == "fn" {
                    Mp::Bin(k.as_bytes().to_vec())
                } else {
                    Mp::s(k)
                };
                (key, v)
            })
            .collect(),
    )
    .bytes();
    says(&request_refused(&bytes), &["key", "str", "bin"]);
    bytes = Mp::Map(vec![(Mp::U(0), Mp::U(1))]).bytes();
    says(&request_refused(&bytes), &["key", "str", "int"]);
}

#[test]
fn a_wrong_version_is_refused() {
    for v in [Mp::U(0), Mp::U(2), Mp::U(300), Mp::I(-1)] {
        says(
            &request_refused(&Mp::map(&with(&request_pairs(), "v", v.clone())).bytes()),
            &["version"],
        );
        says(
            &reply_refused(&Mp::map(&with(&reply_pairs(), "v", v)).bytes()),
            &["version"],
        );
    }
    for v in [Mp::s("1"), Mp::F(1.0), Mp::Bool(true)] {
        says(
            &request_refused(&Mp::map(&with(&request_pairs(), "v", v)).bytes()),
            &["v", "int"],
        );
    }
}

#[test]
fn ints_may_use_any_int_encoding_but_must_be_ints_in_range() {
    // A non-negative value in a signed encoding is still the same int.
    let pairs = with(
        &with(&request_pairs(), "v", Mp::I(1)),
        "deadline_ms",
        Mp::I(10),
    );
    assert_eq!(
        decode_request(&Mp::map(&pairs).bytes())
            .expect("signed encodings")
            .deadline_ms,
        10
    );
    for bad in [
        Mp::I(-5),
        Mp::F(10.0),
        Mp::s("10"),
        Mp::Bool(false),
        Mp::Bin(vec![10]),
    ] {
        let pairs = with(&request_pairs(), "deadline_ms", bad);
        says(
            &request_refused(&Mp::map(&pairs).bytes()),
            &["deadline_ms", "int"],
        );
    }
    let pairs = with(&reply_pairs(), "ts_ms", Mp::F(1.0));
    says(
        &reply_refused(&Mp::map(&pairs).bytes()),
        &["ts_ms", "int", "float"],
    );
    let replay = Mp::map(&with(
        &replay_pairs(),
        "count",
        Mp::U(u64::from(u32::MAX) + 1),
    ));
    let pairs = with(&request_pairs(), "replay", replay);
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["count", "range"],
    );
}

#[test]
fn an_unknown_status_is_refused() {
    for status in ["OK", "done", ""] {
        let pairs = with(&reply_pairs(), "status", Mp::s(status));
        says(
            &reply_refused(&Mp::map(&pairs).bytes()),
            &["status", "unknown"],
        );
    }
    // Neither the variant's index nor its name as bin.
    for status in [
        Mp::U(0),
        Mp::Bin(b"ok".to_vec()),
        Mp::map(&[("ok", Mp::Nil)]),
    ] {
        let pairs = with(&reply_pairs(), "status", status);
        says(&reply_refused(&Mp::map(&pairs).bytes()), &["status", "str"]);
    }
}

#[test]
fn replay_info_is_checked_as_strictly() {
    for (key, bad) in [
        ("source", Mp::s("elsewhere")),
        ("source", Mp::U(0)),
        ("from", Mp::Bin(b"1-0".to_vec())),
        ("at_ms", Mp::s("7")),
    ] {
        let replay = Mp::map(&with(&replay_pairs(), key, bad));
        let message = request_refused(&Mp::map(&with(&request_pairs(), "replay", replay)).bytes());
        says(&message, &[key]);
    }
    let pairs = with(&request_pairs(), "replay", Mp::s("dead_letter"));
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["replay", "map", "str"],
    );
    let mut replay = replay_pairs();
    replay.push(("from", Mp::s("2-0")));
    let pairs = with(&request_pairs(), "replay", Mp::map(&replay));
    says(
        &request_refused(&Mp::map(&pairs).bytes()),
        &["from", "duplicate"],
    );
}

#[test]
fn other_top_level_types_are_refused() {
    for value in [
        Mp::Nil,
        Mp::U(1),
        Mp::s("v"),
        Mp::Bin(vec![0x80]),
        Mp::Ext(1, vec![0]),
    ] {
        says(&request_refused(&value.bytes()), &["map"]);
        says(&reply_refused(&value.bytes()), &["map"]);
    }
    says(&request_refused(&[]), &["end"]);
}
