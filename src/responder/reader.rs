//! The reader: a blocking `XREADGROUP` on its own connection, reading only as many entries as there are free
//! permits, and recreating the group when the stream vanished.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::dispatch::Stored;
use super::state::Shared;
use crate::backoff::Backoff;
use crate::connection::{self, only_command_error};
use crate::protocol::entry::RawEntry;

/// Pauses between reconnect attempts grow up to this.
const READ_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Reads new entries for this consumer and hands each to a request task. Only reads as many as there are free
/// permits, so nothing read waits unclaimed in this process.
pub(crate) async fn read_loop(shared: Arc<Shared>) {
    let config = shared.client.config().clone();
    let block = shared.settings.block;
    let mut reader: Option<connection::Connection> = None;
    let mut backoff = Backoff::up_to(READ_MAX_BACKOFF);
    loop {
        // Read only when a permit is free, and only as many entries as there are free permits: nothing read waits
        // long in this process. Permits are not held while blocked, so the reaper can use them meanwhile.
        tokio::select! {
            // Stop wins over a free permit: a stopping responder takes no new work.
            biased;
            _ = shared.stop.cancelled() => return,
            p = shared.permits.acquire() => match p { Ok(p) => drop(p), Err(_) => return },
        }
        let count = shared
            .permits
            .available_permits()
            .clamp(1, shared.settings.batch);
        let con = match reader.as_mut() {
            Some(con) => con,
            None => {
                match connection::blocking_connection(shared.client.target(), &config, block).await
                {
                    Ok(con) => reader.insert(con),
                    Err(err) => {
                        tracing::warn!(error = %err, "reader cannot connect; retrying");
                        if backoff.sleep_or_stop(&shared.stop).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        // `T:byhand` rides along in the same pipeline, before the read: no round trip of its own.
        let mut pipe = redis::pipe();
        // `MGET`, not `GET`: a key of another type reads as nil instead of failing the read.
        pipe.cmd("MGET")
            .arg(shared.keys.by_hand())
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&shared.settings.group)
            .arg(&shared.settings.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(shared.keys.requests())
            .arg(">");
        let read: redis::RedisResult<(Vec<Option<Vec<u8>>>, Value)> =
            pipe.query_async(con).await.map_err(only_command_error);
        let read = read.map(|(by_hand, reply)| {
            let by_hand = by_hand.into_iter().next().flatten();
            (by_hand, RawEntry::from_read_reply(reply))
        });
        match read {
            Ok((by_hand, Some(entries))) => {
                backoff.reset();
                shared
                    .metrics
                    .delivered(crate::metrics::Delivered::First, entries.len() as u64);
                let stored = stored_replies(con, &shared, by_hand, &entries).await;
                for (entry, stored) in entries.into_iter().zip(stored) {
                    // Taken before the next read, so the next read sees only truly free permits. The reaper may
                    // have taken some while this read blocked: an entry without one waits for it in its own
                    // tracked task (claim kept fresh, given up when the grace period ends), not here, where it
                    // would hold up the loop and a shutdown.
                    let permit = shared.permits.clone().try_acquire_owned().ok();
                    shared.start_entry(entry, stored, permit);
                }
            }
            Ok((_, None)) => backoff.reset(),
            Err(err) if err.code() == Some("NOGROUP") => {
                tracing::warn!("consumer group or stream vanished; recreating it");
                if let Err(err) = shared.ensure_group().await {
                    tracing::warn!(error = %err, "could not recreate the group");
                    if backoff.sleep_or_stop(&shared.stop).await {
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "read failed; reconnecting");
                reader = None;
                if backoff.sleep_or_stop(&shared.stop).await {
                    return;
                }
            }
        }
    }
}

/// Which of `entries` may have a stored reply already. Only those that can ([`super::history`]: history, or a read
/// after a reply by hand) are asked about, in one round trip for all of them (one `EXISTS` each, pipelined on the
/// reader's own connection, idle between reads); the others, the usual case, cost nothing. When Redis cannot be
/// asked, an entry counts as [`Stored::Maybe`]: it is then checked on its own before its handler runs.
async fn stored_replies(
    con: &mut connection::Connection,
    shared: &Shared,
    by_hand: Option<Vec<u8>>,
    entries: &[RawEntry],
) -> Vec<Stored> {
    let to_check = shared
        .history
        .to_check(by_hand, entries.iter().map(|e| e.entry_id.as_str()));
    let mut stored = vec![Stored::None; entries.len()];
    let asked: Vec<usize> = (0..entries.len()).filter(|&i| to_check[i]).collect();
    if asked.is_empty() {
        return stored;
    }
    let mut pipe = redis::Pipeline::with_capacity(asked.len());
    for &i in &asked {
        // An entry without an id is dead-lettered unread: its answer does not depend on a stored reply.
        let id = entries[i].request_id.as_deref().unwrap_or_default();
        pipe.exists(shared.keys.reply(id));
    }
    match pipe.query_async::<Vec<bool>>(con).await {
        Ok(found) if found.len() == asked.len() => {
            for (&i, found) in asked.iter().zip(found) {
                if found {
                    stored[i] = Stored::Maybe;
                }
            }
        }
        other => {
            if let Err(err) = other {
                tracing::debug!(error = %err, "could not look for stored replies; checking each entry");
            }
            for &i in &asked {
                stored[i] = Stored::Maybe;
            }
        }
    }
    stored
}
