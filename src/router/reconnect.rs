//! The router's connection: opening it with the push callback that routes replies, and reconnecting after it
//! broke, restoring every waiter's subscription and reading the replies published while nobody listened.
//!
//! On a cluster the connection is the redis crate's cluster connection, which repairs a node's connection by
//! itself and never breaks as a whole; but while one node's connection was down, the sharded subscriptions on it
//! heard nothing. So on a cluster every `Disconnection` push restores every waiter's subscription and reads the
//! stored replies on the current connection, and only when that fails is a new cluster connection opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::waiters::{Delivery, Snapshot, Waiters};
use super::{BULK_CHUNK, Router};
use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionSettings, Target, by_slot};
use crate::error::Result;

/// Backoff between reconnect attempts grows up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Opens a RESP3 connection whose push callback routes replies to waiters and reports disconnection.
pub(super) async fn connect(
    target: &Target,
    config: &ClientConfig,
    waiters: &Arc<Waiters>,
    generation: &Arc<AtomicU64>,
    reconnect: &Arc<Notify>,
    lost: &mpsc::UnboundedSender<String>,
) -> Result<Connection> {
    let this_generation = generation.fetch_add(1, Ordering::SeqCst) + 1;
    let (waiters, generation, reconnect, lost) = (
        waiters.clone(),
        generation.clone(),
        reconnect.clone(),
        lost.clone(),
    );
    let on_push = move |push: PushInfo| match push.kind {
        PushKind::Message | PushKind::SMessage => waiters.route_message(push.data),
        // An old connection's farewell must not tear down its replacement.
        PushKind::Disconnection if generation.load(Ordering::SeqCst) == this_generation => {
            reconnect.notify_one();
        }
        // The server ends a sharded subscription by itself when the channel's slot moves to another shard (or its
        // node stops being a primary). A channel still waited on must be subscribed again, on the new owner.
        PushKind::SUnsubscribe => {
            if let Some(channel) = push.data.first().and_then(channel_name)
                && waiters.is_waited(&channel)
            {
                let _ = lost.send(channel);
            }
        }
        _ => {}
    };
    let cfg = ConnectionSettings::new(config.connect_timeout, config.command_timeout)
        .with_push(Arc::new(on_push));
    target
        .connect(&cfg, config, "connecting the reply router")
        .await
}

/// Reconnects whenever the connection is reported broken, then restores every waiter's subscription and
/// delivers stored replies that may have been published while disconnected.
pub(super) async fn reconnect_loop(router: Weak<Router>, cancel: CancellationToken) {
    loop {
        let notified = match router.upgrade() {
            Some(r) => r.reconnect.clone(),
            None => return,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notified.notified() => {}
        }
        let Some(r) = router.upgrade() else { return };
        // A report can be stale: a caller whose command failed on a connection already replaced, or one of many
        // callers reporting the same break. Tearing down a working connection would fail the commands in flight on
        // it, whose reports would tear down the next one: ask the current connection first.
        // A connection to a node that was demoted to a replica still answers PING: it goes all the same.
        r.topology_changed();
        let wrong_role = r.wrong_role.swap(false, Ordering::SeqCst);
        if let Some(mut con) = r.current()
            && !wrong_role
        {
            let alive: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
            if alive.is_ok() && !con.pubsub().is_sharded() {
                continue;
            }
            // A cluster connection answers after one of its nodes came back, but what was published on that node
            // meanwhile went unheard: restore and read, on the same connection, while it works.
            if alive.is_ok() {
                match resubscribe(&r.waiters, &mut con, r.waiters.snapshot_all()).await {
                    Ok(_) => {
                        tracing::info!("reply router restored its sharded subscriptions");
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "restoring sharded subscriptions failed; reconnecting")
                    }
                }
            }
        }
        r.set_connection(None);
        tracing::warn!("reply router lost its Redis connection; reconnecting");
        let mut backoff = Backoff::up_to(MAX_BACKOFF);
        loop {
            if cancel.is_cancelled() {
                return;
            }
            match connect(
                &r.target,
                &r.config,
                &r.waiters,
                &r.generation,
                &r.reconnect,
                &r.lost_tx,
            )
            .await
            {
                Ok(mut con) => {
                    match resubscribe(&r.waiters, &mut con, r.waiters.snapshot_all()).await {
                        Ok(restored) => {
                            r.set_connection(Some(con));
                            tracing::info!("reply router reconnected");
                            // Callers released while the connection was being restored (those told that Redis lost
                            // their request, for one) were unsubscribed from nothing: there was no connection yet.
                            for channel in restored {
                                if !r.waiters.is_waited(&channel) {
                                    r.unsubscribe(channel);
                                }
                            }
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "restoring subscriptions failed; retrying")
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "reconnect attempt failed"),
            }
            if backoff.sleep_or_stop(&cancel).await {
                return;
            }
        }
    }
}

/// Subscribes the channels of `pending`, then reads their stored replies and completes the waiters whose reply was
/// published while no one was subscribed. A waiter whose request was accepted but whose record is gone (and that
/// has no reply) learns that Redis lost its request. Returns the channels subscribed.
pub(super) async fn resubscribe(
    waiters: &Waiters,
    con: &mut Connection,
    pending: Vec<Snapshot>,
) -> redis::RedisResult<Vec<String>> {
    let mut lost = 0usize;
    // On a cluster, per slot (a pipeline or a subscribe spans one); on one Redis, one group of all.
    for group in by_slot(&pending, con.pubsub(), |w| w.channel.as_str()) {
        lost += resubscribe_group(waiters, con, &group).await?;
    }
    if lost > 0 {
        tracing::error!(
            lost,
            "requests Redis had accepted are gone from it (restarted without persistence, or it \
             lost its last writes); their callers were told"
        );
    }
    Ok(pending.into_iter().map(|w| w.channel).collect())
}

/// [`resubscribe`] of one group of channels that a pipeline may span. Returns how many callers were told that their
/// request was lost.
async fn resubscribe_group(
    waiters: &Waiters,
    con: &mut Connection,
    pending: &[&Snapshot],
) -> redis::RedisResult<usize> {
    for chunk in pending.chunks(BULK_CHUNK) {
        let channels: Vec<&str> = chunk.iter().map(|w| w.channel.as_str()).collect();
        con.subscribe_channels(&channels).await?;
    }
    read_stored(waiters, con, pending).await
}

/// Reads the stored replies of `pending` (channels of one slot on a cluster) and completes the waiters whose reply
/// is stored; a waiter whose request was accepted but whose record is gone (and that has no reply) learns that
/// Redis lost its request. Returns how many were told that.
pub(super) async fn read_stored(
    waiters: &Waiters,
    con: &mut Connection,
    pending: &[&Snapshot],
) -> redis::RedisResult<usize> {
    let mut lost = 0usize;
    for chunk in pending.chunks(BULK_CHUNK) {
        let mut pipe = redis::pipe();
        for w in chunk {
            // `MGET`, not `GET`: a reply key of another type (a stray command) reads as nil instead of failing the
            // whole pipeline, and with it every reconnect.
            pipe.cmd("MGET").arg(&w.reply_key).exists(&w.record_key);
        }
        // Subscribed first, read second: a reply published in between arrives as a message, one published before
        // is found here; `complete` hands each waiter at most one of them.
        let found: Vec<Value> = pipe.query_async(con).await?;
        let mut found = found.into_iter();
        for w in chunk {
            let (Some(reply), Some(exists)) = (found.next(), found.next()) else {
                break;
            };
            let reply: Option<Vec<u8>> = redis::from_redis_value::<Vec<Option<Vec<u8>>>>(reply)?
                .into_iter()
                .next()
                .flatten();
            let record_exists: bool = redis::from_redis_value(exists)?;
            if let Some(reply) = reply {
                waiters.deliver(&w.channel, &reply);
            } else if w.accepted && !record_exists && waiters.complete(&w.channel, Delivery::Lost) {
                lost += 1;
            }
        }
    }
    Ok(lost)
}

/// The channel name of a subscription push's first item.
fn channel_name(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
