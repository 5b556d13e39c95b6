//! Replays: re-queue dead letters (some or all) or a range of the requests stream, under the original request ids
//! (see the [`admin`](super) module docs for why and how).

use std::collections::HashSet;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use serde::Serialize;

use super::pager::Pager;
use super::{Admin, DeadLetterEntry, PAGE};
use crate::config::ttl_ms;
use crate::error::{Error, Result};
use crate::protocol::entry::{RawEntry, check_entry_id};
use crate::protocol::{self, ReplayInfo, ReplaySource, RequestEnvelope};
use crate::scripts;

/// What paging through a stream reports in errors.
pub(super) const READING_PAGE: &str = "reading a stream page";

/// Deadline a replayed request gets by default, counted from the replay: nobody waits on a replay with the
/// original (usually short) timeout, and a replay that expires in the queue would be wasted.
pub const DEFAULT_REPLAY_TIMEOUT: Duration = Duration::from_secs(600);

/// How to replay. Built with chained setters from [`ReplayOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// The replayed request's new deadline, from the moment it is re-queued (default 10 min); must be positive.
    pub timeout: Duration,
    /// Replay only requests for this function key (default: all).
    pub func_key: Option<String>,
    /// Range replays only: also replay entries that are still pending in, or not yet delivered to, some group
    /// (default false: they are skipped, since they will run anyway and would run twice).
    pub include_in_flight: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_REPLAY_TIMEOUT,
            func_key: None,
            include_in_flight: false,
        }
    }
}

impl ReplayOptions {
    /// Sets the new deadline, counted from the replay; a zero one is refused by the replay with
    /// [`Error::InvalidArgument`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replays only requests for `func_key`.
    pub fn func_key(mut self, func_key: impl Into<String>) -> Self {
        self.func_key = Some(func_key.into());
        self
    }

    /// Also replays entries still in flight (range replays only).
    pub fn include_in_flight(mut self, include: bool) -> Self {
        self.include_in_flight = include;
        self
    }
}

/// One request re-queued by a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Replayed {
    /// The replayed entry: a dead-letter id or a requests stream entry id.
    pub from: String,
    /// The request id (unchanged by the replay).
    pub request_id: String,
    /// The new requests stream entry.
    pub entry_id: String,
}

/// Why an entry was not replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The entry does not exist (any more): never existed, already replayed or purged.
    NotFound,
    /// The entry has no request id or no decodable envelope; it stays where it is (purge it).
    Malformed {
        /// What is wrong with it.
        message: String,
    },
    /// The request is still pending in, or not yet delivered to, some group (range replays).
    InFlight,
    /// An earlier entry of this replay had the same request id.
    DuplicateId,
    /// The re-encoded envelope is over the payload limit.
    PayloadTooLarge {
        /// Its size in bytes.
        size: usize,
    },
}

impl SkipReason {
    /// Its code, as in JSON (`reason`): `not_found`, `malformed`, `in_flight`, `duplicate_id`, `payload_too_large`.
    /// Stable, for scripts that sort skipped entries by cause.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotFound => "not_found",
            SkipReason::Malformed { .. } => "malformed",
            SkipReason::InFlight => "in_flight",
            SkipReason::DuplicateId => "duplicate_id",
            SkipReason::PayloadTooLarge { .. } => "payload_too_large",
        }
    }
}

/// An entry a replay left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Skipped {
    /// The entry: a dead-letter id or a requests stream entry id.
    pub from: String,
    /// The request id, when known.
    pub request_id: Option<String>,
    /// Why.
    #[serde(flatten)]
    pub reason: SkipReason,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Requests re-queued, in order.
    pub replayed: Vec<Replayed>,
    /// Entries left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Entries for another function key than [`ReplayOptions::func_key`].
    pub not_matching: u64,
}

/// An entry that may be replayed.
pub(super) struct Candidate {
    /// The dead-letter id, or the requests stream entry id.
    from: String,
    dead: bool,
    request_id: Option<String>,
    envelope: Option<Vec<u8>>,
}

impl From<DeadLetterEntry> for Candidate {
    fn from(d: DeadLetterEntry) -> Self {
        Self {
            from: d.dead_id,
            dead: true,
            request_id: d.request_id,
            envelope: d.envelope,
        }
    }
}

impl From<RawEntry> for Candidate {
    fn from(e: RawEntry) -> Self {
        Self {
            from: e.entry_id,
            dead: false,
            request_id: e.request_id,
            envelope: e.envelope,
        }
    }
}

impl Admin {
    /// Replays the given dead letters (by dead-letter id), each under its request id; each is removed from the
    /// dead-letter stream in the same script that re-queues it. `progress` gets the number of ids processed.
    ///
    /// Dead letters that do not exist (any more), cannot be replayed (no id, undecodable envelope), repeat a request
    /// id or grow over the payload limit are not errors: the report lists them as [`Skipped`].
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
        for id in dead_ids {
            check_entry_id(id, false)?;
        }
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
                        from: id.clone(),
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
        let mut report = ReplayReport::default();
        let Some(bound) = self.last_entry_id(self.keys.dead_letters()).await? else {
            return Ok(report);
        };
        let total = self.dead_letter_count().await?;
        let mut con = self.con().await?;
        let mut seen = HashSet::new();
        let mut done = 0;
        let stream = self.keys.dead_letters();
        let mut pager = Pager::new(stream, "-", &bound, total, READING_PAGE);
        while let Some(ids) = pager.next(&mut con).await? {
            let n = ids.len();
            let candidates = ids
                .into_iter()
                .map(|e| DeadLetterEntry::from_stream_id(e).into())
                .collect();
            self.requeue(&mut con, candidates, opts, &mut seen, &mut report)
                .await?;
            done += n as u64;
            progress(done);
        }
        Ok(report)
    }

    /// Re-queues candidates in one pipeline of `REPLAY` script calls, recording each outcome in `report`.
    pub(super) async fn requeue(
        &self,
        con: &mut ConnectionManager,
        candidates: Vec<Candidate>,
        opts: &ReplayOptions,
        seen: &mut HashSet<String>,
        report: &mut ReplayReport,
    ) -> Result<()> {
        if opts.timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "a replay's timeout must be positive".into(),
            ));
        }
        let config = self.client.config();
        let record_ttl = ttl_ms(crate::config::add(opts.timeout, config.record_retention));
        let now = protocol::now_ms();
        let mut pipe = redis::pipe();
        let mut sent: Vec<(String, String)> = Vec::new();
        for c in candidates {
            let skip = |reason| Skipped {
                from: c.from.clone(),
                request_id: c.request_id.clone(),
                reason,
            };
            let envelope = match (&c.request_id, c.envelope.as_deref()) {
                (Some(id), Some(bytes)) => match protocol::decode_request(bytes) {
                    Ok(env) if &env.id == id => env,
                    Ok(env) => {
                        let message =
                            format!("envelope id {:?} differs from entry id {id:?}", env.id);
                        report.skipped.push(skip(SkipReason::Malformed { message }));
                        continue;
                    }
                    Err(err) => {
                        let message = err.to_string();
                        report.skipped.push(skip(SkipReason::Malformed { message }));
                        continue;
                    }
                },
                _ => {
                    let message = "no request id or no envelope".to_owned();
                    report.skipped.push(skip(SkipReason::Malformed { message }));
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
            if !seen.insert(envelope.id.clone()) {
                report.skipped.push(skip(SkipReason::DuplicateId));
                continue;
            }
            let source = if c.dead {
                ReplaySource::DeadLetter
            } else {
                ReplaySource::Range
            };
            let replayed = replay_envelope(envelope, source, &c.from, opts.timeout, now);
            let bytes = protocol::encode(&replayed)?;
            if bytes.len() > config.payload_limit {
                let size = bytes.len();
                report
                    .skipped
                    .push(skip(SkipReason::PayloadTooLarge { size }));
                continue;
            }
            let id = &replayed.id;
            scripts::evalsha(&mut pipe, &scripts::REPLAY)
                .arg(5)
                .arg(self.keys.dead_letters())
                .arg(self.keys.requests())
                .arg(self.keys.record(id))
                .arg(self.keys.reply(id))
                .arg(self.keys.last_error(id))
                .arg(if c.dead { c.from.as_str() } else { "" })
                .arg(id)
                .arg(&bytes)
                .arg(record_ttl);
            sent.push((c.from, replayed.id));
        }
        if sent.is_empty() {
            return Ok(());
        }
        let results: Vec<Option<String>> = scripts::query_with_scripts(&pipe, con)
            .await
            .map_err(Error::redis("re-queuing requests"))?;
        for ((from, request_id), entry) in sent.into_iter().zip(results) {
            match entry {
                Some(entry_id) => {
                    tracing::info!(%request_id, %from, %entry_id, "replayed");
                    report.replayed.push(Replayed {
                        from,
                        request_id,
                        entry_id,
                    });
                }
                None => {
                    report.skipped.push(Skipped {
                        from,
                        request_id: Some(request_id),
                        reason: SkipReason::NotFound,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The envelope of a replay: same id, function key, params and creation time; a fresh deadline; the replay's
/// provenance.
fn replay_envelope(
    original: RequestEnvelope,
    source: ReplaySource,
    from: &str,
    timeout: Duration,
    now_ms: u64,
) -> RequestEnvelope {
    let count = original.replay.as_ref().map_or(0, |r| r.count) + 1;
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
        };
        let once = replay_envelope(
            original.clone(),
            ReplaySource::DeadLetter,
            "9-0",
            Duration::from_secs(1),
            1000,
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
        );
        let info = twice.replay.expect("replay info");
        assert_eq!(
            (info.count, info.source, info.from.as_str(), info.at_ms),
            (2, ReplaySource::Range, "10-0", 3000)
        );
    }
}
