//! The one error type of redcall, and [`ErrorKind`] for callers that branch on the cause.
//!
//! The errors of the libraries underneath (the Redis client, the MessagePack encoder) are kept as opaque
//! [`std::error::Error`] sources: their types are not part of redcall's API, so upgrading them breaks no user.

use std::time::Duration;

/// An error of a library underneath, kept for [`std::error::Error::source`] and `Display`.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in redcall. Each case names the request id where there is one.
///
/// New cases may be added in any release; match on [`Error::kind`] for the cause, with a fallback arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No reply arrived within the timeout. The request may still be handled later; its reply will then be
    /// stored under its id for the reply retention period.
    #[error("request {id}: no reply within {timeout:?} (it may still be handled later)")]
    Timeout {
        /// The request id.
        id: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// A request with this id is already in flight or was made within the record retention period.
    #[error("request {id}: a request with this id already exists")]
    DuplicateId {
        /// The request id.
        id: String,
    },
    /// A reply is already stored for this id; the first reply stays and this one was not published.
    #[error("request {id}: already answered (the first reply stays)")]
    AlreadyAnswered {
        /// The request id.
        id: String,
    },
    /// No request record exists for this id (never made, or past its retention period).
    #[error("request {id}: not found (never made, or its record expired)")]
    NotFound {
        /// The request id.
        id: String,
    },
    /// No entry with this id exists in a stream (for example a dead-letter entry that was replayed or purged).
    #[error("no entry {entry_id} in the {stream} stream")]
    EntryNotFound {
        /// Which stream (`"dead-letter"`, `"requests"`).
        stream: &'static str,
        /// The stream entry id looked for.
        entry_id: String,
    },
    /// The handler answered with an error.
    #[error("request {id}: handler failed [{code}]: {message}")]
    Handler {
        /// The request id.
        id: String,
        /// Machine-readable code chosen by the handler (or a built-in code such as `invalid_params`).
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// No responder has a handler for the function key.
    #[error("request {id}: no handler for function key {func_key:?}")]
    UnknownFunction {
        /// The request id.
        id: String,
        /// The function key that has no handler.
        func_key: String,
    },
    /// The request failed too often and was moved to the dead-letter stream.
    #[error("request {id}: dead-lettered: {reason}")]
    DeadLettered {
        /// The request id.
        id: String,
        /// Why, with the last error seen.
        reason: String,
    },
    /// The request's deadline passed before a responder started it; it was not run.
    #[error("request {id}: expired before a responder started it")]
    Expired {
        /// The request id.
        id: String,
    },
    /// The request was cancelled by id ([`crate::Requester::cancel`]) before it was answered; its handler did not
    /// run, or its result was dropped.
    #[error("request {id}: cancelled")]
    Cancelled {
        /// The request id.
        id: String,
    },
    /// The request was refused by the responder as malformed (for example an unknown format version).
    #[error("request {id}: refused as malformed: {message}")]
    Malformed {
        /// The request id.
        id: String,
        /// What was wrong.
        message: String,
    },
    /// A payload is larger than the configured limit; nothing was sent.
    #[error("{what} is {size} bytes, over the payload limit of {limit} bytes")]
    PayloadTooLarge {
        /// What was too large (`"request"`, `"reply"`).
        what: &'static str,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A value could not be encoded as MessagePack.
    #[error("could not encode a value as MessagePack: {source}")]
    Encode {
        /// The encoder's error.
        #[source]
        source: BoxError,
    },
    /// Bytes could not be decoded (wrong type, garbage, unknown format version).
    #[error("could not decode the {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Redis accepted the request, but lost it before it was answered: after a reconnect neither its record nor a
    /// reply exists (Redis restarted without persistence, or crashed before its last writes reached the disk).
    /// The request may or may not have run; send it again if that is safe.
    #[error(
        "request {id}: lost by Redis (gone after a reconnect: restarted without persistence or lost its last writes); \
         it may or may not have run"
    )]
    Lost {
        /// The request id.
        id: String,
    },
    /// Redis is not reachable right now; the request was not sent. Retry later.
    #[error("Redis is unavailable ({context}); nothing was sent")]
    Unavailable {
        /// What was being attempted.
        context: &'static str,
    },
    /// Redis could not be connected to; nothing was sent. The [`ConnectFailure`] says why, and [`Error::kind`] whether
    /// waiting may help: [`ErrorKind::Unavailable`] for an unreachable Redis (refused, timed out), which may come
    /// back; [`ErrorKind::Config`] for what only a change of the settings fixes (a password, TLS, the wrong port).
    #[error("cannot connect to Redis at {addr}: {failure} (while {context})")]
    Connect {
        /// What was being attempted.
        context: &'static str,
        /// The address connected to (`host:port`, or a socket path).
        addr: String,
        /// Why it failed.
        failure: ConnectFailure,
    },
    /// A Redis command failed.
    #[error("Redis error while {context}: {source}")]
    Redis {
        /// What was being attempted.
        context: &'static str,
        /// The Redis client's error.
        #[source]
        source: BoxError,
    },
    /// The server is older than redcall supports (Redis 7.0, Valkey 7.2; see `docs/scaling.md` for why), or does not
    /// know `HELLO` (Redis before 6.0). Found on the client's first connection, before anything was sent.
    #[error("{server} is too old: redcall needs {minimum} or newer")]
    UnsupportedServer {
        /// The server and version found (`"Redis 6.2.14"`).
        server: String,
        /// The oldest version of that server redcall works with (`"Redis 7.0.0"`).
        minimum: String,
    },
    /// With `replicated` durability: the request was added on the primary, but fewer replicas than asked for
    /// confirmed it (`WAIT`) by the request's deadline (each attempt waits up to the durability timeout, and is
    /// tried again under the same id, counted once). It may still be answered, but a failover could lose it.
    #[error(
        "request {id}: {what} on the primary, but only {confirmed} of {wanted} replicas confirmed it within {timeout:?} (a failover now could lose it)"
    )]
    NotReplicated {
        /// The request id.
        id: String,
        /// What was written (`"added"`).
        what: &'static str,
        /// Replicas that confirmed.
        confirmed: u64,
        /// Replicas asked for.
        wanted: u32,
        /// The durability timeout.
        timeout: Duration,
    },
    /// The service's partition count recorded in Redis is not the one this program was given: it would add
    /// requests to streams no responder reads, or read streams no requester writes. Nothing was sent. Every
    /// requester, responder and admin of a service must use the count it was first served with (see
    /// `docs/scaling.md` for changing it).
    #[error(
        "service {service:?} is served with {recorded} partition(s), but this program was given {configured} (use --partitions {recorded})"
    )]
    PartitionMismatch {
        /// The service.
        service: String,
        /// The count recorded in Redis.
        recorded: usize,
        /// The count this program was given.
        configured: usize,
    },
    /// The configuration is not usable (a client or responder setting, a URL, TLS material).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An argument of a call is not usable (an empty id, a zero timeout, a malformed stream entry id); nothing
    /// was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Why a connection to Redis failed ([`Error::Connect`]), in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing answered (the connection was refused or timed out) or Redis is not ready yet: it may come back.
    #[error("unreachable ({detail})")]
    Unreachable {
        /// The underlying error, such as `Connection refused (os error 111)`.
        detail: String,
    },
    /// The server wants a password and the URL gave none.
    #[error(
        "this Redis requires a password: give it in the URL (redis://:PASSWORD@HOST:PORT, or \
         redis://USER:PASSWORD@HOST:PORT for an ACL user)"
    )]
    PasswordRequired,
    /// The server refused the URL's user name and password.
    #[error("wrong password (or user name, or the user is disabled)")]
    WrongPassword,
    /// Something answers on the port, but not in the Redis protocol.
    #[error("this is not a Redis server (it answered {answer:?}): check the host and port")]
    NotRedis {
        /// The start of what it sent, printable.
        answer: String,
    },
    /// A `rediss://` URL, but the server speaks plain Redis on that port.
    #[error(
        "the TLS handshake got no answer: this port speaks plain Redis, without TLS (use redis://, not rediss://)"
    )]
    NoTls,
    /// A `redis://` URL, but the server expects TLS on that port.
    #[error("this port expects TLS (use rediss://, not redis://)")]
    TlsRequired,
    /// The TLS handshake failed (an untrusted or expired certificate, a client certificate refused).
    #[error("the TLS handshake failed: {detail}")]
    Tls {
        /// The TLS library's error.
        detail: String,
    },
}

/// The cause of an [`Error`], for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::DuplicateId`].
    DuplicateId,
    /// See [`Error::AlreadyAnswered`].
    AlreadyAnswered,
    /// See [`Error::NotFound`] and [`Error::EntryNotFound`].
    NotFound,
    /// See [`Error::Handler`].
    Handler,
    /// See [`Error::UnknownFunction`].
    UnknownFunction,
    /// See [`Error::DeadLettered`].
    DeadLettered,
    /// See [`Error::Expired`].
    Expired,
    /// See [`Error::Malformed`].
    Malformed,
    /// See [`Error::Cancelled`].
    Cancelled,
    /// See [`Error::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`Error::Encode`] and [`Error::Decode`].
    Codec,
    /// See [`Error::Unavailable`]: nothing was sent; retrying later is safe.
    Unavailable,
    /// See [`Error::Redis`]: a command failed; whether it took effect may be unknown.
    Redis,
    /// See [`Error::Lost`].
    Lost,
    /// See [`Error::Config`].
    Config,
    /// See [`Error::UnsupportedServer`].
    Unsupported,
    /// See [`Error::NotReplicated`].
    NotReplicated,
    /// See [`Error::InvalidArgument`].
    InvalidArgument,
    /// See [`Error::PartitionMismatch`].
    PartitionMismatch,
}

impl ErrorKind {
    /// The kind's stable name in `snake_case` (`timeout`, `dead_lettered`, ...), as the CLI prints it under
    /// `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::DuplicateId => "duplicate_id",
            ErrorKind::AlreadyAnswered => "already_answered",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Handler => "handler",
            ErrorKind::UnknownFunction => "unknown_function",
            ErrorKind::DeadLettered => "dead_lettered",
            ErrorKind::Expired => "expired",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Codec => "codec",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Redis => "redis",
            ErrorKind::Lost => "lost",
            ErrorKind::Config => "config",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotReplicated => "not_replicated",
            ErrorKind::PartitionMismatch => "partition_mismatch",
        }
    }
}

impl Error {
    /// The cause, as a small enum, for callers that branch on it (retry later on [`ErrorKind::Unavailable`], send
    /// again if safe on [`ErrorKind::Lost`], ...). Both enums grow in new releases: keep a fallback arm.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::DuplicateId { .. } => ErrorKind::DuplicateId,
            Error::AlreadyAnswered { .. } => ErrorKind::AlreadyAnswered,
            Error::NotFound { .. } | Error::EntryNotFound { .. } => ErrorKind::NotFound,
            Error::Handler { .. } => ErrorKind::Handler,
            Error::UnknownFunction { .. } => ErrorKind::UnknownFunction,
            Error::DeadLettered { .. } => ErrorKind::DeadLettered,
            Error::Expired { .. } => ErrorKind::Expired,
            Error::Malformed { .. } => ErrorKind::Malformed,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::Encode { .. } | Error::Decode { .. } => ErrorKind::Codec,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Connect { failure, .. } => match failure {
                ConnectFailure::Unreachable { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Config,
            },
            Error::Redis { .. } => ErrorKind::Redis,
            Error::Lost { .. } => ErrorKind::Lost,
            Error::Config(_) => ErrorKind::Config,
            Error::UnsupportedServer { .. } => ErrorKind::Unsupported,
            Error::NotReplicated { .. } => ErrorKind::NotReplicated,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::PartitionMismatch { .. } => ErrorKind::PartitionMismatch,
        }
    }

    /// The request id this error is about, where it is about one request.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Timeout { id, .. }
            | Error::DuplicateId { id, .. }
            | Error::AlreadyAnswered { id, .. }
            | Error::NotFound { id, .. }
            | Error::Handler { id, .. }
            | Error::UnknownFunction { id, .. }
            | Error::DeadLettered { id, .. }
            | Error::Expired { id, .. }
            | Error::Malformed { id, .. }
            | Error::Cancelled { id }
            | Error::Lost { id, .. }
            | Error::NotReplicated { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Wraps a Redis error with what was being done.
    pub(crate) fn redis(context: &'static str) -> impl FnOnce(redis::RedisError) -> Error {
        move |source| Error::Redis {
            context,
            source: Box::new(source),
        }
    }

    /// Whether this is Redis being unreachable: nothing was sent ([`Error::Unavailable`]), or the connection broke
    /// under the command (a Redis error that is a connection error). Trying again may then succeed.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Connect { failure, .. } => matches!(failure, ConnectFailure::Unreachable { .. }),
            Error::Redis { source, .. } => source
                .downcast_ref::<redis::RedisError>()
                .is_some_and(crate::connection::is_transient),
            _ => false,
        }
    }

    /// Whether this is [`Error::NotReplicated`]: the write is on the primary, and waiting for the replicas again
    /// may succeed.
    pub(crate) fn is_not_replicated(&self) -> bool {
        matches!(self, Error::NotReplicated { .. })
    }

    /// Wraps an encoder's error.
    pub(crate) fn encode(source: rmp_serde::encode::Error) -> Error {
        Error::Encode {
            source: Box::new(source),
        }
    }
}
