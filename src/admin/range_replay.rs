//! Range replay: re-queue a range of the requests stream under the original request ids, for re-running history
//! after a bug fix. Entries still in flight are skipped; the range ends at the newest entry that existed when the
//! replay began, so the replays it adds are never replayed again.

use std::collections::HashSet;

use redis::aio::ConnectionManager;
use redis::streams::{StreamInfoGroupsReply, StreamPendingCountReply};

use super::Admin;
use super::pager::Pager;
use super::replay::{READING_PAGE, ReplayOptions, ReplayReport, SkipReason, Skipped};
use crate::error::{Error, Result};
use crate::protocol::entry::{RawEntry, check_entry_id, parse_entry_id};

impl Admin {
    /// Replays the requests stream entries from `from` to `to` (inclusive stream ids; `-` and `+` for the ends; a
    /// bare millisecond timestamp means that whole millisecond), each under its request id: for re-running
    /// history after a bug fix. The range ends at the newest entry that
    /// existed when the replay started, so the replays it adds are never replayed again.
    ///
    /// Entries still in flight (pending in, or not yet delivered to, some group) are skipped unless
    /// [`ReplayOptions::include_in_flight`]; when a request id occurs several times in the range (an earlier
    /// replay), only its first entry is replayed. `progress` gets the number of entries examined. Entries that
    /// cannot be replayed are listed in the report as [`Skipped`], not errors.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when `from` or `to` is not a stream entry id, `-`, `+` or a millisecond
    ///   timestamp (checked before anything is read), or for a zero [`ReplayOptions::timeout`] (told only when the
    ///   range holds an entry);
    /// - [`Error::Redis`] when the admin's first connection or a read, a pending-entries check or the replay script
    ///   fails. What was replayed before stays replayed, and the original entries stay in the stream: running the
    ///   same range again replays those again.
    pub async fn replay_range(
        &self,
        from: &str,
        to: &str,
        opts: &ReplayOptions,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<ReplayReport> {
        let from = range_end(from, false)?;
        let to = range_end(to, true)?;
        let (from, to) = (from.as_str(), to.as_str());
        let mut report = ReplayReport::default();
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
        let mut seen = HashSet::new();
        let mut done = 0;
        let mut pager = Pager::new(requests, from, &bound, total, READING_PAGE);
        while let Some(ids) = pager.next(&mut con).await? {
            let n = ids.len();
            let entries: Vec<RawEntry> = ids.into_iter().map(RawEntry::from_stream_id).collect();
            let in_flight = if opts.include_in_flight {
                HashSet::new()
            } else {
                self.in_flight(&mut con, &entries).await?
            };
            let mut candidates = Vec::with_capacity(n);
            for entry in entries {
                if in_flight.contains(&entry.entry_id) {
                    report.skipped.push(Skipped {
                        from: entry.entry_id,
                        request_id: entry.request_id,
                        reason: SkipReason::InFlight,
                    });
                } else {
                    candidates.push(entry.into());
                }
            }
            self.requeue(&mut con, candidates, opts, &mut seen, &mut report)
                .await?;
            done += n as u64;
            progress(done);
        }
        Ok(report)
    }

    /// The entry ids among `entries` that some group has not read yet or holds pending. With no group at all,
    /// every entry is undelivered.
    async fn in_flight(
        &self,
        con: &mut ConnectionManager,
        entries: &[RawEntry],
    ) -> Result<HashSet<String>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashSet::new());
        };
        let requests = self.keys.requests();
        let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(requests)
            .query_async(con)
            .await
            .map_err(Error::redis("listing consumer groups"))?;
        if groups.groups.is_empty() {
            return Ok(entries.iter().map(|e| e.entry_id.clone()).collect());
        }
        let mut pipe = redis::pipe();
        for group in &groups.groups {
            pipe.xpending_count(
                requests,
                &group.name,
                &first.entry_id,
                &last.entry_id,
                entries.len(),
            );
        }
        let pending: Vec<StreamPendingCountReply> = pipe
            .query_async(con)
            .await
            .map_err(Error::redis("listing pending entries"))?;
        let mut in_flight: HashSet<String> = pending
            .into_iter()
            .flat_map(|p| p.ids)
            .map(|p| p.id)
            .collect();
        // The least advanced group decides what is undelivered.
        let delivered_up_to = groups
            .groups
            .iter()
            .map(|g| parse_entry_id(&g.last_delivered_id).unwrap_or((0, 0)))
            .min()
            .unwrap_or((0, 0));
        for entry in entries {
            if parse_entry_id(&entry.entry_id).is_none_or(|id| id > delivered_up_to) {
                in_flight.insert(entry.entry_id.clone());
            }
        }
        Ok(in_flight)
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
