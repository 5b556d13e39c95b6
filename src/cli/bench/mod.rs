//! `redcall bench`: a benchmark that tells the truth.
//!
//! It measures redcall against a baseline written with the bare Redis commands of the same durable round trip
//! (see [`baseline`]), in the same run, on the same Redis: latency percentiles at concurrency 1, throughput at
//! 64 and 512, Redis commands per request, CPU time and peak memory of every process. Requesters and responders
//! run as separate processes (this binary again, as the hidden `redcall bench-worker`), each on a current-thread
//! runtime, so that one side's scheduling never flatters the other and `/proc` can tell each one's CPU time.
//!
//! By default the bench starts its own throwaway `redis-server` on a free loopback port (killed by PID at the
//! end); `--external` uses `--url` instead. `--soak N` runs a memory-flatness check instead of the comparison.
//! `--cluster` compares 1 and N partitions of one service on a local Redis Cluster it starts ([`cluster`]).
//!
//! The parts: [`args`] (what can be asked), [`env`](mod@env) (the Redis under test and the steps every measurement
//! shares), [`compare`] (the comparison and its ratios) and [`soak`] (the flatness run); the worker processes
//! are [`worker`], calling through [`load`] over [`redcall_side`] or [`baseline`]; [`procs`] and [`stats`] read what the
//! processes and Redis used; [`progress`] shows what runs now.

mod args;
mod baseline;
mod cluster;
mod compare;
mod env;
mod load;
mod otlp_sink;
mod procs;
mod progress;
mod redcall_side;
mod soak;
mod stats;
mod worker;

use std::process::ExitCode;
use std::time::Duration;

pub use args::{Args, System};
pub use worker::WorkerArgs;

use super::Context;
use crate::cli::redis_server::{RedisOptions, RedisServer};
use env::Env;

/// Runs `redcall bench`; Ctrl-C stops it and every process it started. Unusable options are usage errors (exit
/// 2), before anything starts.
pub async fn run(ctx: &Context<'_>, args: &Args) -> ExitCode {
    if ctx.cli.cluster && args.external {
        return usage(
            "bench --external measures the one Redis at --url; --cluster starts a local cluster of its own \
             (1 against N partitions): give one or the other",
        );
    }
    if let Err(message) = args.check() {
        return usage(&message);
    }
    let outcome = tokio::select! {
        outcome = bench(ctx, args) => outcome,
        _ = super::serve::wait_for_signal() => Err("interrupted; stopped every process the bench started".into()),
    };
    finish(outcome)
}

/// Runs the hidden `redcall bench-worker`.
pub async fn run_worker(ctx: &Context<'_>, args: &WorkerArgs) -> ExitCode {
    finish(worker::run(ctx, args).await)
}

/// A usage error: printed (as JSON under `--json`), exit 2.
fn usage(message: &str) -> ExitCode {
    super::print_error("usage", message, None);
    ExitCode::from(2)
}

/// Exit 0, or the bench's failure printed (as JSON under `--json`, kind `bench_failed`) and exit 1.
fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            super::print_error("bench_failed", &message, None);
            ExitCode::from(1)
        }
    }
}

/// Starts the throwaway Redis (or reaches `--url`), then runs the comparison or the soak.
async fn bench(ctx: &Context<'_>, args: &Args) -> Result<(), String> {
    args.check()?;
    if ctx.cli.cluster && !args.external {
        return cluster::run(ctx, args).await;
    }
    // Declared first so that it is dropped (killed) last, after the workers.
    let mut redis_process = None;
    let url = if args.external {
        ctx.cli.url().to_owned()
    } else {
        let server = RedisServer::start_with(
            RedisOptions::new()
                .binary(&args.redis_server)
                .dir_prefix("redcall-bench-"),
        )?;
        let url = server.url();
        redis_process = Some(server);
        url
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(120)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let server_info = stats::info(&mut con, "server").await?;
    let redis_pid = stats::info_field(&server_info, "process_id")
        .map(|pid| pid as u32)
        .filter(|&pid| procs::is_redis_server(pid));
    errln!(
        "redcall bench: Redis {} at {url} ({}); workers are separate processes on current-thread runtimes",
        server_info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim(),
        if args.external {
            "external"
        } else {
            "throwaway redis-server, killed at the end"
        },
    );
    let env = Env {
        args,
        url,
        namespace: ctx.cli.namespace.clone(),
        json: ctx.cli.json,
        con,
        redis_pid,
        owned: !args.external,
        otlp_sink: if args.otel {
            Some(otlp_sink::Sink::start().await?)
        } else {
            None
        },
    };
    let outcome = match args.soak {
        Some(n) => soak::run(&env, n).await,
        None => compare::run(&env).await,
    };
    if let Some(mut server) = redis_process.take() {
        server.stop();
    }
    outcome
}

/// `x` rounded to `digits` decimals, for the JSON output.
fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
