//! The key layout of a service: every key and channel shares one hash tag.

/// The keys and channels of one service, all sharing the hash tag `{<namespace>:<service>}` so that a Redis
/// Cluster places the whole service on one shard and multi-key scripts stay legal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKeys {
    tag: String,
    requests: String,
    dead_letters: String,
}

impl ServiceKeys {
    /// Builds the key layout of `service` inside `namespace`: the one a client with that namespace uses, for tools
    /// that work on the keys without a client.
    pub fn new(namespace: &str, service: &str) -> Self {
        let tag = format!("{{{namespace}:{service}}}");
        Self {
            requests: format!("{tag}:requests"),
            dead_letters: format!("{tag}:dead"),
            tag,
        }
    }

    /// The layout of one partition of a partitioned service, under `tag` (braces included; see
    /// [`crate::protocol::Partitions`]).
    pub(crate) fn with_tag(tag: String) -> Self {
        Self {
            requests: format!("{tag}:requests"),
            dead_letters: format!("{tag}:dead"),
            tag,
        }
    }

    /// The recorded partition count of the service (a decimal string, written once by the first responder of a
    /// partitioned service; absent means one partition). Meaningful on the unpartitioned layout
    /// ([`crate::protocol::Partitions::base`]), where every program finds it whatever count it was given.
    pub fn partition_count(&self) -> String {
        format!("{}:partitions", self.tag)
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

    /// The count of replies stored by hand (`publish_reply`): responders read it with every read, to know when a
    /// request may have been answered before any of them read it.
    pub fn by_hand(&self) -> String {
        let mut key = String::with_capacity(self.tag.len() + 7);
        key.push_str(&self.tag);
        key.push_str(":byhand");
        key
    }

    /// The schedule of delayed requests: a sorted set of request ids scored by when each is due (ms since the
    /// epoch, Redis's clock).
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.tag)
    }

    /// A request's progress: the key holding its last progress envelope, and the channel each one is published on
    /// (keys and channels are apart in Redis, so they share the name).
    pub fn progress(&self, id: &str) -> String {
        self.per_id(":progress:", id)
    }

    /// The service's cancel channel: a cancelled request's id is published on it, and every responder of the
    /// service listens, so a running handler learns of its cancellation at once.
    pub fn cancels(&self) -> String {
        format!("{}:cancels", self.tag)
    }

    /// The last error of a failed delivery (kept for the dead-letter record).
    pub fn last_error(&self, id: &str) -> String {
        self.per_id(":err:", id)
    }

    /// The index of live responders' heartbeat records: a sorted set of consumer names scored by their last
    /// heartbeat (ms since the epoch, by the responder's clock).
    pub fn responders(&self) -> String {
        format!("{}:responders", self.tag)
    }

    /// The heartbeat record of the responder named `consumer` (MessagePack, expiring; see `docs/protocol.md`).
    pub fn responder(&self, consumer: &str) -> String {
        self.per_id(":responder:", consumer)
    }

    /// The pub/sub channel the reply to `id` is published on.
    pub fn reply_channel(&self, id: &str) -> String {
        self.per_id(":chan:", id)
    }

    /// A `SCAN MATCH` / `KEYS` pattern matching every key of the service (and nothing of another service).
    pub fn key_pattern(&self) -> String {
        format!("{}:*", glob_escape(&self.tag))
    }

    /// A `PUBSUB CHANNELS` pattern matching every reply channel of the service.
    pub fn reply_channel_pattern(&self) -> String {
        format!("{}:chan:*", glob_escape(&self.tag))
    }

    /// The request id a reply channel of this service belongs to (the inverse of [`ServiceKeys::reply_channel`]).
    pub(crate) fn id_of_reply_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.tag.as_str())?
            .strip_prefix(":chan:")
    }
}

/// Escapes the characters Redis glob patterns (`SCAN MATCH`, `PUBSUB CHANNELS`) treat as syntax, so a key prefix
/// (such as a service's hash tag) can be matched literally.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    fn patterns_are_escaped() {
        assert_eq!(glob_escape("{a*b?}"), "{a\\*b\\?}");
        let keys = ServiceKeys::new("ns", "a*b");
        assert_eq!(keys.key_pattern(), "{ns:a\\*b}:*");
        assert_eq!(keys.reply_channel_pattern(), "{ns:a\\*b}:chan:*");
    }
}
