//! The keepalive: refreshes the claim of every entry being handled, so the reaper does not hand work in progress
//! to someone else (DESIGN 7).

use std::sync::Arc;

use redis::Value;

use super::state::Shared;

impl Shared {
    /// Refreshes the claim of every entry being handled, so the reaper does not hand them to someone else.
    async fn refresh_claims(&self) {
        let ids: Vec<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(self.keys.requests())
                .arg(&self.settings.group)
                .arg(&self.settings.consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID");
            let mut con = self.con.clone();
            if let Err(err) = cmd.query_async::<Value>(&mut con).await {
                tracing::warn!(error = %err, "could not refresh claims");
            }
        }
    }
}

/// Refreshes running handlers' claims until the responder has fully stopped.
pub(crate) async fn keepalive_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.settings.keepalive_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.refresh_claims().await,
            _ = shared.abort.cancelled() => return,
        }
    }
}
