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
    /// The connection was lost while the updates older than `first` were dropped: nothing follows `first`.
    ended: bool,
    /// `T:progress:<id>`: the key of the last progress, and the channel of every update.
    key: String,
    /// The subscribed connection (dropping it ends the subscription); [`ProgressUpdates::rest`] reads on it.
    con: crate::connection::Connection,
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
                None if self.ended => return None,
                None => self.rx.recv().await.flatten()?,
            };
            if let Some(update) = self.hand_out(bytes) {
                return Some(update);
            }
        }
    }

    /// The updates not handed out yet, without waiting for new ones: those received already, then the last
    /// progress kept in Redis when it is not the last one handed out. Call it once the reply came: updates travel
    /// on their own connection and may arrive after the reply. Reading the kept value on that connection also
    /// brings in every update published before it (Redis answers one connection in order), so the handler's last
    /// update is never missed.
    ///
    /// # Errors
    /// Each update as [`ProgressUpdates::next`]; [`Error::Redis`] (as the last item) when the kept value cannot be
    /// read.
    pub async fn rest<P: DeserializeOwned>(&mut self) -> Vec<Result<P>> {
        let kept: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.con)
            .await;
        let mut received: Vec<Vec<u8>> = self.first.take().into_iter().collect();
        while let Ok(message) = self.rx.try_recv() {
            received.extend(message);
        }
        let mut rest: Vec<Result<P>> = received
            .into_iter()
            .filter_map(|bytes| self.hand_out(bytes))
            .collect();
        match kept {
            Ok(Some(bytes)) => rest.extend(self.hand_out(bytes)),
            Ok(None) => {}
            Err(err) => rest.push(Err(Error::redis("reading the last progress")(err))),
        }
        rest
    }

    /// Decodes an update unless it is the one handed out last (the kept value and its message are the same bytes).
    fn hand_out<P: DeserializeOwned>(&mut self, bytes: Vec<u8>) -> Option<Result<P>> {
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return None;
        }
        let update = protocol::decode_progress(&bytes);
        self.last = Some(bytes);
        Some(match update {
            Ok(env) if env.id == self.id => protocol::decode(&env.data, "progress data"),
            Ok(env) => Err(Error::Decode {
                what: "progress envelope",
                message: format!("names request {:?}, not {:?}", env.id, self.id),
            }),
            Err(err) => Err(err),
        })
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
        let (mut con, mut rx) = crate::connection::listen(
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
        // Every update published before that `GET` ran is queued already (one connection's pushes and answers come
        // in order) and is no newer than the kept value, which comes first: drop them, or the stream would go back.
        let mut ended = false;
        if first.is_some() {
            while let Ok(message) = rx.try_recv() {
                ended |= message.is_none();
            }
        }
        Ok(ProgressUpdates {
            id: self.id.clone(),
            rx,
            last: None,
            first,
            ended,
            key: channel,
            con,
        })
    }
}
