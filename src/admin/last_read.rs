//! When a service's requests were last read: is anyone serving it?
//!
//! Redis keeps, per consumer, the time since it last read or claimed (`XINFO CONSUMERS`: `idle`). From Redis 7.2 (and
//! on every Valkey) it is refreshed by every `XREADGROUP`, `XCLAIM` and `XAUTOCLAIM` the consumer runs, even one
//! that finds nothing; before 7.2 only by those that return entries (checked on Redis 7.0.15: `idle` keeps growing
//! through empty reads, and a consumer is not even created by one). A live redcall responder with a free handler
//! slot reads every block time (1 s by default); one whose slots are all busy still refreshes its claims every third
//! of the visibility timeout and reaps every quarter of it. So from 7.2 a freshest idle time much longer than those
//! means no responder is running, or none can get to the service's requests; before 7.2 it may also mean a live
//! responder had nothing to read (the heartbeat records of [`Admin::responders`] tell those apart).

use std::time::Duration;

use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
use serde::Serialize;

use super::Admin;
use crate::error::{Error, Result};

/// What a service's consumer groups say about its responders' reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LastRead {
    /// Consumer groups of the requests stream (none: no responder has ever started, or the stream does not exist).
    pub groups: usize,
    /// Consumers over every group (a responder removed as dead by a reaper is no longer counted).
    pub consumers: usize,
    /// The consumer seen most recently, if any.
    pub freshest: Option<SeenConsumer>,
}

/// A consumer and when it last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SeenConsumer {
    /// Its group.
    pub group: String,
    /// Its name.
    pub consumer: String,
    /// Time since it last read or claimed, ms.
    pub idle_ms: u64,
}

impl LastRead {
    /// Whether some consumer read or claimed within `within`.
    pub fn read_within(&self, within: Duration) -> bool {
        self.freshest
            .as_ref()
            .is_some_and(|c| u128::from(c.idle_ms) < within.as_millis())
    }

    /// The time since the freshest consumer last read, when there is a consumer.
    pub fn idle(&self) -> Option<Duration> {
        self.freshest
            .as_ref()
            .map(|c| Duration::from_millis(c.idle_ms))
    }
}

impl Admin {
    /// When the service's requests were last read, by any consumer of any group: see [`LastRead`]. A service nobody
    /// has used (no requests stream) is not an error: it has no groups.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or one of the reads fails, or a reply does not have the
    /// expected shape.
    pub async fn last_read(&self) -> Result<LastRead> {
        if let Some(parts) = self.split() {
            // Groups and consumers counted once per partition stream; the freshest read of any.
            let mut all = LastRead {
                groups: 0,
                consumers: 0,
                freshest: None,
            };
            for part in parts {
                let read = Box::pin(part.last_read()).await?;
                all.groups = all.groups.max(read.groups);
                all.consumers = all.consumers.max(read.consumers);
                if let Some(f) = read.freshest
                    && all.freshest.as_ref().is_none_or(|a| f.idle_ms < a.idle_ms)
                {
                    all.freshest = Some(f);
                }
            }
            return Ok(all);
        }
        let mut con = self.con().await?;
        let requests = self.keys.requests();
        let exists: bool = redis::cmd("EXISTS")
            .arg(requests)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("looking for the requests stream"))?;
        let mut read = LastRead {
            groups: 0,
            consumers: 0,
            freshest: None,
        };
        if !exists {
            return Ok(read);
        }
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(requests)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing consumer groups"))?;
        read.groups = info.groups.len();
        if info.groups.is_empty() {
            return Ok(read);
        }
        let mut pipe = redis::pipe();
        for group in &info.groups {
            pipe.xinfo_consumers(requests, &group.name);
        }
        let consumers: Vec<StreamInfoConsumersReply> = pipe
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing consumers"))?;
        for (group, consumers) in info.groups.iter().zip(consumers) {
            for c in consumers.consumers {
                read.consumers += 1;
                let idle_ms = c.idle as u64;
                if read.freshest.as_ref().is_none_or(|f| idle_ms < f.idle_ms) {
                    read.freshest = Some(SeenConsumer {
                        group: group.name.clone(),
                        consumer: c.name,
                        idle_ms,
                    });
                }
            }
        }
        Ok(read)
    }
}
