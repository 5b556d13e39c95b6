//! `request(id, func_key, params, timeout)` and its forms: subscribe to the reply channel, then add the request
//! (record and stream entry, atomically) in the same pipeline, then wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{PendingReply, Requester, new_request_id};
use crate::config::ttl_ms;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::{self, FORMAT_VERSION, RequestEnvelope, ServiceKeys};
use redis::Value;

use crate::router::{AddJob, Router};
use crate::scripts;
use crate::trace::{RequestOptions, TraceContext};
use tracing::Instrument;

impl Requester {
    /// Sends a request with the given id and waits for its reply, at most `timeout`.
    ///
    /// The request is stored durably before this waits: if no responder answers in time, the error is
    /// [`Error::Timeout`], and the request may still be handled later (its reply is then stored under the id).
    ///
    /// # Errors
    /// The errors of [`Requester::send`], then those of [`PendingReply::wait`]:
    /// - [`Error::InvalidArgument`] for an empty `id`, an unusable `func_key` (empty, control characters, over
    ///   1024 bytes) or a zero `timeout`, [`Error::Encode`] when `params` cannot be encoded,
    ///   [`Error::PayloadTooLarge`] when the encoded request is over the payload limit: nothing was sent;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was sent, retry later;
    /// - [`Error::DuplicateId`] when a request with this id is in flight or its record is still kept;
    /// - [`Error::Redis`] when the client's first connection or the command adding the request fails;
    /// - [`Error::Timeout`] naming the id, [`Error::Lost`] when Redis lost the accepted request;
    /// - the responder's answer: [`Error::Handler`], [`Error::UnknownFunction`], [`Error::DeadLettered`],
    ///   [`Error::Expired`], [`Error::Malformed`];
    /// - [`Error::Decode`] when the reply, or its data as `R`, does not decode.
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
    ///
    /// # Errors
    /// The errors of [`Requester::submit`], then those of [`PendingReply::wait`]: as [`Requester::request`], except
    /// that a generated id is never empty and never a duplicate (no [`Error::DuplicateId`]).
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
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] for a zero `timeout`, [`Error::Encode`] when `params` cannot be encoded,
    ///   [`Error::PayloadTooLarge`] when the encoded request is over the payload limit: nothing was sent;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was sent, retry later;
    /// - [`Error::Redis`] when the client's first connection fails (nothing was sent) or the transaction adding the
    ///   request fails. After a broken connection the request may have been added all the same; submitting again
    ///   makes a new id, so its handler may then run twice.
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
        self.add(
            &id,
            func_key,
            params,
            timeout,
            IdOrigin::Generated,
            None,
            None,
        )
        .await
    }

    /// Adds the request and returns as soon as Redis has accepted it, with a handle to await the reply later.
    ///
    /// When this returns `Ok`, the request is stored (record and stream entry); the caller can do other work and
    /// call [`PendingReply::wait`] later. A reply that arrives meanwhile is kept for the handle.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] for an empty `id`, an unusable `func_key` (empty, control characters, over
    ///   1024 bytes) or a zero `timeout`, [`Error::Encode`] when `params` cannot be encoded,
    ///   [`Error::PayloadTooLarge`] when the encoded request is over the payload limit: nothing was sent;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was sent, retry later;
    /// - [`Error::DuplicateId`] when a request with this id is in flight (in this process or another) or was made
    ///   within its record's retention period: nothing was added;
    /// - [`Error::Redis`] when the client's first connection fails (nothing was sent) or the command adding the
    ///   request fails. After a broken connection the request may have been added all the same; sending it again
    ///   with the same id then tells: [`Error::DuplicateId`] if it was.
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
        self.add(id, func_key, params, timeout, IdOrigin::Caller, None, None)
            .await
    }

    /// [`Requester::send`] (with `id`) or [`Requester::submit`] (with `None`: an id made by redcall), with
    /// per-request [`RequestOptions`]: the caller's trace context, so the request joins the caller's trace, and a
    /// delay (as [`Requester::send_in`]).
    ///
    /// # Errors
    /// Those of [`Requester::send`], or of [`Requester::submit`] for `id = None`.
    pub async fn send_with<P>(
        &self,
        id: Option<&str>,
        func_key: &str,
        params: &P,
        timeout: Duration,
        options: &RequestOptions,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        let trace = options.trace.as_ref();
        let delay = options.delay.map(crate::config::clamp);
        match id {
            Some(id) => {
                self.add(
                    id,
                    func_key,
                    params,
                    timeout,
                    IdOrigin::Caller,
                    trace,
                    delay,
                )
                .await
            }
            None => {
                let id = new_request_id();
                // A delayed request is scheduled by the add script; the router's batching adder queues at once.
                let origin = if delay.is_some() {
                    IdOrigin::Caller
                } else {
                    IdOrigin::Generated
                };
                self.add(&id, func_key, params, timeout, origin, trace, delay)
                    .await
            }
        }
    }

    /// Adds a request (see [`Requester::add_uncounted`]); a failure is counted in the requester's metrics. With a
    /// `delay` (a caller's id only), the request is scheduled instead of queued (see [`super::delayed`]).
    // The request's parts, then how to add it (id origin, trace parent, delay): all read once, here.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn add<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        timeout: Duration,
        origin: IdOrigin,
        parent: Option<&TraceContext>,
        delay: Option<Duration>,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        let started = Instant::now();
        let (span, trace) = crate::trace::send_span(&self.service, func_key, id, parent);
        let added = self
            .add_uncounted(id, func_key, params, timeout, origin, trace, delay)
            .instrument(span.clone())
            .await;
        if let Err(err) = &added {
            crate::trace::record_outcome(&span, Some(err.kind().as_str()));
            self.metrics
                .function(func_key)
                .record(Err(err), started.elapsed());
        }
        added.map(|mut pending| {
            pending.span = span;
            pending
        })
    }

    /// Adds a request: subscribe to its reply channel, then store record and stream entry atomically, in one
    /// pipeline.
    #[allow(clippy::too_many_arguments)]
    async fn add_uncounted<P>(
        &self,
        id: &str,
        func_key: &str,
        params: &P,
        timeout: Duration,
        origin: IdOrigin,
        trace: TraceContext,
        delay: Option<Duration>,
    ) -> Result<PendingReply>
    where
        P: Serialize + ?Sized,
    {
        self.check(id)?;
        crate::names::check_func_key(func_key).map_err(Error::InvalidArgument)?;
        let timeout = crate::config::request_timeout(id, timeout)?;
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
            trace: Some(trace),
        };
        let bytes = Arc::new(protocol::encode(&envelope)?);
        config.check_payload("request", bytes.len())?;

        let router = self.client.router().await?;
        self.check_partitions(&router).await?;
        let keys = self.keys_of(id).clone();
        let channel = keys.reply_channel(id);
        // The adder's batches mix services, which a cluster places on different slots: there, every request goes
        // through the script, one slot per pipeline.
        let batched = matches!(origin, IdOrigin::Generated) && !router.pubsub().is_sharded();
        let rx = router
            .register(&channel, keys.clone(), batched)
            .ok_or_else(|| Error::DuplicateId { id: id.to_owned() })?;
        // From here on, the guard releases the waiter and its subscription on every early return.
        let pending = PendingReply {
            id: id.to_owned(),
            channel: Some(channel),
            keys: keys.clone(),
            rx: Some(rx),
            deadline: started + timeout,
            timeout,
            router: router.clone(),
            metrics: self.metrics.function(func_key),
            span: tracing::Span::none(),
        };

        // A delayed request's record must outlive its place in the schedule (a delay may be longer than the timeout):
        // expired sooner, its id could be taken by another request before it is promoted, which would run twice.
        let lifetime = timeout.max(delay.unwrap_or(Duration::ZERO));
        let record_ttl = ttl_ms(crate::config::add(lifetime, config.record_retention));
        let add = Add {
            keys: &keys,
            id,
            channel: pending.channel(),
            envelope: bytes.as_slice(),
            record_ttl,
            delay,
        };
        // A generated id cannot collide: its first attempt goes to the router's adder, which subscribes and adds
        // many requests per transaction, and marks the waiter accepted. A caller's id may exist already: the
        // script refuses it, and clears what an expired namesake left.
        let first = if batched {
            Some(
                router
                    .add(AddJob {
                        keys: keys.clone(),
                        id: id.to_owned(),
                        channel: pending.channel().to_owned(),
                        record_key: keys.record(id),
                        envelope: bytes.clone(),
                        record_ttl_ms: record_ttl,
                    })
                    .await,
            )
        } else {
            None
        };
        let entry = match first {
            Some(Ok(entry)) => Some(entry),
            // Not confirmed by enough replicas in time (replicated durability): the request is in Redis, and trying
            // again under its id (the script takes it as added) waits for the replicas once more, until the deadline.
            Some(Err(err))
                if !(err.is_unreachable() || err.is_not_replicated()) || config.fail_fast =>
            {
                return Err(err);
            }
            // Every other attempt goes through the script, also for a generated id whose batch may or may not have
            // gone through: the script takes a record holding this very envelope as this request, added once.
            _ => {
                let deadline = tokio::time::Instant::from_std(pending.deadline);
                router
                    .ride_out(deadline, |con| self.add_by_script(&router, con, &add))
                    .await?
            }
        };
        match entry {
            Some(entry_id) => {
                tracing::debug!(id, service = %self.service, func = func_key, entry_id, "request added");
                Ok(pending)
            }
            None => Err(Error::DuplicateId { id: id.to_owned() }),
        }
    }
}

/// One request to add by the `ADD_REQUEST` script.
struct Add<'a> {
    /// The keys of the request's partition.
    keys: &'a ServiceKeys,
    id: &'a str,
    channel: &'a str,
    envelope: &'a [u8],
    record_ttl: u64,
    /// For a delayed request: `ADD_DELAYED` with this delay instead.
    delay: Option<Duration>,
}

impl Requester {
    /// One attempt to add a request by the `ADD_REQUEST` script: `SUBSCRIBE` and the script go out as one pipeline
    /// on one connection, so Redis runs them in order and the subscription is live before any responder can read
    /// the request. `None` when the id exists (another request's).
    async fn add_by_script(
        &self,
        router: &Router,
        mut con: Connection,
        add: &Add<'_>,
    ) -> Result<Option<String>> {
        let mut pipe = redis::pipe();
        pipe.cmd(router.pubsub().subscribe())
            .arg(add.channel)
            .ignore();
        match add.delay {
            None => scripts::evalsha(&mut pipe, &scripts::ADD_REQUEST)
                .arg(5)
                .arg(add.keys.record(add.id))
                .arg(add.keys.requests()),
            Some(_) => scripts::evalsha(&mut pipe, &scripts::ADD_DELAYED)
                .arg(5)
                .arg(add.keys.record(add.id))
                .arg(add.keys.delayed()),
        }
        .arg(add.keys.reply(add.id))
        .arg(add.keys.last_error(add.id))
        .arg(add.keys.progress(add.id))
        .arg(add.id)
        .arg(add.envelope)
        .arg(add.record_ttl);
        if let Some(delay) = add.delay {
            pipe.arg(delay.as_millis() as u64);
        }
        let durability = router.durability();
        let waits = durability.append_wait(&mut pipe);
        let answer: Vec<Value> = scripts::query_with_scripts(&pipe, &mut con)
            .await
            .inspect_err(|e| router.report_broken(e))
            .map_err(Error::redis("adding the request"))?;
        if answer.iter().any(|v| matches!(v, Value::Push { .. })) {
            // A subscription confirmation where the script's answer belongs: this connection's answers are out of
            // step (see `Router::out_of_step`). The add is safe to repeat, on the next connection.
            return Err(router.out_of_step());
        }
        let mut answer = answer.into_iter();
        let entry: Option<String> = answer
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|e| Error::redis("adding the request")(e.into()))?
            .flatten();
        if entry.is_some() {
            router.accepted(add.channel);
            if waits {
                // `WAIT`'s answer: the replicas that have this connection's writes so far, this add included.
                let confirmed: i64 = answer
                    .next()
                    .map(redis::from_redis_value)
                    .transpose()
                    .map_err(|e| Error::redis("waiting for replicas")(e.into()))?
                    .unwrap_or(0);
                durability.check(add.id, "added", confirmed)?;
            }
        }
        Ok(entry)
    }
}

/// Where a request id came from, which decides how the request is added.
#[derive(Clone, Copy)]
pub(super) enum IdOrigin {
    /// Given by the caller: may collide with an existing request.
    Caller,
    /// Made by redcall (UUID v7): unique.
    Generated,
}
