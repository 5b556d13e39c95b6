//! Where a reply meets its caller: the table from reply channel to the caller waiting on it.
//!
//! A caller registers a waiter under its request's reply channel before the request is added. A reply reaches the
//! waiter by one of three ways — a pub/sub message ([`Waiters::route_message`]), the stored reply read after a
//! reconnect or a re-subscribe ([`Waiters::deliver`]), or a `Lost` verdict when Redis forgot an accepted request —
//! and [`Waiters::complete`] hands each waiter at most one of them: the first.
//!
//! A reply is taken only when it is usable: a reply envelope of a version this build speaks, naming the waiter's
//! own request id (DESIGN 13). Anything else on the channel — garbage, another id's envelope, a future version — is
//! logged and ignored, and the caller keeps waiting (and reads the stored reply on timeout).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use redis::Value;
use tokio::sync::oneshot;

use crate::protocol::{self, ReplyEnvelope, ServiceKeys};

/// What a waiting caller is handed.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The reply envelope, as published or stored, checked to answer the waiter's request.
    Reply(ReplyEnvelope),
    /// Redis accepted the request, but after a reconnect neither its record nor a reply exists: Redis lost it.
    Lost,
}

/// A caller waiting for the reply published on one channel.
struct Waiter {
    /// The keys of the request's service, from which the reconnect derives its reply and record keys.
    keys: Arc<ServiceKeys>,
    /// Set once Redis has accepted the request: only then does a missing record mean the request was lost.
    accepted: bool,
    /// Set while the adder has the request (see [`super::adder`]): its `SUBSCRIBE` may not have reached Redis yet.
    adding: bool,
    tx: oneshot::Sender<Delivery>,
}

/// A fast seeded hasher: channel names are long and hashed several times per request.
type FastHash = foldhash::fast::RandomState;

/// Reply channel → waiting caller, shared by the callers, the push callback and the router's tasks.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Waiter, FastHash>>,
    /// Channels released by callers that gave up while the adder had their request. They are unsubscribed only
    /// once the adder's batch is answered: an `UNSUBSCRIBE` sent earlier could reach Redis before the batch's
    /// `SUBSCRIBE` and leave the channel subscribed for good. Locked after `map`, never before.
    orphans: Mutex<HashSet<String, FastHash>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Waiter, FastHash>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map itself stays consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn orphans(&self) -> MutexGuard<'_, HashSet<String, FastHash>> {
        self.orphans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for `channel`; `adding` when its request goes to the adder. `None` when one is already
    /// registered (the same id in flight in this process).
    pub(crate) fn register(
        &self,
        channel: &str,
        keys: Arc<ServiceKeys>,
        adding: bool,
    ) -> Option<oneshot::Receiver<Delivery>> {
        let mut map = self.lock();
        if map.contains_key(channel) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        map.insert(
            channel.to_owned(),
            Waiter {
                keys,
                accepted: false,
                adding,
                tx,
            },
        );
        Some(rx)
    }

    /// Marks the waiter of `channel` as accepted by Redis (its request record and stream entry exist).
    pub(crate) fn accept(&self, channel: &str) {
        if let Some(w) = self.lock().get_mut(channel) {
            w.accepted = true;
        }
    }

    /// Forgets the waiter of `channel`, if still there. True when the channel is to be unsubscribed now; false while
    /// the adder has its request (it is then unsubscribed by [`Waiters::added`]).
    pub(crate) fn release(&self, channel: &str) -> bool {
        let mut map = self.lock();
        if let Some(waiter) = map.remove(channel)
            && waiter.adding
        {
            self.orphans().insert(channel.to_owned());
            return false;
        }
        true
    }

    /// The adder is done with the request of `channel`: `sent` when its `SUBSCRIBE` went out, `accepted` when Redis
    /// added the request. True when the channel is to be unsubscribed now (its caller gave up meanwhile).
    pub(crate) fn added(&self, channel: &str, sent: bool, accepted: bool) -> bool {
        let mut map = self.lock();
        if let Some(waiter) = map.get_mut(channel) {
            waiter.adding = false;
            waiter.accepted = accepted;
            return false;
        }
        let orphan = self.orphans().remove(channel);
        orphan && sent
    }

    /// Whether someone waits on `channel`.
    pub(crate) fn is_waited(&self, channel: &str) -> bool {
        self.lock().contains_key(channel)
    }

    /// Number of callers waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Completes the waiter of `channel` with `delivery`; false when nobody waits (already answered or gone).
    pub(crate) fn complete(&self, channel: &str, delivery: Delivery) -> bool {
        let waiter = self.lock().remove(channel);
        match waiter {
            Some(w) => w.tx.send(delivery).is_ok(),
            None => false,
        }
    }

    /// Hands a `message` push (`[channel, payload]`) to its waiter. Runs on the connection's driver: must not
    /// block.
    pub(crate) fn route_message(&self, data: Vec<Value>) {
        let mut parts = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (parts.next(), parts.next())
        else {
            tracing::warn!("ignoring a pub/sub message of unexpected shape");
            return;
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return;
        };
        self.deliver(channel, &payload);
    }

    /// Completes the waiter of `channel` with the reply envelope in `payload`, if it is usable: decodable, of a
    /// known version, and naming the waiter's request id. True when a waiter took it.
    pub(crate) fn deliver(&self, channel: &str, payload: &[u8]) -> bool {
        // Decoded before the lock is taken: callers registering and releasing are not held up by it.
        let reply = match protocol::decode_reply(payload) {
            Ok(reply) => reply,
            Err(err) => {
                tracing::warn!(channel, error = %err, "ignoring an unusable message on a reply channel");
                return false;
            }
        };
        let mut map = self.lock();
        let Some(waiter) = map.get(channel) else {
            tracing::debug!(channel, "reply for a caller that is no longer waiting");
            return false;
        };
        if waiter.keys.id_of_reply_channel(channel) != Some(reply.id.as_str()) {
            tracing::warn!(
                channel,
                reply_id = %reply.id,
                "ignoring a reply envelope that names another request"
            );
            return false;
        }
        let Some(waiter) = map.remove(channel) else {
            return false;
        };
        drop(map);
        waiter.tx.send(Delivery::Reply(reply)).is_ok()
    }

    /// Every waiter, as a reconnect restores them.
    pub(crate) fn snapshot_all(&self) -> Vec<Snapshot> {
        self.lock()
            .iter()
            .filter_map(|(channel, w)| Snapshot::of(channel, w))
            .collect()
    }

    /// The waiters of those of `channels` that are waited on.
    pub(crate) fn snapshot_of(&self, channels: &[String]) -> Vec<Snapshot> {
        let map = self.lock();
        channels
            .iter()
            .filter_map(|channel| Snapshot::of(channel, map.get(channel)?))
            .collect()
    }
}

/// What a re-subscribe needs of one waiter, taken under the lock.
pub(crate) struct Snapshot {
    pub(crate) channel: String,
    pub(crate) reply_key: String,
    pub(crate) record_key: String,
    pub(crate) accepted: bool,
}

impl Snapshot {
    fn of(channel: &str, waiter: &Waiter) -> Option<Self> {
        let id = waiter.keys.id_of_reply_channel(channel)?;
        Some(Self {
            channel: channel.to_owned(),
            reply_key: waiter.keys.reply(id),
            record_key: waiter.keys.record(id),
            accepted: waiter.accepted,
        })
    }
}
