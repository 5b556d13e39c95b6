//! `redcall serve`: a responder with built-in demo handlers, stopped cleanly by SIGINT or SIGTERM. With `--json`
//! its lifecycle events are JSON lines on stdout (`started`, `stopped`); logs stay on stderr.

use std::time::Duration;

use redcall::{HandlerError, RequestContext, ResponderBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Context;

/// Arguments of `redcall serve` (responder settings; defaults as in the library).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle time after which a pending request is given to another responder; a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::duration::millis)]
    pub visibility_timeout: Duration,
    /// Deliveries after which a failing request is dead-lettered.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_deliveries: u64,
    /// Pause before a request whose handler asked for a retry or panicked (or whose answer Redis refused) is
    /// delivered again, doubling with each delivery (with up to 20% jitter off); a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = super::duration::millis)]
    pub retry_backoff: Duration,
    /// Longest pause between two deliveries of a failing request; a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::duration::millis)]
    pub retry_backoff_max: Duration,
    /// Most requests handled at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub concurrency: usize,
    /// Consumer name [default: <host>-<pid>-<random>].
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Consumer group.
    #[arg(long, value_name = "NAME", default_value = redcall::ResponderSettings::DEFAULT_GROUP)]
    pub group: String,
    /// Time in-flight handlers get to finish on shutdown; a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::duration::millis_or_zero)]
    pub grace: Duration,
    /// Do not run the reaper in this responder (it then does not trim either).
    #[arg(long)]
    pub no_reaper: bool,
    /// Exit (code 7) when Redis is unreachable at start, instead of trying again with backoff until it is there
    /// (each attempt logged), as a service manager expects by default.
    #[arg(long)]
    pub exit_if_unreachable: bool,
    /// How this responder's reaper trims the requests stream.
    #[command(flatten)]
    pub retention: super::retention::RetentionArgs,
    /// Serve Prometheus metrics at `http://<ADDR>/metrics`, with `/healthz` and `/readyz`, e.g. `127.0.0.1:9464`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often the heartbeat record and the metrics gauges are refreshed; a bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::duration::millis)]
    pub heartbeat_interval: Duration,
    /// With `--partitions N`: serve only these partitions (0-based, comma-separated or repeated) instead of all;
    /// other responders must serve the rest.
    #[arg(long, value_name = "I", value_delimiter = ',')]
    pub only_partitions: Vec<usize>,
}

#[derive(Deserialize)]
struct SleepParams {
    ms: u64,
}

#[derive(Deserialize)]
struct ProgressParams {
    steps: u64,
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
}

/// The function keys of the demo handlers [`demo_handlers`] registers.
pub const DEMO_HANDLERS: &[&str] = &[
    "echo", "sleep", "fail", "panic", "retry", "work", "progress",
];

/// Registers the demo handlers: `echo`, `sleep`, `fail`, `panic`, `retry`, `work` and `progress`.
pub fn demo_handlers(
    builder: ResponderBuilder,
    client: &redcall::Client,
    service: &str,
    redis: redcall::RedisConnection,
) -> ResponderBuilder {
    let runs_key = format!("{}:runs", client.keys(service).tag());
    builder
        .handler("echo", |_ctx: RequestContext, params: Value| async move {
            Ok::<_, HandlerError>(params)
        })
        .handler("sleep", |_ctx: RequestContext, p: SleepParams| async move {
            tokio::time::sleep(Duration::from_millis(p.ms)).await;
            Ok::<_, HandlerError>(Slept { slept_ms: p.ms })
        })
        .handler("fail", |_ctx: RequestContext, _p: Value| async move {
            Err::<Value, _>(HandlerError::fail(
                "demo_failure",
                "the fail handler always fails",
            ))
        })
        .handler("panic", |ctx: RequestContext, _p: Value| async move {
            always_panic(ctx.delivery)
        })
        .handler("retry", |ctx: RequestContext, _p: Value| async move {
            Err::<Value, _>(HandlerError::retry(format!(
                "asked to retry (delivery {})",
                ctx.delivery
            )))
        })
        // `steps` steps of `ms` milliseconds each, reporting progress after each one; stops early when cancelled.
        .handler("progress", |ctx: RequestContext, p: ProgressParams| async move {
            for step in 1..=p.steps {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(p.ms)) => {}
                    _ = ctx.cancelled() => return Err(HandlerError::fail("cancelled", "cancelled")),
                }
                ctx.progress(&serde_json::json!({ "step": step, "of": p.steps }))
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
            }
            Ok::<_, HandlerError>(serde_json::json!({ "steps": p.steps }))
        })
        // Sleeps like `sleep`, then counts the run in a hash `{ns:service}:runs` (field: request id), so tests and
        // demos can see how many times each request really ran.
        .handler("work", move |ctx: RequestContext, p: SleepParams| {
            let mut redis = redis.clone();
            let runs_key = runs_key.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(p.ms)).await;
                let _: i64 = redis::AsyncCommands::hincr(&mut redis, &runs_key, &ctx.id, 1)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
                Ok::<_, HandlerError>(Slept { slept_ms: p.ms })
            }
        })
}

/// Runs the responder until SIGINT or SIGTERM, then drains within the grace period.
pub async fn run(ctx: &Context<'_>, args: &Args) -> redcall::Result<()> {
    let mut builder = ctx
        .client
        .responder(&ctx.cli.service)
        .reaper(!args.no_reaper)
        .retention(args.retention.policy());
    builder = builder
        .visibility_timeout(args.visibility_timeout)
        .max_deliveries(args.max_deliveries)
        .retry_backoff(redcall::RetryPolicy::exponential(
            args.retry_backoff,
            args.retry_backoff_max,
        ))
        .concurrency(args.concurrency)
        .group(args.group.clone())
        .grace(args.grace)
        .heartbeat_interval(args.heartbeat_interval);
    if let Some(name) = &args.consumer {
        builder = builder.consumer(name.clone());
    }
    if !args.only_partitions.is_empty() {
        builder = builder.only_partitions(args.only_partitions.iter().copied());
    }
    // Before the responder starts: it makes its metric handles then.
    let endpoint = match args.metrics_addr {
        Some(addr) => Some(super::metrics_server::Endpoint::bind(addr).await?),
        None => None,
    };
    // The demo handlers' own bookkeeping: the client's connection, so it follows a Sentinel failover too.
    let redis = ctx.client.redis_connection();
    let builder = demo_handlers(builder, &ctx.client, &ctx.cli.service, redis);
    let responder = if args.exit_if_unreachable {
        builder.start().await?
    } else {
        match builder.start_retrying(wait_for_signal()).await? {
            Some(responder) => responder,
            None => return Ok(()),
        }
    };
    let stop = wait_for_signal();
    if ctx.cli.json {
        super::print_json(
            ctx.cli,
            &serde_json::json!({
                "event": "started",
                "service": ctx.cli.service,
                "consumer": responder.consumer(),
                "group": args.group,
                "handlers": DEMO_HANDLERS,
            }),
        );
    } else {
        super::status_line(
            ctx.cli,
            format_args!(
                "serving {:?} as consumer {} (handlers: {}); Ctrl-C to stop",
                ctx.cli.service,
                responder.consumer(),
                DEMO_HANDLERS.join(", ")
            ),
        );
    }
    let _metrics = endpoint.map(|endpoint| {
        if let Some(addr) = endpoint.local_addr() {
            super::status_line(ctx.cli, format_args!("metrics at http://{addr}/metrics"));
        }
        let admin = ctx.client.admin(&ctx.cli.service);
        super::metrics_server::AbortOnDrop(tokio::spawn(endpoint.serve(admin, args.group.clone())))
    });
    let cut_off = responder.run_until(stop).await?;
    if ctx.cli.json {
        super::print_json(
            ctx.cli,
            &serde_json::json!({ "event": "stopped", "unfinished": cut_off }),
        );
    } else {
        super::status_line(
            ctx.cli,
            format_args!("stopped ({cut_off} unfinished requests left pending)"),
        );
    }
    Ok(())
}

/// The `panic` demo handler's body.
fn always_panic(delivery: u64) -> Result<Value, HandlerError> {
    panic!("the panic handler always panics (delivery {delivery})")
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is first
/// polled: call it before telling anyone the process runs (the `started` event), or a signal sent at once would
/// still find the default action and kill the process without its drain.
pub fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
