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
//! adder of requests with generated ids ([`adder`]); all stop when the last handle to the router is dropped (a
//! batch already sent ends when Redis answers it).
//!
//! While the router is reconnecting it has no connection. By default a caller waits for the next one, up to its
//! own deadline, and an operation cut off by a broken connection is tried again on it ([`Router::ride_out`]): a
//! request rides out an outage shorter than its timeout. With `fail_fast` every caller fails at once with
//! [`Error::Unavailable`] instead.

mod adder;
mod lost;
mod reconnect;
mod sweep;
mod unsubscribe;
mod waiters;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub(crate) use adder::AddJob;
pub(crate) use waiters::Delivery;

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::connection::{Connection, PubSub, Target};
use crate::error::{Error, Result};
use crate::protocol::ServiceKeys;
use adder::Queued;
use waiters::Waiters;

/// What a command whose answer was taken by a stray subscription confirmation fails with (see
/// [`Router::out_of_step`]).
const OUT_OF_STEP: Error = Error::Unavailable {
    context: "the connection's answers were out of step after a cluster node reconnected (replacing it)",
};

/// Largest number of channels or keys sent in one command when resubscribing or unsubscribing in bulk.
const BULK_CHUNK: usize = 1000;

/// What callers are told while the router has no connection.
const RECONNECTING: Error = Error::Unavailable {
    context: "reconnecting to Redis",
};
/// What a caller is told when Redis stayed unreachable until its deadline.
const STAYED_AWAY: Error = Error::Unavailable {
    context: "Redis stayed unreachable until the deadline",
};
/// Longest pause between two attempts of an operation riding out an outage (the reconnect is what it waits for;
/// these pauses only keep a broken connection from being hammered before the reconnect loop replaces it).
const RIDE_OUT_MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The router. Cheap to share behind an `Arc`; dropping the last `Arc` stops its background tasks.
pub(crate) struct Router {
    /// Where connections go; each reconnect opens a new one through it (for Sentinel: the current primary).
    target: Target,
    config: ClientConfig,
    waiters: Arc<Waiters>,
    /// The current connection; `None` while reconnecting.
    connection: Arc<Mutex<Option<Connection>>>,
    /// Counts connections, so an old connection's farewell does not tear down its replacement.
    generation: Arc<AtomicU64>,
    /// Wakes the reconnect loop.
    reconnect: Arc<Notify>,
    /// Set when a command met a node that is no longer the primary: the connection must go even though it answers.
    wrong_role: std::sync::atomic::AtomicBool,
    /// Wakes callers waiting for a connection ([`Router::connection_until`]) once one is in place.
    connected: Notify,
    unsubscribe_tx: mpsc::UnboundedSender<String>,
    /// Channels whose subscription the server ended while they are waited on (a sharded channel's slot moved):
    /// subscribed again and their stored replies read ([`lost`]).
    lost_tx: mpsc::UnboundedSender<String>,
    /// Requests with generated ids, on their way to the adder (see [`adder`]).
    adds_tx: mpsc::UnboundedSender<Queued>,
    /// Starts a sweep of stored replies after a sign of a cluster topology change ([`sweep`]).
    sweep: Arc<Notify>,
    cancel: CancellationToken,
}

impl Router {
    /// Where the router's connections go (for connections of other parts that must follow it, e.g. a failover).
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The client's settings the router was started with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Connects and starts the router's background tasks.
    pub(crate) async fn start(target: Target, config: ClientConfig) -> Result<Arc<Self>> {
        let waiters = Arc::new(Waiters::default());
        let generation = Arc::new(AtomicU64::new(0));
        let reconnect = Arc::new(Notify::new());
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let first = match reconnect::connect(
            &target,
            &config,
            &waiters,
            &generation,
            &reconnect,
            &lost_tx,
        )
        .await
        {
            Ok(con) => Some(con),
            // Redis is away right now: start without a connection and let the reconnect loop find it, while
            // callers wait for it (up to their deadlines). Anything else (a refused password) fails here.
            Err(err) if err.is_unreachable() && !config.fail_fast => {
                tracing::warn!(error = %err, "Redis is unreachable; the reply router keeps trying");
                None
            }
            Err(err) => return Err(err),
        };
        let disconnected = first.is_none();
        let (unsubscribe_tx, unsubscribe_rx) = mpsc::unbounded_channel();
        let (adds_tx, adds_rx) = mpsc::unbounded_channel();
        let router = Arc::new(Self {
            target,
            config,
            waiters,
            connection: Arc::new(Mutex::new(first)),
            generation,
            reconnect,
            wrong_role: std::sync::atomic::AtomicBool::new(false),
            connected: Notify::new(),
            unsubscribe_tx,
            lost_tx,
            adds_tx,
            sweep: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
        });
        if router.pubsub().is_sharded() {
            tokio::spawn(sweep::sweep_loop(
                Arc::downgrade(&router),
                router.sweep.clone(),
                router.cancel.clone(),
            ));
        }
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
        tokio::spawn(lost::resubscribe_loop(
            Arc::downgrade(&router),
            lost_rx,
            router.cancel.clone(),
        ));
        tokio::spawn(adder::add_loop(
            Arc::downgrade(&router),
            adds_rx,
            router.cancel.clone(),
        ));
        if disconnected {
            router.reconnect.notify_one();
        }
        Ok(router)
    }

    /// The current connection, or [`Error::Unavailable`] while reconnecting (so callers fail fast).
    pub(crate) fn connection(&self) -> Result<Connection> {
        self.current().ok_or(RECONNECTING)
    }

    fn current(&self) -> Option<Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_connection(&self, con: Option<Connection>) {
        let connected = con.is_some();
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = con;
        if connected {
            self.connected.notify_waiters();
        }
    }

    /// The current connection, waiting for the reconnect loop to restore one until `deadline`; at once
    /// [`Error::Unavailable`] with `fail_fast`.
    pub(crate) async fn connection_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Connection> {
        loop {
            // Registered before the look, so a connection set in between still wakes this caller.
            let mut connected = std::pin::pin!(self.connected.notified());
            connected.as_mut().enable();
            if let Some(con) = self.current() {
                return Ok(con);
            }
            if self.config.fail_fast {
                return Err(RECONNECTING);
            }
            tokio::select! {
                _ = connected => {}
                _ = tokio::time::sleep_until(deadline) => return Err(STAYED_AWAY),
            }
        }
    }

    /// Runs `op` on the router's connection, again after every failure that means Redis is unreachable (see
    /// [`Error::is_unreachable`]) or that replicas did not confirm a write in time ([`Error::NotReplicated`]: after
    /// a failover the new primary's replicas may still be syncing), on the next connection, until it succeeds or `deadline` passes. The operation
    /// must be safe to repeat: one whose answer was lost may have taken effect. At the deadline the error is the
    /// last attempt's (an attempt may have gone through), or [`Error::Unavailable`] when none was sent. With
    /// `fail_fast`, one attempt.
    pub(crate) async fn ride_out<T, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::up_to(RIDE_OUT_MAX_BACKOFF);
        let mut failed: Option<Error> = None;
        for attempt in 1u32.. {
            let con = match self.connection_until(deadline).await {
                Ok(con) => con,
                Err(err) => return Err(failed.unwrap_or(err)),
            };
            match op(con).await {
                Err(err)
                    if (err.is_unreachable() || err.is_not_replicated())
                        && !self.config.fail_fast
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(attempt, error = %err, "Redis unreachable; trying again");
                    failed = Some(err);
                    let pause = backoff.next_pause();
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause))
                        .await;
                }
                other => {
                    if attempt > 1 && other.is_ok() {
                        tracing::info!(attempt, "went through after Redis came back");
                    }
                    return other;
                }
            }
        }
        Err(STAYED_AWAY)
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
    ///
    /// A node that refuses writes because it is a replica now (`READONLY`, after a failover) counts as broken too:
    /// the reconnect asks Sentinel for the new primary. The next stale-report check then must not keep the working
    /// connection to the replica, hence `wrong_role`.
    pub(crate) fn report_broken(&self, err: &redis::RedisError) {
        if crate::connection::is_wrong_role(err) {
            self.wrong_role
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.reconnect.notify_one();
        } else if crate::connection::is_connection_error(err) {
            self.reconnect.notify_one();
        }
    }

    /// Reports answers out of step on the router's connection, and has it replaced: the error to return (kind
    /// [`Unavailable`](crate::ErrorKind::Unavailable), so the operation is tried again on the next connection).
    ///
    /// Why it happens: on a cluster, when the redis crate reconnects a node (after a failover) it subscribes again
    /// to every sharded channel it tracked there with one `SSUBSCRIBE` of many channels, sent as a plain command
    /// that expects one answer (redis 1.8.1, `send_subscription_pipeline`); the server confirms each channel, and
    /// the surplus confirmations are taken as the answers of the next commands on that node's connection. Nothing
    /// on that connection can be trusted until it is replaced; the router's own resubscription (one channel
    /// group at a time, through the crate's `ssubscribe`, which expects every confirmation) has no such trap.
    pub(crate) fn out_of_step(&self) -> Error {
        tracing::warn!(
            "a subscription confirmation came where a command's answer belonged; reconnecting"
        );
        // As for a node of the wrong role: replaced even though it answers PING.
        self.wrong_role
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.reconnect.notify_one();
        OUT_OF_STEP
    }

    /// Notes a sign of a cluster topology change: stored replies are read again for a while ([`sweep`]).
    pub(super) fn topology_changed(&self) {
        if self.pubsub().is_sharded() {
            self.sweep.notify_one();
        }
    }

    /// Which pub/sub commands carry replies (sharded ones on a cluster).
    pub(crate) fn pubsub(&self) -> PubSub {
        self.target.pubsub()
    }

    /// The client's durability setting (whether adds wait for replicas).
    pub(crate) fn durability(&self) -> crate::Durability {
        self.config.durability
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
