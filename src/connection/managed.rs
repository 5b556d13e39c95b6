//! The self-reconnecting connection for short commands (the responder's answers, claims and acks, the reaper, the
//! admin), in place of the redis crate's `ConnectionManager`, which reconnects to the address it started with and
//! so never follows a Sentinel failover.
//!
//! The rule: a command that fails in a way that means the connection is no good any more (it was
//! dropped, timed out, or a node that is no longer the primary: [`is_worth_reconnecting`]) retires the connection it ran on; the next command
//! opens a new one through the [`Target`] (for Sentinel: asks the sentinels again). The failing command itself is
//! not retried here: its caller knows whether it is safe to repeat. Reconnects are one at a time, and a command
//! that finds a connection opened meanwhile uses it.

use std::sync::Arc;
use std::sync::Mutex;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::conn::Connection;
use super::is_worth_reconnecting;
use super::target::{ConnectionSettings, Target};
use crate::config::ClientConfig;
use crate::error::Result;

/// A cloneable connection that reconnects through its target. Clones share one connection.
#[derive(Clone)]
pub(crate) struct ManagedConnection {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    cfg: ConnectionSettings,
    /// The connection and its number (so a failure retires only the connection it happened on).
    current: Mutex<Option<(u64, Connection)>>,
    /// Held while opening a connection: one reconnect at a time.
    opening: tokio::sync::Mutex<u64>,
}

/// Whether a pipeline's answer is a node's refusal to write because it is a replica now.
fn is_wrong_role_value(value: &Value) -> bool {
    match value {
        Value::ServerError(err) => err.code() == "READONLY",
        Value::Array(items) => items.iter().any(is_wrong_role_value),
        _ => false,
    }
}

impl ManagedConnection {
    /// Opens the first connection (checking the server's version on the client's first connection).
    ///
    /// # Errors
    /// As [`Target::connect`].
    pub(crate) async fn connect(target: &Target, config: &ClientConfig) -> Result<Self> {
        let cfg = ConnectionSettings::new(config.connect_timeout, config.command_timeout);
        let con = target.connect(&cfg, config, "connecting").await?;
        Ok(ManagedConnection {
            inner: Arc::new(Inner {
                target: target.clone(),
                cfg,
                current: Mutex::new(Some((1, con))),
                opening: tokio::sync::Mutex::new(1),
            }),
        })
    }

    /// A connection that opens on its first command (no version check: that is the client's first connection's).
    pub(crate) fn lazy(target: &Target, config: &ClientConfig) -> Self {
        let cfg = ConnectionSettings::new(config.connect_timeout, config.command_timeout);
        ManagedConnection {
            inner: Arc::new(Inner {
                target: target.clone(),
                cfg,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(0),
            }),
        }
    }

    fn current(&self) -> Option<(u64, Connection)> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current connection, or a new one when there is none.
    async fn get(&self) -> redis::RedisResult<(u64, Connection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut opened = self.inner.opening.lock().await;
        // Another command may have opened one while this one waited for the lock.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let con = self.inner.target.open(&self.inner.cfg).await?;
        *opened += 1;
        let current = (*opened, con);
        *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(current.clone());
        tracing::debug!(connection = *opened, "short-command connection reconnected");
        Ok(current)
    }

    /// Retires connection number `n` after `err`, if `err` calls for it and `n` is still the current one.
    fn failed(&self, n: u64, err: &redis::RedisError) {
        if is_worth_reconnecting(err) {
            self.retire(n);
        }
    }

    /// Retires connection number `n` if it is still the current one.
    fn retire(&self, n: u64) {
        let mut current = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(m, _)| *m == n) {
            *current = None;
        }
    }
}

impl ConnectionLike for ManagedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (n, mut con) = self.get().await?;
            let answer = con.req_packed_command(cmd).await;
            if let Err(err) = &answer {
                self.failed(n, err);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (n, mut con) = self.get().await?;
            let answer = con.req_packed_commands(pipeline, offset, count).await;
            match &answer {
                Err(err) => self.failed(n, err),
                // A pipeline's command errors come back as values (the pipeline turns them into its error later).
                Ok(values) if values.iter().any(is_wrong_role_value) => self.retire(n),
                Ok(_) => {}
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
