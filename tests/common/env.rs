//! [`TestEnv`], the setup most tests start from: a throwaway server, a client connected to it and a service name
//! of the test's own.

use std::sync::atomic::{AtomicUsize, Ordering};

use redcall::admin::Admin;
use redcall::{Client, ClientBuilder, Requester, ResponderBuilder};

use super::{ChildGuard, RedisServer, redis_con, spawn_serve};

/// A throwaway `redis-server`, a [`Client`] of it and a fresh service name. Tests that need a special server (AOF,
/// restarts, ACL users, TLS) start their own [`RedisServer`]. The fields are public: a test that works with them
/// directly takes the environment apart (`let TestEnv { server, client, service } = TestEnv::new();`).
pub struct TestEnv {
    /// The server, killed when the environment drops.
    pub server: RedisServer,
    /// A client with the settings the environment was made with.
    pub client: Client,
    /// The service the test works with: unique in the process, and named after the test for the server's logs.
    pub service: String,
}

impl TestEnv {
    /// A new server with default options and a client with default settings.
    pub fn new() -> Self {
        Self::with_client(|builder| builder)
    }

    /// A new server and a client built by `configure` (payload limit, TTLs, namespace...).
    pub fn with_client(configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Self {
        let server = RedisServer::start();
        let client = configure(Client::builder(&server.url()))
            .build()
            .expect("client");
        TestEnv {
            server,
            client,
            service: fresh_service(),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A requester of the service. Its reply router connects on first use.
    pub fn requester(&self) -> Requester {
        self.client.requester(&self.service)
    }

    /// A responder builder for the service; add handlers and `start()` it.
    pub fn responder(&self) -> ResponderBuilder {
        self.client.responder(&self.service)
    }

    /// The admin API of the service.
    pub fn admin(&self) -> Admin {
        self.client.admin(&self.service)
    }

    /// Another client of the same server, with default settings: what another process would use.
    pub fn other_client(&self) -> Client {
        Client::open(&self.server.url()).expect("client")
    }

    /// A plain connection to the server, for inspecting Redis directly.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis_con(&self.server).await
    }

    /// Starts `redcall serve` for the service as consumer `name` (see [`spawn_serve`]).
    pub fn serve(&self, name: &str, global: &[&str], extra: &[&str]) -> ChildGuard {
        spawn_serve(&self.server, &self.service, name, global, extra)
    }
}

/// A service name no other environment of this process has: the test's name (the test thread is named after it)
/// and a counter.
fn fresh_service() -> String {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::current();
    let test = thread
        .name()
        .and_then(|name| name.rsplit("::").next())
        .filter(|name| *name != "main")
        .unwrap_or("svc");
    let base: String = test
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{base}-{n}")
}
