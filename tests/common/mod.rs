//! Shared integration-test harness.
//!
//! Each test binary pulls this in with `mod common;`. It provides:
//!
//! * [`RedisServer`] (`server.rs`): a throwaway `redis-server` on a free loopback port with its own temporary
//!   directory, killed by PID when dropped. It is the spawner of `src/cli/redis_server.rs`, shared with
//!   `redcall bench`; it never touches the shared Redis on port 6379.
//! * [`TestEnv`] (`env.rs`): a server, a connected client and a fresh service name, the setup most tests start from.
//! * `process.rs`: [`ChildGuard`] (kills and reaps a child on drop), [`spawn_serve`] and [`run_cli`] for the built
//!   `redcall` binary.
//! * `calls.rs`: the shared handlers ([`start_responder`]) and request helpers; `inspect.rs`: looking at Redis
//!   directly.
//! * `ui.rs`: the dashboard (`redcall ui`) on a free port and a small HTTP client for it.
//! * [`wait_until`]: the deadline-bounded wait every test uses instead of a sleep.
#![allow(dead_code)]

mod calls;
pub mod cluster;
mod env;
mod inspect;
mod process;
pub mod sentinel;
mod server;
pub mod ui;

use std::future::Future;
use std::time::Duration;

// Each test binary uses a part of the harness: the re-exports the others use are unused in it.
#[allow(unused_imports)]
pub use calls::{
    FAIL_FAST, GENEROUS, Order, Quote, WAIT, connect_router, fresh_request_succeeds, order,
    start_responder, store_reply_silently,
};
#[allow(unused_imports)]
pub use env::TestEnv;
#[allow(unused_imports)]
pub use inspect::{command_calls, pending_count, redis_con, subscribed_channels};
#[allow(unused_imports)]
pub use process::{ChildGuard, finish, redcall_bin, responder_log, run_cli, spawn_serve};
#[allow(unused_imports)]
pub use server::{
    AofPolicy, RedisOptions, RedisServer, free_port, kill_blocking, ping_port, redis_server,
    restart_blocking,
};

/// Milliseconds since the Unix epoch, by the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Whether `err` says Redis could not be reached: nothing was sent (`Unavailable`), or the connection failed under
/// the command (`Redis`).
pub fn unreachable_redis(err: &redcall::Error) -> bool {
    matches!(
        err.kind(),
        redcall::ErrorKind::Unavailable | redcall::ErrorKind::Redis
    )
}

/// Poll interval of [`wait_until`].
const POLL: Duration = Duration::from_millis(20);

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
