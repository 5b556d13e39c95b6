//! The state a responder's tasks share: its client, keys and settings, its handlers, its connection for short
//! commands, the concurrency permits, the entries in flight, and the two stop signals. Also the one way the
//! responder runs a command that must not be lost to a brief outage ([`Shared::run_with_retries`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connection::ManagedConnection;
use redis::AsyncCommands;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::Completion;
use super::handler::ErasedHandler;
use super::history::History;
use super::settings::ResponderSettings;
use crate::backoff::Backoff;
use crate::client::Client;
use crate::connection;
use crate::error::{Error, Result};
use crate::metrics::ResponderMetrics;
use crate::protocol::{Partitions, ServiceKeys};
use crate::scripts;

/// Longest pause between two attempts to store a finished request's reply while Redis is unreachable.
const ANSWER_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// An entry counted in [`Shared::in_flight`] while this lives (see [`Shared::track`]).
pub(super) struct InFlight {
    shared: Arc<Shared>,
    entry_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Entry::Occupied(mut held) = in_flight.entry(std::mem::take(&mut self.entry_id)) {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
            }
        }
    }
}

/// State shared by a responder's tasks.
pub(crate) struct Shared {
    pub(crate) client: Client,
    /// The service's name, for log fields.
    pub(crate) service: String,
    /// The keys of the partition this part of the responder serves (the service's only one when unpartitioned).
    pub(crate) keys: Arc<ServiceKeys>,
    /// The service's partitions: the heartbeat writes under their base tag.
    pub(crate) parts: Arc<Partitions>,
    pub(crate) settings: ResponderSettings,
    pub(super) handlers: HashMap<String, ErasedHandler>,
    /// Connection for short commands (answers, claims, acks); reconnects by itself.
    pub(crate) con: ManagedConnection,
    /// One permit per request being handled.
    pub(crate) permits: Arc<Semaphore>,
    /// Which first deliveries may have a stored reply already (see [`super::history`]).
    pub(super) history: History,
    /// Entry ids being handled (or waiting for a retry), whose claims the keepalive refreshes, each with the number
    /// of [`InFlight`] guards holding it (a retry is scheduled while its failed delivery's guard still lives).
    pub(super) in_flight: Mutex<HashMap<String, usize, foldhash::fast::RandomState>>,
    /// Cancelled to stop reading and claiming.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the grace period is over: running handlers are dropped, their entries stay pending.
    pub(crate) abort: CancellationToken,
    /// The request tasks.
    pub(crate) requests: TaskTracker,
    /// Whether the read loop may run a handler's first poll itself (see [`Shared::start_entry`]): only on a
    /// current-thread runtime, where every task shares one thread anyway. On a multi-thread runtime each request
    /// gets its own task, so handlers that compute without awaiting still run in parallel.
    pub(super) inline_first_poll: bool,
    /// Finished requests on their way to the finisher, which answers them in batches.
    pub(super) finished_tx: mpsc::UnboundedSender<Completion>,
    pub(super) finished_rx: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Metric handles, made once and shared by the partitions (see [`crate::metrics`]).
    pub(crate) metrics: Arc<ResponderMetrics>,
    /// Entries this responder left pending (a retry, a panic): claimed back, they count as redeliveries, not
    /// claims from another consumer. Bounded by [`LEFT_PENDING_LIMIT`].
    pub(super) left_pending: Mutex<HashSet<String, foldhash::fast::RandomState>>,
    /// The requests running here, for cancels to reach them, and recent cancels (see [`super::cancel`]).
    pub(super) cancels: super::cancel::Cancels,
    /// How handlers report progress (see [`super::progress`]).
    pub(super) progress: Arc<super::progress::ProgressSink>,
}

/// Most entry ids [`Shared::left_pending`] remembers; past it, it starts over (a metric label may then be off).
const LEFT_PENDING_LIMIT: usize = 4096;

impl Shared {
    /// Connects the responder's command connection and checks the service's partition count against the one
    /// recorded in Redis (recording it if none is); starts nothing. One `Shared` per partition served (every one,
    /// or those in `only`), all sharing the connection, the concurrency permits, the stop signals, the request
    /// tasks and the metrics.
    pub(crate) async fn connect(
        client: Client,
        service: &str,
        settings: ResponderSettings,
        handlers: HashMap<String, ErasedHandler>,
    ) -> Result<Vec<Arc<Self>>> {
        let count = settings.partitions.unwrap_or(client.config().partitions);
        crate::config::check_partitions(count)?;
        let parts = Arc::new(client.partitioned_keys(service, count));
        let served: Vec<usize> = match &settings.only_partitions {
            None => (0..count).collect(),
            Some(only) => {
                if only.is_empty() {
                    return Err(Error::Config(
                        "the partitions to serve must not be empty".into(),
                    ));
                }
                if let Some(bad) = only.iter().find(|&&i| i >= count) {
                    return Err(Error::Config(format!(
                        "partition {bad} does not exist: the service has {count} (0 to {})",
                        count - 1
                    )));
                }
                let mut only = only.clone();
                only.sort_unstable();
                only.dedup();
                only
            }
        };
        let con = connection::managed_connection(client.target(), client.config()).await?;
        crate::partition_count::check(&mut con.clone(), &parts, service, true).await?;
        let inline_first_poll = matches!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        let metrics = Arc::new(ResponderMetrics::new(
            service,
            handlers.keys().map(String::as_str),
        ));
        let permits = Arc::new(Semaphore::new(settings.concurrency));
        let (stop, abort, requests) = (
            CancellationToken::new(),
            CancellationToken::new(),
            TaskTracker::new(),
        );
        let mut shared = Vec::with_capacity(served.len());
        for index in served {
            let Some(keys) = parts.get(index).cloned() else {
                continue;
            };
            let (finished_tx, finished_rx) = mpsc::unbounded_channel();
            shared.push(Arc::new(Self {
                metrics: metrics.clone(),
                left_pending: Mutex::default(),
                cancels: super::cancel::Cancels::default(),
                progress: Arc::new(super::progress::ProgressSink::new(
                    con.clone(),
                    (*keys).clone(),
                    client.config(),
                    client.target().pubsub(),
                )),
                inline_first_poll,
                finished_tx,
                finished_rx: Mutex::new(Some(finished_rx)),
                keys,
                parts: parts.clone(),
                service: service.to_owned(),
                permits: permits.clone(),
                client: client.clone(),
                settings: settings.clone(),
                handlers: handlers.clone(),
                con: con.clone(),
                in_flight: Mutex::default(),
                history: History::default(),
                stop: stop.clone(),
                abort: abort.clone(),
                requests: requests.clone(),
            }));
        }
        Ok(shared)
    }

    /// Creates the consumer group (and the stream) when missing; an existing group is fine.
    pub(crate) async fn ensure_group(&self) -> Result<()> {
        let mut con = self.con.clone();
        let created: redis::RedisResult<()> = con
            .xgroup_create_mkstream(self.keys.requests(), &self.settings.group, "0")
            .await;
        if let Err(err) = created
            && err.code() != Some("BUSYGROUP")
        {
            return Err(Error::redis("creating the consumer group")(err));
        }
        // What may be history for this group: the stream up to its newest entry, and the replies by hand so far.
        let mut pipe = redis::pipe();
        pipe.cmd("XREVRANGE")
            .arg(self.keys.requests())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("MGET")
            .arg(self.keys.by_hand());
        let seen: redis::RedisResult<(redis::streams::StreamRangeReply, Vec<Option<Vec<u8>>>)> =
            pipe.query_async(&mut con).await;
        match seen {
            Ok((newest, by_hand)) => self.history.noted(
                newest.ids.first().map(|e| e.id.as_str()),
                by_hand.into_iter().next().flatten(),
            ),
            Err(err) => {
                tracing::debug!(error = %err, "could not read the stream's history; checking every entry");
                self.history.unknown();
            }
        }
        Ok(())
    }

    /// Notes that this responder leaves `entry_id` pending for a redelivery.
    pub(super) fn left_pending(&self, entry_id: &str) {
        let mut left = self.left_pending.lock().unwrap_or_else(|p| p.into_inner());
        if left.len() >= LEFT_PENDING_LIMIT {
            left.clear();
        }
        left.insert(entry_id.to_owned());
    }

    /// How a claimed entry came back: a redelivery of one this responder left pending, or a claim from another.
    pub(super) fn claimed_kind(&self, entry_id: &str) -> crate::metrics::Delivered {
        let mine = self
            .left_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(entry_id);
        if mine {
            crate::metrics::Delivered::Redelivery
        } else {
            crate::metrics::Delivered::Claimed
        }
    }

    /// Requests being handled now: the permits taken.
    pub(crate) fn busy(&self) -> usize {
        self.settings
            .concurrency
            .saturating_sub(self.permits.available_permits())
    }

    pub(crate) fn in_flight_count(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Counts an entry as in flight (the keepalive refreshes its claim) until the returned guard is dropped, however
    /// the task holding it ends.
    pub(super) fn track(self: &Arc<Self>, entry_id: &str) -> InFlight {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(entry_id.to_owned())
            .or_default() += 1;
        InFlight {
            shared: self.clone(),
            entry_id: entry_id.to_owned(),
        }
    }

    /// Runs a pipeline (reloading scripts Redis forgot), retrying with backoff on connection errors until it
    /// succeeds, the visibility timeout has passed, or the grace period ends. `None` when it never went through.
    ///
    /// Retrying for as long as the visibility timeout means a reply made while Redis is away (a restart, an
    /// outage shorter than the visibility timeout) is stored once Redis is back, instead of the handler running
    /// again after a redelivery. Past the visibility timeout the entry is up for grabs anyway; it stays pending and
    /// is delivered again, and the first reply stored wins.
    pub(super) async fn run_with_retries<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        what: &'static str,
    ) -> Option<T> {
        let give_up = tokio::time::Instant::now() + self.settings.visibility_timeout;
        let mut backoff = Backoff::up_to(ANSWER_MAX_BACKOFF);
        for attempt in 1u32.. {
            let mut con = self.con.clone();
            match scripts::query_with_scripts::<T, _>(pipe, &mut con).await {
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "{what} went through after Redis came back");
                    }
                    return Some(v);
                }
                // Unreachable, or not serving for a moment (`LOADING`, `BUSY`, `CLUSTERDOWN`, ...): the reply is in
                // hand, so wait for Redis rather than give the request up to a redelivery that runs it again.
                Err(err)
                    if (connection::is_worth_reconnecting(&err)
                        || connection::is_transient(&err))
                        && tokio::time::Instant::now() + backoff.peek() < give_up =>
                {
                    if attempt == 1 {
                        tracing::warn!(error = %err, "{what} failed; retrying while Redis is unreachable");
                    } else {
                        tracing::debug!(error = %err, attempt, "{what} failed again; retrying");
                    }
                    if backoff.sleep_or_stop(&self.abort).await {
                        return None;
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, attempt, "{what} failed; the entry stays pending for redelivery");
                    return None;
                }
            }
        }
        None
    }
}
