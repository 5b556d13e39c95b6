//! Where a client's connections go: one address (`redis://`, `rediss://`), or the primary a set of Redis
//! Sentinels watches (`redis+sentinel://`).
//!
//! The rule that makes failover work: **a connection is opened through [`Target::open`] every time**, never
//! from an address remembered earlier. For Sentinel that asks the sentinels for the current primary (and checks
//! with `ROLE` that the node named is a primary) on every new connection, so a reconnect after a failover finds
//! the promoted replica by itself. The redis crate's own `ConnectionManager` reconnects to the address it started
//! with, which is why redcall's short-command connection is its own ([`super::managed`]).
//!
//! A Redis Cluster (`Client::cluster`, `redis+cluster://`) is a target of its own: each connection opened is the
//! redis crate's cluster connection over the seed nodes ([`super::conn`]), which follows the cluster's topology by
//! itself (slots, `MOVED`, failovers); a new one asks the seeds again.
//!
//! The server's version is checked on the client's first connection ([`super::version`]) and remembered.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushInfo,
    RedisConnectionInfo,
};
use tokio::sync::{Mutex, OnceCell};

use super::conn::{Connection, PubSub};
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
    /// A Redis Cluster, reached through its seed nodes (checked `redis://` URLs).
    Cluster(Vec<String>),
}

/// A callback for the pushes of a connection (pub/sub messages, subscription changes, disconnection).
pub(crate) type PushCallback = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// How to open one connection: its timeouts and, for the reply router, the callback of its pushes.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    /// How long connecting may take.
    pub(crate) connect_timeout: Duration,
    /// How long one answer may take (a blocking read's block time included).
    pub(crate) response_timeout: Duration,
    /// Where pushes go; none when the connection subscribes to nothing.
    pub(crate) push: Option<PushCallback>,
}

/// A cluster client over `seeds` whose requests end within the response timeout of `cfg`, retries and redirects
/// included. The crate takes that bound (`overall_response_timeout`) from the builder only, never from a
/// connection's config: without it a request to a primary that died is retried for as long as the stale slot map
/// names it, and its caller waits forever.
fn cluster_client(seeds: &[String], cfg: &ConnectionSettings) -> redis::RedisResult<ClusterClient> {
    ClusterClient::builder(seeds.iter().map(String::as_str))
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(cfg.connect_timeout)
        .response_timeout(cfg.response_timeout)
        .overall_response_timeout(Some(cfg.response_timeout))
        .build()
}

impl ConnectionSettings {
    /// Settings with these timeouts and no push callback.
    pub(crate) fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            response_timeout,
            push: None,
        }
    }

    /// The same settings with pushes going to `push`.
    pub(crate) fn with_push(mut self, push: PushCallback) -> Self {
        self.push = Some(push);
        self
    }

    fn single(&self) -> AsyncConnectionConfig {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        match &self.push {
            Some(push) => {
                let push = push.clone();
                cfg.set_push_sender(move |info: PushInfo| {
                    push(info);
                    Ok::<(), std::convert::Infallible>(())
                })
            }
            None => cfg,
        }
    }

    fn cluster(&self) -> ClusterConfig {
        // The response timeout is set on the client too ([`cluster_client`]): only there does it bound a request's
        // retries as a whole.
        let cfg = ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout);
        match &self.push {
            Some(push) => {
                let push = push.clone();
                cfg.set_push_sender(move |info: PushInfo| {
                    push(info);
                    Ok::<(), std::convert::Infallible>(())
                })
            }
            None => cfg,
        }
    }
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

    /// The Redis Cluster that the `seeds` (`redis://` URLs of some of its nodes, credentials included) belong to.
    /// Connects to nothing yet.
    pub(crate) fn cluster(seeds: &[String]) -> Result<Self> {
        let bad =
            |e: redis::RedisError| Error::Config(format!("bad Redis Cluster seed nodes: {e}"));
        if seeds.is_empty() {
            return Err(Error::Config(
                "a cluster needs at least one seed node".into(),
            ));
        }
        cluster_client(
            seeds,
            &ConnectionSettings::new(Duration::from_secs(1), Duration::from_secs(1)),
        )
        .map_err(bad)?;
        Ok(Self::of(Kind::Cluster(seeds.to_vec())))
    }

    /// Which pub/sub commands carry replies: sharded ones on a cluster.
    pub(crate) fn pubsub(&self) -> PubSub {
        match self.inner.kind {
            Kind::Cluster(_) => PubSub::Sharded,
            Kind::Direct(_) | Kind::Sentinel { .. } => PubSub::Plain,
        }
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
    pub(crate) async fn open(&self, cfg: &ConnectionSettings) -> redis::RedisResult<Connection> {
        if let Kind::Cluster(seeds) = &self.inner.kind {
            return cluster_client(seeds, cfg)?
                .get_async_connection_with_config(cfg.cluster())
                .await
                .map(Connection::Cluster);
        }
        self.resolve()
            .await?
            .get_multiplexed_async_connection_with_config(&cfg.single())
            .await
            .map(Connection::Single)
    }

    /// The client of the Redis to connect to now: the one address, or the primary the sentinels name. Not for a
    /// cluster (its connections are opened by [`Target::open`]).
    async fn resolve(&self) -> redis::RedisResult<redis::Client> {
        match &self.inner.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a cluster has no single node to connect to",
            ))),
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
        cfg: &ConnectionSettings,
        config: &ClientConfig,
        what: &'static str,
    ) -> Result<Connection> {
        if matches!(self.inner.kind, Kind::Cluster(_)) {
            let mut con = self.open(cfg).await.map_err(Error::redis(what))?;
            self.check_version(&mut con).await?;
            return Ok(con);
        }
        let client = self.resolve().await.map_err(Error::redis(what))?;
        let mut con = match client
            .get_multiplexed_async_connection_with_config(&cfg.single())
            .await
        {
            Ok(con) => Connection::Single(con),
            Err(err) => {
                return Err(crate::connect_error::diagnose(&client, config, what, err).await);
            }
        };
        self.check_version(&mut con).await?;
        Ok(con)
    }

    /// The version check, once per target: later calls return the first one's verdict (a failed read is tried
    /// again, a server too old is refused every time).
    pub(crate) async fn check_version(&self, con: &mut Connection) -> Result<()> {
        self.inner
            .checked
            .get_or_try_init(|| version::check(con))
            .await
            .map(|_| ())
    }
}
