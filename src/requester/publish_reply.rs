//! Publish reply: answer a request by id, by hand, as a responder would; and read a stored reply.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::pending::interpret_reply;
use super::{Requester, fetch_stored};
use crate::config::ttl_ms;
use crate::connection::only_command_error;
use crate::error::{Error, Result};
use crate::protocol::{self, ReplyEnvelope, ReplyStatus};
use crate::scripts;

impl Requester {
    /// Answers request `id` with `data`: stores the reply (with the reply TTL) and publishes it to whoever waits.
    ///
    /// The request must exist ([`Error::NotFound`] otherwise, so a mistyped id cannot leave a reply waiting for a
    /// future request). The first reply stored for an id wins; a later one is refused with
    /// [`Error::AlreadyAnswered`]. A responder that
    /// later picks the request up answers from this reply without running its handler.
    ///
    /// # Errors
    /// - [`Error::Encode`] when `data` cannot be encoded, [`Error::PayloadTooLarge`] when the encoded reply is over
    ///   the payload limit: nothing was sent;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was sent, retry later;
    /// - [`Error::NotFound`] when no record exists for `id`: nothing was stored;
    /// - [`Error::AlreadyAnswered`] when a reply is stored already: the first one stays;
    /// - [`Error::Redis`] when the client's first connection or the publishing script fails.
    pub async fn publish_reply<T: Serialize + ?Sized>(&self, id: &str, data: &T) -> Result<()> {
        let reply = ReplyEnvelope::ok(id, protocol::encode(data)?);
        self.publish_envelope(&reply).await
    }

    /// Answers request `id` with an error reply, as a handler's error would: the requester gets
    /// [`Error::Handler`] with `code` and `message` (or, for the built-in codes `unknown_function` and
    /// `malformed_request`, [`Error::UnknownFunction`] and [`Error::Malformed`]). Same rules as
    /// [`Requester::publish_reply`]: the request must exist, and the first reply wins.
    ///
    /// # Errors
    /// - [`Error::PayloadTooLarge`] when the encoded reply (a long `message`) is over the payload limit: nothing was
    ///   sent;
    /// - [`Error::Unavailable`] while the reply router reconnects: nothing was sent, retry later;
    /// - [`Error::NotFound`] when no record exists for `id`: nothing was stored;
    /// - [`Error::AlreadyAnswered`] when a reply is stored already: the first one stays;
    /// - [`Error::Redis`] when the client's first connection or the publishing script fails.
    pub async fn publish_error(&self, id: &str, code: &str, message: &str) -> Result<()> {
        let reply = ReplyEnvelope::failure(id, ReplyStatus::Error, code, message);
        self.publish_envelope(&reply).await
    }

    async fn publish_envelope(&self, reply: &ReplyEnvelope) -> Result<()> {
        self.check(&reply.id)?;
        let config = self.client.config();
        let bytes = protocol::encode(reply)?;
        config.check_payload("reply", bytes.len())?;
        let router = self.client.router().await?;
        self.check_partitions(&router).await?;
        let keys = self.keys_of(&reply.id);
        let mut pipe = redis::pipe();
        scripts::evalsha(&mut pipe, scripts::PUBLISH_REPLY.on(router.pubsub()))
            .arg(5)
            .arg(keys.reply(&reply.id))
            .arg(keys.last_error(&reply.id))
            .arg(keys.record(&reply.id))
            .arg(keys.by_hand())
            .arg(keys.requests())
            .arg(&bytes)
            .arg(ttl_ms(config.reply_ttl))
            .arg(keys.reply_channel(&reply.id));
        // Safe to repeat: the script takes a stored reply identical to this one as this very reply.
        let (stored,): (i64,) = router
            .ride_out(self.outage_deadline(), |mut con| {
                let (router, pipe) = (&router, &pipe);
                async move {
                    scripts::query_with_scripts(pipe, &mut con)
                        .await
                        .inspect_err(|e| router.report_broken(e))
                        .map_err(|e| Error::redis("publishing a reply")(only_command_error(e)))
                }
            })
            .await?;
        match stored {
            1 => Ok(()),
            -1 => Err(Error::NotFound {
                id: reply.id.clone(),
            }),
            _ => Err(Error::AlreadyAnswered {
                id: reply.id.clone(),
            }),
        }
    }

    /// The stored reply of request `id`, if one is stored (decoded like a waited-for reply): how a caller that
    /// timed out, or a replay's operator, gets the answer later. `None` when nothing is stored (not answered yet, or
    /// past the reply TTL).
    ///
    /// # Errors
    /// - a stored error reply, as [`PendingReply::wait`](crate::PendingReply::wait) returns it: [`Error::Handler`],
    ///   [`Error::UnknownFunction`], [`Error::Malformed`], [`Error::DeadLettered`], [`Error::Expired`];
    /// - [`Error::Decode`] when the stored reply, or its data as `R`, does not decode;
    /// - [`Error::Unavailable`] while the reply router reconnects: retry later;
    /// - [`Error::Redis`] when the client's first connection or the read fails.
    pub async fn stored_reply<R: DeserializeOwned>(&self, id: &str) -> Result<Option<R>> {
        self.check(id)?;
        let router = self.client.router().await?;
        let stored = router
            .ride_out(self.outage_deadline(), |con| {
                fetch_stored(&router, con, self.keys_of(id), id)
            })
            .await?;
        match stored {
            Some(reply) => interpret_reply(id, reply).map(Some),
            None => Ok(None),
        }
    }
}
