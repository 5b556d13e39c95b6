//! Stats of a service: stream length, per group pending, lag, oldest pending, consumers, dead letters.

use std::collections::HashMap;

use redis::streams::{
    StreamInfoConsumersReply, StreamInfoGroupsReply, StreamPendingCountReply, StreamPendingReply,
    StreamRangeReply,
};
use serde::Serialize;

use super::pager::Pager;

/// What reading the groups' details reports in errors.
const READING_GROUPS: &str = "reading group stats";
use super::Admin;
use crate::error::{Error, Result};
use crate::protocol::entry::parse_entry_id;

/// A snapshot of one service, as `redcall stats` shows it. Taken with a few round trips, so the numbers of
/// different groups may be a few milliseconds apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServiceStats {
    /// The service.
    pub service: String,
    /// Entries in the requests stream (handled ones too, until trimmed by the retention policy).
    pub stream_length: u64,
    /// The oldest entry id in the requests stream.
    pub first_entry_id: Option<String>,
    /// The newest entry id in the requests stream.
    pub last_entry_id: Option<String>,
    /// Entries ever added to the requests stream (`XINFO STREAM`'s `entries-added`), trimmed ones included: its
    /// growth between two snapshots is the request rate, which the stream length (trimmed) cannot give. `None`
    /// when there is no stream, or the server is older than Redis 7.0 and does not count them.
    pub entries_added: Option<u64>,
    /// Delayed requests not yet due (in the schedule, not yet in the requests stream).
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Dead letters that name no current group (written before groups were recorded, or by a group since
    /// deleted). With one group, every dead letter is counted for it.
    pub dead_letters_unattributed: u64,
    /// One entry per consumer group, by name.
    pub groups: Vec<GroupStats>,
    /// The Redis server's clock when the snapshot was taken (ages are measured against it), ms since the epoch.
    pub server_time_ms: u64,
    /// For a service of several partitions, each partition's stats, in order (their `partitions` empty); the
    /// fields above are then the totals: lengths, counts and pending summed, groups and consumers merged by name
    /// (lag summed, the oldest pending the oldest of all, a consumer's idle time its least), the first and last
    /// entry ids the least and greatest. Empty for one partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<ServiceStats>,
}

impl ServiceStats {
    /// The totals of several partitions' stats (see [`ServiceStats::partitions`]).
    fn total(service: &str, partitions: Vec<ServiceStats>) -> ServiceStats {
        let mut total = ServiceStats {
            service: service.to_owned(),
            stream_length: 0,
            first_entry_id: None,
            last_entry_id: None,
            entries_added: None,
            delayed: 0,
            dead_letters: 0,
            dead_letters_unattributed: 0,
            groups: Vec::new(),
            server_time_ms: 0,
            partitions: Vec::new(),
        };
        let by_id = |id: &Option<String>| id.as_deref().and_then(parse_entry_id);
        for p in &partitions {
            total.stream_length += p.stream_length;
            if let Some(added) = p.entries_added {
                total.entries_added = Some(total.entries_added.unwrap_or(0) + added);
            }
            total.delayed += p.delayed;
            total.dead_letters += p.dead_letters;
            total.dead_letters_unattributed += p.dead_letters_unattributed;
            total.server_time_ms = total.server_time_ms.max(p.server_time_ms);
            if p.first_entry_id.is_some()
                && (total.first_entry_id.is_none()
                    || by_id(&p.first_entry_id) < by_id(&total.first_entry_id))
            {
                total.first_entry_id = p.first_entry_id.clone();
            }
            if by_id(&p.last_entry_id) > by_id(&total.last_entry_id) {
                total.last_entry_id = p.last_entry_id.clone();
            }
            for g in &p.groups {
                match total.groups.iter_mut().find(|t| t.name == g.name) {
                    None => total.groups.push(g.clone()),
                    Some(t) => t.merge(g),
                }
            }
        }
        total.groups.sort_by(|a, b| a.name.cmp(&b.name));
        total.partitions = partitions;
        total
    }
}

impl GroupStats {
    /// Adds another partition's stats of the same group.
    fn merge(&mut self, other: &GroupStats) {
        self.pending += other.pending;
        self.lag = match (self.lag, other.lag) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.dead_letters += other.dead_letters;
        if parse_entry_id(&other.last_delivered_id) > parse_entry_id(&self.last_delivered_id) {
            self.last_delivered_id = other.last_delivered_id.clone();
        }
        if let Some(o) = &other.oldest_pending
            && self
                .oldest_pending
                .as_ref()
                .is_none_or(|s| o.age_ms > s.age_ms)
        {
            self.oldest_pending = Some(o.clone());
        }
        for c in &other.consumers {
            match self.consumers.iter_mut().find(|s| s.name == c.name) {
                None => self.consumers.push(c.clone()),
                Some(s) => {
                    s.pending += c.pending;
                    s.idle_ms = s.idle_ms.min(c.idle_ms);
                }
            }
        }
        self.consumers.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// One consumer group of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group name.
    pub name: String,
    /// Entries delivered to the group and not yet acknowledged (being handled or waiting for redelivery).
    pub pending: u64,
    /// Entries not yet delivered to the group; `None` when Redis cannot tell (after deletions in the stream).
    pub lag: Option<u64>,
    /// The id of the last entry delivered to the group.
    pub last_delivered_id: String,
    /// The oldest pending entry, if any.
    pub oldest_pending: Option<OldestPending>,
    /// The group's consumers, by name.
    pub consumers: Vec<ConsumerStats>,
    /// Dead letters written by this group.
    pub dead_letters: u64,
}

/// The oldest pending entry of a group: how long the oldest unfinished request has been waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OldestPending {
    /// Its stream entry id.
    pub entry_id: String,
    /// Time since it was added to the stream (server clock), ms.
    pub age_ms: u64,
    /// Time since it was last delivered or its claim refreshed, ms.
    pub idle_ms: u64,
    /// How many times it has been delivered.
    pub deliveries: u64,
    /// The consumer holding it.
    pub consumer: String,
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// The consumer name (a responder; by default `host-pid-random`).
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Time since it last read or claimed, ms.
    pub idle_ms: u64,
}

impl Admin {
    /// A snapshot of the service: see [`ServiceStats`]. A service nobody has used yet (no requests stream) is not an
    /// error: its stats show an empty stream and no groups.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or one of the reads fails, or a reply does not have the
    /// expected shape.
    pub async fn stats(&self) -> Result<ServiceStats> {
        self.stats_with(true).await
    }

    /// [`Admin::stats`] without counting dead letters per group: a fixed handful of round trips per partition
    /// whatever the number of dead letters, for what polls (a dashboard's overview, a metrics sampler, a
    /// heartbeat). [`Admin::stats`] reads the whole dead-letter stream of a service with several groups and dead
    /// letters, to count them per group; here every dead letter of such a service is counted in
    /// [`ServiceStats::dead_letters_unattributed`] and each group's [`GroupStats::dead_letters`] is 0 (with one group,
    /// it still gets them all). Every other number is the same as [`Admin::stats`]'.
    ///
    /// # Errors
    /// As [`Admin::stats`].
    pub async fn stats_summary(&self) -> Result<ServiceStats> {
        self.stats_with(false).await
    }

    /// [`Admin::stats`]; with `attribute` false, dead letters of a service with several groups are not counted per
    /// group (which reads the whole dead-letter stream): [`Admin::stats_summary`].
    pub(crate) async fn stats_with(&self, attribute: bool) -> Result<ServiceStats> {
        if let Some(parts) = self.split() {
            let mut stats = Vec::with_capacity(parts.len());
            for part in parts {
                stats.push(Box::pin(part.stats_with(attribute)).await?);
            }
            return Ok(ServiceStats::total(&self.service, stats));
        }
        let mut con = self.con().await?;
        let requests = self.keys.requests();
        let ((secs, micros), exists, stream_length, dead_letters, first, last, delayed): (
            (u64, u64),
            bool,
            u64,
            u64,
            StreamRangeReply,
            StreamRangeReply,
            u64,
        ) = redis::pipe()
            .cmd("TIME")
            .exists(requests)
            .xlen(requests)
            .xlen(self.keys.dead_letters())
            .cmd("XRANGE")
            .arg(requests)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(requests)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .cmd("ZCARD")
            .arg(self.keys.delayed())
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading stream stats"))?;
        let server_time_ms = secs * 1000 + micros / 1000;

        let mut groups = Vec::new();
        let (info, entries_added): (StreamInfoGroupsReply, Option<u64>) = if exists {
            let (info, stream): (StreamInfoGroupsReply, redis::Value) = redis::pipe()
                .cmd("XINFO")
                .arg("GROUPS")
                .arg(requests)
                .cmd("XINFO")
                .arg("STREAM")
                .arg(requests)
                .query_async(&mut con)
                .await
                .map_err(Error::redis("listing consumer groups"))?;
            (info, entries_added(stream))
        } else {
            (StreamInfoGroupsReply::default(), None)
        };
        if !info.groups.is_empty() {
            // One round trip for every group's pending summary, oldest pending entry and consumers.
            let mut pipe = redis::pipe();
            for group in &info.groups {
                pipe.xpending(requests, &group.name)
                    .xpending_count(requests, &group.name, "-", "+", 1)
                    .xinfo_consumers(requests, &group.name);
            }
            let replies: Vec<redis::Value> = pipe
                .query_async(&mut con)
                .await
                .map_err(Error::redis(READING_GROUPS))?;
            let mut replies = replies.into_iter();
            for group in info.groups {
                let (summary, oldest, consumers) = (
                    parse_reply(replies.next())?,
                    parse_reply(replies.next())?,
                    parse_reply(replies.next())?,
                );
                groups.push(group_stats(
                    group,
                    server_time_ms,
                    summary,
                    oldest,
                    consumers,
                ));
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));

        let mut dead_letters_unattributed = dead_letters;
        if let [only] = groups.as_mut_slice() {
            only.dead_letters = dead_letters;
            dead_letters_unattributed = 0;
        } else if attribute && groups.len() > 1 && dead_letters > 0 {
            let by_group = self.dead_letters_by_group(dead_letters).await?;
            for group in &mut groups {
                group.dead_letters = by_group.get(&group.name).copied().unwrap_or(0);
                dead_letters_unattributed =
                    dead_letters_unattributed.saturating_sub(group.dead_letters);
            }
        }

        Ok(ServiceStats {
            service: self.service.to_string(),
            stream_length,
            first_entry_id: first.ids.into_iter().next().map(|e| e.id),
            last_entry_id: last.ids.into_iter().next().map(|e| e.id),
            entries_added,
            delayed,
            dead_letters,
            dead_letters_unattributed,
            groups,
            server_time_ms,
            partitions: Vec::new(),
        })
    }
}

/// The `entries-added` field of an `XINFO STREAM` reply (a RESP2 array of names and values, or a RESP3 map);
/// `None` when the server does not report it.
fn entries_added(reply: redis::Value) -> Option<u64> {
    let pairs: Vec<(redis::Value, redis::Value)> = match reply {
        redis::Value::Map(pairs) => pairs,
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return None,
    };
    pairs.into_iter().find_map(|(name, value)| {
        let name: String = redis::from_redis_value(name).ok()?;
        if name == "entries-added" {
            redis::from_redis_value(value).ok()
        } else {
            None
        }
    })
}

/// One reply of the groups' pipeline, as `T` (a missing reply is refused like a malformed one).
fn parse_reply<T: redis::FromRedisValue>(reply: Option<redis::Value>) -> Result<T> {
    redis::from_redis_value(reply.unwrap_or(redis::Value::Nil))
        .map_err(|e| Error::redis(READING_GROUPS)(e.into()))
}

/// What `stats` reports of one group, from its `XINFO GROUPS` entry and the replies read for it.
fn group_stats(
    group: redis::streams::StreamInfoGroup,
    server_time_ms: u64,
    summary: StreamPendingReply,
    oldest: StreamPendingCountReply,
    consumers: StreamInfoConsumersReply,
) -> GroupStats {
    let oldest_pending = oldest.ids.into_iter().next().map(|p| {
        let added_ms = parse_entry_id(&p.id).map_or(server_time_ms, |(ms, _)| ms);
        OldestPending {
            age_ms: server_time_ms.saturating_sub(added_ms),
            idle_ms: p.last_delivered_ms as u64,
            deliveries: p.times_delivered as u64,
            consumer: p.consumer,
            entry_id: p.id,
        }
    });
    let mut consumers: Vec<ConsumerStats> = consumers
        .consumers
        .into_iter()
        .map(|c| ConsumerStats {
            name: c.name,
            pending: c.pending as u64,
            idle_ms: c.idle as u64,
        })
        .collect();
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    GroupStats {
        pending: summary.count() as u64,
        lag: group.lag.map(|l| l as u64),
        last_delivered_id: group.last_delivered_id,
        oldest_pending,
        consumers,
        dead_letters: 0,
        name: group.name,
    }
}

impl Admin {
    /// Counts dead letters per group by reading the dead-letter stream (its `group` field), a page at a time. Only
    /// needed when a service has several groups.
    async fn dead_letters_by_group(&self, total: u64) -> Result<HashMap<String, u64>> {
        let mut con = self.con().await?;
        let mut counts = HashMap::new();
        let stream = self.keys.dead_letters();
        let mut pager = Pager::new(stream, "-", "+", total, "counting dead letters per group");
        while let Some(ids) = pager.next(&mut con).await? {
            // A dead letter without a `group` field stays unattributed.
            for group in ids.iter().filter_map(|e| e.get::<String>("group")) {
                *counts.entry(group).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
}
