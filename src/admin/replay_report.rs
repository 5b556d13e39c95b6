//! What a replay is told and what it reports: [`ReplayOptions`] in, [`ReplayReport`] out (with the entries it
//! [replayed](Replayed) and those it [skipped](Skipped), and [why](SkipReason)).

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

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
    /// Also replay requests that are still in flight: whose latest entry (or the entry replayed) is pending in,
    /// or not yet delivered to, some group (default false: they are skipped as [`SkipReason::InFlight`], since
    /// they will run anyway and would run twice).
    pub include_in_flight: bool,
    /// Decide what would be replayed and skipped, and report it, without changing anything (default false).
    pub dry_run: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_REPLAY_TIMEOUT,
            func_key: None,
            include_in_flight: false,
            dry_run: false,
        }
    }
}

impl ReplayOptions {
    /// Refuses options no replay can use, before anything is read or queued.
    pub(super) fn check(&self) -> Result<()> {
        if self.timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "a replay's timeout must be positive".into(),
            ));
        }
        Ok(())
    }

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

    /// Also replays requests still in flight (they then run twice).
    pub fn include_in_flight(mut self, include: bool) -> Self {
        self.include_in_flight = include;
        self
    }

    /// Only reports what the replay would do: the same decisions, made by the same script, but nothing is
    /// queued, deleted or overwritten. (What a dry run reports can change before a real replay runs, as requests
    /// are handled meanwhile.)
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
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
    /// The new requests stream entry; `None` in a dry run, which adds none.
    pub entry_id: Option<String>,
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
    /// The request is still in flight: its latest entry in the requests stream (a replay adds one under the same
    /// id), or the entry replayed, is pending in or not yet delivered to some group. It will run anyway; a replay
    /// would make it run twice.
    InFlight,
    /// The request id's record holds another request than this entry: the id was used again for a new request
    /// after this one's record expired, and replaying the old one would overwrite the new one's record and reply.
    Superseded,
    /// An earlier entry of this replay had the same request id.
    DuplicateId,
    /// The re-encoded envelope is over the payload limit.
    PayloadTooLarge {
        /// Its size in bytes.
        size: usize,
    },
}

impl SkipReason {
    /// Its code, as in JSON (`reason`): `not_found`, `malformed`, `in_flight`, `superseded`, `duplicate_id`,
    /// `payload_too_large`. Stable, for scripts that sort skipped entries by cause.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotFound => "not_found",
            SkipReason::Malformed { .. } => "malformed",
            SkipReason::InFlight => "in_flight",
            SkipReason::Superseded => "superseded",
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
    /// Whether this was a dry run: `replayed` then lists what would have been re-queued, and nothing changed.
    pub dry_run: bool,
    /// Requests re-queued (in a dry run: that would have been), in order.
    pub replayed: Vec<Replayed>,
    /// Entries left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Entries for another function key than [`ReplayOptions::func_key`].
    pub not_matching: u64,
}

impl ReplayReport {
    /// One report of several replays (of several partitions, say), each counted as it was reported.
    pub fn merged(reports: Vec<ReplayReport>) -> ReplayReport {
        Self::merge(reports, false)
    }

    /// One report of the replays of several partitions. With `by_id` (dead letters named by id, each looked for in
    /// every partition), an id is "not found" only when no partition had it, and reported so once.
    pub(super) fn merge(reports: Vec<ReplayReport>, by_id: bool) -> ReplayReport {
        let mut all = ReplayReport::default();
        for r in reports {
            all.dry_run |= r.dry_run;
            all.not_matching += r.not_matching;
            all.replayed.extend(r.replayed);
            all.skipped.extend(r.skipped);
        }
        if by_id {
            let seen: std::collections::HashSet<String> = all
                .replayed
                .iter()
                .map(|r| r.from.clone())
                .chain(
                    all.skipped
                        .iter()
                        .filter(|s| !matches!(s.reason, SkipReason::NotFound))
                        .map(|s| s.from.clone()),
                )
                .collect();
            let mut reported = std::collections::HashSet::new();
            all.skipped.retain(|s| {
                !matches!(s.reason, SkipReason::NotFound)
                    || (!seen.contains(&s.from) && reported.insert(s.from.clone()))
            });
        }
        all
    }
}
