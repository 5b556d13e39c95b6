//! Cancellation on the responder's side: one listener per responder on the service's cancel channel
//! (`T:cancels`), which tells running handlers of their request's cancellation and remembers recent cancels so
//! that an entry read just before its cancel is not started.
//!
//! What keeps a cancelled request from running is the `cancelled` reply the `CANCEL` script stores: a responder
//! answers a request with a stored reply from it (see [`super::history`]). The listener only makes it fast: a
//! handler already running sees it within a pub/sub hop, without any command per request. Cancels published
//! while the listener is disconnected are not seen by running handlers; their late results are dropped all the
//! same (the first stored reply wins).
//!
//! Order argument: the listener notes the id as recently cancelled and *then* looks for a running handler; a
//! handler is registered as running and *then* checks the recent cancels. Whichever comes second sees the other,
//! so no cancel that reaches the listener is missed by a handler that is running.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::state::Shared;
use crate::backoff::Backoff;

/// Most request ids remembered as recently cancelled.
const RECENT_LIMIT: usize = 4096;

/// Longest pause between two attempts to (re)subscribe to the cancel channel.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The requests this responder runs, by request id, and the recent cancels.
#[derive(Default)]
pub(crate) struct Cancels {
    /// Per request id, the cancellation tokens of its running deliveries (usually one), each with the number of its
    /// registration.
    running: Mutex<HashMap<String, Vec<Registered>, foldhash::fast::RandomState>>,
    registrations: AtomicU64,
    /// Whether any cancel was seen: until one is, checking a request costs no lock.
    any_recent: AtomicBool,
    recent: Mutex<Recent>,
}

/// A running delivery's registration number and cancellation token.
type Registered = (u64, CancellationToken);

/// Recently cancelled request ids, oldest first, bounded by [`RECENT_LIMIT`].
#[derive(Default)]
struct Recent {
    order: VecDeque<String>,
    ids: HashSet<String, foldhash::fast::RandomState>,
}

/// Keeps a request registered as running while it lives.
pub(crate) struct Running {
    shared: Arc<Shared>,
    id: String,
    registration: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self
            .shared
            .cancels
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tokens) = running.get_mut(&self.id) {
            tokens.retain(|(n, _)| *n != self.registration);
            if tokens.is_empty() {
                running.remove(&self.id);
            }
        }
    }
}

impl Cancels {
    /// Whether `id` was cancelled recently (seen on the cancel channel).
    pub(crate) fn recently_cancelled(&self, id: &str) -> bool {
        if !self.any_recent.load(Ordering::Acquire) {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        !recent.ids.is_empty() && recent.ids.contains(id)
    }

    /// A cancel of `id` arrived: remember it, then tell its running handlers.
    fn cancelled(&self, id: String) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            self.any_recent.store(true, Ordering::Release);
            if recent.ids.insert(id.clone()) {
                recent.order.push_back(id.clone());
                if recent.order.len() > RECENT_LIMIT
                    && let Some(oldest) = recent.order.pop_front()
                {
                    recent.ids.remove(&oldest);
                }
            }
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tokens) = running.get(&id) {
            tracing::info!(%id, "cancelled while running; telling its handler");
            for (_, token) in tokens {
                token.cancel();
            }
        }
    }
}

impl Shared {
    /// Registers request `id` as running with `token` (cancelled at once if a cancel of it arrived already) until
    /// the returned guard drops.
    pub(super) fn running(self: &Arc<Self>, id: &str, token: &CancellationToken) -> Running {
        let registration = self.cancels.registrations.fetch_add(1, Ordering::Relaxed);
        self.cancels
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .push((registration, token.clone()));
        if self.cancels.recently_cancelled(id) {
            token.cancel();
        }
        Running {
            shared: self.clone(),
            id: id.to_owned(),
            registration,
        }
    }
}

/// Listens on the service's cancel channel until the responder stops, reconnecting with backoff.
pub(crate) async fn cancel_loop(shared: Arc<Shared>) {
    let channel = shared.keys.cancels();
    let mut backoff = Backoff::up_to(MAX_BACKOFF);
    loop {
        let target = shared.client.target();
        let subscribed = tokio::select! {
            listening = crate::connection::listen(
                target,
                shared.client.config(),
                &channel,
                "listening for cancels",
            ) => listening,
            _ = shared.stop.cancelled() => return,
        };
        let (_con, mut rx) = match subscribed {
            Ok(listening) => {
                backoff.reset();
                listening
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for cancels; trying again");
                if backoff.sleep_or_stop(&shared.stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Some(id)) => {
                        if let Ok(id) = String::from_utf8(id) {
                            shared.cancels.cancelled(id);
                        }
                    }
                    // Disconnected (or the connection is gone): subscribe again.
                    Some(None) | None => break,
                },
                _ = shared.stop.cancelled() => return,
            }
        }
        tracing::debug!("cancel listener disconnected; subscribing again");
        if backoff.sleep_or_stop(&shared.stop).await {
            return;
        }
    }
}
