//! The handle of a request Redis has accepted: wait for its reply (or the stored one on timeout); dropping it
//! releases the waiter and its subscription however the caller's task ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::fetch_stored;
use crate::error::{Error, Result};
use crate::protocol::{self, ReplyEnvelope, ReplyStatus, ServiceKeys, codes};
use crate::router::{Delivery, Router};

/// A request that Redis has accepted, whose reply can be awaited. Dropping it stops listening for the reply (the
/// request itself stays queued).
pub struct PendingReply {
    pub(super) id: String,
    pub(super) channel: Option<String>,
    pub(super) keys: Arc<ServiceKeys>,
    pub(super) rx: Option<oneshot::Receiver<Delivery>>,
    pub(super) deadline: Instant,
    pub(super) timeout: Duration,
    pub(super) router: Arc<Router>,
    /// Counts the outcome when the wait ends.
    pub(super) metrics: Arc<crate::metrics::RequestMetrics>,
    /// The request's `send` span ([`crate::trace`]), open until the wait ends or the handle is dropped.
    pub(super) span: tracing::Span,
}

impl std::fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReply")
            .field("id", &self.id)
            .field("service", &self.keys.tag())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PendingReply {
    /// The request id: what finds the request and its reply after this handle is gone
    /// ([`call_info`](crate::Requester::call_info), [`stored_reply`](crate::Requester::stored_reply)).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn channel(&self) -> &str {
        self.channel.as_deref().unwrap_or_default()
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            id: self.id.clone(),
            timeout: self.timeout,
        }
    }

    /// Waits for the reply until the request's timeout (counted from `send`). On timeout, looks once for a
    /// stored reply before returning [`Error::Timeout`].
    ///
    /// # Errors
    /// - [`Error::Timeout`] naming the id when no reply came in time and none is stored: the request may still be
    ///   handled later;
    /// - [`Error::Lost`] when Redis lost the accepted request (gone after a reconnect), before the timeout;
    /// - the responder's answer: [`Error::Handler`] (the handler's code, or the responder's `invalid_params` and
    ///   `payload_too_large`), [`Error::UnknownFunction`], [`Error::Malformed`], [`Error::DeadLettered`] (after
    ///   `max_deliveries`), [`Error::Expired`], [`Error::Cancelled`] (cancelled by id);
    /// - [`Error::Decode`] when the reply envelope, or its data as `R`, does not decode.
    ///
    /// Never [`Error::Unavailable`] or [`Error::Redis`]: the request was sent, so a Redis unreachable at the last
    /// look still means [`Error::Timeout`].
    pub async fn wait<R: DeserializeOwned>(self) -> Result<R> {
        let started = self.deadline - self.timeout;
        let metrics = self.metrics.clone();
        let span = self.span.clone();
        let result = self.wait_inner().instrument(span.clone()).await;
        metrics.record(result.as_ref().map(|_| ()), started.elapsed());
        crate::trace::record_outcome(&span, result.as_ref().err().map(|e| e.kind().as_str()));
        result
    }

    async fn wait_inner<R: DeserializeOwned>(mut self) -> Result<R> {
        let Some(rx) = self.rx.take() else {
            return Err(self.timed_out());
        };
        let reply = match tokio::time::timeout_at(self.deadline.into(), rx).await {
            Ok(Ok(Delivery::Reply(reply))) => reply,
            Ok(Ok(Delivery::Lost)) => {
                return Err(Error::Lost {
                    id: self.id.clone(),
                });
            }
            // The waiter was dropped without a reply (router shut down) or the time is up: last look. When Redis
            // is unreachable right then, the answer is still a timeout: the request was sent and may be handled
            // later, which an "unavailable, nothing was sent" error would deny.
            _ => match async {
                let con = self.router.connection()?;
                fetch_stored(&self.router, con, &self.keys, &self.id).await
            }
            .await
            {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(self.timed_out()),
                Err(err) => {
                    tracing::debug!(id = %self.id, error = %err, "no last look at the stored reply");
                    return Err(self.timed_out());
                }
            },
        };
        interpret_reply(&self.id, reply)
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            self.router.release(channel);
        }
    }
}

/// Turns a reply envelope into the caller's result.
pub(super) fn interpret_reply<R: DeserializeOwned>(id: &str, reply: ReplyEnvelope) -> Result<R> {
    let message = reply.message.unwrap_or_default();
    let code = reply.code.unwrap_or_default();
    match reply.status {
        ReplyStatus::Ok => protocol::decode(reply.data.as_deref().unwrap_or(&[0xc0]), "reply data"),
        ReplyStatus::DeadLettered => Err(Error::DeadLettered {
            id: id.to_owned(),
            reason: message,
        }),
        ReplyStatus::Expired => Err(Error::Expired { id: id.to_owned() }),
        ReplyStatus::Error => Err(match code.as_str() {
            codes::UNKNOWN_FUNCTION => Error::UnknownFunction {
                id: id.to_owned(),
                func_key: message,
            },
            codes::MALFORMED => Error::Malformed {
                id: id.to_owned(),
                message,
            },
            codes::CANCELLED => Error::Cancelled { id: id.to_owned() },
            _ => Error::Handler {
                id: id.to_owned(),
                code,
                message,
            },
        }),
    }
}
