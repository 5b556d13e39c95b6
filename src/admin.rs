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
use crate::protocol::ServiceKeys;
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
    keys: Arc<ServiceKeys>,
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
        let keys = Arc::new(client.keys(service));
        Self {
            client,
            service: service.into(),
            keys,
            con: Arc::new(OnceCell::new()),
        }
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

    /// The service's key layout, for looking at its keys by hand.
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
        let mut con = self.con().await?;
        retention::trim(&mut con, &self.keys, &policy.clone().clamped()).await
    }

    /// The admin's connection (a self-reconnecting one, opened on first use).
    /// Every operation of the admin goes through here first: an unusable service name is refused before Redis is
    /// touched.
    pub(crate) async fn con(&self) -> Result<ManagedConnection> {
        crate::names::check_service(&self.service).map_err(Error::InvalidArgument)?;
        self.con
            .get_or_try_init(|| {
                connection::managed_connection(self.client.target(), self.client.config())
            })
            .await
            .cloned()
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
                .map(str::to_owned)
        })
        .collect();
    services.sort();
    services.dedup();
    Ok(services)
}
