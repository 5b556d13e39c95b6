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
