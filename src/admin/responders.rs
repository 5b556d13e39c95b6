//! Who serves a service: whether a consumer group exists (what a responder's readiness needs).

use redis::streams::StreamInfoGroupsReply;

use super::Admin;
use crate::error::{Error, Result};

impl Admin {
    /// Whether the service's requests stream has the consumer group `group`. A missing stream is `false`, not an
    /// error.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or `XINFO GROUPS` fails (Redis unreachable, the key
    /// holds another type).
    pub async fn has_group(&self, group: &str) -> Result<bool> {
        let mut con = self.con().await?;
        let requests = self.keys.requests();
        let exists: bool = redis::AsyncCommands::exists(&mut con, requests)
            .await
            .map_err(Error::redis("looking for the requests stream"))?;
        if !exists {
            return Ok(false);
        }
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(requests)
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing consumer groups"))?;
        Ok(info.groups.iter().any(|g| g.name == group))
    }
}
