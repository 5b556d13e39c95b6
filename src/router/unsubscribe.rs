//! Unsubscribing released reply channels in batches, and the re-subscribe of a channel waited on again before its
//! `UNSUBSCRIBE` went out.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::BULK_CHUNK;
use super::reconnect::resubscribe;
use super::waiters::Waiters;
use crate::connection::Connection;

/// Sends UNSUBSCRIBE for released channels, many per command.
///
/// A channel can be waited on again before its `UNSUBSCRIBE` goes out: a caller reusing an id (after its record
/// expired, or after Redis lost the request) registers and subscribes while the old caller's `UNSUBSCRIBE` is still
/// queued here, and that `UNSUBSCRIBE` then ends the new caller's subscription. So once an `UNSUBSCRIBE` is done,
/// the channels of it that are waited on again are subscribed again and their stored replies read, as after a
/// reconnect ([`resubscribe`]). Everything this loop sends goes out in order, so a caller released meanwhile is
/// unsubscribed after that `SUBSCRIBE`, in a later round.
pub(super) async fn unsubscribe_loop(
    connection: Arc<Mutex<Option<Connection>>>,
    waiters: Arc<Waiters>,
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
        let con = connection.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Without a connection there is nothing to unsubscribe: a reconnect subscribes only live waiters.
        if let Some(mut con) = con {
            match con.unsubscribe_channels(&batch).await {
                Ok(()) => {
                    // Nothing to do, and no round trip, in the usual case.
                    let waited = waiters.snapshot_of(&batch);
                    if !waited.is_empty() {
                        tracing::debug!(
                            channels = waited.len(),
                            "channels waited on again after their unsubscribe; subscribing again"
                        );
                        if let Err(err) = resubscribe(&waiters, &mut con, waited).await {
                            tracing::debug!(error = %err, "resubscribing reused channels failed");
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "unsubscribe failed"),
            }
        }
        batch.clear();
    }
}
