//! Replays: re-queue dead letters (some or all) or a range of the requests stream, under the original request ids
//! (see the [`admin`](super) module docs for why and how).

use std::collections::HashSet;
use std::time::Duration;

use crate::connection::ManagedConnection;
use redis::streams::{StreamId, StreamRangeReply};

use super::dead_letters::distinct;
use super::pager::Pager;
use super::replay_report::{ReplayOptions, ReplayReport, Replayed, SkipReason, Skipped};
use super::{Admin, DeadLetterEntry, PAGE};
use crate::config::ttl_ms;
use crate::error::{Error, Result};
use crate::protocol::entry::{RawEntry, check_entry_id, parse_entry_id};
use crate::protocol::{self, ReplayInfo, ReplaySource, RequestEnvelope, ServiceKeys};
use crate::scripts;

/// What paging through a stream reports in errors.
pub(super) const READING_PAGE: &str = "reading a stream page";

/// A walk of a stream from `from` to `to` (inclusive), `total` entries long at most, for [`Pager`].
pub(super) struct Walk<'a> {
    pub(super) stream: &'a str,
    pub(super) from: &'a str,
    pub(super) to: &'a str,
    pub(super) total: u64,
}

/// An entry that may be replayed.
pub(super) struct Candidate {
    /// The dead-letter id, or the requests stream entry id.
    from: String,
    dead: bool,
    /// The requests stream entry it names: the range entry itself, or the entry a dead letter came from (when the
    /// dead letter says, with a well-formed id).
    entry_id: Option<String>,
    request_id: Option<String>,
    envelope: Option<Vec<u8>>,
}

impl From<DeadLetterEntry> for Candidate {
    fn from(d: DeadLetterEntry) -> Self {
        Self {
            from: d.dead_id,
            dead: true,
            entry_id: d.entry_id.filter(|id| parse_entry_id(id).is_some()),
            request_id: d.request_id,
            envelope: d.envelope,
        }
    }
}

impl From<RawEntry> for Candidate {
    fn from(e: RawEntry) -> Self {
        Self {
            entry_id: Some(e.entry_id.clone()),
            from: e.entry_id,
            dead: false,
            request_id: e.request_id,
            envelope: e.envelope,
        }
    }
}

/// A candidate whose envelope decoded, on its way to the `REPLAY` script.
struct Ready {
    candidate: Candidate,
    envelope: RequestEnvelope,
}

/// The key naming the newest requests stream entry of request `id`, written by every replay (see
/// [`scripts::REPLAY`]). Built here rather than in [`ServiceKeys`] because only replays use it.
pub(super) fn latest_entry_key(keys: &ServiceKeys, id: &str) -> String {
    format!("{}:latest:{id}", keys.tag())
}

impl Admin {
    /// Replays the given dead letters (by dead-letter id; each id once, however often it is given), each under its
    /// request id; each is removed from the dead-letter stream in the same script that re-queues it. An id that is
    /// not in the dead-letter stream is reported as [`SkipReason::NotFound`]. `progress` gets the number of ids
    /// processed.
    ///
    /// Dead letters that cannot be replayed (no id, undecodable envelope, in flight again), repeat a request id or
    /// grow over the payload limit are not errors: the report lists them as [`Skipped`].
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when one of `dead_ids` is not a stream entry id (checked before anything is
    ///   replayed), or for a zero [`ReplayOptions::timeout`];
    /// - [`Error::Redis`] when the admin's first connection, reading the dead letters or the replay script fails.
    ///   The chunks before it stay replayed and are gone from the dead-letter stream, so replaying the same ids
    ///   again skips them as [`SkipReason::NotFound`] and queues only the rest.
    pub async fn replay_dead_letters(
        &self,
        dead_ids: &[String],
        opts: &ReplayOptions,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<ReplayReport> {
        opts.check()?;
        for id in dead_ids {
            check_entry_id(id, false)?;
        }
        if let Some(parts) = self.split() {
            let mut reports = Vec::with_capacity(parts.len());
            let mut done = 0;
            for part in parts {
                let base = done;
                let mut inner = |n| {
                    done = base + n;
                    progress(done)
                };
                reports.push(
                    part.replay_dead_letters_here(dead_ids, opts, &mut inner)
                        .await?,
                );
            }
            return Ok(ReplayReport::merge(reports, true));
        }
        self.replay_dead_letters_here(dead_ids, opts, &mut progress)
            .await
    }

    /// [`Admin::replay_dead_letters`] on this admin's dead-letter stream alone (ids checked by the caller).
    async fn replay_dead_letters_here(
        &self,
        dead_ids: &[String],
        opts: &ReplayOptions,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<ReplayReport> {
        let dead_ids = distinct(dead_ids);
        let mut con = self.con().await?;
        let mut report = ReplayReport::default();
        let mut seen = HashSet::new();
        let mut done = 0;
        for chunk in dead_ids.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("XRANGE")
                    .arg(self.keys.dead_letters())
                    .arg(id)
                    .arg(id);
            }
            let found: Vec<StreamRangeReply> = pipe
                .query_async(&mut con)
                .await
                .map_err(Error::redis("reading dead letters"))?;
            let mut candidates = Vec::new();
            for (id, reply) in chunk.iter().zip(found) {
                match reply.ids.into_iter().next() {
                    Some(entry) => candidates.push(DeadLetterEntry::from_stream_id(entry).into()),
                    None => report.skipped.push(Skipped {
                        from: (*id).to_owned(),
                        request_id: None,
                        reason: SkipReason::NotFound,
                    }),
                }
            }
            self.requeue(&mut con, candidates, opts, &mut seen, &mut report)
                .await?;
            done += chunk.len() as u64;
            progress(done);
        }
        Ok(report)
    }

    /// Replays every dead letter that existed when the replay started (those matching
    /// [`ReplayOptions::func_key`], when set). `progress` gets the number of dead letters processed. Dead letters
    /// that cannot be replayed are listed in the report as [`Skipped`] and stay in the stream.
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] for a zero [`ReplayOptions::timeout`] (told only when there is a dead letter);
    /// - [`Error::Redis`] when the admin's first connection, reading the dead letters or the replay script fails.
    ///   What was replayed before stays replayed and is gone from the dead-letter stream; running it again replays
    ///   the rest.
    pub async fn replay_all_dead_letters(
        &self,
        opts: &ReplayOptions,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<ReplayReport> {
        opts.check()?;
        if let Some(parts) = self.split() {
            let mut reports = Vec::with_capacity(parts.len());
            let mut done = 0;
            for part in parts {
                let base = done;
                let mut inner = |n| {
                    done = base + n;
                    progress(done)
                };
                reports.push(part.replay_all_here(opts, &mut inner).await?);
            }
            return Ok(ReplayReport::merge(reports, false));
        }
        self.replay_all_here(opts, &mut progress).await
    }

    /// [`Admin::replay_all_dead_letters`] on this admin's dead-letter stream alone.
    async fn replay_all_here(
        &self,
        opts: &ReplayOptions,
        mut progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<ReplayReport> {
        let report = ReplayReport::default();
        let Some(bound) = self.last_entry_id(self.keys.dead_letters()).await? else {
            return Ok(report);
        };
        let total = self.dead_letter_count().await?;
        let walk = Walk {
            stream: self.keys.dead_letters(),
            from: "-",
            to: &bound,
            total,
        };
        self.replay_pages(
            walk,
            |e| DeadLetterEntry::from_stream_id(e).into(),
            opts,
            &mut progress,
        )
        .await
    }

    /// Replays a walk page by page: each page's entries become candidates (`candidate`) and are re-queued in one
    /// pipeline; `progress` gets the number of entries walked. The report of every page goes into `report`.
    pub(super) async fn replay_pages(
        &self,
        walk: Walk<'_>,
        candidate: impl Fn(StreamId) -> Candidate,
        opts: &ReplayOptions,
        progress: &mut (impl FnMut(u64) + Send),
    ) -> Result<ReplayReport> {
        let mut report = ReplayReport::default();
        let mut con = self.con().await?;
        let mut seen = HashSet::new();
        let mut done = 0;
        let mut pager = Pager::new(walk.stream, walk.from, walk.to, walk.total, READING_PAGE);
        while let Some(ids) = pager.next(&mut con).await? {
            let n = ids.len();
            let candidates = ids.into_iter().map(&candidate).collect();
            self.requeue(&mut con, candidates, opts, &mut seen, &mut report)
                .await?;
            done += n as u64;
            progress(done);
        }
        Ok(report)
    }

    /// Re-queues candidates in one pipeline of `REPLAY` script calls, recording each outcome in `report`.
    ///
    /// What may be replayed is decided by the script, atomically with the re-queue (see [`scripts::REPLAY`]): an
    /// id whose latest entry is in flight is skipped, whichever of its entries the candidate is. `seen` holds the
    /// ids this replay has queued (or, in a dry run, would have): a later candidate with the same id is reported
    /// as [`SkipReason::DuplicateId`].
    pub(super) async fn requeue(
        &self,
        con: &mut ManagedConnection,
        candidates: Vec<Candidate>,
        opts: &ReplayOptions,
        seen: &mut HashSet<String>,
        report: &mut ReplayReport,
    ) -> Result<()> {
        report.dry_run = opts.dry_run;
        let ready = self.decodable(candidates, opts, seen, report);
        let counts = self.replay_counts(con, &ready).await?;
        let config = self.client.config();
        let record_ttl = ttl_ms(crate::config::add(opts.timeout, config.record_retention));
        let now = protocol::now_ms();
        let mut pipe = redis::pipe();
        let mut sent: Vec<(String, String)> = Vec::new();
        for (
            Ready {
                candidate: c,
                envelope,
            },
            floor,
        ) in ready.into_iter().zip(counts)
        {
            let source = if c.dead {
                ReplaySource::DeadLetter
            } else {
                ReplaySource::Range
            };
            let replayed = replay_envelope(envelope, source, &c.from, opts.timeout, now, floor);
            let bytes = protocol::encode(&replayed)?;
            if bytes.len() > config.payload_limit {
                let size = bytes.len();
                report.skipped.push(Skipped {
                    from: c.from,
                    request_id: c.request_id,
                    reason: SkipReason::PayloadTooLarge { size },
                });
                continue;
            }
            let id = &replayed.id;
            if opts.include_in_flight {
                // The script does not look at what is in flight then, so this replay's own duplicates are
                // caught here.
                seen.insert(id.clone());
            }
            let flag = |on: bool| if on { "1" } else { "" };
            scripts::evalsha(&mut pipe, &scripts::REPLAY)
                .arg(7)
                .arg(self.keys.dead_letters())
                .arg(self.keys.requests())
                .arg(self.keys.record(id))
                .arg(self.keys.reply(id))
                .arg(self.keys.last_error(id))
                .arg(latest_entry_key(&self.keys, id))
                .arg(self.keys.progress(id))
                .arg(if c.dead { c.from.as_str() } else { "" })
                .arg(id)
                .arg(&bytes)
                .arg(record_ttl)
                .arg(c.entry_id.as_deref().unwrap_or(""))
                .arg(c.envelope.as_deref().unwrap_or_default())
                .arg(flag(!opts.include_in_flight))
                .arg(flag(opts.dry_run));
            sent.push((c.from, replayed.id));
        }
        if sent.is_empty() {
            return Ok(());
        }
        let results: Vec<(String, String)> = scripts::query_with_scripts(&pipe, con)
            .await
            .map_err(Error::redis("re-queuing requests"))?;
        for ((from, request_id), (outcome, detail)) in sent.into_iter().zip(results) {
            let reason = match outcome.as_str() {
                "queued" | "would_queue" => {
                    if opts.include_in_flight || seen.insert(request_id.clone()) {
                        let entry_id = (outcome == "queued").then_some(detail);
                        tracing::info!(id = %request_id, %from, entry_id = entry_id.as_deref(), dry_run = opts.dry_run, "replayed");
                        report.replayed.push(Replayed {
                            from,
                            request_id,
                            entry_id,
                        });
                        continue;
                    }
                    // Only in a dry run: a real replay's first entry would have made this one in flight.
                    SkipReason::DuplicateId
                }
                "in_flight" if seen.contains(&request_id) => SkipReason::DuplicateId,
                "in_flight" => SkipReason::InFlight,
                "superseded" => SkipReason::Superseded,
                "not_found" => SkipReason::NotFound,
                other => {
                    return Err(Error::Decode {
                        what: "replay script answer",
                        message: format!("unknown outcome {other:?}"),
                    });
                }
            };
            report.skipped.push(Skipped {
                from,
                request_id: Some(request_id),
                reason,
            });
        }
        Ok(())
    }

    /// The candidates whose envelope decodes and names their request id, for the function key asked for; the
    /// others are recorded in `report`.
    fn decodable(
        &self,
        candidates: Vec<Candidate>,
        opts: &ReplayOptions,
        seen: &HashSet<String>,
        report: &mut ReplayReport,
    ) -> Vec<Ready> {
        let mut ready = Vec::with_capacity(candidates.len());
        for c in candidates {
            let decoded = match (&c.request_id, c.envelope.as_deref()) {
                (Some(id), Some(bytes)) => match protocol::decode_request(bytes) {
                    Ok(env) if &env.id == id => Ok(env),
                    Ok(env) => Err(format!(
                        "envelope id {:?} differs from entry id {id:?}",
                        env.id
                    )),
                    Err(err) => Err(err.to_string()),
                },
                _ => Err("no request id or no envelope".to_owned()),
            };
            let envelope = match decoded {
                Ok(env) => env,
                Err(message) => {
                    report.skipped.push(Skipped {
                        from: c.from,
                        request_id: c.request_id,
                        reason: SkipReason::Malformed { message },
                    });
                    continue;
                }
            };
            if opts
                .func_key
                .as_ref()
                .is_some_and(|f| *f != envelope.func_key)
            {
                report.not_matching += 1;
                continue;
            }
            if opts.include_in_flight && seen.contains(&envelope.id) {
                report.skipped.push(Skipped {
                    from: c.from,
                    request_id: c.request_id,
                    reason: SkipReason::DuplicateId,
                });
                continue;
            }
            ready.push(Ready {
                candidate: c,
                envelope,
            });
        }
        ready
    }

    /// For each candidate, the replay count of its id's current record (0 when there is none, or it is not an
    /// envelope of that id): a replay of an older entry of an id replayed before still counts on from the latest.
    /// Read in one pipeline; a key of another type counts as no record.
    async fn replay_counts(
        &self,
        con: &mut ManagedConnection,
        ready: &[Ready],
    ) -> Result<Vec<u32>> {
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for r in ready {
            pipe.cmd("GET").arg(self.keys.record(&r.envelope.id));
        }
        let records: Vec<redis::RedisResult<Option<Vec<u8>>>> = pipe
            .ignore_errors()
            .query_async(con)
            .await
            .map_err(Error::redis("reading request records"))?;
        Ok(ready
            .iter()
            .zip(records)
            .map(|(r, record)| {
                record
                    .ok()
                    .flatten()
                    .and_then(|bytes| protocol::decode_request(&bytes).ok())
                    .filter(|env| env.id == r.envelope.id)
                    .and_then(|env| env.replay)
                    .map_or(0, |info| info.count)
            })
            .collect())
    }
}

/// The envelope of a replay: same id, function key, params and creation time; a fresh deadline; the replay's
/// provenance. Its count is one more than the larger of the original's and `count_floor` (the id's latest count).
fn replay_envelope(
    original: RequestEnvelope,
    source: ReplaySource,
    from: &str,
    timeout: Duration,
    now_ms: u64,
    count_floor: u32,
) -> RequestEnvelope {
    let count = original
        .replay
        .as_ref()
        .map_or(0, |r| r.count)
        .max(count_floor)
        + 1;
    RequestEnvelope {
        deadline_ms: now_ms + crate::config::clamp(timeout).as_millis() as u64,
        replay: Some(ReplayInfo {
            count,
            source,
            from: from.to_owned(),
            at_ms: now_ms,
        }),
        ..original
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reason_codes_are_the_json_tags() {
        let reasons = [
            SkipReason::NotFound,
            SkipReason::Malformed {
                message: "m".into(),
            },
            SkipReason::InFlight,
            SkipReason::Superseded,
            SkipReason::DuplicateId,
            SkipReason::PayloadTooLarge { size: 1 },
        ];
        for reason in reasons {
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json["reason"], reason.code(), "{reason:?}");
        }
    }
    use crate::protocol::FORMAT_VERSION;

    #[test]
    fn a_replay_keeps_the_request_and_counts() {
        let original = RequestEnvelope {
            v: FORMAT_VERSION,
            id: "r1".into(),
            func_key: "f".into(),
            params: vec![0x2a],
            deadline_ms: 100,
            created_ms: 50,
            replay: None,
            trace: None,
        };
        let once = replay_envelope(
            original.clone(),
            ReplaySource::DeadLetter,
            "9-0",
            Duration::from_secs(1),
            1000,
            0,
        );
        assert_eq!((once.id.as_str(), once.func_key.as_str()), ("r1", "f"));
        assert_eq!(
            (once.params.clone(), once.created_ms, once.deadline_ms),
            (vec![0x2a], 50, 2000)
        );
        assert_eq!(once.replay.as_ref().map(|r| r.count), Some(1));
        let twice = replay_envelope(
            once,
            ReplaySource::Range,
            "10-0",
            Duration::from_secs(1),
            3000,
            0,
        );
        let info = twice.replay.clone().expect("replay info");
        assert_eq!(
            (info.count, info.source, info.from.as_str(), info.at_ms),
            (2, ReplaySource::Range, "10-0", 3000)
        );
        // Replaying the original again, after the id's latest replay counted 2: the count goes on from there.
        let again = replay_envelope(
            original,
            ReplaySource::Range,
            "9-0",
            Duration::from_secs(1),
            4000,
            2,
        );
        assert_eq!(again.replay.map(|r| r.count), Some(3));
    }
}
