//! Shared integration-test harness.
//!
//! Each test binary pulls this in with `mod common;`. It provides:
//!
//! * [`RedisServer`]: a throwaway `redis-server` on a free loopback port with
//!   its own temporary directory, killed when dropped. It never touches the
//!   shared Redis on port 6379.
//! * [`ChildGuard`]: kills and reaps a child process (e.g. a responder) on drop.
//! * [`redcall_bin`] and [`wait_until`]: small helpers for end-to-end tests.
#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to answer `PING` after being spawned.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// Poll interval used by every wait loop in this module.
const POLL: Duration = Duration::from_millis(20);
/// Attempts made to (re)start a server before giving up.
const START_ATTEMPTS: usize = 5;
/// Name of the server log inside the temp dir.
const LOG_FILE: &str = "redis.log";
/// Server stderr goes here: config errors are printed before the log opens.
const STDERR_FILE: &str = "redis.stderr";

/// Path of the `redcall` binary built by Cargo for this test run.
pub fn redcall_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redcall"))
}

/// AOF fsync policy for a persistent test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AofPolicy {
    /// `appendfsync always`: every write is on disk before the reply.
    Always,
    /// `appendfsync everysec`: up to ~1 s of writes may be lost on a crash.
    EverySec,
}

/// Options for [`RedisServer::start_with`]. `Default` means no persistence.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Enable AOF with this fsync policy (`None` = `--appendonly no`).
    pub aof: Option<AofPolicy>,
    /// Extra `redis-server` arguments, appended last so they win.
    pub extra_args: Vec<String>,
}

impl RedisOptions {
    /// Enable AOF with the given fsync policy.
    pub fn aof(mut self, policy: AofPolicy) -> Self {
        self.aof = Some(policy);
        self
    }

    /// Append one raw `redis-server` argument (e.g. `"--maxmemory"`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// A throwaway `redis-server` process, killed (SIGKILL) and reaped on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    opts: RedisOptions,
}

impl RedisServer {
    /// Start a server with default options (no persistence).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Start a server with the given options on a fresh free port.
    ///
    /// Panics (with the server log tail) if it does not come up.
    pub fn start_with(opts: RedisOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redcall-redis-")
            .tempdir()
            .expect("create temp dir for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            opts,
        };
        let mut last_err = String::new();
        // Another process may grab the port between probing and binding,
        // so pick a new port on each attempt.
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_ready() {
                Ok(child) => {
                    server.child = Some(child);
                    return server;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_err}");
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (AOF files and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PID of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True if the server answers a raw `PING` with `+PONG` right now.
    pub fn ping(&self) -> bool {
        ping_port(self.port)
    }

    /// Simulate a crash: SIGKILL the server and reap it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop with SIGTERM (Redis flushes the AOF and exits cleanly); falls back
    /// to SIGKILL after the startup deadline. Idempotent.
    pub fn stop_gracefully(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STARTUP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kill the server (if running) and start it again on the same port and
    /// directory, so an AOF written before is reloaded.
    ///
    /// Retries a few times in case the port is briefly unavailable.
    pub fn restart(&mut self) {
        self.kill();
        let mut last_err = String::new();
        for attempt in 0..START_ATTEMPTS {
            match self.spawn_ready() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(200 * (attempt as u64 + 1)));
        }
        panic!(
            "redis-server did not restart on port {} after {START_ATTEMPTS} attempts: {last_err}",
            self.port
        );
    }

    /// Run `redis-cli -h 127.0.0.1 -p PORT <args>` and return its stdout with
    /// trailing newlines trimmed. Redis errors appear in the output (e.g.
    /// `ERR ...`), they do not panic.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
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

    /// Last `n` lines of the server log (empty if there is no log yet).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.dir().join(LOG_FILE)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Spawn `redis-server` with the current port/dir/options and wait until
    /// it answers `PING`. On failure the process is reaped and the error
    /// carries the log tail.
    fn spawn_ready(&self) -> Result<Child, String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""])
            .arg("--dir")
            .arg(self.dir())
            .arg("--logfile")
            .arg(self.dir().join(LOG_FILE));
        match self.opts.aof {
            None => cmd.args(["--appendonly", "no"]),
            Some(policy) => cmd
                .args(["--appendonly", "yes", "--appendfsync"])
                .arg(match policy {
                    AofPolicy::Always => "always",
                    AofPolicy::EverySec => "everysec",
                }),
        };
        let stderr = fs::File::create(self.dir().join(STDERR_FILE))
            .map_err(|e| format!("create {STDERR_FILE}: {e}"))?;
        cmd.args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server (is it installed?): {e}"));

        let deadline = Instant::now() + STARTUP_DEADLINE;
        let failure = loop {
            if ping_port(self.port) {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                break format!("redis-server exited early with {status}");
            }
            if Instant::now() >= deadline {
                break format!("redis-server not answering PING after {STARTUP_DEADLINE:?}");
            }
            thread::sleep(POLL);
        };
        let _ = child.kill();
        let _ = child.wait();
        let stderr = fs::read_to_string(self.dir().join(STDERR_FILE)).unwrap_or_default();
        Err(format!(
            "{failure} (port {}); stderr:\n{}\nlog tail:\n{}",
            self.port,
            stderr.trim_end(),
            self.log_tail(30)
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ask the OS for a currently free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// Send a raw inline `PING` to 127.0.0.1:`port`; true iff the reply is `+PONG`.
pub fn ping_port(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    let _ = stream.shutdown(Shutdown::Both);
    buf[..n].starts_with(b"+PONG")
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
/// Derefs to [`Child`], so `guard.id()`, `guard.try_wait()` etc. work.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Spawn `cmd`, panicking with a clear message on failure.
    pub fn spawn(cmd: &mut Command) -> Self {
        ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `f` every 20 ms until it returns true (→ `true`) or `deadline`
/// elapses (→ `false`). `f` is always evaluated at least once.
pub async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `redcall serve` for `service` as consumer `name`; `global` flags go before the subcommand, `extra` after
/// it. Its log goes to `<name>.log` in the server's directory.
pub fn spawn_serve(
    server: &RedisServer,
    service: &str,
    name: &str,
    global: &[&str],
    extra: &[&str],
) -> ChildGuard {
    let log = fs::File::create(server.dir().join(format!("{name}.log"))).expect("log file");
    let mut cmd = Command::new(redcall_bin());
    cmd.args(["--url", &server.url(), "--service", service])
        .args(global)
        .args(["serve", "--consumer", name])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::spawn(&mut cmd)
}

/// A plain connection to the test server, for inspecting Redis directly.
pub async fn redis_con(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Redis channels with at least one subscriber (the reply routers' subscriptions), one per line; empty when none.
pub fn subscribed_channels(server: &RedisServer) -> String {
    server.cli(&["PUBSUB", "CHANNELS", "*"])
}

/// Connects a requester's reply router by looking up an id that does not exist, so that what a test does next
/// starts on a live connection.
pub async fn connect_router(requester: &redcall::Requester) {
    let err = requester.call_info("nobody").await.expect_err("no such id");
    assert_eq!(err.kind(), redcall::ErrorKind::NotFound, "{err}");
}

/// How many entries `group` holds pending on `stream` (the count of `XPENDING <stream> <group>`).
pub fn pending_count(server: &RedisServer, stream: &str, group: &str) -> u64 {
    let summary = server.cli(&["XPENDING", stream, group]);
    summary
        .lines()
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("XPENDING {stream} {group}: {summary:?}"))
}

/// Runs `redcall --url <server> --service <service> <args>` to completion and returns its output.
pub fn run_cli(server: &RedisServer, service: &str, args: &[&str]) -> std::process::Output {
    Command::new(redcall_bin())
        .args(["--url", &server.url(), "--service", service])
        .args(args)
        .output()
        .expect("run redcall")
}
