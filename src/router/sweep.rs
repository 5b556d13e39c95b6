//! Reading stored replies again for a while after a cluster's topology changed.
//!
//! On a cluster the reply channels are sharded: a subscription lives on one node's connection inside the redis
//! crate's cluster connection. Around a failover that connection is repaired, re-subscribed and re-routed by the
//! crate on its own schedule (after its slot map refresh), and a reply published on the new primary while a
//! channel's subscription was not (yet, or no longer) on it is heard by no one: `tests/cluster_failover.rs` saw
//! such callers get their reply only from the last look at their timeout. The router's own restore
//! ([`super::reconnect`]) subscribes and reads once, when it learns of the break; replies stored after that, while
//! the crate still shuffles connections, need another look. So each sign of a topology change (the reconnect
//! loop woken, a server-ended sharded subscription) starts a sweep: every waiter's stored reply is read once a
//! second for [`SWEEP_FOR`], one `MGET`/`EXISTS` pipeline per slot. A reply found completes its waiter exactly as a
//! message would (`Waiters::deliver` takes the first of the two).
//!
//! Only on a cluster: one Redis delivers to a subscription for as long as its connection lives, and a broken
//! connection is replaced and read by the reconnect loop.
//!
//! Terminates: each sweep ends [`SWEEP_FOR`] after the last sign; the loop ends when the router is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Router;
use super::reconnect::read_stored;
use crate::connection::by_slot;

/// How long after the last sign of a topology change stored replies are read again.
const SWEEP_FOR: Duration = Duration::from_secs(20);
/// How often, during a sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sweeps after every notification of `sweep`, until the router is dropped.
pub(super) async fn sweep_loop(
    router: Weak<Router>,
    sweep: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sweep.notified() => {}
        }
        let mut until = tokio::time::Instant::now() + SWEEP_FOR;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sweep.notified() => {
                    until = tokio::time::Instant::now() + SWEEP_FOR;
                    continue;
                }
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            let Some(r) = router.upgrade() else { return };
            let Some(mut con) = r.current() else { continue };
            let pending = r.waiters.snapshot_all();
            for group in by_slot(&pending, con.pubsub(), |w| w.channel.as_str()) {
                if let Err(err) = read_stored(&r.waiters, &mut con, &group).await {
                    tracing::debug!(error = %err, "reading stored replies after a topology change failed");
                }
            }
        }
    }
}
