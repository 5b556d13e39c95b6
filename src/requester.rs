//! The requesting side: add a request durably, wait for its reply; look a request up; answer one by hand.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::adder::AddJob;
use crate::client::Client;
use crate::config::ttl_ms;
use crate::error::{Error, Result};
use crate::protocol::{
    self, FORMAT_VERSION, ReplyEnvelope, ReplyStatus, RequestEnvelope, ServiceKeys, codes,
};
use crate::replies::{Delivery, Router};
use crate::scripts;

/// Makes requests to one service and answers them by hand. Cheap to clone; every clone shares the client's one
/// reply connection.
#[derive(Clone)]
pub struct Requester {
    client: Client,
    keys: Arc<ServiceKeys>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("service", &self.keys.tag())
            .finish_non_exhaustive()
    }
}

/// What a request asked for, as returned by [`Requester::call_info`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    /// The request id.
    pub id: String,
    /// The function key.
    pub func_key: String,
    /// The params, one MessagePack document; decode with [`CallInfo::params`].
    pub params_msgpack: Vec<u8>,
    /// The request's absolute deadline.
    pub deadline: SystemTime,
    /// When the request was made.
    pub created: SystemTime,
    /// Set when the request was replayed (from the dead-letter stream or a range of the requests stream).
    pub replay: Option<protocol::ReplayInfo>,
}

impl CallInfo {
    /// Decodes the params into `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        protocol::decode(&self.params_msgpack, "request params")
    }

    fn from_envelope(env: RequestEnvelope) -> Self {
        Self {
            deadline: env.deadline(),
            created: SystemTime::UNIX_EPOCH + Duration::from_millis(env.created_ms),
            replay: env.replay,
            id: env.id,
            func_key: env.func_key,
            params_msgpack: env.params,
        }
    }
}

impl Requester {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        let keys = Arc::new(client.keys(service));
        Self { client, keys }
    }

    /// The service's key layout.
    pub fn keys(&self) -> &ServiceKeys {
        &self.keys
    }

    /// Sends a request with the given id and waits for its reply, at most `timeout`.
    ///
    /// The request is stored durably before this waits: if no responder answers in time, the error is
    /// [`Error::Timeout`], and the request may still be handled later (its reply is then stored under the id).
    pub async fn request<P, R>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send(id, func_key, params, timeout).await?.wait().await
    }

    /// Like [`Requester::request`], with an id made by redcall (UUID v7, so ids sort by time).
    pub async fn call<P, R>(&self, func_key: &str, params: &P, timeout: Duration) -> Result<R>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.submit(func_key, params, timeout).await?.wait().await
    }

    /// Like [`Requester::send`], with an id made by redcall (UUID v7); the handle's [`PendingReply::id`] tells it.
    ///
    /// A fresh UUID v7 cannot collide with an existing request, so the request is added with a plain
    /// `MULTI`/`SET`/`XADD`/`EXEC` instead of the duplicate-checking script: the same durable work, cheaper.
    pub async fn submit<P>(
        &self,
        func_key: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        let id = new_request_id();
        self.add(&id, func_key, params, timeout, IdOrigin::Generated)
            .await
    }

    /// Adds the request and returns as soon as Redis has accepted it, with a handle to await the reply later.
    ///
    /// When this returns `Ok`, the request is stored (record and stream entry); the caller can do other work and
    /// call [`PendingReply::wait`] later. A reply that arrives meanwhile is kept for the handle.
    pub async fn send<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        self.add(id, func_key, params, timeout, IdOrigin::Caller)
            .await
    }

    /// Adds a request: subscribe to its reply channel, then store record and stream entry atomically, in one
    /// pipeline.
    async fn add<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        timeout: Duration,
        origin: IdOrigin,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        if id.is_empty() {
            return Err(Error::Config("a request id must not be empty".into()));
        }
        let started = Instant::now();
        let config = self.client.config();
        let now = protocol::now_ms();
        let envelope = RequestEnvelope {
            v: FORMAT_VERSION,
            id: id.to_owned(),
            func_key: func_key.to_owned(),
            params: protocol::encode(params)?,
            deadline_ms: now + timeout.as_millis() as u64,
            created_ms: now,
            replay: None,
        };
        let bytes = protocol::encode(&envelope)?;
        config.check_payload("request", bytes.len())?;

        let router = self.client.router().await?;
        let channel = self.keys.reply_channel(id);
        let rx = router
            .register(
                &channel,
                self.keys.clone(),
                matches!(origin, IdOrigin::Generated),
            )
            .ok_or_else(|| Error::DuplicateId { id: id.to_owned() })?;
        // From here on, the guard releases the waiter and its subscription on every early return.
        let pending = PendingReply {
            id: id.to_owned(),
            channel: Some(channel),
            keys: self.keys.clone(),
            rx: Some(rx),
            deadline: started + timeout,
            timeout,
            router: router.clone(),
        };

        let record_ttl = ttl_ms(timeout + config.record_retention);
        let entry = match origin {
            // A caller's id may exist already: the script refuses it, and clears what an expired namesake left.
            IdOrigin::Caller => {
                // While the router reconnects this fails at once with `Unavailable`: a caller never waits for
                // Redis to come back before knowing that its request was not sent.
                let mut con = router.connection()?;
                let mut pipe = redis::pipe();
                // SUBSCRIBE and the add go out as one pipeline on one connection: Redis runs them in order, so the
                // subscription is live before any responder can read the request.
                pipe.cmd("SUBSCRIBE").arg(pending.channel()).ignore();
                scripts::evalsha(&mut pipe, &scripts::ADD_REQUEST)
                    .arg(4)
                    .arg(self.keys.record(id))
                    .arg(self.keys.requests())
                    .arg(self.keys.reply(id))
                    .arg(self.keys.last_error(id))
                    .arg(id)
                    .arg(&bytes)
                    .arg(record_ttl);
                let (entry,) = scripts::query_with_scripts::<(Option<String>,), _>(&pipe, &mut con)
                    .await
                    .inspect_err(|e| router.report_broken(e))
                    .map_err(Error::redis("adding the request"))?;
                if entry.is_some() {
                    router.accepted(pending.channel());
                }
                entry
            }
            // A generated id cannot collide: it goes to the router's adder, which subscribes and adds many
            // requests per transaction, and marks the waiter accepted.
            IdOrigin::Generated => Some(
                router
                    .add(AddJob {
                        keys: self.keys.clone(),
                        id: id.to_owned(),
                        channel: pending.channel().to_owned(),
                        record_key: self.keys.record(id),
                        envelope: bytes,
                        record_ttl_ms: record_ttl,
                    })
                    .await?,
            ),
        };
        match entry {
            Some(entry_id) => {
                tracing::debug!(id, func_key, entry_id, "request added");
                Ok(pending)
            }
            None => Err(Error::DuplicateId { id: id.to_owned() }),
        }
    }

    /// The function key and params of a request, read from its record in O(1). Works while the request is
    /// pending and for the record retention period after its deadline; [`Error::NotFound`] otherwise.
    pub async fn call_info(&self, id: &str) -> Result<CallInfo> {
        let router = self.client.router().await?;
        let record =
            get_bytes(&router, &self.keys.record(id), "reading the request record").await?;
        let record = record.ok_or_else(|| Error::NotFound { id: id.to_owned() })?;
        Ok(CallInfo::from_envelope(protocol::decode_request(&record)?))
    }

    /// Answers request `id` with `data`: stores the reply (with the reply TTL) and publishes it to whoever waits.
    ///
    /// The request must exist ([`Error::NotFound`] otherwise, so a mistyped id cannot leave a reply waiting for a
    /// future request). The first reply stored for an id wins; a later one is refused with
    /// [`Error::AlreadyAnswered`]. A responder that
    /// later picks the request up answers from this reply without running its handler.
    pub async fn publish_reply<T: Serialize + ?Sized>(&self, id: &str, data: &T) -> Result<()> {
        let reply = ReplyEnvelope::ok(id, protocol::encode(data)?);
        self.publish_envelope(&reply).await
    }

    /// Answers request `id` with an error reply, as a handler's error would.
    pub async fn publish_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        let reply = ReplyEnvelope::failure(id, ReplyStatus::Error, code, message);
        self.publish_envelope(&reply).await
    }

    async fn publish_envelope(&self, reply: &ReplyEnvelope) -> Result<()> {
        let config = self.client.config();
        let bytes = protocol::encode(reply)?;
        config.check_payload("reply", bytes.len())?;
        let router = self.client.router().await?;
        let mut con = router.connection()?;
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, &scripts::PUBLISH_REPLY)
            .arg(3)
            .arg(self.keys.reply(&reply.id))
            .arg(self.keys.last_error(&reply.id))
            .arg(self.keys.record(&reply.id))
            .arg(&bytes)
            .arg(ttl_ms(config.reply_ttl))
            .arg(self.keys.reply_channel(&reply.id));
        let (stored,): (i64,) = scripts::query_with_scripts(&pipe, &mut con)
            .await
            .inspect_err(|e| router.report_broken(e))
            .map_err(Error::redis("publishing a reply"))?;
        match stored {
            1 => Ok(()),
            -1 => Err(Error::NotFound {
                id: reply.id.clone(),
            }),
            _ => Err(Error::AlreadyAnswered {
                id: reply.id.clone(),
            }),
        }
    }

    /// The stored reply of request `id`, if one is stored (decoded like a waited-for reply).
    pub async fn stored_reply<R: DeserializeOwned>(&self, id: &str) -> Result<Option<R>> {
        let router = self.client.router().await?;
        match fetch_stored(&router, &self.keys.reply(id)).await? {
            Some(bytes) => interpret_reply(id, &bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// Where a request id came from, which decides how the request is added.
#[derive(Clone, Copy)]
enum IdOrigin {
    /// Given by the caller: may collide with an existing request.
    Caller,
    /// Made by redcall (UUID v7): unique.
    Generated,
}

/// A request that Redis has accepted, whose reply can be awaited. Dropping it stops listening for the reply (the
/// request itself stays queued).
pub struct PendingReply {
    id: String,
    channel: Option<String>,
    keys: Arc<ServiceKeys>,
    rx: Option<oneshot::Receiver<Delivery>>,
    deadline: Instant,
    timeout: Duration,
    router: Arc<Router>,
}

impl std::fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReply")
            .field("id", &self.id)
            .field("service", &self.keys.tag())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PendingReply {
    /// The request id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn channel(&self) -> &str {
        self.channel.as_deref().unwrap_or_default()
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            id: self.id.clone(),
            timeout: self.timeout,
        }
    }

    /// Waits for the reply until the request's timeout (counted from `send`). On timeout, looks once for a
    /// stored reply before returning [`Error::Timeout`].
    pub async fn wait<R: DeserializeOwned>(mut self) -> Result<R> {
        let Some(rx) = self.rx.take() else {
            return Err(self.timed_out());
        };
        let bytes = match tokio::time::timeout_at(self.deadline.into(), rx).await {
            Ok(Ok(Delivery::Reply(bytes))) => bytes,
            Ok(Ok(Delivery::Lost)) => {
                return Err(Error::Lost {
                    id: self.id.clone(),
                });
            }
            // The waiter was dropped without a reply (router shut down) or the time is up: last look. When Redis
            // is unreachable right then, the answer is still a timeout: the request was sent and may be handled
            // later, which an "unavailable, nothing was sent" error would deny.
            _ => match fetch_stored(&self.router, &self.keys.reply(&self.id)).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Err(self.timed_out()),
                Err(err) => {
                    tracing::debug!(id = %self.id, error = %err, "no last look at the stored reply");
                    return Err(self.timed_out());
                }
            },
        };
        interpret_reply(&self.id, &bytes)
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            self.router.release(channel);
        }
    }
}

/// `GET key` on the router's connection; `context` says what for, in errors.
async fn get_bytes(router: &Router, key: &str, context: &'static str) -> Result<Option<Vec<u8>>> {
    let mut con = router.connection()?;
    con.get(key)
        .await
        .inspect_err(|e| router.report_broken(e))
        .map_err(Error::redis(context))
}

async fn fetch_stored(router: &Router, reply_key: &str) -> Result<Option<Vec<u8>>> {
    get_bytes(router, reply_key, "reading a stored reply").await
}

/// Turns a reply envelope into the caller's result.
fn interpret_reply<R: DeserializeOwned>(id: &str, bytes: &[u8]) -> Result<R> {
    let reply = protocol::decode_reply(bytes)?;
    let message = reply.message.unwrap_or_default();
    let code = reply.code.unwrap_or_default();
    match reply.status {
        ReplyStatus::Ok => protocol::decode(reply.data.as_deref().unwrap_or(&[0xc0]), "reply data"),
        ReplyStatus::DeadLettered => Err(Error::DeadLettered {
            id: id.to_owned(),
            reason: message,
        }),
        ReplyStatus::Expired => Err(Error::Expired { id: id.to_owned() }),
        ReplyStatus::Error => Err(match code.as_str() {
            codes::UNKNOWN_FUNCTION => Error::UnknownFunction {
                id: id.to_owned(),
                func_key: message,
            },
            codes::MALFORMED => Error::Malformed {
                id: id.to_owned(),
                message,
            },
            _ => Error::Handler {
                id: id.to_owned(),
                code,
                message,
            },
        }),
    }
}

/// A fresh request id: a UUID v7, unique and sortable by creation time.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
