//! The reply router: one RESP3 connection per [`Client`](crate::Client) that carries every requester's commands
//! and the subscriptions of every request in flight, and hands each reply to exactly the caller waiting for it.
//!
//! How a reply finds its caller: before a request is added, the caller registers a waiter under the request's
//! reply channel and subscribes to that channel in the same pipeline that adds the request (Redis runs one
//! connection's commands in order, so the subscription is live before any responder can see the request). The
//! connection's push callback looks the channel up and completes the waiter. When the connection drops, a
//! background task reconnects with backoff, subscribes every channel still waited on, and reads their stored
//! replies, in case a reply was published while nobody listened. A waiter whose request Redis accepted but whose
//! request record is gone after the reconnect (Redis restarted without persistence, or lost its last writes) is
//! told at once that its request was lost, instead of waiting for its timeout.
//!
//! While the router is reconnecting it has no connection, and every caller fails at once with
//! [`Error::Unavailable`]: nothing waits for Redis to come back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::adder::{self, AddJob, Queued};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::protocol::ServiceKeys;

/// Largest number of channels or keys sent in one command when resubscribing or unsubscribing in bulk.
const BULK_CHUNK: usize = 1000;
/// Backoff between reconnect attempts grows up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a waiting caller is handed.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The reply envelope, as published or stored.
    Reply(Vec<u8>),
    /// Redis accepted the request, but after a reconnect neither its record nor a reply exists: Redis lost it.
    Lost,
}

/// A caller waiting for the reply published on one channel.
struct Waiter {
    /// The keys of the request's service, from which the reconnect derives its reply and record keys.
    keys: Arc<ServiceKeys>,
    /// Set once Redis has accepted the request: only then does a missing record mean the request was lost.
    accepted: bool,
    /// Set while the adder has the request (see [`crate::adder`]): its `SUBSCRIBE` may not have reached Redis yet.
    adding: bool,
    tx: oneshot::Sender<Delivery>,
}

/// Reply channel → waiting caller. Keys are long (the channel name) and hashed several times per request, so a
/// fast seeded hasher is used instead of SipHash.
type WaiterMap = HashMap<String, Waiter, foldhash::fast::RandomState>;

/// The map from reply channel to waiting caller, shared with the push callback.
#[derive(Default)]
struct Waiters {
    map: Mutex<WaiterMap>,
    /// Channels released by callers that gave up while the adder had their request. They are unsubscribed only
    /// once the adder's batch is answered: an `UNSUBSCRIBE` sent earlier could reach Redis before the batch's
    /// `SUBSCRIBE` and leave the channel subscribed for good. Locked after `map`, never before.
    orphans: Mutex<HashSet<String, foldhash::fast::RandomState>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaiterMap> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself stays consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn orphans(&self) -> std::sync::MutexGuard<'_, HashSet<String, foldhash::fast::RandomState>> {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes the waiter of `channel` with `delivery`; false when nobody waits (already answered or gone).
    fn complete(&self, channel: &str, delivery: Delivery) -> bool {
        let waiter = self.lock().remove(channel);
        match waiter {
            Some(w) => w.tx.send(delivery).is_ok(),
            None => false,
        }
    }
}

/// The router. Cheap to share behind an `Arc`; dropping the last `Arc` stops its background tasks.
pub(crate) struct Router {
    client: redis::Client,
    config: ClientConfig,
    waiters: Arc<Waiters>,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    generation: Arc<AtomicU64>,
    reconnect: Arc<Notify>,
    unsubscribe_tx: mpsc::UnboundedSender<String>,
    /// Requests with generated ids, on their way to the adder (see [`adder`]).
    adds_tx: mpsc::UnboundedSender<Queued>,
    cancel: CancellationToken,
}

impl Router {
    /// Connects and starts the router's background tasks.
    pub(crate) async fn start(client: redis::Client, config: ClientConfig) -> Result<Arc<Self>> {
        let waiters = Arc::new(Waiters::default());
        let generation = Arc::new(AtomicU64::new(0));
        let reconnect = Arc::new(Notify::new());
        let first = connect(&client, &config, &waiters, &generation, &reconnect).await?;
        let (unsubscribe_tx, unsubscribe_rx) = mpsc::unbounded_channel();
        let (adds_tx, adds_rx) = mpsc::unbounded_channel();
        let router = Arc::new(Self {
            client,
            config,
            waiters,
            connection: Arc::new(Mutex::new(Some(first))),
            generation,
            reconnect,
            unsubscribe_tx,
            adds_tx,
            cancel: CancellationToken::new(),
        });
        tokio::spawn(reconnect_loop(
            Arc::downgrade(&router),
            router.cancel.clone(),
        ));
        tokio::spawn(unsubscribe_loop(
            router.connection.clone(),
            router.waiters.clone(),
            unsubscribe_rx,
            router.cancel.clone(),
        ));
        tokio::spawn(adder::add_loop(
            Arc::downgrade(&router),
            adds_rx,
            router.cancel.clone(),
        ));
        Ok(router)
    }

    /// The current connection, or [`Error::Unavailable`] while reconnecting (so callers fail fast).
    pub(crate) fn connection(&self) -> Result<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::Unavailable {
                context: "reconnecting to Redis",
            })
    }

    /// Subscribes to a request's reply channel and adds the request (record and stream entry), batched with other
    /// callers' requests. Returns the stream entry id. Fails at once with [`Error::Unavailable`] while reconnecting.
    /// The waiter must be registered first.
    pub(crate) async fn add(&self, job: AddJob) -> Result<String> {
        const STOPPED: Error = Error::Unavailable {
            context: "the reply router has stopped",
        };
        // Checked here too, so a caller does not even queue while the router is reconnecting.
        if self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            self.added(&job.channel, false, false);
            return Err(Error::Unavailable {
                context: "reconnecting to Redis",
            });
        }
        let (done, outcome) = oneshot::channel();
        if let Err(mpsc::error::SendError(queued)) = self.adds_tx.send(Queued { job, done }) {
            self.added(&queued.job.channel, false, false);
            return Err(STOPPED);
        }
        outcome.await.unwrap_or(Err(STOPPED))
    }

    /// Reports a connection failure seen by a caller, so the router reconnects without waiting for the driver.
    pub(crate) fn report_broken(&self, err: &redis::RedisError) {
        if crate::connection::is_connection_error(err) {
            self.reconnect.notify_one();
        }
    }

    /// Registers a waiter for `channel`; `adding` when its request goes to the adder. Returns `None` when one is
    /// already registered (the same id in flight in this process).
    pub(crate) fn register(
        &self,
        channel: &str,
        keys: Arc<ServiceKeys>,
        adding: bool,
    ) -> Option<oneshot::Receiver<Delivery>> {
        let mut map = self.waiters.lock();
        if map.contains_key(channel) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        map.insert(
            channel.to_owned(),
            Waiter {
                keys,
                accepted: false,
                adding,
                tx,
            },
        );
        Some(rx)
    }

    /// Marks the waiter of `channel` as accepted by Redis (its request record and stream entry exist).
    pub(crate) fn accepted(&self, channel: &str) {
        if let Some(w) = self.waiters.lock().get_mut(channel) {
            w.accepted = true;
        }
    }

    /// Forgets the waiter of `channel` (if still there) and unsubscribes from it, batched with others. While the
    /// adder has the request, the unsubscribe waits for the adder (see [`Router::added`]).
    pub(crate) fn release(&self, channel: String) {
        let mut map = self.waiters.lock();
        if let Some(waiter) = map.remove(&channel)
            && waiter.adding
        {
            self.waiters.orphans().insert(channel);
            return;
        }
        drop(map);
        self.unsubscribe(channel);
    }

    /// Called by the adder when it is done with a request: `sent` when its `SUBSCRIBE` went out (and, the batch
    /// being answered or failed, has been run or never will be), `accepted` when Redis added the request (as
    /// [`Router::accepted`]). A channel whose caller gave up meanwhile is unsubscribed now, after its `SUBSCRIBE`; a
    /// waiting caller's channel is from now on released as usual.
    pub(crate) fn added(&self, channel: &str, sent: bool, accepted: bool) {
        let mut map = self.waiters.lock();
        if let Some(waiter) = map.get_mut(channel) {
            waiter.adding = false;
            waiter.accepted = accepted;
            return;
        }
        let orphan = self.waiters.orphans().remove(channel);
        drop(map);
        if orphan && sent {
            self.unsubscribe(channel.to_owned());
        }
    }

    fn unsubscribe(&self, channel: String) {
        // The loop only ends when the router is dropped, and then there is nothing left to unsubscribe.
        let _ = self.unsubscribe_tx.send(channel);
    }

    /// Number of callers currently waiting (for tests and stats).
    pub(crate) fn in_flight(&self) -> usize {
        self.waiters.lock().len()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Opens a RESP3 connection whose push callback routes replies to waiters and reports disconnection.
async fn connect(
    client: &redis::Client,
    config: &ClientConfig,
    waiters: &Arc<Waiters>,
    generation: &Arc<AtomicU64>,
    reconnect: &Arc<Notify>,
) -> Result<MultiplexedConnection> {
    let this_generation = generation.fetch_add(1, Ordering::SeqCst) + 1;
    let (waiters, generation, reconnect) = (waiters.clone(), generation.clone(), reconnect.clone());
    let on_push = move |push: PushInfo| -> std::result::Result<(), std::convert::Infallible> {
        match push.kind {
            PushKind::Message => route_message(&waiters, push.data),
            // An old connection's farewell must not tear down its replacement.
            PushKind::Disconnection if generation.load(Ordering::SeqCst) == this_generation => {
                reconnect.notify_one();
            }
            _ => {}
        }
        Ok(())
    };
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_push_sender(on_push);
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(Error::redis("connecting the reply router"))
}

/// Hands a `message` push (`[channel, payload]`) to its waiter. Runs on the connection's driver: must not block.
fn route_message(waiters: &Waiters, data: Vec<Value>) {
    let mut parts = data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (parts.next(), parts.next())
    else {
        tracing::warn!("ignoring a pub/sub message of unexpected shape");
        return;
    };
    let Ok(channel) = std::str::from_utf8(&channel) else {
        return;
    };
    if !waiters.complete(channel, Delivery::Reply(payload)) {
        tracing::debug!(channel, "reply for a caller that is no longer waiting");
    }
}

/// Reconnects whenever the connection is reported broken, then restores every waiter's subscription and
/// delivers stored replies that may have been published while disconnected.
async fn reconnect_loop(router: std::sync::Weak<Router>, cancel: CancellationToken) {
    loop {
        let notified = match router.upgrade() {
            Some(r) => r.reconnect.clone(),
            None => return,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notified.notified() => {}
        }
        let Some(r) = router.upgrade() else { return };
        *r.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
        tracing::warn!("reply router lost its Redis connection; reconnecting");
        let mut backoff = Duration::from_millis(50);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match connect(
                &r.client,
                &r.config,
                &r.waiters,
                &r.generation,
                &r.reconnect,
            )
            .await
            {
                Ok(mut con) => {
                    match resubscribe(&r.waiters, &mut con, snapshot_all(&r.waiters)).await {
                        Ok(restored) => {
                            *r.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(con);
                            tracing::info!("reply router reconnected");
                            // Callers released while the connection was being restored (those told that Redis lost
                            // their request, for one) were unsubscribed from nothing: there was no connection yet.
                            let stale: Vec<String> = {
                                let map = r.waiters.lock();
                                restored
                                    .into_iter()
                                    .filter(|channel| !map.contains_key(channel))
                                    .collect()
                            };
                            for channel in stale {
                                r.unsubscribe(channel);
                            }
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "restoring subscriptions failed; retrying")
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "reconnect attempt failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// What [`resubscribe`] needs of one waiter, taken under the lock.
struct Snapshot {
    channel: String,
    reply_key: String,
    record_key: String,
    accepted: bool,
}

impl Snapshot {
    fn of(channel: &str, waiter: &Waiter) -> Option<Self> {
        let id = waiter.keys.id_of_reply_channel(channel)?;
        Some(Self {
            channel: channel.to_owned(),
            reply_key: waiter.keys.reply(id),
            record_key: waiter.keys.record(id),
            accepted: waiter.accepted,
        })
    }
}

/// Every waiter, as a reconnect restores them.
fn snapshot_all(waiters: &Waiters) -> Vec<Snapshot> {
    waiters
        .lock()
        .iter()
        .filter_map(|(channel, w)| Snapshot::of(channel, w))
        .collect()
}

/// The waiters of those of `channels` that are waited on.
fn snapshot_of(waiters: &Waiters, channels: &[String]) -> Vec<Snapshot> {
    let map = waiters.lock();
    channels
        .iter()
        .filter_map(|channel| Snapshot::of(channel, map.get(channel)?))
        .collect()
}

/// Subscribes the channels of `pending`, then reads their stored replies and completes the waiters whose reply was
/// published while no one was subscribed. A waiter whose request was accepted but whose record is gone (and that
/// has no reply) learns that Redis lost its request. Returns the channels subscribed.
async fn resubscribe(
    waiters: &Waiters,
    con: &mut MultiplexedConnection,
    pending: Vec<Snapshot>,
) -> redis::RedisResult<Vec<String>> {
    for chunk in pending.chunks(BULK_CHUNK) {
        let channels: Vec<&str> = chunk.iter().map(|w| w.channel.as_str()).collect();
        con.subscribe(&channels).await?;
    }
    let mut lost = 0usize;
    for chunk in pending.chunks(BULK_CHUNK) {
        let mut pipe = redis::pipe();
        for w in chunk {
            pipe.get(&w.reply_key).exists(&w.record_key);
        }
        // Subscribed first, read second: a reply published in between arrives as a message, one published before
        // is found here; `complete` hands each waiter at most one of them.
        let found: Vec<Value> = pipe.query_async(con).await?;
        let mut found = found.into_iter();
        for w in chunk {
            let (Some(reply), Some(exists)) = (found.next(), found.next()) else {
                break;
            };
            let reply: Option<Vec<u8>> = redis::from_redis_value(reply)?;
            let record_exists: bool = redis::from_redis_value(exists)?;
            if let Some(reply) = reply {
                waiters.complete(&w.channel, Delivery::Reply(reply));
            } else if w.accepted && !record_exists && waiters.complete(&w.channel, Delivery::Lost) {
                lost += 1;
            }
        }
    }
    if lost > 0 {
        tracing::error!(
            lost,
            "requests Redis had accepted are gone from it (restarted without persistence, or it \
             lost its last writes); their callers were told"
        );
    }
    Ok(pending.into_iter().map(|w| w.channel).collect())
}

/// Sends UNSUBSCRIBE for released channels, many per command.
///
/// A channel can be waited on again before its `UNSUBSCRIBE` goes out: a caller reusing an id (after its record
/// expired, or after Redis lost the request) registers and subscribes while the old caller's `UNSUBSCRIBE` is still
/// queued here, and that `UNSUBSCRIBE` then ends the new caller's subscription. So once an `UNSUBSCRIBE` is done,
/// the channels of it that are waited on again are subscribed again and their stored replies read, as after a
/// reconnect ([`resubscribe`]). Everything this loop sends goes out in order, so a caller released meanwhile is
/// unsubscribed after that `SUBSCRIBE`, in a later round.
async fn unsubscribe_loop(
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    waiters: Arc<Waiters>,
    mut rx: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BULK_CHUNK);
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            n = rx.recv_many(&mut batch, BULK_CHUNK) => n,
        };
        if received == 0 {
            return;
        }
        let con = connection.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Without a connection there is nothing to unsubscribe: a reconnect subscribes only live waiters.
        if let Some(mut con) = con {
            match con.unsubscribe(&batch).await {
                Ok(()) => {
                    // Nothing to do, and no round trip, in the usual case.
                    let waited = snapshot_of(&waiters, &batch);
                    if !waited.is_empty() {
                        tracing::debug!(
                            channels = waited.len(),
                            "channels waited on again after their unsubscribe; subscribing again"
                        );
                        if let Err(err) = resubscribe(&waiters, &mut con, waited).await {
                            tracing::debug!(error = %err, "resubscribing reused channels failed");
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "unsubscribe failed"),
            }
        }
        batch.clear();
    }
}
