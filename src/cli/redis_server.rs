//! A throwaway `redis-server` (or `valkey-server`): a free loopback port, a temporary directory of its own, and a
//! process stopped by its own PID. One implementation for the integration tests and `redcall bench`.
//!
//! Std only: the tests compile this file into their binaries with `#[path]`, so it may use no crate the tests do not
//! have. It gets three fiddly things right once:
//!
//! * **The port.** A port probed free may be taken by another process before the server binds it, so every start
//!   attempt probes a new one; a restart keeps its port (and directory, so an AOF is reloaded) and retries instead.
//! * **Ready means answering, and answering means this server.** A server is up once it answers `PING` with
//!   `+PONG`: one still loading its AOF answers `-LOADING` and is not ready yet. The answer must come from *our*
//!   child (its `INFO server` names the child's PID), never from another Redis that happens to hold the port.
//! * **Stopping only what it started.** [`RedisServer::kill`] is SIGKILL through [`Child::kill`],
//!   [`RedisServer::stop_gracefully`] is SIGTERM through `kill -TERM <pid>`, both aimed at the PID of a child this
//!   handle has not reaped yet (so the PID cannot have been reused), and [`Drop`] kills the server and removes its
//!   directory however the owner's code ends. The server binds 127.0.0.1 only.
//!
//! Errors are values ([`Error`], which converts into `String`); nothing here panics.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary started when the options name no other.
pub const DEFAULT_BINARY: &str = "redis-server";
/// The server log, inside the server's directory.
const LOG_FILE: &str = "redis.log";
/// The configuration file of [`RedisOptions::config_file`], inside the server's directory.
const CONFIG_FILE: &str = "server.conf";
/// The server's stderr, inside its directory: configuration errors are printed there before the log opens.
const STDERR_FILE: &str = "redis.stderr";
/// Poll interval of every wait loop here.
const POLL: Duration = Duration::from_millis(20);
/// How long a graceful stop waits for the server to exit before it falls back to SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of one probe (`PING`, `INFO server`).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The AOF fsync policy of a persistent server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AofPolicy {
    /// `appendfsync always`: every write is on disk before its reply.
    Always,
    /// `appendfsync everysec`: up to about a second of writes may be lost when the server is killed.
    EverySec,
}

impl AofPolicy {
    fn fsync(self) -> &'static str {
        match self {
            AofPolicy::Always => "always",
            AofPolicy::EverySec => "everysec",
        }
    }
}

/// How to start the server. The default: `redis-server` without persistence, 5 attempts of 10 s each.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    binary: OsString,
    config_file: Option<String>,
    aof: Option<AofPolicy>,
    extra_args: Vec<OsString>,
    dir_prefix: String,
    startup_timeout: Duration,
    attempts: usize,
    cluster_port: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            binary: DEFAULT_BINARY.into(),
            config_file: None,
            aof: None,
            extra_args: Vec::new(),
            dir_prefix: "redcall-redis-".to_owned(),
            startup_timeout: Duration::from_secs(10),
            attempts: 5,
            cluster_port: false,
        }
    }
}

impl RedisOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The server binary: a name looked up in `PATH` or a path (`valkey-server` takes the same arguments).
    pub fn binary(mut self, binary: impl Into<OsString>) -> Self {
        self.binary = binary.into();
        self
    }

    /// Whether the binary is still [`DEFAULT_BINARY`] (so a test run may swap in another server).
    pub fn has_default_binary(&self) -> bool {
        self.binary == DEFAULT_BINARY
    }

    /// A configuration file with these lines, written into the server's directory and passed as the first
    /// argument. Sentinel needs one (it rewrites it with what it learns); the command-line options still win.
    pub fn config_file(mut self, contents: impl Into<String>) -> Self {
        self.config_file = Some(contents.into());
        self
    }

    /// Persistence: AOF with this fsync policy (without it, `--appendonly no`).
    pub fn aof(mut self, policy: AofPolicy) -> Self {
        self.aof = Some(policy);
        self
    }

    /// One more server argument (`"--maxmemory"`, then `"7mb"`), after the ones set here, so that it wins.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Several more server arguments, as [`RedisOptions::arg`].
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The start of the temporary directory's name (`redcall-redis-` by default), so that a leftover says whose it
    /// was.
    pub fn dir_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dir_prefix = prefix.into();
        self
    }

    /// How long one attempt waits for the server to answer `PING`.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Picks a port a Redis Cluster node can use ([`free_cluster_port`]): its bus port (+10000) must exist and be
    /// free too.
    pub fn cluster_port(mut self) -> Self {
        self.cluster_port = true;
        self
    }

    /// How many times a start (each on a new port) or a restart (on the same port) is tried; at least once.
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// Why a server could not be started or stopped.
#[derive(Debug)]
pub enum Error {
    /// The temporary directory could not be created.
    TempDir {
        /// The directory tried last.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// No free loopback port could be found.
    NoFreePort(io::Error),
    /// The binary could not be run at all (not installed, not executable).
    Spawn {
        /// The binary of the options.
        binary: OsString,
        /// What `exec` said.
        source: io::Error,
    },
    /// The binary ran but never became ready, on any attempt.
    NotStarted {
        /// `"start"` or `"restart"`.
        action: &'static str,
        /// The binary of the options.
        binary: OsString,
        /// Attempts made.
        attempts: usize,
        /// The port of the last attempt.
        port: u16,
        /// Why the last attempt failed, with the server's stderr and the tail of its log.
        reason: String,
    },
    /// `kill -TERM` could not be run; the server was killed instead.
    Signal {
        /// The server's PID.
        pid: u32,
        /// What running `kill` said.
        source: io::Error,
    },
    /// The server did not exit within the deadline after SIGTERM, and was killed.
    StopTimeout {
        /// The server's PID.
        pid: u32,
        /// How long the stop waited.
        waited: Duration,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TempDir { path, source } => {
                write!(
                    f,
                    "cannot create the directory {}: {source}",
                    path.display()
                )
            }
            Error::NoFreePort(source) => {
                write!(f, "cannot find a free port on 127.0.0.1: {source}")
            }
            Error::Spawn { binary, source } => write!(
                f,
                "cannot run {} (is it installed?): {source}",
                binary.to_string_lossy()
            ),
            Error::NotStarted {
                action,
                binary,
                attempts,
                port,
                reason,
            } => write!(
                f,
                "{} did not {action} after {attempts} attempts (the last on port {port}): {reason}",
                binary.to_string_lossy()
            ),
            Error::Signal { pid, source } => write!(
                f,
                "cannot send SIGTERM to the server (pid {pid}), killed it instead: {source}"
            ),
            Error::StopTimeout { pid, waited } => write!(
                f,
                "the server (pid {pid}) did not exit within {waited:?} of SIGTERM and was killed"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::TempDir { source, .. }
            | Error::NoFreePort(source)
            | Error::Spawn { source, .. }
            | Error::Signal { source, .. } => Some(source),
            Error::NotStarted { .. } | Error::StopTimeout { .. } => None,
        }
    }
}

/// For callers whose errors are strings (`redcall bench`): `?` works unchanged.
impl From<Error> for String {
    fn from(err: Error) -> String {
        err.to_string()
    }
}

/// One start attempt's failure: worth another attempt, or not.
enum AttemptError {
    /// The binary cannot be run: another attempt would fail the same way.
    Fatal(Error),
    /// The server exited or did not answer in time (another process may hold the port).
    Failed(String),
}

/// A running throwaway server. Killed and its directory removed on [`RedisServer::stop`] or drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    opts: RedisOptions,
}

impl RedisServer {
    /// Starts `binary` (normally [`DEFAULT_BINARY`]) with the other options' defaults and waits until it answers.
    pub fn start(binary: impl Into<OsString>) -> Result<Self, Error> {
        Self::start_with(RedisOptions::default().binary(binary))
    }

    /// Starts a server with `opts` on a free port in a new temporary directory and waits until it answers.
    pub fn start_with(opts: RedisOptions) -> Result<Self, Error> {
        let dir = make_dir(&opts.dir_prefix)?;
        // From here on, drop removes the directory, whatever fails.
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            opts,
        };
        let mut last = String::new();
        for _ in 0..server.opts.attempts {
            server.port = if server.opts.cluster_port {
                free_cluster_port()
            } else {
                free_port()
            }
            .map_err(Error::NoFreePort)?;
            match server.spawn_ready() {
                Ok(child) => {
                    server.child = Some(child);
                    return Ok(server);
                }
                Err(AttemptError::Fatal(err)) => return Err(err),
                Err(AttemptError::Failed(reason)) => last = reason,
            }
        }
        Err(server.not_started("start", last))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on, the same across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the server while this handle runs it (`None` after a kill or a stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's directory: its AOF files, `redis.log` and `redis.stderr`. Removed by [`RedisServer::stop`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the server was started with.
    pub fn options(&self) -> &RedisOptions {
        &self.opts
    }

    /// Whether the server answers a `PING` with `+PONG` right now.
    pub fn ping(&self) -> bool {
        ping_port(self.port)
    }

    /// Simulates a crash: SIGKILL (by PID) and reap. Keeps the port and directory for a restart. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (Redis writes out its AOF and exits) and reaps it; keeps the port and directory
    /// for a restart. When it is not gone within 10 s, or the signal cannot be sent, it is killed and the error says
    /// so. Idempotent.
    pub fn stop_gracefully(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        // The standard library sends no signal but SIGKILL; `kill` (procps or coreutils) sends the others.
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(source) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Signal { pid, source });
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(Error::StopTimeout {
            pid,
            waited: STOP_DEADLINE,
        })
    }

    /// Kills the server if it runs, then starts it again on the same port and in the same directory, so that an
    /// AOF written before is reloaded. Retries (with a growing pause) while the port is briefly unavailable.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        fs::create_dir_all(&self.dir).map_err(|source| Error::TempDir {
            path: self.dir.clone(),
            source,
        })?;
        let mut last = String::new();
        for attempt in 0..self.opts.attempts {
            if attempt > 0 {
                // A back-off before trying the same port again, not a synchronisation.
                thread::sleep(Duration::from_millis(200 * attempt as u64));
            }
            match self.spawn_ready() {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(AttemptError::Fatal(err)) => return Err(err),
                Err(AttemptError::Failed(reason)) => last = reason,
            }
        }
        Err(self.not_started("restart", last))
    }

    /// Kills the server (SIGKILL by PID), reaps it and removes its directory. Idempotent; drop does the same.
    pub fn stop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The path of the server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The last `n` lines of the server log (empty when there is none yet).
    pub fn log_tail(&self, n: usize) -> String {
        tail(&fs::read_to_string(self.log_path()).unwrap_or_default(), n)
    }

    /// Runs the binary with the current port, directory and options and waits until it answers. A server that
    /// does not come up is killed and reaped; the error carries its stderr and log tail.
    fn spawn_ready(&self) -> Result<Child, AttemptError> {
        let mut cmd = Command::new(&self.opts.binary);
        if let Some(contents) = &self.opts.config_file {
            let path = self.dir.join(CONFIG_FILE);
            // Written once: a restart keeps what the server itself wrote into it since.
            if !path.exists() {
                fs::write(&path, contents).map_err(|source| {
                    AttemptError::Fatal(Error::TempDir {
                        path: path.clone(),
                        source,
                    })
                })?;
            }
            cmd.arg(path);
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--daemonize", "no", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path());
        match self.opts.aof {
            None => cmd.args(["--appendonly", "no"]),
            Some(policy) => cmd
                .args(["--appendonly", "yes", "--appendfsync"])
                .arg(policy.fsync()),
        };
        let stderr_path = self.dir.join(STDERR_FILE);
        let stderr = fs::File::create(&stderr_path).map_err(|source| {
            AttemptError::Fatal(Error::TempDir {
                path: stderr_path.clone(),
                source,
            })
        })?;
        cmd.args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = cmd.spawn().map_err(|source| {
            AttemptError::Fatal(Error::Spawn {
                binary: self.opts.binary.clone(),
                source,
            })
        })?;

        let failure = match self.wait_ready(&mut child) {
            Ok(()) => return Ok(child),
            Err(failure) => failure,
        };
        let _ = child.kill();
        let _ = child.wait();
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        Err(AttemptError::Failed(format!(
            "{failure} (port {}); stderr:\n{}\nlog tail:\n{}",
            self.port,
            stderr.trim_end(),
            self.log_tail(30)
        )))
    }

    /// Waits until `child` answers `PING` on the port, checking that the answer is its own.
    fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + self.opts.startup_timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the server exited early with {status}"));
            }
            match probe(self.port, "PING") {
                Some(reply) if reply.starts_with(b"+PONG") => {
                    return match server_pid(self.port) {
                        Some(pid) if pid != child.id() => Err(format!(
                            "port {} is answered by another server (pid {pid}, ours is {})",
                            self.port,
                            child.id()
                        )),
                        _ => Ok(()),
                    };
                }
                // A password among the extra arguments: the server answers, but tells nothing before AUTH.
                Some(reply) if reply.starts_with(b"-NOAUTH") => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the server did not answer PING within {:?}",
                    self.opts.startup_timeout
                ));
            }
            thread::sleep(POLL);
        }
    }

    fn not_started(&self, action: &'static str, reason: String) -> Error {
        Error::NotStarted {
            action,
            binary: self.opts.binary.clone(),
            attempts: self.opts.attempts,
            port: self.port,
            reason,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that is free right now (another process may take it before it is used).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A loopback port in 20000–55000 that is free right now and whose cluster bus port (port + 10000) is free too: a
/// cluster node refuses a port above 55535, which the kernel's free ports often are.
pub fn free_cluster_port() -> io::Result<u16> {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut x = seed | 1;
    for _ in 0..1000 {
        // xorshift: a different sequence per process and start, so parallel tests rarely pick the same ports.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20000 + (x % 35001) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free port pair (port, port + 10000) in 20000-55000",
    ))
}

/// Whether something on 127.0.0.1:`port` answers a `PING` with `+PONG` right now.
pub fn ping_port(port: u16) -> bool {
    probe(port, "PING").is_some_and(|reply| reply.starts_with(b"+PONG"))
}

/// The PID the server on `port` reports in `INFO server` (`None` when it does not answer or needs AUTH).
fn server_pid(port: u16) -> Option<u32> {
    let info = probe(port, "INFO server")?;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Sends one inline command to 127.0.0.1:`port` and returns its reply: the line of a simple reply (`+PONG`,
/// `-ERR ...`) or the body of a bulk reply. `None` when nothing complete came back in time.
fn probe(port: u16, command: &str) -> Option<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let answer = loop {
        if let Some(answer) = complete_reply(&reply) {
            break Some(answer);
        }
        if Instant::now() >= deadline {
            break None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break None,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    answer
}

/// The reply at the start of `buf` once it is complete: a simple reply's line without its CRLF, or a bulk reply's
/// body (empty for a null bulk).
fn complete_reply(buf: &[u8]) -> Option<Vec<u8>> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[..end];
    let Some(len) = line.strip_prefix(b"$") else {
        return Some(line.to_vec());
    };
    let len: i64 = std::str::from_utf8(len).ok()?.parse().ok()?;
    let Ok(len) = usize::try_from(len) else {
        return Some(Vec::new());
    };
    buf.get(end + 2..end + 2 + len).map(<[u8]>::to_vec)
}

/// Creates a new directory `<temp>/<prefix><pid>-<nanos>-<n>`, readable by its owner only.
fn make_dir(prefix: &str) -> Result<PathBuf, Error> {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let mut attempt = 0;
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{prefix}{}-{nanos}-{n}", std::process::id()));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&path) {
            Ok(()) => return Ok(path),
            // Left over by an earlier process with the same PID: take another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(source) => return Err(Error::TempDir { path, source }),
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
