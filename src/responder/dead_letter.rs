//! Dead letters: moving an entry to the dead-letter stream (acknowledged, its requester told, in one script), and
//! the memory of a failed delivery's error that the dead-letter record keeps.

use redis::AsyncCommands;

use super::state::Shared;
use crate::config::ttl_ms;
use crate::protocol::entry::RawEntry;
use crate::protocol::{self, ReplyEnvelope, ReplyStatus, RequestEnvelope, codes};
use crate::scripts;

/// Why an entry is moved to the dead-letter stream.
pub(crate) struct DeadLetter<'a> {
    pub(crate) reason: &'a str,
    pub(crate) error: String,
    pub(crate) deliveries: u64,
    /// The reply the requester gets (none when the request id is unknown).
    pub(crate) reply: Option<ReplyEnvelope>,
}

impl<'a> DeadLetter<'a> {
    /// A dead letter of `entry` for `reason`, with the failure reply (status `status`, code `reason`,
    /// `reply_message`) its requester gets when the entry's request id is known. `error` is what the dead-letter
    /// record keeps.
    pub(crate) fn replying(
        entry: &RawEntry,
        status: ReplyStatus,
        reason: &'a str,
        reply_message: String,
        error: String,
        deliveries: u64,
    ) -> Self {
        let reply = entry
            .request_id
            .as_deref()
            .map(|id| ReplyEnvelope::failure(id, status, reason, reply_message));
        Self {
            reason,
            error,
            deliveries,
            reply,
        }
    }
}

impl Shared {
    /// Keeps a failed delivery's error for the dead-letter record.
    pub(super) async fn remember_error(&self, id: &str, error: &str) {
        let mut con = self.con.clone();
        let ttl = ttl_ms(self.client.config().record_retention);
        let stored: redis::RedisResult<()> =
            con.pset_ex(self.keys.last_error(id), error, ttl).await;
        if let Err(err) = stored {
            tracing::warn!(%id, error = %err, "could not record the delivery error");
        }
    }

    /// The last recorded delivery error of request `id`, if any.
    pub(crate) async fn last_error(&self, id: &str) -> Option<String> {
        let mut con = self.con.clone();
        con.get(self.keys.last_error(id)).await.ok().flatten()
    }

    /// Moves an entry to the dead-letter stream, acknowledges it and tells the requester, in one script call. When
    /// Redis refuses the dead letter (the dead-letter stream key holds another type), the requester is still told,
    /// the entry stays pending and the reason is kept as its last error (see [`scripts::DEAD_LETTER`]).
    pub(crate) async fn dead_letter(
        &self,
        entry: &RawEntry,
        request: Option<&RequestEnvelope>,
        letter: DeadLetter<'_>,
    ) {
        let id = entry.request_id.as_deref().unwrap_or("");
        tracing::warn!(
            %id,
            service = %self.service,
            func = request.map(|r| r.func_key.as_str()),
            entry_id = %entry.entry_id,
            reason = letter.reason,
            error = %letter.error,
            "dead-lettering"
        );
        let reply = match letter.reply.as_ref().map(protocol::encode).transpose() {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let func_key = request.map(|r| r.func_key.as_str()).unwrap_or("");
        // Kept as the last error if the dead letter cannot be written, so the one written later names the reason.
        // A `max_deliveries_exceeded` letter carries the last error already: it stays as it is.
        let remember = match entry.request_id {
            Some(_) if letter.reason != codes::MAX_DELIVERIES_EXCEEDED => {
                format!("{}: {}", letter.reason, letter.error)
            }
            _ => String::new(),
        };
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            scripts::DEAD_LETTER.on(self.client.target().pubsub()),
        )
        .arg(4)
        .arg(self.keys.requests())
        .arg(self.keys.dead_letters())
        .arg(self.keys.reply(id))
        .arg(self.keys.last_error(id))
        .arg(&self.settings.group)
        .arg(&entry.entry_id)
        .arg(id)
        .arg(entry.envelope.as_deref().unwrap_or(&[]))
        .arg(letter.reason)
        .arg(&letter.error)
        .arg(letter.deliveries)
        .arg(protocol::now_ms())
        .arg(&reply)
        .arg(ttl_ms(self.client.config().reply_ttl))
        .arg(self.keys.reply_channel(id))
        .arg(func_key)
        .arg(&remember)
        .arg(ttl_ms(self.client.config().record_retention));
        if self
            .run_with_retries::<(String,)>(&pipe, "dead-lettering")
            .await
            .is_some()
        {
            self.metrics.dead_lettered(letter.reason);
            self.metrics
                .handled(func_key, crate::metrics::Handled::DeadLettered, None);
        }
    }
}
