//! The requesting side, one file per operation: [`request`] (add a request durably, wait for its reply),
//! [`call_info`] (look a request up by id), [`publish_reply`] (answer one by hand), and [`pending`] (the handle of
//! a request sent, whose reply is awaited later).

mod call_info;
mod cancel;
mod delayed;
mod pending;
mod progress;
mod publish_reply;
mod request;

use std::sync::Arc;

use crate::connection::Connection;
use redis::AsyncCommands;

pub use call_info::CallInfo;
pub use pending::PendingReply;
pub use progress::ProgressUpdates;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::protocol::{self, Partitions, ReplyEnvelope, ServiceKeys};
use crate::router::Router;

/// Makes requests to one service and answers them by hand. Cheap to clone; every clone shares the client's one
/// reply connection.
#[derive(Clone)]
pub struct Requester {
    client: Client,
    /// The service's partitions: each request's keys are those of its id's partition.
    parts: Arc<Partitions>,
    /// The service's name, for log fields.
    service: Arc<str>,
    /// Why the service name is unusable, if it is: every operation then fails with it, before touching Redis.
    bad_service: Option<Arc<str>>,
    /// Why the partition count is unusable, if it is: every operation then fails with it.
    bad_partitions: Option<Arc<str>>,
    /// Metric handles per function key, made on first use and shared by clones.
    metrics: Arc<crate::metrics::RequesterMetrics>,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("service", &self.parts.base().tag())
            .field("partitions", &self.parts.count())
            .finish_non_exhaustive()
    }
}

impl Requester {
    pub(crate) fn new(client: Client, service: &str) -> Self {
        let count = client.config().partitions;
        let parts = Arc::new(client.partitioned_keys(service, count));
        let bad_service = crate::names::check_service(service).err().map(Arc::from);
        Self {
            metrics: Arc::new(crate::metrics::RequesterMetrics::new(service)),
            client,
            parts,
            service: service.into(),
            bad_service,
            bad_partitions: None,
        }
    }

    /// This requester with `count` partitions instead of the client's (see
    /// [`ClientBuilder::partitions`](crate::ClientBuilder::partitions)): it must be the count the service is served
    /// with. A count out of range fails every operation with [`Error::Config`].
    pub fn partitions(mut self, count: usize) -> Self {
        self.bad_partitions = crate::config::check_partitions(count)
            .err()
            .map(|e| Arc::from(e.to_string()));
        self.parts = Arc::new(self.client.partitioned_keys(&self.service, count));
        self
    }

    /// The service's partitions: which keys each request id uses.
    pub fn layout(&self) -> &Partitions {
        &self.parts
    }

    /// The keys of request `id`'s partition.
    fn keys_of(&self, id: &str) -> &Arc<ServiceKeys> {
        self.parts.for_id(id)
    }

    /// Compares this requester's partition count with the one recorded for the service (recording it when none is
    /// and the count is above one), once per client and service (every `Client::requester` handle of the service
    /// shares the answer, so a handle made per call costs no extra round trip). Only a recorded count that disagrees
    /// fails:
    /// when Redis cannot be asked now, the operation goes on (it meets the same outage and rides it out) and the
    /// next one asks again.
    async fn check_partitions(&self, router: &Router) -> Result<()> {
        let count = self.parts.count();
        if self.client.partitions_agreed(&self.service, count) {
            return Ok(());
        }
        let Ok(mut con) = router.connection() else {
            return Ok(());
        };
        match crate::partition_count::check(&mut con, &self.parts, &self.service, true).await {
            Ok(()) => {
                self.client.note_partitions_agreed(&self.service, count);
                Ok(())
            }
            Err(err @ (Error::PartitionMismatch { .. } | Error::Config(_))) => Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "could not check the partition count; checking again later");
                Ok(())
            }
        }
    }

    /// Until when an operation without a timeout of its own keeps trying while Redis is unreachable.
    fn outage_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.client.config().outage_timeout
    }

    /// Refuses an operation on request `id` when the service name or the id is unusable ([`crate::names`]).
    fn check(&self, id: &str) -> Result<()> {
        if let Some(problem) = &self.bad_service {
            return Err(Error::InvalidArgument(problem.to_string()));
        }
        if let Some(problem) = &self.bad_partitions {
            return Err(Error::Config(problem.to_string()));
        }
        crate::names::check_request_id(id).map_err(Error::InvalidArgument)
    }

    /// The service's unpartitioned key layout: with one partition, the Redis keys and channels this requester
    /// uses, for inspecting them by hand; with more, see [`Requester::layout`].
    pub fn keys(&self) -> &ServiceKeys {
        self.parts.base()
    }
}

/// `GET key` on `con`, a connection of the router; `context` says what for, in errors.
async fn get_bytes(
    router: &Router,
    mut con: Connection,
    key: &str,
    context: &'static str,
) -> Result<Option<Vec<u8>>> {
    con.get(key)
        .await
        .inspect_err(|e| router.report_broken(e))
        .map_err(Error::redis(context))
}

/// The stored reply of request `id`, decoded and checked to name `id` (a stored envelope of another id is refused
/// as undecodable, never taken as this request's answer).
async fn fetch_stored(
    router: &Router,
    con: Connection,
    keys: &ServiceKeys,
    id: &str,
) -> Result<Option<ReplyEnvelope>> {
    let Some(bytes) = get_bytes(router, con, &keys.reply(id), "reading a stored reply").await?
    else {
        return Ok(None);
    };
    let reply = protocol::decode_reply(&bytes)?;
    if reply.id != id {
        return Err(Error::Decode {
            what: "stored reply",
            message: format!("it names request {:?}, not {id:?}", reply.id),
        });
    }
    Ok(Some(reply))
}

/// A fresh request id: a UUID v7, unique and sortable by creation time. For a caller that must know the id before
/// sending: stored with its own state first, a retry after a crash sends the same id again, and
/// [`Requester::send`]'s duplicate check refuses the second copy.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
