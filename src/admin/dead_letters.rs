//! The dead-letter stream: list, show and purge its entries (replay lives in `replay.rs`).

use redis::Value;
use redis::streams::{StreamId, StreamRangeReply};
use serde::Serialize;

use super::Admin;
use super::pager::page_end;
use crate::error::{Error, Result};
use crate::protocol::entry::{check_entry_id, parse_entry_id};
use crate::protocol::{self, FIELD_ENVELOPE, FIELD_ID, RequestEnvelope};
use crate::scripts;

/// Ids removed per `XDEL` (and per purge script call) in a purge.
const PURGE_CHUNK: usize = 500;

/// One entry of the dead-letter stream: a request that could not be handled, why, and how to replay it.
///
/// Every field is read defensively: an entry written by hand or by an older version may lack some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetterEntry {
    /// The dead-letter stream entry id: what `redcall dlq show|replay|purge` take.
    pub dead_id: String,
    /// The request id, when the entry had one.
    pub request_id: Option<String>,
    /// The function key (empty when the envelope could not be decoded when dead-lettered).
    pub func_key: Option<String>,
    /// Why it was dead-lettered (`unknown_function`, `max_deliveries_exceeded`, `malformed_request`, ...).
    pub reason: String,
    /// The last error seen.
    pub error: String,
    /// Deliveries when it was dead-lettered.
    pub deliveries: Option<u64>,
    /// The requests stream entry it came from.
    pub entry_id: Option<String>,
    /// When it was dead-lettered, ms since the epoch.
    pub dead_at_ms: Option<u64>,
    /// The consumer group that gave up on it.
    pub group: Option<String>,
    /// The partition whose dead-letter stream holds it, for a service of several partitions (`None` for one).
    /// Dead-letter ids are unique within a partition only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<usize>,
    /// The request envelope as it was in the stream (MessagePack); decode with [`DeadLetterEntry::request`].
    #[serde(skip)]
    pub envelope: Option<Vec<u8>>,
}

impl DeadLetterEntry {
    /// Decodes the request envelope (function key, params, deadline, replay info), to see what a replay would run.
    ///
    /// # Errors
    /// [`Error::Decode`] when the entry carries no envelope, or one that does not decode (garbage, or another format
    /// version): such a dead letter cannot be replayed, only purged.
    pub fn request(&self) -> Result<RequestEnvelope> {
        match &self.envelope {
            Some(bytes) if !bytes.is_empty() => protocol::decode_request(bytes),
            _ => Err(Error::Decode {
                what: "request envelope",
                message: format!("dead letter {} carries no envelope", self.dead_id),
            }),
        }
    }

    pub(crate) fn from_stream_id(entry: StreamId) -> Self {
        let text = |name: &str| entry.map.get(name).and_then(value_text);
        let number = |name: &str| text(name).and_then(|t| t.parse().ok());
        Self {
            request_id: text(FIELD_ID).filter(|s| !s.is_empty()),
            func_key: text("fn").filter(|s| !s.is_empty()),
            reason: text("reason").unwrap_or_default(),
            error: text("error").unwrap_or_default(),
            deliveries: number("deliveries"),
            entry_id: text("entry_id").filter(|s| !s.is_empty()),
            dead_at_ms: number("dead_at_ms"),
            group: text("group").filter(|s| !s.is_empty()),
            envelope: match entry.map.get(FIELD_ENVELOPE) {
                Some(Value::BulkString(b)) if !b.is_empty() => Some(b.clone()),
                _ => None,
            },
            dead_id: entry.id,
            partition: None,
        }
    }

    /// This entry, read from partition `partition` (kept for a service of several partitions).
    pub(crate) fn in_partition(mut self, partition: Option<usize>) -> Self {
        self.partition = partition;
        self
    }
}

/// What a purge by id did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Dead letters removed.
    pub purged: u64,
    /// The ids given that were not in the dead-letter stream, in the order given.
    pub not_found: Vec<String>,
}

/// `ids` without repeats, in their first order.
pub(super) fn distinct(ids: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// A field value as text, when it is text.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Admin {
    /// Number of entries in the dead-letter stream: what waits for an operator.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or the `XLEN` fails.
    pub async fn dead_letter_count(&self) -> Result<u64> {
        if let Some(parts) = self.split() {
            let mut total = 0;
            for part in parts {
                total += Box::pin(part.dead_letter_count()).await?;
            }
            return Ok(total);
        }
        let mut con = self.con().await?;
        redis::cmd("XLEN")
            .arg(self.keys.dead_letters())
            .query_async(&mut con)
            .await
            .map_err(Error::redis("counting dead letters"))
    }

    /// Up to `limit` dead letters, oldest first, starting after the dead-letter id `after` (exclusive; `None`
    /// for the start). Page with the last `dead_id` returned. A `limit` of 0 counts as 1. On a service of several
    /// partitions a page may hold up to one entry per other partition more than `limit`: those of its last id.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `after` is not a stream entry id (`<ms>-<seq>`);
    /// - [`Error::Redis`] when the admin's first connection or the read fails.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>> {
        let start = match after {
            Some(id) => {
                check_entry_id(id, false)?;
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        if let Some(parts) = self.split() {
            // Each partition's next page, merged oldest first: the first `limit` of them are the next page of all.
            let mut all = Vec::new();
            for part in parts {
                all.extend(Box::pin(part.dead_letters(after, limit)).await?);
            }
            all.sort_by_key(|e| parse_entry_id(&e.dead_id));
            // Ids repeat across partitions (they write in the same millisecond): the page ends with every
            // partition's entries of its last id, so paging on after that id leaves none out.
            all.truncate(page_end(&all, limit, |e| parse_entry_id(&e.dead_id)));
            return Ok(all);
        }
        let mut con = self.con().await?;
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.dead_letters())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing dead letters"))?;
        Ok(page
            .ids
            .into_iter()
            .map(|e| DeadLetterEntry::from_stream_id(e).in_partition(self.partition))
            .collect())
    }

    /// One dead letter by its dead-letter stream id; [`Error::EntryNotFound`] when there is none (never existed,
    /// replayed or purged).
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `dead_id` is not a stream entry id (`<ms>-<seq>`);
    /// - [`Error::EntryNotFound`] when the dead-letter stream has no such entry;
    /// - [`Error::Redis`] when the admin's first connection or the read fails.
    pub async fn dead_letter(&self, dead_id: &str) -> Result<DeadLetterEntry> {
        check_entry_id(dead_id, false)?;
        if let Some(parts) = self.split() {
            // The first partition that has it (ids are unique within a partition only).
            for part in parts {
                match Box::pin(part.dead_letter(dead_id)).await {
                    Err(Error::EntryNotFound { .. }) => continue,
                    found => return found,
                }
            }
            return Err(Error::EntryNotFound {
                stream: "dead-letter",
                entry_id: dead_id.to_owned(),
            });
        }
        let mut con = self.con().await?;
        let found: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.dead_letters())
            .arg(dead_id)
            .arg(dead_id)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading a dead letter"))?;
        found
            .ids
            .into_iter()
            .next()
            .map(|e| DeadLetterEntry::from_stream_id(e).in_partition(self.partition))
            .ok_or_else(|| Error::EntryNotFound {
                stream: "dead-letter",
                entry_id: dead_id.to_owned(),
            })
    }

    /// Removes the given dead letters (each id once, however often it is given). The report says how many were
    /// removed and which ids did not exist (never existed, already replayed or purged); `progress` gets the number
    /// of ids processed so far. Stored replies and records of their requests expire by their TTLs.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when one of `dead_ids` is not a stream entry id: checked before anything is
    ///   removed;
    /// - [`Error::Redis`] when the admin's first connection or an `XDEL` fails. The chunks before it stay removed
    ///   (`progress` has been told how far it got); purging the same ids again finishes the job.
    pub async fn purge_dead_letters(
        &self,
        dead_ids: &[String],
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<PurgeReport> {
        for id in dead_ids {
            check_entry_id(id, false)?;
        }
        if let Some(parts) = self.split() {
            // Each id from every partition that has it; not found only when no partition had it.
            let mut report = PurgeReport::default();
            let mut missing: Option<Vec<String>> = None;
            for part in parts {
                let done = part.purge_here(dead_ids, &mut |_| {}).await?;
                report.purged += done.purged;
                missing = Some(match missing {
                    None => done.not_found,
                    Some(m) => {
                        // Up to 10,000 ids each: a set, not a scan of the list per id.
                        let here: std::collections::HashSet<&str> =
                            done.not_found.iter().map(String::as_str).collect();
                        m.into_iter()
                            .filter(|id| here.contains(id.as_str()))
                            .collect()
                    }
                });
            }
            report.not_found = missing.unwrap_or_default();
            progress(distinct(dead_ids).len() as u64);
            return Ok(report);
        }
        self.purge_here(dead_ids, &mut progress).await
    }

    /// [`Admin::purge_dead_letters`] on this admin's dead-letter stream alone.
    async fn purge_here(
        &self,
        dead_ids: &[String],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PurgeReport> {
        let dead_ids = distinct(dead_ids);
        let mut con = self.con().await?;
        let mut report = PurgeReport::default();
        let mut done = 0;
        for chunk in dead_ids.chunks(PURGE_CHUNK) {
            // One XDEL per id, so the answer says which existed.
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("XDEL").arg(self.keys.dead_letters()).arg(*id);
            }
            let removed: Vec<u64> = pipe
                .query_async(&mut con)
                .await
                .map_err(Error::redis("purging dead letters"))?;
            for (id, n) in chunk.iter().zip(removed) {
                if n == 0 {
                    report.not_found.push((*id).to_owned());
                }
                report.purged += n;
            }
            done += chunk.len() as u64;
            progress(done);
        }
        Ok(report)
    }

    /// Removes every dead letter that existed when the purge started (dead letters added meanwhile are kept), a
    /// chunk per script call so Redis is never blocked long. Returns how many were removed; `progress` gets the
    /// running count.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection, reading the stream's bounds or a purge script call fails.
    /// What was removed before stays removed; purging again removes the rest.
    pub async fn purge_all_dead_letters(
        &self,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        if let Some(parts) = self.split() {
            let mut removed = 0;
            for part in parts {
                let base = removed;
                removed += part.purge_all_here(&mut |n| progress(base + n)).await?;
            }
            return Ok(removed);
        }
        self.purge_all_here(&mut progress).await
    }

    /// [`Admin::purge_all_dead_letters`] on this admin's dead-letter stream alone.
    async fn purge_all_here(&self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let Some(bound) = self.last_entry_id(self.keys.dead_letters()).await? else {
            return Ok(0);
        };
        let total = self.dead_letter_count().await?;
        let mut con = self.con().await?;
        let mut removed = 0;
        // Bounded: each call removes at least one entry at or below `bound`, or ends the loop.
        for _ in 0..=total / PURGE_CHUNK as u64 + 1 {
            let mut pipe = redis::pipe();
            scripts::evalsha(&mut pipe, &scripts::PURGE_UPTO)
                .arg(1)
                .arg(self.keys.dead_letters())
                .arg(&bound)
                .arg(PURGE_CHUNK);
            let (n,): (u64,) = scripts::query_with_scripts(&pipe, &mut con)
                .await
                .map_err(Error::redis("purging dead letters"))?;
            if n == 0 {
                break;
            }
            removed += n;
            progress(removed);
        }
        Ok(removed)
    }
}
