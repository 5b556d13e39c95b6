//! The admin API: what operators need to see and repair a service — [stats](Admin::stats), the
//! [dead letters](Admin::dead_letters) (list, show, [replay](Admin::replay_dead_letters),
//! [purge](Admin::purge_dead_letters)), [replay of a range](Admin::replay_range) of the requests stream, and an
//! on-demand [trim](Admin::trim) by a retention policy; for one request, [its whole story](Admin::status); for
//! the service, [when its requests were last read](Admin::last_read) (is anyone serving it?), its
//! [pending entries](Admin::pending_entries) one by one, and [dead letters by function key or
//! reason](Admin::dead_letters_matching). `redcall ui` is a page over exactly these calls.
//!
//! ## Replays keep the request id
//! A replay re-queues a request **under its original id**: in one script it deletes the id's stored reply and last
//! error, overwrites the id's record with the new envelope (so `call_info` sees it), adds a new stream entry and, for
//! a dead letter, removes the dead-letter entry — only once the new entry is added. The new envelope keeps the
//! function key, params and creation time, gets a fresh deadline ([`ReplayOptions::timeout`]) and carries a
//! [`ReplayInfo`](crate::protocol::ReplayInfo) (count, source, replayed entry id, time), so the replay is visible in
//! the envelope, the record and `redcall info`. The handler runs again (a new entry is delivery 1, so it is not
//! answered from a stored reply) and its reply is stored under the same id, where anyone who knows the id finds it
//! ([`Requester::stored_reply`](crate::Requester::stored_reply)). Replaying bypasses the duplicate-id check on
//! purpose.
//!
//! ## Replays are safe to repeat
//! A request still in flight is not replayed: one whose latest entry in the requests stream (every replay adds one
//! under the same id) or the entry named is pending in, or not yet delivered to, some group. The same script that
//! re-queues decides this, so two replays running at once, or one run again before the first one's requests were
//! handled, queue each request once. [`ReplayOptions::dry_run`] reports the decisions without changing anything.
//!
//! Long operations take a `progress` callback that receives the number of entries processed so far.

mod dead_letter_filter;
mod dead_letters;
mod find;
mod last_read;
mod pager;
mod pending;
mod range_replay;
mod replay;
mod replay_report;
mod responders;
mod stats;
mod status;

use std::sync::Arc;

use crate::connection::ManagedConnection;
use redis::streams::StreamRangeReply;
use tokio::sync::OnceCell;

use crate::client::Client;
use crate::connection;
use crate::error::{Error, Result};
use crate::protocol::{Partitions, ServiceKeys};
use crate::retention::{self, RetentionPolicy, TrimReport};

pub use dead_letter_filter::{DeadLetterFilter, DeadLetterPage, SCAN_LIMIT};
pub use dead_letters::{DeadLetterEntry, PurgeReport};
pub use last_read::{LastRead, SeenConsumer};
pub use pending::{MAX_PENDING_PAGE, PendingEntry};
pub use replay_report::{
    DEFAULT_REPLAY_TIMEOUT, ReplayOptions, ReplayReport, Replayed, SkipReason, Skipped,
};
pub(crate) use responders::HEARTBEAT_VERSION;
pub use responders::ResponderInfo;
pub use stats::{ConsumerStats, GroupStats, OldestPending, ServiceStats};
pub use status::{Answer, RequestState, RequestStatus, RequestSummary};

/// Entries read per round trip when paging through a stream.
const PAGE: usize = 200;

/// Operations on one service for the people who run it. Made by [`Client::admin`]. Cheap to clone; clones share
/// one connection, opened on first use.
#[derive(Clone)]
pub struct Admin {
    client: Client,
    service: Arc<str>,
    /// The service's partitions.
    parts: Arc<Partitions>,
    /// `None` for the whole service; `Some(i)` for an admin of partition `i` alone (made by
    /// [`Admin::partition`]).
    partition: Option<usize>,
    /// The keys this admin works on: its partition's (the first partition's for the whole service, which every
    /// operation on a service of several partitions splits first, see [`Admin::split`]).
    keys: Arc<ServiceKeys>,
    /// Why the partition count is unusable, if it is: every operation then fails with it.
    bad_partitions: Option<Arc<str>>,
    /// Set once the recorded partition count was found to agree (see [`crate::partition_count`]).
    checked: Arc<OnceCell<()>>,
    con: Arc<OnceCell<ManagedConnection>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Admin {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        let count = client.config().partitions;
        let parts = Arc::new(client.partitioned_keys(service, count));
        Self {
            keys: parts.all()[0].clone(),
            parts,
            partition: None,
            client,
            service: service.into(),
            bad_partitions: None,
            checked: Arc::new(OnceCell::new()),
            con: Arc::new(OnceCell::new()),
        }
    }

    /// This admin with `count` partitions instead of the client's (see
    /// [`ClientBuilder::partitions`](crate::ClientBuilder::partitions)): it must be the count the service is served
    /// with, or every operation fails with [`Error::PartitionMismatch`]. Stats, dead letters, replays and trims
    /// then cover every partition; a request's status is read from its id's partition.
    pub fn partitions(mut self, count: usize) -> Self {
        self.bad_partitions = crate::config::check_partitions(count)
            .err()
            .map(|e| Arc::from(e.to_string()));
        self.parts = Arc::new(self.client.partitioned_keys(&self.service, count));
        self.keys = self.parts.all()[0].clone();
        self.partition = None;
        self.checked = Arc::new(OnceCell::new());
        self
    }

    /// The service's partitions and their keys.
    pub fn layout(&self) -> &Partitions {
        &self.parts
    }

    /// An admin of partition `index` alone (sharing this one's connection): its stats, dead letters, replays and
    /// trims. `None` when there is no such partition.
    pub fn partition(&self, index: usize) -> Option<Admin> {
        let keys = self.parts.get(index)?.clone();
        Some(Admin {
            keys,
            partition: Some(index),
            ..self.clone()
        })
    }

    /// Which partition this admin is restricted to (`None`: the whole service).
    pub fn partition_index(&self) -> Option<usize> {
        self.partition
    }

    /// Whether this admin covers several partitions ([`Admin::split`] gives one admin per partition).
    pub(crate) fn is_split(&self) -> bool {
        self.partition.is_none() && self.parts.count() > 1
    }

    /// Every scope this admin's operations cover: one admin per partition for a whole service of several, else
    /// this admin itself. For acting on each partition's own entries (dead-letter ids repeat across partitions).
    pub fn scopes(&self) -> Vec<Admin> {
        self.split().unwrap_or_else(|| vec![self.clone()])
    }

    /// For an admin of a whole service of several partitions, an admin per partition: what its operations run on
    /// and merge. `None` when this admin's keys are already the whole story (one partition, or one partition's
    /// admin).
    pub(crate) fn split(&self) -> Option<Vec<Admin>> {
        if !self.is_split() {
            return None;
        }
        Some(
            (0..self.parts.count())
                .filter_map(|i| self.partition(i))
                .collect(),
        )
    }

    /// The admin of request `id`'s partition (this admin itself for a service of one partition).
    pub(crate) fn for_id(&self, id: &str) -> Admin {
        if self.parts.count() == 1 {
            return self.clone();
        }
        self.partition(self.parts.index_of(id))
            .unwrap_or_else(|| self.clone())
    }

    /// An admin for `service` that uses `con` (a responder's own connection) instead of opening one.
    pub(crate) fn with_connection(
        client: Client,
        service: &str,
        con: crate::connection::ManagedConnection,
    ) -> Self {
        let admin = Self::new(client, service);
        let _ = admin.con.set(con);
        admin
    }

    /// The service's name, as given to [`Client::admin`].
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The key layout this admin works on, for looking at its keys by hand: the service's, or with several
    /// partitions this admin's partition's (the first one's for the whole service; see [`Admin::layout`]).
    pub fn keys(&self) -> &ServiceKeys {
        &self.keys
    }

    /// The client this admin uses, for a requester of the same service (say, to read a replay's stored reply).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Trims the requests stream (and the dead-letter stream, when the policy limits it) now, by `policy`. Never
    /// removes an entry that is pending or not yet delivered to every group (see [`RetentionPolicy`]), so it is safe
    /// to run while responders work. `policy.enabled` is ignored: a call is an explicit request.
    ///
    /// # Errors
    /// - [`Error::Config`] when the policy cannot work (see [`RetentionPolicy::validate`]);
    /// - [`Error::Redis`] when the admin's first connection, the trim script or the dead-letter `XTRIM` fails; a
    ///   trim of the requests stream that went through stays done.
    pub async fn trim(&self, policy: &RetentionPolicy) -> Result<TrimReport> {
        policy.validate()?;
        if let Some(parts) = self.split() {
            let mut reports = Vec::with_capacity(parts.len());
            for part in parts {
                reports.push(Box::pin(part.trim(policy)).await?);
            }
            return Ok(TrimReport::merge(reports));
        }
        let mut con = self.con().await?;
        retention::trim(&mut con, &self.keys, &policy.clone().clamped()).await
    }

    /// The partition count recorded in Redis for the service (`None` when none is: one partition, or a service
    /// not used yet), for tools that work on services of any count (`redcall stats --all`).
    ///
    /// # Errors
    /// [`Error::Redis`] when the connection or the read fails; [`Error::Config`] when the key holds no count.
    pub async fn recorded_partitions(&self) -> Result<Option<usize>> {
        let mut con = self.unchecked_con().await?;
        let key = self.parts.base().partition_count();
        let text: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading the service's partition count"))?;
        text.map(|t| {
            t.parse()
                .map_err(|_| Error::Config(format!("{key} holds {t:?}, not a partition count")))
        })
        .transpose()
    }

    /// The admin's connection without the partition count check: for what lives under the unpartitioned tag
    /// whatever the count (heartbeat records, the recorded count).
    pub(crate) async fn unchecked_con(&self) -> Result<ManagedConnection> {
        crate::names::check_service(&self.service).map_err(Error::InvalidArgument)?;
        self.shared_con().await
    }

    /// The admin's one connection, opened on first use (no checks: see [`Admin::con`], [`Admin::unchecked_con`]).
    async fn shared_con(&self) -> Result<ManagedConnection> {
        self.con
            .get_or_try_init(|| {
                connection::managed_connection(self.client.target(), self.client.config())
            })
            .await
            .cloned()
    }

    /// The admin's connection (a self-reconnecting one, opened on first use).
    /// Every operation of the admin goes through here first: an unusable service name is refused before Redis is
    /// touched.
    pub(crate) async fn con(&self) -> Result<ManagedConnection> {
        crate::names::check_service(&self.service).map_err(Error::InvalidArgument)?;
        if let Some(problem) = &self.bad_partitions {
            return Err(Error::Config(problem.to_string()));
        }
        let con = self.shared_con().await?;
        // An admin given another partition count than the service has would show and change the wrong streams.
        self.checked
            .get_or_try_init(|| async {
                crate::partition_count::check(&mut con.clone(), &self.parts, &self.service, false)
                    .await
            })
            .await?;
        Ok(con)
    }

    /// The id of the newest entry of `stream`, if it has any: the fixed upper bound of a paged walk, so entries
    /// added during the walk (such as the replays it queues) are not walked too.
    pub(crate) async fn last_entry_id(&self, stream: &str) -> Result<Option<String>> {
        let mut con = self.con().await?;
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading the newest stream entry"))?;
        Ok(newest.ids.into_iter().next().map(|e| e.id))
    }
}

/// The service a partition's name belongs to: `orders#1.622` (partition 1 of `orders`, see
/// [`crate::protocol::partition_tag`]) is `orders`; any other name is itself.
fn unpartitioned(name: &str) -> &str {
    if let Some((service, suffix)) = name.rsplit_once('#')
        && let Some((index, k)) = suffix.split_once('.')
        && !service.is_empty()
        && !index.is_empty()
        && !k.is_empty()
        && index.bytes().chain(k.bytes()).all(|b| b.is_ascii_digit())
    {
        return service;
    }
    name
}

/// The services that have a requests stream in `client`'s namespace, found with `SCAN` (cheap per call, but it
/// walks the whole keyspace, on a cluster every primary's: an operator tool, not a hot path). Sorted by name.
///
/// # Errors
/// [`Error::Redis`] when connecting (a new connection per call) or a `SCAN` fails.
pub async fn list_services(client: &Client) -> Result<Vec<String>> {
    let namespace = &client.config().namespace;
    let prefix = format!("{{{namespace}:");
    let suffix = "}:requests";
    let pattern = format!("{}*{suffix}", crate::protocol::glob_escape(&prefix));
    let settings = connection::ConnectionSettings::new(
        client.config().connect_timeout,
        client.config().command_timeout,
    );
    let mut con = client
        .target()
        .connect(&settings, client.config(), "listing services")
        .await?;
    let keys = con
        .scan_keys(&pattern, "stream")
        .await
        .map_err(Error::redis("listing services"))?;
    let mut services: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            k.strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .map(|name| unpartitioned(name).to_owned())
        })
        .collect();
    services.sort();
    services.dedup();
    Ok(services)
}
