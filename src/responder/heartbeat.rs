//! The heartbeat: a responder's periodic look at itself, and what it tells others.
//!
//! Every heartbeat interval it writes its heartbeat record (`T:responder:<consumer>`, MessagePack, expiring after
//! three intervals; its name in the index `T:responders`), so that any program can see who serves the service
//! ([`crate::admin::Admin::responders`]), and sets its in-flight gauge; every third time it samples the queue
//! gauges of its service (stream length, pending, lag, oldest pending age, dead letters; see [`crate::metrics`]).
//! When the responder stops reading, the loop deletes the record and ends: a stopped responder disappears at
//! once, a dead one when its record expires.

use std::sync::Arc;

use super::settings::host_name;
use super::state::Shared;
use crate::admin::{Admin, ResponderInfo};
use crate::config::ttl_ms;
use crate::protocol;

/// Heartbeats between two samples of the queue gauges.
const QUEUE_SAMPLE_EVERY: u64 = 3;
/// A heartbeat record lives this many heartbeat intervals unless refreshed.
const TTL_BEATS: u32 = 3;
/// Index entries not refreshed for this long are removed by any responder's heartbeat (their records expired long
/// before; readers skip those anyway). Generous, so that clock differences between hosts do not matter.
const INDEX_FORGET_MS: u64 = 3_600_000;

/// Runs until the responder stops reading.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>) {
    let admin = Admin::with_connection(
        shared.client.clone(),
        shared.metrics.service(),
        shared.con.clone(),
    )
    .partitions(shared.parts.count());
    let mut record = first_record(&shared);
    let mut tick = tokio::time::interval(shared.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 0u64.. {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let busy = shared.busy();
        shared.metrics.set_in_flight(busy);
        refresh(&shared, &mut record, busy).await;
        if beat % QUEUE_SAMPLE_EVERY == 0 {
            match admin.stats_with(false).await {
                Ok(stats) => crate::metrics::record_queue(&stats),
                Err(err) => tracing::debug!(error = %err, "could not sample the queue gauges"),
            }
        }
    }
    remove(&shared).await;
}

/// The record as of the start.
fn first_record(shared: &Shared) -> ResponderInfo {
    let mut functions: Vec<String> = shared.handlers.keys().cloned().collect();
    functions.sort_unstable();
    let now = protocol::now_ms();
    ResponderInfo {
        v: crate::admin::HEARTBEAT_VERSION,
        consumer: shared.settings.consumer.clone(),
        group: shared.settings.group.clone(),
        host: host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        functions,
        started_ms: now,
        last_seen_ms: now,
        in_flight: 0,
        handled: 0,
        failed: 0,
        mean_handler_ms: 0.0,
        heartbeat_ms: shared.settings.heartbeat_interval.as_millis() as u64,
    }
}

/// Writes the record (with a fresh TTL) and the index entry, in one transaction. A failure is logged: the next
/// heartbeat tries again, and readers see the responder gone only if that goes on for three intervals.
async fn refresh(shared: &Shared, record: &mut ResponderInfo, busy: usize) {
    let totals = shared.metrics.totals();
    record.last_seen_ms = protocol::now_ms();
    record.in_flight = busy as u64;
    record.handled = totals.handled;
    record.failed = totals.failed;
    record.mean_handler_ms = totals.mean_handler_ms;
    let bytes = match protocol::encode(&*record) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(error = %err, "could not encode the heartbeat record");
            return;
        }
    };
    let ttl = ttl_ms(shared.settings.heartbeat_interval * TTL_BEATS);
    let index = shared.parts.base().responders();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(shared.parts.base().responder(&record.consumer))
        .arg(bytes)
        .arg("PX")
        .arg(ttl)
        .ignore()
        .cmd("ZADD")
        .arg(&index)
        .arg(record.last_seen_ms)
        .arg(&record.consumer)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&index)
        .arg("-inf")
        .arg(format!(
            "({}",
            record.last_seen_ms.saturating_sub(INDEX_FORGET_MS)
        ))
        .ignore();
    let mut con = shared.con.clone();
    if let Err(err) = pipe.query_async::<()>(&mut con).await {
        tracing::debug!(error = %err, "could not refresh the heartbeat record");
    }
}

/// Deletes the record and the index entry: this responder stopped.
async fn remove(shared: &Shared) {
    let consumer = &shared.settings.consumer;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(shared.parts.base().responder(consumer))
        .ignore()
        .cmd("ZREM")
        .arg(shared.parts.base().responders())
        .arg(consumer)
        .ignore();
    let mut con = shared.con.clone();
    if let Err(err) = pipe.query_async::<()>(&mut con).await {
        tracing::debug!(error = %err, "could not delete the heartbeat record");
    }
}
