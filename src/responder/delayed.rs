//! The promoter: moves delayed requests that are due from the schedule (`T:delayed`) to the requests stream, where
//! any responder reads them like any request. Every responder runs it; `PROMOTE_DELAYED` makes each promotion
//! happen once however many run. It asks Redis every [`EVERY`] (one script call on an empty schedule), not per
//! request, so a request is handed on at most about that long after it is due.

use std::sync::Arc;
use std::time::Duration;

use super::state::Shared;
use crate::scripts;

/// How often the schedule is looked at.
const EVERY: Duration = Duration::from_millis(100);

/// Most requests promoted per look.
const BATCH: usize = 256;

/// Promotes due delayed requests until the responder stops.
pub(crate) async fn promote_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.stop.cancelled() => return,
        }
        if let Err(err) = promote_due(&shared).await {
            tracing::debug!(error = %err, "could not promote delayed requests");
        }
    }
}

/// One look at the schedule: promotes what is due.
async fn promote_due(shared: &Shared) -> redis::RedisResult<()> {
    let schedule = shared.keys.delayed();
    let mut pipe = redis::pipe();
    scripts::evalsha(&mut pipe, &scripts::DUE_DELAYED)
        .arg(1)
        .arg(&schedule)
        .arg(BATCH);
    let mut con = shared.con.clone();
    let (due,): (Vec<String>,) = scripts::query_with_scripts(&pipe, &mut con).await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in &due {
        scripts::evalsha(&mut pipe, &scripts::PROMOTE_DELAYED)
            .arg(4)
            .arg(&schedule)
            .arg(shared.keys.requests())
            .arg(shared.keys.record(id))
            .arg(shared.keys.reply(id))
            .arg(id);
    }
    let promoted: Vec<i64> = scripts::query_with_scripts(&pipe, &mut con).await?;
    let added = promoted.iter().filter(|n| **n == 1).count();
    tracing::debug!(due = due.len(), added, "delayed requests promoted");
    Ok(())
}
