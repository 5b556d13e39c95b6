//! The reply router: one RESP3 connection per [`Client`](crate::Client) that carries every requester's commands
//! and the subscriptions of every request in flight, and hands each reply to exactly the caller waiting for it.
//!
//! How a reply finds its caller: before a request is added, the caller registers a waiter under the request's
//! reply channel ([`waiters`]) and subscribes to that channel in the same pipeline that adds the request (Redis runs
//! one connection's commands in order, so the subscription is live before any responder can see the request).
//! The connection's push callback looks the channel up and completes the waiter. When the connection drops, a
//! background task reconnects with backoff, subscribes every channel still waited on, and reads their stored
//! replies, in case a reply was published while nobody listened ([`reconnect`]). A waiter whose request Redis
//! accepted but whose request record is gone after the reconnect (Redis restarted without persistence, or lost its
//! last writes) is told at once that its request was lost, instead of waiting for its timeout.
//!
//! The router's tasks: the reconnect loop ([`reconnect`]), the batched unsubscribe ([`unsubscribe`]) and the
//! adder of requests with generated ids ([`adder`]); all stop when the last handle to the router is dropped.
//!
//! While the router is reconnecting it has no connection, and every caller fails at once with
//! [`Error::Unavailable`]: nothing waits for Redis to come back.

mod adder;
mod reconnect;
mod unsubscribe;
mod waiters;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub(crate) use adder::AddJob;
pub(crate) use waiters::Delivery;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::protocol::ServiceKeys;
use adder::Queued;
use waiters::Waiters;

/// Largest number of channels or keys sent in one command when resubscribing or unsubscribing in bulk.
const BULK_CHUNK: usize = 1000;

/// What callers are told while the router has no connection.
const RECONNECTING: Error = Error::Unavailable {
    context: "reconnecting to Redis",
};

/// The router. Cheap to share behind an `Arc`; dropping the last `Arc` stops its background tasks.
pub(crate) struct Router {
    client: redis::Client,
    config: ClientConfig,
    waiters: Arc<Waiters>,
    /// The current connection; `None` while reconnecting.
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    /// Counts connections, so an old connection's farewell does not tear down its replacement.
    generation: Arc<AtomicU64>,
    /// Wakes the reconnect loop.
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
        let first = reconnect::connect(&client, &config, &waiters, &generation, &reconnect).await?;
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
        tokio::spawn(reconnect::reconnect_loop(
            Arc::downgrade(&router),
            router.cancel.clone(),
        ));
        tokio::spawn(unsubscribe::unsubscribe_loop(
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
        self.current().ok_or(RECONNECTING)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_connection(&self, con: Option<MultiplexedConnection>) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = con;
    }

    /// Subscribes to a request's reply channel and adds the request (record and stream entry), batched with other
    /// callers' requests. Returns the stream entry id. Fails at once with [`Error::Unavailable`] while reconnecting.
    /// The waiter must be registered first.
    pub(crate) async fn add(&self, job: AddJob) -> Result<String> {
        const STOPPED: Error = Error::Unavailable {
            context: "the reply router has stopped",
        };
        // Checked here too, so a caller does not even queue while the router is reconnecting.
        if self.current().is_none() {
            self.added(&job.channel, false, false);
            return Err(RECONNECTING);
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
        self.waiters.register(channel, keys, adding)
    }

    /// Marks the waiter of `channel` as accepted by Redis (its request record and stream entry exist).
    pub(crate) fn accepted(&self, channel: &str) {
        self.waiters.accept(channel);
    }

    /// Forgets the waiter of `channel` (if still there) and unsubscribes from it, batched with others. While the
    /// adder has the request, the unsubscribe waits for the adder (see [`Router::added`]).
    pub(crate) fn release(&self, channel: String) {
        if self.waiters.release(&channel) {
            self.unsubscribe(channel);
        }
    }

    /// Called by the adder when it is done with a request: `sent` when its `SUBSCRIBE` went out (and, the batch
    /// being answered or failed, has been run or never will be), `accepted` when Redis added the request (as
    /// [`Router::accepted`]). A channel whose caller gave up meanwhile is unsubscribed now, after its `SUBSCRIBE`; a
    /// waiting caller's channel is from now on released as usual.
    fn added(&self, channel: &str, sent: bool, accepted: bool) {
        if self.waiters.added(channel, sent, accepted) {
            self.unsubscribe(channel.to_owned());
        }
    }

    fn unsubscribe(&self, channel: String) {
        // The loop only ends when the router is dropped, and then there is nothing left to unsubscribe.
        let _ = self.unsubscribe_tx.send(channel);
    }

    /// Number of callers currently waiting (for tests and stats).
    pub(crate) fn in_flight(&self) -> usize {
        self.waiters.len()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
