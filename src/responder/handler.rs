//! Handlers: plain async functions with serde-typed params and results, registered per function key.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::in_handler::{Entered, Marked};
use crate::protocol::{self, codes};

/// What a handler sees of the request besides its params.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestContext {
    /// The request id.
    pub id: String,
    /// The function key.
    pub func_key: String,
    /// The stream entry id of the request.
    pub entry_id: String,
    /// How many times the request has been delivered, this delivery included.
    pub delivery: u64,
    /// The request's absolute deadline; past it, the requester no longer waits.
    pub deadline: SystemTime,
    /// The handler's trace context: the requester's trace, with the responder's `process` span as parent
    /// (`None` when the request carried no valid trace context). Pass it on
    /// ([`RequestOptions::trace`](crate::RequestOptions::trace)) so that requests made while handling this one
    /// join its trace.
    pub trace: Option<crate::trace::TraceContext>,
    /// Cancelled when the request is cancelled by id while its handler runs.
    pub(crate) cancel: CancellationToken,
    /// Where progress goes (one per responder).
    pub(crate) progress: Arc<super::progress::ProgressSink>,
}

impl RequestContext {
    /// The handler's `traceparent` (see [`RequestContext::trace`]).
    pub fn traceparent(&self) -> Option<crate::trace::TraceParent> {
        self.trace.as_ref().map(|t| t.traceparent)
    }

    /// Time left until the deadline (zero when it has passed): a bound for the handler's own calls, since past the
    /// deadline nobody waits for the result.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the request was cancelled by id ([`crate::Requester::cancel`]) while this handler runs. The caller
    /// has its `Cancelled` answer already; whatever the handler returns now is dropped, so it may as well stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports progress: `value` (any serde value) becomes the request's last progress, shown by `redcall status`,
    /// and is published to a caller watching [`crate::PendingReply::progress`]. Only the last value is kept.
    ///
    /// # Errors
    /// [`crate::Error::Encode`] when `value` cannot be encoded, [`crate::Error::PayloadTooLarge`] when it is over
    /// the payload limit, [`crate::Error::Redis`] when Redis cannot be written to; the request itself goes on.
    pub async fn progress<T: Serialize + ?Sized>(&self, value: &T) -> crate::Result<()> {
        let data = protocol::encode(value)?;
        self.progress.report(&self.id, data).await
    }

    /// Resolves when the request is cancelled by id (never, if it is not): select on it to stop work at once.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }
}

/// A handler's failure, which says what should happen next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Answer the requester with an error (code and message); the request is done.
    Fail {
        /// Machine-readable code.
        code: String,
        /// Human-readable message.
        message: String,
    },
    /// Do not answer; deliver the request again after the responder's retry backoff (see
    /// [`crate::RetryPolicy`]), and dead-letter it after `max_deliveries`.
    Retry {
        /// Why, kept as the last error for the dead-letter record.
        reason: String,
    },
    /// Like [`HandlerError::Retry`], but deliver the request again after `delay` instead of the policy's backoff
    /// (say, the time a rate limit named).
    RetryAfter {
        /// Why, kept as the last error for the dead-letter record.
        reason: String,
        /// How long to wait before the next delivery.
        delay: Duration,
    },
}

impl HandlerError {
    /// An error reply with a code and a message.
    pub fn fail(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Fail {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A request to deliver the request again later, after the responder's retry backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        HandlerError::Retry {
            reason: reason.into(),
        }
    }

    /// A request to deliver the request again after `delay` (the last delivery allowed is dead-lettered at once).
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Self {
        HandlerError::RetryAfter {
            reason: reason.into(),
            delay,
        }
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    /// Any error type converts into an error reply with code `handler_error`, so handlers can use `?`.
    fn from(err: E) -> Self {
        HandlerError::fail(codes::HANDLER, err.to_string())
    }
}

/// What running a handler on raw params produced.
pub(crate) enum Outcome {
    /// The result, encoded.
    Reply(Vec<u8>),
    /// The handler failed or asked for a retry.
    Failed(HandlerError),
    /// The params did not decode into the handler's type.
    InvalidParams(String),
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A type-erased handler: raw MessagePack params in, an [`Outcome`] out.
pub(crate) type ErasedHandler = Arc<dyn Fn(RequestContext, &[u8]) -> BoxFuture + Send + Sync>;

/// Wraps a typed async function into an [`ErasedHandler`].
pub(crate) fn erase<P, R, F, Fut>(f: F) -> ErasedHandler
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(RequestContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |ctx: RequestContext, raw: &[u8]| -> BoxFuture {
        // Decoding the params and building the future run the application's code (its `Deserialize`, its function).
        let _entered = Entered::new();
        let params: P = match protocol::decode(raw, "request params") {
            Ok(p) => p,
            Err(err) => {
                let message = err.to_string();
                return Box::pin(async move { Outcome::InvalidParams(message) });
            }
        };
        let fut = f(ctx, params);
        Box::pin(async move {
            let fut = std::pin::pin!(fut);
            let outcome = Marked(fut).await;
            // Encoding runs the application's `Serialize`.
            let _entered = Entered::new();
            match outcome {
                Ok(result) => match protocol::encode(&result) {
                    Ok(bytes) => Outcome::Reply(bytes),
                    Err(err) => {
                        Outcome::Failed(HandlerError::fail(codes::HANDLER, err.to_string()))
                    }
                },
                Err(err) => Outcome::Failed(err),
            }
        })
    })
}
