//! Opening Redis connections with the settings redcall needs (RESP3, explicit timeouts).
//!
//! The redis crate defaults to a 500 ms response timeout, which breaks blocking stream reads: the read fails on
//! the client while the server still delivers the entries into the pending list. Every connection redcall opens
//! therefore states its timeout on purpose.
//!
//! Every connection is opened through a [`Target`] (one address, or the primary Redis Sentinel names), never from
//! an address remembered earlier, so that a reconnect after a failover reaches the new primary ([`target`]).

mod cluster;
mod conn;
mod listen;
mod managed;
mod scan;
mod sentinel;
mod target;
mod version;

use std::time::Duration;

use redis::{
    ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, TlsCertificates,
};

use crate::config::ClientConfig;
use crate::error::{Error, Result};

pub(crate) use cluster::{is_cluster_url, seeds as cluster_seeds};
pub(crate) use conn::{Connection, PubSub, by_slot};
pub(crate) use listen::{Messages, listen};
pub(crate) use managed::ManagedConnection;
pub(crate) use sentinel::SentinelSpec;
pub(crate) use target::{ConnectionSettings, Target};
pub(crate) use version::MIN_REDIS;

/// Certificates for `rediss://` beyond the system's trust store, all PEM.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// CA certificate(s) to trust instead of the system roots (for a private CA).
    pub(crate) ca_cert: Option<Vec<u8>>,
    /// Client certificate chain and private key, for servers that require client certificates (mTLS).
    pub(crate) client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsSettings {
    fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client_cert.is_none()
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TlsSettings")
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<set>"))
            .field("client_cert", &self.client_cert.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Opens a `redis::Client` for `url` that speaks RESP3, so that one multiplexed connection can carry commands and
/// pub/sub messages together. A `rediss://` URL uses TLS: with the system's trust store, or with the CA and
/// client certificate in `tls`.
pub(crate) fn resp3_client(url: &str, tls: &TlsSettings) -> Result<redis::Client> {
    let bad_url = |e: redis::RedisError| crate::connect_error::bad_url(url, &e);
    let info = url.into_connection_info().map_err(bad_url)?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    let uses_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    if uses_tls {
        install_crypto_provider();
    }
    if tls.is_empty() {
        return redis::Client::open(info).map_err(bad_url);
    }
    if !uses_tls {
        return Err(Error::Config(
            "TLS certificates were given, but the Redis URL does not start with rediss://".into(),
        ));
    }
    let certificates = TlsCertificates {
        client_tls: tls.client_cert.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: tls.ca_cert.clone(),
    };
    redis::Client::build_with_tls(info, certificates)
        .map_err(|e| Error::Config(format!("unusable TLS certificates: {e}")))
}

/// rustls needs one process-wide crypto provider. redcall builds rustls with `ring` and installs it, unless the
/// application installed a provider of its own first (then that one is kept).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: some provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A connection for one blocking reader: its response timeout is the block time plus the command timeout, so the
/// client never gives up on a read the server is still serving.
pub(crate) async fn blocking_connection(
    target: &Target,
    config: &ClientConfig,
    block: Duration,
) -> Result<Connection> {
    let cfg = ConnectionSettings::new(config.connect_timeout, block + config.command_timeout);
    target.connect(&cfg, config, "connecting a reader").await
}

/// A self-reconnecting connection for the responder's and the admin's short commands. Its first connection is
/// made once, without retries, so a Redis that cannot be used fails within one connect timeout, with its cause
/// ([`crate::connect_error`]).
pub(crate) async fn managed_connection(
    target: &Target,
    config: &ClientConfig,
) -> Result<ManagedConnection> {
    ManagedConnection::connect(target, config).await
}

/// The one command error inside a failed pipeline, as its own error, without the client's "pipeline failure"
/// wrapping: its code (`NOGROUP`, `WRONGTYPE`) and message read as the command's own.
pub(crate) fn only_command_error(err: redis::RedisError) -> redis::RedisError {
    match err.clone().into_server_errors().as_deref() {
        Some([(_, only)]) => only.clone().into(),
        _ => err,
    }
}

/// Whether a Redis error means Redis is unreachable in a way that may pass by itself: the connection was refused,
/// dropped or timed out, or Redis is not ready to serve yet (`LOADING` after a restart, and the like). Not every I/O error: a TLS handshake the server refuses (an unknown CA, a missing client
/// certificate) does not get better by waiting, so an operation riding out an outage fails on it at once.
pub(crate) fn is_transient(err: &redis::RedisError) -> bool {
    if err.is_connection_refusal() || err.is_connection_dropped() || err.is_timeout() {
        return true;
    }
    // A Redis that answers but cannot serve yet: loading its data after a restart, failing over, running a long
    // script. Inside a pipeline the command's error is wrapped: unwrap it first.
    // `READONLY` and `UNBLOCKED`: the node was the primary and is a replica now (a failover); a new connection finds
    // the new primary (through Sentinel). `CLUSTERDOWN`: a cluster with a slot not served, until its failover ends.
    // A pipeline refused as a whole (a `MULTI` … `EXEC` while Redis loads or runs a script) carries one such error
    // per command, and the `EXECABORT` of its `EXEC` that follows from them.
    const PASSING: [&str; 7] = [
        "LOADING",
        "TRYAGAIN",
        "MASTERDOWN",
        "BUSY",
        "READONLY",
        "UNBLOCKED",
        "CLUSTERDOWN",
    ];
    let passing = |code: Option<&str>| code.is_some_and(|code| PASSING.contains(&code));
    passing(only_command_error(err.clone()).code())
        || err.clone().into_server_errors().is_some_and(|errors| {
            errors.iter().any(|(_, e)| passing(Some(e.code())))
                && errors
                    .iter()
                    .all(|(_, e)| e.code() == "EXECABORT" || passing(Some(e.code())))
        })
        || err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
        // A cluster mid-failover: the crate has no connection to the slot's node yet (it reconnects from the seeds).
        || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
}

/// Whether a Redis error means the node is no longer the primary: it refuses writes (`READONLY`), or it unblocked a
/// blocking read because it turned into a replica (`UNBLOCKED`). A connection to it must be replaced by one to the
/// new primary; any of the pipeline's command errors counts.
pub(crate) fn is_wrong_role(err: &redis::RedisError) -> bool {
    err.clone().into_server_errors().is_some_and(|errors| {
        errors
            .iter()
            .any(|(_, e)| matches!(e.code(), "READONLY" | "UNBLOCKED"))
    })
}

/// Whether a Redis error means the connection is gone (as opposed to a command the server refused).
pub(crate) fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// Whether a command that failed with `err` may go through on a new connection: the connection is gone, the node is
/// no longer the primary ([`is_wrong_role`]), or the sentinels name no usable primary for now (mid-failover, the
/// old primary is flagged down and no replica promoted yet).
pub(crate) fn is_worth_reconnecting(err: &redis::RedisError) -> bool {
    is_connection_error(err)
        || is_wrong_role(err)
        || err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel
}
