//! Retention: how long the requests stream keeps entries, and the trim that applies it safely.
//!
//! Stream entries are the only redcall data without a TTL (request records and stored replies expire by
//! themselves, see [`ClientConfig`](crate::config::ClientConfig)). The reaper trims the requests stream by a
//! [`RetentionPolicy`] (a maximum length and/or a maximum age), but never past the **safe bound**: for every
//! consumer group, the smaller of its last-delivered id and its oldest pending id. An entry that is pending (a
//! handler may be working on it, or it waits for redelivery) or that some group has not read yet is therefore never
//! removed, whatever the policy says. With no consumer group at all nothing has been delivered, so nothing is
//! trimmed. The bound is computed and applied in one Lua script, so no read, claim or group creation can slip in
//! between.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::ServiceKeys;
use crate::scripts;

/// Default maximum age of a requests stream entry: one day, long enough to replay yesterday's traffic.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default time between two trims done by a reaper.
pub(crate) const DEFAULT_TRIM_INTERVAL: Duration = Duration::from_secs(60);
/// Most entries one trim looks ahead to apply a maximum length; a larger backlog is trimmed over several passes,
/// so one script call stays short.
const LEN_SCAN_CAP: u64 = 100_000;

/// How much of the requests stream to keep. Stream entries are the only redcall data without a TTL, so without a
/// policy the stream grows for ever.
///
/// Entries beyond either limit are removed, but never past the **safe bound**: for every consumer group, the
/// smaller of its last-delivered id and its oldest pending id. An entry that is pending (a handler may be working on
/// it, or it waits for redelivery) or that some group has not read yet is therefore never removed, whatever the
/// policy says; with no consumer group at all, nothing is trimmed. [`TrimReport`] tells both bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Whether the reaper trims at all (default true).
    pub enabled: bool,
    /// Keep at most this many entries (default: no limit).
    pub max_len: Option<u64>,
    /// Keep entries at most this old, by their id's timestamp (default 24 h).
    pub max_age: Option<Duration>,
    /// Keep at most this many dead letters (default: no limit; dead letters wait for an operator, see
    /// `redcall dlq purge`).
    pub dead_letter_max_len: Option<u64>,
    /// Time between two trims done by a reaper (default 60 s).
    pub interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_len: None,
            max_age: Some(DEFAULT_MAX_AGE),
            dead_letter_max_len: None,
            interval: DEFAULT_TRIM_INTERVAL,
        }
    }
}

impl RetentionPolicy {
    /// A policy that never trims (streams then grow until trimmed by hand).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Keeps at most `n` entries (`None`: no limit by length).
    pub fn max_len(mut self, n: Option<u64>) -> Self {
        self.max_len = n;
        self
    }

    /// Keeps entries at most `age` old (`None`: no limit by age).
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }

    /// Keeps at most `n` dead letters (`None`: no limit).
    pub fn dead_letter_max_len(mut self, n: Option<u64>) -> Self {
        self.dead_letter_max_len = n;
        self
    }

    /// Time between two trims done by a reaper.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The policy with its durations clamped to what redcall works with.
    pub(crate) fn clamped(mut self) -> Self {
        self.max_age = self.max_age.map(crate::config::clamp);
        self.interval = crate::config::clamp(self.interval);
        self
    }

    /// Refuses a policy that cannot work. Checked by [`Admin::trim`](crate::admin::Admin::trim) and, as part of the
    /// settings, when a responder or reaper starts.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero trim interval.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::Config(
                "the trim interval must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What one trim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrimReport {
    /// Entries removed from the requests stream.
    pub trimmed: u64,
    /// The bound the policy asked for (entries below it are too old or too many); `+` means "everything".
    pub policy_bound: Option<String>,
    /// The bound below which every entry is delivered to every group and pending in none.
    pub safe_bound: Option<String>,
    /// The bound applied with `XTRIM MINID` (the smaller of the two), when anything could be trimmed.
    pub applied_bound: Option<String>,
    /// Entries removed from the dead-letter stream.
    pub dead_letters_trimmed: u64,
    /// For a service of several partitions, each partition's report, in order; the counts above are their sums
    /// and the bounds above are `None` (each stream has its own). Empty for one partition.
    pub partitions: Vec<TrimReport>,
}

impl TrimReport {
    /// One report for the trims of every partition: the report itself for one partition, else the sums.
    pub(crate) fn merge(mut reports: Vec<TrimReport>) -> TrimReport {
        if reports.len() == 1 {
            return reports.pop().unwrap_or_default();
        }
        TrimReport {
            trimmed: reports.iter().map(|r| r.trimmed).sum(),
            dead_letters_trimmed: reports.iter().map(|r| r.dead_letters_trimmed).sum(),
            partitions: reports,
            ..TrimReport::default()
        }
    }
}

/// Trims the service's streams by `policy` (ignoring `policy.enabled`: a call is an explicit request).
pub(crate) async fn trim<C>(
    con: &mut C,
    keys: &ServiceKeys,
    policy: &RetentionPolicy,
) -> Result<TrimReport>
where
    C: redis::aio::ConnectionLike + Send,
{
    let mut report = TrimReport::default();
    if policy.max_len.is_some() || policy.max_age.is_some() {
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, &scripts::TRIM)
            .arg(1)
            .arg(keys.requests())
            .arg(policy.max_len.map(|n| n.to_string()).unwrap_or_default())
            .arg(
                policy
                    .max_age
                    .map(|d| d.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(LEN_SCAN_CAP);
        let ((trimmed, policy_bound, safe_bound, applied),): ((u64, String, String, String),) =
            scripts::query_with_scripts(&pipe, con)
                .await
                .map_err(Error::redis("trimming the requests stream"))?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        report.trimmed = trimmed;
        report.policy_bound = some(policy_bound);
        report.safe_bound = some(safe_bound);
        report.applied_bound = some(applied);
    }
    if let Some(max) = policy.dead_letter_max_len {
        report.dead_letters_trimmed = redis::cmd("XTRIM")
            .arg(keys.dead_letters())
            .arg("MAXLEN")
            .arg("=")
            .arg(max)
            .query_async(con)
            .await
            .map_err(Error::redis("trimming the dead-letter stream"))?;
    }
    Ok(report)
}

/// When a reaper loop trims next: at its first pass, then every `policy.interval`.
pub(crate) struct TrimSchedule {
    next: Instant,
}

impl TrimSchedule {
    /// A schedule whose first trim is due now.
    pub(crate) fn new() -> Self {
        Self {
            next: Instant::now(),
        }
    }

    /// Trims when the policy is enabled and a trim is due; logs the outcome, never fails the reaper.
    pub(crate) async fn run(
        &mut self,
        con: &crate::connection::ManagedConnection,
        keys: &ServiceKeys,
        policy: &RetentionPolicy,
    ) {
        if !policy.enabled || Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + policy.interval;
        let mut con = con.clone();
        match trim(&mut con, keys, policy).await {
            Ok(report) if report.trimmed > 0 || report.dead_letters_trimmed > 0 => {
                tracing::info!(
                    stream = keys.requests(),
                    trimmed = report.trimmed,
                    dead_letters_trimmed = report.dead_letters_trimmed,
                    applied_bound = report.applied_bound.as_deref(),
                    "trimmed by the retention policy"
                )
            }
            Ok(report) => tracing::debug!(
                stream = keys.requests(),
                policy_bound = report.policy_bound.as_deref(),
                safe_bound = report.safe_bound.as_deref(),
                "nothing to trim"
            ),
            Err(err) => tracing::warn!(error = %err, "trim failed"),
        }
    }
}
