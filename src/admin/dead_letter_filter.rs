//! Dead letters chosen by what they are, not by id: a [`DeadLetterFilter`] (function key, reason) applied while
//! paging through the dead-letter stream, for a dashboard's filtered list and for "replay or purge everything that
//! matches".
//!
//! The stream is not indexed by function key or reason, so a filtered read walks it. Each call is bounded: a page
//! reads at most [`SCAN_LIMIT`] entries and says where it stopped ([`DeadLetterPage::next_after`]), so a filter
//! that matches nothing in a long stream costs a bounded read per call, never the whole stream at once. Collecting
//! every match ([`Admin::dead_letter_ids_matching`]) walks the stream up to its newest entry when the walk began,
//! with the same [`Pager`] as every other walk (see its termination argument).

use serde::{Deserialize, Serialize};

use super::pager::{Pager, page_end};
use super::{Admin, DeadLetterEntry};
use crate::error::Result;
use crate::protocol::entry::{check_entry_id, parse_entry_id};

/// Most dead letters one [`Admin::dead_letters_matching`] call reads, matching or not.
pub const SCAN_LIMIT: u64 = 10_000;

/// Which dead letters to take: every condition given must hold; an empty filter takes all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// Only dead letters of requests for this function key.
    pub func_key: Option<String>,
    /// Only dead letters with this reason (`unknown_function`, `max_deliveries_exceeded`, ...).
    pub reason: Option<String>,
}

impl DeadLetterFilter {
    /// A filter that takes every dead letter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only dead letters for `func_key`.
    pub fn func_key(mut self, func_key: impl Into<String>) -> Self {
        self.func_key = Some(func_key.into());
        self
    }

    /// Only dead letters with `reason`.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Whether it takes every dead letter.
    pub fn is_empty(&self) -> bool {
        self.func_key.is_none() && self.reason.is_none()
    }

    /// Whether `entry` passes.
    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        self.func_key
            .as_ref()
            .is_none_or(|f| entry.func_key.as_ref() == Some(f))
            && self.reason.as_ref().is_none_or(|r| &entry.reason == r)
    }
}

/// One page of a filtered read of the dead-letter stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// The matching dead letters, oldest first.
    pub entries: Vec<DeadLetterEntry>,
    /// Where the next page starts (pass it as `after`): the last entry read, when the read stopped before the end
    /// of the stream (the page was full, or [`SCAN_LIMIT`] entries were read); `None` at the end.
    pub next_after: Option<String>,
    /// Entries read to fill this page, matching or not.
    pub scanned: u64,
}

impl DeadLetterPage {
    /// The page of all of several partitions' pages (each read from the same `after` with the same `limit`): their
    /// entries oldest first, up to the least `next_after` of them (past it some partition has not been read), at
    /// most `limit` of them plus the other partitions' entries of the last one's id.
    fn merge(pages: Vec<DeadLetterPage>, limit: usize) -> DeadLetterPage {
        let limit = limit.max(1);
        let bound = pages
            .iter()
            .filter_map(|p| p.next_after.as_deref().and_then(parse_entry_id))
            .min();
        let scanned = pages.iter().map(|p| p.scanned).sum();
        let mut entries: Vec<DeadLetterEntry> = pages
            .into_iter()
            .flat_map(|p| p.entries)
            .filter(|e| bound.is_none_or(|b| parse_entry_id(&e.dead_id).is_some_and(|id| id <= b)))
            .collect();
        entries.sort_by_key(|e| parse_entry_id(&e.dead_id));
        let keep = page_end(&entries, limit, |e| parse_entry_id(&e.dead_id));
        let next_after = if entries.len() > keep {
            // Cut after the `limit`-th entry and every other partition's entry of the same id (ids repeat across
            // partitions, which write in the same millisecond), so going on after that id leaves none out.
            entries.truncate(keep);
            entries.last().map(|e| e.dead_id.clone())
        } else {
            bound.map(|(ms, seq)| format!("{ms}-{seq}"))
        };
        DeadLetterPage {
            entries,
            next_after,
            scanned,
        }
    }
}

impl Admin {
    /// Up to `limit` dead letters that pass `filter`, oldest first, starting after the dead-letter id `after`
    /// (exclusive; `None` for the start), reading at most [`SCAN_LIMIT`] entries. Page with
    /// [`DeadLetterPage::next_after`]. A `limit` of 0 counts as 1. With an empty filter this is
    /// [`Admin::dead_letters`] plus where to go on.
    ///
    /// For a service of several partitions, each partition's page is read and they are merged oldest first (by
    /// id), up to where every partition was read: `next_after` then goes on from there in every partition. Ids are
    /// unique within a partition only (partitions that dead-letter in the same millisecond repeat them): a page
    /// ends with every partition's entries of its last id, so it may hold up to one entry per other partition more
    /// than `limit`, and none is left out of the walk. Each entry's [`DeadLetterEntry::partition`] says where it is.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `after` is not a stream entry id (`<ms>-<seq>`);
    /// - [`Error::Redis`](crate::Error::Redis) when the admin's first connection or a read fails.
    pub async fn dead_letters_matching(
        &self,
        filter: &DeadLetterFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage> {
        let limit = limit.max(1);
        let start = match after {
            Some(id) => {
                check_entry_id(id, false)?;
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        if let Some(parts) = self.split() {
            let mut pages = Vec::with_capacity(parts.len());
            for part in parts {
                pages.push(Box::pin(part.dead_letters_matching(filter, after, limit)).await?);
            }
            return Ok(DeadLetterPage::merge(pages, limit));
        }
        let mut con = self.con().await?;
        let stream = self.keys.dead_letters();
        let mut page = DeadLetterPage::default();
        let mut pager = Pager::new(stream, &start, "+", SCAN_LIMIT, "listing dead letters");
        let mut last_read = None;
        let mut stopped_early = false;
        'walk: while let Some(ids) = pager.next(&mut con).await? {
            for id in ids {
                page.scanned += 1;
                let entry = DeadLetterEntry::from_stream_id(id).in_partition(self.partition);
                last_read = Some(entry.dead_id.clone());
                if filter.matches(&entry) {
                    page.entries.push(entry);
                }
                if page.entries.len() >= limit || page.scanned >= SCAN_LIMIT {
                    stopped_early = true;
                    break 'walk;
                }
            }
        }
        if stopped_early {
            // Stopped on the stream's newest entry: nothing follows, so send the caller to no empty page.
            let newest = self.last_entry_id(stream).await?;
            if newest != last_read {
                page.next_after = last_read;
            }
        }
        Ok(page)
    }

    /// The ids of every dead letter that passes `filter`, oldest first, among those that existed when the walk
    /// began: what "replay (or purge) all that match" works on. Reads the whole dead-letter stream a page at a time.
    ///
    /// # Errors
    /// [`Error::Redis`](crate::Error::Redis) when the admin's first connection or a read fails.
    pub async fn dead_letter_ids_matching(&self, filter: &DeadLetterFilter) -> Result<Vec<String>> {
        if let Some(parts) = self.split() {
            // Every partition's, oldest first; an id in two partitions is listed once (actions by id look for it
            // in every partition).
            let mut ids = Vec::new();
            for part in parts {
                ids.extend(Box::pin(part.dead_letter_ids_matching(filter)).await?);
            }
            ids.sort_by_key(|id| parse_entry_id(id));
            ids.dedup();
            return Ok(ids);
        }
        let stream = self.keys.dead_letters();
        let Some(bound) = self.last_entry_id(stream).await? else {
            return Ok(Vec::new());
        };
        let total = self.dead_letter_count().await?;
        let mut con = self.con().await?;
        let mut pager = Pager::new(stream, "-", &bound, total, "listing dead letters");
        let mut ids = Vec::new();
        while let Some(page) = pager.next(&mut con).await? {
            ids.extend(
                page.into_iter()
                    .map(DeadLetterEntry::from_stream_id)
                    .filter(|e| filter.matches(e))
                    .map(|e| e.dead_id),
            );
        }
        Ok(ids)
    }
}
