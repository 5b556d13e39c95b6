//! Call info by id: what a request asked for, read from its record in O(1).

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use super::{Requester, get_bytes};
use crate::error::{Error, Result};
use crate::protocol::{self, RequestEnvelope};

/// What a request asked for, as returned by [`Requester::call_info`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CallInfo {
    /// The request id.
    pub id: String,
    /// The function key.
    pub func_key: String,
    /// The params, one MessagePack document; decode with [`CallInfo::params`].
    pub params_msgpack: Vec<u8>,
    /// The request's absolute deadline.
    pub deadline: SystemTime,
    /// When the request was made.
    pub created: SystemTime,
    /// Set when the request was replayed (from the dead-letter stream or a range of the requests stream).
    pub replay: Option<protocol::ReplayInfo>,
    /// The W3C trace context the request carried, if any (valid ones only).
    pub trace: Option<crate::trace::TraceContext>,
}

impl CallInfo {
    /// Decodes the params into `T`, the handler's parameter type.
    ///
    /// # Errors
    /// [`Error::Decode`] when the params do not decode into `T`.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        protocol::decode(&self.params_msgpack, "request params")
    }

    fn from_envelope(env: RequestEnvelope) -> Self {
        Self {
            deadline: env.deadline(),
            created: SystemTime::UNIX_EPOCH + Duration::from_millis(env.created_ms),
            replay: env.replay,
            trace: env.trace,
            id: env.id,
            func_key: env.func_key,
            params_msgpack: env.params,
        }
    }
}

impl Requester {
    /// The function key and params of a request, read from its record in O(1). Works while the request is
    /// pending and for the record retention period after its deadline; [`Error::NotFound`] otherwise.
    ///
    /// # Errors
    /// - [`Error::NotFound`] when no record exists for `id` (never made, or past its retention period);
    /// - [`Error::Unavailable`] while the reply router reconnects: retry later;
    /// - [`Error::Redis`] when the client's first connection or the read fails;
    /// - [`Error::Decode`] when the record does not decode (garbage, or another format version).
    pub async fn call_info(&self, id: &str) -> Result<CallInfo> {
        self.check(id)?;
        let router = self.client.router().await?;
        let key = self.keys_of(id).record(id);
        let record = router
            .ride_out(self.outage_deadline(), |con| {
                get_bytes(&router, con, &key, "reading the request record")
            })
            .await?;
        let record = record.ok_or_else(|| Error::NotFound { id: id.to_owned() })?;
        Ok(CallInfo::from_envelope(protocol::decode_request(&record)?))
    }
}
