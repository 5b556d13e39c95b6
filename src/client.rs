//! The entry point: a [`Client`] holds the Redis address and the shared settings, and hands out requesters,
//! responders and the admin API.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::admin::Admin;
use crate::config::ClientConfig;
use crate::connection::{self, ManagedConnection, SentinelSpec, Target, TlsSettings};
use crate::error::{Error, Result};
use crate::protocol::ServiceKeys;
use crate::requester::Requester;
use crate::responder::ResponderBuilder;
use crate::router::Router;

/// A handle to one Redis deployment of redcall. Cheap to clone; clones share one reply connection.
///
/// ```no_run
/// # async fn demo() -> redcall::Result<()> {
/// let client = redcall::Client::builder("redis://127.0.0.1:6379").namespace("shop").build()?;
/// let orders = client.requester("orders");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    config: ClientConfig,
    router: OnceCell<Arc<Router>>,
    /// The services (with a partition count) whose count recorded in Redis was found to agree, by any requester of
    /// this client: each is checked once per client, not once per `Client::requester` handle.
    partitions_agreed: std::sync::Mutex<std::collections::HashSet<(String, usize)>>,
}

// By hand: the Redis URL may carry a password, so only the settings are shown.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("connected", &self.inner.router.initialized())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The namespace used when none is given: keys look like `{redcall:<service>}:...`.
    pub const DEFAULT_NAMESPACE: &'static str = crate::config::DEFAULT_NAMESPACE;
    /// The payload limit used when none is given, in bytes (1 MiB).
    pub const DEFAULT_PAYLOAD_LIMIT: usize = crate::config::DEFAULT_PAYLOAD_LIMIT;

    /// A client for `url` (`redis://` or `rediss://`, with user name and password where needed, or
    /// `redis+sentinel://[user:pass@]host:port[,host:port...]/<primary-name>` for a primary watched by Redis Sentinel,
    /// or `redis+cluster://[user:pass@]host:port[,host:port...]` for a Redis Cluster) with default settings. Connections are opened on first use, so an unreachable Redis is not an error here: it shows at the
    /// first request (as [`Error::Connect`]).
    ///
    /// # Errors
    /// [`Error::Config`] when `url` is not a usable Redis URL.
    pub fn open(url: &str) -> Result<Self> {
        Self::builder(url).build()
    }

    /// A builder to change the settings. Nothing is checked until [`ClientBuilder::build`].
    ///
    /// A `redis+sentinel://` URL names the sentinels (each `host:port`) and the name they monitor the primary under.
    /// Every new connection asks the sentinels for the current primary, so after a failover every part of the client
    /// (the reply router, the responders' readers and command connections, the admin) reconnects to the promoted
    /// replica by itself. The user name and password are the data nodes'; the sentinels' own are the options
    /// `sentinel_username` and `sentinel_password` (`...?sentinel_password=secret`); `db=N` picks a database.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: Some(url.to_owned()),
            sentinel: None,
            cluster: None,
            config: ClientConfig::default(),
            tls: TlsSettings::default(),
        }
    }

    /// A builder for the primary that Redis Sentinel monitors under `primary`, asking the `sentinels` (each
    /// `"host:port"`): the same as a `redis+sentinel://` URL without credentials (set them with
    /// [`ClientBuilder::password`] and [`ClientBuilder::sentinel_password`]).
    pub fn sentinel<I, S>(sentinels: I, primary: &str) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (url, sentinel) = match SentinelSpec::new(sentinels, primary) {
            Ok(spec) => (None, Some(Ok(spec))),
            Err(err) => (None, Some(Err(err.to_string()))),
        };
        ClientBuilder {
            url,
            sentinel,
            cluster: None,
            config: ClientConfig::default(),
            tls: TlsSettings::default(),
        }
    }

    /// A builder for the Redis Cluster that the `seeds` belong to (each a `redis://` or `rediss://` URL of one of
    /// its nodes, with credentials where needed, or a bare `host:port`): the same as a `redis+cluster://` URL.
    ///
    /// Every key and channel of a service shares one hash tag, so a service lives on the one shard that owns its
    /// slot: each command goes there, replies travel over sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`) on that shard,
    /// and the connections follow slot moves and failovers by themselves.
    pub fn cluster<I, S>(seeds: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        ClientBuilder {
            url: None,
            sentinel: None,
            cluster: Some(connection::cluster_seeds(&seeds).map_err(|e| e.to_string())),
            config: ClientConfig::default(),
            tls: TlsSettings::default(),
        }
    }

    /// Whether a requester of this client found `service`'s recorded partition count to agree with `count`.
    pub(crate) fn partitions_agreed(&self, service: &str, count: usize) -> bool {
        self.inner
            .partitions_agreed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(service.to_owned(), count))
    }

    /// Notes that `service`'s recorded partition count agrees with `count`.
    pub(crate) fn note_partitions_agreed(&self, service: &str, count: usize) {
        self.inner
            .partitions_agreed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((service.to_owned(), count));
    }

    /// A requester for `service`. Cheap: requesters of one client share its reply connection, so make one per
    /// service (or per call) as convenient.
    pub fn requester(&self, service: &str) -> Requester {
        Requester::new(self.clone(), service)
    }

    /// A builder for a responder serving `service`; it connects when started ([`ResponderBuilder::start`]).
    pub fn responder(&self, service: &str) -> ResponderBuilder {
        ResponderBuilder::new(self.clone(), service)
    }

    /// The admin API for `service` (stats, dead letters, replay).
    pub fn admin(&self, service: &str) -> Admin {
        Admin::new(self.clone(), service)
    }

    /// The namespace this client's keys live in: clients meet only inside the same namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.config.namespace
    }

    /// The settings this client was built with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The key layout of `service` in this client's namespace, for inspecting its keys by hand (`redis-cli`).
    pub fn keys(&self, service: &str) -> ServiceKeys {
        ServiceKeys::new(&self.inner.config.namespace, service)
    }

    /// The key layout of `service` in this client's namespace with `count` partitions (see
    /// [`crate::protocol::Partitions`]), for finding a partitioned service's keys by hand.
    pub fn partitioned_keys(&self, service: &str, count: usize) -> crate::protocol::Partitions {
        crate::protocol::Partitions::new(&self.inner.config.namespace, service, count)
    }

    /// Number of requests of this client currently waiting for a reply (across all its requesters and clones): a
    /// gauge for metrics, and a way to tell that a shutdown would leave callers waiting.
    pub fn in_flight(&self) -> usize {
        self.inner.router.get().map_or(0, |r| r.in_flight())
    }

    /// A self-reconnecting connection to this client's Redis, for commands of your own (a handler's bookkeeping,
    /// an inspection script): same address, credentials and TLS as redcall's connections, and under Sentinel it
    /// follows a failover to the new primary. It connects on its first command; a command that fails on a broken
    /// connection is not retried, but the next one reconnects. Clones share one connection.
    pub fn redis_connection(&self) -> RedisConnection {
        RedisConnection(ManagedConnection::lazy(
            &self.inner.target,
            &self.inner.config,
        ))
    }

    /// Where this client's connections go (one address, or the primary Sentinel names), with its TLS settings and
    /// RESP3.
    pub(crate) fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The reply router, connected on first use.
    pub(crate) async fn router(&self) -> Result<Arc<Router>> {
        self.inner
            .router
            .get_or_try_init(|| Router::start(self.inner.target.clone(), self.inner.config.clone()))
            .await
            .cloned()
    }
}

/// Settings for a [`Client`], checked once by [`ClientBuilder::build`]; every knob has a default, named by its
/// setter, so only what differs needs setting.
#[derive(Clone)]
pub struct ClientBuilder {
    /// The URL given, unless the builder was made by [`Client::sentinel`].
    url: Option<String>,
    /// The sentinels and primary of [`Client::sentinel`] (an error found there is reported by `build`).
    sentinel: Option<std::result::Result<SentinelSpec, String>>,
    /// The seed nodes of [`Client::cluster`] (an error found there is reported by `build`).
    cluster: Option<std::result::Result<Vec<String>, String>>,
    config: ClientConfig,
    tls: TlsSettings,
}

// By hand: the URL and the Sentinel settings may carry passwords.
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Prefix that keeps several deployments apart in one Redis (default `redcall`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Largest encoded request or reply in bytes (default 1 MiB). Larger ones are refused before sending.
    pub fn payload_limit(mut self, bytes: usize) -> Self {
        self.config.payload_limit = bytes;
        self
    }

    /// How long a request record is kept after the request's deadline (default 1 h).
    pub fn record_retention(mut self, retention: Duration) -> Self {
        self.config.record_retention = retention;
        self
    }

    /// How long a stored reply is kept (default 1 h).
    pub fn reply_ttl(mut self, ttl: Duration) -> Self {
        self.config.reply_ttl = ttl;
        self
    }

    /// Limit for one non-blocking Redis command (default 5 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.config.command_timeout = timeout;
        self
    }

    /// Limit for opening a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Fail at once while Redis is unreachable (default false). By default an operation rides out an outage: a
    /// request keeps trying until its own timeout, and `call_info`, `publish_reply` and `stored_reply` for the
    /// [outage timeout](ClientBuilder::outage_timeout); a send cut off mid-command is tried again under the same
    /// id and counts once. With `fail_fast(true)` they fail at once with [`Error::Unavailable`] instead (or
    /// [`Error::Redis`] for a command caught as the connection broke), as a caller with its own retry policy wants.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.config.fail_fast = fail_fast;
        self
    }

    /// How long an operation without a timeout of its own (`call_info`, `publish_reply`, `stored_reply`) keeps
    /// trying while Redis is unreachable (default 10 s).
    pub fn outage_timeout(mut self, timeout: Duration) -> Self {
        self.config.outage_timeout = timeout;
        self
    }

    /// The partition count of every service this client's requesters, responders and admins use, unless given
    /// one of their own (default 1: the unpartitioned layout). A partitioned service is N requests streams, each
    /// under its own hash tag, so a Redis Cluster spreads it over N shards (see `docs/scaling.md`). Every program of
    /// a service must use the same count: the count is recorded in Redis and a program given another is refused
    /// with [`Error::PartitionMismatch`]. Between 1 and [`crate::protocol::MAX_PARTITIONS`].
    pub fn partitions(mut self, count: usize) -> Self {
        self.config.partitions = count;
        self
    }

    /// How sure a write must be before it counts as done (default [`Durability::Primary`](crate::Durability)):
    /// with [`Durability::Replicated`](crate::Durability::Replicated), adding a request and answering it wait for
    /// that many replicas (`WAIT`), and an add not confirmed in time fails with [`Error::NotReplicated`].
    pub fn durability(mut self, durability: crate::Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// The data nodes' password (and user name, if given) for a builder made by [`Client::sentinel`]; a URL
    /// carries them itself.
    pub fn password(mut self, username: Option<&str>, password: &str) -> Self {
        if let Some(Ok(spec)) = &mut self.sentinel {
            spec.username = username.map(str::to_owned);
            spec.password = Some(password.to_owned());
        }
        self
    }

    /// The sentinels' own password (and user name, if given) for a builder made by [`Client::sentinel`]; a URL
    /// carries them as the options `sentinel_username` and `sentinel_password`.
    pub fn sentinel_password(mut self, username: Option<&str>, password: &str) -> Self {
        if let Some(Ok(spec)) = &mut self.sentinel {
            spec.sentinel_username = username.map(str::to_owned);
            spec.sentinel_password = Some(password.to_owned());
        }
        self
    }

    /// Trusts the CA certificate(s) in `pem` for `rediss://` instead of the system's trust store: for a Redis
    /// whose certificate comes from a private CA. Needs a `rediss://` URL.
    pub fn tls_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_cert = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and private key (both PEM) to a Redis that requires client
    /// certificates (`tls-auth-clients yes`). Needs a `rediss://` URL.
    pub fn tls_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Checks the settings and builds the client. Does not connect yet: an unreachable Redis shows at first use.
    /// Durations above a year are clamped to a year.
    ///
    /// # Errors
    /// [`Error::Config`] when a setting cannot work: a zero command or connect timeout, an empty namespace or one
    /// with braces (they would break the hash tag), a zero payload limit, a URL that is not a Redis URL, TLS
    /// certificates with a URL that is not `rediss://`, certificates that cannot be used, a Sentinel URL that cannot
    /// be parsed (or one with TLS settings: not supported yet), cluster seed nodes that cannot be parsed (or TLS certificates with a cluster), replicated durability without a replica or with a
    /// timeout not shorter than the command timeout.
    pub fn build(mut self) -> Result<Client> {
        let c = &mut self.config;
        if c.command_timeout.is_zero() || c.connect_timeout.is_zero() {
            return Err(Error::Config(
                "the command and connect timeouts must be positive".into(),
            ));
        }
        for d in [
            &mut c.command_timeout,
            &mut c.connect_timeout,
            &mut c.record_retention,
            &mut c.reply_ttl,
            &mut c.outage_timeout,
        ] {
            *d = crate::config::clamp(*d);
        }
        crate::names::check_namespace(&c.namespace).map_err(Error::Config)?;
        if c.payload_limit == 0 {
            return Err(Error::Config("the payload limit must be positive".into()));
        }
        c.durability.validate(c.command_timeout)?;
        crate::config::check_partitions(c.partitions)?;
        let target = self.target()?;
        Ok(Client {
            inner: Arc::new(Inner {
                target,
                config: self.config,
                router: OnceCell::new(),
                partitions_agreed: Default::default(),
            }),
        })
    }

    /// Where the client's connections go: the primary the sentinels name, or the URL's one address.
    fn target(&self) -> Result<Target> {
        let cluster = match (&self.cluster, &self.url) {
            (Some(Ok(seeds)), _) => Some(seeds.clone()),
            (Some(Err(err)), _) => return Err(Error::Config(err.clone())),
            (None, Some(url)) if connection::is_cluster_url(url) => {
                Some(connection::cluster_seeds(&[url])?)
            }
            (None, _) => None,
        };
        if let Some(seeds) = cluster {
            if self.tls.ca_cert.is_some() || self.tls.client_cert.is_some() {
                return Err(Error::Config(
                    "TLS certificates with Redis Cluster are not supported yet".into(),
                ));
            }
            return Target::cluster(&seeds);
        }
        let spec = match (&self.sentinel, &self.url) {
            (Some(Ok(spec)), _) => Some(spec.clone()),
            (Some(Err(err)), _) => return Err(Error::Config(err.clone())),
            (None, Some(url)) if SentinelSpec::is_sentinel_url(url) => {
                Some(SentinelSpec::parse(url)?)
            }
            (None, _) => None,
        };
        match (spec, &self.url) {
            (Some(spec), _) => {
                if self.tls.ca_cert.is_some() || self.tls.client_cert.is_some() {
                    return Err(Error::Config(
                        "TLS with Redis Sentinel is not supported yet".into(),
                    ));
                }
                Target::sentinel(&spec)
            }
            (None, Some(url)) => Ok(Target::direct(connection::resp3_client(url, &self.tls)?)),
            (None, None) => Err(Error::Config("no Redis URL given".into())),
        }
    }
}

/// A connection to a client's Redis for commands of your own ([`Client::redis_connection`]): use it with the
/// redis crate's `AsyncCommands` or `redis::cmd(..).query_async(&mut con)`.
#[derive(Clone)]
pub struct RedisConnection(ManagedConnection);

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection").finish_non_exhaustive()
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
