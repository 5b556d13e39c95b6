//! Answering: a finished request's reply is stored, published and its entry acknowledged (`XACK`), all in one
//! transaction, by the finisher task, which batches whatever finished meanwhile. An entry is acknowledged here and
//! in the dead-letter script ([`super::dead_letter`]), nowhere else.

use std::sync::Arc;

use redis::Value;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::state::Shared;
use crate::config::ttl_ms;
use crate::durability::Durability;
use crate::protocol::entry::RawEntry;
use crate::protocol::{self, ReplyEnvelope, ReplyStatus, codes};
use crate::scripts;

/// Most replies answered by one transaction (one `MULTI`...`EXEC`).
const FINISH_BATCH: usize = 256;

/// A finished request waiting to be answered by the finisher.
pub(crate) struct Completion {
    id: String,
    entry_id: String,
    reply: Vec<u8>,
    /// The delivery this answers.
    delivery: u64,
    /// Who learns that the answer went through (or was given up on; the entry then stays pending).
    after: AfterAnswer,
}

/// Who is waiting for an answer to go through.
pub(super) enum AfterAnswer {
    /// A request task, which holds the permit and is tracked until then, and learns whether the answer went
    /// through (false: it failed, and the task schedules the retry).
    Task(oneshot::Sender<bool>),
    /// Nobody: the answer was made inline by the read loop, and holds what a task would have held, and what a
    /// retry after a failed answer needs (the entry, moved here, not copied; its id is the completion's).
    Inline {
        _held: Held,
        entry: RawEntry,
        func_key: String,
    },
}

/// What an answer made inline holds until the finisher is done with it: the concurrency permit, and a token that
/// makes the shutdown's wait for in-flight work wait for this answer too.
pub(super) struct Held {
    _permit: OwnedSemaphorePermit,
    _token: TaskTrackerToken,
}

impl Held {
    pub(super) fn new(shared: &Shared, permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            _token: shared.requests.token(),
        }
    }
}

impl Shared {
    /// Stores, publishes and acknowledges a reply, through the finisher (which answers many requests per
    /// transaction), and waits until that went through. A reply that cannot be stored leaves the entry pending, so
    /// it is delivered again: never lost. A failed answer is a known failure: it is delivered again after the retry
    /// backoff ([`Shared::answer_failed`]), not after the visibility timeout.
    pub(super) async fn finish(
        self: &Arc<Self>,
        entry: &RawEntry,
        func_key: &str,
        id: &str,
        delivery: u64,
        reply: ReplyEnvelope,
    ) {
        let (done, answered) = oneshot::channel();
        let queued = self.queue_answer(
            id.to_owned(),
            entry.entry_id.clone(),
            delivery,
            reply,
            AfterAnswer::Task(done),
        );
        // An error only means the finisher stopped (grace over): the entry stays pending.
        if queued && answered.await == Ok(false) {
            self.answer_failed(entry, func_key, id, delivery).await;
        }
    }

    /// After an answer that did not go through (Redis refused the transaction, or stayed away for the visibility
    /// timeout): the entry is still pending, so it is delivered again after the retry backoff, like a retry the
    /// handler asked for, with the failure as its last error.
    pub(super) async fn answer_failed(
        self: &Arc<Self>,
        entry: &RawEntry,
        func_key: &str,
        id: &str,
        delivery: u64,
    ) {
        if self.stop.is_cancelled() {
            return;
        }
        self.left_pending(&entry.entry_id);
        self.remember_error(
            id,
            &format!(
                "the answer of delivery {delivery} could not be stored (see the responder's log)"
            ),
        )
        .await;
        self.schedule_retry(entry, func_key, delivery, None);
    }

    /// Encodes a reply (an error reply instead when it is too large) and queues it for the finisher. False when it
    /// could not be queued; the entry then stays pending.
    pub(super) fn queue_answer(
        &self,
        id: String,
        entry_id: String,
        delivery: u64,
        mut reply: ReplyEnvelope,
        after: AfterAnswer,
    ) -> bool {
        let mut bytes = match protocol::encode(&reply) {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(%id, service = %self.service, error = %err, "could not encode the reply");
                return false;
            }
        };
        if let Err(too_large) = self.client.config().check_payload("reply", bytes.len()) {
            let message = too_large.to_string();
            tracing::warn!(%id, service = %self.service, %message, "reply too large; answering with an error instead");
            reply =
                ReplyEnvelope::failure(&id, ReplyStatus::Error, codes::PAYLOAD_TOO_LARGE, message);
            bytes = match protocol::encode(&reply) {
                Ok(b) => b,
                Err(_) => return false,
            };
        }
        let completion = Completion {
            id,
            entry_id,
            reply: bytes,
            delivery,
            after,
        };
        self.finished_tx.send(completion).is_ok()
    }

    /// Answers a batch of finished requests in one transaction: for each, `SET reply NX PX` (the first reply
    /// stored wins) and `PUBLISH`, then one `XACK` for all. `MULTI` keeps it atomic, so a responder dying here
    /// leaves all or nothing; it is cheaper for Redis than a script doing the same.
    ///
    /// When a reply was stored already (a reply by hand, or another responder that ran the same request), this
    /// one is not stored but still published, after the stored one: a waiting requester takes the first message,
    /// which is the stored reply, since each store-and-publish runs atomically and in order.
    async fn finish_batch(self: &Arc<Self>, batch: &mut Vec<Completion>) {
        let ttl = ttl_ms(self.client.config().reply_ttl);
        let pubsub = self.client.target().pubsub();
        let mut pipe = redis::Pipeline::with_capacity(2 * batch.len() + 3);
        pipe.cmd("MULTI").ignore();
        for c in batch.iter() {
            // Sized up front: the reply is the bulk of each command, and growing the buffer would copy it again.
            let reply_key = self.keys.reply(&c.id);
            let mut set = redis::Cmd::with_capacity(6, reply_key.len() + c.reply.len() + 32);
            set.arg("SET")
                .arg(reply_key)
                .arg(&c.reply)
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            pipe.add_command(set).ignore();
            let channel = self.keys.reply_channel(&c.id);
            let mut publish = redis::Cmd::with_capacity(3, channel.len() + c.reply.len() + 8);
            publish.arg(pubsub.publish()).arg(channel).arg(&c.reply);
            pipe.add_command(publish).ignore();
            // An earlier delivery may have left a last error to delete.
            if c.delivery > 1 {
                pipe.cmd("DEL").arg(self.keys.last_error(&c.id)).ignore();
            }
        }
        let cmd = pipe
            .cmd("XACK")
            .arg(self.keys.requests())
            .arg(&self.settings.group);
        for c in batch.iter() {
            cmd.arg(&c.entry_id);
        }
        cmd.ignore();
        pipe.cmd("EXEC");
        let durability = self.client.config().durability;
        let answered = if durability.append_wait(&mut pipe) {
            match self
                .run_with_retries::<(Value, i64)>(&pipe, "answering requests")
                .await
            {
                Some((_, confirmed)) => {
                    self.check_replicated(&durability, batch, confirmed);
                    true
                }
                None => false,
            }
        } else {
            self.run_with_retries::<(Value,)>(&pipe, "answering requests")
                .await
                .is_some()
        };
        for c in batch.drain(..) {
            match c.after {
                AfterAnswer::Task(done) => {
                    let _ = done.send(answered);
                }
                AfterAnswer::Inline {
                    _held: held,
                    mut entry,
                    func_key,
                } if !answered => {
                    entry.entry_id = c.entry_id;
                    let shared = self.clone();
                    // Held (permit, shutdown token) until the retry is scheduled.
                    self.requests.spawn(async move {
                        let _held = held;
                        shared
                            .answer_failed(&entry, &func_key, &c.id, c.delivery)
                            .await;
                    });
                }
                AfterAnswer::Inline { .. } => {}
            }
        }
    }

    /// With replicated durability: warns when fewer replicas than asked for confirmed a batch of answers. Nobody
    /// waits for this verdict: the replies went out, and a failover that loses the acks makes the entries come
    /// back, to be answered from the stored replies (where those were replicated) or run again.
    fn check_replicated(&self, durability: &Durability, batch: &[Completion], confirmed: i64) {
        if let Some(first) = batch.first()
            && let Err(err) = durability.check(&first.id, "answered", confirmed)
        {
            tracing::warn!(
                error = %err,
                answers = batch.len(),
                ids = ?batch.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
                "answers not confirmed by enough replicas; a failover now could make them run again"
            );
        }
    }

    /// For a redelivered request: answers from the stored reply if there is one. True when answered.
    pub(crate) async fn answer_from_stored(&self, id: &str, entry_id: &str) -> bool {
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            scripts::ANSWER_FROM_STORED.on(self.client.target().pubsub()),
        )
        .arg(2)
        .arg(self.keys.reply(id))
        .arg(self.keys.requests())
        .arg(self.keys.reply_channel(id))
        .arg(&self.settings.group)
        .arg(entry_id);
        matches!(
            self.run_with_retries::<(i64,)>(&pipe, "checking for a stored reply")
                .await,
            Some((1,))
        )
    }
}

/// Answers finished requests in batches: whatever finished while the previous batch was on its way goes out in
/// the next one, so one request alone is answered at once and many share a transaction. Runs until the responder
/// has fully stopped (after the grace period).
pub(crate) async fn finish_loop(shared: Arc<Shared>) {
    let Some(mut rx) = shared
        .finished_rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, FINISH_BATCH) => n,
            _ = shared.abort.cancelled() => return,
        };
        if received == 0 {
            return;
        }
        tokio::select! {
            _ = shared.finish_batch(&mut batch) => {}
            _ = shared.abort.cancelled() => return,
        }
    }
}
