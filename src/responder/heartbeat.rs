//! The heartbeat: a responder's periodic look at itself. Every heartbeat interval it sets its in-flight gauge,
//! and every third one it samples the queue gauges of its service (stream length, pending, lag, oldest pending
//! age, dead letters; see [`crate::metrics`]) with the admin's stats. Stops with the reader.

use std::sync::Arc;

use super::state::Shared;
use crate::admin::Admin;

/// Heartbeats between two samples of the queue gauges.
const QUEUE_SAMPLE_EVERY: u64 = 3;

/// Runs until the responder stops reading.
pub(crate) async fn heartbeat_loop(shared: Arc<Shared>) {
    let admin = Admin::with_connection(
        shared.client.clone(),
        shared.metrics.service(),
        shared.con.clone(),
    );
    let mut tick = tokio::time::interval(shared.settings.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 0u64.. {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        shared.metrics.set_in_flight(shared.busy());
        if beat % QUEUE_SAMPLE_EVERY == 0 {
            match admin.stats_with(false).await {
                Ok(stats) => crate::metrics::record_queue(&stats),
                Err(err) => tracing::debug!(error = %err, "could not sample the queue gauges"),
            }
        }
    }
}
