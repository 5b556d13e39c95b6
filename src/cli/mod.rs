//! Subcommands of the `redcall` binary, one file each. People get JSON and plain text; the wire stays
//! MessagePack.

mod bench;
mod call;
mod info;
mod reap;
mod reply;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use redcall::{Client, Error, ErrorKind};

/// Durable request-response over Redis Streams.
#[derive(Debug, Parser)]
#[command(name = "redcall", version, about)]
pub struct Cli {
    /// Redis URL (`redis://` or `rediss://`, with `user:password@` for ACL users).
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
    /// Service to talk to: one request stream and its consumer group.
    #[arg(long, global = true, default_value = "default")]
    pub service: String,
    /// Namespace that keeps deployments apart in one Redis.
    #[arg(long, global = true, default_value = redcall::config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Payload size limit in bytes.
    #[arg(long, global = true, default_value_t = redcall::config::DEFAULT_PAYLOAD_LIMIT)]
    pub payload_limit: usize,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a request and print its reply as JSON.
    Call(call::Args),
    /// Print the function key and params of a request.
    Info(info::Args),
    /// Answer a request by id.
    Reply(reply::Args),
    /// Run a responder with the built-in demo handlers (echo, sleep, fail, panic).
    Serve(serve::Args),
    /// Run the reaper alone: dead-letter exhausted entries, remove dead consumers.
    Reap(reap::Args),
    /// Measure redcall against a bare-command baseline (latency, throughput, commands, CPU, memory).
    Bench(bench::Args),
    /// One worker process of `redcall bench` (started by it; not for people).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

/// Sets up logging: `RUST_LOG` wins; otherwise `serve` and `reap` log lifecycle events, others only warnings.
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Serve(_) | Command::Reap(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the chosen subcommand and maps its error to a message and an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let client = match Client::builder(&cli.url)
        .namespace(cli.namespace.clone())
        .payload_limit(cli.payload_limit)
        .build()
    {
        Ok(c) => c,
        Err(err) => return fail(&err),
    };
    let ctx = Context { client, cli: &cli };
    let result = match &cli.command {
        Command::Bench(args) => return bench::run(&ctx, args).await,
        Command::BenchWorker(args) => return bench::run_worker(&ctx, args).await,
        Command::Call(args) => call::run(&ctx, args).await,
        Command::Info(args) => info::run(&ctx, args).await,
        Command::Reply(args) => reply::run(&ctx, args).await,
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Reap(args) => reap::run(&ctx, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// What every subcommand gets.
pub struct Context<'a> {
    /// The connected client.
    pub client: Client,
    /// The parsed command line.
    pub cli: &'a Cli,
}

/// Exit codes, documented in the README: 1 other, 3 timeout, 4 the request failed remotely, 5 not found,
/// 6 duplicate id, 7 Redis unreachable.
fn exit_code(err: &Error) -> u8 {
    match err.kind() {
        ErrorKind::Timeout => 3,
        ErrorKind::Handler
        | ErrorKind::UnknownFunction
        | ErrorKind::DeadLettered
        | ErrorKind::Expired
        | ErrorKind::Malformed => 4,
        ErrorKind::NotFound => 5,
        ErrorKind::DuplicateId => 6,
        ErrorKind::Redis => 7,
        _ => 1,
    }
}

fn fail(err: &Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(exit_code(err))
}

/// Parses a JSON argument, naming it in the error.
pub fn parse_json(what: &'static str, text: &str) -> redcall::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Decode {
        what,
        message: format!("not valid JSON: {e}"),
    })
}

/// Prints a JSON value, pretty for people and compact with `--json`.
pub fn print_json(cli: &Cli, value: &serde_json::Value) {
    let text = if cli.json {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    println!("{}", text.unwrap_or_else(|_| value.to_string()));
}
