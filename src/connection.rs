//! Opening Redis connections with the settings redcall needs (RESP3, explicit timeouts).
//!
//! The redis crate defaults to a 500 ms response timeout, which breaks blocking stream reads: the read fails on
//! the client while the server still delivers the entries into the pending list. Every connection redcall opens
//! therefore states its timeout on purpose.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Opens a `redis::Client` for `url` that speaks RESP3, so that one multiplexed connection can carry commands and
/// pub/sub messages together.
pub(crate) fn resp3_client(url: &str) -> Result<redis::Client> {
    let info = url
        .into_connection_info()
        .map_err(|e| Error::Config(format!("bad Redis URL: {e}")))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| Error::Config(format!("bad Redis URL: {e}")))
}

/// A connection for one blocking reader: its response timeout is the block time plus the command timeout, so the
/// client never gives up on a read the server is still serving.
pub(crate) async fn blocking_connection(
    client: &redis::Client,
    config: &ClientConfig,
    block: Duration,
) -> Result<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(block + config.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(Error::redis("connecting a reader"))
}

/// A self-reconnecting connection for the responder's and the admin's short commands.
pub(crate) async fn managed_connection(
    client: &redis::Client,
    config: &ClientConfig,
) -> Result<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    client
        .get_connection_manager_with_config(cfg)
        .await
        .map_err(Error::redis("connecting"))
}

/// Whether a Redis error means the connection is gone (as opposed to a command the server refused).
pub(crate) fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}
