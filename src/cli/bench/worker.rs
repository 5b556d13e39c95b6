//! `redcall bench-worker` (hidden): one requester or responder process of a bench run.
//!
//! It talks to the bench that started it through JSON lines on stdout (`ready`, `progress`, `result`) and plain
//! lines on stdin (`go` starts the measured run; end of input means finish and exit), so the bench can read this
//! process's CPU time and memory from `/proc` around exactly the measured window.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::System;
use super::baseline::{self, BaselineCaller, BaselineResponder};
use super::load::{Caller, Stop, histogram_to_hex, run_load};
use super::redcall_side::{self, RedcallCaller};
use crate::cli::Context;

/// What a worker process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Makes requests and measures them.
    Requester,
    /// Answers requests with `echo`.
    Responder,
}

/// Arguments of the hidden `redcall bench-worker` (set by `redcall bench`; `--url`, `--namespace` and
/// `--service` come from the global flags).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Requester or responder.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Which system to run.
    #[arg(long, value_enum)]
    pub system: System,
    /// Calls in flight at once (requester).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Stop after this many calls (requester).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (requester).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of unmeasured calls before reporting ready (requester).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Length of the echoed string.
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Seconds a call may wait for its reply.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Baseline requester: connections used round robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Baseline responder: reader tasks, each with its own blocking connection.
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    /// redcall responder: most requests handled at once.
    #[arg(long, default_value_t = 512)]
    pub responder_concurrency: usize,
    /// redcall: seconds request records and stored replies are kept (default: the library's).
    #[arg(long)]
    pub retention: Option<f64>,
    /// Milliseconds between progress lines (requester).
    #[arg(long, default_value_t = 250)]
    pub progress_ms: u64,
}

/// Runs the worker; returns a message on failure.
pub async fn run(ctx: &Context<'_>, args: &WorkerArgs) -> Result<(), String> {
    let cli = ctx.cli;
    let retention = args.retention.map(secs).transpose()?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    // The recorder before the responder or requester: their metric handles are made when they start.
    let _upkeep = if args.system == System::RedcallMetrics {
        let handle = crate::cli::metrics_server::install_recorder().map_err(|e| e.to_string())?;
        Some(crate::cli::metrics_server::AbortOnDrop(tokio::spawn(
            crate::cli::metrics_server::upkeep(handle),
        )))
    } else {
        None
    };
    match args.role {
        Role::Responder => {
            let responder = match args.system {
                System::Redcall | System::RedcallMetrics | System::RedcallOtel => {
                    let client =
                        redcall_side::client(cli.url(), &cli.namespace, retention, cli.partitions)
                            .map_err(|e| e.to_string())?;
                    Running::Redcall(
                        redcall_side::start_responder(
                            &client,
                            &cli.service,
                            args.responder_concurrency,
                            retention,
                        )
                        .await
                        .map_err(|e| e.to_string())?,
                    )
                }
                System::Baseline => {
                    let client = baseline::resp3_client(cli.url())?;
                    let keys = redcall::protocol::ServiceKeys::new(&cli.namespace, &cli.service);
                    Running::Baseline(BaselineResponder::start(&client, keys, args.readers).await?)
                }
            };
            emit(json!({"event": "ready"}));
            // Serve until the bench closes our stdin (or goes away).
            while let Ok(Some(_)) = stdin.next_line().await {}
            match responder {
                // Shut down as an application would; nothing should be in flight once the requesters are done.
                Running::Redcall(r) => match r.shutdown().await {
                    Ok(0) => {}
                    Ok(cut_off) => {
                        return Err(format!(
                            "{cut_off} requests were cut off by the grace period"
                        ));
                    }
                    Err(err) => return Err(format!("responder shutdown: {err}")),
                },
                Running::Baseline(r) => r.stop().await,
            }
            Ok(())
        }
        Role::Requester => {
            let payload: Arc<str> = "x".repeat(args.payload_size).into();
            let timeout = secs(args.timeout)?;
            let caller = match args.system {
                System::Redcall | System::RedcallMetrics | System::RedcallOtel => {
                    let client =
                        redcall_side::client(cli.url(), &cli.namespace, retention, cli.partitions)
                            .map_err(|e| e.to_string())?;
                    Caller::Redcall(RedcallCaller::new(client, &cli.service, payload, timeout))
                }
                System::Baseline => {
                    let client = baseline::resp3_client(cli.url())?;
                    let keys = redcall::protocol::ServiceKeys::new(&cli.namespace, &cli.service);
                    Caller::Baseline(
                        BaselineCaller::connect(&client, keys, args.connections, payload, timeout)
                            .await?,
                    )
                }
            };
            let progress = Duration::from_millis(args.progress_ms.max(10));
            if args.warmup > 0.0 {
                let stop = Stop {
                    count: None,
                    duration: Some(secs(args.warmup)?),
                };
                let warm = run_load(&caller, args.concurrency, stop, progress, |_, _, _| {}).await;
                if warm.done > 0 && warm.errors == warm.done {
                    return Err(format!(
                        "every warm-up call failed: {}",
                        warm.first_error.unwrap_or_default()
                    ));
                }
            }
            emit(json!({"event": "ready"}));
            match stdin.next_line().await {
                Ok(Some(line)) if line.trim() == "go" => {}
                _ => return Ok(()),
            }
            let stop = Stop {
                count: args.count,
                duration: args.duration.map(secs).transpose()?,
            };
            if stop.count.is_none() && stop.duration.is_none() {
                return Err("a requester needs --count or --duration".into());
            }
            let result = run_load(
                &caller,
                args.concurrency,
                stop,
                progress,
                |done, errors, in_flight| {
                    emit(json!({"event": "progress", "done": done, "errors": errors, "in_flight": in_flight}))
                },
            )
            .await;
            emit(json!({
                "event": "result",
                "done": result.done,
                "errors": result.errors,
                "first_error": result.first_error,
                "elapsed_s": result.elapsed.as_secs_f64(),
                "in_flight": caller.in_flight(),
                "hist": histogram_to_hex(&result.hist),
            }));
            while let Ok(Some(_)) = stdin.next_line().await {}
            Ok(())
        }
    }
}

/// A running responder of either system.
enum Running {
    Redcall(redcall::Responder),
    Baseline(BaselineResponder),
}

/// Prints one JSON event line (stdout is line-buffered, so the bench sees it at once).
fn emit(event: serde_json::Value) {
    outln!("{event}");
}

fn secs(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{s} is not a usable number of seconds"))
}
