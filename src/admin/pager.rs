//! Reading a stream a page at a time, the way every admin operation that walks a stream does.

use crate::connection::ManagedConnection;
use redis::streams::{StreamId, StreamRangeReply};

use super::PAGE;
use crate::error::{Error, Result};

/// Walks a stream from `start` to a fixed `end`, a page of [`PAGE`] entries at a time, each page starting after the
/// last entry of the one before. It stops after a short page, an empty one, or as many pages as the stream had
/// entries when the walk began (plus one): entries added meanwhile cannot keep it going forever.
pub(super) struct Pager<'a> {
    stream: &'a str,
    start: String,
    end: String,
    pages_left: u64,
    /// What is being done, for errors.
    context: &'static str,
}

impl<'a> Pager<'a> {
    /// A walk over `stream` from `start` (inclusive, or `(id` exclusive) to `end`, which had `total` entries.
    pub(super) fn new(
        stream: &'a str,
        start: &str,
        end: &str,
        total: u64,
        context: &'static str,
    ) -> Self {
        Self {
            stream,
            start: start.to_owned(),
            end: end.to_owned(),
            pages_left: total / PAGE as u64 + 2,
            context,
        }
    }

    /// The next page, or `None` when the walk is over.
    pub(super) async fn next(
        &mut self,
        con: &mut ManagedConnection,
    ) -> Result<Option<Vec<StreamId>>> {
        if self.pages_left == 0 {
            return Ok(None);
        }
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream)
            .arg(&self.start)
            .arg(&self.end)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(con)
            .await
            .map_err(Error::redis(self.context))?;
        let Some(last) = page.ids.last() else {
            self.pages_left = 0;
            return Ok(None);
        };
        self.start = format!("({}", last.id);
        self.pages_left = if page.ids.len() < PAGE {
            0
        } else {
            self.pages_left - 1
        };
        Ok(Some(page.ids))
    }
}

/// Where a page of entries merged from several partitions ends: `sorted` (oldest first by `key`) cut after the
/// `limit`-th entry and every following entry of the same key. Entry ids repeat across partitions (they write in the
/// same millisecond), so paging on after that key leaves none out. `sorted.len()` when there are no more than
/// `limit`; a `limit` of 0 counts as 1.
pub(super) fn page_end<T, K: PartialEq>(
    sorted: &[T],
    limit: usize,
    key: impl Fn(&T) -> K,
) -> usize {
    let limit = limit.max(1);
    let Some(last) = sorted.get(limit - 1).map(&key) else {
        return sorted.len();
    };
    limit
        + sorted[limit..]
            .iter()
            .take_while(|e| key(e) == last)
            .count()
}
