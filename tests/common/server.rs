//! The tests' throwaway Redis: the spawner `src/cli/redis_server.rs` (which `redcall bench` uses too), with the
//! conveniences tests want on top: panics that carry the server's log instead of `Result`s, and `redis-cli`.

/// The spawner itself, for tests of its `Result`s.
#[path = "../../src/cli/redis_server.rs"]
pub mod redis_server;

use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};

pub use redis_server::{AofPolicy, RedisOptions, ping_port};

/// A throwaway `redis-server` on a free loopback port with its own temporary directory, killed (SIGKILL, by PID) and
/// its directory removed on drop. It never touches the shared Redis on port 6379.
///
/// Derefs to the shared spawner for `url()`, `port()`, `pid()`, `dir()`, `ping()`, `kill()` and `log_tail()`.
pub struct RedisServer(redis_server::RedisServer);

impl RedisServer {
    /// Starts a server with default options (no persistence).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `opts` on a fresh free port. Panics (with the server's stderr and log tail) if it does not
    /// come up.
    ///
    /// When the environment variable [`TEST_SERVER_VAR`] names a server binary (`valkey-server`, or a path to one),
    /// that binary starts instead of `redis-server`, unless `opts` names a binary of its own: the suite then runs
    /// against Valkey.
    pub fn start_with(opts: RedisOptions) -> Self {
        match redis_server::RedisServer::start_with(with_test_server(opts)) {
            Ok(server) => RedisServer(server),
            Err(err) => panic!("{err}"),
        }
    }

    /// Kills the server (if running) and starts it again on the same port and directory, so an AOF written before is
    /// reloaded. Panics if it does not come back.
    pub fn restart(&mut self) {
        if let Err(err) = self.0.restart() {
            panic!("{err}");
        }
    }

    /// Stops with SIGTERM (Redis flushes the AOF and exits cleanly). Panics if it had to be killed instead.
    pub fn stop_gracefully(&mut self) {
        if let Err(err) = self.0.stop_gracefully() {
            panic!("{err}");
        }
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` and returns its stdout with trailing newlines trimmed. Redis
    /// errors appear in the output (e.g. `ERR ...`), they do not panic.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (is it installed?)");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }
}

impl Deref for RedisServer {
    type Target = redis_server::RedisServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The environment variable that picks the server binary of a test run (`REDCALL_TEST_SERVER=valkey-server`, or a
/// path); unset or empty means `redis-server`.
pub const TEST_SERVER_VAR: &str = "REDCALL_TEST_SERVER";

/// The server binary of this test run ([`TEST_SERVER_VAR`]), when it is not `redis-server`.
pub fn test_server() -> Option<String> {
    std::env::var(TEST_SERVER_VAR)
        .ok()
        .filter(|s| !s.is_empty())
}

/// `opts`, with the binary of [`TEST_SERVER_VAR`] when it names one and `opts` does not name its own.
pub fn with_test_server(opts: RedisOptions) -> RedisOptions {
    match test_server() {
        Some(binary) if opts.has_default_binary() => opts.binary(binary),
        _ => opts,
    }
}

/// SIGKILLs the server from async code (the spawner blocks; on a multi-thread runtime the other tasks go on).
pub fn kill_blocking(server: &mut RedisServer) {
    tokio::task::block_in_place(|| server.kill());
}

/// Restarts the server on the same port and directory from async code (the AOF, if any, is reloaded).
pub fn restart_blocking(server: &mut RedisServer) {
    tokio::task::block_in_place(|| server.restart());
}

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    redis_server::free_port().expect("bind 127.0.0.1:0 to find a free port")
}
