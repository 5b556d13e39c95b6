//! Who serves a service: the live responders' heartbeat records ([`Admin::responders`],
//! [`Admin::has_responders`]) and whether a consumer group exists ([`Admin::has_group`], a responder's
//! readiness).
//!
//! Each responder keeps one expiring record, `T:responder:<consumer>`, refreshed every heartbeat interval with a
//! TTL of three intervals, and its name in the index `T:responders` (see `docs/protocol.md`). A record that is
//! there is a responder that was alive less than three intervals ago; one that stopped deletes its record, one
//! that died lets it expire. The index may name responders whose record expired: readers skip them.

use redis::streams::StreamInfoGroupsReply;
use serde::{Deserialize, Serialize};

use super::Admin;
use crate::error::{Error, Result};

/// Version of the heartbeat record's layout.
pub(crate) const HEARTBEAT_VERSION: u64 = 1;

/// Most index entries read per call: far more responders than one service has.
const MAX_RESPONDERS: isize = 10_000;

/// One live responder, as its heartbeat record tells (written by the responder itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponderInfo {
    /// Layout version of the record (1).
    pub v: u64,
    /// Its consumer name (unique per process; how it shows in `XINFO CONSUMERS`).
    pub consumer: String,
    /// Its consumer group.
    pub group: String,
    /// Host name of its machine.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The redcall version it runs.
    pub version: String,
    /// The function keys it has handlers for, sorted.
    pub functions: Vec<String>,
    /// When it started, ms since the Unix epoch (its clock).
    pub started_ms: u64,
    /// When it wrote this record, ms since the Unix epoch (its clock).
    pub last_seen_ms: u64,
    /// Requests it was handling then.
    pub in_flight: u64,
    /// Deliveries it has concluded (every outcome of `redcall_handled_total`).
    pub handled: u64,
    /// Of those, the ones that failed: error replies, retries, panics, dead letters.
    pub failed: u64,
    /// Mean time its handlers ran, ms.
    pub mean_handler_ms: f64,
    /// Its heartbeat interval, ms: the record expires after three of them.
    pub heartbeat_ms: u64,
}

impl Admin {
    /// The live responders of the service, by consumer name: those whose heartbeat record has not expired.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or a read fails. A record that does not decode (written
    /// by a newer layout or another program) is skipped, not an error.
    pub async fn responders(&self) -> Result<Vec<ResponderInfo>> {
        let mut con = self.unchecked_con().await?;
        // Newest heartbeats first: the index keeps names for an hour, so a crash-looping deployment (a new consumer
        // name per start) can fill it with dead names, which must not crowd out the live ones.
        let names: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.parts.base().responders())
            .arg(0)
            .arg(MAX_RESPONDERS - 1)
            .arg("REV")
            .query_async(&mut con)
            .await
            .map_err(Error::redis("listing live responders"))?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for name in &names {
            get.arg(self.parts.base().responder(name));
        }
        let records: Vec<Option<Vec<u8>>> = get
            .query_async(&mut con)
            .await
            .map_err(Error::redis("reading heartbeat records"))?;
        let mut live: Vec<ResponderInfo> = records
            .into_iter()
            .flatten()
            .filter_map(|bytes| rmp_serde::from_slice(&bytes).ok())
            .collect();
        live.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        Ok(live)
    }

    /// Whether any responder of the service is alive (has a heartbeat record that has not expired).
    ///
    /// # Errors
    /// As [`Admin::responders`].
    pub async fn has_responders(&self) -> Result<bool> {
        Ok(!self.responders().await?.is_empty())
    }

    /// Whether the service's requests stream has the consumer group `group`. A missing stream is `false`, not an
    /// error.
    ///
    /// # Errors
    /// [`Error::Redis`] when the admin's first connection or `XINFO GROUPS` fails (Redis unreachable, the key
    /// holds another type).
    pub async fn has_group(&self, group: &str) -> Result<bool> {
        if let Some(parts) = self.split() {
            // Every partition must have it: a responder creates the group on each it serves.
            for part in parts {
                if !Box::pin(part.has_group(group)).await? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
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
