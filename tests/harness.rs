//! Self-test of the shared harness in `tests/common` and the spawner it wraps (`src/cli/redis_server.rs`).
//!
//! No guarantee of DESIGN: it proves what the tests of 12 (Redis going away) rely on, that a server killed and
//! restarted on its port and directory keeps what its AOF holds and loses the rest without one, that a graceful stop
//! flushes an `everysec` AOF, and that servers, children and directories go away on drop.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    AofPolicy, ChildGuard, RedisOptions, RedisServer, ping_port, redcall_bin, redis_server,
};

#[test]
fn server_starts_and_answers() {
    let server = RedisServer::start();
    assert_ne!(server.port(), 6379, "must never use the shared Redis");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert!(server.dir().is_dir());
    assert!(server.ping());
    assert_eq!(server.cli(&["PING"]), "PONG");
    assert_eq!(server.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(server.cli(&["GET", "k"]), "v");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    // Trailing newline trimmed: an empty value leaves just the key.
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), "save");
}

#[test]
fn extra_args_are_applied() {
    let server = RedisServer::start_with(RedisOptions::default().arg("--maxmemory").arg("7mb"));
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]),
        format!("maxmemory\n{}", 7 * 1024 * 1024)
    );
}

#[test]
fn aof_always_survives_kill_and_restart() {
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::Always));
    let port = server.port();
    assert_eq!(server.cli(&["SET", "durable", "yes"]), "OK");
    server.cli(&["XADD", "s", "*", "f", "1"]);

    server.kill();
    assert!(!server.ping(), "server still answers after kill");
    server.restart();

    assert_eq!(server.port(), port, "restart must reuse the port");
    assert_eq!(server.cli(&["GET", "durable"]), "yes");
    assert_eq!(server.cli(&["XLEN", "s"]), "1");
}

#[test]
fn without_persistence_restart_loses_data() {
    let mut server = RedisServer::start();
    server.cli(&["SET", "volatile", "1"]);
    server.restart();
    assert_eq!(server.cli(&["EXISTS", "volatile"]), "0");
}

#[test]
fn graceful_stop_flushes_everysec_aof() {
    let mut server = RedisServer::start_with(RedisOptions::default().aof(AofPolicy::EverySec));
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendfsync"]),
        "appendfsync\neverysec"
    );
    server.cli(&["SET", "k", "v"]);
    server.stop_gracefully();
    assert!(!server.ping());
    server.restart();
    assert_eq!(server.cli(&["GET", "k"]), "v");
}

#[test]
fn drop_stops_the_server() {
    let server = RedisServer::start();
    let port = server.port();
    let dir = server.dir().to_path_buf();
    assert!(ping_port(port));
    drop(server);
    assert!(!ping_port(port), "port {port} still answers after drop");
    assert!(!dir.exists(), "temp dir not removed");
}

#[test]
fn child_guard_kills_on_drop() {
    let guard = ChildGuard::spawn(Command::new("sleep").arg("60"));
    let proc_dir = format!("/proc/{}", guard.id());
    assert!(std::path::Path::new(&proc_dir).exists());
    drop(guard);
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "child still exists after drop"
    );
}

#[test]
fn redcall_bin_exists() {
    assert!(redcall_bin().is_file(), "{:?} missing", redcall_bin());
}

#[tokio::test]
async fn wait_until_polls_until_true_or_deadline() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let ok = common::wait_until(Duration::from_secs(2), move || {
        let c = c.clone();
        async move { c.fetch_add(1, Ordering::SeqCst) >= 2 }
    })
    .await;
    assert!(ok);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let start = std::time::Instant::now();
    assert!(!common::wait_until(Duration::from_millis(100), || async { false }).await);
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
#[should_panic(expected = "exited early")]
fn bad_config_panics_with_reason() {
    RedisServer::start_with(RedisOptions::default().arg("--no-such-option").arg("1"));
}

#[test]
fn the_pid_is_the_servers_own() {
    let server = RedisServer::start();
    let pid = server.pid().expect("running");
    assert!(
        server
            .cli(&["INFO", "server"])
            .lines()
            .any(|l| l.trim() == format!("process_id:{pid}")),
        "INFO server names another process than {pid}"
    );
    assert!(
        server.log_tail(50).contains("Ready to accept connections"),
        "log tail: {}",
        server.log_tail(50)
    );
}

#[test]
fn a_server_with_a_password_counts_as_up() {
    let server =
        RedisServer::start_with(RedisOptions::default().arg("--requirepass").arg("s3cret"));
    assert!(!server.ping(), "PING without AUTH is refused");
    assert!(server.cli(&["PING"]).contains("NOAUTH"));
    assert_eq!(
        server.cli(&["-a", "s3cret", "--no-auth-warning", "PING"]),
        "PONG"
    );
}

#[test]
fn a_missing_binary_is_an_error_at_once() {
    let started = std::time::Instant::now();
    let err = redis_server::RedisServer::start("redcall-test-no-such-server")
        .expect_err("no such binary");
    assert!(matches!(err, redis_server::Error::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("is it installed?"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "retried a binary that cannot run"
    );
    let message: String = err.into();
    assert!(message.contains("redcall-test-no-such-server"), "{message}");
}

#[test]
fn stop_removes_the_directory_and_restart_brings_it_back() {
    let mut server = redis_server::RedisServer::start_with(
        RedisOptions::default().dir_prefix("redcall-harness-"),
    )
    .expect("start");
    let (port, dir) = (server.port(), server.dir().to_path_buf());
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("redcall-harness-")
    );
    server.stop();
    assert!(server.pid().is_none() && !ping_port(port) && !dir.exists());
    server.stop();
    server.restart().expect("restart after a stop");
    assert_eq!((server.port(), server.dir()), (port, dir.as_path()));
    assert!(server.ping());
    server.stop_gracefully().expect("SIGTERM");
    assert!(
        !ping_port(port) && dir.exists(),
        "a graceful stop keeps the directory"
    );
}
