//! Watching a request's progress: a connection of its own subscribed to `T:progress:<id>`, opened only when a
//! caller asks ([`PendingReply::progress`]), so requests nobody watches cost nothing. After subscribing it reads
//! the last progress kept (`GET T:progress:<id>`), so an update made before the subscription is not missed.

use serde::de::DeserializeOwned;

use super::pending::PendingReply;
use crate::error::{Error, Result};
use crate::protocol;

/// The progress updates of one request, oldest first: see [`PendingReply::progress`]. The reply itself still comes
/// from [`PendingReply::wait`]; this ends (`None`) only when its connection is lost or the handle is dropped.
pub struct ProgressUpdates {
    id: String,
    rx: crate::connection::Messages,
    /// The last update handed out, to skip the copy of it the subscription may deliver again.
    last: Option<Vec<u8>>,
    /// The last progress kept when the subscription started, handed out first.
    first: Option<Vec<u8>>,
    _con: crate::connection::Connection,
}

impl std::fmt::Debug for ProgressUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressUpdates")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ProgressUpdates {
    /// The next update, decoded as `P`; `None` once the connection is gone.
    ///
    /// # Errors
    /// [`Error::Decode`] for an update that does not decode (as a progress envelope naming this request, or its
    /// data as `P`); the stream goes on after it.
    pub async fn next<P: DeserializeOwned>(&mut self) -> Option<Result<P>> {
        loop {
            let bytes = match self.first.take() {
                Some(first) => first,
                None => self.rx.recv().await.flatten()?,
            };
            if self.last.as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            let update = protocol::decode_progress(&bytes);
            self.last = Some(bytes);
            return Some(match update {
                Ok(env) if env.id == self.id => protocol::decode(&env.data, "progress data"),
                Ok(env) => Err(Error::Decode {
                    what: "progress envelope",
                    message: format!("names request {:?}, not {:?}", env.id, self.id),
                }),
                Err(err) => Err(err),
            });
        }
    }
}

impl PendingReply {
    /// Starts watching this request's progress (what its handler reports with
    /// [`RequestContext::progress`](crate::RequestContext::progress)), on a connection of its own: the last update
    /// made so far comes first, then each new one. Call it before [`PendingReply::wait`] (which takes the handle)
    /// and select on both.
    ///
    /// # Errors
    /// [`Error::Connect`] or [`Error::Redis`] when the connection or its subscription fails.
    pub async fn progress(&self) -> Result<ProgressUpdates> {
        let channel = self.keys.progress(&self.id);
        let (mut con, rx) = crate::connection::listen(
            self.router.target(),
            self.router.config(),
            &channel,
            "subscribing to progress",
        )
        .await?;
        let first: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&channel)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading the last progress"))?;
        Ok(ProgressUpdates {
            id: self.id.clone(),
            rx,
            last: None,
            first,
            _con: con,
        })
    }
}
