//! The reaper: finds pending entries whose consumer stopped working on them (idle past the visibility timeout),
//! gives them to a live responder or dead-letters them after `max_deliveries`, and removes dead consumers.
//!
//! Inside a responder it claims stale entries with `XAUTOCLAIM` and runs them. Alone (`redcall reap`) it has no
//! handlers, so it only dead-letters entries that have used up their deliveries and cleans up consumers; live
//! responders' own reapers pick up the rest.
//!
//! Both also apply the retention policy (see [`crate::retention`]) every `retention.interval`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamInfoConsumersReply, StreamPendingCountReply,
};
use tokio_util::task::TaskTracker;

use super::dead_letter::DeadLetter;
use super::dispatch::Stored;
use super::settings::ResponderSettings;
use super::state::Shared;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metrics::{Delivered, Handled};
use crate::protocol::entry::RawEntry;
use crate::protocol::{ReplyStatus, codes};
use crate::retention::{self, TrimReport, TrimSchedule};

/// Most entries looked at per reaper pass.
const PASS_LIMIT: usize = 256;

/// What one reaper pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapReport {
    /// Entries claimed from other consumers: run again, or (used up) answered from their stored reply.
    pub reclaimed: usize,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: usize,
    /// Pending entries whose stream entry had been deleted (dropped from the pending list).
    pub deleted: usize,
    /// Idle consumers holding nothing that were removed.
    pub consumers_removed: usize,
}

impl ReapReport {
    /// Adds the counts of another pass (another partition's).
    fn add(&mut self, other: ReapReport) {
        self.reclaimed += other.reclaimed;
        self.dead_lettered += other.dead_lettered;
        self.deleted += other.deleted;
        self.consumers_removed += other.consumers_removed;
    }
}

/// Where a reaper loop runs, which decides what one pass does.
#[derive(Clone, Copy)]
pub(crate) enum ReaperKind {
    /// Inside a responder: claims stale entries for its own handlers, then removes dead consumers.
    InResponder,
    /// On its own ([`Reaper`]): dead-letters entries that used up their deliveries, removes dead consumers.
    Standalone,
}

/// A reaper loop: a pass every reap interval and a trim every retention interval, until stopped.
pub(crate) async fn reaper_loop(shared: Arc<Shared>, kind: ReaperKind) {
    let mut clock = ReaperClock::new(&shared);
    let mut trims = TrimSchedule::new();
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = clock.tick.tick() => {}
        }
        if clock.reap_due() {
            let pass = match kind {
                ReaperKind::InResponder => responder_pass(&shared).await,
                ReaperKind::Standalone => standalone_pass(&shared).await,
            };
            match pass {
                Ok(report) if report != ReapReport::default() => {
                    tracing::info!(
                        service = %shared.service,
                        reclaimed = report.reclaimed,
                        dead_lettered = report.dead_lettered,
                        deleted = report.deleted,
                        consumers_removed = report.consumers_removed,
                        "reaper pass"
                    )
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "reaper pass failed"),
            }
        }
        trims
            .run(&shared.con, &shared.keys, &shared.settings.retention)
            .await;
    }
}

/// A responder's reaper pass: claims stale entries, then removes dead consumers (even when claiming failed).
async fn responder_pass(shared: &Arc<Shared>) -> Result<ReapReport> {
    let reclaimed = reclaim(shared).await;
    if let Err(err) = remove_dead_consumers(shared).await {
        tracing::debug!(error = %err, "consumer cleanup failed");
    }
    reclaimed
}

/// When a reaper loop wakes: often enough for both its reap interval and its trim interval, which may be shorter.
struct ReaperClock {
    tick: tokio::time::Interval,
    reap_every: Duration,
    next_reap: tokio::time::Instant,
}

impl ReaperClock {
    fn new(shared: &Shared) -> Self {
        let reap_every = shared.settings.reap_every();
        let retention = &shared.settings.retention;
        let step = if retention.enabled {
            reap_every.min(retention.interval.max(Duration::from_millis(20)))
        } else {
            reap_every
        };
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            tick,
            reap_every,
            next_reap: tokio::time::Instant::now(),
        }
    }

    /// Whether a reap pass is due now; if so, the next one is scheduled.
    fn reap_due(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now < self.next_reap {
            return false;
        }
        self.next_reap = now + self.reap_every;
        true
    }
}

/// Claims stale entries (as many as there are free permits), dead-letters those past `max_deliveries` and runs
/// the others.
async fn reclaim(shared: &Arc<Shared>) -> Result<ReapReport> {
    let mut report = ReapReport::default();
    let free = shared.permits.available_permits().min(PASS_LIMIT);
    if free == 0 {
        return Ok(report);
    }
    let mut con = shared.con.clone();
    let settings = &shared.settings;
    let claimed: StreamAutoClaimReply = con
        .xautoclaim_options(
            shared.keys.requests(),
            &settings.group,
            &settings.consumer,
            settings.visibility_timeout.as_millis() as u64,
            "0-0",
            StreamAutoClaimOptions::default().count(free),
        )
        .await
        .map_err(Error::redis("claiming stale entries"))?;
    report.deleted = claimed.deleted_ids.len();
    if report.deleted > 0 {
        tracing::info!(
            service = %shared.service,
            count = report.deleted,
            entry_ids = %claimed.deleted_ids.join(","),
            "pending entries whose stream entry was deleted were dropped"
        );
    }
    if claimed.claimed.is_empty() {
        return Ok(report);
    }
    let counts = delivery_counts(shared, claimed.claimed.iter().map(|e| e.id.as_str())).await?;
    for entry in claimed.claimed {
        let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
        shared.metrics.delivered(shared.claimed_kind(&entry.id), 1);
        let raw = RawEntry::from_stream_id(entry);
        if deliveries > settings.max_deliveries {
            if settle_exhausted(shared, &raw, deliveries).await {
                report.dead_lettered += 1;
            } else {
                report.reclaimed += 1;
            }
            continue;
        }
        report.reclaimed += 1;
        let permit = shared.permits.clone().try_acquire_owned().ok();
        shared.spawn_entry(raw, deliveries, Stored::Maybe, permit);
    }
    Ok(report)
}

/// Delivery counts of entries this consumer holds, from `XPENDING` (one range query per entry, pipelined).
async fn delivery_counts<'a>(
    shared: &Shared,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, u64>> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.xpending_consumer_count(
            shared.keys.requests(),
            &shared.settings.group,
            id,
            id,
            1,
            &shared.settings.consumer,
        );
    }
    let mut con = shared.con.clone();
    let replies: Vec<StreamPendingCountReply> = pipe
        .query_async(&mut con)
        .await
        .map_err(Error::redis("reading delivery counts"))?;
    Ok(replies
        .into_iter()
        .flat_map(|r| r.ids)
        .map(|p| (p.id, p.times_delivered as u64))
        .collect())
}

/// Settles an entry that used up its deliveries: answered from its stored reply when it has one (a reply by hand,
/// or an answer whose ack was lost: answered once, never dead-lettered after the fact), dead-lettered otherwise.
/// True when dead-lettered.
pub(super) async fn settle_exhausted(shared: &Shared, entry: &RawEntry, deliveries: u64) -> bool {
    let request = entry
        .envelope
        .as_deref()
        .and_then(|b| crate::protocol::decode_request(b).ok());
    if let Some(id) = entry.request_id.as_deref()
        && shared.answer_from_stored(id, &entry.entry_id).await
    {
        tracing::debug!(%id, "exhausted entry answered from its stored reply");
        let func_key = request.as_ref().map_or("", |r| r.func_key.as_str());
        shared
            .metrics
            .handled(func_key, Handled::AnsweredFromStored, None);
        return false;
    }
    dead_letter_exhausted(shared, entry, request.as_ref(), deliveries).await;
    true
}

/// Dead-letters an entry that used up its deliveries, with the last error its handler left.
async fn dead_letter_exhausted(
    shared: &Shared,
    entry: &RawEntry,
    request: Option<&crate::protocol::RequestEnvelope>,
    deliveries: u64,
) {
    let last_error = match entry.request_id.as_deref() {
        Some(id) => shared.last_error(id).await,
        None => None,
    }
    .unwrap_or_else(|| {
        "no error recorded (the responder may have died while handling it)".to_owned()
    });
    let reason = format!(
        "delivered {deliveries} times, over max_deliveries {}; last error: {last_error}",
        shared.settings.max_deliveries
    );
    let letter = DeadLetter::replying(
        entry,
        ReplyStatus::DeadLettered,
        codes::MAX_DELIVERIES_EXCEEDED,
        reason,
        last_error,
        deliveries,
    );
    shared.dead_letter(entry, request, letter).await;
}

/// Removes consumers that hold nothing and have been idle longer than the configured limit, unless their heartbeat
/// record says they are alive: on Redis before 7.2 a read or claim that finds nothing does not refresh a consumer's
/// idle time, so a live responder on a quiet service looks as idle as a dead one, and removing it would race its
/// next read (an entry it reads just before the removal would leave the pending list with it).
async fn remove_dead_consumers(shared: &Shared) -> Result<usize> {
    let mut con = shared.con.clone();
    let info: StreamInfoConsumersReply = con
        .xinfo_consumers(shared.keys.requests(), &shared.settings.group)
        .await
        .map_err(Error::redis("listing consumers"))?;
    let limit = shared.settings.dead_consumer_idle.as_millis() as usize;
    let mut removed = 0;
    for consumer in info.consumers {
        if consumer.name != shared.settings.consumer
            && consumer.pending == 0
            && consumer.idle > limit
        {
            let alive: bool = con
                .exists(shared.parts.base().responder(&consumer.name))
                .await
                .map_err(Error::redis("looking for a consumer's heartbeat record"))?;
            if alive {
                continue;
            }
            let _: i64 = con
                .xgroup_delconsumer(
                    shared.keys.requests(),
                    &shared.settings.group,
                    &consumer.name,
                )
                .await
                .map_err(Error::redis("removing a dead consumer"))?;
            tracing::info!(consumer = %consumer.name, idle_ms = consumer.idle, "removed a dead consumer");
            removed += 1;
        }
    }
    Ok(removed)
}

/// A reaper running on its own (no handlers): dead-letters entries that used up their deliveries and removes
/// dead consumers. Stop it with [`Reaper::shutdown`].
pub struct Reaper {
    /// One per partition of the service (see [`ResponderSettings::partitions`]).
    parts: Vec<Arc<Shared>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper")
            .field("service", &self.parts.first().map(|p| p.parts.base().tag()))
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl Reaper {
    /// Starts a standalone reaper for `service` with `settings` (group, visibility timeout, max deliveries,
    /// reap interval, dead consumer idle time and retention are used): a pass every reap interval, a trim every
    /// retention interval. Failures of a pass or a trim are logged and retried at the next tick, never returned.
    ///
    /// # Errors
    /// As [`Reaper::connect`].
    pub async fn start(client: Client, service: &str, settings: ResponderSettings) -> Result<Self> {
        let reaper = Self::connect(client, service, settings).await?;
        for shared in &reaper.parts {
            reaper
                .tasks
                .spawn(reaper_loop(shared.clone(), ReaperKind::Standalone));
        }
        reaper.tasks.close();
        Ok(reaper)
    }

    /// A standalone reaper for `service` that runs nothing by itself: only the passes and trims asked for with
    /// [`Reaper::pass`] and [`Reaper::trim`] (`redcall reap --once`).
    ///
    /// # Errors
    /// - [`Error::Config`] when the settings cannot work (see [`ResponderSettings::validate`]);
    /// - [`Error::Redis`] when connecting fails or the consumer group cannot be created.
    pub async fn connect(
        client: Client,
        service: &str,
        settings: ResponderSettings,
    ) -> Result<Self> {
        let settings = settings.clamped();
        crate::names::check_service(service).map_err(Error::InvalidArgument)?;
        settings.validate()?;
        let parts = Shared::connect(client, service, settings, HashMap::new()).await?;
        for shared in &parts {
            shared.ensure_group().await?;
        }
        let tasks = TaskTracker::new();
        tasks.close();
        Ok(Self { parts, tasks })
    }

    /// One pass, now: what a tick of the loop does.
    ///
    /// # Errors
    /// [`Error::Redis`] when listing or claiming stale entries, or listing or removing consumers, fails. The pass
    /// stops there; what it did before stays done, and the next pass picks up the rest. A dead letter that cannot
    /// be written is logged, not returned (and still counted): its entry stays pending for a later pass.
    pub async fn pass(&self) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        for shared in &self.parts {
            report.add(standalone_pass(shared).await?);
        }
        Ok(report)
    }

    /// One trim by the retention policy of the reaper's settings, now (even when the policy is disabled: a call is
    /// an explicit request).
    ///
    /// # Errors
    /// [`Error::Redis`] when the trim script or the dead-letter `XTRIM` fails; a trim of the requests stream that
    /// went through stays done.
    pub async fn trim(&self) -> Result<TrimReport> {
        let mut reports = Vec::with_capacity(self.parts.len());
        for shared in &self.parts {
            let mut con = shared.con.clone();
            reports
                .push(retention::trim(&mut con, &shared.keys, &shared.settings.retention).await?);
        }
        Ok(TrimReport::merge(reports))
    }

    /// Stops the reaper and waits for its task, so no pass is cut off halfway (dropping the reaper stops it too, but
    /// without waiting: a pass under way may be cut off at its next await).
    pub async fn shutdown(self) {
        for shared in &self.parts {
            shared.stop.cancel();
        }
        self.tasks.wait().await;
    }
}

impl Drop for Reaper {
    /// Stops the reaper's loop without waiting for it, like a dropped [`crate::Responder`].
    fn drop(&mut self) {
        for shared in &self.parts {
            shared.stop.cancel();
        }
    }
}

/// Dead-letters stale entries that used up their deliveries (claiming them first, so a live responder working on
/// one keeps it), then removes dead consumers.
async fn standalone_pass(shared: &Shared) -> Result<ReapReport> {
    let mut report = ReapReport::default();
    let settings = &shared.settings;
    let vt = settings.visibility_timeout.as_millis() as u64;
    let mut con = shared.con.clone();
    let stale: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(shared.keys.requests())
        .arg(&settings.group)
        .arg("IDLE")
        .arg(vt)
        .arg("-")
        .arg("+")
        .arg(PASS_LIMIT)
        .query_async(&mut con)
        .await
        .map_err(Error::redis("listing stale entries"))?;
    let exhausted: Vec<(String, u64)> = stale
        .ids
        .into_iter()
        .filter(|p| p.times_delivered as u64 >= settings.max_deliveries)
        .map(|p| (p.id, p.times_delivered as u64 + 1))
        .collect();
    if !exhausted.is_empty() {
        let ids: Vec<&str> = exhausted.iter().map(|(id, _)| id.as_str()).collect();
        // XCLAIM with the idle time as minimum: an entry someone touched meanwhile is left alone.
        let claimed: redis::streams::StreamClaimReply = con
            .xclaim(
                shared.keys.requests(),
                &settings.group,
                &settings.consumer,
                vt,
                &ids,
            )
            .await
            .map_err(Error::redis("claiming exhausted entries"))?;
        report.deleted = ids.len().saturating_sub(claimed.ids.len());
        let counts: HashMap<&str, u64> =
            exhausted.iter().map(|(id, n)| (id.as_str(), *n)).collect();
        for entry in claimed.ids {
            shared.metrics.delivered(Delivered::Claimed, 1);
            let deliveries = counts
                .get(entry.id.as_str())
                .copied()
                .unwrap_or(settings.max_deliveries + 1);
            if settle_exhausted(shared, &RawEntry::from_stream_id(entry), deliveries).await {
                report.dead_lettered += 1;
            } else {
                report.reclaimed += 1;
            }
        }
    }
    report.consumers_removed = remove_dead_consumers(shared).await?;
    Ok(report)
}
