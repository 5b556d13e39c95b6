//! Cancel: end a request by id before it is answered. One script (`CANCEL`) stores and publishes the `cancelled`
//! reply unless a reply is stored already, and publishes the id on the service's cancel channel. The stored reply is
//! what keeps a request not yet started from running (a responder answers it from the stored reply, as it does a
//! reply by hand); the cancel channel is how a responder running it learns at once.

use super::Requester;
use super::pending::PendingReply;
use crate::config::ttl_ms;
use crate::connection::only_command_error;
use crate::error::{Error, Result};
use crate::protocol::{self, ReplyEnvelope, ReplyStatus, ServiceKeys, codes};
use crate::router::Router;
use crate::scripts;

impl Requester {
    /// Cancels request `id`: unless it was answered already, its caller gets [`Error::Cancelled`] at once, a
    /// responder that has not started it answers it `cancelled` without running it, and a running handler sees the
    /// cancellation through [`RequestContext::is_cancelled`](crate::RequestContext::is_cancelled) and
    /// [`RequestContext::cancelled`](crate::RequestContext::cancelled). A handler that ignores it and finishes
    /// anyway has its result dropped: the `cancelled` reply was stored first, and the first stored reply wins.
    ///
    /// # Errors
    /// - [`Error::NotFound`] when no record exists for `id` (never made, or past its retention);
    /// - [`Error::AlreadyAnswered`] when a reply is stored already: the request ended before the cancel, and its
    ///   reply stays;
    /// - [`Error::InvalidArgument`] for an unusable id or service name;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was done, retry later;
    /// - [`Error::Redis`] when the client's first connection or the script fails.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        self.check(id)?;
        let router = self.client.router().await?;
        self.check_partitions(&router).await?;
        cancel_request(&router, self.keys_of(id), id, self.outage_deadline()).await
    }
}

impl PendingReply {
    /// Cancels this request (see [`Requester::cancel`]); a [`PendingReply::wait`] on it, here or in another task,
    /// then returns [`Error::Cancelled`].
    ///
    /// # Errors
    /// As [`Requester::cancel`].
    pub async fn cancel(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.router.config().outage_timeout;
        cancel_request(&self.router, &self.keys, &self.id, deadline).await
    }
}

/// Runs `CANCEL` for `id`, riding out an outage until `deadline`.
async fn cancel_request(
    router: &Router,
    keys: &ServiceKeys,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let reply = ReplyEnvelope::failure(
        id,
        ReplyStatus::Error,
        codes::CANCELLED,
        "cancelled by request",
    );
    let bytes = protocol::encode(&reply)?;
    let mut pipe = redis::pipe();
    scripts::evalsha(&mut pipe, scripts::CANCEL.on(router.pubsub()))
        .arg(6)
        .arg(keys.record(id))
        .arg(keys.reply(id))
        .arg(keys.last_error(id))
        .arg(keys.by_hand())
        .arg(keys.requests())
        .arg(keys.delayed())
        .arg(&bytes)
        .arg(ttl_ms(router.config().reply_ttl))
        .arg(keys.reply_channel(id))
        .arg(keys.cancels())
        .arg(id);
    // Safe to repeat: the script takes a stored reply identical to this one as this very cancel.
    let (cancelled,): (i64,) = router
        .ride_out(deadline, |mut con| {
            let pipe = &pipe;
            async move {
                scripts::query_with_scripts(pipe, &mut con)
                    .await
                    .inspect_err(|e| router.report_broken(e))
                    .map_err(|e| Error::redis("cancelling a request")(only_command_error(e)))
            }
        })
        .await?;
    match cancelled {
        1 => Ok(()),
        -1 => Err(Error::NotFound { id: id.to_owned() }),
        _ => Err(Error::AlreadyAnswered { id: id.to_owned() }),
    }
}
