//! Progress from a handler: `ctx.progress(&value)` keeps the update as the request's last progress
//! (`T:progress:<id>`, with the reply TTL) and publishes it on the channel of the same name, in one `MULTI`. A
//! request whose handler reports nothing costs nothing: no key, no command, and the requester subscribes to the
//! channel only when asked to ([`crate::PendingReply::progress`]).

use crate::config::ttl_ms;
use crate::connection::ManagedConnection;
use crate::error::{Error, Result};
use crate::protocol::{self, ProgressEnvelope, ServiceKeys};

/// What a handler's context needs to report progress: one per responder, shared by every request.
pub(crate) struct ProgressSink {
    pub(crate) con: ManagedConnection,
    pub(crate) keys: ServiceKeys,
    /// How long the last progress is kept (the reply TTL), ms.
    pub(crate) ttl_ms: u64,
    /// The client's settings (the payload limit).
    pub(crate) config: crate::config::ClientConfig,
    /// Plain or sharded pub/sub (a cluster), as the reply channels.
    pub(crate) pubsub: crate::connection::PubSub,
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressSink")
            .field("service", &self.keys.tag())
            .finish_non_exhaustive()
    }
}

impl ProgressSink {
    /// A sink writing with `con`.
    pub(crate) fn new(
        con: ManagedConnection,
        keys: ServiceKeys,
        config: &crate::config::ClientConfig,
        pubsub: crate::connection::PubSub,
    ) -> Self {
        Self {
            con,
            keys,
            ttl_ms: ttl_ms(config.reply_ttl),
            config: config.clone(),
            pubsub,
        }
    }

    /// Stores and publishes one progress update of request `id`.
    pub(crate) async fn report(&self, id: &str, data: Vec<u8>) -> Result<()> {
        let bytes = protocol::encode(&ProgressEnvelope::new(id, data))?;
        self.config.check_payload("progress", bytes.len())?;
        let key = self.keys.progress(id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&bytes)
            .arg("PX")
            .arg(self.ttl_ms)
            .ignore()
            .cmd(self.pubsub.publish())
            .arg(&key)
            .arg(&bytes)
            .ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(Error::redis("reporting progress"))
    }
}
