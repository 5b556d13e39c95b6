//! The pending entries of a consumer group, a page at a time: who holds each, how long it has been idle, how often
//! it was delivered, and which request it is. What `stats` sums up as `pending`, one entry per row, for an operator
//! looking for the stuck one.

use redis::streams::{StreamPendingCountReply, StreamRangeReply};
use serde::Serialize;

use super::Admin;
use super::pager::page_end;
use crate::error::{Error, Result};
use crate::protocol::FIELD_ID;
use crate::protocol::entry::{check_entry_id, parse_entry_id};

/// Most entries [`Admin::pending_entries`] returns per call: each costs a read of its stream entry.
pub const MAX_PENDING_PAGE: usize = 1000;

/// One entry delivered to a consumer of a group and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PendingEntry {
    /// Its requests stream entry id.
    pub entry_id: String,
    /// The consumer holding it.
    pub consumer: String,
    /// Time since it was last delivered or its claim refreshed, ms.
    pub idle_ms: u64,
    /// How many times it has been delivered.
    pub deliveries: u64,
    /// The request id its entry carries; `None` when the entry is gone from the stream (trimmed or deleted while
    /// pending) or carries no readable id.
    pub request_id: Option<String>,
    /// The partition whose stream holds it, on a service of several partitions (`None` for one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<usize>,
}

impl Admin {
    /// Up to `limit` pending entries of consumer group `group`, oldest entry first, starting after the entry id
    /// `after` (exclusive; `None` for the start). Page with the last `entry_id` returned. A `limit` of 0 counts as
    /// 1, one over [`MAX_PENDING_PAGE`] as that. A group or stream that does not exist has no pending entries.
    ///
    /// Two round trips: `XPENDING` with a range, then one pipelined `XRANGE` per entry for its request id; on a
    /// service of several partitions, that per partition, merged oldest first (entry ids repeat across partitions:
    /// a page ends with every partition's entries of its last id, so paging skips none, and may hold up to one
    /// entry per other partition more than `limit`).
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `after` is not a stream entry id (`<ms>-<seq>`);
    /// - [`Error::Redis`] when the admin's first connection or a read fails.
    pub async fn pending_entries(
        &self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>> {
        let Some(parts) = self.split() else {
            return self.pending_entries_here(group, after, limit).await;
        };
        let limit = limit.clamp(1, MAX_PENDING_PAGE);
        let mut all = Vec::new();
        for part in parts {
            all.extend(part.pending_entries_here(group, after, limit).await?);
        }
        all.sort_by_key(|e| (parse_entry_id(&e.entry_id), e.partition));
        all.truncate(page_end(&all, limit, |e| parse_entry_id(&e.entry_id)));
        Ok(all)
    }

    /// [`Admin::pending_entries`] of this admin's own stream (one partition's, or the service's only one).
    async fn pending_entries_here(
        &self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PendingEntry>> {
        let start = match after {
            Some(id) => {
                check_entry_id(id, false)?;
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        if !self.has_group(group).await? {
            return Ok(Vec::new());
        }
        let mut con = self.con().await?;
        let requests = self.keys.requests();
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(requests)
            .arg(group)
            .arg(start)
            .arg("+")
            .arg(limit.clamp(1, MAX_PENDING_PAGE))
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing pending entries"))?;
        if reply.ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for p in &reply.ids {
            pipe.cmd("XRANGE").arg(requests).arg(&p.id).arg(&p.id);
        }
        let entries: Vec<StreamRangeReply> = pipe
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading pending entries"))?;
        Ok(reply
            .ids
            .into_iter()
            .zip(entries)
            .map(|(p, entry)| PendingEntry {
                request_id: entry
                    .ids
                    .into_iter()
                    .next()
                    .and_then(|e| e.get::<String>(FIELD_ID)),
                entry_id: p.id,
                consumer: p.consumer,
                idle_ms: p.last_delivered_ms as u64,
                deliveries: p.times_delivered as u64,
                partition: self.partition_index(),
            })
            .collect())
    }
}
