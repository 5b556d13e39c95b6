//! Range replay: re-queue a range of the requests stream under the original request ids, for re-running history
//! after a bug fix. Requests still in flight are skipped (whichever of an id's entries the range names: the
//! `REPLAY` script looks at the id's latest entry, see [`crate::scripts`]); the range ends at the newest entry that
//! existed when the replay began, so the replays it adds are never replayed again.

use super::Admin;
use super::replay::Walk;
use super::replay_report::{ReplayOptions, ReplayReport};
use crate::error::{Error, Result};
use crate::protocol::entry::{RawEntry, check_entry_id, parse_entry_id};

impl Admin {
    /// Replays the requests stream entries from `from` to `to` (inclusive stream ids; `-` and `+` for the ends; a
    /// bare millisecond timestamp means that whole millisecond), each under its request id: for re-running
    /// history after a bug fix. The range ends at the newest entry that
    /// existed when the replay started, so the replays it adds are never replayed again.
    ///
    /// A request still in flight is skipped unless [`ReplayOptions::include_in_flight`]: one whose latest entry
    /// (an earlier replay adds a new entry under the same id, maybe outside the range) or the entry named is
    /// pending in, or not yet delivered to, some group. So running the same replay twice before the first one's
    /// requests were handled queues nothing the second time, and two replays running at once queue each request
    /// once. When a request id occurs several times in the range, it is replayed once (the others are
    /// [`SkipReason::DuplicateId`](super::SkipReason::DuplicateId)). `progress` gets the number of entries
    /// examined. Entries that cannot be replayed are listed in the report as [`Skipped`](super::Skipped), not errors.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `from` or `to` is not a stream entry id, `-`, `+` or a millisecond
    ///   timestamp (checked before anything is read), or for a zero [`ReplayOptions::timeout`];
    /// - [`Error::Redis`] when the admin's first connection or a read or the replay script fails. What was
    ///   replayed before stays replayed; running the same range again skips those while they are in flight.
    pub async fn replay_range(
        &self,
        from: &str,
        to: &str,
        opts: &ReplayOptions,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<ReplayReport> {
        opts.check()?;
        let from = range_end(from, false)?;
        let to = range_end(to, true)?;
        let (from, to) = (from.as_str(), to.as_str());
        if let Some(parts) = self.split() {
            // Entry ids are times: the same range of every partition's stream.
            let mut reports = Vec::with_capacity(parts.len());
            let mut done = 0;
            for part in parts {
                let base = done;
                let mut inner = |n| {
                    done = base + n;
                    progress(done)
                };
                reports.push(part.replay_range_here(from, to, opts, &mut inner).await?);
            }
            return Ok(ReplayReport::merge(reports, false));
        }
        self.replay_range_here(from, to, opts, &mut progress).await
    }

    /// [`Admin::replay_range`] on this admin's requests stream alone (`from` and `to` full ids, checked).
    async fn replay_range_here(
        &self,
        from: &str,
        to: &str,
        opts: &ReplayOptions,
        mut progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<ReplayReport> {
        let report = ReplayReport::default();
        let requests = self.keys.requests();
        let Some(newest) = self.last_entry_id(requests).await? else {
            return Ok(report);
        };
        let bound = match parse_entry_id(to) {
            Some(t) if parse_entry_id(&newest).is_some_and(|n| t < n) => to.to_owned(),
            _ if to == "-" => return Ok(report),
            _ => newest,
        };
        let mut con = self.con().await?;
        let total: u64 = redis::cmd("XLEN")
            .arg(requests)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("measuring the requests stream"))?;
        let walk = Walk {
            stream: requests,
            from,
            to: &bound,
            total,
        };
        self.replay_pages(
            walk,
            |e| RawEntry::from_stream_id(e).into(),
            opts,
            &mut progress,
        )
        .await
    }
}

/// A range end as a full stream id: `-`, `+`, `<ms>-<seq>`, or a bare `<ms>` (the first or last id of that
/// millisecond).
fn range_end(id: &str, is_end: bool) -> Result<String> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = id.parse().map_err(|_| {
            Error::InvalidArgument(format!("{id:?} is not a millisecond timestamp"))
        })?;
        let seq = if is_end { u64::MAX } else { 0 };
        return Ok(format!("{ms}-{seq}"));
    }
    check_entry_id(id, true)?;
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_milliseconds_cover_the_whole_millisecond() {
        assert_eq!(range_end("1700", false).expect("ok"), "1700-0");
        assert_eq!(
            range_end("1700", true).expect("ok"),
            format!("1700-{}", u64::MAX)
        );
        assert_eq!(range_end("+", true).expect("ok"), "+");
        assert_eq!(range_end("5-1", false).expect("ok"), "5-1");
        assert!(range_end("5-x", false).is_err());
    }
}
