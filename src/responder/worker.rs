//! The responder's moving parts: the read loop, the keepalive loop, and what happens to one entry.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadOptions};
use redis::{AsyncCommands, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::handler::{ErasedHandler, HandlerError, Outcome, RequestContext};
use super::settings::ResponderSettings;
use crate::client::Client;
use crate::config::ttl_ms;
use crate::connection;
use crate::error::{Error, Result};
use crate::protocol::{
    self, FIELD_ENVELOPE, FIELD_ID, ReplyEnvelope, ReplyStatus, RequestEnvelope, ServiceKeys, codes,
};
use crate::scripts;

/// Longest pause between two attempts to store a finished request's reply while Redis is unreachable.
const FINISH_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Most replies answered by one transaction (one `MULTI`...`EXEC`).
const FINISH_BATCH: usize = 256;

/// A finished request waiting to be answered by the finisher.
pub(crate) struct Completion {
    id: String,
    entry_id: String,
    reply: Vec<u8>,
    /// Whether an earlier delivery may have left a last error to delete.
    clear_error: bool,
    /// Who learns that the answer went through (or was given up on; the entry then stays pending).
    after: AfterAnswer,
}

/// Who is waiting for an answer to go through.
enum AfterAnswer {
    /// A request task, which holds the permit and is tracked until then.
    Task(oneshot::Sender<()>),
    /// Nobody: the answer was made inline by the read loop, and holds what a task would have held.
    Inline { _held: Held },
}

/// What an answer made inline holds until the finisher is done with it: the concurrency permit, and a token that
/// makes the shutdown's wait for in-flight work wait for this answer too.
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    _token: TaskTrackerToken,
}

impl Held {
    fn new(shared: &Shared, permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            _token: shared.requests.token(),
        }
    }
}

/// A handler's outcome, or the panic it raised.
type HandlerResult = std::thread::Result<Outcome>;

/// What a handler's outcome calls for.
enum Next {
    /// Answer the requester: the result, or an error reply.
    Answer(ReplyEnvelope),
    /// The handler asked for a retry (why): leave the entry pending.
    Retry(String),
    /// The handler panicked (its message): leave the entry pending.
    Panicked(String),
    /// The params did not decode (why): dead-letter, with an error reply.
    InvalidParams(String),
}

/// Sorts a handler's outcome for request `id` into what it calls for.
fn next_step(id: &str, outcome: HandlerResult) -> Next {
    match outcome {
        Ok(Outcome::Reply(data)) => Next::Answer(ReplyEnvelope::ok(id, data)),
        Ok(Outcome::Failed(HandlerError::Fail { code, message })) => Next::Answer(
            ReplyEnvelope::failure(id, ReplyStatus::Error, &code, message),
        ),
        Ok(Outcome::Failed(HandlerError::Retry { reason })) => Next::Retry(reason),
        Ok(Outcome::InvalidParams(message)) => Next::InvalidParams(message),
        Err(panic) => Next::Panicked(panic_message(panic.as_ref())),
    }
}

/// An entry counted in [`Shared::in_flight`] while this lives (see [`Shared::track`]).
struct InFlight {
    shared: Arc<Shared>,
    entry_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry_id);
    }
}

/// State shared by a responder's tasks.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) keys: ServiceKeys,
    pub(crate) settings: ResponderSettings,
    handlers: HashMap<String, ErasedHandler>,
    /// Connection for short commands (answers, claims, acks); reconnects by itself.
    pub(crate) con: ConnectionManager,
    /// One permit per request being handled.
    pub(crate) permits: Arc<Semaphore>,
    /// Entry ids being handled, whose claims the keepalive refreshes.
    in_flight: Mutex<HashSet<String, foldhash::fast::RandomState>>,
    /// Cancelled to stop reading and claiming.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the grace period is over: running handlers are dropped, their entries stay pending.
    pub(crate) abort: CancellationToken,
    /// The request tasks.
    pub(crate) requests: TaskTracker,
    /// Whether the read loop may run a handler's first poll itself (see [`Shared::start_entry`]): only on a
    /// current-thread runtime, where every task shares one thread anyway. On a multi-thread runtime each request
    /// gets its own task, so handlers that compute without awaiting still run in parallel.
    inline_first_poll: bool,
    /// Finished requests on their way to the finisher, which answers them in batches.
    finished_tx: mpsc::UnboundedSender<Completion>,
    finished_rx: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
}

/// A stream entry as read, before anything is trusted about it.
pub(crate) struct RawEntry {
    pub(crate) entry_id: String,
    pub(crate) request_id: Option<String>,
    pub(crate) envelope: Option<Vec<u8>>,
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
        let (mut request_id, mut envelope) = (None, None);
        if let Some(Value::Array(fields)) = parts.next() {
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let Value::BulkString(name) = name else {
                    continue;
                };
                match (name.as_slice(), value) {
                    (b"id", Value::BulkString(b)) => request_id = String::from_utf8(b).ok(),
                    (b"env", Value::BulkString(b)) => envelope = Some(b),
                    _ => {}
                }
            }
        }
        Some(Self {
            entry_id,
            request_id: request_id.filter(|id| !id.is_empty()),
            envelope,
        })
    }

    pub(crate) fn from_stream_id(entry: StreamId) -> Self {
        let mut map = entry.map;
        let request_id = map.remove(FIELD_ID).and_then(|v| match v {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        });
        let envelope = map.remove(FIELD_ENVELOPE).and_then(|v| match v {
            Value::BulkString(b) => Some(b),
            _ => None,
        });
        Self {
            entry_id: entry.id,
            request_id: request_id.filter(|id| !id.is_empty()),
            envelope,
        }
    }
}

/// Why an entry is moved to the dead-letter stream.
pub(crate) struct DeadLetter<'a> {
    pub(crate) reason: &'a str,
    pub(crate) error: String,
    pub(crate) deliveries: u64,
    /// The reply the requester gets (none when the request id is unknown).
    pub(crate) reply: Option<ReplyEnvelope>,
}

impl<'a> DeadLetter<'a> {
    /// A dead letter of `entry` for `reason`, with the failure reply (status `status`, code `reason`,
    /// `reply_message`) its requester gets when the entry's request id is known. `error` is what the dead-letter
    /// record keeps.
    pub(crate) fn replying(
        entry: &RawEntry,
        status: ReplyStatus,
        reason: &'a str,
        reply_message: String,
        error: String,
        deliveries: u64,
    ) -> Self {
        let reply = entry
            .request_id
            .as_deref()
            .map(|id| ReplyEnvelope::failure(id, status, reason, reply_message));
        Self {
            reason,
            error,
            deliveries,
            reply,
        }
    }
}

impl Shared {
    pub(crate) async fn connect(
        client: Client,
        service: &str,
        settings: ResponderSettings,
        handlers: HashMap<String, ErasedHandler>,
    ) -> Result<Self> {
        let con = connection::managed_connection(client.redis_client(), client.config()).await?;
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let inline_first_poll = matches!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        Ok(Self {
            inline_first_poll,
            finished_tx,
            finished_rx: Mutex::new(Some(finished_rx)),
            keys: client.keys(service),
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            client,
            settings,
            handlers,
            con,
            in_flight: Mutex::default(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            requests: TaskTracker::new(),
        })
    }

    /// Creates the consumer group (and the stream) when missing; an existing group is fine.
    pub(crate) async fn ensure_group(&self) -> Result<()> {
        let mut con = self.con.clone();
        let created: redis::RedisResult<()> = con
            .xgroup_create_mkstream(self.keys.requests(), &self.settings.group, "0")
            .await;
        match created {
            Err(err) if err.code() != Some("BUSYGROUP") => {
                Err(Error::redis("creating the consumer group")(err))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Counts an entry as in flight (the keepalive refreshes its claim) until the returned guard is dropped, however
    /// the task holding it ends.
    fn track(self: &Arc<Self>, entry_id: &str) -> InFlight {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry_id.to_owned());
        InFlight {
            shared: self.clone(),
            entry_id: entry_id.to_owned(),
        }
    }

    /// Starts handling one entry in its own task, with `permit` or, without one, after waiting for one. The entry
    /// counts as in flight from now on, so its claim is refreshed even while it waits.
    pub(crate) fn spawn_entry(
        self: &Arc<Self>,
        entry: RawEntry,
        delivery: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let tracked = self.track(&entry.entry_id);
        let shared = self.clone();
        self.requests.spawn(async move {
            let _tracked = tracked;
            let permit = match permit {
                Some(p) => Some(p),
                None => tokio::select! {
                    p = shared.permits.clone().acquire_owned() => p.ok(),
                    _ = shared.abort.cancelled() => None,
                },
            };
            if permit.is_some() {
                shared.handle_entry(entry, delivery).await;
            }
        });
    }

    /// Starts a first delivery read by the read loop. On a current-thread runtime, a well-formed, unexpired request
    /// whose handler is done at its first poll (most are) is run right here and its answer queued for the finisher,
    /// without a task, a claim to keep alive or a wait; anything else goes to [`Shared::spawn_entry`], which
    /// handles every case.
    pub(crate) fn start_entry(
        self: &Arc<Self>,
        entry: RawEntry,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if !self.inline_first_poll {
            return self.spawn_entry(entry, 1, permit);
        }
        let Some(permit) = permit else {
            return self.spawn_entry(entry, 1, None);
        };
        let Some((request, handler)) = self.admit_quickly(&entry) else {
            return self.spawn_entry(entry, 1, Some(permit));
        };
        let ctx = self.context(&request, &entry, 1);
        // The handler's own code runs inside both guards: building its future and its first poll may panic.
        let first_poll =
            match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, &request.params))) {
                Err(panic) => Err(panic),
                Ok(future) => {
                    let mut run = AssertUnwindSafe(future).catch_unwind();
                    match (&mut run).now_or_never() {
                        Some(outcome) => outcome,
                        None => {
                            // Still running: from here on it is an ordinary request task, whose claim is kept alive.
                            let tracked = self.track(&entry.entry_id);
                            let shared = self.clone();
                            self.requests.spawn(async move {
                                let (_permit, _tracked) = (permit, tracked);
                                shared.run_and_conclude(&entry, request, 1, run).await;
                            });
                            return;
                        }
                    }
                }
            };
        match next_step(&request.id, first_poll) {
            Next::Answer(reply) => {
                let held = AfterAnswer::Inline {
                    _held: Held::new(self, permit),
                };
                self.queue_answer(request.id, entry.entry_id, 1, reply, held);
            }
            next => {
                let shared = self.clone();
                self.requests.spawn(async move {
                    let _permit = permit;
                    shared.conclude(&entry, request, 1, next).await;
                });
            }
        }
    }

    /// The happy path's admission, without waiting for anything: a first delivery that is well-formed, unexpired and
    /// has a handler. `None` for everything else, which [`Shared::handle_entry`] deals with.
    fn admit_quickly(&self, entry: &RawEntry) -> Option<(RequestEnvelope, ErasedHandler)> {
        let request = self.check_entry(entry).ok()?;
        if request.is_expired(protocol::now_ms()) {
            return None;
        }
        let handler = self.handlers.get(&request.func_key)?.clone();
        Some((request, handler))
    }

    fn context(
        &self,
        request: &RequestEnvelope,
        entry: &RawEntry,
        delivery: u64,
    ) -> RequestContext {
        RequestContext {
            id: request.id.clone(),
            func_key: request.func_key.clone(),
            entry_id: entry.entry_id.clone(),
            delivery,
            deadline: request.deadline(),
        }
    }

    /// Awaits a running handler, then does what its outcome calls for; unless the shutdown grace period ends first,
    /// which leaves the request pending.
    async fn run_and_conclude(
        &self,
        entry: &RawEntry,
        request: RequestEnvelope,
        delivery: u64,
        run: impl Future<Output = HandlerResult>,
    ) {
        let outcome = tokio::select! {
            outcome = run => outcome,
            _ = self.abort.cancelled() => {
                tracing::warn!(id = %request.id, "shutdown grace over; leaving the request pending");
                return;
            }
        };
        let next = next_step(&request.id, outcome);
        self.conclude(entry, request, delivery, next).await;
    }

    /// Everything that happens to one delivered entry; never panics, never returns an error: every failure ends
    /// as a reply, a dead letter, or an entry left pending for redelivery.
    async fn handle_entry(self: &Arc<Self>, entry: RawEntry, delivery: u64) {
        let mut request = match self.check_entry(&entry) {
            Ok(request) => request,
            Err((code, message)) => {
                let letter = DeadLetter::replying(
                    &entry,
                    ReplyStatus::Error,
                    code,
                    message.clone(),
                    message,
                    delivery,
                );
                self.dead_letter(&entry, None, letter).await;
                return;
            }
        };
        let id = request.id.clone();
        tracing::debug!(%id, func_key = %request.func_key, entry_id = %entry.entry_id, delivery, "handling");

        if delivery > 1 && self.answer_from_stored(&id, &entry.entry_id).await {
            tracing::debug!(%id, "answered from the stored reply; handler not run again");
            return;
        }
        if request.is_expired(protocol::now_ms()) {
            tracing::info!(%id, "deadline passed before start; not running it");
            let reply = ReplyEnvelope::failure(
                &id,
                ReplyStatus::Expired,
                codes::EXPIRED,
                "deadline passed before start",
            );
            self.finish(&id, &entry.entry_id, delivery, reply).await;
            return;
        }
        let Some(handler) = self.handlers.get(&request.func_key).cloned() else {
            tracing::warn!(%id, func_key = %request.func_key, "no handler for this function key");
            let letter = DeadLetter::replying(
                &entry,
                ReplyStatus::Error,
                codes::UNKNOWN_FUNCTION,
                request.func_key.clone(),
                format!("no handler for function key {:?}", request.func_key),
                delivery,
            );
            self.dead_letter(&entry, Some(&request), letter).await;
            return;
        };

        let ctx = self.context(&request, &entry, delivery);
        // The handler call itself is inside the guarded future too: a panic while building the future must not
        // escape either.
        // The future owns the params; what follows needs only the rest (a dead letter keeps the entry's raw envelope).
        let params = std::mem::take(&mut request.params);
        let run = AssertUnwindSafe(async move { handler(ctx, &params).await }).catch_unwind();
        self.run_and_conclude(&entry, request, delivery, run).await;
    }

    /// Does what a handler's outcome calls for: an answer, a retry left pending, or a dead letter.
    async fn conclude(
        &self,
        entry: &RawEntry,
        request: RequestEnvelope,
        delivery: u64,
        next: Next,
    ) {
        let id = &request.id;
        match next {
            Next::Answer(reply) => self.finish(id, &entry.entry_id, delivery, reply).await,
            Next::Retry(reason) => {
                tracing::info!(%id, %reason, "handler asked for a retry; leaving the request pending");
                self.remember_error(id, &format!("retry requested: {reason}"))
                    .await;
            }
            Next::Panicked(message) => {
                tracing::error!(%id, %message, "handler panicked; the request stays pending for redelivery");
                self.remember_error(id, &format!("handler panicked: {message}"))
                    .await;
            }
            Next::InvalidParams(message) => {
                let letter = DeadLetter::replying(
                    entry,
                    ReplyStatus::Error,
                    codes::INVALID_PARAMS,
                    message.clone(),
                    message,
                    delivery,
                );
                self.dead_letter(entry, Some(&request), letter).await;
            }
        }
    }

    /// Checks an entry's shape before trusting it: fields present, size within the limit, envelope decodable and
    /// consistent. Returns the error code and message for a dead letter otherwise.
    fn check_entry(
        &self,
        entry: &RawEntry,
    ) -> std::result::Result<RequestEnvelope, (&'static str, String)> {
        let (Some(id), Some(bytes)) = (&entry.request_id, &entry.envelope) else {
            return Err((
                codes::MALFORMED,
                "entry lacks the `id` or `env` field".to_owned(),
            ));
        };
        self.client
            .config()
            .check_payload("request", bytes.len())
            .map_err(|e| (codes::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let envelope =
            protocol::decode_request(bytes).map_err(|e| (codes::MALFORMED, e.to_string()))?;
        if &envelope.id != id {
            return Err((
                codes::MALFORMED,
                format!("envelope id {:?} differs from entry id {id:?}", envelope.id),
            ));
        }
        Ok(envelope)
    }

    /// Stores, publishes and acknowledges a reply, through the finisher (which answers many requests per
    /// transaction), and waits until that went through. A reply that cannot be stored leaves the entry pending, so
    /// it is delivered again: never lost.
    pub(crate) async fn finish(
        &self,
        id: &str,
        entry_id: &str,
        delivery: u64,
        reply: ReplyEnvelope,
    ) {
        let (done, answered) = oneshot::channel();
        let queued = self.queue_answer(
            id.to_owned(),
            entry_id.to_owned(),
            delivery,
            reply,
            AfterAnswer::Task(done),
        );
        if queued {
            // An error only means the finisher stopped (grace over): the entry stays pending.
            let _ = answered.await;
        }
    }

    /// Encodes a reply (an error reply instead when it is too large) and queues it for the finisher. False when it
    /// could not be queued; the entry then stays pending.
    fn queue_answer(
        &self,
        id: String,
        entry_id: String,
        delivery: u64,
        mut reply: ReplyEnvelope,
        after: AfterAnswer,
    ) -> bool {
        let mut bytes = match protocol::encode(&reply) {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(%id, error = %err, "could not encode the reply");
                return false;
            }
        };
        if let Err(too_large) = self.client.config().check_payload("reply", bytes.len()) {
            let message = too_large.to_string();
            tracing::warn!(%id, %message, "reply too large; answering with an error instead");
            reply =
                ReplyEnvelope::failure(&id, ReplyStatus::Error, codes::PAYLOAD_TOO_LARGE, message);
            bytes = match protocol::encode(&reply) {
                Ok(b) => b,
                Err(_) => return false,
            };
        }
        let completion = Completion {
            id,
            entry_id,
            reply: bytes,
            clear_error: delivery > 1,
            after,
        };
        self.finished_tx.send(completion).is_ok()
    }

    /// Answers a batch of finished requests in one transaction: for each, `SET reply NX PX` (the first reply
    /// stored wins) and `PUBLISH`, then one `XACK` for all. `MULTI` keeps it atomic, so a responder dying here
    /// leaves all or nothing; it is cheaper for Redis than a script doing the same.
    ///
    /// When a reply was stored already (a reply by hand, or another responder that ran the same request), this
    /// one is not stored but still published, after the stored one: a waiting requester takes the first message,
    /// which is the stored reply, since each store-and-publish runs atomically and in order.
    async fn finish_batch(&self, batch: &mut Vec<Completion>) {
        let ttl = ttl_ms(self.client.config().reply_ttl);
        let mut pipe = redis::Pipeline::with_capacity(2 * batch.len() + 3);
        pipe.cmd("MULTI").ignore();
        for c in batch.iter() {
            // Sized up front: the reply is the bulk of each command, and growing the buffer would copy it again.
            let reply_key = self.keys.reply(&c.id);
            let mut set = redis::Cmd::with_capacity(6, reply_key.len() + c.reply.len() + 32);
            set.arg("SET")
                .arg(reply_key)
                .arg(&c.reply)
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            pipe.add_command(set).ignore();
            let channel = self.keys.reply_channel(&c.id);
            let mut publish = redis::Cmd::with_capacity(3, channel.len() + c.reply.len() + 8);
            publish.arg("PUBLISH").arg(channel).arg(&c.reply);
            pipe.add_command(publish).ignore();
            if c.clear_error {
                pipe.cmd("DEL").arg(self.keys.last_error(&c.id)).ignore();
            }
        }
        let cmd = pipe
            .cmd("XACK")
            .arg(self.keys.requests())
            .arg(&self.settings.group);
        for c in batch.iter() {
            cmd.arg(&c.entry_id);
        }
        cmd.ignore();
        pipe.cmd("EXEC");
        self.run_with_retries::<(Value,)>(&pipe, "answering requests")
            .await;
        for c in batch.drain(..) {
            if let AfterAnswer::Task(done) = c.after {
                let _ = done.send(());
            }
        }
    }

    /// Runs a pipeline (reloading scripts Redis forgot), retrying with backoff on connection errors until it
    /// succeeds, the visibility timeout has passed, or the grace period ends. `None` when it never went through.
    ///
    /// Retrying for as long as the visibility timeout means a reply made while Redis is away (a restart, an
    /// outage shorter than the visibility timeout) is stored once Redis is back, instead of the handler running
    /// again after a redelivery. Past the visibility timeout the entry is up for grabs anyway; it stays pending and
    /// is delivered again, and the first reply stored wins.
    async fn run_with_retries<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        what: &'static str,
    ) -> Option<T> {
        let give_up = tokio::time::Instant::now() + self.settings.visibility_timeout;
        let mut backoff = Duration::from_millis(50);
        for attempt in 1u32.. {
            let mut con = self.con.clone();
            match scripts::query_with_scripts::<T, _>(pipe, &mut con).await {
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "{what} went through after Redis came back");
                    }
                    return Some(v);
                }
                Err(err)
                    if connection::is_connection_error(&err)
                        && tokio::time::Instant::now() + backoff < give_up =>
                {
                    if attempt == 1 {
                        tracing::warn!(error = %err, "{what} failed; retrying while Redis is unreachable");
                    } else {
                        tracing::debug!(error = %err, attempt, "{what} failed again; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.abort.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(FINISH_MAX_BACKOFF);
                }
                Err(err) => {
                    tracing::error!(error = %err, attempt, "{what} failed; the entry stays pending for redelivery");
                    return None;
                }
            }
        }
        None
    }

    /// For a redelivered request: answers from the stored reply if there is one. True when answered.
    pub(crate) async fn answer_from_stored(&self, id: &str, entry_id: &str) -> bool {
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, &scripts::ANSWER_FROM_STORED)
            .arg(2)
            .arg(self.keys.reply(id))
            .arg(self.keys.requests())
            .arg(self.keys.reply_channel(id))
            .arg(&self.settings.group)
            .arg(entry_id);
        matches!(
            self.run_with_retries::<(i64,)>(&pipe, "checking for a stored reply")
                .await,
            Some((1,))
        )
    }

    /// Keeps a failed delivery's error for the dead-letter record.
    async fn remember_error(&self, id: &str, error: &str) {
        let mut con = self.con.clone();
        let ttl = ttl_ms(self.client.config().record_retention);
        let stored: redis::RedisResult<()> =
            con.pset_ex(self.keys.last_error(id), error, ttl).await;
        if let Err(err) = stored {
            tracing::warn!(%id, error = %err, "could not record the delivery error");
        }
    }

    /// The last recorded delivery error of request `id`, if any.
    pub(crate) async fn last_error(&self, id: &str) -> Option<String> {
        let mut con = self.con.clone();
        con.get(self.keys.last_error(id)).await.ok().flatten()
    }

    /// Moves an entry to the dead-letter stream, acknowledges it and tells the requester, in one script call.
    pub(crate) async fn dead_letter(
        &self,
        entry: &RawEntry,
        request: Option<&RequestEnvelope>,
        letter: DeadLetter<'_>,
    ) {
        let id = entry.request_id.as_deref().unwrap_or("");
        tracing::warn!(%id, entry_id = %entry.entry_id, reason = letter.reason, error = %letter.error, "dead-lettering");
        let reply = match letter.reply.as_ref().map(protocol::encode).transpose() {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let func_key = request.map(|r| r.func_key.as_str()).unwrap_or("");
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, &scripts::DEAD_LETTER)
            .arg(4)
            .arg(self.keys.requests())
            .arg(self.keys.dead_letters())
            .arg(self.keys.reply(id))
            .arg(self.keys.last_error(id))
            .arg(&self.settings.group)
            .arg(&entry.entry_id)
            .arg(id)
            .arg(entry.envelope.as_deref().unwrap_or(&[]))
            .arg(letter.reason)
            .arg(&letter.error)
            .arg(letter.deliveries)
            .arg(protocol::now_ms())
            .arg(&reply)
            .arg(ttl_ms(self.client.config().reply_ttl))
            .arg(self.keys.reply_channel(id))
            .arg(func_key);
        self.run_with_retries::<(String,)>(&pipe, "dead-lettering")
            .await;
    }

    /// Refreshes the claim of every entry being handled, so the reaper does not hand them to someone else.
    async fn refresh_claims(&self) {
        let ids: Vec<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(self.keys.requests())
                .arg(&self.settings.group)
                .arg(&self.settings.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID");
            let mut con = self.con.clone();
            if let Err(err) = cmd.query_async::<Value>(&mut con).await {
                tracing::warn!(error = %err, "could not refresh claims");
            }
        }
    }
}

/// Reads new entries for this consumer and hands each to a request task. Only reads as many as there are free
/// permits, so nothing read waits unclaimed in this process.
pub(crate) async fn read_loop(shared: Arc<Shared>) {
    let config = shared.client.config().clone();
    let block = shared.settings.block;
    let mut reader: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        // Read only when a permit is free, and only as many entries as there are free permits: nothing read waits
        // long in this process. Permits are not held while blocked, so the reaper can use them meanwhile.
        tokio::select! {
            // Stop wins over a free permit: a stopping responder takes no new work.
            biased;
            _ = shared.stop.cancelled() => return,
            p = shared.permits.acquire() => match p { Ok(p) => drop(p), Err(_) => return },
        }
        let count = shared
            .permits
            .available_permits()
            .clamp(1, shared.settings.batch);
        let con = match reader.as_mut() {
            Some(con) => con,
            None => {
                match connection::blocking_connection(shared.client.redis_client(), &config, block)
                    .await
                {
                    Ok(con) => reader.insert(con),
                    Err(err) => {
                        tracing::warn!(error = %err, "reader cannot connect; retrying");
                        if sleep_or_stop(&shared.stop, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let opts = StreamReadOptions::default()
            .group(&shared.settings.group, &shared.settings.consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let read: redis::RedisResult<Value> = con
            .xread_options(&[shared.keys.requests()], &[">"], &opts)
            .await;
        match read.map(RawEntry::from_read_reply) {
            Ok(Some(entries)) => {
                backoff = Duration::from_millis(50);
                for entry in entries {
                    // Taken before the next read, so the next read sees only truly free permits. The reaper may
                    // have taken some while this read blocked: an entry without one waits for it in its own
                    // tracked task (claim kept fresh, given up when the grace period ends), not here, where it
                    // would hold up the loop and a shutdown.
                    let permit = shared.permits.clone().try_acquire_owned().ok();
                    shared.start_entry(entry, permit);
                }
            }
            Ok(None) => backoff = Duration::from_millis(50),
            Err(err) if err.code() == Some("NOGROUP") => {
                tracing::warn!("consumer group or stream vanished; recreating it");
                if let Err(err) = shared.ensure_group().await {
                    tracing::warn!(error = %err, "could not recreate the group");
                    if sleep_or_stop(&shared.stop, &mut backoff).await {
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "read failed; reconnecting");
                reader = None;
                if sleep_or_stop(&shared.stop, &mut backoff).await {
                    return;
                }
            }
        }
    }
}

/// Answers finished requests in batches: whatever finished while the previous batch was on its way goes out in
/// the next one, so one request alone is answered at once and many share a transaction. Runs until the responder
/// has fully stopped (after the grace period).
pub(crate) async fn finish_loop(shared: Arc<Shared>) {
    let Some(mut rx) = shared
        .finished_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, FINISH_BATCH) => n,
            _ = shared.abort.cancelled() => return,
        };
        if received == 0 {
            return;
        }
        tokio::select! {
            _ = shared.finish_batch(&mut batch) => {}
            _ = shared.abort.cancelled() => return,
        }
    }
}

/// Refreshes running handlers' claims until the responder has fully stopped.
pub(crate) async fn keepalive_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.keepalive_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.refresh_claims().await,
            _ = shared.abort.cancelled() => return,
        }
    }
}

/// Sleeps the backoff (doubling it, up to 2 s) unless stopped first; true when stopped.
pub(crate) async fn sleep_or_stop(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let stopped = tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(*backoff) => false,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(2));
    stopped
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
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
            assert_eq!(parsed[1].request_id, None, "an empty id counts as missing");
            assert_eq!(parsed[1].envelope, None);
        }
        assert!(RawEntry::from_read_reply(Value::Nil).is_none());
    }
}
