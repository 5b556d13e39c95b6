//! Processes the tests start besides Redis: the built `redcall` binary (`serve`, one-shot commands) and any other
//! child, each killed and reaped by its PID when its guard drops.

use std::fs;
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::RedisServer;

/// Path of the `redcall` binary built by Cargo for this test run.
pub fn redcall_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redcall"))
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

/// Starts `redcall serve` for `service` as consumer `name`; `global` flags go before the subcommand, `extra` after
/// it. Its log goes to `<name>.log` in the server's directory (read it with [`responder_log`]).
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

/// What the `redcall serve` started by [`spawn_serve`] as consumer `name` has logged so far.
pub fn responder_log(server: &RedisServer, name: &str) -> String {
    fs::read_to_string(server.dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// Runs `redcall --url <server> --service <service> <args>` to completion and returns its output.
pub fn run_cli(server: &RedisServer, service: &str, args: &[&str]) -> Output {
    Command::new(redcall_bin())
        .args(["--url", &server.url(), "--service", service])
        .args(args)
        .output()
        .expect("run redcall")
}

/// Waits for a spawned child to exit within `deadline` and collects its output; kills it (via the guard) and
/// panics when it does not. Output is small, so the pipes never fill while the child runs.
pub fn finish(mut child: ChildGuard, deadline: Duration, what: &str) -> Output {
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break status,
            None if Instant::now() >= end => panic!("{what}: still running after {deadline:?}"),
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut out = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_end(&mut out.stdout).expect("read stdout");
    }
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_end(&mut out.stderr).expect("read stderr");
    }
    out
}
