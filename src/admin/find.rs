//! Finding a request's entries by its request id: its entry in the requests stream and its dead letter.
//!
//! Neither stream is indexed by request id, and the request record holds the envelope only (not the entry id the
//! `XADD` gave it), so both searches read entries. Each is bounded, so that looking up one request never walks a
//! whole stream of a busy service:
//!
//! - **The requests stream entry.** A replay names the id's newest entry in `T:latest:<id>`; that is read first.
//!   Otherwise the entry was added between the envelope's `created_ms` and its deadline, by the requester's clock;
//!   Redis names entries by its own clock, so the search allows [`CLOCK_SKEW_MS`] either way. It pages outward from
//!   `created_ms` in both directions at once (forward up to the deadline plus the skew, backward down to
//!   `created_ms` minus the skew), so it costs about twice the number of entries added between the requester's
//!   clock reading and the `XADD` (a handful, usually), and at most `SEARCH_LIMIT` (10,000) entries. An entry is the
//!   request's only when its `id` field is the request id **and** its `env` field is byte for byte the record's
//!   envelope: an older request under the same id (made before the record expired) does not match.
//! - **The dead letter.** Dead letters are written after the request was made, so the search pages newest first
//!   from the end of the dead-letter stream down to `created_ms` minus the skew (the whole stream when no record is
//!   known), at most `SEARCH_LIMIT` (10,000) entries. With a record, a dead letter matches when its `env` is the record's
//!   envelope (the dead-letter script copies the entry's envelope, the same bytes); without one, the newest dead
//!   letter naming the id is taken.
//!
//! Termination: each page starts after the last entry of the one before (exclusive bounds), every search stops at
//! its fixed bounds, on a short page, or after `SEARCH_LIMIT` (10,000) entries.

use redis::Value;
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply};

use super::Admin;
use super::dead_letters::DeadLetterEntry;
use super::replay::latest_entry_key;
use crate::error::{Error, Result};
use crate::protocol::entry::parse_entry_id;
use crate::protocol::{FIELD_ENVELOPE, FIELD_ID};

/// How far apart the requester's clock and Redis's clock may be for the searches to find an entry, ms.
pub(super) const CLOCK_SKEW_MS: u64 = 10_000;

/// The most entries one search reads (in each of the two streams).
pub(super) const SEARCH_LIMIT: u64 = 10_000;

/// Entries per page of a search: small, since every entry carries its envelope (params included).
const PAGE: usize = 100;

/// What a search for a request's dead letter found.
pub(super) enum DeadLetterSearch {
    /// The dead letter.
    Found(Box<DeadLetterEntry>),
    /// None within the bounds; `exhausted` is true when the search stopped at `SEARCH_LIMIT` (10,000) rather than at its
    /// bounds (an older dead letter may exist).
    NotFound {
        /// Whether the search stopped at its limit.
        exhausted: bool,
    },
}

/// A field of a stream entry as bytes.
fn field<'a>(entry: &'a StreamId, name: &str) -> Option<&'a [u8]> {
    match entry.map.get(name) {
        Some(Value::BulkString(b)) => Some(b),
        Some(Value::SimpleString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Whether `entry` carries request `id` (and, when `envelope` is given, exactly that envelope).
fn names_request(entry: &StreamId, id: &str, envelope: Option<&[u8]>) -> bool {
    field(entry, FIELD_ID) == Some(id.as_bytes())
        && envelope.is_none_or(|env| field(entry, FIELD_ENVELOPE) == Some(env))
}

/// One direction of an outward search: a range read a page at a time from its near end.
struct Side {
    /// `XRANGE` (forward) or `XREVRANGE` (backward).
    command: &'static str,
    /// The near end of the next page (inclusive, or `(id` exclusive).
    near: String,
    /// The fixed far end.
    far: String,
    done: bool,
}

impl Side {
    /// The next page, or `None` once this side reached its far end.
    async fn next<C: ConnectionLike + Send>(
        &mut self,
        con: &mut C,
        stream: &str,
    ) -> Result<Vec<StreamId>> {
        if self.done {
            return Ok(Vec::new());
        }
        let page: StreamRangeReply = redis::cmd(self.command)
            .arg(stream)
            .arg(&self.near)
            .arg(&self.far)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(con)
            .await
            .map_err(Error::redis("searching a stream for a request"))?;
        match page.ids.last() {
            Some(last) if page.ids.len() == PAGE => self.near = format!("({}", last.id),
            _ => self.done = true,
        }
        Ok(page.ids)
    }
}

impl Admin {
    /// The id of request `id`'s newest entry in the requests stream, when it can be found (see the module doc):
    /// `T:latest:<id>` when a replay wrote it, else a bounded search around `created_ms` for the entry carrying
    /// `envelope` (the record's bytes).
    pub(super) async fn find_request_entry<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        id: &str,
        envelope: &[u8],
        created_ms: u64,
        deadline_ms: u64,
        latest: Option<&str>,
    ) -> Result<Option<String>> {
        if let Some(latest) = latest.filter(|l| parse_entry_id(l).is_some()) {
            return Ok(Some(latest.to_owned()));
        }
        let stream = self.keys.requests();
        let mut forward = Side {
            command: "XRANGE",
            near: created_ms.to_string(),
            far: deadline_ms
                .max(created_ms)
                .saturating_add(CLOCK_SKEW_MS)
                .to_string(),
            done: false,
        };
        // Backward from just before `created_ms` (the forward side reads that millisecond).
        let mut backward = Side {
            command: "XREVRANGE",
            near: format!("({created_ms}-0"),
            far: created_ms.saturating_sub(CLOCK_SKEW_MS).to_string(),
            done: created_ms == 0,
        };
        let mut read = 0u64;
        while read < SEARCH_LIMIT && !(forward.done && backward.done) {
            for side in [&mut forward, &mut backward] {
                let page = side.next(con, stream).await?;
                read += page.len() as u64;
                if let Some(hit) = page.iter().find(|e| names_request(e, id, Some(envelope))) {
                    return Ok(Some(hit.id.clone()));
                }
            }
        }
        Ok(None)
    }

    /// The key a replay writes with the id's newest entry, read with the record (see [`scripts::REPLAY`]).
    ///
    /// [`scripts::REPLAY`]: crate::scripts
    pub(super) fn latest_key(&self, id: &str) -> String {
        latest_entry_key(&self.keys, id)
    }

    /// The newest dead letter of request `id`: one carrying `envelope` when given (the record's bytes), else any
    /// naming the id; searched from the newest dead letter down to `after_ms` (`None`: the whole stream), at most
    /// `SEARCH_LIMIT` (10,000) entries.
    pub(super) async fn find_dead_letter<C: ConnectionLike + Send>(
        &self,
        con: &mut C,
        id: &str,
        envelope: Option<&[u8]>,
        after_ms: Option<u64>,
    ) -> Result<DeadLetterSearch> {
        let mut side = Side {
            command: "XREVRANGE",
            near: "+".to_owned(),
            far: after_ms.map_or("-".to_owned(), |ms| ms.to_string()),
            done: false,
        };
        let mut read = 0u64;
        while !side.done {
            if read >= SEARCH_LIMIT {
                return Ok(DeadLetterSearch::NotFound { exhausted: true });
            }
            let page = side.next(con, self.keys.dead_letters()).await?;
            read += page.len() as u64;
            if let Some(hit) = page.into_iter().find(|e| names_request(e, id, envelope)) {
                return Ok(DeadLetterSearch::Found(Box::new(
                    DeadLetterEntry::from_stream_id(hit),
                )));
            }
        }
        Ok(DeadLetterSearch::NotFound { exhausted: false })
    }

    /// The newest dead letter naming request `id`, for `redcall dlq show REQUEST_ID`: dead letters are read newest
    /// first, at most `SEARCH_LIMIT` (10,000) of them. (A request id is normally dead-lettered once at a time: replaying a
    /// dead letter removes it. Several dead letters name one id only when the id was used again after its record
    /// expired, or after a range replay; the newest is the latest request's.)
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `id` is not a usable request id;
    /// - [`Error::EntryNotFound`] when no dead letter names the request (the message says when the search stopped
    ///   at its limit);
    /// - [`Error::Redis`] when the admin's first connection or a read fails.
    pub async fn dead_letter_of_request(&self, id: &str) -> Result<DeadLetterEntry> {
        crate::names::check_request_id(id).map_err(Error::InvalidArgument)?;
        if self.is_split() {
            return Box::pin(self.for_id(id).dead_letter_of_request(id)).await;
        }
        let mut con = self.con().await?;
        match self.find_dead_letter(&mut con, id, None, None).await? {
            DeadLetterSearch::Found(entry) => Ok(entry.in_partition(self.partition)),
            DeadLetterSearch::NotFound { exhausted } => Err(Error::EntryNotFound {
                stream: "dead-letter",
                entry_id: if exhausted {
                    format!("for request {id:?} among the newest {SEARCH_LIMIT}")
                } else {
                    format!("for request {id:?}")
                },
            }),
        }
    }
}
