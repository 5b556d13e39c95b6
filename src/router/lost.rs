//! Sharded subscriptions the server ended by itself, subscribed again.
//!
//! On a cluster a reply channel is a sharded channel: it lives on the shard that owns its slot. When the slot
//! moves to another shard (resharding) or its node stops being a primary, the server sends an unasked-for
//! `sunsubscribe` for it. The redis crate passes that push through and drops the channel from the subscriptions it
//! restores on reconnects, so nobody would hear the reply. The push callback ([`super::reconnect`]) sends every such
//! channel that is still waited on here; this loop subscribes it again (the cluster connection routes the
//! `SSUBSCRIBE` to the slot's owner now, following `MOVED`) and then reads its stored reply, in case the reply was
//! published in between ([`resubscribe`]). While that fails (the slot has no owner yet, mid-failover) it is tried
//! again with backoff, as long as the channel is waited on.
//!
//! Terminates: each round takes what is queued, and a round ends when every channel of it is subscribed again or
//! no longer waited on; the loop stops when the router is dropped.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::reconnect::resubscribe;
use super::{BULK_CHUNK, Router};
use crate::backoff::Backoff;

/// Backoff between attempts grows up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Subscribes again the channels sent on `rx` while they are waited on, and reads their stored replies.
pub(super) async fn resubscribe_loop(
    router: Weak<Router>,
    mut rx: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BULK_CHUNK);
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            n = rx.recv_many(&mut batch, BULK_CHUNK) => n,
        };
        if received == 0 {
            return;
        }
        if let Some(r) = router.upgrade() {
            r.topology_changed();
        }
        let mut backoff = Backoff::up_to(MAX_BACKOFF);
        loop {
            let Some(r) = router.upgrade() else { return };
            let waited = r.waiters.snapshot_of(&batch);
            if waited.is_empty() {
                break;
            }
            // Without a connection the reconnect loop restores every waiter anyway.
            let Some(mut con) = r.current() else { break };
            tracing::debug!(
                channels = waited.len(),
                "the server ended sharded subscriptions still waited on; subscribing again"
            );
            match resubscribe(&r.waiters, &mut con, waited).await {
                Ok(_) => break,
                Err(err) => {
                    tracing::debug!(error = %err, "subscribing again failed; retrying");
                }
            }
            drop(r);
            if backoff.sleep_or_stop(&cancel).await {
                return;
            }
        }
        batch.clear();
    }
}
