//! Settings shared by every part of a [`Client`](crate::Client), with their defaults in one place.

use std::time::Duration;

/// Namespace used when none is given: keys look like `{redcall:<service>}:...`.
pub const DEFAULT_NAMESPACE: &str = "redcall";
/// Largest encoded request or reply accepted by default (1 MiB).
pub const DEFAULT_PAYLOAD_LIMIT: usize = 1024 * 1024;
/// How long a request record outlives the request's deadline by default.
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(3600);
/// How long a stored reply is kept by default, so a late reader can still fetch it.
pub const DEFAULT_REPLY_TTL: Duration = Duration::from_secs(3600);
/// Default limit for one non-blocking Redis command (blocking reads get their own, longer limit).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit for opening a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long, by default, an operation without a timeout of its own (`call_info`, `publish_reply`, `stored_reply`)
/// keeps trying while Redis is unreachable.
pub const DEFAULT_OUTAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Client-wide settings. Built through [`ClientBuilder`](crate::ClientBuilder).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Prefix that keeps deployments apart in one Redis.
    pub namespace: String,
    /// Largest encoded request or reply, in bytes; larger ones are refused before anything is sent.
    pub payload_limit: usize,
    /// How long a request record (what `call_info` reads, and what refuses a duplicate id) is kept after the
    /// request's deadline.
    pub record_retention: Duration,
    /// How long a stored reply is kept.
    pub reply_ttl: Duration,
    /// Limit for one non-blocking Redis command.
    pub command_timeout: Duration,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Fail at once while Redis is unreachable (`Error::Unavailable`), instead of trying again until the
    /// operation's timeout.
    pub fail_fast: bool,
    /// How long an operation without a timeout of its own keeps trying while Redis is unreachable.
    pub outage_timeout: Duration,
    /// Whether writes wait for replicas (`WAIT`) before they count as done.
    pub durability: crate::Durability,
    /// The partition count of the services this client's requesters, responders and admins use unless given one of
    /// their own (see [`crate::protocol::Partitions`]); 1, the unpartitioned layout, by default.
    pub partitions: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            record_retention: DEFAULT_RECORD_RETENTION,
            reply_ttl: DEFAULT_REPLY_TTL,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            fail_fast: false,
            outage_timeout: DEFAULT_OUTAGE_TIMEOUT,
            durability: crate::Durability::Primary,
            partitions: 1,
        }
    }
}

impl ClientConfig {
    /// Refuses an encoded `what` (`"request"`, `"reply"`) of `size` bytes over the payload limit.
    pub(crate) fn check_payload(&self, what: &'static str, size: usize) -> crate::Result<()> {
        if size > self.payload_limit {
            Err(crate::Error::PayloadTooLarge {
                what,
                size,
                limit: self.payload_limit,
            })
        } else {
            Ok(())
        }
    }
}

/// The longest duration redcall works with: longer timeouts, TTLs and intervals (up to `Duration::MAX`, a common
/// way to say "forever") are clamped to it. A year is beyond any sensible setting and far from every overflow of
/// deadlines, instants and Redis TTLs.
pub(crate) const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// `d`, at most [`LONGEST`].
pub(crate) fn clamp(d: Duration) -> Duration {
    d.min(LONGEST)
}

/// Milliseconds of a TTL, at least 1 (Redis refuses a TTL of 0) and at most two [`LONGEST`]s: a TTL is often a
/// timeout plus a retention, each clamped to [`LONGEST`] on its own.
pub(crate) fn ttl_ms(d: Duration) -> u64 {
    (d.min(2 * LONGEST).as_millis() as u64).max(1)
}

/// A caller's timeout for request `id`, clamped to [`LONGEST`]; a zero timeout is refused (the request could never
/// be answered in time).
pub(crate) fn request_timeout(id: &str, timeout: Duration) -> crate::Result<Duration> {
    if timeout.is_zero() {
        return Err(crate::Error::InvalidArgument(format!(
            "request {id}: the timeout must be positive"
        )));
    }
    Ok(clamp(timeout))
}

/// The sum of two durations, saturating instead of overflowing.
pub(crate) fn add(a: Duration, b: Duration) -> Duration {
    a.saturating_add(b)
}

/// Refuses a partition count outside `1..=MAX_PARTITIONS`.
pub(crate) fn check_partitions(count: usize) -> crate::Result<()> {
    if (1..=crate::protocol::MAX_PARTITIONS).contains(&count) {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "the partition count must be between 1 and {} (got {count})",
            crate::protocol::MAX_PARTITIONS
        )))
    }
}
