//! Subcommands of the `redcall` binary, one file each. People get JSON and plain text; the wire stays
//! MessagePack. Everything is printed through [`output`] (`outln!`, `out!`, `errln!`), which never panics on a
//! closed pipe.

// First, so that its macros are visible in every subcommand's module.
#[macro_use]
pub mod output;

mod bench;
mod call;
mod completions;
mod demo;
mod dlq;
pub mod duration;
mod hint;
mod info;
mod input;
pub mod logging;
pub mod metrics_server;
#[cfg(feature = "otel")]
pub mod otel;
mod reap;
// The spawner shared with the integration tests: the bench uses a part of it.
mod cancel;
#[allow(dead_code)]
mod redis_server;
mod replay;
mod reply;
mod retention;
mod serve;
mod services;
mod stats;
mod status;
mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use redcall::{Client, Error, ErrorKind};

/// Durable request-response over Redis Streams.
#[derive(Debug, Parser)]
#[command(
    name = "redcall",
    version,
    about,
    next_help_heading = "Global options",
    arg_required_else_help = true
)]
pub struct Cli {
    /// Redis URL (`redis://` or `rediss://`, with `user:password@` for ACL users). With `--cluster`: seed nodes of a
    /// Redis Cluster (repeat the flag, or comma-separate them).
    #[arg(
        long = "url",
        global = true,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        action = clap::ArgAction::Append
    )]
    pub urls: Vec<String>,
    /// Talk to a Redis Cluster whose seed nodes `--url` names (one or more).
    #[arg(long, global = true)]
    pub cluster: bool,
    /// Service to talk to: one request stream and its consumer group.
    #[arg(long, global = true, default_value = "default")]
    pub service: String,
    /// The service's partition count: N requests streams, each under its own hash tag, so a Redis Cluster spreads
    /// the service over N shards. Every command of a service must use the count it is served with (recorded in
    /// Redis; another is refused, exit code 10).
    #[arg(
        long,
        global = true,
        env = "REDCALL_PARTITIONS",
        default_value_t = 1,
        value_name = "N"
    )]
    pub partitions: usize,
    /// Namespace that keeps deployments apart in one Redis.
    #[arg(long, global = true, default_value = redcall::Client::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines on stderr: `text` for people, `json` for one JSON object per line (timestamp, level, message,
    /// and the request's `id`, `service` and `func` where known).
    #[arg(
        long,
        global = true,
        env = "REDCALL_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: logging::LogFormat,
    /// PEM file of the CA to trust for `rediss://` (for a Redis whose certificate comes from a private CA).
    #[arg(long, global = true, env = "REDCALL_TLS_CA_CERT", value_name = "PATH")]
    pub tls_ca_cert: Option<std::path::PathBuf>,
    /// Payload size limit in bytes.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = redcall::Client::DEFAULT_PAYLOAD_LIMIT)]
    pub payload_limit: usize,
    /// How long a request record (what `info` reads, and what refuses a reused id) is kept after the request's
    /// deadline; a bare number is seconds [default: 1h].
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration::secs)]
    pub record_retention: Option<Duration>,
    /// Fail at once while Redis is unreachable, instead of trying again until the request's timeout (or, for
    /// `info` and `reply`, for 10 s).
    #[arg(long, global = true)]
    pub fail_fast: bool,
    /// How long a stored reply is kept for late readers; a bare number is seconds [default: 1h].
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration::secs)]
    pub reply_ttl: Option<Duration>,
    /// `replicated`: adding a request and answering it wait (`WAIT`) until replicas confirm them, so a failover
    /// loses nothing accepted; `primary` (the default): done once the primary has them.
    #[arg(long, global = true, value_enum, default_value = "primary")]
    pub durability: DurabilityArg,
    /// With `--durability replicated`: how many replicas must confirm.
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    pub durability_replicas: u32,
    /// With `--durability replicated`: how long to wait for them (below the command timeout); a bare number is
    /// milliseconds.
    #[arg(long, global = true, default_value = "1s", value_name = "DURATION", value_parser = duration::millis)]
    pub durability_timeout: Duration,
    /// Export the request spans (`send`, `process`) to this OpenTelemetry collector over OTLP/HTTP (protobuf,
    /// `http://` only): its base URL, spans go to `<URL>/v1/traces`. Without it, `call`, `serve` and `demo` read
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the traces URL) or OTEL_EXPORTER_OTLP_ENDPOINT (a base URL), and only
    /// warn about an unusable one.
    #[cfg(feature = "otel")]
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Refused with a clear error: this binary was built without the `otel` feature.
    #[cfg(not(feature = "otel"))]
    #[arg(long, global = true, hide = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
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
    /// Show the whole story of one request: what it asked for, replays, where it is now, its reply.
    Status(status::Args),
    /// Answer a request by id.
    Reply(reply::Args),
    /// Cancel a request by id: its caller gets `cancelled`; not run if not started, its result dropped if running.
    Cancel(cancel::Args),
    /// Run a responder with the built-in demo handlers (echo, sleep, fail, panic, retry, work, progress).
    Serve(serve::Args),
    /// Run the reaper alone: dead-letter exhausted entries, remove dead consumers, trim by the retention policy.
    Reap(reap::Args),
    /// Show the three operations and a failure in one process (uses a fresh service name).
    Demo(demo::Args),
    /// Show stream length, pending, lag, oldest pending age, consumers and dead letters per service.
    Stats(stats::Args),
    /// List the live responders of every service: host, pid, functions, counts (from their heartbeat records).
    Services(services::Args),
    /// Dead letters: list, show, replay, purge.
    Dlq(dlq::Args),
    /// Re-queue a range of the requests stream under the original request ids.
    Replay(replay::Args),
    /// Measure redcall against a bare-command baseline (latency, throughput, commands, CPU, memory).
    Bench(bench::Args),
    /// Serve the web dashboard: services, dead letters, requests, replay (loopback only unless --token).
    Ui(ui::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = completions::INSTALL)]
    Completions(completions::Args),
    /// One worker process of `redcall bench` (started by it; not for people).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

/// Sets up logging (see [`logging`]): `RUST_LOG` wins; otherwise `serve` and `reap` log lifecycle events, others
/// only warnings. With `--otlp-endpoint` (the `otel` feature), also the OpenTelemetry export of the request spans
/// ([`otel`]); the returned [`Telemetry`] flushes it at the end.
///
/// # Errors
/// The exit code of a usage error (printed): an unusable `--otlp-endpoint`, or one given to a binary built
/// without the `otel` feature. Logging is set up all the same.
pub fn init_tracing(cli: &Cli) -> Result<Telemetry, ExitCode> {
    let default = match cli.command {
        Command::Serve(_) | Command::Reap(_) | Command::Ui(_) => "info",
        _ => "warn",
    };
    init_export(cli, default)
}

/// Logging, and the span export when an endpoint is given (the flag, or for `call`, `serve` and `demo` the
/// standard environment variables).
#[cfg(feature = "otel")]
fn init_export(cli: &Cli, default: &str) -> Result<Telemetry, ExitCode> {
    // Only these make spans; the environment's endpoint is read for them alone (it is often set fleet-wide).
    let makes_spans = matches!(
        cli.command,
        Command::Call(_) | Command::Serve(_) | Command::Demo(_)
    );
    let (url, env_warning) = match cli.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(flag) => match otel::traces_url(flag) {
            Ok(url) => (Some(url), None),
            Err(message) => {
                logging::init(cli.log_format, default);
                return Err(fail(&Error::Config(message)));
            }
        },
        None if makes_spans => match otel::traces_url_from_env() {
            Some(Ok(url)) => (Some(url), None),
            Some(Err(message)) => (None, Some(message)),
            None => (None, None),
        },
        None => (None, None),
    };
    if let Some(url) = url {
        return match otel::layer(&url) {
            Ok((layer, exporter)) => {
                logging::init_with_layer(cli.log_format, default, layer);
                Ok(Telemetry {
                    exporter: Some(exporter),
                })
            }
            Err(message) => {
                logging::init(cli.log_format, default);
                Err(fail(&Error::Config(message)))
            }
        };
    }
    logging::init(cli.log_format, default);
    if let Some(message) = env_warning {
        tracing::warn!("{message}; not exporting spans");
    }
    Ok(Telemetry::default())
}

/// Logging; an `--otlp-endpoint` is refused, this binary cannot export.
#[cfg(not(feature = "otel"))]
fn init_export(cli: &Cli, default: &str) -> Result<Telemetry, ExitCode> {
    logging::init(cli.log_format, default);
    if cli.otlp_endpoint.is_some() {
        return Err(fail(&Error::Config(
            "--otlp-endpoint: this redcall was built without the `otel` feature \
             (build it with `cargo install redcall --features otel`)"
                .into(),
        )));
    }
    Ok(Telemetry::default())
}

/// What the process must finish before it exits: the OpenTelemetry export's queue (with the `otel` feature).
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    exporter: Option<otel::Exporter>,
}

impl Telemetry {
    /// Flushes the span export, if any (call it outside the async runtime: the export's HTTP client blocks).
    pub fn finish(self) {
        #[cfg(feature = "otel")]
        if let Some(exporter) = self.exporter {
            exporter.shutdown();
        }
    }
}

/// The `--durability` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Done once the primary has it.
    Primary,
    /// Done once replicas confirm it (`WAIT`).
    Replicated,
}

impl DurabilityArg {
    /// The library's setting.
    fn to_durability(self, replicas: u32, timeout: Duration) -> redcall::Durability {
        match self {
            DurabilityArg::Primary => redcall::Durability::Primary,
            DurabilityArg::Replicated => redcall::Durability::Replicated { replicas, timeout },
        }
    }
}

/// Runs the chosen subcommand and maps its error to a message and an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    // Needs no client: a completion script is made even where the URL is unusable.
    if let Command::Completions(args) = &cli.command {
        return match completions::run(&cli, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&err),
        };
    }
    let at: Vec<String> = cli.urls.iter().map(|url| mask_password(url)).collect();
    let _ = REDIS_AT.set(at.join(", "));
    let builder = if cli.cluster {
        Client::cluster(&cli.urls)
    } else if cli.urls.len() > 1 {
        let err = Error::Config("--url was given more than once: that needs --cluster".into());
        return fail(&err);
    } else {
        Client::builder(cli.url())
    };
    let mut builder = builder
        .namespace(cli.namespace.clone())
        .payload_limit(cli.payload_limit)
        .fail_fast(cli.fail_fast)
        .partitions(cli.partitions)
        .durability(
            cli.durability
                .to_durability(cli.durability_replicas, cli.durability_timeout),
        );
    if let Some(path) = &cli.tls_ca_cert {
        match std::fs::read(path) {
            Ok(pem) => builder = builder.tls_ca_cert_pem(pem),
            Err(e) => {
                let err = Error::Config(format!("cannot read {}: {e}", path.display()));
                return fail(&err);
            }
        }
    }
    if let Some(retention) = cli.record_retention {
        builder = builder.record_retention(retention);
    }
    if let Some(ttl) = cli.reply_ttl {
        builder = builder.reply_ttl(ttl);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(err) => return fail(&err),
    };
    let ctx = Context { client, cli: &cli };
    let result = match &cli.command {
        Command::Bench(args) => return bench::run(&ctx, args).await,
        Command::BenchWorker(args) => return bench::run_worker(&ctx, args).await,
        Command::Call(args) => return hint::run_call(&ctx, args).await,
        Command::Info(args) => info::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Reply(args) => reply::run(&ctx, args).await,
        Command::Cancel(args) => cancel::run(&ctx, args).await,
        Command::Serve(args) => serve::run(&ctx, args).await,
        Command::Reap(args) => reap::run(&ctx, args).await,
        Command::Demo(args) => demo::run(&ctx, args).await,
        Command::Stats(args) => stats::run(&ctx, args).await,
        Command::Services(args) => services::run(&ctx, args).await,
        Command::Dlq(args) => return dlq::run(&ctx, args).await,
        Command::Replay(args) => return replay::run(&ctx, args).await,
        Command::Ui(args) => ui::run(&ctx, args).await,
        Command::Completions(_) => Ok(()), // answered above, before the client
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

/// Exit codes, documented in the README's table: 1 other, 2 usage (also an argument or a configuration the library
/// refuses, and params or reply data over the payload limit), 3 timeout, 4 the request failed remotely, 5 not
/// found, 6 duplicate id or already answered, 7 Redis unreachable, a Redis command failed, replicas did not
/// confirm a write in time (`--durability replicated`) or the server is too old, 8 the request was accepted and
/// then lost by Redis (it may have run: send again only if that is safe), 9 the request was cancelled.
pub fn exit_code(err: &Error) -> u8 {
    kind_exit_code(err.kind())
}

/// The exit code of an error of this kind ([`exit_code`]).
fn kind_exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Timeout => 3,
        ErrorKind::Handler
        | ErrorKind::UnknownFunction
        | ErrorKind::DeadLettered
        | ErrorKind::Expired
        | ErrorKind::Malformed => 4,
        ErrorKind::NotFound => 5,
        // A payload over the limit is always the caller's own (nothing was sent): an argument refused.
        ErrorKind::InvalidArgument | ErrorKind::Config | ErrorKind::PayloadTooLarge => 2,
        ErrorKind::DuplicateId | ErrorKind::AlreadyAnswered => 6,
        ErrorKind::Unavailable
        | ErrorKind::Redis
        | ErrorKind::NotReplicated
        | ErrorKind::Unsupported => 7,
        ErrorKind::Lost => 8,
        ErrorKind::Cancelled => 9,
        ErrorKind::PartitionMismatch => 10,
        _ => 1,
    }
}

/// The Redis URLs given (passwords masked), for the hint of an error that does not name them: set once before any
/// command runs.
static REDIS_AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `url` with its password, if any, replaced by `***`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user_info.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Whether errors are printed as JSON: set once from `--json` before any command runs.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints `err` on stderr (text, or under `--json` one object `{"error": {"kind", "message", "id"}}`) and gives
/// its exit code.
pub fn fail(err: &Error) -> ExitCode {
    fail_with_hint(err, None)
}

/// [`fail`], with a hint for what to look at: a second line `hint: ...` in text, a `hint` field under `--json`.
pub fn fail_with_hint(err: &Error, hint: Option<&str>) -> ExitCode {
    // Redis stayed away until the deadline: the error says nothing of where it was looked for.
    let unreachable;
    let hint = match (hint, err, REDIS_AT.get()) {
        (None, Error::Unavailable { .. }, Some(at)) => {
            unreachable = format!(
                "nothing answered at {at} (the warnings above say why; --fail-fast fails at once)"
            );
            Some(unreachable.as_str())
        }
        _ => hint,
    };
    let kind = if err.kind() == ErrorKind::InvalidArgument || err.kind() == ErrorKind::Config {
        "usage"
    } else {
        err.kind().as_str()
    };
    print_error_with_hint(kind, &err.to_string(), err.request_id(), hint);
    ExitCode::from(exit_code(err))
}

/// Prints an error on stderr, as text or (under `--json`) as one JSON object.
pub fn print_error(kind: &str, message: &str, id: Option<&str>) {
    print_error_with_hint(kind, message, id, None);
}

/// [`print_error`] with an optional hint (the JSON object's `hint` field is there only when there is one).
pub fn print_error_with_hint(kind: &str, message: &str, id: Option<&str>, hint: Option<&str>) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        let mut value =
            serde_json::json!({ "error": { "kind": kind, "message": message, "id": id } });
        if let (Some(hint), Some(error)) =
            (hint, value.get_mut("error").and_then(|e| e.as_object_mut()))
        {
            error.insert("hint".to_owned(), hint.into());
        }
        errln!("{value}");
    } else {
        errln!("error: {message}");
        if let Some(hint) = hint {
            errln!("hint: {hint}");
        }
    }
}

impl Cli {
    /// The first `--url` (the only one, unless `--cluster`).
    pub fn url(&self) -> &str {
        self.urls
            .first()
            .map_or("redis://127.0.0.1:6379", String::as_str)
    }
}

/// The global flags (by argument id) that only some commands use, with the commands (space-separated paths) that
/// use them (a flag may have several rows). Everywhere else they are hidden from the help, so that no command lists
/// a flag it ignores; they are still accepted there, since scripts put global flags before the subcommand. A global
/// flag not listed here is used by every command that talks to Redis.
const GLOBALS_USED_BY: &[(&str, &[&str])] = &[
    (
        "payload_limit",
        &["call", "reply", "serve", "demo", "dlq replay", "replay"],
    ),
    (
        "record_retention",
        &["call", "serve", "reap", "demo", "dlq replay", "replay"],
    ),
    ("reply_ttl", &["reply", "cancel", "serve", "reap", "demo"]),
    ("fail_fast", &["call", "info", "reply", "cancel", "demo"]),
    ("durability", DURABLE_WRITERS),
    ("durability_replicas", DURABLE_WRITERS),
    ("durability_timeout", DURABLE_WRITERS),
    ("tls_ca_cert", TALK_TO_REDIS_BUT_BENCH),
    ("cluster", TALK_TO_REDIS_BUT_BENCH),
    // The bench starts a local cluster of its own with it.
    ("cluster", &["bench"]),
    ("service", SERVICE_USERS),
    ("partitions", SERVICE_USERS),
    // The cluster bench compares 1 partition with this many.
    ("partitions", &["bench"]),
    ("otlp_endpoint", &["call", "serve", "demo"]),
];

/// The commands whose writes wait for replicas under `--durability replicated`: adding a request, and answering it.
const DURABLE_WRITERS: &[&str] = &["call", "serve", "demo"];

/// The commands that talk to a Redis given by the global flags with TLS settings or as a cluster (the bench starts
/// its own, or measures one Redis).
const TALK_TO_REDIS_BUT_BENCH: &[&str] = &[
    "call",
    "info",
    "status",
    "reply",
    "cancel",
    "serve",
    "reap",
    "demo",
    "stats",
    "services",
    "dlq list",
    "dlq show",
    "dlq replay",
    "dlq purge",
    "replay",
    "ui",
];

/// The commands that work on the one service `--service` names (`demo` makes its own, `services` lists them all
/// unless `--only`).
const SERVICE_USERS: &[&str] = &[
    "call",
    "info",
    "status",
    "reply",
    "cancel",
    "serve",
    "reap",
    "stats",
    "services",
    "dlq list",
    "dlq show",
    "dlq replay",
    "dlq purge",
    "replay",
];

/// The commands that talk to no Redis: every global flag but the log format is hidden in their help.
const NO_REDIS: &[&str] = &["completions"];

/// The `clap` command of [`Cli`], with [`IGNORED_GLOBALS`] hidden where they are ignored.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    // Global flags reach the subcommands when the command is built; only then can a subcommand's copy be hidden.
    cmd.build();
    cmd = cmd.mut_subcommands(|sub| hide_ignored_globals(sub, ""));
    negative_durations_reach_the_parser(cmd)
}

/// Lets `--timeout -1` reach the duration parser (which says "negative") instead of clap taking `-1` for a flag,
/// on every duration flag of every command.
fn negative_durations_reach_the_parser(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let is_duration = arg
            .get_value_names()
            .is_some_and(|names| names.iter().any(|n| n.as_str().starts_with("DURATION")));
        if is_duration {
            arg.allow_hyphen_values(true)
        } else {
            arg
        }
    })
    .mut_subcommands(negative_durations_reach_the_parser)
}

/// Hides, in `cmd` (at `parent` + its name) and below it, the global flags it does not use ([`GLOBALS_USED_BY`]).
fn hide_ignored_globals(cmd: clap::Command, parent: &str) -> clap::Command {
    let path = if parent.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{parent} {}", cmd.get_name())
    };
    let no_redis = NO_REDIS.contains(&path.as_str());
    // A group of commands (`dlq`) lists the global flags one of its commands uses.
    let group = format!("{path} ");
    let used_here = |users: &[&str]| {
        users
            .iter()
            .any(|user| *user == path || user.starts_with(&group))
    };
    // In place (`mut_args`, `mut_subcommands`): a built command's arguments are looked up by position, and
    // `mut_arg` would move one to the end.
    let cmd = cmd.mut_args(|arg| {
        if !arg.is_global_set() {
            return arg;
        }
        let id = arg.get_id().as_str();
        let ignored = if no_redis {
            id != "log_format"
        } else {
            // A flag may have several rows: it is listed where any of them names the command.
            let mut rows = GLOBALS_USED_BY
                .iter()
                .filter(|(flag, _)| *flag == id)
                .peekable();
            rows.peek().is_some() && !rows.any(|(_, users)| used_here(users))
        };
        let hidden = ignored || arg.is_hide_set();
        arg.hide(hidden)
    });
    cmd.mut_subcommands(|sub| hide_ignored_globals(sub, &path))
}

/// Parses the command line. Under `--json` a usage error is one JSON object on stderr like every other error
/// (kind `usage`, exit 2); `--help` and `--version` print as usual.
pub fn parse() -> Result<Cli, ExitCode> {
    let json = std::env::args_os().any(|a| a == "--json");
    JSON_ERRORS.store(json, std::sync::atomic::Ordering::Relaxed);
    let parsed = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    // Clap lists hidden commands too among those a missing one could have been (`bench-worker`): leave them out.
    let parsed = parsed.map_err(|mut err| {
        if err.kind() == clap::error::ErrorKind::MissingSubcommand {
            let visible = command()
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(|sub| sub.get_name().to_owned())
                .collect();
            err.insert(
                clap::error::ContextKind::ValidSubcommand,
                clap::error::ContextValue::Strings(visible),
            );
        }
        err
    });
    match parsed {
        Ok(cli) => Ok(cli),
        Err(err) if json && err.use_stderr() => {
            let message = err.kind().to_string();
            let detail = err.render().to_string();
            let first = detail.lines().next().unwrap_or(&message);
            print_error("usage", first.trim_start_matches("error: "), None);
            Err(ExitCode::from(2))
        }
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            Err(ExitCode::from(code))
        }
    }
}

/// Milliseconds since the Unix epoch, by the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A long-running command's status line for people (`serving ...`, `stopped ...`) on stderr: plain text, or under
/// `--log-format json` an info event like every other log line, so that stderr stays all JSON.
pub fn status_line(cli: &Cli, line: std::fmt::Arguments<'_>) {
    match cli.log_format {
        logging::LogFormat::Json => tracing::info!("{line}"),
        logging::LogFormat::Text => errln!("{line}"),
    }
}

/// Wraps a Redis error of the CLI's own commands with what was being done.
pub fn redis_error(context: &'static str) -> impl FnOnce(redis::RedisError) -> Error {
    move |source| Error::Redis {
        context,
        source: Box::new(source),
    }
}

/// Parses a JSON argument, naming it in the error (a usage error: exit 2).
pub fn parse_json(what: &'static str, text: &str) -> redcall::Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("the {what} are not valid JSON: {e}")))
}

/// Prints a JSON value, pretty for people and compact with `--json`.
pub fn print_json(cli: &Cli, value: &serde_json::Value) {
    let text = if cli.json {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    outln!("{}", text.unwrap_or_else(|_| value.to_string()));
}

/// A progress bar on stderr for `what`, drawn only when both stdout and stderr are terminals (never in scripts,
/// pipes or tests). `total` unknown gives a counter.
pub fn progress_bar(total: Option<u64>, what: &str) -> ProgressBar {
    if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg} {pos} ({per_sec})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A duration in milliseconds for people: `850 ms`, `12.3 s`, `4 min 10 s`, `3 h 5 min`, `2 d 4 h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Decodes MessagePack params or data to JSON for people; what JSON cannot show (binary) is shown as hex.
pub fn msgpack_to_json(bytes: &[u8]) -> serde_json::Value {
    match redcall::protocol::decode::<serde_json::Value>(bytes, "params") {
        Ok(v) => v,
        Err(_) => serde_json::json!({
            "msgpack_hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let matches = command()
            .try_get_matches_from(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn passwords_are_masked_in_hints() {
        assert_eq!(
            mask_password("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(mask_password("rediss://:p@ss@h"), "rediss://:***@h");
        assert_eq!(mask_password("redis://h:1"), "redis://h:1");
        assert_eq!(mask_password("redis://user@h"), "redis://user@h");
    }

    /// The README's exit-code table is true: the row of each kind's code names that kind (each kind is listed here
    /// with the words its row uses), and every documented code is one that some kind or CLI path exits with.
    #[test]
    fn the_readmes_exit_code_table_matches_exit_code() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("| code | meaning |")
            .expect("the README's exit-code table");
        let rows: std::collections::BTreeMap<u8, String> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let mut cells = line.trim_matches('|').splitn(2, '|');
                let code = cells.next()?.trim().parse::<u8>().ok()?;
                Some((code, cells.next()?.to_owned()))
            })
            .collect();
        assert_eq!(
            rows.keys().copied().collect::<Vec<_>>(),
            (0..=10).collect::<Vec<u8>>(),
            "the table documents 0 to 10"
        );
        let kinds = [
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::DuplicateId, "duplicate request id"),
            (ErrorKind::AlreadyAnswered, "already answered"),
            (ErrorKind::NotFound, "not found"),
            (ErrorKind::Handler, "handler error"),
            (ErrorKind::UnknownFunction, "unknown function"),
            (ErrorKind::DeadLettered, "dead-lettered"),
            (ErrorKind::Expired, "expired"),
            (ErrorKind::Malformed, "malformed"),
            (ErrorKind::Cancelled, "cancelled"),
            (ErrorKind::PayloadTooLarge, "over the payload limit"),
            (ErrorKind::Codec, "cannot be encoded or decoded"),
            (ErrorKind::Unavailable, "Redis unreachable"),
            (ErrorKind::Redis, "a Redis command failed"),
            (ErrorKind::Lost, "lost"),
            (ErrorKind::Config, "a configuration the library refuses"),
            (ErrorKind::Unsupported, "a server older than"),
            (ErrorKind::NotReplicated, "replicas that did not confirm"),
            (ErrorKind::InvalidArgument, "a bad flag or argument"),
            (ErrorKind::PartitionMismatch, "partition mismatch"),
        ];
        for (kind, words) in kinds {
            let code = kind_exit_code(kind);
            assert!(
                rows[&code].contains(words),
                "{kind:?} exits {code}, but that row does not say {words:?}: {}",
                rows[&code]
            );
        }
    }

    /// `redcall --help` names every demo handler `serve` runs (it once left out `progress`).
    #[test]
    fn the_help_of_serve_names_every_demo_handler() {
        let command = command();
        let about = command
            .find_subcommand("serve")
            .and_then(|serve| serve.get_about())
            .map(|about| about.to_string())
            .unwrap_or_default();
        for handler in serve::DEMO_HANDLERS {
            assert!(about.contains(handler), "{handler} missing from {about:?}");
        }
    }

    #[test]
    fn the_clis_defaults_are_the_librarys() {
        let library = redcall::ResponderSettings::default();
        let Command::Serve(serve) = parse(&["redcall", "serve"]).command else {
            panic!("not serve")
        };
        assert_eq!(serve.visibility_timeout, library.visibility_timeout);
        assert_eq!(serve.max_deliveries, library.max_deliveries);
        assert_eq!(serve.concurrency, library.concurrency);
        assert_eq!(serve.group, library.group);
        assert_eq!(serve.grace, library.grace);
        assert_eq!(serve.heartbeat_interval, library.heartbeat_interval);
        let Command::Reap(reap) = parse(&["redcall", "reap"]).command else {
            panic!("not reap")
        };
        assert_eq!(reap.visibility_timeout, library.visibility_timeout);
        assert_eq!(reap.max_deliveries, library.max_deliveries);
        assert_eq!(reap.group, library.group);
        let cli = parse(&["redcall", "info", "x"]);
        assert_eq!(cli.payload_limit, redcall::Client::DEFAULT_PAYLOAD_LIMIT);
    }

    #[test]
    fn every_error_kind_has_its_documented_exit_code() {
        let id = || "r1".to_owned();
        let cases = [
            (Error::InvalidArgument("x".into()), 2),
            (Error::Config("x".into()), 2),
            (
                Error::Timeout {
                    id: id(),
                    timeout: Duration::from_secs(1),
                },
                3,
            ),
            (
                Error::DeadLettered {
                    id: id(),
                    reason: "x".into(),
                },
                4,
            ),
            (Error::NotFound { id: id() }, 5),
            (Error::DuplicateId { id: id() }, 6),
            (Error::AlreadyAnswered { id: id() }, 6),
            (Error::Lost { id: id() }, 8),
            (Error::Cancelled { id: id() }, 9),
        ];
        for (err, code) in cases {
            assert_eq!(exit_code(&err), code, "{err}");
        }
    }
}
