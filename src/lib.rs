//! # redcall — durable request-response over Redis
//!
//! One program asks another to run a named function with parameters and waits for the reply, without the two
//! knowing each other. Requests are appended to a Redis Stream and consumed through a consumer group; a responder
//! acknowledges only after handling, so a request survives a responder crash. Replies come back over pub/sub on
//! a channel keyed by the request id, with a stored copy for a requester that missed the message.
//!
//! The three original operations:
//! - [`Requester::request`]`(id, func_key, params, timeout)`: store the request durably, wait for its reply;
//! - [`Requester::call_info`]`(id)`: the `(func_key, params)` of a request, in O(1);
//! - [`Requester::publish_reply`]`(id, data)`: answer a request by id.
//!
//! ## Requesting
//! ```no_run
//! # async fn demo() -> redcall::Result<()> {
//! use std::time::Duration;
//! let client = redcall::Client::open("redis://127.0.0.1:6379")?;
//! let orders = client.requester("orders");
//! let total: i64 = orders.request("request_123", "double", &21, Duration::from_secs(5)).await?;
//! assert_eq!(total, 42);
//! # Ok(()) }
//! ```
//!
//! ## Responding
//! ```no_run
//! # async fn demo() -> redcall::Result<()> {
//! use redcall::{HandlerError, RequestContext};
//! let client = redcall::Client::open("redis://127.0.0.1:6379")?;
//! let responder = client
//!     .responder("orders")
//!     .concurrency(32)
//!     .handler("double", |_ctx: RequestContext, n: i64| async move { Ok::<_, HandlerError>(n * 2) })
//!     .start()
//!     .await?;
//! // ... later: finish in-flight work, leave the rest pending for others.
//! responder.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! See `docs/protocol.md` for the wire format and `docs/guarantees.md` for what happens on each failure.

#![warn(missing_debug_implementations, missing_docs)]

pub mod admin;
mod backoff;
mod client;
mod config;
mod connect_error;
mod connection;
mod durability;
mod error;
pub mod metrics;
mod names;
mod partition_count;
pub mod protocol;
mod requester;
mod responder;
mod retention;
mod router;
mod scripts;
pub mod trace;

pub use client::{Client, ClientBuilder, RedisConnection};
pub use durability::Durability;
pub use error::{ConnectFailure, Error, ErrorKind, Result};
pub use requester::{CallInfo, PendingReply, ProgressUpdates, Requester, new_request_id};
pub use responder::in_handler::in_handler;
pub use responder::reaper::{ReapReport, Reaper};
pub use responder::{
    HandlerError, RequestContext, Responder, ResponderBuilder, ResponderSettings, RetryPolicy,
};
pub use retention::{RetentionPolicy, TrimReport};
pub use trace::{RequestOptions, TraceContext, TraceParent};

/// The README's examples, compiled as doc tests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
