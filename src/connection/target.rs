//! Where a client's connections go: one address (`redis://`, `rediss://`), or the primary a set of Redis
//! Sentinels watches (`redis+sentinel://`).
//!
//! The rule that makes failover work: **a connection is opened through [`Target::open`] every time**, never
//! from an address remembered earlier. For Sentinel that asks the sentinels for the current primary (and checks
//! with `ROLE` that the node named is a primary) on every new connection, so a reconnect after a failover finds
//! the promoted replica by itself. The redis crate's own `ConnectionManager` reconnects to the address it started
//! with, which is why redcall's short-command connection is its own ([`super::managed`]).
//!
//! The server's version is checked on the client's first connection ([`super::version`]) and remembered.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};
use tokio::sync::{Mutex, OnceCell};

use super::sentinel::SentinelSpec;
use super::version::{self, Server};
use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// Where to connect. Cheap to clone; clones share the sentinel connections and the version check.
#[derive(Clone)]
pub(crate) struct Target {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    /// The version check of the first connection, done once (`None` inside when it could not be read).
    checked: OnceCell<Option<Server>>,
}

enum Kind {
    /// One address.
    Direct(redis::Client),
    /// The primary the sentinels name, looked up for every new connection.
    Sentinel {
        /// The name of the primary.
        primary: String,
        /// How to talk to the data nodes (credentials, RESP3).
        node: SentinelNodeConnectionInfo,
        /// The sentinels and the crate's cached connections to them; one lookup at a time.
        sentinels: Mutex<Sentinel>,
    },
}

impl Target {
    /// One address.
    pub(crate) fn direct(client: redis::Client) -> Self {
        Self::of(Kind::Direct(client))
    }

    /// The primary that `spec`'s sentinels watch. Connects to nothing yet.
    pub(crate) fn sentinel(spec: &SentinelSpec) -> Result<Self> {
        let bad = |e: redis::RedisError| Error::Config(format!("bad Redis Sentinel settings: {e}"));
        let mut sentinel_settings = RedisConnectionInfo::default();
        if let Some(user) = &spec.sentinel_username {
            sentinel_settings = sentinel_settings.set_username(user);
        }
        if let Some(password) = &spec.sentinel_password {
            sentinel_settings = sentinel_settings.set_password(password);
        }
        let sentinels = spec
            .sentinels
            .iter()
            .map(|(host, port)| {
                ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .map(|info| info.set_redis_settings(sentinel_settings.clone()))
            })
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(bad)?;
        let sentinels = Sentinel::build(sentinels).map_err(bad)?;
        let mut node_settings = RedisConnectionInfo::default()
            .set_protocol(ProtocolVersion::RESP3)
            .set_db(spec.db);
        if let Some(user) = &spec.username {
            node_settings = node_settings.set_username(user);
        }
        if let Some(password) = &spec.password {
            node_settings = node_settings.set_password(password);
        }
        Ok(Self::of(Kind::Sentinel {
            primary: spec.primary.clone(),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(node_settings),
            sentinels: Mutex::new(sentinels),
        }))
    }

    fn of(kind: Kind) -> Self {
        Target {
            inner: Arc::new(Inner {
                kind,
                checked: OnceCell::new(),
            }),
        }
    }

    /// Opens a new connection with `cfg` to the target: for Sentinel, to the primary the sentinels name now.
    /// Redis errors only (no version check), for callers inside the redis crate's traits.
    pub(crate) async fn open(
        &self,
        cfg: &AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        self.resolve()
            .await?
            .get_multiplexed_async_connection_with_config(cfg)
            .await
    }

    /// The client of the Redis to connect to now: the one address, or the primary the sentinels name.
    async fn resolve(&self) -> redis::RedisResult<redis::Client> {
        match &self.inner.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Sentinel {
                primary,
                node,
                sentinels,
            } => {
                let mut sentinels = sentinels.lock().await;
                sentinels.async_master_for(primary, Some(node)).await
            }
        }
    }

    /// Opens a new connection as [`Target::open`]; on the client's first connection also checks the server's
    /// version. `what` names the connection in errors.
    ///
    /// # Errors
    /// [`Error::Connect`] with its cause when the Redis cannot be connected to or refuses the connection's
    /// settings ([`crate::connect_error`]); [`Error::Redis`] when the sentinels cannot name a primary or for a cause
    /// not told apart; [`Error::UnsupportedServer`] for a server too old.
    pub(crate) async fn connect(
        &self,
        cfg: &AsyncConnectionConfig,
        config: &ClientConfig,
        what: &'static str,
    ) -> Result<MultiplexedConnection> {
        let client = self.resolve().await.map_err(Error::redis(what))?;
        let mut con = match client
            .get_multiplexed_async_connection_with_config(cfg)
            .await
        {
            Ok(con) => con,
            Err(err) => {
                return Err(crate::connect_error::diagnose(&client, config, what, err).await);
            }
        };
        self.check_version(&mut con).await?;
        Ok(con)
    }

    /// The version check, once per target: later calls return the first one's verdict (a failed read is tried
    /// again, a server too old is refused every time).
    pub(crate) async fn check_version(&self, con: &mut MultiplexedConnection) -> Result<()> {
        self.inner
            .checked
            .get_or_try_init(|| version::check(con))
            .await
            .map(|_| ())
    }
}
