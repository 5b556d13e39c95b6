//! The responding side: read requests from the service's consumer group, run the handler for each function key
//! with bounded concurrency, and answer (store reply, publish, acknowledge) in one atomic step after the handler
//! finished.
//!
//! A running responder is five kinds of task owned by a [`Responder`] handle: the reader ([`reader`]: blocking
//! `XREADGROUP` on its own connection), the request tasks themselves ([`dispatch`]), the finisher that answers and
//! acknowledges them in batches ([`ack`]), the keepalive ([`keepalive`]: refreshes the claim of entries being
//! worked on) and the reaper ([`reaper`]: claims entries left idle by dead consumers). They share one [`state`].

mod ack;
mod cancel;
mod dead_letter;
mod delayed;
mod dispatch;
mod handler;
mod heartbeat;
mod history;
pub(crate) mod in_handler;
mod keepalive;
mod progress;
mod reader;
pub(crate) mod reaper;
mod retry;
mod settings;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::task::TaskTracker;

pub use handler::{HandlerError, RequestContext};
pub use retry::RetryPolicy;
pub use settings::ResponderSettings;

use crate::client::Client;
use crate::error::Result;
use handler::ErasedHandler;
use state::Shared;

/// Longest pause between two attempts of [`ResponderBuilder::start_retrying`].
const START_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Configures and starts a responder. Made by [`Client::responder`].
pub struct ResponderBuilder {
    client: Client,
    service: String,
    settings: ResponderSettings,
    handlers: HashMap<String, ErasedHandler>,
}

impl std::fmt::Debug for ResponderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut functions: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        functions.sort_unstable();
        f.debug_struct("ResponderBuilder")
            .field("service", &self.service)
            .field("settings", &self.settings)
            .field("functions", &functions)
            .finish_non_exhaustive()
    }
}

impl ResponderBuilder {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        Self {
            client,
            service: service.to_owned(),
            settings: ResponderSettings::default(),
            handlers: HashMap::new(),
        }
    }

    /// Registers `handler` for `func_key`: an async function taking the request context and the params decoded
    /// into `P`, returning `R` (sent back) or a [`HandlerError`]. Registering `func_key` again replaces its handler.
    ///
    /// ```no_run
    /// # async fn demo(client: redcall::Client) -> redcall::Result<()> {
    /// use redcall::{HandlerError, RequestContext};
    /// let responder = client
    ///     .responder("orders")
    ///     .handler("double", |_ctx: RequestContext, n: i64| async move { Ok::<_, HandlerError>(n * 2) })
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn handler<P, R, F, Fut>(mut self, func_key: &str, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(RequestContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, HandlerError>> + Send + 'static,
    {
        self.handlers
            .insert(func_key.to_owned(), handler::erase(handler));
        self
    }

    /// Replaces all settings at once (for settings built elsewhere, say from a config file); setters called after it
    /// change single fields of them.
    pub fn settings(mut self, settings: ResponderSettings) -> Self {
        self.settings = settings;
        self
    }

    /// How long to wait before delivering a request again after its handler asked for a retry or panicked, or
    /// Redis refused its answer (default: 100 ms, doubling, at most 10 s; see [`RetryPolicy`]).
    pub fn retry_backoff(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// A retry policy for the requests to `func_key` alone, replacing [`ResponderBuilder::retry_backoff`]'s for them.
    pub fn retry_backoff_for(mut self, func_key: &str, policy: RetryPolicy) -> Self {
        self.settings.retry_for.insert(func_key.to_owned(), policy);
        self
    }

    /// Consumer group name (default `workers`). Responders of one service normally share one group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.settings.group = group.into();
        self
    }

    /// This responder's consumer name (default: host name, process id and a random suffix).
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.settings.consumer = consumer.into();
        self
    }

    /// Most requests handled at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.settings.concurrency = n;
        self
    }

    /// How long an entry may sit unacknowledged and untouched before the reaper gives it to another responder
    /// (default 30 s). Claims of running handlers are refreshed well within it.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.settings.visibility_timeout = timeout;
        self
    }

    /// Deliveries after which a failing request is dead-lettered (default 5).
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.settings.max_deliveries = n;
        self
    }

    /// Time in-flight handlers get to finish on shutdown (default 10 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.settings.grace = grace;
        self
    }

    /// Whether this responder also runs the reaper (default true).
    pub fn reaper(mut self, enabled: bool) -> Self {
        self.settings.run_reaper = enabled;
        self
    }

    /// Replaces the retention policy the reaper applies to the requests stream (default: keep 24 h; never trims
    /// an entry that is pending or not yet delivered to every group).
    pub fn retention(mut self, policy: crate::retention::RetentionPolicy) -> Self {
        self.settings.retention = policy;
        self
    }

    /// Keep at most `n` entries in the requests stream (beyond that, the oldest delivered and acknowledged ones
    /// are trimmed by the reaper).
    pub fn retain_max_len(mut self, n: u64) -> Self {
        self.settings.retention.max_len = Some(n);
        self
    }

    /// Keep requests stream entries at most `age` old (default 24 h).
    pub fn retain_max_age(mut self, age: Duration) -> Self {
        self.settings.retention.max_age = Some(age);
        self
    }

    /// How often this responder refreshes its heartbeat record and samples its metrics gauges (default 5 s; see
    /// [`ResponderSettings::heartbeat_interval`]).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.settings.heartbeat_interval = interval;
        self
    }

    /// The service's partition count, instead of the client's (see
    /// [`ClientBuilder::partitions`](crate::ClientBuilder::partitions)). The responder reads every partition (each
    /// with its own blocking read, reaper, keepalive and finisher; one concurrency limit for all). The first
    /// responder or requester of a partitioned service records the count in Redis; a responder given another count
    /// is refused at start with [`Error::PartitionMismatch`](crate::Error::PartitionMismatch).
    pub fn partitions(mut self, count: usize) -> Self {
        self.settings.partitions = Some(count);
        self
    }

    /// Serves only the partitions listed (0-based), for spreading partitions over responders by hand; every
    /// partition must be served by someone. A partition that does not exist is refused at start.
    pub fn only_partitions(mut self, partitions: impl IntoIterator<Item = usize>) -> Self {
        self.settings.only_partitions = Some(partitions.into_iter().collect());
        self
    }

    /// Time between two trims by this responder's reaper (default 60 s).
    pub fn trim_interval(mut self, interval: Duration) -> Self {
        self.settings.retention.interval = interval;
        self
    }

    /// Starts the responder: creates the consumer group when missing and spawns its tasks. A group created here
    /// starts at the beginning of the stream, so requests sent before any responder existed are handled too.
    ///
    /// # Errors
    /// - [`Error::Config`](crate::Error::Config) when the settings cannot work (see
    ///   [`ResponderSettings::validate`]);
    /// - [`Error::Connect`](crate::Error::Connect) when Redis cannot be connected to: kind
    ///   [`Unavailable`](crate::ErrorKind::Unavailable) when it is unreachable (see
    ///   [`ResponderBuilder::start_retrying`]), [`Config`](crate::ErrorKind::Config) for a refused password, TLS
    ///   or a port that is not Redis;
    /// - [`Error::Redis`](crate::Error::Redis) when the consumer group cannot be created (for example when the
    ///   requests stream's key holds another type). Nothing was started.
    pub async fn start(self) -> Result<Responder> {
        self.start_once().await
    }

    /// Starts the responder as [`ResponderBuilder::start`] does, but while Redis is unreachable (an error of kind
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)) keeps trying, with pauses that double from 50 ms
    /// up to 5 s, logging each failed attempt at `warn`: what a service started before its Redis (or by a service
    /// manager during an outage) wants. Returns `Ok(None)` when `stop` completes first.
    ///
    /// # Errors
    /// As [`ResponderBuilder::start`], except that an unreachable Redis is tried again instead: a refused password,
    /// a TLS or configuration problem fails at once.
    pub async fn start_retrying(self, stop: impl Future<Output = ()>) -> Result<Option<Responder>> {
        let mut backoff = crate::backoff::Backoff::up_to(START_MAX_BACKOFF);
        let mut stop = std::pin::pin!(stop);
        for attempt in 1u64.. {
            let err = match self.start_once().await {
                Ok(responder) => {
                    if attempt > 1 {
                        tracing::info!(service = %self.service, attempt, "Redis is reachable again");
                    }
                    return Ok(Some(responder));
                }
                Err(err) if err.is_unreachable() => err,
                Err(err) => return Err(err),
            };
            let pause = backoff.next_pause();
            tracing::warn!(
                service = %self.service,
                attempt,
                retry_in_ms = pause.as_millis() as u64,
                error = %err,
                "cannot start the responder: Redis is unreachable; trying again"
            );
            tokio::select! {
                _ = &mut stop => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        Ok(None)
    }

    /// One attempt of [`ResponderBuilder::start`]; the builder stays usable for another.
    async fn start_once(&self) -> Result<Responder> {
        let settings = self.settings.clone().clamped();
        crate::names::check_service(&self.service).map_err(crate::Error::InvalidArgument)?;
        settings.validate()?;
        let parts = Shared::connect(
            self.client.clone(),
            &self.service,
            settings,
            self.handlers.clone(),
        )
        .await?;
        let Some(first) = parts.first().cloned() else {
            return Err(crate::Error::Config("no partition to serve".into()));
        };
        for shared in &parts {
            shared.ensure_group().await?;
        }
        let tasks = TaskTracker::new();
        let mut keepalive = Vec::with_capacity(parts.len());
        let mut finisher = Vec::with_capacity(parts.len());
        for shared in &parts {
            tasks.spawn(reader::read_loop(shared.clone()));
            if shared.settings.run_reaper {
                tasks.spawn(reaper::reaper_loop(
                    shared.clone(),
                    reaper::ReaperKind::InResponder,
                ));
            }
            tasks.spawn(cancel::cancel_loop(shared.clone()));
            tasks.spawn(delayed::promote_loop(shared.clone()));
            // The keepalive outlives the loops: it must refresh claims while in-flight work drains at shutdown.
            keepalive.push(tokio::spawn(keepalive::keepalive_loop(shared.clone())));
            finisher.push(tokio::spawn(ack::finish_loop(shared.clone())));
        }
        // One heartbeat for the whole responder: it is one consumer, whatever the partitions.
        tasks.spawn(heartbeat::heartbeat_loop(first.clone()));
        tasks.close();
        tracing::info!(
            service = %self.service,
            consumer = %first.settings.consumer,
            group = %first.settings.group,
            partitions = first.parts.count(),
            served = parts.len(),
            "responder started"
        );
        Ok(Responder {
            shared: first,
            parts,
            tasks,
            keepalive,
            finisher,
        })
    }
}

/// A running responder. Stop it with [`Responder::shutdown`]; dropping it stops it without waiting.
pub struct Responder {
    /// The first partition served: what the partitions share (settings, stop signals, request tasks) is read here.
    shared: Arc<Shared>,
    /// Every partition served.
    parts: Vec<Arc<Shared>>,
    /// The readers, reapers, cancel listeners, promoters and the heartbeat.
    tasks: TaskTracker,
    /// One per partition.
    keepalive: Vec<tokio::task::JoinHandle<()>>,
    /// Answer finished requests in batches, one per partition; like the keepalives, they serve the drain at
    /// shutdown.
    finisher: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("service", &self.shared.keys.tag())
            .field("consumer", &self.shared.settings.consumer)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// This responder's consumer name: how it shows in `redcall stats` and in `XINFO CONSUMERS`.
    pub fn consumer(&self) -> &str {
        &self.shared.settings.consumer
    }

    /// Number of requests this responder holds right now: those being handled (what a shutdown waits for) and those
    /// waiting out a retry backoff (which a shutdown leaves pending at once, for the visibility timeout to hand on).
    pub fn in_flight(&self) -> usize {
        self.parts.iter().map(|p| p.in_flight_count()).sum()
    }

    /// Stops reading, lets in-flight handlers finish and answer within the grace period, and leaves what did not
    /// finish pending for other responders. Returns how many handlers were cut off by the grace period.
    ///
    /// # Errors
    /// None today: a request that cannot be answered stays pending for redelivery instead of failing the shutdown.
    /// The `Result` leaves room for reporting a shutdown that could not complete.
    pub async fn shutdown(mut self) -> Result<usize> {
        self.shared.stop.cancel();
        // Wait for the reader and reaper first: after them, nothing spawns request tasks any more.
        self.tasks.wait().await;
        self.shared.requests.close();
        let grace = self.shared.settings.grace;
        let drained = tokio::time::timeout(grace, self.shared.requests.wait())
            .await
            .is_ok();
        let cut_off = if drained {
            0
        } else {
            let left = self.in_flight();
            tracing::warn!(
                left,
                "grace period over; leaving unfinished requests pending"
            );
            self.shared.abort.cancel();
            self.shared.requests.wait().await;
            left
        };
        self.shared.abort.cancel();
        for task in self.keepalive.iter_mut().chain(self.finisher.iter_mut()) {
            let _ = task.await;
        }
        tracing::info!(consumer = %self.shared.settings.consumer, "responder stopped");
        Ok(cut_off)
    }

    /// Serves until `stop` completes (a signal, a shutdown request of the application), then shuts down as
    /// [`Responder::shutdown`] does. Returns how many handlers were cut off by the grace period.
    ///
    /// ```no_run
    /// # async fn demo(responder: redcall::Responder) -> redcall::Result<()> {
    /// let cut_off = responder.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Responder::shutdown`]: none today.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<usize> {
        stop.await;
        self.shutdown().await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.abort.cancel();
    }
}
